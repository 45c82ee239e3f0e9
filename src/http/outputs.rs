//! A job's outputs in the API: the manifest's own schema (`outputs` of a job, and of a dry run),
//! and the storyboard routes `GET /v1/snapshot-jobs/{id}/storyboard.vtt` and `/storyboard.json`.
//!
//! The handlers are adapters: they parse the query, ask [`crate::services::outputs::OutputService`] — where
//! manifests, links and storyboards are made — and render its answer (WebVTT, or the Mux/imgix
//! JSON shape served as exactly `application/json`, as Vidstack requires).

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{ApiError, StoryboardErrors};
use super::{AppState, Caller};
use crate::domain::outputs::Storyboard;
use crate::domain::Violation;
use crate::services::outputs::{CueUrls, StoryboardError};

use super::views::OutputsResource;

/// The largest page of `GET /v1/snapshot-jobs/{id}/outputs`.
pub const MAX_OUTPUTS_PAGE: usize = 10_000;

/// The outputs route's query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct OutputsParams {
    /// Where the page starts: a `next_cursor` from the job's answer or the previous page
    /// (absent: the first page).
    pub cursor: Option<String>,
    /// Outputs per page, 1 to 10000 (default `outputs.max_listed`).
    pub limit: Option<u32>,
}

/// A job's whole output manifest, a page at a time: snapshots first, then sprite sheets, each
/// exactly once across the pages (the job's answer lists at most `outputs.max_listed` of them).
#[utoipa::path(
    get,
    path = "/v1/snapshot-jobs/{id}/outputs",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id"), OutputsParams),
    responses(
        (status = 200, body = OutputsResource),
        StoryboardErrors,
    ),
    security(("bearer" = []))
)]
pub async fn get_outputs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<OutputsResource>, ApiError> {
    let id = super::views::path_job_id(id.as_str())?;
    let (from, limit) = page_params(&params, state.outputs.max_listed())?;
    let team = (!caller.admin).then_some(caller.team.as_str());
    let job = state
        .store
        .get_job(team, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let manifest = state
        .outputs
        .manifest(&job)
        .ok_or(ApiError::JobNotSucceeded { state: job.state })?;
    let (page, _) = OutputsResource::page(&manifest, &state.outputs, id, from, limit);
    Ok(Json(page))
}

fn page_params(params: &[(String, String)], default: usize) -> Result<(usize, usize), ApiError> {
    let mut errors = Vec::new();
    let (mut from, mut limit) = (0, default.min(MAX_OUTPUTS_PAGE));
    for (name, value) in params {
        let mut bad = |message: &str| {
            errors.push(Violation {
                field: format!("/{name}"),
                code: "invalid_value".into(),
                message: message.into(),
            })
        };
        match name.as_str() {
            "cursor" => match value.parse::<usize>() {
                Ok(c) => from = c,
                Err(_) => bad("must be a next_cursor from an answer"),
            },
            "limit" => match value.parse::<usize>() {
                Ok(l) if (1..=MAX_OUTPUTS_PAGE).contains(&l) => limit = l,
                _ => bad("must be an integer from 1 to 10000"),
            },
            _ => errors.push(Violation {
                field: format!("/{name}"),
                code: "unknown_parameter".into(),
                message: "unknown query parameter; expected cursor, limit".into(),
            }),
        }
    }
    if errors.is_empty() {
        Ok((from, limit))
    } else {
        Err(ApiError::BadQuery(errors))
    }
}

/// The storyboard routes' query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct StoryboardParams {
    /// `absolute` (default): full image URLs; `relative`: relative to the job's WebVTT object
    /// (or `storyboard.vtt` beside the first sprite), for a VTT stored next to the sprites.
    #[param(pattern = "^(absolute|relative)$")]
    pub urls: Option<String>,
    /// The video's duration in ms: the last cue's end. Default: probed on the local store, else
    /// the last snapshot's time plus one interval.
    pub duration_ms: Option<u64>,
}

pub(super) fn parse_params(
    params: &[(String, String)],
) -> Result<(CueUrls, Option<u64>), ApiError> {
    let mut errors = Vec::new();
    let mut urls = CueUrls::Absolute;
    let mut duration = None;
    for (name, value) in params {
        let field = format!("/{name}");
        let mut bad = |code: &str, message: &str| {
            errors.push(Violation {
                field: field.clone(),
                code: code.into(),
                message: message.into(),
            })
        };
        match name.as_str() {
            "urls" => match value.as_str() {
                "absolute" => urls = CueUrls::Absolute,
                "relative" => urls = CueUrls::Relative,
                _ => bad("invalid_value", "must be absolute or relative"),
            },
            "duration_ms" => match value.parse::<u64>() {
                Ok(d) if d > 0 && crate::domain::rules::DURATION_MS.contains(d) => {
                    duration = Some(d)
                }
                _ => bad(
                    "out_of_range",
                    "must be the video's duration in ms, an integer > 0",
                ),
            },
            _ => bad(
                "unknown_parameter",
                "unknown query parameter; expected urls, duration_ms",
            ),
        }
    }
    if errors.is_empty() {
        Ok((urls, duration))
    } else {
        Err(ApiError::BadQuery(errors))
    }
}

async fn storyboard_of(
    state: &AppState,
    caller: &Caller,
    id: &str,
    params: &[(String, String)],
) -> Result<Storyboard, ApiError> {
    let id = super::views::path_job_id(id)?;
    let (urls, duration) = parse_params(params)?;
    let team = (!caller.admin).then_some(caller.team.as_str());
    let job = state
        .store
        .get_job(team, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    storyboard_for(state, &job, urls, duration).await
}

/// A job's storyboard, as the storyboard routes answer it (also `/v1/uploads/{id}/storyboard.vtt`).
pub(super) async fn storyboard_for(
    state: &AppState,
    job: &crate::domain::Job,
    urls: CueUrls,
    duration: Option<u64>,
) -> Result<Storyboard, ApiError> {
    state
        .outputs
        .storyboard(job, duration, urls)
        .await
        .map_err(|e| match e {
            StoryboardError::NoSprite => {
                ApiError::NoStoryboard("the job has no sprite (`sprite` in the request)".into())
            }
            StoryboardError::NotSucceeded(s) => ApiError::JobNotSucceeded { state: s },
            StoryboardError::Unknown(why) => ApiError::NoStoryboard(why.into()),
        })
}

/// A job's storyboard as WebVTT: one `url#xywh=x,y,w,h` cue per sprite cell (JW Player, Plyr,
/// video.js, Vidstack, Bitmovin), contiguous from 0 to the video's end, times `HH:MM:SS.mmm`.
#[utoipa::path(
    get,
    path = "/v1/snapshot-jobs/{id}/storyboard.vtt",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id"), StoryboardParams),
    responses(
        (status = 200, description = "WebVTT thumbnails", body = String, content_type = "text/vtt"),
        StoryboardErrors,
    ),
    security(("bearer" = []))
)]
pub async fn get_storyboard_vtt(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let sb = storyboard_of(&state, &caller, &id, &params).await?;
    Ok(vtt_response(&sb))
}

/// A storyboard as a `text/vtt` answer.
pub(super) fn vtt_response(sb: &Storyboard) -> Response {
    let mut res = sb.to_webvtt().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/vtt; charset=utf-8"),
    );
    res
}

/// A job's storyboard as JSON, Mux's and imgix's shape (`url`, `tile_width`, `tile_height`,
/// `duration` in s, `tiles[{start, x, y}]`) with each tile's `end`, `url`, `width` and `height`.
#[utoipa::path(
    get,
    path = "/v1/snapshot-jobs/{id}/storyboard.json",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id"), StoryboardParams),
    responses(
        (status = 200, body = Storyboard),
        StoryboardErrors,
    ),
    security(("bearer" = []))
)]
pub async fn get_storyboard_json(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<Storyboard>, ApiError> {
    Ok(Json(storyboard_of(&state, &caller, &id, &params).await?))
}
