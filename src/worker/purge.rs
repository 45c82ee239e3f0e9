//! Retention: the purge of data past its time (`[lifecycle]` settings), in the claim → process
//! → record shape of `dispatch.rs`: **claim** the purge lease (one replica at a time; a crashed
//! holder's lease expires), **process** each class in bounded batches — each its own short
//! transaction, the lease renewed and a pause (`purge_pause_ms`) between two, so foreground work
//! keeps the database — and **record** the run's report under the lease (the admin stats show
//! it) and the rows purged per class in `/metrics`. Every batch commits on its own, so a purge
//! stopped anywhere (a crash, a shutdown) is resumed by the next run: what is left is still
//! old enough. `snapgate purge` runs it once; `--dry-run` only counts.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::LifecycleSettings;
use crate::store::{DynStore, PurgeClass, PurgeCount, PurgeCutoffs, StoreResult};

/// The lease row's name.
pub const PURGE_LEASE: &str = "purge";

/// How long a purge's lease lasts without renewal (renewed at every batch).
const LEASE: chrono::Duration = chrono::Duration::seconds(60);

/// What one class lost in a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassReport {
    pub class: PurgeClass,
    pub deleted: u64,
    /// Rows deleted with them (a job's MPS responses).
    pub related_deleted: u64,
    pub batches: u32,
}

/// A purge run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PurgeReport {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub classes: Vec<ClassReport>,
    /// The run stopped before its end (shutdown); the next run resumes.
    pub interrupted: bool,
}

pub struct Purger {
    store: DynStore,
    cfg: LifecycleSettings,
    owner: String,
}

impl Purger {
    pub fn new(store: DynStore, cfg: LifecycleSettings) -> Self {
        Self {
            store,
            cfg,
            owner: format!("purge-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// What is old enough at `now` for each class.
    pub fn cutoffs(&self, now: DateTime<Utc>) -> PurgeCutoffs {
        let days = |d: u32| now - chrono::Duration::days(i64::from(d));
        PurgeCutoffs {
            now,
            jobs: days(self.cfg.jobs_retention_days),
            webhooks: days(self.cfg.webhooks_retention_days),
            uploads: days(self.cfg.uploads_retention_days),
        }
    }

    /// The dry run: how many rows of each class a purge at `now` would delete, and the oldest.
    pub async fn dry_run(&self, now: DateTime<Utc>) -> StoreResult<Vec<PurgeCount>> {
        let c = self.cutoffs(now);
        let mut counts = Vec::new();
        for class in PurgeClass::ALL {
            counts.push(self.store.purge_count(class, &c).await?);
        }
        Ok(counts)
    }

    /// One run at `now`: `None` when another replica holds the purge lease.
    pub async fn run_once(
        &self,
        now: DateTime<Utc>,
        stop: &CancellationToken,
    ) -> StoreResult<Option<PurgeReport>> {
        // Claim.
        if !self
            .store
            .take_lease(PURGE_LEASE, &self.owner, now, now + LEASE)
            .await?
        {
            return Ok(None);
        }
        // Process.
        let c = self.cutoffs(now);
        let mut report = PurgeReport {
            started_at: now,
            finished_at: now,
            classes: Vec::new(),
            interrupted: false,
        };
        for class in PurgeClass::ALL {
            let (done, stopped) = self.purge_class(class, &c, stop).await?;
            report.classes.push(done);
            if stopped {
                report.interrupted = true;
                break;
            }
        }
        // Record.
        report.finished_at = now.max(crate::clock::now());
        let json = serde_json::to_value(&report).expect("serializable");
        self.store
            .end_lease(PURGE_LEASE, &self.owner, report.finished_at, &json)
            .await?;
        tracing::info!(
            deleted = report.classes.iter().map(|c| c.deleted).sum::<u64>(),
            "purge run"
        );
        Ok(Some(report))
    }

    /// Every batch of one class until one comes back short; true if stopped first.
    async fn purge_class(
        &self,
        class: PurgeClass,
        c: &PurgeCutoffs,
        stop: &CancellationToken,
    ) -> StoreResult<(ClassReport, bool)> {
        let limit = self.cfg.purge_batch_size;
        let mut done = ClassReport {
            class,
            deleted: 0,
            related_deleted: 0,
            batches: 0,
        };
        loop {
            let batch = self.store.purge_batch(class, c, limit).await?;
            done.deleted += batch.rows;
            done.related_deleted += batch.related;
            done.batches += 1;
            metrics::counter!("snapgate_purged_rows_total", "class" => class.as_str())
                .increment(batch.rows);
            if batch.related > 0 {
                metrics::counter!("snapgate_purged_rows_total", "class" => "mps_responses")
                    .increment(batch.related);
            }
            if batch.rows < u64::from(limit) {
                return Ok((done, false));
            }
            // Paced: foreground work gets the database between two batches.
            tokio::select! {
                _ = stop.cancelled() => return Ok((done, true)),
                _ = tokio::time::sleep(Duration::from_millis(self.cfg.purge_pause_ms)) => {}
            }
            let now = crate::clock::now();
            if !self
                .store
                .take_lease(PURGE_LEASE, &self.owner, now, now + LEASE)
                .await?
            {
                // Lost (stalled past the lease): another replica goes on.
                return Ok((done, true));
            }
        }
    }

    /// The background purge: a run every `purge_interval_s` (the first after a random part of
    /// it, so replicas started together do not all try at once), until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let every = Duration::from_secs(self.cfg.purge_interval_s.max(1));
        let mut wait = every.mul_f64(rand::random::<f64>());
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = every;
            if let Err(e) = self.run_once(crate::clock::now(), &stop).await {
                tracing::warn!(error = %e, "purge run failed; the next run resumes");
            }
        }
    }
}
