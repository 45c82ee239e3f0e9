//! Where a job is claimed and submitted: claim due outbox entries with a lease (short
//! transaction), call MPS outside any transaction, record the outcome guarded by the lease.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tracing::Instrument;

use super::{after, mps_params, Worker, QUERY_BUDGET, SUBMIT_BUDGET};
use crate::domain::{user_data, JobState};
use crate::mps::client::raw_job;
use crate::mps::error::{ErrorClass, MpsError};
use crate::mps::wire::{ListQuery, SnapshotJob};
use crate::store::{self, DispatchClaim, Job, JobError, MpsResponseRecord, MpsStatus, MpsUpdate};

/// Claims are processed this many at a time.
const CONCURRENCY: usize = 16;
/// Reconciliation reads at most this many pages.
const MAX_RECONCILE_PAGES: usize = 50;

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
            response: raw,
        },
        next_poll_at: (!state.is_final()).then(|| after(poll_in)),
    }
}

impl Worker {
    pub(super) async fn dispatch_round(&self) -> anyhow::Result<usize> {
        let now = store::now();
        let lease_until = now + chrono::Duration::milliseconds(self.cfg.lease_ms as i64);
        let claims = self
            .store
            .claim_dispatch(&self.owner, now, lease_until, self.cfg.batch_size)
            .await?;
        let n = claims.len();
        futures::stream::iter(claims)
            .for_each_concurrent(CONCURRENCY, |claim| async move {
                let span = tracing::info_span!(
                    "dispatch",
                    job_id = %claim.job.id,
                    team = %claim.job.team,
                    attempt = claim.attempts + 1
                );
                if let Err(e) = self.process(claim).instrument(span).await {
                    // The lease will expire and the job will be claimed again.
                    tracing::error!(error = %e, "recording a dispatch outcome failed");
                }
            })
            .await;
        Ok(n)
    }

    async fn process(&self, claim: DispatchClaim) -> anyhow::Result<()> {
        let job = &claim.job;
        if let Some(started) = claim.attempt_started_at {
            match self.reconcile(job, started).await {
                Ok(Some((found, raw, request_id))) => {
                    metrics::counter!("snapgate_reconciliations_total", "outcome" => "adopted")
                        .increment(1);
                    tracing::info!(mps_job_id = %found.id, mps_request_id = %request_id, "reconciled: MPS already has this job; adopting it");
                    let update =
                        update_from(&found, raw, &request_id, self.poll_interval(store::now()));
                    self.record(
                        job,
                        "QuerySnapshotJobList",
                        Some(&request_id),
                        None,
                        update.mps.response.clone(),
                    )
                    .await;
                    self.complete(job, &update).await?;
                    return Ok(());
                }
                Ok(None) if claim.attempts >= self.cfg.max_attempts => {
                    let error = job.last_error.clone().unwrap_or_else(|| JobError {
                        code: "Snapgate.AttemptsExhausted".into(),
                        message: "delivery attempts exhausted".into(),
                        at: store::now(),
                    });
                    tracing::warn!(code = %error.code, "giving up: not on MPS and attempts exhausted");
                    self.fail(job, &error).await?;
                    return Ok(());
                }
                Ok(None) => {
                    metrics::counter!("snapgate_reconciliations_total", "outcome" => "not_found")
                        .increment(1);
                    tracing::info!("reconciled: MPS does not have this job; submitting")
                }
                Err(e) => {
                    metrics::counter!("snapgate_reconciliations_total", "outcome" => "error")
                        .increment(1);
                    tracing::warn!(code = %e.code, "reconciliation failed; will try again before any resubmission");
                    let error = JobError {
                        code: e.code.clone(),
                        message: e.message.clone(),
                        at: store::now(),
                    };
                    let due = after(
                        e.retry_after
                            .unwrap_or_else(|| self.backoff(claim.attempts + 1)),
                    );
                    self.store
                        .retry_dispatch(&self.owner, job.id, &error, due, true)
                        .await?;
                    return Ok(());
                }
            }
        }

        self.take_budget(SUBMIT_BUDGET, self.cfg.submit_qps, 1)
            .await?;
        let params =
            mps_params::submit_params(job.id, &job.request, self.default_pipeline.as_deref());
        let started = std::time::Instant::now();
        let result = self.mps.submit_snapshot_job(&params).await;
        crate::metrics::mps_call(
            "SubmitSnapshotJob",
            result
                .as_ref()
                .map(|_| "Success")
                .unwrap_or_else(|e| e.code.as_str()),
            started,
        );
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
                if !self.complete(job, &update).await? {
                    tracing::warn!("lease lost before the result was recorded; the next claimer will reconcile");
                }
            }
            Err(e) => self.on_submit_error(&claim, e).await?,
        }
        Ok(())
    }

    async fn on_submit_error(&self, claim: &DispatchClaim, e: MpsError) -> anyhow::Result<()> {
        let job = &claim.job;
        let attempt = claim.attempts + 1;
        let error = JobError {
            code: e.code.clone(),
            message: e.message.clone(),
            at: store::now(),
        };
        if let Some(raw) = &e.raw {
            self.record(
                job,
                "SubmitSnapshotJob",
                e.request_id.as_deref(),
                Some(&e.code),
                Some(raw.clone()),
            )
            .await;
        }
        let request_id = e.request_id.as_deref().unwrap_or("-");
        match e.class {
            ErrorClass::Fatal => {
                tracing::warn!(code = %e.code, mps_request_id = %request_id, "MPS rejected the job");
                self.fail(job, &error).await?;
            }
            ErrorClass::Retryable if attempt >= self.cfg.max_attempts => {
                tracing::warn!(code = %e.code, mps_request_id = %request_id, attempt, "retryable error, attempts exhausted");
                self.fail(job, &error).await?;
            }
            ErrorClass::Retryable => {
                metrics::counter!("snapgate_retries_total", "code" => e.code.clone()).increment(1);
                let wait = e.retry_after.unwrap_or_else(|| self.backoff(attempt));
                tracing::info!(code = %e.code, mps_request_id = %request_id, attempt, retry_in_ms = wait.as_millis() as u64, "retryable error");
                self.store
                    .retry_dispatch(&self.owner, job.id, &error, after(wait), false)
                    .await?;
            }
            ErrorClass::OutcomeUnknown => {
                metrics::counter!("snapgate_retries_total", "code" => e.code.clone()).increment(1);
                let wait = self.backoff(attempt);
                tracing::warn!(code = %e.code, attempt, "outcome unknown; will reconcile before any resubmission");
                self.store
                    .retry_dispatch(&self.owner, job.id, &error, after(wait), true)
                    .await?;
            }
        }
        Ok(())
    }

    /// Looks for this job on MPS, created around `started`, by its id in `UserData`.
    async fn reconcile(
        &self,
        job: &Job,
        started: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<(SnapshotJob, Option<Value>, String)>, MpsError> {
        let margin = chrono::Duration::seconds(self.cfg.reconcile_margin_s as i64);
        let mut query = ListQuery {
            pipeline_id: job
                .request
                .pipeline_id
                .clone()
                .or_else(|| self.default_pipeline.clone()),
            state: None,
            created_from: Some(started - margin),
            created_to: Some(store::now() + margin),
            next_page_token: None,
            maximum_page_size: Some(100),
        };
        for _ in 0..MAX_RECONCILE_PAGES {
            if let Err(e) = self.take_budget(QUERY_BUDGET, self.cfg.query_qps, 1).await {
                tracing::warn!(error = %e, "budget unavailable");
            }
            let started = std::time::Instant::now();
            let resp = self.mps.list_snapshot_jobs(&query).await;
            crate::metrics::mps_call(
                "QuerySnapshotJobList",
                resp.as_ref()
                    .map(|_| "Success")
                    .unwrap_or_else(|e| e.code.as_str()),
                started,
            );
            let resp = resp?;
            if let Some(found) = resp.body.jobs.iter().find(|j| {
                j.user_data
                    .as_deref()
                    .is_some_and(|u| user_data::belongs_to(u, job.id))
            }) {
                let raw = raw_job(&resp.raw, &found.id);
                return Ok(Some((found.clone(), raw, resp.request_id.clone())));
            }
            match resp.body.next_page_token.filter(|t| !t.is_empty()) {
                Some(token) if !resp.body.jobs.is_empty() => query.next_page_token = Some(token),
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Records that MPS has the job (and wakes a waiting POST).
    async fn complete(&self, job: &Job, update: &MpsUpdate) -> anyhow::Result<bool> {
        let done = self
            .store
            .complete_dispatch(&self.owner, job.id, update)
            .await?;
        if done {
            let _ = self.signals.dispatched.send(job.id);
        }
        Ok(done)
    }

    /// Records that the job failed for good (and wakes a waiting POST).
    async fn fail(&self, job: &Job, error: &JobError) -> anyhow::Result<()> {
        if self.store.fail_dispatch(&self.owner, job.id, error).await? {
            let _ = self.signals.dispatched.send(job.id);
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
        wait.clamp(min, max)
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
