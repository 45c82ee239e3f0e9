//! The services: every rule about what may be created or changed lives here, and every entry
//! point (REST, the MPS-compatible endpoint, OSS callbacks, the CLI) is an adapter that parses
//! its transport, calls one service and renders the answer.
//!
//! - `jobs`: submit (validate, record, wait for the dispatch), preview (dry run), cancel.
//! - `presets`: named job templates.
//! - `uploads`: browser upload intents (PostObject forms and multipart uploads), OSS callbacks,
//!   completion; `upload_parts`: the rules of a multipart upload's parts (no I/O).
//! - `outputs`: where a job's images are, storyboards, links.
//! - `webhooks`: endpoints, secrets, deletion, replays.
//! - `keys`: team credentials.
//! - `limits`: per-team request rate, in-flight quota, paused teams.
//! - `lifecycle`: usage, pausing a team, bulk redrive (retention in `worker::purge`).
//!
//! Services write through `store` and wake the worker through `signals`; they never call MPS
//! (the worker does) and never import `http` or `worker`.

pub mod jobs;
pub mod keys;
pub mod lifecycle;
pub mod limits;
pub mod outputs;
pub mod presets;
pub mod upload_parts;
pub mod uploads;
pub mod webhooks;
