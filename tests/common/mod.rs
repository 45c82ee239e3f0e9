//! Test harness: a fresh real database per test (Postgres or SQLite), the app on port 0.
//! Postgres tests FAIL (never skip) when Postgres cannot be reached.
#![allow(dead_code)]

use std::sync::Arc;

use snapgate::config::{DatabaseSettings, Settings};
use snapgate::store::{DynStore, PgStore, SqliteStore, Store};

/// The server the Postgres tests create their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("SNAPGATE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A new, migrated Postgres database for one test.
pub async fn pg_store() -> (DynStore, String) {
    let admin = pg_admin_url();
    let pool = sqlx::PgPool::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("Postgres is required for these tests ({admin}): {e}"));
    let name = format!("snapgate_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .expect("create test database");
    pool.close().await;
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("bad Postgres URL"),
    };
    let settings = DatabaseSettings {
        url: url.clone(),
        max_connections: 20,
        ..DatabaseSettings::default()
    };
    let store = PgStore::connect(&settings).await.expect("connect test db");
    store.migrate().await.expect("migrate");
    (Arc::new(store), url)
}

/// A new, migrated SQLite file in a temp folder (kept alive by the returned guard).
pub async fn sqlite_store() -> (DynStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let settings = DatabaseSettings {
        url: format!("sqlite://{}/snapgate.db", dir.path().display()),
        ..DatabaseSettings::default()
    };
    let store = SqliteStore::connect(&settings).await.expect("open sqlite");
    store.migrate().await.expect("migrate");
    (Arc::new(store), dir)
}

/// Settings for a test app: port 0, authentication off (tests/access.rs covers it).
pub fn test_settings() -> Settings {
    let mut s = Settings::default();
    s.http.listen = "127.0.0.1:0".into();
    s.auth.enabled = false;
    s
}
