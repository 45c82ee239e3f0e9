//! What a snapshot job produces, worked out from the request alone (no I/O): the snapshot times
//! (docs/mps/API.md §1.4), the expanded output keys (§1.5), the sprite sheets and their geometry (§1.3
//! `TileOut`), the WebVTT key, and storyboards (WebVTT `#xywh` cues and a Mux/imgix-style JSON)
//! built from that geometry.
//!
//! ONE implementation: the emulator's local engine takes its snapshot times and key names from
//! here, and the gateway predicts (dry run) or reconstructs (from MPS's reported `Count`) with
//! the same functions, so prediction and reality agree.
//!
//! Conventions where MPS documents nothing (marked UNCONFIRMED in docs/mps/API.md):
//! - `Interval = 0` with `Num > 1` ("average" mode) takes `Num` snapshots at
//!   `Time + k·(duration − Time)/Num`, k = 0..Num.
//! - `{ExtName}` is the input's extension without the dot; `{SnapshotTime}` is the snapshot's
//!   time in ms; in a sprite key `{Count}` and `{TileCount}` both give the sheet number.
//! - The WebVTT file sits beside the snapshots: the output key's folder, named after the output
//!   file name with `{Count}` and the extension removed (`storyboard` if nothing is left), `.vtt`.
//! - A sprite sheet always has its full grid (`Lines` × `Columns`); unused cells of the last
//!   sheet are filled with the colour (what ffmpeg's `tile` filter does), so every sheet has
//!   the same pixel size.
//! - `CellSelStep = s` puts every s-th snapshot (0, s, 2s, …) into the sprites.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::job::{FrameType, JobRequest, OssObject, SpriteSpec};

/// Digits of `{Count}` and `{TileCount}`: `00001` (docs/mps/API.md §1.5).
pub const COUNTER_DIGITS: usize = 5;
/// A guard against absurd requests (e.g. `Num` = 10⁹ in average mode): no plan lists more.
pub const MAX_SNAPSHOTS: usize = 100_000;
/// `Interval`'s default when `Num > 1` is set without it (docs/mps/API.md §1.3).
pub const DEFAULT_INTERVAL_S: u64 = 10;

/// What is known about the input (and, from real MPS, about the result) when planning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Known {
    /// The input's duration.
    pub duration_ms: Option<u64>,
    /// The input's display size.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// `Count` as MPS reported it.
    pub count: Option<u64>,
    /// `TileCount` as MPS reported it (the number of sprite sheets).
    pub tile_count: Option<u64>,
}

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotOutput {
    /// The `{Count}` number, from 1.
    pub count: u64,
    /// Where the image is; `None` when it is not kept (`sprite.keep_cells = false`).
    pub file: Option<OssObject>,
    /// Time in the input, ms; `None` when it cannot be known (average mode without duration).
    pub time_ms: Option<u64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// One sprite sheet (tiled image).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SpriteSheet {
    /// The `{TileCount}` number, from 1.
    pub count: u64,
    pub file: OssObject,
    pub rows: u32,
    pub columns: u32,
    pub cell_width: Option<u32>,
    pub cell_height: Option<u32>,
    pub margin: u32,
    pub padding: u32,
    pub color: String,
    /// Pixel size: `2·margin + columns·cell_width + (columns − 1)·padding`, rows alike.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Positions in [`OutputManifest::snapshots`] (from 0) of the cells, in cell order
    /// (row-major).
    pub snapshots: Vec<usize>,
}

impl SpriteSheet {
    /// The rectangle `(x, y, w, h)` of cell `cell` (from 0, row-major) on this sheet.
    pub fn cell_rect(&self, cell: usize) -> Option<Rect> {
        let (w, h) = (self.cell_width?, self.cell_height?);
        let columns = self.columns.max(1) as usize;
        let (col, row) = ((cell % columns) as u32, (cell / columns) as u32);
        Some((
            self.margin + col * (w + self.padding),
            self.margin + row * (h + self.padding),
            w,
            h,
        ))
    }
}

/// Every output of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutputManifest {
    pub snapshots: Vec<SnapshotOutput>,
    pub sprites: Vec<SpriteSheet>,
    /// The WebVTT file (`Format = vtt`).
    pub webvtt: Option<OssObject>,
    /// Worked out from the request (and what MPS reported), not observed.
    pub predicted: bool,
    /// Made by the emulator without a real engine: no files exist.
    pub simulated: bool,
}

/// The snapshot times, in ms, MPS's rules give for a video of `duration_ms` (docs/mps/API.md §1.4):
/// - single (`Num` unset or 1, `Interval` unset or `Num` = 1): `Time`, if inside the video (an
///   `intra` snapshot past the end takes the last keyframe, so it is kept);
/// - `Num > 1`: `Num` snapshots every `Interval` s (default 10) from `Time`, fewer if the video
///   ends first;
/// - `Interval` without `Num`: every `Interval` s from `Time` to the end;
/// - `Interval = 0`, `Num > 1`: `Num` snapshots spread evenly from `Time` to the end.
pub fn snapshot_times_ms(r: &JobRequest, duration_ms: u64) -> Vec<u64> {
    times(r, Some(duration_ms))
        .into_iter()
        .map(|t| t.expect("known with a duration"))
        .collect()
}

fn times(r: &JobRequest, duration_ms: Option<u64>) -> Vec<Option<u64>> {
    let t0 = r.time_ms;
    let end = duration_ms.unwrap_or(u64::MAX);
    let stepped = |step_ms: u64, n: Option<u64>| -> Vec<Option<u64>> {
        let n = n.unwrap_or(u64::MAX).min(MAX_SNAPSHOTS as u64);
        (0..n)
            .map_while(|k| {
                let t = t0.checked_add(k.checked_mul(step_ms)?)?;
                (t < end).then_some(Some(t))
            })
            .collect()
    };
    match (r.num, r.interval_s) {
        (None, None) | (Some(1), _) | (None, Some(0)) => {
            if t0 < end || r.frame_type == FrameType::Intra {
                vec![Some(t0)]
            } else {
                Vec::new()
            }
        }
        (Some(n), Some(0)) => {
            let n = n.min(MAX_SNAPSHOTS as u64);
            match duration_ms {
                Some(d) if t0 >= d => Vec::new(),
                Some(d) => {
                    let span = u128::from(d - t0);
                    (0..n)
                        .map(|k| Some(t0 + (span * u128::from(k) / u128::from(n)) as u64))
                        .collect()
                }
                None => vec![None; n as usize],
            }
        }
        (Some(n), i) => stepped(
            i.unwrap_or(DEFAULT_INTERVAL_S).saturating_mul(1000),
            Some(n),
        ),
        (None, Some(i)) => stepped(i.saturating_mul(1000), None),
    }
}

/// `00001`.
pub fn format_counter(n: u64) -> String {
    format!("{n:0width$}", width = COUNTER_DIGITS)
}

/// `{ObjectPrefix}`, `{FileName}`, `{ExtName}` of an input key: `a/b/c.flv` → (`a/b/`, `c`,
/// `flv`).
pub fn input_parts(input_key: &str) -> (&str, &str, &str) {
    let (prefix, name) = match input_key.rfind('/') {
        Some(i) => input_key.split_at(i + 1),
        None => ("", input_key),
    };
    match name.rfind('.') {
        Some(i) if i > 0 => (prefix, &name[..i], &name[i + 1..]),
        _ => (prefix, name, ""),
    }
}

/// Values for the placeholders of one output key.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyVars<'a> {
    pub input_key: &'a str,
    pub count: Option<u64>,
    pub tile_count: Option<u64>,
    pub snapshot_time_ms: Option<u64>,
}

/// Expands MPS's placeholders in a raw (decoded) object key; placeholders without a value stay
/// literal.
pub fn expand_key(pattern: &str, v: &KeyVars<'_>) -> String {
    let (prefix, file, ext) = input_parts(v.input_key);
    let mut out = pattern
        .replace("{ObjectPrefix}", prefix)
        .replace("{FileName}", file)
        .replace("{ExtName}", ext);
    if let Some(c) = v.count {
        out = out.replace("{Count}", &format_counter(c));
    }
    if let Some(t) = v.tile_count {
        out = out.replace("{TileCount}", &format_counter(t));
    }
    if let Some(t) = v.snapshot_time_ms {
        out = out.replace("{SnapshotTime}", &t.to_string());
    }
    out
}

/// The snapshot size: both `Width` and `Height` as given; only one, the other follows the
/// source's aspect ratio (rounded, at least 1); neither, the source's size.
pub fn output_size(
    source: (Option<u32>, Option<u32>),
    width: Option<u32>,
    height: Option<u32>,
) -> (Option<u32>, Option<u32>) {
    let scaled = |given: u32, num: Option<u32>, den: Option<u32>| -> Option<u32> {
        let (num, den) = (u64::from(num?), u64::from(den?));
        if den == 0 {
            return None;
        }
        Some(((u64::from(given) * num + den / 2) / den).max(1) as u32)
    };
    match (width, height) {
        (Some(w), Some(h)) => (Some(w), Some(h)),
        (Some(w), None) => (Some(w), scaled(w, source.1, source.0)),
        (None, Some(h)) => (scaled(h, source.0, source.1), Some(h)),
        (None, None) => source,
    }
}

/// The WebVTT file of a job with `Format = vtt` (see the conventions above).
pub fn webvtt_key(r: &JobRequest) -> Option<OssObject> {
    r.webvtt.as_ref()?;
    let vars = KeyVars {
        input_key: &r.input.object,
        ..KeyVars::default()
    };
    let pattern = expand_key(&r.output.object, &vars);
    let (dir, name) = match pattern.rfind('/') {
        Some(i) => pattern.split_at(i + 1),
        None => ("", pattern.as_str()),
    };
    let stem = match name.rfind('.') {
        Some(i) if i > 0 => &name[..i],
        _ => name,
    };
    let stem = stem
        .replace("{Count}", "")
        .replace("{SnapshotTime}", "")
        .trim_matches(|c| matches!(c, '-' | '_' | '.' | ' '))
        .to_string();
    let stem = if stem.is_empty() {
        "storyboard".to_string()
    } else {
        stem
    };
    Some(OssObject {
        location: r.output.location.clone(),
        bucket: r.output.bucket.clone(),
        object: format!("{dir}{stem}.vtt"),
    })
}

fn sheets(
    spec: &SpriteSpec,
    input_key: &str,
    snapshots: &[SnapshotOutput],
    snapshot_size: (Option<u32>, Option<u32>),
) -> Vec<SpriteSheet> {
    let step = spec.cell_step.unwrap_or(1).max(1) as usize;
    let cells = (spec.lines.max(1) as usize).saturating_mul(spec.columns.max(1) as usize);
    let selected: Vec<usize> = (0..snapshots.len()).step_by(step).collect();
    let cell_w = spec.cell_width.or(snapshot_size.0);
    let cell_h = spec.cell_height.or(snapshot_size.1);
    let extent = |n: u32, cell: Option<u32>| {
        cell.map(|c| 2 * spec.margin + n * c + n.saturating_sub(1) * spec.padding)
    };
    selected
        .chunks(cells)
        .enumerate()
        .map(|(i, members)| {
            let n = i as u64 + 1;
            let first_time = snapshots[members[0]].time_ms;
            let vars = KeyVars {
                input_key,
                count: Some(n),
                tile_count: Some(n),
                snapshot_time_ms: first_time,
            };
            SpriteSheet {
                count: n,
                file: OssObject {
                    location: spec.output.location.clone(),
                    bucket: spec.output.bucket.clone(),
                    object: expand_key(&spec.output.object, &vars),
                },
                rows: spec.lines,
                columns: spec.columns,
                cell_width: cell_w,
                cell_height: cell_h,
                margin: spec.margin,
                padding: spec.padding,
                color: spec.color.clone(),
                width: extent(spec.columns, cell_w),
                height: extent(spec.lines, cell_h),
                snapshots: members.to_vec(),
            }
        })
        .collect()
}

fn manifest(
    r: &JobRequest,
    times: &[Option<u64>],
    source: (Option<u32>, Option<u32>),
    predicted: bool,
) -> OutputManifest {
    let size = output_size(source, r.width, r.height);
    let kept = r.sprite.as_ref().is_none_or(|s| s.keep_cells);
    let snapshots: Vec<SnapshotOutput> = times
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let count = i as u64 + 1;
            let vars = KeyVars {
                input_key: &r.input.object,
                count: Some(count),
                tile_count: None,
                snapshot_time_ms: t,
            };
            SnapshotOutput {
                count,
                file: kept.then(|| OssObject {
                    location: r.output.location.clone(),
                    bucket: r.output.bucket.clone(),
                    object: expand_key(&r.output.object, &vars),
                }),
                time_ms: t,
                width: size.0,
                height: size.1,
            }
        })
        .collect();
    let sprites = match &r.sprite {
        Some(spec) => sheets(spec, &r.input.object, &snapshots, size),
        None => Vec::new(),
    };
    OutputManifest {
        snapshots,
        sprites,
        webvtt: webvtt_key(r),
        predicted,
        simulated: false,
    }
}

/// What the job will (or did, by MPS's report) produce: times from the duration, cut to the
/// reported `Count` and `TileCount` when given. Always `predicted`.
pub fn predict(r: &JobRequest, k: &Known) -> OutputManifest {
    let mut t = times(r, k.duration_ms);
    if let Some(c) = k.count {
        let c = (c as usize).min(MAX_SNAPSHOTS);
        if t.len() > c {
            t.truncate(c);
        } else if t.len() < c {
            // MPS made more than the duration given allows: the extra times are unknown.
            t.resize(c, None);
        }
    }
    let mut m = manifest(r, &t, (k.width, k.height), true);
    if let Some(tc) = k.tile_count {
        m.sprites.truncate(tc as usize);
    }
    m
}

/// The outputs of snapshots actually taken at `times_ms` from a source of the given display
/// size (the local engine's report): not predicted.
pub fn from_times(r: &JobRequest, times_ms: &[u64], source: (u32, u32)) -> OutputManifest {
    let t: Vec<Option<u64>> = times_ms.iter().copied().map(Some).collect();
    manifest(r, &t, (Some(source.0), Some(source.1)), false)
}

/// How storyboard cues name their images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlStyle {
    /// Relative to this file's key (the WebVTT or JSON file), e.g. `../sprites/00001.jpg`;
    /// images in another bucket get their OSS URL.
    RelativeTo(OssObject),
    /// `https://<bucket>.<location>.aliyuncs.com/<key>`.
    Oss,
    /// `<base>/<bucket>/<key>`: a path-style store such as the emulator's.
    PathStyle(String),
}

/// A key in a URL path: every byte but unreserved ones and `/` percent-encoded.
pub fn encode_key_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The public OSS URL of an object.
pub fn oss_url(o: &OssObject) -> String {
    format!(
        "https://{}.{}.aliyuncs.com/{}",
        o.bucket,
        o.location,
        encode_key_path(&o.object)
    )
}

/// The path from the folder of `from` to `to` (both keys of one bucket).
pub fn relative_key(from: &str, to: &str) -> String {
    let from_dir: Vec<&str> = from.split('/').collect();
    let from_dir = &from_dir[..from_dir.len() - 1];
    let to_parts: Vec<&str> = to.split('/').collect();
    let (to_dir, to_name) = to_parts.split_at(to_parts.len() - 1);
    let common = from_dir
        .iter()
        .zip(to_dir)
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts: Vec<&str> = vec![".."; from_dir.len() - common];
    parts.extend(&to_dir[common..]);
    parts.extend(to_name);
    parts.join("/")
}

impl UrlStyle {
    pub fn url(&self, o: &OssObject) -> String {
        match self {
            UrlStyle::RelativeTo(base) if base.bucket == o.bucket => {
                encode_key_path(&relative_key(&base.object, &o.object))
            }
            UrlStyle::RelativeTo(_) | UrlStyle::Oss => oss_url(o),
            UrlStyle::PathStyle(base) => format!(
                "{}/{}/{}",
                base.trim_end_matches('/'),
                o.bucket,
                encode_key_path(&o.object)
            ),
        }
    }
}

/// One thumbnail of a storyboard: shown from `start` to `end`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StoryboardTile {
    /// Seconds (ms precision).
    pub start: f64,
    pub end: f64,
    #[serde(skip)]
    pub start_ms: u64,
    #[serde(skip)]
    pub end_ms: u64,
    /// The image (a sprite sheet or a single snapshot), without the fragment.
    pub url: String,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// `(x, y, width, height)` in pixels.
pub type Rect = (u32, u32, u32, u32);

/// A storyboard for players. Its JSON form follows Mux's and imgix's (`url`, `tile_width`,
/// `tile_height`, `duration`, `tiles[{start, x, y}]`), with each tile's own `url`, `end`,
/// `width` and `height` added, since a storyboard may span several sheets.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Storyboard {
    /// The first tile's image.
    pub url: String,
    pub tile_width: u32,
    pub tile_height: u32,
    /// Seconds.
    pub duration: f64,
    pub tiles: Vec<StoryboardTile>,
}

/// `HH:MM:SS.mmm`, the only form every player parses.
pub fn vtt_timestamp(ms: u64) -> String {
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, milli) = (rest / 1000, rest % 1000);
    format!("{h:02}:{m:02}:{s:02}.{milli:03}")
}

/// Builds the storyboard of a job's outputs for a video of `duration_ms`: from the sprite
/// cells when there are sprites and `use_sprites` is set (or the single images are not kept),
/// else from the single images. Cues are contiguous from 0 to the duration: the first starts
/// at 0, each ends where the next starts, the last at the duration. `None` when a time or a
/// size needed is unknown, or there is nothing to show.
pub fn storyboard(
    m: &OutputManifest,
    duration_ms: u64,
    use_sprites: bool,
    urls: &UrlStyle,
) -> Option<Storyboard> {
    let kept = m.snapshots.iter().all(|s| s.file.is_some());
    // (time, image, rect)
    let mut entries: Vec<(u64, &OssObject, Rect)> = Vec::new();
    if !m.sprites.is_empty() && (use_sprites || !kept) {
        for sheet in &m.sprites {
            for (cell, &i) in sheet.snapshots.iter().enumerate() {
                entries.push((
                    m.snapshots.get(i)?.time_ms?,
                    &sheet.file,
                    sheet.cell_rect(cell)?,
                ));
            }
        }
    } else {
        for s in &m.snapshots {
            entries.push((s.time_ms?, s.file.as_ref()?, (0, 0, s.width?, s.height?)));
        }
    }
    entries.sort_by_key(|e| e.0);
    entries.dedup_by_key(|e| e.0);
    entries.retain(|e| e.0 < duration_ms || duration_ms == 0);
    let first = entries.first()?;
    let tiles: Vec<StoryboardTile> = entries
        .iter()
        .enumerate()
        .map(|(i, &(t, file, (x, y, w, h)))| {
            let start_ms = if i == 0 { 0 } else { t };
            let end_ms = entries
                .get(i + 1)
                .map(|n| n.0)
                .unwrap_or(duration_ms)
                .max(start_ms + 1);
            StoryboardTile {
                start: start_ms as f64 / 1000.0,
                end: end_ms as f64 / 1000.0,
                start_ms,
                end_ms,
                url: urls.url(file),
                x,
                y,
                width: w,
                height: h,
            }
        })
        .collect();
    Some(Storyboard {
        url: urls.url(first.1),
        tile_width: first.2 .2,
        tile_height: first.2 .3,
        duration: duration_ms as f64 / 1000.0,
        tiles,
    })
}

impl Storyboard {
    /// The WebVTT form: `url#xywh=x,y,w,h` cues (JW Player, Plyr, video.js, Vidstack, Bitmovin).
    pub fn to_webvtt(&self) -> String {
        let mut out = String::from("WEBVTT\n");
        for t in &self.tiles {
            out.push_str(&format!(
                "\n{} --> {}\n{}#xywh={},{},{},{}\n",
                vtt_timestamp(t.start_ms),
                vtt_timestamp(t.end_ms),
                t.url,
                t.x,
                t.y,
                t.width,
                t.height
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::validate_request;
    use serde_json::{json, Value};

    fn req(extra: Value) -> JobRequest {
        let mut body = json!({
            "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": "videos/a/clip.mp4"},
            "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "thumbs/{FileName}/{Count}.jpg"},
            "frame_type": "normal",
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        validate_request(&body)
            .unwrap_or_else(|e| panic!("{e:?}"))
            .0
    }

    #[test]
    fn times_follow_mps_modes() {
        // Single.
        assert_eq!(
            snapshot_times_ms(&req(json!({"time_ms": 5000})), 30_000),
            [5000]
        );
        assert!(snapshot_times_ms(&req(json!({"time_ms": 30_000})), 30_000).is_empty());
        let intra = req(json!({"time_ms": 40_000, "frame_type": "intra"}));
        assert_eq!(
            snapshot_times_ms(&intra, 30_000),
            [40_000],
            "nearest keyframe"
        );
        // Num + Interval, cut by the end of the video.
        let r = req(json!({"time_ms": 1000, "interval_s": 10, "num": 5}));
        assert_eq!(snapshot_times_ms(&r, 30_000), [1000, 11_000, 21_000]);
        // Num without Interval: every 10 s.
        let r = req(json!({"num": 3}));
        assert_eq!(snapshot_times_ms(&r, 60_000), [0, 10_000, 20_000]);
        // Interval without Num: to the end.
        let r = req(json!({"time_ms": 500, "interval_s": 7}));
        assert_eq!(
            snapshot_times_ms(&r, 30_000),
            [500, 7500, 14_500, 21_500, 28_500]
        );
        // Average: Interval 0 spreads Num.
        let r = req(json!({"time_ms": 0, "interval_s": 0, "num": 4}));
        assert_eq!(snapshot_times_ms(&r, 30_000), [0, 7500, 15_000, 22_500]);
        let r = req(json!({"time_ms": 10_000, "interval_s": 0, "num": 4}));
        assert_eq!(
            snapshot_times_ms(&r, 30_000),
            [10_000, 15_000, 20_000, 25_000]
        );
        // Num = 1 ignores Interval.
        let r = req(json!({"time_ms": 3000, "interval_s": 5, "num": 1}));
        assert_eq!(snapshot_times_ms(&r, 30_000), [3000]);
        // Huge Num is bounded.
        let r = req(json!({"interval_s": 0, "num": 1_000_000_000u64}));
        assert_eq!(snapshot_times_ms(&r, 30_000).len(), MAX_SNAPSHOTS);
    }

    #[test]
    fn placeholders_expand() {
        let v = KeyVars {
            input_key: "a/b/c.flv",
            count: Some(1),
            tile_count: Some(12),
            snapshot_time_ms: Some(2500),
        };
        assert_eq!(
            expand_key("{ObjectPrefix}{FileName}{Count}.jpg", &v),
            "a/b/c00001.jpg"
        );
        assert_eq!(
            expand_key("s/{FileName}.{ExtName}-{TileCount}-{SnapshotTime}.jpg", &v),
            "s/c.flv-00012-2500.jpg"
        );
        assert_eq!(input_parts("noext"), ("", "noext", ""));
        assert_eq!(input_parts("d/.hidden"), ("d/", ".hidden", ""));
        assert_eq!(
            expand_key("{Count}.jpg", &KeyVars::default()),
            "{Count}.jpg",
            "no value: literal"
        );
        assert_eq!(format_counter(123_456), "123456");
    }

    #[test]
    fn sizes_keep_the_aspect_when_one_side_is_given() {
        let src = (Some(1280), Some(720));
        assert_eq!(output_size(src, Some(320), None), (Some(320), Some(180)));
        assert_eq!(output_size(src, None, Some(100)), (Some(178), Some(100)));
        assert_eq!(
            output_size(src, Some(100), Some(100)),
            (Some(100), Some(100))
        );
        assert_eq!(output_size(src, None, None), src);
        assert_eq!(
            output_size((None, None), Some(320), None),
            (Some(320), None)
        );
    }

    fn sprite_job() -> JobRequest {
        req(json!({
            "time_ms": 0, "interval_s": 2, "num": 8, "width": 160, "height": 90,
            "sprite": {"output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "sprites/{TileCount}.jpg"},
                       "lines": 2, "columns": 3, "margin": 4, "padding": 2},
            "webvtt": {"sprite": true}
        }))
    }

    #[test]
    fn manifest_keys_and_sprite_geometry() {
        let m = predict(
            &sprite_job(),
            &Known {
                duration_ms: Some(15_000),
                ..Known::default()
            },
        );
        assert!(m.predicted && !m.simulated);
        assert_eq!(m.snapshots.len(), 8);
        assert_eq!(
            m.snapshots[0].file.as_ref().unwrap().object,
            "thumbs/clip/00001.jpg"
        );
        assert_eq!(m.snapshots[7].time_ms, Some(14_000));
        assert_eq!(
            (m.snapshots[7].width, m.snapshots[7].height),
            (Some(160), Some(90))
        );
        assert_eq!(m.sprites.len(), 2);
        let (s1, s2) = (&m.sprites[0], &m.sprites[1]);
        assert_eq!(s1.file.object, "sprites/00001.jpg");
        assert_eq!(s2.file.object, "sprites/00002.jpg");
        assert_eq!(s1.snapshots, [0, 1, 2, 3, 4, 5]);
        assert_eq!(s2.snapshots, [6, 7]);
        // 2·4 + 3·160 + 2·2 = 492; 2·4 + 2·90 + 1·2 = 190. The last sheet keeps the full grid.
        assert_eq!((s1.width, s1.height), (Some(492), Some(190)));
        assert_eq!((s2.width, s2.height), (Some(492), Some(190)));
        assert_eq!(s1.cell_rect(0), Some((4, 4, 160, 90)));
        assert_eq!(s1.cell_rect(2), Some((328, 4, 160, 90)));
        assert_eq!(s1.cell_rect(4), Some((166, 96, 160, 90)));
        assert_eq!(s2.cell_rect(1), Some((166, 4, 160, 90)));
        assert_eq!(
            m.webvtt.as_ref().unwrap().object,
            "thumbs/clip/storyboard.vtt"
        );
        // MPS reported fewer: cut.
        let m = predict(
            &sprite_job(),
            &Known {
                duration_ms: Some(15_000),
                count: Some(6),
                tile_count: Some(1),
                ..Known::default()
            },
        );
        assert_eq!((m.snapshots.len(), m.sprites.len()), (6, 1));
    }

    #[test]
    fn cells_not_kept_and_cell_step() {
        let r = req(json!({
            "interval_s": 1, "num": 10, "width": 100, "height": 50,
            "sprite": {"output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "s/{TileCount}.jpg"},
                       "lines": 1, "columns": 2, "cell_width": 40, "cell_height": 30, "keep_cells": false, "cell_step": 3}
        }));
        let m = from_times(&r, &[0, 1000, 2000, 3000, 4000, 5000, 6000], (1280, 720));
        assert!(!m.predicted);
        assert!(m.snapshots.iter().all(|s| s.file.is_none()));
        assert_eq!(m.sprites.len(), 2);
        assert_eq!(m.sprites[0].snapshots, [0, 3]);
        assert_eq!(m.sprites[1].snapshots, [6]);
        assert_eq!(
            (m.sprites[0].width, m.sprites[0].height),
            (Some(80), Some(30))
        );
        assert!(m.webvtt.is_none());
    }

    #[test]
    fn webvtt_storyboard_golden_with_margin_padding_and_a_second_sheet() {
        let m = predict(
            &sprite_job(),
            &Known {
                duration_ms: Some(15_000),
                ..Known::default()
            },
        );
        let vtt_file = m.webvtt.clone().unwrap();
        let sb = storyboard(&m, 15_000, true, &UrlStyle::RelativeTo(vtt_file)).unwrap();
        let expected = "WEBVTT

00:00:00.000 --> 00:00:02.000
../../sprites/00001.jpg#xywh=4,4,160,90

00:00:02.000 --> 00:00:04.000
../../sprites/00001.jpg#xywh=166,4,160,90

00:00:04.000 --> 00:00:06.000
../../sprites/00001.jpg#xywh=328,4,160,90

00:00:06.000 --> 00:00:08.000
../../sprites/00001.jpg#xywh=4,96,160,90

00:00:08.000 --> 00:00:10.000
../../sprites/00001.jpg#xywh=166,96,160,90

00:00:10.000 --> 00:00:12.000
../../sprites/00001.jpg#xywh=328,96,160,90

00:00:12.000 --> 00:00:14.000
../../sprites/00002.jpg#xywh=4,4,160,90

00:00:14.000 --> 00:00:15.000
../../sprites/00002.jpg#xywh=166,4,160,90
";
        assert_eq!(sb.to_webvtt(), expected);
        // JSON form, absolute URLs.
        let sb = storyboard(&m, 15_000, true, &UrlStyle::Oss).unwrap();
        let j = serde_json::to_value(&sb).unwrap();
        assert_eq!(
            j["url"],
            "https://media.oss-cn-shanghai.aliyuncs.com/sprites/00001.jpg"
        );
        assert_eq!(
            (j["tile_width"].as_u64(), j["tile_height"].as_u64()),
            (Some(160), Some(90))
        );
        assert_eq!(j["duration"], 15.0);
        assert_eq!(
            j["tiles"][7],
            json!({"start": 14.0, "end": 15.0, "url": "https://media.oss-cn-shanghai.aliyuncs.com/sprites/00002.jpg", "x": 166, "y": 4, "width": 160, "height": 90})
        );
        // Single images, path-style, a time not on a second, and a key needing encoding.
        let r = req(
            json!({"time_ms": 1500, "interval_s": 10, "width": 64, "height": 36,
                           "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "t t/{Count}.jpg"}}),
        );
        let m = predict(
            &r,
            &Known {
                duration_ms: Some(25_250),
                ..Known::default()
            },
        );
        let sb = storyboard(
            &m,
            25_250,
            true,
            &UrlStyle::PathStyle("http://127.0.0.1:9090/".into()),
        )
        .unwrap();
        assert_eq!(
            sb.to_webvtt(),
            "WEBVTT

00:00:00.000 --> 00:00:11.500
http://127.0.0.1:9090/media/t%20t/00001.jpg#xywh=0,0,64,36

00:00:11.500 --> 00:00:21.500
http://127.0.0.1:9090/media/t%20t/00002.jpg#xywh=0,0,64,36

00:00:21.500 --> 00:00:25.250
http://127.0.0.1:9090/media/t%20t/00003.jpg#xywh=0,0,64,36
"
        );
        // Unknown sizes: no storyboard.
        let m = predict(
            &req(json!({"num": 2})),
            &Known {
                duration_ms: Some(30_000),
                ..Known::default()
            },
        );
        assert!(storyboard(&m, 30_000, false, &UrlStyle::Oss).is_none());
    }

    #[test]
    fn relative_keys_and_timestamps() {
        assert_eq!(relative_key("a/b/x.vtt", "a/b/1.jpg"), "1.jpg");
        assert_eq!(relative_key("a/b/x.vtt", "a/c/1.jpg"), "../c/1.jpg");
        assert_eq!(relative_key("x.vtt", "s/1.jpg"), "s/1.jpg");
        assert_eq!(relative_key("a/x.vtt", "1.jpg"), "../1.jpg");
        assert_eq!(vtt_timestamp(3_723_004), "01:02:03.004");
        let other_bucket = OssObject {
            location: "oss-cn-beijing".into(),
            bucket: "other".into(),
            object: "k/1.jpg".into(),
        };
        let base = OssObject {
            location: "oss-cn-shanghai".into(),
            bucket: "media".into(),
            object: "x.vtt".into(),
        };
        assert_eq!(
            UrlStyle::RelativeTo(base).url(&other_bucket),
            "https://other.oss-cn-beijing.aliyuncs.com/k/1.jpg"
        );
    }
}
