//! What a request body that is valid JSON to one parser and not to another is answered with:
//! a number beyond a double, a lone surrogate escape, a body over the size limit. Real HTTP,
//! auth on (the defaults), SQLite (nothing here depends on the store).

use crate::common;

use common::TestApp;

use reqwest::StatusCode;
use serde_json::{json, Value};

fn body(num: &str) -> String {
    format!(
        r#"{{"input": {{"location": "oss-cn-shanghai", "bucket": "media", "object": "in/a.mp4"}},
  "output": {{"location": "oss-cn-shanghai", "bucket": "media", "object": "out/{{Count}}.jpg"}},
  "time_ms": 0, "num": {num}}}"#
    )
}

async fn post(app: &TestApp, body: String) -> (StatusCode, Value) {
    let res = app
        .req(reqwest::Method::POST, "/v1/snapshot-jobs")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap())
}

/// An app with auth on (SQLite) and a client holding team `t`'s token.
async fn team_app(
    tweak: impl FnOnce(&mut snapgate::config::Settings),
) -> (TestApp, tempfile::TempDir) {
    let (store, dir) = common::sqlite_store().await;
    let app = TestApp::builder(store)
        .settings(|s| {
            s.auth.enabled = true;
            tweak(s);
        })
        .start()
        .await;
    let k = app.key("t", false).await;
    (app.with_token(Some(&k.token)), dir)
}

/// The answer without what differs per request.
fn without_request_id(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("request_id");
    v
}

#[tokio::test]
async fn a_number_beyond_a_double_is_out_of_range_like_any_large_number() {
    let (app, _dir) = team_app(|_| {}).await;

    let (s29, a29) = post(&app, body("1e29")).await;
    assert_eq!(s29, StatusCode::UNPROCESSABLE_ENTITY, "{a29}");
    assert_eq!(a29["errors"][0]["field"], "/num", "{a29}");
    assert_eq!(a29["errors"][0]["code"], "out_of_range", "{a29}");
    for huge in ["1e400", "123456789e999", "1.5E+400"] {
        let (s, a) = post(&app, body(huge)).await;
        assert_eq!(s, s29, "{huge}: {a}");
        assert_eq!(
            without_request_id(a),
            without_request_id(a29.clone()),
            "{huge}"
        );
    }
    // Negative, and spread over lines: the same rule at the same field.
    let (s, a) = post(&app, body("-1e400").replace(", ", ",\n")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{a}");
    assert_eq!(a["errors"][0]["field"], "/num", "{a}");
    assert_eq!(a["errors"][0]["code"], "out_of_range", "{a}");
    // A syntax error beside it is still a syntax error.
    let (s, a) = post(
        &app,
        body("1e400").replace("\"time_ms\": 0", "\"time_ms\": "),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{a}");
    assert_eq!(a["code"], "malformed_json", "{a}");
    // Nothing was recorded.
    let list: Value = app.get("/v1/snapshot-jobs").await.json().await.unwrap();
    assert_eq!(list["jobs"], json!([]), "{list}");
}

#[tokio::test]
async fn a_lone_surrogate_escape_is_named_as_such() {
    let (app, _dir) = team_app(|_| {}).await;
    for escape in [r"\ud800", r"\udfff", r"\ud83dx"] {
        let b = body("1").replace("in/a.mp4", &format!("in/a{escape}.mp4"));
        let (s, a) = post(&app, b).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{escape}: {a}");
        assert_eq!(a["code"], "malformed_json", "{escape}: {a}");
        let detail = a["detail"].as_str().unwrap();
        assert!(
            detail.contains("lone UTF-16 surrogate") && detail.contains("at line 1 column"),
            "{escape}: {detail}"
        );
    }
    // A surrogate pair is a character, and fine.
    let b = body("1").replace("in/a.mp4", r"in/a\ud83d\ude00.mp4");
    let (s, a) = post(&app, b).await;
    assert!(s.is_success(), "{a}");
    assert_eq!(a["request"]["input"]["object"], "in/a\u{1F600}.mp4", "{a}");
    assert_eq!(a["team"], "t", "{a}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_stating_the_limit() {
    let (app, _dir) = team_app(|s| s.http.body_limit_bytes = 1000).await;
    let big = body("1").replace("in/a.mp4", &"x".repeat(1000));
    for (path, body) in [
        ("/v1/snapshot-jobs", big.clone()),
        ("/v1/presets", big.clone()),
        ("/v1/uploads", big),
    ] {
        let res = app
            .req(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        let a: Value = res.json().await.unwrap();
        assert_eq!(a["code"], "payload_too_large", "{path}: {a}");
        assert!(
            a["detail"]
                .as_str()
                .unwrap()
                .contains("at most 1000 bytes (http.body_limit_bytes)"),
            "{path}: {a}"
        );
    }
}

/// One field wrong in an otherwise valid body: exactly one violation, at that field.
#[tokio::test]
async fn a_fraction_or_a_leading_slash_is_the_one_violation_of_a_valid_body() {
    let (app, _dir) = team_app(|_| {}).await;

    // The same body with a whole number is accepted, also written as a float (JSON Schema's
    // integer): only the fraction differs below.
    for num in ["2", "2.0", "2e0"] {
        let (s, a) = post(&app, body(num)).await;
        assert!(s.is_success(), "{num}: {a}");
        assert_eq!(a["request"]["num"], 2, "{num}: {a}");
    }
    let (s, a) = post(&app, body("2.5")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{a}");
    assert_eq!(a["errors"].as_array().unwrap().len(), 1, "{a}");
    assert_eq!(a["errors"][0]["field"], "/num", "{a}");
    assert_eq!(a["errors"][0]["code"], "invalid_type", "{a}");
    assert!(
        a["errors"][0]["message"]
            .as_str()
            .unwrap()
            .ends_with("not a fraction"),
        "{a}"
    );

    for (key, field) in [
        ("/in/a.mp4", "/input/object"),
        ("\\\\in\\\\a.mp4", "/input/object"),
    ] {
        let (s, a) = post(&app, body("1").replace("in/a.mp4", key)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{key}: {a}");
        assert_eq!(a["errors"].as_array().unwrap().len(), 1, "{key}: {a}");
        assert_eq!(a["errors"][0]["field"], field, "{key}: {a}");
        assert_eq!(a["errors"][0]["code"], "invalid_format", "{key}: {a}");
    }
    let (s, a) = post(&app, body("1").replace("out/{Count}.jpg", "/out/a.jpg")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{a}");
    assert_eq!(a["errors"][0]["field"], "/output/object", "{a}");
    assert_eq!(a["errors"][0]["code"], "invalid_format", "{a}");
    // A slash inside a key is a folder, and fine.
    let (s, a) = post(&app, body("1").replace("in/a.mp4", "in/deep/er/a.mp4")).await;
    assert!(s.is_success(), "{a}");
}

/// A NUL in an object key (`\u0000` is valid JSON) is refused as the key's own violation on both
/// stores, and nothing is recorded: Postgres cannot keep a NUL in a JSON string, so before the
/// rule the Postgres store answered 500 after validation had passed it.
#[tokio::test]
async fn a_nul_in_an_object_key_is_refused_before_anything_is_recorded() {
    let (pg, _db) = common::pg_store().await;
    let (lite, _dir) = common::sqlite_store().await;
    for (name, store) in [("postgres", pg), ("sqlite", lite)] {
        let app = TestApp::builder(store)
            .settings(|s| s.auth.enabled = true)
            .start()
            .await;
        let k = app.key("t", false).await;
        let app = app.with_token(Some(&k.token));
        let b = body("3").replace("in/a.mp4", "in/a\\u0000.mp4");
        let (status, answer) = post(&app, b).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {answer}");
        assert_eq!(
            answer["errors"],
            json!([{"field": "/input/object", "code": "invalid_characters",
                    "message": snapgate::domain::text::RULE}]),
            "{name}: {answer}"
        );
        let list: Value = app
            .req(reqwest::Method::GET, "/v1/snapshot-jobs")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list["jobs"], json!([]), "{name}: {list}");
    }
}
