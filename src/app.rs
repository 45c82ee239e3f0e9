//! Wiring: [`Application::build`] opens the store, runs migrations if configured, picks the MPS
//! backend (real MPS, or the in-process emulator when no key is configured: on
//! `emulator.listen`, with its local object store in `emulator.oss_dir` and its job ledger in
//! `emulator.state_dir`, and its own MNS queue when `mps.mns` is on), the MNS client, says where
//! outputs are linked (real OSS, or that local store), starts the worker and the webhook
//! delivery worker (`webhooks.enabled`) and binds the listener.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use tokio_util::sync::CancellationToken;

use crate::clock::{ManualClock, Monotonic};
use crate::config::{ms, Region, Settings};
use crate::credentials::Credentials;
use crate::crypto::MasterKeySlot;
use crate::domain::OssObject;
use crate::emulator::{EmulatorConfig, EmulatorHandle};
use crate::http::caller::TokenCache;
use crate::http::job_cache::JobCache;
use crate::http::AppState;
use crate::mps::client::{MpsApi, MpsClient, MpsClientConfig};
use crate::mps::mns::{MnsClient, MnsClientConfig};
use crate::secret::Secret;
use crate::services::jobs::{SubmitConfig, SubmitService};
use crate::services::lifecycle::LifecycleService;
use crate::services::limits::TeamLimiter;
use crate::services::outputs::{InputProbe, Links, OutputService, Presigner};
use crate::services::presets::PresetService;
use crate::services::uploads::{UploadConfig, UploadHub, UploadService, UploadTarget};
use crate::services::webhooks::WebhookService;
use crate::signals::JobSignals;
use crate::store::{self, DynStore};
use crate::worker::archive::{ArchiveTarget, Archiver};
use crate::worker::DeliveryWorker;
use crate::worker::Worker;

pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// One job worker per MPS region, the default region's first (none: the worker is off).
    workers: Vec<Arc<Worker>>,
    /// The in-process MPS emulator, when no MPS key is configured.
    emulator: Option<EmulatorHandle>,
    /// Sends webhooks (`webhooks.enabled`).
    deliveries: Option<Arc<DeliveryWorker>>,
    /// The background retention purge (`lifecycle.purge_enabled`).
    purger: Option<Arc<crate::worker::purge::Purger>>,
    signals: JobSignals,
}

/// The per-team request rate (`limits.team_*`).
fn team_limiter(settings: &Settings) -> Arc<TeamLimiter> {
    let limits = &settings.limits;
    Arc::new(TeamLimiter::new(
        limits.team_requests_per_second,
        limits.team_burst,
    ))
}

/// Usage, pauses and redrive, and the background purge when
/// `lifecycle.purge_enabled`.
fn lifecycle_parts(
    settings: &Settings,
    store: &DynStore,
    submit: &Arc<SubmitService>,
    signals: &JobSignals,
) -> (
    Arc<LifecycleService>,
    Option<Arc<crate::worker::purge::Purger>>,
) {
    let lifecycle = Arc::new(LifecycleService::new(
        store.clone(),
        submit.clone(),
        signals.clone(),
        settings.lifecycle.clone(),
    ));
    let purger = settings.lifecycle.purge_enabled.then(|| {
        Arc::new(crate::worker::purge::Purger::new(
            store.clone(),
            settings.lifecycle.clone(),
        ))
    });
    (lifecycle, purger)
}

/// One MPS region's clients: its MPS client, and its MNS client when its queue is on.
pub struct RegionBackend {
    pub region: Region,
    pub mps: Arc<dyn MpsApi>,
    pub mns: Option<Arc<MnsClient>>,
}

/// The MPS backend `serve` uses: real MPS with the credentials of the chain
/// (`crate::credentials`), or else, with none, an in-process emulator with a random key of its
/// own; each region's clients (MPS, and MNS when its queue is on), the emulator, and the one
/// credentials handle they all sign with (OSS too). On the embedded default, a region with no
/// `endpoint` of its own is played by that emulator too.
pub async fn mps_backend(
    settings: &Settings,
) -> anyhow::Result<(Vec<RegionBackend>, Option<EmulatorHandle>, Credentials)> {
    let chain = crate::credentials::chain::resolve(settings)
        .await
        .context("Alibaba Cloud credentials ([credentials], docs/deployment.md)")?;
    let (endpoint, creds, emulator) = if let Some(creds) = chain {
        (settings.mps_endpoint(), creds, None)
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
            // Browser uploads are signed for their bucket's region: the store checks that scope.
            oss_region: Some(settings.uploads.region.clone()),
            oss_bucket_regions: settings
                .upload_buckets()
                .into_iter()
                .map(|b| (b.bucket, b.region))
                .collect(),
            oss_cors_origins: e.oss_cors_origins.clone(),
            // Its own MNS queue, bound to every pipeline, when MNS is on.
            mns_queue: settings
                .mns_enabled()
                .then(|| settings.mps.mns.queue.clone()),
            // Its listener has the API's bounds.
            conn_limits: settings.http.conn_limits(),
            // Its unauthenticated control routes only when asked for (docs/security.md).
            control_routes: e.control_routes,
            ..EmulatorConfig::default()
        };
        let handle = crate::emulator::spawn(config).await.with_context(|| {
            format!(
                "cannot start the built-in MPS emulator on {} (emulator.listen, SNAPGATE__EMULATOR__LISTEN; \"127.0.0.1:0\" picks a free port)",
                e.listen
            )
        })?;
        tracing::warn!(url = %handle.url(), oss_dir = %e.oss_dir, state_dir = %e.state_dir, "no MPS access key configured: using the built-in MPS emulator (set ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET for real MPS)");
        let creds = Credentials::key(&key_id, Secret::new(secret));
        (handle.url(), creds, Some(handle))
    };
    // Every region's clients sign with this one handle, so a refreshed token reaches them all.
    // The same credentials sign OSS requests (an Alibaba Cloud AccessKey or role reaches both;
    // the built-in emulator's store accepts its own key), unless `uploads.access_key_id` is set.
    let backends = region_backends(settings, &endpoint, emulator.as_ref(), &creds)?;
    Ok((backends, emulator, creds))
}

/// Each region's clients: the default region's MPS at `endpoint` (and MNS as `[mps.mns]` says),
/// every other region's at its own endpoint — or, on the embedded default, at the emulator
/// when it names none. All of them sign with `creds`, the chain's one handle.
fn region_backends(
    settings: &Settings,
    endpoint: &str,
    emulator: Option<&EmulatorHandle>,
    creds: &Credentials,
) -> anyhow::Result<Vec<RegionBackend>> {
    let mut backends = Vec::new();
    for region in settings.regions() {
        let own_endpoint = region.default || settings.regions[&region.id].endpoint.is_some();
        let (mps_url, mns_url) = match (emulator, region.default) {
            // The default region: as configured under [mps] and [mps.mns].
            (_, true) => (
                endpoint.to_string(),
                settings.mns_enabled().then(|| {
                    settings
                        .mps
                        .mns
                        .endpoint
                        .clone()
                        .unwrap_or_else(|| endpoint.to_string())
                }),
            ),
            // The embedded emulator plays a region that names no endpoint of its own.
            (Some(h), false) if !own_endpoint => (h.url(), region.mns_endpoint.clone()),
            _ => (region.endpoint.clone(), region.mns_endpoint.clone()),
        };
        if emulator.is_none() || own_endpoint {
            tracing::info!(region = %region.id, endpoint = %mps_url, signature = ?settings.mps.signature, "MPS endpoint");
        }
        let mns = match mns_url {
            Some(url) if !region.mns_queue.is_empty() => {
                Some(mns_client(settings, url, &region.mns_queue, creds)?)
            }
            _ => None,
        };
        let client = MpsClient::new(MpsClientConfig {
            endpoint: mps_url,
            credentials: creds.clone(),
            signature: settings.mps.signature,
            region_id: Some(region.id.clone()),
            connect_timeout: ms(settings.mps.connect_timeout_ms),
            request_timeout: ms(settings.mps.request_timeout_ms),
        })?;
        backends.push(RegionBackend {
            region,
            mps: Arc::new(client),
            mns,
        });
    }
    Ok(backends)
}

/// The static key pair of `mps.access_key_*`, if set.
fn static_key(settings: &Settings) -> Option<Credentials> {
    match (&settings.mps.access_key_id, &settings.mps.access_key_secret) {
        (Some(id), Some(secret)) => Some(Credentials::key(id, secret.clone())),
        _ => None,
    }
}

/// An MNS queue client (`mps.mns`, or a region's queue), signing with the MPS credentials.
pub fn mns_client(
    settings: &Settings,
    endpoint: String,
    queue: &str,
    creds: &Credentials,
) -> anyhow::Result<Arc<MnsClient>> {
    let m = &settings.mps.mns;
    tracing::info!(%endpoint, %queue, grace_s = settings.worker.mns_grace_s, "MPS job messages from MNS; polling only as the safety net");
    Ok(Arc::new(MnsClient::new(MnsClientConfig {
        endpoint,
        queue: queue.to_string(),
        credentials: creds.clone(),
        wait_s: m.wait_s,
        batch: m.batch,
        connect_timeout: ms(settings.mps.connect_timeout_ms),
        request_timeout: ms(settings.mps.request_timeout_ms),
    })?))
}

/// Where browser uploads go and with which key: each region's upload bucket (`uploads.*` and
/// `regions.<id>.upload_*`) at its endpoint, else the built-in emulator's store (the embedded
/// default), else real OSS; signed with `uploads.access_key_*`, else the MPS credentials.
fn upload_config(
    settings: &Settings,
    emulator: Option<&EmulatorHandle>,
    mps_key: Option<Credentials>,
) -> UploadConfig {
    let u = &settings.uploads;
    let buckets = settings
        .upload_buckets()
        .into_iter()
        .map(|b| UploadTarget {
            bucket_url: match (&b.endpoint, emulator) {
                (Some(e), _) => e.trim_end_matches('/').to_string(),
                (None, Some(h)) => format!("{}/{}", h.url(), b.bucket),
                (None, None) => format!("https://{}.oss-{}.aliyuncs.com", b.bucket, b.region),
            },
            bucket: b.bucket,
            region: b.region,
        })
        .collect();
    let creds = match (&u.access_key_id, &u.access_key_secret) {
        (Some(id), Some(secret)) => Some(Credentials::key(id, secret.clone())),
        _ => mps_key.or_else(|| static_key(settings)),
    };
    UploadConfig {
        buckets,
        prefix: u.prefix.clone(),
        ttl: chrono::Duration::seconds(u.ttl_s as i64),
        token_ttl: chrono::Duration::seconds(u.token_ttl_s as i64),
        max_size_bytes: u.max_size_bytes,
        multipart_threshold_bytes: u.multipart_threshold_bytes,
        callback_url: settings.http.public_url.as_ref().map(|p| {
            format!(
                "{}{}",
                p.trim_end_matches('/'),
                crate::services::uploads::CALLBACK_PATH
            )
        }),
        local_pub_key_url: emulator.map(|h| h.callback_pub_key_url().to_string()),
        creds,
    }
}

/// Outputs on real OSS: public URLs, presigned with the MPS credentials when
/// `outputs.presign_ttl_s` > 0.
fn oss_outputs(settings: &Settings, creds: Option<&Credentials>) -> OutputService {
    let creds = creds.cloned().or_else(|| static_key(settings));
    let presign = match (settings.outputs.presign_ttl_s, creds) {
        (ttl, Some(credentials)) if ttl > 0 => Some(Presigner {
            credentials,
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
        } else {
            store::ensure_migrated(&store).await?;
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
        let (regions, emulator, oss_key) = if settings.worker.enabled {
            let (regions, emulator, key) = mps_backend(&settings).await?;
            (regions, emulator, Some(key))
        } else {
            (Vec::new(), None, None)
        };
        let outputs = match &emulator {
            // The embedded emulator's local store: its files are the outputs.
            Some(handle) if !settings.emulator.oss_dir.is_empty() => {
                let probe: Arc<dyn InputProbe> =
                    Arc::new(LocalStoreProbe::new(&settings.emulator.oss_dir));
                OutputService::new(Links::Local { base: handle.url() }, Some(probe))
            }
            _ => oss_outputs(&settings, oss_key.as_ref()),
        };
        let local = emulator
            .as_ref()
            .zip(oss_key.as_ref())
            .map(|(h, key)| LocalStore {
                url: h.url(),
                region: settings.uploads.region.clone(),
                creds: key.clone(),
            });
        let archive = purge_archive(&settings, local, oss_key.clone())?;
        let uploads = upload_config(&settings, emulator.as_ref(), oss_key.clone());
        let demo = settings.uploads.demo_page && emulator.is_some();
        let mut app = Self::build_parts(settings, store, regions, outputs, uploads, demo)
            .await?
            .with_archive(archive);
        app.emulator = emulator;
        // A temporary credential is refreshed in the background, shown in `/readyz`.
        app.state.credentials = oss_key;
        Ok(app)
    }

    /// Builds with an explicit MPS client (tests point it at their own emulator). With `None`,
    /// no worker runs in this process. Outputs are linked on real OSS. MNS is on when
    /// `mps.mns.endpoint` and `mps.mns.queue` are set, signed with `mps.access_key_*`.
    pub async fn with_parts(
        settings: Settings,
        store: DynStore,
        mps: Option<Arc<dyn MpsApi>>,
    ) -> anyhow::Result<Self> {
        let outputs = oss_outputs(&settings, None);
        let mns = match (&settings.mps.mns.endpoint, static_key(&settings)) {
            (Some(endpoint), Some(creds))
                if mps.is_some() && !settings.mps.mns.queue.is_empty() =>
            {
                let queue = settings.mps.mns.queue.clone();
                Some(mns_client(&settings, endpoint.clone(), &queue, &creds)?)
            }
            _ => None,
        };
        Self::with_outputs(settings, store, mps, outputs, mns).await
    }

    /// Builds with an explicit MPS client, output links and (optionally) MNS client.
    pub async fn with_outputs(
        settings: Settings,
        store: DynStore,
        mps: Option<Arc<dyn MpsApi>>,
        outputs: OutputService,
        mns: Option<Arc<MnsClient>>,
    ) -> anyhow::Result<Self> {
        let uploads = upload_config(&settings, None, None);
        let regions = mps
            .map(|mps| RegionBackend {
                region: settings.regions().remove(0),
                mps,
                mns,
            })
            .into_iter()
            .collect();
        let archive = purge_archive(&settings, None, None)?;
        Ok(
            Self::build_parts(settings, store, regions, outputs, uploads, false)
                .await?
                .with_archive(archive),
        )
    }

    /// Gives the background purge its archive (built beside the store and key it writes
    /// with; before `run_until`, the purger is not shared yet).
    fn with_archive(mut self, archive: Option<Arc<Archiver>>) -> Self {
        self.purger = self.purger.map(|p| {
            let p = Arc::into_inner(p).expect("the purger is not shared before run_until");
            Arc::new(p.with_archive(archive))
        });
        self
    }

    async fn build_parts(
        settings: Settings,
        store: DynStore,
        regions: Vec<RegionBackend>,
        outputs: OutputService,
        uploads: UploadConfig,
        demo_uploads: bool,
    ) -> anyhow::Result<Self> {
        let outputs = Arc::new(outputs.with_max_listed(settings.outputs.max_listed));
        backfill_region(&store, &settings.mps.region).await;
        let listener = TcpListener::bind(&settings.http.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.http.listen))?;
        crate::metrics::handle();
        let signals = JobSignals::default();
        let workers = region_workers(&store, regions, &settings, &signals);
        let limiter = team_limiter(&settings);
        let submit = Arc::new(SubmitService::new(
            store.clone(),
            signals.clone(),
            SubmitConfig::from_settings(&settings),
            outputs.clone(),
        ));
        let (lifecycle, purger) = lifecycle_parts(&settings, &store, &submit, &signals);
        let uploads = Arc::new(UploadService::new(store.clone(), submit.clone(), uploads));
        let upload_hub = UploadHub::new(uploads.clone());
        if demo_uploads {
            crate::services::uploads::ensure_demo_preset(&store, &settings.uploads).await?;
        }
        let mps_health = workers.first().map(|w| w.health()).unwrap_or_default();
        let mps_regions = workers.iter().map(|w| w.health()).collect();
        let tokens = Arc::new(TokenCache::new(
            &store,
            std::time::Duration::from_millis(settings.auth.token_cache_ms),
        ));
        let jobs = Arc::new(JobCache::new(
            settings.http.job_cache_entries,
            settings.http.job_cache_bytes,
            std::time::Duration::from_millis(settings.http.job_cache_ttl_ms),
        ));
        if settings.http.job_cache_ttl_ms > 0 && settings.http.job_cache_entries > 0 {
            store.watch_job_changes(jobs.clone());
        }
        let master_key = Arc::new(MasterKeySlot::new(&settings.auth));
        let webhooks = Arc::new(WebhookService::new(
            store.clone(),
            settings.webhooks.clone(),
            settings.auth.clone(),
            master_key.clone(),
        ));
        let deliveries = if settings.webhooks.enabled {
            // Job events' data is rendered by the REST API's job renderer.
            let renderer = Arc::new(crate::http::webhooks::RestRenderer {
                outputs: outputs.clone(),
            });
            Some(Arc::new(DeliveryWorker::new(
                store.clone(),
                settings.webhooks.clone(),
                master_key.clone(),
                renderer,
            )?))
        } else {
            None
        };
        let state = AppState {
            presets: Arc::new(PresetService::new(store.clone(), settings.served_regions())),
            store,
            tokens,
            jobs,
            master_key,
            webhooks,
            nonce_purge: Arc::default(),
            settings: Arc::new(settings),
            submit,
            lifecycle,
            outputs,
            limiter,
            mps_health,
            mps_regions,
            counts: Arc::default(),
            uploads,
            upload_hub,
            demo_uploads,
            credentials: None,
        };
        Ok(Self {
            listener,
            state,
            workers,
            emulator: None,
            deliveries,
            purger,
            signals,
        })
    }

    /// Measures the teams' request rates on `clock` instead of the monotonic clock, so that a
    /// test decides when a bucket refills (`ManualClock::advance`), never the time it takes.
    /// Before `run_until`: the limiter is replaced, with no request counted yet.
    pub fn with_rate_clock(mut self, clock: ManualClock) -> Self {
        let limits = &self.state.settings.limits;
        self.state.limiter = Arc::new(TeamLimiter::with_clock(
            limits.team_requests_per_second,
            limits.team_burst,
            Monotonic::Manual(clock),
        ));
        self
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

    /// The default region's job worker `run_until` runs, if the worker is on: tests drive it
    /// to idle (`Worker::run_until_idle`) alongside its own loops.
    pub fn worker(&self) -> Option<Arc<Worker>> {
        self.workers.first().cloned()
    }

    /// Every region's job worker, the default region's first.
    pub fn workers(&self) -> Vec<Arc<Worker>> {
        self.workers.clone()
    }

    /// The webhook delivery worker `run_until` runs, if webhooks are on.
    pub fn deliveries(&self) -> Option<Arc<DeliveryWorker>> {
        self.deliveries.clone()
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
        let workers: Vec<_> = self
            .workers
            .iter()
            .map(|w| tokio::spawn(w.clone().run(stop_worker.clone())))
            .collect();
        let deliveries = self.deliveries.clone().map(|d| {
            let token = stop_worker.clone();
            tokio::spawn(d.run(token))
        });
        let refresher = self
            .state
            .credentials
            .clone()
            .map(|c| tokio::spawn(crate::worker::credentials::run(c, stop_worker.clone())));
        let purger = self.purger.clone().map(|p| {
            let token = stop_worker.clone();
            tokio::spawn(p.run(token))
        });
        let hub = tokio::spawn(self.state.upload_hub.clone().run(
            self.signals.clone(),
            std::time::Duration::from_secs(1),
            stop_worker.clone(),
        ));
        // On shutdown: stop taking requests, let in-flight ones finish, then stop the worker
        // (it finishes its current calls and gives back unfinished claims).
        let closing = self.state.upload_hub.closing();
        let limits = self.state.settings.http.conn_limits();
        let gate = crate::listener::Gate::new(self.listener, limits);
        crate::listener::serve(gate, router, async move {
            shutdown.await;
            // Event streams never end by themselves: end them, or the drain waits forever.
            closing.cancel();
        })
        .await;
        stop_worker.cancel();
        let _ = hub.await;
        if let Some(r) = refresher {
            let _ = r.await;
        }
        for w in workers {
            let _ = w.await;
        }
        if let Some(d) = deliveries {
            let _ = d.await;
        }
        if let Some(p) = purger {
            let _ = p.await;
        }
        if let Some(e) = self.emulator {
            e.shutdown().await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Jobs recorded before they had a region went to the one region served then: they get the
/// default region (until then, its workers claim them too).
async fn backfill_region(store: &DynStore, default: &str) {
    match store.backfill_region(default).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(jobs = n, region = %default, "jobs recorded before regions given the default region")
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not give older jobs the default region; its workers claim them anyway")
        }
    }
}

/// One job worker per region, each with the region's clients.
fn region_workers(
    store: &DynStore,
    regions: Vec<RegionBackend>,
    settings: &Settings,
    signals: &JobSignals,
) -> Vec<Arc<Worker>> {
    regions
        .into_iter()
        .map(|b| {
            let w = Worker::for_region(store.clone(), b.mps, settings, signals.clone(), &b.region);
            Arc::new(match b.mns {
                Some(client) => w.with_mns(client),
                None => w,
            })
        })
        .collect()
}

/// `ffprobe` on the embedded emulator's local object store: the outputs service's
/// [`InputProbe`] when that store is on this host. Wired here, so neither the service nor the
/// emulator knows the other.
struct LocalStoreProbe {
    oss: crate::emulator::LocalOss,
}

impl LocalStoreProbe {
    fn new(oss_dir: impl Into<std::path::PathBuf>) -> Self {
        Self {
            oss: crate::emulator::LocalOss::new(oss_dir),
        }
    }
}

#[async_trait::async_trait]
impl InputProbe for LocalStoreProbe {
    async fn duration_ms(&self, input: &OssObject) -> Option<u64> {
        let path = self.oss.object_path(&input.bucket, &input.object).ok()?;
        if !tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
            return None;
        }
        match crate::emulator::probe(&path).await {
            Ok(p) => Some(p.duration_ms),
            Err(e) => {
                tracing::debug!(error = %e, bucket = %input.bucket, key = %input.object, "cannot probe the input on the local store");
                None
            }
        }
    }
}

/// A local object store the purge may archive into: the embedded emulator's (or one started
/// for `snapgate purge`), its URL, the region it checks and its key.
pub struct LocalStore {
    pub url: String,
    pub region: String,
    pub creds: Credentials,
}

/// The purge's archive (`[lifecycle.archive]`), when it is on: the bucket at `endpoint`, else
/// in the `local` store (the embedded default), else on real OSS; signed with the archive's
/// own key, else the MPS credentials (`mps_key`, or the local store's own key).
pub fn purge_archive(
    settings: &Settings,
    local: Option<LocalStore>,
    mps_key: Option<Credentials>,
) -> anyhow::Result<Option<Arc<Archiver>>> {
    let a = &settings.lifecycle.archive;
    if !a.enabled {
        return Ok(None);
    }
    let own_key = a
        .access_key_id
        .as_ref()
        .zip(a.access_key_secret.clone())
        .map(|(id, secret)| Credentials::key(id, secret));
    let (bucket_url, region, key) = match (&a.endpoint, local) {
        (Some(e), _) => (
            e.trim_end_matches('/').to_string(),
            a.region.clone(),
            mps_key,
        ),
        (None, Some(l)) => (format!("{}/{}", l.url, a.bucket), l.region, Some(l.creds)),
        (None, None) => (
            format!("https://{}.oss-{}.aliyuncs.com", a.bucket, a.region),
            a.region.clone(),
            mps_key,
        ),
    };
    let creds = own_key.or(key).or_else(|| static_key(settings)).context(
        "lifecycle.archive is on but no OSS key signs it: set lifecycle.archive.access_key_id and \
         access_key_secret (or the MPS key)",
    )?;
    tracing::info!(%bucket_url, prefix = %a.prefix, "the purge archives before it deletes");
    Ok(Some(Arc::new(Archiver::new(ArchiveTarget {
        bucket_url,
        region,
        prefix: a.prefix.clone(),
        creds,
    })?)))
}

/// `snapgate purge`'s archive: as `serve`'s (signed with the credential chain's credentials),
/// and on the embedded default (no endpoint, no credentials) a local store of its own over `emulator.oss_dir` on a free port, with a key of its own
/// (the store is the folder: the same objects `serve`'s emulator serves). Keep the handle
/// until the purge ends.
pub async fn purge_archive_for_cli(
    settings: &Settings,
) -> anyhow::Result<(Option<Arc<Archiver>>, Option<EmulatorHandle>)> {
    let a = &settings.lifecycle.archive;
    if !a.enabled {
        return Ok((None, None));
    }
    let chain = crate::credentials::chain::resolve(settings)
        .await
        .context("Alibaba Cloud credentials ([credentials], docs/deployment.md)")?;
    if a.endpoint.is_some() || chain.is_some() {
        return Ok((purge_archive(settings, None, chain)?, None));
    }
    let dir = &settings.emulator.oss_dir;
    anyhow::ensure!(
        !dir.is_empty(),
        "lifecycle.archive is on with no endpoint and no MPS key, but emulator.oss_dir is empty"
    );
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {dir}"))?;
    let key_id = format!("arc{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let handle = crate::emulator::spawn(EmulatorConfig {
        listen: "127.0.0.1:0".parse().expect("an address"),
        access_keys: vec![(key_id.clone(), secret.clone())],
        oss_dir: Some(dir.into()),
        oss_region: Some(a.region.clone()),
        ffmpeg: false,
        ..EmulatorConfig::default()
    })
    .await
    .context("cannot start a local store for the archive")?;
    let local = LocalStore {
        url: handle.url(),
        region: a.region.clone(),
        creds: Credentials::key(&key_id, Secret::new(secret)),
    };
    Ok((purge_archive(settings, Some(local), None)?, Some(handle)))
}
