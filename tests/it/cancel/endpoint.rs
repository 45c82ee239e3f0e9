//! `DELETE /v1/snapshot-jobs/{id}`: a job MPS has not been sent is cancelled (final, its quota
//! released, never sent); one MPS accepted answers 409; another team's job 404. The emulator's
//! ledger shows what reached MPS.

use crate::common;

use std::time::{Duration, Instant};

use common::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use snapgate::store::DynStore;

fn job_body(i: usize) -> Value {
    json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("uploads/c{i}.mp4")},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("thumbs/{i}/{{Count}}.jpg")},
        "time_ms": 1000, "num": 1
    })
}

async fn json_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    (status, r.json().await.unwrap())
}

async fn a_job_not_yet_sent_is_cancelled_and_never_reaches_mps(store: DynStore) {
    let emu = common::app::test_emulator(|_| {}).await;
    // No worker yet: jobs stay queued. One job in flight per team.
    let front = TestApp::builder(store.clone())
        .settings(|s| {
            s.auth.enabled = true;
            s.limits.team_max_active_jobs = 1;
        })
        .start()
        .await;
    let a = front.key("a", false).await;
    let b = front.key("b", false).await;
    let app = front.with_token(Some(a.token.as_str()));
    let other = front.with_token(Some(b.token.as_str()));

    let (status, queued) = json_of(app.post_job(&job_body(1), None).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    assert_eq!(queued["state"], "queued");
    let id = queued["id"].as_str().unwrap().to_string();
    let (status, refused) = json_of(app.post_job(&job_body(2), None).await).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{refused}");
    assert_eq!(refused["code"], "quota_exceeded");

    let path = format!("/v1/snapshot-jobs/{id}");
    let (status, p) = json_of(other.req(Method::DELETE, &path).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another team's job: {p}");
    let (status, p) = json_of(
        app.req(Method::DELETE, "/v1/snapshot-jobs/not-a-uuid")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{p}");

    let (status, cancelled) = json_of(app.req(Method::DELETE, &path).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["state"], "failed");
    assert_eq!(cancelled["last_error"]["code"], "Cancelled", "{cancelled}");
    // Microseconds, as every time snapgate shows (a nanosecond `at` came back on Postgres).
    let at = cancelled["last_error"]["at"].as_str().unwrap();
    let fraction = at.split('.').nth(1).unwrap_or_default();
    assert!(fraction.trim_end_matches('Z').len() <= 6, "{at}");
    let (_, read) = json_of(app.get(&path).await).await;
    assert_eq!(read, cancelled, "a read answers what DELETE answered");
    let (status, again) = json_of(app.req(Method::DELETE, &path).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(again["code"], "job_not_cancellable");

    // The quota is released: the next job is taken.
    let (status, next) = json_of(app.post_job(&job_body(3), None).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{next}");
    let next_id = next["id"].as_str().unwrap().to_string();
    front.stop().await.unwrap();

    // A worker now: the remaining job goes to MPS, the cancelled one never does.
    let worker = TestApp::builder(store)
        .mps(common::app::mps_client(
            &emu.url(),
            common::app::EMU_SECRET,
            5_000,
        ))
        .settings(|s| {
            s.auth.enabled = true;
            s.worker.idle_poll_ms = 100;
            s.worker.list_visibility_ms = 0;
        })
        .start()
        .await;
    let app = worker.with_token(Some(a.token.as_str()));
    let next_path = format!("/v1/snapshot-jobs/{next_id}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let sent = loop {
        let (_, j) = json_of(app.get(&next_path).await).await;
        if j["state"] != "queued" {
            break j;
        }
        assert!(Instant::now() < deadline, "never sent: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(sent["mps"]["job_id"].is_string(), "{sent}");
    let (status, p) = json_of(app.req(Method::DELETE, &next_path).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{p}");
    assert_eq!(p["code"], "job_not_cancellable");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("MPS offers no cancel"),
        "{p}"
    );
    let ledger = common::app::emulator_ledger(&emu.url()).await;
    assert_eq!(ledger.get(&next_id), Some(&1), "{ledger:?}");
    assert_eq!(ledger.get(&id), None, "the cancelled job never reached MPS");
    assert_eq!(ledger.len(), 1);
    let (_, read) = json_of(app.get(&path).await).await;
    assert_eq!(read["state"], "failed");
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cancel() {
    let (store, _dir) = common::sqlite_store().await;
    a_job_not_yet_sent_is_cancelled_and_never_reaches_mps(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cancel() {
    let (store, _db) = common::pg_store().await;
    a_job_not_yet_sent_is_cancelled_and_never_reaches_mps(store).await;
}
