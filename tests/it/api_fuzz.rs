//! Hostile input: schemathesis (a property-based API fuzzer from PyPI) generates requests from
//! the served OpenAPI document against a live snapgate (auth on, worker and in-process emulator
//! running): no 5xx, only documented status codes, content types, headers and response schemas,
//! and schema-invalid requests rejected. `positive_data_acceptance` is not run: MPS's cross-field
//! rules (`{Count}` when several snapshots result, ...) cannot be stated in JSON Schema, so some
//! schema-valid bodies are rightly refused.

use crate::common;

use std::collections::BTreeMap;
use std::process::Command;

use base64::Engine;
use common::TestApp;
use snapgate::crypto::MasterKey;
use snapgate::services::keys::issue_key;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_contract_violation() {
    let venv = common::python_venv("fuzz-venv", "tests/fuzz/requirements.txt");
    let (store, _dir) = common::sqlite_store().await;
    let master =
        MasterKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([5u8; 32]))
            .unwrap();
    let key = issue_key(&store, &master, "default", true).await.unwrap();
    let mut settings = common::test_settings();
    settings.auth.enabled = true;
    settings.http.submit_wait_ms = 0;
    settings.limits.team_requests_per_second = 100_000;
    settings.limits.team_burst = 100_000;
    let app = TestApp::from_settings(settings).store(store).start().await;
    let base = app.base.clone();

    let report = tempfile::tempdir().unwrap();
    let report_dir = report.path().to_path_buf();
    let token = key.token.clone();
    let out = tokio::task::spawn_blocking(move || {
        // Through the venv's python: a moved venv's entry-point scripts point at the old path.
        Command::new(venv.join("bin/python"))
            .args(["-m", "schemathesis.cli", "run"])
            .arg(format!("{base}/openapi.json"))
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,negative_data_rejection"])
            .args(["--max-examples", "50", "--max-time", "75", "--seed", "20261124", "--no-color"])
            .args(["--report", "ndjson", "--report-dir"])
            .arg(&report_dir)
            .output()
            .expect("schemathesis runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);

    // Generated requests per operation, from the NDJSON event report.
    let mut per_operation: BTreeMap<String, usize> = BTreeMap::new();
    for entry in std::fs::read_dir(report.path()).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(rec) = event.pointer("/ScenarioFinished/recorder") {
                let label = rec["label"].as_str().unwrap_or("?").to_string();
                *per_operation.entry(label).or_default() +=
                    rec["cases"].as_object().map_or(0, |c| c.len());
            }
        }
    }
    println!("schemathesis requests per operation: {per_operation:?}");
    let summary: Vec<&str> = stdout.lines().filter(|l| l.contains("generated")).collect();
    println!("{}", summary.join("\n"));
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for op in [
        "POST /v1/snapshot-jobs",
        "GET /v1/snapshot-jobs",
        "GET /v1/snapshot-jobs/{id}",
        "GET /v1/admin/stats",
        "POST /v1/webhook-endpoints",
        "GET /v1/webhook-endpoints",
        "PATCH /v1/webhook-endpoints/{id}",
    ] {
        assert!(
            per_operation.get(op).copied().unwrap_or(0) > 0,
            "{op} was not exercised: {per_operation:?}"
        );
    }
}
