//! [`RetentionStore`] for [`SqlStore`]: each purge class's rows (its table, its time column,
//! what keeps a row), counted for a dry run and deleted in bounded batches — one short
//! transaction each, the oldest rows first, rows held by another transaction skipped on
//! Postgres (`FOR UPDATE SKIP LOCKED`); and the lease row that lets one replica purge at a time.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::FromRow;

use super::codec::{DbId, DbTime};
use super::db::{Dialect, Stmt};
use super::sql::SqlStore;
use super::COUNTED_TABLES;
use super::{
    ArchivedRow, PurgeClass, PurgeCount, PurgeCutoffs, PurgedBatch, RetentionStore, StoreResult,
};

/// A class's table and the time its age is measured by.
pub(super) fn table(class: PurgeClass) -> (&'static str, &'static str) {
    match class {
        PurgeClass::WebhookAttempts => ("webhook_attempts", "attempted_at"),
        PurgeClass::WebhookEvents => ("webhook_events", "created_at"),
        PurgeClass::Uploads => ("uploads", "updated_at"),
        PurgeClass::Jobs => ("jobs", "finished_at"),
        PurgeClass::IdempotencyKeys => ("idempotency_keys", "expires_at"),
        PurgeClass::RpcNonces => ("rpc_nonces", "expires_at"),
    }
}

/// Appends the `WHERE` of the class's rows that may go.
pub(super) fn push_where(q: &mut Stmt, class: PurgeClass, c: &PurgeCutoffs) {
    q.push(" WHERE ");
    match class {
        PurgeClass::WebhookAttempts => {
            q.push("attempted_at < ").push_bind(c.webhooks);
        }
        // Deliveries still pending that long are far past the retry schedule: they go too.
        PurgeClass::WebhookEvents => {
            q.push("created_at < ").push_bind(c.webhooks);
        }
        PurgeClass::Uploads => {
            // An expired multipart intent is the sweeper's only record of its parts (billed
            // until aborted): it stays until the abort is recorded (the sweeper's own
            // condition, `multipart_to_abort`). A completed one has no parts left.
            q.push("state <> 'waiting' AND updated_at < ")
                .push_bind(c.uploads)
                .push(
                    " AND (job_id IS NULL OR NOT EXISTS (SELECT 1 FROM jobs j \
                     WHERE j.id = uploads.job_id AND j.state NOT IN ('succeeded', 'failed'))) \
                     AND NOT (state = 'expired' AND multipart_id IS NOT NULL \
                     AND multipart_closed_at IS NULL)",
                );
        }
        PurgeClass::Jobs => {
            q.push("state IN ('succeeded', 'failed') AND finished_at < ")
                .push_bind(c.jobs)
                .push(
                    " AND NOT EXISTS (SELECT 1 FROM uploads u WHERE u.job_id = jobs.id) \
                     AND NOT EXISTS (SELECT 1 FROM idempotency_keys k \
                     WHERE k.job_id = jobs.id AND k.expires_at >= ",
                )
                .push_bind(c.now)
                .push(")");
        }
        PurgeClass::IdempotencyKeys | PurgeClass::RpcNonces => {
            q.push("expires_at < ").push_bind(c.now);
        }
    }
}

#[derive(FromRow)]
struct CountRow {
    n: i64,
    oldest: Option<DbTime>,
}

#[derive(FromRow)]
struct IdRow {
    id: DbId,
}

#[derive(FromRow)]
struct LastRun {
    last_run_at: Option<DbTime>,
    last_report: Option<Json<Value>>,
}

impl SqlStore {
    /// One batch of a class without related rows: a single `DELETE` of the oldest rows by
    /// their physical id (Postgres `ctid` through `= ANY(ARRAY(…))`, a TID scan; SQLite
    /// `rowid`).
    async fn purge_rows(
        &self,
        class: PurgeClass,
        c: &PurgeCutoffs,
        limit: u32,
    ) -> StoreResult<PurgedBatch> {
        let (t, time) = table(class);
        let (rid, open, close, lock) = match self.dialect() {
            Dialect::Postgres => ("ctid", "= ANY(ARRAY(", "))", " FOR UPDATE SKIP LOCKED"),
            Dialect::Sqlite => ("rowid", "IN (", ")", ""),
        };
        let mut q = Stmt::new(format!(
            "DELETE FROM {t} WHERE {rid} {open}SELECT {rid} FROM {t}"
        ));
        push_where(&mut q, class, c);
        q.push(&format!(" ORDER BY {time} LIMIT "))
            .push_bind(limit)
            .push(&format!("{lock}{close}"));
        let rows = self.pool().execute(q).await?;
        Ok(PurgedBatch { rows, related: 0 })
    }

    /// One batch of final jobs with their MPS responses, in one transaction.
    async fn purge_jobs(&self, c: &PurgeCutoffs, limit: u32) -> StoreResult<PurgedBatch> {
        let lock = match self.dialect() {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let mut tx = self.pool().begin().await?;
        let mut q = Stmt::new("SELECT id FROM jobs");
        push_where(&mut q, PurgeClass::Jobs, c);
        q.push(" ORDER BY finished_at LIMIT ")
            .push_bind(limit)
            .push(lock);
        let ids: Vec<IdRow> = tx.conn().fetch_all(q).await?;
        if ids.is_empty() {
            tx.rollback().await?;
            return Ok(PurgedBatch::default());
        }
        let by_ids = |sql: &str| {
            let mut s = Stmt::new(sql);
            for (i, r) in ids.iter().enumerate() {
                s.push(if i == 0 { "" } else { ", " }).push_bind(r.id);
            }
            s.push(")");
            s
        };
        let related = tx
            .conn()
            .execute(by_ids("DELETE FROM mps_responses WHERE job_id IN ("))
            .await?;
        let rows = tx
            .conn()
            .execute(by_ids("DELETE FROM jobs WHERE id IN ("))
            .await?;
        tx.commit().await?;
        Ok(PurgedBatch { rows, related })
    }
}

#[async_trait]
impl RetentionStore for SqlStore {
    #[tracing::instrument(name = "store.archive_rows", level = "debug", skip_all, fields(class = class.as_str()))]
    async fn archive_rows(
        &self,
        class: PurgeClass,
        c: &PurgeCutoffs,
        limit: u32,
    ) -> StoreResult<Vec<ArchivedRow>> {
        self.read_archive_rows(class, c, limit).await
    }

    #[tracing::instrument(name = "store.delete_archived", level = "debug", skip_all, fields(class = class.as_str()))]
    async fn delete_archived(
        &self,
        class: PurgeClass,
        c: &PurgeCutoffs,
        rows: &[ArchivedRow],
    ) -> StoreResult<Option<PurgedBatch>> {
        self.delete_archived_rows(class, c, rows).await
    }

    #[tracing::instrument(name = "store.purge_count", level = "debug", skip_all)]
    async fn purge_count(&self, class: PurgeClass, c: &PurgeCutoffs) -> StoreResult<PurgeCount> {
        let (t, time) = table(class);
        let mut q = Stmt::new(format!(
            "SELECT count(*) AS n, min({time}) AS oldest FROM {t}"
        ));
        push_where(&mut q, class, c);
        let row: CountRow = self.pool().fetch_one(q).await?;
        Ok(PurgeCount {
            class,
            rows: row.n as u64,
            oldest: row.oldest.map(|t| t.0),
        })
    }

    #[tracing::instrument(name = "store.purge_batch", level = "debug", skip_all, fields(class = class.as_str()))]
    async fn purge_batch(
        &self,
        class: PurgeClass,
        c: &PurgeCutoffs,
        limit: u32,
    ) -> StoreResult<PurgedBatch> {
        match class {
            PurgeClass::Jobs => self.purge_jobs(c, limit).await,
            _ => self.purge_rows(class, c, limit).await,
        }
    }

    #[tracing::instrument(name = "store.take_lease", level = "debug", skip_all)]
    async fn take_lease(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let n = self
            .pool()
            .execute(
                Stmt::new(
                    "INSERT INTO maintenance_leases (name, owner, lease_expires_at) \
                     VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE \
                     SET owner = excluded.owner, lease_expires_at = excluded.lease_expires_at \
                     WHERE maintenance_leases.owner IS NULL \
                        OR maintenance_leases.owner = excluded.owner \
                        OR maintenance_leases.lease_expires_at < $4",
                )
                .bind(name)
                .bind(owner)
                .bind(until)
                .bind(now),
            )
            .await?;
        Ok(n == 1)
    }

    #[tracing::instrument(name = "store.end_lease", level = "debug", skip_all)]
    async fn end_lease(
        &self,
        name: &str,
        owner: &str,
        at: DateTime<Utc>,
        report: &Value,
    ) -> StoreResult<()> {
        self.pool()
            .execute(
                Stmt::new(
                    "UPDATE maintenance_leases SET owner = NULL, lease_expires_at = NULL, \
                     last_run_at = $3, last_report = $4 WHERE name = $1 AND owner = $2",
                )
                .bind(name)
                .bind(owner)
                .bind(at)
                .bind(report),
            )
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "store.table_rows", level = "debug", skip_all)]
    async fn table_rows(&self) -> StoreResult<Vec<(String, u64)>> {
        #[derive(FromRow)]
        struct N {
            n: i64,
        }
        let mut out = Vec::new();
        for t in COUNTED_TABLES {
            let r: N = self
                .pool()
                .fetch_one(Stmt::new(format!("SELECT count(*) AS n FROM {t}")))
                .await?;
            out.push((t.to_string(), r.n as u64));
        }
        Ok(out)
    }

    #[tracing::instrument(name = "store.last_lease_run", level = "debug", skip_all)]
    async fn last_lease_run(&self, name: &str) -> StoreResult<Option<(DateTime<Utc>, Value)>> {
        let row: Option<LastRun> = self
            .pool()
            .fetch_optional(
                Stmt::new(
                    "SELECT last_run_at, last_report FROM maintenance_leases WHERE name = $1",
                )
                .bind(name),
            )
            .await?;
        Ok(row.and_then(|r| Some((r.last_run_at?.0, r.last_report.map(|j| j.0)?))))
    }
}
