//! Request authentication as MPS does it (API.md §3, §4.3): v1 (HMAC-SHA1 over every parameter
//! but `Signature`) or ACS3 (`Authorization: ACS3-HMAC-SHA256 …`), a ±15 minute timestamp
//! window, and nonces that may not repeat within 15 minutes.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use chrono::{NaiveDateTime, Utc};

use super::rpc::Fault;
use crate::mps::sign;

pub const WINDOW: Duration = Duration::from_secs(15 * 60);

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

fn check_timestamp(ts: Option<&str>) -> Result<(), Fault> {
    let ts = ts.ok_or_else(|| Fault::bad("IllegalTimestamp", "The input parameter \"Timestamp\" that is mandatory for processing this request is not supplied."))?;
    let t = NaiveDateTime::parse_from_str(ts, "%Y-%m-%dT%H:%M:%SZ")
        .map_err(|_| {
            Fault::bad(
                "InvalidTimeStamp.Format",
                "Specified time stamp or date value is not well formatted.",
            )
        })?
        .and_utc();
    let skew = (Utc::now() - t).num_seconds().unsigned_abs();
    if skew > WINDOW.as_secs() {
        return Err(Fault::bad(
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired.",
        ));
    }
    Ok(())
}

/// The authenticated action and its API parameters (common ones removed).
pub struct Verified {
    pub action: String,
    pub nonce: String,
    pub params: BTreeMap<String, String>,
}

const COMMON: &[&str] = &[
    "Action",
    "Version",
    "Format",
    "AccessKeyId",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "Timestamp",
    "Signature",
    "SignatureType",
    "RegionId",
    "SecurityToken",
];

/// Checks a request. `params` are every query and form parameter, decoded.
pub fn verify(
    method: &str,
    headers: &HeaderMap,
    params: BTreeMap<String, String>,
    body: &[u8],
    keys: &[(String, String)],
) -> Result<Verified, Fault> {
    let secret_of = |id: &str| {
        keys.iter()
            .find(|(k, _)| crate::secret::constant_time_eq(k.as_bytes(), id.as_bytes()))
            .map(|(_, s)| s.clone())
            .ok_or_else(|| {
                Fault::status(
                    404,
                    "InvalidAccessKeyId.NotFound",
                    "Specified access key is not found.",
                )
            })
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(authz) = header("authorization").filter(|v| v.starts_with("ACS3-")) {
        let auth = sign::parse_acs3_authorization(authz).map_err(|_| {
            Fault::bad(
                "IncompleteSignature",
                "The request signature does not conform to Aliyun standards.",
            )
        })?;
        let action = header("x-acs-action")
            .ok_or_else(|| Fault::bad("MissingParameter", "The input parameter \"Action\" that is mandatory for processing this request is not supplied."))?
            .to_string();
        check_timestamp(header("x-acs-date"))?;
        let secret = secret_of(&auth.access_key_id)?;
        let body_hash = sign::sha256_hex(body);
        if header("x-acs-content-sha256").is_some_and(|h| h != body_hash) {
            return Err(Fault::bad(
                "IncompleteSignature",
                "x-acs-content-sha256 does not match the body.",
            ));
        }
        let mut signed = BTreeMap::new();
        for name in &auth.signed_headers {
            let value = header(name).ok_or_else(|| {
                Fault::bad(
                    "IncompleteSignature",
                    format!("signed header {name} is missing"),
                )
            })?;
            signed.insert(name.to_ascii_lowercase(), value.to_string());
        }
        for required in [
            "host",
            "x-acs-action",
            "x-acs-date",
            "x-acs-signature-nonce",
            "x-acs-version",
        ] {
            if !signed.contains_key(required) {
                return Err(Fault::bad(
                    "IncompleteSignature",
                    format!("header {required} must be signed"),
                ));
            }
        }
        let hashed = header("x-acs-content-sha256")
            .unwrap_or(&body_hash)
            .to_string();
        let cr = sign::canonical_request_acs3(method, "/", &params, &signed, &hashed);
        let sts = sign::string_to_sign_acs3(&cr);
        let expected = sign::sign_acs3(&secret, &sts);
        if !crate::secret::constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
            return Err(Fault::bad(
                "SignatureDoesNotMatch",
                format!("Specified signature is not matched with our calculation. server string to sign is:{sts}"),
            ));
        }
        let nonce = header("x-acs-signature-nonce")
            .unwrap_or_default()
            .to_string();
        return Ok(Verified {
            action,
            nonce,
            params,
        });
    }

    let action = params
        .get("Action")
        .cloned()
        .ok_or_else(|| Fault::bad("MissingParameter", "The input parameter \"Action\" that is mandatory for processing this request is not supplied."))?;
    let key_id = params
        .get("AccessKeyId")
        .cloned()
        .ok_or_else(|| Fault::bad("MissingParameter", "The input parameter \"AccessKeyId\" that is mandatory for processing this request is not supplied."))?;
    let given = params
        .get("Signature")
        .cloned()
        .ok_or_else(|| Fault::bad("MissingParameter", "The input parameter \"Signature\" that is mandatory for processing this request is not supplied."))?;
    check_timestamp(params.get("Timestamp").map(String::as_str))?;
    if params.get("SignatureMethod").map(String::as_str) != Some("HMAC-SHA1") {
        return Err(Fault::bad(
            "InvalidParameter",
            "SignatureMethod must be HMAC-SHA1.",
        ));
    }
    let nonce = params
        .get("SignatureNonce")
        .cloned()
        .ok_or_else(|| Fault::bad("MissingParameter", "The input parameter \"SignatureNonce\" that is mandatory for processing this request is not supplied."))?;
    let secret = secret_of(&key_id)?;
    let mut signed = params.clone();
    signed.remove("Signature");
    let sts = sign::string_to_sign_v1(method, &signed);
    let expected = sign::sign_v1(&secret, &sts);
    if !crate::secret::constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        return Err(Fault::bad(
            "SignatureDoesNotMatch",
            format!("Specified signature is not matched with our calculation. server string to sign is:{sts}"),
        ));
    }
    let api = params
        .into_iter()
        .filter(|(k, _)| !COMMON.contains(&k.as_str()))
        .collect();
    Ok(Verified {
        action,
        nonce,
        params: api,
    })
}
