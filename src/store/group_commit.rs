//! Group commit of new jobs: the jobs of many concurrent POSTs recorded by one statement, one
//! transaction, one commit (one WAL flush) instead of one each.
//!
//! A POST hands its job to [`GroupCommit::record`] and waits for the commit that holds it; it is
//! answered only after that commit. The committer takes whatever is waiting, up to
//! [`MAX_BATCH`] jobs, and keeps up to `in_flight` statements running at once: under light load
//! every job goes alone at once (no timer, no added latency); under load the jobs that arrive
//! while earlier batches commit share the next one. A batch that fails is retried job by job, so
//! one bad job (or a database error) fails only its own request.
//!
//! A POST whose client goes away after handing over its job still gets it recorded, exactly as
//! when the client goes away after a one-job insert: the job is dispatched, its answer was lost.
//!
//! A batch whose connection is found lost (kept warm or idle in the pool, and closed by the
//! server meanwhile) goes again on another connection: the jobs keep their ids, so nothing is
//! recorded twice.
//!
//! On Postgres, committed jobs are announced to every replica's dispatcher by
//! [`GroupCommit::announce`]: one `NOTIFY` at a time, outside the inserts' transactions (see
//! [`postgres::announce_new_jobs`] for why), however many commits asked for one meanwhile. The
//! announcement is a wake-up only; a replica that misses it finds the jobs at its next poll.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use super::db::{Dialect, Pool, Stmt};
use super::statements::insert_jobs_stmt;
use super::usage::{push_usage_upsert, usage_upsert, RegionSlot, UsageDelta};
use super::{postgres, StoreError, StoreResult};
use crate::domain::NewJob;

/// At most this many jobs in one statement (6 parameters each, far under both databases'
/// limits).
pub const MAX_BATCH: usize = 64;

struct Pending {
    job: NewJob,
    done: oneshot::Sender<StoreResult<()>>,
}

/// The committer of one store (started on first use, inside the caller's runtime).
pub(super) struct GroupCommit {
    pool: Pool,
    in_flight: usize,
    /// The region the jobs' usage is counted in.
    region: RegionSlot,
    queue: OnceLock<mpsc::UnboundedSender<Pending>>,
    /// Asks the announcer for a `NOTIFY` (Postgres; started on first use).
    announcer: OnceLock<Arc<Notify>>,
}

/// At most one announcement of new jobs this often (a wake-up for idle replicas: a few
/// milliseconds late is as good).
const ANNOUNCE_EVERY: Duration = Duration::from_millis(5);

impl GroupCommit {
    /// `in_flight`: how many batches may be committing at once (each holds one connection).
    pub(super) fn new(pool: Pool, in_flight: usize, region: RegionSlot) -> Self {
        Self {
            pool,
            region,
            in_flight: in_flight.max(1),
            queue: OnceLock::new(),
            announcer: OnceLock::new(),
        }
    }

    /// Announces that jobs were queued (after their commit), to the dispatchers of every
    /// replica; requests made while an announcement is under way share the next one.
    pub(super) fn announce(&self) {
        let Pool::Postgres(pool, _) = &self.pool else {
            return;
        };
        let wake = self.announcer.get_or_init(|| {
            let wake = Arc::new(Notify::new());
            tokio::spawn(announce(pool.clone(), wake.clone()));
            wake
        });
        wake.notify_one();
    }

    /// Records `job` (state `queued`, announced to the dispatchers) and returns once the commit
    /// that holds it is done.
    pub(super) async fn record(&self, job: NewJob) -> StoreResult<()> {
        let (done, answer) = oneshot::channel();
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(
                self.pool.clone(),
                self.in_flight,
                self.region.clone(),
                rx,
            ));
            tx
        });
        queue.send(Pending { job, done }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())??;
        self.announce();
        Ok(())
    }
}

/// The committer is gone only when the runtime shuts down: as for a closed pool.
fn stopped() -> StoreError {
    StoreError::Database(sqlx::Error::PoolClosed)
}

async fn run(
    pool: Pool,
    in_flight: usize,
    region: RegionSlot,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    let slots = Arc::new(Semaphore::new(in_flight));
    while let Some(first) = rx.recv().await {
        // Wait for a free slot first: the jobs that arrive meanwhile join this batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        let region = region.clone();
        tokio::spawn(async move {
            commit(&pool, &region, batch).await;
            drop(slot);
        });
    }
}

async fn commit(pool: &Pool, region: &RegionSlot, batch: Vec<Pending>) {
    tracing::trace!(jobs = batch.len(), "group commit");
    // Each connection found lost is closed, and the pool holds at most this many.
    let mut may_retry = pool.max_connections();
    loop {
        match record(pool, region, &batch).await {
            Ok(()) => {
                for p in batch {
                    let _ = p.done.send(Ok(()));
                }
                return;
            }
            // A connection may have been closed while it waited, kept warm or idle in the
            // pool (the server restarted, an idle timeout, a terminated backend): the batch
            // goes again on another, until the pool has no such connection left (then it
            // opens a new one, or its error is the answer). Safe to repeat: the jobs keep their
            // ids, so a statement that did commit before its connection broke makes the repeat
            // fail on them, never records them twice.
            Err(e) if may_retry > 0 && connection_lost(&e) => {
                may_retry -= 1;
                tracing::debug!(error = %e, "the connection was lost; the batch goes again on another");
            }
            Err(e) => return fail(pool, region, batch, e).await,
        }
    }
}

/// A batch's statement failed: a lone job gets the error, a larger batch is recorded job by
/// job (so one bad job, or a database error, fails only its own request).
async fn fail(pool: &Pool, region: &RegionSlot, batch: Vec<Pending>, e: StoreError) {
    if batch.len() == 1 {
        let p = batch.into_iter().next().expect("one job");
        let _ = p.done.send(Err(e));
        return;
    }
    tracing::debug!(error = %e, jobs = batch.len(), "group commit failed; recording the jobs one by one");
    for p in batch {
        let one = [p];
        let r = record(pool, region, &one).await;
        let [p] = one;
        let _ = p.done.send(r);
    }
}

/// The connection, not the statement, failed: the transport (I/O, TLS, the protocol), or the
/// server ended the session (SQLSTATE class 08, connection exception; 57P01–57P03, an
/// administrator's termination, a crash or a shutdown).
fn connection_lost(e: &StoreError) -> bool {
    match e {
        StoreError::Database(sqlx::Error::Database(d)) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        StoreError::Database(
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_),
        ) => true,
        _ => false,
    }
}

/// One statement for the batch.
fn insert_stmt(batch: &[Pending]) -> Stmt {
    insert_jobs_stmt(batch.iter().map(|p| &p.job))
}

/// Records the batch and adds it to the teams' usage, atomically: one statement on Postgres
/// (the insert as a `WITH` of the usage upsert), one short transaction on SQLite.
async fn record(pool: &Pool, region: &RegionSlot, batch: &[Pending]) -> StoreResult<()> {
    let deltas: Vec<UsageDelta> = batch
        .iter()
        .map(|p| UsageDelta::submitted(&p.job, region))
        .collect();
    let insert = insert_stmt(batch);
    match pool.dialect() {
        Dialect::Postgres => {
            let mut q = insert.with_sql(format!("WITH new_jobs AS ({}) ", insert.sql()));
            push_usage_upsert(&mut q, &deltas);
            pool.execute(q).await?;
        }
        Dialect::Sqlite => {
            let mut tx = pool.begin().await?;
            tx.conn().execute(insert).await?;
            tx.conn().execute(usage_upsert(&deltas)).await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

async fn announce(pool: sqlx::PgPool, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        if let Err(e) = postgres::announce_new_jobs(&pool).await {
            tracing::debug!(error = %e, "announcing new jobs failed; replicas find them by polling");
        }
        tokio::time::sleep(ANNOUNCE_EVERY).await;
    }
}
