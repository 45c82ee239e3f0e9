//! Real processes: an emulator and two `snapgate serve` replicas on one Postgres. One replica is
//! SIGKILLed in the middle of a load and restarted; every acknowledged job must reach a final
//! state with exactly one MPS job, and SIGTERM must stop a replica cleanly.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_snapgate");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc {
    child: Child,
    name: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_file(name: &str) -> std::fs::File {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("replicas");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::File::create(dir.join(format!("{name}.log"))).unwrap()
}

fn start_emulator(port: u16) -> Proc {
    start_emulator_with(
        port,
        &[
            "--start-ms",
            "50",
            "--process-ms",
            "300",
            "--latency-ms",
            "30",
            "--drop-response-rate",
            "0.1",
            "--throttle-rate",
            "0.1",
        ],
    )
}

fn start_emulator_with(port: u16, faults: &[&str]) -> Proc {
    let child = Command::new(BIN)
        .args([
            "emulator",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--access-key",
            "testid:testsecret",
        ])
        .args(faults)
        .stdout(Stdio::null())
        .stderr(log_file("emulator"))
        .spawn()
        .unwrap();
    Proc {
        child,
        name: "emulator".into(),
    }
}

fn start_gateway(name: &str, port: u16, db: &str, emulator: u16) -> Proc {
    let child = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "SNAPGATE_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
        )
        .env("SNAPGATE__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", db)
        .env(
            "SNAPGATE__MPS__ENDPOINT",
            format!("http://127.0.0.1:{emulator}"),
        )
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "testid")
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testsecret")
        .env("SNAPGATE__MPS__REQUEST_TIMEOUT_MS", "1000")
        .env("SNAPGATE__HTTP__SUBMIT_WAIT_MS", "0")
        .env("SNAPGATE__AUTH__ENABLED", "false")
        .env("SNAPGATE__WORKER__LEASE_MS", "2000")
        .env("SNAPGATE__WORKER__BACKOFF_BASE_MS", "20")
        .env("SNAPGATE__WORKER__BACKOFF_MAX_MS", "300")
        .env("SNAPGATE__WORKER__STATUS_POLL_MIN_MS", "100")
        .env("SNAPGATE__WORKER__STATUS_POLL_MAX_MS", "500")
        .env("SNAPGATE__WORKER__IDLE_POLL_MS", "200")
        .env("SNAPGATE__WORKER__MAX_ATTEMPTS", "50")
        .env("SNAPGATE__WORKER__SUBMIT_QPS", "200")
        .env("SNAPGATE__WORKER__QUERY_QPS", "400")
        .env("SNAPGATE__WORKER__LIST_VISIBILITY_MS", "1500")
        // The load is one team's: keep the per-team rate limit out of the way.
        .env("SNAPGATE__LIMITS__TEAM_REQUESTS_PER_SECOND", "100000")
        .env("SNAPGATE__LIMITS__TEAM_BURST", "100000")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log_file(name))
        .spawn()
        .unwrap();
    Proc {
        child,
        name: name.into(),
    }
}

async fn wait_ready(http: &reqwest::Client, url: &str) {
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(url).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{url} not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn body(i: usize) -> Value {
    json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("in/{i}.mp4")},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("out/{i}/{{Count}}.jpg")},
        "num": 2, "interval_s": 1,
        "pipeline_id": "9bad3801a2c561c22c4df9c6abcd0000"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_loses_and_duplicates_nothing() {
    let (_store, db) = common::pg_store().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let emu_port = free_port();
    let _emu = start_emulator(emu_port);
    wait_ready(
        &http,
        &format!("http://127.0.0.1:{emu_port}/_emulator/jobs"),
    )
    .await;
    let (pa, pb) = (free_port(), free_port());
    let mut a = start_gateway("a", pa, &db, emu_port);
    let mut b = start_gateway("b", pb, &db, emu_port);
    wait_ready(&http, &format!("http://127.0.0.1:{pa}/readyz")).await;
    wait_ready(&http, &format!("http://127.0.0.1:{pb}/readyz")).await;

    let total = 120;
    let start = Instant::now();
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for wave in 0..3 {
        let mut tasks = Vec::new();
        for i in wave * 40..(wave + 1) * 40 {
            let http = http.clone();
            let port = if i % 2 == 0 { pa } else { pb };
            tasks.push(tokio::spawn(async move {
                let res = http
                    .post(format!("http://127.0.0.1:{port}/v1/snapshot-jobs"))
                    .json(&body(i))
                    .send()
                    .await
                    .ok()?;
                res.status().is_success().then_some(())?;
                let v: Value = res.json().await.ok()?;
                v["id"].as_str().map(str::to_string)
            }));
            if wave == 1 && i == 60 {
                // Mid-load: kill replica a outright (no shutdown, claims left behind).
                a.child.kill().unwrap();
                a.child.wait().unwrap();
            }
        }
        for t in tasks {
            match t.await.unwrap() {
                Some(id) => acknowledged.push(id),
                None => refused += 1,
            }
        }
        if wave == 1 {
            a = start_gateway("a2", pa, &db, emu_port);
            wait_ready(&http, &format!("http://127.0.0.1:{pa}/readyz")).await;
        }
    }
    assert!(
        acknowledged.len() >= total - 40,
        "most requests acknowledged"
    );

    // Every acknowledged job reaches a final state (read through replica b).
    let mut states: HashMap<String, String> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    for id in &acknowledged {
        loop {
            let v: Value = http
                .get(format!("http://127.0.0.1:{pb}/v1/snapshot-jobs/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let state = v["state"].as_str().unwrap().to_string();
            if state == "succeeded" || state == "failed" {
                states.insert(id.clone(), state);
                break;
            }
            assert!(Instant::now() < deadline, "job {id} stuck in {state}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let drained = start.elapsed();
    let failed: Vec<_> = states.iter().filter(|(_, s)| *s != "succeeded").collect();
    assert!(failed.is_empty(), "failed jobs: {failed:?}");

    // Exactly one MPS job per acknowledged gateway job; no MPS job the gateway does not know.
    let ledger: Value = http
        .get(format!("http://127.0.0.1:{emu_port}/_emulator/jobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut per_job: HashMap<String, usize> = HashMap::new();
    for j in ledger["jobs"].as_array().unwrap() {
        let id: String = j["UserData"].as_str().unwrap().chars().take(36).collect();
        *per_job.entry(id).or_default() += 1;
    }
    let duplicates: usize = per_job.values().map(|n| n - 1).sum();
    assert_eq!(duplicates, 0, "duplicate MPS jobs: {per_job:?}");
    let acked: HashSet<&String> = acknowledged.iter().collect();
    for id in &acknowledged {
        assert_eq!(per_job.get(id), Some(&1), "job {id} has no MPS job");
    }
    // Jobs recorded by a's process whose answer was lost in the kill are not acknowledged, but
    // they are still delivered, once.
    let unacked_delivered = per_job.keys().filter(|k| !acked.contains(k)).count();
    println!(
        "replicas: {} acknowledged, {refused} refused during the kill, {unacked_delivered} recorded but unanswered (delivered once), duplicates 0, lost 0, drained in {drained:?}",
        acknowledged.len()
    );

    // SIGTERM: b stops cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &b.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    loop {
        if let Some(exit) = b.child.try_wait().unwrap() {
            assert!(exit.success(), "{} exited with {exit}", b.name);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "replica b did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(a);
}

/// The soak: two replicas on one Postgres and one emulator showing every fault at once — new
/// jobs listed late, 20% throttling, 5% 503s, 5% answers lost after the job was created, one
/// answer slower than the lease — while replica a is SIGKILLed and restarted twice. Lost 0,
/// duplicates 0 (MPS jobs per gateway id in the emulator's ledger), every job final.
/// `SNAPGATE_SOAK_JOBS` sets the size (CI runs 300; the figures in the README are for 5,000).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_under_every_fault_with_two_kills() {
    let total: usize = std::env::var("SNAPGATE_SOAK_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let (store, db) = common::pg_store().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let emu_port = free_port();
    let _emu = start_emulator_with(
        emu_port,
        &[
            "--start-ms",
            "50",
            "--process-ms",
            "300",
            "--latency-ms",
            "5",
            "--list-delay-ms",
            "800",
            "--throttle-rate",
            "0.2",
            "--unavailable-rate",
            "0.05",
            "--drop-response-rate",
            "0.05",
            "--seed",
            "7",
        ],
    );
    let emu = format!("http://127.0.0.1:{emu_port}");
    wait_ready(&http, &format!("{emu}/_emulator/jobs")).await;
    // One answer slower than the lease (2 s).
    http.post(format!("{emu}/_emulator/faults"))
        .json(&json!({"slow_next_submits": 1, "slow_ms": 3000}))
        .send()
        .await
        .unwrap();
    let (pa, pb) = (free_port(), free_port());
    let mut a = start_gateway("soak-a", pa, &db, emu_port);
    let _b = start_gateway("soak-b", pb, &db, emu_port);
    wait_ready(&http, &format!("http://127.0.0.1:{pa}/readyz")).await;
    wait_ready(&http, &format!("http://127.0.0.1:{pb}/readyz")).await;

    let start = Instant::now();
    let mut acknowledged = Vec::new();
    // 64 clients at a time.
    let clients = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let waves = 4;
    let per_wave = total.div_ceil(waves);
    for wave in 0..waves {
        let mut tasks = Vec::new();
        for i in wave * per_wave..((wave + 1) * per_wave).min(total) {
            let http = http.clone();
            // A client as they should be written: an Idempotency-Key, and a retry on the other
            // replica when one does not answer (as a load balancer would route it).
            let ports = if i % 2 == 0 { [pa, pb] } else { [pb, pa] };
            let permit = clients.clone().acquire_owned().await.unwrap();
            tasks.push(tokio::spawn(async move {
                let _permit = permit;
                for attempt in 0..6 {
                    let port = ports[attempt % 2];
                    let res = http
                        .post(format!("http://127.0.0.1:{port}/v1/snapshot-jobs"))
                        .header("Idempotency-Key", format!("soak-{i}"))
                        .json(&body(i))
                        .send()
                        .await;
                    if let Ok(res) = res {
                        if res.status().is_success() {
                            let v: Value = res.json().await.ok()?;
                            return v["id"].as_str().map(str::to_string);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                None
            }));
            if (wave == 1 || wave == 2) && i == wave * per_wave + per_wave / 2 {
                a.child.kill().unwrap();
                a.child.wait().unwrap();
            }
        }
        for t in tasks {
            if let Some(id) = t.await.unwrap() {
                acknowledged.push(id);
            }
        }
        if wave == 1 || wave == 2 {
            a = start_gateway(&format!("soak-a{wave}"), pa, &db, emu_port);
            wait_ready(&http, &format!("http://127.0.0.1:{pa}/readyz")).await;
        }
    }
    // Every job in the database — acknowledged or recorded while its answer was lost in a
    // kill — ends final.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let pending = store.count_active_jobs("default").await.unwrap();
        if pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{pending} jobs not final");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drained = start.elapsed();
    let ledger: Value = http
        .get(format!("{emu}/_emulator/jobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut per_job: HashMap<String, usize> = HashMap::new();
    for j in ledger["jobs"].as_array().unwrap() {
        let id: String = j["UserData"].as_str().unwrap().chars().take(36).collect();
        *per_job.entry(id).or_default() += 1;
    }
    let duplicates: usize = per_job.values().map(|n| n - 1).sum();
    let mut lost = 0;
    let mut failed = 0;
    for id in &acknowledged {
        if per_job.get(id) != Some(&1) {
            lost += 1;
        }
        let job = store
            .get_job(None, snapgate::domain::JobId::parse(id).unwrap())
            .await
            .unwrap()
            .expect("an acknowledged job is recorded");
        if job.state != snapgate::domain::JobState::Succeeded {
            failed += 1;
        }
    }
    let stats: Value = http
        .get(format!("{emu}/_emulator/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let faults: Value = http
        .get(format!("{emu}/_emulator/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    println!(
        "soak: {total} posted, {} acknowledged, {} MPS jobs, duplicates {duplicates}, lost {lost}, not succeeded {failed}, drained in {drained:?}, emulator {stats}",
        acknowledged.len(),
        per_job.len()
    );
    assert_eq!(faults["slow_next_submits"], 0, "the slow answer happened");
    assert_eq!(duplicates, 0, "duplicate MPS jobs");
    assert_eq!(lost, 0, "acknowledged jobs without exactly one MPS job");
    assert_eq!(failed, 0, "acknowledged jobs that did not succeed");
    assert!(
        acknowledged.len() * 10 >= total * 9,
        "most POSTs acknowledged"
    );
    drop(a);
}
