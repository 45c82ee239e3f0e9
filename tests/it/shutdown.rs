//! Graceful shutdown under load, by both stop paths: `Application::run_until`'s future (an
//! in-process app, [`TestApp::begin_stop`]) and SIGTERM to the real `snapgate serve`. The same
//! load for both: jobs claimed with the first MPS call in flight (the emulator holds every answer
//! back) and the rest waiting for the upstream budget, and a POST in flight (its headers read, its
//! body not yet sent). After the stop: that POST was answered, every MPS call in flight ended and
//! was recorded, claims not yet sent went back unsent (a stop does not wait for the budget), and
//! no claim is left held: another replica claims every job MPS does not have at once, not after
//! the lease.

use crate::common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::Duration as ChronoDuration;
use serde_json::{json, Value};
use snapgate::domain::{JobId, JobState};
use snapgate::emulator::EmulatorHandle;
use snapgate::store::DynStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::app::{mps_client, test_emulator, EMU_SECRET};
use common::process::{self, Proc};
use common::TestApp;

/// Jobs recorded before the worker starts, so that its first round claims them all.
const JOBS: usize = 12;
/// The upstream budget: one submit at once, then one every half second.
const SUBMIT_QPS: u32 = 2;

fn body(i: usize) -> Value {
    json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("in/{i}.mp4")},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("out/{i}.jpg")}
    })
}

/// An emulator holding every successful answer back 1.5 s (the work, e.g. the job, done first).
async fn slow_emulator() -> EmulatorHandle {
    test_emulator(|c| {
        c.slow_rate = 1.0;
        c.slow_ms = 1500;
    })
    .await
}

/// `JOBS` queued jobs of team `default`, written straight to the store.
async fn queue_jobs(store: &DynStore) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..JOBS {
        let (request, warnings) = snapgate::domain::validate_request(&body(i)).unwrap();
        let job = snapgate::domain::NewJob {
            id: JobId::new(),
            team: "default".into(),
            request,
            warnings,
            created_at: snapgate::store::now(),
            preset: None,
        };
        ids.push(job.id.to_string());
        store.create_job(job, None).await.unwrap();
    }
    ids
}

async fn emulator_json(emu: &EmulatorHandle, path: &str) -> Value {
    reqwest::get(format!("{}{path}", emu.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until the emulator has created a job whose answer it has not written yet: an MPS call
/// is in flight now.
async fn wait_for_a_call_in_flight(emu: &EmulatorHandle) {
    let start = Instant::now();
    loop {
        let jobs = emulator_json(emu, "/_emulator/jobs").await["jobs"]
            .as_array()
            .unwrap()
            .len() as u64;
        let stats = emulator_json(emu, "/_emulator/stats").await;
        let answered = stats["calls"]["SubmitSnapshotJob"]["Success"]
            .as_u64()
            .unwrap_or(0);
        if jobs > answered {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no MPS call in flight: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A POST in flight: its headers sent with `Expect: 100-continue`, its body held back until
/// [`HeldPost::finish`]. Open once the app has read the headers and asked for the body (its
/// `100 Continue`): from then on the request is the app's to answer.
struct HeldPost {
    stream: TcpStream,
    body: Vec<u8>,
}

/// Reads up to the end of a response head.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.unwrap();
        assert_eq!(n, 1, "connection closed after {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

impl HeldPost {
    async fn open(addr: &str, body: &Value) -> HeldPost {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let body = serde_json::to_vec(body).unwrap();
        let head = format!(
            "POST /v1/snapshot-jobs HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer = read_head(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 100 "), "{answer}");
        HeldPost { stream, body }
    }

    /// Sends the body; the answer's status and JSON body.
    async fn finish(mut self) -> (u16, Value) {
        self.stream.write_all(&self.body).await.unwrap();
        let head = read_head(&mut self.stream).await;
        let status: u16 = head[9..12].parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no content-length: {head}"));
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }
}

/// Waits until `addr` refuses connections: the stop has begun (the listener is closed), so a
/// request still open is one the drain must answer.
async fn wait_until_closed(addr: &str) {
    let start = Instant::now();
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{addr} still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// After the stop: what both stop paths must show. `queued`: the jobs claimed before the stop;
/// `held`: the answer of the POST that was in flight.
async fn check_after_stop(
    store: &DynStore,
    emu: &EmulatorHandle,
    queued: &[String],
    held: (u16, Value),
) {
    let (status, job) = held;
    assert_eq!(status, 202, "the POST in flight was answered: {job}");
    let held_id = job["id"].as_str().unwrap().to_string();
    assert!(store
        .get_job(None, JobId::parse(&held_id).unwrap())
        .await
        .unwrap()
        .is_some());

    // Every MPS call in flight ended and was recorded: each job MPS has is `submitted` with
    // that MPS job, and the emulator wrote every answer it held back (none abandoned).
    let ledger = emulator_json(emu, "/_emulator/jobs").await;
    let at_mps: Vec<(String, String)> = ledger["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["UserData"].as_str().unwrap().to_string(),
                j["Id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(!at_mps.is_empty());
    for (id, mps_id) in &at_mps {
        let job = store
            .get_job(None, JobId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_ne!(
            job.state,
            JobState::Queued,
            "MPS's answer was recorded: {job:?}"
        );
        assert_eq!(job.mps.job_id.as_deref(), Some(mps_id.as_str()));
    }
    let stats = emulator_json(emu, "/_emulator/stats").await;
    let submits = &stats["calls"]["SubmitSnapshotJob"];
    assert_eq!(
        submits["Abandoned"],
        Value::Null,
        "a call was cut off: {stats}"
    );
    assert_eq!(submits["Success"], at_mps.len(), "{stats}");
    assert_eq!(stats["slow"]["SubmitSnapshotJob"], at_mps.len(), "{stats}");

    // The stop did not wait for the budget: claimed jobs not yet sent went back unsent.
    let sent: HashSet<&str> = at_mps.iter().map(|(id, _)| id.as_str()).collect();
    let unsent = queued
        .iter()
        .filter(|id| !sent.contains(id.as_str()))
        .count();
    assert!(
        unsent > 0,
        "every claimed job was sent during the stop ({SUBMIT_QPS}/s budget)"
    );

    // No claim is left: another replica claims every job MPS does not have now, not after the
    // lease (60 s), and none of them has an attempt cut off.
    let now = store.clock().await.unwrap();
    let rest = store
        .claim_dispatch("next-replica", now, now + ChronoDuration::seconds(30), 100)
        .await
        .unwrap();
    let mut rest_ids: Vec<String> = rest.iter().map(|c| c.job.id.to_string()).collect();
    let mut expected: Vec<String> = queued
        .iter()
        .chain([&held_id])
        .filter(|id| !sent.contains(id.as_str()))
        .cloned()
        .collect();
    rest_ids.sort();
    expected.sort();
    assert_eq!(
        rest_ids, expected,
        "every job not at MPS is free to claim at once"
    );
    assert!(
        rest.iter().all(|c| c.attempt_started_at.is_none()),
        "no attempt was cut off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_under_load_answers_everyone_and_keeps_no_claim() {
    let (store, _db) = common::pg_store().await;
    let emu = slow_emulator().await;
    let queued = queue_jobs(&store).await;
    let mut app = TestApp::builder(store.clone())
        .mps(mps_client(&emu.url(), EMU_SECRET, 10_000))
        .settings(|s| {
            s.http.submit_wait_ms = 0;
            s.worker.batch_size = 16;
            s.worker.submit_qps = SUBMIT_QPS;
            s.worker.lease_ms = 60_000;
        })
        .start()
        .await;
    wait_for_a_call_in_flight(&emu).await;
    let held = HeldPost::open(app.base.trim_start_matches("http://"), &body(JOBS)).await;
    app.begin_stop();
    wait_until_closed(app.base.trim_start_matches("http://")).await;
    let answer = held.finish().await;
    app.stop().await.expect("a clean stop");
    check_after_stop(&store, &emu, &queued, answer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_answers_everyone_and_keeps_no_claim() {
    let (store, db) = common::pg_store().await;
    let emu = slow_emulator().await;
    let queued = queue_jobs(&store).await;
    let port = process::free_port();
    let mut cmd = process::gateway_command(port, &db, &emu.url());
    cmd.env("SNAPGATE__HTTP__SUBMIT_WAIT_MS", "0")
        .env("SNAPGATE__WORKER__BATCH_SIZE", "16")
        .env("SNAPGATE__WORKER__SUBMIT_QPS", SUBMIT_QPS.to_string())
        .env("SNAPGATE__WORKER__LEASE_MS", "60000")
        .env("SNAPGATE__MPS__REQUEST_TIMEOUT_MS", "10000");
    let mut gateway = Proc::spawn("shutdown", "sigterm", cmd);
    let addr = format!("127.0.0.1:{port}");
    process::wait_ready(&reqwest::Client::new(), &format!("http://{addr}/healthz")).await;
    wait_for_a_call_in_flight(&emu).await;
    let held = HeldPost::open(&addr, &body(JOBS)).await;
    gateway.sigterm();
    wait_until_closed(&addr).await;
    let answer = held.finish().await;
    let exit = gateway.wait_exit(Duration::from_secs(30)).await;
    assert!(exit.success(), "exit {exit}; log: {}", gateway.log_text());
    check_after_stop(&store, &emu, &queued, answer).await;
}
