//! `/v1/webhook-endpoints` and `/v1/events/{id}/replay`: a team's webhook endpoints, their
//! deliveries, and replays. Adapters over [`crate::services::webhooks::WebhookService`] (where the rules
//! of an endpoint live) and the store; team-scoped by the caller's key (an admin key manages
//! its own team's endpoints). Also [`RestRenderer`]: the delivery worker renders a job event's
//! `data` with the REST API's own [`JobResource`], so a webhook carries the job exactly as
//! `GET /v1/snapshot-jobs/{id}` shows it.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, BodyErrors, JsonWriteErrors, Problem, ReadErrors, Unauthenticated};
use super::views::JobResource;
use super::{AppState, Caller};
use crate::domain::Job;
use crate::domain::Violation;
use crate::services::outputs::OutputService;
use crate::services::webhooks::{EndpointSpec, WebhookError};
use crate::store::{DeliveryRecord, WebhookEndpoint, WebhookEndpointUpdate, WebhookEvent};
use crate::webhooks::EventRenderer;

const MAX_LIMIT: u32 = 200;
const DEFAULT_LIMIT: u32 = 50;

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Invalid(v) => ApiError::Validation(v),
            WebhookError::Store(e) => e.into(),
            WebhookError::Internal(e) => ApiError::Internal(e),
        }
    }
}

/// Renders job events with the REST API's job renderer (other events' data is sent as stored).
pub struct RestRenderer {
    pub outputs: Arc<OutputService>,
}

impl EventRenderer for RestRenderer {
    fn render_data(&self, event: &WebhookEvent) -> anyhow::Result<Value> {
        if event.event_type.starts_with("snapshot_job.") {
            let job: Job = serde_json::from_value(event.data.clone())?;
            Ok(serde_json::to_value(JobResource::new(job, &self.outputs))?)
        } else {
            Ok(event.data.clone())
        }
    }
}

/// A webhook endpoint (its secret is shown only when created or rotated).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookEndpointResource {
    pub id: Uuid,
    pub url: String,
    pub description: Option<String>,
    /// `snapshot_job.submitted`, `snapshot_job.succeeded`, `snapshot_job.failed`, `upload.expired`.
    pub event_types: Vec<String>,
    /// False once disabled by the team or for failing (see `disabled_reason`).
    pub enabled: bool,
    pub disabled_at: Option<DateTime<Utc>>,
    /// `manual` (the team disabled it) or `failing` (every delivery failed for
    /// `webhooks.disable_after_s`): enable it again with `POST .../enable`.
    pub disabled_reason: Option<String>,
    /// Since when deliveries have been failing without a success in between.
    pub failing_since: Option<DateTime<Utc>>,
    /// After a rotation: until when the previous secret still signs beside the new one.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<WebhookEndpoint> for WebhookEndpointResource {
    fn from(e: WebhookEndpoint) -> Self {
        let now = crate::store::now();
        WebhookEndpointResource {
            id: e.id,
            url: e.url,
            description: e.description,
            event_types: e.event_types,
            enabled: e.disabled_at.is_none(),
            disabled_at: e.disabled_at,
            disabled_reason: e.disabled_reason,
            failing_since: e.failing_since,
            previous_secret_expires_at: e.previous_secret_expires_at.filter(|t| *t > now),
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// An endpoint with its signing secret: shown once, keep it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookEndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: WebhookEndpointResource,
    /// `whsec_` + base64: verify deliveries with any Standard Webhooks library.
    pub secret: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookEndpointList {
    pub endpoints: Vec<WebhookEndpointResource>,
}

/// `POST /v1/webhook-endpoints`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookEndpoint {
    /// `https://…` (or `http://`); private, loopback and link-local destinations are refused
    /// unless `webhooks.allow_private_networks`.
    pub url: String,
    pub event_types: Vec<String>,
    pub description: Option<String>,
}

fn double_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `PATCH /v1/webhook-endpoints/{id}`: the members given change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookEndpoint {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// `false` disables (`manual`), `true` enables (and forgets past failures).
    pub enabled: Option<bool>,
}

/// One attempt of a delivery.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryAttemptResource {
    pub attempted_at: DateTime<Utc>,
    /// The receiver's HTTP status; absent when it did not answer.
    pub status_code: Option<u16>,
    /// Why there is no (successful) answer: refused address, timeout, connection error.
    pub error: Option<String>,
    pub latency_ms: u64,
    /// The start of the receiver's answer (at most `webhooks.response_limit_bytes`).
    pub response_snippet: Option<String>,
}

/// One event sent (or being sent) to one endpoint.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryResource {
    pub id: Uuid,
    /// The `webhook-id` of every attempt.
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `succeeded` or `failed`.
    pub state: String,
    pub attempts: Vec<DeliveryAttemptResource>,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<DeliveryRecord> for DeliveryResource {
    fn from(d: DeliveryRecord) -> Self {
        DeliveryResource {
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            state: d.state,
            attempts: d
                .attempts
                .into_iter()
                .map(|a| DeliveryAttemptResource {
                    attempted_at: a.attempted_at,
                    status_code: a.status_code,
                    error: a.error,
                    latency_ms: a.latency_ms,
                    response_snippet: a.response_snippet,
                })
                .collect(),
            next_attempt_at: d.next_attempt_at,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryResource>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// Newest first; 1 to 200 (default 50).
    pub limit: Option<String>,
}

/// `POST /v1/events/{id}/replay`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReplayResource {
    pub event_id: String,
    /// The new deliveries (one per enabled endpoint it was sent to or that subscribes to it).
    pub deliveries: Vec<Uuid>,
}

/// The body of every webhook (signed per Standard Webhooks: `webhook-id` = `id`,
/// `webhook-timestamp`, `webhook-signature`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookEventPayload {
    /// `evt_…`, also the `webhook-id` header: the same on every attempt and replay.
    pub id: String,
    /// `snapshot_job.submitted`, `snapshot_job.succeeded`, `snapshot_job.failed` or
    /// `upload.expired`.
    #[serde(rename = "type")]
    pub type_: String,
    /// When the event happened (the job's state change), RFC 3339.
    pub timestamp: DateTime<Utc>,
    /// For `snapshot_job.*`: the job exactly as `GET /v1/snapshot-jobs/{id}` shows it, as of
    /// the change (`outputs` included; output URLs are made when the attempt is sent).
    pub data: JobResource,
}

fn endpoint_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::NotFound)
}

/// Register a webhook endpoint.
#[utoipa::path(
    post,
    path = "/v1/webhook-endpoints",
    tag = "webhooks",
    request_body(content = CreateWebhookEndpoint, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; `secret` is shown only now", body = WebhookEndpointWithSecret),
        JsonWriteErrors,
        BodyErrors,
        (status = 422, description = "Bad URL (or a private address), unknown event type; every violation listed", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_webhook_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateWebhookEndpoint>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body?;
    let (endpoint, secret) = state
        .webhooks
        .create(
            &caller.team,
            EndpointSpec {
                url: b.url,
                event_types: b.event_types,
                description: b.description,
            },
        )
        .await?;
    let body = WebhookEndpointWithSecret {
        endpoint: endpoint.into(),
        secret: secret.expose().to_string(),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// List the team's webhook endpoints (oldest first).
#[utoipa::path(
    get,
    path = "/v1/webhook-endpoints",
    tag = "webhooks",
    responses(
        (status = 200, body = WebhookEndpointList),
        Unauthenticated,
    ),
    security(("bearer" = []))
)]
pub async fn list_webhook_endpoints(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<WebhookEndpointList>, ApiError> {
    let endpoints = state.store.list_webhook_endpoints(&caller.team).await?;
    Ok(Json(WebhookEndpointList {
        endpoints: endpoints.into_iter().map(Into::into).collect(),
    }))
}

/// Read one webhook endpoint (`enabled`, `disabled_reason` and `failing_since` tell its health).
#[utoipa::path(
    get,
    path = "/v1/webhook-endpoints/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint id")),
    responses(
        (status = 200, body = WebhookEndpointResource),
        ReadErrors,
    ),
    security(("bearer" = []))
)]
pub async fn get_webhook_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookEndpointResource>, ApiError> {
    let e = state
        .store
        .get_webhook_endpoint(&caller.team, endpoint_id(&id)?)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(e.into()))
}

/// Change a webhook endpoint's URL, event types, description or `enabled`.
#[utoipa::path(
    patch,
    path = "/v1/webhook-endpoints/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint id")),
    request_body(content = UpdateWebhookEndpoint, content_type = "application/json"),
    responses(
        (status = 200, body = WebhookEndpointResource),
        JsonWriteErrors,
        BodyErrors,
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn update_webhook_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<UpdateWebhookEndpoint>, JsonRejection>,
) -> Result<Json<WebhookEndpointResource>, ApiError> {
    let id = endpoint_id(&id)?;
    let Json(b) = body?;
    let update = WebhookEndpointUpdate {
        url: b.url,
        description: b.description,
        event_types: b.event_types,
        enabled: b.enabled,
    };
    let e = state
        .webhooks
        .update(&caller.team, id, update)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(e.into()))
}

async fn set_enabled(
    state: &AppState,
    caller: &Caller,
    id: &str,
    enabled: bool,
) -> Result<Json<WebhookEndpointResource>, ApiError> {
    let update = WebhookEndpointUpdate {
        enabled: Some(enabled),
        ..WebhookEndpointUpdate::default()
    };
    let e = state
        .webhooks
        .update(&caller.team, endpoint_id(id)?, update)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(e.into()))
}

/// Disable a webhook endpoint (`disabled_reason: manual`); its pending deliveries fail.
#[utoipa::path(
    post,
    path = "/v1/webhook-endpoints/{id}/disable",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint id")),
    responses(
        (status = 200, body = WebhookEndpointResource),
        ReadErrors,
    ),
    security(("bearer" = []))
)]
pub async fn disable_webhook_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookEndpointResource>, ApiError> {
    set_enabled(&state, &caller, &id, false).await
}

/// Enable a webhook endpoint again (also one disabled for failing).
#[utoipa::path(
    post,
    path = "/v1/webhook-endpoints/{id}/enable",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint id")),
    responses(
        (status = 200, body = WebhookEndpointResource),
        ReadErrors,
    ),
    security(("bearer" = []))
)]
pub async fn enable_webhook_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookEndpointResource>, ApiError> {
    set_enabled(&state, &caller, &id, true).await
}

/// Delete a webhook endpoint and its delivery history.
#[utoipa::path(
    delete,
    path = "/v1/webhook-endpoints/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint id")),
    responses(
        (status = 204, description = "Deleted"),
        ReadErrors,
    ),
    security(("bearer" = []))
)]
pub async fn delete_webhook_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state
        .webhooks
        .delete(&caller.team, endpoint_id(&id)?)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

/// Rotate the signing secret: the new one is shown once; the previous one keeps signing beside
/// it for `webhooks.rotation_grace_s`.
#[utoipa::path(
    post,
    path = "/v1/webhook-endpoints/{id}/rotate-secret",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint id")),
    responses(
        (status = 200, body = WebhookEndpointWithSecret),
        ReadErrors,
    ),
    security(("bearer" = []))
)]
pub async fn rotate_webhook_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookEndpointWithSecret>, ApiError> {
    let (endpoint, secret) = state
        .webhooks
        .rotate_secret(&caller.team, endpoint_id(&id)?)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(WebhookEndpointWithSecret {
        endpoint: endpoint.into(),
        secret: secret.expose().to_string(),
    }))
}

/// An endpoint's deliveries, newest first, each with every attempt.
#[utoipa::path(
    get,
    path = "/v1/webhook-endpoints/{id}/deliveries",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint id"), DeliveryParams),
    responses(
        (status = 200, body = DeliveryList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        ReadErrors,
    ),
    security(("bearer" = []))
)]
pub async fn list_webhook_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<DeliveryParams>,
) -> Result<Json<DeliveryList>, ApiError> {
    let id = endpoint_id(&id)?;
    let limit = match params.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::BadQuery(vec![Violation {
                    field: "limit".into(),
                    code: "out_of_range".into(),
                    message: format!("must be an integer from 1 to {MAX_LIMIT}"),
                }])
            })?,
    };
    state
        .store
        .get_webhook_endpoint(&caller.team, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let deliveries = state.store.list_deliveries(&caller.team, id, limit).await?;
    Ok(Json(DeliveryList {
        deliveries: deliveries.into_iter().map(Into::into).collect(),
    }))
}

/// Send an event again (the same event id, so the same `webhook-id`).
#[utoipa::path(
    post,
    path = "/v1/events/{id}/replay",
    tag = "webhooks",
    params(("id" = String, Path, description = "The event id (`evt_…`, the `webhook-id`)")),
    responses(
        (status = 202, description = "Queued for delivery", body = ReplayResource),
        ReadErrors,
    ),
    security(("bearer" = []))
)]
pub async fn replay_event(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let deliveries = state
        .webhooks
        .replay(&caller.team, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ReplayResource {
            event_id: id,
            deliveries,
        }),
    )
        .into_response())
}
