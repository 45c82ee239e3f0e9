//! The delivery promise under the faults real MPS can show, made deterministic by the emulator's
//! fault controls (`/_emulator/faults`): a job not yet listed, a slow answer longer than the
//! lease, a lost answer followed by throttling, an outage, a job MPS forgets. Every test counts
//! MPS jobs per gateway job in the emulator's ledger: exactly one, whatever happened.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use snapgate::config::Settings;
use snapgate::emulator::EmulatorHandle;
use snapgate::mps::client::{MpsApi, MpsResponse};
use snapgate::mps::error::MpsError;
use snapgate::mps::wire::{
    ListQuery, QuerySnapshotJobListResponse, SubmitParams, SubmitSnapshotJobResponse,
};
use snapgate::store::DynStore;

use common::app::{mps_client, test_emulator, EMU_SECRET};
use common::TestApp;

const PIPELINE: &str = "9bad3801a2c561c22c4df9c6abcd0000";
const MPS_TIMEOUT_MS: u64 = 1_000;

/// On top of `TestAppBuilder::fast_worker`.
fn fast(s: &mut Settings) {
    s.worker.backoff_max_ms = 300;
    s.worker.status_poll_max_ms = 300;
    s.worker.idle_poll_ms = 50;
    s.worker.reconcile_margin_s = 5;
    s.mps.request_timeout_ms = MPS_TIMEOUT_MS;
    s.http.submit_wait_ms = 0;
}

async fn gateway(
    store: DynStore,
    emu: &EmulatorHandle,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    TestApp::builder(store)
        .emulator(emu, MPS_TIMEOUT_MS)
        .fast_worker()
        .settings(|s| {
            fast(s);
            tweak(s);
        })
        .start()
        .await
}

fn body(i: usize) -> Value {
    json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("in/{i}.mp4")},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("out/{i}.jpg")},
        "pipeline_id": PIPELINE
    })
}

async fn faults(emu: &EmulatorHandle, set: Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/_emulator/faults", emu.url()))
        .json(&set)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "{}",
        res.text().await.unwrap()
    );
}

/// MPS jobs per gateway job id (the UserData), as the emulator recorded them.
async fn ledger(emu: &EmulatorHandle) -> HashMap<String, usize> {
    let jobs: Value = reqwest::get(format!("{}/_emulator/jobs", emu.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut per = HashMap::new();
    for j in jobs["jobs"].as_array().unwrap() {
        let ud = j["UserData"].as_str().unwrap_or_default();
        *per.entry(ud.chars().take(36).collect()).or_insert(0) += 1;
    }
    per
}

async fn submit(app: &TestApp, i: usize) -> String {
    let res = app.post_job(&body(i), None).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn job(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/snapshot-jobs/{id}"))
        .await
        .json()
        .await
        .unwrap()
}

/// The emulator's fault settings now: spent counters show the faults really happened.
async fn faults_now(emu: &EmulatorHandle) -> Value {
    reqwest::get(format!("{}/_emulator/faults", emu.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Window 1: the submit answer is lost and the attempt's window holds more jobs than the lookup
/// reads. Reaching the page cap is "unknown", never "absent": the job is not sent again.
async fn a_lookup_that_reaches_its_page_cap_never_resubmits(store: DynStore) {
    let emu = test_emulator(|c| c.process_ms = 200).await;
    faults(&emu, json!({"drop_next_submits": 1})).await;
    // The gateway's lookups wait until the 250 newer jobs below are in: one sooner would find
    // the job on its first page.
    let (open_lookups, lookups_open) = tokio::sync::watch::channel(false);
    let client = GatedLookups {
        inner: mps_client(&emu.url(), EMU_SECRET, MPS_TIMEOUT_MS),
        open: lookups_open,
    };
    let app = TestApp::builder(store)
        .mps(Arc::new(client))
        .fast_worker()
        .settings(|s| {
            fast(s);
            s.worker.lookup_max_pages = 2;
            s.worker.list_visibility_ms = 0;
            s.worker.job_deadline_s = 4;
            // However long the 250 submits below take, they are inside the attempt's window.
            s.worker.reconcile_margin_s = 600;
        })
        .start()
        .await;
    let id = submit(&app, 0).await;
    while faults_now(&emu).await["drop_next_submits"] != 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // 250 newer jobs of other clients on the same pipeline, inside the attempt's window.
    let other: Arc<dyn MpsApi> = mps_client(&emu.url(), EMU_SECRET, 5_000);
    for i in 0..250 {
        other
            .submit_snapshot_job(&SubmitParams {
                input: json!({"Bucket": "media", "Location": "oss-cn-shanghai", "Object": format!("x{i}.mp4")}).to_string(),
                snapshot_config: json!({"OutputFile": {"Bucket": "media", "Location": "oss-cn-shanghai", "Object": format!("x{i}.jpg")}, "Time": "0"}).to_string(),
                pipeline_id: Some(PIPELINE.into()),
                user_data: Some(format!("other-client-{i}")),
            })
            .await
            .unwrap();
    }
    open_lookups.send(true).unwrap();
    let j = app.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(
        faults_now(&emu).await["drop_next_submits"],
        0,
        "the answer was lost"
    );
    assert_eq!(ledger(&emu).await.get(&id), Some(&1), "sent once: {j}");
    assert_eq!(j["state"], "failed", "{j}");
    assert_eq!(j["last_error"]["code"], "deadline_exceeded", "{j}");
    assert!(
        j["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("Snapgate.LookupIncomplete"),
        "{j}"
    );
}

/// The gateway's MPS client with its lookups (`QuerySnapshotJobList` by pipeline) held until
/// `open` says true.
struct GatedLookups {
    inner: Arc<dyn MpsApi>,
    open: tokio::sync::watch::Receiver<bool>,
}

#[async_trait::async_trait]
impl MpsApi for GatedLookups {
    async fn submit_snapshot_job(
        &self,
        p: &SubmitParams,
    ) -> Result<MpsResponse<SubmitSnapshotJobResponse>, MpsError> {
        self.inner.submit_snapshot_job(p).await
    }

    async fn query_snapshot_jobs(
        &self,
        ids: &[String],
    ) -> Result<MpsResponse<QuerySnapshotJobListResponse>, MpsError> {
        self.inner.query_snapshot_jobs(ids).await
    }

    async fn list_snapshot_jobs(
        &self,
        q: &ListQuery,
    ) -> Result<MpsResponse<QuerySnapshotJobListResponse>, MpsError> {
        let _ = self.open.clone().wait_for(|open| *open).await;
        self.inner.list_snapshot_jobs(q).await
    }
}

/// Window 1, the good case: the lookup reads far enough, finds the job and adopts it.
async fn a_lost_answer_is_adopted_not_resubmitted(store: DynStore) {
    let emu = test_emulator(|c| c.process_ms = 200).await;
    faults(&emu, json!({"drop_next_submits": 1, "list_delay_ms": 1500})).await;
    let app = gateway(store, &emu, |s| s.worker.list_visibility_ms = 2_000).await;
    let id = submit(&app, 0).await;
    let j = app.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(
        faults_now(&emu).await["drop_next_submits"],
        0,
        "the answer was lost"
    );
    assert_eq!(ledger(&emu).await.get(&id), Some(&1));
    let history: Value = app
        .get(&format!("/v1/snapshot-jobs/{id}/mps-responses"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        history[0]["action"], "QuerySnapshotJobList",
        "adopted through a lookup: {history}"
    );
}

/// Window 3: a lost answer, then the lookup misses (MPS lists the job late), then MPS throttles.
/// The mark of the first attempt stays until a lookup settles it: never a blind resubmission.
async fn a_definite_failure_does_not_erase_an_unknown_outcome(store: DynStore) {
    let emu = test_emulator(|c| c.process_ms = 200).await;
    faults(&emu, json!({"drop_next_submits": 1, "list_delay_ms": 1500})).await;
    let app = gateway(store, &emu, |s| s.worker.list_visibility_ms = 2_000).await;
    let id = submit(&app, 0).await;
    // Once the first answer is lost, MPS throttles the next submit it gets.
    while faults_now(&emu).await["drop_next_submits"] != 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    faults(&emu, json!({"throttle_next_submits": 1})).await;
    let j = app.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(ledger(&emu).await.get(&id), Some(&1), "{j}");
    let f = faults_now(&emu).await;
    assert_eq!(f["drop_next_submits"], 0, "the answer was lost: {f}");
    assert_eq!(
        f["throttle_next_submits"], 1,
        "and no second submit was ever sent: {f}"
    );
}

/// Window 2: two replicas, a lease far shorter than a slow MPS answer, and MPS listing new jobs
/// late. The lease is renewed during the call, so the other replica never takes the job over.
async fn a_slow_answer_longer_than_the_lease_is_not_sent_twice(store: DynStore) {
    let emu = test_emulator(|c| c.process_ms = 200).await;
    faults(
        &emu,
        json!({"slow_next_submits": 3, "slow_ms": 2500, "list_delay_ms": 3000}),
    )
    .await;
    let tweak = |s: &mut Settings| {
        s.worker.lease_ms = 600;
        s.worker.list_visibility_ms = 3_500;
        s.mps.request_timeout_ms = 5_000;
    };
    let slow_client = || mps_client(&emu.url(), EMU_SECRET, 5_000);
    let a = TestApp::builder(store.clone())
        .mps(slow_client())
        .fast_worker()
        .settings(|s| {
            fast(s);
            tweak(s)
        })
        .start()
        .await;
    let b = TestApp::builder(store)
        .mps(slow_client())
        .fast_worker()
        .settings(|s| {
            fast(s);
            tweak(s)
        })
        .start()
        .await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(submit(if i % 2 == 0 { &a } else { &b }, i).await);
    }
    for id in &ids {
        let j = a.wait_final(id, Duration::from_secs(40)).await;
        assert_eq!(j["state"], "succeeded", "{j}");
    }
    let per = ledger(&emu).await;
    for id in &ids {
        assert_eq!(per.get(id), Some(&1), "job {id}");
    }
    assert_eq!(
        faults_now(&emu).await["slow_next_submits"],
        0,
        "three answers were slow"
    );
}

/// An outage: nothing reaches MPS. Jobs stay queued (no job fails for it), and go out exactly
/// once when MPS is back.
async fn an_outage_keeps_jobs_queued_and_delivers_them_after(store: DynStore) {
    let emu = test_emulator(|c| c.process_ms = 200).await;
    let addr = emu.addr();
    emu.shutdown().await;
    let app = TestApp::builder(store)
        .mps(mps_client(
            &format!("http://{addr}"),
            EMU_SECRET,
            MPS_TIMEOUT_MS,
        ))
        .fast_worker()
        .settings(|s| {
            fast(s);
            s.worker.max_attempts = 2;
        })
        .start()
        .await;
    let ids = vec![submit(&app, 0).await, submit(&app, 1).await];
    // Long enough for the old behaviour (fail after max_attempts connect failures).
    let paused = loop {
        let r: Value = app.get("/readyz").await.json().await.unwrap();
        if r["mps"]["trouble"] == "unreachable" {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        paused["status"], "ok",
        "an outage keeps the replica ready: {paused}"
    );
    // Until one job has met at least `max_attempts` connect failures (each stamps its
    // `last_error.at`; dispatch pauses 1 s, 2 s, ... between them): the old behaviour failed it
    // then. Every job stays queued meanwhile.
    let mut failures: Vec<std::collections::BTreeSet<String>> = vec![Default::default(); ids.len()];
    let start = Instant::now();
    while failures.iter().all(|seen| seen.len() < 2) {
        for (id, seen) in ids.iter().zip(&mut failures) {
            let j = job(&app, id).await;
            assert_eq!(
                j["state"], "queued",
                "an outage is not the job's fault: {j}"
            );
            if let Some(at) = j["last_error"]["at"].as_str() {
                seen.insert(at.to_string());
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no job met two connect failures: {failures:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in &ids {
        let j = job(&app, id).await;
        assert_eq!(
            j["state"], "queued",
            "an outage is not the job's fault: {j}"
        );
        assert_eq!(j["last_error"]["code"], "Transport.ConnectFailed", "{j}");
        assert!(
            !j["last_error"]["message"]
                .as_str()
                .unwrap()
                .contains("Signature="),
            "{j}"
        );
    }
    let emu = test_emulator(|c| {
        c.listen = addr;
        c.process_ms = 200;
    })
    .await;
    for id in &ids {
        let j = app.wait_final(id, Duration::from_secs(90)).await;
        assert_eq!(j["state"], "succeeded", "{j}");
        assert_eq!(ledger(&emu).await.get(id), Some(&1));
    }
    let r: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(r["mps"]["ok"], true, "{r}");
}

/// A job MPS accepted and then forgot (an emulator restarted without its ledger): it ends
/// `failed` with `mps_job_not_found`, and stops counting against the quota.
async fn a_job_mps_forgot_ends_failed(store: DynStore) {
    let emu = test_emulator(|c| c.process_ms = 60_000).await;
    let addr = emu.addr();
    let app = gateway(store.clone(), &emu, |s| s.worker.not_found_timeout_s = 1).await;
    // Several snapshots: MPS answers asynchronously (a single one can be synchronous).
    let mut b = body(0);
    b["num"] = json!(3);
    b["interval_s"] = json!(1);
    b["output"]["object"] = json!("out/0/{Count}.jpg");
    let res = app.post_job(&b, None).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    loop {
        if job(&app, &id).await["state"] != "queued" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    emu.shutdown().await;
    let _fresh = test_emulator(|c| c.listen = addr).await;
    let j = app.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(j["state"], "failed", "{j}");
    assert_eq!(j["last_error"]["code"], "mps_job_not_found", "{j}");
    assert_eq!(store.count_active_jobs("default").await.unwrap(), 0);
}

common::both_stores!(
    postgres: #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_lookup_that_reaches_its_page_cap_never_resubmits,
    a_lost_answer_is_adopted_not_resubmitted,
    a_definite_failure_does_not_erase_an_unknown_outcome,
    a_slow_answer_longer_than_the_lease_is_not_sent_twice,
    an_outage_keeps_jobs_queued_and_delivers_them_after,
    a_job_mps_forgot_ends_failed
);

common::both_stores!(
    sqlite: #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_lost_answer_is_adopted_not_resubmitted,
    a_definite_failure_does_not_erase_an_unknown_outcome,
    an_outage_keeps_jobs_queued_and_delivers_them_after
);
