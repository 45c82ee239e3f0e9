//! Where a job is created: the one submit path behind every entry point (the REST API, the
//! MPS-compatible endpoint, upload callbacks). [`SubmitService::submit`] owns every rule of
//! accepting a job, in this order:
//!
//! 1. resolve a named preset (`"preset": "name@version"`, or the name: its latest version) with
//!    the body's other members as overrides, then validate the request completely (every
//!    violation listed); the job keeps the resolved request and the preset version;
//! 2. idempotency first: a key already used answers with its job (a replay), or says the first
//!    request is still being answered, or that the key came with another body — before any quota
//!    check, so a retry is never refused for a limit its first try passed;
//! 3. record the job, queued for dispatch, with its idempotency key, under the team's
//!    in-flight quota (exact: admitted by the insert's own statement or transaction);
//! 4. wake the dispatcher, and optionally wait a short budget for MPS to accept the job — only
//!    when the dispatcher can send it at once (no backlog, not paused, the upstream budget not
//!    spent, fewer POSTs waiting than the budget sends at once): a POST never waits behind
//!    other jobs.
//!
//! Entry points are adapters: they parse their transport, call `submit`, and render the outcome.
//!
//! [`SubmitService::preview`] is the dry run: the same validation, then what `submit` would
//! lead to — the exact MPS parameters, the predicted outputs — with nothing recorded.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::clock;
use crate::domain::outputs::OutputManifest;
use crate::domain::{self, JobId, JobRequest, JobState, Violation, Warning};
use crate::domain::{Job, JobError, NewJob};
use crate::mps::wire::SubmitParams;
use crate::services::limits::TeamPauses;
use crate::services::outputs::OutputService;
use crate::services::presets;
use crate::signals::JobSignals;
use crate::store::{
    CreateOutcome, DynStore, IdempotencyRecord, NewIdempotencyKey, RetryOutcome, StoreError,
};

/// How long a submit may wait for MPS to accept the job before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Answer as soon as the job is recorded.
    No,
    /// Wait up to this long for MPS's job id.
    UpTo(Duration),
}

/// The rules' settings, taken from the configuration once.
#[derive(Debug, Clone)]
pub struct SubmitConfig {
    pub max_active_jobs: u64,
    pub idempotency_ttl: chrono::Duration,
    /// Whether a dispatcher runs anywhere for this store (else waiting is pointless).
    pub worker_enabled: bool,
    pub default_wait: Wait,
    /// `mps.pipeline_id`: the pipeline of jobs that name none.
    pub default_pipeline: Option<String>,
    /// The MPS regions served (the default first) and each one's pipeline for jobs naming none.
    pub regions: Vec<(String, Option<String>)>,
    /// How many POSTs of this replica may wait for MPS at once: the submits the upstream
    /// budget lets through at once (its burst, a twentieth of `worker.submit_qps`). Others
    /// would wait for the budget, not for MPS: they answer at once.
    pub max_waiting: usize,
}

impl SubmitConfig {
    pub fn from_settings(s: &crate::config::Settings) -> Self {
        let wait_ms = s.http.submit_wait_ms;
        Self {
            max_active_jobs: s.limits.team_max_active_jobs,
            idempotency_ttl: chrono::Duration::microseconds(
                (s.idempotency.ttl_hours * 3_600_000_000.0) as i64,
            ),
            worker_enabled: s.worker.enabled,
            default_wait: if wait_ms == 0 {
                Wait::No
            } else {
                Wait::UpTo(Duration::from_millis(wait_ms))
            },
            default_pipeline: s.mps.pipeline_id.clone(),
            regions: s
                .regions()
                .into_iter()
                .map(|r| (r.id, r.pipeline_id))
                .collect(),
            max_waiting: (s.worker.submit_qps / 20).max(1) as usize,
        }
    }
}

/// A job accepted (now or by an earlier request with the same key).
#[derive(Debug, Clone)]
pub struct Submitted {
    pub job: Job,
    /// An earlier request with the same idempotency key created this job.
    pub replayed: bool,
}

impl Submitted {
    /// MPS has the job (or it already ended): the entry point answers "created".
    pub fn delivered(&self) -> bool {
        self.job.state != JobState::Queued
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the job request is not valid")]
    Invalid(Vec<Violation>),
    #[error("the idempotency key was used with a different request")]
    KeyReused,
    #[error("the first request with this idempotency key is still being answered")]
    KeyInProgress,
    #[error("the team has {limit} jobs in flight")]
    QuotaExceeded { limit: u64 },
    /// The team is paused by an operator with new jobs refused.
    #[error("the team is paused")]
    TeamPaused,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a job could not be retried.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("no such job")]
    NotFound,
    /// Only a failed job is made again.
    #[error("a {state:?} job cannot be retried")]
    NotFailed { state: JobState },
    #[error(transparent)]
    Submit(#[from] SubmitError),
}

impl From<StoreError> for RetryError {
    fn from(e: StoreError) -> Self {
        RetryError::Submit(SubmitError::Store(e))
    }
}

/// Why a job could not be cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("no such job")]
    NotFound,
    /// MPS was sent the job, is being sent it, or the job is final: MPS offers no cancel.
    #[error("a {state:?} job cannot be cancelled")]
    NotCancellable { state: JobState },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `last_error.code` of a cancelled job.
pub const CANCELLED: &str = "Cancelled";

/// Where a dry run's input duration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationSource {
    /// `duration_ms` in the request.
    Request,
    /// `ffprobe` of the input on the local store.
    Probe,
}

impl DurationSource {
    pub fn as_str(self) -> &'static str {
        match self {
            DurationSource::Request => "request",
            DurationSource::Probe => "probe",
        }
    }
}

/// What a job request would lead to, with nothing recorded.
#[derive(Debug, Clone)]
pub struct Preview {
    /// The normalized request.
    pub request: JobRequest,
    pub warnings: Vec<Warning>,
    /// `SubmitSnapshotJob`'s own parameters, exactly as the worker would send them (the
    /// `UserData` names a job id made for this preview; a real submit gets its own).
    pub params: SubmitParams,
    pub duration_ms: Option<u64>,
    pub duration_source: Option<DurationSource>,
    /// `None` when the outputs cannot be listed (an open-ended interval and no duration).
    pub outputs: Option<OutputManifest>,
}

/// An idempotency key as the entry point received it (already checked for its form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub String);

pub struct SubmitService {
    store: DynStore,
    signals: JobSignals,
    /// Teams paused with new jobs refused.
    pauses: Arc<TeamPauses>,
    cfg: SubmitConfig,
    outputs: Arc<OutputService>,
    /// POSTs waiting for MPS now.
    waiting: Arc<std::sync::atomic::AtomicUsize>,
}

/// One POST's place among those waiting for MPS; given back when dropped.
struct WaitSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for WaitSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The body field a dry run takes besides the job request: the input's duration.
pub const DURATION_FIELD: &str = "duration_ms";

impl SubmitService {
    pub fn new(
        store: DynStore,
        signals: JobSignals,
        cfg: SubmitConfig,
        outputs: Arc<OutputService>,
    ) -> Self {
        Self {
            store,
            signals,
            pauses: Arc::default(),
            cfg,
            outputs,
            waiting: Arc::default(),
        }
    }

    /// The job validator (`domain::validate_request`), then MPS's region rule
    /// (`domain::regions`): the input in a served region, the outputs in the input's.
    pub fn validate(&self, body: &Value) -> Result<(JobRequest, Vec<Warning>), Vec<Violation>> {
        let (request, warnings) = domain::validate_request(body)?;
        let served: Vec<String> = self.cfg.regions.iter().map(|(r, _)| r.clone()).collect();
        let errors = domain::regions::violations(&request, &served);
        if errors.is_empty() {
            Ok((request, warnings))
        } else {
            Err(errors)
        }
    }

    /// The pipeline a job of `region` naming none goes to.
    pub fn region_pipeline(&self, region: &str) -> Option<&str> {
        self.cfg
            .regions
            .iter()
            .find(|(r, _)| r == region)
            .map_or(self.cfg.default_pipeline.as_deref(), |(_, p)| p.as_deref())
    }

    /// A place among the POSTs waiting for MPS, if one is free.
    fn wait_slot(&self) -> Option<WaitSlot> {
        use std::sync::atomic::Ordering;
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.cfg.max_waiting).then_some(n + 1)
            })
            .ok()
            .map(|_| WaitSlot(self.waiting.clone()))
    }

    /// The dry run of [`SubmitService::submit`]: resolves a preset, validates `body` (the REST body shape; it may
    /// also carry `duration_ms`, the input's duration), records nothing, checks no quota or
    /// idempotency key, and answers what MPS would be sent and what would come out. The
    /// duration is `duration_ms` (an argument wins over the body's), else probed on the local
    /// store when the input is there.
    pub async fn preview(
        &self,
        team: &str,
        body: &Value,
        duration_ms: Option<u64>,
    ) -> Result<Preview, SubmitError> {
        let mut body = self.resolve(team, body, None).await?.0.into_owned();
        let mut errors = Vec::new();
        let from_body = match body.as_object_mut().and_then(|m| m.remove(DURATION_FIELD)) {
            None => None,
            Some(v) => match v.as_u64() {
                Some(d) => Some(d),
                None => {
                    errors.push(Violation {
                        field: format!("/{DURATION_FIELD}"),
                        code: "out_of_range".into(),
                        message: "must be the input's duration in ms, an integer >= 0".into(),
                    });
                    None
                }
            },
        };
        let (request, warnings) = match self.validate(&body) {
            Ok(ok) => ok,
            Err(mut v) => {
                v.extend(errors);
                return Err(SubmitError::Invalid(v));
            }
        };
        if !errors.is_empty() {
            return Err(SubmitError::Invalid(errors));
        }
        let (duration_ms, duration_source) = match duration_ms.or(from_body) {
            Some(d) => (Some(d), Some(DurationSource::Request)),
            None => match self.outputs.probe_duration(&request.input).await {
                Some(d) => (Some(d), Some(DurationSource::Probe)),
                None => (None, None),
            },
        };
        let params = crate::mps::params::submit_params(
            JobId::new(),
            &request,
            self.region_pipeline(request.region()),
        );
        let outputs = self.outputs.predict(&request, duration_ms);
        Ok(Preview {
            request,
            warnings,
            params,
            duration_ms,
            duration_source,
            outputs,
        })
    }

    pub fn default_wait(&self) -> Wait {
        self.cfg.default_wait
    }

    /// Accepts a job request (the REST body shape) for `team`.
    pub async fn submit(
        &self,
        team: &str,
        body: &Value,
        key: Option<&IdempotencyKey>,
        wait: Wait,
    ) -> Result<Submitted, SubmitError> {
        self.submit_for(team, body, key, wait, None).await
    }

    /// [`SubmitService::submit`] for an upload: `{UploadId}` in the preset's output keys
    /// becomes `upload_id`.
    pub async fn submit_for(
        &self,
        team: &str,
        body: &Value,
        key: Option<&IdempotencyKey>,
        wait: Wait,
        upload_id: Option<&str>,
    ) -> Result<Submitted, SubmitError> {
        let (body, preset) = self.resolve(team, body, upload_id).await?;
        let (request, warnings) = self.validate(&body).map_err(SubmitError::Invalid)?;
        // Only a request with a key is compared with another (no hash of every job).
        let fingerprint = key.map(|_| fingerprint(&request)).unwrap_or_default();
        if let Some(k) = key {
            if let Some(existing) = self.store.get_idempotency_key(team, &k.0).await? {
                return self.replay(team, existing, &fingerprint).await;
            }
        }
        self.check_pause(team).await?;

        let now = clock::now();
        let new = NewJob {
            id: JobId::new(),
            team: team.to_string(),
            request,
            warnings,
            created_at: now,
            preset,
        };
        let idem = key.map(|k| NewIdempotencyKey {
            key: k.0.clone(),
            fingerprint: fingerprint.clone(),
            expires_at: now + self.cfg.idempotency_ttl,
        });
        let mut dispatched = self.signals.dispatched.subscribe();
        // The quota is decided with the insert, in its statement or transaction: exact.
        let limit = self.cfg.max_active_jobs;
        let job = match self.store.create_job_within(new, idem, limit).await? {
            CreateOutcome::Created(job) => *job,
            // A concurrent request with the same key won the race.
            CreateOutcome::KeyExists(existing) => {
                return self.replay(team, existing, &fingerprint).await
            }
            CreateOutcome::QuotaExceeded => return Err(self.quota_refused()),
        };
        let signals = self.recorded(&job);
        let job = self
            .wait_for_dispatch(job, wait, &signals, &mut dispatched)
            .await?;
        Ok(Submitted {
            job,
            replayed: false,
        })
    }

    /// The job body with its preset applied: the preset's request, the body's other members
    /// merged over it (JSON Merge Patch), `{UploadId}` filled in. A body without `preset` is
    /// returned as it is. Also answers the preset's `name@version`.
    pub async fn resolve<'b>(
        &self,
        team: &str,
        body: &'b Value,
        upload_id: Option<&str>,
    ) -> Result<(Cow<'b, Value>, Option<String>), SubmitError> {
        let Some(named) = body.get(presets::PRESET_FIELD) else {
            return Ok((Cow::Borrowed(body), None));
        };
        let invalid = |code: &str, message: String| {
            SubmitError::Invalid(vec![Violation {
                field: format!("/{}", presets::PRESET_FIELD),
                code: code.into(),
                message,
            }])
        };
        let Some(named) = named.as_str() else {
            return Err(invalid(
                "invalid_type",
                "must be a preset name, or name@version".into(),
            ));
        };
        let r = presets::PresetRef::parse(named).map_err(|v| SubmitError::Invalid(vec![v]))?;
        let preset = self
            .store
            .get_preset(team, &r.name, r.version)
            .await?
            .ok_or_else(|| invalid("unknown_preset", format!("this team has no preset {named}")))?;
        let mut resolved = preset.body.clone();
        let mut overrides = body.clone();
        if let Some(m) = overrides.as_object_mut() {
            m.remove(presets::PRESET_FIELD);
        }
        presets::merge_patch(&mut resolved, &overrides);
        match upload_id {
            Some(id) => presets::fill_upload_id(&mut resolved, id),
            None if presets::uses_upload_id(&resolved) => {
                return Err(invalid(
                    "needs_upload",
                    format!("preset {} writes {{UploadId}} in its output keys: it makes jobs for uploads only (POST /v1/uploads)", preset.reference()),
                ))
            }
            None => {}
        }
        Ok((Cow::Owned(resolved), Some(preset.reference())))
    }

    /// The answer to a request whose idempotency key is already taken.
    async fn replay(
        &self,
        team: &str,
        existing: IdempotencyRecord,
        fingerprint: &str,
    ) -> Result<Submitted, SubmitError> {
        if existing.fingerprint != fingerprint {
            return Err(SubmitError::KeyReused);
        }
        let job = self
            .store
            .get_job(Some(team), existing.job_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("idempotency key without its job".into()))?;
        // The first request answers once MPS has the job or its wait is over; until then a
        // retry is told to come back.
        let waited = clock::now() - existing.created_at;
        if job.state == JobState::Queued && self.cfg.worker_enabled && waited < self.first_wait() {
            return Err(SubmitError::KeyInProgress);
        }
        metrics::counter!("snapgate_idempotent_replays_total").increment(1);
        Ok(Submitted {
            job,
            replayed: true,
        })
    }

    /// How long a first request may still be waiting for MPS: its answer comes by then at the
    /// latest (or never, if it crashed: then the job as it is now is the answer).
    fn first_wait(&self) -> chrono::Duration {
        match self.cfg.default_wait {
            Wait::No => chrono::Duration::zero(),
            Wait::UpTo(d) => chrono::Duration::from_std(d).unwrap_or_default(),
        }
    }

    /// Cancels a job MPS has not been sent (of `team`, or of any team for an admin's `None`): it
    /// becomes `failed` with the error code [`CANCELLED`], never reaches MPS, and its place in
    /// the team's in-flight quota is free at once (on every replica: the store's count is given
    /// back in the cancel's transaction). Returns the job as it now is.
    pub async fn cancel(&self, team: Option<&str>, id: JobId) -> Result<Job, CancelError> {
        let error = JobError {
            code: CANCELLED.into(),
            message: "cancelled by the caller before MPS was sent the job".into(),
            // Microseconds, as every time the store keeps (Postgres's precision).
            at: crate::clock::now(),
        };
        let cancelled = self.store.cancel_job(team, id, &error).await?;
        let job = self
            .store
            .get_job(team, id)
            .await?
            .ok_or(CancelError::NotFound)?;
        if !cancelled {
            return Err(CancelError::NotCancellable { state: job.state });
        }
        tracing::info!(job_id = %job.id, team = %job.team, "job cancelled");
        Ok(job)
    }

    /// The pause of teams whose new jobs are refused (this replica's view, at most
    /// [`PAUSES_TTL`](crate::services::limits::PAUSES_TTL) old).
    pub fn pauses(&self) -> &Arc<TeamPauses> {
        &self.pauses
    }

    async fn check_pause(&self, team: &str) -> Result<(), SubmitError> {
        if self.pauses.refuses(&self.store, team).await? {
            metrics::counter!("snapgate_rejected_requests_total", "reason" => "paused")
                .increment(1);
            return Err(SubmitError::TeamPaused);
        }
        Ok(())
    }

    /// Makes a new job from the failed job `id` (of `team`, or any team for an admin's
    /// `None`): the same request, checked again by today's rules, through the same pause and
    /// quota as any submit, linked both ways (`retry_of`, `retried_by`). A job retried already
    /// answers its one retry (`replayed`), however many calls race.
    pub async fn retry(&self, team: Option<&str>, id: JobId) -> Result<Submitted, RetryError> {
        let original = self
            .store
            .get_job(team, id)
            .await?
            .ok_or(RetryError::NotFound)?;
        if let Some(existing) = original.retried_by {
            return self.replayed_retry(existing).await;
        }
        if original.state != JobState::Failed {
            return Err(RetryError::NotFailed {
                state: original.state,
            });
        }
        let body = serde_json::to_value(&original.request).expect("serializable");
        let (request, warnings) = domain::validate_request(&body).map_err(SubmitError::Invalid)?;
        self.check_pause(&original.team).await?;
        let new = NewJob {
            id: JobId::new(),
            team: original.team.clone(),
            request,
            warnings,
            created_at: clock::now(),
            preset: original.preset.clone(),
        };
        // Admitted under the quota by the insert's own transaction, as any submit.
        let limit = self.cfg.max_active_jobs;
        match self.store.create_retry(team, id, new, limit).await? {
            RetryOutcome::Created(job) => {
                tracing::info!(job_id = %job.id, retry_of = %id, team = %job.team, "job retried");
                self.recorded(&job);
                Ok(Submitted {
                    job: *job,
                    replayed: false,
                })
            }
            RetryOutcome::Existing(existing) => self.replayed_retry(existing).await,
            RetryOutcome::NotFound => Err(RetryError::NotFound),
            RetryOutcome::NotFailed(state) => Err(RetryError::NotFailed { state }),
            RetryOutcome::QuotaExceeded => Err(self.quota_refused().into()),
        }
    }

    /// A new job is recorded (a submit or a retry): its id on the request's span, its region's
    /// dispatcher woken. Answers that region's signals.
    fn recorded(&self, job: &Job) -> JobSignals {
        // The request's one INFO line (the access line) carries the job id: the entry point's
        // span has a `job_id` field. Recorded here, so every entry point's line has it.
        tracing::Span::current().record("job_id", tracing::field::display(job.id));
        tracing::debug!(job_id = %job.id, team = %job.team, "job recorded");
        let signals = self.signals.region(job.request.region());
        signals.wake.notify_one();
        signals
    }

    /// The store refused a new job for the team's in-flight quota (a submit or a retry).
    fn quota_refused(&self) -> SubmitError {
        metrics::counter!("snapgate_rejected_requests_total", "reason" => "quota").increment(1);
        SubmitError::QuotaExceeded {
            limit: self.cfg.max_active_jobs,
        }
    }

    async fn replayed_retry(&self, id: JobId) -> Result<Submitted, RetryError> {
        let job = self
            .store
            .get_job(None, id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a retry link to no job".into()))?;
        Ok(Submitted {
            job,
            replayed: true,
        })
    }

    /// Waits up to the budget for the dispatcher (this replica's, or another's) to move the job
    /// out of `queued`.
    async fn wait_for_dispatch(
        &self,
        job: Job,
        wait: Wait,
        signals: &JobSignals,
        dispatched: &mut tokio::sync::broadcast::Receiver<JobId>,
    ) -> Result<Job, StoreError> {
        let budget = match wait {
            Wait::UpTo(d) if !d.is_zero() && self.cfg.worker_enabled => d,
            _ => return Ok(job),
        };
        // Wait only when the dispatcher can send the job at once. Behind a backlog, or when
        // the upstream budget is spent, or with as many POSTs already waiting as the budget lets
        // through at once, the MPS id would come after other jobs' turns: answer at once.
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        if signals.backlog.load(relaxed) || signals.budget_short.load(relaxed) {
            return Ok(job);
        }
        let Some(_slot) = self.wait_slot() else {
            return Ok(job);
        };
        let deadline = tokio::time::Instant::now() + budget;
        let id = job.id;
        loop {
            // Another replica may dispatch it: look at the store now and then, not only for events.
            let tick = tokio::time::sleep(Duration::from_millis(100).min(budget));
            tokio::select! {
                ev = dispatched.recv() => match ev {
                    Ok(done) if done == id => break,
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        tokio::time::sleep_until(deadline).await;
                    }
                },
                _ = tick => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
            if let Some(j) = self.store.get_job(None, id).await? {
                if j.state != JobState::Queued {
                    return Ok(j);
                }
            }
            // The dispatcher fell behind meanwhile: the job waits its turn, the POST does not.
            if tokio::time::Instant::now() >= deadline
                || signals.backlog.load(relaxed)
                || signals.budget_short.load(relaxed)
            {
                break;
            }
        }
        Ok(self.store.get_job(None, id).await?.unwrap_or(job))
    }
}

/// What makes two requests "the same body" for an idempotency key: the normalized request.
fn fingerprint(request: &JobRequest) -> String {
    let canonical = serde_json::to_vec(request).expect("serializable");
    hex::encode(Sha256::digest(canonical))
}

/// Shared handle for the application state.
pub type DynSubmit = Arc<SubmitService>;
