//! Wiring: [`Application::build`] opens the store, runs migrations if configured, picks the MPS
//! backend (real MPS, or the in-process emulator when no key is configured: on
//! `emulator.listen`, with its local object store in `emulator.oss_dir` and its job ledger in
//! `emulator.state_dir`), says where outputs are linked (real OSS, or that local store), starts
//! the worker and binds the listener.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use tokio_util::sync::CancellationToken;

use crate::auth::MasterKeySlot;
use crate::config::{ms, Settings};
use crate::emulator::{EmulatorConfig, EmulatorHandle};
use crate::http::auth::TokenCache;
use crate::http::job_cache::FinalJobCache;
use crate::http::AppState;
use crate::limits::TeamLimiter;
use crate::mps::client::{MpsApi, MpsClient, MpsClientConfig};
use crate::outputs::{InputProbe, Links, LocalStoreProbe, OutputService, Presigner};
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
        let e = &settings.emulator;
        let dir = |d: &str| -> anyhow::Result<Option<std::path::PathBuf>> {
            if d.is_empty() {
                return Ok(None);
            }
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {d}"))?;
            Ok(Some(d.into()))
        };
        let config = EmulatorConfig {
            listen: e.listen.parse().context("emulator.listen")?,
            access_keys: vec![(key_id.clone(), secret.clone())],
            start_ms: e.start_ms,
            process_ms: e.process_ms.max(e.start_ms),
            oss_dir: dir(&e.oss_dir).context("emulator.oss_dir")?,
            state_dir: dir(&e.state_dir).context("emulator.state_dir")?,
            ..EmulatorConfig::default()
        };
        let handle = crate::emulator::spawn(config).await.with_context(|| {
            format!(
                "cannot start the built-in MPS emulator on {} (emulator.listen, SNAPGATE__EMULATOR__LISTEN; \"127.0.0.1:0\" picks a free port)",
                e.listen
            )
        })?;
        tracing::warn!(url = %handle.url(), oss_dir = %e.oss_dir, state_dir = %e.state_dir, "no MPS access key configured: using the built-in MPS emulator (set ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET for real MPS)");
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

/// Outputs on real OSS: public URLs, presigned with the MPS key when `outputs.presign_ttl_s` > 0.
fn oss_outputs(settings: &Settings) -> OutputService {
    let presign = match (
        settings.outputs.presign_ttl_s,
        &settings.mps.access_key_id,
        &settings.mps.access_key_secret,
    ) {
        (ttl, Some(id), Some(secret)) if ttl > 0 => Some(Presigner {
            access_key_id: id.clone(),
            access_key_secret: secret.clone(),
            ttl_s: ttl,
        }),
        _ => None,
    };
    OutputService::new(Links::Oss { presign }, None)
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
        let outputs = match &emulator {
            // The embedded emulator's local store: its files are the outputs.
            Some(handle) if !settings.emulator.oss_dir.is_empty() => {
                let probe: Arc<dyn InputProbe> =
                    Arc::new(LocalStoreProbe::new(&settings.emulator.oss_dir));
                OutputService::new(Links::Local { base: handle.url() }, Some(probe))
            }
            _ => oss_outputs(&settings),
        };
        let mut app = Self::with_outputs(settings, store, mps, outputs).await?;
        app.emulator = emulator;
        Ok(app)
    }

    /// Builds with an explicit MPS client (tests point it at their own emulator). With `None`,
    /// no worker runs in this process. Outputs are linked on real OSS.
    pub async fn with_parts(
        settings: Settings,
        store: DynStore,
        mps: Option<Arc<dyn MpsApi>>,
    ) -> anyhow::Result<Self> {
        let outputs = oss_outputs(&settings);
        Self::with_outputs(settings, store, mps, outputs).await
    }

    /// Builds with an explicit MPS client and output links.
    pub async fn with_outputs(
        settings: Settings,
        store: DynStore,
        mps: Option<Arc<dyn MpsApi>>,
        outputs: OutputService,
    ) -> anyhow::Result<Self> {
        let outputs = Arc::new(outputs);
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
            outputs.clone(),
        ));
        let mps_health = worker.as_ref().map(|w| w.health()).unwrap_or_default();
        let tokens = Arc::new(TokenCache::new(
            &store,
            std::time::Duration::from_millis(settings.auth.token_cache_ms),
        ));
        let final_jobs = Arc::new(FinalJobCache::new(settings.http.final_job_cache_entries));
        let state = AppState {
            store,
            tokens,
            final_jobs,
            master_key: Arc::new(MasterKeySlot::new(&settings.auth)),
            nonce_purge: Arc::default(),
            settings: Arc::new(settings),
            submit,
            outputs,
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
