//! The built-in emulator's random key (embedded default: no MPS key configured) never reaches
//! the log: the real binary runs `serve` with JSON logs at debug, jobs go all the way through
//! the emulator, and then no 32-hex token of the log (the secret's form: a simple UUID) may be
//! one that nothing outside the process knows — every such token must appear in what the API
//! and the emulator's ledger answered (MPS job ids, the pipeline, request ids), or be a worker's
//! own name in its `owner` field.

use crate::common;

use std::time::{Duration, Instant};

use common::process::{self, Proc, BIN};
use serde_json::{json, Value};

fn hex32_tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| {
            t.len() == 32
                && t.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_emulators_secret_is_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let port = process::free_port();
    let emu_port = process::free_port();
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "SNAPGATE_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
        )
        .env("SNAPGATE__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/snapgate.db", dir.path().display()),
        )
        .env(
            "SNAPGATE__EMULATOR__LISTEN",
            format!("127.0.0.1:{emu_port}"),
        )
        .env("SNAPGATE__EMULATOR__OSS_DIR", "")
        // The test reads the ledger (`/_emulator/jobs`) to look for the secret there too.
        .env("SNAPGATE__EMULATOR__CONTROL_ROUTES", "true")
        .env("SNAPGATE__EMULATOR__STATE_DIR", dir.path().join("emulator"))
        .env("SNAPGATE__EMULATOR__START_MS", "50")
        .env("SNAPGATE__EMULATOR__PROCESS_MS", "200")
        .env("SNAPGATE__WORKER__STATUS_POLL_MIN_MS", "100")
        .env("SNAPGATE__WORKER__IDLE_POLL_MS", "100")
        .env("SNAPGATE__AUTH__ENABLED", "false")
        .env(
            "SNAPGATE__AUTH__MASTER_KEY_FILE",
            dir.path().join("master.key"),
        )
        .env("SNAPGATE__LOG__FORMAT", "json")
        .env("RUST_LOG", "debug");
    let mut serve = Proc::spawn("emulator_secret_logs", &format!("serve-{port}"), cmd);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    process::wait_ready(&http, &format!("{base}/readyz")).await;

    let mut known = String::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = http
            .post(format!("{base}/v1/snapshot-jobs"))
            .json(&json!({
                "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("in/{i}.mp4")},
                "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("out/{i}/{{Count}}.jpg")},
                "num": 2, "interval_s": 1
            }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let j: Value = r.json().await.unwrap();
        ids.push(j["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let start = Instant::now();
        loop {
            let text = http
                .get(format!("{base}/v1/snapshot-jobs/{id}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let j: Value = serde_json::from_str(&text).unwrap();
            if j["state"] == "succeeded" {
                known.push_str(&text);
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "{j}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        known.push_str(
            &http
                .get(format!("{base}/v1/snapshot-jobs/{id}/mps-responses"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    known.push_str(
        &http
            .get(format!("http://127.0.0.1:{emu_port}/_emulator/jobs"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert!(serve.terminate(Duration::from_secs(30)).await.success());

    let log = serve.log_text();
    assert!(log.lines().count() > 20, "a debug log was written:\n{log}");
    assert!(
        log.contains("built-in MPS emulator"),
        "the embedded default ran"
    );
    // The process's own worker names (`webhooks-<uuid>`, lease owners) are random too, and say
    // what they are in their field.
    for line in log.lines() {
        if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(line) {
            for field in ["owner", "worker", "lease_owner"] {
                if let Some(v) = m.get(field).and_then(Value::as_str) {
                    known.push_str(v);
                    known.push(' ');
                }
            }
        }
    }
    let unknown: Vec<String> = hex32_tokens(&log)
        .into_iter()
        .filter(|t| !known.contains(t.as_str()))
        .collect();
    assert!(unknown.is_empty(), "32-hex tokens in the log that nothing outside knows (the emulator's secret?): {unknown:?}\nlog: {}", serve.log.display());
}
