//! Wiring: [`Application::build`] opens the store, runs migrations if configured, picks the MPS
//! backend (real MPS, or the in-process emulator when no key is configured), starts the worker
//! and binds the listener.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use tokio_util::sync::CancellationToken;

use crate::auth::MasterKeySlot;
use crate::config::{ms, Settings};
use crate::emulator::{EmulatorConfig, EmulatorHandle};
use crate::http::AppState;
use crate::limits::TeamLimiter;
use crate::mps::client::{MpsApi, MpsClient, MpsClientConfig};
use crate::secret::Secret;
use crate::store::{self, DynStore};
use crate::submit::{SubmitConfig, SubmitService};
use crate::worker::{Worker, WorkerSignals};

pub struct Application {
    listener: TcpListener,
    state: AppState,
    worker: Option<Arc<Worker>>,
    /// The in-process MPS emulator, when no MPS key is configured.
    emulator: Option<EmulatorHandle>,
}

/// The MPS backend `serve` uses: real MPS with the configured key, or else an in-process
/// emulator with a random key of its own.
pub async fn mps_backend(
    settings: &Settings,
) -> anyhow::Result<(Arc<dyn MpsApi>, Option<EmulatorHandle>)> {
    let (endpoint, key_id, secret, emulator) = if settings.has_mps_credentials() {
        (
            settings.mps_endpoint(),
            settings.mps.access_key_id.clone().expect("checked"),
            settings.mps.access_key_secret.clone().expect("checked"),
            None,
        )
    } else {
        let key_id = format!("emu{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let secret = uuid::Uuid::new_v4().simple().to_string();
        let config = EmulatorConfig {
            listen: "127.0.0.1:0".parse().expect("valid"),
            access_keys: vec![(key_id.clone(), secret.clone())],
            start_ms: settings.emulator.start_ms,
            process_ms: settings.emulator.process_ms,
            ..EmulatorConfig::default()
        };
        let handle = crate::emulator::spawn(config).await?;
        tracing::warn!(url = %handle.url(), "no MPS access key configured: using the built-in MPS emulator (set ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET for real MPS)");
        (handle.url(), key_id, Secret::new(secret), Some(handle))
    };
    if emulator.is_none() {
        tracing::info!(%endpoint, signature = ?settings.mps.signature, "MPS endpoint");
    }
    let client = MpsClient::new(MpsClientConfig {
        endpoint,
        access_key_id: key_id,
        access_key_secret: secret,
        signature: settings.mps.signature,
        region_id: Some(settings.mps.region.clone()),
        connect_timeout: ms(settings.mps.connect_timeout_ms),
        request_timeout: ms(settings.mps.request_timeout_ms),
    })?;
    Ok((Arc::new(client), emulator))
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = store::connect(&settings.database).await?;
        if settings.database.migrate_on_start {
            store.migrate().await.context("running migrations")?;
        }
        if settings.auth.enabled {
            let active = store
                .list_api_keys()
                .await
                .map(|keys| keys.iter().any(|k| k.revoked_at.is_none()));
            if let Ok(false) = active {
                tracing::warn!("no API keys yet: every /v1 request will answer 401; create one with `snapgate key create --team default`");
            }
        }
        Self::with_store(settings, store).await
    }

    pub async fn with_store(settings: Settings, store: DynStore) -> anyhow::Result<Self> {
        let (mps, emulator) = if settings.worker.enabled {
            let (mps, emulator) = mps_backend(&settings).await?;
            (Some(mps), emulator)
        } else {
            (None, None)
        };
        let mut app = Self::with_parts(settings, store, mps).await?;
        app.emulator = emulator;
        Ok(app)
    }

    /// Builds with an explicit MPS client (tests point it at their own emulator). With `None`,
    /// no worker runs in this process.
    pub async fn with_parts(
        settings: Settings,
        store: DynStore,
        mps: Option<Arc<dyn MpsApi>>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(&settings.http.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.http.listen))?;
        crate::metrics::handle();
        let signals = WorkerSignals::default();
        let worker =
            mps.map(|mps| Arc::new(Worker::new(store.clone(), mps, &settings, signals.clone())));
        let limiter = Arc::new(TeamLimiter::new(
            settings.limits.team_requests_per_second,
            settings.limits.team_burst,
        ));
        let submit = Arc::new(SubmitService::new(
            store.clone(),
            signals,
            SubmitConfig::from_settings(&settings),
        ));
        let mps_health = worker.as_ref().map(|w| w.health()).unwrap_or_default();
        let state = AppState {
            store,
            master_key: Arc::new(MasterKeySlot::new(&settings.auth)),
            nonce_purge: Arc::default(),
            settings: Arc::new(settings),
            submit,
            limiter,
            mps_health,
            counts: Arc::default(),
        };
        Ok(Self {
            listener,
            state,
            worker,
            emulator: None,
        })
    }

    /// The in-process emulator's address, if one runs.
    pub fn emulator_url(&self) -> Option<String> {
        self.emulator.as_ref().map(|e| e.url())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then stops taking requests and drains.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = crate::http::router(self.state.clone());
        let addr = self.local_addr();
        tracing::info!(%addr, store = self.state.store.backend(), "listening");
        let stop_worker = CancellationToken::new();
        let worker = self.worker.clone().map(|w| {
            let token = stop_worker.clone();
            tokio::spawn(w.run(token))
        });
        // On shutdown: stop taking requests, let in-flight ones finish, then stop the worker
        // (it finishes its current calls and gives back unfinished claims).
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await?;
        stop_worker.cancel();
        if let Some(w) = worker {
            let _ = w.await;
        }
        if let Some(e) = self.emulator {
            e.shutdown().await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}
