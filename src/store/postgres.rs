//! What only Postgres does: connecting, claims with `FOR UPDATE SKIP LOCKED` (replicas never take
//! the same row), and `NOTIFY`/`LISTEN` so idle replicas wake as soon as a job is queued.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use super::db::{Pool, Stmt};
use super::rows::{job_columns, ClaimRow};
use super::{JobChangeSink, KeyChanges, StoreResult};
use crate::domain::JobId;

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The channel new jobs are announced on.
pub const NOTIFY_CHANNEL: &str = "snapgate_jobs";

/// The channel key revocations are announced on (payload: the key's id).
pub const KEYS_CHANNEL: &str = "snapgate_keys";

pub(super) async fn connect(settings: &crate::config::DatabaseSettings) -> anyhow::Result<Pool> {
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        // sqlx pings every connection it hands out: a second round trip for every query. A
        // connection that died (a Postgres restart, a cut network) fails the one statement
        // that meets it instead — that request answers 503, nothing is recorded half — and is
        // closed rather than returned to the pool.
        .test_before_acquire(false)
        .connect_with(
            settings
                .url
                .parse::<sqlx::postgres::PgConnectOptions>()
                .map_err(|e| anyhow::anyhow!("cannot read database.url: {e}"))?
                // The server's NOTICEs (sqlx logs them at INFO) are noise here: every start's
                // `CREATE TABLE IF NOT EXISTS _sqlx_migrations` said `relation … already
                // exists`. Warnings and errors still come through.
                .options([("client_min_messages", "warning")]),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to Postgres: {e}"))?;
    Ok(Pool::postgres(pool))
}

/// Claims due jobs for submission: `$1` owner, `$2` now, `$3` lease end, `$4` limit, `$5` the
/// claim token. Fair across teams: the teams with due jobs are found by a loose index scan, each
/// offers its oldest due jobs (locked with `SKIP LOCKED`), and the batch takes every team's
/// first job before any team's second, so one team's backlog never delays another's job by
/// more than a round. `only` is the region condition (` AND …`, or nothing), `only_j` the same
/// on the columns of `j`.
pub(super) async fn claim_dispatch(
    pool: &Pool,
    claim: Stmt,
    only: &str,
    only_j: &str,
) -> StoreResult<Vec<ClaimRow>> {
    let sql = format!(
        "WITH RECURSIVE teams_due AS ( \
             (SELECT team FROM jobs WHERE due_at IS NOT NULL{only} ORDER BY team LIMIT 1) \
             UNION ALL \
             SELECT (SELECT j.team FROM jobs j WHERE j.due_at IS NOT NULL{only_j} AND j.team > t.team \
                     ORDER BY j.team LIMIT 1) \
             FROM teams_due t WHERE t.team IS NOT NULL), \
         offered AS ( \
             SELECT o.* FROM teams_due t CROSS JOIN LATERAL ( \
                 SELECT id, team, due_at, attempts AS prior_attempts, \
                        attempt_started_at AS prev_started FROM jobs \
                 WHERE team = t.team AND due_at <= $2{only} \
                   AND (lease_expires_at IS NULL OR lease_expires_at < $2) \
                   AND NOT EXISTS (SELECT 1 FROM teams p \
                                   WHERE p.name = t.team AND p.paused_at IS NOT NULL) \
                 ORDER BY due_at LIMIT $4 FOR UPDATE SKIP LOCKED) o \
             WHERE t.team IS NOT NULL), \
         due AS ( \
             SELECT id, prior_attempts, prev_started FROM ( \
                 SELECT *, row_number() OVER (PARTITION BY team ORDER BY due_at) AS turn \
                 FROM offered) r \
             ORDER BY turn, due_at LIMIT $4) \
         UPDATE jobs j SET lease_owner = $1, lease_expires_at = $3, attempts = j.attempts + 1, \
             claim_token = $5 \
         FROM due WHERE j.id = due.id \
         RETURNING {}, j.claim_token, due.prior_attempts, due.prev_started, j.mps_pipeline_id",
        job_columns(Some("j"))
    );
    pool.fetch_all(claim.with_sql(sql)).await
}

/// Claims jobs due for a status refresh: `$1` now, `$2` lease end, `$3` limit; `only` the
/// region condition (` AND …`, or nothing).
pub(super) fn claim_polls_sql(only: &str) -> String {
    format!(
        "WITH due AS (SELECT id FROM jobs WHERE next_poll_at <= $1{only} \
             ORDER BY next_poll_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
         UPDATE jobs j SET next_poll_at = $2, polls = j.polls + 1 FROM due WHERE j.id = due.id \
         RETURNING {}",
        job_columns(Some("j"))
    )
}

/// Wakes every replica's dispatcher (one announcement on [`NOTIFY_CHANNEL`]) after new jobs
/// committed, in a transaction of its own. Postgres serializes the commits of all transactions
/// that `NOTIFY` (a database-wide lock held from before the commit record to its end), so an
/// announcement inside each insert would line up every POST's commit, WAL flush included, behind
/// every other's. This one is a wake-up, not data: its commit does not wait for the flush
/// (`synchronous_commit = off`), so it holds that lock for microseconds.
pub(super) async fn announce_new_jobs(pool: &PgPool) -> StoreResult<()> {
    sqlx::raw_sql(&format!(
        "BEGIN; SET LOCAL synchronous_commit = off; SELECT pg_notify('{NOTIFY_CHANNEL}', ''); COMMIT"
    ))
    .execute(pool)
    .await
    .map_err(super::StoreError::from)?;
    Ok(())
}

/// Tells every replica's key cache that a key changed (after the change committed).
pub(super) async fn notify_key_change(pool: &Pool, access_key_id: &str) -> StoreResult<()> {
    pool.execute(
        Stmt::new("SELECT pg_notify($1, $2)")
            .bind(KEYS_CHANNEL)
            .bind(access_key_id),
    )
    .await?;
    Ok(())
}

/// The channel every change to a job row is announced on (payload: the job's id), by the trigger
/// of `migrations/postgres/0010_job_changes.sql`.
pub const JOB_CHANGES_CHANNEL: &str = "snapgate_job_changes";

/// What a `LISTEN` connection hears.
pub(super) enum Heard<'a> {
    /// Listening (again): announcements made from now on arrive; earlier ones may have been
    /// missed while there was no connection.
    Live,
    /// An announcement on one of the channels, with its payload.
    Message(&'a str),
    /// The connection is gone: announcements are missed until the next `Live`.
    Lost,
}

/// Listens on `channels` on a connection of its own (a one-connection pool with the store's
/// options), so the listener never holds one of the store's connections: `max_connections = 1`
/// still serves requests. Every loss of the connection is reported (`Lost`), and every
/// reconnection (`Live`, retried each second), so a cache built on the announcements knows when it
/// may have missed some.
pub(super) fn spawn_listener(
    pool: &PgPool,
    channels: &'static [&'static str],
    mut on: impl FnMut(Heard<'_>) + Send + 'static,
) {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with((*pool.connect_options()).clone());
    tokio::spawn(async move {
        loop {
            match sqlx::postgres::PgListener::connect_with(&own).await {
                Ok(mut listener) => match listener.listen_all(channels.iter().copied()).await {
                    Err(e) => tracing::warn!(error = %e, ?channels, "LISTEN failed"),
                    Ok(()) => {
                        on(Heard::Live);
                        // `try_recv` answers None when the connection was lost (`recv` would
                        // reconnect without saying so).
                        loop {
                            match listener.try_recv().await {
                                Ok(Some(n)) => on(Heard::Message(n.payload())),
                                Ok(None) => break,
                                Err(e) => {
                                    tracing::warn!(error = %e, ?channels, "LISTEN connection failed");
                                    break;
                                }
                            }
                        }
                        on(Heard::Lost);
                    }
                },
                Err(e) => tracing::warn!(error = %e, ?channels, "cannot open a LISTEN connection"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// Bumps `changes` on every key revocation announced by any process, and whenever the
/// listening connection is opened or lost, since announcements may have been missed meanwhile.
/// While it is down, cached keys still expire (`auth.token_cache_ms`).
pub(super) fn spawn_key_listener(pool: &PgPool, changes: KeyChanges) {
    spawn_listener(pool, &[KEYS_CHANNEL], move |_| changes.bump());
}

/// Wakes the worker whenever a job is queued by any replica.
pub(super) fn spawn_job_listener(pool: &PgPool, wake: Arc<tokio::sync::Notify>) {
    spawn_listener(pool, &[NOTIFY_CHANNEL], move |heard| {
        if let Heard::Message(_) = heard {
            wake.notify_one();
        }
    });
}

/// Tells `sink` of every change to a job row, by any process, and of the times it may have
/// missed some.
pub(super) fn spawn_job_change_listener(pool: &PgPool, sink: Arc<dyn JobChangeSink>) {
    spawn_listener(pool, &[JOB_CHANGES_CHANNEL], move |heard| match heard {
        Heard::Live => sink.feed_live(),
        Heard::Lost => sink.feed_lost(),
        Heard::Message(payload) => match uuid::Uuid::parse_str(payload) {
            Ok(id) => sink.job_changed(JobId(id)),
            // Not a job id: whatever it was about is unknown, so nothing cached is trusted.
            Err(_) => {
                sink.feed_lost();
                sink.feed_live();
            }
        },
    });
}
