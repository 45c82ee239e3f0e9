//! Persistence: one [`Store`] made of a trait per concern (jobs, dispatch, idempotency, keys,
//! budget; and in `rpc.rs` the MPS-compatible endpoint's nonces and job lookups), implemented
//! once over a backend-neutral SQL layer (`db.rs`, `codec.rs`, `statements.rs`, `sql.rs`) for
//! Postgres (production, several replicas) and SQLite (the embedded single-instance default).
//! What truly differs per database — connecting, claims with `SKIP LOCKED`, `NOTIFY`/`LISTEN` —
//! lives in `postgres.rs` and `sqlite.rs`. `tests/it/store_conformance.rs` runs the same suite
//! against both.
//!
//! Webhooks (`webhooks.rs`; events as recorded in `events.rs`): endpoints, events and
//! deliveries; every job transition below that moves a job to `submitted` or a final state
//! records its events in the same transaction.
//!
//! Where a job is claimed: [`DispatchStore::claim_dispatch`] (submission) and
//! [`DispatchStore::claim_polls`] (status refresh), in `postgres.rs` / `sqlite.rs`.

mod archive;
mod codec;
mod db;
mod events;
mod group_commit;
mod lifecycle;
mod postgres;
mod retention;
mod rows;
mod rpc;
mod sql;
mod sqlite;
mod statements;
mod uploads;
mod usage;
mod webhooks;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::domain::{JobId, JobState};

pub use crate::clock::now;
use crate::domain::{Job, JobError, MpsStatus, NewJob};
pub use events::{
    new_event_id, NewWebhookEvent, EVENT_TYPES, JOB_FAILED, JOB_SUBMITTED, JOB_SUCCEEDED,
    UPLOAD_EXPIRED,
};
pub use postgres::NOTIFY_CHANNEL;
pub use rpc::{JobLookupStore, NonceStore};
pub use sql::SqlStore;
pub use uploads::{
    MultipartPlan, PresetRecord, PresetStore, UploadRecord, UploadState, UploadStore,
};
pub use usage::usage_day;
pub use webhooks::{
    DeliveryAttempt, DeliveryClaim, DeliveryOutcome, DeliveryRecord, NewWebhookEndpoint,
    WebhookEndpoint, WebhookEndpointUpdate, WebhookEvent, WebhookStore,
};

/// Opens the production store (Postgres).
pub struct PgStore;

impl PgStore {
    pub async fn connect(settings: &crate::config::DatabaseSettings) -> anyhow::Result<SqlStore> {
        SqlStore::connect_postgres(settings).await
    }

    pub fn from_pool(pool: sqlx::PgPool) -> SqlStore {
        SqlStore::from_pg_pool(pool)
    }
}

/// Opens the embedded store (SQLite).
pub struct SqliteStore;

impl SqliteStore {
    pub async fn connect(settings: &crate::config::DatabaseSettings) -> anyhow::Result<SqlStore> {
        SqlStore::connect_sqlite(settings).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone)]
pub struct NewIdempotencyKey {
    pub key: String,
    pub fingerprint: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyRecord {
    pub team: String,
    pub key: String,
    pub fingerprint: String,
    pub job_id: JobId,
    /// `None` while the first request is still being answered.
    pub response_status: Option<u16>,
    pub response_body: Option<Value>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug)]
pub enum CreateOutcome {
    Created(Box<Job>),
    /// The team already used this idempotency key; nothing was written.
    KeyExists(IdempotencyRecord),
    /// The team has its limit of jobs in flight; nothing was written.
    QuotaExceeded,
}

#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// `None` lists every team (admin).
    pub team: Option<String>,
    pub state: Option<JobState>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Keyset cursor: only jobs strictly older than this (created_at, id).
    pub before: Option<(DateTime<Utc>, JobId)>,
    pub limit: u32,
}

/// `QuerySnapshotJobList` without ids: a team's jobs, newest first.
#[derive(Debug, Clone, Default)]
pub struct PipelineJobFilter {
    pub team: String,
    /// Only jobs of this MPS pipeline.
    pub pipeline_id: Option<String>,
    /// Jobs that name no pipeline go to the gateway's default one: set when `pipeline_id` is it.
    pub include_unset_pipeline: bool,
    /// Any of these states (none: every state).
    pub states: Vec<JobState>,
    /// Created at or after (inclusive, as MPS's `StartOfJobCreatedTimeRange`).
    pub created_from: Option<DateTime<Utc>>,
    /// Created at or before (inclusive, as MPS's `EndOfJobCreatedTimeRange`).
    pub created_to: Option<DateTime<Utc>>,
    /// Keyset cursor: only jobs strictly older than this (created_at, id).
    pub before: Option<(DateTime<Utc>, JobId)>,
    pub limit: u32,
}

/// A job claimed for submission, with what the outbox knows about earlier attempts.
#[derive(Debug, Clone)]
pub struct DispatchClaim {
    pub key: ClaimKey,
    pub job: Job,
    /// Attempts already made (before this one).
    pub attempts: u32,
    /// Set when an earlier attempt may have created an MPS job (timeout, lost answer, crash).
    pub attempt_started_at: Option<DateTime<Utc>>,
    /// The pipeline that earlier attempt sent to MPS.
    pub pipeline_sent: Option<String>,
}

/// One claim of one job: every write of a dispatch attempt is fenced by it, so a replica whose
/// lease expired mid-call cannot overwrite what the next claimer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimKey {
    pub job_id: JobId,
    pub token: uuid::Uuid,
}

/// An MPS answer about one job, to be recorded.
#[derive(Debug, Clone)]
pub struct MpsUpdate {
    pub state: JobState,
    pub mps: MpsStatus,
    /// When to ask MPS again; `None` for a final state.
    pub next_poll_at: Option<DateTime<Utc>>,
}

/// One MPS response kept in the job's history.
#[derive(Debug, Clone)]
pub struct MpsResponseRecord {
    pub job_id: JobId,
    pub action: String,
    pub request_id: Option<String>,
    pub code: Option<String>,
    pub body: Value,
    pub received_at: DateTime<Utc>,
}

/// A team as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TeamRecord {
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// A team's API key as stored (the token only as its hash, the secret only encrypted).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    pub access_key_id: String,
    pub team: String,
    pub admin: bool,
    pub token_hash: String,
    pub secret_ciphertext: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Counts for operations.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobCounts {
    pub by_state: Vec<(String, String, u64)>,
    /// Jobs by MPS region and state: `(region, state, n)`.
    pub by_region: Vec<(String, String, u64)>,
    pub oldest_queued: Option<DateTime<Utc>>,
    pub oldest_in_flight: Option<DateTime<Utc>>,
}

/// Everything a process needs from its database.
#[async_trait]
pub trait Store:
    JobStore
    + DispatchStore
    + IdempotencyStore
    + KeyStore
    + BudgetStore
    + NonceStore
    + JobLookupStore
    + WebhookStore
    + PresetStore
    + UploadStore
    + LifecycleStore
    + RetentionStore
    + Send
    + Sync
    + 'static
{
    /// `postgres` or `sqlite`.
    fn backend(&self) -> &'static str;
    async fn migrate(&self) -> StoreResult<()>;
    /// The versions of this build's migrations not applied to the database (all of them on a
    /// database never migrated). Reads only: `serve` with `database.migrate_on_start = false`
    /// refuses to start unless this is empty.
    async fn pending_migrations(&self) -> StoreResult<Vec<i64>>;
    async fn ping(&self) -> StoreResult<()>;
}

/// Fails (one line, naming the fix) when the database lacks any of this build's migrations.
pub async fn ensure_migrated(store: &DynStore) -> anyhow::Result<()> {
    let pending = store.pending_migrations().await?;
    anyhow::ensure!(
        pending.is_empty(),
        "the {} database lacks {} of this build's migrations (first: {:04}) and \
         database.migrate_on_start is false: run `snapgate migrate` first",
        store.backend(),
        pending.len(),
        pending[0]
    );
    Ok(())
}

/// Jobs as teams see them.
#[async_trait]
pub trait JobStore {
    /// Writes the job (queued for dispatch) and, if given, its idempotency key in one
    /// transaction. An existing key wins: nothing is written and the key's record is returned.
    /// No quota: [`JobStore::create_job_within`] with no limit.
    async fn create_job(
        &self,
        job: NewJob,
        idempotency: Option<NewIdempotencyKey>,
    ) -> StoreResult<CreateOutcome> {
        self.create_job_within(job, idempotency, u64::MAX).await
    }
    /// [`JobStore::create_job`] under the team's in-flight quota: the job is written only if
    /// the team has fewer than `max_in_flight` jobs not final, decided in the insert's own
    /// statement or transaction on a per-team counter (exact under any concurrency, across
    /// replicas), else [`CreateOutcome::QuotaExceeded`]. An existing key wins over the quota.
    /// The place is given back when the job becomes final (a trigger, migration 0011).
    async fn create_job_within(
        &self,
        job: NewJob,
        idempotency: Option<NewIdempotencyKey>,
        max_in_flight: u64,
    ) -> StoreResult<CreateOutcome>;
    /// `team = None` reads any team's job (admin).
    async fn get_job(&self, team: Option<&str>, id: JobId) -> StoreResult<Option<Job>>;
    /// Newest first.
    async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<Vec<Job>>;
    async fn mps_responses(&self, id: JobId) -> StoreResult<Vec<MpsResponseRecord>>;
    /// Jobs of `team` not yet final (for the in-flight quota).
    async fn count_active_jobs(&self, team: &str) -> StoreResult<u64>;
    async fn job_counts(&self) -> StoreResult<JobCounts>;
    /// MPS error codes recorded since `since`, with counts, most frequent first.
    async fn mps_error_codes_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<(String, u64)>>;
    /// Cancels a job MPS cannot have seen: `queued`, no attempt begun (or the last one refused
    /// for sure), no live claim, in one statement, so a worker's claim and this cannot both win.
    /// The job becomes `failed` with `error` (its `job.failed` event recorded with it).
    /// `team = None`: any team's job (admin). Returns whether the job was cancelled.
    async fn cancel_job(
        &self,
        team: Option<&str>,
        id: JobId,
        error: &JobError,
    ) -> StoreResult<bool>;
}

/// The worker's side: claims, outcomes, status refreshes.
#[async_trait]
pub trait DispatchStore {
    /// Claims up to `limit` due jobs whose lease is free or expired, leasing them to `owner`
    /// until `lease_until`, and marks the attempt as started.
    async fn claim_dispatch(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<DispatchClaim>> {
        self.claim_dispatch_in(None, owner, now, lease_until, limit)
            .await
    }
    /// [`DispatchStore::claim_dispatch`] among one MPS region's jobs only (`None`: every
    /// region's): each region's dispatcher claims its own, so one region's outage or throttling
    /// never holds another's jobs.
    async fn claim_dispatch_in(
        &self,
        region: Option<&RegionScope>,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<DispatchClaim>>;
    /// Gives the rows written before jobs had a region (region '') the default region; returns
    /// how many. Run at start.
    async fn backfill_region(&self, default_region: &str) -> StoreResult<u64>;
    /// Starts an attempt under the claim, right before MPS is called: marks it started (if no
    /// earlier attempt's outcome is pending), records the pipeline sent and extends the lease.
    /// False if the claim is no longer this one's (lease expired and taken, or the job moved on):
    /// then MPS must not be called.
    async fn begin_attempt(
        &self,
        claim: &ClaimKey,
        lease_until: DateTime<Utc>,
        pipeline: Option<&str>,
    ) -> StoreResult<bool>;
    /// Extends the lease while an MPS call is in flight; false if the claim was lost.
    async fn renew_lease(&self, claim: &ClaimKey, lease_until: DateTime<Utc>) -> StoreResult<bool>;
    /// A lookup confirmed that no earlier attempt created an MPS job: clears the marker.
    async fn confirm_absent(&self, claim: &ClaimKey) -> StoreResult<bool>;
    /// MPS accepted the job (or reconciliation found it): record it; it leaves the queue.
    /// Fenced by the claim: returns false (and changes nothing) if it was lost.
    async fn complete_dispatch(&self, claim: &ClaimKey, update: &MpsUpdate) -> StoreResult<bool>;
    /// Records an MPS acceptance whatever the claim, if the job is still queued and no MPS job is
    /// recorded for it (a replica that lost its claim mid-call keeps what MPS answered). False
    /// if the job already has an MPS job or left the queue.
    async fn adopt_submitted(&self, id: JobId, update: &MpsUpdate) -> StoreResult<bool>;
    /// The attempt failed but may be retried at `due_at`. `outcome_unknown` keeps the
    /// attempt marked as started, so the next claimer reconciles before resubmitting.
    async fn retry_dispatch(
        &self,
        claim: &ClaimKey,
        error: &JobError,
        due_at: DateTime<Utc>,
        outcome_unknown: bool,
    ) -> StoreResult<bool>;
    /// A lookup could not settle an earlier attempt: ask again at `due_at`, the attempt still
    /// marked. A lookup is not a submission attempt, so it does not count as one.
    async fn defer_lookup(
        &self,
        claim: &ClaimKey,
        error: &JobError,
        due_at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Delivery failed for good: the job becomes `failed`.
    async fn fail_dispatch(&self, claim: &ClaimKey, error: &JobError) -> StoreResult<bool>;
    /// Ends a job that MPS accepted but that can no longer finish (deadline, MPS lost it):
    /// `failed` with `error`, no more polls. False if it was already final.
    async fn fail_in_flight(&self, id: JobId, error: &JobError) -> StoreResult<bool>;
    /// Gives back every lease `owner` holds (graceful shutdown).
    async fn release_dispatch(&self, owner: &str) -> StoreResult<u64>;

    /// Claims up to `limit` in-flight jobs due for a status refresh, pushing their next poll to
    /// `lease_until` so that no other replica polls them meanwhile.
    async fn claim_polls(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Job>> {
        self.claim_polls_in(None, now, lease_until, limit).await
    }
    /// [`DispatchStore::claim_polls`] among one MPS region's jobs only (`None`: every region's).
    async fn claim_polls_in(
        &self,
        region: Option<&RegionScope>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Job>>;
    /// Records a status answer (a query's, or an MNS job message's). Never moves a final job
    /// back.
    async fn record_poll(&self, id: JobId, update: &MpsUpdate) -> StoreResult<()>;
    /// The job MPS knows as `mps_job_id` (an MNS message names its job so).
    async fn job_by_mps_job_id(&self, mps_job_id: &str) -> StoreResult<Option<Job>>;
    /// Postpones a poll (the query failed).
    async fn postpone_poll(&self, id: JobId, next_poll_at: DateTime<Utc>) -> StoreResult<()>;
    /// MPS did not list this job: postpones its poll and returns since when MPS has not known it.
    async fn poll_not_found(
        &self,
        id: JobId,
        next_poll_at: DateTime<Utc>,
    ) -> StoreResult<DateTime<Utc>>;
    /// The database's clock: what leases, budgets and deadlines are compared with, so that
    /// replicas with different clocks agree.
    async fn clock(&self) -> StoreResult<DateTime<Utc>>;
    async fn append_mps_responses(&self, records: &[MpsResponseRecord]) -> StoreResult<()>;
    /// When the next dispatch and the next status poll are due (for the worker's loops' sleeps).
    /// The dispatch time is looked for among the earliest due jobs only (a bounded read however
    /// long the queue): a later job is found by the dispatcher's polling fallback at the latest.
    async fn next_due_each(&self) -> StoreResult<NextDue> {
        self.next_due_each_in(None).await
    }
    /// [`DispatchStore::next_due_each`] among one MPS region's jobs only (`None`: every region's).
    async fn next_due_each_in(&self, region: Option<&RegionScope>) -> StoreResult<NextDue>;
    /// Earliest time any dispatch or poll is due.
    async fn next_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let d = self.next_due_each().await?;
        Ok(match (d.dispatch, d.poll) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }
    /// Wakes `wake` whenever another replica queues a job (Postgres `LISTEN`); a no-op where
    /// there is only one process.
    fn spawn_job_listener(&self, _wake: Arc<tokio::sync::Notify>) {}
    /// Tells `sink` of every change any process makes to a job row, and of the times when it
    /// may have missed some (Postgres: the `jobs_changed` trigger's `NOTIFY`, heard on a `LISTEN`
    /// connection of its own). False where changes cannot be heard (SQLite): then nothing that
    /// can still change may be cached.
    fn watch_job_changes(&self, _sink: Arc<dyn JobChangeSink>) -> bool {
        false
    }
}

/// Hears of changes to job rows ([`JobStore::watch_job_changes`]).
pub trait JobChangeSink: Send + Sync {
    /// The job's row changed (or was deleted); the change has committed.
    fn job_changed(&self, id: JobId);
    /// Changes are heard from now on (the feed opened or reopened); some made before may have
    /// been missed.
    fn feed_live(&self);
    /// Changes are no longer heard until the next [`JobChangeSink::feed_live`].
    fn feed_lost(&self);
}

/// One MPS region's share of the queue (its workers' claims): its jobs, and for the default
/// region also the rows written before jobs had a region (region '').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionScope {
    pub region: String,
    pub default: bool,
}

impl RegionScope {
    /// The condition on `table.region` (or `region`), its value bound as `$n`.
    pub(crate) fn condition(&self, table: Option<&str>, n: usize) -> String {
        let column = table.map_or("region".to_string(), |t| format!("{t}.region"));
        if self.default {
            format!("{column} IN (${n}, '')")
        } else {
            format!("{column} = ${n}")
        }
    }
}

/// When the worker's next dispatch and status poll are due ([`DispatchStore::next_due_each`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NextDue {
    pub dispatch: Option<DateTime<Utc>>,
    pub poll: Option<DateTime<Utc>>,
}

/// Usage of one team on one day in one region (summed over the counter's shards).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageRecord {
    pub team: String,
    /// UTC, `YYYY-MM-DD`.
    pub day: String,
    pub region: String,
    pub submitted: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Snapshots made (MPS's `Count` of succeeded jobs).
    pub snapshots: u64,
    /// Sprite sheets made (MPS's `TileCount` of succeeded jobs).
    pub sprite_sheets: u64,
    /// MPS calls answered about the team's jobs (a submit, each job's entry of a query).
    pub mps_calls: u64,
}

/// A paused team.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TeamPause {
    pub team: String,
    pub paused_at: DateTime<Utc>,
    /// New jobs are refused (409) rather than recorded and held.
    pub refuse_new: bool,
    pub reason: Option<String>,
}

/// What [`LifecycleStore::create_retry`] did.
#[derive(Debug)]
pub enum RetryOutcome {
    /// The new job, recorded and linked both ways.
    Created(Box<Job>),
    /// The job was retried already: its one retry.
    Existing(JobId),
    NotFound,
    /// Only a failed job is retried.
    NotFailed(JobState),
    /// The team has its limit of jobs in flight; nothing was written.
    QuotaExceeded,
}

/// Which failed jobs a bulk redrive takes: failed with an error code (so never a cancelled
/// job), not retried yet, oldest end first.
#[derive(Debug, Clone, Default)]
pub struct RedriveFilter {
    pub team: Option<String>,
    /// The job's MPS (or delivery) error code.
    pub code: Option<String>,
    /// Ended at or after.
    pub ended_from: Option<DateTime<Utc>>,
    /// Ended before.
    pub ended_to: Option<DateTime<Utc>>,
    pub limit: u32,
}

/// Usage counters, team pauses and redrive links (`lifecycle.rs`).
#[async_trait]
pub trait LifecycleStore {
    /// Usage from `from` to `to` (days, inclusive), of one team or all, by team, day, region.
    async fn usage(
        &self,
        from: &str,
        to: &str,
        team: Option<&str>,
    ) -> StoreResult<Vec<UsageRecord>>;
    /// Pauses a team (kept if already paused, its options replaced); false if no such team.
    async fn pause_team(
        &self,
        team: &str,
        at: DateTime<Utc>,
        refuse_new: bool,
        reason: Option<&str>,
    ) -> StoreResult<bool>;
    /// Resumes a team and wakes every replica's dispatcher; false if no such team.
    async fn resume_team(&self, team: &str) -> StoreResult<bool>;
    async fn paused_teams(&self) -> StoreResult<Vec<TeamPause>>;
    /// Records `job` as the retry of the failed job `of` (of `team`, or any for `None`), linked
    /// both ways, in one transaction; a job already retried answers its retry, and of concurrent
    /// calls exactly one creates. Admitted under the team's in-flight quota exactly as
    /// [`JobStore::create_job_within`] admits (else [`RetryOutcome::QuotaExceeded`]).
    async fn create_retry(
        &self,
        team: Option<&str>,
        of: JobId,
        job: NewJob,
        max_in_flight: u64,
    ) -> StoreResult<RetryOutcome>;
    /// How many jobs a bulk redrive with this filter would take (ignoring its limit).
    async fn count_redrive(&self, f: &RedriveFilter) -> StoreResult<u64>;
    /// The first `f.limit` of them.
    async fn redrive_candidates(&self, f: &RedriveFilter) -> StoreResult<Vec<JobId>>;
}

/// A class of data the retention purge deletes, in the order a run takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PurgeClass {
    /// Webhook delivery attempts older than the webhook retention.
    WebhookAttempts,
    /// Webhook events older than the webhook retention (with their deliveries).
    WebhookEvents,
    /// Ended uploads (landed or expired) whose job, if any, is final.
    Uploads,
    /// Final jobs ended before the job retention, with their MPS responses; never one an
    /// unexpired idempotency key or an upload names.
    Jobs,
    /// Expired idempotency keys.
    IdempotencyKeys,
    /// Expired nonces of the MPS-compatible endpoint.
    RpcNonces,
}

impl PurgeClass {
    pub const ALL: [PurgeClass; 6] = [
        PurgeClass::WebhookAttempts,
        PurgeClass::WebhookEvents,
        PurgeClass::Uploads,
        PurgeClass::Jobs,
        PurgeClass::IdempotencyKeys,
        PurgeClass::RpcNonces,
    ];

    /// Whether the purge archives this class's rows before deleting them (when the archive is
    /// on): what the data was, not what expires by itself (keys, nonces).
    pub fn archived(self) -> bool {
        !matches!(self, PurgeClass::IdempotencyKeys | PurgeClass::RpcNonces)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PurgeClass::WebhookAttempts => "webhook_attempts",
            PurgeClass::WebhookEvents => "webhook_events",
            PurgeClass::Uploads => "uploads",
            PurgeClass::Jobs => "jobs",
            PurgeClass::IdempotencyKeys => "idempotency_keys",
            PurgeClass::RpcNonces => "rpc_nonces",
        }
    }
}

/// What is old enough to go: rows before these times (`now` for what expires by itself).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PurgeCutoffs {
    pub now: DateTime<Utc>,
    pub jobs: DateTime<Utc>,
    pub webhooks: DateTime<Utc>,
    pub uploads: DateTime<Utc>,
}

/// How many rows of a class a purge would delete now, and the oldest one's time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PurgeCount {
    pub class: PurgeClass,
    pub rows: u64,
    pub oldest: Option<DateTime<Utc>>,
}

/// What one batch deleted: rows of the class, and rows deleted with them (a job's MPS
/// responses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgedBatch {
    pub rows: u64,
    pub related: u64,
}

/// A row's primary key, as its table types it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RowId {
    Uuid(uuid::Uuid),
    Text(String),
    Int(i64),
}

impl std::fmt::Display for RowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowId::Uuid(u) => write!(f, "{u}"),
            RowId::Text(s) => f.write_str(s),
            RowId::Int(i) => write!(f, "{i}"),
        }
    }
}

/// One row of an archived class as its archive line holds it (`archive.rs`): the row's
/// columns under `row` (times as RFC 3339 UTC, JSON columns as JSON, on both databases), with
/// the rows deleted with it (a job's `mps_responses`; an event's `deliveries`, each with its
/// `attempts`).
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedRow {
    pub id: RowId,
    /// The time the class's age is measured by (the archive's day).
    pub at: DateTime<Utc>,
    pub doc: Value,
    /// How many related rows `doc` holds (checked again before the delete).
    pub related: u64,
}

/// The retention purge's statements (`retention.rs`, `archive.rs`).
#[async_trait]
pub trait RetentionStore {
    /// The oldest `limit` rows of `class` that may go, oldest first (by time, then id), each
    /// as its archive line. Reads only: nothing is locked or deleted.
    async fn archive_rows(
        &self,
        class: PurgeClass,
        c: &PurgeCutoffs,
        limit: u32,
    ) -> StoreResult<Vec<ArchivedRow>>;
    /// Deletes exactly `rows` (read by `archive_rows`, then archived) with their related
    /// rows, in one transaction, if each still may go and none gained a related row since;
    /// otherwise deletes nothing and answers `None` (read them again).
    async fn delete_archived(
        &self,
        class: PurgeClass,
        c: &PurgeCutoffs,
        rows: &[ArchivedRow],
    ) -> StoreResult<Option<PurgedBatch>>;
    /// What a purge with these cutoffs would delete of `class` (a dry run).
    async fn purge_count(&self, class: PurgeClass, c: &PurgeCutoffs) -> StoreResult<PurgeCount>;
    /// Deletes up to `limit` of the oldest rows of `class` in one short transaction (rows
    /// another transaction holds are skipped: `FOR UPDATE SKIP LOCKED` on Postgres).
    async fn purge_batch(
        &self,
        class: PurgeClass,
        c: &PurgeCutoffs,
        limit: u32,
    ) -> StoreResult<PurgedBatch>;
    /// Takes (or extends) the lease `name` for `owner` until `until`, unless another owner's
    /// lease is live at `now`.
    async fn take_lease(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Gives the lease back and keeps the run's report.
    async fn end_lease(
        &self,
        name: &str,
        owner: &str,
        at: DateTime<Utc>,
        report: &Value,
    ) -> StoreResult<()>;
    /// The last run's time and report under the lease `name`.
    async fn last_lease_run(&self, name: &str) -> StoreResult<Option<(DateTime<Utc>, Value)>>;
    /// Exact row counts of the tables the purge bounds (and `usage_daily`), by name: a full
    /// count of each, for tests and inspection, not for a hot path.
    async fn table_rows(&self) -> StoreResult<Vec<(String, u64)>>;
}

/// The tables [`RetentionStore::table_rows`] counts.
pub const COUNTED_TABLES: [&str; 9] = [
    "jobs",
    "mps_responses",
    "idempotency_keys",
    "webhook_events",
    "webhook_deliveries",
    "webhook_attempts",
    "uploads",
    "rpc_nonces",
    "usage_daily",
];

/// Idempotency keys (written by [`JobStore::create_job`]).
#[async_trait]
pub trait IdempotencyStore {
    async fn get_idempotency_key(
        &self,
        team: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>>;
    async fn complete_idempotency_key(
        &self,
        team: &str,
        key: &str,
        status: u16,
        body: &Value,
    ) -> StoreResult<()>;
    async fn purge_idempotency_keys(&self, now: DateTime<Utc>) -> StoreResult<u64>;
}

/// Teams and their API keys.
#[async_trait]
pub trait KeyStore {
    /// Creates a team; false if it already exists.
    async fn create_team(&self, name: &str, now: DateTime<Utc>) -> StoreResult<bool>;
    async fn team_exists(&self, name: &str) -> StoreResult<bool>;
    /// Every team, by name.
    async fn list_teams(&self) -> StoreResult<Vec<TeamRecord>>;
    /// Stores a new key; its team must exist.
    async fn create_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()>;
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>>;
    /// Revokes a key at once (and tells every process: [`KeyChanges`]); false if unknown or
    /// already revoked.
    async fn revoke_api_key(&self, access_key_id: &str, now: DateTime<Utc>) -> StoreResult<bool>;
    /// The active (not revoked) key with this token hash.
    async fn api_key_by_token_hash(&self, token_hash: &str) -> StoreResult<Option<ApiKeyRecord>>;
    /// The key with this `access_key_id`, also when revoked (the caller refuses it): a signed
    /// MPS-compatible request names its key by id, where the REST API finds it by the token's
    /// hash.
    async fn api_key_by_access_key_id(
        &self,
        access_key_id: &str,
    ) -> StoreResult<Option<ApiKeyRecord>>;
    /// The key change count, for caches of verified keys (on Postgres, the first call starts
    /// listening for other processes' revocations).
    fn key_changes(&self) -> KeyChanges;
}

/// Token buckets shared by every replica (the upstream MPS budget).
#[async_trait]
pub trait BudgetStore {
    /// Takes up to `want` tokens from the shared bucket `name` (refilled at `rate` per second,
    /// holding at most `burst`): how many were granted (possibly 0) and what is left.
    async fn acquire_budget(
        &self,
        name: &str,
        want: u32,
        rate: f64,
        burst: f64,
        now: DateTime<Utc>,
    ) -> StoreResult<Grant>;
    /// The shared upstream buckets: (name, tokens, last refill).
    async fn budgets(&self) -> StoreResult<Vec<(String, f64, DateTime<Utc>)>>;
}

pub type DynStore = Arc<dyn Store>;

/// How many key changes (revocations) this process has seen: bumped by
/// [`KeyStore::revoke_api_key`] in this process and, on Postgres, by the `NOTIFY` every
/// revocation sends (any replica, the CLI), and when the `LISTEN` connection is (re)opened
/// (notifications may have been missed). What was verified before the latest change is stale.
#[derive(Debug, Clone, Default)]
pub struct KeyChanges(Arc<std::sync::atomic::AtomicU64>);

impl KeyChanges {
    pub fn current(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Opens the store for a database URL: `postgres://…` or `sqlite://…`.
pub async fn connect(settings: &crate::config::DatabaseSettings) -> anyhow::Result<DynStore> {
    let url = settings.url.as_str();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(settings).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(settings).await?))
    } else {
        anyhow::bail!(
            "database.url must start with postgres:// or sqlite:// (got a different scheme)"
        )
    }
}

/// Token bucket arithmetic shared by both backends: (granted, tokens left, refill time).
/// What [`BudgetStore::acquire_budget`] took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grant {
    pub granted: u32,
    /// The bucket's tokens after the grant (a fraction of one while it refills).
    pub left: f64,
}

/// The bucket size of a shared upstream budget of `rate` calls a second: a twentieth of a
/// second's worth, so that no one-second window exceeds the limit.
pub fn budget_burst(rate: f64) -> f64 {
    (rate / 20.0).max(1.0)
}

pub fn take_tokens(
    tokens: f64,
    refilled_at: DateTime<Utc>,
    now: DateTime<Utc>,
    want: u32,
    rate: f64,
    burst: f64,
) -> (u32, f64, DateTime<Utc>) {
    let elapsed = (now - refilled_at).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
    let available = (tokens + elapsed * rate).min(burst);
    let granted = (available.floor().max(0.0) as u32).min(want);
    (
        granted,
        available - f64::from(granted),
        now.max(refilled_at),
    )
}
