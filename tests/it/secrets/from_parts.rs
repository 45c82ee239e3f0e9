//! Secrets never leak: the whole product runs with distinctive secrets (the MPS key, a wrong MPS
//! key, a team's secret and token, a webhook endpoint's secrets before and after a rotation) while every log line at DEBUG is captured; then no log line,
//! response (body or header) or row of either replica's database may contain any of them.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::Captured;
use common::TestApp;
use serde_json::{json, Value};
use snapgate::crypto::MasterKey;
use snapgate::emulator::{self, EmulatorConfig};
use snapgate::mps::client::{MpsClient, MpsClientConfig, SignatureMethod};
use snapgate::secret::Secret;
use snapgate::services::keys::issue_key;
use sqlx::Row;

const MPS_SECRET: &str = "MPS-CANARY-7f3a9c1e5d";
const WRONG_SECRET: &str = "WRONG-CANARY-2b8e4d6f0a";

/// Every row of every table of the database at `url`, as `(table, row as JSON text)`.
async fn dump(url: &str) -> Vec<(String, String)> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(tables.len() >= 3, "the schema is there: {tables:?}");
    let mut rows = Vec::new();
    for t in &tables {
        for r in sqlx::query(&format!("SELECT row_to_json(x)::text AS j FROM \"{t}\" x"))
            .fetch_all(&pool)
            .await
            .unwrap()
        {
            rows.push((t.clone(), r.get::<String, _>("j")));
        }
    }
    pool.close().await;
    rows
}

fn body() -> Value {
    json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": "in/a.mp4"},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "out/{Count}.jpg"},
        "num": 2, "interval_s": 1, "pipeline_id": "9bad3801a2c561c22c4df9c6abcd0000"
    })
}

#[test]
fn no_secret_reaches_a_log_a_response_or_the_database() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Every thread of the test's runtime logs to `logs`; the rest of the binary does not.
    common::runtime_logging_to(subscriber.into(), 2).block_on(leak_check(logs));
}

async fn leak_check(logs: Captured) {
    let (store, db_url) = common::pg_store().await;
    let master =
        MasterKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([9u8; 32]))
            .unwrap();
    store
        .create_team("alpha", snapgate::store::now())
        .await
        .unwrap();
    let team = issue_key(&store, &master, "alpha", false).await.unwrap();
    let admin = issue_key(&store, &master, "alpha", true).await.unwrap();
    let revoked = issue_key(&store, &master, "alpha", false).await.unwrap();
    store
        .revoke_api_key(&revoked.access_key_id, snapgate::store::now())
        .await
        .unwrap();
    // Each secret with a name for it: a failure names the kind and the place, never the value.
    let mut canaries = vec![
        ("the MPS secret", MPS_SECRET.to_string()),
        ("the wrong MPS secret", WRONG_SECRET.to_string()),
        ("the team's key secret", team.access_key_secret.clone()),
        ("the team's token", team.token.clone()),
        ("the admin's key secret", admin.access_key_secret.clone()),
        ("the admin's token", admin.token.clone()),
        ("a revoked token", revoked.token.clone()),
    ];

    let emu = emulator::spawn(EmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        access_keys: vec![("LTAIcanary".into(), MPS_SECRET.into())],
        start_ms: 20,
        process_ms: 100,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let client = |secret: &str| {
        Arc::new(
            MpsClient::new(MpsClientConfig {
                endpoint: emu.url(),
                credentials: snapgate::credentials::Credentials::key(
                    "LTAIcanary",
                    Secret::new(secret),
                ),
                signature: SignatureMethod::V1,
                region_id: None,
                connect_timeout: Duration::from_secs(1),
                request_timeout: Duration::from_secs(5),
            })
            .unwrap(),
        )
    };
    let mut settings = common::test_settings();
    settings.auth.enabled = true;
    settings.mps.access_key_id = Some("LTAIcanary".into());
    settings.mps.access_key_secret = Some(Secret::new(MPS_SECRET));
    settings.worker.status_poll_min_ms = 50;
    tracing::debug!(?settings, "settings in use");
    let app = TestApp::from_settings(settings.clone())
        .store(store.clone())
        .mps(client(MPS_SECRET))
        .start()
        .await;
    let base = app.base.clone();
    // A second replica whose MPS secret is wrong: SignatureDoesNotMatch is logged with both
    // strings-to-sign, never with the secret.
    let (other_store, other_db) = common::pg_store().await;
    other_store
        .create_team("alpha", snapgate::store::now())
        .await
        .unwrap();
    let other_key = issue_key(&other_store, &master, "alpha", false)
        .await
        .unwrap();
    canaries.push((
        "the second replica's key secret",
        other_key.access_key_secret.clone(),
    ));
    canaries.push(("the second replica's token", other_key.token.clone()));
    let wrong = TestApp::from_settings(settings)
        .store(other_store)
        .mps(client(WRONG_SECRET))
        .start()
        .await;
    let wrong_base = wrong.base.clone();

    let http = reqwest::Client::new();
    let mut answers = Vec::new();
    let keep = |res: reqwest::Response| async move {
        let headers = format!("{:?}", res.headers());
        let text = res.text().await.unwrap();
        format!("{headers}\n{text}")
    };
    // A webhook endpoint and a rotation: their secrets are shown once (these two answers are
    // the only place they may appear), then signed with but never logged or stored in clear.
    // The name does not resolve: every attempt fails (and is logged).
    let created: Value = http
        .post(format!("{base}/v1/webhook-endpoints"))
        .bearer_auth(&team.token)
        .json(&json!({"url": "https://hooks.snapgate-canary.invalid/x", "event_types": ["snapshot_job.succeeded"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let endpoint = created["id"].as_str().unwrap().to_string();
    canaries.push((
        "the webhook secret",
        created["secret"].as_str().unwrap().to_string(),
    ));
    let rotated: Value = http
        .post(format!(
            "{base}/v1/webhook-endpoints/{endpoint}/rotate-secret"
        ))
        .bearer_auth(&team.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    canaries.push((
        "the rotated webhook secret",
        rotated["secret"].as_str().unwrap().to_string(),
    ));
    let post = http
        .post(format!("{base}/v1/snapshot-jobs"))
        .bearer_auth(&team.token)
        .json(&body())
        .send()
        .await
        .unwrap();
    let job: Value = serde_json::from_str(keep(post).await.lines().last().unwrap()).unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    for _ in 0..100 {
        let r = http
            .get(format!("{base}/v1/snapshot-jobs/{id}"))
            .bearer_auth(&team.token)
            .send()
            .await
            .unwrap();
        let text = keep(r).await;
        let done = text.contains("\"state\":\"succeeded\"");
        answers.push(text);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        answers.last().unwrap().contains("succeeded"),
        "the job went through"
    );
    // The job's webhook was attempted (signed with both secrets, refused by DNS).
    for _ in 0..100 {
        let d = keep(
            http.get(format!("{base}/v1/webhook-endpoints/{endpoint}/deliveries"))
                .bearer_auth(&team.token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        let attempted = d.contains("\"latency_ms\"");
        answers.push(d);
        if attempted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        answers.last().unwrap().contains("latency_ms"),
        "the webhook was attempted: {}",
        answers.last().unwrap()
    );
    for req in [
        http.get(format!("{base}/v1/webhook-endpoints"))
            .bearer_auth(&team.token),
        http.get(format!("{base}/v1/snapshot-jobs"))
            .bearer_auth(&team.token),
        http.get(format!("{base}/v1/snapshot-jobs/{id}/mps-responses"))
            .bearer_auth(&team.token),
        http.get(format!("{base}/v1/admin/stats"))
            .bearer_auth(&admin.token),
        http.get(format!("{base}/v1/admin/stats"))
            .bearer_auth(&team.token),
        http.get(format!("{base}/v1/snapshot-jobs"))
            .bearer_auth(&revoked.token),
        http.get(format!("{base}/v1/snapshot-jobs"))
            .header("authorization", format!("Basic {}", team.token)),
        http.get(format!("{base}/v1/snapshot-jobs"))
            .bearer_auth(&team.access_key_secret),
        http.post(format!("{base}/v1/snapshot-jobs"))
            .bearer_auth(&team.token)
            .json(&json!({"input": 1})),
        http.post(format!("{base}/v1/snapshot-jobs"))
            .bearer_auth(&team.token)
            .header("content-type", "application/json")
            .body("{oops"),
        http.get(format!("{base}/metrics")),
        http.get(format!("{base}/openapi.json")),
        http.post(format!("{wrong_base}/v1/snapshot-jobs"))
            .bearer_auth(&other_key.token)
            .json(&body()),
    ] {
        answers.push(keep(req.send().await.unwrap()).await);
    }
    // MPS refused the wrong replica's signature: in the POST's answer when the job was sent
    // first, else (its start-up check came first and paused dispatch) in its `/readyz`. Either
    // way the refusal went through the MPS client (and its log) before anything is scanned.
    let start = std::time::Instant::now();
    while !answers.last().unwrap().contains("SignatureDoesNotMatch") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "MPS never refused the wrong secret: {}",
            answers.last().unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        answers.push(
            keep(
                http.get(format!("{wrong_base}/readyz"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await,
        );
    }

    // Every row of every table of both replicas' databases, as text.
    let mut rows = Vec::new();
    for (db, url, key) in [
        ("the first replica's database", &db_url, &team.access_key_id),
        (
            "the second replica's database",
            &other_db,
            &other_key.access_key_id,
        ),
    ] {
        let dumped = dump(url).await;
        assert!(
            dumped
                .iter()
                .any(|(t, r)| t == "api_keys" && r.contains(key.as_str())),
            "the dump of {db} reads its key table"
        );
        rows.extend(dumped.into_iter().map(|(t, r)| (db, t, r)));
    }
    assert!(
        rows.iter()
            .any(|(db, t, _)| db.contains("second") && t == "jobs"),
        "the second replica recorded its job"
    );

    let log_text = logs.text();
    assert!(log_text.contains("job recorded"), "logs were captured");
    assert!(
        log_text.contains("webhook attempt"),
        "the webhook attempt was logged"
    );
    assert!(
        log_text.contains("SignatureDoesNotMatch"),
        "the signature failure was logged"
    );
    let mut found = Vec::new();
    for (name, c) in &canaries {
        if log_text.contains(c.as_str()) {
            found.push(format!("{name} in the logs"));
        }
        for (i, a) in answers.iter().enumerate() {
            if a.contains(c.as_str()) {
                found.push(format!("{name} in response {i}"));
            }
        }
        for (db, table, r) in &rows {
            if r.contains(c.as_str()) {
                found.push(format!("{name} in {db}, table {table}"));
            }
        }
    }
    assert!(found.is_empty(), "secrets leaked: {found:#?}");
    println!(
        "secret leaks: {} log bytes, {} responses, {} database rows of two databases checked against {} secrets: none found",
        log_text.len(),
        answers.len(),
        rows.len(),
        canaries.len()
    );
}
