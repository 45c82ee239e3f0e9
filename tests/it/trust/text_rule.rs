//! D10: one text rule for every string that reaches storage or a signature: NUL and the other
//! control characters are refused with a 422 that names the field (the MPS-compatible endpoint:
//! `InvalidParameter`), on both stores alike (NUL used to be a 500 on Postgres and stored and
//! echoed on SQLite).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use snapgate::store::DynStore;

use crate::common::{self, mps_rpc::V1Call, TestApp};

async fn refused(app: &TestApp, method: Method, path: &str, body: Value, field: &str) {
    let res = app
        .req(method.clone(), path)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{method} {path} {body}: {text}"
    );
    let problem: Value = serde_json::from_str(&text).unwrap();
    let errors = problem["errors"].as_array().cloned().unwrap_or_default();
    assert!(
        errors
            .iter()
            .any(|e| e["field"] == field && e["code"] == "invalid_characters"),
        "{method} {path}: {field} not named: {text}"
    );
}

fn job(object: &str) -> Value {
    json!({
        "input": {"location": "oss-cn-shanghai", "bucket": "media", "object": object},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "thumbs/{Count}.jpg"},
        "time_ms": 0, "num": 2, "interval_s": 1
    })
}

async fn control_characters_are_refused_everywhere_with_the_field_named(store: DynStore) {
    let app = TestApp::builder(store)
        .settings(|s| s.auth.enabled = true)
        .start()
        .await;
    let k = app.key("alpha", false).await;
    let api = app.with_token(Some(&k.token));
    for bad in ["\u{0}", "\u{1}", "\u{7f}", "\u{9b}"] {
        let url = format!("https://hooks.example.com/a{bad}b");
        refused(
            &api,
            Method::POST,
            "/v1/webhook-endpoints",
            json!({"url": url, "event_types": ["snapshot_job.succeeded"]}),
            "/url",
        )
        .await;
        let body = json!({"url": "https://hooks.example.com/x", "event_types": ["snapshot_job.succeeded"], "description": format!("team{bad}hook")});
        refused(
            &api,
            Method::POST,
            "/v1/webhook-endpoints",
            body,
            "/description",
        )
        .await;
        refused(
            &api,
            Method::POST,
            "/v1/snapshot-jobs",
            job(&format!("in/a{bad}.mp4")),
            "/input/object",
        )
        .await;
        let mut request = job("in/b.mp4");
        request.as_object_mut().unwrap().remove("input");
        request["output"]["object"] = json!(format!("thumbs/{bad}/{{Count}}.jpg"));
        let preset = json!({"name": "thumbs", "request": request});
        refused(
            &api,
            Method::POST,
            "/v1/presets",
            preset,
            "/request/output/object",
        )
        .await;
    }
    // An endpoint that exists: its update is held to the same rule.
    let res = api
        .req(Method::POST, "/v1/webhook-endpoints")
        .json(&json!({"url": "https://hooks.example.com/x", "event_types": ["snapshot_job.succeeded"], "description": "fine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/webhook-endpoints/{id}");
    refused(
        &api,
        Method::PATCH,
        &path,
        json!({"description": "a\u{0}b"}),
        "/description",
    )
    .await;
    refused(
        &api,
        Method::PATCH,
        &path,
        json!({"url": "https://hooks.example.com/\u{0}"}),
        "/url",
    )
    .await;
    let listed = api.get("/v1/webhook-endpoints").await.text().await.unwrap();
    assert!(!listed.contains("\\u0000"), "nothing stored: {listed}");

    // The MPS-compatible endpoint: MPS's InvalidParameter, nothing made.
    let input = r#"{"Bucket":"media","Location":"oss-cn-shanghai","Object":"in/c\u0001.mp4"}"#;
    let config = r#"{"OutputFile":{"Bucket":"media","Location":"oss-cn-shanghai","Object":"o.jpg"},"Time":"0"}"#;
    let params = [("Input", input), ("SnapshotConfig", config)];
    let call = V1Call::new(
        "SubmitSnapshotJob",
        &params,
        &k.access_key_id,
        &k.access_key_secret,
    );
    let res = call.request(&app.http, &app.base).send().await.unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["Code"]
            .as_str()
            .unwrap_or_default()
            .starts_with("InvalidParameter"),
        "{body}"
    );
    assert!(
        body["Message"]
            .as_str()
            .unwrap_or_default()
            .contains("control"),
        "{body}"
    );
    let jobs: Value = api.get("/v1/snapshot-jobs").await.json().await.unwrap();
    assert_eq!(jobs["jobs"], json!([]), "{jobs}");
    app.stop().await.unwrap();
}

common::both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    control_characters_are_refused_everywhere_with_the_field_named,
);
