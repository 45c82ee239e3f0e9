//! Prometheus metrics (the `metrics` facade and its Prometheus exporter). Counters and
//! histograms are recorded where things happen; gauges about jobs are read from the store when
//! `/metrics` is scraped, so every replica reports the same truth.
//!
//! Names: `snapgate_http_requests_total{method,route,status}`,
//! `snapgate_http_request_duration_seconds{method,route}`, `snapgate_jobs{state}`,
//! `snapgate_queued_jobs`, `snapgate_oldest_queued_job_age_seconds`,
//! `snapgate_mps_calls_total{action,code}`, `snapgate_mps_call_duration_seconds{action}`,
//! `snapgate_retries_total{code}`, `snapgate_reconciliations_total{outcome}`,
//! `snapgate_idempotent_replays_total`, `snapgate_rejected_requests_total{reason}`,
//! `snapgate_mps_up` (0 while dispatch is paused for an outage or refused credentials),
//! `snapgate_duplicate_mps_jobs_total`, `snapgate_mns_messages_total{outcome}` (MNS job
//! messages by what became of them: `applied`, `duplicate`, `unknown_job`, `other_mps_job`,
//! `not_snapshot`, `not_final`, `malformed`, `not_yet_submitted`, `error`),
//! `snapgate_mns_calls_total{action,code}` (MNS receives and deletes that failed, by code).
//! Label values are bounded: route templates, the standard HTTP methods (others count as
//! `other`), MPS and MNS codes.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once (the `metrics` facade is global by design) and
/// returns the handle that renders the exposition text.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), &buckets)
                .expect("valid buckets")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// Counts and times every HTTP request by route template (not raw path: bounded labels).
pub async fn track_http(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    // Bounded: the standard methods, everything else as `other`.
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!("snapgate_http_requests_total", "method" => method, "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("snapgate_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    res
}

/// Counts one MNS job message by its outcome (a fixed set: see the module docs).
pub fn mns_message(outcome: &'static str) {
    metrics::counter!("snapgate_mns_messages_total", "outcome" => outcome).increment(1);
}

/// Counts an MNS call that failed (`action` `ReceiveMessage` or `DeleteMessage`).
pub fn mns_call_failed(action: &'static str, code: &str) {
    metrics::counter!("snapgate_mns_calls_total", "action" => action, "code" => code.to_string())
        .increment(1);
}

/// Records one MPS call.
pub fn mps_call(action: &'static str, code: &str, started: Instant) {
    metrics::counter!("snapgate_mps_calls_total", "action" => action, "code" => code.to_string())
        .increment(1);
    metrics::histogram!("snapgate_mps_call_duration_seconds", "action" => action)
        .record(started.elapsed().as_secs_f64());
}
