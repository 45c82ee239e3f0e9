//! The emulator's settings: `EmulatorArgs` (the `snapgate emulator` command line) and
//! `EmulatorConfig` (what `spawn` takes, also built directly by `snapgate serve` and the tests),
//! with the checks that turn one into the other.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct EmulatorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// An accepted key pair, `ID:SECRET` (repeatable; default `testid:testsecret`).
    #[arg(long = "access-key", value_name = "ID:SECRET")]
    pub access_keys: Vec<String>,
    /// Fraction of calls answered `Throttling.User`.
    #[arg(long, default_value_t = 0.0)]
    pub throttle_rate: f64,
    /// Fraction of calls answered `ServiceUnavailable` (503).
    #[arg(long, default_value_t = 0.0)]
    pub unavailable_rate: f64,
    /// Added to every answer.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Fraction of accepted submits whose connection is closed without an answer.
    #[arg(long, default_value_t = 0.0)]
    pub drop_response_rate: f64,
    /// Time from `Submitted` to `Snapshoting`.
    #[arg(long, default_value_t = 200)]
    pub start_ms: u64,
    /// Time from `Submitted` to `Success`.
    #[arg(long, default_value_t = 1000)]
    pub process_ms: u64,
    /// Stop the clock jobs live by (and the MNS queue's): it starts at the current time and
    /// moves only on `POST /_emulator/clock` `{"advance_ms": N}` (tests reach each state
    /// exactly, without waiting).
    #[arg(long)]
    pub manual_clock: bool,
    /// Per-account submit limit per second (0: none); beyond it `Throttling.User`.
    #[arg(long, default_value_t = 0)]
    pub submit_qps: u32,
    /// Per-account query limit per second (0: none).
    #[arg(long, default_value_t = 0)]
    pub query_qps: u32,
    /// Duration assumed for every input video.
    #[arg(long, default_value_t = 60)]
    pub video_duration_s: u64,
    /// Seed for fault injection (deterministic runs).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Time after its creation before a job shows in `QuerySnapshotJobList` (by id or listing).
    #[arg(long, default_value_t = 0)]
    pub list_delay_ms: u64,
    /// Fraction of successful calls answered only after `--slow-ms`.
    #[arg(long, default_value_t = 0.0)]
    pub slow_rate: f64,
    /// How long a slow answer waits (the work, e.g. creating the job, is already done).
    #[arg(long, default_value_t = 5000)]
    pub slow_ms: u64,
    /// Keep the job ledger in this directory (`jobs.jsonl`) so jobs survive a restart.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// A local object store: `DIR/<bucket>/<key>` is object `<key>`; jobs read their input and
    /// write their outputs there (with ffmpeg), and `/<bucket>/<key>` serves it over HTTP.
    #[arg(long, value_name = "DIR")]
    pub oss_dir: Option<PathBuf>,
    /// How many jobs the local engine runs at once.
    #[arg(long, default_value_t = 2)]
    pub engine_jobs: usize,
    /// Simulate jobs even when ffmpeg is available (no images are made).
    #[arg(long)]
    pub no_ffmpeg: bool,
    /// The MPS region this emulator plays (`cn-beijing`): it then refuses buckets of any other
    /// region, as MPS does (default: every region).
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// The region V4 signatures on the local store must name (default: any, taken from the
    /// request's credential: the local store stands for every region).
    #[arg(long, value_name = "REGION")]
    pub oss_region: Option<String>,
    /// A browser origin the local store allows (CORS; repeatable; default `*`: any).
    #[arg(long = "oss-cors-origin", value_name = "ORIGIN")]
    pub oss_cors_origins: Vec<String>,
    /// An MNS queue of this name on the same listener, bound to every pipeline: each job that
    /// ends publishes MPS's job message there (MNS's queue API, MNS signatures).
    #[arg(long, value_name = "NAME")]
    pub mns_queue: Option<String>,
    /// The queue's visibility timeout: a received message not deleted comes back after it.
    #[arg(long, default_value_t = 30_000)]
    pub mns_visibility_ms: u64,
    /// Do not serve the `/_emulator/*` control routes (job ledger, stats, faults, clock, MNS
    /// inject), which take no credentials: for an emulator others can reach.
    #[arg(long)]
    pub no_control_routes: bool,
    /// Lifetime of the temporary credentials its STS and metadata server issue (seconds).
    #[arg(long, default_value_t = 3600)]
    pub sts_ttl_s: u64,
    /// The RAM role name its metadata server answers.
    #[arg(long, default_value = "snapgate-emulator-role")]
    pub imds_role: String,
}

#[derive(Clone)]
pub struct EmulatorConfig {
    pub listen: SocketAddr,
    /// Lifetime of the STS / IMDS credentials it issues (`sts.rs`).
    pub sts_ttl_s: u64,
    /// The role name of its metadata server.
    pub imds_role: String,
    /// An STS shared with other emulators (tests of several regions, each its own emulator):
    /// Alibaba Cloud's STS credentials are account-wide, valid in every region. `None`: its
    /// own, of `sts_ttl_s` and `imds_role`.
    pub sts: Option<std::sync::Arc<super::sts::StsIssuer>>,
    pub access_keys: Vec<(String, String)>,
    /// Header-read timeout and connection limit of its listener.
    pub conn_limits: crate::listener::ConnLimits,
    pub throttle_rate: f64,
    pub unavailable_rate: f64,
    pub latency_ms: u64,
    pub drop_response_rate: f64,
    pub start_ms: u64,
    pub process_ms: u64,
    /// The clock of jobs' lives and of the MNS queue stands still, moved only through
    /// `POST /_emulator/clock` (`clock.rs`); `false`: the wall clock.
    pub manual_clock: bool,
    pub submit_qps: u32,
    pub query_qps: u32,
    pub video_duration_s: u64,
    pub seed: Option<u64>,
    /// Time after its creation before a job is visible to `QuerySnapshotJobList`, by id (until
    /// then it is in `NonExistSnapshotJobIds`) and by pipeline/time window. Settable at run time
    /// through `POST /_emulator/faults`.
    pub list_delay_ms: u64,
    /// Fraction of successful calls answered only after `slow_ms`.
    pub slow_rate: f64,
    /// The wait of a slow answer (also for `slow_next_*` set through `/_emulator/faults`).
    pub slow_ms: u64,
    /// Where the job ledger is kept (`jobs.jsonl`); `None`: in memory only.
    pub state_dir: Option<PathBuf>,
    /// The local object store's root (a folder per bucket); `None`: no store, jobs simulated.
    pub oss_dir: Option<PathBuf>,
    /// Jobs the local engine runs at once.
    pub engine_jobs: usize,
    /// Use ffmpeg/ffprobe when found on the PATH (with `oss_dir`); `false`: always simulate.
    pub ffmpeg: bool,
    /// The MPS region played: buckets of another region are refused; `None`: every region.
    pub region: Option<String>,
    /// The region V4 signatures on the local store must name; `None`: the credential's own.
    pub oss_region: Option<String>,
    /// Buckets of the local store that are in another region than `oss_region`, as
    /// `(bucket, region)`: V4 signatures for such a bucket must name its region (OSS refuses a
    /// scope of another region). Set by `serve` for each region's upload bucket.
    pub oss_bucket_regions: Vec<(String, String)>,
    /// Browser origins the local store allows (CORS); `"*"`: any.
    pub oss_cors_origins: Vec<String>,
    /// The MNS queue jobs publish their end to; `None`: no queue.
    pub mns_queue: Option<String>,
    /// Its visibility timeout.
    pub mns_visibility_ms: u64,
    /// Serve the `/_emulator/*` control routes (no credentials): on for `snapgate emulator`
    /// (unless `--no-control-routes`) and tests, off for `snapgate serve` unless
    /// `emulator.control_routes`.
    pub control_routes: bool,
}

impl std::fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.access_keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("EmulatorConfig")
            .field("listen", &self.listen)
            .field("access_key_ids", &ids)
            .field("throttle_rate", &self.throttle_rate)
            .field("unavailable_rate", &self.unavailable_rate)
            .field("latency_ms", &self.latency_ms)
            .field("drop_response_rate", &self.drop_response_rate)
            .field("start_ms", &self.start_ms)
            .field("process_ms", &self.process_ms)
            .field("manual_clock", &self.manual_clock)
            .field("submit_qps", &self.submit_qps)
            .field("query_qps", &self.query_qps)
            .field("list_delay_ms", &self.list_delay_ms)
            .field("slow_rate", &self.slow_rate)
            .field("slow_ms", &self.slow_ms)
            .field("state_dir", &self.state_dir)
            .field("oss_dir", &self.oss_dir)
            .field("engine_jobs", &self.engine_jobs)
            .field("ffmpeg", &self.ffmpeg)
            .field("region", &self.region)
            .field("oss_region", &self.oss_region)
            .field("oss_bucket_regions", &self.oss_bucket_regions)
            .field("oss_cors_origins", &self.oss_cors_origins)
            .field("mns_queue", &self.mns_queue)
            .field("mns_visibility_ms", &self.mns_visibility_ms)
            .field("control_routes", &self.control_routes)
            .finish_non_exhaustive()
    }
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9090".parse().expect("valid"),
            sts_ttl_s: 3600,
            imds_role: "snapgate-emulator-role".into(),
            sts: None,
            access_keys: vec![("testid".into(), "testsecret".into())],
            conn_limits: crate::listener::ConnLimits::default(),
            throttle_rate: 0.0,
            unavailable_rate: 0.0,
            latency_ms: 0,
            drop_response_rate: 0.0,
            start_ms: 200,
            process_ms: 1000,
            manual_clock: false,
            submit_qps: 0,
            query_qps: 0,
            video_duration_s: 60,
            seed: None,
            list_delay_ms: 0,
            slow_rate: 0.0,
            slow_ms: 5000,
            state_dir: None,
            oss_dir: None,
            engine_jobs: 2,
            ffmpeg: true,
            region: None,
            oss_region: None,
            oss_bucket_regions: Vec::new(),
            oss_cors_origins: vec!["*".into()],
            mns_queue: None,
            mns_visibility_ms: 30_000,
            control_routes: true,
        }
    }
}

impl TryFrom<EmulatorArgs> for EmulatorConfig {
    type Error = anyhow::Error;

    fn try_from(a: EmulatorArgs) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        for k in &a.access_keys {
            let (id, secret) = k
                .split_once(':')
                .filter(|(i, s)| !i.is_empty() && !s.is_empty())
                .ok_or_else(|| anyhow::anyhow!("--access-key takes ID:SECRET"))?;
            keys.push((id.to_string(), secret.to_string()));
        }
        if keys.is_empty() {
            keys.push(("testid".into(), "testsecret".into()));
        }
        for (name, rate) in [
            ("--throttle-rate", a.throttle_rate),
            ("--unavailable-rate", a.unavailable_rate),
            ("--drop-response-rate", a.drop_response_rate),
            ("--slow-rate", a.slow_rate),
        ] {
            anyhow::ensure!(
                (0.0..=1.0).contains(&rate),
                "{name} must be between 0 and 1"
            );
        }
        Ok(Self {
            listen: a.listen,
            sts_ttl_s: a.sts_ttl_s.max(1),
            imds_role: a.imds_role,
            sts: None,
            access_keys: keys,
            conn_limits: crate::listener::ConnLimits::default(),
            throttle_rate: a.throttle_rate,
            unavailable_rate: a.unavailable_rate,
            latency_ms: a.latency_ms,
            drop_response_rate: a.drop_response_rate,
            start_ms: a.start_ms,
            process_ms: a.process_ms.max(a.start_ms),
            manual_clock: a.manual_clock,
            submit_qps: a.submit_qps,
            query_qps: a.query_qps,
            video_duration_s: a.video_duration_s,
            seed: a.seed,
            list_delay_ms: a.list_delay_ms,
            slow_rate: a.slow_rate,
            slow_ms: a.slow_ms,
            state_dir: a.state_dir,
            oss_dir: a.oss_dir,
            engine_jobs: a.engine_jobs.max(1),
            ffmpeg: !a.no_ffmpeg,
            region: a.region.filter(|r| !r.is_empty()),
            oss_region: a.oss_region.filter(|r| !r.is_empty()),
            oss_bucket_regions: Vec::new(),
            oss_cors_origins: if a.oss_cors_origins.is_empty() {
                vec!["*".into()]
            } else {
                a.oss_cors_origins
            },
            mns_queue: a.mns_queue.filter(|q| !q.is_empty()),
            mns_visibility_ms: a.mns_visibility_ms.max(1),
            control_routes: !a.no_control_routes,
        })
    }
}
