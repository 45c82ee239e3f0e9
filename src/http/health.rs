//! `/healthz` (the process is up) and `/readyz`: the store answers within a second, and MPS does
//! not refuse the gateway's credentials. An MPS outage alone keeps the replica ready (jobs are
//! still accepted and queued) and shows as `mps.ok = false`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::mps::health::Trouble;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
    /// The store backend: `postgres` or `sqlite`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// The gateway's access to MPS, as this replica's worker last saw it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub mps: Option<crate::mps::health::HealthView>,
    /// Each region's access to MPS, by region id, where more than one region is served (`mps`
    /// is the default region's).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub mps_regions: Option<std::collections::BTreeMap<String, crate::mps::health::HealthView>>,
    /// The Alibaba Cloud credentials in use (provider, expiry, refreshes), when this process
    /// resolved them; an expired one with failing refreshes makes the replica unready.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub credentials: Option<crate::credentials::CredentialsView>,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        store: None,
        mps: None,
        mps_regions: None,
        credentials: None,
    })
}

/// Readiness: the store is reachable.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health))
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let backend = Some(state.store.backend().to_string());
    let mps = state.mps_health.view();
    let regions: std::collections::BTreeMap<String, _> = state
        .mps_regions
        .iter()
        .map(|h| (h.region().to_string(), h.view()))
        .collect();
    let store_ok = match tokio::time::timeout(Duration::from_secs(1), state.store.ping()).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check: the store failed");
            false
        }
        Err(_) => {
            tracing::warn!("readiness check: the store did not answer within 1 s");
            false
        }
    };
    let credentials = state.credentials.as_ref().map(|c| c.view());
    if let Some(c) = credentials.as_ref().filter(|c| c.refresh_failing) {
        tracing::warn!(provider = c.provider, expired = c.expired, error = ?c.last_error, "readiness check: the credential refresh is failing");
    }
    // Refused credentials in any region need an operator (an outage does not: jobs queue).
    let ready = store_ok
        && mps.trouble != Some(Trouble::Credentials)
        && regions
            .values()
            .all(|r| r.trouble != Some(Trouble::Credentials))
        && !credentials.as_ref().is_some_and(|c| c.expired);
    let (status, word) = if ready {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    (
        status,
        Json(Health {
            status: word.into(),
            store: backend,
            mps: Some(mps),
            mps_regions: (regions.len() > 1).then_some(regions),
            credentials,
        }),
    )
}
