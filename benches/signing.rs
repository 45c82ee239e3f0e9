//! Micro-benchmarks of the per-request CPU work: signing a SubmitSnapshotJob (v1 and ACS3) and
//! validating the README's full example request. `cargo bench --bench signing`.

use std::collections::BTreeMap;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::json;
use snapgate::domain::validate_request;
use snapgate::mps::sign;

fn submit_params() -> BTreeMap<String, String> {
    [
        ("Action", "SubmitSnapshotJob"),
        ("Version", "2014-06-18"),
        ("Format", "JSON"),
        ("AccessKeyId", "LTAI5tExampleKeyId"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
        ("Timestamp", "2026-11-24T12:00:00Z"),
        ("RegionId", "cn-shanghai"),
        ("Input", r#"{"Bucket":"media","Location":"oss-cn-shanghai","Object":"uploads%2Fclip%2001.mp4"}"#),
        ("SnapshotConfig", r#"{"FrameType":"normal","Interval":"2","Num":"3","OutputFile":{"Bucket":"media","Location":"oss-cn-shanghai","Object":"thumbs%2Fclip01%2F%7BCount%7D.jpg"},"Time":"2000","TileOut":{"Columns":"10","Lines":"10"},"TileOutputFile":{"Bucket":"media","Location":"oss-cn-shanghai","Object":"sprites%2F%7BTileCount%7D.jpg"},"Width":"640"}"#),
        ("PipelineId", "9bad3801a2c561c22c4df9c6abcd0000"),
        ("UserData", "0193a4c2-5e1f-7c35-9a1e-8f0e2b6d4a10-any team data"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn bench(c: &mut Criterion) {
    let params = submit_params();
    c.bench_function("sign v1 SubmitSnapshotJob", |b| {
        b.iter(|| {
            sign::sign_v1(
                "secret",
                &sign::string_to_sign_v1("POST", black_box(&params)),
            )
        })
    });
    let mut query = params.clone();
    query.retain(|k, _| {
        matches!(
            k.as_str(),
            "Input" | "SnapshotConfig" | "PipelineId" | "UserData"
        )
    });
    let headers: BTreeMap<String, String> = [
        ("host", "mts.cn-shanghai.aliyuncs.com"),
        ("x-acs-action", "SubmitSnapshotJob"),
        ("x-acs-version", "2014-06-18"),
        ("x-acs-date", "2026-11-24T12:00:00Z"),
        (
            "x-acs-signature-nonce",
            "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        ),
        ("x-acs-content-sha256", sign::EMPTY_BODY_SHA256),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    c.bench_function("sign ACS3 SubmitSnapshotJob", |b| {
        b.iter(|| {
            let cr = sign::canonical_request_acs3(
                "POST",
                "/",
                black_box(&query),
                &headers,
                sign::EMPTY_BODY_SHA256,
            );
            sign::sign_acs3("secret", &sign::string_to_sign_acs3(&cr))
        })
    });
    let body = json!({
      "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": "uploads/clip 01.mp4"},
      "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "thumbs/clip01/{Count}.jpg"},
      "time_ms": 2000, "interval_s": 2, "num": 3, "width": 640, "height": 360,
      "frame_type": "normal", "black_level": 50,
      "sprite": {"output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "sprites/{TileCount}.jpg"},
                 "lines": 10, "columns": 10, "cell_width": 160, "cell_height": 90,
                 "margin": 0, "padding": 0, "color": "black", "keep_cells": true},
      "webvtt": {"sprite": true},
      "pipeline_id": "9bad3801a2c561c22c4df9c6abcd0000",
      "user_data": "any team data"
    });
    c.bench_function("validate full example request", |b| {
        b.iter(|| validate_request(black_box(&body)))
    });
    let raw = serde_json::to_vec(&body).unwrap();
    c.bench_function("parse + validate full example request", |b| {
        b.iter(|| validate_request(&serde_json::from_slice(black_box(&raw)).unwrap()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
