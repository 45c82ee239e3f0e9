//! The MPS-compatible endpoint: MPS's own RPC protocol (`SubmitSnapshotJob`,
//! `QuerySnapshotJobList`, docs/mps/API.md §1 to §4) on the API's listener at `/`, the path the official
//! SDKs call, so that a team's existing MPS code only changes its endpoint and key pair.
//!
//! An adapter like `http/jobs.rs::create_job`: it parses the transport (query or form
//! parameters, a v1 or ACS3 signature: `auth.rs`; MPS's parameter shapes: `params.rs`), calls
//! [`crate::services::jobs::SubmitService::submit`] — where every rule of accepting a job lives — or reads
//! the store, and renders MPS's JSON shapes (`render.rs`) or MPS's error body ([`RpcError`]).
//! A query never calls MPS: the worker's stored answers are the source. The ids a team gets are
//! snapgate's job ids (UUIDs), the same ones `GET /v1/snapshot-jobs/{id}` takes.
//!
//! Not in the OpenAPI document (it is MPS's protocol, documented by MPS and in the README).

mod auth;
mod error;
mod params;
mod render;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

pub use error::{RpcError, VERSION};
pub use params::submit_body;

use super::AppState;
use crate::domain::{JobId, JobState};
use crate::services::jobs::SubmitError;
use crate::store::PipelineJobFilter;

/// `SnapshotJobIds` takes at most this many ids (docs/mps/API.md §2.1).
pub const MAX_QUERY_IDS: usize = 10;
/// `MaximumPageSize`: default and range (docs/mps/API.md §2.1, PYPI-3).
const DEFAULT_PAGE_SIZE: u32 = 30;
const MAX_PAGE_SIZE: u32 = 300;
/// `GET /` and `POST /`: one MPS RPC call.
pub async fn mps_rpc(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("snapgate")
        .to_string();
    match serve(&state, &method, &uri, &headers, &body, &request_id).await {
        Ok(mut answer) => {
            answer["RequestId"] = json!(request_id);
            Json(answer).into_response()
        }
        Err(e) => {
            metrics::counter!("snapgate_mps_rpc_errors_total", "code" => e.code()).increment(1);
            e.into_response(&request_id, &host)
        }
    }
}

async fn serve(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    request_id: &str,
) -> Result<Value, RpcError> {
    let call = auth::authenticate(state, method, uri, headers, body).await?;
    let span = tracing::Span::current();
    span.record("team", call.team.as_str());
    tracing::debug!(action = %call.action, access_key_id = %call.access_key_id, request_id, "MPS RPC call");
    match call.action.as_str() {
        "SubmitSnapshotJob" if dry_run(headers)? => {
            preview_snapshot_job(state, &call.team, headers, &call.params).await
        }
        "SubmitSnapshotJob" => submit_snapshot_job(state, &call.team, &call.params).await,
        "QuerySnapshotJobList" => query_snapshot_job_list(state, &call.team, &call.params).await,
        other => Err(RpcError::UnknownAction(other.chars().take(64).collect())),
    }
}

/// The gateway's default pipeline: jobs that name none go there.
fn default_pipeline(state: &AppState) -> Option<&str> {
    state.settings.mps.pipeline_id.as_deref()
}

/// `x-snapgate-dry-run: true` on `SubmitSnapshotJob`: the REST API's dry run for SDK code (set
/// it as a custom header of the SDK's request); nothing is recorded or sent.
const DRY_RUN_HEADER: &str = "x-snapgate-dry-run";
/// The input's duration for the dry run's prediction, in ms (REST: `duration_ms`).
const DURATION_HEADER: &str = "x-snapgate-duration-ms";

fn dry_run(headers: &HeaderMap) -> Result<bool, RpcError> {
    match headers
        .get(DRY_RUN_HEADER)
        .map(|v| v.to_str().unwrap_or(""))
    {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(RpcError::invalid(
            "InvalidParameter",
            format!("{DRY_RUN_HEADER}: must be true or false"),
        )),
    }
}

/// The dry run: `DryRun` holds what `POST /v1/snapshot-jobs?dry_run=true` answers (the MPS
/// parameters that would be sent, predicted times and outputs, warnings).
async fn preview_snapshot_job(
    state: &AppState,
    team: &str,
    headers: &HeaderMap,
    p: &BTreeMap<String, String>,
) -> Result<Value, RpcError> {
    let duration_ms = match headers.get(DURATION_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|d| *d <= crate::domain::rules::DURATION_MS.max)
                .ok_or_else(|| {
                    RpcError::invalid(
                        "InvalidParameter",
                        format!("{DURATION_HEADER}: must be the input's duration in ms, an integer >= 0"),
                    )
                })?,
        ),
    };
    let body = params::submit_body(p)?;
    let preview = state
        .submit
        .preview(team, &body, duration_ms)
        .await
        .map_err(submit_error)?;
    let resource = super::views::DryRunResource::new(preview, &state.outputs);
    Ok(json!({ "DryRun": resource }))
}

fn submit_error(e: SubmitError) -> RpcError {
    match e {
        SubmitError::Invalid(violations) => params::invalid(&violations),
        SubmitError::QuotaExceeded { limit } => RpcError::Throttled {
            retry_after: Duration::from_secs(5),
            message: format!("this team already has {limit} jobs in flight"),
        },
        SubmitError::TeamPaused => RpcError::Throttled {
            retry_after: Duration::from_secs(60),
            message: "an operator paused this team".into(),
        },
        SubmitError::Store(e) => e.into(),
        // No idempotency key is passed (MPS has none).
        e @ (SubmitError::KeyReused | SubmitError::KeyInProgress) => RpcError::Internal(e.into()),
    }
}

async fn submit_snapshot_job(
    state: &AppState,
    team: &str,
    p: &BTreeMap<String, String>,
) -> Result<Value, RpcError> {
    let body = params::submit_body(p)?;
    let submitted = state
        .submit
        .submit(team, &body, None, state.submit.default_wait())
        .await
        .map_err(submit_error)?;
    Ok(json!({
        "SnapshotJob": render::snapshot_job(&submitted.job, default_pipeline(state)),
    }))
}

fn parse_time(name: &str, v: &str, errors: &mut Vec<String>) -> Option<DateTime<Utc>> {
    match crate::mps::wire::parse_time(v) {
        Some(t) => Some(t),
        None => {
            errors.push(format!("{name}: must be UTC yyyy-MM-ddTHH:mm:ssZ"));
            None
        }
    }
}

/// MPS states as gateway states (a queued job shows `Submitted`).
fn states_for(mps_state: &str) -> Option<Vec<JobState>> {
    Some(match mps_state {
        "Submitted" => vec![JobState::Queued, JobState::Submitted],
        "Snapshoting" | "Snapshotting" => vec![JobState::Snapshotting],
        "Success" => vec![JobState::Succeeded],
        "Fail" => vec![JobState::Failed],
        _ => return None,
    })
}

async fn query_snapshot_job_list(
    state: &AppState,
    team: &str,
    p: &BTreeMap<String, String>,
) -> Result<Value, RpcError> {
    let default = default_pipeline(state);
    let get = |name: &str| p.get(name).map(String::as_str).filter(|s| !s.is_empty());
    if let Some(ids) = get("SnapshotJobIds") {
        return jobs_by_ids(state, team, ids, default).await;
    }

    // A page of the team's jobs, newest first, by pipeline, state and creation window.
    let mut filter = page_filter(state, team, p, default).await?;
    let size = filter.limit as usize;
    filter.limit += 1;
    let mut jobs = state.store.list_pipeline_jobs(&filter).await?;
    let more = jobs.len() > size;
    jobs.truncate(size);
    let list: Vec<Value> = jobs
        .iter()
        .map(|j| render::snapshot_job(j, default))
        .collect();
    let mut answer = json!({"SnapshotJobList": {"SnapshotJob": list}});
    if more {
        if let Some(last) = jobs.last() {
            answer["NextPageToken"] = json!(last.id.0.simple().to_string());
        }
    }
    Ok(answer)
}

/// The jobs `SnapshotJobIds` names (at most `MAX_QUERY_IDS`), in the order asked, and the ids
/// this team has no job for.
async fn jobs_by_ids(
    state: &AppState,
    team: &str,
    ids: &str,
    default: Option<&str>,
) -> Result<Value, RpcError> {
    let asked: Vec<&str> = ids
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if asked.len() > MAX_QUERY_IDS {
        return Err(RpcError::invalid(
            "InvalidParameter.OutOfRange",
            format!(
                "SnapshotJobIds: at most {MAX_QUERY_IDS} ids, comma-separated (got {})",
                asked.len()
            ),
        ));
    }
    let parsed: Vec<JobId> = asked.iter().filter_map(|s| JobId::parse(s)).collect();
    let found = state.store.jobs_by_ids(team, &parsed).await?;
    let mut list = Vec::new();
    let mut missing = Vec::new();
    for id in asked {
        match JobId::parse(id).and_then(|j| found.iter().find(|f| f.id == j)) {
            Some(job) => list.push(render::snapshot_job(job, default)),
            // Unknown, malformed, or another team's: the same answer for all three.
            None => missing.push(id.to_string()),
        }
    }
    let mut answer = json!({"SnapshotJobList": {"SnapshotJob": list}});
    if !missing.is_empty() {
        answer["NonExistSnapshotJobIds"] = json!({ "String": missing });
    }
    Ok(answer)
}

/// The page a listing asks for: pipeline, state, creation window, page size and token, each
/// checked (every problem found).
async fn page_filter(
    state: &AppState,
    team: &str,
    p: &BTreeMap<String, String>,
    default: Option<&str>,
) -> Result<PipelineJobFilter, RpcError> {
    let get = |name: &str| p.get(name).map(String::as_str).filter(|s| !s.is_empty());
    let mut errors = Vec::new();
    let mut filter = PipelineJobFilter {
        team: team.to_string(),
        limit: DEFAULT_PAGE_SIZE,
        ..PipelineJobFilter::default()
    };
    if let Some(pl) = get("PipelineId") {
        if !crate::domain::is_mps_id(pl) {
            errors.push(format!(
                "PipelineId: must be a real MPS pipeline id, 32 lower-case hex characters (this \
                 one has {}): copy it from the MPS console",
                pl.chars().count()
            ));
        }
        filter.include_unset_pipeline = default == Some(pl);
        filter.pipeline_id = Some(pl.to_string());
    }
    if let Some(s) = get("State") {
        match states_for(s) {
            Some(states) => filter.states = states,
            None => errors.push("State: must be Submitted, Snapshoting, Success or Fail".into()),
        }
    }
    if let Some(t) = get("StartOfJobCreatedTimeRange") {
        filter.created_from = parse_time("StartOfJobCreatedTimeRange", t, &mut errors);
    }
    if let Some(t) = get("EndOfJobCreatedTimeRange") {
        // Whole seconds on the wire: the end second is included entirely.
        filter.created_to = parse_time("EndOfJobCreatedTimeRange", t, &mut errors)
            .map(|t| t + chrono::Duration::microseconds(999_999));
    }
    if let Some(n) = get("MaximumPageSize") {
        match n.parse::<u32>() {
            Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => filter.limit = n,
            _ => errors.push(format!(
                "MaximumPageSize: must be an integer from 1 to {MAX_PAGE_SIZE}"
            )),
        }
    }
    if let Some(token) = get("NextPageToken") {
        // The token is the last job of the previous page (its id as 32 hex characters).
        let last = match JobId::parse(token).filter(|_| token.len() == 32) {
            Some(id) => state.store.get_job(Some(team), id).await?,
            None => None,
        };
        match last {
            Some(j) => filter.before = Some((j.created_at, j.id)),
            None => errors.push("NextPageToken: is not a token this endpoint returned".into()),
        }
    }
    if !errors.is_empty() {
        return Err(params::invalid_messages("InvalidParameter", &errors));
    }
    Ok(filter)
}
