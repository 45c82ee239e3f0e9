//! What the MPS-compatible endpoint (`http/mps_rpc/`) needs from the database, as three small
//! traits implemented once for [`SqlStore`] over the shared statement layer (`db.rs`):
//!
//! - [`NonceStore`]: the `SignatureNonce`s used within the 15-minute window, shared by every
//!   replica (a replay sent to another replica is refused too);
//! - [`AccessKeyStore`]: a team key by its `AccessKeyId`, revoked or not (a signed request names
//!   its key by id, where the REST API finds it by the token's hash);
//! - [`JobLookupStore`]: `QuerySnapshotJobList`'s reads — jobs by id, and by pipeline, state and
//!   creation window.
//!
//! They live in their own file so that `sql.rs` stays as it is; `AccessKeyStore` belongs with
//! `KeyStore` and can fold into it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::codec::DbTime;
use super::db::Stmt;
use super::rows::{job_columns, jobs, JobRow};
use super::statements::pipeline_jobs_stmt;
use super::{ApiKeyRecord, PipelineJobFilter, SqlStore, StoreResult};
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

/// Team keys by their public id.
#[async_trait]
pub trait AccessKeyStore {
    /// The key with this `access_key_id`, also when revoked (the caller refuses it).
    async fn api_key_by_access_key_id(
        &self,
        access_key_id: &str,
    ) -> StoreResult<Option<ApiKeyRecord>>;
}

/// Reads of jobs by id and by pipeline.
#[async_trait]
pub trait JobLookupStore {
    /// The jobs of `team` among `ids` (in no particular order; unknown ids and other teams'
    /// jobs are simply absent).
    async fn jobs_by_ids(&self, team: &str, ids: &[JobId]) -> StoreResult<Vec<Job>>;
    async fn list_pipeline_jobs(&self, filter: &PipelineJobFilter) -> StoreResult<Vec<Job>>;
}

#[derive(FromRow)]
struct AccessKeyRow {
    access_key_id: String,
    team: String,
    admin: bool,
    token_hash: String,
    secret_ciphertext: String,
    created_at: DbTime,
    revoked_at: Option<DbTime>,
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
impl AccessKeyStore for SqlStore {
    #[tracing::instrument(name = "store.api_key_by_access_key_id", level = "debug", skip_all)]
    async fn api_key_by_access_key_id(
        &self,
        access_key_id: &str,
    ) -> StoreResult<Option<ApiKeyRecord>> {
        let row: Option<AccessKeyRow> = self
            .pool()
            .fetch_optional(
                Stmt::new(
                    "SELECT access_key_id, team, admin, token_hash, secret_ciphertext, created_at, revoked_at \
                     FROM api_keys WHERE access_key_id = $1",
                )
                .bind(access_key_id),
            )
            .await?;
        Ok(row.map(|r| ApiKeyRecord {
            access_key_id: r.access_key_id,
            team: r.team,
            admin: r.admin,
            token_hash: r.token_hash,
            secret_ciphertext: r.secret_ciphertext,
            created_at: r.created_at.0,
            revoked_at: r.revoked_at.map(|t| t.0),
        }))
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
