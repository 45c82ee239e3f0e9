//! The emulator's shared state, `EmulatorState`: the job ledger (durable with a state
//! directory), its clock, the runtime faults, the nonces and per-account QPS windows, the call counters,
//! and the hand-over of jobs to the local engine (start, resume after a restart, record the
//! outcome). The endpoints (`rpc.rs`, `control.rs`, the object routes of `oss.rs`) read and
//! change it; it knows nothing of HTTP.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRef;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::auth::Nonces;
use super::clock::Clock;
use super::config::EmulatorConfig;
use super::engine::{self, Engine, Outcome};
use super::faults::Faults;
use super::jobs::{Failure, Job, Timing};
use super::ledger::LedgerFile;
use super::mns_queue::{MnsQueue, Publish};
use super::oss::{LocalOss, OssRoutes, StoreContext};
use super::sts::{StsIssuer, StsRoutes};

/// Calls within the last second, for the per-account QPS limits.
#[derive(Default)]
pub(super) struct Window(VecDeque<Instant>);

impl Window {
    pub(super) fn admit(&mut self, qps: u32) -> bool {
        if qps == 0 {
            return true;
        }
        let now = Instant::now();
        while self
            .0
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            self.0.pop_front();
        }
        if self.0.len() as u32 >= qps {
            return false;
        }
        self.0.push_back(now);
        true
    }
}

/// What the lock guards.
pub(super) struct Inner {
    pub(super) jobs: Vec<Job>,
    pub(super) by_id: HashMap<String, usize>,
    ledger: Option<LedgerFile>,
    pub(super) faults: Faults,
    pub(super) nonces: Nonces,
    pub(super) rng: StdRng,
    pub(super) submit_window: Window,
    pub(super) query_window: Window,
    /// Calls by action and outcome code (`/_emulator/stats`).
    pub(super) calls: BTreeMap<String, BTreeMap<String, u64>>,
    /// Authenticated calls by action and signature, `v1` or `acs3` (`/_emulator/stats`).
    pub(super) signatures: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Answers held back by a slow fault, by action (`/_emulator/stats`).
    pub(super) slow: BTreeMap<String, u64>,
    /// Jobs whose end is still to be published to the MNS queue (only with one).
    notify_pending: Vec<String>,
    notify: bool,
}

impl Inner {
    pub(super) fn push(&mut self, job: Job) {
        if let Some(l) = &mut self.ledger {
            l.append(&job);
        }
        if self.notify && !job.notified {
            self.notify_pending.push(job.id.clone());
        }
        self.by_id.insert(job.id.clone(), self.jobs.len());
        self.jobs.push(job);
    }
}

pub struct EmulatorState {
    pub(super) config: EmulatorConfig,
    pub(super) timing: Timing,
    /// What jobs' ages and the MNS queue's times are measured with (`--manual-clock`).
    pub(super) clock: Clock,
    inner: Mutex<Inner>,
    /// The object routes' context: the store, keys, CORS, the callback key.
    pub(super) store: Arc<StoreContext>,
    /// The local engine, when there is a local store and ffmpeg.
    pub(super) engine: Option<Engine>,
    /// Cancelled at shutdown: engine work stops (and runs again after a restart).
    pub(crate) stop: CancellationToken,
    /// The MNS queue jobs publish their end to (`--mns-queue`).
    pub(super) mns: Option<Arc<MnsQueue>>,
    /// STS and the metadata server: the temporary credentials issued (`sts.rs`).
    pub(super) sts: Arc<StsIssuer>,
}

impl EmulatorState {
    /// The state, with the jobs of `config.state_dir` reloaded when one is set.
    pub fn new(config: EmulatorConfig) -> anyhow::Result<Self> {
        let rng = match config.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        let (ledger, jobs) = match &config.state_dir {
            Some(dir) => {
                let (l, jobs) = LedgerFile::open(dir)?;
                (Some(l), jobs)
            }
            None => (None, Vec::new()),
        };
        let by_id = jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (j.id.clone(), i))
            .collect();
        let oss = config.oss_dir.clone().map(LocalOss::new);
        let clock = Clock::new(config.manual_clock);
        let mns = config
            .mns_queue
            .clone()
            .map(|name| {
                MnsQueue::new(
                    name,
                    config.mns_visibility_ms,
                    config.state_dir.as_deref(),
                    clock.clone(),
                )
            })
            .transpose()?
            .map(Arc::new);
        let notify_pending = if mns.is_some() {
            jobs.iter()
                .filter(|j| !j.notified)
                .map(|j| j.id.clone())
                .collect()
        } else {
            Vec::new()
        };
        let engine = match &oss {
            None => {
                tracing::info!("no local object store (--oss-dir): snapshot jobs are simulated");
                None
            }
            Some(_) if !config.ffmpeg => {
                tracing::info!("the local engine is off: snapshot jobs are simulated");
                None
            }
            Some(o) if engine::available() => {
                tracing::info!(oss_dir = %o.root().display(), parallel = config.engine_jobs, "local engine on: snapshot jobs run with ffmpeg");
                Some(Engine::new(o.clone(), config.engine_jobs))
            }
            Some(_) => {
                tracing::warn!("ffmpeg and ffprobe are not on the PATH: snapshot jobs are simulated and no images are written (install Debian's ffmpeg package for real outputs)");
                None
            }
        };
        let sts = config.sts.clone().unwrap_or_else(|| {
            Arc::new(StsIssuer::new(config.sts_ttl_s, config.imds_role.clone()))
        });
        Ok(Self {
            store: Arc::new(StoreContext::new(&config, sts.clone())),
            sts,
            engine,
            stop: CancellationToken::new(),
            clock,
            timing: Timing {
                start_ms: config.start_ms,
                process_ms: config.process_ms,
            },
            inner: Mutex::new(Inner {
                jobs,
                by_id,
                ledger,
                faults: Faults::from_config(&config),
                nonces: Nonces::default(),
                rng,
                submit_window: Window::default(),
                query_window: Window::default(),
                calls: BTreeMap::new(),
                signatures: BTreeMap::new(),
                slow: BTreeMap::new(),
                notify: mns.is_some(),
                notify_pending,
            }),
            mns,
            config,
        })
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn count(&self, action: &str, outcome: &str) {
        *self
            .lock()
            .calls
            .entry(action.to_string())
            .or_default()
            .entry(outcome.to_string())
            .or_default() += 1;
    }

    /// Starts (after a restart: resumes) the local engine's work on every unfinished job. A
    /// job that needs the engine when there is none any more fails: it never hangs.
    pub(crate) fn resume(self: &Arc<Self>) {
        let pending: Vec<String> = self
            .lock()
            .jobs
            .iter()
            .filter(|j| j.engine && !j.done)
            .map(|j| j.id.clone())
            .collect();
        if !pending.is_empty() {
            tracing::info!(
                jobs = pending.len(),
                "resuming the local engine's unfinished jobs"
            );
        }
        for id in pending {
            if self.engine.is_some() {
                self.spawn_engine(id);
            } else {
                self.finish(
                    &id,
                    Outcome {
                        manifest: None,
                        failure: Some(Failure::new(
                            "InternalError",
                            "The job was started by the local engine, which is no longer available.",
                        )),
                    },
                );
            }
        }
    }

    /// Runs a job on the local engine in the background (bounded by its permits).
    pub(super) fn spawn_engine(self: &Arc<Self>, id: String) -> tokio::task::JoinHandle<()> {
        let st = self.clone();
        tokio::spawn(async move {
            let Some(engine) = st.engine.as_ref() else {
                return;
            };
            let request = {
                let inner = st.lock();
                inner
                    .by_id
                    .get(&id)
                    .and_then(|&i| inner.jobs[i].request.clone())
            };
            let request = match request {
                Some(r) => r,
                None => {
                    st.finish(
                        &id,
                        Outcome {
                            manifest: None,
                            failure: Some(Failure::new("InternalError", "The job has no request.")),
                        },
                    );
                    return;
                }
            };
            let work = async {
                let _permit = engine.permit().await;
                st.set_running(&id, true);
                tracing::debug!(job = %id, "local engine: job started");
                engine.run(&id, &request).await
            };
            let outcome = tokio::select! {
                o = work => o,
                _ = st.stop.cancelled() => {
                    st.set_running(&id, false);
                    return;
                }
            };
            st.finish(&id, outcome);
        })
    }

    fn set_running(&self, id: &str, running: bool) {
        let mut inner = self.lock();
        if let Some(&i) = inner.by_id.get(id) {
            inner.jobs[i].running = running;
        }
    }

    /// Records what the engine did, durably.
    fn finish(&self, id: &str, o: Outcome) {
        let mut inner = self.lock();
        let Some(&i) = inner.by_id.get(id) else {
            return;
        };
        let job = &mut inner.jobs[i];
        job.running = false;
        job.done = true;
        job.finished_ms = Some(self.clock.now_ms());
        job.failure = o.failure;
        let sprites = job.request.as_ref().is_some_and(|r| r.sprite.is_some());
        if let Some(m) = &o.manifest {
            job.count = m.snapshots.len() as u64;
            job.tile_count = sprites.then_some(m.sprites.len() as u64);
            tracing::info!(job = %id, count = job.count, tile_count = ?job.tile_count, "local engine: job done");
        }
        job.outputs = o.manifest;
        let job = job.clone();
        if let Some(l) = &mut inner.ledger {
            l.append(&job);
        }
    }

    /// Publishes the end of every job that ended since the last call to the MNS queue, with
    /// the MNS faults (lost, duplicated, delayed). Each job is published once (`notified`,
    /// kept in the ledger).
    pub(super) fn publish_ended(&self) {
        let Some(queue) = &self.mns else {
            return;
        };
        let now = self.clock.now_ms();
        let mut out = Vec::new();
        {
            let mut guard = self.lock();
            let inner = &mut *guard;
            if inner.notify_pending.is_empty() {
                return;
            }
            let pending = std::mem::take(&mut inner.notify_pending);
            for id in pending {
                let Some(&i) = inner.by_id.get(&id) else {
                    continue;
                };
                if inner.jobs[i].final_at_ms(now, self.timing).is_none() {
                    inner.notify_pending.push(id);
                    continue;
                }
                let f = &mut inner.faults;
                let rng = &mut inner.rng;
                let mut roll = |next: &mut u64, rate: f64| {
                    super::faults::take(next) || rng.gen_bool(rate.clamp(0.0, 1.0))
                };
                let lost = roll(&mut f.mns_lose_next, f.mns_lose_rate);
                let duplicated = !lost && roll(&mut f.mns_duplicate_next, f.mns_duplicate_rate);
                let delayed = !lost && roll(&mut f.mns_delay_next, f.mns_delay_rate);
                let delay_ms = f.mns_delay_ms;
                let job = &mut inner.jobs[i];
                job.notified = true;
                let job = job.clone();
                if let Some(l) = &mut inner.ledger {
                    l.append(&job);
                }
                let request_id = uuid::Uuid::new_v4().to_string().to_uppercase();
                let body = job
                    .to_notification(now, self.timing, &request_id)
                    .to_string();
                out.push((
                    body,
                    lost,
                    duplicated,
                    delayed.then_some(delay_ms),
                    delay_ms,
                ));
            }
        }
        for (body, lost, duplicated, delay, copy_delay) in out {
            if lost {
                queue.count_lost();
                continue;
            }
            if duplicated {
                queue.enqueue(body.clone(), copy_delay, Publish::Duplicate);
            }
            queue.enqueue(body, delay.unwrap_or(0), Publish::Job);
        }
    }

    pub(crate) fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    pub(crate) fn update_faults(
        &self,
        f: impl FnOnce(&mut Faults) -> Result<(), String>,
    ) -> Result<Faults, String> {
        let mut inner = self.lock();
        let mut next = inner.faults.clone();
        f(&mut next)?;
        inner.faults = next.clone();
        Ok(next)
    }
}

/// The object routes see only the store.
impl FromRef<Arc<EmulatorState>> for StsRoutes {
    fn from_ref(state: &Arc<EmulatorState>) -> Self {
        StsRoutes(state.sts.clone())
    }
}

impl FromRef<Arc<EmulatorState>> for OssRoutes {
    fn from_ref(state: &Arc<EmulatorState>) -> Self {
        OssRoutes(state.store.clone())
    }
}
