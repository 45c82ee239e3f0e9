//! The REST contract over real HTTP, on both store backends. The worker is off here (the MPS
//! path is covered in tests/it/delivery.rs), so jobs stay `queued`.

use crate::common;

use common::TestApp;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use snapgate::config::Settings;
use snapgate::store::DynStore;

async fn spawn(store: DynStore, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    // No worker in this process: jobs stay queued (like a replica whose worker runs elsewhere).
    TestApp::builder(store).settings(tweak).start().await
}

fn example() -> Value {
    json!({
      "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": "uploads/clip 01.mp4"},
      "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "thumbs/clip01/{Count}.jpg"},
      "time_ms": 2000, "interval_s": 2, "num": 3,
      "width": 640, "height": 360,
      "frame_type": "normal",
      "black_level": 50,
      "sprite": {"output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "sprites/{TileCount}.jpg"},
                 "lines": 10, "columns": 10, "cell_width": 160, "cell_height": 90,
                 "margin": 0, "padding": 0, "color": "black", "keep_cells": true},
      "webvtt": {"sprite": true},
      "pipeline_id": "9bad3801a2c561c22c4df9c6abcd0000",
      "user_data": "any team data"
    })
}

/// The example as JSON text with `literal` (a number JSON allows but `Value` may not hold,
/// such as `1e999`) written in place of the field at `pointer`.
fn with_literal(pointer: &str, literal: &str) -> String {
    let mut body = example();
    *body.pointer_mut(pointer).expect("a field of the example") = json!("@NUMBER@");
    let text = body.to_string().replace("\"@NUMBER@\"", literal);
    assert!(text.contains(literal), "{text}");
    text
}

fn assert_problem(res: &reqwest::Response, status: StatusCode) {
    assert_eq!(res.status(), status);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
}

async fn submit_then_read_back(store: DynStore) {
    let app = spawn(store, |_| {}).await;
    let res = app.post_job(&example(), None).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let job: Value = res.json().await.unwrap();
    assert_eq!(job["state"], "queued");
    assert_eq!(job["team"], "default");
    assert_eq!(
        location,
        format!("/v1/snapshot-jobs/{}", job["id"].as_str().unwrap())
    );
    let codes: Vec<&str> = job["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"black_level_ignored"), "{codes:?}");
    assert_eq!(
        job["request"]["input"]["object"], "uploads/clip 01.mp4",
        "stored raw"
    );
    assert_eq!(job["request"]["sprite"]["lines"], 10);
    assert_eq!(job["attempts"], 0);
    assert!(job["mps"]["job_id"].is_null());

    let got: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(got, job);
    let list: Value = app.get("/v1/snapshot-jobs").await.json().await.unwrap();
    assert_eq!(list["jobs"][0], job);
    assert!(list["next_cursor"].is_null());
    let history: Value = app
        .get(&format!("{location}/mps-responses"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history, json!([]));
}

async fn invalid_requests_list_every_violation(store: DynStore) {
    let app = spawn(store, |_| {}).await;
    let mut body = example();
    body["width"] = json!(4097);
    body["num"] = json!(0);
    body["pipeline_id"] = json!("NOT-HEX");
    body["input"]["location"] = json!("cn-shanghai");
    body["surprise"] = json!(true);
    let res = app.post_job(&body, None).await;
    assert_problem(&res, StatusCode::UNPROCESSABLE_ENTITY);
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["code"], "validation_failed");
    assert_eq!(p["status"], 422);
    assert_eq!(p["request_id"], request_id);
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for f in [
        "/width",
        "/num",
        "/pipeline_id",
        "/input/location",
        "/surprise",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
    for e in p["errors"].as_array().unwrap() {
        assert!(!e["message"].as_str().unwrap().is_empty());
        assert!(!e["code"].as_str().unwrap().is_empty());
    }
    // Nothing was recorded.
    let list: Value = app.get("/v1/snapshot-jobs").await.json().await.unwrap();
    assert_eq!(list["jobs"], json!([]));
}

async fn bad_bodies_are_4xx_never_5xx(store: DynStore) {
    let app = spawn(store, |s| s.http.body_limit_bytes = 4096).await;
    let url = format!("{}/v1/snapshot-jobs", app.base);
    let send = |body: &'static str, ct: &'static str| {
        app.http
            .post(&url)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let res = send("{\"input\": ", "application/json").await.unwrap();
    assert_problem(&res, StatusCode::BAD_REQUEST);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "malformed_json");
    let res = send("{}", "text/plain").await.unwrap();
    assert_problem(&res, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A key given twice is refused (not "the last one wins"), at any depth, and so is a key
    // holding U+0000; the detail names the key. The bodies are otherwise valid jobs.
    for (body, says) in [
        (
            r#"{"input": {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.mp4"},
                "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.jpg"},
                "input": {"location": "oss-cn-shanghai", "bucket": "other", "object": "b.mp4"}}"#,
            "duplicate object key \"input\"",
        ),
        (
            r#"{"input": {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.mp4", "object": "b.mp4"},
                "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.jpg"}}"#,
            "duplicate object key \"object\"",
        ),
        (
            r#"{"input": {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.mp4"},
                "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.jpg"},
                "user_data": {"a\u0000b": 1}}"#,
            "U+0000",
        ),
    ] {
        let res = send(body, "application/json").await.unwrap();
        assert_problem(&res, StatusCode::BAD_REQUEST);
        let p: Value = res.json().await.unwrap();
        assert_eq!(p["code"], "malformed_json", "{p}");
        assert!(p["detail"].as_str().unwrap().contains(says), "{p}");
    }
    let list: Value = app.get("/v1/snapshot-jobs").await.json().await.unwrap();
    assert_eq!(list["jobs"], json!([]), "nothing was recorded");
    for body in ["[]", "null", "12", "\"x\""] {
        let res = send(body, "application/json").await.unwrap();
        assert!(res.status().is_client_error(), "{body}: {}", res.status());
    }
    // Huge and odd numbers, each the one violation of an otherwise valid body (the example,
    // with the literal written in place of one field): exactly one error, at that field.
    for (field, literal, code) in [
        ("/num", "1e999", "out_of_range"),
        ("/num", "-1e999", "out_of_range"),
        ("/num", "123456789012345678901234567890", "out_of_range"),
        ("/num", "9007199254740992", "out_of_range"),
        ("/num", "1e-999", "out_of_range"),
        (
            "/time_ms",
            "-123456789012345678901234567890",
            "out_of_range",
        ),
        ("/width", "1.5e999", "out_of_range"),
        (
            "/sprite/lines",
            "123456789012345678901234567890",
            "out_of_range",
        ),
        ("/black_level", "1e-999", "out_of_range"),
        ("/height", "-0.5", "invalid_type"),
    ] {
        let body = with_literal(field, literal);
        let res = app
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field} = {literal}"
        );
        assert_problem(&res, StatusCode::UNPROCESSABLE_ENTITY);
        let p: Value = res.json().await.unwrap();
        assert_eq!(p["code"], "validation_failed", "{field} = {literal}: {p}");
        let errors: Vec<(&str, &str)> = p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["field"].as_str().unwrap(), e["code"].as_str().unwrap()))
            .collect();
        assert_eq!(errors, [(field, code)], "{field} = {literal}: {p}");
    }
    let big = format!("{{\"user_data\": \"{}\"}}", "a".repeat(10_000));
    let res = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_problem(&res, StatusCode::PAYLOAD_TOO_LARGE);
    let res = app.get("/v1/nope").await;
    assert_problem(&res, StatusCode::NOT_FOUND);
    let res = app
        .http
        .delete(format!("{}/v1/snapshot-jobs", app.base))
        .send()
        .await
        .unwrap();
    assert_problem(&res, StatusCode::METHOD_NOT_ALLOWED);
    let res = app.post_job(&example(), Some("has space")).await;
    assert_problem(&res, StatusCode::BAD_REQUEST);
}

async fn unknown_jobs_are_404(store: DynStore) {
    let app = spawn(store, |_| {}).await;
    for path in [
        "/v1/snapshot-jobs/0190a0b0-0000-7000-8000-000000000000",
        "/v1/snapshot-jobs/not-a-uuid",
        "/v1/snapshot-jobs/0190a0b0-0000-7000-8000-000000000000/mps-responses",
    ] {
        let res = app.get(path).await;
        assert_problem(&res, StatusCode::NOT_FOUND);
        let p: Value = res.json().await.unwrap();
        assert_eq!(p["code"], "not_found");
        assert!(p["request_id"].is_string());
        // A malformed id says so, rather than looking like an unknown route.
        let malformed = path.contains("not-a-uuid");
        assert_eq!(
            p["detail"] == "the job id in the path is not a UUID (job ids look like 0190a0b0-0000-7000-8000-000000000000)",
            malformed,
            "{path}: {p}"
        );
    }
}

async fn list_filters_and_pages(store: DynStore) {
    let app = spawn(store, |_| {}).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let job: Value = app.post_job(&example(), None).await.json().await.unwrap();
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    ids.reverse();
    let mut seen = Vec::new();
    // Followed by the `Link` header, which keeps the other parameters, and checked against
    // `next_cursor`.
    let mut url = "/v1/snapshot-jobs?state=queued&limit=2".to_string();
    loop {
        let res = app.get(&url).await;
        let link = res
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap().to_string());
        let page: Value = res.json().await.unwrap();
        seen.extend(
            page["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => {
                let link = link.expect("a Link header next to next_cursor");
                let expected =
                    format!("</v1/snapshot-jobs?state=queued&limit=2&cursor={c}>; rel=\"next\"");
                assert_eq!(link, expected);
                url = link[1..link.find('>').unwrap()].to_string();
            }
            None => {
                assert_eq!(link, None);
                break;
            }
        }
    }
    assert_eq!(seen, ids);
    // A parameter given twice is refused, not silently the last one.
    let res = app.get("/v1/snapshot-jobs?state=queued&state=failed").await;
    assert_problem(&res, StatusCode::BAD_REQUEST);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["errors"][0]["field"], "/state", "{p}");
    assert_eq!(p["errors"][0]["code"], "repeated", "{p}");
    // An admin listing a team that does not exist is told so.
    let authed = spawn(app.store.clone(), |s| s.auth.enabled = true).await;
    let admin = authed.key("ops", true).await;
    let res = authed
        .with_token(Some(&admin.token))
        .get("/v1/snapshot-jobs?team=no-such-team")
        .await;
    assert_problem(&res, StatusCode::BAD_REQUEST);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["errors"][0]["code"], "unknown_team", "{p}");
    let page: Value = app
        .get("/v1/snapshot-jobs?state=succeeded")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["jobs"], json!([]));
    let page: Value = app
        .get("/v1/snapshot-jobs?state=queued&created_after=2000-01-01T00:00:00Z")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["jobs"].as_array().unwrap().len(), 5);
    let page: Value = app
        .get("/v1/snapshot-jobs?created_before=2000-01-01T00:00:00Z")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["jobs"], json!([]));
    let res = app
        .get("/v1/snapshot-jobs?state=done&limit=0&cursor=zzz&created_after=yesterday&color=red")
        .await;
    assert_problem(&res, StatusCode::BAD_REQUEST);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["errors"].as_array().unwrap().len(), 5);
    let res = app.get("/v1/snapshot-jobs?limit=1000").await;
    assert_problem(&res, StatusCode::BAD_REQUEST);
}

async fn idempotency_replays_rejects_and_serializes(store: DynStore) {
    let app = spawn(store, |_| {}).await;
    let first = app.post_job(&example(), Some("key-1")).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = app.post_job(&example(), Some("key-1")).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let mut other = example();
    other["num"] = json!(4);
    let res = app.post_job(&other, Some("key-1")).await;
    assert_problem(&res, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "idempotency_key_reused"
    );
    // Concurrent identical requests with a fresh key: exactly one job.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let http = app.http.clone();
        let url = format!("{}/v1/snapshot-jobs", app.base);
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .header("Idempotency-Key", "key-2")
                .json(&example())
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        let status = t.await.unwrap();
        assert!(
            status == StatusCode::ACCEPTED || status == StatusCode::CONFLICT,
            "{status}"
        );
    }
    let list: Value = app
        .get("/v1/snapshot-jobs?limit=200")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 2, "one job per key");
}

async fn in_progress_key_answers_409(store: DynStore) {
    // The worker is "enabled" but runs in no process here, so the first request waits out its budget.
    let app = spawn(store, |s| {
        s.worker.enabled = true;
        s.http.submit_wait_ms = 1500;
    })
    .await;
    let first = {
        let http = app.http.clone();
        let url = format!("{}/v1/snapshot-jobs", app.base);
        tokio::spawn(async move {
            http.post(url)
                .header("Idempotency-Key", "slow")
                .json(&example())
                .send()
                .await
                .unwrap()
        })
    };
    // Wait until the first request has stored its key (still unanswered), not for a fixed time.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rec = app
            .store
            .get_idempotency_key("default", "slow")
            .await
            .unwrap();
        if let Some(rec) = rec {
            assert_eq!(rec.response_status, None, "first request already answered");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "key never stored");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = app.post_job(&example(), Some("slow")).await;
    assert_problem(&second, StatusCode::CONFLICT);
    assert_eq!(
        second.json::<Value>().await.unwrap()["code"],
        "idempotency_key_in_progress"
    );
    let first = first.await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let third = app.post_job(&example(), Some("slow")).await;
    assert_eq!(third.headers()["idempotent-replayed"], "true");
}

async fn health_and_readiness(store: DynStore) {
    let backend = store.backend();
    let app = spawn(store, |_| {}).await;
    let h: Value = app.get("/healthz").await.json().await.unwrap();
    assert_eq!(h["status"], "ok");
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["store"], backend);
}

/// A poller that sends back the `ETag` it got pays a `304` with no body while nothing changed,
/// and gets the new answer as soon as something did.
async fn etags_answer_304_until_the_answer_changes(store: DynStore) {
    let app = spawn(store, |_| {}).await;
    let job: Value = app.post_job(&example(), None).await.json().await.unwrap();
    let path = format!("/v1/snapshot-jobs/{}", job["id"].as_str().unwrap());
    let first = app.get(&path).await;
    assert_eq!(first.status(), StatusCode::OK);
    let tag = first.headers()["etag"].to_str().unwrap().to_string();
    assert!(
        tag.starts_with('"') && tag.ends_with('"') && tag.len() > 10,
        "{tag}"
    );
    let body = first.bytes().await.unwrap();
    let get_if = |path: String, inm: String| {
        let app = &app;
        async move {
            app.req(reqwest::Method::GET, &path)
                .header("if-none-match", inm)
                .send()
                .await
                .unwrap()
        }
    };
    let again = get_if(path.clone(), tag.clone()).await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["etag"], tag.as_str());
    assert!(again.bytes().await.unwrap().is_empty());
    // Weak comparison, and a list of tags.
    let again = get_if(path.clone(), format!("\"other\", W/{tag}")).await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    // Another tag: the whole answer, the same bytes.
    let other = get_if(path.clone(), "\"stale\"".into()).await;
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(other.bytes().await.unwrap(), body);
    // The list changes when a job is added: its old tag no longer matches.
    let list = app.get("/v1/snapshot-jobs").await;
    let list_tag = list.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(
        get_if("/v1/snapshot-jobs".into(), list_tag.clone())
            .await
            .status(),
        StatusCode::NOT_MODIFIED
    );
    app.post_job(&example(), None).await;
    let changed = get_if("/v1/snapshot-jobs".into(), list_tag.clone()).await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), list_tag);
    // Errors carry no tag.
    let missing = app
        .get("/v1/snapshot-jobs/00000000-0000-7000-8000-000000000000")
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(missing.headers().get("etag").is_none());
}

common::both_stores!(
    #[tokio::test]
    submit_then_read_back,
    invalid_requests_list_every_violation,
    bad_bodies_are_4xx_never_5xx,
    unknown_jobs_are_404,
    list_filters_and_pages,
    idempotency_replays_rejects_and_serializes,
    in_progress_key_answers_409,
    health_and_readiness,
    etags_answer_304_until_the_answer_changes
);

/// The served OpenAPI document is generated from the handlers; this checks every documented
/// operation is routed, the request schema and the validator know the same fields, and the
/// document matches the reviewed snapshot in tests/snapshots/openapi.json
/// (regenerate with `UPDATE_SNAPSHOTS=1 cargo test --test it api::`).
/// Every range and pattern the document publishes is the one the validator enforces: each
/// bound accepted and its neighbour refused, each pattern agreeing with the validator on samples.
fn published_rules_are_the_validators(doc: &Value) {
    use snapgate::domain::validate_request;
    let schemas = &doc["components"]["schemas"];
    let field_errors = |body: &Value, field: &str| -> Vec<String> {
        match validate_request(body) {
            Ok(_) => vec![],
            Err(v) => v
                .into_iter()
                .filter(|e| e.field == field)
                .map(|e| e.code)
                .collect(),
        }
    };
    let mut base = example();
    base["sprite"]["output"]["object"] = json!("sprites/{TileCount}.jpg");
    let mut checked = 0;
    for (schema, prefix) in [("CreateJobBody", ""), ("SpriteBody", "/sprite")] {
        for (name, prop) in schemas[schema]["properties"].as_object().unwrap() {
            let (Some(min), Some(max)) = (prop["minimum"].as_u64(), prop["maximum"].as_u64())
            else {
                continue;
            };
            let field = format!("{prefix}/{name}");
            let with = |v: u64| {
                let mut b = base.clone();
                let target = if prefix.is_empty() {
                    &mut b
                } else {
                    &mut b["sprite"]
                };
                target[name.as_str()] = json!(v);
                // Keep single-snapshot rules out of the way of `num`'s own bounds.
                b
            };
            for ok in [min, max] {
                assert!(
                    field_errors(&with(ok), &field).is_empty(),
                    "{field} = {ok} must be accepted"
                );
            }
            if min > 0 {
                assert_eq!(
                    field_errors(&with(min - 1), &field),
                    ["out_of_range"],
                    "{field} = {}",
                    min - 1
                );
            }
            assert_eq!(
                field_errors(&with(max + 1), &field),
                ["out_of_range"],
                "{field} = {}",
                max + 1
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 13, "every integer field publishes its range");
    let samples: &[(&str, &str, &[&str])] = &[
        (
            "OssObjectBody",
            "/input/location",
            &[
                "oss-cn-shanghai",
                "cn-shanghai",
                "oss-",
                "oss-a--b",
                "OSS-CN",
            ],
        ),
        (
            "OssObjectBody",
            "/input/bucket",
            &["media", "me", "-media", "media-", "Media", "a1-b2"],
        ),
        (
            "OssObjectBody",
            "/input/object",
            &["a.mp4", "/a.mp4", "\\a", "a\nb", "a\0b", "dir/a b.mp4"],
        ),
        (
            "CreateJobBody",
            "/pipeline_id",
            &[
                "9bad3801a2c561c22c4df9c6abcd0000",
                "9BAD3801A2C561C22C4DF9C6ABCD0000",
                "abc",
            ],
        ),
        (
            "SpriteBody",
            "/sprite/color",
            &["black", "BlAcK", "#00ff00", "#00ff0", "pink", "Random"],
        ),
    ];
    for (schema, field, values) in samples {
        let name = field.rsplit('/').next().unwrap();
        let pattern = schemas[*schema]["properties"][name]["pattern"]
            .as_str()
            .unwrap();
        let re = regex::Regex::new(pattern).unwrap();
        for v in *values {
            let mut b = base.clone();
            let parts: Vec<&str> = field.trim_start_matches('/').split('/').collect();
            let mut target = &mut b;
            for p in &parts[..parts.len() - 1] {
                target = &mut target[*p];
            }
            target[name] = json!(v);
            let valid = !field_errors(&b, field)
                .iter()
                .any(|c| c == "invalid_format" || c == "invalid_characters");
            assert_eq!(
                re.is_match(v),
                valid,
                "{field} = {v:?}: pattern {pattern} and validator disagree"
            );
        }
    }
}

/// `/docs` is Swagger UI on the served document, every file from the binary itself: the page
/// loads nothing from another origin.
#[tokio::test]
async fn docs_are_served_from_the_binary() {
    let (store, _g) = common::sqlite_store().await;
    let app = spawn(store, |_| {}).await;
    let res = app.get("/docs").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = res.text().await.unwrap();
    assert!(page.contains("/openapi.json"), "{page}");
    let refs = regex::Regex::new(r#"(?:src|href)="([^"]+)""#).unwrap();
    let mut assets = 0;
    for c in refs.captures_iter(&page) {
        let url = &c[1];
        assert!(!url.contains("//"), "the page loads {url} from elsewhere");
        let path = if url.starts_with('/') {
            url.to_string()
        } else {
            format!("/docs/{}", url.trim_start_matches("./"))
        };
        let res = app.get(&path).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert!(!res.bytes().await.unwrap().is_empty(), "{path}");
        assets += 1;
    }
    assert!(assets >= 2, "the page names its script and style: {page}");
}

#[tokio::test]
async fn openapi_matches_the_router_and_the_validator() {
    let (store, _g) = common::sqlite_store().await;
    let app = spawn(store, |_| {}).await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{id}", "0190a0b0-0000-7000-8000-000000000000")
                .replace("{name}", "no-such-preset");
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let res = app
                .http
                .request(m, format!("{}{concrete}", app.base))
                .send()
                .await
                .unwrap();
            assert_ne!(
                res.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} not routed"
            );
            if res.status() == StatusCode::NOT_FOUND {
                let p: Value = res.json().await.unwrap();
                assert_eq!(p["detail"], "no such resource", "{method} {path}");
                assert!(path.contains('{'), "{method} {path} not routed");
            }
            operations += 1;
        }
    }
    assert_eq!(operations, 37);
    let props = |schema: &str| -> Vec<String> {
        let mut v: Vec<String> = doc["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    };
    let sorted = |fields: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    use snapgate::domain::validate::{SPRITE_FIELDS, TOP_FIELDS};
    let mut body_fields = TOP_FIELDS.to_vec();
    body_fields.push(snapgate::services::presets::PRESET_FIELD);
    assert_eq!(props("CreateJobBody"), sorted(&body_fields));
    assert_eq!(props("SpriteBody"), sorted(SPRITE_FIELDS));
    published_rules_are_the_validators(&doc);

    let snapshot =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/openapi.json");
    let pretty = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(snapshot.parent().unwrap()).unwrap();
        std::fs::write(&snapshot, &pretty).unwrap();
    }
    let expected = std::fs::read_to_string(&snapshot)
        .expect("tests/snapshots/openapi.json (UPDATE_SNAPSHOTS=1 to create)");
    assert_eq!(
        pretty, expected,
        "the API changed: review and UPDATE_SNAPSHOTS=1"
    );
}
