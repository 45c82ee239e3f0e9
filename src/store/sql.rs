//! Every statement the two databases share, written once: row types, column lists, the list
//! query builder, and the [`Store`] traits implemented for [`SqlStore`]. The few statements that
//! differ (claims, `NOTIFY`) are delegated to `postgres.rs` and `sqlite.rs`.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::FromRow;

use super::codec::{DbId, DbTime};
use super::db::{Arg, Conn, Dialect, Pool, Stmt};
use super::events::record_job_events;
use super::group_commit::GroupCommit;
use super::rows::{job_columns, jobs, JobRow};
use super::statements::{admit_stmt, insert_jobs_stmt, pipeline_jobs_stmt, push_page};
use super::usage::{usage_day, usage_upsert, UsageDelta};
use super::{postgres, sqlite, *};
use crate::domain::JobId;

#[derive(FromRow)]
struct IdempotencyRow {
    team: String,
    key: String,
    fingerprint: String,
    job_id: DbId,
    response_status: Option<i32>,
    response_body: Option<Json<Value>>,
    created_at: DbTime,
}

const IDEMPOTENCY_COLUMNS: &str =
    "team, key, fingerprint, job_id, response_status, response_body, created_at";

impl From<IdempotencyRow> for IdempotencyRecord {
    fn from(r: IdempotencyRow) -> Self {
        IdempotencyRecord {
            team: r.team,
            key: r.key,
            fingerprint: r.fingerprint,
            job_id: JobId(r.job_id.0),
            response_status: r.response_status.map(|s| s as u16),
            response_body: r.response_body.map(|j| j.0),
            created_at: r.created_at.0,
        }
    }
}

#[derive(FromRow)]
struct KeyRow {
    access_key_id: String,
    team: String,
    admin: bool,
    token_hash: String,
    secret_ciphertext: String,
    created_at: DbTime,
    revoked_at: Option<DbTime>,
}

const KEY_COLUMNS: &str =
    "access_key_id, team, admin, token_hash, secret_ciphertext, created_at, revoked_at";

impl From<KeyRow> for ApiKeyRecord {
    fn from(r: KeyRow) -> Self {
        ApiKeyRecord {
            access_key_id: r.access_key_id,
            team: r.team,
            admin: r.admin,
            token_hash: r.token_hash,
            secret_ciphertext: r.secret_ciphertext,
            created_at: r.created_at.0,
            revoked_at: r.revoked_at.map(|t| t.0),
        }
    }
}

#[derive(FromRow)]
struct ResponseRow {
    job_id: DbId,
    action: String,
    request_id: Option<String>,
    code: Option<String>,
    body: Json<Value>,
    received_at: DbTime,
}

#[derive(FromRow)]
struct CodeCount {
    code: String,
    n: i64,
}

#[derive(FromRow)]
struct StateCount {
    team: String,
    state: String,
    n: i64,
}

#[derive(FromRow)]
struct Oldest {
    queued: Option<DbTime>,
    in_flight: Option<DbTime>,
}

#[derive(FromRow)]
struct Due {
    dispatch: Option<DbTime>,
    poll: Option<DbTime>,
}

#[derive(FromRow)]
struct Bucket {
    name: String,
    tokens: f64,
    refilled_at: DbTime,
}

#[derive(FromRow)]
struct TeamRow {
    name: String,
    created_at: DbTime,
}

#[derive(FromRow)]
struct Since {
    since: DbTime,
}

/// What [`SqlStore::insert_job`] did; anything but a row is to be rolled back.
pub(super) enum Inserted {
    Row(Box<JobRow>),
    /// The team already holds the idempotency key.
    KeyTaken,
    /// The team has its limit of jobs in flight.
    QuotaExceeded,
}

#[derive(FromRow)]
struct AdmittedTeam {
    #[allow(dead_code)]
    team: String,
}

#[derive(FromRow)]
struct Count {
    n: i64,
}

#[derive(FromRow)]
struct Found {
    #[allow(dead_code)]
    found: i32,
}

fn json<T: serde::Serialize>(v: &T) -> Json<Box<serde_json::value::RawValue>> {
    super::db::json_arg(v)
}

/// A job's MPS status columns, bound from `$first` on: `mps_state`, `mps_request_id`,
/// `mps_count`, `mps_tile_count`, `mps_code`, `mps_message`, `mps_response`.
fn bind_mps(stmt: Stmt, m: &MpsStatus) -> Stmt {
    stmt.bind(m.state.clone())
        .bind(m.request_id.clone())
        .bind(m.count.map(|c| c as i64))
        .bind(m.tile_count.map(|c| c as i64))
        .bind(m.code.clone())
        .bind(m.message.clone())
        .bind(m.response.clone().map(|r| Json(r.into_raw())))
}

/// `last_error` once MPS has reported a state (`$state` is the new state's parameter, `$12` the
/// bound error): gone when the job succeeds (an earlier delivery error such as
/// `Transport.OutcomeUnknown` is history by then, kept in the MPS responses), MPS's own code and
/// message when MPS failed the job, otherwise as it was.
fn last_error_sql(state: &str) -> String {
    format!(
        "last_error = CASE WHEN {state} = 'succeeded' THEN NULL ELSE COALESCE($12, last_error) END"
    )
}

/// The error bound for [`last_error_sql`]: MPS's code and message on a failure it reports.
fn mps_failure(u: &MpsUpdate) -> Option<Json<Box<serde_json::value::RawValue>>> {
    let code = u.mps.code.clone().filter(|_| u.state == JobState::Failed)?;
    Some(json(&JobError {
        code,
        message: u.mps.message.clone().unwrap_or_default(),
        at: now(),
    }))
}

/// The columns of a job MPS has accepted (state, times, MPS status); the caller adds its guard.
fn accepted_columns(u: &MpsUpdate) -> Stmt {
    let set = Stmt::new(format!(
        "UPDATE jobs SET state = $1, updated_at = $2, submitted_at = $2, due_at = NULL, \
         attempt_started_at = NULL, \
         finished_at = CASE WHEN $1 IN ('succeeded', 'failed') THEN $2 END, \
         next_poll_at = $3, mps_job_id = $4, mps_state = $5, mps_request_id = $6, \
         mps_count = $7, mps_tile_count = $8, mps_code = $9, mps_message = $10, \
         mps_response = $11, {}",
        last_error_sql("$1")
    ))
    .bind(u.state.as_str())
    .bind(now())
    .bind(u.next_poll_at)
    .bind(u.mps.job_id.clone());
    bind_mps(set, &u.mps).bind(mps_failure(u))
}

/// A new job, queued for dispatch at once, returning its row.
fn insert_job_stmt(job: &NewJob) -> Stmt {
    let mut q = insert_jobs_stmt([job]);
    q.push(&format!(" RETURNING {}", job_columns(None)));
    q
}

/// The statement of [`JobStore::list_jobs`].
fn list_jobs_stmt(f: &JobFilter) -> Stmt {
    let mut q = Stmt::new(format!(
        "SELECT {} FROM jobs WHERE 1 = 1",
        job_columns(None)
    ));
    let mut fixed: Vec<(&str, Arg)> = Vec::new();
    if let Some(team) = &f.team {
        q.push(" AND team = ").push_bind(team);
        fixed.push(("team", team.into()));
        // `state` leads the page index only after `team` (admins list every team by time).
        if let Some(state) = f.state {
            fixed.push(("state", state.as_str().into()));
        }
    }
    if let Some(state) = f.state {
        q.push(" AND state = ").push_bind(state.as_str());
    }
    if let Some(t) = f.created_after {
        q.push(" AND created_at > ").push_bind(t);
    }
    if let Some(t) = f.created_before {
        q.push(" AND created_at < ").push_bind(t);
    }
    push_page(&mut q, &fixed, f.before, f.limit);
    q
}

/// The store over either database.
#[derive(Clone)]
pub struct SqlStore {
    pool: Pool,
    /// New jobs without an idempotency key are recorded through it.
    jobs_commit: Arc<GroupCommit>,
    keys: KeyChanges,
    /// Postgres: whether the key-change listener runs.
    key_listener: Arc<std::sync::Once>,
}

impl SqlStore {
    /// Opens the production store.
    pub async fn connect_postgres(
        settings: &crate::config::DatabaseSettings,
    ) -> anyhow::Result<Self> {
        Ok(Self::new(postgres::connect(settings).await?))
    }

    pub fn from_pg_pool(pool: sqlx::PgPool) -> Self {
        Self::new(Pool::postgres(pool))
    }

    /// Opens the embedded store.
    pub async fn connect_sqlite(
        settings: &crate::config::DatabaseSettings,
    ) -> anyhow::Result<Self> {
        Ok(Self::new(sqlite::connect(settings).await?))
    }

    fn new(pool: Pool) -> Self {
        // A quarter of the connections may be committing new jobs at once; the rest serve
        // reads, the worker and idempotent creates.
        let in_flight = match &pool {
            Pool::Postgres(..) => pool.max_connections() as usize / 4,
            Pool::Sqlite(_) => 1,
        };
        Self {
            jobs_commit: Arc::new(GroupCommit::new(pool.clone(), in_flight)),
            pool,
            keys: KeyChanges::default(),
            key_listener: Arc::new(std::sync::Once::new()),
        }
    }

    /// `EXPLAIN` of the statement [`JobStore::list_jobs`] runs for `f` (Postgres; tests show
    /// that every list is read through an index).
    pub async fn explain_job_list(&self, f: &JobFilter) -> StoreResult<String> {
        self.explain(list_jobs_stmt(f)).await
    }

    /// `EXPLAIN` of the statement of [`super::JobLookupStore::list_pipeline_jobs`].
    pub async fn explain_pipeline_list(&self, f: &PipelineJobFilter) -> StoreResult<String> {
        self.explain(pipeline_jobs_stmt(self.dialect(), f)).await
    }

    async fn explain(&self, stmt: Stmt) -> StoreResult<String> {
        #[derive(FromRow)]
        struct Line {
            #[sqlx(rename = "QUERY PLAN")]
            line: String,
        }
        let sql = format!("EXPLAIN {}", stmt.sql());
        let lines: Vec<Line> = self.pool.fetch_all(stmt.with_sql(sql)).await?;
        Ok(lines
            .into_iter()
            .map(|l| l.line)
            .collect::<Vec<_>>()
            .join("\n"))
    }

    pub(super) fn dialect(&self) -> Dialect {
        self.pool.dialect()
    }

    /// The Postgres pool, for tests and tools that inspect the server itself.
    pub fn pg_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.pool {
            Pool::Postgres(p, _) => Some(p),
            Pool::Sqlite(_) => None,
        }
    }

    /// How many Postgres connections are kept warm for single statements now (0 on SQLite):
    /// for tests of that keeping.
    pub fn kept_warm(&self) -> usize {
        match &self.pool {
            Pool::Postgres(_, warm) => warm.kept(),
            Pool::Sqlite(_) => 0,
        }
    }

    /// For the traits implemented in other files of `store/` (`rpc.rs`).
    pub(super) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Wakes every replica's dispatcher: jobs were queued (`lifecycle.rs`'s retries).
    pub(super) fn announce_jobs(&self) {
        self.jobs_commit.announce();
    }

    /// Closes every connection (tests that drop a database).
    pub async fn close(&self) {
        self.pool.close().await
    }

    /// Records a new job on `conn` (inside the caller's transaction, which it rolls back unless
    /// [`Inserted::Row`]): the job, its idempotency key if given, its admission under the team's
    /// in-flight quota (`limit`, migration 0011) and its count in usage. The one path of a job
    /// recorded on its own (a create with a key, a retry); the group commit does the same for a
    /// batch (`group_commit.rs`).
    pub(super) async fn insert_job(
        conn: &mut Conn<'_>,
        job: &NewJob,
        idempotency: Option<&NewIdempotencyKey>,
        limit: i64,
    ) -> StoreResult<Inserted> {
        let row: JobRow = conn.fetch_one(insert_job_stmt(job)).await?;
        if let Some(k) = idempotency {
            if !Self::insert_key(conn, job, k).await? {
                return Ok(Inserted::KeyTaken);
            }
        }
        // The quota after the key: a key already taken answers its job whatever the count.
        let admitted = limit >= 1
            && conn
                .fetch_optional::<AdmittedTeam>(admit_stmt(&[(job.team.as_str(), 1, limit)]))
                .await?
                .is_some();
        if !admitted {
            return Ok(Inserted::QuotaExceeded);
        }
        // Counted only once admitted, in the same transaction: exact under crashes.
        conn.execute(usage_upsert(&[UsageDelta::submitted(job)]))
            .await?;
        Ok(Inserted::Row(Box::new(row)))
    }

    /// Inserts the idempotency key of `job`; false when the team already holds the key.
    async fn insert_key(
        conn: &mut Conn<'_>,
        job: &NewJob,
        k: &NewIdempotencyKey,
    ) -> StoreResult<bool> {
        conn.execute(
            Stmt::new(
                "DELETE FROM idempotency_keys WHERE team = $1 AND key = $2 AND expires_at < $3",
            )
            .bind(&job.team)
            .bind(&k.key)
            .bind(job.created_at),
        )
        .await?;
        // The primary key is the lock: a concurrent request with the same key waits here
        // until the first commits, then inserts nothing.
        let inserted = conn
            .execute(
                Stmt::new(
                    "INSERT INTO idempotency_keys (team, key, fingerprint, job_id, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(&job.team)
                .bind(&k.key)
                .bind(&k.fingerprint)
                .bind(job.id)
                .bind(job.created_at)
                .bind(k.expires_at),
            )
            .await?;
        Ok(inserted == 1)
    }

    /// Ends a dispatch under the claim: `set` is the job's new column values, written only
    /// while the claim is still this one. Returns whether it was. `emits`: the change can move
    /// the job out of `queued` (then its webhook events are recorded with it).
    async fn end_dispatch(&self, claim: &ClaimKey, set: Stmt, emits: bool) -> StoreResult<bool> {
        let mut stmt = set;
        stmt.push(", lease_owner = NULL, lease_expires_at = NULL, claim_token = NULL WHERE id = ")
            .push_bind(claim.job_id)
            .push(" AND claim_token = ")
            .push_bind(claim.token)
            .push(" AND state = 'queued'");
        if emits {
            self.transition(stmt, true).await
        } else {
            Ok(self.pool.execute(stmt).await? == 1)
        }
    }

    /// Runs a job transition (`stmt`: an UPDATE of at most one job, without `RETURNING`) and,
    /// in the same transaction, records the webhook events it causes
    /// ([`record_job_events`]: `submitted` when it leaves `queued` for MPS, `succeeded`
    /// or `failed` when it ends). Every transition to those states goes through here, whichever
    /// path moves the job (dispatch, reconciliation, polling, deadlines, MNS), so an event
    /// commits exactly when its change does. Returns whether a job changed.
    async fn transition(&self, mut stmt: Stmt, from_queued: bool) -> StoreResult<bool> {
        stmt.push(&format!(" RETURNING {}", job_columns(None)));
        let mut tx = self.pool.begin().await?;
        let row: Option<JobRow> = tx.conn().fetch_optional(stmt).await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(false);
        };
        let job = Job::try_from(row)?;
        record_job_events(&mut tx.conn(), &job, from_queued).await?;
        // The transitions' guards let a job end once: a final state recorded again (a
        // redelivered message) changes no row and counts nothing.
        if let Some(usage) = UsageDelta::ended(&job) {
            tx.conn().execute(usage_upsert(&[usage])).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The MPS calls `records` stand for (every one but an MNS message), per team and day.
    async fn mps_call_usage(
        &self,
        conn: &mut Conn<'_>,
        records: &[MpsResponseRecord],
    ) -> StoreResult<Vec<UsageDelta>> {
        let calls: Vec<&MpsResponseRecord> = records
            .iter()
            .filter(|r| !r.action.starts_with("MNS:"))
            .collect();
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        #[derive(FromRow)]
        struct TeamOf {
            id: DbId,
            team: String,
            region: String,
        }
        let mut q = Stmt::new("SELECT id, team, region FROM jobs WHERE id IN (");
        for (i, r) in calls.iter().enumerate() {
            q.push(if i == 0 { "" } else { ", " }).push_bind(r.job_id);
        }
        q.push(")");
        let teams: std::collections::HashMap<uuid::Uuid, (String, String)> = conn
            .fetch_all::<TeamOf>(q)
            .await?
            .into_iter()
            .map(|t| (t.id.0, (t.team, t.region)))
            .collect();
        Ok(calls
            .iter()
            .filter_map(|r| {
                let (team, region) = teams.get(&r.job_id.0)?;
                Some(UsageDelta::mps_calls(
                    team,
                    usage_day(r.received_at),
                    1,
                    region,
                ))
            })
            .collect())
    }

    /// Writes `set` while the claim is still held (its lease not expired by the database's
    /// clock).
    async fn under_claim(&self, claim: &ClaimKey, set: Stmt) -> StoreResult<bool> {
        let mut stmt = set;
        stmt.push(" WHERE id = ")
            .push_bind(claim.job_id)
            .push(" AND claim_token = ")
            .push_bind(claim.token)
            .push(" AND state = 'queued' AND lease_expires_at >= ")
            .push(self.dialect().now());
        Ok(self.pool.execute(stmt).await? == 1)
    }
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        match self.dialect() {
            Dialect::Postgres => "postgres",
            Dialect::Sqlite => "sqlite",
        }
    }

    #[tracing::instrument(name = "store.migrate", level = "debug", skip_all)]
    async fn migrate(&self) -> StoreResult<()> {
        match &self.pool {
            Pool::Postgres(p, _) => postgres::MIGRATOR.run(p).await?,
            Pool::Sqlite(p) => sqlite::MIGRATOR.run(p).await?,
        }
        Ok(())
    }

    #[tracing::instrument(name = "store.pending_migrations", level = "debug", skip_all)]
    async fn pending_migrations(&self) -> StoreResult<Vec<i64>> {
        // sqlx's own table; absent until the first migration ran.
        let (migrator, exists_sql) = match self.dialect() {
            Dialect::Postgres => (
                &postgres::MIGRATOR,
                "SELECT to_regclass('_sqlx_migrations') IS NOT NULL",
            ),
            Dialect::Sqlite => (
                &sqlite::MIGRATOR,
                "SELECT count(*) > 0 FROM sqlite_master \
                 WHERE type = 'table' AND name = '_sqlx_migrations'",
            ),
        };
        let (exists,): (bool,) = self.pool.fetch_one(Stmt::new(exists_sql)).await?;
        let applied: Vec<i64> = if exists {
            let rows: Vec<(i64,)> = self
                .pool
                .fetch_all(Stmt::new(
                    "SELECT version FROM _sqlx_migrations WHERE success",
                ))
                .await?;
            rows.into_iter().map(|(v,)| v).collect()
        } else {
            Vec::new()
        };
        Ok(migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
            .map(|m| m.version)
            .collect())
    }

    #[tracing::instrument(name = "store.ping", level = "debug", skip_all)]
    async fn ping(&self) -> StoreResult<()> {
        self.pool.execute(Stmt::new("SELECT 1")).await?;
        Ok(())
    }
}

#[async_trait]
impl JobStore for SqlStore {
    #[tracing::instrument(name = "store.create_job", level = "debug", skip_all)]
    async fn create_job_within(
        &self,
        job: NewJob,
        idempotency: Option<NewIdempotencyKey>,
        max_in_flight: u64,
    ) -> StoreResult<CreateOutcome> {
        let limit = i64::try_from(max_in_flight).unwrap_or(i64::MAX);
        if idempotency.is_none() {
            // Nothing else to write: the job joins a group commit (one statement and one
            // commit for the jobs of concurrent requests, admitted in it, announced after it).
            let created = job.clone().into_queued();
            if !self.jobs_commit.record(job, limit).await? {
                return Ok(CreateOutcome::QuotaExceeded);
            }
            return Ok(CreateOutcome::Created(Box::new(created)));
        }
        let mut tx = self.pool.begin().await?;
        let inserted = Self::insert_job(&mut tx.conn(), &job, idempotency.as_ref(), limit).await?;
        let row = match inserted {
            Inserted::Row(row) => row,
            Inserted::KeyTaken => {
                tx.rollback().await?;
                let key = idempotency.expect("a conflict needs a key");
                let existing = self
                    .get_idempotency_key(&job.team, &key.key)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("idempotency key vanished".into()))?;
                return Ok(CreateOutcome::KeyExists(existing));
            }
            Inserted::QuotaExceeded => {
                tx.rollback().await?;
                return Ok(CreateOutcome::QuotaExceeded);
            }
        };
        tx.commit().await?;
        self.jobs_commit.announce();
        Ok(CreateOutcome::Created(Box::new((*row).try_into()?)))
    }

    #[tracing::instrument(name = "store.get_job", level = "debug", skip_all, fields(job_id = %id))]
    async fn get_job(&self, team: Option<&str>, id: JobId) -> StoreResult<Option<Job>> {
        self.pool
            .fetch_optional::<JobRow>(
                Stmt::new(format!(
                    "SELECT {} FROM jobs WHERE id = $1 AND (CAST($2 AS TEXT) IS NULL OR team = $2)",
                    job_columns(None)
                ))
                .bind(id)
                .bind(team),
            )
            .await?
            .map(Job::try_from)
            .transpose()
    }

    #[tracing::instrument(name = "store.cancel_job", level = "debug", skip_all, fields(job_id = %id))]
    async fn cancel_job(
        &self,
        team: Option<&str>,
        id: JobId,
        error: &JobError,
    ) -> StoreResult<bool> {
        // A claim whose lease is live may be sending; one whose lease ended can no longer begin
        // an attempt (`begin_attempt` checks the lease), and `attempt_started_at` stays set
        // while an attempt's outcome is unknown.
        let stmt = Stmt::new(format!(
            "UPDATE jobs SET state = 'failed', due_at = NULL, lease_owner = NULL, \
             lease_expires_at = NULL, claim_token = NULL, last_error = $3, updated_at = $4, \
             finished_at = $4 \
             WHERE id = $1 AND (CAST($2 AS TEXT) IS NULL OR team = $2) AND state = 'queued' \
               AND attempt_started_at IS NULL AND mps_job_id IS NULL \
               AND (lease_expires_at IS NULL OR lease_expires_at < {})",
            self.dialect().now()
        ))
        .bind(id)
        .bind(team)
        .bind(json(error))
        .bind(now());
        self.transition(stmt, true).await
    }

    #[tracing::instrument(name = "store.list_jobs", level = "debug", skip_all)]
    async fn list_jobs(&self, f: &JobFilter) -> StoreResult<Vec<Job>> {
        jobs(self.pool.fetch_all(list_jobs_stmt(f)).await?)
    }

    #[tracing::instrument(name = "store.mps_responses", level = "debug", skip_all, fields(job_id = %id))]
    async fn mps_responses(&self, id: JobId) -> StoreResult<Vec<MpsResponseRecord>> {
        let rows: Vec<ResponseRow> = self
            .pool
            .fetch_all(
                Stmt::new(
                    "SELECT job_id, action, request_id, code, body, received_at FROM mps_responses \
                     WHERE job_id = $1 ORDER BY id",
                )
                .bind(id),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| MpsResponseRecord {
                job_id: JobId(r.job_id.0),
                action: r.action,
                request_id: r.request_id,
                code: r.code,
                body: r.body.0,
                received_at: r.received_at.0,
            })
            .collect())
    }

    #[tracing::instrument(name = "store.count_active_jobs", level = "debug", skip_all)]
    async fn count_active_jobs(&self, team: &str) -> StoreResult<u64> {
        let c: Count = self
            .pool
            .fetch_one(
                Stmt::new(
                    "SELECT count(*) AS n FROM jobs WHERE team = $1 \
                     AND state IN ('queued', 'submitted', 'snapshotting')",
                )
                .bind(team),
            )
            .await?;
        Ok(c.n as u64)
    }

    #[tracing::instrument(name = "store.job_counts", level = "debug", skip_all)]
    async fn job_counts(&self) -> StoreResult<JobCounts> {
        let rows: Vec<StateCount> = self
            .pool
            .fetch_all(Stmt::new(
                "SELECT team, state, count(*) AS n FROM jobs GROUP BY team, state ORDER BY team, state",
            ))
            .await?;
        let regions: Vec<StateCount> = self
            .pool
            .fetch_all(Stmt::new(
                "SELECT region AS team, state, count(*) AS n FROM jobs GROUP BY region, state ORDER BY region, state",
            ))
            .await?;
        let oldest: Oldest = self
            .pool
            .fetch_one(Stmt::new(
                "SELECT (SELECT min(created_at) FROM jobs WHERE state = 'queued') AS queued, \
                        (SELECT min(created_at) FROM jobs WHERE state IN ('submitted', 'snapshotting')) AS in_flight",
            ))
            .await?;
        Ok(JobCounts {
            by_state: rows
                .into_iter()
                .map(|r| (r.team, r.state, r.n as u64))
                .collect(),
            by_region: regions
                .into_iter()
                .map(|r| (r.team, r.state, r.n as u64))
                .collect(),
            oldest_queued: oldest.queued.map(|t| t.0),
            oldest_in_flight: oldest.in_flight.map(|t| t.0),
        })
    }

    #[tracing::instrument(name = "store.mps_error_codes_since", level = "debug", skip_all)]
    async fn mps_error_codes_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<(String, u64)>> {
        let rows: Vec<CodeCount> = self
            .pool
            .fetch_all(
                Stmt::new(
                    "SELECT code, count(*) AS n FROM mps_responses \
                     WHERE code IS NOT NULL AND received_at >= $1 GROUP BY code ORDER BY n DESC, code",
                )
                .bind(since),
            )
            .await?;
        Ok(rows.into_iter().map(|r| (r.code, r.n as u64)).collect())
    }
}

#[async_trait]
impl DispatchStore for SqlStore {
    #[tracing::instrument(name = "store.claim_dispatch", level = "debug", skip_all)]
    async fn claim_dispatch_in(
        &self,
        region: Option<&RegionScope>,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<DispatchClaim>> {
        let mut claim = Stmt::default()
            .bind(owner)
            .bind(now)
            .bind(lease_until)
            .bind(limit)
            .bind(uuid::Uuid::new_v4());
        // ` AND <region condition>` on `$6`, or nothing.
        let only = |table: Option<&str>| {
            region.map_or(String::new(), |r| format!(" AND {}", r.condition(table, 6)))
        };
        if let Some(r) = region {
            claim = claim.bind(r.region.as_str());
        }
        let rows = match self.dialect() {
            Dialect::Postgres => {
                postgres::claim_dispatch(&self.pool, claim, &only(None), &only(Some("j"))).await?
            }
            Dialect::Sqlite => sqlite::claim_dispatch(&self.pool, claim, &only(None)).await?,
        };
        rows.into_iter().map(DispatchClaim::try_from).collect()
    }

    #[tracing::instrument(name = "store.begin_attempt", level = "debug", skip_all, fields(job_id = %claim.job_id))]
    async fn begin_attempt(
        &self,
        claim: &ClaimKey,
        lease_until: DateTime<Utc>,
        pipeline: Option<&str>,
    ) -> StoreResult<bool> {
        let set = Stmt::new(format!(
            "UPDATE jobs SET attempt_started_at = COALESCE(attempt_started_at, {}), \
             lease_expires_at = $1, mps_pipeline_id = $2",
            self.dialect().now()
        ))
        .bind(lease_until)
        .bind(pipeline);
        self.under_claim(claim, set).await
    }

    #[tracing::instrument(name = "store.renew_lease", level = "debug", skip_all, fields(job_id = %claim.job_id))]
    async fn renew_lease(&self, claim: &ClaimKey, lease_until: DateTime<Utc>) -> StoreResult<bool> {
        let set = Stmt::new("UPDATE jobs SET lease_expires_at = $1").bind(lease_until);
        self.under_claim(claim, set).await
    }

    #[tracing::instrument(name = "store.confirm_absent", level = "debug", skip_all, fields(job_id = %claim.job_id))]
    async fn confirm_absent(&self, claim: &ClaimKey) -> StoreResult<bool> {
        self.under_claim(
            claim,
            Stmt::new("UPDATE jobs SET attempt_started_at = NULL"),
        )
        .await
    }

    #[tracing::instrument(name = "store.adopt_submitted", level = "debug", skip_all, fields(job_id = %id))]
    async fn adopt_submitted(&self, id: JobId, u: &MpsUpdate) -> StoreResult<bool> {
        let mut stmt = accepted_columns(u);
        stmt.push(", lease_owner = NULL, lease_expires_at = NULL, claim_token = NULL WHERE id = ")
            .push_bind(id)
            .push(" AND state = 'queued' AND mps_job_id IS NULL");
        self.transition(stmt, true).await
    }

    #[tracing::instrument(name = "store.fail_in_flight", level = "debug", skip_all, fields(job_id = %id))]
    async fn fail_in_flight(&self, id: JobId, error: &JobError) -> StoreResult<bool> {
        self.transition(
            Stmt::new(
                "UPDATE jobs SET state = 'failed', next_poll_at = NULL, last_error = $2, \
                     updated_at = $3, finished_at = $3, mps_code = COALESCE(mps_code, $4), \
                     mps_message = COALESCE(mps_message, $5) \
                     WHERE id = $1 AND state IN ('submitted', 'snapshotting')",
            )
            .bind(id)
            .bind(json(error))
            .bind(now())
            .bind(&error.code)
            .bind(&error.message),
            false,
        )
        .await
    }

    #[tracing::instrument(name = "store.complete_dispatch", level = "debug", skip_all, fields(job_id = %claim.job_id))]
    async fn complete_dispatch(&self, claim: &ClaimKey, u: &MpsUpdate) -> StoreResult<bool> {
        self.end_dispatch(claim, accepted_columns(u), true).await
    }

    #[tracing::instrument(name = "store.retry_dispatch", level = "debug", skip_all, fields(job_id = %claim.job_id))]
    async fn retry_dispatch(
        &self,
        claim: &ClaimKey,
        error: &JobError,
        due_at: DateTime<Utc>,
        outcome_unknown: bool,
    ) -> StoreResult<bool> {
        let set = Stmt::new(
            "UPDATE jobs SET due_at = $1, last_error = $2, updated_at = $3, \
             attempt_started_at = CASE WHEN $4 THEN attempt_started_at END",
        )
        .bind(due_at)
        .bind(json(error))
        .bind(now())
        .bind(outcome_unknown);
        self.end_dispatch(claim, set, false).await
    }

    #[tracing::instrument(name = "store.defer_lookup", level = "debug", skip_all, fields(job_id = %claim.job_id))]
    async fn defer_lookup(
        &self,
        claim: &ClaimKey,
        error: &JobError,
        due_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let set = Stmt::new(
            "UPDATE jobs SET due_at = $1, last_error = $2, updated_at = $3, \
             attempts = attempts - 1",
        )
        .bind(due_at)
        .bind(json(error))
        .bind(now());
        self.end_dispatch(claim, set, false).await
    }

    #[tracing::instrument(name = "store.fail_dispatch", level = "debug", skip_all, fields(job_id = %claim.job_id))]
    async fn fail_dispatch(&self, claim: &ClaimKey, error: &JobError) -> StoreResult<bool> {
        let set = Stmt::new(
            "UPDATE jobs SET state = 'failed', due_at = NULL, attempt_started_at = NULL, \
             last_error = $1, updated_at = $2, finished_at = $2, \
             mps_code = COALESCE(mps_code, $3), mps_message = COALESCE(mps_message, $4)",
        )
        .bind(json(error))
        .bind(now())
        .bind(&error.code)
        .bind(&error.message);
        self.end_dispatch(claim, set, true).await
    }

    #[tracing::instrument(name = "store.release_dispatch", level = "debug", skip_all)]
    async fn release_dispatch(&self, owner: &str) -> StoreResult<u64> {
        self.pool
            .execute(
                Stmt::new(
                    "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = $1",
                )
                .bind(owner),
            )
            .await
    }

    #[tracing::instrument(name = "store.backfill_region", level = "debug", skip_all)]
    async fn backfill_region(&self, default_region: &str) -> StoreResult<u64> {
        self.pool
            .execute(
                Stmt::new("UPDATE jobs SET region = $1 WHERE region = ''").bind(default_region),
            )
            .await
    }

    #[tracing::instrument(name = "store.claim_polls", level = "debug", skip_all)]
    async fn claim_polls_in(
        &self,
        region: Option<&RegionScope>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Job>> {
        let only = region.map_or(String::new(), |r| format!(" AND {}", r.condition(None, 4)));
        let sql = match self.dialect() {
            Dialect::Postgres => postgres::claim_polls_sql(&only),
            Dialect::Sqlite => sqlite::claim_polls_sql(&only),
        };
        let mut stmt = Stmt::new(sql).bind(now).bind(lease_until).bind(limit);
        if let Some(r) = region {
            stmt = stmt.bind(r.region.as_str());
        }
        let rows: Vec<JobRow> = self.pool.fetch_all(stmt).await?;
        jobs(rows)
    }

    #[tracing::instrument(name = "store.record_poll", level = "debug", skip_all, fields(job_id = %id))]
    async fn record_poll(&self, id: JobId, u: &MpsUpdate) -> StoreResult<()> {
        let stmt = Stmt::new(format!(
            "UPDATE jobs SET state = $2, updated_at = $3, \
             finished_at = CASE WHEN $2 IN ('succeeded', 'failed') THEN $3 END, \
             next_poll_at = $4, mps_state = $5, mps_request_id = $6, mps_count = $7, \
             mps_tile_count = $8, mps_code = $9, mps_message = $10, mps_response = $11, \
             not_found_since = NULL, {} \
             WHERE id = $1 AND state NOT IN ('succeeded', 'failed')",
            last_error_sql("$2")
        ))
        .bind(id)
        .bind(u.state.as_str())
        .bind(now())
        .bind(u.next_poll_at);
        self.transition(bind_mps(stmt, &u.mps).bind(mps_failure(u)), false)
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "store.job_by_mps_job_id", level = "debug", skip_all)]
    async fn job_by_mps_job_id(&self, mps_job_id: &str) -> StoreResult<Option<Job>> {
        self.pool
            .fetch_optional::<JobRow>(
                Stmt::new(format!(
                    "SELECT {} FROM jobs WHERE mps_job_id = $1",
                    job_columns(None)
                ))
                .bind(mps_job_id),
            )
            .await?
            .map(Job::try_from)
            .transpose()
    }

    #[tracing::instrument(name = "store.postpone_poll", level = "debug", skip_all, fields(job_id = %id))]
    async fn postpone_poll(&self, id: JobId, next_poll_at: DateTime<Utc>) -> StoreResult<()> {
        self.pool
            .execute(
                Stmt::new(
                    "UPDATE jobs SET next_poll_at = $2 WHERE id = $1 AND next_poll_at IS NOT NULL",
                )
                .bind(id)
                .bind(next_poll_at),
            )
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "store.poll_not_found", level = "debug", skip_all, fields(job_id = %id))]
    async fn poll_not_found(
        &self,
        id: JobId,
        next_poll_at: DateTime<Utc>,
    ) -> StoreResult<DateTime<Utc>> {
        let since: Since = self
            .pool
            .fetch_one(
                Stmt::new(format!(
                    "UPDATE jobs SET next_poll_at = $2, not_found_since = COALESCE(not_found_since, {}) \
                     WHERE id = $1 RETURNING not_found_since AS since",
                    self.dialect().now()
                ))
                .bind(id)
                .bind(next_poll_at),
            )
            .await?;
        Ok(since.since.0)
    }

    #[tracing::instrument(name = "store.clock", level = "debug", skip_all)]
    async fn clock(&self) -> StoreResult<DateTime<Utc>> {
        let t: Since = self
            .pool
            .fetch_one(Stmt::new(format!(
                "SELECT {} AS since",
                self.dialect().now()
            )))
            .await?;
        Ok(t.since.0)
    }

    #[tracing::instrument(name = "store.append_mps_responses", level = "debug", skip_all)]
    async fn append_mps_responses(&self, records: &[MpsResponseRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let usage = self.mps_call_usage(&mut tx.conn(), records).await?;
        if !usage.is_empty() {
            tx.conn().execute(usage_upsert(&usage)).await?;
        }
        let mut q = Stmt::new(
            "INSERT INTO mps_responses (job_id, action, request_id, code, body, received_at) VALUES ",
        );
        for (i, r) in records.iter().enumerate() {
            q.push(if i == 0 { "(" } else { ", (" })
                .push_bind(r.job_id)
                .push(", ")
                .push_bind(&r.action)
                .push(", ")
                .push_bind(r.request_id.clone())
                .push(", ")
                .push_bind(r.code.clone())
                .push(", ")
                .push_bind(&r.body)
                .push(", ")
                .push_bind(r.received_at)
                .push(")");
        }
        tx.conn().execute(q).await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(name = "store.next_due", level = "debug", skip_all)]
    async fn next_due_each_in(&self, region: Option<&RegionScope>) -> StoreResult<super::NextDue> {
        // Both read an index in order and stop early: the first 64 due jobs (a leased one is
        // due when its lease ends), and the first poll.
        let only = region.map_or(String::new(), |r| format!(" AND {}", r.condition(None, 1)));
        let mut stmt = Stmt::new(format!(
            "SELECT (SELECT min(CASE WHEN lease_expires_at > due_at THEN lease_expires_at ELSE due_at END) \
                     FROM (SELECT due_at, lease_expires_at FROM jobs WHERE due_at IS NOT NULL{only} \
                           AND team NOT IN (SELECT name FROM teams WHERE paused_at IS NOT NULL) \
                           ORDER BY due_at LIMIT 64) first_due) AS dispatch, \
                    (SELECT min(next_poll_at) FROM jobs WHERE next_poll_at IS NOT NULL{only}) AS poll"
        ));
        if let Some(r) = region {
            stmt = stmt.bind(r.region.as_str());
        }
        let due: Due = self.pool.fetch_one(stmt).await?;
        Ok(super::NextDue {
            dispatch: due.dispatch.map(|t| t.0),
            poll: due.poll.map(|t| t.0),
        })
    }

    fn spawn_job_listener(&self, wake: Arc<tokio::sync::Notify>) {
        if let Pool::Postgres(pool, _) = &self.pool {
            postgres::spawn_job_listener(pool, wake);
        }
    }

    fn watch_job_changes(&self, sink: Arc<dyn super::JobChangeSink>) -> bool {
        match &self.pool {
            Pool::Postgres(pool, _) => {
                postgres::spawn_job_change_listener(pool, sink);
                true
            }
            Pool::Sqlite(_) => false,
        }
    }
}

#[async_trait]
impl IdempotencyStore for SqlStore {
    #[tracing::instrument(name = "store.get_idempotency_key", level = "debug", skip_all)]
    async fn get_idempotency_key(
        &self,
        team: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        Ok(self
            .pool
            .fetch_optional::<IdempotencyRow>(
                // A key past its expiry is gone, purged or not: the same key makes a new job.
                Stmt::new(format!(
                    "SELECT {IDEMPOTENCY_COLUMNS} FROM idempotency_keys \
                     WHERE team = $1 AND key = $2 AND expires_at >= {}",
                    self.dialect().now()
                ))
                .bind(team)
                .bind(key),
            )
            .await?
            .map(Into::into))
    }

    #[tracing::instrument(name = "store.complete_idempotency_key", level = "debug", skip_all)]
    async fn complete_idempotency_key(
        &self,
        team: &str,
        key: &str,
        status: u16,
        body: &Value,
    ) -> StoreResult<()> {
        self.pool
            .execute(
                Stmt::new(
                    "UPDATE idempotency_keys SET response_status = $3, response_body = $4 \
                     WHERE team = $1 AND key = $2 AND response_status IS NULL",
                )
                .bind(team)
                .bind(key)
                .bind(i64::from(status))
                .bind(body),
            )
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "store.purge_idempotency_keys", level = "debug", skip_all)]
    async fn purge_idempotency_keys(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        self.pool
            .execute(Stmt::new("DELETE FROM idempotency_keys WHERE expires_at < $1").bind(now))
            .await
    }
}

#[async_trait]
impl KeyStore for SqlStore {
    #[tracing::instrument(name = "store.create_team", level = "debug", skip_all)]
    async fn create_team(&self, name: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let n = self
            .pool
            .execute(
                Stmt::new(
                    "INSERT INTO teams (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(name)
                .bind(now),
            )
            .await?;
        Ok(n == 1)
    }

    #[tracing::instrument(name = "store.team_exists", level = "debug", skip_all)]
    async fn team_exists(&self, name: &str) -> StoreResult<bool> {
        Ok(self
            .pool
            .fetch_optional::<Found>(
                Stmt::new("SELECT 1 AS found FROM teams WHERE name = $1").bind(name),
            )
            .await?
            .is_some())
    }

    #[tracing::instrument(name = "store.list_teams", level = "debug", skip_all)]
    async fn list_teams(&self) -> StoreResult<Vec<TeamRecord>> {
        let rows: Vec<TeamRow> = self
            .pool
            .fetch_all(Stmt::new(
                "SELECT name, created_at FROM teams ORDER BY name",
            ))
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| TeamRecord {
                name: r.name,
                created_at: r.created_at.0,
            })
            .collect())
    }

    #[tracing::instrument(name = "store.create_api_key", level = "debug", skip_all)]
    async fn create_api_key(&self, k: &ApiKeyRecord) -> StoreResult<()> {
        self.pool
            .execute(
                Stmt::new(format!(
                    "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ))
                .bind(&k.access_key_id)
                .bind(&k.team)
                .bind(k.admin)
                .bind(&k.token_hash)
                .bind(&k.secret_ciphertext)
                .bind(k.created_at)
                .bind(k.revoked_at),
            )
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "store.list_api_keys", level = "debug", skip_all)]
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        let rows: Vec<KeyRow> = self
            .pool
            .fetch_all(Stmt::new(format!(
                "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY team, created_at"
            )))
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    #[tracing::instrument(name = "store.revoke_api_key", level = "debug", skip_all)]
    async fn revoke_api_key(&self, access_key_id: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let n = self
            .pool
            .execute(
                Stmt::new(
                    "UPDATE api_keys SET revoked_at = $2 WHERE access_key_id = $1 AND revoked_at IS NULL",
                )
                .bind(access_key_id)
                .bind(now),
            )
            .await?;
        if n == 1 {
            // After the commit: whoever hears of it reads the key as revoked.
            self.keys.bump();
            if self.dialect() == Dialect::Postgres {
                postgres::notify_key_change(&self.pool, access_key_id).await?;
            }
        }
        Ok(n == 1)
    }

    #[tracing::instrument(name = "store.api_key_by_token_hash", level = "debug", skip_all)]
    async fn api_key_by_token_hash(&self, token_hash: &str) -> StoreResult<Option<ApiKeyRecord>> {
        Ok(self
            .pool
            .fetch_optional::<KeyRow>(
                Stmt::new(format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE token_hash = $1 AND revoked_at IS NULL"
                ))
                .bind(token_hash),
            )
            .await?
            .map(Into::into))
    }

    #[tracing::instrument(name = "store.api_key_by_access_key_id", level = "debug", skip_all)]
    async fn api_key_by_access_key_id(
        &self,
        access_key_id: &str,
    ) -> StoreResult<Option<ApiKeyRecord>> {
        Ok(self
            .pool
            .fetch_optional::<KeyRow>(
                Stmt::new(format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE access_key_id = $1"
                ))
                .bind(access_key_id),
            )
            .await?
            .map(Into::into))
    }

    fn key_changes(&self) -> KeyChanges {
        if let Pool::Postgres(pool, _) = &self.pool {
            let (pool, keys) = (pool.clone(), self.keys.clone());
            self.key_listener
                .call_once(move || postgres::spawn_key_listener(&pool, keys));
        }
        self.keys.clone()
    }
}

#[async_trait]
impl BudgetStore for SqlStore {
    #[tracing::instrument(name = "store.acquire_budget", level = "debug", skip_all)]
    async fn acquire_budget(
        &self,
        name: &str,
        want: u32,
        rate: f64,
        burst: f64,
        now: DateTime<Utc>,
    ) -> StoreResult<Grant> {
        let mut tx = self.pool.begin().await?;
        let mut conn = tx.conn();
        conn.execute(
            Stmt::new(
                "INSERT INTO upstream_budget (name, tokens, refilled_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(burst)
            .bind(now),
        )
        .await?;
        // Postgres locks the row; SQLite's single connection already serializes the transaction.
        let lock = match self.dialect() {
            Dialect::Postgres => " FOR UPDATE",
            Dialect::Sqlite => "",
        };
        let row: Bucket = conn
            .fetch_one(
                Stmt::new(format!(
                    "SELECT name, tokens, refilled_at FROM upstream_budget WHERE name = $1{lock}"
                ))
                .bind(name),
            )
            .await?;
        let (granted, left, at) =
            take_tokens(row.tokens, row.refilled_at.0, now, want, rate, burst);
        conn.execute(
            Stmt::new("UPDATE upstream_budget SET tokens = $2, refilled_at = $3 WHERE name = $1")
                .bind(name)
                .bind(left)
                .bind(at),
        )
        .await?;
        tx.commit().await?;
        Ok(Grant { granted, left })
    }

    #[tracing::instrument(name = "store.budgets", level = "debug", skip_all)]
    async fn budgets(&self) -> StoreResult<Vec<(String, f64, DateTime<Utc>)>> {
        let rows: Vec<Bucket> = self
            .pool
            .fetch_all(Stmt::new(
                "SELECT name, tokens, refilled_at FROM upstream_budget ORDER BY name",
            ))
            .await?;
        Ok(rows
            .into_iter()
            .map(|b| (b.name, b.tokens, b.refilled_at.0))
            .collect())
    }
}
