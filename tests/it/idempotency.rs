//! `Idempotency-Key` through the REST API, on both stores, as the README promises it: a key is
//! honoured `idempotency.ttl_hours` and after that the same key makes a new job (whether or not
//! the record was purged yet); a first request that died mid-flight answers retries `409
//! idempotency_key_in_progress` only while it could still be waiting for MPS
//! (`http.submit_wait_ms`), then replays its job; keys are 1 to 255 visible ASCII characters
//! (256, empty, a space or a non-ASCII byte answer `400 invalid_header`); a retry at the team's
//! quota replays instead of answering 429.

use crate::common;

use std::time::{Duration, Instant};

use common::TestApp;
use serde_json::{json, Value};
use snapgate::store::DynStore;

const PIPELINE: &str = "9bad3801a2c561c22c4df9c6abcd0000";
const LIMIT: Duration = Duration::from_secs(20);

fn body(i: usize) -> Value {
    json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("in/{i}.mp4")},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("out/{i}/{{Count}}.jpg")},
        "num": 2, "interval_s": 1, "pipeline_id": PIPELINE
    })
}

/// Status, `idempotent-replayed`, body.
async fn post(app: &TestApp, b: &Value, key: &str) -> (u16, bool, Value) {
    let r = app.post_job(b, Some(key)).await;
    let status = r.status().as_u16();
    let replayed = r
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    (status, replayed, r.json().await.unwrap())
}

async fn job_count(app: &TestApp) -> usize {
    let list: Value = app.get("/v1/snapshot-jobs").await.json().await.unwrap();
    list["jobs"].as_array().unwrap().len()
}

/// A key honoured 2 s: replayed at once, then (no purge has run: no worker) a new job.
async fn a_key_past_its_ttl_makes_a_new_job(store: DynStore) {
    let app = TestApp::builder(store)
        .settings(|s| s.idempotency.ttl_hours = 2.0 / 3_600.0)
        .start()
        .await;
    let (status, replayed, first) = post(&app, &body(1), "ttl-key").await;
    assert_eq!((status, replayed), (202, false), "{first}");
    let (status, replayed, again) = post(&app, &body(1), "ttl-key").await;
    assert_eq!((status, replayed), (202, true), "within the TTL: {again}");
    assert_eq!(again["id"], first["id"]);

    let start = Instant::now();
    let fresh = loop {
        let (status, replayed, j) = post(&app, &body(1), "ttl-key").await;
        assert_eq!(status, 202, "{j}");
        if !replayed {
            break j;
        }
        assert_eq!(j["id"], first["id"], "a replay is of the first job");
        assert!(
            start.elapsed() < LIMIT,
            "the key was still honoured long past its TTL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(fresh["id"], first["id"]);
    assert_eq!(job_count(&app).await, 2);
    // The new job owns the key now: it is what a retry replays.
    let (status, replayed, j) = post(&app, &body(1), "ttl-key").await;
    assert_eq!((status, replayed), (202, true), "{j}");
    assert_eq!(j["id"], fresh["id"]);
    app.stop().await.unwrap();
}
/// The first request waits for a slow MPS answer (3 s) and its client gives up: a retry with its
/// key is told to come back while the first could still be waiting (`submit_wait_ms`, 1 s), then
/// gets the job as it is, still queued: never 409 for longer than the first could wait.
async fn an_abandoned_first_request_is_replayed_once_its_wait_is_over(store: DynStore) {
    let emu = common::app::test_emulator(|_| {}).await;
    let r = reqwest::Client::new()
        .post(format!("{}/_emulator/faults", emu.url()))
        .json(&json!({"slow_next_submits": 1, "slow_ms": 8_000}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let app = TestApp::builder(store)
        .mps(common::app::mps_client(
            &emu.url(),
            common::app::EMU_SECRET,
            10_000,
        ))
        .settings(|s| {
            s.worker.idle_poll_ms = 50;
            s.worker.list_visibility_ms = 0;
            // Windows wide enough for a loaded machine: the second POST lands inside the first one's
            // 4 s wait, and the replay comes long before MPS answers (8 s, within the client's 10 s timeout).
            s.http.submit_wait_ms = 4_000;
        })
        .start()
        .await;
    let died = app
        .req(reqwest::Method::POST, "/v1/snapshot-jobs")
        .header("Idempotency-Key", "abandoned")
        .json(&body(1))
        .timeout(Duration::from_millis(1000))
        .send()
        .await;
    assert!(
        died.as_ref().is_err_and(|e| e.is_timeout()),
        "the first request must still be waiting when its client gives up: {died:?}"
    );

    let (status, _, problem) = post(&app, &body(1), "abandoned").await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["code"], "idempotency_key_in_progress");

    let start = Instant::now();
    let replay = loop {
        let (status, replayed, j) = post(&app, &body(1), "abandoned").await;
        if status != 409 {
            // Its wait is over, though MPS has not answered yet (8 s): the job as it is now.
            assert_eq!((status, replayed), (202, true), "{j}");
            assert_eq!(j["state"], "queued", "{j}");
            break j;
        }
        assert!(
            start.elapsed() < LIMIT,
            "still in progress long after submit_wait_ms"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job_count(&app).await, 1, "one job for the key");
    let id = replay["id"].as_str().unwrap().to_string();
    // The job itself was never abandoned: it reaches MPS once and ends.
    let start = Instant::now();
    loop {
        let j: Value = app
            .get(&format!("/v1/snapshot-jobs/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if j["state"] == "succeeded" {
            break;
        }
        assert!(start.elapsed() < LIMIT, "{j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        common::app::emulator_ledger(&emu.url()).await.get(&id),
        Some(&1)
    );
    app.stop().await.unwrap();
}
async fn keys_are_1_to_255_visible_ascii_characters(store: DynStore) {
    let app = TestApp::builder(store).start().await;
    let longest = "k".repeat(255);
    let (status, replayed, first) = post(&app, &body(1), &longest).await;
    assert_eq!((status, replayed), (202, false), "{first}");
    let (status, replayed, again) = post(&app, &body(1), &longest).await;
    assert_eq!((status, replayed), (202, true), "{again}");
    assert_eq!(again["id"], first["id"]);
    let visible: String = (0x21u8..=0x7e).map(char::from).collect();
    let (status, _, j) = post(&app, &body(2), &visible).await;
    assert_eq!(status, 202, "every visible ASCII character: {j}");

    for bad in ["k".repeat(256), String::new(), "two words".to_string()] {
        let r = app
            .req(reqwest::Method::POST, "/v1/snapshot-jobs")
            .header("Idempotency-Key", bad.as_str())
            .json(&body(3))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad:?}");
        assert_eq!(
            r.headers().get("content-type").unwrap(),
            "application/problem+json"
        );
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["code"], "invalid_header", "{bad:?}: {p}");
        assert!(
            p["detail"].as_str().unwrap().contains("Idempotency-Key"),
            "{p}"
        );
    }
    // A byte outside ASCII.
    let r = app
        .req(reqwest::Method::POST, "/v1/snapshot-jobs")
        .header(
            "Idempotency-Key",
            reqwest::header::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        )
        .json(&body(3))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(job_count(&app).await, 2, "no refused key made a job");
    app.stop().await.unwrap();
}
async fn a_retry_at_the_quota_replays_instead_of_429(store: DynStore) {
    // No worker: the first job stays queued, in flight, holding the team's one place.
    let app = TestApp::builder(store)
        .settings(|s| s.limits.team_max_active_jobs = 1)
        .start()
        .await;
    let (status, _, first) = post(&app, &body(1), "at-quota").await;
    assert_eq!(status, 202, "{first}");
    let (status, _, p) = post(&app, &body(2), "another-key").await;
    assert_eq!(status, 429, "the team is at its quota: {p}");
    assert_eq!(p["code"], "quota_exceeded");
    let r = app.post_job(&body(3), None).await;
    assert_eq!(r.status(), 429);

    let (status, replayed, again) = post(&app, &body(1), "at-quota").await;
    assert_eq!(
        (status, replayed),
        (202, true),
        "a retry replays its answer: {again}"
    );
    assert_eq!(again["id"], first["id"]);
    // The same key with another body is still refused as reused, not as over quota.
    let (status, _, p) = post(&app, &body(9), "at-quota").await;
    assert_eq!(status, 422, "{p}");
    assert_eq!(p["code"], "idempotency_key_reused");
    assert_eq!(job_count(&app).await, 1);
    app.stop().await.unwrap();
}

common::both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_key_past_its_ttl_makes_a_new_job,
    an_abandoned_first_request_is_replayed_once_its_wait_is_over,
    keys_are_1_to_255_visible_ascii_characters,
    a_retry_at_the_quota_replays_instead_of_429,
);
