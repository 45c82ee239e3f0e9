//! `/v1/presets`: a team's named, versioned job requests. Adapters over
//! `services::presets::PresetService` (the rules: names, validation with the job validator) and,
//! for reads, `store::PresetStore` (the versions). A preset is immutable: a new body makes the next version, the same body again
//! answers the version it already is.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{
    ApiError, BodyErrors, JsonWriteErrors, Problem, ReadErrors, TeamRateLimited, Unauthenticated,
};
use super::{AppState, Caller};
use crate::http::strict_json::StrictJson;
use crate::services::presets::PresetRef;
use crate::store::PresetRecord;

/// `POST /v1/presets`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreatePresetBody {
    /// 1 to 64 lower-case letters, digits, `-`, `_`, `.`.
    #[schema(example = "storyboard")]
    pub name: String,
    /// A job request without `input`; output keys may use `{ObjectPrefix}`, `{FileName}`,
    /// `{ExtName}` (MPS expands them from the input) and `{UploadId}` (snapgate: the upload's id).
    #[schema(value_type = Object)]
    pub request: serde_json::Value,
}

/// One version of a preset.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Preset)]
pub struct PresetResource {
    pub name: String,
    pub version: u32,
    /// `name@version`: what a job body's `preset` or an upload names.
    #[serde(rename = "ref")]
    #[schema(example = "storyboard@2")]
    pub reference: String,
    /// The preset as created (a job request without `input`).
    #[schema(value_type = Object)]
    pub request: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl From<PresetRecord> for PresetResource {
    fn from(p: PresetRecord) -> Self {
        PresetResource {
            reference: p.reference(),
            name: p.name,
            version: p.version,
            request: p.body,
            created_at: p.created_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PresetList {
    /// Every version of every preset, by name then version.
    pub presets: Vec<PresetResource>,
}

/// Create a preset version (or find the one with this body).
#[utoipa::path(
    post,
    path = "/v1/presets",
    tag = "presets",
    request_body(content = CreatePresetBody, content_type = "application/json"),
    responses(
        (status = 201, description = "A new version", body = PresetResource),
        (status = 200, description = "This body is already that version", body = PresetResource),
        JsonWriteErrors,
        BodyErrors,
        (status = 422, description = "Invalid preset, every violation listed (the job validator's)", body = Problem, content_type = "application/problem+json"),
        TeamRateLimited,
    ),
    security(("bearer" = []))
)]
pub async fn create_preset(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<StrictJson, ApiError>,
) -> Result<Response, ApiError> {
    let StrictJson(body) = body?;
    let (preset, created) = state.presets.create(&caller.team, &body).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(PresetResource::from(preset))).into_response())
}

/// Every preset version of the caller's team.
#[utoipa::path(
    get,
    path = "/v1/presets",
    tag = "presets",
    responses(
        (status = 200, body = PresetList),
        Unauthenticated,
    ),
    security(("bearer" = []))
)]
pub async fn list_presets(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PresetList>, ApiError> {
    let presets = state.store.list_presets(&caller.team).await?;
    Ok(Json(PresetList {
        presets: presets.into_iter().map(Into::into).collect(),
    }))
}

/// One preset: `name` (its latest version) or `name@version`.
#[utoipa::path(
    get,
    path = "/v1/presets/{name}",
    tag = "presets",
    params(("name" = String, Path, description = "`name` (latest version) or `name@version`")),
    responses(
        (status = 200, body = PresetResource),
        ReadErrors,
    ),
    security(("bearer" = []))
)]
pub async fn get_preset(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<PresetResource>, ApiError> {
    let r = PresetRef::parse(&name).map_err(|_| ApiError::NotFound)?;
    let preset = state
        .store
        .get_preset(&caller.team, &r.name, r.version)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(preset.into()))
}
