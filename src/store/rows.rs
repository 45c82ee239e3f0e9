//! The row types the shared statements and the per-database claims both read: a job and a
//! claimed job, decoded from either database.

use serde_json::value::RawValue;
use sqlx::types::Json;
use sqlx::FromRow;

use super::codec::{DbId, DbTime};
use super::{ClaimKey, DispatchClaim, StoreError, StoreResult};
use crate::domain::{Job, JobError, MpsStatus};
use crate::domain::{JobId, JobRequest, JobState, Warning};

/// The columns of a [`JobRow`], in order.
pub(super) const JOB_COLUMNS: &[&str] = &[
    "id",
    "team",
    "state",
    "request",
    "warnings",
    "created_at",
    "updated_at",
    "attempts",
    "last_error",
    "mps_job_id",
    "mps_state",
    "mps_request_id",
    "mps_count",
    "mps_tile_count",
    "mps_code",
    "mps_message",
    "mps_response",
    "submitted_at",
    "preset",
    "retry_of",
    "retried_by",
];

/// The job columns as a select list, each prefixed by `table.` when given.
pub(super) fn job_columns(table: Option<&str>) -> String {
    JOB_COLUMNS
        .iter()
        .map(|c| match table {
            Some(t) => format!("{t}.{c}"),
            None => (*c).to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(FromRow)]
pub struct JobRow {
    id: DbId,
    team: String,
    state: String,
    request: Json<JobRequest>,
    warnings: Json<Vec<Warning>>,
    created_at: DbTime,
    updated_at: DbTime,
    attempts: i32,
    last_error: Option<Json<JobError>>,
    mps_job_id: Option<String>,
    mps_state: Option<String>,
    mps_request_id: Option<String>,
    mps_count: Option<i64>,
    mps_tile_count: Option<i64>,
    mps_code: Option<String>,
    mps_message: Option<String>,
    mps_response: Option<Json<Box<RawValue>>>,
    submitted_at: Option<DbTime>,
    preset: Option<String>,
    retry_of: Option<DbId>,
    retried_by: Option<DbId>,
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;

    fn try_from(r: JobRow) -> StoreResult<Job> {
        Ok(Job {
            id: JobId(r.id.0),
            state: JobState::parse(&r.state)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown state {}", r.state)))?,
            team: r.team,
            request: r.request.0,
            warnings: r.warnings.0,
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
            attempts: r.attempts as u32,
            last_error: r.last_error.map(|j| j.0),
            mps: MpsStatus {
                job_id: r.mps_job_id,
                state: r.mps_state,
                request_id: r.mps_request_id,
                count: r.mps_count.map(|c| c as u64),
                tile_count: r.mps_tile_count.map(|c| c as u64),
                code: r.mps_code,
                message: r.mps_message,
                response: r.mps_response.map(|j| j.0.into()),
            },
            submitted_at: r.submitted_at.map(|t| t.0),
            preset: r.preset,
            retry_of: r.retry_of.map(|i| JobId(i.0)),
            retried_by: r.retried_by.map(|i| JobId(i.0)),
        })
    }
}

pub(super) fn jobs(rows: Vec<JobRow>) -> StoreResult<Vec<Job>> {
    rows.into_iter().map(Job::try_from).collect()
}

/// A claimed job with what the queue knew before the claim.
#[derive(FromRow)]
pub struct ClaimRow {
    #[sqlx(flatten)]
    job: JobRow,
    claim_token: Option<DbId>,
    prior_attempts: i32,
    prev_started: Option<DbTime>,
    mps_pipeline_id: Option<String>,
}

impl ClaimRow {
    pub(super) fn job_id(&self) -> DbId {
        self.job.id
    }
}

impl TryFrom<ClaimRow> for DispatchClaim {
    type Error = StoreError;

    fn try_from(r: ClaimRow) -> StoreResult<DispatchClaim> {
        let token = r
            .claim_token
            .ok_or_else(|| StoreError::Corrupt("a claim without its token".into()))?;
        Ok(DispatchClaim {
            key: ClaimKey {
                job_id: JobId(r.job.id.0),
                token: token.0,
            },
            job: r.job.try_into()?,
            attempts: r.prior_attempts as u32,
            attempt_started_at: r.prev_started.map(|t| t.0),
            pipeline_sent: r.mps_pipeline_id,
        })
    }
}
