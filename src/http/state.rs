//! What every handler gets: one [`AppState`], passed with axum's `State`.

use std::sync::Arc;

use crate::config::Settings;
use crate::crypto::MasterKeySlot;
use crate::mps::health::MpsHealth;
use crate::services::jobs::SubmitService;
use crate::services::lifecycle::LifecycleService;
use crate::services::limits::TeamLimiter;
use crate::services::outputs::OutputService;
use crate::services::presets::PresetService;
use crate::services::uploads::{UploadHub, UploadService};
use crate::services::webhooks::WebhookService;
use crate::store::DynStore;

#[derive(Clone)]
pub struct AppState {
    pub store: DynStore,
    pub settings: Arc<Settings>,
    /// The one way a job is created.
    pub submit: Arc<SubmitService>,
    /// Where a job's outputs are (manifests, storyboards, URLs).
    pub outputs: Arc<OutputService>,
    /// Usage, team pauses, bulk redrive.
    pub lifecycle: Arc<LifecycleService>,
    /// Per-team request rate.
    pub limiter: Arc<TeamLimiter>,
    /// The gateway's access to MPS (this replica's worker's view; always fine without one).
    pub mps_health: Arc<MpsHealth>,
    /// Job counts for `/metrics`, read at most every few seconds.
    pub counts: Arc<CountsCache>,
    /// Decrypts team secrets for the MPS-compatible endpoint's signature checks.
    pub master_key: Arc<MasterKeySlot>,
    /// Preset versions' rules.
    pub presets: Arc<PresetService>,
    /// Webhook endpoints' rules (URLs, event types, secrets).
    pub webhooks: Arc<WebhookService>,
    /// When this replica last purged expired nonces (the MPS-compatible endpoint).
    pub nonce_purge: Arc<PurgeClock>,
    /// Browser uploads: intents, landings, status.
    pub uploads: Arc<UploadService>,
    /// Live upload status for event streams, from one source.
    pub upload_hub: Arc<UploadHub>,
    /// The demo page `/upload` and its intent endpoint are served (`uploads.demo_page` on the
    /// embedded default).
    pub demo_uploads: bool,
    /// The Alibaba Cloud credentials the worker and the OSS signers use, when this process
    /// resolved them (`/readyz`, `/metrics`; refreshed by `worker::credentials`).
    pub credentials: Option<crate::credentials::Credentials>,
    /// Verified bearer tokens (`auth.token_cache_ms`).
    pub tokens: Arc<super::caller::TokenCache>,
    /// Jobs for `GET /v1/snapshot-jobs/{id}` (`http.job_cache_entries`, `http.job_cache_ttl_ms`).
    pub jobs: Arc<super::job_cache::JobCache>,
}

/// Job counts for the scrape, read from the store at most every [`COUNTS_TTL`] per replica: a
/// scrape every few seconds (or many scrapers) does not count the whole table each time.
#[derive(Default)]
pub struct CountsCache(tokio::sync::Mutex<Option<(std::time::Instant, crate::store::JobCounts)>>);

pub const COUNTS_TTL: std::time::Duration = std::time::Duration::from_secs(10);

impl CountsCache {
    pub(super) async fn get(
        &self,
        store: &crate::store::DynStore,
    ) -> Option<crate::store::JobCounts> {
        let mut cached = self.0.lock().await;
        match &*cached {
            Some((at, counts)) if at.elapsed() < COUNTS_TTL => Some(counts.clone()),
            _ => match store.job_counts().await {
                Ok(counts) => {
                    *cached = Some((std::time::Instant::now(), counts.clone()));
                    Some(counts)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "job counts for /metrics failed");
                    None
                }
            },
        }
    }
}

/// When this replica last purged expired nonces (seconds since the epoch): the MPS-compatible
/// endpoint purges at most once a minute per replica.
#[derive(Debug, Default)]
pub struct PurgeClock(pub(super) std::sync::atomic::AtomicI64);
