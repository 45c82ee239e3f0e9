//! A local object store for the emulator: a directory per bucket, so the file
//! `<oss_dir>/<bucket>/<key>` is object `<key>` of bucket `<bucket>`. The engine reads inputs
//! and writes outputs there, and OSS's `PutObject`, `GetObject` and `HeadObject` work on
//! path-style URLs on the emulator's own listener (`PUT|GET|HEAD /<bucket>/<key>`, the key
//! percent-decoded), so curl and a browser can use it. The MPS RPC route is `/` alone, and
//! `/_emulator/…` cannot be a bucket (`_` is not allowed in bucket names), so nothing clashes.
//!
//! Local differences from OSS, on purpose: no authentication (it listens where the emulator
//! does, normally loopback); a bucket is created by the first `PUT` into it; keys that cannot
//! be a safe relative path (`..`, `.` or empty segments, a leading `/`, NUL) are refused with
//! `InvalidObjectName`. Writes go to a temporary file renamed into place, so a reader never
//! sees half an object.

use std::path::{Path, PathBuf};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::mps::sign::percent_decode;

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

fn request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string().to_uppercase()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// OSS's XML error body.
fn oss_error(status: StatusCode, code: &str, message: &str, method: &Method) -> Response {
    let rid = request_id();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n  <Code>{code}</Code>\n  <Message>{}</Message>\n  <RequestId>{rid}</RequestId>\n  <HostId>localhost</HostId>\n</Error>\n",
        xml_escape(message)
    );
    let mut res = if method == Method::HEAD {
        status.into_response()
    } else {
        (status, body).into_response()
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

fn content_type(key: &str) -> &'static str {
    let ext = key.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "vtt" => "text/vtt",
        "json" => "application/json",
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
fn locate(oss: &LocalOss, uri: &Uri) -> Result<(String, String, PathBuf), (&'static str, String)> {
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

/// What the object routes are served with: the store, `None` when there is none (`--oss-dir`
/// not set: every object route answers 404). Taken from the emulator's state (`state.rs`), so
/// this file does not depend on it.
#[derive(Clone)]
pub struct OssRoutes(pub Option<LocalOss>);

/// `PUT /<bucket>/<key>`: stores the body.
pub async fn put_object(
    State(OssRoutes(oss)): State<OssRoutes>,
    method: Method,
    uri: Uri,
    body: Body,
) -> Response {
    let Some(oss) = oss.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (bucket, key, path) = match locate(oss, &uri) {
        Ok(x) => x,
        Err((code, msg)) => return oss_error(StatusCode::BAD_REQUEST, code, &msg, &method),
    };
    let tmp = oss.tmp_path(&format!("put-{}", uuid::Uuid::new_v4().simple()));
    let written = async {
        tokio::fs::create_dir_all(tmp.parent().expect("has a parent")).await?;
        let mut file = tokio::fs::File::create(&tmp).await?;
        let mut stream = body.into_data_stream();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(std::io::Error::other)?;
            size += chunk.len() as u64;
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        drop(file);
        oss.commit(&tmp, &bucket, &key).await?;
        anyhow::Ok(size)
    }
    .await;
    match written {
        Ok(size) => {
            tracing::debug!(bucket = %bucket, key = %key, size, path = %path.display(), "local OSS: object stored");
            let mut res = StatusCode::OK.into_response();
            if let Ok(v) = HeaderValue::from_str(&request_id()) {
                res.headers_mut().insert("x-oss-request-id", v);
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
                &method,
            )
        }
    }
}

/// `GET` and `HEAD /<bucket>/<key>`.
pub async fn get_object(
    State(OssRoutes(oss)): State<OssRoutes>,
    method: Method,
    uri: Uri,
) -> Response {
    let Some(oss) = oss.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (bucket, key, path) = match locate(oss, &uri) {
        Ok(x) => x,
        Err((code, msg)) => return oss_error(StatusCode::BAD_REQUEST, code, &msg, &method),
    };
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
                    &method,
                )
            } else {
                oss_error(
                    StatusCode::NOT_FOUND,
                    "NoSuchBucket",
                    "The specified bucket does not exist.",
                    &method,
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
                    &method,
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
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
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
