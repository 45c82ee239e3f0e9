//! Where a webhook may go and what its errors tell. D14: URLs in the IPv6 special-purpose
//! ranges (IPv4 embedded in `::/96`, mapped addresses, `100::/64`, Teredo) are refused like
//! the IPv4 ones. D13: an attempt's recorded error, which the team reads, does not tell what a
//! host name resolves to.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{self, app::deliveries_by_hand, TestApp};

async fn create(app: &TestApp, url: &str) -> (StatusCode, Value) {
    let res = app
        .req(Method::POST, "/v1/webhook-endpoints")
        .json(&json!({"url": url, "event_types": ["snapshot_job.submitted", "snapshot_job.succeeded"]}))
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn app(emu: &snapgate::emulator::EmulatorHandle) -> TestApp {
    let (store, db) = common::pg_store().await;
    TestApp::builder(store)
        .keep(db)
        .emulator(emu, 3_000)
        .fast_worker()
        .settings(|s| {
            deliveries_by_hand(s);
            s.webhooks.allow_private_networks = false;
            s.webhooks.schedule_s = vec![1];
        })
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_purpose_ipv6_literals_are_refused() {
    let emu = common::app::test_emulator(|_| {}).await;
    let app = app(&emu).await;
    for url in [
        "http://[::127.0.0.1]/hook",
        "http://[::ffff:0:7f00:1]/hook",
        "http://[100::1]/hook",
        "http://[2001::7f00:1]/hook",
    ] {
        let (status, problem) = create(&app, url).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {problem}");
        assert_eq!(problem["errors"][0]["field"], "/url", "{url}: {problem}");
        assert_eq!(
            problem["errors"][0]["code"], "private_address",
            "{url}: {problem}"
        );
    }

    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_errors_do_not_tell_what_a_name_resolves_to() {
    let emu = common::app::test_emulator(|_| {}).await;
    let app = app(&emu).await;
    // A name that resolves to loopback: accepted as a URL, refused at connect time, and the
    // recorded error says so without the address.
    let (status, endpoint) = create(&app, "http://localhost:9/hook").await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    let eid = endpoint["id"].as_str().unwrap().to_string();
    let body = json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": "uploads/a.mp4"},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "thumbs/{Count}.jpg"},
        "time_ms": 0, "interval_s": 2, "num": 2,
    });
    let res = app.post_job(&body, None).await;
    assert!(res.status().is_success());
    let job: Value = res.json().await.unwrap();
    app.wait_final(job["id"].as_str().unwrap(), Duration::from_secs(20))
        .await;
    app.run_deliveries_until_idle().await;
    let ds: Value = app
        .get(&format!("/v1/webhook-endpoints/{eid}/deliveries"))
        .await
        .json()
        .await
        .unwrap();
    let errors: Vec<String> = ds["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["attempts"].as_array().cloned().unwrap_or_default())
        .map(|a| a["error"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(!errors.is_empty(), "{ds:#}");
    for e in &errors {
        assert!(e.contains("refused"), "{e}");
        for addr in ["127.0.0.1", "::1", "127.0.1.1"] {
            assert!(!e.contains(addr), "the error names {addr}: {e}");
        }
    }
    app.stop().await.unwrap();
}
