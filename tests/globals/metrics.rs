//! `/metrics` on Postgres. The metrics recorder is global to a test binary, so this test runs in
//! tests/globals, never at the same time as another test there (`crate::globals`), and none of
//! them makes a request: every count it reads was made by this test alone, and the values are
//! exact.

use crate::common;

use reqwest::StatusCode;
use serde_json::json;
use snapgate::services::keys::issue_key;

/// The value of the sample whose name and labels are exactly `series`, if exposed.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().expect("a numeric sample"))
    })
}

#[tokio::test]
// A current-thread runtime: nothing else of this test waits for the lock while it is held.
#[allow(clippy::await_holding_lock)]
async fn metrics_count_requests_by_route_and_jobs_by_state_exactly() {
    let _alone = crate::globals();
    let (store, _g) = common::pg_store().await;
    store
        .create_team("alpha", snapgate::store::now())
        .await
        .unwrap();
    let k = issue_key(&store, &common::app::master_key(), "alpha", false)
        .await
        .unwrap();
    let base = common::TestApp::builder(store.clone())
        .settings(|s| {
            s.auth.enabled = true;
            s.http.submit_wait_ms = 0;
        })
        .start()
        .await;
    let c = base.with_token(Some(&k.token));
    let body = json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.mp4"},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.jpg"}
    });
    assert_eq!(c.post_job(&body, None).await.status(), StatusCode::ACCEPTED);
    for _ in 0..2 {
        assert_eq!(
            c.get("/v1/snapshot-jobs/0190a0b0-0000-7000-8000-000000000000")
                .await
                .status(),
            StatusCode::NOT_FOUND
        );
    }
    // The first scrape: job gauges are read from the store now (then cached for a while).
    let text = c.get("/metrics").await.text().await.unwrap();
    let exact = [
        (
            r#"snapgate_http_requests_total{method="POST",route="/v1/snapshot-jobs",status="202"}"#,
            1.0,
        ),
        (
            r#"snapgate_http_requests_total{method="GET",route="/v1/snapshot-jobs/{id}",status="404"}"#,
            2.0,
        ),
        (
            r#"snapgate_http_request_duration_seconds_count{method="POST",route="/v1/snapshot-jobs"}"#,
            1.0,
        ),
        (r#"snapgate_jobs{state="queued"}"#, 1.0),
    ];
    for (series, want) in exact {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
    let age = sample(&text, "snapgate_oldest_queued_job_age_seconds").expect("age exposed");
    assert!(age >= 0.0, "{age}");

    // Prometheus's own linter on the scrape: HELP and TYPE for every metric, counters ending in
    // `_total`, base units, snake case, no duplicate series.
    let lint = promtool_check(&text);
    assert_eq!(lint, "", "promtool check metrics:\n{lint}\non\n{text}");
    // Bounded labels: the raw path (its id) never becomes a label value.
    assert!(!text.contains("0190a0b0-0000"), "{text}");
}

/// What `promtool check metrics` says about `text` (empty when clean). promtool comes from
/// Debian's `prometheus` package (`.ci/run` installs it); a machine without it fails here.
fn promtool_check(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus) must be on the PATH");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        String::new()
    } else {
        said
    }
}
