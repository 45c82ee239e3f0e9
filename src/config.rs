//! Layered configuration, later wins: the defaults < `<dir>/default.toml` < `<dir>/<env>.toml`
//! < `DATABASE_URL` (and `ALIBABA_CLOUD_ACCESS_KEY_*`) < `SNAPGATE__SECTION__KEY` environment
//! variables. An empty variable counts as not set, except for the few keys whose empty text is
//! a setting (`EMPTY_IS_A_SETTING`).
//!
//! The defaults are written once: `config/default.toml`, every key commented, is compiled in
//! ([`DEFAULTS`]) as figment's base layer, and [`Settings::default`] is that file alone. No
//! struct has `#[serde(default)]`: a field the file does not set (other than an `Option`, unset
//! means `None`) fails every load, so a key cannot be added without its documented default.
//!
//! An environment variable's value stays its text, so a text key gets it verbatim (a secret
//! `0123` stays `"0123"`, with no list of which keys are text): number and boolean keys read
//! their text through figment's lossy extraction (`"8"` → 8, `"false"`/`"off"` → false), and
//! the list keys parse `["a", "b"]` ([`list`]).

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::value::Value;
use figment::Figment;
use serde::de::{DeserializeOwned, Deserializer, SeqAccess, Unexpected, Visitor};
use serde::Deserialize;

use crate::secret::Secret;

mod regions;
pub use regions::{BudgetScope, Region, RegionSettings, UploadBucket};

/// Every key with its default and its documentation: the base layer of every load.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// Environment variable that selects `config/<env>.toml` (for example `production`).
pub const ENV_VAR: &str = "SNAPGATE_ENV";
/// Environment variable that points at the configuration folder (default `./config`).
pub const CONFIG_DIR_VAR: &str = "SNAPGATE_CONFIG_DIR";
/// The access key names the official Alibaba Cloud SDKs read.
pub const ALIBABA_KEY_ID_VAR: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
pub const ALIBABA_KEY_SECRET_VAR: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
/// `SNAPGATE__MPS__MNS__QUEUE` sets `mps.mns.queue`.
const ENV_PREFIX: &str = "SNAPGATE__";

/// The keys whose empty text is itself a setting (documented as `""`: MNS off, no local store,
/// the ledger in memory): an empty `SNAPGATE__…` variable sets them to `""`. For every other key
/// an empty variable counts as not set, so the layers below apply (compose files pass
/// `${VAR:-}` through, and an empty key id must never become a key pair of empty strings).
const EMPTY_IS_A_SETTING: &[&str] = &["mps.mns.queue", "emulator.oss_dir", "emulator.state_dir"];

/// How snapgate signs its calls to MPS (`mps.signature`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureMethod {
    /// HMAC-SHA1, `SignatureVersion=1.0`: what the classic SDKs send.
    #[default]
    V1,
    /// ACS3-HMAC-SHA256 in an `Authorization` header: the new SDKs' default.
    Acs3,
}

/// MNS's own limits on one `ReceiveMessage`: at most 16 messages, a wait of at most 30 s.
pub const MNS_MAX_BATCH: u32 = 16;
pub const MNS_MAX_WAIT_S: u32 = 30;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub mps: MpsSettings,
    pub credentials: CredentialsSettings,
    /// MPS regions besides the default one (`mps.region`), by region id (`cn-beijing`).
    pub regions: std::collections::BTreeMap<String, RegionSettings>,
    pub emulator: EmbeddedEmulatorSettings,
    pub outputs: OutputsSettings,
    pub uploads: UploadsSettings,
    pub worker: WorkerSettings,
    pub idempotency: IdempotencySettings,
    pub auth: AuthSettings,
    pub limits: LimitsSettings,
    pub webhooks: WebhooksSettings,
    pub lifecycle: LifecycleSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub listen: String,
    pub request_timeout_ms: u64,
    pub body_limit_bytes: usize,
    /// How long `POST /v1/snapshot-jobs` waits for the first dispatch before answering 202 `queued`.
    pub submit_wait_ms: u64,
    /// Browser origins allowed by CORS (e.g. `https://upload.example.com`); empty: none.
    #[serde(deserialize_with = "list")]
    pub cors_origins: Vec<String>,
    /// The URL OSS reaches this gateway at (`https://snapgate.example.com`): upload intents then
    /// ask OSS for an upload callback to `<public_url>/callbacks/oss`. Unset: no callback (the
    /// browser calls `POST /v1/uploads/{id}/complete`).
    pub public_url: Option<String>,
    /// Jobs kept in memory for `GET /v1/snapshot-jobs/{id}` (`src/http/job_cache.rs`); 0: none.
    /// The name it had when only final jobs were kept is still read.
    #[serde(alias = "final_job_cache_entries")]
    pub job_cache_entries: usize,
    /// At most this many bytes of answers in that cache; an answer over an eighth of it is not
    /// kept. 0: none.
    pub job_cache_bytes: usize,
    /// How long a job that can still change is answered from memory at most; a change heard
    /// from the database (Postgres `NOTIFY`, any replica) drops it at once. 0: only final jobs.
    pub job_cache_ttl_ms: u64,
    /// A connection's request head must arrive within this long (also the keep-alive idle
    /// bound); on every listener snapgate opens.
    pub header_read_timeout_ms: u64,
    /// At most this many connections served at once per listener; more wait to be accepted.
    pub max_connections: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    pub migrate_on_start: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MpsSettings {
    pub endpoint: Option<String>,
    pub region: String,
    pub pipeline_id: Option<String>,
    pub access_key_id: Option<String>,
    pub access_key_secret: Option<Secret>,
    /// `v1` (HMAC-SHA1, what the classic SDKs send) or `acs3` (ACS3-HMAC-SHA256); any other
    /// value is a configuration error at start.
    pub signature: SignatureMethod,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// MPS's job messages through an MNS queue (polling then only as the safety net).
    pub mns: MnsSettings,
}

/// Where the Alibaba Cloud credentials come from (`[credentials]`, `src/credentials/`). The
/// official SDKs' environment variables set these keys too (see `layers`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CredentialsSettings {
    /// `auto` (the chain), `static`, `ram_role_arn`, `oidc_role_arn`, `credentials_file`,
    /// `ecs_ram_role`.
    pub provider: String,
    pub security_token: Option<String>,
    pub role_arn: Option<String>,
    pub role_session_name: String,
    pub duration_s: u64,
    pub policy: Option<String>,
    pub external_id: Option<String>,
    pub sts_endpoint: Option<String>,
    pub sts_region: Option<String>,
    pub sts_vpc: bool,
    pub oidc_provider_arn: Option<String>,
    pub oidc_token_file: Option<String>,
    pub file: Option<String>,
    pub profile: String,
    pub ecs_role_name: Option<String>,
    pub ecs_metadata_disabled: bool,
    pub imds_endpoint: String,
    pub imds_v1_disabled: bool,
    pub refresh_before_s: u64,
    pub timeout_ms: u64,
}

impl CredentialsSettings {
    /// A provider other than the static key is configured (a role, a file, ECS).
    pub fn names_a_source(&self) -> bool {
        let set = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
        self.provider != "auto"
            || (set(&self.role_arn) && set(&self.oidc_provider_arn) && set(&self.oidc_token_file))
            || set(&self.file)
            || (set(&self.ecs_role_name) && !self.ecs_metadata_disabled)
    }
}

/// The MNS queue bound to the MPS pipelines (`[mps.mns]`). Used when `queue` is set and there
/// is an endpoint: `endpoint`, or on the embedded default the built-in emulator's own queue.
/// Signed with the MPS access key.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MnsSettings {
    /// `https://<account-id>.mns.<region>.aliyuncs.com`; unset: the embedded emulator's queue
    /// (with real MPS and no endpoint, MNS is off).
    pub endpoint: Option<String>,
    /// The queue's name; empty: MNS off.
    pub queue: String,
    /// Long-poll wait of each `ReceiveMessage`, 1 to 30 s.
    pub wait_s: u32,
    /// Messages per receive, 1 to 16.
    pub batch: u32,
    /// Messages applied at once.
    pub concurrency: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedEmulatorSettings {
    pub start_ms: u64,
    pub process_ms: u64,
    /// Where the in-process emulator listens: its MPS endpoint and its local object store
    /// (`/<bucket>/<key>`), whose URLs the jobs' manifests give. A fixed port keeps those URLs
    /// valid across restarts; `127.0.0.1:0` picks a free one.
    pub listen: String,
    /// The local object store: `<oss_dir>/<bucket>/<key>` is object `<key>`; with ffmpeg on the
    /// PATH, jobs really run there. Empty: no store, jobs are simulated.
    pub oss_dir: String,
    /// The emulator's job ledger, so its jobs survive a restart of `serve`. Empty: in memory.
    pub state_dir: String,
    /// Browser origins the local object store allows (CORS for PostObject uploads and reads
    /// from a page); `"*"`: any.
    #[serde(deserialize_with = "list")]
    pub oss_cors_origins: Vec<String>,
    /// Serve the emulator's `/_emulator/*` control routes (job ledger, stats, faults, clock, MNS
    /// inject): unauthenticated, so off unless a test or benchmark asks.
    pub control_routes: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputsSettings {
    /// Output URLs on real OSS are presigned (OSS V1 query signature, with the MPS access key)
    /// for this many seconds. 0: plain `https://<bucket>.<location>.aliyuncs.com/<key>` URLs.
    pub presign_ttl_s: u64,
    /// Outputs a job's answer lists at most; the rest are paged on `/outputs`.
    pub max_listed: usize,
}

/// Browser uploads straight to OSS (`POST /v1/uploads`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UploadsSettings {
    /// The bucket browsers upload into.
    pub bucket: String,
    /// Its region id (`cn-shanghai`): the location is `oss-<region>`, the V4 scope the region.
    pub region: String,
    /// The bucket's URL the form posts to; unset: `https://<bucket>.oss-<region>.aliyuncs.com`,
    /// or on the embedded default the built-in emulator's local store.
    pub endpoint: Option<String>,
    /// Object keys are `<prefix><team>/<upload id>/<filename>`.
    pub prefix: String,
    /// An intent's policy (and the intent) expire after this long.
    pub ttl_s: u64,
    /// A browser token reads its upload and job for this long.
    pub token_ttl_s: u64,
    /// The largest `size_bytes` an intent may declare.
    pub max_size_bytes: u64,
    /// Above this `size_bytes` an intent is a multipart upload (snapgate initiates it and signs
    /// each part); at or below it, a PostObject form. At most 5 GiB (PostObject's limit).
    pub multipart_threshold_bytes: u64,
    /// Serve the demo page `/upload` and its intent endpoint (embedded default only).
    pub demo_page: bool,
    /// The OSS key that signs the forms and the `HEAD` of `complete`; unset: the MPS key (or
    /// the built-in emulator's).
    pub access_key_id: Option<String>,
    pub access_key_secret: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub enabled: bool,
    pub batch_size: u32,
    pub lease_ms: u64,
    pub idle_poll_ms: u64,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub submit_qps: u32,
    pub query_qps: u32,
    /// `region`: each MPS region has its own budgets; `account`: one shared by all regions.
    pub budget_scope: BudgetScope,
    pub status_poll_min_ms: u64,
    pub status_poll_max_ms: u64,
    pub reconcile_margin_s: u64,
    pub list_visibility_ms: u64,
    pub job_deadline_s: u64,
    pub not_found_timeout_s: u64,
    pub lookup_max_pages: u32,
    /// With MNS on: a job is first queried only this long after the time MPS is expected to
    /// take (learned), so a job whose message was lost still ends.
    pub mns_grace_s: u64,
}

/// Data lifecycle and operations (`[lifecycle]`): usage prices, redrive bounds, retention.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LifecycleSettings {
    /// The currency the prices are in (shown with each cost).
    pub currency: String,
    /// Price of one succeeded job; 0: none. Any price above 0 adds `cost` to usage.
    pub price_per_job: f64,
    pub price_per_snapshot: f64,
    pub price_per_sprite_sheet: f64,
    pub price_per_mps_call: f64,
    /// A bulk redrive makes at most this many jobs per call.
    pub redrive_max_per_call: u32,
    /// Final jobs (and their MPS responses) are purged this many days after they ended.
    pub jobs_retention_days: u32,
    /// Webhook events (with their deliveries and attempts) this many days after they were made.
    pub webhooks_retention_days: u32,
    /// Ended uploads (landed, expired, failed) this many days after they ended.
    pub uploads_retention_days: u32,
    /// Whether every replica purges in the background (one at a time).
    pub purge_enabled: bool,
    /// How often the background purge runs.
    pub purge_interval_s: u64,
    /// Rows deleted per batch (each its own short transaction).
    pub purge_batch_size: u32,
    /// Pause between two batches, so foreground work keeps the database.
    pub purge_pause_ms: u64,
    /// The share of time the purge may spend in batches, percent (1 to 100): after a batch that
    /// took `t` it pauses at least `t × (100 − duty) / duty` (10: nine times as long as the batch).
    pub purge_duty_percent: u32,
    /// Archive before delete (`[lifecycle.archive]`).
    pub archive: ArchiveSettings,
}

/// Where the purge archives rows before it deletes them (`[lifecycle.archive]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSettings {
    pub enabled: bool,
    pub bucket: String,
    /// Its region id: the V4 scope the requests are signed for.
    pub region: String,
    /// The bucket's URL; unset: `https://<bucket>.oss-<region>.aliyuncs.com`, or on the
    /// embedded default the built-in emulator's local store.
    pub endpoint: Option<String>,
    /// Object keys are `<prefix><class>/<YYYY-MM-DD>/<first row>.jsonl`.
    pub prefix: String,
    /// The OSS key that signs; unset: the MPS key (or the built-in emulator's).
    pub access_key_id: Option<String>,
    pub access_key_secret: Option<Secret>,
}

impl LifecycleSettings {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.redrive_max_per_call > 0,
            "lifecycle.redrive_max_per_call must be > 0"
        );
        anyhow::ensure!(
            self.purge_batch_size > 0,
            "lifecycle.purge_batch_size must be > 0"
        );
        anyhow::ensure!(
            (1..=100).contains(&self.purge_duty_percent),
            "lifecycle.purge_duty_percent must be 1 to 100"
        );
        for (key, days) in [
            ("jobs_retention_days", self.jobs_retention_days),
            ("webhooks_retention_days", self.webhooks_retention_days),
            ("uploads_retention_days", self.uploads_retention_days),
        ] {
            anyhow::ensure!(days > 0, "lifecycle.{key} must be > 0 (days)");
        }
        let a = &self.archive;
        anyhow::ensure!(
            !a.enabled || (!a.bucket.is_empty() && !a.prefix.starts_with('/')),
            "lifecycle.archive needs a bucket, and a prefix that does not start with /"
        );
        for (key, p) in [
            ("price_per_job", self.price_per_job),
            ("price_per_snapshot", self.price_per_snapshot),
            ("price_per_sprite_sheet", self.price_per_sprite_sheet),
            ("price_per_mps_call", self.price_per_mps_call),
        ] {
            anyhow::ensure!(p >= 0.0 && p.is_finite(), "lifecycle.{key} must be >= 0");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdempotencySettings {
    /// How long a key is honoured, in hours (fractions allowed: `0.5`); after that the same
    /// key makes a new job, and the record is purged.
    pub ttl_hours: f64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Require `Authorization: Bearer <token>` on every `/v1` route.
    pub enabled: bool,
    /// Base64 of 32 random bytes; encrypts team secrets at rest.
    pub master_key: Option<Secret>,
    /// Used when `master_key` is unset: read, or created on first use (single instance).
    pub master_key_file: String,
    /// A verified token is trusted from memory this long at most (revocations invalidate it at
    /// once where they are heard: this process, and every replica on Postgres); 0: no cache.
    pub token_cache_ms: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsSettings {
    /// Requests per second per team on `/v1` (per replica), with this burst.
    pub team_requests_per_second: u32,
    pub team_burst: u32,
    /// Jobs per team not yet final; more answer 429.
    pub team_max_active_jobs: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSettings {
    /// Run the delivery worker in this process (every replica may).
    pub enabled: bool,
    /// Seconds to wait before each retry after a failed attempt; after the last, the delivery
    /// is `failed`. The first attempt is immediate.
    #[serde(deserialize_with = "list")]
    pub schedule_s: Vec<u64>,
    /// After a rotation, the previous secret still signs (beside the new one) this long.
    pub rotation_grace_s: u64,
    /// An endpoint whose deliveries have failed (no success) for this long is disabled.
    pub disable_after_s: u64,
    /// Allow private, loopback and link-local destinations (tests, on-premises receivers).
    pub allow_private_networks: bool,
    /// Per attempt: connecting, sending and reading the answer.
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// Bytes of a response body read (and kept as the attempt's snippet); the rest is dropped.
    pub response_limit_bytes: usize,
    /// Deliveries claimed by one claim statement.
    pub batch_size: u32,
    /// Attempts in progress at once per replica.
    pub max_in_flight: usize,
    /// Attempts in progress at once per endpoint (1 or 2), across replicas.
    pub endpoint_concurrency: u32,
    /// Endpoints a team may have.
    pub max_endpoints_per_team: usize,
    /// A claimed delivery's lease; must exceed `timeout_ms`.
    pub lease_ms: u64,
    /// How often an idle delivery worker looks for due deliveries.
    pub poll_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: String,
    /// A `tracing_subscriber::EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
    /// OTLP/HTTP collector base URL (traces go to `<url>/v1/traces`, protobuf); "" = no
    /// export. Needs a build with `--features otel`.
    pub otlp_endpoint: String,
    /// `service.name` of the exported spans.
    pub otlp_service_name: String,
}

impl Default for Settings {
    /// The embedded `config/default.toml` alone (no file or variable is read).
    fn default() -> Self {
        extract(&Figment::from(Toml::string(DEFAULTS)))
            .expect("the embedded config/default.toml is a valid configuration")
    }
}

/// Each section's default is its part of [`Settings::default`].
macro_rules! section_defaults {
    ($($section:ty => $($field:ident).+;)+) => {$(
        impl Default for $section {
            fn default() -> Self {
                Settings::default().$($field).+
            }
        }
    )+};
}

section_defaults! {
    HttpSettings => http;
    DatabaseSettings => database;
    MpsSettings => mps;
    MnsSettings => mps.mns;
    EmbeddedEmulatorSettings => emulator;
    OutputsSettings => outputs;
    UploadsSettings => uploads;
    WorkerSettings => worker;
    IdempotencySettings => idempotency;
    AuthSettings => auth;
    LimitsSettings => limits;
    WebhooksSettings => webhooks;
    LogSettings => log;
    ArchiveSettings => lifecycle.archive;
}

impl Settings {
    /// Loads the configuration from the process environment (see the module docs for the layers).
    pub fn load() -> anyhow::Result<Self> {
        let dir = std::env::var(CONFIG_DIR_VAR).unwrap_or_else(|_| "config".into());
        let env = std::env::var(ENV_VAR).ok();
        Self::load_from(Path::new(&dir), env.as_deref(), std::env::vars())
    }

    /// Loads from an explicit folder, environment name and variables (tests use this).
    pub fn load_from(
        dir: &Path,
        env: Option<&str>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let settings = extract(&layers(dir, env, vars)?)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Each section's own rules; an error names the key.
    fn validate(&self) -> anyhow::Result<()> {
        self.http.validate()?;
        self.mps.validate()?;
        regions::validate(&self.mps.region, &self.regions, &self.uploads)?;
        self.emulator.validate()?;
        self.uploads.validate()?;
        self.worker.validate()?;
        self.idempotency.validate()?;
        self.limits.validate()?;
        self.webhooks.validate()?;
        self.lifecycle.validate()?;
        self.log.validate()
    }

    /// True when real MPS credentials are configured; otherwise `serve` embeds the emulator.
    pub fn has_mps_credentials(&self) -> bool {
        (self.mps.access_key_id.is_some() && self.mps.access_key_secret.is_some())
            || self.credentials.names_a_source()
    }

    /// Whether MNS is used: a queue name and an endpoint (or the embedded emulator's queue).
    pub fn mns_enabled(&self) -> bool {
        !self.mps.mns.queue.is_empty()
            && (self.mps.mns.endpoint.is_some() || !self.has_mps_credentials())
    }

    /// The MPS base URL: the explicit endpoint, or the region's public endpoint.
    pub fn mps_endpoint(&self) -> String {
        match &self.mps.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://mts.{}.aliyuncs.com", self.mps.region),
        }
    }
}

impl HttpSettings {
    /// The bounds of every listener (`crate::listener`).
    pub fn conn_limits(&self) -> crate::listener::ConnLimits {
        crate::listener::ConnLimits {
            header_read_timeout: ms(self.header_read_timeout_ms),
            max_connections: self.max_connections,
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.header_read_timeout_ms > 0,
            "http.header_read_timeout_ms must be at least 1"
        );
        anyhow::ensure!(
            self.max_connections > 0,
            "http.max_connections must be at least 1"
        );
        check_origins("http.cors_origins", &self.cors_origins)?;
        if let Some(u) = &self.public_url {
            anyhow::ensure!(
                (u.starts_with("https://") || u.starts_with("http://"))
                    && reqwest::Url::parse(u).is_ok(),
                "http.public_url must be an http(s) URL such as https://snapgate.example.com"
            );
        }
        Ok(())
    }
}

impl MpsSettings {
    fn validate(&self) -> anyhow::Result<()> {
        if let Some(p) = &self.pipeline_id {
            anyhow::ensure!(
                crate::domain::is_mps_id(p),
                "mps.pipeline_id must be 32 lower-case hex characters"
            );
        }
        anyhow::ensure!(
            self.access_key_id.is_some() == self.access_key_secret.is_some(),
            "set both the MPS access key id and secret, or neither (then the built-in emulator is used)"
        );
        self.mns.validate()
    }
}

impl MnsSettings {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=MNS_MAX_WAIT_S).contains(&self.wait_s),
            "mps.mns.wait_s must be from 1 to 30"
        );
        anyhow::ensure!(
            (1..=MNS_MAX_BATCH).contains(&self.batch),
            "mps.mns.batch must be from 1 to 16"
        );
        anyhow::ensure!(self.concurrency > 0, "mps.mns.concurrency must be > 0");
        anyhow::ensure!(
            self.queue
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "mps.mns.queue must be letters, digits and '-'"
        );
        Ok(())
    }
}

impl EmbeddedEmulatorSettings {
    fn validate(&self) -> anyhow::Result<()> {
        check_origins("emulator.oss_cors_origins", &self.oss_cors_origins)?;
        anyhow::ensure!(
            self.listen.parse::<std::net::SocketAddr>().is_ok(),
            "emulator.listen must be an address such as 127.0.0.1:8081"
        );
        Ok(())
    }
}

/// The largest object a PostObject form may carry (OSS: 5 GiB).
pub const POST_OBJECT_MAX_BYTES: u64 = 5 * 1024 * 1024 * 1024;

impl UploadsSettings {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.access_key_id.is_some() == self.access_key_secret.is_some(),
            "set both uploads.access_key_id and uploads.access_key_secret, or neither"
        );
        anyhow::ensure!(
            self.ttl_s > 0 && self.token_ttl_s > 0 && self.max_size_bytes > 0,
            "uploads.ttl_s, uploads.token_ttl_s and uploads.max_size_bytes must be > 0"
        );
        // PostObject stops at 5 GiB: anything larger must go the multipart way.
        anyhow::ensure!(
            (1..=POST_OBJECT_MAX_BYTES).contains(&self.multipart_threshold_bytes),
            "uploads.multipart_threshold_bytes must be from 1 to {POST_OBJECT_MAX_BYTES} (5 GiB, PostObject's limit)"
        );
        Ok(())
    }
}

impl WorkerSettings {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.batch_size > 0, "worker.batch_size must be > 0");
        anyhow::ensure!(self.max_attempts > 0, "worker.max_attempts must be > 0");
        anyhow::ensure!(self.submit_qps > 0, "worker.submit_qps must be > 0");
        anyhow::ensure!(self.query_qps > 0, "worker.query_qps must be > 0");
        Ok(())
    }
}

impl IdempotencySettings {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.ttl_hours.is_finite() && self.ttl_hours > 0.0,
            "idempotency.ttl_hours must be a number of hours > 0 (fractions allowed)"
        );
        Ok(())
    }
}

impl LimitsSettings {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.team_requests_per_second > 0 && self.team_burst > 0,
            "limits.team_requests_per_second and limits.team_burst must be > 0"
        );
        Ok(())
    }
}

impl WebhooksSettings {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.batch_size > 0, "webhooks.batch_size must be > 0");
        anyhow::ensure!(
            self.lease_ms > self.timeout_ms,
            "webhooks.lease_ms must exceed webhooks.timeout_ms (a lease outlives its attempt)"
        );
        Ok(())
    }
}

impl LogSettings {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            matches!(self.format.as_str(), "text" | "json"),
            "log.format must be `text` or `json`"
        );
        Ok(())
    }
}

/// The layers of the module docs, later wins.
fn layers(
    dir: &Path,
    env: Option<&str>,
    vars: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<Figment> {
    let vars: Vec<(String, String)> = vars.into_iter().collect();
    let mut figment =
        Figment::from(Toml::string(DEFAULTS)).merge(Toml::file(dir.join("default.toml")));
    if let Some(env) = env {
        let file: PathBuf = dir.join(format!("{env}.toml"));
        anyhow::ensure!(
            file.exists(),
            "{ENV_VAR}={env} but {} does not exist",
            file.display()
        );
        figment = figment.merge(Toml::file(file));
    }
    // The variables other tools read too; empty ones count as unset.
    for (var, key) in [
        ("DATABASE_URL", "database.url"),
        (ALIBABA_KEY_ID_VAR, "mps.access_key_id"),
        (ALIBABA_KEY_SECRET_VAR, "mps.access_key_secret"),
        // The credential chain's variables (credentials-go's names).
        ("ALIBABA_CLOUD_SECURITY_TOKEN", "credentials.security_token"),
        ("ALIBABA_CLOUD_ROLE_ARN", "credentials.role_arn"),
        (
            "ALIBABA_CLOUD_ROLE_SESSION_NAME",
            "credentials.role_session_name",
        ),
        (
            "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
            "credentials.oidc_provider_arn",
        ),
        (
            "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
            "credentials.oidc_token_file",
        ),
        ("ALIBABA_CLOUD_STS_ENDPOINT", "credentials.sts_endpoint"),
        ("ALIBABA_CLOUD_STS_REGION", "credentials.sts_region"),
        ("ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED", "credentials.sts_vpc"),
        ("ALIBABA_CLOUD_CREDENTIALS_FILE", "credentials.file"),
        ("ALIBABA_CLOUD_PROFILE", "credentials.profile"),
        ("ALIBABA_CLOUD_ECS_METADATA", "credentials.ecs_role_name"),
        (
            "ALIBABA_CLOUD_ECS_METADATA_DISABLED",
            "credentials.ecs_metadata_disabled",
        ),
        (
            "ALIBABA_CLOUD_IMDSV1_DISABLED",
            "credentials.imds_v1_disabled",
        ),
    ] {
        if let Some((_, value)) = vars.iter().find(|(k, v)| k == var && !v.is_empty()) {
            figment = figment.merge(EnvValue::new(var, key, value.as_str()));
        }
    }
    // `SNAPGATE__SECTION__KEY=value` sets `section.key`, as figment's
    // `Env::prefixed("SNAPGATE__").split("__")` would, but read from the given set (tests are
    // hermetic), one provider per variable (an error names it), and the value kept as its text.
    for (var, value) in &vars {
        if let Some(path) = var.strip_prefix(ENV_PREFIX) {
            let key = path.to_lowercase().replace("__", ".");
            if value.is_empty() && !EMPTY_IS_A_SETTING.contains(&key.as_str()) {
                continue;
            }
            figment = figment.merge(EnvValue::new(var, &key, value.as_str()));
        }
    }
    Ok(figment)
}

/// Figment's lossy extraction: a number or boolean key also reads text (`"8"`, `"off"`), which
/// is how environment variables set them.
fn extract(figment: &Figment) -> anyhow::Result<Settings> {
    figment.extract_lossy().map_err(|e| {
        // figment quotes serde's list of expected values once more: "expected ``v1` or
        // `acs3``"; one pair of backticks is what the list already has.
        anyhow::anyhow!("{}", e.to_string().replace("``", "`"))
            .context("invalid configuration (see config/default.toml for every key)")
    })
}

/// A list key: a list in a file, or an environment variable's text `["https://a.example"]`,
/// `[1, 2]` (parsed as figment's `Env` parses values).
fn list<'de, D: Deserializer<'de>, T: DeserializeOwned>(de: D) -> Result<Vec<T>, D::Error> {
    struct List<T>(PhantomData<T>);
    impl<'de, T: DeserializeOwned> Visitor<'de> for List<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list such as [\"a\", \"b\"] or [1, 2]")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Vec<T>, A::Error> {
            Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Vec<T>, E> {
            match text.parse::<Value>() {
                Ok(list @ Value::Array(..)) => Vec::deserialize(&list).map_err(E::custom),
                _ => Err(E::invalid_value(Unexpected::Str(text), &self)),
            }
        }
    }
    de.deserialize_seq(List(PhantomData))
}

/// One value from an environment variable, named after it, so that a bad value is reported as
/// `for key "mps.signature" in environment variable SNAPGATE__MPS__SIGNATURE` (a bare
/// `(key, value)` pair would be named after its Rust type).
struct EnvValue {
    var: String,
    key: String,
    value: figment::value::Value,
}

impl EnvValue {
    fn new(var: &str, key: &str, value: impl Into<figment::value::Value>) -> Self {
        Self {
            var: var.to_string(),
            key: key.to_string(),
            value: value.into(),
        }
    }
}

impl figment::Provider for EnvValue {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(format!("environment variable {}", self.var))
            .interpolater(|_profile, keys| keys.join("."))
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        figment::providers::Serialized::global(&self.key, &self.value).data()
    }
}

pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Each entry is an origin (`scheme://host[:port]`) or `*`.
fn check_origins(key: &str, origins: &[String]) -> anyhow::Result<()> {
    for origin in origins {
        let host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let ok = origin == "*"
            || host.is_some_and(|h| {
                !h.is_empty()
                    && !h.contains(['/', ' ', '*'])
                    && axum::http::HeaderValue::from_str(origin).is_ok()
            });
        anyhow::ensure!(
            ok,
            "{key}: {origin:?} is not an origin (scheme://host[:port], or \"*\")"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")
    }

    #[test]
    fn default_toml_documents_exactly_the_built_in_defaults() {
        let s = Settings::load_from(&config_dir(), None, Vec::new()).unwrap();
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn the_multipart_threshold_is_within_what_a_form_can_carry() {
        let load = |v: &str| {
            let var = "SNAPGATE__UPLOADS__MULTIPART_THRESHOLD_BYTES".to_string();
            Settings::load_from(&config_dir(), None, vec![(var, v.to_string())])
        };
        assert_eq!(
            Settings::default().uploads.multipart_threshold_bytes,
            100 * 1024 * 1024
        );
        assert_eq!(load("1").unwrap().uploads.multipart_threshold_bytes, 1);
        assert!(load(&POST_OBJECT_MAX_BYTES.to_string()).is_ok());
        for bad in ["0".to_string(), (POST_OBJECT_MAX_BYTES + 1).to_string()] {
            let e = load(&bad).unwrap_err().to_string();
            assert!(
                e.contains("uploads.multipart_threshold_bytes"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn no_configuration_at_all_gives_the_embedded_default() {
        let dir = tempfile::tempdir().unwrap();
        let s = Settings::load_from(dir.path(), None, Vec::new()).unwrap();
        assert_eq!(s.http.listen, "127.0.0.1:8080");
        assert!(s.database.url.starts_with("sqlite://data/"));
        assert!(!s.has_mps_credentials());
    }

    #[test]
    fn environment_overrides_files_and_database_url_is_honoured() {
        let vars = vec![
            (
                "SNAPGATE__HTTP__LISTEN".to_string(),
                "0.0.0.0:9000".to_string(),
            ),
            ("DATABASE_URL".to_string(), "postgres://x/y".to_string()),
            (
                "SNAPGATE__WORKER__MAX_ATTEMPTS".to_string(),
                "3".to_string(),
            ),
            (ALIBABA_KEY_ID_VAR.to_string(), "LTAIexample".to_string()),
            (ALIBABA_KEY_SECRET_VAR.to_string(), "s3cr3t".to_string()),
        ];
        let s = Settings::load_from(&config_dir(), None, vars).unwrap();
        assert_eq!(s.http.listen, "0.0.0.0:9000");
        assert_eq!(s.database.url, "postgres://x/y");
        assert_eq!(s.worker.max_attempts, 3);
        assert!(s.has_mps_credentials());
        assert!(!format!("{s:?}").contains("s3cr3t"));
    }

    #[test]
    fn env_values_parse_as_lists_and_numeric_looking_secrets_stay_strings() {
        let vars = vec![
            (
                "SNAPGATE__HTTP__CORS_ORIGINS".to_string(),
                "[\"https://a.example\", \"https://b.example\"]".to_string(),
            ),
            (
                "SNAPGATE__MPS__ACCESS_KEY_ID".to_string(),
                "12345".to_string(),
            ),
            (
                "SNAPGATE__MPS__ACCESS_KEY_SECRET".to_string(),
                "0123".to_string(),
            ),
        ];
        let s = Settings::load_from(&config_dir(), None, vars).unwrap();
        assert_eq!(
            s.http.cors_origins,
            vec!["https://a.example", "https://b.example"]
        );
        assert_eq!(s.mps.access_key_id.as_deref(), Some("12345"));
        assert_eq!(s.mps.access_key_secret.unwrap().expose(), "0123");
    }

    #[test]
    fn mps_signature_is_an_enum_and_an_unknown_value_is_refused() {
        let var = |v: &str| vec![("SNAPGATE__MPS__SIGNATURE".to_string(), v.to_string())];
        let s = Settings::load_from(&config_dir(), None, var("acs3")).unwrap();
        assert_eq!(s.mps.signature, SignatureMethod::Acs3);
        // Empty counts as not set: the default.
        let s = Settings::load_from(&config_dir(), None, var("")).unwrap();
        assert_eq!(s.mps.signature, SignatureMethod::V1);
        for bad in ["v2", "ACS3", "hmac-sha1", "1"] {
            let err = format!(
                "{:#}",
                Settings::load_from(&config_dir(), None, var(bad)).unwrap_err()
            );
            assert!(err.contains("signature"), "{bad}: {err}");
            assert!(
                err.contains("expected `v1` or `acs3` for key"),
                "the values, each quoted once: {bad}: {err}"
            );
            assert!(
                err.contains("\"mps.signature\" in environment variable SNAPGATE__MPS__SIGNATURE"),
                "names the key and where it came from: {err}"
            );
        }
    }

    #[test]
    fn cors_origins_are_origins_or_a_star() {
        let mut s = Settings::default();
        for good in [
            vec!["*"],
            vec!["https://app.example.com", "http://localhost:3000"],
        ] {
            s.http.cors_origins = good.iter().map(|o| o.to_string()).collect();
            assert!(s.validate().is_ok(), "{good:?}");
        }
        for bad in [
            "app.example.com",
            "https://app.example.com/path",
            "https://*.example.com",
            "https://",
            "",
        ] {
            s.http.cors_origins = vec![bad.to_string()];
            assert!(s.validate().is_err(), "{bad:?} must be refused");
        }
        // The same rule for the embedded store's CORS origins.
        s.http.cors_origins = Vec::new();
        s.emulator.oss_cors_origins = vec!["http://127.0.0.1:8080".into()];
        assert!(s.validate().is_ok());
        s.emulator.oss_cors_origins = vec!["127.0.0.1:8080".into()];
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("emulator.oss_cors_origins"), "{e}");
    }

    #[test]
    fn env_file_overrides_default_and_unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("default.toml"),
            "[http]\nlisten = \"1.2.3.4:1\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("prod.toml"),
            "[http]\nlisten = \"5.6.7.8:2\"\n",
        )
        .unwrap();
        let s = Settings::load_from(dir.path(), Some("prod"), Vec::new()).unwrap();
        assert_eq!(s.http.listen, "5.6.7.8:2");
        std::fs::write(dir.path().join("default.toml"), "[http]\nlisten_typo = 1\n").unwrap();
        assert!(Settings::load_from(dir.path(), None, Vec::new()).is_err());
        assert!(Settings::load_from(dir.path(), Some("missing"), Vec::new()).is_err());
    }

    fn with_vars(pairs: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let vars = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::load_from(&config_dir(), None, vars)
    }

    /// The text keys, read from the embedded file: those whose default is quoted text, and the
    /// optional ones whose commented example is (`# public_url = "https://…"`), also in a
    /// commented table.
    fn text_keys() -> Vec<String> {
        let mut section = "";
        let mut keys = Vec::new();
        for line in DEFAULTS.lines() {
            // A commented table (`# [regions.cn-beijing]`) is the example's section.
            let table = line.strip_prefix("# ").unwrap_or(line);
            if let Some(name) = table.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name;
            } else if let Some((key, value)) = line.trim_start_matches("# ").split_once(" = ") {
                if value.starts_with('"')
                    && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                {
                    keys.push(format!("{section}.{key}"));
                }
            }
        }
        keys
    }

    #[test]
    fn every_text_key_keeps_a_numeric_looking_value_as_its_text() {
        let keys = text_keys();
        for key in [
            "auth.master_key",
            "mps.access_key_secret",
            "http.public_url",
            "log.level",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} not found in {keys:?}");
        }
        for key in &keys {
            let var = format!("{ENV_PREFIX}{}", key.replace('.', "__").to_uppercase());
            let figment = layers(&config_dir(), None, vec![(var.clone(), "0123".into())]).unwrap();
            // Not validated: "0123" is no pipeline id or URL, but it must arrive as written.
            match extract(&figment) {
                Ok(s) => {
                    let secrets = [
                        &s.mps.access_key_secret,
                        &s.uploads.access_key_secret,
                        &s.lifecycle.archive.access_key_secret,
                        &s.auth.master_key,
                    ];
                    assert!(
                        format!("{s:?}").contains("\"0123\"")
                            || secrets
                                .iter()
                                .any(|x| x.as_ref().is_some_and(|x| x.expose() == "0123")),
                        "{var}=0123 did not arrive as the text \"0123\""
                    );
                }
                // An enum key (`mps.signature`) refuses it, quoting the text.
                Err(e) => {
                    let e = format!("{e:#}");
                    assert!(
                        e.contains("`0123`") && e.contains(key.as_str()),
                        "{var}: {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn numbers_booleans_and_lists_read_from_text_and_a_bad_value_names_its_variable() {
        let s = with_vars(&[
            ("SNAPGATE__WORKER__ENABLED", "false"),
            ("SNAPGATE__WEBHOOKS__ALLOW_PRIVATE_NETWORKS", "on"),
            ("SNAPGATE__HTTP__BODY_LIMIT_BYTES", "0123"),
            ("SNAPGATE__IDEMPOTENCY__TTL_HOURS", "0.5"),
            ("SNAPGATE__WEBHOOKS__SCHEDULE_S", "[1, 2]"),
            ("SNAPGATE__EMULATOR__OSS_CORS_ORIGINS", "[]"),
        ])
        .unwrap();
        assert!(!s.worker.enabled && s.webhooks.allow_private_networks);
        assert_eq!(s.http.body_limit_bytes, 123);
        assert_eq!(s.idempotency.ttl_hours, 0.5);
        assert_eq!(s.webhooks.schedule_s, vec![1, 2]);
        assert!(s.emulator.oss_cors_origins.is_empty());
        for (var, value, key) in [
            (
                "SNAPGATE__WORKER__MAX_ATTEMPTS",
                "many",
                "worker.max_attempts",
            ),
            ("SNAPGATE__WORKER__ENABLED", "maybe", "worker.enabled"),
            (
                "SNAPGATE__HTTP__CORS_ORIGINS",
                "https://a.example",
                "http.cors_origins",
            ),
            (
                "SNAPGATE__WEBHOOKS__SCHEDULE_S",
                "[1, soon]",
                "webhooks.schedule_s",
            ),
        ] {
            let e = format!("{:#}", with_vars(&[(var, value)]).unwrap_err());
            assert!(
                e.contains(&format!("\"{key}\" in environment variable {var}")),
                "{var}={value}: {e}"
            );
        }
    }

    #[test]
    fn each_section_default_is_its_part_of_the_embedded_file() {
        let s = Settings::default();
        assert_eq!(DatabaseSettings::default(), s.database);
        assert_eq!(MnsSettings::default(), s.mps.mns);
        assert_eq!(
            s.webhooks.schedule_s,
            [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000]
        );
        assert_eq!(s.mps.access_key_id, None, "a commented-out key is unset");
    }
}
