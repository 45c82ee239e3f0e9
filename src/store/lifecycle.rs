//! [`LifecycleStore`] for [`SqlStore`]: usage as read (written by `usage.rs` with each change),
//! team pauses (the claims in `postgres.rs`/`sqlite.rs` skip a paused team's jobs), and
//! redrive: a failed job's retry recorded (admitted under the quota, counted in usage, as any
//! new job: `SqlStore::insert_job`) and linked both ways in one transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::codec::{DbId, DbTime};
use super::db::{Dialect, Pool, Stmt};
use super::sql::{Inserted, SqlStore};
use super::{postgres, LifecycleStore, RedriveFilter, RetryOutcome, StoreResult};
use super::{TeamPause, UsageRecord};
use crate::domain::{Job, JobId, JobState, NewJob};

#[derive(FromRow)]
struct UsageRow {
    team: String,
    day: String,
    region: String,
    submitted: i64,
    succeeded: i64,
    failed: i64,
    snapshots: i64,
    sprite_sheets: i64,
    mps_calls: i64,
}

#[derive(FromRow)]
struct PauseRow {
    name: String,
    paused_at: DbTime,
    pause_refuses_new: bool,
    pause_reason: Option<String>,
}

#[derive(FromRow)]
struct Original {
    state: String,
    retried_by: Option<DbId>,
}

#[derive(FromRow)]
struct IdRow {
    id: DbId,
}

#[derive(FromRow)]
struct Count {
    n: i64,
}

/// The `WHERE` of a bulk redrive's jobs.
fn redrive_where(q: &mut Stmt, f: &RedriveFilter) {
    q.push(" WHERE state = 'failed' AND retried_by IS NULL AND mps_code IS NOT NULL");
    if let Some(team) = &f.team {
        q.push(" AND team = ").push_bind(team);
    }
    if let Some(code) = &f.code {
        q.push(" AND mps_code = ").push_bind(code);
    }
    if let Some(t) = f.ended_from {
        q.push(" AND finished_at >= ").push_bind(t);
    }
    if let Some(t) = f.ended_to {
        q.push(" AND finished_at < ").push_bind(t);
    }
}

/// Wakes every replica's dispatcher (a resumed team's jobs are due).
async fn wake_dispatchers(pool: &Pool) -> StoreResult<()> {
    if let Pool::Postgres(p, _) = pool {
        postgres::announce_new_jobs(p).await?;
    }
    Ok(())
}

#[async_trait]
impl LifecycleStore for SqlStore {
    #[tracing::instrument(name = "store.usage", level = "debug", skip_all)]
    async fn usage(
        &self,
        from: &str,
        to: &str,
        team: Option<&str>,
    ) -> StoreResult<Vec<UsageRecord>> {
        let sums = [
            "submitted",
            "succeeded",
            "failed",
            "snapshots",
            "sprite_sheets",
            "mps_calls",
        ]
        .map(|c| format!("CAST(sum({c}) AS BIGINT) AS {c}"))
        .join(", ");
        let rows: Vec<UsageRow> = self
            .pool()
            .fetch_all(
                Stmt::new(format!(
                    "SELECT team, day, region, {sums} FROM usage_daily \
                     WHERE day >= $1 AND day <= $2 AND (CAST($3 AS TEXT) IS NULL OR team = $3) \
                     GROUP BY team, day, region ORDER BY day, team, region"
                ))
                .bind(from)
                .bind(to)
                .bind(team),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| UsageRecord {
                team: r.team,
                day: r.day,
                region: r.region,
                submitted: r.submitted as u64,
                succeeded: r.succeeded as u64,
                failed: r.failed as u64,
                snapshots: r.snapshots as u64,
                sprite_sheets: r.sprite_sheets as u64,
                mps_calls: r.mps_calls as u64,
            })
            .collect())
    }

    #[tracing::instrument(name = "store.pause_team", level = "debug", skip_all)]
    async fn pause_team(
        &self,
        team: &str,
        at: DateTime<Utc>,
        refuse_new: bool,
        reason: Option<&str>,
    ) -> StoreResult<bool> {
        let n = self
            .pool()
            .execute(
                Stmt::new(
                    "UPDATE teams SET paused_at = COALESCE(paused_at, $2), \
                     pause_refuses_new = $3, pause_reason = $4 WHERE name = $1",
                )
                .bind(team)
                .bind(at)
                .bind(refuse_new)
                .bind(reason),
            )
            .await?;
        Ok(n == 1)
    }

    #[tracing::instrument(name = "store.resume_team", level = "debug", skip_all)]
    async fn resume_team(&self, team: &str) -> StoreResult<bool> {
        let n = self
            .pool()
            .execute(
                Stmt::new(
                    "UPDATE teams SET paused_at = NULL, pause_refuses_new = $2, \
                     pause_reason = NULL WHERE name = $1",
                )
                .bind(team)
                .bind(false),
            )
            .await?;
        if n == 1 {
            wake_dispatchers(self.pool()).await?;
        }
        Ok(n == 1)
    }

    #[tracing::instrument(name = "store.paused_teams", level = "debug", skip_all)]
    async fn paused_teams(&self) -> StoreResult<Vec<TeamPause>> {
        let rows: Vec<PauseRow> = self
            .pool()
            .fetch_all(Stmt::new(
                "SELECT name, paused_at, pause_refuses_new, pause_reason FROM teams \
                 WHERE paused_at IS NOT NULL ORDER BY name",
            ))
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| TeamPause {
                team: r.name,
                paused_at: r.paused_at.0,
                refuse_new: r.pause_refuses_new,
                reason: r.pause_reason,
            })
            .collect())
    }

    #[tracing::instrument(name = "store.create_retry", level = "debug", skip_all, fields(job_id = %of))]
    async fn create_retry(
        &self,
        team: Option<&str>,
        of: JobId,
        job: NewJob,
        max_in_flight: u64,
    ) -> StoreResult<RetryOutcome> {
        // The original's row lock (Postgres; SQLite's one connection serializes) orders
        // concurrent retries: the second reads `retried_by` as the first committed it.
        let lock = match self.dialect() {
            Dialect::Postgres => " FOR UPDATE",
            Dialect::Sqlite => "",
        };
        let mut tx = self.pool().begin().await?;
        let original: Option<Original> = tx
            .conn()
            .fetch_optional(
                Stmt::new(format!(
                    "SELECT state, retried_by FROM jobs \
                     WHERE id = $1 AND (CAST($2 AS TEXT) IS NULL OR team = $2){lock}"
                ))
                .bind(of)
                .bind(team),
            )
            .await?;
        let refused = match &original {
            None => Some(RetryOutcome::NotFound),
            Some(Original {
                retried_by: Some(by),
                ..
            }) => Some(RetryOutcome::Existing(JobId(by.0))),
            Some(o) if o.state != JobState::Failed.as_str() => Some(RetryOutcome::NotFailed(
                JobState::parse(&o.state).unwrap_or(JobState::Failed),
            )),
            Some(_) => None,
        };
        if let Some(refused) = refused {
            tx.rollback().await?;
            return Ok(refused);
        }
        // Recorded as any new job: admitted under the team's in-flight quota and counted in
        // usage, in this transaction.
        let limit = i64::try_from(max_in_flight).unwrap_or(i64::MAX);
        let row = match SqlStore::insert_job(&mut tx.conn(), &job, None, limit).await? {
            Inserted::Row(row) => row,
            Inserted::QuotaExceeded => {
                tx.rollback().await?;
                return Ok(RetryOutcome::QuotaExceeded);
            }
            Inserted::KeyTaken => {
                return Err(super::StoreError::Corrupt(
                    "a retry without a key conflicted".into(),
                ))
            }
        };
        let link = |sql: &str, id: JobId, other: JobId| Stmt::new(sql).bind(id).bind(other);
        tx.conn()
            .execute(link(
                "UPDATE jobs SET retry_of = $2 WHERE id = $1",
                job.id,
                of,
            ))
            .await?;
        tx.conn()
            .execute(link(
                "UPDATE jobs SET retried_by = $2 WHERE id = $1",
                of,
                job.id,
            ))
            .await?;
        tx.commit().await?;
        self.announce_jobs();
        let mut created = Job::try_from(*row)?;
        created.retry_of = Some(of);
        Ok(RetryOutcome::Created(Box::new(created)))
    }

    #[tracing::instrument(name = "store.count_redrive", level = "debug", skip_all)]
    async fn count_redrive(&self, f: &RedriveFilter) -> StoreResult<u64> {
        let mut q = Stmt::new("SELECT count(*) AS n FROM jobs");
        redrive_where(&mut q, f);
        let c: Count = self.pool().fetch_one(q).await?;
        Ok(c.n as u64)
    }

    #[tracing::instrument(name = "store.redrive_candidates", level = "debug", skip_all)]
    async fn redrive_candidates(&self, f: &RedriveFilter) -> StoreResult<Vec<JobId>> {
        let mut q = Stmt::new("SELECT id FROM jobs");
        redrive_where(&mut q, f);
        q.push(" ORDER BY finished_at, id LIMIT ")
            .push_bind(f.limit);
        let rows: Vec<IdRow> = self.pool().fetch_all(q).await?;
        Ok(rows.into_iter().map(|r| JobId(r.id.0)).collect())
    }
}
