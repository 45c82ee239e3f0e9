//! The shapes the API answers with for jobs, shared by every route that shows a job (REST,
//! the MPS-compatible endpoint's dry run, the job cache, webhook payloads): the job, its MPS
//! status and error, its outputs, and the dry run. Renderers only: no handler and no state, so
//! every handler file and cache can use them without importing each other.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use crate::domain::outputs::OutputManifest;
use crate::domain::{Job, MpsStatus};
use crate::domain::{JobId, JobRequest, JobState, OssObject, Warning};
use crate::services::jobs::Preview;
use crate::services::outputs::{Basis, OutputService};

/// A snapshot job as snapgate knows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobResource {
    #[schema(value_type = String, format = Uuid)]
    pub id: JobId,
    pub team: String,
    pub state: JobState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The normalized request: defaults filled in, exactly what is sent to MPS.
    pub request: JobRequest,
    pub warnings: Vec<Warning>,
    pub mps: MpsStatusResource,
    /// Submission attempts made so far.
    pub attempts: u32,
    pub last_error: Option<JobErrorResource>,
    /// What the job produced, once it has succeeded: every snapshot, sprite sheet and WebVTT
    /// file with its key and URL (`source` and `predicted` say how each value is known).
    pub outputs: Option<OutputsResource>,
    /// The preset (`name@version`) the request was resolved from, if any.
    pub preset: Option<String>,
    /// The failed job this one was made from (`POST /v1/snapshot-jobs/{id}/retry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub retry_of: Option<JobId>,
    /// The job made from this one by a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub retried_by: Option<JobId>,
}

/// What MPS last said about a job.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[schema(as = MpsStatus)]
pub struct MpsStatusResource {
    pub job_id: Option<String>,
    /// MPS's own state: `Submitted`, `Snapshoting`, `Success` or `Fail`.
    pub state: Option<String>,
    pub request_id: Option<String>,
    pub count: Option<u64>,
    pub tile_count: Option<u64>,
    pub code: Option<String>,
    pub message: Option<String>,
    /// The raw `SnapshotJob` object of the latest response, as MPS sent it.
    #[schema(value_type = Option<Object>)]
    pub response: Option<crate::domain::RawJson>,
}

impl From<MpsStatus> for MpsStatusResource {
    fn from(m: MpsStatus) -> Self {
        MpsStatusResource {
            job_id: m.job_id,
            state: m.state,
            request_id: m.request_id,
            count: m.count,
            tile_count: m.tile_count,
            code: m.code,
            message: m.message,
            response: m.response,
        }
    }
}

/// Why a delivery attempt failed, as kept in `last_error`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = JobError)]
pub struct JobErrorResource {
    /// MPS error code (e.g. `Throttling.User`) or a snapgate code (`Transport.OutcomeUnknown`).
    pub code: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

impl JobResource {
    pub fn new(j: Job, outputs: &OutputService) -> Self {
        let manifest = outputs.manifest(&j).map(|m| {
            let (page, _) = OutputsResource::page(&m, outputs, j.id, 0, outputs.max_listed());
            page
        });
        JobResource {
            id: j.id,
            team: j.team,
            state: j.state,
            created_at: j.created_at,
            updated_at: j.updated_at,
            request: j.request,
            warnings: j.warnings,
            mps: j.mps.into(),
            attempts: j.attempts,
            last_error: j.last_error.map(|e| JobErrorResource {
                code: e.code,
                message: e.message,
                at: e.at,
            }),
            outputs: manifest,
            preset: j.preset,
            retry_of: j.retry_of,
            retried_by: j.retried_by,
        }
    }
}

/// `SubmitSnapshotJob`'s own parameters, named and valued exactly as sent (the common
/// parameters, the signature and the key are added by the client).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = MpsSubmitParams)]
pub struct MpsParamsResource {
    /// `SubmitSnapshotJob`.
    pub action: String,
    /// The `Input` JSON text (object key URL-encoded).
    pub input: String,
    /// The `SnapshotConfig` JSON text.
    pub snapshot_config: String,
    pub pipeline_id: Option<String>,
    /// The gateway job id MPS is given; a real submit gets a new id.
    pub user_data: Option<String>,
}

/// What submitting the request would do, with nothing recorded.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = DryRun)]
pub struct DryRunResource {
    /// Always `true`: nothing was recorded or sent.
    pub dry_run: bool,
    /// The normalized request.
    pub request: JobRequest,
    pub warnings: Vec<Warning>,
    pub mps: MpsParamsResource,
    /// The input's duration the prediction used.
    pub duration_ms: Option<u64>,
    /// `request` (`duration_ms` given) or `probe` (ffprobe on the local store); `null`: unknown.
    pub duration_source: Option<String>,
    /// The predicted snapshot times, ms (`null` entries: not knowable without the duration).
    pub snapshot_times_ms: Option<Vec<Option<u64>>>,
    /// The predicted outputs; `null` when they cannot be listed (snapshots every `interval_s`
    /// to an end that is unknown without the duration).
    pub outputs: Option<OutputsResource>,
}

impl DryRunResource {
    pub fn new(p: Preview, outputs: &OutputService) -> Self {
        DryRunResource {
            dry_run: true,
            mps: MpsParamsResource {
                action: "SubmitSnapshotJob".into(),
                input: p.params.input,
                snapshot_config: p.params.snapshot_config,
                pipeline_id: p.params.pipeline_id,
                user_data: p.params.user_data,
            },
            duration_ms: p.duration_ms,
            duration_source: p.duration_source.map(|s| s.as_str().to_string()),
            snapshot_times_ms: p
                .outputs
                .as_ref()
                .map(|m| m.snapshots.iter().map(|s| s.time_ms).collect()),
            outputs: p.outputs.as_ref().map(|m| OutputsResource::all(m, outputs)),
            request: p.request,
            warnings: p.warnings,
        }
    }
}

/// An output object and where to fetch it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = OutputFile)]
pub struct OutputFileResource {
    pub location: String,
    pub bucket: String,
    /// The expanded, raw object key (placeholders replaced, not URL-encoded).
    pub object: String,
    /// `https://<bucket>.<location>.aliyuncs.com/<key>` on OSS (presigned when
    /// `outputs.presign_ttl_s` is set), or the embedded emulator's local store URL.
    pub url: String,
}

/// One snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = SnapshotOutput)]
pub struct SnapshotResource {
    /// The `{Count}` number, from 1.
    pub count: u64,
    /// `null` when single images are not kept (`sprite.keep_cells = false`).
    pub file: Option<OutputFileResource>,
    /// Time in the input, ms (`null` when it cannot be known).
    pub time_ms: Option<u64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// One sprite sheet: `rows` × `columns` cells of `cell_width` × `cell_height`, `margin` around
/// the grid and `padding` between cells; the pixel size is `2·margin + columns·cell_width +
/// (columns − 1)·padding` wide, rows alike (a partial last sheet keeps the full grid).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = SpriteSheetOutput)]
pub struct SpriteSheetResource {
    /// The `{TileCount}` number, from 1.
    pub count: u64,
    pub file: OutputFileResource,
    pub rows: u32,
    pub columns: u32,
    pub cell_width: Option<u32>,
    pub cell_height: Option<u32>,
    pub margin: u32,
    pub padding: u32,
    pub color: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The `count` of each snapshot in its cells, in cell order (row-major).
    pub snapshots: Vec<u64>,
}

/// Everything a job produced (or, in a dry run, would produce).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Outputs)]
pub struct OutputsResource {
    /// `local_engine`: the embedded emulator ran the job with ffmpeg and reported every value;
    /// `predicted`: worked out from the request and MPS's `Count`/`TileCount` (real MPS reports
    /// no times, keys or sizes), or in a dry run from the input's duration;
    /// `emulator_simulated`: the emulator had no engine, no file exists.
    pub source: String,
    /// Times, keys and sizes are predicted, not reported.
    pub predicted: bool,
    /// No file exists (the emulator simulated the job).
    pub simulated: bool,
    pub snapshots: Vec<SnapshotResource>,
    pub sprites: Vec<SpriteSheetResource>,
    /// The WebVTT file MPS writes (`webvtt` requested).
    pub webvtt: Option<OutputFileResource>,
    /// How many outputs there are in all (snapshots and sprite sheets).
    pub total: u64,
    /// Only some of them are listed here (a job's answer lists at most `outputs.max_listed`;
    /// a page of `/outputs` at most its `limit`): `next` lists the following ones.
    pub truncated: bool,
    /// The cursor of the next page of `GET /v1/snapshot-jobs/{id}/outputs`; `null` at the end.
    pub next_cursor: Option<String>,
    /// That page's path (`/v1/snapshot-jobs/{id}/outputs?cursor=…`); `null` at the end.
    pub next: Option<String>,
}

impl OutputsResource {
    /// The outputs `from` to `from + limit` (snapshots first, then sprite sheets; the WebVTT
    /// file on every page) of job `id`, with the cursor of the rest: the offset after them.
    pub fn page(
        m: &OutputManifest,
        links: &OutputService,
        id: JobId,
        from: usize,
        limit: usize,
    ) -> (Self, Option<usize>) {
        let (n_snap, n_sprite) = (m.snapshots.len(), m.sprites.len());
        let total = n_snap + n_sprite;
        let end = from.saturating_add(limit).min(total);
        let mut r = Self::new(m, links, from.min(n_snap)..end.min(n_snap), {
            let s = from.saturating_sub(n_snap).min(n_sprite);
            s..end.saturating_sub(n_snap).min(n_sprite).max(s)
        });
        let next = (end < total).then_some(end);
        r.total = total as u64;
        r.truncated = next.is_some() || from > 0;
        r.next_cursor = next.map(|c| c.to_string());
        r.next = next.map(|c| format!("/v1/snapshot-jobs/{id}/outputs?cursor={c}"));
        (r, next)
    }

    /// Every output.
    pub fn all(m: &OutputManifest, links: &OutputService) -> Self {
        let mut r = Self::new(m, links, 0..m.snapshots.len(), 0..m.sprites.len());
        r.total = (m.snapshots.len() + m.sprites.len()) as u64;
        r
    }

    fn new(
        m: &OutputManifest,
        links: &OutputService,
        snapshots: std::ops::Range<usize>,
        sprites: std::ops::Range<usize>,
    ) -> Self {
        let file = |o: &OssObject| OutputFileResource {
            location: o.location.clone(),
            bucket: o.bucket.clone(),
            object: o.object.clone(),
            url: links.url(o),
        };
        OutputsResource {
            source: Basis::of(m).as_str().to_string(),
            predicted: m.predicted,
            simulated: m.simulated,
            snapshots: m.snapshots[snapshots]
                .iter()
                .map(|s| SnapshotResource {
                    count: s.count,
                    file: s.file.as_ref().map(file),
                    time_ms: s.time_ms,
                    width: s.width,
                    height: s.height,
                })
                .collect(),
            sprites: m.sprites[sprites]
                .iter()
                .map(|s| SpriteSheetResource {
                    count: s.count,
                    file: file(&s.file),
                    rows: s.rows,
                    columns: s.columns,
                    cell_width: s.cell_width,
                    cell_height: s.cell_height,
                    margin: s.margin,
                    padding: s.padding,
                    color: s.color.clone(),
                    width: s.width,
                    height: s.height,
                    snapshots: s
                        .snapshots
                        .iter()
                        .filter_map(|&i| m.snapshots.get(i).map(|x| x.count))
                        .collect(),
                })
                .collect(),
            webvtt: m.webvtt.as_ref().map(file),
            total: 0,
            truncated: false,
            next_cursor: None,
            next: None,
        }
    }
}

/// The job id of a path; also the `job_id` of the request's span (logs, traces).
pub fn path_job_id(id: &str) -> Result<JobId, ApiError> {
    let id = JobId::parse(id).ok_or(ApiError::MalformedJobId)?;
    tracing::Span::current().record("job_id", tracing::field::display(id));
    Ok(id)
}
