//! A gateway job in MPS's `SnapshotJob` shape (docs/mps/API.md §1.6), as the official SDK models read it:
//! every scalar a string, MPS's state names, and no member the models lack (the request's
//! `BlackLevel`, `Format` and `SubOut` are not echoed: the response models have no such fields).
//!
//! `Id` is snapgate's job id (the one `GET /v1/snapshot-jobs/{id}` takes), never MPS's; `UserData`
//! is the team's own, unchanged; `Input` and `SnapshotConfig` are what snapgate sends MPS
//! (`mps/params.rs`), object keys URL-encoded as MPS echoes them.

use serde_json::{json, Map, Value};

use crate::crypto::percent_encode;
use crate::domain::Job;
use crate::domain::JobState;
use crate::mps::params;

/// `SnapshotConfig` members of the SDK response models.
const CONFIG_MEMBERS: &[&str] = &[
    "OutputFile",
    "Time",
    "Interval",
    "Num",
    "Width",
    "Height",
    "FrameType",
    "TileOutputFile",
    "TileOut",
];

/// MPS's name for the job's state: a job still queued in snapgate shows `Submitted`.
pub fn mps_state(job: &Job) -> &'static str {
    match job.state {
        JobState::Queued | JobState::Submitted => "Submitted",
        JobState::Snapshotting => "Snapshoting",
        JobState::Succeeded => "Success",
        JobState::Failed => "Fail",
    }
}

pub fn snapshot_job(job: &Job, default_pipeline: Option<&str>) -> Value {
    let r = &job.request;
    let mut config = match params::snapshot_config(r) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    config.retain(|k, _| CONFIG_MEMBERS.contains(&k.as_str()));
    let mut j = Map::new();
    j.insert("Id".into(), json!(job.id.to_string()));
    j.insert("State".into(), json!(mps_state(job)));
    if job.state == JobState::Failed {
        // MPS's own verdict, or why snapgate gave up delivering the job.
        let (code, message) = match (&job.mps.code, &job.last_error) {
            (Some(c), _) => (c.clone(), job.mps.message.clone().unwrap_or_default()),
            (None, Some(e)) => (e.code.clone(), e.message.clone()),
            (None, None) => ("InternalError".into(), String::new()),
        };
        j.insert("Code".into(), json!(code));
        j.insert("Message".into(), json!(message));
    }
    if let Some(c) = job.mps.count {
        j.insert("Count".into(), json!(c.to_string()));
    }
    if let Some(c) = job.mps.tile_count {
        j.insert("TileCount".into(), json!(c.to_string()));
    }
    j.insert(
        "CreationTime".into(),
        json!(crate::mps::wire::format_time(job.created_at)),
    );
    let reported = job
        .mps
        .response
        .as_ref()
        .and_then(|r| r.field::<String>("PipelineId"))
        .filter(|s| !s.is_empty());
    if let Some(p) = reported
        .as_deref()
        .or(r.pipeline_id.as_deref())
        .or(default_pipeline)
    {
        j.insert("PipelineId".into(), json!(p));
    }
    if let Some(u) = &r.user_data {
        j.insert("UserData".into(), json!(u));
    }
    j.insert(
        "Input".into(),
        json!({"Bucket": r.input.bucket, "Location": r.input.location, "Object": percent_encode(&r.input.object)}),
    );
    j.insert("SnapshotConfig".into(), Value::Object(config));
    Value::Object(j)
}
