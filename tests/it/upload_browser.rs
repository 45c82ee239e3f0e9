//! The end-to-end browser test of browser uploads and snapgate's web components: the embedded
//! default (`Application::build`, SQLite, the built-in emulator with its object store and ffmpeg
//! engine) with `uploads.demo_page = true`; Debian's headless chromium (`/usr/bin/chromium`, or
//! `CHROMIUM`) driven by `playwright-core` from npm (installed into `target/browser-node`, no
//! browser download) opens `/upload` (a page built on `<snapgate-uploader>` from
//! `/components/snapgate.js`), reaches the file chooser with Tab, and uploads a video made here
//! with ffmpeg: progress to 100 %, `snapgate-succeeded` on the host page, the thumbnails loaded,
//! the storyboard preview on hover (in the uploader and as a `<snapgate-storyboard>` of the host
//! page's own `<video>`). Then a non-video: it starts clean and fails with MPS's code; then the
//! video again: clean start, only its own thumbnails. The screenshot is kept at
//! `target/artifacts/upload-page.png`. FAILS (never skips) without chromium, node or ffmpeg.

use crate::common;
use crate::support::media;

use std::path::Path;

use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uploader_component_uploads_shows_fails_and_starts_clean() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Debian's chromium is required at {chromium} (apt-get install chromium; .ci/run does it)"
    );
    let video = media::small_video();
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
    let app = common::TestApp::from_settings(s).start().await;
    let base = app.base.clone();

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("upload-page.png");
    let _ = std::fs::remove_file(&shot);
    // ES modules resolve `playwright-core` next to the script: run a copy in the npm folder.
    let script = node.join("upload.mjs");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/upload.mjs"),
        &script,
    )
    .unwrap();
    // Not a video: the local engine fails its job with MPS's ResourceContentBad.
    let bad = dir.path().join("not-a-video.mp4");
    std::fs::write(&bad, "this is not a video\n".repeat(2000)).unwrap();
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&base)
        .arg(&video)
        .arg(&bad)
        .arg(&shot)
        .env("CHROMIUM", &chromium)
        .current_dir(&node)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(600), run)
        .await
        .expect("the browser run ends")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("no report from the browser ({e}):\n{stdout}\n{stderr}"));
    assert!(
        seen.is_object() && seen["error"].is_null(),
        "the page failed: {seen}\n{stdout}\n{stderr}"
    );
    check_module(&seen);
    check_first_upload(&seen);
    check_failure_and_clean_restarts(&seen);
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "the screenshot is kept at {}",
        shot.display()
    );
    app.stop().await.unwrap();
}

/// `/components/snapgate.js`: a JavaScript module with an `ETag` that revalidates to `304`.
fn check_module(seen: &Value) {
    let m = &seen["module"];
    assert_eq!(m["status"], 200, "{seen}");
    assert!(
        m["type"]
            .as_str()
            .unwrap_or("")
            .starts_with("text/javascript"),
        "{seen}"
    );
    assert!(
        m["etag"].as_str().is_some_and(|t| t.starts_with('"')),
        "{seen}"
    );
    assert_eq!(m["revalidated"], 304, "{seen}");
}

/// The video: progress to 100 %, the host page's `snapgate-succeeded`, 8 thumbnails loaded, the
/// storyboard's preview on hover, the status announced, the file chooser reached with Tab.
fn check_first_upload(seen: &Value) {
    let tabs = seen["tabs"].as_u64();
    assert!(
        tabs.is_some_and(|n| n <= 3),
        "Tab reaches the file input: {seen}"
    );
    let first = &seen["first"];
    assert_eq!(first["status"], "Succeeded", "{seen}");
    assert_eq!(first["statusRole"], "status", "{seen}");
    assert_eq!(first["statusLive"], "polite", "{seen}");
    assert_eq!(first["progress"], 100, "{seen}");
    assert_eq!(first["error"], "", "{seen}");
    let progress = seen["progress"].as_array().unwrap();
    assert!(
        progress.last().and_then(Value::as_u64) == Some(100),
        "snapgate-progress events up to 100 %: {seen}"
    );
    assert_eq!(seen["succeeded"]["state"], "succeeded", "{seen}");
    assert_eq!(seen["succeeded"]["snapshots"], 8, "{seen}");
    let thumbs = seen["thumbs"].as_array().unwrap();
    assert_eq!(
        thumbs.len(),
        8,
        "the demo preset makes 8 thumbnails: {seen}"
    );
    for t in thumbs {
        assert_eq!(
            (t["w"].as_u64(), t["h"].as_u64()),
            (Some(320), Some(180)),
            "{t}"
        );
    }
    assert_eq!(seen["cues"], 8, "{seen}");
    assert_eq!(seen["preview"]["display"], "block", "{seen}");
    assert!(
        seen["preview"]["image"]
            .as_str()
            .unwrap()
            .contains("sprites/"),
        "{seen}"
    );
    let host = &seen["hostStoryboard"];
    assert_eq!(host["cues"], 8, "{seen}");
    assert_eq!(host["display"], "block", "{seen}");
    assert!(
        host["image"].as_str().unwrap().contains("sprites/"),
        "{seen}"
    );
}

/// The non-video starts clean and fails with MPS's code; the next upload starts clean again
/// (no images of the first, no old error) and ends with its own 8 thumbnails only.
fn check_failure_and_clean_restarts(seen: &Value) {
    let start = &seen["badStart"];
    assert_eq!(
        (start["images"].as_u64(), start["videos"].as_u64()),
        (Some(0), Some(0)),
        "{seen}"
    );
    assert_eq!(start["error"], "", "{seen}");
    let code = "InvalidParameter.ResourceContentBad";
    assert_eq!(seen["failed"]["code"], code, "{seen}");
    assert!(
        seen["bad"]["error"].as_str().unwrap().contains(code),
        "the failure shows MPS's code: {seen}"
    );
    assert_eq!(seen["bad"]["status"], "Failed", "{seen}");
    let again = &seen["againStart"];
    assert_eq!(
        (again["images"].as_u64(), again["error"].as_str()),
        (Some(0), Some("")),
        "{seen}"
    );
    assert_eq!(seen["again"]["status"], "Succeeded", "{seen}");
    assert_eq!(seen["again"]["images"], 8, "{seen}");
    assert_eq!(seen["again"]["error"], "", "{seen}");
    // Two uploads, and the follower's own event for the second.
    assert_eq!(seen["events"]["snapgate-succeeded"], 3, "{seen}");
    assert_eq!(seen["events"]["snapgate-failed"], 1, "{seen}");
    assert_eq!(seen["events"]["snapgate-uploaded"], 3, "{seen}");
    let cancelled = &seen["cancelled"];
    assert_eq!(cancelled["status"], "Cancelled", "{seen}");
    assert_eq!(cancelled["cancelHidden"], true, "{seen}");
    assert_eq!(cancelled["uploadedEvents"], 0, "{seen}");
    assert_eq!(cancelled["error"], "", "{seen}");
    assert_eq!(
        seen["cut"], 1,
        "the third upload's first form post was cut: {seen}"
    );
    assert_eq!(
        seen["retried"], true,
        "the uploader said it retries: {seen}"
    );
}
