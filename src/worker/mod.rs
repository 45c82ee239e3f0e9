//! Background work: the dispatcher (claims queued jobs and submits them to MPS, `dispatch.rs`),
//! the status poller (asks MPS about in-flight jobs, `poll.rs`) and, with `mps.mns` on, the MNS
//! consumer (applies the job messages MPS publishes, `mns.rs`; polling is then the safety net).
//! A handler never calls MPS: it writes to the store and nudges the worker through
//! [`JobSignals`](crate::signals::JobSignals).
//!
//! Exactly-once delivery rests on three things:
//! 1. the job and its outbox entry are written in one transaction (store);
//! 2. a claim is a lease, and every result is recorded only if the lease is still ours;
//! 3. an attempt whose outcome is unknown (timeout, lost answer, crashed replica) is followed by
//!    reconciliation — looking the job up on MPS by its id in `UserData` — never by a blind retry.

pub mod archive;
pub mod credentials;
pub mod deliver;
mod dispatch;
pub mod mns;
mod poll;
pub mod purge;

pub use deliver::DeliveryWorker;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::config::{Region, Settings, WorkerSettings};
use crate::mps::client::MpsApi;
use crate::mps::health;
use crate::mps::mns::MnsClient;
use crate::signals::JobSignals;
use crate::store::{self, DynStore};

/// The worker's two loops.
#[derive(Clone, Copy)]
enum Loop {
    Dispatch,
    Poll,
}

/// Names of the shared upstream budgets (token buckets in the store) of a worker not bound to
/// a region (`Worker::new`); a region's are `Region::submit_budget`/`query_budget`.
const SUBMIT_BUDGET: &str = "mps.submit";
const QUERY_BUDGET: &str = "mps.query";

/// Which upstream budget a take is from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Budget {
    Submit,
    Query,
}

pub struct Worker {
    store: DynStore,
    mps: Arc<dyn MpsApi>,
    cfg: WorkerSettings,
    default_pipeline: Option<String>,
    signals: JobSignals,
    owner: String,
    /// MPS's request timeout: an attempt's answer comes within it, or never.
    mps_timeout: Duration,
    health: Arc<health::MpsHealth>,
    /// Learned time MPS takes from submit to a final state, in ms (0: not known yet).
    expected_duration_ms: std::sync::atomic::AtomicU64,
    /// The MNS queue MPS announces job ends on (`mps.mns`); polling is then the safety net.
    mns: Option<Arc<MnsClient>>,
    mns_concurrency: usize,
    /// One taker at a time per shared bucket (submit, query) in this process, its waits for
    /// refills included: the other takers queue here in order, rather than each polling the
    /// bucket's one row (and queueing on its lock, each holding a connection) every refill.
    budget_turns: [tokio::sync::Mutex<()>; 2],
    /// The MPS region whose jobs this worker claims (`None`: every region's, `Worker::new`).
    scope: Option<store::RegionScope>,
    /// The region id, as the metrics' `region` label.
    region: String,
    /// The budgets it takes from: names and rates.
    budgets: [(String, u32); 2],
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy)]
pub struct RoundReport {
    pub dispatched: usize,
    pub polled: usize,
}

impl Worker {
    pub fn new(
        store: DynStore,
        mps: Arc<dyn MpsApi>,
        settings: &Settings,
        signals: JobSignals,
    ) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "snapgate".into());
        let owner = format!(
            "{host}-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Self {
            store,
            mps,
            cfg: settings.worker.clone(),
            default_pipeline: settings.mps.pipeline_id.clone(),
            signals,
            owner,
            mps_timeout: Duration::from_millis(settings.mps.request_timeout_ms),
            health: Arc::new(health::MpsHealth::of_region(&settings.mps.region)),
            expected_duration_ms: std::sync::atomic::AtomicU64::new(0),
            mns: None,
            mns_concurrency: settings.mps.mns.concurrency.max(1),
            budget_turns: Default::default(),
            scope: None,
            region: settings.mps.region.clone(),
            budgets: [
                (SUBMIT_BUDGET.into(), settings.worker.submit_qps),
                (QUERY_BUDGET.into(), settings.worker.query_qps),
            ],
        }
    }

    /// The worker of one MPS region: it claims and polls only that region's jobs, through
    /// `mps` (the region's client), with the region's pipeline and budgets and its own wake-ups
    /// (`signals.for_region`), so another region's outage or throttling never holds it.
    pub fn for_region(
        store: DynStore,
        mps: Arc<dyn MpsApi>,
        settings: &Settings,
        signals: JobSignals,
        region: &Region,
    ) -> Self {
        let mut w = Self::new(store, mps, settings, signals.for_region(&region.id));
        w.default_pipeline = region.pipeline_id.clone();
        w.scope = Some(store::RegionScope {
            region: region.id.clone(),
            default: region.default,
        });
        w.region = region.id.clone();
        w.health = Arc::new(health::MpsHealth::of_region(&region.id));
        w.budgets = [
            (region.submit_budget.clone(), region.submit_qps),
            (region.query_budget.clone(), region.query_qps),
        ];
        w
    }

    /// The MPS region this worker serves.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Listens to MPS's job messages on this MNS queue; a job is then first queried only
    /// `worker.mns_grace_s` past its expected end (the safety net for lost messages).
    pub fn with_mns(mut self, client: Arc<MnsClient>) -> Self {
        self.mns = Some(client);
        self
    }

    /// This worker's lease owner name.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// What this worker knows of its access to MPS.
    pub fn health(&self) -> Arc<health::MpsHealth> {
        self.health.clone()
    }

    /// Says at start which MPS this worker talks to, and checks the credentials once with a
    /// cheap signed call (a status query for an id that does not exist).
    pub async fn check_mps(&self) {
        let result = self
            .mps
            .query_snapshot_jobs(&["00000000000000000000000000000000".to_string()])
            .await;
        match &result {
            Ok(_) => tracing::info!("MPS answers and accepts the gateway's credentials"),
            Err(e) => tracing::warn!(code = %e.code, "MPS check at start failed"),
        }
        self.health.observe(&result);
    }

    /// One dispatch round and one poll round.
    pub async fn run_once(&self) -> anyhow::Result<RoundReport> {
        Ok(RoundReport {
            dispatched: self.dispatch_round(&CancellationToken::new()).await?,
            polled: self.poll_round().await?,
        })
    }

    /// Drives rounds until no job has anything left to do (tests): every job delivered and
    /// final. Sleeps only until the next due time the store reports.
    pub async fn run_until_idle(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let report = self.run_once().await?;
            if report.dispatched + report.polled > 0 {
                continue;
            }
            let d = self.store.next_due_each_in(self.scope.as_ref()).await?;
            let Some(due) = d.dispatch.into_iter().chain(d.poll).min() else {
                return Ok(());
            };
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "worker not idle after {limit:?}"
            );
            tokio::time::sleep(until(due).min(Duration::from_millis(200))).await;
        }
    }

    /// Runs the dispatcher and the poller until `shutdown`, then gives back unfinished claims:
    /// calls to MPS in flight finish and are recorded, claims not yet sent (waiting for a turn
    /// or for the upstream budget) go back to the queue, for this or another replica.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        self.store.spawn_job_listener(self.signals.wake.clone());
        self.check_mps().await;
        let dispatcher = {
            let me = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { me.dispatch_loop(shutdown).await })
        };
        let poller = {
            let me = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { me.poll_loop(shutdown).await })
        };
        let consumer = self.mns.clone().map(|client| {
            let me = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { me.mns_loop(&client, shutdown).await })
        });
        let _ = tokio::join!(dispatcher, poller);
        if let Some(c) = consumer {
            let _ = c.await;
        }
        match self.store.release_dispatch(&self.owner).await {
            Ok(n) => tracing::info!(released = n, owner = %self.owner, "worker stopped"),
            Err(e) => {
                tracing::warn!(error = %e, "could not release claims; their leases will expire")
            }
        }
    }

    async fn dispatch_loop(&self, shutdown: CancellationToken) {
        let mut last_purge: Option<tokio::time::Instant> = None;
        while !shutdown.is_cancelled() {
            if last_purge.is_none_or(|t| t.elapsed() > Duration::from_secs(600)) {
                last_purge = Some(tokio::time::Instant::now());
                match self.store.purge_idempotency_keys(store::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "expired idempotency keys purged"),
                    Err(e) => tracing::warn!(error = %e, "idempotency purge failed"),
                }
            }
            let sleep = match self.dispatch_round(&shutdown).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => self.idle_sleep(Loop::Dispatch).await,
                Err(e) => {
                    tracing::warn!(error = %e, "dispatch round failed");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = self.signals.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    async fn poll_loop(&self, shutdown: CancellationToken) {
        // A job MPS just accepted may be due for its first poll before the time this loop
        // sleeps until: it looks again then.
        let mut dispatched = self.signals.dispatched.subscribe();
        while !shutdown.is_cancelled() {
            let sleep = match self.poll_round().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => self.idle_sleep(Loop::Poll).await,
                Err(e) => {
                    tracing::warn!(error = %e, "poll round failed");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = dispatched.recv() => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    /// Until the loop's next due time, within [10 ms, idle_poll_ms] (the polling fallback).
    /// Each loop sleeps until its own work is due: a poll loop woken by due dispatches would
    /// spin while a backlog waits for the submit budget.
    async fn idle_sleep(&self, which: Loop) -> Duration {
        if let Some(pause) = self.health.paused_for() {
            return pause;
        }
        let max = Duration::from_millis(self.cfg.idle_poll_ms);
        let due = self
            .store
            .next_due_each_in(self.scope.as_ref())
            .await
            .map(|d| match which {
                Loop::Dispatch => d.dispatch,
                Loop::Poll => d.poll,
            });
        match due {
            Ok(Some(due)) => until(due).clamp(Duration::from_millis(10), max),
            _ => max,
        }
    }

    /// Takes `n` tokens of the shared bucket `name`, waiting for them as long as it takes (in
    /// turn with this process's other takers of the bucket). Safe to cancel at any point.
    async fn take_budget(&self, which: Budget, n: u32) -> anyhow::Result<()> {
        let (name, qps) = &self.budgets[usize::from(which == Budget::Query)];
        let rate = f64::from(*qps);
        let burst = store::budget_burst(rate);
        let mut missing = n;
        let _turn = self.budget_turns[usize::from(which == Budget::Query)]
            .lock()
            .await;
        while missing > 0 {
            let grant = self
                .store
                .acquire_budget(name, missing, rate, burst, store::now())
                .await?;
            missing -= grant.granted;
            if missing > 0 {
                // Until the bucket holds what is missing (or a burst), at this process's pace;
                // another replica taking the tokens first only means one more look.
                let short = f64::from(missing).min(burst.floor()) - grant.left;
                let wait =
                    Duration::from_secs_f64(short.max(0.0) / rate).max(Duration::from_millis(1));
                if which == Budget::Submit {
                    // Said as soon as it is known: waiting POSTs answer now, new ones at once.
                    self.signals
                        .budget_short
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(wait).await;
            }
        }
        Ok(())
    }

    /// Exponential backoff with equal jitter: half fixed, half random.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.cfg.backoff_base_ms.max(1);
        let exp = base.saturating_mul(1u64 << attempt.min(20).saturating_sub(1));
        let capped = exp.min(self.cfg.backoff_max_ms.max(base));
        let half = capped / 2;
        Duration::from_millis(half + rand::thread_rng().gen_range(0..=half))
    }
}

fn until(t: DateTime<Utc>) -> Duration {
    (t - Utc::now()).to_std().unwrap_or(Duration::ZERO)
}

fn after(d: Duration) -> DateTime<Utc> {
    store::now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::zero())
}

/// Runs one MPS call and records it: `snapgate_mps_calls_total` by region, action and outcome
/// code (`Success` or the error's code) and `snapgate_mps_call_duration_seconds` by region and
/// action, timed
/// from the first poll of `call` to its answer.
async fn timed<T>(
    region: &str,
    action: &'static str,
    call: impl std::future::Future<Output = Result<T, crate::mps::error::MpsError>>,
) -> Result<T, crate::mps::error::MpsError> {
    let started = std::time::Instant::now();
    let result = call.await;
    let code = result
        .as_ref()
        .map(|_| "Success")
        .unwrap_or_else(|e| e.code.as_str());
    crate::metrics::mps_call(region, action, code, started);
    result
}
