//! Real processes (`common::process`): an emulator and two `snapgate serve` replicas on one
//! Postgres. One replica is SIGKILLed in the middle of a load and restarted; every job must reach
//! a final state with exactly one MPS job. (SIGTERM under load: tests/it/shutdown.rs.)
//!
//! The replicas run with auth on and distinctive secrets (the MPS AccessKeySecret, the master
//! key, a team token, a Postgres password in the URL); after each test no process's captured
//! log (every replica's, the emulator's) may hold any of them.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use snapgate::crypto::MasterKey;
use snapgate::services::keys::issue_key;
use snapgate::store::DynStore;

use common::process::{self, free_port, wait_ready, Proc};

/// The MPS key the replicas sign with (the emulator accepts it besides the common test key).
const MPS_KEY_ID: &str = "LTAIreplicasCanary";
const MPS_SECRET: &str = "MPS-CANARY-4c1d9e7a2b6f-replicas";
/// The master key's 32 bytes (configured as their base64).
const MASTER_KEY: &[u8; 32] = b"MASTER-KEY-CANARY-8e2f0b6d1a3c57";
const PG_PASSWORD: &str = "PGPASS-CANARY-7e3f9a1c5b";
/// Every piece this long of every secret is searched for: a truncated secret is a leak too.
const PIECE: usize = 16;

fn master_key_b64() -> String {
    base64::engine::general_purpose::STANDARD.encode(MASTER_KEY)
}

/// What the replicas of one test share: the database URL (carrying the password canary; trust
/// auth ignores it), the token of team `default`, and every captured log of the test's
/// processes.
struct Fleet {
    db: String,
    token: String,
    logs: Vec<PathBuf>,
}

impl Fleet {
    async fn new(store: &DynStore, plain_db: &str) -> Fleet {
        let master = MasterKey::from_base64(&master_key_b64()).unwrap();
        let token = issue_key(store, &master, "default", false)
            .await
            .unwrap()
            .token;
        let (scheme, rest) = plain_db.split_once("://").unwrap();
        let db = match rest.split_once('@') {
            Some((user, host)) => {
                assert!(!user.contains(':'), "the test URL already has a password");
                format!("{scheme}://{user}:{PG_PASSWORD}@{host}")
            }
            None => format!("{scheme}://postgres:{PG_PASSWORD}@{rest}"),
        };
        Fleet {
            db,
            token,
            logs: Vec::new(),
        }
    }

    /// The emulator of the test, also accepting the replicas' key; its log is scanned.
    fn emulator(&mut self, group: &str, port: u16, args: &[&str]) -> Proc {
        let key = format!("{MPS_KEY_ID}:{MPS_SECRET}");
        let args: Vec<&str> = ["--access-key", key.as_str()]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let emu = process::emulator(group, port, &args);
        self.logs.push(emu.log.clone());
        emu
    }

    /// A replica for these tests: auth on, short leases and backoffs, the budget and the team
    /// rate limit out of the way. Its log is scanned.
    fn gateway(&mut self, name: &str, port: u16, emulator: u16) -> Proc {
        let gw = start_gateway(name, port, &self.db, emulator);
        self.logs.push(gw.log.clone());
        gw
    }

    /// A client of the replicas: team `default`'s token on every request.
    fn client(&self, timeout: Duration) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        reqwest::Client::builder()
            .timeout(timeout)
            .default_headers(headers)
            .build()
            .unwrap()
    }

    /// No captured log of the test's processes holds a secret, whole or any [`PIECE`]-character
    /// piece of it; a failure names the log and the kind of secret, never the secret.
    fn assert_no_secret_in_logs(&self) {
        let master_clear = String::from_utf8(MASTER_KEY.to_vec()).unwrap();
        let canaries = [
            ("the MPS AccessKeySecret", MPS_SECRET.to_string()),
            ("the master key (base64)", master_key_b64()),
            ("the master key (its bytes)", master_clear),
            ("the team token", self.token.clone()),
            ("the Postgres password", PG_PASSWORD.to_string()),
        ];
        let pieces = |secret: &str| -> Vec<String> {
            let chars: Vec<char> = secret.chars().collect();
            if chars.len() <= PIECE {
                vec![secret.to_string()]
            } else {
                chars.windows(PIECE).map(|w| w.iter().collect()).collect()
            }
        };
        // No piece of one secret is in another: a finding names the secret that leaked.
        for (name, secret) in &canaries {
            for (other, o) in &canaries {
                assert!(
                    name == other || !pieces(secret).iter().any(|p| o.contains(p.as_str())),
                    "{name} and {other} share a piece"
                );
            }
        }
        let mut found = Vec::new();
        for log in &self.logs {
            let text = std::fs::read_to_string(log)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", log.display()));
            assert!(
                text.contains("listening"),
                "{} is not a started process's log",
                log.display()
            );
            for (name, secret) in &canaries {
                if pieces(secret).iter().any(|p| text.contains(p.as_str())) {
                    found.push(format!("{name} in {}", log.display()));
                }
            }
        }
        assert!(found.is_empty(), "secrets in the logs: {found:#?}");
        println!(
            "{} logs checked against {} secrets: none found",
            self.logs.len(),
            canaries.len()
        );
    }
}

/// A replica on `db` and the emulator at `emulator`, signing with the canary MPS key.
fn start_gateway(name: &str, port: u16, db: &str, emulator: u16) -> Proc {
    let mut cmd = process::gateway_command(port, db, &format!("http://127.0.0.1:{emulator}"));
    // snapgate's own lines at DEBUG: more for the secret scan to read.
    cmd.env("RUST_LOG", "info,snapgate=debug")
        .env("SNAPGATE__AUTH__ENABLED", "true")
        .env("SNAPGATE__AUTH__MASTER_KEY", master_key_b64())
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", MPS_KEY_ID)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", MPS_SECRET)
        .env("SNAPGATE__MPS__REQUEST_TIMEOUT_MS", "1000")
        .env("SNAPGATE__HTTP__SUBMIT_WAIT_MS", "0")
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
        .env("SNAPGATE__LIMITS__TEAM_BURST", "100000");
    Proc::spawn("replicas", name, cmd)
}

fn body(i: usize) -> Value {
    json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("in/{i}.mp4")},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("out/{i}/{{Count}}.jpg")},
        "num": 2, "interval_s": 1,
        "pipeline_id": "9bad3801a2c561c22c4df9c6abcd0000"
    })
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

async fn set_faults(http: &reqwest::Client, emu: &str, faults: Value) {
    let r = http
        .post(format!("{emu}/_emulator/faults"))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

/// MPS jobs per gateway job id (the UserData), from the emulator's ledger.
async fn ledger(http: &reqwest::Client, emu: &str) -> HashMap<String, usize> {
    let mut per_job: HashMap<String, usize> = HashMap::new();
    for j in get_json(http, &format!("{emu}/_emulator/jobs")).await["jobs"]
        .as_array()
        .unwrap()
    {
        let id: String = j["UserData"].as_str().unwrap().chars().take(36).collect();
        *per_job.entry(id).or_default() += 1;
    }
    per_job
}

/// One POST as a client behind a load balancer sends it: to `ports[0]`, and once to `ports[1]`
/// when that does not answer. The job id, and each failed try with its port and what happened.
async fn post_with_failover(
    http: reqwest::Client,
    ports: [u16; 2],
    i: usize,
) -> (Option<String>, Vec<(u16, String)>) {
    let mut failures = Vec::new();
    for port in ports {
        match http
            .post(format!("http://127.0.0.1:{port}/v1/snapshot-jobs"))
            .json(&body(i))
            .send()
            .await
        {
            Ok(res) if res.status().is_success() => {
                let v: Value = res.json().await.unwrap();
                return (Some(v["id"].as_str().unwrap().to_string()), failures);
            }
            Ok(res) => failures.push((port, format!("status {}", res.status()))),
            Err(e) => failures.push((port, format!("transport: {e}"))),
        }
    }
    (None, failures)
}

/// Waits until replica `pid` holds a claim whose MPS call is in flight with the job already
/// created on MPS (the emulator holds its answer back); those jobs' ids. Jobs already at MPS in
/// `answered_before` (created before answers were held back) are left out: their answer may be
/// recorded between this look and the kill, and such a job is rightly never claimed again.
async fn calls_in_flight_on(
    pool: &sqlx::PgPool,
    http: &reqwest::Client,
    emu: &str,
    pid: u32,
    answered_before: &HashMap<String, usize>,
) -> Vec<String> {
    let start = Instant::now();
    loop {
        let held: Vec<(String,)> = sqlx::query_as(
            "SELECT id::text FROM jobs WHERE lease_owner LIKE $1 AND attempt_started_at IS NOT NULL",
        )
        .bind(format!("snapgate-{pid}-%"))
        .fetch_all(pool)
        .await
        .unwrap();
        let at_mps = ledger(http, emu).await;
        let held: Vec<String> = held
            .into_iter()
            .map(|(id,)| id)
            .filter(|id| at_mps.contains_key(id) && !answered_before.contains_key(id))
            .collect();
        if !held.is_empty() {
            return held;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "replica {pid} never had a call in flight"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `snapgate_reconciliations_total{outcome="adopted"}` of the replica at `port`.
async fn adopted(http: &reqwest::Client, port: u16) -> u64 {
    let text = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("snapgate_reconciliations_total{outcome=\"adopted\"} "))
        .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        .unwrap_or(0)
}

/// Two replicas under load, one SIGKILLed while it holds a claim whose MPS call is in flight
/// (MPS has the job, the answer is held back), then restarted. Every POST is acknowledged (a
/// client retries on the other replica, and only tries on the killed one fail, without an
/// answer); the killed replica's claim is taken over after its lease and reconciled (the job
/// MPS has is adopted, not sent again); every job in the database, acknowledged or recorded
/// while its answer was lost, ends succeeded with exactly one MPS job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_loses_and_duplicates_nothing() {
    let (store, plain_db) = common::pg_store().await;
    let pool = sqlx::PgPool::connect(&plain_db).await.unwrap();
    let mut fleet = Fleet::new(&store, &plain_db).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let api = fleet.client(Duration::from_secs(5));
    let emu_port = free_port();
    let emu = format!("http://127.0.0.1:{emu_port}");
    let _emu = fleet.emulator(
        "replicas",
        emu_port,
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
            "--seed",
            "7",
        ],
    );
    wait_ready(&http, &format!("{emu}/_emulator/jobs")).await;
    let (pa, pb) = (free_port(), free_port());
    let mut a = fleet.gateway("a", pa, emu_port);
    let _b = fleet.gateway("b", pb, emu_port);
    wait_ready(&http, &format!("http://127.0.0.1:{pa}/readyz")).await;
    wait_ready(&http, &format!("http://127.0.0.1:{pb}/readyz")).await;

    let total = 120;
    let start = Instant::now();
    let mut acknowledged = Vec::new();
    let mut failures = Vec::new();
    let mut taken_over = Vec::new();
    let mut answered_before = HashMap::new();
    for wave in 0..3 {
        if wave == 1 {
            // Every answer held back 3 s (longer than the client's 1 s timeout): calls stay in
            // flight, the jobs already created on MPS.
            set_faults(&http, &emu, json!({"slow_rate": 1.0, "slow_ms": 3000})).await;
            // MPS jobs created before the answers were held back: their answers may arrive
            // between the look and the kill, so they do not count as calls in flight.
            answered_before = ledger(&http, &emu).await;
        }
        let mut tasks = Vec::new();
        for i in wave * 40..(wave + 1) * 40 {
            let ports = if i % 2 == 0 { [pa, pb] } else { [pb, pa] };
            tasks.push(tokio::spawn(post_with_failover(api.clone(), ports, i)));
            if wave == 1 && i == 60 {
                // Mid-load, while a holds a claim with its call in flight: SIGKILL (no shutdown,
                // the claim left behind).
                taken_over =
                    calls_in_flight_on(&pool, &http, &emu, a.pid(), &answered_before).await;
                a.kill();
                set_faults(&http, &emu, json!({"slow_rate": 0.0})).await;
            }
        }
        for t in tasks {
            let (id, failed) = t.await.unwrap();
            acknowledged.push(id.expect("the other replica answers"));
            failures.extend(failed);
        }
        if wave == 1 {
            a = fleet.gateway("a2", pa, emu_port);
            wait_ready(&http, &format!("http://127.0.0.1:{pa}/readyz")).await;
        }
    }
    // Only tries on the killed replica failed, and only without an answer; some did: the kill
    // came under load.
    assert!(!failures.is_empty(), "no POST met the killed replica");
    for (port, what) in &failures {
        assert!(
            *port == pa && what.starts_with("transport"),
            "a POST failed on port {port} ({what}); a is {pa}"
        );
    }
    let unique: HashSet<&String> = acknowledged.iter().collect();
    assert_eq!(unique.len(), total, "every POST acknowledged once");

    // Every job in the database, acknowledged or recorded while its answer was lost, ends final.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pending = store.count_active_jobs("default").await.unwrap();
        if pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{pending} jobs not final");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = start.elapsed();
    let jobs: Vec<(String, String, i32)> =
        sqlx::query_as("SELECT id::text, state, attempts FROM jobs")
            .fetch_all(&pool)
            .await
            .unwrap();
    let not_succeeded: Vec<_> = jobs.iter().filter(|(_, s, _)| s != "succeeded").collect();
    assert!(not_succeeded.is_empty(), "{not_succeeded:?}");

    // Exactly one MPS job per job in the database; no MPS job the gateway does not know.
    let per_job = ledger(&http, &emu).await;
    let recorded: HashSet<&String> = jobs.iter().map(|(id, _, _)| id).collect();
    for id in &recorded {
        assert_eq!(per_job.get(*id), Some(&1), "job {id}: MPS jobs {per_job:?}");
    }
    assert_eq!(
        per_job.len(),
        recorded.len(),
        "MPS jobs unknown to the gateway"
    );
    for id in &acknowledged {
        assert!(recorded.contains(id));
    }

    // The killed replica's claims were taken over and reconciled: MPS's job adopted from a
    // lookup (a second claim, and no submit answer in the job's history), never sent again.
    assert!(!taken_over.is_empty());
    for id in &taken_over {
        let (_, _, attempts) = jobs.iter().find(|(j, _, _)| j == id).unwrap();
        assert!(*attempts >= 2, "job {id} was claimed again: {attempts}");
        let history = get_json(
            &api,
            &format!("http://127.0.0.1:{pb}/v1/snapshot-jobs/{id}/mps-responses"),
        )
        .await;
        let submits: Vec<&Value> = history
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["action"] == "SubmitSnapshotJob" && h["code"].is_null())
            .collect();
        assert!(
            submits.is_empty(),
            "job {id} was submitted again: {history}"
        );
    }
    let adoptions = adopted(&api, pa).await + adopted(&api, pb).await;
    assert!(
        adoptions >= taken_over.len() as u64,
        "{adoptions} adoptions for {} jobs taken over",
        taken_over.len()
    );
    let stats = get_json(&http, &format!("{emu}/_emulator/stats")).await;
    let submits = &stats["calls"]["SubmitSnapshotJob"];
    assert!(submits["Dropped"].as_u64() > Some(0), "{stats}");
    assert!(submits["Throttling.User"].as_u64() > Some(0), "{stats}");
    println!(
        "replicas: {total} acknowledged, {} failed tries on the killed replica, {} recorded but unanswered (delivered once), {} taken over and adopted, duplicates 0, lost 0, drained in {drained:?}, emulator {stats}",
        failures.len(),
        recorded.len() - total,
        taken_over.len()
    );
    fleet.assert_no_secret_in_logs();
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
    let (store, plain_db) = common::pg_store().await;
    let mut fleet = Fleet::new(&store, &plain_db).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let api = fleet.client(Duration::from_secs(10));
    let emu_port = free_port();
    // Its own log folder: the kill test's emulator may run at the same time.
    let _emu = fleet.emulator(
        "replicas-soak",
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
    set_faults(
        &http,
        &emu,
        json!({"slow_next_submits": 1, "slow_ms": 3000}),
    )
    .await;
    let (pa, pb) = (free_port(), free_port());
    let mut a = fleet.gateway("soak-a", pa, emu_port);
    let _b = fleet.gateway("soak-b", pb, emu_port);
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
            let http = api.clone();
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
                a.kill();
            }
        }
        for t in tasks {
            if let Some(id) = t.await.unwrap() {
                acknowledged.push(id);
            }
        }
        if wave == 1 || wave == 2 {
            a = fleet.gateway(&format!("soak-a{wave}"), pa, emu_port);
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
    let per_job = ledger(&http, &emu).await;
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
    let stats = get_json(&http, &format!("{emu}/_emulator/stats")).await;
    let faults = get_json(&http, &format!("{emu}/_emulator/faults")).await;
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
    fleet.assert_no_secret_in_logs();
    drop(a);
}
