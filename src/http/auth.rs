//! Who is calling: `Authorization: Bearer <token>` on every `/v1` route, looked up by the
//! token's SHA-256 (revocation takes effect on the next request, on every replica), then the
//! team's request rate is checked.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::app::AppState;
use crate::auth::token_hash;
use crate::domain::DEFAULT_TEAM;
use crate::mps::sign::constant_time_eq;

#[derive(Debug, Clone)]
pub struct Caller {
    pub team: String,
    pub admin: bool,
    /// The key used (none when authentication is disabled).
    pub access_key_id: Option<String>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = if !state.settings.auth.enabled {
            Caller {
                team: DEFAULT_TEAM.to_string(),
                admin: false,
                access_key_id: None,
            }
        } else {
            let token = parts
                .headers
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    let (scheme, rest) = v.split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
                })
                .filter(|t| !t.is_empty() && t.len() <= 256)
                .ok_or(ApiError::Unauthorized)?;
            let hash = token_hash(token);
            let key = state
                .store
                .api_key_by_token_hash(&hash)
                .await?
                .filter(|k| constant_time_eq(k.token_hash.as_bytes(), hash.as_bytes()))
                .ok_or(ApiError::Unauthorized)?;
            Caller {
                team: key.team,
                admin: key.admin,
                access_key_id: Some(key.access_key_id),
            }
        };
        tracing::Span::current().record("team", caller.team.as_str());
        state.limiter.check(&caller.team).map_err(|retry_after| {
            metrics::counter!("snapgate_rejected_requests_total", "reason" => "rate_limit")
                .increment(1);
            ApiError::RateLimited { retry_after }
        })?;
        Ok(caller)
    }
}

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
