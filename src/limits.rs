//! Team limits shared by every entry point: the per-team request rate (token buckets, per
//! replica) and the per-team count of jobs in flight (the quota), cached so that a POST does not
//! count a long queue.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Per-team token buckets (per replica).
pub struct TeamLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl TeamLimiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `team`, or says how long until one is available.
    pub fn check(&self, team: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, at) = buckets.entry(team.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

/// Per-team count of jobs in flight, read from the store at most once a second per team and
/// counted up locally in between, so the quota check does not count a long queue on every POST.
/// A stale count is still used while one request refreshes it (no stampede of counts when it
/// expires). The quota is therefore soft by about a second of submissions.
#[derive(Default)]
pub struct ActiveJobs {
    counts: Mutex<HashMap<String, ActiveCount>>,
}

struct ActiveCount {
    n: u64,
    at: Instant,
    refreshing: bool,
}

/// What the caller should do about a team's count.
pub enum ActiveLookup {
    /// Use this count.
    Fresh(u64),
    /// Use this count, and refresh it (this caller was chosen to).
    Stale(u64),
    /// No count yet: read it.
    Missing,
}

impl ActiveJobs {
    const FRESH: Duration = Duration::from_secs(1);

    pub fn lookup(&self, team: &str) -> ActiveLookup {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match counts.get_mut(team) {
            None => ActiveLookup::Missing,
            Some(c) if c.at.elapsed() < Self::FRESH || c.refreshing => ActiveLookup::Fresh(c.n),
            Some(c) => {
                c.refreshing = true;
                ActiveLookup::Stale(c.n)
            }
        }
    }

    pub fn set(&self, team: &str, n: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.insert(
            team.to_string(),
            ActiveCount {
                n,
                at: Instant::now(),
                refreshing: false,
            },
        );
    }

    pub fn add_one(&self, team: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = counts.get_mut(team) {
            c.n += 1;
        }
    }
}
