//! Validated domain types. No I/O here: the HTTP layer parses into these, the store persists them,
//! the worker turns them into MPS parameters.

pub mod job;
pub mod outputs;
pub mod validate;

pub use job::{JobId, JobRequest, JobState, OssObject, SpriteSpec, Violation, Warning, WebVttSpec};
pub use validate::validate_request;

/// MPS resource ids (pipelines, jobs) are 32 lower-case hex characters
/// (`InvalidParameter.UUIDFormatInvalid`, API.md §4.3).
pub fn is_mps_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The team jobs belong to until team access is configured.
pub const DEFAULT_TEAM: &str = "default";
