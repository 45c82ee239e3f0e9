//! The gateway side of outputs (manifest, storyboards, local engine) on the embedded default (`Application::build`, no MPS key: the
//! in-process emulator with its local object store and ledger in a temporary data folder) and on
//! Postgres: a video made by ffmpeg here, put into the local store, jobs through the REST API;
//! the JPEG files at the manifest's keys, their sizes, a storyboard golden with hand-checked
//! coordinates, cues that cover the video, the dry run, MPS's failure code for a missing input,
//! and a restart of `serve` in the middle of jobs. These tests need ffmpeg and FAIL without it.

use crate::common;
use crate::support::media;

use std::path::Path;
use std::time::{Duration, Instant};

use common::TestApp;
use serde_json::{json, Value};
use snapgate::config::Settings;

const LOC: &str = "oss-cn-shanghai";
const INPUT: &str = "in/clip one.mp4";

/// The embedded default in `dir`: SQLite there (or `db_url`), the emulator's store in
/// `dir/oss` and its ledger in `dir/emulator`, on free ports.
fn settings(dir: &Path, db_url: Option<&str>) -> Settings {
    let mut s = common::test_settings();
    s.database.url = db_url
        .map(str::to_string)
        .unwrap_or_else(|| format!("sqlite://{}/snapgate.db", dir.display()));
    s.database.migrate_on_start = true;
    s.worker.enabled = true;
    s.worker.status_poll_min_ms = 100;
    s.worker.status_poll_max_ms = 300;
    s.worker.idle_poll_ms = 100;
    s.emulator.oss_dir = dir.join("oss").display().to_string();
    s.emulator.state_dir = dir.join("emulator").display().to_string();
    s
}

struct Running {
    app: TestApp,
    base: String,
    emulator: String,
    http: reqwest::Client,
}

async fn start(s: Settings) -> Running {
    let app = TestApp::from_settings(s).start().await;
    Running {
        base: app.base.clone(),
        emulator: app.emulator.clone().expect("the embedded emulator runs"),
        http: app.http.clone(),
        app,
    }
}

impl Running {
    /// Graceful stop, as on SIGTERM.
    async fn stop(self) {
        self.app.stop().await.unwrap();
    }

    async fn post(&self, query: &str, body: &Value) -> (u16, Value) {
        let res = self
            .http
            .post(format!("{}/v1/snapshot-jobs{query}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn job(&self, id: &str) -> Value {
        self.get(&format!("/v1/snapshot-jobs/{id}"))
            .await
            .json()
            .await
            .unwrap()
    }

    /// Reads the job until it is final (real ffmpeg work: a deadline, not a sleep).
    async fn wait_final(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let j = self.job(id).await;
            if matches!(j["state"].as_str(), Some("succeeded" | "failed")) {
                return j;
            }
            assert!(Instant::now() < deadline, "job {id} never ended: {j}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `PUT` into the emulator's local store, as curl would.
    async fn put_object(&self, bucket: &str, key: &str, file: &Path) {
        let res = self
            .http
            .put(format!(
                "{}/{bucket}/{}",
                self.emulator,
                snapgate::domain::outputs::encode_key_path(key)
            ))
            .body(std::fs::read(file).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
}

fn oss(key: &str) -> Value {
    json!({"location": LOC, "bucket": "media", "object": key})
}

/// 8 snapshots every 2 s from 0, 320 wide (height follows: 180), and 2 sprite sheets of 2×3
/// cells of 160×90 with margin 4 and padding 2, plus MPS's WebVTT.
fn sprite_job(input: &str) -> Value {
    json!({
        "input": oss(input),
        "output": oss("thumbs/{FileName}/{Count}.jpg"),
        "time_ms": 0, "interval_s": 2, "num": 8, "width": 320, "frame_type": "normal",
        "sprite": {"output": oss("sprites/{FileName}/{TileCount}.jpg"),
                   "lines": 2, "columns": 3, "cell_width": 160, "cell_height": 90,
                   "margin": 4, "padding": 2},
        "webvtt": {"sprite": true}
    })
}

async fn end_to_end(db_url: Option<&str>) {
    media::require_ffmpeg();
    let video = media::test_video();
    let dir = tempfile::tempdir().unwrap();
    let app = start(settings(dir.path(), db_url)).await;
    app.put_object("media", INPUT, &video).await;
    let oss_path = |key: &str| dir.path().join("oss/media").join(key);

    // Dry run: nothing recorded, MPS's exact parameters, the outputs predicted from the probed
    // duration.
    let (status, dry) = app.post("?dry_run=true", &sprite_job(INPUT)).await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["mps"]["Action"], "SubmitSnapshotJob");
    let input: Value = serde_json::from_str(dry["mps"]["Input"].as_str().unwrap()).unwrap();
    assert_eq!(
        input,
        json!({"Bucket": "media", "Location": LOC, "Object": "in%2Fclip%20one.mp4"})
    );
    let cfg: Value = serde_json::from_str(dry["mps"]["SnapshotConfig"].as_str().unwrap()).unwrap();
    assert_eq!(cfg["Num"], "8");
    assert_eq!(cfg["TileOut"]["Margin"], "4");
    assert_eq!(cfg["FrameType"], "normal");
    assert!(dry["mps"]["UserData"].is_string());
    assert!(!dry.to_string().contains("Signature"), "{dry}");
    assert_eq!(dry["duration_source"], "probe");
    assert_eq!(dry["duration_ms"], 30_000);
    assert_eq!(
        dry["snapshot_times_ms"],
        json!([0, 2000, 4000, 6000, 8000, 10_000, 12_000, 14_000])
    );
    assert_eq!(
        dry["outputs"]["snapshots"][7]["file"]["object"],
        "thumbs/clip one/00008.jpg"
    );
    assert_eq!(dry["outputs"]["sprites"][1]["snapshots"], json!([7, 8]));
    assert_eq!(dry["outputs"]["sprites"][1]["width"], 492);
    // A duration given wins; an open-ended interval without one lists nothing.
    let (_, dry) = app
        .post("?dry_run=true&duration_ms=5000", &sprite_job(INPUT))
        .await;
    assert_eq!(dry["duration_source"], "request");
    assert_eq!(dry["snapshot_times_ms"], json!([0, 2000, 4000]));
    let open =
        json!({"input": oss("elsewhere.mp4"), "output": oss("o/{Count}.jpg"), "interval_s": 5});
    let (status, dry) = app.post("?dry_run=true", &open).await;
    assert_eq!(status, 200);
    assert!(
        dry["outputs"].is_null() && dry["duration_ms"].is_null(),
        "{dry}"
    );
    let (status, bad) = app
        .post("?dry_run=true", &json!({"input": oss("a.mp4"), "output": oss("x.jpg"), "num": 0, "duration_ms": "long"}))
        .await;
    assert_eq!(status, 422, "{bad}");
    let fields: Vec<&str> = bad["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"/num") && fields.contains(&"/duration_ms"),
        "{bad}"
    );
    let listed: Value = app.get("/v1/snapshot-jobs").await.json().await.unwrap();
    assert_eq!(listed["jobs"], json!([]), "a dry run records nothing");

    // The job, for real.
    let (status, created) = app.post("", &sprite_job(INPUT)).await;
    assert!(status == 201 || status == 202, "{status} {created}");
    assert!(created["outputs"].is_null(), "no outputs before success");
    let id = created["id"].as_str().unwrap().to_string();
    let job = app.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let out = &job["outputs"];
    assert_eq!(out["source"], "local_engine", "{out}");
    assert_eq!(
        (out["predicted"].as_bool(), out["simulated"].as_bool()),
        (Some(false), Some(false))
    );
    let snaps = out["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 8);
    assert_eq!(job["mps"]["count"], 8);
    for (i, s) in snaps.iter().enumerate() {
        let key = s["file"]["object"].as_str().unwrap();
        assert_eq!(key, format!("thumbs/clip one/{:05}.jpg", i + 1));
        assert_eq!(s["time_ms"], 2000 * i as u64);
        assert_eq!(
            (s["width"].as_u64(), s["height"].as_u64()),
            (Some(320), Some(180))
        );
        assert_eq!(media::dimensions(&oss_path(key)), (320, 180), "{key}");
    }
    let sprites = out["sprites"].as_array().unwrap();
    assert_eq!(sprites.len(), 2);
    for s in sprites {
        // 2·4 + 3·160 + 2·2 = 492 wide, 2·4 + 2·90 + 1·2 = 190 high, the last sheet too.
        assert_eq!(
            (s["width"].as_u64(), s["height"].as_u64()),
            (Some(492), Some(190))
        );
        let key = s["file"]["object"].as_str().unwrap();
        assert_eq!(media::dimensions(&oss_path(key)), (492, 190), "{key}");
    }
    assert!(oss_path(out["webvtt"]["object"].as_str().unwrap()).is_file());
    // A URL of the manifest fetches the image, as curl would.
    let url = snaps[0]["file"]["url"].as_str().unwrap();
    assert_eq!(
        url,
        format!("{}/media/thumbs/clip%20one/00001.jpg", app.emulator)
    );
    let res = app.http.get(url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/jpeg");
    assert_eq!(
        res.bytes().await.unwrap().as_ref(),
        std::fs::read(oss_path("thumbs/clip one/00001.jpg")).unwrap()
    );

    // The storyboard, golden: cell i of a sheet at (4 + (i % 3)·162, 4 + (i / 3)·92), counted
    // again from 0 on the second sheet; the last cue ends at the probed 30 s.
    let res = app
        .get(&format!("/v1/snapshot-jobs/{id}/storyboard.vtt"))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/vtt; charset=utf-8");
    let sheet = |n: u32| format!("{}/media/sprites/clip%20one/{n:05}.jpg", app.emulator);
    let expected = format!(
        "WEBVTT

00:00:00.000 --> 00:00:02.000
{s1}#xywh=4,4,160,90

00:00:02.000 --> 00:00:04.000
{s1}#xywh=166,4,160,90

00:00:04.000 --> 00:00:06.000
{s1}#xywh=328,4,160,90

00:00:06.000 --> 00:00:08.000
{s1}#xywh=4,96,160,90

00:00:08.000 --> 00:00:10.000
{s1}#xywh=166,96,160,90

00:00:10.000 --> 00:00:12.000
{s1}#xywh=328,96,160,90

00:00:12.000 --> 00:00:14.000
{s2}#xywh=4,4,160,90

00:00:14.000 --> 00:00:30.000
{s2}#xywh=166,4,160,90
",
        s1 = sheet(1),
        s2 = sheet(2)
    );
    assert_eq!(res.text().await.unwrap(), expected);
    // Relative to the job's WebVTT object (thumbs/clip one/storyboard.vtt), a duration given.
    let vtt = app
        .get(&format!(
            "/v1/snapshot-jobs/{id}/storyboard.vtt?urls=relative&duration_ms=15000"
        ))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        vtt.contains("\n../../sprites/clip%20one/00001.jpg#xywh=4,4,160,90\n"),
        "{vtt}"
    );
    assert!(
        vtt.ends_with(
            "00:00:14.000 --> 00:00:15.000\n../../sprites/clip%20one/00002.jpg#xywh=166,4,160,90\n"
        ),
        "{vtt}"
    );
    // JSON: exactly application/json (Vidstack), cues without gaps from 0 to the end.
    let res = app
        .get(&format!("/v1/snapshot-jobs/{id}/storyboard.json"))
        .await;
    assert_eq!(res.headers()["content-type"], "application/json");
    let sb: Value = res.json().await.unwrap();
    assert_eq!(sb["duration"], 30.0);
    assert_eq!(
        (sb["tile_width"].as_u64(), sb["tile_height"].as_u64()),
        (Some(160), Some(90))
    );
    let tiles = sb["tiles"].as_array().unwrap();
    assert_eq!(tiles.len(), 8);
    assert_eq!(tiles[0]["start"], 0.0);
    for w in tiles.windows(2) {
        assert_eq!(w[0]["end"], w[1]["start"], "a gap or overlap: {sb}");
    }
    assert_eq!(tiles[7]["end"], 30.0);
    assert_eq!(tiles[7]["url"], sheet(2));
    assert_eq!(
        (tiles[7]["x"].as_u64(), tiles[7]["y"].as_u64()),
        (Some(166), Some(4))
    );
    let res = app
        .get(&format!(
            "/v1/snapshot-jobs/{id}/storyboard.vtt?urls=inline"
        ))
        .await;
    assert_eq!(res.status(), 400);

    // A missing input fails with MPS's code; no storyboard (409), no outputs.
    let (_, created) = app.post("", &sprite_job("in/missing.mp4")).await;
    let missing = created["id"].as_str().unwrap().to_string();
    let job = app.wait_final(&missing).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(
        job["mps"]["code"], "InvalidParameter.ResourceNotFound",
        "{job}"
    );
    assert!(job["outputs"].is_null());
    let res = app
        .get(&format!("/v1/snapshot-jobs/{missing}/storyboard.json"))
        .await;
    assert_eq!(res.status(), 409);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["code"], "job_not_succeeded");
    // A job without a sprite has no storyboard (404), even while it runs.
    let (_, created) = app
        .post("", &json!({"input": oss(INPUT), "output": oss("single/{FileName}.jpg"), "time_ms": 1500, "frame_type": "normal"}))
        .await;
    let single = created["id"].as_str().unwrap().to_string();
    let res = app
        .get(&format!("/v1/snapshot-jobs/{single}/storyboard.vtt"))
        .await;
    assert_eq!(res.status(), 404);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["code"], "storyboard_not_available");
    let job = app.wait_final(&single).await;
    assert_eq!(
        job["outputs"]["snapshots"][0]["file"]["object"],
        "single/clip one.jpg"
    );
    assert_eq!(
        media::dimensions(&oss_path("single/clip one.jpg")),
        (1280, 720)
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_sqlite_makes_the_files_its_manifest_names() {
    end_to_end(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_emulator_on_postgres_makes_the_files_its_manifest_names() {
    let (_store, url) = common::pg_store().await;
    end_to_end(Some(&url)).await;
}

/// `serve` stopped (gracefully) while its jobs run and started again on the same data folder:
/// the emulator's ledger brings the jobs back, the engine runs the unfinished ones again, and
/// every job ends; none stays `snapshotting`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_job_ends_every_job() {
    media::require_ffmpeg();
    let video = media::test_video();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("oss/media").join(INPUT);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(&video, &target).unwrap();

    let app = start(settings(dir.path(), None)).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let body = json!({
            "input": oss(INPUT), "output": oss(&format!("r{n}/{{Count}}.jpg")),
            "interval_s": 1, "num": 30, "width": 640, "frame_type": "normal"
        });
        let (status, created) = app.post("", &body).await;
        assert!(status == 201 || status == 202, "{status} {created}");
        ids.push(created["id"].as_str().unwrap().to_string());
    }
    // Stop once the engine is at work on a job: accepted by MPS and not ended (`submitted`
    // with MNS on, as on the embedded default: messages only announce the end; `snapshotting`
    // when a poll saw it running).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut states = Vec::new();
        for id in &ids {
            states.push(app.job(id).await["state"].as_str().unwrap().to_string());
        }
        if states
            .iter()
            .any(|s| s == "snapshotting" || s == "submitted")
        {
            assert!(
                states.iter().any(|s| s != "succeeded" && s != "failed"),
                "{states:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no job started: {states:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;

    let app = start(settings(dir.path(), None)).await;
    for id in &ids {
        let job = app.wait_final(id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["outputs"]["source"], "local_engine");
        let snaps = job["outputs"]["snapshots"].as_array().unwrap();
        assert_eq!(snaps.len(), 30);
        for s in snaps {
            let key = s["file"]["object"].as_str().unwrap();
            assert!(dir.path().join("oss/media").join(key).is_file(), "{key}");
        }
    }
    app.stop().await;
}
