//! Who is calling: `Authorization: Bearer <token>` on every `/v1` route, looked up by the
//! token's SHA-256, then the team's request rate is checked.
//! Verified tokens are kept in memory (`caller.rs`'s `TokenCache`).

use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use super::caller::Caller;
use super::error::ApiError;
use super::AppState;
use crate::crypto::token_hash;
use crate::domain::DEFAULT_TEAM;
use crate::services::limits::RateState;

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
