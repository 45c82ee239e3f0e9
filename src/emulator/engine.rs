//! The local engine: runs a snapshot job for real with `ffmpeg` and `ffprobe` (Debian's
//! packages), reading the input from and writing the outputs to the local object store.
//!
//! Semantics are MPS's (docs/mps/API.md §1.3 to §1.5), with the times and key names taken from
//! `domain::outputs`, the one implementation the gateway predicts with:
//! - the planned times come from [`outputs::snapshot_times_ms`]; `intra` moves each to the
//!   nearest keyframe (a time whose keyframe was already taken is skipped, so `Count` can be
//!   lower than `Num`); a time past the last frame gives no snapshot;
//! - `BlackLevel` (with `Time = 0` and `Num > 1`; level 100 for a single snapshot at 0) moves the
//!   first snapshot to the first frame within 5 s with fewer than BlackLevel % black pixels;
//! - the size follows [`outputs::output_size`]; sprites are drawn by ffmpeg's `tile` filter, whose
//!   geometry is the manifest's (`2·margin + columns·cell + (columns − 1)·padding`);
//! - a WebVTT storyboard is written when `Format = vtt`, from [`outputs::storyboard`].
//!
//! Everything is made in a work folder and renamed into place only when the whole job has
//! succeeded, so a failure leaves no partial outputs.
//!
//! The engine reads only the object it is given: every ffmpeg/ffprobe run opens the input with
//! [`INPUT_FORMATS`] and [`INPUT_PROTOCOLS`] as its whitelists, so a playlist (HLS, DASH), a
//! concat list or an image sequence in the store, which would name other files of the host, is
//! refused before anything else is opened (`ResourceContentBad`), in jobs and in dry runs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use super::jobs::Failure;
use super::oss::LocalOss;
use crate::domain::job::{FrameType, JobRequest, OssObject};
use crate::domain::outputs::{self, OutputManifest, UrlStyle};

/// No ffmpeg run may take longer.
const STEP_TIMEOUT: Duration = Duration::from_secs(600);
/// How far into the video the black-frame filter looks (docs/mps/API.md §1.3 `BlackLevel`).
const BLACK_SEARCH_MS: u64 = 5000;

/// The demuxers an input may be opened with: real video containers, none of which opens
/// another file (`mov` is MP4/MOV/3GP, whose external references ffmpeg leaves off;
/// `matroska` is also WebM; `mpeg` is MPEG-PS; `asf` is WMV). Not `hls`, `dash`, `concat`,
/// `image2`, `tee`, `lavfi` or any other format that names files, URLs or filters.
pub const INPUT_FORMATS: &str = "mov,matroska,avi,flv,mpegts,mpeg,ogg,asf";
/// The protocols an input may be read with: the file itself.
pub const INPUT_PROTOCOLS: &str = "file";
/// The failure of an input in no container of [`INPUT_FORMATS`].
pub const CONTAINER_REFUSED: &str = "the input is not in a video container the engine reads (MP4/MOV, Matroska/WebM, AVI, FLV, MPEG-TS, MPEG-PS, Ogg, ASF); playlists, lists and image sequences are refused";

/// `-i input` with the whitelists every ffmpeg and ffprobe run opens an input with.
fn input<'a>(cmd: &'a mut Command, path: &Path) -> &'a mut Command {
    cmd.args([
        "-protocol_whitelist",
        INPUT_PROTOCOLS,
        "-format_whitelist",
        INPUT_FORMATS,
        "-i",
    ])
    .arg(path)
}

/// Whether ffprobe's `format_name` (`mov,mp4,m4a,3gp,3g2,mj2`) is one of [`INPUT_FORMATS`].
fn allowed_format(format_name: &str) -> bool {
    let allowed: Vec<&str> = INPUT_FORMATS.split(',').collect();
    format_name.split(',').any(|f| allowed.contains(&f))
}

/// What `ffprobe` tells about the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub duration_ms: u64,
    /// Display size (sample aspect ratio applied).
    pub width: u32,
    pub height: u32,
}

/// The result of one job.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub manifest: Option<OutputManifest>,
    pub failure: Option<Failure>,
}

fn not_found() -> Failure {
    Failure::new(
        "InvalidParameter.ResourceNotFound",
        "The resource operated cannot be found.",
    )
}

fn content_bad(detail: &str) -> Failure {
    Failure::new(
        "InvalidParameter.ResourceContentBad",
        format!("The resource content is bad: {detail}"),
    )
}

fn bad_key(key: &str) -> Failure {
    Failure::new(
        "InvalidParameter.ObjectKeyInvalid",
        format!("The output object {key:?} cannot be written to the local store."),
    )
}

fn internal() -> Failure {
    Failure::new(
        "InternalError",
        "The request processing has failed due to some unknown error.",
    )
}

/// True when `ffmpeg` and `ffprobe` can be run.
pub fn available() -> bool {
    ["ffmpeg", "ffprobe"].iter().all(|bin| {
        std::process::Command::new(bin)
            .arg("-version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Runs a command to completion (killed on timeout or when the job is dropped); stdout on
/// success, the last stderr line as the error.
async fn run(cmd: &mut Command) -> Result<(Vec<u8>, String), String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(STEP_TIMEOUT, cmd.output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(format!("cannot run: {e}")),
        Err(_) => return Err("timed out".into()),
    };
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok((out.stdout, stderr))
    } else {
        // A whitelist refusal is not the last line (that is `<path>: Invalid argument`).
        if stderr.contains("not on whitelist") {
            return Err(CONTAINER_REFUSED.to_string());
        }
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        Err(last.unwrap_or("failed").trim().to_string())
    }
}

fn ffmpeg() -> Command {
    let mut c = Command::new("ffmpeg");
    c.args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"]);
    c
}

fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

fn parse_ratio(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The input's duration and display size; an input in no container of [`INPUT_FORMATS`] is
/// refused ([`CONTAINER_REFUSED`]) without being opened any further.
pub async fn probe(path: &Path) -> Result<Probe, String> {
    let (out, _) = run(input(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ]),
        path,
    ))
    .await?;
    let v: Value = serde_json::from_slice(&out).map_err(|e| e.to_string())?;
    // The whitelist already held; the format is checked again on what ffprobe says it read.
    if !v["format"]["format_name"]
        .as_str()
        .is_some_and(allowed_format)
    {
        return Err(CONTAINER_REFUSED.into());
    }
    let video = v["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["codec_type"] == "video"))
        .ok_or("no video stream")?;
    let num = |x: &Value| {
        x.as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .or_else(|| x.as_f64())
    };
    let duration_s = num(&v["format"]["duration"])
        .or_else(|| num(&video["duration"]))
        .ok_or("unknown duration")?;
    let (w, h) = (
        video["width"].as_u64().ok_or("no width")?,
        video["height"].as_u64().ok_or("no height")?,
    );
    let (mut w, mut h) = (w, h);
    if let Some((sn, sd)) = video["sample_aspect_ratio"]
        .as_str()
        .and_then(parse_ratio)
        .filter(|(n, d)| *n > 0 && *d > 0 && n != d)
    {
        w = (w * sn + sd / 2) / sd;
    }
    // A 90°/270° display matrix: ffmpeg auto-rotates, so the snapshot is upright.
    let rotated = video["side_data_list"].as_array().is_some_and(|l| {
        l.iter().any(|d| {
            d["rotation"]
                .as_i64()
                .is_some_and(|r| r.rem_euclid(180) == 90)
        })
    }) || video["tags"]["rotate"]
        .as_str()
        .and_then(|r| r.parse::<i64>().ok())
        .is_some_and(|r| r.rem_euclid(180) == 90);
    if rotated {
        std::mem::swap(&mut w, &mut h);
    }
    if w == 0 || h == 0 || !duration_s.is_finite() || duration_s <= 0.0 {
        return Err("empty video".into());
    }
    Ok(Probe {
        duration_ms: (duration_s * 1000.0).round() as u64,
        width: w as u32,
        height: h as u32,
    })
}

/// Keyframe times (ms), from the packet flags (no decoding).
pub async fn keyframes(path: &Path) -> Result<Vec<u64>, String> {
    let (out, _) = run(input(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time,flags",
            "-of",
            "csv=p=0",
        ]),
        path,
    ))
    .await?;
    let mut k: Vec<u64> = String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| {
            let (t, flags) = l.split_once(',')?;
            flags.contains('K').then_some(())?;
            let t: f64 = t.trim().parse().ok()?;
            (t >= 0.0).then(|| (t * 1000.0).round() as u64)
        })
        .collect();
    k.sort_unstable();
    k.dedup();
    Ok(k)
}

/// The first frame in the first 5 s with fewer than `level` % black pixels.
async fn first_non_black(path: &Path, level: u32) -> Option<u64> {
    let filter = format!(
        "blackframe=amount=0:threshold=32,metadata=mode=select:key=lavfi.blackframe.pblack:value={level}:function=less,showinfo"
    );
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-nostats", "-t"])
        .arg(secs(BLACK_SEARCH_MS));
    input(&mut cmd, path).args(["-vf", &filter, "-frames:v", "1", "-f", "null", "-"]);
    let (_, stderr) = run(&mut cmd).await.ok()?;
    let line = stderr
        .lines()
        .find(|l| l.contains(" n:") && l.contains("pts_time:"))?;
    let t = line.split("pts_time:").nth(1)?.split_whitespace().next()?;
    let t: f64 = t.parse().ok()?;
    Some((t * 1000.0).round() as u64)
}

fn nearest(keys: &[u64], t: u64) -> Option<u64> {
    let i = keys.partition_point(|&k| k < t);
    let after = keys.get(i).copied();
    let before = i.checked_sub(1).map(|j| keys[j]);
    match (before, after) {
        (Some(b), Some(a)) => Some(if t - b <= a - t { b } else { a }),
        (b, a) => b.or(a),
    }
}

/// The times the engine really uses: the plan, then black-frame and keyframe rules.
async fn actual_times(r: &JobRequest, input: &Path, probe: &Probe) -> Result<Vec<u64>, String> {
    let mut times = outputs::snapshot_times_ms(r, probe.duration_ms);
    if times.is_empty() {
        return Ok(times);
    }
    let black_level = match (r.time_ms, r.num) {
        (0, Some(n)) if n > 1 => r.black_level,
        (0, _) if !r.is_multi() => Some(100),
        _ => None,
    };
    let mut first_at_least = None;
    if let Some(level) = black_level {
        if let Some(t) = first_non_black(input, level).await.filter(|&t| t > 0) {
            times[0] = t;
            first_at_least = Some(t);
        }
    }
    if r.frame_type == FrameType::Intra {
        let keys = keyframes(input).await?;
        let mut mapped: Vec<u64> = Vec::with_capacity(times.len());
        for (i, &t) in times.iter().enumerate() {
            let k = match (i, first_at_least) {
                (0, Some(min)) => keys.iter().copied().find(|&k| k >= min),
                _ => None,
            }
            .or_else(|| nearest(&keys, t));
            if let Some(k) = k {
                if mapped.last().is_none_or(|&last| k > last) {
                    mapped.push(k);
                }
            }
        }
        times = mapped;
    } else {
        let mut seen: Vec<u64> = Vec::with_capacity(times.len());
        for t in times {
            if seen.last().is_none_or(|&last| t > last) {
                seen.push(t);
            }
        }
        times = seen;
    }
    Ok(times)
}

/// ffmpeg's colour names and `#RRGGBB` / `random` pass; anything else becomes black (and can
/// never inject filter syntax).
fn ffmpeg_color(c: &str) -> String {
    if !c.is_empty() && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'#') {
        c.to_string()
    } else {
        "black".to_string()
    }
}

pub struct Engine {
    oss: LocalOss,
    permits: tokio::sync::Semaphore,
}

impl Engine {
    pub fn new(oss: LocalOss, parallel: usize) -> Self {
        Self {
            oss,
            permits: tokio::sync::Semaphore::new(parallel.max(1)),
        }
    }

    /// Waits for a free slot (bounded parallelism).
    pub async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.permits.acquire().await.expect("never closed")
    }

    /// Runs job `id`; cleans its work folder whatever happens.
    pub async fn run(&self, id: &str, r: &JobRequest) -> Outcome {
        let work = self.oss.tmp_path(&format!("job-{id}"));
        let _ = tokio::fs::remove_dir_all(&work).await;
        let result = self.run_in(&work, r).await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        match result {
            Ok(m) => Outcome {
                manifest: Some(m),
                failure: None,
            },
            Err(f) => {
                tracing::info!(job = %id, code = %f.code, message = %f.message, "local engine: job failed");
                Outcome {
                    manifest: None,
                    failure: Some(f),
                }
            }
        }
    }

    async fn run_in(&self, work: &Path, r: &JobRequest) -> Result<OutputManifest, Failure> {
        let input = self
            .oss
            .object_path(&r.input.bucket, &r.input.object)
            .map_err(|_| not_found())?;
        if !tokio::fs::metadata(&input).await.is_ok_and(|m| m.is_file()) {
            return Err(not_found());
        }
        let probe = probe(&input).await.map_err(|e| content_bad(&e))?;
        let times = actual_times(r, &input, &probe)
            .await
            .map_err(|e| content_bad(&e))?;
        if times.is_empty() {
            return Err(content_bad(
                "the snapshot time is beyond the end of the video",
            ));
        }
        tokio::fs::create_dir_all(work).await.map_err(|e| {
            tracing::error!(error = %e, dir = %work.display(), "local engine: cannot create its work folder");
            internal()
        })?;
        let (w, h) = match outputs::output_size(
            (Some(probe.width), Some(probe.height)),
            r.width,
            r.height,
        ) {
            (Some(w), Some(h)) => (w, h),
            _ => return Err(internal()),
        };
        // Snapshots. A time past the last frame yields no image: it is left out.
        let taken = take_snapshots(work, &input, &times, (w, h)).await?;
        if taken.is_empty() {
            return Err(content_bad(
                "the snapshot time is beyond the end of the video",
            ));
        }
        let real_times: Vec<u64> = taken.iter().map(|(t, _)| *t).collect();
        let manifest = outputs::from_times(r, &real_times, (probe.width, probe.height));
        self.check_keys(&manifest)?;
        // Sprites: one ffmpeg `tile` run per sheet, over that sheet's cells.
        let sheets = tile_sprites(work, &manifest, &taken).await?;
        // WebVTT.
        let mut vtt: Option<PathBuf> = None;
        if let (Some(spec), Some(file)) = (&r.webvtt, &manifest.webvtt) {
            let style = UrlStyle::RelativeTo(file.clone());
            if let Some(sb) = outputs::storyboard(&manifest, probe.duration_ms, spec.sprite, &style)
            {
                let path = work.join("storyboard.vtt");
                tokio::fs::write(&path, sb.to_webvtt())
                    .await
                    .map_err(|_| internal())?;
                vtt = Some(path);
            }
        }
        // Everything made: move it into place (undone if a move fails).
        self.store_outputs(&manifest, &taken, sheets, vtt).await?;
        Ok(manifest)
    }

    /// Moves everything made into place: snapshots, sprite sheets, the WebVTT file; if a move
    /// fails, the outputs already moved are removed.
    async fn store_outputs(
        &self,
        manifest: &OutputManifest,
        taken: &[(u64, PathBuf)],
        sheets: Vec<PathBuf>,
        vtt: Option<PathBuf>,
    ) -> Result<(), Failure> {
        let mut moves: Vec<(PathBuf, &OssObject)> = Vec::new();
        for (snap, (_, path)) in manifest.snapshots.iter().zip(taken) {
            if let Some(file) = &snap.file {
                moves.push((path.clone(), file));
            }
        }
        for (sheet, path) in manifest.sprites.iter().zip(sheets) {
            moves.push((path, &sheet.file));
        }
        if let (Some(path), Some(file)) = (vtt, &manifest.webvtt) {
            moves.push((path, file));
        }
        let mut done: Vec<PathBuf> = Vec::new();
        for (from, o) in moves {
            match self.oss.commit(&from, &o.bucket, &o.object).await {
                Ok(to) => done.push(to),
                Err(e) => {
                    tracing::warn!(error = %e, key = %o.object, "local engine: cannot store an output; removing the job's other outputs");
                    for p in done {
                        let _ = tokio::fs::remove_file(p).await;
                    }
                    return Err(bad_key(&o.object));
                }
            }
        }
        Ok(())
    }

    /// Every output key must map into the local store before anything is written.
    fn check_keys(&self, m: &OutputManifest) -> Result<(), Failure> {
        let files = m
            .snapshots
            .iter()
            .filter_map(|s| s.file.as_ref())
            .chain(m.sprites.iter().map(|s| &s.file))
            .chain(m.webvtt.iter());
        for o in files {
            if self.oss.object_path(&o.bucket, &o.object).is_err() {
                return Err(bad_key(&o.object));
            }
        }
        Ok(())
    }
}

/// One JPEG per time, `w`×`h`, as `(time, file)`; a time past the last frame yields no image
/// and is left out.
async fn take_snapshots(
    work: &Path,
    path: &Path,
    times: &[u64],
    (w, h): (u32, u32),
) -> Result<Vec<(u64, PathBuf)>, Failure> {
    let mut taken: Vec<(u64, PathBuf)> = Vec::new();
    for &t in times {
        let out = work.join(format!("snap-{:05}.jpg", taken.len() + 1));
        let mut cmd = ffmpeg();
        cmd.arg("-ss").arg(secs(t));
        input(&mut cmd, path)
            .args(["-frames:v", "1", "-an", "-vf"])
            .arg(format!("scale={w}:{h},setsar=1"))
            .args(["-q:v", "2"])
            .arg(&out);
        run(&mut cmd).await.map_err(|e| content_bad(&e))?;
        if tokio::fs::metadata(&out).await.is_ok_and(|m| m.len() > 0) {
            taken.push((t, out));
        }
    }
    Ok(taken)
}

/// The manifest's sprite sheets: one ffmpeg `tile` run per sheet, over that sheet's cells (the
/// `taken` snapshots).
async fn tile_sprites(
    work: &Path,
    manifest: &OutputManifest,
    taken: &[(u64, PathBuf)],
) -> Result<Vec<PathBuf>, Failure> {
    let mut sheets: Vec<PathBuf> = Vec::new();
    for sheet in &manifest.sprites {
        let (Some(cw), Some(ch)) = (sheet.cell_width, sheet.cell_height) else {
            return Err(internal());
        };
        let dir = work.join(format!("sheet-{:05}", sheet.count));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|_| internal())?;
        for (cell, &i) in sheet.snapshots.iter().enumerate() {
            tokio::fs::copy(&taken[i].1, dir.join(format!("cell-{:05}.jpg", cell + 1)))
                .await
                .map_err(|_| internal())?;
        }
        let out = work.join(format!("sprite-{:05}.jpg", sheet.count));
        let filter = format!(
            "scale={cw}:{ch},setsar=1,tile={}x{}:margin={}:padding={}:color={}",
            sheet.columns,
            sheet.rows,
            sheet.margin,
            sheet.padding,
            ffmpeg_color(&sheet.color)
        );
        let mut cmd = ffmpeg();
        // The cells the engine itself wrote in its work folder: an image sequence, named.
        cmd.args(["-f", "image2", "-protocol_whitelist", "file"])
            .args(["-framerate", "1", "-start_number", "1", "-i"])
            .arg(dir.join("cell-%05d.jpg"))
            .args(["-vf", &filter, "-frames:v", "1", "-q:v", "2"])
            .arg(&out);
        run(&mut cmd).await.map_err(|e| {
            tracing::warn!(error = %e, "local engine: sprite failed");
            internal()
        })?;
        sheets.push(out);
    }
    Ok(sheets)
}
