//! Who is calling: `Authorization: Bearer <token>` on every `/v1` route, looked up by the
//! token's SHA-256 (revocation takes effect on the next request, on every replica), then the
//! team's request rate is checked.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::error::ApiError;
use super::AppState;
use crate::auth::token_hash;
use crate::domain::DEFAULT_TEAM;
use crate::secret::constant_time_eq;

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
