//! Team limits shared by every entry point: the per-team request rate (token buckets, per
//! replica, on a [`Monotonic`] clock that tests can drive) and which teams are paused with new
//! jobs refused ([`TeamPauses`]). The in-flight quota is the store's: a job is admitted by its
//! own insert (`JobStore::create_job_within`, a retry by `LifecycleStore::create_retry`), exact
//! across replicas.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;

use crate::clock::Monotonic;
use governor::{Quota, RateLimiter};

/// Per-team token buckets (per replica): `governor`'s keyed GCRA limiter, `per_second` tokens a
/// second up to `burst`.
pub struct TeamLimiter {
    limiter:
        RateLimiter<String, DefaultKeyedStateStore<String>, Monotonic, StateInformationMiddleware>,
    clock: Monotonic,
    per_second: u32,
    burst: u32,
}

/// Where a team stands after a check: what the IETF `RateLimit` / `RateLimit-Policy` headers
/// say (draft-ietf-httpapi-ratelimit-headers), for the team's bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateState {
    /// The bucket's size: requests allowed at once.
    pub quota: u32,
    /// Seconds in which an empty bucket fills again.
    pub window_s: u64,
    /// Requests left now.
    pub remaining: u32,
    /// Seconds until the bucket is full again (0 when it is).
    pub reset_s: u64,
}

impl RateState {
    /// `RateLimit-Policy` and `RateLimit`, as structured-field strings.
    pub fn headers(&self) -> (String, String) {
        (
            format!("\"team\";q={};w={}", self.quota, self.window_s),
            format!("\"team\";r={};t={}", self.remaining, self.reset_s),
        )
    }
}

impl TeamLimiter {
    /// On the monotonic clock.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self::with_clock(per_second, burst, Monotonic::system())
    }

    pub fn with_clock(per_second: u32, burst: u32, clock: Monotonic) -> Self {
        let per_second = per_second.max(1);
        let burst = burst.max(1);
        let quota = Quota::per_second(NonZeroU32::new(per_second).expect("at least 1"))
            .allow_burst(NonZeroU32::new(burst).expect("at least 1"));
        Self {
            limiter: RateLimiter::<_, _, _, NoOpMiddleware<Nanos>>::new(
                quota,
                DefaultKeyedStateStore::default(),
                clock.clone(),
            )
            .with_middleware::<StateInformationMiddleware>(),
            clock,
            per_second,
            burst,
        }
    }

    fn state(&self, remaining: u32) -> RateState {
        let secs = |n: u32| u64::from(n).div_ceil(u64::from(self.per_second));
        RateState {
            quota: self.burst,
            window_s: secs(self.burst),
            remaining,
            reset_s: secs(self.burst - remaining.min(self.burst)),
        }
    }

    /// Takes one token for `team`: where the team stands now, or how long until a token is
    /// available (with the team's state for the headers of the refusal).
    pub fn check(&self, team: &str) -> Result<RateState, (Duration, RateState)> {
        match self.limiter.check_key(&team.to_string()) {
            Ok(snapshot) => Ok(self.state(snapshot.remaining_burst_capacity())),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let mut state = self.state(0);
                state.reset_s = state.reset_s.max(wait.as_secs_f64().ceil() as u64);
                Err((wait, state))
            }
        }
    }
}

#[cfg(test)]
mod rate_tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn a_bucket_counts_down_then_refuses_with_the_wait_and_teams_are_apart() {
        let clock = ManualClock::default();
        let l = TeamLimiter::with_clock(1, 3, Monotonic::Manual(clock.clone()));
        let left: Vec<u32> = (0..3).map(|_| l.check("a").unwrap().remaining).collect();
        assert_eq!(left, [2, 1, 0]);
        let (wait, state) = l.check("a").unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        assert_eq!((state.quota, state.window_s, state.remaining), (3, 3, 0));
        assert_eq!(state.reset_s, 3);
        assert_eq!(l.check("b").unwrap().remaining, 2);
        clock.advance(Duration::from_millis(400));
        assert_eq!(l.check("a").unwrap_err().0, Duration::from_millis(600));
        clock.advance(Duration::from_millis(600));
        assert_eq!(l.check("a").unwrap().remaining, 0);
        assert_eq!(
            RateState {
                quota: 3,
                window_s: 3,
                remaining: 1,
                reset_s: 2
            }
            .headers(),
            (
                "\"team\";q=3;w=3".to_string(),
                "\"team\";r=1;t=2".to_string()
            )
        );
    }
}

/// Which teams refuse new jobs while paused, read from the store at most every
/// [`PAUSES_TTL`] per replica (a pause that refuses takes effect on every replica within it;
/// a pause that holds jobs needs no cache: the claim query itself skips the team).
#[derive(Default)]
pub struct TeamPauses {
    refusing: tokio::sync::Mutex<Option<(Instant, std::sync::Arc<Vec<String>>)>>,
}

/// How long a replica trusts its list of refusing pauses.
pub const PAUSES_TTL: Duration = Duration::from_millis(500);

impl TeamPauses {
    /// Whether `team` is paused with new jobs refused.
    pub async fn refuses(
        &self,
        store: &crate::store::DynStore,
        team: &str,
    ) -> crate::store::StoreResult<bool> {
        let mut cached = self.refusing.lock().await;
        let list = match &*cached {
            Some((at, list)) if at.elapsed() < PAUSES_TTL => list.clone(),
            _ => {
                let list: Vec<String> = store
                    .paused_teams()
                    .await?
                    .into_iter()
                    .filter(|p| p.refuse_new)
                    .map(|p| p.team)
                    .collect();
                let list = std::sync::Arc::new(list);
                *cached = Some((Instant::now(), list.clone()));
                list
            }
        };
        Ok(list.iter().any(|t| t == team))
    }

    /// Forgets the list (this replica changed a pause).
    pub async fn invalidate(&self) {
        *self.refusing.lock().await = None;
    }
}
