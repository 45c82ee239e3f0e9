//! The snapshot job as snapgate's public contract describes it, after validation and normalization.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::RawJson;
use utoipa::ToSchema;
use uuid::Uuid;

/// A gateway job id: a UUID v7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(s: &str) -> Option<Self> {
        Uuid::parse_str(s).ok().map(Self)
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The gateway's view of a job's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Recorded, not yet accepted by MPS.
    Queued,
    /// MPS accepted the job (`Submitted`).
    Submitted,
    /// MPS is taking the snapshots (`Snapshoting`).
    Snapshotting,
    /// MPS finished (`Success`).
    Succeeded,
    /// MPS reported `Fail`, or snapgate gave up delivering the job.
    Failed,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Submitted,
        JobState::Snapshotting,
        JobState::Succeeded,
        JobState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Submitted => "submitted",
            JobState::Snapshotting => "snapshotting",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed)
    }

    /// Maps an MPS job state (docs/mps/API.md §2.3, note the single-t `Snapshoting`).
    pub fn from_mps(state: &str) -> Option<Self> {
        match state {
            "Submitted" => Some(JobState::Submitted),
            "Snapshoting" | "Snapshotting" => Some(JobState::Snapshotting),
            "Success" => Some(JobState::Succeeded),
            "Fail" => Some(JobState::Failed),
            _ => None,
        }
    }
}

/// An OSS object. `object` is the raw key; snapgate URL-encodes it for MPS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OssObject {
    /// OSS location, `oss-<region>`, e.g. `oss-cn-shanghai`.
    #[schema(example = "oss-cn-shanghai")]
    pub location: String,
    /// Bucket name (3 to 63 of `a-z 0-9 -`).
    #[schema(example = "media")]
    pub bucket: String,
    /// Raw object key, 1 to 1023 UTF-8 bytes, no CR/LF. Placeholders such as `{Count}` stay raw.
    #[schema(example = "uploads/clip 01.mp4")]
    pub object: String,
}

impl OssObject {
    /// The region id of its location: `oss-cn-beijing` → `cn-beijing`.
    pub fn region(&self) -> &str {
        self.location.strip_prefix("oss-").unwrap_or(&self.location)
    }
}

/// Frame selection: `normal` (exact time) or `intra` (nearest keyframe, MPS's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FrameType {
    Normal,
    Intra,
}

impl FrameType {
    pub fn as_str(self) -> &'static str {
        match self {
            FrameType::Normal => "normal",
            FrameType::Intra => "intra",
        }
    }
}

/// Sprite (tiled image) settings: MPS `TileOut` and `TileOutputFile`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpriteSpec {
    pub output: OssObject,
    /// Rows, 1 to 1000 (default 10).
    pub lines: u32,
    /// Columns, 1 to 1000 (default 10).
    pub columns: u32,
    /// Cell width in pixels (default: the snapshot width).
    pub cell_width: Option<u32>,
    /// Cell height in pixels (default: the snapshot height).
    pub cell_height: Option<u32>,
    /// Outer margin in pixels (default 0).
    pub margin: u32,
    /// Spacing between cells in pixels (default 0).
    pub padding: u32,
    /// Background colour: a keyword, `#RRGGBB` or `random` (default `black`).
    pub color: String,
    /// Keep the single cell images (default true).
    pub keep_cells: bool,
    /// MPS `CellSelStep`: use every Nth snapshot (semantics unconfirmed by MPS docs).
    pub cell_step: Option<u32>,
}

/// WebVTT output (MPS `Format=vtt`, `SubOut.IsSptFrag`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebVttSpec {
    /// Tile the WebVTT thumbnails into the sprite (needs `sprite`).
    pub sprite: bool,
}

/// A validated, normalized snapshot job request: defaults are filled in, so what is stored is
/// exactly what is sent to MPS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    pub input: OssObject,
    pub output: OssObject,
    /// Time of the (first) snapshot in **milliseconds** (MPS `Time`), default 0.
    pub time_ms: u64,
    /// Seconds between snapshots (MPS `Interval`); 0 spreads `num` evenly over the video.
    pub interval_s: Option<u64>,
    /// Number of snapshots (MPS `Num`).
    pub num: Option<u64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub frame_type: FrameType,
    /// Black-frame filter level, 30 to 100.
    pub black_level: Option<u32>,
    pub sprite: Option<SpriteSpec>,
    pub webvtt: Option<WebVttSpec>,
    /// MPS pipeline (queue) id; the gateway's default pipeline when absent.
    pub pipeline_id: Option<String>,
    /// Free text for the team; sent to MPS after the gateway's job id in `UserData`.
    pub user_data: Option<String>,
}

impl JobRequest {
    /// The MPS region the job goes to: its input bucket's (`oss-cn-beijing` → `cn-beijing`).
    pub fn region(&self) -> &str {
        self.input.region()
    }

    /// MPS works asynchronously when `Num` or `Interval` is set (docs/mps/API.md §1.4).
    pub fn is_async(&self) -> bool {
        self.num.is_some() || self.interval_s.is_some()
    }

    /// More than one snapshot can result: `Num > 1`, or `Interval` without `Num` (docs/mps/API.md §1.4).
    pub fn is_multi(&self) -> bool {
        match (self.num, self.interval_s) {
            (Some(n), _) => n > 1,
            (None, Some(_)) => true,
            (None, None) => false,
        }
    }
}

/// A rule the request breaks. `field` is a JSON pointer into the request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Violation {
    #[schema(example = "/width")]
    pub field: String,
    #[schema(example = "out_of_range")]
    pub code: String,
    pub message: String,
}

/// Something MPS would silently ignore or that is likely a mistake; the job is still accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Warning {
    #[schema(example = "/black_level")]
    pub field: String,
    #[schema(example = "black_level_ignored")]
    pub code: String,
    pub message: String,
}

// ---- The job as recorded: what every layer above the store reads. ----

/// Why a delivery attempt failed, as kept in `last_error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// MPS error code (e.g. `Throttling.User`) or a snapgate code (`Transport.OutcomeUnknown`).
    pub code: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

/// What MPS last said about a job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MpsStatus {
    pub job_id: Option<String>,
    /// MPS's own state: `Submitted`, `Snapshoting`, `Success` or `Fail`.
    pub state: Option<String>,
    pub request_id: Option<String>,
    pub count: Option<u64>,
    pub tile_count: Option<u64>,
    pub code: Option<String>,
    pub message: Option<String>,
    /// The raw `SnapshotJob` object of the latest response, as MPS sent it (passed through to
    /// answers unparsed).
    pub response: Option<RawJson>,
}

/// Serialized as the data of the job's webhook events (`store/webhooks.rs`), rendered for
/// teams by the REST API's job renderer when sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub team: String,
    pub state: JobState,
    pub request: JobRequest,
    pub warnings: Vec<Warning>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub attempts: u32,
    pub last_error: Option<JobError>,
    pub mps: MpsStatus,
    /// When MPS accepted the job.
    pub submitted_at: Option<DateTime<Utc>>,
    /// The preset (`name@version`) the request was resolved from.
    pub preset: Option<String>,
    /// The failed job this one was made from (`POST /v1/snapshot-jobs/{id}/retry`).
    #[serde(default)]
    pub retry_of: Option<JobId>,
    /// The job made from this one when it was retried (at most one).
    #[serde(default)]
    pub retried_by: Option<JobId>,
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub team: String,
    pub request: JobRequest,
    pub warnings: Vec<Warning>,
    pub created_at: DateTime<Utc>,
    /// The preset (`name@version`) the request was resolved from.
    pub preset: Option<String>,
}

impl NewJob {
    /// The job as recorded: `queued`, due at once, nothing sent yet.
    pub fn into_queued(self) -> Job {
        Job {
            id: self.id,
            team: self.team,
            state: JobState::Queued,
            request: self.request,
            warnings: self.warnings,
            created_at: self.created_at,
            updated_at: self.created_at,
            attempts: 0,
            last_error: None,
            mps: MpsStatus::default(),
            submitted_at: None,
            preset: self.preset,
            retry_of: None,
            retried_by: None,
        }
    }
}
