//! Alibaba Cloud request signing: RPC v1 (HMAC-SHA1, `SignatureVersion=1.0`), ACS3-HMAC-SHA256,
//! and MNS's `Authorization: MNS <id>:<signature>` (HMAC-SHA1 over the verb, `Content-MD5`,
//! `Content-Type`, `Date`, the `x-mns-*` headers and the resource). Where a signature is made. Byte-for-byte what the official SDKs compute (see docs/mps/SIGNING.md and
//! `tests/it/signing_vectors.rs`).
//!
//! v1 encodes three times over for JSON parameters: an OSS object key is URL-encoded inside the
//! JSON (`/` → `%2F`), the JSON is percent-encoded as a parameter value (`%` → `%25`), and the
//! canonicalized query is percent-encoded once more in the string-to-sign (`%25` → `%2525`).

use std::collections::BTreeMap;

use crate::crypto::{hmac_sha1_base64, percent_encode, sha256_hex};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Hex SHA-256 of the empty body.
pub const EMPTY_BODY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    #[error("malformed Authorization header: {0}")]
    MalformedAuthorization(&'static str),
}

/// `k=v` pairs, sorted by the raw name in byte order, each side percent-encoded, joined by `&`.
/// An empty value is kept as `k=` (the legacy SDK signs `SignatureType=`).
pub fn canonicalized_query(params: &BTreeMap<String, String>) -> String {
    // BTreeMap<String, _> iterates in byte order of the raw names, which is what the SDKs sort by.
    params
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `METHOD&%2F&percentEncode(canonicalized query)`.
pub fn string_to_sign_v1(method: &str, params: &BTreeMap<String, String>) -> String {
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent_encode("/"),
        percent_encode(&canonicalized_query(params))
    )
}

/// Base64 of HMAC-SHA1 keyed with `secret + "&"`.
pub fn sign_v1(access_key_secret: &str, string_to_sign: &str) -> String {
    hmac_sha1_base64(format!("{access_key_secret}&").as_bytes(), string_to_sign)
}

/// The `x-mns-version` every MNS request carries.
pub const MNS_VERSION: &str = "2015-06-06";

/// MNS's string-to-sign: `VERB\nContent-MD5\nContent-Type\nDate\n` + every `x-mns-*` header
/// (name lower-cased, sorted, `name:value\n`, no spaces around `:`) + the resource (path and
/// query as sent, e.g. `/queues/q/messages?numOfMessages=16&waitseconds=10`). A missing header
/// is an empty line. `headers` are (name, value) pairs in any case and order.
pub fn string_to_sign_mns<'a>(
    method: &str,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    resource: &str,
) -> String {
    let mut md5 = "";
    let mut content_type = "";
    let mut date = "";
    let mut mns: BTreeMap<String, &str> = BTreeMap::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "content-md5" => md5 = value,
            "content-type" => content_type = value,
            "date" => date = value,
            n if n.starts_with("x-mns-") => {
                mns.insert(lower, value);
            }
            _ => {}
        }
    }
    let canonical: String = mns.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    format!(
        "{}\n{md5}\n{content_type}\n{date}\n{canonical}{resource}",
        method.to_ascii_uppercase()
    )
}

/// Base64 of HMAC-SHA1 keyed with the bare secret (MNS).
pub fn sign_mns(access_key_secret: &str, string_to_sign: &str) -> String {
    hmac_sha1_base64(access_key_secret.as_bytes(), string_to_sign)
}

/// `MNS <id>:<signature>`.
pub fn authorization_mns(access_key_id: &str, signature: &str) -> String {
    format!("MNS {access_key_id}:{signature}")
}

/// Parses `MNS <id>:<signature>` into (id, signature); never panics on hostile input.
pub fn parse_mns_authorization(value: &str) -> Result<(&str, &str), SignError> {
    let rest = value
        .trim()
        .strip_prefix("MNS ")
        .ok_or(SignError::MalformedAuthorization("not MNS"))?;
    let (id, sig) = rest
        .trim()
        .split_once(':')
        .ok_or(SignError::MalformedAuthorization(
            "no ':' between id and signature",
        ))?;
    if id.is_empty() || sig.is_empty() {
        return Err(SignError::MalformedAuthorization("empty id or signature"));
    }
    Ok((id, sig))
}

/// An HTTP `Date` (RFC 7231 IMF-fixdate), as MNS requests carry it.
pub fn http_date(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// `METHOD\npath\nquery\nheaders\nsigned-names\nhashed-payload` with every given header signed
/// (names lower-case, values trimmed, sorted by name).
pub fn canonical_request_acs3(
    method: &str,
    pathname: &str,
    query: &BTreeMap<String, String>,
    headers: &BTreeMap<String, String>,
    hashed_payload: &str,
) -> String {
    let canonical_headers: String = headers
        .iter()
        .map(|(k, v)| format!("{}:{}\n", k.to_ascii_lowercase(), v.trim()))
        .collect();
    let signed: Vec<String> = headers.keys().map(|k| k.to_ascii_lowercase()).collect();
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        method.to_ascii_uppercase(),
        pathname,
        canonicalized_query(query),
        canonical_headers,
        signed.join(";"),
        hashed_payload
    )
}

/// `ACS3-HMAC-SHA256\n` + hex SHA-256 of the canonical request.
pub fn string_to_sign_acs3(canonical_request: &str) -> String {
    format!(
        "ACS3-HMAC-SHA256\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// Hex HMAC-SHA256 keyed with the bare secret (no `&` in ACS3).
pub fn sign_acs3(access_key_secret: &str, string_to_sign: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(access_key_secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// `ACS3-HMAC-SHA256 Credential=<id>,SignedHeaders=<a;b>,Signature=<hex>`.
pub fn authorization_acs3(
    access_key_id: &str,
    headers: &BTreeMap<String, String>,
    signature: &str,
) -> String {
    let signed: Vec<String> = headers.keys().map(|k| k.to_ascii_lowercase()).collect();
    format!(
        "ACS3-HMAC-SHA256 Credential={access_key_id},SignedHeaders={},Signature={signature}",
        signed.join(";")
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acs3Authorization {
    pub access_key_id: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Parses an ACS3 `Authorization` value; never panics on hostile input.
pub fn parse_acs3_authorization(value: &str) -> Result<Acs3Authorization, SignError> {
    let rest = value
        .trim()
        .strip_prefix("ACS3-HMAC-SHA256")
        .ok_or(SignError::MalformedAuthorization("not ACS3-HMAC-SHA256"))?;
    if !rest.starts_with(' ') {
        return Err(SignError::MalformedAuthorization("no credentials"));
    }
    let (mut id, mut headers, mut sig) = (None, None, None);
    for part in rest.trim().split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(SignError::MalformedAuthorization("part without '='"))?;
        match k {
            "Credential" => id = Some(v.to_string()),
            "SignedHeaders" => headers = Some(v.split(';').map(str::to_string).collect::<Vec<_>>()),
            "Signature" => sig = Some(v.to_string()),
            _ => return Err(SignError::MalformedAuthorization("unknown part")),
        }
    }
    let access_key_id = id
        .filter(|s| !s.is_empty())
        .ok_or(SignError::MalformedAuthorization("missing Credential"))?;
    let signed_headers = headers
        .filter(|h| h.iter().all(|n| !n.is_empty()))
        .ok_or(SignError::MalformedAuthorization("missing SignedHeaders"))?;
    let signature = sig
        .filter(|s| !s.is_empty())
        .ok_or(SignError::MalformedAuthorization("missing Signature"))?;
    Ok(Acs3Authorization {
        access_key_id,
        signed_headers,
        signature,
    })
}

/// UTC `yyyy-MM-ddTHH:mm:ssZ`, whole seconds.
pub fn timestamp_now() -> String {
    super::wire::format_time(chrono::Utc::now())
}

/// A fresh nonce for every attempt (a retried request must never reuse one).
pub fn new_nonce() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_vector_a() {
        let params: BTreeMap<String, String> = [
            ("Timestamp", "2015-05-14T09:03:45Z"),
            ("Format", "XML"),
            ("AccessKeyId", "testId"),
            ("Action", "SearchTemplate"),
            ("PageSize", "2"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "4902260a-516a-4b6a-a455-45b653cf6150"),
            ("SignatureVersion", "1.0"),
            ("Version", "2014-06-18"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let sts = string_to_sign_v1("GET", &params);
        assert_eq!(sts, "GET&%2F&AccessKeyId%3DtestId%26Action%3DSearchTemplate%26Format%3DXML%26PageSize%3D2%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D4902260a-516a-4b6a-a455-45b653cf6150%26SignatureVersion%3D1.0%26Timestamp%3D2015-05-14T09%253A03%253A45Z%26Version%3D2014-06-18");
        assert_eq!(
            sign_v1("testKeySecret", &sts),
            "kmDv4mWo806GWPjQMy2z4VhBBDQ="
        );
    }

    #[test]
    fn mns_string_to_sign_lowercases_sorts_and_skips_other_headers() {
        let sts = string_to_sign_mns(
            "get",
            [
                ("X-MNS-Version", "2015-06-06"),
                ("Content-Type", "text/xml;charset=utf-8"),
                ("Host", "x"),
                ("Date", "Thu, 03 Dec 2026 12:00:00 GMT"),
                ("x-mns-a", "1"),
            ],
            "/queues/q/messages?waitseconds=10",
        );
        assert_eq!(
            sts,
            "GET\n\ntext/xml;charset=utf-8\nThu, 03 Dec 2026 12:00:00 GMT\nx-mns-a:1\nx-mns-version:2015-06-06\n/queues/q/messages?waitseconds=10"
        );
        assert_eq!(
            parse_mns_authorization("MNS id:sig=").unwrap(),
            ("id", "sig=")
        );
        for bad in ["", "MNS ", "MNS id", "MNS :x", "MNS id:", "ACS3 id:x"] {
            assert!(parse_mns_authorization(bad).is_err(), "{bad:?}");
        }
    }
}
