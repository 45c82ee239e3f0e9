//! OSS multipart upload on the local store, on the object routes (`/<bucket>/<key>`):
//! `POST ?uploads` (InitiateMultipartUpload), `PUT ?partNumber=N&uploadId=X` (UploadPart, the
//! part's MD5 as its `ETag`), `GET ?uploadId=X` (ListParts, `max-parts` and
//! `part-number-marker`), `POST ?uploadId=X` (CompleteMultipartUpload with the XML part list,
//! or `x-oss-complete-all: yes` and an empty body) and `DELETE ?uploadId=X`
//! (AbortMultipartUpload). Signatures are checked as on every object route (V1 header, V1
//! presigned URL, V4 header; unsigned allowed: the local buckets are public-read-write).
//!
//! An upload is a folder `<oss_dir>/.snapgate-tmp/multipart/<uploadId>/` holding `meta.json`
//! (bucket, key, content type) and each part as `<n>.part` with its ETag in `<n>.etag`. Parts
//! are streamed to disk, and Complete concatenates the chosen parts file to file into a
//! temporary object renamed into place: no part or object is ever held in memory.
//!
//! OSS's rules and codes: part numbers 1–10,000 (`InvalidArgument`), a part at most 5 GB
//! (`EntityTooLarge`), Complete's parts ascending (`InvalidPartOrder`), each stored with that
//! ETag (`InvalidPart`), each but the last at least 100 KB (`EntityTooSmall`), an unknown,
//! completed or aborted upload `NoSuchUpload`. Complete with `x-oss-callback` (and
//! `x-oss-callback-var`) makes the upload callback as PostObject does (`oss_post.rs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::StreamExt;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::oss::{
    error_response, etag, oss_error, query_pairs, request_id, LocalOss, OssRoutes, StoreContext,
};
use crate::oss::callback::{CallbackSpec, Variables};
use crate::oss::{xml_escape, OssError};

/// The smallest part but the last: 100 KB.
pub const MIN_PART_BYTES: u64 = 100 * 1024;
/// The largest part: 5 GB.
pub const MAX_PART_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// Part numbers run from 1 to this.
pub const MAX_PARTS: u32 = 10_000;
/// Complete's XML body: 10,000 parts fit well within this.
const MAX_COMPLETE_BODY: usize = 4 * 1024 * 1024;

/// What an upload folder records about its upload.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    bucket: String,
    key: String,
    content_type: Option<String>,
}

/// A stored part.
#[derive(Debug, Clone)]
struct Part {
    number: u32,
    etag: String,
    size: u64,
    modified: chrono::DateTime<chrono::Utc>,
}

fn no_such_upload() -> OssError {
    OssError::new(
        404,
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
    )
}

fn internal(e: impl std::fmt::Display) -> OssError {
    tracing::warn!(error = %e, "local OSS: multipart upload I/O failed");
    OssError::new(500, "InternalError", "The upload could not be stored.")
}

/// The folder of every multipart upload of a store.
fn uploads_dir(oss: &LocalOss) -> PathBuf {
    oss.tmp_path("multipart")
}

/// The folder of upload `id` (ids are 32 upper-case hex digits; anything else is no upload).
fn upload_dir(oss: &LocalOss, id: &str) -> Option<PathBuf> {
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| uploads_dir(oss).join(id))
}

/// The upload `id` of `bucket/key`: its folder, if it exists and is that object's.
async fn open_upload(
    oss: &LocalOss,
    id: &str,
    bucket: &str,
    key: &str,
) -> Result<(PathBuf, Meta), OssError> {
    let dir = upload_dir(oss, id).ok_or_else(no_such_upload)?;
    let raw = tokio::fs::read(dir.join("meta.json"))
        .await
        .map_err(|_| no_such_upload())?;
    let meta: Meta = serde_json::from_slice(&raw).map_err(internal)?;
    if meta.bucket != bucket || meta.key != key {
        return Err(no_such_upload());
    }
    Ok((dir, meta))
}

fn xml_response(status: StatusCode, body: String) -> Response {
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    with_request_id(res)
}

fn with_request_id(mut res: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        res.headers_mut().insert("x-oss-request-id", v);
    }
    res
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Whether a request is one of the multipart operations (it names `uploads` or `uploadId`).
pub(super) fn is_multipart(uri: &Uri) -> bool {
    query_pairs(uri)
        .iter()
        .any(|(k, _)| k == "uploads" || k == "uploadId")
}

/// A request on an object, located and authenticated.
pub(super) struct Located<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub bucket: &'a str,
    pub key: &'a str,
    pub who: crate::oss::Authenticated,
}

impl Located<'_> {
    /// Who made the request, as OSS names it in a callback's `x-oss-requester`.
    pub fn requester(&self) -> &str {
        match &self.who {
            crate::oss::Authenticated::Key(k) => k,
            crate::oss::Authenticated::Anonymous => "anonymous",
        }
    }
}

/// The multipart operations (`oss_multipart.rs`), once the request is located and
/// authenticated.
async fn multipart(
    ctx: &StoreContext,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let Some(oss) = ctx.store.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (bucket, key, _) = match super::oss::locate(oss, uri) {
        Ok(x) => x,
        Err((code, msg)) => return oss_error(StatusCode::BAD_REQUEST, code, &msg, method),
    };
    let who = match super::oss::check_signature(ctx, method, &bucket, &key, uri, headers) {
        Ok(who) => who,
        Err(e) => return error_response(&e, method),
    };
    let req = Located {
        method,
        uri,
        headers,
        bucket: &bucket,
        key: &key,
        who,
    };
    handle(ctx, oss, req, body).await
}

/// `POST /<bucket>/<key>`: InitiateMultipartUpload (`?uploads`) and
/// CompleteMultipartUpload (`?uploadId=`); other POSTs on an object are not supported here.
pub async fn post(
    State(OssRoutes(ctx)): State<OssRoutes>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut res = multipart(&ctx, &method, &uri, &headers, body).await;
    ctx.cors(&headers, &mut res);
    res
}

/// `PUT /<bucket>/<key>`: UploadPart with `?partNumber=&uploadId=`, else PutObject.
pub async fn put(
    state: State<OssRoutes>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !is_multipart(&uri) {
        return super::oss::put_object(state, method, uri, headers, body).await;
    }
    let State(OssRoutes(ctx)) = state;
    let mut res = multipart(&ctx, &method, &uri, &headers, body).await;
    ctx.cors(&headers, &mut res);
    res
}

/// `GET /<bucket>/<key>`: ListParts with `?uploadId=`, else GetObject (and `HEAD`).
pub async fn get(
    state: State<OssRoutes>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !is_multipart(&uri) {
        return super::oss::get_object(state, method, uri, headers).await;
    }
    let State(OssRoutes(ctx)) = state;
    let mut res = multipart(&ctx, &method, &uri, &headers, Body::empty()).await;
    ctx.cors(&headers, &mut res);
    res
}

/// `DELETE /<bucket>/<key>`: AbortMultipartUpload with `?uploadId=`, else DeleteObject.
pub async fn delete(
    state: State<OssRoutes>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !is_multipart(&uri) {
        return super::oss::delete_object(state, method, uri, headers).await;
    }
    let State(OssRoutes(ctx)) = state;
    let mut res = multipart(&ctx, &method, &uri, &headers, Body::empty()).await;
    ctx.cors(&headers, &mut res);
    res
}

/// A located, authenticated multipart request: the operation's answer.
pub(super) async fn handle(
    ctx: &StoreContext,
    oss: &LocalOss,
    req: Located<'_>,
    body: Body,
) -> Response {
    let q = query_pairs(req.uri);
    let upload_id = param(&q, "uploadId").map(str::to_string);
    let result = match (req.method.as_str(), upload_id) {
        ("POST", None) if param(&q, "uploads").is_some() => initiate(oss, &req).await,
        ("PUT", Some(id)) => upload_part(ctx, oss, &req, &q, &id, body).await,
        ("GET", Some(id)) => list_parts(oss, &req, &q, &id).await,
        ("POST", Some(id)) => complete(ctx, oss, &req, &id, body).await,
        ("DELETE", Some(id)) => abort(oss, &req, &id).await,
        _ => Err(OssError::invalid_argument(
            "This multipart operation is not supported here.",
        )),
    };
    result.unwrap_or_else(|e| {
        tracing::info!(bucket = req.bucket, key = req.key, code = %e.code, "local OSS: multipart request refused");
        error_response(&e, req.method)
    })
}

async fn initiate(oss: &LocalOss, req: &Located<'_>) -> Result<Response, OssError> {
    let id = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    let dir = upload_dir(oss, &id).expect("a fresh id is valid");
    let meta = Meta {
        bucket: req.bucket.to_string(),
        key: req.key.to_string(),
        content_type: req
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    tokio::fs::create_dir_all(&dir).await.map_err(internal)?;
    let json = serde_json::to_vec(&meta).map_err(internal)?;
    tokio::fs::write(dir.join("meta.json"), json)
        .await
        .map_err(internal)?;
    tracing::debug!(bucket = req.bucket, key = req.key, upload_id = %id, "local OSS: multipart upload initiated");
    Ok(xml_response(
        StatusCode::OK,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InitiateMultipartUploadResult>\n  <Bucket>{}</Bucket>\n  <Key>{}</Key>\n  <UploadId>{id}</UploadId>\n</InitiateMultipartUploadResult>\n",
            xml_escape(req.bucket),
            xml_escape(req.key)
        ),
    ))
}

fn part_number(q: &[(String, String)]) -> Result<u32, OssError> {
    param(q, "partNumber")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=MAX_PARTS).contains(n))
        .ok_or_else(|| {
            OssError::invalid_argument(
                "Part number must be an integer between 1 and 10000, inclusive.",
            )
        })
}

fn part_path(dir: &Path, n: u32, ext: &str) -> PathBuf {
    dir.join(format!("{n:05}.{ext}"))
}

fn too_large() -> OssError {
    OssError::new(
        400,
        "EntityTooLarge",
        "Your proposed upload exceeds the maximum allowed size.",
    )
}

async fn upload_part(
    ctx: &StoreContext,
    oss: &LocalOss,
    req: &Located<'_>,
    q: &[(String, String)],
    id: &str,
    body: Body,
) -> Result<Response, OssError> {
    let n = part_number(q)?;
    let (dir, _) = open_upload(oss, id, req.bucket, req.key).await?;
    let announced = req
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > MAX_PART_BYTES) {
        return Err(too_large());
    }
    ctx.part_puts.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{n:05}.tmp-{}", uuid::Uuid::new_v4().simple()));
    let written = write_part(&tmp, body).await;
    let (size, etag) = match written {
        Ok(Some(x)) => x,
        Ok(None) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(too_large());
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(internal(e));
        }
    };
    // The ETag first, then the part: a listed part always has its ETag.
    let stored = async {
        tokio::fs::write(part_path(&dir, n, "etag"), &etag).await?;
        tokio::fs::rename(&tmp, part_path(&dir, n, "part")).await
    }
    .await;
    if stored.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
        // Aborted or completed meanwhile.
        return Err(no_such_upload());
    }
    tracing::debug!(
        bucket = req.bucket,
        key = req.key,
        upload_id = id,
        part = n,
        size,
        "local OSS: part stored"
    );
    let mut res = with_request_id(StatusCode::OK.into_response());
    if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        res.headers_mut().insert(header::ETAG, v);
    }
    Ok(res)
}

/// Streams a part's body to `tmp`: its size and ETag, `None` beyond 5 GB.
async fn write_part(tmp: &Path, body: Body) -> anyhow::Result<Option<(u64, String)>> {
    let mut file = tokio::fs::File::create(tmp).await?;
    let mut stream = body.into_data_stream();
    let (mut size, mut md5) = (0u64, Md5::new());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(std::io::Error::other)?;
        size += chunk.len() as u64;
        if size > MAX_PART_BYTES {
            return Ok(None);
        }
        md5.update(&chunk);
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    Ok(Some((size, etag(md5))))
}

/// Every stored part of an upload folder, by part number.
async fn stored_parts(dir: &Path) -> Result<Vec<Part>, OssError> {
    let mut parts = Vec::new();
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(|_| no_such_upload())?;
    while let Some(e) = entries.next_entry().await.map_err(internal)? {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(n) = name
            .strip_suffix(".part")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let (Ok(meta), Ok(etag)) = (
            e.metadata().await,
            tokio::fs::read_to_string(part_path(dir, n, "etag")).await,
        ) else {
            continue;
        };
        parts.push(Part {
            number: n,
            etag,
            size: meta.len(),
            modified: meta
                .modified()
                .map(Into::into)
                .unwrap_or_else(|_| chrono::Utc::now()),
        });
    }
    parts.sort_by_key(|p| p.number);
    Ok(parts)
}

async fn list_parts(
    oss: &LocalOss,
    req: &Located<'_>,
    q: &[(String, String)],
    id: &str,
) -> Result<Response, OssError> {
    let (dir, _) = open_upload(oss, id, req.bucket, req.key).await?;
    let max = param(q, "max-parts")
        .map(|m| m.parse::<usize>())
        .transpose()
        .map_err(|_| OssError::invalid_argument("max-parts must be a number."))?
        .unwrap_or(1000)
        .clamp(1, 1000);
    let marker = param(q, "part-number-marker")
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    let all = stored_parts(&dir).await?;
    let after: Vec<&Part> = all.iter().filter(|p| p.number > marker).collect();
    let page = &after[..after.len().min(max)];
    let truncated = after.len() > page.len();
    let next = page.last().map_or(marker, |p| p.number);
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListPartsResult>\n  <Bucket>{}</Bucket>\n  <Key>{}</Key>\n  <UploadId>{id}</UploadId>\n  <PartNumberMarker>{marker}</PartNumberMarker>\n  <NextPartNumberMarker>{next}</NextPartNumberMarker>\n  <MaxParts>{max}</MaxParts>\n  <IsTruncated>{truncated}</IsTruncated>\n",
        xml_escape(req.bucket),
        xml_escape(req.key)
    );
    for p in page {
        xml.push_str(&format!(
            "  <Part>\n    <PartNumber>{}</PartNumber>\n    <LastModified>{}</LastModified>\n    <ETag>\"{}\"</ETag>\n    <Size>{}</Size>\n  </Part>\n",
            p.number,
            p.modified.format("%Y-%m-%dT%H:%M:%S.000Z"),
            p.etag,
            p.size
        ));
    }
    xml.push_str("</ListPartsResult>\n");
    Ok(xml_response(StatusCode::OK, xml))
}

async fn abort(oss: &LocalOss, req: &Located<'_>, id: &str) -> Result<Response, OssError> {
    let (dir, _) = open_upload(oss, id, req.bucket, req.key).await?;
    tokio::fs::remove_dir_all(&dir)
        .await
        .map_err(|_| no_such_upload())?;
    tracing::debug!(
        bucket = req.bucket,
        key = req.key,
        upload_id = id,
        "local OSS: multipart upload aborted"
    );
    Ok(with_request_id(StatusCode::NO_CONTENT.into_response()))
}

/// Reads a body of at most `limit` bytes (`None` beyond it).
async fn read_small(body: Body, limit: usize) -> Result<Option<Vec<u8>>, OssError> {
    let mut out = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(internal)?;
        if out.len() + chunk.len() > limit {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

fn malformed() -> OssError {
    OssError::new(
        400,
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published schema.",
    )
}

/// The text of the first `<tag>…</tag>` in `s`.
fn element<'a>(s: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = s.find(&open)? + open.len();
    let len = s[start..].find(&close)?;
    Some(&s[start..start + len])
}

/// Complete's part list: `(PartNumber, ETag)` in the order given.
fn parse_part_list(xml: &str) -> Result<Vec<(u32, String)>, OssError> {
    let mut parts = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<Part>") {
        let after = &rest[start + "<Part>".len()..];
        let end = after.find("</Part>").ok_or_else(malformed)?;
        let block = &after[..end];
        let n = element(block, "PartNumber")
            .and_then(|n| n.trim().parse::<u32>().ok())
            .ok_or_else(malformed)?;
        let etag = element(block, "ETag").ok_or_else(malformed)?;
        let etag = etag.trim().replace("&quot;", "\"");
        parts.push((n, etag.trim_matches('"').to_string()));
        rest = &after[end..];
    }
    if parts.is_empty() || !xml.contains("<CompleteMultipartUpload") {
        return Err(malformed());
    }
    Ok(parts)
}

/// The parts Complete assembles, checked as OSS checks them.
fn chosen_parts(
    stored: &[Part],
    listed: Option<Vec<(u32, String)>>,
) -> Result<Vec<Part>, OssError> {
    let chosen: Vec<Part> = match listed {
        None => stored.to_vec(),
        Some(list) => {
            if list.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err(OssError::new(
                    400,
                    "InvalidPartOrder",
                    "The list of parts was not in ascending order. The parts list must be specified in order by part number.",
                ));
            }
            list.iter()
                .map(|(n, tag)| {
                    stored
                        .iter()
                        .find(|p| p.number == *n && p.etag.eq_ignore_ascii_case(tag))
                        .cloned()
                        .ok_or_else(|| OssError::new(
                            400,
                            "InvalidPart",
                            "One or more of the specified parts could not be found or the specified entity tag might not have matched the part's entity tag.",
                        ))
                })
                .collect::<Result<_, _>>()?
        }
    };
    if chosen.is_empty() {
        return Err(malformed());
    }
    if chosen[..chosen.len() - 1]
        .iter()
        .any(|p| p.size < MIN_PART_BYTES)
    {
        return Err(OssError::new(
            400,
            "EntityTooSmall",
            "Your proposed upload is smaller than the minimum allowed size.",
        ));
    }
    Ok(chosen)
}

/// The multipart ETag: the MD5 of the parts' MD5s, `-<count>`.
fn multipart_etag(parts: &[Part]) -> String {
    let mut md5 = Md5::new();
    for p in parts {
        md5.update(hex::decode(&p.etag).unwrap_or_default());
    }
    format!("{}-{}", etag(md5), parts.len())
}

/// Concatenates the parts, file to file (the kernel copies; nothing is held in memory).
fn assemble(dir: &Path, parts: &[Part], to: &Path) -> std::io::Result<u64> {
    let mut out = std::fs::File::create(to)?;
    let mut total = 0;
    for p in parts {
        let mut part = std::fs::File::open(part_path(dir, p.number, "part"))?;
        total += std::io::copy(&mut part, &mut out)?;
    }
    out.sync_data()?;
    Ok(total)
}

async fn complete(
    ctx: &StoreContext,
    oss: &LocalOss,
    req: &Located<'_>,
    id: &str,
    body: Body,
) -> Result<Response, OssError> {
    let (dir, meta) = open_upload(oss, id, req.bucket, req.key).await?;
    let body = read_small(body, MAX_COMPLETE_BODY)
        .await?
        .ok_or_else(malformed)?;
    let all = req
        .headers
        .get("x-oss-complete-all")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("yes"));
    let listed = if all {
        if !body.is_empty() {
            return Err(OssError::invalid_argument(
                "Should not speficy both complete all header and http body.",
            ));
        }
        None
    } else {
        Some(parse_part_list(&String::from_utf8_lossy(&body))?)
    };
    let callback = callback_of(req)?;
    let stored = stored_parts(&dir).await?;
    let parts = chosen_parts(&stored, listed)?;
    let tmp = oss.tmp_path(&format!("complete-{}", uuid::Uuid::new_v4().simple()));
    let (d, p, t) = (dir.clone(), parts.clone(), tmp.clone());
    let size = tokio::task::spawn_blocking(move || assemble(&d, &p, &t))
        .await
        .map_err(internal)?
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            internal(e)
        })?;
    oss.commit(&tmp, req.bucket, req.key)
        .await
        .map_err(internal)?;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    let etag = multipart_etag(&parts);
    tracing::info!(
        bucket = req.bucket,
        key = req.key,
        upload_id = id,
        parts = parts.len(),
        size,
        "local OSS: multipart upload completed"
    );
    if let Some((spec, custom)) = callback {
        let vars = Variables {
            bucket: req.bucket.to_string(),
            object: req.key.to_string(),
            etag: etag.clone(),
            size,
            mime_type: meta
                .content_type
                .unwrap_or_else(|| super::oss::content_type(req.key).to_string()),
            custom,
        };
        let res = super::oss_post::callback_answer(ctx, &spec, &vars, req.requester()).await;
        return Ok(with_etag(res, &etag));
    }
    let location = format!(
        "{}/{}/{}",
        ctx.public_url,
        req.bucket,
        crate::oss::uri_encode(req.key, true)
    );
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUploadResult>\n  <Location>{}</Location>\n  <Bucket>{}</Bucket>\n  <Key>{}</Key>\n  <ETag>\"{etag}\"</ETag>\n</CompleteMultipartUploadResult>\n",
        xml_escape(&location),
        xml_escape(req.bucket),
        xml_escape(req.key)
    );
    Ok(with_etag(xml_response(StatusCode::OK, xml), &etag))
}

fn with_etag(mut res: Response, etag: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        res.headers_mut().insert(header::ETAG, v);
    }
    res
}

/// A callback and its custom `x:` variables.
type Callback = (CallbackSpec, Vec<(String, String)>);

/// Complete's callback: `x-oss-callback` (base64 JSON) and its `x-oss-callback-var` (base64 of
/// a JSON object of `x:` variables), as headers or query parameters.
fn callback_of(req: &Located<'_>) -> Result<Option<Callback>, OssError> {
    let q = query_pairs(req.uri);
    let find = |name: &str| {
        req.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| param(&q, &name["x-oss-".len()..]).map(str::to_string))
    };
    let Some(raw) = find("x-oss-callback") else {
        return Ok(None);
    };
    let spec = CallbackSpec::decode(&raw)?;
    let custom = match find("x-oss-callback-var") {
        None => Vec::new(),
        Some(v) => {
            let bad = || OssError::invalid_argument("The callback-var is not valid.");
            let raw = base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .map_err(|_| bad())?;
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&raw).map_err(|_| bad())?;
            map.into_iter()
                .filter(|(k, _)| k.starts_with("x:"))
                .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                .collect()
        }
    };
    Ok(Some((spec, custom)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(n: u32, size: u64) -> Part {
        Part {
            number: n,
            etag: format!("{n:032X}"),
            size,
            modified: chrono::Utc::now(),
        }
    }

    #[test]
    fn complete_checks_order_etags_and_sizes() {
        let stored = vec![part(1, MIN_PART_BYTES), part(2, 10), part(3, 5)];
        let list = |v: &[(u32, &str)]| Some(v.iter().map(|(n, e)| (*n, e.to_string())).collect());
        let code = |r: Result<Vec<Part>, OssError>| r.unwrap_err().code;
        assert_eq!(
            code(chosen_parts(
                &stored,
                list(&[(2, &stored[1].etag), (1, &stored[0].etag)])
            )),
            "InvalidPartOrder"
        );
        assert_eq!(
            code(chosen_parts(&stored, list(&[(1, "BAD")]))),
            "InvalidPart"
        );
        assert_eq!(
            code(chosen_parts(
                &stored,
                list(&[(2, &stored[1].etag), (3, &stored[2].etag)])
            )),
            "EntityTooSmall"
        );
        let ok = chosen_parts(
            &stored,
            list(&[(1, &stored[0].etag.to_lowercase()), (2, &stored[1].etag)]),
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        // Complete-all takes every part: part 2 is small and not last.
        assert_eq!(code(chosen_parts(&stored, None)), "EntityTooSmall");
    }

    #[test]
    fn part_lists_parse_as_clients_send_them() {
        let xml = "<CompleteMultipartUpload>\n<Part>\n<PartNumber>1</PartNumber>\n<ETag>\"AB\"</ETag>\n</Part><Part><PartNumber>3</PartNumber><ETag>&quot;CD&quot;</ETag></Part></CompleteMultipartUpload>";
        assert_eq!(
            parse_part_list(xml).unwrap(),
            vec![(1, "AB".to_string()), (3, "CD".to_string())]
        );
        assert_eq!(parse_part_list("<x/>").unwrap_err().code, "MalformedXML");
    }
}
