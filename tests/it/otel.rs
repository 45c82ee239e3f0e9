//! OpenTelemetry export (`log.otlp_endpoint`). Built without `--features otel`, the binary
//! refuses the key; built with it (`cargo test --features otel --test it otel::`, as `.ci/run` does),
//! the real binary exports its spans over OTLP/HTTP to a collector this test runs, which decodes
//! them with the OTLP protobuf messages.

use crate::common;

use common::process;

#[cfg(not(feature = "otel"))]
#[test]
fn an_otlp_endpoint_refuses_to_start_without_the_feature() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(process::BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "SNAPGATE_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
        )
        .env(
            "SNAPGATE__HTTP__LISTEN",
            format!("127.0.0.1:{}", process::free_port()),
        )
        .env("SNAPGATE__EMULATOR__LISTEN", "127.0.0.1:0")
        .env("SNAPGATE__LOG__OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: log.otlp_endpoint is set") && err.contains("--features otel"),
        "{err}"
    );
}

#[cfg(feature = "otel")]
mod export {
    use super::*;

    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use axum::body::Bytes;
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;
    use serde_json::{json, Value};

    type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

    /// An OTLP/HTTP collector: `POST /v1/traces`, protobuf in, protobuf out.
    async fn collector() -> (String, Received) {
        let got: Received = Arc::default();
        let keep = got.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let keep = keep.clone();
                async move {
                    let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    keep.lock().unwrap().push(req);
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, got)
    }

    fn attr(span: &Span, key: &str) -> Option<String> {
        span.attributes.iter().find(|kv| kv.key == key).map(|kv| {
            match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Any::StringValue(s)) => s.clone(),
                Some(Any::IntValue(i)) => i.to_string(),
                Some(Any::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            }
        })
    }

    #[tokio::test]
    async fn requests_store_calls_and_mps_calls_are_exported_with_their_ids() {
        let (otlp, received) = collector().await;
        let dir = tempfile::tempdir().unwrap();
        let emu_port = process::free_port();
        let _emu = process::emulator("otel", emu_port, &[]);
        let http = reqwest::Client::new();
        let mps = format!("http://127.0.0.1:{emu_port}");
        process::wait_ready(&http, &format!("{mps}/_emulator/jobs")).await;
        let port = process::free_port();
        let db = format!("sqlite://{}/g.db", dir.path().display());
        let mut cmd = process::gateway_command(port, &db, &mps);
        cmd.env("SNAPGATE__LOG__OTLP_ENDPOINT", &otlp)
            .env("SNAPGATE__LOG__OTLP_SERVICE_NAME", "snapgate-otel-test");
        let mut gw = process::Proc::spawn("otel", "gateway", cmd);
        let base = format!("http://127.0.0.1:{port}");
        process::wait_ready(&http, &format!("{base}/readyz")).await;

        let body = json!({
            "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": "in/a.mp4"},
            "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "out/a.jpg"},
            "time_ms": 0
        });
        let res = http
            .post(format!("{base}/v1/snapshot-jobs"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.status());
        let request_id = res.headers()["x-request-id"].to_str().unwrap().to_string();
        let job: Value = res.json().await.unwrap();
        let id = job["id"].as_str().unwrap().to_string();
        // Until MPS has answered the submit (the worker's `dispatch` span has ended).
        let start = Instant::now();
        let job = loop {
            let j: Value = http
                .get(format!("{base}/v1/snapshot-jobs/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if j["mps"]["request_id"].is_string() {
                break j;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "{j}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mps_request_id = job["mps"]["request_id"].as_str().unwrap().to_string();
        // A stop sends what the exporter still holds.
        assert!(gw.terminate(Duration::from_secs(30)).await.success());

        let got = received.lock().unwrap();
        assert!(!got.is_empty(), "nothing exported; log: {}", gw.log_text());
        let mut spans = Vec::new();
        for req in got.iter() {
            for rs in &req.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                    .and_then(|kv| kv.value.as_ref()?.value.clone());
                assert_eq!(
                    service,
                    Some(Any::StringValue("snapgate-otel-test".into())),
                    "service.name"
                );
                for ss in &rs.scope_spans {
                    spans.extend(ss.spans.iter().cloned());
                }
            }
        }
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        let by_id = |span_id: &[u8]| spans.iter().find(|s| s.span_id == span_id);

        // The POST's request span: route template, request id and job id.
        let post = spans
            .iter()
            .find(|s| s.name == "request" && attr(s, "request_id").as_deref() == Some(&request_id))
            .unwrap_or_else(|| panic!("no request span for {request_id}: {names:?}"));
        assert_eq!(attr(post, "method").as_deref(), Some("POST"));
        assert_eq!(attr(post, "route").as_deref(), Some("/v1/snapshot-jobs"));
        assert_eq!(attr(post, "job_id").as_deref(), Some(id.as_str()));
        // The store call that recorded the job, inside that request.
        let create = spans
            .iter()
            .find(|s| s.name == "store.create_job" && s.trace_id == post.trace_id)
            .unwrap_or_else(|| panic!("no store.create_job in the POST's trace: {names:?}"));
        assert_eq!(
            create.parent_span_id, post.span_id,
            "store call under the request"
        );
        // The submit: an mps.call span with MPS's request id, under the job's dispatch span.
        let submit = spans
            .iter()
            .find(|s| {
                s.name == "mps.call"
                    && attr(s, "action").as_deref() == Some("SubmitSnapshotJob")
                    && attr(s, "mps_request_id").as_deref() == Some(mps_request_id.as_str())
            })
            .unwrap_or_else(|| panic!("no mps.call with {mps_request_id}: {names:?}"));
        assert_eq!(attr(submit, "code").as_deref(), Some("Success"));
        assert_eq!(attr(submit, "http_status").as_deref(), Some("200"));
        assert_eq!(attr(submit, "job_id").as_deref(), Some(id.as_str()));
        let dispatch = by_id(&submit.parent_span_id)
            .unwrap_or_else(|| panic!("the submit's parent span was not exported: {names:?}"));
        assert_eq!(dispatch.name, "dispatch");
        assert_eq!(attr(dispatch, "job_id").as_deref(), Some(id.as_str()));
        // Store calls of the dispatch carry the job id too.
        assert!(
            spans.iter().any(|s| s.name.starts_with("store.")
                && s.trace_id == dispatch.trace_id
                && attr(s, "job_id").as_deref() == Some(id.as_str())),
            "no store span with the job id in the dispatch trace: {names:?}"
        );
    }
}
