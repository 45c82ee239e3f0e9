//! Webhooks to teams, end to end: real Postgres, the real emulator over HTTP, the app
//! (`TestApp`, or the binary for the SIGKILL test), and a receiver (`tests/webhooks/receiver.py`)
//! that verifies every delivery with the official `standardwebhooks` Python package.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use snapgate::config::Settings;
use snapgate::emulator::{EmulatorConfig, EmulatorHandle};

use common::process::{self, Proc};
use common::TestApp;

/// The receiver: a Python process and its files.
struct Receiver {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    /// `script`: how the first requests are answered (`"500"`, `"503:3"` for a Retry-After).
    fn start(script: &[&str]) -> Receiver {
        let venv = common::python_venv("webhooks-venv", "tests/webhooks/requirements.txt");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secrets"), "").unwrap();
        let mut child = Command::new(venv.join("bin/python"))
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/webhooks/receiver.py"
            ))
            .arg("--secrets")
            .arg(dir.path().join("secrets"))
            .arg("--log")
            .arg(dir.path().join("log"))
            .arg("--script")
            .arg(script.join(","))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let port = line.trim().parse().expect("the receiver prints its port");
        Receiver { child, port, dir }
    }

    fn url(&self, host: &str) -> String {
        format!("http://{host}:{}/hook", self.port)
    }

    fn set_secrets(&self, secrets: &[&str]) {
        std::fs::write(self.dir.path().join("secrets"), secrets.join("\n")).unwrap();
    }

    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let r = self.records();
            if r.len() >= n {
                return r;
            }
            assert!(
                start.elapsed() < limit,
                "the receiver got {} of {n} deliveries in {limit:?}: {r:#?}",
                r.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// On top of `TestAppBuilder::fast_worker`.
fn fast(s: &mut Settings) {
    s.worker.backoff_max_ms = 400;
    s.worker.status_poll_max_ms = 300;
    s.worker.idle_poll_ms = 100;
    s.worker.list_visibility_ms = 0;
    s.webhooks.poll_interval_ms = 100;
    s.webhooks.schedule_s = vec![1, 1, 1];
    s.webhooks.timeout_ms = 3_000;
}

async fn app(emulator: &EmulatorHandle, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let (store, db) = common::pg_store().await;
    TestApp::builder(store)
        .keep(db)
        .emulator(emulator, 3_000)
        .fast_worker()
        .settings(|s| {
            fast(s);
            s.webhooks.allow_private_networks = true;
            tweak(s);
        })
        .start()
        .await
}

fn job_body(object: &str) -> Value {
    json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": object},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "thumbs/{Count}.jpg"},
        "time_ms": 0, "interval_s": 2, "num": 3,
        "sprite": {"output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "sprites/{TileCount}.jpg"}, "lines": 2, "columns": 2},
    })
}

async fn json_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn create_endpoint(app: &TestApp, url: &str, types: &[&str]) -> (StatusCode, Value) {
    json_of(
        app.req(Method::POST, "/v1/webhook-endpoints")
            .json(&json!({"url": url, "event_types": types, "description": "test receiver"}))
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn submit(app: &TestApp, body: &Value) -> String {
    let (status, job) = json_of(app.post_job(body, None).await).await;
    assert!(status.is_success(), "{status} {job}");
    job["id"].as_str().unwrap().to_string()
}

async fn deliveries(app: &TestApp, endpoint: &str) -> Vec<Value> {
    let (status, body) = json_of(
        app.get(&format!("/v1/webhook-endpoints/{endpoint}/deliveries"))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["deliveries"].as_array().unwrap().clone()
}

/// The endpoint's `n` deliveries once none is pending.
async fn settled(app: &TestApp, endpoint: &str, n: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let ds = deliveries(app, endpoint).await;
        if ds.len() == n && ds.iter().all(|d| d["state"] != "pending") {
            return ds;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{ds:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_verified(r: &Value, secrets: usize) {
    let verified: Vec<u64> = r["verified_with"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(
        verified,
        (0..secrets as u64).collect::<Vec<_>>(),
        "not verified by every secret: {r:#}"
    );
    assert_eq!(
        r["webhook_id"], r["body"]["id"],
        "webhook-id is the event id"
    );
    assert_eq!(r["content_type"], "application/json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_verifies_and_carries_the_job_as_the_api_shows_it() {
    let emulator = common::app::test_emulator(|_| {}).await;
    let app = app(&emulator, common::app::deliveries_by_hand).await;
    let rx = Receiver::start(&[]);
    let (status, endpoint) = create_endpoint(
        &app,
        &rx.url("127.0.0.1"),
        &[
            "snapshot_job.submitted",
            "snapshot_job.succeeded",
            "snapshot_job.failed",
        ],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    let secret = endpoint["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(endpoint["enabled"], true);
    rx.set_secrets(&[secret]);
    // The secret is shown only once.
    let eid = endpoint["id"].as_str().unwrap();
    let (_, got) = json_of(app.get(&format!("/v1/webhook-endpoints/{eid}")).await).await;
    assert!(got.get("secret").is_none(), "{got}");
    let (_, list) = json_of(app.get("/v1/webhook-endpoints").await).await;
    assert_eq!(list["endpoints"][0]["id"], endpoint["id"]);

    let id = submit(&app, &job_body("uploads/a.mp4")).await;
    app.run_worker_until_idle().await;
    let job = app.job(&id).await;
    assert_eq!(job["state"], "succeeded");
    // Every event of the job was recorded with its transition, so the job being final means its
    // deliveries all exist; once they are all attempted, the receiver has all it will ever get.
    app.run_deliveries_until_idle().await;
    let records = rx.records();
    assert_eq!(records.len(), 2, "{records:#?}");
    let mut types: Vec<&str> = records
        .iter()
        .map(|r| r["body"]["type"].as_str().unwrap())
        .collect();
    types.sort();
    assert_eq!(types, ["snapshot_job.submitted", "snapshot_job.succeeded"]);
    for r in &records {
        assert_verified(r, 1);
        assert_eq!(r["body"]["data"]["id"], id.as_str());
        assert!(r["body"]["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    let succeeded = records
        .iter()
        .find(|r| r["body"]["type"] == "snapshot_job.succeeded")
        .unwrap();
    // The job exactly as GET /v1/snapshot-jobs/{id} shows it, outputs manifest included.
    assert_eq!(succeeded["body"]["data"], job);
    assert!(job["outputs"]["snapshots"].as_array().is_some(), "{job}");
    let submitted = records
        .iter()
        .find(|r| r["body"]["type"] == "snapshot_job.submitted")
        .unwrap();
    assert!(submitted["body"]["data"]["mps"]["job_id"].is_string());

    let ds = deliveries(&app, eid).await;
    assert_eq!(ds.len(), 2, "{ds:#?}");
    for d in &ds {
        assert_eq!(d["state"], "succeeded", "{d}");
        let attempts = d["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0]["status_code"], 200);
        assert!(attempts[0]["latency_ms"].is_u64());
        assert!(
            attempts[0]["response_snippet"]
                .as_str()
                .unwrap()
                .contains("received"),
            "{d}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_sends_snapshot_job_failed() {
    // With a local object store, a missing input fails the job at MPS.
    let oss = tempfile::tempdir().unwrap();
    let path = oss.path().to_path_buf();
    let emulator = common::app::test_emulator(move |c: &mut EmulatorConfig| {
        c.oss_dir = Some(path);
    })
    .await;
    let app = app(&emulator, common::app::deliveries_by_hand).await;
    let rx = Receiver::start(&[]);
    let (_, endpoint) = create_endpoint(&app, &rx.url("127.0.0.1"), &["snapshot_job.failed"]).await;
    rx.set_secrets(&[endpoint["secret"].as_str().unwrap()]);
    let id = submit(&app, &job_body("uploads/missing.mp4")).await;
    app.run_worker_until_idle().await;
    let job = app.job(&id).await;
    assert_eq!(job["state"], "failed", "{job}");
    // The job is final, so its deliveries all exist; once they are attempted, nothing more
    // comes.
    app.run_deliveries_until_idle().await;
    let records = rx.records();
    assert_eq!(records.len(), 1, "only the subscribed type is sent");
    assert_verified(&records[0], 1);
    assert_eq!(records[0]["body"]["type"], "snapshot_job.failed");
    assert_eq!(records[0]["body"]["data"], job);
    assert!(job["mps"]["code"].is_string(), "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_three_times_gets_four_attempts_on_the_schedule() {
    let emulator = common::app::test_emulator(|_| {}).await;
    // Waits of 1 s, then 1 s (but Retry-After: 3 wins), then 4 s.
    let app = app(&emulator, |s| s.webhooks.schedule_s = vec![1, 1, 4, 4]).await;
    let rx = Receiver::start(&["500", "503:3", "500"]);
    let (_, endpoint) =
        create_endpoint(&app, &rx.url("127.0.0.1"), &["snapshot_job.succeeded"]).await;
    rx.set_secrets(&[endpoint["secret"].as_str().unwrap()]);
    let eid = endpoint["id"].as_str().unwrap();
    let id = submit(&app, &job_body("uploads/b.mp4")).await;
    app.wait_final(&id, Duration::from_secs(20)).await;
    let records = rx.wait_for(4, Duration::from_secs(20)).await;
    let statuses: Vec<u64> = records
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 503, 500, 200]);
    for r in &records {
        assert_verified(r, 1);
        assert_eq!(
            r["webhook_id"], records[0]["webhook_id"],
            "the same webhook-id"
        );
    }
    let at: Vec<f64> = records
        .iter()
        .map(|r| r["received_at"].as_f64().unwrap())
        .collect();
    let gaps: Vec<f64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, want) in gaps.iter().zip([1.0, 3.0, 4.0]) {
        assert!(
            *gap >= want - 0.05 && *gap < want + 2.0,
            "gaps {gaps:?}, want about [1, 3, 4]"
        );
    }
    // The receiver logs a request before answering it: wait for the answer to be recorded.
    let ds = settled(&app, eid, 1).await;
    assert_eq!(ds[0]["state"], "succeeded");
    let codes: Vec<u64> = ds[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, [500, 503, 500, 200]);
    // The endpoint is healthy again after the success.
    let (_, e) = json_of(app.get(&format!("/v1/webhook-endpoints/{eid}")).await).await;
    assert_eq!(e["failing_since"], Value::Null, "{e}");
    assert_eq!(e["enabled"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_too_long_is_disabled_and_shown_so() {
    let emulator = common::app::test_emulator(|_| {}).await;
    let app = app(&emulator, |s| {
        s.webhooks.schedule_s = vec![1, 1, 1, 1];
        s.webhooks.disable_after_s = 1;
    })
    .await;
    let rx = Receiver::start(&["500", "500", "500", "500", "500"]);
    let (_, endpoint) =
        create_endpoint(&app, &rx.url("127.0.0.1"), &["snapshot_job.succeeded"]).await;
    let eid = endpoint["id"].as_str().unwrap();
    let id = submit(&app, &job_body("uploads/c.mp4")).await;
    app.wait_final(&id, Duration::from_secs(20)).await;
    // The first failure starts `failing_since`; the attempt a second later finds it failing
    // for longer than disable_after_s and disables it; the delivery's next attempt is not sent.
    rx.wait_for(2, Duration::from_secs(10)).await;
    let start = Instant::now();
    loop {
        let (_, e) = json_of(app.get(&format!("/v1/webhook-endpoints/{eid}")).await).await;
        if e["enabled"] == false {
            assert_eq!(e["disabled_reason"], "failing", "{e}");
            assert!(e["failing_since"].is_string());
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, list) = json_of(app.get("/v1/webhook-endpoints").await).await;
    assert_eq!(list["endpoints"][0]["disabled_reason"], "failing");
    // The delivery ends failed; nothing more reaches the receiver.
    let start = Instant::now();
    loop {
        let ds = deliveries(&app, eid).await;
        if ds[0]["state"] == "failed" {
            let last = ds[0]["attempts"]
                .as_array()
                .unwrap()
                .last()
                .unwrap()
                .clone();
            assert!(
                last["error"].as_str().unwrap().contains("disabled"),
                "{last}"
            );
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{ds:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rx.records().len(), 2);
    // Enabling it again forgets the failures.
    let (status, e) = json_of(
        app.req(Method::POST, &format!("/v1/webhook-endpoints/{eid}/enable"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(e["enabled"], true);
    assert_eq!(e["failing_since"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_answering_410_gone_is_disabled_at_once() {
    let emulator = common::app::test_emulator(|_| {}).await;
    let app = app(&emulator, common::app::deliveries_by_hand).await;
    let rx = Receiver::start(&["410"]);
    let (_, endpoint) =
        create_endpoint(&app, &rx.url("127.0.0.1"), &["snapshot_job.succeeded"]).await;
    let eid = endpoint["id"].as_str().unwrap();
    let id = submit(&app, &job_body("uploads/g.mp4")).await;
    app.run_worker_until_idle().await;
    assert_eq!(app.job(&id).await["state"], "succeeded");
    app.run_deliveries_until_idle().await;
    let ds = deliveries(&app, eid).await;
    assert_eq!(ds.len(), 1, "{ds:#?}");
    assert_eq!(ds[0]["state"], "failed", "{ds:#?}");
    assert_eq!(ds[0]["attempts"].as_array().unwrap().len(), 1, "no retry");
    let (_, e) = json_of(app.get(&format!("/v1/webhook-endpoints/{eid}")).await).await;
    assert_eq!(e["enabled"], false, "{e}");
    assert_eq!(e["disabled_reason"], "failing");
    // The only delivery is final (failed, with its one attempt): nothing is left to send.
    assert_eq!(rx.records().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_address_is_refused_unless_allowed() {
    let emulator = common::app::test_emulator(|_| {}).await;
    // One retry, a second later: the delivery ends (failed) within the test, after which
    // nothing can reach the receiver any more.
    let app = app(&emulator, |s| {
        s.webhooks.allow_private_networks = false;
        s.webhooks.schedule_s = vec![1];
    })
    .await;
    let rx = Receiver::start(&[]);
    // IP literals are refused when the endpoint is registered.
    for url in [
        rx.url("127.0.0.1"),
        rx.url("[::1]"),
        "http://169.254.169.254/latest/meta-data".to_string(),
        "http://10.0.0.8/hook".to_string(),
    ] {
        let (status, problem) = create_endpoint(&app, &url, &["snapshot_job.succeeded"]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {problem}");
        assert_eq!(problem["errors"][0]["field"], "/url");
        assert_eq!(problem["errors"][0]["code"], "private_address", "{problem}");
    }
    let (status, problem) = create_endpoint(&app, "ftp://x.example/", &["nope"]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["errors"].as_array().unwrap().len(), 2, "{problem}");
    // A name is checked when it is resolved, at connect time: `localhost` is accepted as a URL
    // but every attempt is refused before anything is sent.
    let (status, endpoint) =
        create_endpoint(&app, &rx.url("localhost"), &["snapshot_job.succeeded"]).await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    let eid = endpoint["id"].as_str().unwrap();
    let id = submit(&app, &job_body("uploads/d.mp4")).await;
    app.wait_final(&id, Duration::from_secs(20)).await;
    let start = Instant::now();
    let attempt = loop {
        let ds = deliveries(&app, eid).await;
        if let Some(a) = ds
            .first()
            .and_then(|d| d["attempts"].as_array())
            .and_then(|a| a.first())
        {
            break a.clone();
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(attempt["status_code"], Value::Null, "{attempt}");
    let error = attempt["error"].as_str().unwrap();
    assert!(error.contains("private, loopback or link-local"), "{error}");
    let ds = settled(&app, eid, 1).await;
    assert_eq!(ds[0]["state"], "failed", "{ds:#?}");
    let attempts = ds[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{ds:#?}");
    for a in attempts {
        assert_eq!(a["status_code"], Value::Null, "{a}");
        let error = a["error"].as_str().unwrap();
        assert!(error.contains("private, loopback or link-local"), "{error}");
    }
    assert!(rx.records().is_empty(), "nothing reached the receiver");
    // Allowed (as in the other tests of this file), the same receiver gets every delivery.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_sends_the_same_event_again() {
    let emulator = common::app::test_emulator(|_| {}).await;
    let app = app(&emulator, |_| {}).await;
    let rx = Receiver::start(&[]);
    let (_, endpoint) =
        create_endpoint(&app, &rx.url("127.0.0.1"), &["snapshot_job.succeeded"]).await;
    rx.set_secrets(&[endpoint["secret"].as_str().unwrap()]);
    let eid = endpoint["id"].as_str().unwrap();
    let id = submit(&app, &job_body("uploads/e.mp4")).await;
    app.wait_final(&id, Duration::from_secs(20)).await;
    let first = rx.wait_for(1, Duration::from_secs(10)).await[0].clone();
    let event_id = first["webhook_id"].as_str().unwrap();
    let (status, replay) = json_of(
        app.req(Method::POST, &format!("/v1/events/{event_id}/replay"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replay}");
    assert_eq!(replay["deliveries"].as_array().unwrap().len(), 1);
    let again = rx.wait_for(2, Duration::from_secs(10)).await[1].clone();
    assert_verified(&again, 1);
    assert_eq!(again["webhook_id"], first["webhook_id"]);
    assert_eq!(again["body"], first["body"]);
    assert_eq!(deliveries(&app, eid).await.len(), 2);
    // Unknown events, and another team's, are 404.
    let (status, _) = json_of(
        app.req(Method::POST, "/v1/events/evt_nope/replay")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_and_the_previous_one_both_verify_during_the_grace_period() {
    let emulator = common::app::test_emulator(|_| {}).await;
    let app = app(&emulator, |_| {}).await;
    let rx = Receiver::start(&[]);
    let (_, endpoint) =
        create_endpoint(&app, &rx.url("127.0.0.1"), &["snapshot_job.succeeded"]).await;
    let old = endpoint["secret"].as_str().unwrap().to_string();
    let eid = endpoint["id"].as_str().unwrap();
    let (status, rotated) = json_of(
        app.req(
            Method::POST,
            &format!("/v1/webhook-endpoints/{eid}/rotate-secret"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(old, new);
    assert!(
        rotated["previous_secret_expires_at"].is_string(),
        "{rotated}"
    );
    rx.set_secrets(&[&old, &new]);
    let id = submit(&app, &job_body("uploads/f.mp4")).await;
    app.wait_final(&id, Duration::from_secs(20)).await;
    let r = rx.wait_for(1, Duration::from_secs(10)).await[0].clone();
    assert_verified(&r, 2);
    assert_eq!(
        r["webhook_signature"].as_str().unwrap().split(' ').count(),
        2,
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_updated_disabled_and_deleted_per_team() {
    let emulator = common::app::test_emulator(|_| {}).await;
    let app = app(&emulator, |s| s.auth.enabled = true).await;
    let a = app.with_token(Some(&app.key("alpha", false).await.token));
    let b = app.with_token(Some(&app.key("beta", false).await.token));
    let (status, endpoint) =
        create_endpoint(&a, "https://hooks.example.com/a", &["snapshot_job.failed"]).await;
    assert_eq!(status, StatusCode::CREATED);
    let eid = endpoint["id"].as_str().unwrap();
    let path = format!("/v1/webhook-endpoints/{eid}");
    // Another team sees nothing of it.
    assert_eq!(b.get(&path).await.status(), StatusCode::NOT_FOUND);
    let (_, list) = json_of(b.get("/v1/webhook-endpoints").await).await;
    assert_eq!(list["endpoints"], json!([]));
    let (status, patched) = json_of(
        a.req(Method::PATCH, &path)
            .json(&json!({"url": "https://hooks.example.com/b", "event_types": ["snapshot_job.succeeded", "upload.expired"], "description": null}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["url"], "https://hooks.example.com/b");
    assert_eq!(
        patched["event_types"],
        json!(["snapshot_job.succeeded", "upload.expired"])
    );
    assert_eq!(patched["description"], Value::Null);
    let (status, _) = json_of(
        a.req(Method::PATCH, &path)
            .json(&json!({"event_types": ["job.done"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, disabled) = json_of(
        a.req(Method::POST, &format!("{path}/disable"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(disabled["enabled"], false);
    assert_eq!(disabled["disabled_reason"], "manual");
    assert_eq!(
        b.req(Method::DELETE, &path).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        a.req(Method::DELETE, &path).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(a.get(&path).await.status(), StatusCode::NOT_FOUND);
    // Without a token: 401.
    let anon = app.with_token(None);
    assert_eq!(
        anon.get("/v1/webhook-endpoints").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

// --- the binary, killed between the state change and the delivery ---

fn gateway(name: &str, port: u16, db: &str, emulator: &str, deliver: bool) -> Proc {
    let master = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    let mut cmd = process::gateway_command(port, db, emulator);
    cmd.env("SNAPGATE__AUTH__MASTER_KEY", master)
        .env("SNAPGATE__WORKER__STATUS_POLL_MIN_MS", "100")
        .env("SNAPGATE__WORKER__STATUS_POLL_MAX_MS", "300")
        .env("SNAPGATE__WORKER__IDLE_POLL_MS", "100")
        .env("SNAPGATE__WORKER__LIST_VISIBILITY_MS", "0")
        .env("SNAPGATE__WEBHOOKS__ENABLED", deliver.to_string())
        .env("SNAPGATE__WEBHOOKS__ALLOW_PRIVATE_NETWORKS", "true")
        .env("SNAPGATE__WEBHOOKS__POLL_INTERVAL_MS", "100")
        .env("SNAPGATE__WEBHOOKS__SCHEDULE_S", "[1, 1]");
    Proc::spawn("webhooks", name, cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_after_the_state_change_still_delivers_the_same_webhook_id() {
    let emulator = common::app::test_emulator(|_| {}).await;
    let (store, db) = common::pg_store().await;
    let http = reqwest::Client::new();
    let rx = Receiver::start(&[]);

    // The first process records the job's events but does not deliver (its delivery worker
    // is off): the window between the state change and the delivery stays open.
    let port = process::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut first = gateway("first", port, &db, &emulator.url(), false);
    process::wait_ready(&http, &format!("{base}/healthz")).await;
    let r = http
        .post(format!("{base}/v1/webhook-endpoints"))
        .json(&json!({"url": rx.url("127.0.0.1"), "event_types": ["snapshot_job.submitted", "snapshot_job.succeeded"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let endpoint: Value = r.json().await.unwrap();
    rx.set_secrets(&[endpoint["secret"].as_str().unwrap()]);
    let eid = endpoint["id"].as_str().unwrap();
    let job: Value = http
        .post(format!("{base}/v1/snapshot-jobs"))
        .json(&job_body("uploads/k.mp4"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    let start = Instant::now();
    loop {
        let j: Value = http
            .get(format!("{base}/v1/snapshot-jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if j["state"] == "succeeded" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pending: Value = http
        .get(format!("{base}/v1/webhook-endpoints/{eid}/deliveries"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut recorded: Vec<String> = pending["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["state"], "pending", "{d}");
            assert_eq!(d["attempts"], json!([]));
            d["event_id"].as_str().unwrap().to_string()
        })
        .collect();
    recorded.sort();
    assert_eq!(recorded.len(), 2, "{pending}");
    // SIGKILL: no graceful anything.
    first.kill();
    assert!(rx.records().is_empty());

    let port = process::free_port();
    let _second = gateway("second", port, &db, &emulator.url(), true);
    process::wait_ready(&http, &format!("http://127.0.0.1:{port}/healthz")).await;
    let records = rx.wait_for(2, Duration::from_secs(20)).await;
    let mut got: Vec<String> = records
        .iter()
        .map(|r| {
            assert_verified(r, 1);
            r["webhook_id"].as_str().unwrap().to_string()
        })
        .collect();
    got.sort();
    assert_eq!(
        got, recorded,
        "exactly the webhook-ids recorded before the kill"
    );
    drop(store);
}
