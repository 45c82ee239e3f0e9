//! OSS signature V4 (`OSS4-HMAC-SHA256`), as the OSS reference ("signature version 4") and
//! `oss2`'s `ProviderAuthV4` define it, for plain requests in the `Authorization` header:
//!
//! ```text
//! signing key = HMAC256(HMAC256(HMAC256(HMAC256("aliyun_v4" + secret, YYYYMMDD), region), "oss"), "aliyun_v4_request")
//! canonical   = VERB \n uri_encode("/<bucket>/<key>", keep "/") \n sorted encoded query \n
//!               canonical headers (x-oss-*, content-type, content-md5, + additional; "name:value\n", sorted) \n
//!               additional header names (";"-joined) \n x-oss-content-sha256 (UNSIGNED-PAYLOAD)
//! to sign     = "OSS4-HMAC-SHA256" \n x-oss-date \n YYYYMMDD/<region>/oss/aliyun_v4_request \n hex(SHA256(canonical))
//! Authorization: OSS4-HMAC-SHA256 Credential=<id>/<scope>, Signature=<hex>[, AdditionalHeaders=a;b]
//! ```
//!
//! The same signing key signs PostObject policies (`post_policy.rs`). The gateway's own object
//! calls are here, signed with it: `head_object` (did the browser's upload land, with which
//! size?), and `put_object`/`get_object` (the retention purge's archive: written with its
//! `Content-MD5`, then read back to verify it).

use sha2::{Digest, Sha256};

use super::{
    hmac_sha256, parse_v4_timestamp, uri_encode, ObjectRequest, OssCredentials, OssError, SecretFor,
};
use crate::secret::{constant_time_eq, Secret};

pub const ALGORITHM: &str = "OSS4-HMAC-SHA256";
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// How long an `x-oss-date` may be off the store's clock.
const MAX_SKEW_S: i64 = 15 * 60;

/// The V4 signing key of a day (`YYYYMMDD`) and region.
pub fn signing_key(secret: &Secret, date: &str, region: &str) -> Vec<u8> {
    let k = hmac_sha256(
        format!("aliyun_v4{}", secret.expose()).as_bytes(),
        date.as_bytes(),
    );
    let k = hmac_sha256(&k, region.as_bytes());
    let k = hmac_sha256(&k, b"oss");
    hmac_sha256(&k, b"aliyun_v4_request")
}

/// `YYYYMMDD/<region>/oss/aliyun_v4_request`.
pub fn scope(date: &str, region: &str) -> String {
    format!("{date}/{region}/oss/aliyun_v4_request")
}

/// `hex(HMAC256(signing key, data))`: the signature of a string to sign (or of a base64
/// PostObject policy).
pub fn signature(secret: &Secret, date: &str, region: &str, data: &str) -> String {
    hex::encode(hmac_sha256(
        &signing_key(secret, date, region),
        data.as_bytes(),
    ))
}

/// Headers that are always signed when present, besides `x-oss-*`.
const DEFAULT_SIGNED: &[&str] = &["content-type", "content-md5"];

/// The canonical request. `headers`: lower-case names; `additional`: lower-case names of
/// other headers to sign, sorted.
pub fn canonical_request(
    method: &str,
    bucket: &str,
    key: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    additional: &[String],
) -> String {
    let uri = if bucket.is_empty() {
        "/".to_string()
    } else {
        uri_encode(&format!("/{bucket}/{key}"), true)
    };
    let mut q: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    q.sort();
    let query = q
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join("&");
    let mut h: Vec<(String, &str)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim()))
        .filter(|(k, _)| {
            k.starts_with("x-oss-")
                || DEFAULT_SIGNED.contains(&k.as_str())
                || additional.iter().any(|a| a == k)
        })
        .collect();
    h.sort();
    let canonical_headers: String = h.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let payload = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-oss-content-sha256"))
        .map(|(_, v)| v.as_str())
        .unwrap_or(UNSIGNED_PAYLOAD);
    format!(
        "{method}\n{uri}\n{query}\n{canonical_headers}\n{}\n{payload}",
        additional.join(";")
    )
}

/// The string to sign of a canonical request.
pub fn string_to_sign(timestamp: &str, region: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{timestamp}\n{}\n{}",
        scope(&timestamp[..8.min(timestamp.len())], region),
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

/// Signs a request to `url` (virtual-hosted or path-style, see `oss::bucket_and_key`): adds
/// `x-oss-date`, `x-oss-content-sha256: UNSIGNED-PAYLOAD` and `authorization` to `headers`
/// (which should already hold the `content-type`/`content-md5`/`x-oss-*` headers to send).
pub fn sign_request(
    creds: &OssCredentials,
    region: &str,
    method: &str,
    url: &str,
    headers: &mut Vec<(String, String)>,
    now: chrono::DateTime<chrono::Utc>,
) {
    let parsed = reqwest::Url::parse(url).ok();
    let (bucket, key) = parsed
        .as_ref()
        .and_then(super::bucket_and_key)
        .unwrap_or_default();
    let query: Vec<(String, String)> = parsed
        .as_ref()
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    headers.retain(|(k, _)| {
        !k.eq_ignore_ascii_case("authorization")
            && !k.eq_ignore_ascii_case("x-oss-date")
            && !k.eq_ignore_ascii_case("x-oss-content-sha256")
            && !k.eq_ignore_ascii_case(super::SECURITY_TOKEN_HEADER)
    });
    // A temporary credential's token is an `x-oss-*` header: signed like the others.
    if let Some(t) = &creds.security_token {
        headers.push((super::SECURITY_TOKEN_HEADER.into(), t.expose().to_string()));
    }
    let ts = super::v4_timestamp(now);
    headers.push(("x-oss-date".into(), ts.clone()));
    headers.push(("x-oss-content-sha256".into(), UNSIGNED_PAYLOAD.into()));
    let canonical = canonical_request(method, &bucket, &key, &query, headers, &[]);
    let sig = signature(
        &creds.access_key_secret,
        &ts[..8],
        region,
        &string_to_sign(&ts, region, &canonical),
    );
    headers.push((
        "authorization".into(),
        format!(
            "{ALGORITHM} Credential={}/{}, Signature={sig}",
            creds.access_key_id,
            scope(&ts[..8], region)
        ),
    ));
}

/// A parsed `x-oss-credential` / `Credential=`: `<id>/<YYYYMMDD>/<region>/oss/aliyun_v4_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub access_key_id: String,
    pub date: String,
    pub region: String,
}

impl Credential {
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [id, date, region, "oss", "aliyun_v4_request"]
                if !id.is_empty() && date.len() == 8 && !region.is_empty() =>
            {
                Some(Self {
                    access_key_id: id.to_string(),
                    date: date.to_string(),
                    region: region.to_string(),
                })
            }
            _ => None,
        }
    }
}

/// Checks an `x-oss-date` against the clock (at most 15 minutes off) and the credential's day.
pub(crate) fn check_date(
    timestamp: &str,
    credential: &Credential,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, OssError> {
    let t = parse_v4_timestamp(timestamp).ok_or_else(|| {
        OssError::invalid_argument(format!(
            "Invalid x-oss-date: {timestamp} (want YYYYMMDDTHHMMSSZ)."
        ))
    })?;
    if !timestamp.starts_with(&credential.date) {
        return Err(OssError::invalid_argument(
            "The date of the credential scope does not match x-oss-date.",
        ));
    }
    if (now - t).num_seconds().abs() > MAX_SKEW_S {
        return Err(OssError::new(
            403,
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
        ));
    }
    Ok(t)
}

/// Verifies a V4 `Authorization` header; answers the key id.
pub fn verify_request(
    r: &ObjectRequest<'_>,
    authorization: &str,
    secret_for: SecretFor<'_>,
    region: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, OssError> {
    let bad = || OssError::invalid_argument("Authorization header is invalid.");
    let rest = authorization.strip_prefix(ALGORITHM).ok_or_else(bad)?;
    let (mut credential, mut sig, mut additional) = (None, None, Vec::new());
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or_else(bad)?;
        match k.trim() {
            "Credential" => credential = Some(v.trim()),
            "Signature" => sig = Some(v.trim()),
            "AdditionalHeaders" => {
                additional = v
                    .split(';')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.trim().to_ascii_lowercase())
                    .collect()
            }
            _ => return Err(bad()),
        }
    }
    let (Some(credential), Some(sig)) = (credential, sig) else {
        return Err(bad());
    };
    let cred = Credential::parse(credential).ok_or_else(bad)?;
    let ts = r
        .header("x-oss-date")
        .ok_or_else(|| OssError::access_denied("x-oss-date header is missing."))?;
    check_date(ts, &cred, now)?;
    let region = region.unwrap_or(&cred.region);
    let secret = secret_for(&cred.access_key_id).ok_or_else(OssError::unknown_key)?;
    additional.sort();
    let canonical = canonical_request(r.method, r.bucket, r.key, r.query, r.headers, &additional);
    let expected = signature(
        &secret,
        &cred.date,
        region,
        &string_to_sign(ts, region, &canonical),
    );
    if !constant_time_eq(expected.as_bytes(), sig.as_bytes()) {
        return Err(OssError::signature_mismatch());
    }
    Ok(cred.access_key_id)
}

/// The longest a V4 presigned URL may live: 7 days, as on OSS.
const MAX_PRESIGN_S: i64 = 7 * 24 * 3600;

/// Verifies a V4 presigned URL (`x-oss-signature-version=OSS4-HMAC-SHA256`, `x-oss-credential`,
/// `x-oss-date`, `x-oss-expires`, optional `x-oss-additional-headers`, `x-oss-signature`, as
/// `oss2`'s `AuthV4.sign_url` makes it); answers the key id. The canonical request is the
/// header form's, with the query (less `x-oss-signature`) signed and an unsigned payload. An
/// expired URL is `AccessDenied`.
pub fn verify_query(
    r: &ObjectRequest<'_>,
    secret_for: SecretFor<'_>,
    region: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, OssError> {
    let bad = |what: &str| OssError::invalid_argument(format!("Presigned URL: {what}."));
    if r.param("x-oss-signature-version") != Some(ALGORITHM) {
        return Err(bad("x-oss-signature-version must be OSS4-HMAC-SHA256"));
    }
    let cred = r
        .param("x-oss-credential")
        .and_then(Credential::parse)
        .ok_or_else(|| bad("x-oss-credential is missing or invalid"))?;
    let ts = r
        .param("x-oss-date")
        .ok_or_else(|| bad("x-oss-date is missing"))?;
    let t = parse_v4_timestamp(ts).ok_or_else(|| bad("x-oss-date is invalid"))?;
    if !ts.starts_with(&cred.date) {
        return Err(bad("the credential's date does not match x-oss-date"));
    }
    let expires: i64 = r
        .param("x-oss-expires")
        .and_then(|e| e.parse().ok())
        .filter(|e| (1..=MAX_PRESIGN_S).contains(e))
        .ok_or_else(|| bad("x-oss-expires is missing or out of range"))?;
    if (t + chrono::Duration::seconds(expires)) < now {
        return Err(OssError::access_denied("Request has expired."));
    }
    let sig = r
        .param("x-oss-signature")
        .ok_or_else(|| bad("x-oss-signature is missing"))?;
    let mut additional: Vec<String> = r
        .param("x-oss-additional-headers")
        .unwrap_or("")
        .split(';')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    additional.sort();
    let query: Vec<(String, String)> = r
        .query
        .iter()
        .filter(|(k, _)| k != "x-oss-signature")
        .cloned()
        .collect();
    // The payload is never signed in a URL (whatever x-oss-content-sha256 the request sends).
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("x-oss-content-sha256"))
        .cloned()
        .collect();
    let region = region.unwrap_or(&cred.region);
    let secret = secret_for(&cred.access_key_id).ok_or_else(OssError::unknown_key)?;
    let canonical = canonical_request(r.method, r.bucket, r.key, &query, &headers, &additional);
    let expected = signature(
        &secret,
        &cred.date,
        region,
        &string_to_sign(ts, region, &canonical),
    );
    if !constant_time_eq(expected.as_bytes(), sig.as_bytes()) {
        return Err(OssError::signature_mismatch());
    }
    Ok(cred.access_key_id)
}

/// `<bucket_url>/<key>` with the key URI-encoded (`/` kept).
fn object_url(bucket_url: &str, key: &str) -> String {
    format!(
        "{}/{}",
        bucket_url.trim_end_matches('/'),
        uri_encode(key, true)
    )
}

/// A request to `url` signed with V4 now: `headers` (content-type, content-md5, x-oss-*) sent
/// and signed.
fn signed(
    http: &reqwest::Client,
    creds: &OssCredentials,
    region: &str,
    method: reqwest::Method,
    url: &str,
    mut headers: Vec<(String, String)>,
) -> reqwest::RequestBuilder {
    sign_request(
        creds,
        region,
        method.as_str(),
        url,
        &mut headers,
        crate::clock::wall_now(),
    );
    let mut req = http.request(method, url);
    for (k, v) in &headers {
        req = req.header(k, v);
    }
    req
}

fn request_failed(method: &str, url: &str, e: reqwest::Error) -> OssError {
    OssError::new(502, "RequestFailed", format!("{method} {url}: {e}"))
}

/// The error of an answer that is not a success: OSS's `Code` from its XML body, else its
/// `x-oss-ec` header (a `HEAD` answer has no body), else named after the status.
async fn answer_error(method: &str, url: &str, res: reqwest::Response) -> OssError {
    let status = res.status().as_u16();
    let ec = res
        .headers()
        .get("x-oss-ec")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = res.text().await.unwrap_or_default();
    let code = xml_element(&body, "Code")
        .or(ec)
        .unwrap_or_else(|| match status {
            403 => "AccessDenied".to_string(),
            _ => format!("HTTP{status}"),
        });
    let message = xml_element(&body, "Message").unwrap_or_default();
    OssError {
        status,
        code,
        message: format!("{method} {url} answered {status} {message}")
            .trim_end()
            .into(),
    }
}

/// The text of the first `<name>…</name>` of an XML body.
fn xml_element(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(body[start..end].to_string())
}

/// A signed `HEAD` of `<bucket_url>/<key>`: `Some(content-length)` when the object exists,
/// `None` on 404, the status as an error otherwise.
pub async fn head_object(
    http: &reqwest::Client,
    creds: &OssCredentials,
    region: &str,
    bucket_url: &str,
    key: &str,
) -> Result<Option<u64>, OssError> {
    let url = object_url(bucket_url, key);
    let res = signed(http, creds, region, reqwest::Method::HEAD, &url, Vec::new())
        .send()
        .await
        .map_err(|e| request_failed("HEAD", &url, e))?;
    match res.status().as_u16() {
        200 => res
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                OssError::new(502, "InvalidResponse", "HEAD answered no Content-Length")
            }),
        404 => Ok(None),
        _ => Err(answer_error("HEAD", &url, res).await),
    }
}

/// A signed `PutObject` of `body` at `<bucket_url>/<key>` with its `Content-MD5`, so the store
/// refuses a body that did not arrive whole; the answer's `ETag` (unquoted; OSS's is the
/// upper-case hex MD5 of a simple upload), if any.
pub async fn put_object(
    http: &reqwest::Client,
    creds: &OssCredentials,
    region: &str,
    bucket_url: &str,
    key: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<Option<String>, OssError> {
    use base64::Engine;
    use md5::{Digest as _, Md5};
    let url = object_url(bucket_url, key);
    let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
    let headers = vec![
        ("content-type".to_string(), content_type.to_string()),
        ("content-md5".to_string(), md5),
    ];
    let res = signed(http, creds, region, reqwest::Method::PUT, &url, headers)
        .body(body)
        .send()
        .await
        .map_err(|e| request_failed("PUT", &url, e))?;
    if !res.status().is_success() {
        return Err(answer_error("PUT", &url, res).await);
    }
    Ok(res
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_matches('"').to_string()))
}

/// A signed `GetObject` of `<bucket_url>/<key>`: its bytes, `None` on 404.
pub async fn get_object(
    http: &reqwest::Client,
    creds: &OssCredentials,
    region: &str,
    bucket_url: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, OssError> {
    let url = object_url(bucket_url, key);
    let res = signed(http, creds, region, reqwest::Method::GET, &url, Vec::new())
        .send()
        .await
        .map_err(|e| request_failed("GET", &url, e))?;
    match res.status().as_u16() {
        200 => Ok(Some(
            res.bytes()
                .await
                .map_err(|e| request_failed("GET", &url, e))?
                .to_vec(),
        )),
        404 => Ok(None),
        _ => Err(answer_error("GET", &url, res).await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> OssCredentials {
        OssCredentials {
            access_key_id: "LTAI5tEXAMPLE".into(),
            access_key_secret: Secret::new("EXAMPLESECRETKEY0123456789abcdef"),
            security_token: None,
        }
    }

    /// The notes' PostObject V4 vector (`tests/data/oss-vectors.json`): the signing key chain.
    #[test]
    fn signing_key_chain_matches_the_vector() {
        let v = crate::oss::post_policy::tests::vectors();
        let p = &v["post_v4"];
        use base64::Engine;
        let b64 =
            base64::engine::general_purpose::STANDARD.encode(p["policy_json"].as_str().unwrap());
        assert_eq!(
            signature(&creds().access_key_secret, "20240101", "cn-hangzhou", &b64),
            p["v4_signature"].as_str().unwrap()
        );
    }

    /// What `sign_request` makes, `verify_request` accepts, and nothing else.
    #[test]
    fn sign_then_verify_round_trip() {
        let now = chrono::DateTime::from_timestamp(1_704_110_400, 0).unwrap();
        let mut headers = vec![("content-type".to_string(), "video/mp4".to_string())];
        sign_request(
            &creds(),
            "cn-hangzhou",
            "PUT",
            "http://127.0.0.1:8081/example-bucket/uploads/a%20b.mp4?acl",
            &mut headers,
            now,
        );
        let auth = headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1
            .clone();
        assert!(
            auth.starts_with("OSS4-HMAC-SHA256 Credential=LTAI5tEXAMPLE/20240101/cn-hangzhou/oss/aliyun_v4_request, Signature="),
            "{auth}"
        );
        let query = vec![("acl".to_string(), String::new())];
        let r = ObjectRequest {
            method: "PUT",
            bucket: "example-bucket",
            key: "uploads/a b.mp4",
            query: &query,
            headers: &headers,
        };
        let keys = |id: &str| (id == "LTAI5tEXAMPLE").then(|| creds().access_key_secret);
        assert_eq!(
            verify_request(&r, &auth, &keys, None, now).unwrap(),
            "LTAI5tEXAMPLE"
        );
        assert_eq!(
            verify_request(&r, &auth, &keys, Some("cn-hangzhou"), now).unwrap(),
            "LTAI5tEXAMPLE"
        );
        for bad in [
            ObjectRequest {
                method: "GET",
                ..r.clone()
            },
            ObjectRequest {
                key: "uploads/a c.mp4",
                ..r.clone()
            },
            ObjectRequest {
                query: &[],
                ..r.clone()
            },
        ] {
            assert_eq!(
                verify_request(&bad, &auth, &keys, None, now)
                    .unwrap_err()
                    .code,
                "SignatureDoesNotMatch"
            );
        }
        assert_eq!(
            verify_request(&r, &auth, &keys, Some("cn-beijing"), now)
                .unwrap_err()
                .code,
            "SignatureDoesNotMatch"
        );
        let late = now + chrono::Duration::minutes(16);
        assert_eq!(
            verify_request(&r, &auth, &keys, None, late)
                .unwrap_err()
                .code,
            "RequestTimeTooSkewed"
        );
        let wrong_secret = |_: &str| Some(Secret::new("nope"));
        assert_eq!(
            verify_request(&r, &auth, &wrong_secret, None, now)
                .unwrap_err()
                .code,
            "SignatureDoesNotMatch"
        );
    }

    /// The canonical request's shape (`oss2`'s): a blank line after the headers block.
    #[test]
    fn canonical_request_shape() {
        let headers = vec![
            ("x-oss-date".to_string(), "20240101T120000Z".to_string()),
            (
                "x-oss-content-sha256".to_string(),
                "UNSIGNED-PAYLOAD".to_string(),
            ),
            ("Content-Type".to_string(), " text/plain ".to_string()),
            ("host".to_string(), "h".to_string()),
        ];
        let q = vec![
            ("prefix".to_string(), "a/b".to_string()),
            ("acl".to_string(), String::new()),
        ];
        assert_eq!(
            canonical_request("GET", "b", "k 1/x", &q, &headers, &[]),
            "GET\n/b/k%201/x\nacl&prefix=a%2Fb\ncontent-type:text/plain\nx-oss-content-sha256:UNSIGNED-PAYLOAD\nx-oss-date:20240101T120000Z\n\n\nUNSIGNED-PAYLOAD"
        );
    }
}
