//! The MPS-compatible endpoint. D16: ACS3 canonicalizes the URL query only, a form body being
//! covered by `x-acs-content-sha256` (the spec; the Tea SDK sends its parameters in the query
//! with an empty body, which keeps working). Duplicates: a parameter given twice, and a member
//! of `Input`/`SnapshotConfig` given twice (or in two letter cases), are refused with
//! `InvalidParameter`, as the REST API refuses duplicate members.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::Value;
use snapgate::mps::sign;

use crate::common::{mps_rpc::V1Call, TestApp};

const INPUT: &str = r#"{"Bucket":"media","Location":"oss-cn-shanghai","Object":"in/a.mp4"}"#;
const CONFIG: &str = r#"{"OutputFile":{"Bucket":"media","Location":"oss-cn-shanghai","Object":"o/{Count}.jpg"},"Time":"0","Num":"2","Interval":"1"}"#;

async fn app() -> (TestApp, String, String) {
    let (store, db) = crate::common::pg_store().await;
    let app = TestApp::builder(store)
        .keep(db)
        .settings(|s| {
            s.auth.enabled = true;
            s.http.submit_wait_ms = 0;
        })
        .start()
        .await;
    let k = app.key("alpha", false).await;
    (app, k.access_key_id, k.access_key_secret)
}

/// An ACS3 `SubmitSnapshotJob`: `query` in the URL, `form` (if any) as the form body, signed
/// per the spec: the canonical query is the URL's, the body is covered by its SHA-256.
async fn acs3(
    app: &TestApp,
    (id, secret): (&str, &str),
    query: &[(&str, &str)],
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let host = app.base.trim_start_matches("http://").to_string();
    let mut headers: BTreeMap<String, String> = [
        ("host", host.as_str()),
        ("x-acs-action", "SubmitSnapshotJob"),
        ("x-acs-version", "2014-06-18"),
        ("x-acs-date", &sign::timestamp_now()),
        ("x-acs-signature-nonce", &sign::new_nonce()),
        (
            "x-acs-content-sha256",
            &snapgate::crypto::sha256_hex(body.as_bytes()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if !form.is_empty() {
        headers.insert(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        );
    }
    let q: BTreeMap<String, String> = query
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let cr =
        sign::canonical_request_acs3("POST", "/", &q, &headers, &headers["x-acs-content-sha256"]);
    let signature = sign::sign_acs3(secret, &sign::string_to_sign_acs3(&cr));
    let auth = sign::authorization_acs3(id, &headers, &signature);
    let mut req = app
        .http
        .post(format!("{}/?{}", app.base, sign::canonicalized_query(&q)))
        .header("authorization", auth)
        .body(body);
    for (k, v) in &headers {
        if k != "host" {
            req = req.header(k, v);
        }
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acs3_with_a_form_body_is_canonicalized_per_the_spec() {
    let (app, id, secret) = app().await;
    let key = (id.as_str(), secret.as_str());
    // Parameters in a form body, the URL query empty.
    let (status, answer) = acs3(
        &app,
        key,
        &[],
        &[("Input", INPUT), ("SnapshotConfig", CONFIG)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer["SnapshotJob"]["Id"].is_string(), "{answer}");
    // Split between query and body.
    let (status, answer) = acs3(
        &app,
        key,
        &[("Input", INPUT)],
        &[("SnapshotConfig", CONFIG)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // What the Tea SDK sends: every parameter in the query, an empty body.
    let (status, answer) = acs3(
        &app,
        key,
        &[("Input", INPUT), ("SnapshotConfig", CONFIG)],
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    app.stop().await.unwrap();
}

async fn refused(res: reqwest::Response, what: &str) {
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
    let code = body["Code"].as_str().unwrap_or_default();
    assert!(code.starts_with("InvalidParameter"), "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_parameters_and_members_are_refused() {
    let (app, id, secret) = app().await;
    // The same member twice, and in two letter cases.
    for (input, config) in [
        (
            r#"{"Bucket":"media","Location":"oss-cn-shanghai","Object":"in/a.mp4","Object":"in/b.mp4"}"#,
            CONFIG,
        ),
        (
            r#"{"Bucket":"media","Location":"oss-cn-shanghai","Object":"in/a.mp4","object":"in/b.mp4"}"#,
            CONFIG,
        ),
        (
            INPUT,
            r#"{"OutputFile":{"Bucket":"media","Location":"oss-cn-shanghai","Object":"o/{Count}.jpg"},"Time":"0","Time":"5000"}"#,
        ),
        (
            INPUT,
            r#"{"OutputFile":{"Bucket":"media","Location":"oss-cn-shanghai","Object":"o/x.jpg"},"Time":"0","time":"5000"}"#,
        ),
    ] {
        let params = [("Input", input), ("SnapshotConfig", config)];
        let call = V1Call::new("SubmitSnapshotJob", &params, &id, &secret);
        refused(
            call.request(&app.http, &app.base).send().await.unwrap(),
            input,
        )
        .await;
    }
    // A repeated query parameter (the signature covers both; the last used to win).
    let params = [("Input", INPUT), ("SnapshotConfig", CONFIG)];
    let call = V1Call::new("SubmitSnapshotJob", &params, &id, &secret);
    let other = INPUT.replace("in/a.mp4", "in/b.mp4");
    let url = format!(
        "{}/?{}&Input={}",
        app.base,
        call.query(),
        snapgate::crypto::percent_encode(&other)
    );
    refused(app.http.post(url).send().await.unwrap(), "repeated Input").await;
    app.stop().await.unwrap();
}
