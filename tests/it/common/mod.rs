//! Test harness: a fresh real database per test (Postgres or SQLite), the app on port 0.
//! Postgres tests FAIL (never skip) when Postgres cannot be reached.
#![allow(dead_code)]

pub mod app;
pub mod mps_rpc;
pub mod process;
#[allow(unused_imports)]
pub use app::TestApp;

use std::sync::{Arc, Mutex};

use snapgate::config::{DatabaseSettings, Settings};
use snapgate::store::{DynStore, PgStore, SqliteStore, Store};

/// The server the Postgres tests create their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("SNAPGATE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A new, empty Postgres database for one test (no migration applied), dropped when the
/// returned guard is dropped: at the end of the test, also when it fails.
pub async fn pg_database() -> PgDb {
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
    PgDb { url, name, admin }
}

/// A new, migrated Postgres database for one test: the store and the database's guard (which
/// derefs to its URL). Keep the guard for as long as the database is used (`_db`, never `_`).
pub async fn pg_store() -> (DynStore, PgDb) {
    let db = pg_database().await;
    let settings = DatabaseSettings {
        url: db.url.clone(),
        max_connections: 20,
        ..DatabaseSettings::default()
    };
    let store = PgStore::connect(&settings).await.expect("connect test db");
    store.migrate().await.expect("migrate");
    (Arc::new(store), db)
}

/// A test's Postgres database: its URL (`Deref` to `String`), dropped with the guard, from a
/// connection of its own on a thread of its own (a `Drop` cannot await, and it may run on a
/// runtime's thread or after the runtime is gone). `WITH (FORCE)` (Postgres 13+) ends the
/// connections pools still hold.
pub struct PgDb {
    pub url: String,
    name: String,
    admin: String,
}

impl std::ops::Deref for PgDb {
    type Target = String;
    fn deref(&self) -> &String {
        &self.url
    }
}

impl std::fmt::Display for PgDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(&admin).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut c)
                    .await?;
                c.close().await?;
                anyhow::Ok(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            // Not a second panic while a failing test unwinds: .ci/run drops leftovers.
            Ok(Err(e)) => eprintln!("could not drop test database {}: {e:#}", self.name),
            Err(_) => eprintln!("could not drop test database {}", self.name),
        }
    }
}

/// Each `async fn NAME(store: DynStore)` of the calling module as the tests `sqlite::NAME` and
/// `postgres::NAME`, each on a fresh store of its own (kept until the test ends), under the
/// test attribute given first; `sqlite:` or `postgres:` first for one backend only:
/// `both_stores!(#[tokio::test] a, b);`, `both_stores!(postgres: #[tokio::test] c);`.
#[allow(unused_macros)]
macro_rules! both_stores {
    (#[$test:meta] $($name:ident),* $(,)?) => {
        $crate::common::both_stores!(sqlite: #[$test] $($name),*);
        $crate::common::both_stores!(postgres: #[$test] $($name),*);
    };
    (sqlite: #[$test:meta] $($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[$test]
                async fn $name() {
                    let (store, _dir) = $crate::common::sqlite_store().await;
                    super::$name(store).await;
                }
            )*
        }
    };
    (postgres: #[$test:meta] $($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[$test]
                async fn $name() {
                    let (store, _db) = $crate::common::pg_store().await;
                    super::$name(store).await;
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use both_stores;

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

/// Settings for a test app: port 0, authentication off (tests/it/access.rs covers it).
pub fn test_settings() -> Settings {
    let mut s = Settings::default();
    s.http.listen = "127.0.0.1:0".into();
    s.auth.enabled = false;
    // An embedded emulator (no MPS key) on a free port, in memory, simulating: tests that want
    // its local store and ledger set their own temporary folders.
    s.emulator.listen = "127.0.0.1:0".into();
    s.emulator.oss_dir = String::new();
    s.emulator.state_dir = String::new();
    s
}

fn run_ok(cmd: &mut std::process::Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Held while `target/NAME` is checked and built: nextest runs every test in a process of its
/// own, so two processes (not only two threads) may want the same venv at once, and one must not
/// replace a folder another is using. An OS file lock (released when the guard drops) plus a
/// mutex for threads of one process.
pub fn build_lock(name: &str) -> (std::sync::MutexGuard<'static, ()>, std::fs::File) {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let threads = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    let file = std::fs::File::create(target.join(format!("{name}.lock"))).unwrap();
    file.lock().expect("lock the build of a test tool folder");
    (threads, file)
}

/// A Python venv under `target/NAME` with `requirements` (a path under the repository)
/// installed from PyPI; built once, into a temporary folder renamed into place when complete, so
/// concurrent test processes never see half of one. Call its python directly: a moved venv's
/// entry-point scripts still point at the temporary path. A failed install fails the test.
pub fn python_venv(name: &str, requirements: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target");
    let _one_at_a_time = build_lock(name);
    let venv = target.join(name);
    let requirements = root.join(requirements);
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    if std::fs::read_to_string(venv.join("installed.txt"))
        .ok()
        .as_deref()
        == Some(wanted.as_str())
    {
        return venv;
    }
    let tmp = target.join(format!("{name}.tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&target).unwrap();
    run_ok(
        std::process::Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&tmp),
    );
    run_ok(
        std::process::Command::new(tmp.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements),
    );
    std::fs::write(tmp.join("installed.txt"), &wanted).unwrap();
    let _ = std::fs::remove_dir_all(&venv);
    if std::fs::rename(&tmp, &venv).is_err() {
        // Another test process finished first: use its venv.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    venv
}

/// `node_modules` for the `package.json` in `dir` (a folder under the repository), installed
/// with npm into `target/NAME` once (rebuilt when `package.json` changes), into a temporary
/// folder renamed into place when complete. No browser is downloaded (playwright-core drives
/// Debian's chromium). Returns the folder holding `node_modules`; a failed install fails the test.
pub fn node_modules(name: &str, dir: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target").join(name);
    let _one_at_a_time = build_lock(name);
    let wanted = std::fs::read_to_string(root.join(dir).join("package.json")).unwrap();
    if std::fs::read_to_string(target.join("package.json"))
        .ok()
        .as_deref()
        == Some(wanted.as_str())
        && target.join("node_modules").is_dir()
    {
        return target;
    }
    let tmp = root
        .join("target")
        .join(format!("{name}.tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("package.json"), &wanted).unwrap();
    run_ok(
        std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .current_dir(&tmp),
    );
    let _ = std::fs::remove_dir_all(&target);
    if std::fs::rename(&tmp, &target).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    target
}

/// A log writer that keeps everything a `tracing` subscriber writes
/// (`.with_writer(move || captured.clone())`), for tests that read their own logs.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A multi-thread runtime on which every thread (its workers, its blocking pool and the thread
/// that calls [`LoggedRuntime::block_on`]) logs to `dispatch`: for a test that reads its own
/// logs, without installing a process-wide subscriber that every other test of the binary,
/// running in parallel threads, would write to (and that a second such test could not install).
pub fn runtime_logging_to(dispatch: tracing::Dispatch, worker_threads: usize) -> LoggedRuntime {
    // With a single dispatcher registered, tracing asks only the current thread's default
    // whether a callsite is wanted, and caches the answer for every thread: a callsite first
    // reached on another test's thread (no subscriber) would be off for good, here too. A
    // second dispatcher, kept for the life of the process, makes it ask every dispatcher.
    static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
    let on_start = dispatch.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .on_thread_start(move || {
            // For the life of the thread, which ends with the runtime.
            std::mem::forget(tracing::dispatcher::set_default(&on_start));
        })
        .build()
        .unwrap();
    LoggedRuntime { runtime, dispatch }
}

/// See [`runtime_logging_to`].
pub struct LoggedRuntime {
    runtime: tokio::runtime::Runtime,
    dispatch: tracing::Dispatch,
}

impl LoggedRuntime {
    pub fn block_on<F: std::future::Future>(&self, fut: F) -> F::Output {
        let _here = tracing::dispatcher::set_default(&self.dispatch);
        self.runtime.block_on(fut)
    }
}
