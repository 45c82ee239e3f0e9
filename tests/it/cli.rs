//! The `snapgate` binary as a user meets it: shell completions, `--json` on every listing,
//! `healthcheck` for containers, configuration errors and user errors as one line (even with
//! `RUST_BACKTRACE=1`), no colour codes in logs that do not go to a terminal, and `--help`
//! pointing to the configuration. Each test runs the real binary in a temp folder of its own
//! with a SQLite database there.

use crate::common;

use std::process::{Command, Output};

use common::process;

use serde_json::Value;

use common::process::BIN;

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The binary with a clean snapgate environment, a database in the sandbox, stdin closed.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "DATABASE_URL",
                format!("sqlite://{}/snapgate.db", self.dir.path().display()),
            )
            .env("RUST_BACKTRACE", "1")
            .stdin(std::process::Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("the snapgate binary runs")
    }

    /// Runs and requires success; stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "snapgate {}: {}",
            args.join(" "),
            show(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A failure reported as one line `error: ...` on stderr (after any log lines), exit code 1:
/// no backtrace, no "Caused by:" block.
fn one_line_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", show(out));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{}", show(out));
    let errors = stderr.lines().filter(|l| l.starts_with("error")).count();
    assert_eq!(errors, 1, "{}", show(out));
    for noise in ["backtrace", "Caused by", "   0: "] {
        assert!(!stderr.contains(noise), "{}", show(out));
    }
    last.to_string()
}

#[test]
fn completions_generate_for_bash_zsh_and_fish() {
    let sb = Sandbox::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef snapgate"),
        ("fish", "complete -c snapgate"),
    ] {
        let script = sb.ok(&["completions", shell]);
        assert!(script.contains(marker), "{shell}: {script}");
        for sub in ["serve", "healthcheck", "completions", "team", "key"] {
            assert!(script.contains(sub), "{shell} completes `{sub}`");
        }
    }
    let err = sb.run(&["completions", "tcsh"]);
    assert_eq!(err.status.code(), Some(2), "{}", show(&err));
}

#[test]
fn team_list_and_key_list_print_json_with_no_secrets() {
    let sb = Sandbox::new();
    sb.ok(&["team", "create", "video-upload"]);
    let issued: Value =
        serde_json::from_str(&sb.ok(&["key", "create", "--team", "video-upload", "--admin"]))
            .unwrap();
    let id = issued["access_key_id"].as_str().unwrap().to_string();
    sb.ok(&["key", "create", "--team", "default"]);
    sb.ok(&["key", "revoke", &id]);

    let teams: Value = serde_json::from_str(&sb.ok(&["team", "list", "--json"])).unwrap();
    let names: Vec<&str> = teams
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "video-upload"]);
    assert!(teams[0]["created_at"].as_str().unwrap().ends_with('Z'));

    let listed = sb.ok(&["key", "list", "--json"]);
    let keys: Value = serde_json::from_str(&listed).unwrap();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let revoked = keys
        .iter()
        .find(|k| k["access_key_id"] == id.as_str())
        .unwrap();
    assert_eq!(revoked["team"], "video-upload");
    assert_eq!(revoked["admin"], true);
    assert!(revoked["revoked_at"].is_string());
    let active = keys
        .iter()
        .find(|k| k["access_key_id"] != id.as_str())
        .unwrap();
    assert_eq!(active["team"], "default");
    assert!(active["revoked_at"].is_null());
    for k in keys {
        let mut fields: Vec<&str> = k.as_object().unwrap().keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["access_key_id", "admin", "created_at", "revoked_at", "team"]
        );
    }
    for secret in ["access_key_secret", "token"] {
        let value = issued[secret].as_str().unwrap();
        assert!(!listed.contains(value), "key list shows the {secret}");
    }

    // The text forms list the same.
    let text = sb.ok(&["team", "list"]);
    assert!(text.starts_with("default  created="), "{text}");
    assert_eq!(sb.ok(&["key", "list"]).lines().count(), 2);
}

#[test]
fn user_errors_are_one_line_even_with_rust_backtrace() {
    let sb = Sandbox::new();
    sb.ok(&["migrate"]);
    let line = one_line_error(&sb.run(&["key", "revoke", "SGAKNOSUCHKEY"]));
    assert!(line.contains("no active key SGAKNOSUCHKEY"), "{line}");
    let line = one_line_error(&sb.run(&["team", "create", "Not A Name"]));
    assert!(line.contains("team names"), "{line}");
    let line = one_line_error(&sb.run(&["key", "create", "--team", "nobody"]));
    assert!(line.contains("no team named"), "{line}");
}

#[test]
fn an_unknown_mps_signature_refuses_to_start() {
    let sb = Sandbox::new();
    let out = sb
        .cmd(&["serve"])
        .env("SNAPGATE__HTTP__LISTEN", "127.0.0.1:0")
        .env("SNAPGATE__MPS__SIGNATURE", "hmac-sha256")
        .output()
        .unwrap();
    let line = one_line_error(&out);
    assert!(line.contains("mps.signature"), "{line}");
    assert!(line.contains("SNAPGATE__MPS__SIGNATURE"), "{line}");
    assert!(line.contains("expected `v1` or `acs3` for"), "{line}");
    // Nothing was started: no database file either.
    assert!(!sb.dir.path().join("snapgate.db").exists());
}

/// `key list` in a folder with no database (outside the project) says so and creates nothing;
/// `migrate` says what it did, and on a second run that nothing was pending.
#[test]
fn read_commands_never_create_a_database_and_migrate_says_what_it_did() {
    let sb = Sandbox::new();
    for args in [
        &["key", "list"][..],
        &["team", "list"],
        &["key", "revoke", "SGAKX"],
    ] {
        let out = sb.cmd(args).env_remove("DATABASE_URL").output().unwrap();
        let line = one_line_error(&out);
        assert!(
            line.contains("no database at data/snapgate.db") && line.contains("snapgate migrate"),
            "{line}"
        );
        assert!(!sb.dir.path().join("data").exists(), "{args:?} made ./data");
    }
    let first = sb.run(&["migrate"]);
    assert!(first.status.success(), "{}", show(&first));
    let log = String::from_utf8_lossy(&first.stderr);
    assert!(log.contains("migrations applied"), "{log}");
    let second = sb.run(&["migrate"]);
    let log = String::from_utf8_lossy(&second.stderr);
    assert!(
        log.contains("no migration pending") && !log.contains("migrations applied"),
        "{log}"
    );
    assert_eq!(sb.ok(&["key", "list", "--json"]).trim(), "[]");
}

/// `snapgate emulator` on a port already taken names the address.
#[test]
fn the_emulator_names_the_address_it_cannot_listen_on() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let sb = Sandbox::new();
    let line = one_line_error(&sb.run(&["emulator", "--listen", &addr]));
    assert!(line.contains(&addr), "{line}");
}

#[test]
fn logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let sb = Sandbox::new();
    let out = sb.run(&["migrate"]);
    assert!(out.status.success(), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("migrations applied"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "ANSI escapes in: {stderr:?}");
}

#[test]
fn help_points_to_the_configuration_and_every_argument_has_help() {
    let sb = Sandbox::new();
    let help = sb.ok(&["serve", "--help"]);
    for needle in [
        "config/default.toml",
        "SNAPGATE__SECTION__KEY",
        "SNAPGATE_ENV",
        "DATABASE_URL",
    ] {
        assert!(help.contains(needle), "serve --help lacks {needle}: {help}");
    }
    let help = sb.ok(&["key", "create", "--help"]);
    assert!(help.contains("The team the key belongs to"), "{help}");
    let help = sb.ok(&["team", "create", "--help"]);
    assert!(help.contains("a-z 0-9"), "{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_answers_for_a_ready_service_and_fails_for_none() {
    let (store, _guard) = common::sqlite_store().await;
    let app = common::TestApp::builder(store).start().await;
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();

    let sb = Sandbox::new();
    let out = output(sb.cmd(&["healthcheck", "--url", &format!("http://{addr}/readyz")])).await;
    assert!(out.status.success(), "{}", show(&out));

    // Without --url: `/readyz` on http.listen (0.0.0.0 means loopback).
    let mut cmd = sb.cmd(&["healthcheck"]);
    cmd.env("SNAPGATE__HTTP__LISTEN", format!("0.0.0.0:{}", addr.port()));
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", show(&out));

    // Nothing listening there: unhealthy, one line, exit 1.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{closed}/readyz");
    let out = output(sb.cmd(&["healthcheck", "--url", &url, "--timeout-ms", "2000"])).await;
    let line = one_line_error(&out);
    assert!(line.contains("unhealthy"), "{line}");
}

/// Runs the binary off the runtime's threads, so the in-process service keeps answering.
async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("the snapgate binary runs"))
        .await
        .unwrap()
}

/// Every key of a JSON value, at any depth, with its value (a log line's own fields and those of
/// its spans).
fn fields(v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                out.push((k.clone(), x.clone()));
                fields(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| fields(x, out)),
        _ => {}
    }
}

/// The real binary on its embedded default (SQLite, the built-in emulator) with JSON logs: every
/// line parses; each request has one access-log line with its route pattern, status, latency,
/// request id and team; the job's life carries `job_id`, `mps_job_id` and `mps_request_id`; and no
/// header value (the bearer token) is ever printed.
/// What the real binary on its embedded default logs in `format` while one job is posted and
/// polled to its end: (the log, the job's id, the POST's request id, the bearer token).
async fn one_job_logged(format: &str) -> (String, String, String, String) {
    let sb = Sandbox::new();
    sb.ok(&["team", "create", "logs"]);
    let key: Value = serde_json::from_str(&sb.ok(&["key", "create", "--team", "logs"])).unwrap();
    let token = key["token"].as_str().unwrap().to_string();
    let port = process::free_port();
    let mut cmd = sb.cmd(&["serve"]);
    cmd.env("SNAPGATE__LOG__FORMAT", format)
        .env("SNAPGATE__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("SNAPGATE__EMULATOR__LISTEN", "127.0.0.1:0");
    let mut serve = process::Proc::spawn("cli", &format!("logs-{format}"), cmd);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    process::wait_ready(&http, &format!("{base}/readyz")).await;
    let body = serde_json::json!({
        "input": {"bucket": "media", "location": "oss-cn-shanghai", "object": "in/v.mp4"},
        "output": {"bucket": "media", "location": "oss-cn-shanghai", "object": "out/{Count}.jpg"},
        "time_ms": 0
    });
    let r = http
        .post(format!("{base}/v1/snapshot-jobs"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let job: Value = r.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    let mut state = String::new();
    for _ in 0..200 {
        let j: Value = http
            .get(format!("{base}/v1/snapshot-jobs/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        state = j["state"].as_str().unwrap_or_default().to_string();
        if state == "succeeded" || state == "failed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(state == "succeeded" || state == "failed", "state {state}");
    let exit = serve.terminate(std::time::Duration::from_secs(30)).await;
    assert!(exit.success(), "serve exited with {exit}");
    let out = serve.log_text();

    (out, id, request_id, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_access_log_and_the_promised_fields() {
    let (out, id, request_id, token) = one_job_logged("json").await;
    assert!(!out.contains(&token), "the bearer token reached the log");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let all: Vec<Vec<(String, Value)>> = lines
        .iter()
        .map(|l| {
            let mut f = Vec::new();
            fields(l, &mut f);
            f
        })
        .collect();
    let has = |f: &[(String, Value)], k: &str, v: &str| {
        f.iter().any(|(key, x)| {
            key == k
                && (x.as_str() == Some(v)
                    || x.as_u64().map(|n| n.to_string()).as_deref() == Some(v))
        })
    };
    let served: Vec<_> = all
        .iter()
        .filter(|f| has(f, "message", "request served"))
        .collect();
    let post = served
        .iter()
        .find(|f| has(f, "request_id", &request_id))
        .unwrap_or_else(|| panic!("no access-log line for the POST: {out}"));
    assert!(has(post, "route", "/v1/snapshot-jobs"), "{post:?}");
    assert!(has(post, "method", "POST"), "{post:?}");
    assert!(has(post, "team", "logs"), "{post:?}");
    // One INFO line per POST: the access line carries the job it created.
    assert!(has(post, "job_id", &id), "{post:?}");
    assert!(
        !all.iter().any(|f| has(f, "message", "job recorded")),
        "a second INFO line for the POST: {out}"
    );
    assert!(
        post.iter()
            .any(|(k, v)| k == "status" && (v == 201 || v == 202)),
        "{post:?}"
    );
    assert!(
        post.iter()
            .any(|(k, v)| k == "latency_ms" && v.as_f64().is_some_and(|x| x >= 0.0)),
        "{post:?}"
    );
    // The GETs are logged by route pattern, never by the id in the path.
    assert!(
        served
            .iter()
            .any(|f| has(f, "route", "/v1/snapshot-jobs/{id}") && has(f, "status", "200")),
        "{out}"
    );
    assert!(!served
        .iter()
        .any(|f| has(f, "route", &format!("/v1/snapshot-jobs/{id}"))));
    for k in ["job_id", "mps_job_id", "mps_request_id"] {
        assert!(
            all.iter().any(|f| f.iter().any(|(key, _)| key == k)),
            "no log line carries {k}: {out}"
        );
    }
}

/// The text access line of a POST names the job it created once (the span's field, not a second
/// copy from the event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_text_access_line_names_the_job_once() {
    let (out, id, request_id, token) = one_job_logged("text").await;
    assert!(!out.contains(&token), "the bearer token reached the log");
    let line = out
        .lines()
        .find(|l| l.contains("request served") && l.contains(&request_id))
        .unwrap_or_else(|| panic!("no access line for the POST: {out}"));
    assert_eq!(line.matches("job_id=").count(), 1, "{line}");
    assert!(line.contains(&format!("job_id={id}")), "{line}");
}
