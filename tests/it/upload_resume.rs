//! The resumable browser upload, end to end: the embedded default (`Application::build`,
//! SQLite, the built-in emulator with its object store and ffmpeg engine) with the demo page;
//! Debian's headless chromium driven by `playwright-core` (`tests/browser/resume.mjs`) sends a
//! real 206 MB video through `<snapgate-uploader>`'s multipart path (parts of 8 MiB, presigned
//! by snapgate), pauses and resumes it from the keyboard, has the network cut after some parts
//! are stored, leaves the page while offline (`about:blank`: nothing of it survives but its
//! `localStorage`), loads it again online and chooses the same file again. Every part `PUT` the browser
//! made is counted: after the reload exactly the parts the store lacked are sent, once each;
//! the stored object's MD5 is the file's; exactly one job; thumbnails and storyboard shown.
//! Along the way the store's first answers to two parts are faked (403 expired: a new URL; 503:
//! a backoff), the page pauses and resumes in one task (never more than 4 parts in flight),
//! and last a 20 MB file whose part 2 the store always refuses fails with the store's code;
//! its checkpoint with an unknown token starts a new upload, and with snapgate out of reach
//! is kept.
//! The screenshot is kept at `target/artifacts/upload-resume.png`. FAILS (never skips) without
//! chromium, node or ffmpeg.

use crate::common;
use crate::support::media;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use md5::{Digest, Md5};
use serde_json::Value;

/// Parts stored before the network is cut.
const CUT_AFTER_PARTS: u64 = 8;

fn md5_of(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return hex::encode(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

fn parts(seen: &Value, phase: &str, ok_only: bool) -> Vec<u64> {
    seen["puts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["phase"] == phase && (!ok_only || p["status"] == 200))
        .map(|p| p["part"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_cut_and_reloaded_resumes_with_only_the_missing_parts() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Debian's chromium is required at {chromium} (apt-get install chromium; .ci/run does it)"
    );
    let video = media::large_video();
    let size = std::fs::metadata(&video).unwrap().len();
    assert!(size >= 200_000_000, "{} is {size} bytes", video.display());
    let node = common::node_modules("browser-node", "tests/browser");

    let dir = tempfile::tempdir().unwrap();
    let mut s = common::test_settings();
    s.database.url = format!("sqlite://{}/snapgate.db", dir.path().display());
    s.worker.enabled = true;
    s.worker.status_poll_min_ms = 100;
    s.worker.status_poll_max_ms = 300;
    s.worker.idle_poll_ms = 100;
    s.emulator.oss_dir = dir.path().join("oss").display().to_string();
    s.emulator.state_dir = dir.path().join("emulator").display().to_string();
    s.uploads.demo_page = true;
    s.uploads.max_size_bytes = 1 << 30;
    // The emulator's job ledger: the one job MPS got.
    s.emulator.control_routes = true;
    // 16 MiB: the 20 MB file the store refuses goes in parts too.
    s.uploads.multipart_threshold_bytes = 16 * 1024 * 1024;
    let app = common::TestApp::from_settings(s).start().await;

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("upload-resume.png");
    let _ = std::fs::remove_file(&shot);
    // ES modules resolve `playwright-core` next to the script: run a copy in the npm folder.
    let script = node.join("resume.mjs");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/resume.mjs"),
        &script,
    )
    .unwrap();
    let refused = dir.path().join("refused.mp4");
    std::fs::write(&refused, vec![7u8; 20_000_000]).unwrap();
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&app.base)
        .arg(&video)
        .arg(&shot)
        .arg(CUT_AFTER_PARTS.to_string())
        .arg(&refused)
        .env("CHROMIUM", &chromium)
        .current_dir(&node)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(900), run)
        .await
        .expect("the browser run ends")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("no report from the browser ({e}):\n{stdout}\n{stderr}"));
    assert!(
        seen.is_object() && seen["error"].is_null(),
        "the page failed: {seen}\n{stderr}"
    );
    let part_count = seen["plan"]["partCount"].as_u64().unwrap();
    // Bounded concurrency: never more than the component's four parts at once.
    let most = seen["maxInFlight"].as_u64().unwrap();
    assert!(
        (1..=4).contains(&most),
        "{most} part PUTs in flight at once: {seen}"
    );
    check_pause(&seen);
    check_refused_parts(&seen);
    check_only_missing_parts_resent(&seen, part_count);
    check_outcome(&seen);
    check_refused(&seen);

    // The object the store holds is the file, byte for byte.
    let upload = app
        .state
        .uploads
        .status(
            seen["succeeded"]["uploadId"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
        )
        .await
        .unwrap()
        .expect("the upload is in the store");
    let stored = dir
        .path()
        .join("oss")
        .join(&upload.upload.bucket)
        .join(&upload.upload.object_key);
    assert_eq!(md5_of(&stored), md5_of(&video), "{}", stored.display());
    // Exactly one job, here and at MPS.
    let jobs = app
        .store
        .list_jobs(&snapgate::store::JobFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let ledger = common::app::emulator_ledger(app.emulator.as_deref().unwrap()).await;
    assert_eq!(ledger.values().sum::<usize>(), 1, "{ledger:?}");
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "the screenshot is kept at {}",
        shot.display()
    );
    println!(
        "parts: {part_count}; part PUTs before the cut: {} ({} parts answered 200); parts the store held at the reload: {}; part PUTs after it: {}; at most {most} in flight; screenshot: {}",
        parts(&seen, "first", false).len(),
        parts(&seen, "first", true)
            .into_iter()
            .collect::<BTreeSet<_>>()
            .len(),
        seen["storedBeforeResume"].as_array().unwrap().len(),
        parts(&seen, "resumed", false).len(),
        shot.display()
    );
    app.stop().await.unwrap();
}

/// Paused from the keyboard: announced, no part sent while paused, focus on Resume; resumed;
/// then paused and resumed by the page in one task.
fn check_pause(seen: &Value) {
    let p = &seen["paused"];
    assert!(
        p["status"].as_str().unwrap().starts_with("Paused"),
        "{seen}"
    );
    assert_eq!(p["putsWhilePaused"], 0, "{seen}");
    assert_eq!(p["focus"], "resume", "{seen}");
    assert!(p["detail"]["partsDone"].as_u64().unwrap() >= 2, "{seen}");
    assert_eq!(seen["resumedLive"]["fromCheckpoint"], false, "{seen}");
    assert_eq!(
        (
            seen["quick"]["paused"].as_u64(),
            seen["quick"]["resumed"].as_u64()
        ),
        (Some(2), Some(2)),
        "paused and resumed again at once by the page: {seen}"
    );
    assert!(
        seen["afterResumeStatus"]
            .as_str()
            .unwrap()
            .starts_with("Uploading"),
        "{seen}"
    );
}

/// The store's first answers to parts 1 (403, an expired URL) and 2 (503): part 1 is sent
/// again with a URL asked for anew, part 2 after a backoff that was announced.
fn check_refused_parts(seen: &Value) {
    let answers = |n: u64| -> Vec<Value> {
        seen["puts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["phase"] == "first" && p["part"] == n)
            .map(|p| p["status"].clone())
            .collect()
    };
    assert_eq!(answers(1).first(), Some(&Value::from(403)), "{seen}");
    assert!(answers(1).contains(&Value::from(200)), "{seen}");
    let signed_1 = seen["signed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|batch| batch.as_array().unwrap().contains(&Value::from(1)))
        .count();
    assert!(signed_1 >= 2, "part 1's URL asked for again: {seen}");
    assert_eq!(answers(2).first(), Some(&Value::from(503)), "{seen}");
    assert!(answers(2).contains(&Value::from(200)), "{seen}");
    assert!(
        seen["firstStatuses"].as_array().unwrap().iter().any(|t| t
            .as_str()
            .unwrap()
            .starts_with("Part 2: the store answered 503, retrying in")),
        "{seen}"
    );
}

/// After the reload the browser sent exactly the parts the store lacked, each once, and none
/// between the cut and the file chosen again.
fn check_only_missing_parts_resent(seen: &Value, part_count: u64) {
    assert!(part_count >= 20, "a 206 MB file in parts of 8 MiB: {seen}");
    assert!(
        seen["cutStatus"].as_str().unwrap().starts_with("Offline"),
        "the cut is announced: {seen}"
    );
    assert!(parts(seen, "between", false).is_empty(), "{seen}");
    let stored: BTreeSet<u64> = seen["storedBeforeResume"]
        .as_array()
        .unwrap_or_else(|| panic!("GET /parts: {seen}"))
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    let ok_first: BTreeSet<u64> = parts(seen, "first", true).into_iter().collect();
    assert!(
        ok_first.len() as u64 >= CUT_AFTER_PARTS && ok_first.is_subset(&stored),
        "parts the store answered 200 to are stored: {seen}"
    );
    let checkpoint: BTreeSet<u64> = seen["checkpoint"]["parts_done"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert!(checkpoint.is_subset(&stored), "{seen}");
    let missing: Vec<u64> = (1..=part_count).filter(|n| !stored.contains(n)).collect();
    let mut resent = parts(seen, "resumed", false);
    resent.sort_unstable();
    assert_eq!(
        resent, missing,
        "after the reload only the missing parts, once each: {seen}"
    );
    assert!(
        !missing.is_empty() && (missing.len() as u64) < part_count,
        "{seen}"
    );
    let r = &seen["resumedFromCheckpoint"];
    assert_eq!(r["fromCheckpoint"], true, "{seen}");
    assert_eq!(r["partsDone"].as_u64(), Some(stored.len() as u64), "{seen}");
    assert_eq!(r["uploadId"], seen["checkpoint"]["upload_id"], "{seen}");
}

/// The same upload succeeded: thumbnails, storyboard preview, status announced, checkpoint gone.
fn check_outcome(seen: &Value) {
    assert_eq!(
        seen["succeeded"]["uploadId"], seen["checkpoint"]["upload_id"],
        "{seen}"
    );
    assert_eq!(seen["succeeded"]["snapshots"], 8, "{seen}");
    assert_eq!(seen["uploaded"], 1, "{seen}");
    let f = &seen["final"];
    assert_eq!(f["status"], "Succeeded", "{seen}");
    assert_eq!(
        (f["role"].as_str(), f["live"].as_str()),
        (Some("status"), Some("polite"))
    );
    assert_eq!(f["progress"], 100, "{seen}");
    assert_eq!(f["error"], "", "{seen}");
    assert_eq!(f["thumbs"], 8, "{seen}");
    assert_eq!(f["cues"], 8, "{seen}");
    assert_eq!(f["pauseHidden"], true, "{seen}");
    assert_eq!(
        f["checkpoints"], 0,
        "the checkpoint is dropped once landed: {seen}"
    );
    assert_eq!(seen["preview"]["display"], "block", "{seen}");
    assert!(
        seen["preview"]["image"]
            .as_str()
            .unwrap()
            .contains("sprites/"),
        "{seen}"
    );
}

/// A part the store refuses every time: its URL asked for again (twice), then the store's code
/// and message shown and fired; the previous upload's images gone; the checkpoint kept (the
/// same file chosen again resumes); that checkpoint made unusable starts a new upload; with
/// snapgate unreachable the checkpoint is kept.
fn check_refused(seen: &Value) {
    let r = &seen["refused"];
    assert_eq!(r["code"], "AccessDenied", "{seen}");
    assert_eq!(
        r["message"], "The bucket policy refuses this part.",
        "{seen}"
    );
    assert_eq!(
        r["error"], "AccessDenied: The bucket policy refuses this part.",
        "{seen}"
    );
    assert_eq!(r["status"], "Failed", "{seen}");
    assert_eq!(r["images"], 0, "{seen}");
    assert_eq!(r["pauseHidden"], true, "{seen}");
    assert_eq!(r["checkpoints"], 1, "{seen}");
    assert_eq!(r["signedPart2"], 3, "the first URL and two more: {seen}");
    // Its checkpoint, with a token snapgate does not know, is dropped: a new upload, no resume.
    let n = &seen["renewed"];
    assert!(
        n["uploadId"].is_string() && n["uploadId"] != r["uploadId"],
        "{seen}"
    );
    assert_eq!(n["checkpointUpload"], n["uploadId"], "{seen}");
    assert_eq!(n["code"], "AccessDenied", "{seen}");
    assert_eq!(n["resumed"], 0, "{seen}");
    // snapgate unreachable when the file is chosen again: a network failure, checkpoint kept.
    let u = &seen["unreachable"];
    assert_eq!(u["code"], "network_error", "{seen}");
    assert_eq!(u["checkpointUpload"], n["uploadId"], "{seen}");
}
