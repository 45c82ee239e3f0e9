//! Where a signature is checked: MPS's request authentication (docs/mps/API.md §3, §4.3), the one
//! implementation used by the local emulator (`emulator/auth.rs`) and by snapgate's own
//! MPS-compatible endpoint (`http/mps_rpc/`). Both algorithms come from `sign.rs`, so signing and
//! verifying cannot drift apart.
//!
//! Two steps, because the secret lives in different places (a list in the emulator, the store
//! and the master key in snapgate): [`parse`] reads the request without a secret — the key id,
//! action, nonce, timestamp (±15 minutes) and the server's string-to-sign — and
//! [`Unverified::verify`] then checks the signature with the secret the caller looked up. Nonce
//! reuse is the caller's check (memory in the emulator, the database in snapgate), made only
//! after the signature verified so that nobody can burn another client's nonces.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};

use super::sign;

/// Timestamps are accepted this far from the server's clock, and a nonce may not be reused
/// within it.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

/// An MPS error answer about authentication: HTTP status, MPS code, MPS message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AuthError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl AuthError {
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            code,
            message: message.into(),
        }
    }

    /// `MissingParameter`, with MPS's sentence.
    pub fn missing(name: &str) -> Self {
        Self::bad(
            "MissingParameter",
            format!("The input parameter \"{name}\" that is mandatory for processing this request is not supplied."),
        )
    }

    /// No key with this AccessKeyId (404, as the emulator has always answered; some Alibaba
    /// tables say 400 — SDKs classify by code, not status).
    pub fn key_not_found() -> Self {
        Self {
            status: 404,
            code: "InvalidAccessKeyId.NotFound",
            message: "Specified access key is not found.".into(),
        }
    }

    /// The key exists but is disabled (revoked).
    pub fn key_inactive() -> Self {
        Self::bad(
            "InvalidAccessKeyId.Inactive",
            "Specified access key is disabled.",
        )
    }

    pub fn nonce_used() -> Self {
        Self::bad(
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        )
    }

    fn incomplete(message: impl Into<String>) -> Self {
        Self::bad("IncompleteSignature", message)
    }
}

/// Which of the two signatures the request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureKind {
    /// `Signature` parameter, HMAC-SHA1, `SignatureVersion=1.0`.
    V1,
    /// `Authorization: ACS3-HMAC-SHA256 …`.
    Acs3,
}

impl SignatureKind {
    /// `v1` or `acs3`: how the emulator's stats and ledger name it.
    pub fn label(self) -> &'static str {
        match self {
            SignatureKind::V1 => "v1",
            SignatureKind::Acs3 => "acs3",
        }
    }
}

/// The common parameters of a v1 request, removed from [`Verified::params`].
pub const COMMON: &[&str] = &[
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

/// Headers an ACS3 request must sign (docs/mps/API.md §3.4).
const ACS3_REQUIRED: &[&str] = &[
    "host",
    "x-acs-action",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-version",
];

/// A request's parameters, decoded: those of the URL's query, and all of them (the query's and
/// a form body's).
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// The URL query's: what ACS3's canonical query holds (the body is covered by
    /// `x-acs-content-sha256`).
    pub query: BTreeMap<String, String>,
    /// The query's and the form body's: what v1 signs, and the call's parameters.
    pub all: BTreeMap<String, String>,
}

/// `InvalidParameter` for a parameter given more than once.
pub fn repeated(name: &str) -> AuthError {
    AuthError::bad(
        "InvalidParameter",
        format!(
            "The parameter \"{name}\" is given more than once; each parameter may appear once."
        ),
    )
}

/// Every query and form-body parameter, decoded; a parameter given twice (in the query, the
/// body, or one in each) is refused, as the REST API refuses a repeated JSON member. Form
/// decoding: the Tea SDK sends spaces as `+`, the legacy SDK as `%20`; both mean a space, and a
/// literal `+` arrives as `%2B`.
pub fn collect_params(
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Params, AuthError> {
    let mut p = Params::default();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned() {
        if p.query.insert(k.clone(), v).is_some() {
            return Err(repeated(&k));
        }
    }
    p.all = p.query.clone();
    let is_form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        for (k, v) in form_urlencoded::parse(body).into_owned() {
            if p.all.insert(k.clone(), v).is_some() {
                return Err(repeated(&k));
            }
        }
    }
    Ok(p)
}

/// A request read and canonicalized, its signature not yet checked.
#[derive(Debug, Clone)]
pub struct Unverified {
    pub kind: SignatureKind,
    pub action: String,
    pub access_key_id: String,
    pub nonce: String,
    /// The request's own time (`Timestamp` / `x-acs-date`).
    pub timestamp: DateTime<Utc>,
    /// The API version the client asked for (`Version` / `x-acs-version`).
    pub version: Option<String>,
    /// Every parameter (v1: common ones included).
    params: BTreeMap<String, String>,
    /// What the client sent as its signature.
    given: String,
    /// What the server signs: quoted back in `SignatureDoesNotMatch`.
    string_to_sign: String,
}

/// An authenticated request.
#[derive(Debug, Clone)]
pub struct Verified {
    pub kind: SignatureKind,
    pub action: String,
    pub access_key_id: String,
    pub nonce: String,
    pub timestamp: DateTime<Utc>,
    pub version: Option<String>,
    /// The API parameters (the common v1 parameters removed).
    pub params: BTreeMap<String, String>,
    /// v1's `Format` (`JSON`, `json`, `XML`), when sent.
    pub format: Option<String>,
}

fn check_timestamp(ts: Option<&str>, now: DateTime<Utc>) -> Result<DateTime<Utc>, AuthError> {
    let ts = ts.ok_or_else(|| AuthError::bad("IllegalTimestamp", "The input parameter \"Timestamp\" that is mandatory for processing this request is not supplied."))?;
    let t = super::wire::parse_time(ts).ok_or_else(|| {
        AuthError::bad(
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted.",
        )
    })?;
    let skew = (now - t).num_seconds().unsigned_abs();
    if skew > WINDOW.as_secs() {
        return Err(AuthError::bad(
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired.",
        ));
    }
    Ok(t)
}

/// Reads a request: which signature, which key, the action, nonce and timestamp (refused outside
/// ±[`WINDOW`] of `now`), and the server's string-to-sign. `params` are the request's
/// parameters ([`collect_params`]): ACS3 canonicalizes the URL query's only (a form body is
/// covered by `x-acs-content-sha256`, as the spec and the Tea SDK have it); v1 signs them all.
pub fn parse(
    method: &str,
    headers: &HeaderMap,
    params: Params,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Unverified, AuthError> {
    let Params { query, all: params } = params;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(authz) = header("authorization").filter(|v| v.starts_with("ACS3-")) {
        let auth = sign::parse_acs3_authorization(authz).map_err(|_| {
            AuthError::incomplete("The request signature does not conform to Aliyun standards.")
        })?;
        let action = header("x-acs-action")
            .ok_or_else(|| AuthError::missing("Action"))?
            .to_string();
        let timestamp = check_timestamp(header("x-acs-date"), now)?;
        let body_hash = crate::crypto::sha256_hex(body);
        if header("x-acs-content-sha256").is_some_and(|h| h != body_hash) {
            return Err(AuthError::incomplete(
                "x-acs-content-sha256 does not match the body.",
            ));
        }
        let mut signed = BTreeMap::new();
        for name in &auth.signed_headers {
            let value = header(name)
                .ok_or_else(|| AuthError::incomplete(format!("signed header {name} is missing")))?;
            signed.insert(name.to_ascii_lowercase(), value.to_string());
        }
        for required in ACS3_REQUIRED {
            if !signed.contains_key(*required) {
                return Err(AuthError::incomplete(format!(
                    "header {required} must be signed"
                )));
            }
        }
        let hashed = header("x-acs-content-sha256")
            .unwrap_or(&body_hash)
            .to_string();
        let cr = sign::canonical_request_acs3(method, "/", &query, &signed, &hashed);
        return Ok(Unverified {
            kind: SignatureKind::Acs3,
            action,
            access_key_id: auth.access_key_id,
            nonce: header("x-acs-signature-nonce")
                .unwrap_or_default()
                .to_string(),
            timestamp,
            version: header("x-acs-version").map(str::to_string),
            params,
            given: auth.signature,
            string_to_sign: sign::string_to_sign_acs3(&cr),
        });
    }

    let action = params
        .get("Action")
        .cloned()
        .ok_or_else(|| AuthError::missing("Action"))?;
    let access_key_id = params
        .get("AccessKeyId")
        .cloned()
        .ok_or_else(|| AuthError::missing("AccessKeyId"))?;
    let given = params
        .get("Signature")
        .cloned()
        .ok_or_else(|| AuthError::missing("Signature"))?;
    let timestamp = check_timestamp(params.get("Timestamp").map(String::as_str), now)?;
    if params.get("SignatureMethod").map(String::as_str) != Some("HMAC-SHA1") {
        return Err(AuthError::bad(
            "InvalidParameter",
            "SignatureMethod must be HMAC-SHA1.",
        ));
    }
    let nonce = params
        .get("SignatureNonce")
        .cloned()
        .ok_or_else(|| AuthError::missing("SignatureNonce"))?;
    let mut signed = params.clone();
    signed.remove("Signature");
    Ok(Unverified {
        kind: SignatureKind::V1,
        action,
        access_key_id,
        nonce,
        timestamp,
        version: params.get("Version").cloned(),
        string_to_sign: sign::string_to_sign_v1(method, &signed),
        params,
        given,
    })
}

impl Unverified {
    /// The string-to-sign the server computed (no secret in it).
    pub fn string_to_sign(&self) -> &str {
        &self.string_to_sign
    }

    /// Checks the signature with the key's secret (constant-time comparison).
    /// `SignatureDoesNotMatch` quotes the server's string-to-sign, as MPS does (docs/mps/API.md §4.2).
    pub fn verify(self, access_key_secret: &str) -> Result<Verified, AuthError> {
        let expected = match self.kind {
            SignatureKind::V1 => sign::sign_v1(access_key_secret, &self.string_to_sign),
            SignatureKind::Acs3 => sign::sign_acs3(access_key_secret, &self.string_to_sign),
        };
        if !crate::secret::constant_time_eq(expected.as_bytes(), self.given.as_bytes()) {
            return Err(AuthError::bad(
                "SignatureDoesNotMatch",
                format!(
                    "Specified signature is not matched with our calculation. server string to sign is:{}",
                    self.string_to_sign
                ),
            ));
        }
        let (params, format) = match self.kind {
            SignatureKind::V1 => {
                let format = self.params.get("Format").cloned();
                let api = self
                    .params
                    .into_iter()
                    .filter(|(k, _)| !COMMON.contains(&k.as_str()))
                    .collect();
                (api, format)
            }
            SignatureKind::Acs3 => (self.params, None),
        };
        Ok(Verified {
            kind: self.kind,
            action: self.action,
            access_key_id: self.access_key_id,
            nonce: self.nonce,
            timestamp: self.timestamp,
            version: self.version,
            params,
            format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parameters as they arrive in a URL query.
    fn wire(p: BTreeMap<String, String>) -> Params {
        Params {
            query: p.clone(),
            all: p,
        }
    }

    fn v1_params(secret: &str, method: &str, ts: &str) -> BTreeMap<String, String> {
        let mut p: BTreeMap<String, String> = [
            ("Action", "QuerySnapshotJobList"),
            ("Version", "2014-06-18"),
            ("Format", "JSON"),
            ("AccessKeyId", "id"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", "n-1"),
            ("Timestamp", ts),
            ("SnapshotJobIds", "a,b"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let sig = sign::sign_v1(secret, &sign::string_to_sign_v1(method, &p));
        p.insert("Signature".into(), sig);
        p
    }

    #[test]
    fn v1_round_trip_and_errors() {
        let now = Utc::now();
        let ts = super::super::wire::format_time(now);
        let p = v1_params("s", "POST", &ts);
        let u = parse("POST", &HeaderMap::new(), wire(p.clone()), b"", now).unwrap();
        assert_eq!(u.access_key_id, "id");
        let v = u.verify("s").unwrap();
        assert_eq!(v.action, "QuerySnapshotJobList");
        assert_eq!(v.params.keys().collect::<Vec<_>>(), ["SnapshotJobIds"]);
        assert_eq!(v.format.as_deref(), Some("JSON"));

        let e = parse("POST", &HeaderMap::new(), wire(p.clone()), b"", now)
            .unwrap()
            .verify("other")
            .unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");
        assert!(e.message.contains("server string to sign is:POST&%2F&"));
        // The method is signed.
        let e = parse("GET", &HeaderMap::new(), wire(p), b"", now)
            .unwrap()
            .verify("s")
            .unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");

        let old = super::super::wire::format_time(now - chrono::Duration::minutes(16));
        let e = parse(
            "POST",
            &HeaderMap::new(),
            wire(v1_params("s", "POST", &old)),
            b"",
            now,
        )
        .unwrap_err();
        assert_eq!(e.code, "InvalidTimeStamp.Expired");
        let mut p = v1_params("s", "POST", &ts);
        p.remove("SignatureNonce");
        let e = parse("POST", &HeaderMap::new(), wire(p), b"", now).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (400, "MissingParameter"),
            "{}",
            e.message
        );
    }

    /// An ACS3 request with its parameters in a form body, signed per the spec (canonical query:
    /// the URL's only; the body in `x-acs-content-sha256`); the signature was computed apart, by
    /// a Python script of the spec (hashlib/hmac), not by `sign.rs`.
    #[test]
    fn acs3_form_body_vector() {
        let body =
            b"Input=%7B%22Bucket%22%3A%22media%22%7D&SnapshotConfig=%7B%22Time%22%3A%220%22%7D";
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("host", "127.0.0.1:8080"),
            ("x-acs-action", "SubmitSnapshotJob"),
            ("x-acs-date", "2026-12-07T21:00:00Z"),
            ("x-acs-signature-nonce", "n-form-1"),
            ("x-acs-version", "2014-06-18"),
            ("x-acs-content-sha256", "ee96df4a593f9081440db86951e5777ebdd1cf8aaa195875b40bd78f2ac3d1fb"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", "ACS3-HMAC-SHA256 Credential=id,SignedHeaders=content-type;host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=f50d5ffed6f99ef289bbc1c253242970f6e7fc667d5b9db2f5c5d3d98efdd3a7"),
        ] {
            h.insert(k, v.parse().unwrap());
        }
        let now = super::super::wire::parse_time("2026-12-07T21:00:00Z").unwrap();
        let query = Some("PipelineId=9bad3801a2c561c22c4df9c6abcd0000");
        let p = collect_params(query, &h, body).unwrap();
        let v = parse("POST", &h, p, body, now)
            .unwrap()
            .verify("testsecret")
            .unwrap();
        assert_eq!(v.kind, SignatureKind::Acs3);
        assert_eq!(v.params["Input"], r#"{"Bucket":"media"}"#);
        assert_eq!(v.params["SnapshotConfig"], r#"{"Time":"0"}"#);
        assert_eq!(v.params["PipelineId"], "9bad3801a2c561c22c4df9c6abcd0000");
        // A parameter given twice, in the query or across query and body, is refused.
        let e = collect_params(Some("A=1&A=2"), &HeaderMap::new(), b"").unwrap_err();
        assert_eq!((e.code, e.status), ("InvalidParameter", 400));
        assert!(collect_params(Some("Input=x"), &h, body).is_err());
    }
}
