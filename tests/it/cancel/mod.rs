//! Cancellation, in two unrelated senses.
//!
//! - [`endpoint`]: `DELETE /v1/snapshot-jobs/{id}`, the API's cancel of a job;
//! - [`store_calls`]: a store call's future dropped part way leaves its pooled connection clean.

mod endpoint;
mod store_calls;
