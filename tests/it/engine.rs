//! The emulator's local engine makes real files: a test video made by ffmpeg here, put into the
//! local object store over HTTP, snapshot jobs submitted with signed MPS calls, and the outputs
//! judged with ffmpeg/ffprobe: keys, counts, sizes, the frame at each time, keyframes, sprite
//! geometry, WebVTT coverage, MPS's failure codes, and a restart in the middle of a job.
//! These tests need ffmpeg and FAIL without it.

use crate::support::media;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use snapgate::emulator::{self, EmulatorConfig, EmulatorHandle};

const LOC: &str = "oss-cn-shanghai";

struct Env {
    emu: EmulatorHandle,
    oss: tempfile::TempDir,
}

impl Env {
    fn path(&self, bucket: &str, key: &str) -> PathBuf {
        self.oss.path().join(bucket).join(key)
    }
}

fn config(oss: &Path) -> EmulatorConfig {
    EmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        oss_dir: Some(oss.to_path_buf()),
        ..EmulatorConfig::default()
    }
}

async fn env() -> Env {
    media::require_ffmpeg();
    let oss = tempfile::tempdir().unwrap();
    let emu = emulator::spawn(config(oss.path())).await.unwrap();
    Env { emu, oss }
}

/// `PUT /<bucket>/<key>` on the emulator's local OSS.
async fn put(e: &EmulatorHandle, bucket: &str, key: &str, file: &Path) {
    let res = reqwest::Client::new()
        .put(format!(
            "{}/{bucket}/{}",
            e.url(),
            snapgate::domain::outputs::encode_key_path(key)
        ))
        .body(std::fs::read(file).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

fn oss_file(key: &str) -> Value {
    json!({"Bucket": "media", "Location": LOC, "Object": snapgate::crypto::percent_encode(key)})
}

fn common(action: &str) -> BTreeMap<String, String> {
    crate::common::mps_rpc::v1_params(action, "testid")
}

async fn call(e: &EmulatorHandle, p: BTreeMap<String, String>) -> (u16, Value) {
    let q = crate::common::mps_rpc::signed_v1_query("POST", &p, "testsecret");
    let res = reqwest::Client::new()
        .post(format!("{}/?{q}", e.url()))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// Submits a job (as [`submit`]) and waits until it is final (as [`wait_final`]): the final
/// job and its manifest.
async fn run_job(e: &EmulatorHandle, input_key: &str, cfg: Value) -> (Value, Value) {
    let job = submit(e, input_key, cfg).await;
    wait_final(e, job["Id"].as_str().unwrap()).await
}

/// Submits `SnapshotConfig` (OutputFile as given) for input `key`; returns the answer's job.
async fn submit(e: &EmulatorHandle, input_key: &str, cfg: Value) -> Value {
    let mut p = common("SubmitSnapshotJob");
    p.insert("Input".into(), oss_file(input_key).to_string());
    p.insert("SnapshotConfig".into(), cfg.to_string());
    let (status, b) = call(e, p).await;
    assert_eq!(status, 200, "{b}");
    b["SnapshotJob"].clone()
}

/// Polls until the job is final; returns MPS's job and the emulator's manifest.
async fn wait_final(e: &EmulatorHandle, id: &str) -> (Value, Value) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut seen_states = Vec::new();
    loop {
        let mut p = common("QuerySnapshotJobList");
        p.insert("SnapshotJobIds".into(), id.into());
        let (_, b) = call(e, p).await;
        let job = b["SnapshotJobList"]["SnapshotJob"][0].clone();
        let state = job["State"].as_str().unwrap_or_default().to_string();
        if seen_states.last() != Some(&state) {
            seen_states.push(state.clone());
        }
        if state == "Success" || state == "Fail" {
            let view: Value = reqwest::get(format!("{}/_emulator/jobs/{id}", e.url()))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            return (job, view["Emulator"]["outputs"].clone());
        }
        assert!(
            Instant::now() < deadline,
            "job {id} not final: {seen_states:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn out(key: &str) -> Value {
    oss_file(key)
}

fn times(manifest: &Value) -> Vec<u64> {
    manifest["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["time_ms"].as_u64().unwrap())
        .collect()
}

fn assert_same_frame(ours: &Path, video: &Path, time_ms: u64, size: (u32, u32)) {
    let mine = media::gray_image(ours, None);
    let reference = media::reference_frame(video, time_ms, size);
    let d = media::mean_abs_diff(&mine, &reference);
    assert!(
        d < 2.0,
        "{} differs from ffmpeg's frame at {time_ms} ms: mean abs diff {d:.2}",
        ours.display()
    );
    // The comparison can tell frames apart: a frame 1 s away is clearly different.
    let other_ms = time_ms.checked_sub(1000).unwrap_or(time_ms + 1000);
    let other = media::reference_frame(video, other_ms, size);
    let d_other = media::mean_abs_diff(&mine, &other);
    println!(
        "{}: diff {d:.2} at {time_ms} ms, {d_other:.2} at {other_ms} ms",
        ours.display()
    );
    assert!(
        d_other > d + 3.0,
        "frames {time_ms} ms and +1 s look alike ({d:.2} vs {d_other:.2}): the check proves nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_snapshots_land_at_their_keys_times_and_sizes() {
    let e = env().await;
    let video = media::test_video();
    put(&e.emu, "media", "in/clip one.mp4", &video).await;
    // 1.5 s, then every 4 s, 10 asked: the 30 s video only has room for 8.
    let job = submit(
        &e.emu,
        "in/clip one.mp4",
        json!({"OutputFile": out("thumbs/{FileName}/{Count}.jpg"), "Time": "1500", "Interval": "4", "Num": "10",
               "Width": "320", "FrameType": "normal"}),
    )
    .await;
    assert_eq!(job["State"], "Submitted");
    let id = job["Id"].as_str().unwrap();
    let (job, manifest) = wait_final(&e.emu, id).await;
    assert_eq!(job["State"], "Success", "{job}");
    assert_eq!(job["Count"], "8", "the real count is reported");
    assert_eq!(manifest["predicted"], false);
    assert_eq!(manifest["simulated"], false);
    let expected: Vec<u64> = (0..8).map(|k| 1500 + 4000 * k).collect();
    assert_eq!(times(&manifest), expected);
    for (k, t) in expected.iter().enumerate() {
        let key = format!("thumbs/clip one/{:05}.jpg", k + 1);
        assert_eq!(manifest["snapshots"][k]["file"]["object"], key.as_str());
        let path = e.path("media", &key);
        assert_eq!(
            media::dimensions(&path),
            (320, 180),
            "{key}: height kept the aspect"
        );
        if k == 0 || k == 4 || k == 7 {
            assert_same_frame(&path, &video, *t, (320, 180));
        }
    }
    assert!(!e.path("media", "thumbs/clip one/00009.jpg").exists());

    // The outputs are objects of the local OSS, over HTTP too.
    let url = format!("{}/media/thumbs/clip%20one/00001.jpg", e.emu.url());
    let res = reqwest::get(&url).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/jpeg");
    let bytes = res.bytes().await.unwrap();
    assert_eq!(
        bytes.as_ref(),
        std::fs::read(e.path("media", "thumbs/clip one/00001.jpg")).unwrap()
    );
    let head = reqwest::Client::new().head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        bytes.len().to_string()
    );
    let missing = reqwest::get(format!("{}/media/thumbs/nothing.jpg", e.emu.url()))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing
        .text()
        .await
        .unwrap()
        .contains("<Code>NoSuchKey</Code>"));
    for bad in [
        "/media/..%2F..%2Fetc%2Fpasswd",
        "/media/a/../../x",
        "/media/a%2F..%2F..%2Fx",
    ] {
        let res = reqwest::Client::new()
            .put(format!("{}{bad}", e.emu.url()))
            .body("x")
            .send()
            .await
            .unwrap();
        assert!(
            res.status() == 400 || res.status() == 404,
            "{bad}: {}",
            res.status()
        );
    }
    assert!(!e.oss.path().join("x").exists());
    // No work files left behind.
    let tmp = e.oss.path().join(".snapgate-tmp");
    assert!(std::fs::read_dir(&tmp).map_or(true, |d| d.count() == 0));
    e.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intra_frames_land_on_keyframes_and_duplicates_lower_the_count() {
    let e = env().await;
    let video = media::test_video();
    put(&e.emu, "media", "in/clip.mp4", &video).await;
    let (job, manifest) = run_job(
        &e.emu,
        "in/clip.mp4",
        json!({"OutputFile": out("intra/{Count}.jpg"), "Time": "2900", "Interval": "3", "Num": "5",
               "Height": "180", "FrameType": "intra"}),
    )
    .await;
    assert_eq!(job["State"], "Success", "{job}");
    // 2.9, 5.9, 8.9, 11.9, 14.9 s → the nearest keyframes (every 2 s).
    let expected = [2000, 6000, 8000, 12000, 14000];
    assert_eq!(times(&manifest), expected);
    for (k, t) in expected.iter().enumerate() {
        let path = e.path("media", &format!("intra/{:05}.jpg", k + 1));
        assert_eq!(
            media::dimensions(&path),
            (320, 180),
            "width kept the aspect"
        );
        assert_same_frame(&path, &video, *t, (320, 180));
    }
    // Every second from 0: 0, 1, …, 5 s map to keyframes 0, 0, 2, 2, 4, 4 s: 3 distinct.
    let (job, manifest) = run_job(
        &e.emu,
        "in/clip.mp4",
        json!({"OutputFile": out("dup/{Count}.jpg"), "Time": "0", "Interval": "1", "Num": "6", "FrameType": "intra"}),
    )
    .await;
    assert_eq!(job["Count"], "3", "{job}");
    assert_eq!(times(&manifest), [0, 2000, 4000]);
    assert_eq!(
        media::dimensions(&e.path("media", "dup/00001.jpg")),
        (1280, 720)
    );
    // A single intra snapshot past the end takes the nearest (last) keyframe.
    let job = submit(
        &e.emu,
        "in/clip.mp4",
        json!({"OutputFile": out("late.jpg"), "Time": "40000", "FrameType": "intra"}),
    )
    .await;
    assert_eq!(job["State"], "Success", "sync: {job}");
    let (_, manifest) = wait_final(&e.emu, job["Id"].as_str().unwrap()).await;
    assert_eq!(times(&manifest), [28000]);
    assert_same_frame(&e.path("media", "late.jpg"), &video, 28000, (1280, 720));
    e.emu.shutdown().await;
}

/// Parses WebVTT cues: (start ms, end ms, url, [x, y, w, h]).
fn parse_vtt(text: &str) -> Vec<(u64, u64, String, [u32; 4])> {
    let ms = |s: &str| -> u64 {
        let (hms, milli) = s.split_once('.').unwrap();
        let parts: Vec<u64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
        assert_eq!(parts.len(), 3, "HH:MM:SS.mmm: {s}");
        assert_eq!(milli.len(), 3, "3 decimals: {s}");
        (parts[0] * 3600 + parts[1] * 60 + parts[2]) * 1000 + milli.parse::<u64>().unwrap()
    };
    assert!(text.starts_with("WEBVTT\n\n"), "{text}");
    text.split("\n\n")
        .skip(1)
        .filter(|c| !c.trim().is_empty())
        .map(|cue| {
            let mut lines = cue.lines();
            let (a, b) = lines.next().unwrap().split_once(" --> ").unwrap();
            let (url, frag) = lines.next().unwrap().split_once("#xywh=").unwrap();
            let r: Vec<u32> = frag.split(',').map(|v| v.parse().unwrap()).collect();
            (ms(a), ms(b), url.to_string(), [r[0], r[1], r[2], r[3]])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sprites_have_the_documented_geometry_and_the_storyboard_covers_the_video() {
    let e = env().await;
    let video = media::test_video();
    put(&e.emu, "media", "in/clip.mp4", &video).await;
    let (job, manifest) = run_job(
        &e.emu,
        "in/clip.mp4",
        json!({"OutputFile": out("sb/{Count}.jpg"), "Time": "0", "Interval": "2", "Num": "14",
               "Width": "160", "Height": "90", "FrameType": "normal",
               "TileOutputFile": out("sb/sprites/{TileCount}.jpg"),
               "TileOut": {"Lines": "2", "Columns": "3", "Margin": "4", "Padding": "2", "Color": "red", "IsKeepCellPic": "false"},
               "Format": "vtt", "SubOut": {"IsSptFrag": "true"}}),
    )
    .await;
    assert_eq!(job["State"], "Success", "{job}");
    assert_eq!(job["Count"], "14");
    assert_eq!(job["TileCount"], "3", "6 + 6 + 2 cells");
    // IsKeepCellPic=false: the single images are not kept.
    assert!(!e.path("media", "sb/00001.jpg").exists());
    assert!(manifest["snapshots"][0]["file"].is_null());
    let (margin, padding, columns, rows, cell) = (4, 2, 3, 2, (160, 90));
    let want = (
        2 * margin + columns * cell.0 + (columns - 1) * padding,
        2 * margin + rows * cell.1 + (rows - 1) * padding,
    );
    assert_eq!(want, (492, 190));
    for n in 1..=3 {
        let path = e.path("media", &format!("sb/sprites/{n:05}.jpg"));
        assert_eq!(
            media::dimensions(&path),
            want,
            "sheet {n} (the last one padded)"
        );
        let sheet = &manifest["sprites"][n - 1];
        assert_eq!(
            (sheet["width"].as_u64(), sheet["height"].as_u64()),
            (Some(492), Some(190))
        );
    }
    // The margin has the colour.
    let corner = media::rgb_region(&e.path("media", "sb/sprites/00001.jpg"), (0, 0, 2, 2));
    let (r, g, b) = (corner[0], corner[1], corner[2]);
    assert!(r > 180 && g < 80 && b < 80, "margin colour {r},{g},{b}");

    // The storyboard: contiguous cues from 0 to the end, each on a sprite cell showing its frame.
    let vtt_key = manifest["webvtt"]["object"].as_str().unwrap();
    assert_eq!(vtt_key, "sb/storyboard.vtt");
    let text = std::fs::read_to_string(e.path("media", vtt_key)).unwrap();
    let cues = parse_vtt(&text);
    assert_eq!(cues.len(), 14);
    assert_eq!(cues[0].0, 0);
    assert_eq!(
        cues.last().unwrap().1,
        30_000,
        "the last cue ends at the duration"
    );
    for w in cues.windows(2) {
        assert_eq!(w[0].1, w[1].0, "no gap, no overlap: {text}");
        assert!(w[0].0 < w[0].1);
    }
    for (i, (start, _, url, [x, y, w, h])) in cues.iter().enumerate() {
        let sheet_no = i / 6 + 1;
        assert_eq!(
            url,
            &format!("sprites/{sheet_no:05}.jpg"),
            "relative to the VTT"
        );
        assert!(x + w <= want.0 && y + h <= want.1);
        let t = manifest["snapshots"][i]["time_ms"].as_u64().unwrap();
        assert_eq!(*start, if i == 0 { 0 } else { t });
        if i == 4 || i == 13 {
            // A cell of the first sheet (second row) and of the last sheet.
            let sprite = e.path("media", &format!("sb/{url}"));
            let cell = media::gray_image(&sprite, Some((*x, *y, *w, *h)));
            let reference = media::reference_frame(&video, t, (*w, *h));
            let d = media::mean_abs_diff(&cell, &reference);
            assert!(d < 6.0, "cue {i} shows another picture (diff {d:.2})");
        }
    }
    e.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_unreadable_inputs_fail_with_mps_codes_and_leave_nothing() {
    let e = env().await;
    let (job, manifest) = run_job(
        &e.emu,
        "in/not-there.mp4",
        json!({"OutputFile": out("x/{Count}.jpg"), "Time": "0", "Num": "3", "Interval": "1"}),
    )
    .await;
    assert_eq!(job["State"], "Fail");
    assert_eq!(job["Code"], "InvalidParameter.ResourceNotFound", "{job}");
    assert!(manifest.is_null());

    let junk = e.oss.path().join("junk.txt");
    std::fs::write(&junk, "this is not a video").unwrap();
    put(&e.emu, "media", "in/junk.mp4", &junk).await;
    let (job, _) = run_job(
        &e.emu,
        "in/junk.mp4",
        json!({"OutputFile": out("y/{Count}.jpg"), "Time": "0", "Num": "3", "Interval": "1"}),
    )
    .await;
    assert_eq!(job["Code"], "InvalidParameter.ResourceContentBad", "{job}");

    // Past the end: a normal snapshot at 40 s of a 30 s video fails.
    put(&e.emu, "media", "in/clip.mp4", &media::test_video()).await;
    let (job, _) = run_job(
        &e.emu,
        "in/clip.mp4",
        json!({"OutputFile": out("z/{Count}.jpg"), "Time": "40000", "Num": "1", "FrameType": "normal"}),
    )
    .await;
    assert_eq!(job["Code"], "InvalidParameter.ResourceContentBad", "{job}");
    for dir in ["x", "y", "z"] {
        assert!(
            !e.path("media", dir).exists(),
            "no partial outputs in {dir}/"
        );
    }
    e.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_answers_with_the_image_already_written() {
    let e = env().await;
    put(&e.emu, "media", "in/clip.mp4", &media::test_video()).await;
    let job = submit(
        &e.emu,
        "in/clip.mp4",
        json!({"OutputFile": out("sync/{FileName}.{ExtName}.jpg"), "Time": "5000", "FrameType": "normal"}),
    )
    .await;
    assert_eq!(job["State"], "Success", "{job}");
    assert_eq!(job["Count"], "1");
    assert_eq!(
        media::dimensions(&e.path("media", "sync/clip.mp4.jpg")),
        (1280, 720)
    );
    e.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_level_skips_a_black_first_frame() {
    let e = env().await;
    let video = media::black_lead_in_video();
    put(&e.emu, "media", "in/black.mp4", &video).await;
    let (job, manifest) = run_job(
        &e.emu,
        "in/black.mp4",
        json!({"OutputFile": out("bl/{Count}.jpg"), "Time": "0", "Interval": "2", "Num": "2",
               "BlackLevel": "90", "FrameType": "normal"}),
    )
    .await;
    assert_eq!(job["State"], "Success", "{job}");
    assert_eq!(
        times(&manifest),
        [1000, 2000],
        "the first frame after the black second"
    );
    let first = media::gray_image(&e.path("media", "bl/00001.jpg"), None);
    assert!(media::mean(&first) > 40.0, "not black");
    // Without BlackLevel the black frame is taken.
    let (_, manifest) = run_job(
        &e.emu,
        "in/black.mp4",
        json!({"OutputFile": out("nb/{Count}.jpg"), "Time": "0", "Interval": "2", "Num": "2", "FrameType": "normal"}),
    )
    .await;
    assert_eq!(times(&manifest), [0, 2000]);
    let first = media::gray_image(&e.path("media", "nb/00001.jpg"), None);
    assert!(media::mean(&first) < 20.0, "black");
    e.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_of_a_job_finishes_it() {
    media::require_ffmpeg();
    let oss = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let cfg = || EmulatorConfig {
        state_dir: Some(state.path().to_path_buf()),
        engine_jobs: 1,
        ..config(oss.path())
    };
    let emu = emulator::spawn(cfg()).await.unwrap();
    let video = media::test_video();
    put(&emu, "media", "in/clip.mp4", &video).await;
    // 30 exact-time snapshots: long enough to be interrupted.
    let job = submit(
        &emu,
        "in/clip.mp4",
        json!({"OutputFile": out("r/{Count}.jpg"), "Time": "0", "Interval": "1", "Num": "30", "FrameType": "normal"}),
    )
    .await;
    let id = job["Id"].as_str().unwrap().to_string();
    let second = submit(
        &emu,
        "in/clip.mp4",
        json!({"OutputFile": out("r2/{Count}.jpg"), "Time": "0", "Interval": "10", "Num": "2", "FrameType": "normal"}),
    )
    .await;
    let second = second["Id"].as_str().unwrap().to_string();
    // One engine slot: while the first job runs, the second waits `Submitted`.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: Value = reqwest::get(format!("{}/_emulator/jobs", emu.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let states: Vec<&str> = v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["State"].as_str().unwrap())
            .collect();
        if states == ["Snapshoting", "Submitted"] {
            break;
        }
        assert_eq!(
            states,
            ["Submitted", "Submitted"],
            "bounded to one at a time"
        );
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    emu.shutdown().await;
    assert!(
        !oss.path().join("media/r/00030.jpg").exists(),
        "stopped midway"
    );

    let emu = emulator::spawn(cfg()).await.unwrap();
    let (job, manifest) = wait_final(&emu, &id).await;
    assert_eq!(job["State"], "Success", "{job}");
    assert_eq!(job["Count"], "30");
    assert_eq!(manifest["snapshots"].as_array().unwrap().len(), 30);
    for k in 1..=30 {
        assert!(oss.path().join(format!("media/r/{k:05}.jpg")).exists());
    }
    let (job, _) = wait_final(&emu, &second).await;
    assert_eq!(job["Count"], "2", "{job}");
    emu.shutdown().await;
    // And once more: a finished job stays finished, with its outputs.
    let emu = emulator::spawn(cfg()).await.unwrap();
    let (job, _) = wait_final(&emu, &id).await;
    assert_eq!(job["Count"], "30");
    emu.shutdown().await;
}

#[tokio::test]
async fn without_ffmpeg_jobs_are_simulated_and_say_so() {
    let oss = tempfile::tempdir().unwrap();
    let emu = emulator::spawn(EmulatorConfig {
        ffmpeg: false,
        start_ms: 20,
        process_ms: 100,
        ..config(oss.path())
    })
    .await
    .unwrap();
    let (job, manifest) = run_job(
        &emu,
        "in/clip.mp4",
        json!({"OutputFile": out("s/{Count}.jpg"), "Time": "0", "Interval": "1", "Num": "3"}),
    )
    .await;
    assert_eq!(job["State"], "Success");
    assert_eq!(job["Count"], "3");
    assert_eq!(manifest["simulated"], true);
    assert_eq!(manifest["predicted"], true);
    assert_eq!(manifest["snapshots"][2]["file"]["object"], "s/00003.jpg");
    assert!(!oss.path().join("media").exists(), "no files");
    emu.shutdown().await;
}

/// D05: the engine reads only the object it was given. An input that is a playlist (HLS) or a
/// concat list naming a file of the host is refused with MPS's `ResourceContentBad`, in the job
/// and in the probe dry runs use; no image of the host file is written anywhere in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlists_and_lists_naming_host_files_are_refused_not_followed() {
    let e = env().await;
    // A real video outside the store: what a playlist could make the engine read.
    let host = tempfile::tempdir().unwrap();
    let secret = host.path().join("secret.ts");
    let made = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(media::small_video())
        .args(["-c", "copy", "-f", "mpegts"])
        .arg(&secret)
        .status()
        .unwrap();
    assert!(made.success());
    let hls = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXTINF:2.0,\nfile://{}\n#EXT-X-ENDLIST\n",
        secret.display()
    );
    let concat = format!("ffconcat version 1.0\nfile '{}'\n", secret.display());
    for (name, text) in [("hls", hls), ("concat", concat)] {
        let file = host.path().join(format!("{name}.txt"));
        std::fs::write(&file, &text).unwrap();
        let key = format!("in/{name}.mp4");
        put(&e.emu, "media", &key, &file).await;
        // The dry run's probe: no duration of the host file.
        let probed = emulator::probe(&e.path("media", &key)).await;
        assert!(probed.is_err(), "{name}: probed {probed:?}");
        let (job, manifest) = run_job(
            &e.emu,
            &key,
            json!({"OutputFile": out(&format!("{name}/{{Count}}.jpg")), "Time": "0", "Num": "2", "Interval": "1"}),
        )
        .await;
        assert_eq!(job["State"], "Fail", "{name}: {job}");
        assert_eq!(
            job["Code"], "InvalidParameter.ResourceContentBad",
            "{name}: {job}"
        );
        let message = job["Message"].as_str().unwrap_or_default();
        assert!(message.contains("container"), "{name}: {message}");
        assert!(manifest.is_null(), "{name}: {manifest}");
        assert!(
            !e.path("media", name).exists(),
            "{name}: an image was written"
        );
    }
    e.emu.shutdown().await;
}
