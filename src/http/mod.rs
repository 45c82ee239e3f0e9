//! The REST API: router, middleware stack, caller extraction. One file per resource; and at `/`
//! the MPS-compatible endpoint (`mps_rpc/`, MPS's own RPC protocol, not in the OpenAPI document).

pub mod admin;
pub mod auth;
pub mod caller;
pub mod components;
pub mod error;
mod etag;
pub mod health;
pub mod job_cache;
pub mod jobs;
pub mod mps_rpc;
pub mod ops;
pub mod outputs;
pub mod presets;
pub mod schema;
mod state;
pub mod strict_json;
pub mod uploads;
pub mod views;
pub mod webhooks;

use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use caller::Caller;
pub use error::{ApiError, Problem};
pub use state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "snapgate",
        description = "A gateway for Alibaba Cloud MPS snapshot jobs: validated, recorded, delivered exactly once, tracked."
    ),
    tags((name = "jobs", description = "Snapshot jobs"), (name = "health", description = "Liveness and readiness"), (name = "admin", description = "Operations (admin keys)"), (name = "presets", description = "Named, versioned job requests"), (name = "uploads", description = "Browser uploads straight to OSS, and their jobs"), (name = "webhooks", description = "Signed webhooks to the team (Standard Webhooks): endpoints, deliveries, replays. Every delivery's body is a `WebhookEventPayload`.")),
    components(schemas(webhooks::WebhookEventPayload)),
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
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            header::IF_NONE_MATCH,
        ])
        .expose_headers([
            header::LOCATION,
            header::RETRY_AFTER,
            header::LINK,
            header::ETAG,
            HeaderName::from_static("ratelimit"),
            HeaderName::from_static("ratelimit-policy"),
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("idempotent-replayed"),
        ])
        .max_age(Duration::from_secs(600))
}

/// The access log: one INFO line per request when its answer is ready (`request served`, with
/// `status` and `latency_ms`), inside a span that carries the method, the route (the matched
/// pattern, so ids stay out of the field and its values stay few; the raw path only for
/// unmatched requests), the request id and, once authenticated, the team. Headers are never
/// logged (the `Authorization` header is marked sensitive as well, in `router`).
fn request_span(req: &Request) -> tracing::Span {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    tracing::info_span!("request", method = %req.method(), route, request_id, team = tracing::field::Empty, job_id = tracing::field::Empty)
}

fn log_response(res: &axum::response::Response, latency: Duration, _: &tracing::Span) {
    tracing::info!(
        status = res.status().as_u16(),
        latency_ms = latency.as_secs_f64() * 1000.0,
        "request served"
    );
}

/// The routes and the OpenAPI document, registered together so they cannot drift apart.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(jobs::create_job, jobs::list_jobs))
        .routes(routes!(jobs::get_job, jobs::cancel_job))
        .routes(routes!(jobs::list_mps_responses))
        .routes(routes!(jobs::retry_job))
        .routes(routes!(outputs::get_storyboard_vtt))
        .routes(routes!(outputs::get_storyboard_json))
        .routes(routes!(outputs::get_outputs))
        .routes(routes!(
            webhooks::create_webhook_endpoint,
            webhooks::list_webhook_endpoints
        ))
        .routes(routes!(
            webhooks::get_webhook_endpoint,
            webhooks::update_webhook_endpoint,
            webhooks::delete_webhook_endpoint
        ))
        .routes(routes!(webhooks::enable_webhook_endpoint))
        .routes(routes!(webhooks::disable_webhook_endpoint))
        .routes(routes!(webhooks::rotate_webhook_secret))
        .routes(routes!(webhooks::list_webhook_deliveries))
        .routes(routes!(webhooks::replay_event))
        .routes(routes!(presets::create_preset, presets::list_presets))
        .routes(routes!(presets::get_preset))
        .routes(routes!(uploads::create_upload))
        .routes(routes!(uploads::get_upload))
        .routes(routes!(uploads::complete_upload))
        .routes(routes!(
            uploads::create_part_urls,
            uploads::list_upload_parts
        ))
        .routes(routes!(uploads::upload_events))
        .routes(routes!(uploads::get_upload_storyboard_vtt))
        .routes(routes!(admin::get_stats))
        .routes(routes!(ops::get_admin_usage))
        .routes(routes!(ops::get_usage))
        .routes(routes!(ops::pause_team))
        .routes(routes!(ops::resume_team))
        .routes(routes!(ops::redrive))
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
            crate::services::uploads::CALLBACK_PATH,
            axum::routing::post(uploads::oss_callback),
        )
        .route("/upload", axum::routing::get(uploads::upload_page))
        .route(
            "/components/snapgate.js",
            axum::routing::get(components::snapgate_js),
        )
        .route(
            "/upload/demo/presets",
            axum::routing::get(uploads::demo_presets),
        )
        .route(
            "/upload/demo/intents",
            axum::routing::post(uploads::demo_intent),
        )
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
        // Interactive docs from the same document: Swagger UI's files are embedded in the binary.
        .merge(
            swagger_ui_dist::generate_routes(swagger_ui_dist::ApiDefinition {
                uri_prefix: "/docs",
                api_definition: swagger_ui_dist::OpenApiSource::Uri("/openapi.json"),
                title: Some("snapgate API"),
            })
            .with_state::<AppState>(()),
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
        .layer(middleware::from_fn(etag::etag))
        .layer(middleware::from_fn(auth::rate_limit_headers))
        .layer(middleware::from_fn_with_state(
            error::ProblemContext {
                body_limit_bytes: http.body_limit_bytes,
            },
            error::render_problems,
        ))
        .layer(middleware::from_fn(crate::metrics::track_http))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span as fn(&Request) -> tracing::Span)
                .on_request(())
                .on_response(
                    log_response as fn(&axum::response::Response, Duration, &tracing::Span),
                ),
        )
        .layer(cors(&http.cors_origins))
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid))
        // Outermost: no layer's debug output, log or error may show a credential.
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
        ]))
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
