//! A local object store for the emulator: a directory per bucket, so the file
//! `<oss_dir>/<bucket>/<key>` is object `<key>` of bucket `<bucket>`. The engine reads inputs
//! and writes outputs there, and OSS's `PutObject`, `GetObject` and `HeadObject` work on
//! path-style URLs on the emulator's own listener (`PUT|GET|HEAD /<bucket>/<key>`, the key
//! percent-decoded), so curl, a browser and the official SDKs can use it; `POST /<bucket>` is
//! PostObject (`oss_post.rs`), `?uploads`/`?uploadId=` on an object multipart upload
//! (`oss_multipart.rs`), `DELETE` DeleteObject. The MPS RPC route is `/` alone, and `/_emulator/…` cannot be a
//! bucket (`_` is not allowed in bucket names), so nothing clashes.
//!
//! Signatures are checked with `crate::oss`, the code the gateway signs with: a request
//! signed with V1 (`Authorization: OSS …`), a V1 or V4 presigned URL or V4
//! (`Authorization: OSS4-HMAC-SHA256 …`) must carry a valid signature by one of the emulator's
//! access keys (`--access-key`), else it is refused as OSS refuses it (`SignatureDoesNotMatch`,
//! `InvalidAccessKeyId`, `RequestTimeTooSkewed`, `AccessDenied`, with OSS's XML body).
//! **Unsigned requests are allowed**: every bucket acts as a *public-read-write* bucket, so
//! curl, the engine and output links work without keys. CORS as a bucket's CORS rule would:
//! the allowed origins (`--oss-cors-origin`, default `*`), preflights for POST/PUT/GET/HEAD.
//!
//! Other local differences from OSS, on purpose: a bucket is created by the first write into
//! it; keys that cannot be a safe relative path (`..`, `.` or empty segments, a leading `/`,
//! NUL) are refused with `InvalidObjectName`; no ACLs, versions, metadata or listing. Writes
//! go to a temporary file renamed into place, so a reader never sees half an object; a `PUT`
//! with a `Content-MD5` that is not its body's is refused (`InvalidDigest`) and not stored.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::crypto::percent_decode;
use crate::oss::ObjectRequest;
use crate::secret::Secret;

/// Temporary files live here, beside the buckets (not a valid bucket name).
const TMP_DIR: &str = ".snapgate-tmp";

#[derive(Debug, Clone)]
pub struct LocalOss {
    root: PathBuf,
}

/// Why a bucket or key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OssError {
    InvalidBucketName,
    InvalidObjectName,
}

/// OSS bucket names: 3 to 63 of `a-z 0-9 -`, not starting or ending with `-`.
pub fn valid_bucket(b: &str) -> bool {
    let s = b.as_bytes();
    (3..=63).contains(&s.len())
        && s.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && s[0] != b'-'
        && s[s.len() - 1] != b'-'
}

/// A key that maps to a relative path below its bucket and nowhere else.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 1023
        && !key.contains(['\0', '\r', '\n'])
        && key
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

impl LocalOss {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn bucket_path(&self, bucket: &str) -> Result<PathBuf, OssError> {
        if !valid_bucket(bucket) {
            return Err(OssError::InvalidBucketName);
        }
        Ok(self.root.join(bucket))
    }

    /// The file of an object.
    pub fn object_path(&self, bucket: &str, key: &str) -> Result<PathBuf, OssError> {
        let dir = self.bucket_path(bucket)?;
        if !valid_key(key) {
            return Err(OssError::InvalidObjectName);
        }
        Ok(key.split('/').fold(dir, |p, seg| p.join(seg)))
    }

    /// A fresh temporary path on the same file system (for write-then-rename).
    pub fn tmp_path(&self, name: &str) -> PathBuf {
        self.root.join(TMP_DIR).join(name)
    }

    /// Moves a finished file into place as object `bucket/key`.
    pub async fn commit(&self, from: &Path, bucket: &str, key: &str) -> anyhow::Result<PathBuf> {
        let to = self
            .object_path(bucket, key)
            .map_err(|e| anyhow::anyhow!("{e:?} for {bucket}/{key}"))?;
        if let Some(parent) = to.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::rename(from, &to).await?;
        Ok(to)
    }
}

/// The emulator's own URL path of its callback public key (`x-oss-pub-key-url` names it).
pub const CALLBACK_PUB_KEY_PATH: &str = "/_emulator/oss/callback_pub_key.pem";

/// Bits of the emulator's callback key (OSS's own is 512; 1024 keeps every verifier happy
/// while `oss::callback`'s unit tests cover 512-bit keys).
const CALLBACK_KEY_BITS: usize = 1024;

/// The RSA key the emulator signs upload callbacks with, made at start (in the background:
/// key generation is slow in debug builds) and its public half in PEM.
pub struct CallbackKey {
    pub private: rsa::RsaPrivateKey,
    pub public_pem: String,
}

/// What the object routes are served with, taken from the emulator's state (`state.rs`) so
/// this file does not depend on it.
pub struct StoreContext {
    /// `None` when there is no store (`--oss-dir` not set: every object route answers 404).
    pub store: Option<LocalOss>,
    /// Access key id → secret: the emulator's keys.
    keys: Vec<(String, String)>,
    /// The temporary credentials its STS issued.
    sts: Arc<super::sts::StsIssuer>,
    /// The region V4 signatures must name; `None`: the credential's.
    region: Option<String>,
    /// Buckets in another region than `region` (`EmulatorConfig::oss_bucket_regions`).
    bucket_regions: Vec<(String, String)>,
    cors_origins: Vec<String>,
    /// `http://<listen>`: where the emulator is reached (for its callback key URL).
    pub(super) public_url: String,
    callback_key: tokio::sync::OnceCell<Arc<CallbackKey>>,
    /// For upload callbacks: 5 s, no redirects (OSS's behaviour).
    pub(super) http: reqwest::Client,
    /// UploadPart requests received (`/_emulator/stats`: `oss.upload_part`).
    pub(super) part_puts: std::sync::atomic::AtomicU64,
}

impl StoreContext {
    /// The region a V4 signature for `bucket` must name: its own region if listed, else the
    /// store's; `None`: any (the credential's).
    pub(super) fn region_of(&self, bucket: &str) -> Option<&str> {
        self.bucket_regions
            .iter()
            .find(|(b, _)| b == bucket)
            .map(|(_, r)| r.as_str())
            .or(self.region.as_deref())
    }

    pub fn new(config: &super::config::EmulatorConfig, sts: Arc<super::sts::StsIssuer>) -> Self {
        let mut addr = config.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        Self {
            store: config.oss_dir.clone().map(LocalOss::new),
            keys: config.access_keys.clone(),
            sts,
            region: config.oss_region.clone(),
            bucket_regions: config.oss_bucket_regions.clone(),
            cors_origins: config.oss_cors_origins.clone(),
            public_url: format!("http://{addr}"),
            callback_key: tokio::sync::OnceCell::new(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a plain HTTP client builds"),
            part_puts: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn secret_for(&self, id: &str) -> Option<Secret> {
        self.keys
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, s)| s.clone())
            .or_else(|| self.sts.secret_for(id))
            .map(Secret::new)
    }

    /// An `STS.` key's token (`x-oss-security-token`, or `security-token` in a presigned URL or
    /// a PostObject form) must be the one issued with it and not expired, as OSS checks it.
    pub fn check_token(&self, id: &str, token: Option<&str>) -> Result<(), crate::oss::OssError> {
        use super::sts::TokenProblem;
        self.sts.check_token(id, token).map_err(|p| match p {
            TokenProblem::Expired => crate::oss::OssError::new(
                403,
                "SecurityTokenExpired",
                "The security token you provided has expired.",
            ),
            TokenProblem::Mismatch => crate::oss::OssError::new(
                403,
                "InvalidSecurityToken",
                "The security token you provided is invalid.",
            ),
        })
    }

    /// The URL of the callback public key, as sent in `x-oss-pub-key-url`.
    pub fn callback_pub_key_url(&self) -> String {
        format!("{}{CALLBACK_PUB_KEY_PATH}", self.public_url)
    }

    /// The callback key (made once, off the async threads).
    pub async fn callback_key(&self) -> Arc<CallbackKey> {
        self.callback_key
            .get_or_init(|| async {
                tokio::task::spawn_blocking(|| {
                    let private =
                        rsa::RsaPrivateKey::new(&mut rand::thread_rng(), CALLBACK_KEY_BITS)
                            .expect("RSA key generation");
                    let public_pem = crate::oss::callback::public_key_pem(&private);
                    Arc::new(CallbackKey {
                        private,
                        public_pem,
                    })
                })
                .await
                .expect("the key generation task does not panic")
            })
            .await
            .clone()
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.cors_origins.iter().any(|o| o == "*" || o == origin)
    }

    /// Adds the CORS answer headers for a request from `origin` (none when not allowed).
    pub(super) fn cors(&self, req: &HeaderMap, res: &mut Response) {
        let Some(origin) = req.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
            return;
        };
        if !self.origin_allowed(origin) {
            return;
        }
        let h = res.headers_mut();
        let any = self.cors_origins.iter().any(|o| o == "*");
        let value = if any { "*" } else { origin };
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        if !any {
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("ETag, x-oss-request-id, Content-Length, Last-Modified"),
        );
    }
}

pub(super) fn request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string().to_uppercase()
}

/// OSS's XML error answer (no body for `HEAD`; the code also in `x-oss-ec`-less form).
pub(super) fn oss_error(
    status: StatusCode,
    code: &str,
    message: &str,
    method: &Method,
) -> Response {
    error_response(
        &crate::oss::OssError::new(status.as_u16(), code, message),
        method,
    )
}

pub(super) fn error_response(e: &crate::oss::OssError, method: &Method) -> Response {
    let rid = request_id();
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut res = if method == Method::HEAD {
        status.into_response()
    } else {
        (status, e.to_xml(&rid, "localhost")).into_response()
    };
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    if let Ok(v) = HeaderValue::from_str(&rid) {
        h.insert("x-oss-request-id", v);
    }
    res
}

pub(super) fn content_type(key: &str) -> &'static str {
    let ext = key.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "vtt" => "text/vtt",
        "json" => "application/json",
        "txt" => "text/plain",
        "mp4" | "m4v" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "flv" => "video/x-flv",
        "ts" => "video/mp2t",
        _ => "application/octet-stream",
    }
}

/// `/<bucket>/<key>` of a request, the key percent-decoded.
pub(super) fn locate(
    oss: &LocalOss,
    uri: &Uri,
) -> Result<(String, String, PathBuf), (&'static str, String)> {
    let path = uri.path().trim_start_matches('/');
    let (bucket, raw_key) = path.split_once('/').unwrap_or((path, ""));
    let bucket = percent_decode(bucket).unwrap_or_default();
    let key = percent_decode(raw_key).ok_or((
        "InvalidObjectName",
        "The key is not properly percent-encoded.".to_string(),
    ))?;
    match oss.object_path(&bucket, &key) {
        Ok(p) => Ok((bucket, key, p)),
        Err(OssError::InvalidBucketName) => Err((
            "InvalidBucketName",
            format!("The specified bucket {bucket:?} is not valid."),
        )),
        Err(OssError::InvalidObjectName) => Err((
            "InvalidObjectName",
            "The object key is not valid here (empty, `.` or `..` segments, or too long)."
                .to_string(),
        )),
    }
}

/// The decoded query pairs of a request, in order.
pub(super) fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Headers with lower-case names (the values that are not text are left out).
fn header_pairs(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// Checks a request's signature, if it has one (unsigned: allowed, public-read-write).
pub(super) fn check_signature(
    ctx: &StoreContext,
    method: &Method,
    bucket: &str,
    key: &str,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<crate::oss::Authenticated, crate::oss::OssError> {
    let query = query_pairs(uri);
    let headers = header_pairs(headers);
    let r = ObjectRequest {
        method: method.as_str(),
        bucket,
        key,
        query: &query,
        headers: &headers,
    };
    match crate::oss::verify_request(
        &r,
        &|id| ctx.secret_for(id),
        ctx.region_of(bucket),
        crate::clock::now(),
    ) {
        Ok(crate::oss::Authenticated::Anonymous) => Ok(crate::oss::Authenticated::Anonymous),
        Ok(crate::oss::Authenticated::Key(who)) => {
            let token = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(crate::oss::SECURITY_TOKEN_HEADER))
                .or_else(|| query.iter().find(|(k, _)| k == "security-token"))
                .map(|(_, v)| v.as_str());
            if let Err(e) = ctx.check_token(&who, token) {
                tracing::info!(code = %e.code, bucket, key, method = %method, "local OSS: request refused");
                return Err(e);
            }
            tracing::debug!(?who, bucket, key, method = %method, "local OSS: request authenticated");
            Ok(crate::oss::Authenticated::Key(who))
        }
        Err(e) => {
            tracing::info!(code = %e.code, bucket, key, method = %method, "local OSS: request refused");
            Err(e)
        }
    }
}

/// The object routes' state.
#[derive(Clone)]
pub struct OssRoutes(pub Arc<StoreContext>);

/// `PUT /<bucket>/<key>`: stores the body.
pub async fn put_object(
    State(OssRoutes(ctx)): State<OssRoutes>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut res = put(&ctx, &method, &uri, &headers, body).await;
    ctx.cors(&headers, &mut res);
    res
}

/// `DELETE /<bucket>/<key>`: DeleteObject (204, also when there was no such object, as on
/// OSS).
pub async fn delete_object(
    State(OssRoutes(ctx)): State<OssRoutes>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut res = delete(&ctx, &method, &uri, &headers).await;
    ctx.cors(&headers, &mut res);
    res
}

async fn delete(ctx: &StoreContext, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
    let Some(oss) = ctx.store.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (bucket, key, path) = match locate(oss, uri) {
        Ok(x) => x,
        Err((code, msg)) => return oss_error(StatusCode::BAD_REQUEST, code, &msg, method),
    };
    if let Err(e) = check_signature(ctx, method, &bucket, &key, uri, headers) {
        return error_response(&e, method);
    }
    let _ = tokio::fs::remove_file(&path).await;
    let mut res = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        res.headers_mut().insert("x-oss-request-id", v);
    }
    res
}

async fn put(
    ctx: &StoreContext,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let Some(oss) = ctx.store.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (bucket, key, path) = match locate(oss, uri) {
        Ok(x) => x,
        Err((code, msg)) => return oss_error(StatusCode::BAD_REQUEST, code, &msg, method),
    };
    if let Err(e) = check_signature(ctx, method, &bucket, &key, uri, headers) {
        return error_response(&e, method);
    }
    // OSS refuses a simple upload over 5 GB from its Content-Length, before reading it.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_PUT_BYTES) {
        return too_large(method);
    }
    // OSS checks a `Content-MD5` against the body it received, and refuses one that is not
    // the Base64 of 16 bytes before reading anything.
    let expected_md5 = match headers.get("content-md5").map(content_md5) {
        None => None,
        Some(Some(d)) => Some(d),
        Some(None) => return invalid_digest(method),
    };
    let tmp = oss.tmp_path(&format!("put-{}", uuid::Uuid::new_v4().simple()));
    let written = async {
        tokio::fs::create_dir_all(tmp.parent().expect("has a parent")).await?;
        let mut file = tokio::fs::File::create(&tmp).await?;
        let mut stream = body.into_data_stream();
        let mut size = 0u64;
        let mut md5 = Md5::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(std::io::Error::other)?;
            size += chunk.len() as u64;
            if size > MAX_PUT_BYTES {
                // A body without a length (chunked) is cut off at the same limit.
                return anyhow::Ok(Ok(None));
            }
            md5.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        drop(file);
        let digest: [u8; 16] = md5.finalize().into();
        if expected_md5.is_some_and(|e| e != digest) {
            return anyhow::Ok(Err(()));
        }
        oss.commit(&tmp, &bucket, &key).await?;
        anyhow::Ok(Ok(Some((size, hex::encode_upper(digest)))))
    }
    .await;
    match written {
        Ok(Ok(None)) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            too_large(method)
        }
        Ok(Err(())) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            invalid_digest(method)
        }
        Ok(Ok(Some((size, etag)))) => {
            tracing::debug!(bucket = %bucket, key = %key, size, path = %path.display(), "local OSS: object stored");
            let mut res = StatusCode::OK.into_response();
            let h = res.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&request_id()) {
                h.insert("x-oss-request-id", v);
            }
            if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
                h.insert(header::ETAG, v);
            }
            res
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            tracing::warn!(error = %e, bucket = %bucket, key = %key, "local OSS: cannot store an object");
            oss_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "The object could not be stored.",
                method,
            )
        }
    }
}

/// The largest simple upload (`PUT`) OSS takes: 5 GB.
pub const MAX_PUT_BYTES: u64 = 5 * 1024 * 1024 * 1024;

fn too_large(method: &Method) -> Response {
    oss_error(
        StatusCode::BAD_REQUEST,
        "EntityTooLarge",
        "Your proposed upload exceeds the maximum allowed size.",
        method,
    )
}

/// The 16 bytes a `Content-MD5` header's Base64 stands for; `None` when it is not that.
fn content_md5(v: &HeaderValue) -> Option<[u8; 16]> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.to_str().ok()?.trim())
        .ok()?;
    bytes.try_into().ok()
}

/// OSS's answer to a `Content-MD5` that is not valid or not the body's.
fn invalid_digest(method: &Method) -> Response {
    oss_error(
        StatusCode::BAD_REQUEST,
        "InvalidDigest",
        "The Content-MD5 you specified was invalid.",
        method,
    )
}

/// OSS's ETag of a simple upload: the MD5, upper-case hex (sent in quotes).
pub(super) fn etag(md5: Md5) -> String {
    hex::encode_upper(md5.finalize())
}

/// `GET` and `HEAD /<bucket>/<key>`.
pub async fn get_object(
    State(OssRoutes(ctx)): State<OssRoutes>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut res = get(&ctx, &method, &uri, &headers).await;
    ctx.cors(&headers, &mut res);
    res
}

async fn get(ctx: &StoreContext, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
    let Some(oss) = ctx.store.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (bucket, key, path) = match locate(oss, uri) {
        Ok(x) => x,
        Err((code, msg)) => return oss_error(StatusCode::BAD_REQUEST, code, &msg, method),
    };
    if let Err(e) = check_signature(ctx, method, &bucket, &key, uri, headers) {
        return error_response(&e, method);
    }
    let meta = match tokio::fs::metadata(&path).await {
        Ok(m) if m.is_file() => m,
        _ => {
            let bucket_exists = oss
                .bucket_path(&bucket)
                .map(|p| p.is_dir())
                .unwrap_or(false);
            return if bucket_exists {
                oss_error(
                    StatusCode::NOT_FOUND,
                    "NoSuchKey",
                    "The specified key does not exist.",
                    method,
                )
            } else {
                oss_error(
                    StatusCode::NOT_FOUND,
                    "NoSuchBucket",
                    "The specified bucket does not exist.",
                    method,
                )
            };
        }
    };
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        match tokio::fs::File::open(&path).await {
            Ok(file) => Body::from_stream(futures::stream::unfold(file, |mut f| async move {
                let mut buf = vec![0u8; 64 * 1024];
                match f.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok::<_, std::io::Error>(Bytes::from(buf)), f))
                    }
                    Err(e) => Some((Err(e), f)),
                }
            })),
            Err(_) => {
                return oss_error(
                    StatusCode::NOT_FOUND,
                    "NoSuchKey",
                    "The specified key does not exist.",
                    method,
                )
            }
        }
    };
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&key)),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.len()));
    if let Ok(modified) = meta.modified() {
        let t: chrono::DateTime<chrono::Utc> = modified.into();
        if let Ok(v) = HeaderValue::from_str(&t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()) {
            h.insert(header::LAST_MODIFIED, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        h.insert("x-oss-request-id", v);
    }
    res
}

/// `OPTIONS` on a bucket or object: the CORS preflight, as a bucket CORS rule answers it
/// (`403 AccessForbidden` for an origin or method that is not allowed).
pub async fn preflight(State(OssRoutes(ctx)): State<OssRoutes>, headers: HeaderMap) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let method = headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| m.to_str().ok());
    let allowed = matches!(
        (origin, method),
        (Some(o), Some("POST" | "PUT" | "GET" | "HEAD")) if ctx.origin_allowed(o)
    );
    if !allowed {
        return oss_error(
            StatusCode::FORBIDDEN,
            "AccessForbidden",
            "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
            &Method::OPTIONS,
        );
    }
    let mut res = StatusCode::OK.into_response();
    ctx.cors(&headers, &mut res);
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, PUT, GET, HEAD"),
    );
    if let Some(req_headers) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, req_headers.clone());
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    res
}

/// `GET /_emulator/oss/callback_pub_key.pem`: the public key upload callbacks are signed with.
pub async fn callback_pub_key(State(OssRoutes(ctx)): State<OssRoutes>) -> Response {
    let key = ctx.callback_key().await;
    let mut res = key.public_pem.clone().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-pem-file"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_below_their_bucket_only() {
        let oss = LocalOss::new("/data/oss");
        assert_eq!(
            oss.object_path("media", "a/b c/d.jpg").unwrap(),
            PathBuf::from("/data/oss/media/a/b c/d.jpg")
        );
        for bad in ["../x", "a/../../x", "a//b", "/abs", "a/./b", "", "a/", ".."] {
            assert_eq!(
                oss.object_path("media", bad),
                Err(OssError::InvalidObjectName),
                "{bad:?}"
            );
        }
        for bad in ["..", "Media", "a", ".snapgate-tmp", "a_b"] {
            assert_eq!(
                oss.object_path(bad, "k"),
                Err(OssError::InvalidBucketName),
                "{bad:?}"
            );
        }
    }
}
