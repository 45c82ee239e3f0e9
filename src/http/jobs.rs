//! `/v1/snapshot-jobs`: submit a job (or dry-run one), read one, list them.
//!
//! `create_job` is an adapter: it parses the HTTP request (content type, JSON, the
//! `Idempotency-Key` header, `?dry_run=true`), hands it to [`crate::services::jobs::SubmitService`] —
//! where every rule of accepting a job lives — and renders the outcome. It never calls MPS
//! itself. A job's `outputs` come from [`crate::services::outputs::OutputService`].

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, BodyErrors, LimitedReadErrors, ListErrors, Problem};
use super::job_cache::Cached;
use super::views::{path_job_id, DryRunResource, JobResource};
use super::AppState;
use super::Caller;
use crate::domain::Job;
use crate::domain::{JobId, JobState, Violation};
use crate::http::strict_json::StrictJson;
use crate::services::jobs::{IdempotencyKey, Submitted};
use crate::services::outputs::OutputService;
use crate::store::JobFilter;

/// The header marking a replayed idempotent response.
pub const REPLAY_HEADER: &str = "idempotent-replayed";
const MAX_LIMIT: u32 = 200;
const DEFAULT_LIMIT: u32 = 50;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobResource>,
    /// Pass as `cursor` to get the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only jobs in this state.
    pub state: Option<String>,
    /// RFC 3339 time; only jobs created after it.
    pub created_after: Option<String>,
    /// RFC 3339 time; only jobs created before it.
    pub created_before: Option<String>,
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Admins only: another team's jobs.
    pub team: Option<String>,
}

/// The `Idempotency-Key` header, as documented.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct IdempotencyHeader {
    /// Makes retries safe: the same key and body replay the first answer (kept
    /// `idempotency.ttl_hours`). 1 to 255 visible ASCII characters, no spaces.
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]+$"
    )]
    idempotency_key: Option<String>,
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = |m: &str| ApiError::BadHeader {
        header: "Idempotency-Key",
        message: m.to_string(),
    };
    let s = v.to_str().map_err(|_| bad("must be printable ASCII"))?;
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(bad(
            "must be 1 to 255 printable ASCII characters without spaces",
        ));
    }
    Ok(Some(IdempotencyKey(s.to_string())))
}

/// 201 once MPS has the job (or it already ended), 202 while it is still queued; `Location`
/// names the job either way.
fn job_response(submitted: Submitted, outputs: &OutputService) -> Response {
    let status = if submitted.delivered() {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    let id = submitted.job.id;
    if submitted.replayed {
        // A new job's id is recorded by `SubmitService::submit`; recording a span field twice
        // prints it twice in the text log's access line.
        tracing::Span::current().record("job_id", tracing::field::display(id));
    }
    let mut res = (status, Json(JobResource::new(submitted.job, outputs))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/snapshot-jobs/{id}")) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    if submitted.replayed {
        res.headers_mut()
            .insert(REPLAY_HEADER, HeaderValue::from_static("true"));
    }
    res
}

/// The query of `POST /v1/snapshot-jobs`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct CreateParams {
    /// `true`: record nothing, answer 200 with the MPS parameters and predicted outputs.
    dry_run: Option<bool>,
    /// Dry run: the input's duration in ms (default: probed on the local store; also
    /// accepted as `duration_ms` in the body).
    duration_ms: Option<u64>,
}

fn create_params(params: &[(String, String)]) -> Result<(bool, Option<u64>), ApiError> {
    let mut errors = Vec::new();
    let (mut dry_run, mut duration) = (false, None);
    for (name, value) in params {
        let mut bad = |code: &str, message: &str| {
            errors.push(Violation {
                field: format!("/{name}"),
                code: code.into(),
                message: message.into(),
            })
        };
        match name.as_str() {
            "dry_run" => match value.as_str() {
                "true" => dry_run = true,
                "false" => dry_run = false,
                _ => bad("invalid_value", "must be true or false"),
            },
            "duration_ms" => match value.parse::<u64>() {
                Ok(d) if crate::domain::rules::DURATION_MS.contains(d) => duration = Some(d),
                _ => bad(
                    "out_of_range",
                    "must be the input's duration in ms, an integer >= 0",
                ),
            },
            _ => bad(
                "unknown_parameter",
                "unknown query parameter; expected dry_run, duration_ms",
            ),
        }
    }
    if duration.is_some() && !dry_run {
        errors.push(Violation {
            field: "/duration_ms".into(),
            code: "needs_dry_run".into(),
            message: "is only taken with dry_run=true".into(),
        });
    }
    if errors.is_empty() {
        Ok((dry_run, duration))
    } else {
        Err(ApiError::BadQuery(errors))
    }
}

/// Submit a snapshot job (or, with `dry_run=true`, see what it would do).
#[utoipa::path(
    post,
    path = "/v1/snapshot-jobs",
    tag = "jobs",
    request_body(content = super::schema::CreateJobBody, content_type = "application/json"),
    params(IdempotencyHeader, CreateParams),
    responses(
        (status = 200, description = "Dry run: nothing recorded", body = DryRunResource),
        (status = 201, description = "MPS accepted the job within the wait budget", body = JobResource),
        (status = 202, description = "Recorded; not yet accepted by MPS", body = JobResource),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Same Idempotency-Key still in progress", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid job, every violation listed; or Idempotency-Key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = Problem, content_type = "application/problem+json"),
        BodyErrors,
        (status = 429, description = "Team rate limit or in-flight quota reached (see Retry-After)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_job(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
    body: Result<StrictJson, ApiError>,
) -> Result<Response, ApiError> {
    let (dry_run, duration_ms) = create_params(&params)?;
    let key = idempotency_key(&headers)?;
    let StrictJson(body) = body?;
    if dry_run {
        let preview = state
            .submit
            .preview(&caller.team, &body, duration_ms)
            .await?;
        return Ok(Json(DryRunResource::new(preview, &state.outputs)).into_response());
    }
    let submitted = state
        .submit
        .submit(
            &caller.team,
            &body,
            key.as_ref(),
            state.submit.default_wait(),
        )
        .await?;
    Ok(job_response(submitted, &state.outputs))
}

/// Read one job.
#[utoipa::path(
    get,
    path = "/v1/snapshot-jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, body = JobResource),
        LimitedReadErrors,
    ),
    security(("bearer" = []))
)]
pub async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_job_id(&id)?;
    // From memory if it is there (src/http/job_cache.rs); its team checked as the query below
    // checks it.
    match state.jobs.get(id, &caller, &state.outputs) {
        Cached::Hit { answer, refresh } => {
            if refresh {
                state
                    .jobs
                    .refresh(state.store.clone(), state.outputs.clone(), id);
            }
            return Ok(answer);
        }
        Cached::OtherTeam => return Err(ApiError::NotFound),
        Cached::Miss => {}
    }
    let team = (!caller.admin).then_some(caller.team.as_str());
    let seen = state.jobs.seen();
    let job = state
        .store
        .get_job(team, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(state.jobs.answer(job, &state.outputs, seen))
}

/// Cancel a job MPS has not been sent: it becomes `failed` with the error code `Cancelled`,
/// releases its place in the team's in-flight quota, and never reaches MPS. A job that was
/// sent, or is being sent, answers 409: MPS offers no cancel for snapshot jobs.
#[utoipa::path(
    delete,
    path = "/v1/snapshot-jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, body = JobResource, description = "The cancelled job"),
        LimitedReadErrors,
        (status = 409, body = Problem, content_type = "application/problem+json",
         description = "The job was sent to MPS, is being sent, or is final"),
    ),
    security(("bearer" = []))
)]
pub async fn cancel_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_job_id(&id)?;
    let team = (!caller.admin).then_some(caller.team.as_str());
    // Taken before the service reads the job back: the answer is cached only if nothing
    // changed the job since.
    let seen = state.jobs.seen();
    let job = state.submit.cancel(team, id).await?;
    Ok(state.jobs.answer(job, &state.outputs, seen))
}

/// Make a new job from a failed one: the same request (checked again, through the team's
/// pause and quota like any submit), linked both ways (`retry_of` on the new job, `retried_by`
/// on the failed one). Idempotent: a job retried already answers its one retry (with
/// `Idempotent-Replayed: true`), however many calls race.
#[utoipa::path(
    post,
    path = "/v1/snapshot-jobs/{id}/retry",
    tag = "jobs",
    params(("id" = String, Path, description = "The failed job's id")),
    responses(
        (status = 202, body = JobResource, description = "The new job, queued (or its earlier retry)"),
        (status = 201, body = JobResource, description = "The new job, already accepted by MPS"),
        LimitedReadErrors,
        (status = 409, body = Problem, content_type = "application/problem+json",
         description = "The job is not failed, or the team is paused with new jobs refused"),
    ),
    security(("bearer" = []))
)]
pub async fn retry_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    use crate::store::JobChangeSink;
    let id = path_job_id(&id)?;
    let team = (!caller.admin).then_some(caller.team.as_str());
    let submitted = state.submit.retry(team, id).await?;
    // The failed job now names its retry: a cached answer of it is stale.
    state.jobs.job_changed(id);
    Ok(job_response(submitted, &state.outputs))
}

/// One MPS response kept for a job.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MpsResponseEntry {
    pub action: String,
    pub request_id: Option<String>,
    pub code: Option<String>,
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
    pub received_at: DateTime<Utc>,
}

/// Every MPS response snapgate received about a job, oldest first.
#[utoipa::path(
    get,
    path = "/v1/snapshot-jobs/{id}/mps-responses",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, body = Vec<MpsResponseEntry>),
        LimitedReadErrors,
    ),
    security(("bearer" = []))
)]
pub async fn list_mps_responses(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<MpsResponseEntry>>, ApiError> {
    let id = path_job_id(&id)?;
    let team = (!caller.admin).then_some(caller.team.as_str());
    state
        .store
        .get_job(team, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let records = state.store.mps_responses(id).await?;
    Ok(Json(
        records
            .into_iter()
            .map(|r| MpsResponseEntry {
                action: r.action,
                request_id: r.request_id,
                code: r.code,
                body: r.body,
                received_at: r.received_at,
            })
            .collect(),
    ))
}

fn encode_cursor(job: &Job) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}|{}",
        job.created_at.timestamp_micros(),
        job.id
    ))
}

fn decode_cursor(s: &str) -> Option<(DateTime<Utc>, JobId)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (micros, id) = raw.split_once('|')?;
    let t = DateTime::<Utc>::from_timestamp_micros(micros.parse().ok()?)?;
    // Only cursors this API can have made: both databases hold every such time.
    if !(0..=253_402_300_799_000_000).contains(&t.timestamp_micros()) {
        return None;
    }
    Some((t, JobId::parse(id)?))
}

/// List jobs, newest first, with cursor pagination.
#[utoipa::path(
    get,
    path = "/v1/snapshot-jobs",
    tag = "jobs",
    params(ListParams),
    responses(
        (status = 200, body = JobList, headers(("Link" = String, description = "`<...?cursor=...>; rel=\"next\"` when there is a next page (RFC 8288), the same URL as `next_cursor` with the other parameters kept"))),
        ListErrors,
    ),
    security(("bearer" = []))
)]
pub async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<impl IntoResponse, ApiError> {
    let mut filter = job_filter(&params, &caller).map_err(ApiError::BadQuery)?;
    if let (true, Some(team)) = (caller.admin, &filter.team) {
        if !state.store.team_exists(team).await? {
            return Err(ApiError::BadQuery(vec![Violation {
                field: "/team".into(),
                code: "unknown_team".into(),
                message: format!("no team named {team:?}"),
            }]));
        }
    }
    let limit = filter.limit;
    filter.limit = limit + 1;
    let mut jobs = state.store.list_jobs(&filter).await?;
    let next_cursor = if jobs.len() > limit as usize {
        jobs.truncate(limit as usize);
        jobs.last().map(encode_cursor)
    } else {
        None
    };
    // RFC 8288: the next page as a link too, the same query with the new cursor.
    let link = next_cursor
        .as_ref()
        .map(|cursor| next_link(&uri, &params, cursor));
    let body = Json(JobList {
        jobs: jobs
            .into_iter()
            .map(|j| JobResource::new(j, &state.outputs))
            .collect(),
        next_cursor,
    });
    let mut headers = HeaderMap::new();
    if let Some(link) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LINK, link);
    }
    Ok((headers, body))
}

/// The filter a listing's query asks for (every problem found): `state`, `created_after`,
/// `created_before`, `limit`, `cursor`, and for admin keys `team` (all teams without it).
fn job_filter(params: &[(String, String)], caller: &Caller) -> Result<JobFilter, Vec<Violation>> {
    let mut errors = Vec::new();
    let mut bad = |field: &str, code: &str, message: String| {
        errors.push(Violation {
            field: field.to_string(),
            code: code.to_string(),
            message,
        })
    };
    let mut filter = JobFilter {
        team: Some(caller.team.clone()),
        limit: DEFAULT_LIMIT,
        ..JobFilter::default()
    };
    let time = |v: &str| DateTime::parse_from_rfc3339(v).map(|t| t.with_timezone(&Utc));
    for (i, (name, value)) in params.iter().enumerate() {
        let field = format!("/{name}");
        if params[..i].iter().any(|(n, _)| n == name) {
            bad(
                &field,
                "repeated",
                "is given more than once; give it once".into(),
            );
            continue;
        }
        match name.as_str() {
            "state" => match JobState::parse(value) {
                Some(s) => filter.state = Some(s),
                None => bad(&field, "invalid_value", "must be one of queued, submitted, snapshotting, succeeded, failed".into()),
            },
            "created_after" => match time(value) {
                Ok(t) => filter.created_after = Some(t),
                Err(_) => bad(&field, "invalid_format", "must be an RFC 3339 time, e.g. 2026-01-01T00:00:00Z".into()),
            },
            "created_before" => match time(value) {
                Ok(t) => filter.created_before = Some(t),
                Err(_) => bad(&field, "invalid_format", "must be an RFC 3339 time, e.g. 2026-01-01T00:00:00Z".into()),
            },
            "limit" => match value.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => filter.limit = n,
                _ => bad(&field, "out_of_range", format!("must be an integer from 1 to {MAX_LIMIT}")),
            },
            "cursor" => match decode_cursor(value) {
                Some(c) => filter.before = Some(c),
                None => bad(&field, "invalid_format", "is not a cursor this API returned".into()),
            },
            "team" if caller.admin => filter.team = Some(value.clone()),
            "team" => bad(&field, "forbidden", "only admin keys may list other teams".into()),
            _ => bad(&field, "unknown_parameter", "unknown query parameter; expected state, created_after, created_before, limit, cursor".into()),
        }
    }
    if caller.admin && !params.iter().any(|(n, _)| n == "team") {
        filter.team = None;
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(filter)
}

/// The `Link` to the next page: the same query, with the new cursor.
fn next_link(uri: &axum::http::Uri, params: &[(String, String)], cursor: &str) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params.iter().filter(|(n, _)| n != "cursor") {
        query.append_pair(name, value);
    }
    query.append_pair("cursor", cursor);
    format!("<{}?{}>; rel=\"next\"", uri.path(), query.finish())
}
