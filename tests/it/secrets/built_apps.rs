//! Secrets never leak, through the product's own start-up path: unlike tests/it/secrets/from_parts.rs
//! (V1 signing, apps built from parts), the apps here are made by `Application::build` from
//! settings holding every secret (the MPS key, signed with ACS3; the master key; a Postgres
//! password in `database.url`), the `snapgate` binary's commands run with them in its environment
//! at TRACE level, and tokens arrive in every wrong place a caller may put them.
//!
//! All logs at DEBUG (TRACE for snapgate) are captured twice, as text and as JSON (the two
//! `log.format`s). Afterwards no log line, response (headers and body), command output or row of
//! either Postgres database may hold a secret, whole or any 16-character piece of it. Allowed:
//! the token's SHA-256 and the secret's ciphertext (neither contains a piece of the clear value).

use crate::common;

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use common::Captured;
use common::TestApp;
use serde_json::{json, Value};
use snapgate::crypto::{token_hash, MasterKey};
use snapgate::emulator::{self, EmulatorConfig};
use snapgate::secret::Secret;
use snapgate::services::keys::{issue_key, IssuedKey};
use sqlx::Row;
use tracing_subscriber::layer::SubscriberExt;

const MPS_KEY_ID: &str = "LTAI5tSecretsTest";
const MPS_SECRET: &str = "MPS-CANARY-8d1f2e4b9a7c3d50e6";
const WRONG_SECRET: &str = "WRONG-MPS-CANARY-5c0e9a3f71d2";
const PG_PASSWORD: &str = "PGPASS-CANARY-3e7b1d9f0a4c";
/// Every 16-character piece of every canary is searched for: a truncated or partly masked
/// secret (`sgt_AbCd1234...`) is a leak too.
const PIECE: usize = 16;

fn body(object: &str) -> Value {
    json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": "in/clip 01.mp4"},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": object},
        "num": 2, "interval_s": 1, "width": 320,
        "pipeline_id": "9bad3801a2c561c22c4df9c6abcd0000",
        "user_data": "secrets test"
    })
}

/// `url` with `password` set in its user info (user `postgres` when it names none), so the
/// password is always a canary; a URL that already carries a password is refused, since its own
/// password would go unchecked.
fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    match rest.split_once('@') {
        Some((user, host)) => {
            assert!(!user.contains(':'), "the test URL already has a password");
            format!("{scheme}://{user}:{password}@{host}")
        }
        None => format!("{scheme}://postgres:{password}@{rest}"),
    }
}

/// Every row of every table of the database at `url`, as JSON text.
async fn dump(url: &str) -> Vec<String> {
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
            rows.push(format!("{t}: {}", r.get::<String, _>("j")));
        }
    }
    pool.close().await;
    rows
}

/// Runs the `snapgate` binary with the secrets in its environment; its stdout and stderr.
fn cli(db_url: &str, master: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_snapgate"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("DATABASE_URL", db_url)
        .env("SNAPGATE__AUTH__MASTER_KEY", master)
        .env("SNAPGATE__LOG__LEVEL", "trace")
        .env("RUST_LOG", "trace")
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", MPS_KEY_ID)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", MPS_SECRET)
        .output()
        .expect("the snapgate binary runs");
    let text = format!(
        "$ snapgate {}\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

/// Where any piece of any canary occurs: (canary name, place, excerpt).
fn leaks(canaries: &[(&str, String)], places: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (name, secret) in canaries {
        let chars: Vec<char> = secret.chars().collect();
        let pieces: Vec<String> = if chars.len() <= PIECE {
            vec![secret.clone()]
        } else {
            chars.windows(PIECE).map(|w| w.iter().collect()).collect()
        };
        for (place, text) in places {
            if let Some((at, piece)) = pieces
                .iter()
                .find_map(|p| text.find(p.as_str()).map(|at| (at, p)))
            {
                let mut start = at.saturating_sub(120);
                while !text.is_char_boundary(start) {
                    start -= 1;
                }
                let mut end = (at + piece.len() + 120).min(text.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                found.push(format!(
                    "{name} ({piece:?}) in {place}: ...{}...",
                    &text[start..end]
                ));
            }
        }
    }
    found
}

async fn keep(
    answers: &mut Vec<(String, String)>,
    what: &str,
    req: reqwest::RequestBuilder,
) -> (u16, String) {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = format!("{:?}", res.headers());
    let text = res.text().await.unwrap();
    answers.push((
        format!("the answer to {what}"),
        format!("{status}\n{headers}\n{text}"),
    ));
    (status, text)
}

#[test]
fn no_secret_leaks_from_built_apps_the_cli_or_misplaced_tokens() {
    let text_logs = Captured::default();
    let json_logs = Captured::default();
    let (tw, jw) = (text_logs.clone(), json_logs.clone());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("debug,snapgate=trace"))
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || tw.clone()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_writer(move || jw.clone()),
        );
    // Every thread of the test's runtime logs to the two captures; the rest of the binary does not.
    common::runtime_logging_to(subscriber.into(), 2).block_on(leak_check(text_logs, json_logs));
}

async fn leak_check(text_logs: Captured, json_logs: Captured) {
    let master_b64 =
        base64::engine::general_purpose::STANDARD.encode(*b"MASTER-KEY-CANARY-0123456789abcd");
    let master = MasterKey::from_base64(&master_b64).unwrap();

    // Two databases, reached through URLs that carry a password (trust auth ignores it).
    let (store, plain_url) = common::pg_store().await;
    let db_url = with_password(&plain_url, PG_PASSWORD);
    let (wrong_store, wrong_plain_url) = common::pg_store().await;
    let wrong_db_url = with_password(&wrong_plain_url, PG_PASSWORD);

    let emu = emulator::spawn(EmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        access_keys: vec![(MPS_KEY_ID.into(), MPS_SECRET.into())],
        start_ms: 20,
        process_ms: 100,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();

    // The CLI creates the team and revokes a key; keys are issued with issue_key.
    let mut cli_output = vec![cli(&db_url, &master_b64, &["team", "create", "beta"])];
    let team = issue_key(&store, &master, "beta", false).await.unwrap();
    let admin = issue_key(&store, &master, "beta", true).await.unwrap();
    let revoked = issue_key(&store, &master, "beta", false).await.unwrap();
    let wrong_key = issue_key(&wrong_store, &master, "default", false)
        .await
        .unwrap();
    cli_output.push(cli(
        &db_url,
        &master_b64,
        &["key", "revoke", &revoked.access_key_id],
    ));
    cli_output.push(cli(&db_url, &master_b64, &["key", "list"]));
    assert!(
        cli_output[2].contains(&team.access_key_id) && cli_output[2].contains("revoked="),
        "key list lists the keys: {}",
        cli_output[2]
    );

    let settings_for = |url: &str, secret: &str| {
        let mut s = common::test_settings();
        s.database.url = url.to_string();
        s.database.migrate_on_start = true;
        s.auth.enabled = true;
        s.auth.master_key = Some(Secret::new(master_b64.clone()));
        s.mps.endpoint = Some(emu.url());
        s.mps.access_key_id = Some(MPS_KEY_ID.into());
        s.mps.access_key_secret = Some(Secret::new(secret));
        s.mps.signature = snapgate::mps::client::SignatureMethod::Acs3;
        s.worker.status_poll_min_ms = 50;
        s.http.submit_wait_ms = 2_000;
        s
    };
    let app = TestApp::from_settings(settings_for(&db_url, MPS_SECRET))
        .start()
        .await;
    let base = app.base.clone();
    let wrong = TestApp::from_settings(settings_for(&wrong_db_url, WRONG_SECRET))
        .start()
        .await;
    let wrong_base = wrong.base.clone();

    let http = reqwest::Client::new();
    let mut answers: Vec<(String, String)> = Vec::new();

    // The happy path, ACS3-signed, through to succeeded; then a replay of the same POST.
    let post = || {
        http.post(format!("{base}/v1/snapshot-jobs"))
            .bearer_auth(&team.token)
            .header("idempotency-key", "secrets-test-1")
            .json(&body("out/{Count}.jpg"))
    };
    let (status, text) = keep(&mut answers, "a valid POST", post()).await;
    assert!(status == 201 || status == 202, "{status} {text}");
    let id = serde_json::from_str::<Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = keep(&mut answers, "a replayed POST", post()).await;
    assert!(status == 201 || status == 202);
    let mut state = String::new();
    for _ in 0..200 {
        let (_, text) = keep(
            &mut answers,
            "GET job",
            http.get(format!("{base}/v1/snapshot-jobs/{id}"))
                .bearer_auth(&team.token),
        )
        .await;
        state = serde_json::from_str::<Value>(&text).unwrap()["state"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if state == "succeeded" || state == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "succeeded", "the ACS3-signed job went through");

    let token = &team.token;
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", team.access_key_id, team.access_key_secret));
    let jobs = format!("{base}/v1/snapshot-jobs");
    let unauthorized: Vec<(&str, reqwest::RequestBuilder)> = vec![
        (
            "no scheme",
            http.get(&jobs).header("authorization", token.as_str()),
        ),
        (
            "Token scheme",
            http.get(&jobs)
                .header("authorization", format!("Token {token}")),
        ),
        (
            "Basic id:secret",
            http.get(&jobs)
                .header("authorization", format!("Basic {basic}")),
        ),
        (
            "Basic token",
            http.get(&jobs)
                .header("authorization", format!("Basic {token}")),
        ),
        (
            "ACS3 with the secret as signature",
            http.get(&jobs).header(
                "authorization",
                format!(
                    "ACS3-HMAC-SHA256 Credential={},SignedHeaders=host,Signature={}",
                    team.access_key_id, team.access_key_secret
                ),
            ),
        ),
        (
            "X-Api-Key",
            http.get(&jobs).header("x-api-key", token.as_str()),
        ),
        (
            "query access_token",
            http.get(format!("{jobs}?access_token={token}")),
        ),
        (
            "cookie",
            http.get(&jobs).header("cookie", format!("token={token}")),
        ),
        (
            "the secret as bearer",
            http.get(&jobs).bearer_auth(&team.access_key_secret),
        ),
        (
            "the key id as bearer",
            http.get(&jobs).bearer_auth(&team.access_key_id),
        ),
        (
            "a token with a typo",
            http.get(&jobs).bearer_auth(format!("{token}x")),
        ),
        (
            "a truncated token",
            http.get(&jobs).bearer_auth(&token[..token.len() - 1]),
        ),
        (
            "an overlong token",
            http.get(&jobs).bearer_auth(token.repeat(8)),
        ),
        (
            "the token twice",
            http.get(&jobs)
                .header("authorization", format!("Bearer {token} {token}")),
        ),
        (
            "the token's hash",
            http.get(&jobs).bearer_auth(token_hash(token)),
        ),
        (
            "a revoked token",
            http.get(&jobs).bearer_auth(&revoked.token),
        ),
        (
            "a revoked token on POST",
            http.post(&jobs)
                .bearer_auth(&revoked.token)
                .json(&body("x/{Count}.jpg")),
        ),
        (
            "the other database's token",
            http.get(&jobs).bearer_auth(&wrong_key.token),
        ),
    ];
    for (what, req) in unauthorized {
        let (status, text) = keep(&mut answers, what, req).await;
        assert_eq!(status, 401, "{what}: {text}");
    }

    let authorized: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        (
            "lower-case bearer",
            http.get(&jobs)
                .header("authorization", format!("bearer {token}")),
            200,
        ),
        (
            "list",
            http.get(format!("{jobs}?state=succeeded&limit=5"))
                .bearer_auth(token),
            200,
        ),
        (
            "mps-responses",
            http.get(format!("{jobs}/{id}/mps-responses"))
                .bearer_auth(token),
            200,
        ),
        (
            "admin list",
            http.get(format!("{jobs}?team=beta"))
                .bearer_auth(&admin.token),
            200,
        ),
        (
            "admin stats",
            http.get(format!("{base}/v1/admin/stats"))
                .bearer_auth(&admin.token),
            200,
        ),
        (
            "admin stats, not admin",
            http.get(format!("{base}/v1/admin/stats"))
                .bearer_auth(token),
            403,
        ),
        (
            "an unknown job",
            http.get(format!("{jobs}/00000000-0000-7000-8000-000000000000"))
                .bearer_auth(token),
            404,
        ),
        (
            "a malformed job id",
            http.get(format!("{jobs}/not-an-id")).bearer_auth(token),
            404,
        ),
        (
            "an invalid body",
            http.post(&jobs)
                .bearer_auth(token)
                .json(&json!({"input": 1, "num": "many"})),
            422,
        ),
        (
            "a broken body",
            http.post(&jobs)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body("{oops"),
            400,
        ),
        (
            "a body of the wrong type",
            http.post(&jobs)
                .bearer_auth(token)
                .header("content-type", "text/plain")
                .body("x"),
            415,
        ),
        (
            "an idempotency key reused",
            http.post(&jobs)
                .bearer_auth(token)
                .header("idempotency-key", "secrets-test-1")
                .json(&body("other/{Count}.jpg")),
            422,
        ),
        ("metrics", http.get(format!("{base}/metrics")), 200),
        ("healthz", http.get(format!("{base}/healthz")), 200),
        ("readyz", http.get(format!("{base}/readyz")), 200),
        ("openapi", http.get(format!("{base}/openapi.json")), 200),
    ];
    for (what, req, want) in authorized {
        let (status, text) = keep(&mut answers, what, req).await;
        // The exact answer each request is meant to get: an answer scanned for secrets is one
        // that did what it was sent for (not, say, a 401 that never reached the handler).
        assert_eq!(status, want, "{what}: {text}");
    }

    // The replica whose MPS secret is wrong: MPS answers SignatureDoesNotMatch (ACS3), which is
    // logged with both strings-to-sign and kept in the database.
    let (_, text) = keep(
        &mut answers,
        "a POST to the wrong-secret replica",
        http.post(format!("{wrong_base}/v1/snapshot-jobs"))
            .bearer_auth(&wrong_key.token)
            .json(&body("w/{Count}.jpg")),
    )
    .await;
    let wrong_id = serde_json::from_str::<Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut seen = false;
    for _ in 0..100 {
        let (_, text) = keep(
            &mut answers,
            "GET the wrong-secret job",
            http.get(format!("{wrong_base}/v1/snapshot-jobs/{wrong_id}"))
                .bearer_auth(&wrong_key.token),
        )
        .await;
        if text.contains("SignatureDoesNotMatch") {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the wrong secret was refused by MPS");
    keep(
        &mut answers,
        "the wrong-secret job's MPS responses",
        http.get(format!(
            "{wrong_base}/v1/snapshot-jobs/{wrong_id}/mps-responses"
        ))
        .bearer_auth(&wrong_key.token),
    )
    .await;
    // Both apps stopped (gracefully, as on SIGTERM): every task of theirs has ended, so every
    // line they will ever log is in the captures.
    app.stop().await.unwrap();
    wrong.stop().await.unwrap();

    let mut places: Vec<(String, String)> = answers;
    for (i, out) in cli_output.into_iter().enumerate() {
        places.push((format!("snapgate command #{i}"), out));
    }
    for (url, name) in [
        (&db_url, "the database"),
        (&wrong_db_url, "the wrong-secret replica's database"),
    ] {
        let rows = dump(url).await;
        assert!(
            rows.iter()
                .any(|r| r.contains("beta") || r.contains(&wrong_key.access_key_id)),
            "the dump of {name} reads the data"
        );
        for r in rows {
            places.push((name.to_string(), r));
        }
    }
    let text_log = text_logs.text();
    let json_log = json_logs.text();
    // The capture works: these lines must be in it, or the checks below prove nothing.
    for log in [&text_log, &json_log] {
        assert!(log.contains("job recorded"), "the logs were captured");
        assert!(
            log.contains("SignatureDoesNotMatch"),
            "the signature failure was logged"
        );
        assert!(
            log.contains("ACS3-HMAC-SHA256"),
            "the ACS3 string-to-sign was logged"
        );
    }
    assert!(
        places
            .iter()
            .any(|(_, t)| t.contains(&token_hash(&team.token))),
        "the token's hash (allowed) is in the database"
    );
    let lines = text_log.lines().count();
    places.push(("the text logs".into(), text_log));
    places.push(("the JSON logs".into(), json_log));

    let key_canaries = |k: &IssuedKey, who: &str| {
        vec![
            (format!("{who} token"), k.token.clone()),
            (format!("{who} secret"), k.access_key_secret.clone()),
        ]
    };
    let mut named: Vec<(String, String)> = vec![
        ("the MPS secret".into(), MPS_SECRET.into()),
        ("the wrong MPS secret".into(), WRONG_SECRET.into()),
        ("the master key".into(), master_b64.clone()),
    ];
    named.push(("the Postgres password".into(), PG_PASSWORD.into()));
    named.extend(key_canaries(&team, "the team key's"));
    named.extend(key_canaries(&admin, "the admin key's"));
    named.extend(key_canaries(&revoked, "the revoked key's"));
    named.extend(key_canaries(&wrong_key, "the other replica key's"));
    // The Basic credentials sent above.
    named.push(("Basic credentials".into(), basic.clone()));
    let canaries: Vec<(&str, String)> =
        named.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();

    // The detector finds a partial secret (a 16-character piece from the middle of a token).
    let probe = format!("token=...{}...", &team.token[10..26]);
    assert_eq!(leaks(&canaries, &[("a probe".into(), probe)]).len(), 1);

    let found = leaks(&canaries, &places);
    assert!(found.is_empty(), "secrets leaked:\n{}", found.join("\n\n"));
    println!(
        "secrets: {lines} text log lines (and as JSON), {} places checked against {} secrets (every {PIECE}-character piece): none found",
        places.len(),
        canaries.len()
    );
}
