//! Request authentication as MPS does it (docs/mps/API.md §3, §4.3): the signature (v1 or ACS3) and the
//! ±15 minute timestamp window are checked by the shared verifier in `mps/verify.rs` (the same
//! code snapgate's own MPS-compatible endpoint uses); this file holds the emulator's key list
//! lookup and its in-memory nonces, which may not repeat within 15 minutes.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use chrono::Utc;

use super::error::Fault;
use crate::mps::verify::{self, WINDOW};

/// Nonces seen in the last 15 minutes (bounded: old ones are dropped as new ones arrive).
#[derive(Default)]
pub struct Nonces {
    seen: HashMap<String, Instant>,
    last_sweep: Option<Instant>,
}

impl Nonces {
    /// False if the nonce was used within the window.
    pub fn insert(&mut self, nonce: &str) -> bool {
        let now = Instant::now();
        if self
            .last_sweep
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(10))
        {
            self.seen.retain(|_, t| now.duration_since(*t) < WINDOW);
            self.last_sweep = Some(now);
        }
        match self.seen.get(nonce) {
            Some(t) if now.duration_since(*t) < WINDOW => false,
            _ => {
                self.seen.insert(nonce.to_string(), now);
                true
            }
        }
    }
}

/// The authenticated action and its API parameters (common ones removed).
pub struct Verified {
    pub action: String,
    /// The signature the request carried (v1 or ACS3).
    pub signature: verify::SignatureKind,
    pub nonce: String,
    pub params: BTreeMap<String, String>,
}

/// Checks a request with the shared verifier (`mps::verify`) against the emulator's key list.
/// `params` are the query's and every parameter, decoded (`verify::collect_params`).
pub fn verify(
    method: &str,
    headers: &HeaderMap,
    params: verify::Params,
    body: &[u8],
    keys: &[(String, String)],
    sts: &super::sts::StsIssuer,
) -> Result<Verified, Fault> {
    let fault = |e: verify::AuthError| Fault::status(e.status, e.code, e.message);
    // A temporary credential's token: the signed `SecurityToken` (v1) or `x-acs-security-token`.
    let token = params.all.get("SecurityToken").cloned().or_else(|| {
        headers
            .get("x-acs-security-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    let unverified = verify::parse(method, headers, params, body, Utc::now()).map_err(fault)?;
    let id = unverified.access_key_id.clone();
    let secret = keys
        .iter()
        .find(|(k, _)| crate::secret::constant_time_eq(k.as_bytes(), id.as_bytes()))
        .map(|(_, s)| s.clone())
        .or_else(|| sts.secret_for(&id))
        .ok_or_else(|| fault(verify::AuthError::key_not_found()))?;
    let v = unverified.verify(&secret).map_err(fault)?;
    sts.check_token(&id, token.as_deref())
        .map_err(|p| match p {
            super::sts::TokenProblem::Expired => Fault::bad(
                "InvalidSecurityToken.Expired",
                "Specified SecurityToken is expired.",
            ),
            super::sts::TokenProblem::Mismatch => Fault::bad(
                "InvalidSecurityToken.MisMatchWithAccessKey",
                "Specified SecurityToken mismatch with the AccessKey.",
            ),
        })?;
    Ok(Verified {
        signature: v.kind,
        action: v.action,
        nonce: v.nonce,
        params: v.params,
    })
}
