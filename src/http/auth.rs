//! Who is calling: `Authorization: Bearer <token>` on every `/v1` route, looked up by the
//! token's SHA-256, then the team's request rate is checked.
//!
//! Verified tokens are kept in memory ([`TokenCache`]) for at most `auth.token_cache_ms`, so a
//! request pays no database round trip for its token. A revocation still takes effect on every
//! replica at once: the store counts key changes ([`crate::store::KeyChanges`] — bumped in
//! process by `revoke_api_key`, and on Postgres by a `NOTIFY` every replica `LISTEN`s to), and an
//! entry made before the latest change is not used. The expiry is the fallback when no
//! notification can arrive (a lost `LISTEN` connection; SQLite revoked by another process).

use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use super::AppState;
use crate::cache::Bounded;
use crate::crypto::token_hash;
use crate::domain::DEFAULT_TEAM;
use crate::secret::constant_time_eq;
use crate::services::limits::RateState;
use crate::store::{DynStore, KeyChanges, StoreResult};

#[derive(Debug, Clone)]
pub struct Caller {
    pub team: String,
    pub admin: bool,
    /// The key used (none when authentication is disabled).
    pub access_key_id: Option<String>,
}

/// Verified tokens by their hash: who they are, since when, at which key generation.
pub struct TokenCache {
    entries: Bounded<String, (Caller, Instant, u64)>,
    ttl: Duration,
    changes: KeyChanges,
}

/// Tokens remembered at most (a replica sees few distinct keys; more only evict older ones).
const TOKEN_CACHE_ENTRIES: usize = 10_000;

impl TokenCache {
    /// `ttl` zero: every request looks its token up.
    pub fn new(store: &DynStore, ttl: Duration) -> Self {
        let capacity = if ttl.is_zero() {
            0
        } else {
            TOKEN_CACHE_ENTRIES
        };
        Self {
            entries: Bounded::new(capacity),
            ttl,
            changes: store.key_changes(),
        }
    }

    /// The active key with this token hash, from memory when verified recently enough.
    async fn lookup(&self, store: &DynStore, hash: &str) -> StoreResult<Option<Caller>> {
        let generation = self.changes.current();
        let key = hash.to_string();
        if let Some((caller, at, seen)) = self.entries.get(&key) {
            if seen == generation && at.elapsed() < self.ttl {
                metrics::counter!("snapgate_token_cache_total", "result" => "hit").increment(1);
                return Ok(Some(caller));
            }
            self.entries.remove(&key);
        }
        metrics::counter!("snapgate_token_cache_total", "result" => "miss").increment(1);
        // The generation read before the lookup: a revocation that lands during it makes the
        // entry stale at once.
        let found = store
            .api_key_by_token_hash(hash)
            .await?
            .filter(|k| constant_time_eq(k.token_hash.as_bytes(), hash.as_bytes()))
            .map(|k| Caller {
                team: k.team,
                admin: k.admin,
                access_key_id: Some(k.access_key_id),
            });
        if let Some(caller) = &found {
            self.entries
                .insert(key, (caller.clone(), Instant::now(), generation));
        }
        Ok(found)
    }
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
            state
                .tokens
                .lookup(&state.store, &token_hash(token))
                .await?
                .ok_or(ApiError::Unauthorized)?
        };
        tracing::Span::current().record("team", caller.team.as_str());
        check_rate(parts, state, &caller.team)?;
        Ok(caller)
    }
}

/// Takes one of `team`'s request tokens (every authenticated route does, whoever the caller),
/// keeps where the team stands for the `RateLimit` headers, and refuses over the rate.
pub fn check_rate(parts: &Parts, state: &AppState, team: &str) -> Result<(), ApiError> {
    let checked = state.limiter.check(team);
    if let Some(slot) = parts.extensions.get::<RateSlot>() {
        let now = match &checked {
            Ok(s) | Err((_, s)) => *s,
        };
        *slot.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
    }
    checked.map(|_| ()).map_err(|(retry_after, _)| {
        metrics::counter!("snapgate_rejected_requests_total", "reason" => "rate_limit")
            .increment(1);
        ApiError::RateLimited { retry_after }
    })
}

/// Where the caller's team stood at its rate check, carried from the extractor to the answer.
#[derive(Clone, Default)]
pub struct RateSlot(Arc<Mutex<Option<RateState>>>);

/// `RateLimit-Policy` and `RateLimit` (IETF draft) on every answer to a rate-limited route —
/// the ones that take a [`Caller`] —, next to `Retry-After` on a 429.
pub async fn rate_limit_headers(mut req: Request, next: Next) -> Response {
    let slot = RateSlot::default();
    req.extensions_mut().insert(slot.clone());
    let mut res = next.run(req).await;
    let state = *slot.0.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(state) = state {
        let (policy, now) = state.headers();
        for (name, value) in [("ratelimit-policy", policy), ("ratelimit", now)] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                res.headers_mut().insert(HeaderName::from_static(name), v);
            }
        }
    }
    res
}
