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
//! Each batch is admitted under the in-flight quota in the same statement (Postgres: a
//! data-modifying `WITH`) or the same transaction (SQLite) as its insert: the team's counter row
//! (migration 0011) grows by the team's jobs in the batch only while it stays within the limit.
//! A team refused as a whole in a batch of several of its jobs has them admitted one by one
//! (some may fit), so the quota is exact whatever the batching. The jobs inserted are counted in
//! the teams' usage (`usage.rs`) by the same statement or transaction, and only those: a job
//! the quota refused is never counted, and a crash loses both or neither.
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

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use super::codec::DbId;
use super::db::Pool;
use super::statements::{admit_and_insert_stmt, admit_stmt, insert_jobs_stmt};
use super::usage::{usage_upsert, RegionSlot, UsageDelta};
use super::{postgres, StoreError, StoreResult};
use crate::domain::{JobId, NewJob};

/// At most this many jobs in one statement (6 parameters each, far under both databases'
/// limits).
pub const MAX_BATCH: usize = 64;

struct Pending {
    job: NewJob,
    /// The team's in-flight quota for this job.
    limit: i64,
    /// What the job adds to its team's usage once recorded.
    usage: UsageDelta,
    /// Whether the job was admitted (and recorded).
    done: oneshot::Sender<StoreResult<bool>>,
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
            in_flight: in_flight.max(1),
            region,
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

    /// Records `job` (state `queued`, announced to the dispatchers) if its team has fewer than
    /// `limit` jobs in flight, and returns once the commit that holds it is done: whether it was
    /// admitted.
    pub(super) async fn record(&self, job: NewJob, limit: i64) -> StoreResult<bool> {
        let (done, answer) = oneshot::channel();
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(self.pool.clone(), self.in_flight, rx));
            tx
        });
        let usage = UsageDelta::submitted(&job, &self.region);
        queue
            .send(Pending {
                job,
                limit,
                usage,
                done,
            })
            .map_err(|_| stopped())?;
        let admitted = answer.await.map_err(|_| stopped())??;
        if admitted {
            self.announce();
        }
        Ok(admitted)
    }
}

/// The committer is gone only when the runtime shuts down: as for a closed pool.
fn stopped() -> StoreError {
    StoreError::Database(sqlx::Error::PoolClosed)
}

async fn run(pool: Pool, in_flight: usize, mut rx: mpsc::UnboundedReceiver<Pending>) {
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
        tokio::spawn(async move {
            commit(&pool, batch).await;
            drop(slot);
        });
    }
}

async fn commit(pool: &Pool, batch: Vec<Pending>) {
    tracing::trace!(jobs = batch.len(), "group commit");
    // Each connection found lost is closed, and the pool holds at most this many.
    let mut may_retry = pool.max_connections();
    loop {
        match admit_and_insert(pool, &batch).await {
            Ok(inserted) => return settle(pool, batch, &inserted).await,
            // A connection may have been closed while it waited, kept warm or idle in the
            // pool (the server restarted, an idle timeout, a terminated backend): the batch
            // goes again on another, until the pool has no such connection left (then it
            // opens a new one, or its error is the answer). Safe to repeat: the jobs keep their
            // ids, so a statement that did commit before its connection broke makes the repeat
            // fail on them (its admission with it), never records them twice.
            Err(e) if may_retry > 0 && connection_lost(&e) => {
                may_retry -= 1;
                tracing::debug!(error = %e, "the connection was lost; the batch goes again on another");
            }
            Err(e) => return fail(pool, batch, e).await,
        }
    }
}

/// Answers each job of a committed batch: recorded; or refused, when its team had only it in
/// the batch; or, when the team's several jobs were refused together, admitted one by one.
async fn settle(pool: &Pool, batch: Vec<Pending>, inserted: &HashSet<JobId>) {
    let mut per_team: BTreeMap<String, usize> = BTreeMap::new();
    for p in &batch {
        *per_team.entry(p.job.team.clone()).or_default() += 1;
    }
    for p in batch {
        if inserted.contains(&p.job.id) {
            let _ = p.done.send(Ok(true));
        } else if per_team[&p.job.team] == 1 {
            let _ = p.done.send(Ok(false));
        } else {
            alone(pool, p).await;
        }
    }
}

/// A batch's statement failed: a lone job gets the error, a larger batch is recorded job by
/// job (so one bad job, or a database error, fails only its own request).
async fn fail(pool: &Pool, batch: Vec<Pending>, e: StoreError) {
    if batch.len() == 1 {
        let p = batch.into_iter().next().expect("one job");
        let _ = p.done.send(Err(e));
        return;
    }
    tracing::debug!(error = %e, jobs = batch.len(), "group commit failed; recording the jobs one by one");
    for p in batch {
        alone(pool, p).await;
    }
}

/// Admits and records one job on its own.
async fn alone(pool: &Pool, p: Pending) {
    let one = [p];
    let r = admit_and_insert(pool, &one)
        .await
        .map(|ids| !ids.is_empty());
    let [p] = one;
    let _ = p.done.send(r);
}

#[derive(sqlx::FromRow)]
struct Inserted {
    id: DbId,
}

#[derive(sqlx::FromRow)]
struct Admitted {
    team: String,
}

/// Admits the batch's jobs team by team under their quota (a team whose jobs in the batch
/// exceed its limit is not tried), inserts the admitted teams' jobs and counts those in usage,
/// in one statement on Postgres, one transaction on SQLite. Answers the ids recorded.
async fn admit_and_insert(pool: &Pool, batch: &[Pending]) -> StoreResult<HashSet<JobId>> {
    let mut teams: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for p in batch {
        let t = teams.entry(&p.job.team).or_insert((0, i64::MAX));
        t.0 += 1;
        t.1 = t.1.min(p.limit);
    }
    let teams: Vec<(&str, i64, i64)> = teams
        .into_iter()
        .filter(|(_, (n, limit))| n <= limit)
        .map(|(team, (n, limit))| (team, n, limit))
        .collect();
    if teams.is_empty() {
        return Ok(HashSet::new());
    }
    let tried = batch
        .iter()
        .filter(|p| teams.iter().any(|t| t.0 == p.job.team));
    if let Pool::Postgres(..) = pool {
        let jobs = tried.map(|p| (&p.job, &p.usage));
        let rows: Vec<Inserted> = pool.fetch_all(admit_and_insert_stmt(&teams, jobs)).await?;
        return Ok(rows.into_iter().map(|r| JobId(r.id.0)).collect());
    }
    let mut tx = pool.begin().await?;
    let admitted: Vec<Admitted> = tx.conn().fetch_all(admit_stmt(&teams)).await?;
    let admitted: HashSet<String> = admitted.into_iter().map(|a| a.team).collect();
    let recorded: Vec<&Pending> = tried.filter(|p| admitted.contains(&p.job.team)).collect();
    if !recorded.is_empty() {
        tx.conn()
            .execute(insert_jobs_stmt(recorded.iter().map(|p| &p.job)))
            .await?;
        let usage: Vec<UsageDelta> = recorded.iter().map(|p| p.usage.clone()).collect();
        tx.conn().execute(usage_upsert(&usage)).await?;
    }
    tx.commit().await?;
    Ok(recorded.iter().map(|p| p.job.id).collect())
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

async fn announce(pool: sqlx::PgPool, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        if let Err(e) = postgres::announce_new_jobs(&pool).await {
            tracing::debug!(error = %e, "announcing new jobs failed; replicas find them by polling");
        }
        tokio::time::sleep(ANNOUNCE_EVERY).await;
    }
}
