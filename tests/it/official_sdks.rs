//! Real clients no one here wrote: the official Alibaba Cloud Python SDKs (legacy
//! aliyun-python-sdk-core + mts with signature v1; alibabacloud-mts20140618 with its default
//! ACS3 signature, and with v1) against the emulator over HTTP; the emulator's ledger and stats
//! show which signature each client really sent. The venv is created from PyPI on
//! first run under `target/sdk-venv`; a failing install fails the test (never a skip).

use crate::common;
use crate::support::media;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use snapgate::emulator::{self, EmulatorConfig};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_cannot_tell_the_emulator_from_mps() {
    let venv = common::python_venv("sdk-venv", "tests/official_sdks/requirements.txt");
    let emu = emulator::spawn(EmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        access_keys: vec![("testid".into(), "testsecret".into())],
        start_ms: 50,
        process_ms: 300,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let endpoint = emu.addr().to_string();
    let python = venv.join("bin/python");
    let script = Path::new(ROOT).join("tests/official_sdks/sdk_clients.py");
    let out = tokio::task::spawn_blocking(move || {
        run(Command::new(python)
            .arg(script)
            .args(["--endpoint", &endpoint]))
    })
    .await
    .unwrap();
    let summary: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    println!("{summary}");
    for client in ["legacy-v1", "tea-acs3", "tea-v1"] {
        let r = &summary[client];
        assert_eq!(r["submitted"], true, "{client}: {r}");
        assert_eq!(r["succeeded"], true, "{client}: {r}");
        assert_eq!(
            r["count"], "3",
            "{client}: Count is a string, as MPS sends it"
        );
        assert_eq!(
            r["wrong_secret_code"], "SignatureDoesNotMatch",
            "{client}: {r}"
        );
    }
    // The legacy SDK saw the emulator's string-to-sign equal its own.
    assert_eq!(
        summary["legacy-v1"]["server_string_to_sign_identical"],
        true
    );

    let jobs: Value = reqwest::get(format!("{}/_emulator/jobs", emu.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Each client's job, with the signature its submit carried (the emulator's ledger): the
    // Tea client configured for v1 really sent v1, not its default ACS3.
    let mut signed: Vec<(&str, &str)> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["UserData"].as_str().unwrap(),
                j["Emulator"]["signature"].as_str().unwrap(),
            )
        })
        .collect();
    signed.sort();
    assert_eq!(
        signed,
        [
            ("sdk-legacy", "v1"),
            ("sdk-tea-acs3", "acs3"),
            ("sdk-tea-v2", "v1")
        ]
    );
    let stats: Value = reqwest::get(format!("{}/_emulator/stats", emu.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["calls"]["(unauthenticated)"]["SignatureDoesNotMatch"],
        3
    );
    assert_eq!(stats["calls"]["SubmitSnapshotJob"]["Success"], 3);
    // Every authenticated call by signature: the three submits as above, and each client's
    // queries signed as its submit (the v1 clients' and the ACS3 one's).
    let signatures = &stats["signatures"];
    assert_eq!(
        signatures["SubmitSnapshotJob"],
        serde_json::json!({"v1": 2, "acs3": 1}),
        "{stats}"
    );
    let queries = &signatures["QuerySnapshotJobList"];
    assert!(
        queries["v1"].as_u64() >= Some(2) && queries["acs3"].as_u64() >= Some(1),
        "{stats}"
    );
    assert_eq!(
        signatures.as_object().unwrap().len(),
        2,
        "only submits and queries: {stats}"
    );
    emu.shutdown().await;
}

/// The same SDK runs against the local engine: the jobs read real inputs from the local object
/// store and write real JPEGs where MPS would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_get_real_files_from_the_local_engine() {
    media::require_ffmpeg();
    let venv = common::python_venv("sdk-venv", "tests/official_sdks/requirements.txt");
    let oss = tempfile::tempdir().unwrap();
    let clip = media::small_video();
    let tags = ["legacy", "tea-acs3", "tea-v2"];
    for tag in tags {
        let dir = oss.path().join("media/in");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&clip, dir.join(format!("{tag} clip.mp4"))).unwrap();
    }
    let emu = emulator::spawn(EmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        oss_dir: Some(oss.path().to_path_buf()),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let endpoint = emu.addr().to_string();
    let python = venv.join("bin/python");
    let script = Path::new(ROOT).join("tests/official_sdks/sdk_clients.py");
    let out = tokio::task::spawn_blocking(move || {
        run(Command::new(python)
            .arg(script)
            .args(["--endpoint", &endpoint]))
    })
    .await
    .unwrap();
    let summary: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    for client in ["legacy-v1", "tea-acs3", "tea-v1"] {
        assert_eq!(summary[client]["succeeded"], true, "{client}: {summary}");
        assert_eq!(summary[client]["count"], "3", "{client}: {summary}");
    }
    for tag in tags {
        for n in 1..=3 {
            let path = oss.path().join(format!("media/out/{tag}/{n:05}.jpg"));
            assert_eq!(media::dimensions(&path), (320, 180), "{}", path.display());
        }
    }
    emu.shutdown().await;
}
