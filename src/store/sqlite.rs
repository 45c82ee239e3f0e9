//! What only SQLite does: the embedded store for a single instance — a file, one connection (so
//! every transaction is serialized and a claim cannot race another), WAL journal. Several
//! processes on one SQLite file are not supported: use Postgres for replicas.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::db::{Pool, Stmt};
use super::rows::{job_columns, ClaimRow};
use super::StoreResult;

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

pub(super) async fn connect(settings: &crate::config::DatabaseSettings) -> anyhow::Result<Pool> {
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
    Ok(Pool::Sqlite(pool))
}

/// Claims due jobs for submission (`$1` owner, `$2` now, `$3` lease end, `$4` limit, `$5` the
/// claim token), fair across teams (every team's first due job before any team's second). SQLite's
/// `RETURNING` shows only new values, so the claim reads the due rows first; the single
/// connection makes the read and the update one serialized step. (SQLite leaves arguments a
/// statement does not name unused, so both statements take the claim's arguments.)
/// `only` is the region condition (` AND …`, or nothing).
pub(super) async fn claim_dispatch(
    pool: &Pool,
    claim: Stmt,
    only: &str,
) -> StoreResult<Vec<ClaimRow>> {
    let mut tx = pool.begin().await?;
    let mut conn = tx.conn();
    let claimed: Vec<ClaimRow> = conn
        .fetch_all(claim.with_sql(format!(
            "SELECT {}, $5 AS claim_token, attempts AS prior_attempts, \
                 attempt_started_at AS prev_started, mps_pipeline_id FROM ( \
                 SELECT *, row_number() OVER (PARTITION BY team ORDER BY due_at) AS turn \
                 FROM jobs \
                 WHERE due_at <= $2{only} AND (lease_expires_at IS NULL OR lease_expires_at < $2) \
                   AND team NOT IN (SELECT name FROM teams WHERE paused_at IS NOT NULL)) \
             ORDER BY turn, due_at LIMIT $4",
            job_columns(None)
        )))
        .await?;
    if !claimed.is_empty() {
        let mut update = claim.with_sql(
            "UPDATE jobs SET lease_owner = $1, lease_expires_at = $3, attempts = attempts + 1, \
             claim_token = $5 WHERE id IN (",
        );
        for (i, c) in claimed.iter().enumerate() {
            update
                .push(if i == 0 { "" } else { ", " })
                .push_bind(c.job_id());
        }
        update.push(")");
        conn.execute(update).await?;
    }
    tx.commit().await?;
    Ok(claimed)
}

/// Claims jobs due for a status refresh: `$1` now, `$2` lease end, `$3` limit; `only` the
/// region condition (` AND …`, or nothing).
pub(super) fn claim_polls_sql(only: &str) -> String {
    format!(
        "UPDATE jobs SET next_poll_at = $2, polls = polls + 1 WHERE id IN \
             (SELECT id FROM jobs WHERE next_poll_at <= $1{only} ORDER BY next_poll_at LIMIT $3) \
         RETURNING {}",
        job_columns(None)
    )
}
