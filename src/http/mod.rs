//! The REST API: router, middleware stack, caller extraction. One file per resource; and at `/`
//! the MPS-compatible endpoint (`mps_rpc/`, MPS's own RPC protocol, not in the OpenAPI document).

pub mod admin;
pub mod auth;
pub mod error;
pub mod health;
pub mod job_cache;
pub mod jobs;
pub mod mps_rpc;
pub mod outputs;
pub mod schema;
mod state;

use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::Caller;
pub use error::{ApiError, Problem};
pub use state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "snapgate",
        description = "A gateway for Alibaba Cloud MPS snapshot jobs: validated, recorded, delivered exactly once, tracked."
    ),
    tags((name = "jobs", description = "Snapshot jobs"), (name = "health", description = "Liveness and readiness"), (name = "admin", description = "Operations (admin keys)")),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `["*"]` allows any origin (no credentials are involved: tokens are sent explicitly); every
/// other entry must be an origin (`Settings::load` refuses one that is not).
fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse::<HeaderValue>().ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([
            header::LOCATION,
            header::RETRY_AFTER,
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("idempotent-replayed"),
        ])
        .max_age(Duration::from_secs(600))
}

/// The routes and the OpenAPI document, registered together so they cannot drift apart.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(jobs::create_job, jobs::list_jobs))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::list_mps_responses))
        .routes(routes!(outputs::get_storyboard_vtt))
        .routes(routes!(outputs::get_storyboard_json))
        .routes(routes!(admin::get_stats))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .split_for_parts();
    // After the routes: their schemas are in the document only now.
    utoipa::Modify::modify(&schema::RequestRules, &mut doc);
    (router, doc)
}

pub fn router(state: AppState) -> Router {
    let (api, openapi) = api();
    let openapi = std::sync::Arc::new(openapi);
    let x_request_id = HeaderName::from_static("x-request-id");
    let http = &state.settings.http;
    api.route("/metrics", axum::routing::get(admin::metrics))
    .route(
        "/",
        axum::routing::get(mps_rpc::mps_rpc).post(mps_rpc::mps_rpc),
    )
    .route(
        "/openapi.json",
        axum::routing::get(move || {
            let doc = openapi.clone();
            async move { axum::Json(doc.as_ref().clone()) }
        }),
    )
    .layer(RequestBodyLimitLayer::new(http.body_limit_bytes))
    .layer(TimeoutLayer::with_status_code(
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_millis(http.request_timeout_ms),
    ))
    .layer(CatchPanicLayer::custom(|_| {
        // The panic message may hold data; it stays out of the answer (logged by the hook).
        axum::response::IntoResponse::into_response(StatusCode::INTERNAL_SERVER_ERROR)
    }))
    // Outside the layers above, so their bare error answers become problem documents too.
    .layer(middleware::from_fn(error::render_problems))
    .layer(middleware::from_fn(crate::metrics::track_http))
    .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id, team = tracing::field::Empty)
    }))
    .layer(cors(&http.cors_origins))
    .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
    .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid))
    .with_state(state)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_wildcard_origin_builds() {
        // `AllowOrigin::list` panics on "*"; the layer is built from `AllowOrigin::any` instead.
        let _ = super::cors(&["*".to_string()]);
        let _ = super::cors(&["https://app.example.com".to_string(), "junk\n".to_string()]);
    }
}
