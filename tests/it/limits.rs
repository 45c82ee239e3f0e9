//! Limits as a team meets them, with the real emulator and a real Postgres: the in-flight quota
//! is given back when a job ends, `http.request_timeout_ms` answers 503 with the problem body
//! while the request is really slow (a slow MPS answer), and `/readyz` follows the database:
//! 503 while it cannot be reached (a TCP hop to Postgres that the test cuts), 200 once it is back.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestApp;
use serde_json::{json, Value};
use snapgate::config::DatabaseSettings;
use snapgate::store::PgStore;
use tokio::task::AbortHandle;

const PIPELINE: &str = "9bad3801a2c561c22c4df9c6abcd0000";
const LIMIT: Duration = Duration::from_secs(20);

fn body(i: usize) -> Value {
    json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("in/{i}.mp4")},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("out/{i}/{{Count}}.jpg")},
        "num": 2, "interval_s": 1, "pipeline_id": PIPELINE
    })
}

async fn set_faults(emu: &str, faults: Value) {
    let r = reqwest::Client::new()
        .post(format!("{emu}/_emulator/faults"))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

fn fast_worker(s: &mut snapgate::config::Settings) {
    s.worker.idle_poll_ms = 50;
    s.worker.status_poll_min_ms = 50;
    s.worker.status_poll_max_ms = 200;
    s.worker.backoff_base_ms = 20;
    s.worker.backoff_max_ms = 200;
    s.worker.list_visibility_ms = 0;
    s.worker.max_attempts = 1_000;
}

async fn job(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/snapshot-jobs/{id}"))
        .await
        .json()
        .await
        .unwrap()
}

fn assert_problem(res_status: u16, headers: &reqwest::header::HeaderMap, body: &Value, code: &str) {
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/problem+json",
        "{body}"
    );
    assert_eq!(body["status"], res_status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["request_id"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teams_quota_is_given_back_when_its_job_is_final() {
    let (store, _db) = common::pg_store().await;
    let emu = common::app::test_emulator(|_| {}).await;
    // MPS cannot be asked how the job is doing: it stays in flight for as long as the test
    // needs, whatever the emulator's clock says.
    set_faults(&emu.url(), json!({"unavailable_next_queries": 1_000_000})).await;
    let app = TestApp::builder(store)
        .mps(common::app::mps_client(
            &emu.url(),
            common::app::EMU_SECRET,
            5_000,
        ))
        .settings(|s| {
            fast_worker(s);
            s.http.submit_wait_ms = 30_000;
            s.limits.team_max_active_jobs = 1;
        })
        .start()
        .await;

    let first = app.post_job(&body(1), None).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let first_id = first["id"].as_str().unwrap().to_string();
    assert_eq!(first["state"], "submitted");

    let second = app.post_job(&body(2), None).await;
    assert_eq!(second.status(), 429);
    assert!(second.headers().contains_key("retry-after"));
    let headers = second.headers().clone();
    let problem: Value = second.json().await.unwrap();
    assert_problem(429, &headers, &problem, "quota_exceeded");
    assert_eq!(
        job(&app, &first_id).await["state"],
        "submitted",
        "the first is still in flight"
    );

    // MPS answers again: the first job ends, and its place is free.
    set_faults(&emu.url(), json!({"unavailable_next_queries": 0})).await;
    assert_eq!(app.wait_final(&first_id, LIMIT).await["state"], "succeeded");
    let start = Instant::now();
    let accepted = loop {
        let r = app.post_job(&body(2), None).await;
        if r.status() != 429 {
            break r;
        }
        assert!(
            start.elapsed() < LIMIT,
            "the quota was never given back after the first job ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        accepted.status() == 201 || accepted.status() == 202,
        "{}",
        accepted.status()
    );
    let ledger = common::app::emulator_ledger(&emu.url()).await;
    assert_eq!(
        ledger.len(),
        2,
        "the refused POSTs created nothing: {ledger:?}"
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_slower_than_the_request_timeout_answers_503_with_a_problem() {
    let (store, _db) = common::pg_store().await;
    // The next submit creates its job at once but answers only after 1.5 s.
    let emu = common::app::test_emulator(|_| {}).await;
    set_faults(
        &emu.url(),
        json!({"slow_next_submits": 1, "slow_ms": 1_500}),
    )
    .await;
    let app = TestApp::builder(store)
        .mps(common::app::mps_client(
            &emu.url(),
            common::app::EMU_SECRET,
            10_000,
        ))
        .settings(|s| {
            fast_worker(s);
            // The POST would wait for MPS's answer far longer than the request may take.
            s.http.submit_wait_ms = 30_000;
            s.http.request_timeout_ms = 200;
        })
        .start()
        .await;

    let res = app.post_job(&body(1), None).await;
    assert_eq!(res.status(), 503);
    let headers = res.headers().clone();
    let problem: Value = res.json().await.unwrap();
    assert_problem(503, &headers, &problem, "timeout");
    assert_eq!(
        headers.get("x-request-id").unwrap().to_str().unwrap(),
        problem["request_id"]
    );

    // The job was recorded before the wait: it is not lost with the answer, and reaches MPS once.
    let list: Value = app.get("/v1/snapshot-jobs").await.json().await.unwrap();
    let jobs = list["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{list}");
    let id = jobs[0]["id"].as_str().unwrap().to_string();
    assert_eq!(app.wait_final(&id, LIMIT).await["state"], "succeeded");
    assert_eq!(
        common::app::emulator_ledger(&emu.url()).await.get(&id),
        Some(&1)
    );
    // A fast request in the same app is answered normally.
    assert_eq!(app.get("/v1/snapshot-jobs").await.status(), 200);
    app.stop().await.unwrap();
}

/// A TCP hop from a local port to Postgres that the test can cut (listener closed, every
/// connection through it dropped) and restore on the same port.
struct Hop {
    port: u16,
    target: String,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Hop {
    async fn start(target: &str) -> Hop {
        let hop = Hop {
            port: common::process::free_port(),
            target: target.to_string(),
            tasks: Arc::default(),
        };
        hop.up();
        hop
    }

    fn up(&self) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket
            .bind(format!("127.0.0.1:{}", self.port).parse().unwrap())
            .unwrap();
        let listener = socket.listen(64).unwrap();
        let target = self.target.clone();
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(conn.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
    }

    /// Closes the port and every connection through it.
    fn down(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

async fn readyz(app: &TestApp) -> (u16, Value) {
    let r = app.get("/readyz").await;
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn wait_readyz(app: &TestApp, want: u16) -> Value {
    let start = Instant::now();
    loop {
        let (status, body) = readyz(app).await;
        if status == want {
            return body;
        }
        assert!(
            start.elapsed() < LIMIT,
            "/readyz never answered {want}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_the_database_is_unreachable_and_200_once_it_is_back() {
    let (_, url) = common::pg_store().await;
    let (_, after_host) = url.split_once("@").unwrap();
    let (host_port, db) = after_host.split_once('/').unwrap();
    let hop = Hop::start(host_port).await;
    let via_hop = url.replace(host_port, &format!("127.0.0.1:{}", hop.port));
    assert!(via_hop.ends_with(db));
    let store = Arc::new(
        PgStore::connect(&DatabaseSettings {
            url: via_hop,
            max_connections: 4,
            acquire_timeout_ms: 500,
            ..DatabaseSettings::default()
        })
        .await
        .unwrap(),
    );
    let app = TestApp::builder(store).start().await;
    let (status, health) = readyz(&app).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok");

    hop.down();
    let health = wait_readyz(&app, 503).await;
    assert_eq!(health["status"], "unavailable", "{health}");
    assert_eq!(health["store"], "postgres", "{health}");
    // Liveness is not readiness: the process still answers.
    assert_eq!(app.get("/healthz").await.status(), 200);

    hop.up();
    let health = wait_readyz(&app, 200).await;
    assert_eq!(health["status"], "ok", "{health}");
    // And the API works again on the new connections.
    assert_eq!(app.post_job(&body(1), None).await.status(), 202);
    app.stop().await.unwrap();
}
