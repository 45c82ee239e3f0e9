//! Prometheus metrics (the `metrics` facade and its Prometheus exporter). Counters and
//! histograms are recorded where things happen; gauges about jobs are read from the store when
//! `/metrics` is scraped, so every replica reports the same truth.
//!
//! Every metric is described in [`DESCRIPTIONS`] (its `# HELP` line; a test runs Prometheus's
//! `promtool check metrics` on a scrape). Names follow Prometheus's conventions: a `snapgate_`
//! prefix, base units in the name (`_seconds`), `_total` on counters only, one series per fact
//! (queued jobs are `snapgate_jobs{state="queued"}`, nowhere else). Label values are bounded:
//! route templates, the standard HTTP methods (others count as `other`), status codes, MPS and
//! MNS error codes through [`code_label`] (they come from upstream: at most
//! [`MAX_CODE_LABELS`] distinct ones, each shaped like a code, the rest `other`), and the fixed
//! sets named below.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// What kind of metric a description is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric snapgate records: name, kind and help text (the `# HELP` line).
pub const DESCRIPTIONS: &[(&str, Kind, &str)] = &[
    ("snapgate_http_requests_total", Kind::Counter, "HTTP requests answered, by method, route template and status."),
    ("snapgate_http_request_duration_seconds", Kind::Histogram, "Time to answer an HTTP request, by method and route template."),
    ("snapgate_jobs", Kind::Gauge, "Jobs in the store by state (all teams; read from the store at scrape time)."),
    ("snapgate_region_jobs", Kind::Gauge, "Jobs in the store by MPS region (the input bucket's) and state (read from the store at scrape time)."),
    ("snapgate_oldest_queued_job_age_seconds", Kind::Gauge, "Age of the oldest job not yet accepted by MPS (0 when none)."),
    ("snapgate_oldest_in_flight_job_age_seconds", Kind::Gauge, "Age of the oldest job accepted by MPS and not yet final (0 when none)."),
    ("snapgate_mps_calls_total", Kind::Counter, "Calls to MPS, by region, action and answer code (Success, an MPS error code, or a transport failure)."),
    ("snapgate_mps_call_duration_seconds", Kind::Histogram, "Time of a call to MPS, by region and action."),
    ("snapgate_mps_up", Kind::Gauge, "Per region: 1 while its MPS is reachable with valid credentials, 0 while its dispatch is paused."),
    ("snapgate_retries_total", Kind::Counter, "Submits retried after a retryable error, by error code."),
    ("snapgate_reconciliations_total", Kind::Counter, "Submits with an unknown outcome looked up in MPS before any retry, by outcome (adopted, not_found, unknown)."),
    ("snapgate_duplicate_mps_jobs_total", Kind::Counter, "MPS jobs found for a job that already had one (should stay 0)."),
    ("snapgate_idempotent_replays_total", Kind::Counter, "POSTs answered from an earlier request with the same Idempotency-Key."),
    ("snapgate_rejected_requests_total", Kind::Counter, "Requests refused by a team limit, by reason (rate_limit, quota, paused)."),
    ("snapgate_team_paused", Kind::Gauge, "1 while an operator has paused the team (its queued jobs wait), else 0; by team, read at scrape time."),
    ("snapgate_purged_rows_total", Kind::Counter, "Rows deleted by the retention purge, by class (mps_responses: a purged job's)."),
    ("snapgate_archived_rows_total", Kind::Counter, "Rows the retention purge wrote to its OSS archive (and then deleted), by class."),
    ("snapgate_archive_objects_total", Kind::Counter, "Archive objects the retention purge wrote and verified, by class (one written again after a crash counts again)."),
    ("snapgate_mns_messages_total", Kind::Counter, "MNS job messages by what became of them (applied, duplicate, unknown_job, other_mps_job, not_snapshot, not_final, malformed, not_yet_submitted, error)."),
    ("snapgate_mns_calls_total", Kind::Counter, "MNS ReceiveMessage and DeleteMessage calls that failed, by action and code."),
    ("snapgate_job_cache_hits_total", Kind::Counter, "Job reads answered from memory, by job (final, or open: can still change)."),
    ("snapgate_token_cache_total", Kind::Counter, "API token checks by whether the in-memory cache answered (hit, miss)."),
    ("snapgate_mps_rpc_errors_total", Kind::Counter, "Errors answered on the MPS-compatible endpoint, by MPS error code."),
    ("snapgate_webhook_attempts_total", Kind::Counter, "Webhook delivery attempts by result."),
    ("snapgate_credential_refreshes_total", Kind::Counter, "Refreshes of the Alibaba Cloud credential (STS, ECS RAM role, OIDC) by result (ok, failed)."),
    ("snapgate_credential_expiry_seconds", Kind::Gauge, "Seconds until the Alibaba Cloud credential in use expires (absent for a long-lived key)."),
];

/// Registers every [`DESCRIPTIONS`] entry with the recorder.
fn describe() {
    for &(name, kind, help) in DESCRIPTIONS {
        let unit = name.ends_with("_seconds").then_some(Unit::Seconds);
        match (kind, unit) {
            (Kind::Counter, _) => metrics::describe_counter!(name, help),
            (Kind::Gauge, Some(u)) => metrics::describe_gauge!(name, u, help),
            (Kind::Gauge, None) => metrics::describe_gauge!(name, help),
            (Kind::Histogram, Some(u)) => metrics::describe_histogram!(name, u, help),
            (Kind::Histogram, None) => metrics::describe_histogram!(name, help),
        }
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once (the `metrics` facade is global by design) and
/// returns the handle that renders the exposition text.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), &buckets)
                .expect("valid buckets")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe();
            handle
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

/// How many distinct upstream error codes become label values in one process.
pub const MAX_CODE_LABELS: usize = 64;

/// Upstream error codes as label values, bounded (see the module docs).
pub struct CodeLabels {
    seen: Mutex<HashSet<String>>,
    cap: usize,
}

impl CodeLabels {
    pub fn new(cap: usize) -> Self {
        Self {
            seen: Mutex::new(HashSet::new()),
            cap,
        }
    }

    /// `code` itself when it looks like an MPS/MNS code (a letter, then at most 63 of letters,
    /// digits, `.`, `_`, `-`) and is one of the first `cap` distinct codes seen; else `other`.
    pub fn label(&self, code: &str) -> String {
        let shaped = code.len() <= 64
            && code.starts_with(|c: char| c.is_ascii_alphabetic())
            && code
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !shaped {
            return "other".into();
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(code) || (seen.len() < self.cap && seen.insert(code.to_string())) {
            code.to_string()
        } else {
            "other".into()
        }
    }
}

/// An upstream error code as a label value, bounded process-wide.
pub fn code_label(code: &str) -> String {
    static LABELS: OnceLock<CodeLabels> = OnceLock::new();
    LABELS
        .get_or_init(|| CodeLabels::new(MAX_CODE_LABELS))
        .label(code)
}

/// Counts one MNS job message by its outcome (a fixed set: see the module docs).
pub fn mns_message(outcome: &'static str) {
    metrics::counter!("snapgate_mns_messages_total", "outcome" => outcome).increment(1);
}

/// Counts an MNS call that failed (`action` `ReceiveMessage` or `DeleteMessage`).
pub fn mns_call_failed(action: &'static str, code: &str) {
    metrics::counter!("snapgate_mns_calls_total", "action" => action, "code" => code_label(code))
        .increment(1);
}

/// Records one MPS call.
pub fn mps_call(region: &str, action: &'static str, code: &str, started: Instant) {
    let region = region.to_string();
    metrics::counter!("snapgate_mps_calls_total", "region" => region.clone(), "action" => action, "code" => code_label(code))
        .increment(1);
    metrics::histogram!("snapgate_mps_call_duration_seconds", "region" => region, "action" => action)
        .record(started.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_codes_are_bounded_label_values() {
        let l = CodeLabels::new(3);
        assert_eq!(l.label("Throttling.User"), "Throttling.User");
        assert_eq!(
            l.label("InvalidParameter.ResourceNotFound"),
            "InvalidParameter.ResourceNotFound"
        );
        for bad in ["", "1abc", "a b", "x\ny", "é", &"A".repeat(65)] {
            assert_eq!(l.label(bad), "other", "{bad:?}");
        }
        assert_eq!(l.label("Success"), "Success");
        // The cap reached: a new code is `other`, a known one stays itself.
        assert_eq!(l.label("InternalError"), "other");
        assert_eq!(l.label("Throttling.User"), "Throttling.User");
    }

    /// Every name recorded anywhere in `src/` is described, and every description is recorded
    /// somewhere: the list cannot drift from the code.
    #[test]
    fn descriptions_match_the_metrics_recorded() {
        fn walk(dir: &std::path::Path, out: &mut String) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push_str(&std::fs::read_to_string(&p).unwrap());
                }
            }
        }
        let mut src = String::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut src,
        );
        let mut recorded = std::collections::BTreeSet::new();
        for (kind, mac) in [
            (Kind::Counter, "metrics::counter!(\""),
            (Kind::Gauge, "metrics::gauge!(\""),
            (Kind::Histogram, "metrics::histogram!(\""),
        ] {
            for (i, _) in src.match_indices(mac) {
                let rest = &src[i + mac.len()..];
                let name = &rest[..rest.find('"').unwrap()];
                recorded.insert((name.to_string(), kind));
            }
        }
        let described: std::collections::BTreeSet<_> = DESCRIPTIONS
            .iter()
            .map(|(n, k, _)| (n.to_string(), *k))
            .collect();
        assert_eq!(recorded, described);
        for (name, kind, _) in DESCRIPTIONS {
            assert!(name.starts_with("snapgate_"), "{name}");
            assert_eq!(name.ends_with("_total"), *kind == Kind::Counter, "{name}");
        }
    }
}
