//! One way for every test to run the real `snapgate` binary: a free port, a log file per process
//! under `target/tmp/<group>/`, `snapgate emulator` with faults, `snapgate serve` on a database
//! and an emulator, waiting until a URL answers, SIGKILL and SIGTERM. A [`Proc`] is killed when
//! dropped, so a failing test leaves no process behind.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_snapgate");

/// A port nothing listens on now (the OS's pick for port 0).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running process of the binary; its stderr goes to `log`.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `cmd` with stdout discarded and stderr in `target/tmp/<group>/<name>.log`.
    pub fn spawn(group: &str, name: &str, mut cmd: Command) -> Proc {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(group);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            name: name.into(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown of any kind (claims and connections left as they are).
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM (the graceful stop) and returns at once.
    pub fn sigterm(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {}", self.name);
    }

    /// Waits (up to `limit`) for the process to exit; its exit status.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                return exit;
            }
            assert!(
                start.elapsed() < limit,
                "{} did not exit within {limit:?}; log: {}",
                self.name,
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits (up to `limit`) for the exit.
    pub async fn terminate(&mut self, limit: Duration) -> ExitStatus {
        self.sigterm();
        self.wait_exit(limit).await
    }

    /// What it wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `snapgate emulator` on `port` accepting `testid:testsecret`, with these extra arguments
/// (faults, timings); ready once [`wait_ready`] on its `/_emulator/jobs` answers.
pub fn emulator(group: &str, port: u16, args: &[&str]) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "emulator",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--access-key",
        &format!("{}:{}", super::app::EMU_KEY_ID, super::app::EMU_SECRET),
    ])
    .args(args);
    Proc::spawn(group, &format!("{group}-emulator"), cmd)
}

/// `snapgate serve` on `port` with a clean environment: the repository's `config/`, database
/// `db`, MPS at `mps` (an emulator accepting `testid:testsecret`), authentication off, logs at
/// `info`. Add settings with `.env(...)` before [`Proc::spawn`].
pub fn gateway_command(port: u16, db: &str, mps: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "SNAPGATE_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
        )
        .env("SNAPGATE__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", db)
        .env("SNAPGATE__MPS__ENDPOINT", mps)
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", super::app::EMU_KEY_ID)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", super::app::EMU_SECRET)
        .env("SNAPGATE__AUTH__ENABLED", "false")
        .env("RUST_LOG", "info");
    cmd
}

/// Waits until `url` answers 2xx (30 s at the most: a loaded machine starts slowly).
pub async fn wait_ready(http: &reqwest::Client, url: &str) {
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(url).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{url} not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
