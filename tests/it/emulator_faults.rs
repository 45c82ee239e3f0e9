//! The emulator can show MPS's real faults, over HTTP with signed requests: a new job missing
//! from listings for a while, MPS's paging limits, answers slower than a lease, answers lost
//! after the job was created (deterministically), and a ledger that survives a restart.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use snapgate::emulator::{self, EmulatorConfig, EmulatorHandle};

const PIPELINE: &str = "9bad3801a2c561c22c4df9c6abcd0000";

async fn emu(tweak: impl FnOnce(&mut EmulatorConfig)) -> EmulatorHandle {
    let mut c = EmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        start_ms: 50,
        process_ms: 200,
        ..EmulatorConfig::default()
    };
    tweak(&mut c);
    emulator::spawn(c).await.unwrap()
}

fn common(action: &str) -> BTreeMap<String, String> {
    crate::common::mps_rpc::v1_params(action, "testid")
}

fn submit_params(key: &str) -> BTreeMap<String, String> {
    let mut p = common("SubmitSnapshotJob");
    p.insert(
        "Input".into(),
        json!({"Bucket": "media", "Location": "oss-cn-shanghai", "Object": snapgate::crypto::percent_encode(key)})
            .to_string(),
    );
    p.insert(
        "SnapshotConfig".into(),
        json!({"OutputFile": {"Bucket": "media", "Location": "oss-cn-shanghai", "Object": "out%2F%7BCount%7D.jpg"}, "Time": "0", "Num": "3", "Interval": "1"})
            .to_string(),
    );
    p.insert("PipelineId".into(), PIPELINE.into());
    p.insert("UserData".into(), format!("ud-{key}"));
    p
}

fn by_ids(ids: &[&str]) -> BTreeMap<String, String> {
    let mut p = common("QuerySnapshotJobList");
    p.insert("SnapshotJobIds".into(), ids.join(","));
    p
}

fn listing(page_size: Option<&str>, token: Option<&str>) -> BTreeMap<String, String> {
    let mut p = common("QuerySnapshotJobList");
    p.insert("PipelineId".into(), PIPELINE.into());
    let now = chrono::Utc::now();
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    p.insert(
        "StartOfJobCreatedTimeRange".into(),
        fmt(now - chrono::Duration::minutes(5)),
    );
    p.insert(
        "EndOfJobCreatedTimeRange".into(),
        fmt(now + chrono::Duration::minutes(1)),
    );
    if let Some(s) = page_size {
        p.insert("MaximumPageSize".into(), s.into());
    }
    if let Some(t) = token {
        p.insert("NextPageToken".into(), t.into());
    }
    p
}

fn signed_url(e: &EmulatorHandle, p: BTreeMap<String, String>) -> String {
    let q = crate::common::mps_rpc::signed_v1_query("POST", &p, "testsecret");
    format!("{}/?{q}", e.url())
}

async fn send(e: &EmulatorHandle, p: BTreeMap<String, String>) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(signed_url(e, p))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// Sends with a client timeout; `Err` when no answer arrived in time or the connection closed.
async fn send_within(
    e: &EmulatorHandle,
    p: BTreeMap<String, String>,
    timeout: Duration,
) -> Result<(u16, Value), reqwest::Error> {
    let res = reqwest::Client::new()
        .post(signed_url(e, p))
        .timeout(timeout)
        .send()
        .await?;
    let status = res.status().as_u16();
    Ok((status, res.json().await?))
}

async fn submit(e: &EmulatorHandle, key: &str) -> String {
    let (status, b) = send(e, submit_params(key)).await;
    assert_eq!(status, 200, "{b}");
    b["SnapshotJob"]["Id"].as_str().unwrap().to_string()
}

async fn ledger(e: &EmulatorHandle) -> Vec<Value> {
    let v: Value = reqwest::get(format!("{}/_emulator/jobs", e.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["jobs"].as_array().unwrap().clone()
}

async fn set_faults(e: &EmulatorHandle, body: Value) -> Value {
    let res = reqwest::Client::new()
        .post(format!("{}/_emulator/faults", e.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

fn ids_of(b: &Value) -> Vec<String> {
    b["SnapshotJobList"]["SnapshotJob"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["Id"].as_str().unwrap().to_string())
        .collect()
}

fn non_existent(b: &Value) -> Vec<String> {
    b["NonExistSnapshotJobIds"]["String"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_new_job_is_missing_from_queries_until_the_listing_delay_has_passed() {
    let e = emu(|c| c.list_delay_ms = 600).await;
    let submitted = Instant::now();
    let id = submit(&e, "in/a.mp4").await;
    assert_eq!(ledger(&e).await.len(), 1, "the job exists at once");

    let (status, b) = send(&e, by_ids(&[&id])).await;
    assert_eq!(status, 200, "{b}");
    assert!(ids_of(&b).is_empty(), "{b}");
    assert_eq!(non_existent(&b), vec![id.clone()], "reported as MPS does");
    let (_, b) = send(&e, listing(None, None)).await;
    assert!(
        ids_of(&b).is_empty(),
        "not in the pipeline listing yet: {b}"
    );

    // Poll until it shows; it must not show before the delay.
    let found_at = loop {
        let (_, b) = send(&e, by_ids(&[&id])).await;
        if ids_of(&b) == [id.clone()] {
            break submitted.elapsed();
        }
        assert!(
            submitted.elapsed() < Duration::from_secs(10),
            "never listed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(found_at >= Duration::from_millis(600), "{found_at:?}");
    let (_, b) = send(&e, listing(None, None)).await;
    assert_eq!(ids_of(&b), vec![id.clone()]);

    // The delay is settable at run time.
    let f = set_faults(&e, json!({"list_delay_ms": 0})).await;
    assert_eq!(f["list_delay_ms"], 0);
    let id2 = submit(&e, "in/b.mp4").await;
    let (_, b) = send(&e, by_ids(&[&id2])).await;
    assert_eq!(ids_of(&b), [id2]);
    e.shutdown().await;
}

#[tokio::test]
async fn listing_has_mps_page_limits_newest_first_and_a_stable_cursor() {
    let e = emu(|_| {}).await;
    for (size, code) in [
        ("0", "InvalidParameter.OutOfRange"),
        ("301", "InvalidParameter.OutOfRange"),
        ("-1", "InvalidParameter.OutOfRange"),
        ("ten", "InvalidParameter.NumberFormatInvalid"),
    ] {
        let (status, b) = send(&e, listing(Some(size), None)).await;
        assert_eq!(
            (status, b["Code"].as_str()),
            (400, Some(code)),
            "{size}: {b}"
        );
    }
    let (status, b) = send(&e, listing(Some("300"), None)).await;
    assert_eq!(status, 200, "{b}");

    let mut ids = Vec::new();
    for i in 0..31 {
        ids.push(submit(&e, &format!("in/{i}.mp4")).await);
    }
    // Default page size 30, newest first.
    let (_, b) = send(&e, listing(None, None)).await;
    let page = ids_of(&b);
    assert_eq!(page.len(), 30);
    let newest: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(page, newest[..30]);
    let token = b["NextPageToken"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 32);
    let (_, b) = send(&e, listing(None, Some(&token))).await;
    assert_eq!(ids_of(&b), newest[30..]);
    assert!(b.get("NextPageToken").is_none(), "{b}");

    // Jobs created while a listing is under way do not shift it: no job is seen twice.
    let (_, b) = send(&e, listing(Some("10"), None)).await;
    let first = ids_of(&b);
    let token = b["NextPageToken"].as_str().unwrap().to_string();
    for i in 0..3 {
        submit(&e, &format!("late/{i}.mp4")).await;
    }
    let (_, b) = send(&e, listing(Some("10"), Some(&token))).await;
    let second = ids_of(&b);
    assert_eq!(first, newest[..10]);
    assert_eq!(second, newest[10..20]);

    // At most 10 ids.
    let ten: Vec<&str> = ids[..10].iter().map(String::as_str).collect();
    let (status, b) = send(&e, by_ids(&ten)).await;
    assert_eq!(status, 200);
    assert_eq!(ids_of(&b).len(), 10);
    let eleven: Vec<&str> = ids[..11].iter().map(String::as_str).collect();
    let (status, b) = send(&e, by_ids(&eleven)).await;
    assert_eq!(
        (status, b["Code"].as_str()),
        (400, Some("InvalidParameter.OutOfRange"))
    );
    e.shutdown().await;
}

#[tokio::test]
async fn the_next_submits_can_be_slow_dropped_or_throttled_on_demand() {
    let e = emu(|_| {}).await;
    // Slow: the job is created at once, the answer comes after slow_ms.
    set_faults(&e, json!({"slow_next_submits": 1, "slow_ms": 1500})).await;
    let err = send_within(&e, submit_params("slow.mp4"), Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let jobs = ledger(&e).await;
    assert_eq!(jobs.len(), 1, "created before the answer");
    assert_eq!(jobs[0]["UserData"], "ud-slow.mp4");
    let started = Instant::now();
    let (status, _) = send_within(&e, submit_params("fast.mp4"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_millis(1000), "spent");

    // A slow answer a patient client does get.
    set_faults(&e, json!({"slow_next_queries": 1, "slow_ms": 700})).await;
    let started = Instant::now();
    let (status, _) = send_within(
        &e,
        by_ids(&["ffffffffffffffffffffffffffffffff"]),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(700));

    // Dropped: the next 2 submits create their jobs, their connections close unanswered.
    let f = set_faults(&e, json!({"drop_next_submits": 2})).await;
    assert_eq!(f["drop_next_submits"], 2);
    for key in ["d1.mp4", "d2.mp4"] {
        let err = send_within(&e, submit_params(key), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(!err.is_timeout(), "closed, not hung: {err}");
    }
    assert_eq!(send(&e, submit_params("d3.mp4")).await.0, 200);
    let user_data: Vec<String> = ledger(&e)
        .await
        .iter()
        .map(|j| j["UserData"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        user_data,
        [
            "ud-slow.mp4",
            "ud-fast.mp4",
            "ud-d1.mp4",
            "ud-d2.mp4",
            "ud-d3.mp4"
        ]
    );

    // Throttled and unavailable: nothing is created.
    set_faults(
        &e,
        json!({"throttle_next_submits": 1, "unavailable_next_submits": 1, "throttle_next_queries": 1}),
    )
    .await;
    let (status, b) = send(&e, submit_params("t.mp4")).await;
    assert_eq!((status, b["Code"].as_str()), (400, Some("Throttling.User")));
    let (status, b) = send(&e, submit_params("u.mp4")).await;
    assert_eq!(
        (status, b["Code"].as_str()),
        (503, Some("ServiceUnavailable"))
    );
    let (status, b) = send(&e, by_ids(&["ffffffffffffffffffffffffffffffff"])).await;
    assert_eq!((status, b["Code"].as_str()), (400, Some("Throttling.User")));
    assert_eq!(send(&e, submit_params("ok.mp4")).await.0, 200);
    assert_eq!(ledger(&e).await.len(), 6);

    let f: Value = reqwest::get(format!("{}/_emulator/faults", e.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(f["drop_next_submits"], 0, "{f}");
    assert_eq!(f["slow_ms"], 700);
    let bad = reqwest::Client::new()
        .post(format!("{}/_emulator/faults", e.url()))
        .json(&json!({"no_such_fault": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    e.shutdown().await;
}

#[tokio::test]
async fn a_random_fraction_of_answers_can_be_slow() {
    let e = emu(|c| {
        c.slow_rate = 1.0;
        c.slow_ms = 800;
    })
    .await;
    let err = send_within(&e, submit_params("a.mp4"), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(ledger(&e).await.len(), 1);
    e.shutdown().await;
}

#[tokio::test]
async fn jobs_survive_a_restart_and_age_by_the_wall_clock() {
    let dir = tempfile::tempdir().unwrap();
    let config = |c: &mut EmulatorConfig| {
        c.state_dir = Some(dir.path().to_path_buf());
        c.start_ms = 300;
        c.process_ms = 800;
        // Each life's clock starts at the wall-clock time of its start and then moves only
        // when the test says: time passes without the test waiting for it.
        c.manual_clock = true;
    };
    let e = emu(config).await;
    let a = submit(&e, "in/a.mp4").await;
    let b = submit(&e, "in/will-fail.mp4").await;
    let (_, before) = send(&e, by_ids(&[&a, &b])).await;
    e.shutdown().await;

    // A torn last line (a crash mid-write) is skipped, and the next record starts afresh.
    let path = dir.path().join("jobs.jsonl");
    let mut text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    text.push_str("{\"job\":{\"id\":\"torn");
    std::fs::write(&path, text).unwrap();

    // Restarted, and 900 ms later on its clock, the jobs are older than process_ms: final at
    // once (a restart that measured ages from its own start would find them new).
    let e = emu(config).await;
    let moved = reqwest::Client::new()
        .post(format!("{}/_emulator/clock", e.url()))
        .json(&serde_json::json!({"advance_ms": 900}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);
    let (status, after) = send(&e, by_ids(&[&a, &b])).await;
    assert_eq!(status, 200, "{after}");
    assert!(non_existent(&after).is_empty(), "{after}");
    let jobs = after["SnapshotJobList"]["SnapshotJob"].as_array().unwrap();
    assert_eq!(jobs[0]["State"], "Success", "{after}");
    assert_eq!(jobs[0]["Count"], "3");
    assert_eq!(jobs[1]["State"], "Fail");
    assert_eq!(jobs[1]["Code"], "InvalidParameter.ResourceNotFound");
    for (x, y) in jobs
        .iter()
        .zip(before["SnapshotJobList"]["SnapshotJob"].as_array().unwrap())
    {
        assert_eq!(x["CreationTime"], y["CreationTime"]);
        assert_eq!(x["UserData"], y["UserData"]);
    }
    let c = submit(&e, "in/c.mp4").await;
    e.shutdown().await;

    let e = emu(config).await;
    let (_, b3) = send(&e, listing(None, None)).await;
    assert_eq!(ids_of(&b3), [c, b, a], "all three, newest first");
    e.shutdown().await;
}

#[test]
fn the_command_line_sets_the_new_options() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: emulator::EmulatorArgs,
    }
    let cli = Cli::parse_from([
        "emulator",
        "--list-delay-ms",
        "1500",
        "--slow-rate",
        "0.1",
        "--slow-ms",
        "9000",
        "--state-dir",
        "/tmp/emu-state",
    ]);
    let c = EmulatorConfig::try_from(cli.args).unwrap();
    assert_eq!(c.list_delay_ms, 1500);
    assert_eq!(c.slow_rate, 0.1);
    assert_eq!(c.slow_ms, 9000);
    assert_eq!(
        c.state_dir.as_deref(),
        Some(std::path::Path::new("/tmp/emu-state"))
    );
    let bad = Cli::parse_from(["emulator", "--slow-rate", "2"]);
    assert!(EmulatorConfig::try_from(bad.args).is_err());
}
