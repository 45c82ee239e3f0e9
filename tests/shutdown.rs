//! Graceful shutdown under load, through the app's real stop path (`Application::run_until`'s
//! future, as SIGTERM drives it): every request in flight is answered, every MPS call in flight
//! ends and is recorded, and no claim is left held — another replica takes the rest at once,
//! without waiting for a lease to expire.

mod common;

use std::time::Duration;

use chrono::Duration as ChronoDuration;
use reqwest::StatusCode;
use serde_json::{json, Value};

use common::app::{mps_client, test_emulator, EMU_SECRET};
use common::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_under_load_answers_everyone_and_keeps_no_claim() {
    let (store, _db) = common::pg_store().await;
    let emu = test_emulator(|c| c.process_ms = 200).await;
    // Every submit answers only after 1.5 s: the stop comes while calls are in flight.
    reqwest::Client::new()
        .post(format!("{}/_emulator/faults", emu.url()))
        .json(&json!({"slow_rate": 1.0, "slow_ms": 1500}))
        .send()
        .await
        .unwrap();
    let app = TestApp::builder(store.clone())
        .mps(mps_client(&emu.url(), EMU_SECRET, 5_000))
        .settings(|s| {
            s.http.submit_wait_ms = 0;
            s.worker.batch_size = 4;
            s.worker.submit_qps = 1000;
            s.worker.lease_ms = 60_000;
        })
        .start()
        .await;
    let mut posts = Vec::new();
    for i in 0..12 {
        let http = app.http.clone();
        let url = app.url("/v1/snapshot-jobs");
        posts.push(tokio::spawn(async move {
            http.post(url)
                .json(&json!({
                    "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("in/{i}.mp4")},
                    "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("out/{i}.jpg")}
                }))
                .send()
                .await
        }));
    }
    // Wait until MPS calls are in flight, then stop.
    loop {
        let jobs: Value = reqwest::get(format!("{}/_emulator/jobs", emu.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !jobs["jobs"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.stop().await.expect("a clean stop");

    // Every POST that reached the app was answered (none cut off mid-request).
    let mut ids = Vec::new();
    for p in posts {
        let res = p
            .await
            .unwrap()
            .expect("answered before the listener closed");
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        ids.push(
            res.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Every MPS call that was in flight ended and was recorded: each job MPS has is `submitted`.
    let ledger: Value = reqwest::get(format!("{}/_emulator/jobs", emu.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let at_mps: Vec<String> = ledger["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["UserData"].as_str().unwrap().to_string())
        .collect();
    assert!(!at_mps.is_empty());
    for id in &at_mps {
        let job = store
            .get_job(None, snapgate::domain::JobId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_ne!(
            job.state,
            snapgate::domain::JobState::Queued,
            "an MPS answer that arrived during the stop was recorded: {id}"
        );
    }
    // No claim is left: another replica claims every remaining job now, not after the lease.
    let now = store.clock().await.unwrap();
    let rest = store
        .claim_dispatch("next-replica", now, now + ChronoDuration::seconds(30), 100)
        .await
        .unwrap();
    assert_eq!(
        rest.len(),
        ids.len() - at_mps.len(),
        "every job not yet at MPS is free to claim at once"
    );
    assert!(
        rest.iter().all(|c| c.attempt_started_at.is_none()),
        "no attempt was cut off"
    );
}
