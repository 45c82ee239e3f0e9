//! The production store. Claims use `FOR UPDATE SKIP LOCKED` so replicas never take the same row,
//! and every state change after an MPS call is guarded by the lease owner.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The channel new jobs are announced on, so idle replicas wake at once.
pub const NOTIFY_CHANNEL: &str = "snapgate_jobs";

const JOB_COLUMNS: &str = "id, team, state, request, warnings, created_at, updated_at, attempts, \
    last_error, mps_job_id, mps_state, mps_request_id, mps_count, mps_tile_count, mps_code, \
    mps_message, mps_response, submitted_at";

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(settings: &crate::config::DatabaseSettings) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
            .connect(&settings.url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to Postgres: {e}"))?;
        Ok(Self { pool })
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn job_from_row(row: &PgRow) -> StoreResult<Job> {
    let count: Option<i64> = row.try_get("mps_count")?;
    let tile_count: Option<i64> = row.try_get("mps_tile_count")?;
    let last_error: Option<Value> = row.try_get("last_error")?;
    Ok(Job {
        id: JobId(row.try_get::<Uuid, _>("id")?),
        team: row.try_get("team")?,
        state: parse_state(row.try_get("state")?)?,
        request: parse_json("request", row.try_get("request")?)?,
        warnings: parse_json("warnings", row.try_get("warnings")?)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        attempts: row.try_get::<i32, _>("attempts")? as u32,
        last_error: last_error
            .map(|v| parse_json("last_error", v))
            .transpose()?,
        mps: MpsStatus {
            job_id: row.try_get("mps_job_id")?,
            state: row.try_get("mps_state")?,
            request_id: row.try_get("mps_request_id")?,
            count: count.map(|c| c as u64),
            tile_count: tile_count.map(|c| c as u64),
            code: row.try_get("mps_code")?,
            message: row.try_get("mps_message")?,
            response: row.try_get("mps_response")?,
        },
        submitted_at: row.try_get("submitted_at")?,
    })
}

fn idempotency_from_row(row: &PgRow) -> StoreResult<IdempotencyRecord> {
    Ok(IdempotencyRecord {
        team: row.try_get("team")?,
        key: row.try_get("key")?,
        fingerprint: row.try_get("fingerprint")?,
        job_id: JobId(row.try_get::<Uuid, _>("job_id")?),
        response_status: row
            .try_get::<Option<i32>, _>("response_status")?
            .map(|s| s as u16),
        response_body: row.try_get("response_body")?,
        created_at: row.try_get("created_at")?,
    })
}

fn key_from_row(r: &PgRow) -> StoreResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        access_key_id: r.try_get("access_key_id")?,
        team: r.try_get("team")?,
        admin: r.try_get("admin")?,
        token_hash: r.try_get("token_hash")?,
        secret_ciphertext: r.try_get("secret_ciphertext")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

const KEY_COLUMNS: &str =
    "access_key_id, team, admin, token_hash, secret_ciphertext, created_at, revoked_at";

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("serializable")
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_job(
        &self,
        job: NewJob,
        idempotency: Option<NewIdempotencyKey>,
    ) -> StoreResult<CreateOutcome> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO jobs (id, team, state, request, warnings, created_at, updated_at) \
             VALUES ($1, $2, 'queued', $3, $4, $5, $5) RETURNING {JOB_COLUMNS}"
        ))
        .bind(job.id.0)
        .bind(&job.team)
        .bind(json(&job.request))
        .bind(json(&job.warnings))
        .bind(job.created_at)
        .fetch_one(&mut *tx)
        .await?;
        let created = job_from_row(&row)?;
        sqlx::query("INSERT INTO job_outbox (job_id, due_at) VALUES ($1, $2)")
            .bind(job.id.0)
            .bind(job.created_at)
            .execute(&mut *tx)
            .await?;
        if let Some(k) = &idempotency {
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE team = $1 AND key = $2 AND expires_at < $3",
            )
            .bind(&job.team)
            .bind(&k.key)
            .bind(job.created_at)
            .execute(&mut *tx)
            .await?;
            // The primary key is the lock: a concurrent request with the same key waits here
            // until the first commits, then inserts nothing.
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (team, key, fingerprint, job_id, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(&job.team)
            .bind(&k.key)
            .bind(&k.fingerprint)
            .bind(job.id.0)
            .bind(job.created_at)
            .bind(k.expires_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                tx.rollback().await?;
                let existing = self
                    .get_idempotency_key(&job.team, &k.key)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("idempotency key vanished".into()))?;
                return Ok(CreateOutcome::KeyExists(existing));
            }
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(job.id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(CreateOutcome::Created(Box::new(created)))
    }

    async fn get_job(&self, team: Option<&str>, id: JobId) -> StoreResult<Option<Job>> {
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND ($2::text IS NULL OR team = $2)"
        ))
        .bind(id.0)
        .bind(team)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list_jobs(&self, f: &JobFilter) -> StoreResult<Vec<Job>> {
        let mut q: QueryBuilder<Postgres> =
            QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE TRUE"));
        if let Some(team) = &f.team {
            q.push(" AND team = ").push_bind(team.clone());
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
        if let Some((t, id)) = f.before {
            q.push(" AND (created_at, id) < (")
                .push_bind(t)
                .push(", ")
                .push_bind(id.0)
                .push(")");
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(f.limit));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn mps_responses(&self, id: JobId) -> StoreResult<Vec<MpsResponseRecord>> {
        let rows = sqlx::query(
            "SELECT job_id, action, request_id, code, body, received_at FROM mps_responses \
             WHERE job_id = $1 ORDER BY id",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MpsResponseRecord {
                    job_id: JobId(r.try_get("job_id")?),
                    action: r.try_get("action")?,
                    request_id: r.try_get("request_id")?,
                    code: r.try_get("code")?,
                    body: r.try_get("body")?,
                    received_at: r.try_get("received_at")?,
                })
            })
            .collect()
    }

    async fn get_idempotency_key(
        &self,
        team: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        let row = sqlx::query(
            "SELECT team, key, fingerprint, job_id, response_status, response_body, created_at \
             FROM idempotency_keys WHERE team = $1 AND key = $2",
        )
        .bind(team)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(idempotency_from_row).transpose()
    }

    async fn complete_idempotency_key(
        &self,
        team: &str,
        key: &str,
        status: u16,
        body: &Value,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET response_status = $3, response_body = $4 \
             WHERE team = $1 AND key = $2 AND response_status IS NULL",
        )
        .bind(team)
        .bind(key)
        .bind(i32::from(status))
        .bind(body)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn purge_idempotency_keys(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        Ok(
            sqlx::query("DELETE FROM idempotency_keys WHERE expires_at < $1")
                .bind(now)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    async fn claim_dispatch(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<DispatchClaim>> {
        let job_cols = JOB_COLUMNS
            .split(", ")
            .map(|c| format!("j.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = sqlx::query(&format!(
            "WITH due AS ( \
                 SELECT job_id, attempt_started_at AS prev_started FROM job_outbox \
                 WHERE due_at <= $2 AND (lease_expires_at IS NULL OR lease_expires_at < $2) \
                 ORDER BY due_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
             UPDATE job_outbox o SET lease_owner = $1, lease_expires_at = $3, \
                 attempts = o.attempts + 1, attempt_started_at = COALESCE(o.attempt_started_at, $2) \
             FROM due, jobs j WHERE o.job_id = due.job_id AND j.id = o.job_id \
             RETURNING {job_cols}, o.attempts - 1 AS prior_attempts, due.prev_started"
        ))
        .bind(owner)
        .bind(now)
        .bind(lease_until)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DispatchClaim {
                    job: job_from_row(r)?,
                    attempts: r.try_get::<i32, _>("prior_attempts")? as u32,
                    attempt_started_at: r.try_get("prev_started")?,
                })
            })
            .collect()
    }

    async fn complete_dispatch(&self, owner: &str, id: JobId, u: &MpsUpdate) -> StoreResult<bool> {
        let now = now();
        let done = sqlx::query(
            "WITH del AS (DELETE FROM job_outbox WHERE job_id = $1 AND lease_owner = $2 RETURNING attempts) \
             UPDATE jobs SET state = $3, attempts = del.attempts, updated_at = $4, submitted_at = $4, \
                 finished_at = CASE WHEN $3 IN ('succeeded', 'failed') THEN $4 END, \
                 next_poll_at = $5, mps_job_id = $6, mps_state = $7, mps_request_id = $8, \
                 mps_count = $9, mps_tile_count = $10, mps_code = $11, mps_message = $12, mps_response = $13 \
             FROM del WHERE jobs.id = $1",
        )
        .bind(id.0)
        .bind(owner)
        .bind(u.state.as_str())
        .bind(now)
        .bind(u.next_poll_at)
        .bind(&u.mps.job_id)
        .bind(&u.mps.state)
        .bind(&u.mps.request_id)
        .bind(u.mps.count.map(|c| c as i64))
        .bind(u.mps.tile_count.map(|c| c as i64))
        .bind(&u.mps.code)
        .bind(&u.mps.message)
        .bind(&u.mps.response)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    async fn retry_dispatch(
        &self,
        owner: &str,
        id: JobId,
        error: &JobError,
        due_at: DateTime<Utc>,
        outcome_unknown: bool,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "WITH upd AS ( \
                 UPDATE job_outbox SET due_at = $3, lease_owner = NULL, lease_expires_at = NULL, \
                     attempt_started_at = CASE WHEN $4 THEN attempt_started_at END \
                 WHERE job_id = $1 AND lease_owner = $2 RETURNING attempts) \
             UPDATE jobs SET attempts = upd.attempts, last_error = $5, updated_at = $6 \
             FROM upd WHERE jobs.id = $1",
        )
        .bind(id.0)
        .bind(owner)
        .bind(due_at)
        .bind(outcome_unknown)
        .bind(json(error))
        .bind(now())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    async fn fail_dispatch(&self, owner: &str, id: JobId, error: &JobError) -> StoreResult<bool> {
        let now = now();
        let done = sqlx::query(
            "WITH del AS (DELETE FROM job_outbox WHERE job_id = $1 AND lease_owner = $2 RETURNING attempts) \
             UPDATE jobs SET state = 'failed', attempts = del.attempts, last_error = $3, \
                 updated_at = $4, finished_at = $4, mps_code = COALESCE(mps_code, $5), \
                 mps_message = COALESCE(mps_message, $6) \
             FROM del WHERE jobs.id = $1",
        )
        .bind(id.0)
        .bind(owner)
        .bind(json(error))
        .bind(now)
        .bind(&error.code)
        .bind(&error.message)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    async fn release_dispatch(&self, owner: &str) -> StoreResult<u64> {
        Ok(sqlx::query(
            "UPDATE job_outbox SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = $1",
        )
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn claim_polls(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Job>> {
        let rows = sqlx::query(&format!(
            "WITH due AS (SELECT id FROM jobs WHERE next_poll_at <= $1 \
                 ORDER BY next_poll_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
             UPDATE jobs j SET next_poll_at = $2, polls = j.polls + 1 FROM due WHERE j.id = due.id \
             RETURNING {}",
            JOB_COLUMNS
                .split(", ")
                .map(|c| format!("j.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .bind(now)
        .bind(lease_until)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn record_poll(&self, id: JobId, u: &MpsUpdate) -> StoreResult<()> {
        sqlx::query(
            "UPDATE jobs SET state = $2, updated_at = $3, \
                 finished_at = CASE WHEN $2 IN ('succeeded', 'failed') THEN $3 END, \
                 next_poll_at = $4, mps_state = $5, mps_request_id = $6, mps_count = $7, \
                 mps_tile_count = $8, mps_code = $9, mps_message = $10, mps_response = $11 \
             WHERE id = $1 AND state NOT IN ('succeeded', 'failed')",
        )
        .bind(id.0)
        .bind(u.state.as_str())
        .bind(now())
        .bind(u.next_poll_at)
        .bind(&u.mps.state)
        .bind(&u.mps.request_id)
        .bind(u.mps.count.map(|c| c as i64))
        .bind(u.mps.tile_count.map(|c| c as i64))
        .bind(&u.mps.code)
        .bind(&u.mps.message)
        .bind(&u.mps.response)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn postpone_poll(&self, id: JobId, next_poll_at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("UPDATE jobs SET next_poll_at = $2 WHERE id = $1 AND next_poll_at IS NOT NULL")
            .bind(id.0)
            .bind(next_poll_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn append_mps_responses(&self, records: &[MpsResponseRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO mps_responses (job_id, action, request_id, code, body, received_at) ",
        );
        q.push_values(records, |mut b, r| {
            b.push_bind(r.job_id.0)
                .push_bind(r.action.clone())
                .push_bind(r.request_id.clone())
                .push_bind(r.code.clone())
                .push_bind(r.body.clone())
                .push_bind(r.received_at);
        });
        q.build().execute(&self.pool).await?;
        Ok(())
    }

    async fn acquire_budget(
        &self,
        name: &str,
        want: u32,
        rate: f64,
        burst: f64,
        now: DateTime<Utc>,
    ) -> StoreResult<u32> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO upstream_budget (name, tokens, refilled_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(burst)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT tokens, refilled_at FROM upstream_budget WHERE name = $1 FOR UPDATE",
        )
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        let (granted, left, at) = take_tokens(
            row.try_get("tokens")?,
            row.try_get("refilled_at")?,
            now,
            want,
            rate,
            burst,
        );
        sqlx::query("UPDATE upstream_budget SET tokens = $2, refilled_at = $3 WHERE name = $1")
            .bind(name)
            .bind(left)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(granted)
    }

    fn spawn_job_listener(&self, wake: std::sync::Arc<tokio::sync::Notify>) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            loop {
                match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(mut listener) => {
                        if let Err(e) = listener.listen(NOTIFY_CHANNEL).await {
                            tracing::warn!(error = %e, "LISTEN failed; relying on polling");
                        } else {
                            while listener.recv().await.is_ok() {
                                wake.notify_one();
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot open a LISTEN connection"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    async fn create_team(&self, name: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        Ok(sqlx::query(
            "INSERT INTO teams (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    async fn team_exists(&self, name: &str) -> StoreResult<bool> {
        Ok(sqlx::query("SELECT 1 FROM teams WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    async fn list_teams(&self) -> StoreResult<Vec<TeamRecord>> {
        let rows = sqlx::query("SELECT name, created_at FROM teams ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TeamRecord {
                    name: r.try_get("name")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn create_api_key(&self, k: &ApiKeyRecord) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(&k.access_key_id)
        .bind(&k.team)
        .bind(k.admin)
        .bind(&k.token_hash)
        .bind(&k.secret_ciphertext)
        .bind(k.created_at)
        .bind(k.revoked_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY team, created_at"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_api_key(&self, access_key_id: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        Ok(sqlx::query(
            "UPDATE api_keys SET revoked_at = $2 WHERE access_key_id = $1 AND revoked_at IS NULL",
        )
        .bind(access_key_id)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    async fn api_key_by_token_hash(&self, token_hash: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE token_hash = $1 AND revoked_at IS NULL"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn mps_error_codes_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<(String, u64)>> {
        let rows = sqlx::query(
            "SELECT code, count(*) AS n FROM mps_responses WHERE code IS NOT NULL AND received_at >= $1 \
             GROUP BY code ORDER BY n DESC, code",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("code")?, r.try_get::<i64, _>("n")? as u64)))
            .collect()
    }

    async fn budgets(&self) -> StoreResult<Vec<(String, f64, DateTime<Utc>)>> {
        let rows =
            sqlx::query("SELECT name, tokens, refilled_at FROM upstream_budget ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("name")?,
                    r.try_get("tokens")?,
                    r.try_get("refilled_at")?,
                ))
            })
            .collect()
    }

    async fn count_active_jobs(&self, team: &str) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE team = $1 AND state IN ('queued', 'submitted', 'snapshotting')",
        )
        .bind(team)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    async fn next_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let row = sqlx::query(
            "SELECT LEAST( \
                (SELECT min(GREATEST(due_at, COALESCE(lease_expires_at, due_at))) FROM job_outbox), \
                (SELECT min(next_poll_at) FROM jobs WHERE next_poll_at IS NOT NULL)) AS due",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("due")?)
    }

    async fn job_counts(&self) -> StoreResult<JobCounts> {
        let rows = sqlx::query(
            "SELECT team, state, count(*) AS n FROM jobs GROUP BY team, state ORDER BY team, state",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut counts = JobCounts::default();
        for r in &rows {
            counts.by_state.push((
                r.try_get("team")?,
                r.try_get("state")?,
                r.try_get::<i64, _>("n")? as u64,
            ));
        }
        let row = sqlx::query(
            "SELECT (SELECT min(created_at) FROM jobs WHERE state = 'queued') AS q, \
                    (SELECT min(created_at) FROM jobs WHERE state IN ('submitted', 'snapshotting')) AS f",
        )
        .fetch_one(&self.pool)
        .await?;
        counts.oldest_queued = row.try_get("q")?;
        counts.oldest_in_flight = row.try_get("f")?;
        Ok(counts)
    }
}
