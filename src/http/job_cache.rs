//! Final jobs from memory: a `succeeded` or `failed` job never changes (every store write that
//! could change a job is guarded by `state NOT IN ('succeeded', 'failed')` or `state = 'queued'`),
//! so `GET /v1/snapshot-jobs/{id}` keeps the last `http.final_job_cache_entries` of them it
//! read. The entry holds the job's team, checked on every read exactly as the database query
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
    /// The job, for URLs made at each read (presigned ones expire).
    job: Job,
    /// The encoded resource, when it is the same at every read.
    body: Option<Bytes>,
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
        let body = outputs
            .urls_are_stable()
            .then(|| encode(job.clone(), outputs));
        let cached = Arc::new(CachedJob {
            team: job.team.clone(),
            job,
            body,
        });
        let response = cached.response(outputs);
        self.entries.insert(cached.job.id, cached);
        response
    }
}

impl CachedJob {
    fn response(&self, outputs: &OutputService) -> Response {
        let body = match &self.body {
            Some(b) => b.clone(),
            None => encode(self.job.clone(), outputs),
        };
        ([(CONTENT_TYPE, "application/json")], body).into_response()
    }
}

fn encode(job: Job, outputs: &OutputService) -> Bytes {
    Bytes::from(serde_json::to_vec(&JobResource::new(job, outputs)).expect("serializable"))
}
