//! Retention: the purge of data past its time (`[lifecycle]` settings), in the claim → process
//! → record shape of `dispatch.rs`: **claim** the purge lease (one replica at a time; a crashed
//! holder's lease expires), **process** each class in bounded batches — each its own short
//! transaction, the lease renewed and a pause (`purge_pause_ms`) between two, so foreground work
//! keeps the database — and **record** the run's report under the lease (the admin stats show
//! it) and the rows purged (and archived) per class in `/metrics`. Every batch commits on its
//! own, so a purge stopped anywhere (a crash, a shutdown) is resumed by the next run: what is
//! left is still old enough. `snapgate purge` runs it once; `--dry-run` only counts.
//!
//! With the archive on (`[lifecycle.archive]`, `archive.rs`) a batch of an archived class is
//! read, written to OSS and verified, and only then deleted — exactly the rows written, if
//! none changed meanwhile; killed between the two steps, the next run writes the same objects
//! again before it deletes.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::LifecycleSettings;
use crate::store::{DynStore, PurgeClass, PurgeCount, PurgeCutoffs, PurgedBatch, StoreResult};

use super::archive::Archiver;

/// The lease row's name.
pub const PURGE_LEASE: &str = "purge";

/// How long a purge's lease lasts without renewal (renewed at every batch).
const LEASE: chrono::Duration = chrono::Duration::seconds(60);

/// A batch whose rows changed between their archive and their delete is read and archived
/// again; this many times in a row is a fault, not a race.
const MAX_REARCHIVE: u32 = 3;

/// What one class lost in a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassReport {
    pub class: PurgeClass,
    pub deleted: u64,
    /// Rows deleted with them (a job's MPS responses).
    pub related_deleted: u64,
    pub batches: u32,
    /// Rows written to the archive before they were deleted (= `deleted` when it is on).
    pub archived: u64,
    /// Archive objects written (the same object again after a crash counts again).
    pub archive_objects: u32,
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
    archive: Option<Arc<Archiver>>,
}

/// What a purge run may fail with: the database, or the archive (nothing was deleted of the
/// batch it was writing).
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("archive: {0:#}")]
    Archive(anyhow::Error),
}

impl Purger {
    pub fn new(store: DynStore, cfg: LifecycleSettings) -> Self {
        Self {
            store,
            cfg,
            owner: format!("purge-{}", uuid::Uuid::new_v4().simple()),
            archive: None,
        }
    }

    /// Archives each archived class's rows before deleting them.
    pub fn with_archive(mut self, archive: Option<Arc<Archiver>>) -> Self {
        self.archive = archive;
        self
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
    ) -> Result<Option<PurgeReport>, PurgeError> {
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
    ) -> Result<(ClassReport, bool), PurgeError> {
        let limit = self.cfg.purge_batch_size;
        let mut done = ClassReport {
            class,
            deleted: 0,
            related_deleted: 0,
            batches: 0,
            archived: 0,
            archive_objects: 0,
        };
        let archive = self.archive.as_ref().filter(|_| class.archived());
        loop {
            let started = tokio::time::Instant::now();
            let (batch, read) = match archive {
                Some(a) => self.archive_batch(a, class, c, &mut done).await?,
                None => {
                    let b = self.store.purge_batch(class, c, limit).await?;
                    (b, b.rows)
                }
            };
            done.deleted += batch.rows;
            done.related_deleted += batch.related;
            done.batches += 1;
            metrics::counter!("snapgate_purged_rows_total", "class" => class.as_str())
                .increment(batch.rows);
            if batch.related > 0 {
                metrics::counter!("snapgate_purged_rows_total", "class" => "mps_responses")
                    .increment(batch.related);
            }
            if read < u64::from(limit) {
                return Ok((done, false));
            }
            // Paced: foreground work gets the database between two batches.
            let pause = pause_after(started.elapsed(), &self.cfg);
            tokio::select! {
                _ = stop.cancelled() => return Ok((done, true)),
                _ = tokio::time::sleep(pause) => {}
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

    /// One archived batch: read the oldest rows, write and verify their objects, delete exactly
    /// those rows. The batch and how many rows were read (a short read is the class's end).
    async fn archive_batch(
        &self,
        archive: &Archiver,
        class: PurgeClass,
        c: &PurgeCutoffs,
        done: &mut ClassReport,
    ) -> Result<(PurgedBatch, u64), PurgeError> {
        for _ in 0..MAX_REARCHIVE {
            let rows = self
                .store
                .archive_rows(class, c, self.cfg.purge_batch_size)
                .await?;
            if rows.is_empty() {
                return Ok((PurgedBatch::default(), 0));
            }
            let objects = archive
                .write(class, &rows)
                .await
                .map_err(PurgeError::Archive)?;
            done.archive_objects += objects.len() as u32;
            metrics::counter!("snapgate_archive_objects_total", "class" => class.as_str())
                .increment(objects.len() as u64);
            if let Some(batch) = self.store.delete_archived(class, c, &rows).await? {
                done.archived += batch.rows;
                metrics::counter!("snapgate_archived_rows_total", "class" => class.as_str())
                    .increment(batch.rows);
                return Ok((batch, rows.len() as u64));
            }
            tracing::info!(
                class = class.as_str(),
                "rows changed between their archive and their delete: archiving them again"
            );
        }
        Err(PurgeError::Archive(anyhow::anyhow!(
            "{}: the rows kept changing between their archive and their delete",
            class.as_str()
        )))
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

/// The pause after a batch that took `batch`: at least `purge_pause_ms`, and long enough that
/// batches take at most `purge_duty_percent` of the time (a batch slowed by a busy database is
/// followed by a longer pause: the purge yields in proportion).
fn pause_after(batch: Duration, cfg: &crate::config::LifecycleSettings) -> Duration {
    let duty = cfg.purge_duty_percent.clamp(1, 100);
    let share = batch * (100 - duty) / duty;
    share.max(Duration::from_millis(cfg.purge_pause_ms))
}

#[cfg(test)]
mod pacing_tests {
    use super::pause_after;
    use std::time::Duration;

    #[test]
    fn a_batch_is_followed_by_a_pause_in_proportion() {
        let mut cfg = crate::config::Settings::default().lifecycle;
        cfg.purge_pause_ms = 50;
        cfg.purge_duty_percent = 20;
        let ms = Duration::from_millis;
        assert_eq!(
            pause_after(ms(100), &cfg),
            ms(400),
            "20 %: four times the batch"
        );
        assert_eq!(
            pause_after(ms(5), &cfg),
            ms(50),
            "never under purge_pause_ms"
        );
        cfg.purge_duty_percent = 100;
        assert_eq!(
            pause_after(ms(100), &cfg),
            ms(50),
            "100 %: only the fixed pause"
        );
    }
}
