//! Final jobs from memory: a `succeeded` or `failed` job never changes (every store write that
//! could change a job is guarded by `state NOT IN ('succeeded', 'failed')` or `state = 'queued'`),
//! so `GET /v1/snapshot-jobs/{id}` keeps the last `http.final_job_cache_entries` of them it
//! read (memory: entries × the answer's size — a few KiB for a job with sprites — so the default
//! 2,000 stays within tens of MiB). The entry holds the job's team, checked on every read exactly as the database query
//! checks it (`team = $caller` unless the caller is an admin), and — when output URLs do not
//! depend on the time of the read (no presigning) — the response body already encoded, so such
//! a read neither touches the database nor encodes JSON.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::auth::Caller;
use super::jobs::JobResource;
use crate::cache::Bounded;
use crate::domain::JobId;
use crate::outputs::OutputService;
use crate::store::Job;

pub struct FinalJobCache {
    entries: Bounded<JobId, Arc<CachedJob>>,
}

pub struct CachedJob {
    team: String,
    answer: Answer,
}

enum Answer {
    /// The encoded resource, the same at every read (only this is kept: it is the smaller).
    Encoded(Bytes),
    /// The job, for URLs made at each read (presigned ones expire).
    Job(Box<Job>),
}

/// What the cache says about one id.
pub enum Cached {
    /// The caller may see it: the answer.
    Hit(Response),
    /// Another team's job: answered like a job that does not exist.
    OtherTeam,
    Miss,
}

impl FinalJobCache {
    /// At most `capacity` jobs; 0 turns the cache off.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Bounded::new(capacity),
        }
    }

    pub fn get(&self, id: JobId, caller: &Caller, outputs: &OutputService) -> Cached {
        let Some(c) = self.entries.get(&id) else {
            return Cached::Miss;
        };
        if !caller.admin && c.team != caller.team {
            return Cached::OtherTeam;
        }
        metrics::counter!("snapgate_final_job_cache_hits_total").increment(1);
        Cached::Hit(c.response(outputs))
    }

    /// Answers `job`, remembering it if it is final.
    pub fn answer(&self, job: Job, outputs: &OutputService) -> Response {
        if !job.state.is_final() || !self.entries.enabled() {
            return axum::Json(JobResource::new(job, outputs)).into_response();
        }
        let (id, team) = (job.id, job.team.clone());
        let answer = if outputs.urls_are_stable() {
            Answer::Encoded(encode(job, outputs))
        } else {
            Answer::Job(Box::new(job))
        };
        let cached = Arc::new(CachedJob { team, answer });
        let response = cached.response(outputs);
        self.entries.insert(id, cached);
        response
    }
}

impl CachedJob {
    fn response(&self, outputs: &OutputService) -> Response {
        let body = match &self.answer {
            Answer::Encoded(b) => b.clone(),
            Answer::Job(job) => encode((**job).clone(), outputs),
        };
        ([(CONTENT_TYPE, "application/json")], body).into_response()
    }
}

fn encode(job: Job, outputs: &OutputService) -> Bytes {
    Bytes::from(serde_json::to_vec(&JobResource::new(job, outputs)).expect("serializable"))
}
