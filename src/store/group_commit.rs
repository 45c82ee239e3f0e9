//! Group commit of new jobs: the jobs of many concurrent POSTs recorded by one statement, one
//! transaction, one commit (one WAL flush) instead of one each.
//!
//! A POST hands its job to [`GroupCommit::record`] and waits for the commit that holds it; it is
//! answered only after that commit. The committer takes whatever is waiting, up to
//! [`MAX_BATCH`] jobs, and keeps up to `in_flight` statements running at once: under light load
//! every job goes alone at once (no timer, no added latency); under load the jobs that arrive
//! while earlier batches commit share the next one. A team has one batch committing at a time
//! (its admission locks the team's counter row until the commit: see [`Queue`]); its jobs that
//! arrive meanwhile wait for the next, while other teams' batches commit beside it. A batch that
//! fails is retried job by job, so one bad job (or a database error) fails only its own request.
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
use super::usage::{usage_upsert, UsageDelta};
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
    queue: OnceLock<mpsc::UnboundedSender<Pending>>,
    /// Asks the announcer for a `NOTIFY` (Postgres; started on first use).
    announcer: OnceLock<Arc<Notify>>,
}

/// At most one announcement of new jobs this often (a wake-up for idle replicas: a few
/// milliseconds late is as good).
const ANNOUNCE_EVERY: Duration = Duration::from_millis(5);

impl GroupCommit {
    /// `in_flight`: how many batches may be committing at once (each holds one connection).
    pub(super) fn new(pool: Pool, in_flight: usize) -> Self {
        Self {
            pool,
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
        let usage = UsageDelta::submitted(&job);
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
    // Each committed batch gives back its teams here (before its slot).
    let (freed_tx, mut freed_rx) = mpsc::unbounded_channel::<Vec<String>>();
    let mut queue = Queue::default();
    let mut open = true;
    loop {
        // Wait for something to do: a new job, or teams whose batch committed.
        tokio::select! {
            p = rx.recv(), if open => match p {
                Some(p) => queue.held.push_back(p),
                None => open = false,
            },
            Some(teams) = freed_rx.recv() => queue.free(teams),
        }
        if !open && queue.held.is_empty() {
            return;
        }
        while queue.has_ready() {
            // Wait for a free slot first: the jobs that arrive meanwhile join this batch.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            while let Ok(p) = rx.try_recv() {
                queue.held.push_back(p);
            }
            while let Ok(teams) = freed_rx.try_recv() {
                queue.free(teams);
            }
            let batch = queue.take_batch(MAX_BATCH);
            let teams: Vec<String> = batch.iter().map(|p| p.job.team.clone()).collect();
            let pool = pool.clone();
            let freed = freed_tx.clone();
            tokio::spawn(async move {
                commit(&pool, batch).await;
                let _ = freed.send(teams);
                drop(slot);
            });
        }
    }
}

/// The jobs waiting for a batch, and the teams with a batch committing.
///
/// A team has at most one batch committing at a time (on this replica): its admission updates
/// the team's counter row, whose lock a second batch of the team would wait for inside the
/// database until the first commits — holding a connection, and committing alone. Held back
/// here instead, the team's jobs that arrive meanwhile share its next batch (one commit, one
/// WAL flush, for all of them), while other teams' batches commit beside it.
struct Queue<T = Pending> {
    /// In arrival order.
    held: std::collections::VecDeque<T>,
    busy: HashSet<String>,
}

/// What [`Queue`] holds: something of a team.
trait OfTeam {
    fn team(&self) -> &str;
}

impl OfTeam for Pending {
    fn team(&self) -> &str {
        &self.job.team
    }
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Self {
            held: Default::default(),
            busy: Default::default(),
        }
    }
}

impl<T: OfTeam> Queue<T> {
    fn free(&mut self, teams: Vec<String>) {
        for team in teams {
            self.busy.remove(&team);
        }
    }

    fn has_ready(&self) -> bool {
        self.held.iter().any(|p| !self.busy.contains(p.team()))
    }

    /// Up to `max` jobs of teams with no batch committing, oldest first; their teams are busy
    /// from now on.
    fn take_batch(&mut self, max: usize) -> Vec<T> {
        let mut batch = Vec::new();
        let mut kept = std::collections::VecDeque::with_capacity(self.held.len());
        for p in self.held.drain(..) {
            if batch.len() < max && !self.busy.contains(p.team()) {
                batch.push(p);
            } else {
                kept.push_back(p);
            }
        }
        self.held = kept;
        for p in &batch {
            self.busy.insert(p.team().to_string());
        }
        batch
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

#[cfg(test)]
mod tests {
    use super::{OfTeam, Queue};

    impl OfTeam for (&'static str, u32) {
        fn team(&self) -> &str {
            self.0
        }
    }

    fn batch(q: &mut Queue<(&'static str, u32)>, max: usize) -> Vec<u32> {
        q.take_batch(max).into_iter().map(|(_, n)| n).collect()
    }

    #[test]
    fn a_team_has_one_batch_committing_and_its_jobs_share_the_next() {
        let mut q = Queue::default();
        q.held.extend([("a", 1), ("a", 2), ("b", 3)]);
        assert_eq!(batch(&mut q, 64), [1, 2, 3]);
        // While a's and b's batch commits, their jobs wait (in order); c's go at once.
        q.held.extend([("a", 4), ("b", 5), ("c", 6), ("a", 7)]);
        assert!(q.has_ready());
        assert_eq!(batch(&mut q, 64), [6]);
        assert!(!q.has_ready());
        assert!(batch(&mut q, 64).is_empty());
        // a's batch committed: all of a's waiting jobs go together; b's still wait.
        q.free(vec!["a".into(), "a".into()]);
        assert_eq!(batch(&mut q, 64), [4, 7]);
        q.free(vec!["b".into()]);
        assert_eq!(batch(&mut q, 64), [5]);
        assert!(q.held.is_empty());
    }

    #[test]
    fn a_batch_takes_at_most_max_jobs_oldest_first() {
        let mut q = Queue::default();
        q.held.extend((0..5).map(|n| ("a", n)));
        assert_eq!(batch(&mut q, 3), [0, 1, 2]);
        q.free(vec!["a".into()]);
        assert_eq!(batch(&mut q, 3), [3, 4]);
    }
}
