//! The RPC endpoint, an adapter: parameters from the query (and a form body, read by
//! `mps::verify::collect_params`, the same as snapgate's MPS-compatible endpoint), authentication,
//! faults, then `SubmitSnapshotJob` or `QuerySnapshotJobList` on the shared state
//! (`state.rs`), answered in MPS's JSON shapes (docs/mps/API.md §1.6, §2.2) or MPS's error body (§4.2).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::auth;
use super::error::Fault;
use super::faults::take;
use super::jobs::{self, Job};
use super::state::EmulatorState;
use crate::mps::verify::collect_params;

const HOST_ID: &str = "mts.cn-shanghai.aliyuncs.com";

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

/// Set on each request: lets a handler close its connection without answering.
#[derive(Clone)]
pub(crate) struct DropConnection(pub Arc<Notify>);

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
    let params = match collect_params(uri.query(), &headers, &body) {
        Ok(p) => p,
        Err(e) => {
            let f = super::error::Fault::status(e.status, e.code, e.message);
            state.count("(unauthenticated)", f.code);
            return error_response(&f);
        }
    };
    if super::sts::is_sts_action(&params.all, &headers) {
        return sts_call(&state, method.as_str(), &headers, params, &body);
    }
    let verified = match auth::verify(
        method.as_str(),
        &headers,
        params,
        &body,
        &cfg.access_keys,
        &state.sts,
    ) {
        Ok(v) => v,
        Err(f) => {
            state.count("(unauthenticated)", f.code);
            return error_response(&f);
        }
    };
    let action = verified.action.clone();
    *state
        .lock()
        .signatures
        .entry(action.clone())
        .or_default()
        .entry(verified.signature.label())
        .or_default() += 1;
    let outcome = serve(&state, &verified, drop_conn.is_some()).await;
    match outcome {
        Ok(Answer { body, slow, drop }) => {
            if let Some(wait) = slow {
                tracing::info!(action = %action, wait_ms = wait.as_millis() as u64, "emulator: slow answer");
                *state.lock().slow.entry(action.clone()).or_default() += 1;
                // A client that stops waiting (its timeout) drops this future mid-sleep.
                let abandoned = Abandoned(Some((state.clone(), action.clone())));
                tokio::time::sleep(wait).await;
                abandoned.answered();
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

/// An STS call on the same listener (`sts.rs`): `AssumeRoleWithOIDC` is unsigned,
/// `AssumeRole` is authenticated as any call (an STS error body when refused).
fn sts_call(
    state: &EmulatorState,
    method: &str,
    headers: &HeaderMap,
    params: crate::mps::verify::Params,
    body: &[u8],
) -> Response {
    if params.all.get("Action").map(String::as_str) == Some("AssumeRoleWithOIDC") {
        state.count("AssumeRoleWithOIDC", "Success");
        return super::sts::answer(&state.sts, "AssumeRoleWithOIDC", &params.all);
    }
    match auth::verify(
        method,
        headers,
        params,
        body,
        &state.config.access_keys,
        &state.sts,
    ) {
        Ok(v) => {
            state.count("AssumeRole", "Success");
            super::sts::answer(&state.sts, "AssumeRole", &v.params)
        }
        Err(f) => {
            state.count("AssumeRole", f.code);
            error_response(&f)
        }
    }
}

/// Counts a slow answer as `Abandoned` if the client goes away before it is written.
struct Abandoned(Option<(Arc<EmulatorState>, String)>);

impl Abandoned {
    fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Some((state, action)) = self.0.take() {
            state.count(&action, "Abandoned");
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
        Kind::Submit => submit(state, &v.params, v.signature).await?,
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

async fn submit(
    state: &Arc<EmulatorState>,
    p: &BTreeMap<String, String>,
    signature: crate::mps::verify::SignatureKind,
) -> Result<Value, Fault> {
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
    if let Some(region) = &cfg.region {
        jobs::check_region(region, input, config)?;
    }
    let now = state.clock.now_ms();
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
        finished_ms: None,
        queries: 0,
        notified: false,
        signature: Some(signature.label().to_string()),
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
    // Sync mode: the image exists when MPS answers, within 5 s (docs/mps/API.md §1.4).
    if tokio::time::timeout(SYNC_TIMEOUT, task).await.is_err() {
        return Err(Fault::bad(
            "SnapshotTimeOut",
            "The snapshot took longer than the synchronous limit; use asynchronous mode (set Num or Interval).",
        ));
    }
    let inner = state.lock();
    let job = &inner.jobs[inner.by_id[&id]];
    Ok(
        json!({"RequestId": request_id(), "SnapshotJob": job.to_json(state.clock.now_ms(), state.timing)}),
    )
}

/// MPS's limit for a synchronous snapshot.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

fn parse_time(name: &str, v: Option<&String>) -> Result<Option<chrono::DateTime<Utc>>, Fault> {
    v.filter(|s| !s.is_empty())
        .map(|s| {
            crate::mps::wire::parse_time(s).ok_or_else(|| {
                Fault::bad(
                    "InvalidParameter.Format",
                    format!("The parameter \"{name}\" must be YYYY-MM-DDThh:mm:ssZ."),
                )
            })
        })
        .transpose()
}

/// MPS's paging limits for `QuerySnapshotJobList` without ids (docs/mps/API.md §2.1, PYPI-3):
/// `MaximumPageSize` in [1, 300], default 30.
pub const DEFAULT_PAGE_SIZE: usize = 30;
pub const MAX_PAGE_SIZE: usize = 300;
/// At most 10 ids in `SnapshotJobIds`.
pub const MAX_QUERY_IDS: usize = 10;

fn query(state: &EmulatorState, p: &BTreeMap<String, String>) -> Result<Value, Fault> {
    let t = state.timing;
    let now = state.clock.now_ms();
    let mut inner = state.lock();
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
            // Every query naming a job is counted on it (`Emulator.queries`).
            if let Some(&i) = inner.by_id.get(id) {
                inner.jobs[i].queries += 1;
            }
            match inner.by_id.get(id).map(|&i| &inner.jobs[i]) {
                Some(job) if job.listed(now, delay) => found.push(job.to_query_json(now, t)),
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
    // Paged listing, newest first (docs/mps/API.md §2.1).
    let from = parse_time(
        "StartOfJobCreatedTimeRange",
        p.get("StartOfJobCreatedTimeRange"),
    )?;
    let to = parse_time(
        "EndOfJobCreatedTimeRange",
        p.get("EndOfJobCreatedTimeRange"),
    )?;
    let size = page_size(p)?;
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
        .map(|(_, j)| j.to_query_json(now, t))
        .collect();
    let mut body = json!({"RequestId": request_id(), "SnapshotJobList": {"SnapshotJob": page}});
    if more {
        let last = matching[size - 1].0;
        body["NextPageToken"] = json!(format!("{last:032x}"));
    }
    Ok(body)
}

/// `MaximumPageSize`: 1 to `MAX_PAGE_SIZE`, `DEFAULT_PAGE_SIZE` without it.
fn page_size(p: &BTreeMap<String, String>) -> Result<usize, Fault> {
    Ok(match p.get("MaximumPageSize").filter(|s| !s.is_empty()) {
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
    })
}
