//! Validated domain types. No I/O here: the HTTP layer parses into these, the store persists them,
//! the worker turns them into MPS parameters.

pub mod job;
pub mod outputs;
mod raw_json;
pub mod regions;
pub mod rules;
pub mod text;
pub mod user_data;
pub mod validate;

pub use job::{
    Job, JobError, JobId, JobRequest, JobState, MpsStatus, NewJob, OssObject, SpriteSpec,
    Violation, Warning, WebVttSpec,
};
pub use raw_json::RawJson;
pub use validate::validate_request;

pub use rules::is_mps_id;

/// The team jobs belong to until team access is configured.
pub const DEFAULT_TEAM: &str = "default";
