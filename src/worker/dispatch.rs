//! Where a job is claimed and submitted: claim due jobs with a lease (short transaction), look
//! an earlier attempt up if its outcome is unknown, start the attempt under the claim, call MPS
//! outside any transaction while renewing the lease, record the outcome fenced by the claim.
//!
//! The rules that keep a job from reaching MPS twice:
//! - an attempt is marked started (and the pipeline it sends recorded) right before the call,
//!   only while the claim still holds; a lost claim means no call;
//! - the lease is renewed while the call is in flight, so no other replica claims it meanwhile;
//! - the mark stays until a lookup has settled that attempt: found (adopted) or absent — and a
//!   miss counts as absent only once MPS would list the job (`worker.list_visibility_ms` after
//!   the attempt's timeout), only if every page of the attempt's time window was read;
//! - an answer that arrives after the claim was lost is still recorded if the job has no MPS job
//!   yet;
//! - on shutdown a claim not yet sent is left unsent (the worker gives it back), while a call
//!   already made is waited for and recorded.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{after, timed, Budget, Worker};
use crate::domain::{user_data, JobState};
use crate::domain::{Job, JobError, MpsStatus};
use crate::mps::client::raw_job;
use crate::mps::error::{ErrorClass, MpsError};
use crate::mps::params as mps_params;
use crate::mps::wire::{ListQuery, SnapshotJob};
use crate::store::{self, ClaimKey, DispatchClaim, MpsResponseRecord, MpsUpdate};

/// Claims are processed this many at a time.
const CONCURRENCY: usize = 16;
/// Tries per lookup page when MPS answers with a retryable error.
const PAGE_TRIES: u32 = 5;
/// MPS's largest page (docs/mps/API.md §2.2).
const LOOKUP_PAGE_SIZE: u32 = 100;

/// What MPS says about a job, as a store update.
pub(super) fn update_from(
    job: &SnapshotJob,
    raw: Option<Value>,
    request_id: &str,
    poll_in: Duration,
) -> MpsUpdate {
    let state = JobState::from_mps(&job.state).unwrap_or(JobState::Submitted);
    MpsUpdate {
        state,
        mps: MpsStatus {
            job_id: Some(job.id.clone()),
            state: Some(job.state.clone()),
            request_id: Some(request_id.to_string()),
            count: job.count,
            tile_count: job.tile_count,
            code: job.code.clone().filter(|c| !c.is_empty()),
            message: job.message.clone().filter(|m| !m.is_empty()),
            response: raw.map(Into::into),
        },
        next_poll_at: (!state.is_final()).then(|| after(poll_in)),
    }
}

/// What a lookup of an earlier attempt found.
enum Lookup {
    Found(Box<SnapshotJob>, Option<Value>, String),
    /// Every page of the attempt's window was read, late enough for MPS to list the job.
    Absent,
    /// Not settled: ask again at `retry_at`.
    Unknown {
        error: JobError,
        retry_at: DateTime<Utc>,
    },
}

/// What reconciling a claim leaves to do.
enum Reconciled {
    /// Nothing was sent before, or MPS settled as absent: submit.
    Proceed,
    /// Adopted, failed, deferred, or the claim was lost: nothing more this round.
    Done,
}

/// A job error as teams see it: a stable code and a plain message. Faults of the gateway's own
/// access to MPS are described, not quoted (MPS's text names the gateway's key and its
/// string-to-sign; that goes to the log only).
fn job_error(e: &MpsError) -> JobError {
    let message = match e.class {
        ErrorClass::Gateway => "MPS refuses snapgate's own credentials or clock; the job stays queued until an operator fixes it".to_string(),
        ErrorClass::Unreachable => "snapgate cannot reach MPS right now; the job stays queued".to_string(),
        _ => e.message.clone(),
    };
    JobError {
        code: e.code.clone(),
        message,
        at: store::now(),
    }
}

fn snapgate_error(code: &str, message: impl Into<String>) -> JobError {
    JobError {
        code: code.into(),
        message: message.into(),
        at: store::now(),
    }
}

impl Worker {
    /// Claims due jobs and processes them; once `shutdown` is cancelled, claims not yet sent are
    /// left for `release_dispatch` (calls already made finish and are recorded).
    pub(super) async fn dispatch_round(
        &self,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<usize> {
        let backlog = &self.signals.backlog;
        if let Some(pause) = self.health.paused_for() {
            tracing::debug!(pause_ms = pause.as_millis() as u64, "dispatch paused");
            backlog.store(true, std::sync::atomic::Ordering::Relaxed);
            return Ok(0);
        }
        let now = self.store.clock().await?;
        let lease_until = now + chrono::Duration::milliseconds(self.cfg.lease_ms as i64);
        let claims = self
            .store
            .claim_dispatch_in(
                self.scope.as_ref(),
                &self.owner,
                now,
                lease_until,
                self.cfg.batch_size,
            )
            .await?;
        let n = claims.len();
        if n == 0 {
            self.signals
                .budget_short
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        backlog.store(
            n as u32 >= self.cfg.batch_size,
            std::sync::atomic::Ordering::Relaxed,
        );
        futures::stream::iter(claims)
            .for_each_concurrent(CONCURRENCY, |claim| async move {
                let span = tracing::info_span!(
                    "dispatch",
                    job_id = %claim.job.id,
                    team = %claim.job.team,
                    attempt = claim.attempts + 1
                );
                if let Err(e) = self.process(claim, now, shutdown).instrument(span).await {
                    // The lease will expire and the job will be claimed again.
                    tracing::error!(error = %e, "recording a dispatch outcome failed");
                }
            })
            .await;
        Ok(n)
    }

    /// One claim through the model: claim → reconcile or submit → record. A claim whose
    /// earlier attempt may have reached MPS is reconciled first (`reconcile`); only a claim
    /// with no attempt, or one whose attempt MPS settled as absent, is submitted (`submit`).
    async fn process(
        &self,
        claim: DispatchClaim,
        now: DateTime<Utc>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        if shutdown.is_cancelled() {
            tracing::info!("stopping: the claim goes back unsent");
            return Ok(());
        }
        let deadline =
            claim.job.created_at + chrono::Duration::seconds(self.cfg.job_deadline_s as i64);
        if now >= deadline && claim.attempt_started_at.is_none() {
            tracing::warn!("deadline passed before MPS accepted the job");
            let error = snapgate_error(
                "deadline_exceeded",
                format!(
                    "MPS did not accept the job within worker.job_deadline_s ({} s)",
                    self.cfg.job_deadline_s
                ),
            );
            return self.fail(&claim.key, &error).await;
        }
        match self.reconcile(&claim, now, deadline).await? {
            Reconciled::Done => Ok(()),
            Reconciled::Proceed => self.submit(&claim, shutdown).await,
        }
    }

    /// Settles an earlier attempt of the claim (one marked started) with a lookup before
    /// anything is sent again: found, the job is adopted (`Done`); absent, it is submitted
    /// (`Proceed`) once the store confirms the claim still holds; unknown, the lookup is
    /// deferred, or the job fails at the deadline (`Done`). No earlier attempt: `Proceed`.
    async fn reconcile(
        &self,
        claim: &DispatchClaim,
        now: DateTime<Utc>,
        deadline: DateTime<Utc>,
    ) -> anyhow::Result<Reconciled> {
        let Some(started) = claim.attempt_started_at else {
            return Ok(Reconciled::Proceed);
        };
        let job = &claim.job;
        let key = &claim.key;
        match self
            .lookup(job, started, claim.pipeline_sent.as_deref(), now)
            .await
        {
            Lookup::Found(found, raw, request_id) => {
                metrics::counter!("snapgate_reconciliations_total", "outcome" => "adopted")
                    .increment(1);
                tracing::info!(mps_job_id = %found.id, mps_request_id = %request_id, "reconciled: MPS already has this job; adopting it");
                self.record(
                    job,
                    "QuerySnapshotJobList",
                    Some(&request_id),
                    None,
                    raw.clone(),
                )
                .await;
                let update =
                    update_from(&found, raw, &request_id, self.poll_interval(store::now()));
                self.complete(key, &update).await?;
                Ok(Reconciled::Done)
            }
            Lookup::Absent => {
                metrics::counter!("snapgate_reconciliations_total", "outcome" => "not_found")
                    .increment(1);
                if !self.store.confirm_absent(key).await? {
                    tracing::info!("claim lost during the lookup; the next claimer goes on");
                    return Ok(Reconciled::Done);
                }
                tracing::info!("reconciled: MPS does not have this job; submitting");
                Ok(Reconciled::Proceed)
            }
            Lookup::Unknown { error, retry_at } => {
                metrics::counter!("snapgate_reconciliations_total", "outcome" => "unknown")
                    .increment(1);
                if now >= deadline {
                    // Still unsettled at the deadline: the job may exist on MPS, so it is
                    // failed only with a code that says so.
                    let error = snapgate_error(
                        "deadline_exceeded",
                        format!("an earlier attempt's outcome could not be settled before the deadline ({}: {})", error.code, error.message),
                    );
                    self.fail(key, &error).await?;
                    return Ok(Reconciled::Done);
                }
                tracing::info!(code = %error.code, retry_at = %retry_at, "earlier attempt not settled; looking again before any resubmission");
                self.store.defer_lookup(key, &error, retry_at).await?;
                Ok(Reconciled::Done)
            }
        }
    }

    /// Submits the claimed job: waits for the upstream budget, marks the attempt started under
    /// the claim (a lost claim means no call), calls MPS while renewing the lease, and records
    /// the outcome.
    async fn submit(
        &self,
        claim: &DispatchClaim,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let job = &claim.job;
        let key = &claim.key;
        // A wait sets `budget_short` (in `take_budget`); it stays set until a round finds the
        // queue empty, so concurrent takes that happen to find a token do not flip it back.
        // A stop does not wait for the budget: the claim goes back unsent.
        tokio::select! {
            taken = self.take_budget(Budget::Submit, 1) => { taken?; }
            _ = shutdown.cancelled() => {
                tracing::info!("stopping while waiting for the upstream budget: the claim goes back unsent");
                return Ok(());
            }
        }
        let params =
            mps_params::submit_params(job.id, &job.request, self.default_pipeline.as_deref());
        let lease_until = self.lease_from_now().await?;
        if !self
            .store
            .begin_attempt(key, lease_until, params.pipeline_id.as_deref())
            .await?
        {
            tracing::info!("claim lost before the call; not calling MPS");
            return Ok(());
        }
        let call = timed(
            &self.region,
            "SubmitSnapshotJob",
            self.mps.submit_snapshot_job(&params),
        );
        let (result, kept) = self.holding(key, call).await;
        let pause = self.health.observe(&result);
        match result {
            Ok(resp) => {
                let raw = resp.raw.get("SnapshotJob").cloned();
                let update = update_from(
                    &resp.body.snapshot_job,
                    raw,
                    &resp.request_id,
                    self.poll_interval(store::now()),
                );
                tracing::info!(mps_job_id = %resp.body.snapshot_job.id, mps_request_id = %resp.request_id, mps_state = %resp.body.snapshot_job.state, "MPS accepted the job");
                self.record(
                    job,
                    "SubmitSnapshotJob",
                    Some(&resp.request_id),
                    None,
                    Some(resp.raw.clone()),
                )
                .await;
                if !kept {
                    tracing::warn!(
                        "the lease was lost during the call; recording MPS's answer anyway"
                    );
                }
                self.complete(key, &update).await?;
            }
            Err(e) => self.on_submit_error(claim, e, pause).await?,
        }
        Ok(())
    }

    async fn lease_from_now(&self) -> anyhow::Result<DateTime<Utc>> {
        Ok(self.store.clock().await? + chrono::Duration::milliseconds(self.cfg.lease_ms as i64))
    }

    /// Runs an MPS call while renewing the claim's lease; says whether the claim held throughout.
    async fn holding<T>(
        &self,
        key: &ClaimKey,
        call: impl std::future::Future<Output = T>,
    ) -> (T, bool) {
        let every = Duration::from_millis((self.cfg.lease_ms / 3).max(10));
        tokio::pin!(call);
        let mut kept = true;
        loop {
            tokio::select! {
                out = &mut call => return (out, kept),
                _ = tokio::time::sleep(every), if kept => {
                    let renewed = match self.lease_from_now().await {
                        Ok(until) => self.store.renew_lease(key, until).await.unwrap_or(false),
                        Err(_) => false,
                    };
                    if !renewed {
                        tracing::warn!("could not renew the lease during the MPS call");
                        kept = false;
                    }
                }
            }
        }
    }

    async fn on_submit_error(
        &self,
        claim: &DispatchClaim,
        e: MpsError,
        pause: Option<Duration>,
    ) -> anyhow::Result<()> {
        let job = &claim.job;
        let key = &claim.key;
        let attempt = claim.attempts + 1;
        let error = job_error(&e);
        let request_id = e.request_id.as_deref().unwrap_or("-");
        // MPS's answer about the job goes into its history; an answer about the gateway itself
        // (its key, its signature) does not belong to any job: it goes to the log.
        if let (Some(raw), false) = (&e.raw, e.class == ErrorClass::Gateway) {
            self.record(
                job,
                "SubmitSnapshotJob",
                e.request_id.as_deref(),
                Some(&e.code),
                Some(raw.clone()),
            )
            .await;
        }
        match e.class {
            ErrorClass::Fatal => {
                tracing::warn!(code = %e.code, mps_request_id = %request_id, "MPS rejected the job");
                self.fail(key, &error).await?;
            }
            ErrorClass::Retryable if attempt >= self.cfg.max_attempts => {
                tracing::warn!(code = %e.code, mps_request_id = %request_id, attempt, "retryable error, attempts exhausted");
                self.fail(key, &error).await?;
            }
            ErrorClass::Retryable => {
                metrics::counter!("snapgate_retries_total", "code" => crate::metrics::code_label(&e.code)).increment(1);
                let wait = e.retry_after.unwrap_or_else(|| self.backoff(attempt));
                tracing::info!(code = %e.code, mps_request_id = %request_id, attempt, retry_in_ms = wait.as_millis() as u64, "retryable error");
                self.store
                    .retry_dispatch(key, &error, after(wait), false)
                    .await?;
            }
            ErrorClass::Unreachable | ErrorClass::Gateway => {
                // Nothing was created (MPS never got the request, or refused the gateway
                // outright); the whole dispatch pauses, so the job waits without counting.
                let wait = pause.unwrap_or_else(|| self.backoff(attempt));
                tracing::debug!(code = %e.code, mps_request_id = %request_id, message = %e.message, "MPS unavailable to the gateway; job stays queued");
                self.store
                    .retry_dispatch(key, &error, after(wait), false)
                    .await?;
            }
            ErrorClass::OutcomeUnknown => {
                metrics::counter!("snapgate_retries_total", "code" => crate::metrics::code_label(&e.code)).increment(1);
                tracing::warn!(code = %e.code, attempt, "outcome unknown; will look the job up before any resubmission");
                let retry_at = self.settle_time(store::now());
                self.store
                    .retry_dispatch(key, &error, retry_at, true)
                    .await?;
            }
        }
        Ok(())
    }

    /// When a lookup of an attempt started at `started` can first trust a miss.
    fn settle_time(&self, started: DateTime<Utc>) -> DateTime<Utc> {
        started
            + chrono::Duration::from_std(self.mps_timeout).unwrap_or_default()
            + chrono::Duration::milliseconds(self.cfg.list_visibility_ms as i64)
    }

    /// Looks for the MPS job an attempt started at `started` may have created, by its gateway id
    /// in `UserData`, on the pipeline that attempt sent, created within the attempt's window.
    async fn lookup(
        &self,
        job: &Job,
        started: DateTime<Utc>,
        pipeline_sent: Option<&str>,
        now: DateTime<Utc>,
    ) -> Lookup {
        let margin = chrono::Duration::seconds(self.cfg.reconcile_margin_s as i64);
        let settled_at = self.settle_time(started);
        let attempt_end =
            started + chrono::Duration::from_std(self.mps_timeout).unwrap_or_default();
        let mut query = ListQuery {
            pipeline_id: pipeline_sent
                .map(str::to_string)
                .or_else(|| job.request.pipeline_id.clone())
                .or_else(|| self.default_pipeline.clone()),
            state: None,
            created_from: Some(started - margin),
            created_to: Some(attempt_end + margin),
            next_page_token: None,
            maximum_page_size: Some(LOOKUP_PAGE_SIZE),
        };
        let unknown = |code: &str, message: String, retry_at: DateTime<Utc>| Lookup::Unknown {
            error: snapgate_error(code, message),
            retry_at,
        };
        let max_pages = self.cfg.lookup_max_pages.max(1);
        for _ in 0..max_pages {
            // A page MPS throttles or answers 503 for is asked again (a few times, with
            // backoff): a long lookup must not start over for one busy answer.
            let mut tries = 0;
            let resp = loop {
                tries += 1;
                if let Err(e) = self.take_budget(Budget::Query, 1).await {
                    tracing::warn!(error = %e, "budget unavailable");
                }
                let resp = timed(
                    &self.region,
                    "QuerySnapshotJobList",
                    self.mps.list_snapshot_jobs(&query),
                )
                .await;
                let pause = self.health.observe(&resp);
                match resp {
                    Ok(r) => break r,
                    Err(e) if e.class == ErrorClass::Retryable && tries < PAGE_TRIES => {
                        let wait = e.retry_after.unwrap_or_else(|| self.backoff(tries));
                        tokio::time::sleep(wait.min(Duration::from_secs(2))).await;
                    }
                    Err(e) => {
                        let wait = pause.or(e.retry_after).unwrap_or_else(|| self.backoff(2));
                        return Lookup::Unknown {
                            error: job_error(&e),
                            retry_at: after(wait),
                        };
                    }
                }
            };
            if let Some(found) = resp.body.jobs.iter().find(|j| {
                j.user_data
                    .as_deref()
                    .is_some_and(|u| user_data::belongs_to(u, job.id))
            }) {
                let raw = raw_job(&resp.raw, &found.id);
                return Lookup::Found(Box::new(found.clone()), raw, resp.request_id.clone());
            }
            match resp.body.next_page_token.filter(|t| !t.is_empty()) {
                Some(token) if !resp.body.jobs.is_empty() => query.next_page_token = Some(token),
                _ if now < settled_at => {
                    return unknown(
                        "Snapgate.LookupTooEarly",
                        "MPS may not list the job yet; looking again".into(),
                        settled_at,
                    )
                }
                _ => return Lookup::Absent,
            }
        }
        unknown(
            "Snapgate.LookupIncomplete",
            format!(
                "more than {max_pages} pages of MPS jobs in the attempt's window; looking again"
            ),
            after(self.backoff(3)),
        )
    }

    /// Records that MPS has the job (and wakes a waiting POST). Under a lost claim, records it
    /// still if nobody recorded an MPS job for it yet.
    async fn complete(&self, key: &ClaimKey, update: &MpsUpdate) -> anyhow::Result<()> {
        let done = self.store.complete_dispatch(key, update).await?
            || self.store.adopt_submitted(key.job_id, update).await?;
        if done {
            let _ = self.signals.dispatched.send(key.job_id);
        } else {
            metrics::counter!("snapgate_duplicate_mps_jobs_total").increment(1);
            tracing::error!(mps_job_id = update.mps.job_id.as_deref().unwrap_or("-"), "MPS answered for a job that already has another MPS job recorded: an orphaned MPS job (kept in the job's responses)");
        }
        Ok(())
    }

    /// Records that the job failed for good (and wakes a waiting POST).
    async fn fail(&self, key: &ClaimKey, error: &JobError) -> anyhow::Result<()> {
        if self.store.fail_dispatch(key, error).await? {
            let _ = self.signals.dispatched.send(key.job_id);
        }
        Ok(())
    }

    /// Keeps one MPS response in the job's history; a failure here is logged, not fatal.
    pub(super) async fn record(
        &self,
        job: &Job,
        action: &str,
        request_id: Option<&str>,
        code: Option<&str>,
        body: Option<Value>,
    ) {
        let Some(body) = body else { return };
        let rec = MpsResponseRecord {
            job_id: job.id,
            action: action.into(),
            request_id: request_id.map(str::to_string),
            code: code.map(str::to_string),
            body,
            received_at: store::now(),
        };
        if let Err(e) = self.store.append_mps_responses(&[rec]).await {
            tracing::warn!(error = %e, "could not store an MPS response");
        }
    }

    /// Status refresh cadence for a job MPS accepted at `submitted`: the first poll when MPS
    /// usually finishes (learned from the jobs seen so far; `status_poll_min_ms` until then),
    /// later ones slower as the job ages, within [status_poll_min_ms, status_poll_max_ms].
    /// With MNS on, no poll before `worker.mns_grace_s` past the expected end.
    pub(super) fn poll_interval(&self, submitted: chrono::DateTime<chrono::Utc>) -> Duration {
        let min = Duration::from_millis(self.cfg.status_poll_min_ms);
        let max =
            Duration::from_millis(self.cfg.status_poll_max_ms.max(self.cfg.status_poll_min_ms));
        let age = (chrono::Utc::now() - submitted)
            .to_std()
            .unwrap_or_default();
        let expected = Duration::from_millis(
            self.expected_duration_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        let wait = if age < expected {
            expected - age
        } else {
            age / 4
        };
        let wait = wait.clamp(min, max);
        if self.mns.is_none() {
            return wait;
        }
        // MNS announces the end: query only once the message is overdue (the safety net).
        let overdue_at = expected + Duration::from_secs(self.cfg.mns_grace_s);
        wait.max(overdue_at.saturating_sub(age))
    }

    /// Learns how long MPS takes from submit to a final state (moving average).
    pub(super) fn observe_duration(&self, took: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let took = took
            .as_millis()
            .min(u128::from(self.cfg.status_poll_max_ms)) as u64;
        let old = self.expected_duration_ms.load(Relaxed);
        let new = if old == 0 { took } else { (old * 4 + took) / 5 };
        self.expected_duration_ms.store(new, Relaxed);
    }
}
