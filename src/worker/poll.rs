//! Status refresh: in-flight jobs are batched into `QuerySnapshotJobList` calls of up to 10 ids.
//! Jobs due soon ride along with jobs due now, so calls are full more often.

use futures::StreamExt;
use serde_json::Value;

use super::dispatch::update_from;
use super::{after, timed, Budget, Worker};
use crate::domain::{Job, JobError};
use crate::mps::client::raw_job;
use crate::store::{self, MpsResponseRecord};

/// MPS answers at most 10 ids per call (docs/mps/API.md §2.1).
const IDS_PER_QUERY: usize = 10;
const QUERIES_PER_ROUND: usize = 5;

impl Worker {
    /// Ends a job MPS accepted but that will not finish: failed with its own code.
    async fn end_in_flight(&self, job: &Job, code: &str, message: String) -> anyhow::Result<()> {
        let error = JobError {
            code: code.into(),
            message,
            at: store::now(),
        };
        if self.store.fail_in_flight(job.id, &error).await? {
            let _ = self.signals.changed.send(job.id);
            tracing::warn!(job_id = %job.id, team = %job.team, code, "job failed: {}", error.message);
        }
        Ok(())
    }

    pub(super) async fn poll_round(&self) -> anyhow::Result<usize> {
        if self.health.paused_for().is_some() {
            return Ok(0);
        }
        let now = self.store.clock().await?;
        let ride_along = chrono::Duration::milliseconds(self.cfg.status_poll_min_ms as i64 / 2);
        let lease_until = now + chrono::Duration::milliseconds(self.cfg.lease_ms as i64);
        // Jobs due now, then top the last batch up to 10 ids with jobs due soon: every query
        // is as full as it can be, and a round never runs for jobs that are merely due soon.
        let mut jobs = self
            .store
            .claim_polls_in(
                self.scope.as_ref(),
                now,
                lease_until,
                (IDS_PER_QUERY * QUERIES_PER_ROUND) as u32,
            )
            .await?;
        let room = (IDS_PER_QUERY - jobs.len() % IDS_PER_QUERY) % IDS_PER_QUERY;
        if !jobs.is_empty() && room > 0 {
            jobs.extend(
                self.store
                    .claim_polls_in(
                        self.scope.as_ref(),
                        now + ride_along,
                        lease_until,
                        room as u32,
                    )
                    .await?,
            );
        }
        let n = jobs.len();
        let deadline = chrono::Duration::seconds(self.cfg.job_deadline_s as i64);
        let mut live = Vec::with_capacity(jobs.len());
        for job in jobs {
            if now - job.created_at >= deadline {
                self.end_in_flight(
                    &job,
                    "deadline_exceeded",
                    format!(
                        "the job was not final within worker.job_deadline_s ({} s)",
                        self.cfg.job_deadline_s
                    ),
                )
                .await?;
            } else {
                live.push(job);
            }
        }
        let jobs = live;
        let chunks: Vec<Vec<Job>> = jobs.chunks(IDS_PER_QUERY).map(<[Job]>::to_vec).collect();
        futures::stream::iter(chunks)
            .for_each_concurrent(QUERIES_PER_ROUND, |chunk| async move {
                if let Err(e) = self.poll_chunk(&chunk).await {
                    tracing::warn!(error = %e, "status refresh failed; the jobs come due again after the lease");
                }
            })
            .await;
        Ok(n)
    }

    async fn poll_chunk(&self, jobs: &[Job]) -> anyhow::Result<()> {
        let ids: Vec<String> = jobs.iter().filter_map(|j| j.mps.job_id.clone()).collect();
        if ids.is_empty() {
            return Ok(());
        }
        self.take_budget(Budget::Query, 1).await?;
        let result = timed(
            &self.region,
            "QuerySnapshotJobList",
            self.mps.query_snapshot_jobs(&ids),
        )
        .await;
        let pause = self.health.observe(&result);
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                let wait = pause.or(e.retry_after).unwrap_or_else(|| self.backoff(2));
                if pause.is_none() {
                    tracing::warn!(code = %e.code, mps_request_id = e.request_id.as_deref().unwrap_or("-"), jobs = jobs.len(), "QuerySnapshotJobList failed");
                }
                for j in jobs {
                    self.store.postpone_poll(j.id, after(wait)).await?;
                }
                return Ok(());
            }
        };
        let mut history = Vec::new();
        for job in jobs {
            let Some(mps_id) = job.mps.job_id.as_deref() else {
                continue;
            };
            let Some(found) = resp.body.jobs.iter().find(|s| s.id == mps_id) else {
                // MPS may list a new job late; one it never lists ends after a while.
                let since = self
                    .store
                    .poll_not_found(
                        job.id,
                        after(self.poll_interval(job.submitted_at.unwrap_or(job.created_at))),
                    )
                    .await?;
                let missing = (chrono::Utc::now() - since).num_seconds();
                if missing >= self.cfg.not_found_timeout_s as i64 {
                    self.end_in_flight(job, "mps_job_not_found", format!("MPS has not known job {mps_id} for {missing} s (worker.not_found_timeout_s)")).await?;
                } else {
                    tracing::debug!(job_id = %job.id, mps_job_id = mps_id, mps_request_id = %resp.request_id, missing_s = missing, "MPS does not list this job id (yet)");
                }
                continue;
            };
            let raw = raw_job(&resp.raw, mps_id);
            let submitted = job.submitted_at.unwrap_or(job.created_at);
            let update = update_from(
                found,
                raw.clone(),
                &resp.request_id,
                self.poll_interval(submitted),
            );
            if update.state.is_final() {
                self.observe_duration(
                    (chrono::Utc::now() - submitted)
                        .to_std()
                        .unwrap_or_default(),
                );
            }
            if update.state != job.state {
                tracing::info!(job_id = %job.id, team = %job.team, mps_job_id = mps_id, mps_request_id = %resp.request_id, state = update.state.as_str(), "job state changed");
            }
            self.store.record_poll(job.id, &update).await?;
            if update.state != job.state {
                let _ = self.signals.changed.send(job.id);
            }
            history.push(MpsResponseRecord {
                job_id: job.id,
                action: "QuerySnapshotJobList".into(),
                request_id: Some(resp.request_id.clone()),
                code: found.code.clone().filter(|c| !c.is_empty()),
                body: raw.unwrap_or(Value::Null),
                received_at: store::now(),
            });
        }
        self.store.append_mps_responses(&history).await?;
        Ok(())
    }
}
