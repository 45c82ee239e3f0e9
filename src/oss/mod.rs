//! OSS (Alibaba Cloud Object Storage Service) signing: the one home of every OSS signature
//! snapgate makes or checks. The gateway signs with it (PostObject forms for browser uploads,
//! presigned output links, a signed `HEAD`), and the emulator's local object store verifies
//! with the same code, so a mistake cannot hide on one side.
//!
//! - `v1.rs`: the V1 HMAC-SHA1 signature (`Authorization: OSS AK:sig`, and presigned query
//!   URLs: `Presigner`), signing and verification.
//! - `v4.rs`: the V4 `OSS4-HMAC-SHA256` header signature (signing key, canonical request),
//!   signing, verification, and `head_object`.
//! - `post_policy.rs`: PostObject forms with a V4 policy: `sign_post` (gateway) and
//!   `verify_post` (the policy conditions and the signature, as OSS checks them).
//! - `multipart.rs`: the gateway's multipart client (initiate, list, complete, abort; V4) and
//!   the part plan.
//! - `callback.rs`: upload callbacks: the `callback` field, the body's variables, the RSA-MD5
//!   signature (`sign` for the emulator, `verify` for the gateway) and the public-key-URL rule.
//!
//! Sources: the OSS API reference (PostObject, Callback, "Add signatures to a URL", signature
//! version 4) and the official Python SDK `oss2` (its `auth.py`); the vectors in the unit tests
//! were recomputed with those algorithms (see `tests/data/oss-vectors.json`).

pub mod callback;
pub mod multipart;
pub mod post_policy;
pub mod v1;
pub mod v4;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::Secret;

/// An OSS key pair, and the STS token of a temporary one (sent as `x-oss-security-token`, or
/// `security-token` in a presigned URL or a PostObject form).
#[derive(Debug, Clone)]
pub struct OssCredentials {
    pub access_key_id: String,
    pub access_key_secret: Secret,
    pub security_token: Option<Secret>,
}

impl From<&crate::credentials::Credential> for OssCredentials {
    fn from(c: &crate::credentials::Credential) -> Self {
        Self {
            access_key_id: c.access_key_id.clone(),
            access_key_secret: c.access_key_secret.clone(),
            security_token: c.security_token.clone(),
        }
    }
}

/// The header that carries a temporary credential's token on a signed OSS request.
pub const SECURITY_TOKEN_HEADER: &str = "x-oss-security-token";

/// An OSS error answer: HTTP status, OSS's `Code` and a message (OSS's own wording where it is
/// known). The emulator renders it as OSS's XML error body; the gateway reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OssError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl OssError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }

    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new(403, "AccessDenied", message)
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidArgument", message)
    }

    pub fn signature_mismatch() -> Self {
        Self::new(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
        )
    }

    pub fn unknown_key() -> Self {
        Self::new(
            403,
            "InvalidAccessKeyId",
            "The OSS Access Key Id you provided does not exist in our records.",
        )
    }

    /// OSS's XML error body for this error.
    pub fn to_xml(&self, request_id: &str, host_id: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n  <Code>{}</Code>\n  <Message>{}</Message>\n  <RequestId>{}</RequestId>\n  <HostId>{}</HostId>\n</Error>\n",
            xml_escape(&self.code),
            xml_escape(&self.message),
            xml_escape(request_id),
            xml_escape(host_id)
        )
    }
}

impl std::fmt::Display for OssError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OSS {} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for OssError {}

/// Escapes text for an XML element.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Which key secrets a verifier knows (an access key id to its secret).
pub type SecretFor<'a> = &'a dyn Fn(&str) -> Option<Secret>;

/// How a verified request was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authenticated {
    /// No signature at all (allowed only where the bucket is public-read-write).
    Anonymous,
    /// Signed by this access key id.
    Key(String),
}

/// A plain object request as a server sees it, for verification: the bucket and the decoded
/// key (path-style or virtual-hosted alike), the decoded query pairs in order, and the headers
/// with lower-case names.
#[derive(Debug, Clone)]
pub struct ObjectRequest<'a> {
    pub method: &'a str,
    pub bucket: &'a str,
    pub key: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
}

impl ObjectRequest<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Verifies a PUT/GET/HEAD/... object request signed in any way OSS accepts here: a V1
/// `Authorization: OSS …` header, a V1 presigned query (`OSSAccessKeyId`, `Expires`,
/// `Signature`), or a V4 `Authorization: OSS4-HMAC-SHA256 …` header. A request with none of
/// them is `Anonymous` (the caller decides whether that is allowed). `region`: the region V4
/// signatures must name; `None` takes the one in the credential (a store that stands for every
/// region).
pub fn verify_request(
    r: &ObjectRequest<'_>,
    secret_for: SecretFor<'_>,
    region: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Authenticated, OssError> {
    let auth = r.header("authorization");
    let presigned_v1 = r.param("OSSAccessKeyId").is_some() || r.param("Signature").is_some();
    let presigned_v4 = r.param("x-oss-signature-version").is_some();
    if auth.is_some() && (presigned_v1 || presigned_v4) {
        return Err(OssError::invalid_argument(
            "Only one auth mechanism allowed; only the X-OSS-Signature query parameter or the Authorization header should be specified.",
        ));
    }
    match auth {
        Some(a) if a.starts_with(v4::ALGORITHM) => {
            v4::verify_request(r, a, secret_for, region, now).map(Authenticated::Key)
        }
        Some(a) if a.starts_with("OSS ") => {
            v1::verify_header(r, a, secret_for, now).map(Authenticated::Key)
        }
        Some(_) => Err(OssError::invalid_argument(
            "Authorization header is invalid.",
        )),
        None if presigned_v1 => v1::verify_query(r, secret_for, now).map(Authenticated::Key),
        None if presigned_v4 => {
            v4::verify_query(r, secret_for, region, now).map(Authenticated::Key)
        }
        None => Ok(Authenticated::Anonymous),
    }
}

pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// OSS's URI encoding (`oss2`'s `v4_uri_encode`): UTF-8 bytes, `A-Z a-z 0-9 _ - ~ .` kept,
/// `/` kept when `keep_slash`, everything else `%XX` upper-case.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'~' | b'.') {
            out.push(b as char);
        } else if keep_slash && b == b'/' {
            out.push('/');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A bucket and an object key from a URL: path-style (`http://127.0.0.1:8081/<bucket>/<key>`,
/// for IP addresses and `localhost`, as `oss2` does) or virtual-hosted
/// (`https://<bucket>.oss-<region>.aliyuncs.com/<key>`). The key is percent-decoded.
pub fn bucket_and_key(url: &reqwest::Url) -> Option<(String, String)> {
    let host = url.host_str()?;
    let path = url.path().trim_start_matches('/');
    let path_style =
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[');
    let (bucket, raw_key) = if path_style {
        let (b, k) = path.split_once('/').unwrap_or((path, ""));
        (b.to_string(), k)
    } else {
        (host.split('.').next()?.to_string(), path)
    };
    let key = crate::crypto::percent_decode(raw_key)?;
    Some((bucket, key))
}

/// `x-oss-date`'s format: `YYYYMMDDTHHMMSSZ`.
pub fn v4_timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

pub(crate) fn parse_v4_timestamp(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_encoding_is_oss2s() {
        assert_eq!(uri_encode("/b/a b/ü+x", true), "/b/a%20b/%C3%BC%2Bx");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
    }

    #[test]
    fn bucket_and_key_from_both_url_styles() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert_eq!(
            bucket_and_key(&u("http://127.0.0.1:8081/media/a/b%20c.mp4")),
            Some(("media".into(), "a/b c.mp4".into()))
        );
        assert_eq!(
            bucket_and_key(&u(
                "https://example-bucket.oss-cn-hangzhou.aliyuncs.com/uploads%2Fx.mp4"
            )),
            Some(("example-bucket".into(), "uploads/x.mp4".into()))
        );
    }
}
