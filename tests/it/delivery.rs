//! Delivery end to end: REST API → store → worker → signed HTTP → the emulator, and back.
//! Faults are injected by the emulator; the ledger (`/_emulator/jobs`) is used to count MPS jobs
//! per gateway job: exactly one, whatever happened.

use crate::common;

use common::app::emulator_ledger;
use common::TestApp;

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use snapgate::config::Settings;
use snapgate::emulator::{EmulatorConfig, EmulatorHandle};
use snapgate::mps::client::MpsApi;
use snapgate::store::DynStore;

const SECRET: &str = common::app::EMU_SECRET;
pub const PIPELINE: &str = "9bad3801a2c561c22c4df9c6abcd0000";

async fn emulator(tweak: impl FnOnce(&mut EmulatorConfig)) -> EmulatorHandle {
    common::app::test_emulator(tweak).await
}

fn client(url: &str, secret: &str, timeout_ms: u64) -> Arc<dyn MpsApi> {
    common::app::mps_client(url, secret, timeout_ms)
}

/// On top of `TestAppBuilder::fast_worker`.
fn fast_worker(s: &mut Settings) {
    s.worker.backoff_max_ms = 400;
    s.worker.status_poll_max_ms = 500;
    s.worker.idle_poll_ms = 100;
    s.worker.max_attempts = 30;
    // The emulator lists a new job at once unless a test delays it.
    s.worker.list_visibility_ms = 0;
}

async fn app(store: DynStore, mps: Arc<dyn MpsApi>, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    TestApp::builder(store)
        .mps(mps)
        .fast_worker()
        .settings(|s| {
            fast_worker(s);
            tweak(s);
        })
        .start()
        .await
}

fn job_body(i: usize) -> Value {
    json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("uploads/clip {i}.mp4")},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("thumbs/{i}/{{Count}}.jpg")},
        "time_ms": 1000, "interval_s": 2, "num": 3,
        "sprite": {"output": {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("sprites/{i}.jpg")}, "lines": 2, "columns": 2},
        "pipeline_id": PIPELINE,
        "user_data": format!("job {i}")
    })
}

/// What the delivery tests ask of the app.
trait Delivery {
    async fn submit(&self, body: &Value) -> (StatusCode, Value);
}

impl Delivery for TestApp {
    async fn submit(&self, body: &Value) -> (StatusCode, Value) {
        let res = self.post_job(body, None).await;
        (res.status(), res.json().await.unwrap())
    }
}

/// The emulator's call and fault counters (`/_emulator/stats`).
async fn emulator_stats(url: &str) -> Value {
    reqwest::get(format!("{url}/_emulator/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn a_job_goes_all_the_way_to_succeeded(store: DynStore) {
    let emu = emulator(|_| {}).await;
    // The POST waits for MPS's answer as long as it takes (no window of time to meet).
    let app = app(store, client(&emu.url(), SECRET, 5_000), |s| {
        s.http.submit_wait_ms = 60_000
    })
    .await;
    let (status, job) = app.submit(&job_body(1)).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "accepted within the wait budget: {job}"
    );
    assert_eq!(job["state"], "submitted");
    let mps_id = job["mps"]["job_id"].as_str().unwrap().to_string();
    assert_eq!(mps_id.len(), 32);
    let id = job["id"].as_str().unwrap();
    let done = app.wait_final(id, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["mps"]["state"], "Success");
    assert_eq!(done["mps"]["count"], 3);
    assert_eq!(done["mps"]["tile_count"], 1);
    assert_eq!(done["mps"]["response"]["Id"], mps_id.as_str());
    assert_eq!(done["attempts"], 1);
    // What MPS received: the raw key URL-encoded, the gateway id in UserData.
    let jobs: Value = reqwest::get(format!("{}/_emulator/jobs", emu.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sent = &jobs["jobs"][0];
    assert_eq!(
        sent["UserData"],
        id.to_string(),
        "only the gateway id goes to MPS"
    );
    assert_eq!(sent["Input"]["Object"], "uploads%2Fclip%201.mp4");
    let history: Value = app
        .http
        .get(format!("{}/v1/snapshot-jobs/{id}/mps-responses", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions[0], "SubmitSnapshotJob");
    assert!(
        actions[1..].iter().all(|a| *a == "QuerySnapshotJobList") && actions.len() >= 2,
        "{actions:?}"
    );
    assert_eq!(emulator_ledger(&emu.url()).await.get(id), Some(&1));
}

async fn mps_failures_end_failed_with_mps_code(store: DynStore) {
    let emu = emulator(|_| {}).await;
    // The emulator fails jobs whose input key contains "fail".
    let app = app(store, client(&emu.url(), SECRET, 5_000), |_| {}).await;
    let mut body = job_body(2);
    body["input"]["object"] = json!("uploads/will-fail.mp4");
    let (_, job) = app.submit(&body).await;
    let done = app
        .wait_final(job["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["mps"]["state"], "Fail");
    assert!(
        done["mps"]["code"]
            .as_str()
            .unwrap()
            .starts_with("InvalidParameter"),
        "{done}"
    );
    assert!(done["mps"]["message"].is_string());
    // Sent once, never again: one submit in the emulator's ledger and calls, one attempt.
    let id = job["id"].as_str().unwrap();
    assert_eq!(done["attempts"], 1, "{done}");
    assert_eq!(emulator_ledger(&emu.url()).await.get(id), Some(&1));
    let stats = emulator_stats(&emu.url()).await;
    assert_eq!(
        stats["calls"]["SubmitSnapshotJob"],
        json!({"Success": 1}),
        "{stats}"
    );
}

/// A wrong secret is fatal: failed at once with MPS's code, never retried. (Its own database:
/// a healthy replica on the same database would rightly deliver the job.)
async fn a_wrong_gateway_secret_pauses_dispatch_and_keeps_jobs_queued(store: DynStore) {
    let emu = emulator(|_| {}).await;
    let app = app(store, client(&emu.url(), "wrong-secret", 5_000), |s| {
        s.http.submit_wait_ms = 0
    })
    .await;
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..3 {
            let (status, job) = app.submit(&job_body(i)).await;
            assert_eq!(status, StatusCode::ACCEPTED);
            v.push(job["id"].as_str().unwrap().to_string());
        }
        v
    };
    // The worker's first call is refused: dispatch pauses and readiness says why.
    let start = Instant::now();
    let ready = loop {
        let r = app.get("/readyz").await;
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            break r.json::<Value>().await.unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "dispatch never paused: {}",
            r.text().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ready["mps"]["trouble"], "credentials", "{ready}");
    assert_eq!(ready["mps"]["code"], "SignatureDoesNotMatch");
    for id in &ids {
        let job = app.job(id).await;
        assert_eq!(job["state"], "queued", "the job is not at fault: {job}");
        if let Some(e) = job["last_error"].as_object() {
            assert_eq!(e["code"], "SignatureDoesNotMatch");
            let m = e["message"].as_str().unwrap();
            assert!(
                !m.contains("string to sign") && !m.contains(common::app::EMU_KEY_ID),
                "{m}"
            );
        }
        let history: Value = app
            .get(&format!("/v1/snapshot-jobs/{id}/mps-responses"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            history,
            json!([]),
            "the gateway's own error is not the job's history"
        );
    }
    assert!(emulator_ledger(&emu.url()).await.is_empty());
}

async fn retryable_errors_exhaust_attempts(store: DynStore) {
    let emu = emulator(|c| c.unavailable_rate = 1.0).await;
    let app = app(store, client(&emu.url(), SECRET, 5_000), |s| {
        s.worker.max_attempts = 3
    })
    .await;
    let (status, job) = app.submit(&job_body(4)).await;
    assert!(status == StatusCode::ACCEPTED || status == StatusCode::CREATED);
    let done = app
        .wait_final(job["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["attempts"], 3);
    assert_eq!(done["last_error"]["code"], "ServiceUnavailable");
    assert!(emulator_ledger(&emu.url()).await.is_empty());
    // The fault answered each of the three submits, and nothing else reached MPS.
    let stats = emulator_stats(&emu.url()).await;
    assert_eq!(
        stats["calls"]["SubmitSnapshotJob"],
        json!({"ServiceUnavailable": 3}),
        "{stats}"
    );
}

/// The proof: throttling, 5xx, latency and dropped responses, N jobs through the API,
/// all succeed, exactly one MPS job each.
async fn faults_never_lose_or_duplicate_jobs(store: DynStore) {
    let emu = emulator(|c| {
        c.throttle_rate = 0.2;
        c.unavailable_rate = 0.1;
        c.drop_response_rate = 0.25;
        c.latency_ms = 5;
        c.seed = Some(7);
    })
    .await;
    let app = app(store, client(&emu.url(), SECRET, 2_000), |s| {
        s.http.submit_wait_ms = 0;
        // The worker's idea of the client's timeout (when a lookup can trust a miss).
        s.mps.request_timeout_ms = 2_000;
    })
    .await;
    let n = 40;
    let mut ids = Vec::new();
    for i in 0..n {
        let (status, job) = app.submit(&job_body(i)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    let start = Instant::now();
    for id in &ids {
        let done = app.wait_final(id, Duration::from_secs(60)).await;
        assert_eq!(done["state"], "succeeded", "{done}");
    }
    let ledger = emulator_ledger(&emu.url()).await;
    let duplicates: usize = ledger.values().map(|c| c - 1).sum();
    for id in &ids {
        assert_eq!(
            ledger.get(id),
            Some(&1),
            "job {id}: {:?} MPS jobs",
            ledger.get(id)
        );
    }
    assert_eq!(ledger.len(), n);
    // Every kind of fault was injected: throttled and 503 submits (nothing created), answers
    // lost after the job was created; and jobs were tried again for them.
    let stats = emulator_stats(&emu.url()).await;
    let submits = &stats["calls"]["SubmitSnapshotJob"];
    for fault in ["Throttling.User", "ServiceUnavailable", "Dropped"] {
        assert!(submits[fault].as_u64() > Some(0), "no {fault}: {stats}");
    }
    let mut retried = 0;
    for id in &ids {
        if app.job(id).await["attempts"].as_u64() > Some(1) {
            retried += 1;
        }
    }
    assert!(retried > 0, "no job needed a second attempt");
    println!(
        "faults: {n} jobs, drained in {:?}, duplicates {duplicates}, lost 0, emulator calls {}",
        start.elapsed(),
        stats["calls"]
    );
}

/// The worker driven synchronously, no HTTP and no polling of the API: record jobs in the store,
/// run rounds until nothing is left to do, then every job is final and delivered once.
async fn worker_runs_until_idle(store: DynStore) {
    let emu = emulator(|c| {
        c.drop_response_rate = 0.3;
        c.seed = Some(7);
    })
    .await;
    let mut settings = common::test_settings();
    fast_worker(&mut settings);
    settings.mps.request_timeout_ms = 2_000;
    let worker = snapgate::worker::Worker::new(
        store.clone(),
        client(&emu.url(), SECRET, 2_000),
        &settings,
        snapgate::signals::JobSignals::default(),
    );
    let mut ids = Vec::new();
    for i in 0..12 {
        let (request, warnings) = snapgate::domain::validate_request(&job_body(i)).unwrap();
        let job = snapgate::domain::NewJob {
            id: snapgate::domain::JobId::new(),
            team: "t".into(),
            request,
            warnings,
            created_at: snapgate::store::now(),
            preset: None,
        };
        ids.push(job.id);
        store.create_job(job, None).await.unwrap();
    }
    worker
        .run_until_idle(Duration::from_secs(30))
        .await
        .unwrap();
    let ledger = emulator_ledger(&emu.url()).await;
    for id in ids {
        let job = store.get_job(None, id).await.unwrap().unwrap();
        assert_eq!(job.state, snapgate::domain::JobState::Succeeded, "{job:?}");
        assert_eq!(ledger.get(&id.to_string()), Some(&1));
    }
    let stats = emulator_stats(&emu.url()).await;
    assert!(
        stats["calls"]["SubmitSnapshotJob"]["Dropped"].as_u64() > Some(0),
        "no answer was lost: {stats}"
    );
}

/// MPS slower than the client's timeout: the job is created, its answer comes only after the
/// client gave up. The timeout path runs (the emulator saw its slow answer abandoned), and the
/// job is looked up and adopted, never sent again: one MPS job, no submit answer in its history.
async fn an_answer_slower_than_the_client_timeout_is_adopted_not_resent(store: DynStore) {
    let emu = emulator(|_| {}).await;
    let r = reqwest::Client::new()
        .post(format!("{}/_emulator/faults", emu.url()))
        .json(&json!({"slow_next_submits": 1, "slow_ms": 4_000}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let app = app(store, client(&emu.url(), SECRET, 1_000), |s| {
        s.http.submit_wait_ms = 0;
        s.mps.request_timeout_ms = 1_000;
    })
    .await;
    let (status, job) = app.submit(&job_body(5)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = job["id"].as_str().unwrap();
    let done = app.wait_final(id, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2, "the submit, then the lookup: {done}");
    assert_eq!(emulator_ledger(&emu.url()).await.get(id), Some(&1));
    let stats = emulator_stats(&emu.url()).await;
    assert_eq!(stats["slow"]["SubmitSnapshotJob"], 1, "{stats}");
    assert_eq!(
        stats["calls"]["SubmitSnapshotJob"],
        json!({"Abandoned": 1}),
        "the client stopped waiting, and nothing was sent again: {stats}"
    );
    let history: Value = app
        .get(&format!("/v1/snapshot-jobs/{id}/mps-responses"))
        .await
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert!(
        !actions.is_empty() && actions.iter().all(|a| *a == "QuerySnapshotJobList"),
        "adopted from a lookup: {actions:?}"
    );
}

common::both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_job_goes_all_the_way_to_succeeded,
    worker_runs_until_idle,
    mps_failures_end_failed_with_mps_code,
    a_wrong_gateway_secret_pauses_dispatch_and_keeps_jobs_queued,
    retryable_errors_exhaust_attempts,
    faults_never_lose_or_duplicate_jobs,
    an_answer_slower_than_the_client_timeout_is_adopted_not_resent
);

/// Two replicas on one Postgres share the upstream budget (one token bucket in the store, taken
/// by `acquire_budget`): against an emulator enforcing MPS's account limit (20 submits/s), a
/// burst of jobs posted to both goes out under that limit. The emulator's throttle counter shows
/// (almost) no `Throttling.User` (a replica on its own bucket, or none, meets dozens), and its
/// ledger's creation times show no second with more submits than the budget allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_the_upstream_budget() {
    const MPS_LIMIT: u32 = 20;
    // As the default configuration does (45 for MPS's 50), a margin under the account limit.
    const BUDGET: u32 = 18;
    let (store, _db) = common::pg_store().await;
    let emu = emulator(|c| c.submit_qps = MPS_LIMIT).await;
    let mut replicas = Vec::new();
    for _ in 0..2 {
        replicas.push(
            app(store.clone(), client(&emu.url(), SECRET, 5_000), |s| {
                s.http.submit_wait_ms = 0;
                s.worker.submit_qps = BUDGET;
            })
            .await,
        );
    }
    let n = 60;
    let mut posts = Vec::new();
    for i in 0..n {
        let (http, url) = (
            replicas[i % 2].http.clone(),
            replicas[i % 2].url("/v1/snapshot-jobs"),
        );
        posts.push(tokio::spawn(async move {
            let res = http.post(url).json(&job_body(i)).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::ACCEPTED);
        }));
    }
    for p in posts {
        p.await.unwrap();
    }
    // Every job at MPS once.
    let start = Instant::now();
    loop {
        let ledger = emulator_ledger(&emu.url()).await;
        if ledger.len() == n {
            assert!(ledger.values().all(|c| *c == 1), "{ledger:?}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} of {n} jobs at MPS",
            ledger.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = emulator_stats(&emu.url()).await;
    let throttled = stats["calls"]["SubmitSnapshotJob"]["Throttling.User"]
        .as_u64()
        .unwrap_or(0);
    // A token bucket keeps each second under the budget at the gateway; a submit delayed on its
    // way (a loaded machine) may still meet a full second at the emulator now and then.
    println!("budget: {n} jobs, {throttled} throttled, emulator {stats}");
    assert!(throttled <= 2, "{throttled} submits throttled: {stats}");
    // The rate MPS saw, from its own creation times: no 1-second window holds more than the
    // bucket allows (its one-token burst plus a second's refill).
    let ledger: Value = reqwest::get(format!("{}/_emulator/jobs", emu.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut created: Vec<i64> = ledger["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["Emulator"]["created_ms"].as_i64().unwrap())
        .collect();
    created.sort();
    let allowed = BUDGET as usize + 1;
    for (i, t) in created.iter().enumerate() {
        let in_window = created[i..].iter().take_while(|u| **u < t + 1000).count();
        assert!(
            in_window <= allowed,
            "{in_window} submits within 1 s from {t} (budget {BUDGET}/s)"
        );
    }
    let span_ms = created[n - 1] - created[0];
    assert!(
        span_ms >= ((n - allowed) as i64 * 1000) / BUDGET as i64,
        "{n} submits in {span_ms} ms"
    );
    for r in replicas {
        r.stop().await.unwrap();
    }
}

/// A job posted to one replica wakes another replica's dispatcher through Postgres
/// `LISTEN/NOTIFY`: with the polling fallback at an hour, longer than any run of this test, only
/// the notification can bring the job to MPS, which is waited for (with a generous deadline).
/// The worker's first dispatch round may still be running when the job is posted (it would take
/// the job without a wake-up), so the notification itself is also caught by a listener of the
/// test's own, which nothing else wakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notify_wakes_another_replica_long_before_the_polling_fallback() {
    let (store, db) = common::pg_store().await;
    let emu = emulator(|_| {}).await;
    let worker = app(store.clone(), client(&emu.url(), SECRET, 5_000), |s| {
        s.worker.idle_poll_ms = 3_600_000;
    })
    .await;
    let heard = Arc::new(tokio::sync::Notify::new());
    store.spawn_job_listener(heard.clone());
    // Both LISTEN connections are up, the worker's and the test's (so the job below is
    // announced to them).
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let start = Instant::now();
    loop {
        let (listening,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if listening >= 2 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{listening} of 2 LISTEN connections after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another replica, with no worker, takes the POST.
    let front = TestApp::builder(store.clone())
        .settings(|s| s.http.submit_wait_ms = 0)
        .start()
        .await;
    let (status, job) = front.submit(&job_body(1)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = job["id"].as_str().unwrap().to_string();
    tokio::time::timeout(Duration::from_secs(60), heard.notified())
        .await
        .expect("the new job was never announced to listeners");
    let posted = Instant::now();
    while emulator_ledger(&emu.url()).await.get(&id) != Some(&1) {
        assert!(
            posted.elapsed() < Duration::from_secs(60),
            "not dispatched after 60 s: the notification never woke the worker"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    front.stop().await.unwrap();
    worker.stop().await.unwrap();
}
