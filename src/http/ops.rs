//! Operations routes over `services::lifecycle`: usage (`/v1/admin/usage`, a team's own
//! `/v1/usage`; JSON, or CSV with `Accept: text/csv`), pausing and resuming a team, and the
//! bulk redrive of failed jobs.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{AdminErrors, ApiError, BodyErrors, JsonWriteErrors, Problem, Unauthenticated};
use super::{AppState, Caller};
use crate::domain::Violation;
use crate::http::strict_json::StrictJson;
use crate::services::lifecycle::{
    PauseRequest, RedriveReport, RedriveRequest, UsageQuery, UsageRow,
};
use crate::store::TeamPause;

/// The query of the usage routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// First day, `YYYY-MM-DD` (UTC); default: 29 days before `to`.
    pub from: Option<String>,
    /// Last day, inclusive; default: today.
    pub to: Option<String>,
    /// A comma list of `team`, `day`, `region`; default: all three.
    pub group_by: Option<String>,
    /// Only this team (admin route).
    pub team: Option<String>,
}

/// Usage, one row per group.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    pub from: String,
    pub to: String,
    pub group_by: Vec<String>,
    /// The currency of every `cost` (present when prices are set).
    pub currency: Option<String>,
    pub rows: Vec<UsageRow>,
}

fn is_admin(state: &AppState, caller: &Caller) -> bool {
    caller.admin || !state.settings.auth.enabled
}

async fn usage_answer(
    state: &AppState,
    headers: &HeaderMap,
    p: UsageParams,
    team: Option<String>,
) -> Result<Response, ApiError> {
    let q = UsageQuery::parse(
        p.from.as_deref(),
        p.to.as_deref(),
        p.group_by.as_deref(),
        team,
    )
    .map_err(ApiError::BadQuery)?;
    let rows = state.lifecycle.usage(&q).await?;
    let csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/csv"));
    if csv {
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            usage_csv(&rows),
        )
            .into_response());
    }
    let priced = rows.iter().any(|r| r.cost.is_some());
    Ok(Json(UsageReport {
        from: q.from.to_string(),
        to: q.to.to_string(),
        group_by: q
            .group_by
            .iter()
            .map(|d| format!("{d:?}").to_lowercase())
            .collect(),
        currency: priced.then(|| state.lifecycle.currency().to_string()),
        rows,
    })
    .into_response())
}

/// Usage as CSV: a header line, then one line per row (an ungrouped dimension is empty).
fn usage_csv(rows: &[UsageRow]) -> String {
    let mut out = String::from(
        "team,day,region,submitted,succeeded,failed,snapshots,sprite_sheets,mps_calls,cost\n",
    );
    let field = |v: &Option<String>| {
        let v = v.as_deref().unwrap_or("");
        if v.contains([',', '"', '\n']) {
            format!("\"{}\"", v.replace('"', "\"\""))
        } else {
            v.to_string()
        }
    };
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            field(&r.team),
            field(&r.day),
            field(&r.region),
            r.submitted,
            r.succeeded,
            r.failed,
            r.snapshots,
            r.sprite_sheets,
            r.mps_calls,
            r.cost.map(|c| c.to_string()).unwrap_or_default()
        ));
    }
    out
}

/// Usage of every team (admin keys only): jobs submitted, succeeded, failed, snapshots, sprite
/// sheets and MPS calls per team, day and region, with cost where prices are configured.
#[utoipa::path(
    get,
    path = "/v1/admin/usage",
    tag = "admin",
    params(UsageParams),
    responses(
        (status = 200, body = UsageReport, description = "JSON; with `Accept: text/csv`, CSV"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        AdminErrors,
    ),
    security(("bearer" = []))
)]
pub async fn get_admin_usage(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(p): Query<UsageParams>,
) -> Result<Response, ApiError> {
    if !is_admin(&state, &caller) {
        return Err(ApiError::Forbidden);
    }
    let team = p.team.clone();
    usage_answer(&state, &headers, p, team).await
}

/// The caller's team's own usage (the same rows as the admin route, of this team only).
#[utoipa::path(
    get,
    path = "/v1/usage",
    tag = "admin",
    params(UsageParams),
    responses(
        (status = 200, body = UsageReport, description = "JSON; with `Accept: text/csv`, CSV"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        Unauthenticated,
    ),
    security(("bearer" = []))
)]
pub async fn get_usage(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(p): Query<UsageParams>,
) -> Result<Response, ApiError> {
    let team = Some(caller.team.clone());
    usage_answer(&state, &headers, p, team).await
}

/// `POST /v1/admin/teams/{team}/pause` (every member optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    /// Refuse new jobs with 409 `team_paused` (default: record them, held until resumed).
    #[serde(default)]
    pub refuse_new: bool,
    /// Why (shown in the admin stats).
    pub reason: Option<String>,
}

/// A team's pause.
#[derive(Debug, Serialize, ToSchema)]
pub struct PauseResource {
    pub team: String,
    pub paused: bool,
    pub paused_at: Option<DateTime<Utc>>,
    pub refuse_new: bool,
    pub reason: Option<String>,
}

impl From<TeamPause> for PauseResource {
    fn from(p: TeamPause) -> Self {
        PauseResource {
            team: p.team,
            paused: true,
            paused_at: Some(p.paused_at),
            refuse_new: p.refuse_new,
            reason: p.reason,
        }
    }
}

fn body_or_default<T: serde::de::DeserializeOwned + Default>(
    body: Option<serde_json::Value>,
) -> Result<T, ApiError> {
    match body {
        None => Ok(T::default()),
        Some(v) => serde_json::from_value(v).map_err(|e| {
            ApiError::Validation(vec![Violation {
                field: "/".into(),
                code: "invalid".into(),
                message: e.to_string(),
            }])
        }),
    }
}

/// Pause a team (admin): its queued jobs are not sent (every replica's claim skips them at
/// once), jobs MPS has finish, new jobs are held (or refused with `refuse_new`). Stored:
/// a restart keeps it.
#[utoipa::path(
    post,
    path = "/v1/admin/teams/{team}/pause",
    tag = "admin",
    params(("team" = String, Path, description = "The team")),
    request_body(content = PauseBody, content_type = "application/json"),
    responses(
        (status = 200, body = PauseResource),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        JsonWriteErrors,
        BodyErrors,
        (status = 422, body = Problem, content_type = "application/problem+json", description = "An unknown member"),
        AdminErrors,
    ),
    security(("bearer" = []))
)]
pub async fn pause_team(
    State(state): State<AppState>,
    caller: Caller,
    Path(team): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<PauseResource>, ApiError> {
    if !is_admin(&state, &caller) {
        return Err(ApiError::Forbidden);
    }
    // The body is optional: none pauses with the defaults.
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(serde_json::from_slice(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?)
    };
    let b: PauseBody = body_or_default(body)?;
    let req = PauseRequest {
        refuse_new: b.refuse_new,
        reason: b.reason,
    };
    Ok(Json(state.lifecycle.pause(&team, &req).await?.into()))
}

/// Resume a paused team (admin): its queued jobs are due again on every replica at once.
#[utoipa::path(
    post,
    path = "/v1/admin/teams/{team}/resume",
    tag = "admin",
    params(("team" = String, Path, description = "The team")),
    responses(
        (status = 200, body = PauseResource),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        AdminErrors,
    ),
    security(("bearer" = []))
)]
pub async fn resume_team(
    State(state): State<AppState>,
    caller: Caller,
    Path(team): Path<String>,
) -> Result<Json<PauseResource>, ApiError> {
    if !is_admin(&state, &caller) {
        return Err(ApiError::Forbidden);
    }
    state.lifecycle.resume(&team).await?;
    Ok(Json(PauseResource {
        team,
        paused: false,
        paused_at: None,
        refuse_new: false,
        reason: None,
    }))
}

/// `POST /v1/admin/redrive`: which failed jobs to make again.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveBody {
    /// Only `failed` (the default): the one state a job is redriven from.
    pub state: Option<String>,
    pub team: Option<String>,
    /// The job's MPS (or delivery) error code, e.g. `InternalError`.
    pub mps_code: Option<String>,
    /// Ended at or after.
    pub ended_from: Option<DateTime<Utc>>,
    /// Ended before.
    pub ended_to: Option<DateTime<Utc>>,
    /// At most this many jobs (default and maximum: `lifecycle.redrive_max_per_call`).
    pub limit: Option<u32>,
    /// Count only.
    #[serde(default)]
    pub dry_run: bool,
}

/// Redrive failed jobs by filter (admin): each matching failed job (with an error code, so
/// never a cancelled one) not yet retried is made again through the same path as
/// `POST /v1/snapshot-jobs/{id}/retry`, oldest end first, at most `limit`; `dry_run` counts
/// first. Calling again takes the next ones; a job is never retried twice.
#[utoipa::path(
    post,
    path = "/v1/admin/redrive",
    tag = "admin",
    request_body(content = RedriveBody, content_type = "application/json"),
    responses(
        (status = 200, body = RedriveReport),
        JsonWriteErrors,
        BodyErrors,
        (status = 422, body = Problem, content_type = "application/problem+json"),
        AdminErrors,
    ),
    security(("bearer" = []))
)]
pub async fn redrive(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<StrictJson, ApiError>,
) -> Result<Json<RedriveReport>, ApiError> {
    if !is_admin(&state, &caller) {
        return Err(ApiError::Forbidden);
    }
    let StrictJson(body) = body?;
    let b: RedriveBody = body_or_default(Some(body))?;
    if b.state.as_deref().is_some_and(|s| s != "failed") {
        return Err(ApiError::Validation(vec![Violation {
            field: "/state".into(),
            code: "invalid".into(),
            message: "only failed jobs are redriven".into(),
        }]));
    }
    let req = RedriveRequest {
        team: b.team,
        code: b.mps_code,
        ended_from: b.ended_from,
        ended_to: b.ended_to,
        limit: b.limit,
        dry_run: b.dry_run,
    };
    Ok(Json(state.lifecycle.redrive(&req).await?))
}
