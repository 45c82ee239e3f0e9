//! OSS signature V1 (HMAC-SHA1), as the OSS API reference and `oss2`'s `ProviderAuth` define
//! it: `base64(HMAC-SHA1(secret, VERB\nContent-MD5\nContent-Type\nDate\n
//! CanonicalizedOSSHeaders + CanonicalizedResource))`, sent in `Authorization: OSS AK:sig`, or
//! in a presigned URL's query (`OSSAccessKeyId`, `Expires` in place of the date, `Signature`).
//! `CanonicalizedResource` is `/<bucket>/<raw key>` plus the sub-resources of the query
//! (`?acl`, `response-content-type=…`, sorted). Also PostObject's V1 `Signature` (over the
//! base64 policy).

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::{ObjectRequest, OssError, SecretFor};
use crate::crypto::percent_encode;
use crate::domain::OssObject;
use crate::secret::{constant_time_eq, Secret};

/// Query parameters that are part of the signed resource (`oss2`'s list, the ones an object
/// request can carry).
const SUBRESOURCES: &[&str] = &[
    "acl",
    "append",
    "callback",
    "callback-var",
    "objectMeta",
    "partNumber",
    "position",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "security-token",
    "symlink",
    "tagging",
    "uploadId",
    "uploads",
    "versionId",
    "x-oss-process",
];

/// How long a V1 `Date` may be off the store's clock.
const MAX_SKEW_S: i64 = 15 * 60;

fn hmac_sha1_b64(secret: &str, data: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `CanonicalizedOSSHeaders`: every `x-oss-*` header, lower-case, sorted, `name:value\n`.
pub fn canonical_oss_headers(headers: &[(String, String)]) -> String {
    let mut h: Vec<(String, &str)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .filter(|(k, _)| k.starts_with("x-oss-"))
        .collect();
    h.sort();
    h.iter().map(|(k, v)| format!("{k}:{v}\n")).collect()
}

/// `CanonicalizedResource`: `/<bucket>/<key>` and the query's sub-resources.
pub fn canonical_resource(bucket: &str, key: &str, query: &[(String, String)]) -> String {
    let mut sub: Vec<(&str, &str)> = query
        .iter()
        .filter(|(k, _)| SUBRESOURCES.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    sub.sort();
    let mut s = format!("/{bucket}/{key}");
    for (i, (k, v)) in sub.iter().enumerate() {
        s.push(if i == 0 { '?' } else { '&' });
        s.push_str(k);
        if !v.is_empty() {
            s.push('=');
            s.push_str(v);
        }
    }
    s
}

/// The V1 string to sign. `date` is the `Date` header, or `Expires` for a presigned URL.
pub fn string_to_sign(
    verb: &str,
    content_md5: &str,
    content_type: &str,
    date: &str,
    canonical_headers: &str,
    resource: &str,
) -> String {
    format!("{verb}\n{content_md5}\n{content_type}\n{date}\n{canonical_headers}{resource}")
}

/// The V1 signature (base64) of a string to sign.
pub fn sign(secret: &Secret, string_to_sign: &str) -> String {
    hmac_sha1_b64(secret.expose(), string_to_sign)
}

/// PostObject V1: `Signature = base64(HMAC-SHA1(secret, base64(policy)))`.
pub fn sign_policy(secret: &Secret, policy_b64: &str) -> String {
    hmac_sha1_b64(secret.expose(), policy_b64)
}

fn request_string(r: &ObjectRequest<'_>, date: &str) -> String {
    string_to_sign(
        r.method,
        r.header("content-md5").unwrap_or(""),
        r.header("content-type").unwrap_or(""),
        date,
        &canonical_oss_headers(r.headers),
        &canonical_resource(r.bucket, r.key, r.query),
    )
}

fn secret_of(secret_for: SecretFor<'_>, id: &str) -> Result<Secret, OssError> {
    secret_for(id).ok_or_else(OssError::unknown_key)
}

/// Verifies `Authorization: OSS <id>:<signature>`; answers the key id. The date is
/// `x-oss-date` when present, else `Date` (as `oss2` signs), at most 15 minutes off.
pub fn verify_header(
    r: &ObjectRequest<'_>,
    authorization: &str,
    secret_for: SecretFor<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, OssError> {
    let (id, sig) = authorization
        .strip_prefix("OSS ")
        .and_then(|s| s.rsplit_once(':'))
        .filter(|(id, sig)| !id.is_empty() && !sig.is_empty())
        .ok_or_else(|| OssError::invalid_argument("Authorization header is invalid."))?;
    let date = r
        .header("x-oss-date")
        .or_else(|| r.header("date"))
        .ok_or_else(|| OssError::access_denied("Date header is missing."))?;
    let t = chrono::DateTime::parse_from_rfc2822(date)
        .map_err(|_| OssError::access_denied(format!("Invalid date format: {date}")))?;
    if (now.timestamp() - t.timestamp()).abs() > MAX_SKEW_S {
        return Err(OssError::new(
            403,
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
        ));
    }
    let secret = secret_of(secret_for, id)?;
    let expected = sign(&secret, &request_string(r, date));
    if !constant_time_eq(expected.as_bytes(), sig.as_bytes()) {
        return Err(OssError::signature_mismatch());
    }
    Ok(id.to_string())
}

/// Verifies a V1 presigned URL (`OSSAccessKeyId`, `Expires`, `Signature` in the query); answers
/// the key id. An expired URL is `AccessDenied`, as on OSS.
pub fn verify_query(
    r: &ObjectRequest<'_>,
    secret_for: SecretFor<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, OssError> {
    let (Some(id), Some(expires), Some(sig)) = (
        r.param("OSSAccessKeyId"),
        r.param("Expires"),
        r.param("Signature"),
    ) else {
        return Err(OssError::access_denied(
            "Presigned URLs need OSSAccessKeyId, Expires and Signature.",
        ));
    };
    let exp: i64 = expires
        .parse()
        .map_err(|_| OssError::access_denied("Expires is not a number of seconds."))?;
    if exp < now.timestamp() {
        return Err(OssError::access_denied("Request has expired."));
    }
    let secret = secret_of(secret_for, id)?;
    let expected = sign(&secret, &request_string(r, expires));
    if !constant_time_eq(expected.as_bytes(), sig.as_bytes()) {
        return Err(OssError::signature_mismatch());
    }
    Ok(id.to_string())
}

/// OSS V1 query-string presigning for output links (OSS docs, "Add signatures to a URL"):
/// `Signature = base64(HMAC-SHA1(secret, VERB\nContent-MD5\nContent-Type\nExpires\n
/// /<bucket>/<raw key>))`.
///
/// With a temporary credential, its token rides in the URL as `security-token` (a signed
/// sub-resource) and the URL never outlives the token.
#[derive(Debug, Clone)]
pub struct Presigner {
    pub credentials: crate::credentials::Credentials,
    pub ttl_s: u64,
}

impl Presigner {
    /// A presigner with a long-lived key pair.
    pub fn with_key(access_key_id: &str, access_key_secret: Secret, ttl_s: u64) -> Self {
        Self {
            credentials: crate::credentials::Credentials::key(access_key_id, access_key_secret),
            ttl_s,
        }
    }

    /// The signature of a request without Content-MD5 or OSS headers, as sent in the URL
    /// (percent-encoded), with the current credential.
    pub fn signature(&self, verb: &str, content_type: &str, expires: i64, o: &OssObject) -> String {
        signature_with(&self.credentials.current(), verb, content_type, expires, o)
    }

    /// A GET URL valid until `expires` (Unix seconds), or until the token expires if sooner.
    pub fn get_url(&self, o: &OssObject, expires: i64) -> String {
        let c = self.credentials.current();
        let expires = match c.expiration {
            Some(e) => expires.min(e.timestamp()),
            None => expires,
        };
        let token = c
            .token()
            .map(|t| format!("&security-token={}", percent_encode(t)))
            .unwrap_or_default();
        format!(
            "{}?OSSAccessKeyId={}&Expires={expires}&Signature={}{token}",
            crate::domain::outputs::oss_url(o),
            percent_encode(&c.access_key_id),
            signature_with(&c, "GET", "", expires, o)
        )
    }

    /// A URL for `verb` on `object_url` (the object's URL: path-style or virtual-hosted) with
    /// the sub-resources `sub` (e.g. `partNumber` and `uploadId` of an `UploadPart`) signed in,
    /// no Content-Type, valid until `expires` (Unix seconds).
    pub fn url_with(
        &self,
        verb: &str,
        object_url: &str,
        o: &OssObject,
        sub: &[(String, String)],
        expires: i64,
    ) -> String {
        let c = self.credentials.current();
        let expires = match c.expiration {
            Some(e) => expires.min(e.timestamp()),
            None => expires,
        };
        // A temporary credential's token is a signed sub-resource, as in `get_url`.
        let mut sub = sub.to_vec();
        if let Some(t) = c.token() {
            sub.push(("security-token".to_string(), t.to_string()));
        }
        let to_sign = string_to_sign(
            verb,
            "",
            "",
            &expires.to_string(),
            "",
            &canonical_resource(&o.bucket, &o.object, &sub),
        );
        let signature = percent_encode(&sign(&c.access_key_secret, &to_sign));
        let mut url = format!("{object_url}?");
        for (k, v) in &sub {
            url.push_str(&format!("{}={}&", percent_encode(k), percent_encode(v)));
        }
        format!(
            "{url}OSSAccessKeyId={}&Expires={expires}&Signature={signature}",
            percent_encode(&c.access_key_id)
        )
    }
}

fn signature_with(
    c: &crate::credentials::Credential,
    verb: &str,
    content_type: &str,
    expires: i64,
    o: &OssObject,
) -> String {
    let sub: Vec<(String, String)> = c
        .token()
        .map(|t| vec![("security-token".to_string(), t.to_string())])
        .unwrap_or_default();
    let to_sign = string_to_sign(
        verb,
        "",
        content_type,
        &expires.to_string(),
        "",
        &canonical_resource(&o.bucket, &o.object, &sub),
    );
    percent_encode(&sign(&c.access_key_secret, &to_sign))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("EXAMPLESECRETKEY0123456789abcdef")
    }

    /// The notes' vectors (`tests/data/oss-vectors.json`, `presign_v1`), verified with PyPI
    /// `oss2` 2.19.1 `Bucket.sign_url`.
    #[test]
    fn v1_presign_matches_oss2() {
        let p = Presigner::with_key("LTAI5tEXAMPLE", secret(), 3600);
        let o = OssObject {
            location: "oss-cn-hangzhou".into(),
            bucket: "example-bucket".into(),
            object: "uploads/team-a/a b.mp4".into(),
        };
        assert_eq!(
            p.signature("PUT", "video/mp4", 1_704_114_000, &o),
            "647d1nGyG9%2BcP6Q3W5296RvzGDY%3D"
        );
        assert_eq!(
            p.signature("GET", "", 1_704_114_000, &o),
            "XCI0Cbj6FFFRTAqyDlFqwmDPUx4%3D"
        );
        // oss2 writes the key's `/` as %2F; both name the same object, and the signature
        // covers the raw key.
        assert_eq!(
            p.get_url(&o, 1_704_114_000),
            "https://example-bucket.oss-cn-hangzhou.aliyuncs.com/uploads/team-a/a%20b.mp4?OSSAccessKeyId=LTAI5tEXAMPLE&Expires=1704114000&Signature=XCI0Cbj6FFFRTAqyDlFqwmDPUx4%3D"
        );
    }

    /// The presigned PUT of the vector verifies, and fails once anything signed changes.
    #[test]
    fn presigned_query_verifies_and_expires() {
        let now = chrono::DateTime::from_timestamp(1_704_110_000, 0).unwrap();
        let query = vec![
            ("OSSAccessKeyId".to_string(), "LTAI5tEXAMPLE".to_string()),
            ("Expires".to_string(), "1704114000".to_string()),
            (
                "Signature".to_string(),
                "647d1nGyG9+cP6Q3W5296RvzGDY=".to_string(),
            ),
        ];
        let headers = vec![("content-type".to_string(), "video/mp4".to_string())];
        let r = ObjectRequest {
            method: "PUT",
            bucket: "example-bucket",
            key: "uploads/team-a/a b.mp4",
            query: &query,
            headers: &headers,
        };
        let keys = |id: &str| (id == "LTAI5tEXAMPLE").then(secret);
        assert_eq!(verify_query(&r, &keys, now).unwrap(), "LTAI5tEXAMPLE");
        let other = ObjectRequest {
            key: "uploads/x",
            ..r.clone()
        };
        assert_eq!(
            verify_query(&other, &keys, now).unwrap_err().code,
            "SignatureDoesNotMatch"
        );
        let later = chrono::DateTime::from_timestamp(1_704_114_001, 0).unwrap();
        assert_eq!(
            verify_query(&r, &keys, later).unwrap_err().code,
            "AccessDenied"
        );
        let nobody = |_: &str| None;
        assert_eq!(
            verify_query(&r, &nobody, now).unwrap_err().code,
            "InvalidAccessKeyId"
        );
    }

    #[test]
    fn sub_resources_are_sorted_into_the_resource() {
        let q = vec![
            (
                "response-content-type".to_string(),
                "image/jpeg".to_string(),
            ),
            ("acl".to_string(), String::new()),
            ("foo".to_string(), "bar".to_string()),
        ];
        assert_eq!(
            canonical_resource("b", "k/x.jpg", &q),
            "/b/k/x.jpg?acl&response-content-type=image/jpeg"
        );
    }

    /// PostObject V1 over the notes' policy (`tests/data/oss-vectors.json`, `post_v4`).
    #[test]
    fn post_policy_v1_signature_vector() {
        let v = crate::oss::post_policy::tests::vectors();
        let policy_b64 = base64::engine::general_purpose::STANDARD
            .encode(v["post_v4"]["policy_json"].as_str().unwrap());
        assert_eq!(
            sign_policy(&secret(), &policy_b64),
            v["post_v4"]["v1_signature"].as_str().unwrap()
        );
    }
}
