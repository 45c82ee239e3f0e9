//! Configuration layering (src/config.rs), later wins: built-in defaults < `config/default.toml`
//! < `config/$SNAPGATE_ENV.toml` < `DATABASE_URL` / `ALIBABA_CLOUD_ACCESS_KEY_*` <
//! `SNAPGATE__SECTION__KEY`. An empty variable counts as not set (the layers below apply),
//! except where an empty text is itself a documented setting (`mps.mns.queue`,
//! `emulator.oss_dir`, `emulator.state_dir`). Checked through `Settings::load_from` with an
//! explicit variable set (no process environment is changed), and once through the real binary,
//! whose `healthcheck` shows the `http.listen` it loaded.

use crate::common;

use std::path::Path;
use std::process::Command;

use snapgate::config::Settings;

const PIPELINE_FILE: &str = "0123456789abcdef0123456789abcdef";

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn repo_config() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config"))
}

fn load(pairs: &[(&str, &str)]) -> Settings {
    Settings::load_from(repo_config(), None, vars(pairs)).unwrap()
}

/// A config folder with `default.toml` and `prod.toml` holding these texts.
fn config_dir(default: &str, prod: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("default.toml"), default).unwrap();
    std::fs::write(dir.path().join("prod.toml"), prod).unwrap();
    dir
}

#[test]
fn snapgate_database_url_beats_database_url_which_beats_the_files() {
    let dir = config_dir(
        "[database]\nurl = \"sqlite://file-default.db\"\n",
        "[database]\nurl = \"sqlite://file-prod.db\"\n",
    );
    let at = |pairs: &[(&str, &str)]| {
        Settings::load_from(dir.path(), Some("prod"), vars(pairs))
            .unwrap()
            .database
            .url
    };
    assert_eq!(at(&[]), "sqlite://file-prod.db");
    assert_eq!(
        at(&[("DATABASE_URL", "postgres://plain/db")]),
        "postgres://plain/db"
    );
    assert_eq!(
        at(&[("SNAPGATE__DATABASE__URL", "postgres://snapgate/db")]),
        "postgres://snapgate/db"
    );
    // Both set, in either order of the environment: the SNAPGATE__ variable wins.
    for pairs in [
        [
            ("DATABASE_URL", "postgres://plain/db"),
            ("SNAPGATE__DATABASE__URL", "postgres://snapgate/db"),
        ],
        [
            ("SNAPGATE__DATABASE__URL", "postgres://snapgate/db"),
            ("DATABASE_URL", "postgres://plain/db"),
        ],
    ] {
        assert_eq!(at(&pairs), "postgres://snapgate/db", "{pairs:?}");
    }
}

#[test]
fn snapgate_mps_keys_beat_the_alibaba_cloud_variables() {
    let s = load(&[
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIalibaba"),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "alibaba-secret-1"),
    ]);
    assert!(s.has_mps_credentials());
    assert_eq!(s.mps.access_key_id.as_deref(), Some("LTAIalibaba"));
    assert_eq!(
        s.mps.access_key_secret.as_ref().unwrap().expose(),
        "alibaba-secret-1"
    );

    let s = load(&[
        ("SNAPGATE__MPS__ACCESS_KEY_ID", "LTAIsnapgate"),
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIalibaba"),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "alibaba-secret-1"),
        ("SNAPGATE__MPS__ACCESS_KEY_SECRET", "snapgate-secret-2"),
    ]);
    assert_eq!(s.mps.access_key_id.as_deref(), Some("LTAIsnapgate"));
    assert_eq!(
        s.mps.access_key_secret.as_ref().unwrap().expose(),
        "snapgate-secret-2"
    );
    let shown = format!("{s:?}");
    assert!(
        !shown.contains("snapgate-secret-2") && !shown.contains("alibaba-secret-1"),
        "the secret is redacted in a debug print"
    );

    // Each half from a different layer still makes one key pair.
    let s = load(&[
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIalibaba"),
        ("SNAPGATE__MPS__ACCESS_KEY_SECRET", "snapgate-secret-2"),
    ]);
    assert_eq!(s.mps.access_key_id.as_deref(), Some("LTAIalibaba"));
    assert_eq!(
        s.mps.access_key_secret.as_ref().unwrap().expose(),
        "snapgate-secret-2"
    );
    // Half a pair is refused.
    let err = Settings::load_from(
        repo_config(),
        None,
        vars(&[("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIalibaba")]),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("set both"), "{err:#}");
}

#[test]
fn an_env_var_beats_the_env_file_which_beats_default_toml() {
    let dir = config_dir(
        "[http]\nlisten = \"127.0.0.1:1001\"\n[worker]\nmax_attempts = 3\n[mps]\nregion = \"cn-beijing\"\n",
        "[http]\nlisten = \"127.0.0.1:1002\"\n[worker]\nmax_attempts = 4\n",
    );
    let at = |env: Option<&str>, pairs: &[(&str, &str)]| {
        Settings::load_from(dir.path(), env, vars(pairs)).unwrap()
    };
    let s = at(None, &[]);
    assert_eq!(
        (s.http.listen.as_str(), s.worker.max_attempts),
        ("127.0.0.1:1001", 3)
    );
    let s = at(Some("prod"), &[]);
    assert_eq!(
        (s.http.listen.as_str(), s.worker.max_attempts),
        ("127.0.0.1:1002", 4)
    );
    assert_eq!(
        s.mps.region, "cn-beijing",
        "default.toml still applies below"
    );
    assert_eq!(
        s.worker.batch_size,
        Settings::default().worker.batch_size,
        "built-in default below both"
    );
    let s = at(
        Some("prod"),
        &[
            ("SNAPGATE__HTTP__LISTEN", "127.0.0.1:1003"),
            ("SNAPGATE__WORKER__MAX_ATTEMPTS", "5"),
        ],
    );
    assert_eq!(
        (s.http.listen.as_str(), s.worker.max_attempts),
        ("127.0.0.1:1003", 5)
    );
    // An env file that does not exist is an error naming it, not a silent fallback.
    let err = Settings::load_from(dir.path(), Some("staging"), vars(&[])).unwrap_err();
    assert!(format!("{err:#}").contains("staging.toml"), "{err:#}");
}

#[test]
fn an_empty_variable_counts_as_not_set() {
    let dir = config_dir(
        &format!(
            "[mps]\npipeline_id = \"{PIPELINE_FILE}\"\n[worker]\nmax_attempts = 3\n\
             [http]\nlisten = \"127.0.0.1:1001\"\n[database]\nurl = \"sqlite://file.db\"\n"
        ),
        "",
    );
    let s = Settings::load_from(
        dir.path(),
        None,
        vars(&[
            ("SNAPGATE__MPS__PIPELINE_ID", ""),
            ("SNAPGATE__WORKER__MAX_ATTEMPTS", ""),
            ("SNAPGATE__HTTP__LISTEN", ""),
            ("SNAPGATE__DATABASE__URL", ""),
            ("DATABASE_URL", ""),
        ]),
    )
    .unwrap();
    assert_eq!(s.mps.pipeline_id.as_deref(), Some(PIPELINE_FILE));
    assert_eq!(s.worker.max_attempts, 3);
    assert_eq!(s.http.listen, "127.0.0.1:1001");
    assert_eq!(s.database.url, "sqlite://file.db");

    // With nothing below, the built-in default: no pipeline, and empty MPS keys are no keys
    // (the built-in emulator), never an empty key pair sent to MPS.
    let s = load(&[
        ("SNAPGATE__MPS__PIPELINE_ID", ""),
        ("SNAPGATE__MPS__ACCESS_KEY_ID", ""),
        ("SNAPGATE__MPS__ACCESS_KEY_SECRET", ""),
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", ""),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", ""),
        ("SNAPGATE__MPS__ENDPOINT", ""),
        ("SNAPGATE__AUTH__MASTER_KEY", ""),
    ]);
    assert_eq!(s.mps.pipeline_id, None);
    assert!(!s.has_mps_credentials(), "{:?}", s.mps);
    assert_eq!(s.mps.endpoint, None);
    assert!(s.auth.master_key.is_none());
    // An empty half does not hide the other layer's value.
    let s = load(&[
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIalibaba"),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "alibaba-secret-1"),
        ("SNAPGATE__MPS__ACCESS_KEY_ID", ""),
        ("SNAPGATE__MPS__ACCESS_KEY_SECRET", ""),
    ]);
    assert_eq!(s.mps.access_key_id.as_deref(), Some("LTAIalibaba"));
}

#[test]
fn an_empty_text_is_kept_where_it_is_a_documented_setting() {
    let s = load(&[
        ("SNAPGATE__MPS__MNS__QUEUE", ""),
        ("SNAPGATE__EMULATOR__OSS_DIR", ""),
        ("SNAPGATE__EMULATOR__STATE_DIR", ""),
    ]);
    assert_eq!(s.mps.mns.queue, "", "\"\": MNS off");
    assert!(!s.mns_enabled());
    assert_eq!(s.emulator.oss_dir, "", "\"\": no local store");
    assert_eq!(s.emulator.state_dir, "", "\"\": ledger in memory");
}

/// The real binary reads the process environment: `SNAPGATE_CONFIG_DIR`, `SNAPGATE_ENV`,
/// then the variables. `healthcheck` without `--url` asks `/readyz` on the loaded
/// `http.listen` and names it in its answer (nothing listens there: exit 1).
#[test]
fn the_binary_loads_the_same_layers_from_its_environment() {
    let closed = [common::process::free_port(), common::process::free_port()];
    let dir = config_dir(
        &format!("[http]\nlisten = \"127.0.0.1:{}\"\n", closed[0]),
        &format!("[http]\nlisten = \"127.0.0.1:{}\"\n", closed[1]),
    );
    let env_port = common::process::free_port();
    let asked = |pairs: &[(&str, &str)]| {
        let mut cmd = Command::new(common::process::BIN);
        cmd.args(["healthcheck", "--timeout-ms", "2000"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SNAPGATE_CONFIG_DIR", dir.path());
        for (k, v) in pairs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(stderr.starts_with("error: unhealthy: http://"), "{stderr}");
        stderr
    };
    let port_of = |s: String| {
        s.split("http://127.0.0.1:")
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .parse::<u16>()
            .unwrap()
    };
    assert_eq!(port_of(asked(&[])), closed[0]);
    assert_eq!(port_of(asked(&[("SNAPGATE_ENV", "prod")])), closed[1]);
    let listen = format!("127.0.0.1:{env_port}");
    assert_eq!(
        port_of(asked(&[
            ("SNAPGATE_ENV", "prod"),
            ("SNAPGATE__HTTP__LISTEN", &listen)
        ])),
        env_port
    );
    assert_eq!(
        port_of(asked(&[
            ("SNAPGATE_ENV", "prod"),
            ("SNAPGATE__HTTP__LISTEN", "")
        ])),
        closed[1],
        "an empty variable: the env file's value"
    );
}
