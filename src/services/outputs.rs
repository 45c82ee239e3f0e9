//! Where a job's outputs are, and how to reach them: the one service behind `outputs` in job
//! answers, the storyboard routes and the dry run's predicted outputs.
//!
//! - The manifest of a job: the embedded emulator's own report when the stored MPS response
//!   carries one (its `Emulator.outputs`: the local engine's real times, keys and sizes, or a
//!   simulation, which says so), else predicted by `domain::outputs::predict` from the request
//!   and what MPS reported (`Count`, `TileCount`). Real MPS reports no times, keys or sizes, so
//!   there every one of them is predicted and the manifest says `predicted`.
//! - Links: real OSS (`https://<bucket>.<location>.aliyuncs.com/<key>`, optionally presigned
//!   with the OSS V1 query signature, `oss::v1::Presigner`), or the embedded emulator's local store (path-style
//!   `http://<emulator.listen>/<bucket>/<key>`).
//! - Input durations (dry run, storyboards): `ffprobe` on the local store when the input is
//!   there, behind [`InputProbe`] so tests can swap it.

use std::sync::Arc;

use serde::Deserialize;

use crate::domain::outputs::{self, Known, OutputManifest, Storyboard, UrlStyle};
use crate::domain::Job;
use crate::domain::{JobRequest, JobState, OssObject};
pub use crate::oss::v1::Presigner;

/// Tells how long an input video is, when it can be known.
#[async_trait::async_trait]
pub trait InputProbe: Send + Sync {
    async fn duration_ms(&self, input: &OssObject) -> Option<u64>;
}

/// How output URLs are made.
#[derive(Debug, Clone)]
pub enum Links {
    /// Real OSS; presigned when a presigner is set.
    Oss { presign: Option<Presigner> },
    /// The embedded emulator's local store at `base` (`http://127.0.0.1:8081`).
    Local { base: String },
}

/// Where a manifest's values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The embedded emulator's local engine ran the job and reported every value.
    LocalEngine,
    /// The emulator simulated the job: no files exist.
    Simulated,
    /// Worked out from the request and MPS's `Count`/`TileCount` (or, in a dry run, the
    /// input's duration).
    Predicted,
}

impl Basis {
    pub fn of(m: &OutputManifest) -> Self {
        if m.simulated {
            Basis::Simulated
        } else if m.predicted {
            Basis::Predicted
        } else {
            Basis::LocalEngine
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Basis::LocalEngine => "local_engine",
            Basis::Simulated => "emulator_simulated",
            Basis::Predicted => "predicted",
        }
    }
}

/// Why a job has no storyboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoryboardError {
    /// The job asked for no sprite.
    NoSprite,
    /// The job has not succeeded (yet).
    NotSucceeded(JobState),
    /// A value the storyboard needs is unknown.
    Unknown(&'static str),
}

/// How storyboard cues name their images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CueUrls {
    /// Full URLs (presigned on OSS when configured; the local store's on the embedded default).
    Absolute,
    /// Relative to the job's WebVTT object (or, without one, to `storyboard.vtt` beside the
    /// first sprite sheet): for a VTT stored next to the images.
    Relative,
}

pub struct OutputService {
    links: Links,
    probe: Option<Arc<dyn InputProbe>>,
    max_listed: usize,
}

impl OutputService {
    pub fn new(links: Links, probe: Option<Arc<dyn InputProbe>>) -> Self {
        Self {
            links,
            probe,
            max_listed: usize::MAX,
        }
    }

    /// Answers list at most `n` outputs (`outputs.max_listed`); the rest are paged.
    pub fn with_max_listed(mut self, n: usize) -> Self {
        self.max_listed = n.max(1);
        self
    }

    /// How many outputs a job's answer lists at most.
    pub fn max_listed(&self) -> usize {
        self.max_listed
    }

    pub fn links(&self) -> &Links {
        &self.links
    }

    /// Whether a job's output URLs are the same at every read (not presigned with an expiry):
    /// then a final job's encoded answer can be kept.
    pub fn urls_are_stable(&self) -> bool {
        !matches!(self.links, Links::Oss { presign: Some(_) })
    }

    /// The URL of an output file.
    pub fn url(&self, o: &OssObject) -> String {
        match &self.links {
            Links::Local { base } => UrlStyle::PathStyle(base.clone()).url(o),
            Links::Oss { presign: None } => outputs::oss_url(o),
            Links::Oss { presign: Some(p) } => {
                p.get_url(o, crate::clock::now().timestamp() + p.ttl_s as i64)
            }
        }
    }

    /// What a succeeded job produced (see the module docs); `None` before that, for a failed
    /// job, or when MPS reported no `Count`.
    pub fn manifest(&self, job: &Job) -> Option<OutputManifest> {
        if job.state != JobState::Succeeded {
            return None;
        }
        /// The emulator's own record of what it made (`Emulator.outputs`), read without
        /// decoding the rest of the response.
        #[derive(Deserialize)]
        struct Emulated {
            outputs: Option<OutputManifest>,
        }
        let reported = job
            .mps
            .response
            .as_ref()
            .and_then(|r| r.field::<Emulated>("Emulator"))
            .and_then(|e| e.outputs);
        if let Some(m) = reported {
            return Some(m);
        }
        let count = job.mps.count?;
        // Snapshots every `step` from `time_ms`: `count` of them end before `time_ms +
        // count·step`, so the plan need not be listed to its cap and cut (a list of jobs stays
        // cheap). The times themselves are unchanged.
        let r = &job.request;
        let step_ms = match (r.num, r.interval_s) {
            (Some(n), _) if n <= 1 => None,
            (_, Some(0)) => None,
            (_, Some(i)) => Some(i.saturating_mul(1000)),
            (Some(_), None) => Some(outputs::DEFAULT_INTERVAL_S * 1000),
            (None, None) => None,
        };
        let duration_ms = step_ms.map(|s| r.time_ms.saturating_add(count.saturating_mul(s)));
        Some(outputs::predict(
            r,
            &Known {
                duration_ms,
                count: Some(count),
                tile_count: job.mps.tile_count,
                ..Known::default()
            },
        ))
    }

    /// What a job would produce from an input of `duration_ms` (dry run); `None` when that
    /// cannot be listed (snapshots every `interval_s` to an unknown end).
    pub fn predict(&self, r: &JobRequest, duration_ms: Option<u64>) -> Option<OutputManifest> {
        if duration_ms.is_none() && r.num.is_none() && r.interval_s.is_some_and(|i| i > 0) {
            return None;
        }
        Some(outputs::predict(
            r,
            &Known {
                duration_ms,
                ..Known::default()
            },
        ))
    }

    /// The input's duration from the local store, if it is there.
    pub async fn probe_duration(&self, input: &OssObject) -> Option<u64> {
        self.probe.as_ref()?.duration_ms(input).await
    }

    /// The storyboard of a succeeded job with sprites. The video's duration (the last cue's end)
    /// is `duration_ms` if given, else probed on the local store, else the last snapshot's time
    /// plus one interval (MPS reports no duration).
    pub async fn storyboard(
        &self,
        job: &Job,
        duration_ms: Option<u64>,
        urls: CueUrls,
    ) -> Result<Storyboard, StoryboardError> {
        if job.request.sprite.is_none() {
            return Err(StoryboardError::NoSprite);
        }
        if job.state != JobState::Succeeded {
            return Err(StoryboardError::NotSucceeded(job.state));
        }
        let m = self
            .manifest(job)
            .ok_or(StoryboardError::Unknown("MPS reported no snapshot count"))?;
        let duration = match duration_ms {
            Some(d) => Some(d),
            None => self.probe_duration(&job.request.input).await,
        }
        .or_else(|| end_after_last(&job.request, &m))
        .ok_or(StoryboardError::Unknown(
            "the video's duration is unknown; pass duration_ms",
        ))?;
        let style = match (urls, &self.links) {
            (CueUrls::Relative, _) => UrlStyle::RelativeTo(relative_base(&m)),
            (CueUrls::Absolute, Links::Local { base }) => UrlStyle::PathStyle(base.clone()),
            (CueUrls::Absolute, Links::Oss { .. }) => UrlStyle::Oss,
        };
        let mut sb = outputs::storyboard(&m, duration, true, &style).ok_or(
            StoryboardError::Unknown(
                "a snapshot time or the cell size is unknown (set sprite.cell_width and cell_height, or width and height)",
            ),
        )?;
        if let (CueUrls::Absolute, Links::Oss { presign: Some(_) }) = (urls, &self.links) {
            // One signature per image, the same in every cue of that image.
            let files: Vec<&OssObject> = m.sprites.iter().map(|s| &s.file).collect();
            let signed: Vec<(String, String)> = files
                .iter()
                .map(|o| (outputs::oss_url(o), self.url(o)))
                .collect();
            let swap = |u: &mut String| {
                if let Some((_, s)) = signed.iter().find(|(plain, _)| plain == u) {
                    *u = s.clone();
                }
            };
            swap(&mut sb.url);
            for t in &mut sb.tiles {
                swap(&mut t.url);
            }
        }
        Ok(sb)
    }
}

/// The object relative cue URLs are relative to.
fn relative_base(m: &OutputManifest) -> OssObject {
    if let Some(v) = &m.webvtt {
        return v.clone();
    }
    let first = &m.sprites[0].file;
    let dir = match first.object.rfind('/') {
        Some(i) => &first.object[..=i],
        None => "",
    };
    OssObject {
        location: first.location.clone(),
        bucket: first.bucket.clone(),
        object: format!("{dir}storyboard.vtt"),
    }
}

/// Without a known duration: the last snapshot's time plus one interval (the video ended
/// before another snapshot was due, or `Num` was reached).
fn end_after_last(r: &JobRequest, m: &OutputManifest) -> Option<u64> {
    let last = m.snapshots.iter().filter_map(|s| s.time_ms).max()?;
    let step_ms = match (r.num, r.interval_s) {
        (_, Some(i)) if i > 0 => i * 1000,
        (Some(n), None) if n > 1 => outputs::DEFAULT_INTERVAL_S * 1000,
        _ => 1000,
    };
    Some(last + step_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MpsStatus;
    use crate::domain::{validate_request, JobId};
    use crate::secret::Secret;
    use serde_json::json;

    fn job(body: serde_json::Value, mps: MpsStatus) -> Job {
        let (request, warnings) = validate_request(&body).unwrap();
        Job {
            id: JobId::new(),
            team: "default".into(),
            state: JobState::Succeeded,
            request,
            warnings,
            created_at: crate::clock::now(),
            updated_at: crate::clock::now(),
            attempts: 1,
            last_error: None,
            mps,
            submitted_at: None,
            preset: None,
            retry_of: None,
            retried_by: None,
        }
    }

    fn presigned() -> OutputService {
        OutputService::new(
            Links::Oss {
                presign: Some(Presigner::with_key(
                    "LTAI5tEXAMPLE",
                    Secret::new("EXAMPLESECRETKEY0123456789abcdef"),
                    600,
                )),
            },
            None,
        )
    }

    /// Real MPS: only `Count` and `TileCount` are reported; everything else is predicted, and
    /// an open-ended interval is listed only to the count.
    #[tokio::test]
    async fn real_mps_manifest_is_predicted_from_the_count() {
        let o = |k: &str| json!({"location": "oss-cn-shanghai", "bucket": "media", "object": k});
        let j = job(
            json!({"input": o("v/a.mp4"), "output": o("t/{Count}.jpg"), "time_ms": 500, "interval_s": 5,
                   "width": 160, "height": 90,
                   "sprite": {"output": o("s/{TileCount}.jpg"), "lines": 1, "columns": 2}}),
            MpsStatus {
                count: Some(3),
                tile_count: Some(2),
                state: Some("Success".into()),
                response: Some(json!({"Id": "x", "State": "Success", "Count": "3"}).into()),
                ..MpsStatus::default()
            },
        );
        let svc = presigned();
        let m = svc.manifest(&j).unwrap();
        assert!(m.predicted && !m.simulated);
        assert_eq!(Basis::of(&m), Basis::Predicted);
        let times: Vec<Option<u64>> = m.snapshots.iter().map(|s| s.time_ms).collect();
        assert_eq!(times, [Some(500), Some(5500), Some(10_500)]);
        assert_eq!(m.sprites.len(), 2);
        let url = svc.url(m.snapshots[0].file.as_ref().unwrap());
        assert!(
            url.starts_with("https://media.oss-cn-shanghai.aliyuncs.com/t/00001.jpg?OSSAccessKeyId=LTAI5tEXAMPLE&Expires="),
            "{url}"
        );
        // The storyboard: presigned sheet URLs, the end one interval after the last snapshot.
        let sb = svc.storyboard(&j, None, CueUrls::Absolute).await.unwrap();
        assert_eq!(sb.duration, 15.5);
        assert!(
            sb.tiles[2].url.contains("/s/00002.jpg?OSSAccessKeyId="),
            "{sb:?}"
        );
        assert_eq!((sb.tiles[1].x, sb.tiles[1].y), (160, 0));
        let rel = svc
            .storyboard(&j, Some(12_000), CueUrls::Relative)
            .await
            .unwrap();
        assert_eq!(rel.tiles[0].url, "00001.jpg");
        assert_eq!(rel.tiles[2].end, 12.0);
        // Not succeeded, no count, no sprite.
        let mut queued = j.clone();
        queued.state = JobState::Snapshotting;
        assert!(svc.manifest(&queued).is_none());
        assert_eq!(
            svc.storyboard(&queued, None, CueUrls::Absolute).await,
            Err(StoryboardError::NotSucceeded(JobState::Snapshotting))
        );
        let mut plain = j.clone();
        plain.request.sprite = None;
        assert_eq!(
            svc.storyboard(&plain, None, CueUrls::Absolute).await,
            Err(StoryboardError::NoSprite)
        );
    }
}
