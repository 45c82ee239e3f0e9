//! Jobs from memory for `GET /v1/snapshot-jobs/{id}`: the last `http.job_cache_entries` jobs it
//! read, and at most `http.job_cache_bytes` bytes of them (each entry weighed by its encoded
//! answer: a few KiB for a job with sprites, tens of MiB for a long input at a 1 s interval); an
//! answer over an eighth of that bound is never kept (it is read from the database each time).
//! The entry holds the job's team, checked on every read exactly
//! as the database query checks it (`team = $caller` unless the caller is an admin), and — when
//! output URLs do not depend on the time of the read (no presigning) — the response body already
//! encoded, so such a read neither touches the database nor encodes JSON.
//!
//! - A **final** job (`succeeded`, `failed`) never changes (every store write that could change
//!   a job is guarded by `state NOT IN ('succeeded', 'failed')` or `state = 'queued'`): kept
//!   until evicted.
//! - A job that **can still change** is kept only while the store's change feed is live
//!   ([`crate::store::JobStore::watch_job_changes`]: on Postgres every committed change to a job
//!   row, by any replica or by hand, is announced by a trigger), is dropped as soon as a change
//!   to it is heard, and is trusted at most `http.job_cache_ttl_ms` in any case (the fallback
//!   should an announcement never arrive). Where there is no feed (SQLite) such jobs are not
//!   kept. A read may thus lag a change made on another replica by the time the announcement
//!   takes to arrive (milliseconds) — as a read that started just before the change would.
//!
//! A read that began before a change and ends after it must not put what it read into the
//! cache: [`JobCache::seen`] is taken before the database is read, and [`JobCache::answer`] keeps
//! a job that can change only if no change at all was heard since (checked and stored under one
//! lock, which the feed's removal also takes).
//!
//! A job that can still change and is read often is read again **before** its trust runs out:
//! the first hit past half of `http.job_cache_ttl_ms` asks for one background read
//! ([`JobCache::refresh`], under the same rule as any read), so its pollers keep being answered
//! from memory instead of meeting the database together when the entry expires. Nothing is
//! ever answered past its trust: a refresh that fails or is not kept leaves the entry to expire.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::{Bytes, HttpBody};
use axum::http::header::{CONTENT_TYPE, ETAG};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};

use super::caller::Caller;
use super::views::JobResource;
use crate::cache::Bounded;
use crate::clock::Monotonic;
use crate::domain::Job;
use crate::domain::JobId;
use crate::services::outputs::OutputService;
use crate::store::{DynStore, JobChangeSink};

pub struct JobCache {
    entries: Bounded<JobId, Arc<CachedJob>>,
    /// How long a job that can still change is trusted; zero: such jobs are not kept.
    open_ttl: Duration,
    /// What the trust is measured on: the monotonic clock from the first use, unless a test set
    /// a manual one before ([`JobCache::use_clock`]).
    clock: OnceLock<Monotonic>,
    feed: Mutex<Feed>,
}

/// What the change feed has said so far.
#[derive(Clone, Copy)]
struct Feed {
    /// Bumped by every change heard, and by every loss and reopening of the feed.
    changes: u64,
    /// Whether changes are heard now.
    live: bool,
    /// `changes` when the feed last became live: what was kept before may have missed changes.
    live_since: u64,
}

pub struct CachedJob {
    team: String,
    answer: Answer,
    /// For a job that can still change: when it was read and the feed's count before the read.
    open: Option<(Duration, u64)>,
    /// A background read of this job was asked for ([`JobCache::refresh`]).
    refreshing: AtomicBool,
}

enum Answer {
    /// The resource's `ETag` and encoding, the same at every read (only this is kept: it is the
    /// smaller).
    Encoded(HeaderValue, Bytes),
    /// The job, for URLs made at each read (presigned ones expire).
    Job(Box<Job>),
}

/// What the cache says about one id.
pub enum Cached {
    /// The caller may see it: the answer. `refresh`: the entry is past half its trust; hand the
    /// id to [`JobCache::refresh`] (asked of one hit only).
    Hit {
        answer: Response,
        refresh: bool,
    },
    /// Another team's job: answered like a job that does not exist.
    OtherTeam,
    Miss,
}

/// The change feed's count, and the time, before a database read ([`JobCache::seen`]).
#[derive(Clone, Copy)]
pub struct Seen(u64, Duration);

impl JobCache {
    /// At most `capacity` jobs and `max_bytes` bytes of answers (either 0 turns the cache
    /// off); jobs that can still change are trusted at most `open_ttl` (zero: only final jobs
    /// are kept).
    pub fn new(capacity: usize, max_bytes: usize, open_ttl: Duration) -> Self {
        Self {
            entries: Bounded::with_bytes(capacity, max_bytes),
            open_ttl,
            clock: OnceLock::new(),
            feed: Mutex::new(Feed {
                changes: 0,
                live: false,
                live_since: 0,
            }),
        }
    }

    /// Measures the trust of jobs that can still change on `clock` (a test's manual clock),
    /// if nothing has been measured yet; false if it came too late.
    pub fn use_clock(&self, clock: Monotonic) -> bool {
        self.clock.set(clock).is_ok()
    }

    fn elapsed(&self) -> Duration {
        self.clock.get_or_init(Monotonic::system).elapsed()
    }

    /// The bytes of answers held now (at most the bound given to [`JobCache::new`]).
    pub fn bytes(&self) -> usize {
        self.entries.bytes()
    }

    /// Jobs held now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn feed(&self) -> std::sync::MutexGuard<'_, Feed> {
        self.feed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take before reading a job from the database; hand to [`JobCache::answer`].
    pub fn seen(&self) -> Seen {
        Seen(self.feed().changes, self.elapsed())
    }

    pub fn get(&self, id: JobId, caller: &Caller, outputs: &OutputService) -> Cached {
        let Some(c) = self.entries.get(&id) else {
            return Cached::Miss;
        };
        let mut refresh = false;
        if let Some((read_at, seen)) = c.open {
            let feed = *self.feed();
            let age = self.elapsed().saturating_sub(read_at);
            if !feed.live || seen < feed.live_since || age >= self.open_ttl {
                return Cached::Miss;
            }
            refresh = age >= self.open_ttl / 2 && !c.refreshing.swap(true, Ordering::Relaxed);
        }
        if !caller.admin && c.team != caller.team {
            return Cached::OtherTeam;
        }
        let kind = if c.open.is_some() { "open" } else { "final" };
        metrics::counter!("snapgate_job_cache_hits_total", "job" => kind).increment(1);
        Cached::Hit {
            answer: c.response(outputs),
            refresh,
        }
    }

    /// Reads job `id` again in the background, for the cache only (after a hit that asked for
    /// it): kept exactly as a request's read would be ([`JobCache::answer`]); a job gone from
    /// the store is dropped; on an error the entry expires as it would have.
    pub fn refresh(self: &Arc<Self>, store: DynStore, outputs: Arc<OutputService>, id: JobId) {
        let cache = self.clone();
        tokio::spawn(async move {
            let seen = cache.seen();
            match store.get_job(None, id).await {
                Ok(Some(job)) => {
                    cache.answer(job, &outputs, seen);
                }
                Ok(None) => cache.entries.remove(&id),
                Err(e) => {
                    tracing::debug!(error = %e, job_id = %id, "refreshing a cached job failed")
                }
            }
        });
    }

    /// Answers `job` (read from the database after `seen`), remembering it if it is final, or
    /// if it can still change and no change was heard since `seen`.
    pub fn answer(&self, job: Job, outputs: &OutputService, seen: Seen) -> Response {
        let keep = self.entries.enabled()
            && (job.state.is_final() || (!self.open_ttl.is_zero() && self.feed().live));
        if !keep {
            return axum::Json(JobResource::new(job, outputs)).into_response();
        }
        let (id, team) = (job.id, job.team.clone());
        let open = (!job.state.is_final()).then_some((seen.1, seen.0));
        let answer = if outputs.urls_are_stable() {
            let body = encode(job, outputs);
            Answer::Encoded(super::etag::tag_of(&body), body)
        } else {
            Answer::Job(Box::new(job))
        };
        let cached = Arc::new(CachedJob {
            team,
            answer,
            open,
            refreshing: AtomicBool::new(false),
        });
        let response = cached.response(outputs);
        // Weighed by the answer's length (for a job kept undecoded, about what it holds).
        let bytes = HttpBody::size_hint(response.body())
            .exact()
            .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        match open {
            None => {
                self.entries.insert_weighing(id, cached, bytes);
            }
            Some(_) => {
                let feed = self.feed();
                if feed.live && feed.changes == seen.0 {
                    self.entries.insert_weighing(id, cached, bytes);
                }
            }
        }
        response
    }
}

impl JobChangeSink for JobCache {
    fn job_changed(&self, id: JobId) {
        let mut feed = self.feed();
        feed.changes += 1;
        self.entries.remove(&id);
    }

    fn feed_live(&self) {
        let mut feed = self.feed();
        feed.changes += 1;
        feed.live = true;
        feed.live_since = feed.changes;
    }

    fn feed_lost(&self) {
        let mut feed = self.feed();
        feed.changes += 1;
        feed.live = false;
    }
}

impl CachedJob {
    fn response(&self, outputs: &OutputService) -> Response {
        match &self.answer {
            Answer::Encoded(tag, body) => (
                [
                    (CONTENT_TYPE, HeaderValue::from_static("application/json")),
                    (ETAG, tag.clone()),
                ],
                body.clone(),
            )
                .into_response(),
            Answer::Job(job) => (
                [(CONTENT_TYPE, "application/json")],
                encode((**job).clone(), outputs),
            )
                .into_response(),
        }
    }
}

fn encode(job: Job, outputs: &OutputService) -> Bytes {
    Bytes::from(serde_json::to_vec(&JobResource::new(job, outputs)).expect("serializable"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JobState;
    use crate::services::outputs::Links;

    fn job(state: JobState) -> Job {
        let (request, warnings) = crate::domain::validate_request(&serde_json::json!({
            "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.mp4"},
            "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.jpg"}
        }))
        .expect("valid");
        let now = crate::clock::now();
        Job {
            id: JobId::new(),
            team: "alpha".into(),
            state,
            request,
            warnings,
            created_at: now,
            updated_at: now,
            attempts: 0,
            last_error: None,
            mps: Default::default(),
            submitted_at: None,
            preset: None,
            retry_of: None,
            retried_by: None,
        }
    }

    fn outputs() -> OutputService {
        OutputService::new(Links::Oss { presign: None }, None)
    }

    fn alpha() -> Caller {
        Caller {
            team: "alpha".into(),
            admin: false,
            access_key_id: None,
        }
    }

    fn cached(cache: &JobCache, id: JobId) -> bool {
        matches!(cache.get(id, &alpha(), &outputs()), Cached::Hit { .. })
    }

    fn live_cache() -> JobCache {
        let cache = JobCache::new(100, 1 << 20, Duration::from_secs(60));
        cache.feed_live();
        cache
    }

    #[test]
    fn an_open_job_read_before_a_change_heard_during_the_read_is_not_kept() {
        let cache = live_cache();
        let j = job(JobState::Queued);
        let id = j.id;
        let seen = cache.seen();
        // The read is under way; a change to any job is heard meanwhile (maybe this one's).
        cache.job_changed(JobId::new());
        cache.answer(j, &outputs(), seen);
        assert!(!cached(&cache, id), "kept what may predate a change");

        let j = job(JobState::Queued);
        let id = j.id;
        let seen = cache.seen();
        cache.answer(j, &outputs(), seen);
        assert!(cached(&cache, id), "no change heard: kept");
        cache.job_changed(id);
        assert!(!cached(&cache, id), "dropped when its change is heard");
    }

    #[test]
    fn open_jobs_are_kept_only_while_the_feed_is_live_and_final_ones_regardless() {
        let cache = JobCache::new(100, 1 << 20, Duration::from_secs(60));
        let (open, done) = (job(JobState::Submitted), job(JobState::Succeeded));
        let (open_id, done_id) = (open.id, done.id);
        cache.answer(open, &outputs(), cache.seen());
        cache.answer(done, &outputs(), cache.seen());
        assert!(!cached(&cache, open_id), "no feed yet");
        assert!(cached(&cache, done_id));

        cache.feed_live();
        let open = job(JobState::Submitted);
        let open_id = open.id;
        cache.answer(open, &outputs(), cache.seen());
        assert!(cached(&cache, open_id));
        cache.feed_lost();
        assert!(!cached(&cache, open_id), "the feed is down");
        cache.feed_live();
        assert!(
            !cached(&cache, open_id),
            "kept before the feed went down: changes may have been missed"
        );
        assert!(cached(&cache, done_id), "a final job never changes");
    }

    #[test]
    fn open_jobs_expire_and_a_zero_ttl_keeps_none() {
        let cache = JobCache::new(100, 1 << 20, Duration::from_millis(30));
        cache.feed_live();
        let j = job(JobState::Queued);
        let id = j.id;
        cache.answer(j, &outputs(), cache.seen());
        assert!(cached(&cache, id));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!cached(&cache, id), "trusted past its ttl");

        let cache = JobCache::new(100, 1 << 20, Duration::ZERO);
        cache.feed_live();
        let j = job(JobState::Queued);
        let id = j.id;
        cache.answer(j, &outputs(), cache.seen());
        assert!(!cached(&cache, id));
    }

    #[test]
    fn a_refresh_is_asked_of_one_hit_past_half_the_trust_and_never_for_final_jobs() {
        let cache = JobCache::new(100, 1 << 20, Duration::from_millis(200));
        cache.feed_live();
        let (open, done) = (job(JobState::Queued), job(JobState::Succeeded));
        let (open_id, done_id) = (open.id, done.id);
        cache.answer(open, &outputs(), cache.seen());
        cache.answer(done, &outputs(), cache.seen());
        let refresh = |id| match cache.get(id, &alpha(), &outputs()) {
            Cached::Hit { refresh, .. } => refresh,
            _ => panic!("not a hit"),
        };
        assert!(!refresh(open_id), "fresh");
        std::thread::sleep(Duration::from_millis(110));
        assert!(refresh(open_id), "past half its trust");
        assert!(!refresh(open_id), "asked once");
        assert!(!refresh(done_id), "a final job never changes");
    }

    /// D08 (issue 31): the cache kept whole answers bounded by count only (5 reads of huge
    /// jobs kept 508 MB). Bounded by bytes now: the answers held never weigh more than the
    /// bound, and an answer over an eighth of it is answered but not kept.
    #[test]
    fn the_answers_held_never_weigh_more_than_the_bound_and_big_ones_are_not_kept() {
        const BOUND: usize = 256 << 10;
        let cache = JobCache::new(2000, BOUND, Duration::from_secs(60));
        let sized = |bytes: usize| {
            let mut j = job(JobState::Succeeded);
            let raw = serde_json::json!({ "Big": "x".repeat(bytes) });
            j.mps.response = Some(crate::domain::RawJson::from(raw));
            j
        };
        let big = sized(BOUND / 4);
        let big_id = big.id;
        let answer = cache.answer(big, &outputs(), cache.seen());
        assert!(HttpBody::size_hint(answer.body()).exact().unwrap() > (BOUND / 4) as u64);
        assert!(
            !cached(&cache, big_id),
            "an answer over an eighth of the bound is not kept"
        );
        assert_eq!(cache.bytes(), 0);

        let mut ids = Vec::new();
        for i in 0..200 {
            let j = sized(1000 + (i * 97) % 20_000);
            ids.push(j.id);
            cache.answer(j, &outputs(), cache.seen());
            assert!(cache.bytes() <= BOUND, "{} bytes held", cache.bytes());
        }
        assert!(cached(&cache, *ids.last().unwrap()), "the newest is kept");
        assert!(cache.len() < 200, "bounded by bytes before the count");
        assert!(cache.bytes() > BOUND / 4, "and it does keep answers");
    }

    #[test]
    fn another_team_is_told_nothing() {
        let cache = live_cache();
        let j = job(JobState::Queued);
        let id = j.id;
        cache.answer(j, &outputs(), cache.seen());
        let beta = Caller {
            team: "beta".into(),
            admin: false,
            access_key_id: None,
        };
        assert!(matches!(
            cache.get(id, &beta, &outputs()),
            Cached::OtherTeam
        ));
    }
}
