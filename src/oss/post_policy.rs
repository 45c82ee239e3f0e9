//! PostObject forms (browser uploads straight to OSS, OSS API reference "PostObject" and
//! "signature version 4"): the gateway signs a policy with `sign_post`; the emulator's store
//! checks a posted form with `verify_post`, as OSS does.
//!
//! The policy is base64 of `{"expiration": "…Z", "conditions": [...]}`. `sign_post` pins the
//! bucket, the exact key (`["eq","$key",…]`), a `content-length-range`, the V4 fields
//! (`x-oss-signature-version`, `x-oss-credential`, `x-oss-date`), `success_action_status`
//! and the `callback` (so a browser can change none of them), and signs it with V4:
//! `x-oss-signature = hex(HMAC256(signing key, base64(policy)))`. `verify_post` also takes
//! V1 forms (`OSSAccessKeyId` + `Signature = base64(HMAC-SHA1(secret, base64(policy)))`) and
//! anonymous ones (no policy and no signature: a public-read-write bucket).
//!
//! Checked as OSS does (field names case-insensitive): the signature, the expiration, the
//! x-oss-date (at most 15 minutes ahead, at most 7 days old), every condition — `{"f": v}`,
//! `["eq"|"starts-with", "$f", v]`, `["in"|"not-in", "$f", [..]]`,
//! `["content-length-range", min, max]` — against the form, and the uploaded size. Not
//! checked: that every extra form field is named by a condition (OSS does not demand it).

use base64::Engine;

use super::callback::CallbackSpec;
use super::v4::{self, Credential, ALGORITHM};
use super::{OssCredentials, OssError, SecretFor};
use crate::secret::{constant_time_eq, Secret};

const B64: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::STANDARD;

/// OSS's limit on one PostObject's file.
pub const MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// What a PostObject policy allows.
#[derive(Debug, Clone)]
pub struct PostPolicy {
    pub bucket: String,
    /// The exact key, pinned with `["eq","$key",…]`.
    pub key: String,
    pub content_length: std::ops::RangeInclusive<u64>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub success_action_status: Option<u16>,
    pub callback: Option<CallbackSpec>,
}

/// A signed form: POST `multipart/form-data` to `url` with `fields` in this order, then the
/// `file` field last.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PostForm {
    pub url: String,
    pub fields: Vec<(String, String)>,
}

fn expiration(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Signs a PostObject V4 form for `bucket_url` (`https://<bucket>.oss-<region>.aliyuncs.com`,
/// or the local store's `http://127.0.0.1:8081/<bucket>`).
pub fn sign_post(
    creds: &OssCredentials,
    region: &str,
    bucket_url: &str,
    p: &PostPolicy,
    now: chrono::DateTime<chrono::Utc>,
) -> PostForm {
    let date = super::v4_timestamp(now);
    let credential = format!("{}/{}", creds.access_key_id, v4::scope(&date[..8], region));
    let mut conditions = vec![
        serde_json::json!({"bucket": p.bucket}),
        serde_json::json!(["eq", "$key", p.key]),
        serde_json::json!([
            "content-length-range",
            p.content_length.start(),
            p.content_length.end()
        ]),
        serde_json::json!({"x-oss-signature-version": ALGORITHM}),
        serde_json::json!({"x-oss-credential": credential}),
        serde_json::json!({"x-oss-date": date}),
    ];
    let status = p.success_action_status.map(|s| s.to_string());
    let callback = p.callback.as_ref().map(CallbackSpec::encode);
    if let Some(t) = &creds.security_token {
        conditions.push(serde_json::json!({"x-oss-security-token": t.expose()}));
    }
    if let Some(s) = &status {
        conditions.push(serde_json::json!({"success_action_status": s}));
    }
    if let Some(c) = &callback {
        conditions.push(serde_json::json!({"callback": c}));
    }
    let policy = serde_json::json!({
        "expiration": expiration(p.expires_at),
        "conditions": conditions,
    });
    let policy_b64 = B64.encode(policy.to_string());
    let signature = v4::signature(&creds.access_key_secret, &date[..8], region, &policy_b64);
    let mut fields = vec![
        ("key".to_string(), p.key.clone()),
        ("policy".to_string(), policy_b64),
        ("x-oss-signature-version".to_string(), ALGORITHM.to_string()),
        ("x-oss-credential".to_string(), credential),
        ("x-oss-date".to_string(), date),
        ("x-oss-signature".to_string(), signature),
    ];
    if let Some(t) = &creds.security_token {
        fields.push((
            super::SECURITY_TOKEN_HEADER.to_string(),
            t.expose().to_string(),
        ));
    }
    if let Some(s) = status {
        fields.push(("success_action_status".to_string(), s));
    }
    if let Some(c) = callback {
        fields.push(("callback".to_string(), c));
    }
    PostForm {
        url: bucket_url.to_string(),
        fields,
    }
}

/// A form that passed every check but the size (see `VerifiedPost::check_size`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPost {
    pub key: String,
    /// `None`: an anonymous form (no policy, no signature).
    pub access_key_id: Option<String>,
    /// The sizes the policy allows (`0..=5 GiB` without a `content-length-range`).
    pub content_length: std::ops::RangeInclusive<u64>,
    /// 200, 201 or 204 (OSS's default; any other value is 204 too).
    pub success_action_status: u16,
    pub callback: Option<CallbackSpec>,
    /// The form's `x:<name>` fields, for the callback body.
    pub custom: Vec<(String, String)>,
    /// `x-oss-content-type`, else `Content-Type`, of the form (not of the file part).
    pub content_type: Option<String>,
}

impl VerifiedPost {
    /// The uploaded size against the policy's `content-length-range`.
    pub fn check_size(&self, size: u64) -> Result<(), OssError> {
        if size > *self.content_length.end() {
            return Err(OssError::new(
                400,
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size.",
            ));
        }
        if size < *self.content_length.start() {
            return Err(OssError::new(
                400,
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed size.",
            ));
        }
        Ok(())
    }
}

/// Checks a posted form (`fields`: every field but `file`, in order) and the uploaded size as
/// OSS does; `Err` carries OSS's error code and message. `region`: the region a V4 signature
/// must name.
pub fn verify_post(
    fields: &[(String, String)],
    secret_for: SecretFor<'_>,
    region: &str,
    bucket: &str,
    size: u64,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<VerifiedPost, OssError> {
    let v = verify_post_fields(fields, secret_for, Some(region), bucket, now)?;
    v.check_size(size)?;
    Ok(v)
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn condition_failed(c: &serde_json::Value) -> OssError {
    OssError::access_denied(format!(
        "Invalid according to Policy: Policy Condition failed: {c}"
    ))
}

fn bad_policy(why: &str) -> OssError {
    OssError::new(
        400,
        "InvalidPolicyDocument",
        format!("Invalid Policy: {why}"),
    )
}

/// Everything `verify_post` checks but the size, before the file is read: a store can then
/// stop reading beyond the allowed size. `region`: `None` takes the credential's.
pub fn verify_post_fields(
    fields: &[(String, String)],
    secret_for: SecretFor<'_>,
    region: Option<&str>,
    bucket: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<VerifiedPost, OssError> {
    let mut verified = read_fields(fields)?;
    // Who signed (or nobody), and with which algorithm.
    let Some((policy_b64, access_key_id)) = authenticate(fields, secret_for, region, now)? else {
        return Ok(verified);
    };
    verified.access_key_id = Some(access_key_id);
    // The policy itself.
    let doc = policy_document(policy_b64, now)?;
    let v4 = field(fields, "x-oss-signature-version").is_some();
    if let Some(range) = check_policy(&doc, fields, bucket, v4)? {
        verified.content_length = range;
    }
    Ok(verified)
}

/// The form's fields as a `VerifiedPost` not yet authenticated (`access_key_id: None`) and
/// with the default `content_length`.
fn read_fields(fields: &[(String, String)]) -> Result<VerifiedPost, OssError> {
    let key = field(fields, "key")
        .filter(|k| !k.is_empty())
        .ok_or_else(|| OssError::invalid_argument("Bucket POST must contain a field named 'key'."))?
        .to_string();
    let status = match field(fields, "success_action_status") {
        Some("200") => 200,
        Some("201") => 201,
        _ => 204,
    };
    let callback = field(fields, "callback")
        .filter(|c| !c.is_empty())
        .map(CallbackSpec::decode)
        .transpose()?;
    let custom: Vec<(String, String)> = fields
        .iter()
        .filter(|(k, _)| k.len() > 2 && k.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("x:")))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    let content_type = field(fields, "x-oss-content-type")
        .or_else(|| field(fields, "content-type"))
        .map(str::to_string);
    Ok(VerifiedPost {
        key,
        access_key_id: None,
        content_length: 0..=MAX_OBJECT_SIZE,
        success_action_status: status,
        callback,
        custom,
        content_type,
    })
}

/// Checks the form's V1 or V4 signature of its policy: `None` for an anonymous form (no policy
/// and no signature fields), else the policy (base64) and the access key id that signed it.
fn authenticate<'f>(
    fields: &'f [(String, String)],
    secret_for: SecretFor<'_>,
    region: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<(&'f str, String)>, OssError> {
    let policy = field(fields, "policy");
    let v4_version = field(fields, "x-oss-signature-version");
    let v1_id = field(fields, "OSSAccessKeyId");
    let v1_sig = field(fields, "Signature");
    match (policy, v4_version, v1_id, v1_sig) {
        (None, None, None, None) => Ok(None),
        (Some(p), Some(version), _, _) => {
            let id = authenticate_v4(fields, p, version, secret_for, region, now)?;
            Ok(Some((p, id)))
        }
        (Some(p), None, Some(id), Some(sig)) => {
            let secret: Secret = secret_for(id).ok_or_else(OssError::unknown_key)?;
            let expected = super::v1::sign_policy(&secret, p);
            if !constant_time_eq(expected.as_bytes(), sig.as_bytes()) {
                return Err(OssError::signature_mismatch());
            }
            Ok(Some((p, id.to_string())))
        }
        _ => {
            Err(OssError::invalid_argument(
                "Bucket POST must contain the fields policy, OSSAccessKeyId and Signature (V1), or policy, x-oss-signature-version, x-oss-credential, x-oss-date and x-oss-signature (V4), or none of them.",
            ))
        }
    }
}

/// A V4 form's signature of `policy_b64`, with its credential and x-oss-date (at most 15
/// minutes ahead, at most 7 days old): the access key id that signed it.
fn authenticate_v4(
    fields: &[(String, String)],
    policy_b64: &str,
    version: &str,
    secret_for: SecretFor<'_>,
    region: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, OssError> {
    if version != ALGORITHM {
        return Err(OssError::invalid_argument(format!(
            "Unsupported x-oss-signature-version {version:?}; only {ALGORITHM}."
        )));
    }
    let (Some(credential), Some(date), Some(sig)) = (
        field(fields, "x-oss-credential"),
        field(fields, "x-oss-date"),
        field(fields, "x-oss-signature"),
    ) else {
        return Err(OssError::invalid_argument(
            "A V4 PostObject must contain x-oss-credential, x-oss-date and x-oss-signature.",
        ));
    };
    let cred = Credential::parse(credential).ok_or_else(|| {
        OssError::invalid_argument(format!("Invalid x-oss-credential: {credential}"))
    })?;
    let t = super::parse_v4_timestamp(date)
        .ok_or_else(|| OssError::invalid_argument(format!("Invalid x-oss-date: {date}")))?;
    if !date.starts_with(&cred.date) {
        return Err(OssError::invalid_argument(
            "The date of x-oss-credential does not match x-oss-date.",
        ));
    }
    if t - now > chrono::Duration::minutes(15) {
        return Err(OssError::access_denied(
            "Invalid according to Request: x-oss-date is in the future.",
        ));
    }
    if now - t > chrono::Duration::days(7) {
        return Err(OssError::access_denied(
            "Invalid according to Request: x-oss-date is more than 7 days old.",
        ));
    }
    let secret = secret_for(&cred.access_key_id).ok_or_else(OssError::unknown_key)?;
    let region = region.unwrap_or(&cred.region);
    let expected = v4::signature(&secret, &cred.date, region, policy_b64);
    if !constant_time_eq(expected.as_bytes(), sig.as_bytes()) {
        return Err(OssError::signature_mismatch());
    }
    Ok(cred.access_key_id)
}

/// The policy document under `policy_b64`, if it has not expired.
fn policy_document(
    policy_b64: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<serde_json::Value, OssError> {
    let raw = B64
        .decode(policy_b64.trim())
        .map_err(|_| bad_policy("not base64"))?;
    let doc: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|_| bad_policy("not JSON"))?;
    let exp = doc
        .get("expiration")
        .and_then(|e| e.as_str())
        .ok_or_else(|| bad_policy("expiration is missing"))?;
    let exp = chrono::DateTime::parse_from_rfc3339(exp)
        .map_err(|_| bad_policy("expiration is not an ISO 8601 time"))?;
    if now > exp {
        return Err(OssError::access_denied(
            "Invalid according to Policy: Policy expired.",
        ));
    }
    Ok(doc)
}

/// Every condition of the policy `doc` against the form (and the `bucket`), and for a V4 form
/// (`v4`) that the policy pins the V4 fields: the last `content-length-range`, if any.
fn check_policy(
    doc: &serde_json::Value,
    fields: &[(String, String)],
    bucket: &str,
    v4: bool,
) -> Result<Option<std::ops::RangeInclusive<u64>>, OssError> {
    let conditions = doc
        .get("conditions")
        .and_then(|c| c.as_array())
        .ok_or_else(|| bad_policy("conditions are missing"))?;
    let value_of = |name: &str| -> String {
        if name.eq_ignore_ascii_case("bucket") {
            bucket.to_string()
        } else {
            field(fields, name).unwrap_or("").to_string()
        }
    };
    let mut content_length = None;
    let mut pinned = Vec::new();
    for c in conditions {
        match c {
            serde_json::Value::Object(m) => {
                for (name, want) in m {
                    let want = want
                        .as_str()
                        .ok_or_else(|| bad_policy("a condition value is not a string"))?;
                    if value_of(name) != want {
                        return Err(condition_failed(c));
                    }
                    pinned.push(name.to_ascii_lowercase());
                }
            }
            serde_json::Value::Array(a) => {
                let op = a
                    .first()
                    .and_then(|o| o.as_str())
                    .unwrap_or("")
                    .to_ascii_lowercase();
                if op == "content-length-range" {
                    let (Some(min), Some(max)) = (
                        a.get(1).and_then(|x| x.as_u64()),
                        a.get(2).and_then(|x| x.as_u64()),
                    ) else {
                        return Err(bad_policy("content-length-range takes two integers"));
                    };
                    content_length = Some(min..=max);
                    continue;
                }
                let name = a
                    .get(1)
                    .and_then(|n| n.as_str())
                    .and_then(|n| n.strip_prefix('$'))
                    .ok_or_else(|| bad_policy("a condition names no $field"))?;
                let have = value_of(name);
                let ok = match (op.as_str(), a.get(2)) {
                    ("eq", Some(serde_json::Value::String(w))) => &have == w,
                    ("starts-with", Some(serde_json::Value::String(w))) => {
                        have.starts_with(w.as_str())
                    }
                    ("in", Some(serde_json::Value::Array(ws))) => {
                        ws.iter().any(|w| w.as_str() == Some(&have))
                    }
                    ("not-in", Some(serde_json::Value::Array(ws))) => {
                        !ws.iter().any(|w| w.as_str() == Some(&have))
                    }
                    _ => return Err(bad_policy(&format!("unknown condition {c}"))),
                };
                if !ok {
                    return Err(condition_failed(c));
                }
                pinned.push(name.to_ascii_lowercase());
            }
            _ => return Err(bad_policy("a condition is neither an object nor an array")),
        }
    }
    if v4 {
        for f in ["x-oss-signature-version", "x-oss-credential", "x-oss-date"] {
            if !pinned.iter().any(|p| p == f) {
                return Err(bad_policy(&format!(
                    "a V4 policy must contain the condition {f}"
                )));
            }
        }
    }
    Ok(content_length)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::oss::callback;

    pub(crate) fn vectors() -> serde_json::Value {
        serde_json::from_str(include_str!("../../tests/data/oss-vectors.json")).unwrap()
    }

    fn creds() -> OssCredentials {
        OssCredentials {
            access_key_id: "LTAI5tEXAMPLE".into(),
            access_key_secret: Secret::new("EXAMPLESECRETKEY0123456789abcdef"),
            security_token: None,
        }
    }

    fn keys(id: &str) -> Option<Secret> {
        (id == "LTAI5tEXAMPLE").then(|| creds().access_key_secret)
    }

    fn t(s: &str) -> chrono::DateTime<chrono::Utc> {
        s.parse().unwrap()
    }

    /// The notes' V4 form verifies as signed (the vector's policy, signature and fields).
    #[test]
    fn the_vector_form_verifies() {
        let v = vectors();
        let p = &v["post_v4"];
        let s = |k: &str| p[k].as_str().unwrap().to_string();
        let policy = B64.encode(s("policy_json"));
        let mut fields = vec![
            ("key".to_string(), "uploads/team-a/clip.mp4".to_string()),
            ("policy".to_string(), policy),
            ("x-oss-signature-version".to_string(), ALGORITHM.to_string()),
            ("x-oss-credential".to_string(), s("x_oss_credential")),
            ("x-oss-date".to_string(), s("x_oss_date")),
            ("x-oss-signature".to_string(), s("v4_signature")),
        ];
        let now = t("2024-01-01T12:30:00Z");
        let ok = verify_post(&fields, &keys, "cn-hangzhou", "example-bucket", 10, now).unwrap();
        assert_eq!(ok.access_key_id.as_deref(), Some("LTAI5tEXAMPLE"));
        assert_eq!(ok.content_length, 1..=104_857_600);
        // The starts-with condition, the bucket, the size, the expiry.
        fields[0].1 = "uploads/team-b/clip.mp4".into();
        let e = verify_post(&fields, &keys, "cn-hangzhou", "example-bucket", 10, now).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (403, "AccessDenied"));
        fields[0].1 = "uploads/team-a/clip.mp4".into();
        let e = verify_post(&fields, &keys, "cn-hangzhou", "other-bucket", 10, now).unwrap_err();
        assert_eq!(e.code, "AccessDenied");
        let e = verify_post(&fields, &keys, "cn-hangzhou", "example-bucket", 0, now).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (400, "EntityTooSmall"));
        let e = verify_post(
            &fields,
            &keys,
            "cn-hangzhou",
            "example-bucket",
            104_857_601,
            now,
        )
        .unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (400, "EntityTooLarge"));
        let e = verify_post(
            &fields,
            &keys,
            "cn-hangzhou",
            "example-bucket",
            10,
            t("2024-01-01T13:00:01Z"),
        )
        .unwrap_err();
        assert_eq!(e.message, "Invalid according to Policy: Policy expired.");
        let e = verify_post(&fields, &keys, "cn-beijing", "example-bucket", 10, now).unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");
    }

    /// What `sign_post` makes verifies; every tampering is refused with OSS's code.
    #[test]
    fn sign_post_round_trip_and_refusals() {
        let now = t("2026-12-03T10:00:00Z");
        let spec = callback::CallbackSpec {
            url: "http://127.0.0.1:8080/callbacks/oss".into(),
            body: "object=${object}&size=${size}".into(),
            body_type: callback::FORM.into(),
        };
        let p = PostPolicy {
            bucket: "media".into(),
            key: "uploads/u1/clip.mp4".into(),
            content_length: 1..=1000,
            expires_at: now + chrono::Duration::minutes(10),
            success_action_status: Some(201),
            callback: Some(spec.clone()),
        };
        let form = sign_post(
            &creds(),
            "cn-shanghai",
            "http://127.0.0.1:8081/media",
            &p,
            now,
        );
        assert_eq!(form.url, "http://127.0.0.1:8081/media");
        let names: Vec<&str> = form.fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "key",
                "policy",
                "x-oss-signature-version",
                "x-oss-credential",
                "x-oss-date",
                "x-oss-signature",
                "success_action_status",
                "callback"
            ]
        );
        assert_eq!(
            form.fields[3].1,
            "LTAI5tEXAMPLE/20261203/cn-shanghai/oss/aliyun_v4_request"
        );
        let ok = verify_post(&form.fields, &keys, "cn-shanghai", "media", 1000, now).unwrap();
        assert_eq!(ok.key, "uploads/u1/clip.mp4");
        assert_eq!(ok.success_action_status, 201);
        assert_eq!(ok.callback, Some(spec));

        let code = |fields: &[(String, String)], size: u64, at| {
            verify_post(fields, &keys, "cn-shanghai", "media", size, at)
                .unwrap_err()
                .code
        };
        let with = |name: &str, value: &str| {
            let mut f = form.fields.clone();
            f.iter_mut().find(|(k, _)| k == name).unwrap().1 = value.to_string();
            f
        };
        assert_eq!(
            code(&with("key", "uploads/u1/other.mp4"), 10, now),
            "AccessDenied"
        );
        assert_eq!(code(&form.fields, 1001, now), "EntityTooLarge");
        assert_eq!(
            code(&form.fields, 10, now + chrono::Duration::minutes(11)),
            "AccessDenied"
        );
        // A policy widened by the browser no longer matches its signature.
        let policy = String::from_utf8(B64.decode(&form.fields[1].1).unwrap()).unwrap();
        let widened = B64.encode(policy.replace("1000", "1000000"));
        assert_eq!(
            code(&with("policy", &widened), 10, now),
            "SignatureDoesNotMatch"
        );
        let mut sig = form.fields[5].1.clone();
        sig.replace_range(0..1, if sig.starts_with('0') { "1" } else { "0" });
        assert_eq!(
            code(&with("x-oss-signature", &sig), 10, now),
            "SignatureDoesNotMatch"
        );
        assert_eq!(
            code(&with("success_action_status", "200"), 10, now),
            "AccessDenied"
        );
        let other_cb = callback::CallbackSpec {
            url: "http://evil.example/".into(),
            ..p.callback.clone().unwrap()
        };
        assert_eq!(
            code(&with("callback", &other_cb.encode()), 10, now),
            "AccessDenied"
        );
        assert_eq!(
            code(
                &with(
                    "x-oss-credential",
                    "NOBODY/20261203/cn-shanghai/oss/aliyun_v4_request"
                ),
                10,
                now
            ),
            "InvalidAccessKeyId"
        );
        let wrong_secret = |_: &str| Some(Secret::new("not-the-secret"));
        assert_eq!(
            verify_post(&form.fields, &wrong_secret, "cn-shanghai", "media", 10, now)
                .unwrap_err()
                .code,
            "SignatureDoesNotMatch"
        );
        let mut no_sig = form.fields.clone();
        no_sig.retain(|(k, _)| k != "x-oss-signature");
        assert_eq!(code(&no_sig, 10, now), "InvalidArgument");
        // Field names are case-insensitive; an anonymous form carries no policy.
        let upper: Vec<(String, String)> = form
            .fields
            .iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
            .collect();
        assert!(verify_post(&upper, &keys, "cn-shanghai", "media", 10, now).is_ok());
        let anon = vec![("key".to_string(), "a.txt".to_string())];
        assert_eq!(
            verify_post(&anon, &keys, "cn-shanghai", "media", 10, now)
                .unwrap()
                .access_key_id,
            None
        );
    }

    /// Found by fuzzing (`post_policy`): a field name of more than two bytes that starts with a
    /// multi-byte character (`日本`) panicked where custom `x:` fields are picked out.
    #[test]
    fn a_field_name_starting_with_a_multibyte_character_is_no_custom_field() {
        let fields: Vec<(String, String)> =
            [("key", "k"), ("日本", "v"), ("é:x", "v"), ("X:Tag", "t")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let v = verify_post_fields(&fields, &keys, None, "b", t("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(v.custom, [("x:tag".to_string(), "t".to_string())]);
    }
}
