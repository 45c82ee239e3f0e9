//! One way for every test to run snapgate in-process: [`TestApp`] starts the app on port 0 with
//! a store, settings and (optionally) an MPS client or an emulator of its own, hands out team
//! keys and an HTTP client, and stops the app through its real graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use snapgate::app::Application;
use snapgate::clock::{ManualClock, Monotonic};
use snapgate::config::Settings;
use snapgate::crypto::MasterKey;
use snapgate::emulator::{self, EmulatorConfig, EmulatorHandle};
use snapgate::http::AppState;
use snapgate::mps::client::{MpsApi, MpsClient, MpsClientConfig, SignatureMethod};
use snapgate::secret::Secret;
use snapgate::services::keys::{issue_key, IssuedKey};
use snapgate::store::DynStore;
use snapgate::worker::{DeliveryWorker, Worker};

pub const EMU_KEY_ID: &str = "testid";
pub const EMU_SECRET: &str = "testsecret";

/// The master key test apps encrypt team secrets with.
pub fn master_key() -> MasterKey {
    MasterKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([42u8; 32])).unwrap()
}

/// An emulator on port 0 accepting `testid:testsecret`, with fast job life times.
pub async fn test_emulator(tweak: impl FnOnce(&mut EmulatorConfig)) -> EmulatorHandle {
    let mut cfg = EmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        access_keys: vec![(EMU_KEY_ID.into(), EMU_SECRET.into())],
        start_ms: 50,
        process_ms: 300,
        ..EmulatorConfig::default()
    };
    tweak(&mut cfg);
    emulator::spawn(cfg).await.unwrap()
}

/// A v1-signing MPS client for an emulator at `url`.
pub fn mps_client(url: &str, secret: &str, timeout_ms: u64) -> Arc<dyn MpsApi> {
    Arc::new(
        MpsClient::new(MpsClientConfig {
            endpoint: url.to_string(),
            credentials: snapgate::credentials::Credentials::key(EMU_KEY_ID, Secret::new(secret)),
            signature: SignatureMethod::V1,
            region_id: Some("cn-shanghai".into()),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_millis(timeout_ms),
        })
        .unwrap(),
    )
}

/// Settings under which the app's webhook delivery loop, after its first (empty) round at
/// start, sleeps for a day: deliveries happen only when the test calls
/// [`TestApp::run_deliveries_until_idle`].
pub fn deliveries_by_hand(s: &mut Settings) {
    s.webhooks.poll_interval_ms = 24 * 3600 * 1000;
}

/// A running app.
pub struct TestApp {
    pub base: String,
    /// The embedded emulator's URL, when the app runs one ([`TestAppBuilder::embedded_default`],
    /// [`TestApp::from_settings`] with the worker on and no MPS key).
    pub emulator: Option<String>,
    pub http: reqwest::Client,
    pub store: DynStore,
    /// The app's state: its services (e.g. `uploads`), to drive what a background task does.
    pub state: AppState,
    /// Sent with every request made through [`TestApp::req`] when set.
    pub token: Option<String>,
    /// The app's job worker and webhook delivery worker, when it runs them.
    worker: Option<Arc<Worker>>,
    deliveries: Option<Arc<DeliveryWorker>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// What must live as long as the app (and its copies from [`TestApp::with_token`]): its
    /// database's guard, for one.
    _keep: Arc<Vec<Box<dyn std::any::Any + Send + Sync>>>,
}

pub struct TestAppBuilder {
    /// `None`: the app opens (and migrates) the store `settings.database` names.
    store: Option<DynStore>,
    settings: Settings,
    mps: Option<Arc<dyn MpsApi>>,
    /// The MPS backend the settings say, as `snapgate serve` picks it (`Application::with_store`).
    embedded: bool,
    rate_clock: Option<ManualClock>,
    cache_clock: Option<ManualClock>,
    keep: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl TestAppBuilder {
    /// The app's MPS backend chosen from the settings as `snapgate serve` chooses it: with the
    /// worker on and no MPS key, the embedded emulator (its local store and ledger in
    /// `emulator.oss_dir`/`state_dir`; its URL in [`TestApp::emulator`]).
    pub fn embedded_default(mut self) -> Self {
        self.embedded = true;
        self
    }

    /// Runs the app on `store` rather than one opened from `settings.database`.
    pub fn store(mut self, store: DynStore) -> Self {
        self.store = Some(store);
        self
    }
    /// Keeps `guard` (e.g. the [`super::PgDb`] of the app's store) until the app and every
    /// copy of it are dropped: for helpers that make the store and return only the app.
    pub fn keep(mut self, guard: impl std::any::Any + Send + Sync) -> Self {
        self.keep.push(Box::new(guard));
        self
    }

    pub fn settings(mut self, tweak: impl FnOnce(&mut Settings)) -> Self {
        tweak(&mut self.settings);
        self
    }

    /// Runs a worker in the app, talking to MPS through `mps`.
    pub fn mps(mut self, mps: Arc<dyn MpsApi>) -> Self {
        self.settings.worker.enabled = true;
        self.mps = Some(mps);
        self
    }

    /// Runs a worker in the app against `emu` (a [`test_emulator`]: `testid:testsecret`), V1
    /// signed, each call timing out after `timeout_ms`.
    pub fn emulator(self, emu: &EmulatorHandle, timeout_ms: u64) -> Self {
        self.mps(mps_client(&emu.url(), EMU_SECRET, timeout_ms))
    }

    /// A worker that keeps no test waiting: retries from 20 ms, polls from 100 ms, no
    /// upstream rate limit of its own. Settings given after it override.
    pub fn fast_worker(self) -> Self {
        self.settings(|s| {
            s.worker.backoff_base_ms = 20;
            s.worker.status_poll_min_ms = 100;
            s.worker.submit_qps = 1000;
            s.worker.query_qps = 1000;
        })
    }

    /// Measures the teams' request rates on `clock`: buckets refill only when the test
    /// advances it.
    pub fn rate_clock(mut self, clock: ManualClock) -> Self {
        self.rate_clock = Some(clock);
        self
    }

    /// Measures how long the job cache trusts a job that can still change on `clock`: an
    /// entry expires only when the test advances it.
    pub fn cache_clock(mut self, clock: ManualClock) -> Self {
        self.cache_clock = Some(clock);
        self
    }

    pub async fn start(self) -> TestApp {
        // `SNAPGATE_TEST_LOG=snapgate=debug cargo nextest run ...` shows the app's log.
        if let Ok(filter) = std::env::var("SNAPGATE_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let mut app = match (self.store, self.mps, self.embedded) {
            (None, None, _) => Application::build(self.settings).await,
            (None, Some(_), _) => panic!("an MPS client needs the app's store (`.store(..)`)"),
            (Some(store), None, true) => Application::with_store(self.settings, store).await,
            (Some(store), mps, _) => Application::with_parts(self.settings, store, mps).await,
        }
        .unwrap();
        if let Some(clock) = self.rate_clock {
            app = app.with_rate_clock(clock);
        }
        if let Some(clock) = self.cache_clock {
            let set = app.state().jobs.use_clock(Monotonic::Manual(clock));
            assert!(set, "the job cache measured time before its clock was set");
        }
        let base = format!("http://{}", app.local_addr());
        let emulator = app.emulator_url();
        let store = app.state().store.clone();
        let state = app.state().clone();
        let (worker, deliveries) = (app.worker(), app.deliveries());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // Stops on `stop()`; a TestApp merely dropped keeps serving until the test ends.
        let task = tokio::spawn(app.run_until(async move {
            if stopped.await.is_err() {
                std::future::pending::<()>().await;
            }
        }));
        TestApp {
            base,
            emulator,
            http: reqwest::Client::new(),
            store,
            state,
            token: None,
            worker,
            deliveries,
            stop: Some(stop),
            task: Some(task),
            _keep: Arc::new(self.keep),
        }
    }
}

impl TestApp {
    /// An app on `store` with the test settings (`common::test_settings`): no worker, auth off.
    pub fn builder(store: DynStore) -> TestAppBuilder {
        let mut settings = super::test_settings();
        settings.worker.enabled = false;
        settings.auth.master_key = Some(Secret::new(
            base64::engine::general_purpose::STANDARD.encode([42u8; 32]),
        ));
        TestAppBuilder {
            store: Some(store),
            settings,
            mps: None,
            embedded: false,
            rate_clock: None,
            cache_clock: None,
            keep: Vec::new(),
        }
    }

    /// An app made the product's own way (`Application::build`) from exactly `settings`: the
    /// store `settings.database` names, opened and migrated as `migrate_on_start` says, and the
    /// MPS backend the settings say (with the worker on and no MPS key, the embedded emulator).
    /// `.store(..)` runs it on a store of the test's instead (`Application::with_store`).
    pub fn from_settings(settings: Settings) -> TestAppBuilder {
        TestAppBuilder {
            store: None,
            settings,
            mps: None,
            embedded: true,
            rate_clock: None,
            cache_clock: None,
            keep: Vec::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with this app's token, if any.
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, self.url(path));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.req(reqwest::Method::GET, path).send().await.unwrap()
    }

    /// `POST /v1/snapshot-jobs` with an optional `Idempotency-Key`.
    pub async fn post_job(&self, body: &Value, key: Option<&str>) -> reqwest::Response {
        let mut r = self
            .req(reqwest::Method::POST, "/v1/snapshot-jobs")
            .json(body);
        if let Some(k) = key {
            r = r.header("Idempotency-Key", k);
        }
        r.send().await.unwrap()
    }

    /// `GET /v1/snapshot-jobs/{id}`, as JSON.
    pub async fn job(&self, id: &str) -> Value {
        self.get(&format!("/v1/snapshot-jobs/{id}"))
            .await
            .json()
            .await
            .unwrap()
    }

    /// The job once it is final (`succeeded` or `failed`), read every 50 ms; fails the test
    /// after `limit`.
    pub async fn wait_final(&self, id: &str, limit: Duration) -> Value {
        let start = std::time::Instant::now();
        loop {
            let job = self.job(id).await;
            if matches!(job["state"].as_str(), Some("succeeded" | "failed")) {
                return job;
            }
            assert!(
                start.elapsed() < limit,
                "job {id} not final after {limit:?}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Drives the app's job worker until no job has anything left to do: every job sent to MPS
    /// and final (`Worker::run_until_idle`; its own loops may take part, claims keep that
    /// exact). Fails the test after 30 s.
    pub async fn run_worker_until_idle(&self) {
        let worker = self.worker.as_ref().expect("the app runs no worker");
        worker
            .run_until_idle(Duration::from_secs(30))
            .await
            .expect("the worker goes idle");
    }

    /// Attempts every webhook delivery due now and records its outcome
    /// (`DeliveryWorker::run_until_idle`); a retry scheduled for later is not waited for.
    /// Exact with [`deliveries_by_hand`] (no background round can hold a claim meanwhile).
    pub async fn run_deliveries_until_idle(&self) {
        let deliveries = self.deliveries.as_ref().expect("the app runs no webhooks");
        deliveries
            .run_until_idle(Duration::from_secs(30))
            .await
            .expect("webhook deliveries go idle");
    }

    /// Creates `team` if needed and issues it a key (encrypted with [`master_key`]).
    pub async fn key(&self, team: &str, admin: bool) -> IssuedKey {
        self.store
            .create_team(team, snapgate::store::now())
            .await
            .unwrap();
        issue_key(&self.store, &master_key(), team, admin)
            .await
            .unwrap()
    }

    /// The same app seen with another token.
    pub fn with_token(&self, token: Option<&str>) -> TestApp {
        TestApp {
            base: self.base.clone(),
            emulator: self.emulator.clone(),
            http: self.http.clone(),
            store: self.store.clone(),
            state: self.state.clone(),
            token: token.map(str::to_string),
            worker: self.worker.clone(),
            deliveries: self.deliveries.clone(),
            stop: None,
            task: None,
            _keep: self._keep.clone(),
        }
    }

    /// Starts the graceful shutdown, as SIGTERM does, without waiting for it: the listener
    /// closes, requests in flight go on. [`TestApp::stop`] waits for the end.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Graceful shutdown, as on SIGTERM: in-flight requests finish, the worker gives back its
    /// claims. Returns what `run_until` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.begin_stop();
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

/// Every MPS job the emulator at `url` accepted, counted per gateway job id (the UserData
/// prefix), from its ledger (`/_emulator/jobs`).
pub async fn emulator_ledger(url: &str) -> std::collections::HashMap<String, usize> {
    let v: Value = reqwest::get(format!("{url}/_emulator/jobs"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut per_job = std::collections::HashMap::new();
    for j in v["jobs"].as_array().unwrap() {
        let ud = j["UserData"].as_str().unwrap_or_default();
        *per_job
            .entry(ud.chars().take(36).collect::<String>())
            .or_insert(0) += 1;
    }
    per_job
}
