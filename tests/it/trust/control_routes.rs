//! D04: `snapgate serve` on the embedded default (no MPS key: the built-in emulator) must not
//! serve the emulator's `/_emulator/*` control routes (jobs ledger, MNS inject, faults, clock)
//! to whoever reaches its port, unless `emulator.control_routes` asks for them.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{self, TestApp};

async fn embedded(control_routes: Option<bool>) -> TestApp {
    let mut s = common::test_settings();
    s.worker.enabled = true;
    if let Some(on) = control_routes {
        s.emulator.control_routes = on;
    }
    TestApp::from_settings(s).start().await
}

#[tokio::test]
async fn serve_does_not_expose_the_embedded_emulators_control_routes_by_default() {
    let app = embedded(None).await;
    let emu = app.emulator.clone().expect("the embedded emulator runs");
    let http = reqwest::Client::new();
    let gets = [
        "/_emulator/jobs",
        "/_emulator/jobs/x",
        "/_emulator/stats",
        "/_emulator/mns",
        "/_emulator/faults",
        "/_emulator/clock",
    ];
    for path in gets {
        let r = http.get(format!("{emu}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "GET {path}");
    }
    let posts = [
        ("/_emulator/faults", json!({"unavailable_rate": 1.0})),
        ("/_emulator/clock", json!({"advance_ms": 1000})),
    ];
    for (path, body) in posts {
        let r = http
            .post(format!("{emu}{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "POST {path}");
    }
    let r = http
        .post(format!("{emu}/_emulator/mns/messages"))
        .body("<Message><MessageBody>Forged.ByAttacker</MessageBody></Message>")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "POST /_emulator/mns/messages"
    );
    // The answer says why, and what turns them on.
    let text = http
        .get(format!("{emu}/_emulator/jobs"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("emulator.control_routes"), "{text}");
    // What the store's uploads need stays: the public key upload callbacks are signed with.
    let r = http
        .get(format!("{emu}/_emulator/oss/callback_pub_key.pem"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn serve_exposes_them_when_the_configuration_asks() {
    let app = embedded(Some(true)).await;
    let emu = app.emulator.clone().expect("the embedded emulator runs");
    let r = reqwest::get(format!("{emu}/_emulator/jobs")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    app.stop().await.unwrap();
}
