//! The RPC endpoint: parameters from the query (and a form body), authentication, faults, then
//! `SubmitSnapshotJob` or `QuerySnapshotJobList`, answered in MPS's JSON shapes (API.md §1.6,
//! §2.2) or MPS's error body (§4.2).

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
use super::jobs::{self, Job};
use super::{DropConnection, EmulatorConfig};

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
    nonces: Nonces,
    rng: StdRng,
    submit_window: Window,
    query_window: Window,
    calls: BTreeMap<String, BTreeMap<String, u64>>,
}

pub struct EmulatorState {
    config: EmulatorConfig,
    inner: Mutex<Inner>,
}

impl EmulatorState {
    pub fn new(config: EmulatorConfig) -> Self {
        let rng = match config.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        Self {
            config,
            inner: Mutex::new(Inner {
                jobs: Vec::new(),
                by_id: HashMap::new(),
                nonces: Nonces::default(),
                rng,
                submit_window: Window::default(),
                query_window: Window::default(),
                calls: BTreeMap::new(),
            }),
        }
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
        Ok(Answer::Json(v)) => {
            state.count(&action, "Success");
            Json(v).into_response()
        }
        Ok(Answer::Drop) => {
            state.count(&action, "Dropped");
            if let Some(Extension(DropConnection(kill))) = drop_conn {
                kill.notify_one();
            }
            // The connection is being closed; this answer is never written.
            std::future::pending::<Response>().await
        }
        Err(f) => {
            state.count(&action, f.code);
            error_response(&f)
        }
    }
}

enum Answer {
    Json(Value),
    Drop,
}

async fn serve(state: &EmulatorState, v: &auth::Verified, can_drop: bool) -> Result<Answer, Fault> {
    let cfg = &state.config;
    let (throttled, unavailable, drop) = {
        let mut inner = state.lock();
        if !inner.nonces.insert(&v.nonce) {
            return Err(Fault::bad(
                "SignatureNonceUsed",
                "Specified signature nonce was used already.",
            ));
        }
        let admitted = match v.action.as_str() {
            "SubmitSnapshotJob" => inner.submit_window.admit(cfg.submit_qps),
            "QuerySnapshotJobList" => inner.query_window.admit(cfg.query_qps),
            _ => true,
        };
        let throttled = !admitted || inner.rng.gen_bool(cfg.throttle_rate.clamp(0.0, 1.0));
        let unavailable = inner.rng.gen_bool(cfg.unavailable_rate.clamp(0.0, 1.0));
        let drop = can_drop && inner.rng.gen_bool(cfg.drop_response_rate.clamp(0.0, 1.0));
        (throttled, unavailable, drop)
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
    match v.action.as_str() {
        "SubmitSnapshotJob" => {
            let answer = submit(state, &v.params)?;
            Ok(if drop {
                Answer::Drop
            } else {
                Answer::Json(answer)
            })
        }
        "QuerySnapshotJobList" => query(state, &v.params).map(Answer::Json),
        other => Err(Fault::status(
            404,
            "InvalidAction.NotFound",
            format!("Specified api is not found, please check your url and method: {other}"),
        )),
    }
}

fn submit(state: &EmulatorState, p: &BTreeMap<String, String>) -> Result<Value, Fault> {
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
    let job = Job {
        id: uuid::Uuid::new_v4().simple().to_string(),
        created: Instant::now(),
        creation_time: Utc::now(),
        pipeline_id: pipeline,
        user_data,
        input: new.input,
        config: new.config,
        sync: new.sync,
        count: new.count,
        tile_count: new.tile_count,
        failure: new.failure,
    };
    let body = json!({"RequestId": request_id(), "SnapshotJob": job.to_json(cfg.start_ms, cfg.process_ms)});
    let mut inner = state.lock();
    let idx = inner.jobs.len();
    inner.by_id.insert(job.id.clone(), idx);
    inner.jobs.push(job);
    Ok(body)
}

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

fn query(state: &EmulatorState, p: &BTreeMap<String, String>) -> Result<Value, Fault> {
    let cfg = &state.config;
    let inner = state.lock();
    if let Some(ids) = p.get("SnapshotJobIds").filter(|s| !s.is_empty()) {
        let ids: Vec<&str> = ids
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if ids.len() > 10 {
            return Err(Fault::bad(
                "InvalidParameter.OutOfRange",
                "SnapshotJobIds takes at most 10 ids.",
            ));
        }
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for id in ids {
            match inner.by_id.get(id) {
                Some(&i) => found.push(inner.jobs[i].to_json(cfg.start_ms, cfg.process_ms)),
                None => missing.push(id.to_string()),
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
    let size = match p.get("MaximumPageSize") {
        None => 30,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=300).contains(&n) => n,
            _ => {
                return Err(Fault::bad(
                    "InvalidParameter.OutOfRange",
                    "MaximumPageSize must be 1 to 300.",
                ))
            }
        },
    };
    let offset = match p.get("NextPageToken").filter(|s| !s.is_empty()) {
        None => 0,
        Some(t) => usize::from_str_radix(t, 16)
            .ok()
            .filter(|_| t.len() == 32)
            .ok_or_else(|| Fault::bad("InvalidParameter.Format", "NextPageToken is invalid."))?,
    };
    let pipeline = p.get("PipelineId").filter(|s| !s.is_empty());
    let state_filter = p.get("State").filter(|s| !s.is_empty());
    let matching: Vec<Value> = inner
        .jobs
        .iter()
        .rev()
        .filter(|j| pipeline.is_none_or(|pl| &j.pipeline_id == pl))
        .filter(|j| from.is_none_or(|f| j.creation_time.timestamp() >= f.timestamp()))
        .filter(|j| to.is_none_or(|t| j.creation_time.timestamp() <= t.timestamp()))
        .filter(|j| state_filter.is_none_or(|s| j.state(cfg.start_ms, cfg.process_ms) == s))
        .skip(offset)
        .take(size + 1)
        .map(|j| j.to_json(cfg.start_ms, cfg.process_ms))
        .collect();
    let more = matching.len() > size;
    let page: Vec<Value> = matching.into_iter().take(size).collect();
    let mut body = json!({"RequestId": request_id(), "SnapshotJobList": {"SnapshotJob": page}});
    if more {
        body["NextPageToken"] = json!(format!("{:032x}", offset + size));
    }
    Ok(body)
}

/// `GET /_emulator/jobs`: every job accepted (also those whose answer was dropped).
pub async fn list_ledger(State(state): State<Arc<EmulatorState>>) -> Json<Value> {
    let cfg = &state.config;
    let inner = state.lock();
    let jobs: Vec<Value> = inner
        .jobs
        .iter()
        .map(|j| j.to_json(cfg.start_ms, cfg.process_ms))
        .collect();
    Json(json!({ "jobs": jobs }))
}

/// `GET /_emulator/stats`: calls by action and outcome code.
pub async fn stats(State(state): State<Arc<EmulatorState>>) -> Json<Value> {
    let inner = state.lock();
    Json(json!({ "calls": inner.calls, "jobs": inner.jobs.len() }))
}
