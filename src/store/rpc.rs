//! What the MPS-compatible endpoint (`http/mps_rpc/`) needs from the database, as two small
//! traits implemented once for [`SqlStore`] over the shared statement layer (`db.rs`):
//!
//! - [`NonceStore`]: the `SignatureNonce`s used within the 15-minute window, shared by every
//!   replica (a replay sent to another replica is refused too);
//! - [`JobLookupStore`]: `QuerySnapshotJobList`'s reads — jobs by id, and by pipeline, state and
//!   creation window.
//!
//! They live in their own file so that `sql.rs` stays as it is. (A team key by its
//! `AccessKeyId` is [`KeyStore::api_key_by_access_key_id`](super::KeyStore::api_key_by_access_key_id).)

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::db::Stmt;
use super::rows::{job_columns, jobs, JobRow};
use super::statements::pipeline_jobs_stmt;
use super::{PipelineJobFilter, SqlStore, StoreResult};
use crate::domain::Job;
use crate::domain::JobId;

/// Nonces of signed requests.
#[async_trait]
pub trait NonceStore {
    /// Records `nonce` for `access_key_id` until `expires_at`. False if it is already recorded
    /// and not yet expired at `now` (a replay).
    async fn use_nonce(
        &self,
        access_key_id: &str,
        nonce: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Deletes nonces expired at `now`; returns how many.
    async fn purge_nonces(&self, now: DateTime<Utc>) -> StoreResult<u64>;
}

/// Reads of jobs by id and by pipeline.
#[async_trait]
pub trait JobLookupStore {
    /// The jobs of `team` among `ids` (in no particular order; unknown ids and other teams'
    /// jobs are simply absent).
    async fn jobs_by_ids(&self, team: &str, ids: &[JobId]) -> StoreResult<Vec<Job>>;
    async fn list_pipeline_jobs(&self, filter: &PipelineJobFilter) -> StoreResult<Vec<Job>>;
}

#[async_trait]
impl NonceStore for SqlStore {
    #[tracing::instrument(name = "store.use_nonce", level = "debug", skip_all)]
    async fn use_nonce(
        &self,
        access_key_id: &str,
        nonce: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        // A new nonce is inserted; an expired one is taken over; a live one changes nothing.
        let n = self
            .pool()
            .execute(
                Stmt::new(
                    "INSERT INTO rpc_nonces (access_key_id, nonce, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (access_key_id, nonce) DO UPDATE SET expires_at = excluded.expires_at \
                     WHERE rpc_nonces.expires_at <= $4",
                )
                .bind(access_key_id)
                .bind(nonce)
                .bind(expires_at)
                .bind(now),
            )
            .await?;
        Ok(n == 1)
    }

    #[tracing::instrument(name = "store.purge_nonces", level = "debug", skip_all)]
    async fn purge_nonces(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        self.pool()
            .execute(Stmt::new("DELETE FROM rpc_nonces WHERE expires_at <= $1").bind(now))
            .await
    }
}

#[async_trait]
impl JobLookupStore for SqlStore {
    #[tracing::instrument(name = "store.jobs_by_ids", level = "debug", skip_all)]
    async fn jobs_by_ids(&self, team: &str, ids: &[JobId]) -> StoreResult<Vec<Job>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = Stmt::new(format!(
            "SELECT {} FROM jobs WHERE team = ",
            job_columns(None)
        ));
        q.push_bind(team).push(" AND id IN (");
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.push_bind(*id);
        }
        q.push(")");
        jobs(self.pool().fetch_all::<JobRow>(q).await?)
    }

    #[tracing::instrument(name = "store.list_pipeline_jobs", level = "debug", skip_all)]
    async fn list_pipeline_jobs(&self, f: &PipelineJobFilter) -> StoreResult<Vec<Job>> {
        let q = pipeline_jobs_stmt(self.dialect(), f);
        jobs(self.pool().fetch_all::<JobRow>(q).await?)
    }
}
