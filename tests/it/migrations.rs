//! Migrations as operators run them, on both stores, with the real binary: `snapgate migrate`
//! creates the schema on a fresh database and a second run changes nothing; `serve` with
//! `database.migrate_on_start = false` refuses a database that lacks migrations (one line
//! naming `snapgate migrate`); and an upgrade with data present keeps the old rows readable
//! through the API (and a queued job still deliverable: its outbox row moved into `jobs`).

use crate::common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::process::{self, Proc, BIN};
use common::TestApp;
use serde_json::{json, Value};
use snapgate::config::DatabaseSettings;
use snapgate::store::DynStore;

const MIGRATIONS_APPLIED_OLD: usize = 2; // 0001_jobs, 0002_teams_keys: the outbox still a table.
const PIPELINE: &str = "9bad3801a2c561c22c4df9c6abcd0000";

/// `snapgate <args>` with a clean environment: the repository's config, database `db`.
fn snapgate(db: &str, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "SNAPGATE_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
        )
        .env("DATABASE_URL", db)
        .env("RUST_LOG", "info");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A database under test: its URL and what removes it (Postgres: the database's guard; SQLite:
/// the folder that holds it).
struct Db {
    url: String,
    _pg: Option<common::PgDb>,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    async fn new(backend: &str) -> Db {
        match backend {
            "postgres" => {
                let pg = common::pg_database().await;
                Db {
                    url: pg.url.clone(),
                    _pg: Some(pg),
                    _dir: None,
                }
            }
            _ => {
                let dir = tempfile::tempdir().unwrap();
                Db {
                    url: format!("sqlite://{}/snapgate.db", dir.path().display()),
                    _pg: None,
                    _dir: Some(dir),
                }
            }
        }
    }

    /// A raw SQLite pool that creates the file if needed.
    async fn sqlite(&self) -> sqlx::SqlitePool {
        sqlx::SqlitePool::connect(&format!("{}?mode=rwc", self.url))
            .await
            .unwrap()
    }

    fn is_pg(&self) -> bool {
        self.url.starts_with("postgres")
    }

    /// The store as the app opens it (no migration run).
    async fn store(&self) -> DynStore {
        snapgate::store::connect(&DatabaseSettings {
            url: self.url.clone(),
            ..DatabaseSettings::default()
        })
        .await
        .unwrap()
    }

    /// Runs raw SQL statements (the old schema's rows).
    async fn exec(&self, statements: &[String]) {
        if self.is_pg() {
            let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
            for s in statements {
                sqlx::query(s)
                    .execute(&pool)
                    .await
                    .unwrap_or_else(|e| panic!("{s}: {e}"));
            }
            pool.close().await;
        } else {
            let pool = self.sqlite().await;
            for s in statements {
                sqlx::query(s)
                    .execute(&pool)
                    .await
                    .unwrap_or_else(|e| panic!("{s}: {e}"));
            }
            pool.close().await;
        }
    }

    /// `(version, installed_on)` of every applied migration (the time as text).
    async fn applied(&self) -> Vec<(i64, String)> {
        let sql = "SELECT version, CAST(installed_on AS TEXT) FROM _sqlx_migrations \
                   WHERE success ORDER BY version";
        if self.is_pg() {
            let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
            let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        } else {
            let pool = self.sqlite().await;
            let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
    }

    /// Applies only the first `n` migrations of this build's folder for the backend.
    async fn migrate_first(&self, n: usize) {
        let folder = if self.is_pg() { "postgres" } else { "sqlite" };
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(folder);
        let mut migrator = sqlx::migrate::Migrator::new(dir).await.unwrap();
        assert!(migrator.migrations.len() > n);
        migrator.migrations = migrator.migrations[..n].to_vec().into();
        if self.is_pg() {
            let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
            migrator.run(&pool).await.unwrap();
            pool.close().await;
        } else {
            let pool = self.sqlite().await;
            migrator.run(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

fn migration_count(backend: &str) -> usize {
    std::fs::read_dir(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(backend),
    )
    .unwrap()
    .filter(|e| {
        e.as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".sql")
    })
    .count()
}

fn job_body(i: usize) -> Value {
    json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("in/{i}.mp4")},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("out/{i}/{{Count}}.jpg")},
        "num": 2, "interval_s": 1, "pipeline_id": PIPELINE, "user_data": format!("old job {i}")
    })
}

async fn migrate_twice_is_a_no_op(backend: &str) {
    let db = Db::new(backend).await;
    let out = snapgate(&db.url, &["migrate"], &[]);
    ok(&out, "first migrate");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("migrations applied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = db.applied().await;
    assert_eq!(
        first.len(),
        migration_count(backend),
        "every migration applied"
    );
    let store = db.store().await;
    assert_eq!(store.pending_migrations().await.unwrap(), Vec::<i64>::new());

    let second = snapgate(&db.url, &["migrate"], &[]);
    ok(&second, "second migrate");
    // It says nothing was pending, and Postgres's `relation "_sqlx_migrations" already exists`
    // notice (sqlx logs notices at INFO) is not in the log.
    let log = String::from_utf8_lossy(&second.stderr);
    assert!(
        log.contains("no migration pending")
            && !log.contains("migrations applied")
            && !log.contains("already exists"),
        "{log}"
    );
    assert_eq!(
        db.applied().await,
        first,
        "a second run applies nothing again"
    );

    // The schema is the one the app needs: a job goes in and comes back.
    let app = TestApp::builder(store).start().await;
    let res = app.post_job(&job_body(1), None).await;
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    let list: Value = app.get("/v1/snapshot-jobs").await.json().await.unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_schema_and_a_second_run_is_a_no_op_sqlite() {
    migrate_twice_is_a_no_op("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_schema_and_a_second_run_is_a_no_op_postgres() {
    migrate_twice_is_a_no_op("postgres").await;
}

/// `serve` with `migrate_on_start = false` on `db`: it must exit 1 with one error line naming
/// `snapgate migrate`, never serve.
async fn serve_refuses(db: &Db, first_pending: &str) {
    let port = process::free_port();
    let mut cmd = process::gateway_command(port, &db.url, "http://127.0.0.1:9");
    cmd.env("SNAPGATE__DATABASE__MIGRATE_ON_START", "false");
    let mut serve = Proc::spawn("migrations", &format!("serve-{port}"), cmd);
    let exit = serve.wait_exit(Duration::from_secs(30)).await;
    let log = serve.log_text();
    assert_eq!(exit.code(), Some(1), "serve must refuse; log:\n{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line; log:\n{log}");
    assert!(
        errors[0].contains("run `snapgate migrate`")
            && errors[0].contains("migrate_on_start")
            && errors[0].contains(&format!("first: {first_pending}")),
        "{}",
        errors[0]
    );
    assert!(
        !log.contains("listening"),
        "it never started serving:\n{log}"
    );
}

async fn serve_without_migrating_refuses_an_unmigrated_database(backend: &str) {
    let db = Db::new(backend).await;
    serve_refuses(&db, "0001").await;
    // It wrote nothing: the database is still empty.
    assert_eq!(
        db.store().await.pending_migrations().await.unwrap().len(),
        migration_count(backend)
    );
    // After `snapgate migrate` the same command starts.
    ok(&snapgate(&db.url, &["migrate"], &[]), "migrate");
    let port = process::free_port();
    let mut cmd = process::gateway_command(port, &db.url, "http://127.0.0.1:9");
    cmd.env("SNAPGATE__DATABASE__MIGRATE_ON_START", "false");
    let mut serve = Proc::spawn("migrations", &format!("serve-ok-{port}"), cmd);
    process::wait_ready(
        &reqwest::Client::new(),
        &format!("http://127.0.0.1:{port}/readyz"),
    )
    .await;
    assert!(serve.terminate(Duration::from_secs(30)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_migrating_refuses_an_unmigrated_database_sqlite() {
    serve_without_migrating_refuses_an_unmigrated_database("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_migrating_refuses_an_unmigrated_database_postgres() {
    serve_without_migrating_refuses_an_unmigrated_database("postgres").await;
}

/// A SQL text literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Rows as the schema after 0002 holds them: a succeeded job with its MPS answer, and a
/// queued job with its row in the old `job_outbox` table.
fn old_rows(pg: bool, done: &str, queued: &str, request: &Value) -> Vec<String> {
    let micros = chrono::Utc::now().timestamp_micros();
    let (t_old, t_new) = if pg {
        (
            "now() - interval '1 minute'".to_string(),
            "now()".to_string(),
        )
    } else {
        ((micros - 60_000_000).to_string(), micros.to_string())
    };
    let json = |v: &Value| {
        if pg {
            format!("{}::jsonb", lit(&v.to_string()))
        } else {
            lit(&v.to_string())
        }
    };
    let response = json!({"Id": "0ldmpsjob00000000000000000000001", "RequestId": "OLD-REQ-1"});
    vec![
        format!(
            "INSERT INTO jobs (id, team, state, request, warnings, created_at, updated_at, \
             attempts, mps_job_id, mps_state, mps_request_id, mps_count, mps_response, \
             submitted_at, finished_at) VALUES ({}, 'default', 'succeeded', {}, {}, {t_old}, \
             {t_new}, 1, '0ldmpsjob00000000000000000000001', 'Success', 'OLD-REQ-1', 2, {}, \
             {t_old}, {t_new})",
            lit(done),
            json(request),
            json(&json!([])),
            json(&response)
        ),
        format!(
            "INSERT INTO mps_responses (job_id, action, request_id, body, received_at) \
             VALUES ({}, 'SubmitSnapshotJob', 'OLD-REQ-1', {}, {t_old})",
            lit(done),
            json(&response)
        ),
        format!(
            "INSERT INTO jobs (id, team, state, request, warnings, created_at, updated_at) \
             VALUES ({}, 'default', 'queued', {}, {}, {t_new}, {t_new})",
            lit(queued),
            json(request),
            json(&json!([]))
        ),
        format!(
            "INSERT INTO job_outbox (job_id, due_at) VALUES ({}, {t_new})",
            lit(queued)
        ),
    ]
}

async fn an_upgrade_keeps_old_rows_readable(backend: &str) {
    // The normalized request as this build stores it, from a job made on a scratch store.
    let (scratch, _guard) = common::sqlite_store().await;
    let scratch_app = TestApp::builder(scratch).start().await;
    let made: Value = scratch_app
        .post_job(&job_body(1), None)
        .await
        .json()
        .await
        .unwrap();
    scratch_app.stop().await.unwrap();
    let request = made["request"].clone();
    assert!(request.is_object(), "{made}");

    let db = Db::new(backend).await;
    db.migrate_first(MIGRATIONS_APPLIED_OLD).await;
    let done = uuid::Uuid::now_v7().to_string();
    let queued = uuid::Uuid::now_v7().to_string();
    db.exec(&old_rows(db.is_pg(), &done, &queued, &request))
        .await;

    // Half-migrated counts as unmigrated for a `serve` that does not migrate.
    serve_refuses(&db, "0003").await;
    ok(&snapgate(&db.url, &["migrate"], &[]), "upgrade migrate");
    assert_eq!(db.applied().await.len(), migration_count(backend));

    // The old rows read back through the API, and the queued one is still delivered.
    let emu = common::app::test_emulator(|_| {}).await;
    let app = TestApp::builder(db.store().await)
        .mps(common::app::mps_client(
            &emu.url(),
            common::app::EMU_SECRET,
            5_000,
        ))
        .settings(|s| {
            s.worker.idle_poll_ms = 50;
            s.worker.status_poll_min_ms = 100;
            s.worker.status_poll_max_ms = 300;
            s.worker.list_visibility_ms = 0;
        })
        .start()
        .await;
    let old: Value = app
        .get(&format!("/v1/snapshot-jobs/{done}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(old["state"], "succeeded", "{old}");
    assert_eq!(old["mps"]["job_id"], "0ldmpsjob00000000000000000000001");
    assert_eq!(old["mps"]["count"], 2, "{old}");
    assert_eq!(old["request"], request);
    let responses: Value = app
        .get(&format!("/v1/snapshot-jobs/{done}/mps-responses"))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        responses.to_string().contains("OLD-REQ-1"),
        "the old MPS answer is kept: {responses}"
    );
    let list: Value = app.get("/v1/snapshot-jobs").await.json().await.unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 2, "{list}");

    let start = Instant::now();
    let last = loop {
        let job: Value = app
            .get(&format!("/v1/snapshot-jobs/{queued}"))
            .await
            .json()
            .await
            .unwrap();
        if job["state"] == "succeeded" || job["state"] == "failed" {
            break job;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the job queued before the upgrade was never delivered: {job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(last["state"], "succeeded", "{last}");
    assert_eq!(
        common::app::emulator_ledger(&emu.url()).await.get(&queued),
        Some(&1),
        "sent to MPS exactly once"
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_with_data_keeps_old_rows_readable_sqlite() {
    an_upgrade_keeps_old_rows_readable("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_with_data_keeps_old_rows_readable_postgres() {
    an_upgrade_keeps_old_rows_readable("postgres").await;
}
