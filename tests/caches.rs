//! The read caches (issue 15): verified tokens and final jobs served from memory, and what must
//! hold regardless — a revoked key stops working on every replica within `auth.token_cache_ms`
//! (at once where Postgres `NOTIFY` reaches it), and a cached job is never shown to another team.

mod common;

use common::TestApp;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use snapgate::auth::{issue_key, IssuedKey};
use snapgate::config::DatabaseSettings;
use snapgate::store::{DynStore, PgStore};

async fn key(store: &DynStore, team: &str, admin: bool) -> IssuedKey {
    store
        .create_team(team, snapgate::store::now())
        .await
        .unwrap();
    issue_key(store, &common::app::master_key(), team, admin)
        .await
        .unwrap()
}

/// A second connection pool on the same database: another replica's store (its own `LISTEN`).
async fn second_store(url: &str) -> DynStore {
    let settings = DatabaseSettings {
        url: url.to_string(),
        max_connections: 5,
        ..DatabaseSettings::default()
    };
    std::sync::Arc::new(PgStore::connect(&settings).await.unwrap())
}

async fn status(app: &TestApp, token: &str, path: &str) -> StatusCode {
    app.with_token(Some(token)).get(path).await.status()
}

/// Polls until `path` answers `want` for `token`; returns how long that took.
async fn until(
    app: &TestApp,
    token: &str,
    path: &str,
    want: StatusCode,
    limit: Duration,
) -> Duration {
    let t0 = Instant::now();
    loop {
        let got = status(app, token, path).await;
        if got == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "{path} still answers {got} after {:?} (wanted {want})",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn revocation_reaches_another_replica_within_a_second_with_token_caching_on() {
    let (store_a, url) = common::pg_store().await;
    let store_b = second_store(&url).await;
    // A cache entry lives 3 s here: a refusal within 1 s can only come from the invalidation.
    let ttl_ms = 3000;
    let app = |store: DynStore| {
        TestApp::builder(store)
            .settings(move |s| {
                s.auth.enabled = true;
                s.auth.token_cache_ms = ttl_ms;
                s.http.submit_wait_ms = 0;
            })
            .start()
    };
    let replica_a = app(store_a.clone()).await;
    let replica_b = app(store_b.clone()).await;
    let revoked = key(&store_a, "alpha", false).await;
    let bypassed = key(&store_a, "alpha", false).await;
    let path = "/v1/snapshot-jobs";
    for k in [&revoked, &bypassed] {
        for r in [&replica_a, &replica_b] {
            assert_eq!(status(r, &k.token, path).await, StatusCode::OK);
        }
    }

    // The cache is on: a key revoked behind snapgate's back (no notification) still works on
    // replica B right after, and stops within the expiry (the fallback).
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE access_key_id = $1")
        .bind(&bypassed.access_key_id)
        .execute(&pool)
        .await
        .unwrap();
    let t_bypass = Instant::now();
    assert_eq!(
        status(&replica_b, &bypassed.token, path).await,
        StatusCode::OK,
        "the token should come from replica B's cache"
    );

    // Revoked through the store on replica A: replica B refuses it within a second.
    assert!(store_a
        .revoke_api_key(&revoked.access_key_id, snapgate::store::now())
        .await
        .unwrap());
    let took = until(
        &replica_b,
        &revoked.token,
        path,
        StatusCode::UNAUTHORIZED,
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(
        status(&replica_a, &revoked.token, path).await,
        StatusCode::UNAUTHORIZED
    );
    eprintln!("revocation reached replica B after {took:?}");

    // The fallback: the bypassed key ends by the expiry at the latest.
    until(
        &replica_b,
        &bypassed.token,
        path,
        StatusCode::UNAUTHORIZED,
        Duration::from_millis(ttl_ms + 1000).saturating_sub(t_bypass.elapsed()),
    )
    .await;
    pool.close().await;
}

#[tokio::test]
async fn sqlite_revocation_in_process_is_at_once_with_token_caching_on() {
    let (store, _dir) = common::sqlite_store().await;
    let app = TestApp::builder(store.clone())
        .settings(|s| {
            s.auth.enabled = true;
            s.auth.token_cache_ms = 60_000;
        })
        .start()
        .await;
    let k = key(&store, "alpha", false).await;
    assert_eq!(
        status(&app, &k.token, "/v1/snapshot-jobs").await,
        StatusCode::OK
    );
    assert!(store
        .revoke_api_key(&k.access_key_id, snapgate::store::now())
        .await
        .unwrap());
    assert_eq!(
        status(&app, &k.token, "/v1/snapshot-jobs").await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_cached_final_job_is_never_shown_to_another_team() {
    let (store, url) = common::pg_store().await;
    let emu = common::app::test_emulator(|_| {}).await;
    let app = TestApp::builder(store.clone())
        .settings(|s| {
            s.auth.enabled = true;
            s.http.submit_wait_ms = 0;
            s.worker.idle_poll_ms = 50;
            s.worker.status_poll_min_ms = 100;
        })
        .mps(common::app::mps_client(
            &emu.url(),
            common::app::EMU_SECRET,
            5000,
        ))
        .start()
        .await;
    let alpha = key(&store, "alpha", false).await;
    let beta = key(&store, "beta", false).await;
    let admin = key(&store, "ops", true).await;
    let body = json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.mp4"},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.jpg"}
    });
    let created: Value = app
        .with_token(Some(&alpha.token))
        .post_job(&body, None)
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/v1/snapshot-jobs/{}", created["id"].as_str().unwrap());
    // Beta's miss before the job is final, and while it is read from the database.
    assert_eq!(
        status(&app, &beta.token, &path).await,
        StatusCode::NOT_FOUND
    );
    let t0 = Instant::now();
    let final_job: Value = loop {
        let j: Value = app
            .with_token(Some(&alpha.token))
            .get(&path)
            .await
            .json()
            .await
            .unwrap();
        if j["state"] == "succeeded" {
            break j;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "job not final: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Take the row away: from now on only the cache can answer.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("DELETE FROM jobs WHERE id = $1::uuid")
        .bind(created["id"].as_str().unwrap())
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let again: Value = app
        .with_token(Some(&alpha.token))
        .get(&path)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        again, final_job,
        "alpha's read comes from the cache, unchanged"
    );
    for _ in 0..3 {
        let res = app.with_token(Some(&beta.token)).get(&path).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let text = res.text().await.unwrap();
        assert!(!text.contains("a.mp4"), "beta saw alpha's job: {text}");
    }
    assert_eq!(status(&app, &admin.token, &path).await, StatusCode::OK);
}
