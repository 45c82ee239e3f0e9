//! The end-to-end browser test of browser uploads: the embedded default (`Application::build`, SQLite,
//! the built-in emulator with its object store and ffmpeg engine) with `uploads.demo_page = true`;
//! Debian's headless chromium (`/usr/bin/chromium`, or `CHROMIUM`) driven by `playwright-core`
//! from npm (installed into `target/browser-node`, no browser download) opens `/upload`, picks
//! the demo preset and a video made here with ffmpeg, uploads it with the page's own form, and
//! must see the thumbnails and the sprite load and the storyboard preview appear on hover. The
//! screenshot is kept at `target/artifacts/upload-page.png`. FAILS (never skips) without
//! chromium, node or ffmpeg.

use crate::common;
use crate::support::media;

use std::path::Path;

use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upload_page_uploads_a_video_and_shows_its_thumbnails() {
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
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&base)
        .arg(&video)
        .arg(&shot)
        .env("CHROMIUM", &chromium)
        .current_dir(&node)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(300), run)
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
    assert_eq!(seen["state"], "succeeded", "{seen}");
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
    let sprites = seen["sprites"].as_array().unwrap();
    assert_eq!(sprites.len(), 1, "{seen}");
    assert!(sprites[0]["w"].as_u64().unwrap() > 600, "{seen}");
    assert_eq!(seen["cues"], 8, "{seen}");
    assert_eq!(seen["preview"]["display"], "block", "{seen}");
    assert!(
        seen["preview"]["image"]
            .as_str()
            .unwrap()
            .contains("sprites/"),
        "{seen}"
    );
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "the screenshot is kept at {}",
        shot.display()
    );
    app.stop().await.unwrap();
}
