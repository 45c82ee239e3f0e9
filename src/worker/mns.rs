//! The MNS consumer: MPS announces every job's end on an MNS queue; each replica long-polls it
//! and applies the messages. The same three steps as the dispatcher: claim (a receive makes the
//! message invisible to the other replicas for the queue's visibility timeout), record (through
//! the poller's own store transition, `record_poll`, which never moves a final job back), then
//! release (delete the message) — only once the state is recorded. A message whose recording
//! failed is not deleted: it comes back after the visibility timeout and is applied then.
//!
//! Duplicates and late messages find the job final and are deleted; messages about jobs
//! snapgate does not know are deleted and counted (`snapgate_mns_messages_total{outcome}`).
//! Polling stays as the safety net: with MNS on, a job's first query waits
//! `worker.mns_grace_s` past the time MPS is expected to take (`Worker::poll_interval`).

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::domain::MpsStatus;
use crate::domain::{user_data, JobState};
use crate::mps::mns::{MnsClient, QueueMessage};
use crate::mps::notification::{self, JobNotification};
use crate::store::{self, MpsResponseRecord, MpsUpdate};

/// What became of one message. All but `NotYetSubmitted` and errors delete it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageOutcome {
    /// The job's final state was recorded.
    Applied,
    /// The job was already final (a duplicate, or the poller was first).
    Duplicate,
    UnknownJob,
    /// The gateway job has another MPS job (this one is a stray duplicate on MPS).
    OtherMpsJob,
    /// Not a snapshot job's message (another job type on the same queue).
    NotSnapshot,
    /// A state that is not final: nothing to apply.
    NotFinal,
    Malformed,
    /// The job is known but its MPS job id is not recorded yet: kept, it comes back.
    NotYetSubmitted,
}

impl MessageOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::UnknownJob => "unknown_job",
            Self::OtherMpsJob => "other_mps_job",
            Self::NotSnapshot => "not_snapshot",
            Self::NotFinal => "not_final",
            Self::Malformed => "malformed",
            Self::NotYetSubmitted => "not_yet_submitted",
        }
    }

    fn delete(self) -> bool {
        self != Self::NotYetSubmitted
    }
}

impl Worker {
    /// Receives and applies messages until `shutdown`.
    pub(super) async fn mns_loop(&self, client: &MnsClient, shutdown: CancellationToken) {
        tracing::info!(queue = client.queue(), "MNS consumer started");
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            let received = tokio::select! {
                r = client.receive() => r,
                _ = shutdown.cancelled() => break,
            };
            let wait = match received {
                Ok(messages) => {
                    failures = 0;
                    self.apply_messages(client, messages).await;
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    crate::metrics::mns_call_failed("ReceiveMessage", &e.code);
                    tracing::warn!(status = e.status, code = %e.code, mns_request_id = e.request_id.as_deref().unwrap_or("-"), "MNS ReceiveMessage failed: {}; jobs are still found by polling", e.message);
                    self.backoff(failures.min(8))
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    /// Applies a batch; deletes each message whose outcome is recorded.
    pub async fn apply_messages(&self, client: &MnsClient, messages: Vec<QueueMessage>) {
        futures::stream::iter(messages)
            .for_each_concurrent(self.mns_concurrency, |m| async move {
                match self.apply_message(&m).await {
                    Ok(outcome) => {
                        crate::metrics::mns_message(outcome.as_str());
                        if !outcome.delete() {
                            tracing::debug!(mns_message_id = %m.message_id, "MNS message for a job not yet accepted; it comes back after the visibility timeout");
                            return;
                        }
                        if let Err(e) = client.delete(&m.receipt_handle).await {
                            crate::metrics::mns_call_failed("DeleteMessage", &e.code);
                            tracing::warn!(mns_message_id = %m.message_id, code = %e.code, "MNS DeleteMessage failed; the message comes back and is applied again, harmlessly: {}", e.message);
                        }
                    }
                    Err(e) => {
                        crate::metrics::mns_message("error");
                        tracing::warn!(mns_message_id = %m.message_id, dequeue_count = m.dequeue_count, error = %e, "could not record an MNS message; it is kept and comes back after the visibility timeout");
                    }
                }
            })
            .await;
    }

    /// Applies one message to the job it names. An error means nothing (or not everything)
    /// was recorded: the message must not be deleted.
    pub async fn apply_message(&self, m: &QueueMessage) -> anyhow::Result<MessageOutcome> {
        let n = match notification::parse(&m.body) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(mns_message_id = %m.message_id, error = %e, "MNS message is not an MPS job message; deleted");
                return Ok(MessageOutcome::Malformed);
            }
        };
        if !n.is_snapshot() {
            return Ok(MessageOutcome::NotSnapshot);
        }
        let Some(state) = JobState::from_mps(&n.state).filter(|s| s.is_final()) else {
            return Ok(MessageOutcome::NotFinal);
        };
        // By the gateway id in UserData (the one rule of `domain::user_data`), else by MPS id.
        let mut job = match n.user_data.as_deref().and_then(user_data::gateway_id) {
            Some(id) => self.store.get_job(None, id).await?,
            None => None,
        };
        if job.is_none() {
            job = self.store.job_by_mps_job_id(&n.job_id).await?;
        }
        let Some(job) = job else {
            tracing::info!(mps_job_id = %n.job_id, mns_message_id = %m.message_id, "MNS message about a job snapgate does not know; deleted");
            return Ok(MessageOutcome::UnknownJob);
        };
        if job.state.is_final() {
            return Ok(MessageOutcome::Duplicate);
        }
        match job.mps.job_id.as_deref() {
            Some(id) if id == n.job_id => {}
            Some(id) => {
                tracing::warn!(job_id = %job.id, mps_job_id = %n.job_id, recorded_mps_job_id = id, "MNS message about another MPS job for this gateway job; deleted");
                return Ok(MessageOutcome::OtherMpsJob);
            }
            None => return Ok(MessageOutcome::NotYetSubmitted),
        }
        let update = update_from_message(&n, state, &m.message_id);
        // History first: if recording the state then fails, the message comes back and the
        // history at worst holds it twice; never a state without its message.
        self.store
            .append_mps_responses(&[MpsResponseRecord {
                job_id: job.id,
                action: "MNS:Message".into(),
                request_id: n.request_id.clone(),
                code: n.code.clone(),
                body: n.raw.clone(),
                received_at: store::now(),
            }])
            .await?;
        self.store.record_poll(job.id, &update).await?;
        let submitted = job.submitted_at.unwrap_or(job.created_at);
        self.observe_duration(
            (chrono::Utc::now() - submitted)
                .to_std()
                .unwrap_or_default(),
        );
        tracing::info!(job_id = %job.id, team = %job.team, mps_job_id = %n.job_id, mns_message_id = %m.message_id, state = state.as_str(), "job state changed (MNS message)");
        Ok(MessageOutcome::Applied)
    }
}

/// An MPS job message as a store update (what a query answer would have said).
fn update_from_message(n: &JobNotification, state: JobState, message_id: &str) -> MpsUpdate {
    MpsUpdate {
        state,
        mps: MpsStatus {
            job_id: Some(n.job_id.clone()),
            state: Some(n.state.clone()),
            request_id: n
                .request_id
                .clone()
                .or_else(|| Some(format!("mns:{message_id}"))),
            count: n.count,
            tile_count: n.tile_count,
            code: n.code.clone(),
            message: n.message.clone(),
            response: Some((&n.raw).into()),
        },
        next_poll_at: None,
    }
}
