//! Who is calling the MPS-compatible endpoint: the request's signature (v1 or ACS3, checked by
//! the shared verifier in `mps/verify.rs`) made with a team key's pair — `AccessKeyId` is the
//! key's `access_key_id`, the secret the one stored encrypted under the master key. Then, as MPS
//! does: a timestamp outside ±15 minutes is refused (by the verifier), a nonce used within that
//! window is refused (the nonces are in the database, so every replica sees them), and the
//! team's request rate is checked as on the REST API. A revoked key is refused at once.
//!
//! Never logged: the secret, the signature, the string-to-sign with the secret's hash.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use axum::http::{HeaderMap, Method, Uri};
use chrono::Utc;

use super::error::{RpcError, VERSION};
use crate::domain::DEFAULT_TEAM;
use crate::http::AppState;
use crate::mps::verify::{self, AuthError, SignatureKind, COMMON, WINDOW};

/// A nonce is at most this long (MPS documents no limit; the SDKs send 32 or 36 characters).
const NONCE_MAX: usize = 255;
/// How often a replica deletes expired nonces.
const PURGE_EVERY_S: i64 = 60;

/// An authenticated call.
pub struct Call {
    pub team: String,
    pub access_key_id: String,
    pub action: String,
    /// The API parameters (common ones removed).
    pub params: BTreeMap<String, String>,
}

pub async fn authenticate(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Call, RpcError> {
    let params = verify::collect_params(uri.query(), headers, body)?;
    if !state.settings.auth.enabled {
        return Ok(unauthenticated(headers, params.all));
    }
    let now = Utc::now();
    let unverified = verify::parse(method.as_str(), headers, params, body, now)?;
    let key = state
        .store
        .api_key_by_access_key_id(&unverified.access_key_id)
        .await?
        .ok_or_else(AuthError::key_not_found)?;
    if key.revoked_at.is_some() {
        return Err(AuthError::key_inactive().into());
    }
    let master = state.master_key.get().map_err(RpcError::Internal)?;
    let secret = master
        .decrypt(&key.secret_ciphertext)
        .map_err(RpcError::Internal)?;
    let v = unverified.verify(secret.expose())?;

    if v.nonce.is_empty() {
        return Err(AuthError::missing("SignatureNonce").into());
    }
    if v.nonce.len() > NONCE_MAX {
        return Err(RpcError::invalid(
            "InvalidParameter",
            format!("SignatureNonce: at most {NONCE_MAX} characters"),
        ));
    }
    // Remembered as long as a request with this timestamp is accepted (a minute's margin for
    // clocks that differ between replicas).
    let expires_at = v.timestamp.max(now)
        + chrono::Duration::from_std(WINDOW).expect("small")
        + chrono::Duration::minutes(1);
    if !state
        .store
        .use_nonce(&key.access_key_id, &v.nonce, now, expires_at)
        .await?
    {
        return Err(AuthError::nonce_used().into());
    }
    purge_nonces_now_and_then(state, now);

    match v.version.as_deref() {
        None => return Err(AuthError::missing("Version").into()),
        Some(VERSION) => {}
        Some(_) => {
            return Err(RpcError::invalid(
                "InvalidVersion",
                format!("Specified parameter Version is not valid: snapgate answers Mts {VERSION}"),
            ))
        }
    }
    if v.kind == SignatureKind::V1 {
        if let Some(f) = v
            .format
            .as_deref()
            .filter(|f| !f.eq_ignore_ascii_case("json"))
        {
            return Err(RpcError::invalid(
                "InvalidParameter.Format",
                format!("Format={f} is not supported: snapgate answers Format=JSON only"),
            ));
        }
    }
    state.limiter.check(&key.team).map_err(|(retry_after, _)| {
        metrics::counter!("snapgate_rejected_requests_total", "reason" => "rate_limit")
            .increment(1);
        RpcError::Throttled {
            retry_after,
            message: "this team is sending requests too fast".into(),
        }
    })?;
    Ok(Call {
        team: key.team,
        access_key_id: key.access_key_id,
        action: v.action,
        params: v.params,
    })
}

/// Authentication off (`auth.enabled = false`, as for the REST API): every call is the default
/// team's and signatures are not checked.
fn unauthenticated(headers: &HeaderMap, mut params: BTreeMap<String, String>) -> Call {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let action = match header("x-acs-action") {
        Some(a) if header("authorization").is_some_and(|v| v.starts_with("ACS3-")) => a.to_string(),
        _ => {
            let a = params.get("Action").cloned().unwrap_or_default();
            params.retain(|k, _| !COMMON.contains(&k.as_str()));
            a
        }
    };
    Call {
        team: DEFAULT_TEAM.to_string(),
        access_key_id: String::new(),
        action,
        params,
    }
}

/// Deletes expired nonces at most once a minute per replica, off the request path.
fn purge_nonces_now_and_then(state: &AppState, now: chrono::DateTime<Utc>) {
    let last = state.nonce_purge.0.load(Ordering::Relaxed);
    let t = now.timestamp();
    if t - last < PURGE_EVERY_S
        || state
            .nonce_purge
            .0
            .compare_exchange(last, t, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    let store = state.store.clone();
    tokio::spawn(async move {
        match store.purge_nonces(now).await {
            Ok(n) if n > 0 => tracing::debug!(purged = n, "expired nonces purged"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purging expired nonces failed"),
        }
    });
}
