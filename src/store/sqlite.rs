//! What only SQLite does: the embedded store for a single instance — a file, one connection (so
//! every transaction is serialized and a claim cannot race another), WAL journal. Several
//! processes on one SQLite file are not supported: use Postgres for replicas.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::db::{Pool, Stmt};
use super::sql::{job_columns, ClaimRow, JobRow, SqlStore};
use super::StoreResult;

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Opens the embedded store.
pub struct SqliteStore;

impl SqliteStore {
    pub async fn connect(settings: &crate::config::DatabaseSettings) -> anyhow::Result<SqlStore> {
        let options = SqliteConnectOptions::from_str(&settings.url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        if let Some(parent) = options.get_filename().parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot create the database folder {}: {e}",
                        parent.display()
                    )
                })?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
            .connect_with(options)
            .await?;
        Ok(SqlStore {
            pool: Pool::Sqlite(pool),
        })
    }
}

/// SQLite's `RETURNING` shows only new values, so the claim reads the due rows first; the single
/// connection makes the read and the update one serialized step.
pub(super) async fn claim_dispatch(
    pool: &Pool,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u32,
) -> StoreResult<Vec<ClaimRow>> {
    let mut tx = pool.begin().await?;
    let mut conn = tx.conn();
    let claimed: Vec<ClaimRow> = conn
        .fetch_all(
            Stmt::new(format!(
                "SELECT {}, attempts AS prior_attempts, attempt_started_at AS prev_started FROM jobs \
                 WHERE due_at <= $1 AND (lease_expires_at IS NULL OR lease_expires_at < $1) \
                 ORDER BY due_at LIMIT $2",
                job_columns(None)
            ))
            .bind(now)
            .bind(limit),
        )
        .await?;
    if !claimed.is_empty() {
        let mut update = Stmt::new(
            "UPDATE jobs SET lease_owner = $1, lease_expires_at = $2, attempts = attempts + 1, \
             attempt_started_at = COALESCE(attempt_started_at, $3) WHERE id IN (",
        )
        .bind(owner)
        .bind(lease_until)
        .bind(now);
        for (i, c) in claimed.iter().enumerate() {
            update
                .push(if i == 0 { "" } else { ", " })
                .push_bind(c.job_id());
        }
        update.push(")");
        conn.execute(update).await?;
    }
    drop(conn);
    tx.commit().await?;
    Ok(claimed)
}

pub(super) async fn claim_polls(
    pool: &Pool,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u32,
) -> StoreResult<Vec<JobRow>> {
    pool.fetch_all(
        Stmt::new(format!(
            "UPDATE jobs SET next_poll_at = $2, polls = polls + 1 WHERE id IN \
                 (SELECT id FROM jobs WHERE next_poll_at <= $1 ORDER BY next_poll_at LIMIT $3) \
             RETURNING {}",
            job_columns(None)
        ))
        .bind(now)
        .bind(lease_until)
        .bind(limit),
    )
    .await
}
