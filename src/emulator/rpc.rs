//! The RPC endpoint: parameters from the query (and a form body), authentication, faults, then
//! `SubmitSnapshotJob` or `QuerySnapshotJobList`, answered in MPS's JSON shapes (API.md §1.6,
//! §2.2) or MPS's error body (§4.2). Also the emulator's shared state: the job ledger (durable
//! with a state directory), the runtime faults, and the hand-over of jobs to the local engine.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{NaiveDateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::auth::{self, Nonces};
use super::engine::{self, Engine, Outcome};
use super::faults::{take, Faults};
use super::jobs::Failure;
use super::jobs::{self, Job, Timing};
use super::ledger::LedgerFile;
use super::oss::LocalOss;
use super::{DropConnection, EmulatorConfig};
use tokio_util::sync::CancellationToken;

const HOST_ID: &str = "mts.cn-shanghai.aliyuncs.com";

/// An MPS error answer.
#[derive(Debug)]
pub struct Fault {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Fault {
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::status(400, code, message)
    }

    pub fn status(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string().to_uppercase()
}

fn error_response(f: &Fault) -> Response {
    let rid = request_id();
    let body = json!({
        "RequestId": rid,
        "HostId": HOST_ID,
        "Code": f.code,
        "Message": f.message,
        "Recommend": format!("https://api.aliyun.com/troubleshoot?q={}&product=Mts&requestId={rid}", f.code),
    });
    (
        StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_REQUEST),
        Json(body),
    )
        .into_response()
}

/// Calls within the last second, for the per-account QPS limits.
#[derive(Default)]
struct Window(VecDeque<Instant>);

impl Window {
    fn admit(&mut self, qps: u32) -> bool {
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

struct Inner {
    jobs: Vec<Job>,
    by_id: HashMap<String, usize>,
    ledger: Option<LedgerFile>,
    faults: Faults,
    nonces: Nonces,
    rng: StdRng,
    submit_window: Window,
    query_window: Window,
    calls: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Inner {
    fn push(&mut self, job: Job) {
        if let Some(l) = &mut self.ledger {
            l.append(&job);
        }
        self.by_id.insert(job.id.clone(), self.jobs.len());
        self.jobs.push(job);
    }
}

pub struct EmulatorState {
    config: EmulatorConfig,
    timing: Timing,
    inner: Mutex<Inner>,
    oss: Option<LocalOss>,
    /// The local engine, when there is a local store and ffmpeg.
    engine: Option<Engine>,
    /// Cancelled at shutdown: engine work stops (and runs again after a restart).
    pub(crate) stop: CancellationToken,
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
        Ok(Self {
            oss,
            engine,
            stop: CancellationToken::new(),
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
            }),
            config,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, action: &str, outcome: &str) {
        *self
            .lock()
            .calls
            .entry(action.to_string())
            .or_default()
            .entry(outcome.to_string())
            .or_default() += 1;
    }

    pub(crate) fn oss(&self) -> Option<&LocalOss> {
        self.oss.as_ref()
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
    fn spawn_engine(self: &Arc<Self>, id: String) -> tokio::task::JoinHandle<()> {
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

fn collect_params(
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> BTreeMap<String, String> {
    // Form decoding: the Tea SDK sends spaces as '+', the legacy SDK as %20; both mean a space.
    let mut params: BTreeMap<String, String> =
        form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let is_form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        params.extend(form_urlencoded::parse(body).into_owned());
    }
    params
}

pub async fn handle(
    State(state): State<Arc<EmulatorState>>,
    drop_conn: Option<Extension<DropConnection>>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cfg = &state.config;
    if cfg.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(cfg.latency_ms)).await;
    }
    let params = collect_params(uri.query(), &headers, &body);
    let verified = match auth::verify(method.as_str(), &headers, params, &body, &cfg.access_keys) {
        Ok(v) => v,
        Err(f) => {
            state.count("(unauthenticated)", f.code);
            return error_response(&f);
        }
    };
    let action = verified.action.clone();
    let outcome = serve(&state, &verified, drop_conn.is_some()).await;
    match outcome {
        Ok(Answer { body, slow, drop }) => {
            if let Some(wait) = slow {
                tracing::info!(action = %action, wait_ms = wait.as_millis() as u64, "emulator: slow answer");
                tokio::time::sleep(wait).await;
            }
            if drop {
                state.count(&action, "Dropped");
                if let Some(Extension(DropConnection(kill))) = drop_conn {
                    kill.notify_one();
                }
                // The connection is being closed; this answer is never written.
                return std::future::pending::<Response>().await;
            }
            state.count(&action, "Success");
            Json(body).into_response()
        }
        Err(f) => {
            state.count(&action, f.code);
            error_response(&f)
        }
    }
}

/// A successful answer, and how it is delivered.
struct Answer {
    body: Value,
    /// Answer only after this long.
    slow: Option<Duration>,
    /// Close the connection instead of answering.
    drop: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Submit,
    Query,
    Other,
}

async fn serve(
    state: &Arc<EmulatorState>,
    v: &auth::Verified,
    can_drop: bool,
) -> Result<Answer, Fault> {
    let cfg = &state.config;
    let kind = match v.action.as_str() {
        "SubmitSnapshotJob" => Kind::Submit,
        "QuerySnapshotJobList" => Kind::Query,
        _ => Kind::Other,
    };
    let (throttled, unavailable, random_drop) = {
        let mut inner = state.lock();
        if !inner.nonces.insert(&v.nonce) {
            return Err(Fault::bad(
                "SignatureNonceUsed",
                "Specified signature nonce was used already.",
            ));
        }
        let admitted = match kind {
            Kind::Submit => inner.submit_window.admit(cfg.submit_qps),
            Kind::Query => inner.query_window.admit(cfg.query_qps),
            Kind::Other => true,
        };
        let mut throttled = !admitted || inner.rng.gen_bool(cfg.throttle_rate.clamp(0.0, 1.0));
        let mut unavailable = inner.rng.gen_bool(cfg.unavailable_rate.clamp(0.0, 1.0));
        let random_drop = can_drop && inner.rng.gen_bool(cfg.drop_response_rate.clamp(0.0, 1.0));
        let f = &mut inner.faults;
        match kind {
            Kind::Submit if !throttled && !unavailable => {
                throttled = take(&mut f.throttle_next_submits);
                unavailable = !throttled && take(&mut f.unavailable_next_submits);
            }
            Kind::Query if !throttled && !unavailable => {
                throttled = take(&mut f.throttle_next_queries);
                unavailable = !throttled && take(&mut f.unavailable_next_queries);
            }
            _ => {}
        }
        (throttled, unavailable, random_drop)
    };
    if throttled {
        return Err(Fault::bad(
            "Throttling.User",
            "Request was denied due to user flow control.",
        ));
    }
    if unavailable {
        return Err(Fault::status(
            503,
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server.",
        ));
    }
    let body = match kind {
        Kind::Submit => submit(state, &v.params).await?,
        Kind::Query => query(state, &v.params)?,
        Kind::Other => {
            return Err(Fault::status(
                404,
                "InvalidAction.NotFound",
                format!(
                    "Specified api is not found, please check your url and method: {}",
                    v.action
                ),
            ))
        }
    };
    // The work is done (a submit's job exists): now decide how the answer travels.
    let mut inner = state.lock();
    let random_slow = {
        let rate = inner.faults.slow_rate.clamp(0.0, 1.0);
        inner.rng.gen_bool(rate)
    };
    let f = &mut inner.faults;
    let slow = random_slow
        || match kind {
            Kind::Submit => take(&mut f.slow_next_submits),
            Kind::Query => take(&mut f.slow_next_queries),
            Kind::Other => false,
        };
    let drop = kind == Kind::Submit && can_drop && (take(&mut f.drop_next_submits) || random_drop);
    Ok(Answer {
        body,
        slow: slow.then(|| Duration::from_millis(f.slow_ms)),
        drop,
    })
}

async fn submit(state: &Arc<EmulatorState>, p: &BTreeMap<String, String>) -> Result<Value, Fault> {
    let cfg = &state.config;
    let input = p.get("Input").ok_or_else(|| Fault::bad("MissingParameter", "The input parameter \"Input\" that is mandatory for processing this request is not supplied."))?;
    let config = p.get("SnapshotConfig").ok_or_else(|| Fault::bad("MissingParameter", "The input parameter \"SnapshotConfig\" that is mandatory for processing this request is not supplied."))?;
    let pipeline = p.get("PipelineId").cloned().unwrap_or_default();
    if !pipeline.is_empty() && !crate::domain::is_mps_id(&pipeline) {
        return Err(Fault::bad(
            "InvalidParameter.UUIDFormatInvalid",
            "The PipelineId must be 32 characters of [a-f0-9].",
        ));
    }
    let user_data = p.get("UserData").cloned().unwrap_or_default();
    if user_data.len() > 1024 {
        return Err(Fault::bad(
            "InvalidParameter.OutOfRange",
            "UserData must be at most 1024 bytes.",
        ));
    }
    let new = jobs::check_submit(input, config, cfg.video_duration_s)?;
    let now = jobs::now_ms();
    let real = state.engine.is_some();
    let job = Job {
        id: uuid::Uuid::new_v4().simple().to_string(),
        created_ms: now,
        pipeline_id: pipeline,
        user_data,
        input: new.input,
        config: new.config,
        sync: new.sync,
        count: if real { 0 } else { new.count },
        tile_count: if real {
            new.tile_count.map(|_| 0)
        } else {
            new.tile_count
        },
        failure: if real { None } else { new.failure },
        outputs: (!real).then_some(new.simulated),
        request: Some(new.request),
        engine: real,
        done: false,
        running: false,
    };
    let id = job.id.clone();
    let sync = job.sync;
    let body = json!({"RequestId": request_id(), "SnapshotJob": job.to_json(now, state.timing)});
    state.lock().push(job);
    if !real {
        return Ok(body);
    }
    let task = state.spawn_engine(id.clone());
    if !sync {
        return Ok(body);
    }
    // Sync mode: the image exists when MPS answers, within 5 s (API.md §1.4).
    if tokio::time::timeout(SYNC_TIMEOUT, task).await.is_err() {
        return Err(Fault::bad(
            "SnapshotTimeOut",
            "The snapshot took longer than the synchronous limit; use asynchronous mode (set Num or Interval).",
        ));
    }
    let inner = state.lock();
    let job = &inner.jobs[inner.by_id[&id]];
    Ok(json!({"RequestId": request_id(), "SnapshotJob": job.to_json(jobs::now_ms(), state.timing)}))
}

/// MPS's limit for a synchronous snapshot.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

fn parse_time(name: &str, v: Option<&String>) -> Result<Option<chrono::DateTime<Utc>>, Fault> {
    v.filter(|s| !s.is_empty())
        .map(|s| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ")
                .map(|t| t.and_utc())
                .map_err(|_| {
                    Fault::bad(
                        "InvalidParameter.Format",
                        format!("The parameter \"{name}\" must be YYYY-MM-DDThh:mm:ssZ."),
                    )
                })
        })
        .transpose()
}

/// MPS's paging limits for `QuerySnapshotJobList` without ids (API.md §2.1, PYPI-3):
/// `MaximumPageSize` in [1, 300], default 30.
pub const DEFAULT_PAGE_SIZE: usize = 30;
pub const MAX_PAGE_SIZE: usize = 300;
/// At most 10 ids in `SnapshotJobIds`.
pub const MAX_QUERY_IDS: usize = 10;

fn query(state: &EmulatorState, p: &BTreeMap<String, String>) -> Result<Value, Fault> {
    let t = state.timing;
    let now = jobs::now_ms();
    let inner = state.lock();
    let delay = inner.faults.list_delay_ms;
    if let Some(ids) = p.get("SnapshotJobIds").filter(|s| !s.is_empty()) {
        let ids: Vec<&str> = ids
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if ids.len() > MAX_QUERY_IDS {
            return Err(Fault::bad(
                "InvalidParameter.OutOfRange",
                "SnapshotJobIds takes at most 10 ids.",
            ));
        }
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for id in ids {
            match inner.by_id.get(id).map(|&i| &inner.jobs[i]) {
                Some(job) if job.listed(now, delay) => found.push(with_outputs(job, now, t)),
                // Not (yet) visible to queries: MPS reports it as unknown.
                _ => missing.push(id.to_string()),
            }
        }
        let mut body =
            json!({"RequestId": request_id(), "SnapshotJobList": {"SnapshotJob": found}});
        if !missing.is_empty() {
            body["NonExistSnapshotJobIds"] = json!({"String": missing});
        }
        return Ok(body);
    }
    // Paged listing, newest first (API.md §2.1).
    let from = parse_time(
        "StartOfJobCreatedTimeRange",
        p.get("StartOfJobCreatedTimeRange"),
    )?;
    let to = parse_time(
        "EndOfJobCreatedTimeRange",
        p.get("EndOfJobCreatedTimeRange"),
    )?;
    let size = match p.get("MaximumPageSize").filter(|s| !s.is_empty()) {
        None => DEFAULT_PAGE_SIZE,
        Some(s) => match s.trim().parse::<i64>() {
            Ok(n) if (1..=MAX_PAGE_SIZE as i64).contains(&n) => n as usize,
            Ok(_) => {
                return Err(Fault::bad(
                    "InvalidParameter.OutOfRange",
                    format!(
                        "The parameter \"MaximumPageSize\" is out of range [1, {MAX_PAGE_SIZE}]."
                    ),
                ))
            }
            Err(_) => {
                return Err(Fault::bad(
                    "InvalidParameter.NumberFormatInvalid",
                    "The parameter \"MaximumPageSize\" is not a valid number.",
                ))
            }
        },
    };
    // The token is a cursor: the ledger position to continue below. Jobs created meanwhile sit
    // above it, so a listing in progress neither repeats nor skips a job.
    let before = match p.get("NextPageToken").filter(|s| !s.is_empty()) {
        None => inner.jobs.len(),
        Some(tok) => usize::from_str_radix(tok, 16)
            .ok()
            .filter(|c| tok.len() == 32 && *c <= inner.jobs.len())
            .ok_or_else(|| Fault::bad("InvalidParameter.Format", "NextPageToken is invalid."))?,
    };
    let pipeline = p.get("PipelineId").filter(|s| !s.is_empty());
    let state_filter = p.get("State").filter(|s| !s.is_empty());
    let matching: Vec<(usize, &Job)> = inner.jobs[..before]
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, j)| j.listed(now, delay))
        .filter(|(_, j)| pipeline.is_none_or(|pl| &j.pipeline_id == pl))
        .filter(|(_, j)| from.is_none_or(|f| j.creation_time().timestamp() >= f.timestamp()))
        .filter(|(_, j)| to.is_none_or(|t| j.creation_time().timestamp() <= t.timestamp()))
        .filter(|(_, j)| state_filter.is_none_or(|s| j.state(now, t) == s))
        .take(size + 1)
        .collect();
    let more = matching.len() > size;
    let page: Vec<Value> = matching
        .iter()
        .take(size)
        .map(|(_, j)| with_outputs(j, now, t))
        .collect();
    let mut body = json!({"RequestId": request_id(), "SnapshotJobList": {"SnapshotJob": page}});
    if more {
        let last = matching[size - 1].0;
        body["NextPageToken"] = json!(format!("{last:032x}"));
    }
    Ok(body)
}

/// `GET /_emulator/jobs`: every job accepted (also those whose answer was dropped, and those
/// not yet listed), oldest first.
pub async fn list_ledger(State(state): State<Arc<EmulatorState>>) -> Json<Value> {
    let now = jobs::now_ms();
    let inner = state.lock();
    let jobs: Vec<Value> = inner
        .jobs
        .iter()
        .map(|j| {
            let mut v = j.to_json(now, state.timing);
            v["Emulator"] = emulator_view(j);
            v
        })
        .collect();
    Json(json!({ "jobs": jobs }))
}

/// A `SnapshotJob` as queries answer it: MPS's fields, plus the emulator's own `Emulator`
/// object (how the job is made and its output manifest) once the job is final. Real MPS has no
/// such field; clients ignore it, and snapgate keeps it with the response, so a job run by the
/// local engine reports its real outputs (times, keys, sizes) and a simulated one says so.
fn with_outputs(j: &Job, now_ms: i64, t: Timing) -> Value {
    let mut v = j.to_json(now_ms, t);
    if matches!(v["State"].as_str(), Some("Success" | "Fail")) {
        v["Emulator"] = emulator_view(j);
    }
    v
}

/// What the emulator knows beyond MPS's fields: how the job is made and its output manifest.
fn emulator_view(j: &Job) -> Value {
    json!({
        "engine": if j.engine { "ffmpeg" } else { "simulated" },
        "outputs": j.outputs,
    })
}

/// `GET /_emulator/jobs/{id}`: one job, MPS's fields plus `Emulator` (its output manifest).
pub async fn get_ledger_job(
    State(state): State<Arc<EmulatorState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let inner = state.lock();
    match inner.by_id.get(&id).map(|&i| &inner.jobs[i]) {
        Some(j) => {
            let mut v = j.to_json(jobs::now_ms(), state.timing);
            v["Emulator"] = emulator_view(j);
            Json(v).into_response()
        }
        None => (StatusCode::NOT_FOUND, Json(json!({"error": "no such job"}))).into_response(),
    }
}

/// `GET /_emulator/stats`: calls by action and outcome code.
pub async fn stats(State(state): State<Arc<EmulatorState>>) -> Json<Value> {
    let inner = state.lock();
    Json(json!({ "calls": inner.calls, "jobs": inner.jobs.len() }))
}
