//! PostObject on the local store (`POST /<bucket>`, `multipart/form-data`, the `file` field
//! last; fields after it are ignored, as on OSS), and the upload callback OSS makes after it.
//!
//! The form is checked with `oss::post_policy::verify_post_fields` before the file is read
//! (policy conditions, expiry, the V4 or V1 signature: the code the gateway signs with), the
//! file is streamed to a temporary file and cut off beyond the policy's
//! `content-length-range` (`EntityTooLarge`), then stored. An anonymous form (no policy, no
//! signature) is accepted: the local buckets are public-read-write. Answers as OSS:
//! `success_action_status` 200 (empty), 201 (XML `PostResponse`) or 204 (the default).
//!
//! With a `callback` field, the store then POSTs the callback body (`${bucket}`, `${object}`,
//! `${etag}`, `${size}`, `${mimeType}`, `${x:…}` filled) to each `callbackUrl` in turn (5 s,
//! no retry, no redirects), signed with the emulator's RSA key (`authorization`, and
//! `x-oss-pub-key-url` naming `/_emulator/oss/callback_pub_key.pem` on this listener), and
//! relays the first `200` JSON answer to the uploader (status 200). When no URL answers so,
//! the object stays stored and the uploader gets `203 CallbackFailed`, as on OSS.

use axum::extract::multipart::Field;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use md5::{Digest, Md5};
use tokio::io::AsyncWriteExt;

use super::oss::{error_response, etag, oss_error, request_id, OssRoutes, StoreContext};
use crate::crypto::percent_decode;
use crate::oss::callback::{self, CallbackSpec, Variables};
use crate::oss::post_policy::{verify_post_fields, VerifiedPost};
use crate::oss::OssError;

/// The form fields before `file` are kept in memory: at most this much of them.
const MAX_FORM_FIELDS_BYTES: usize = 1024 * 1024;

/// `POST /<bucket>`: PostObject.
pub async fn post_object(State(OssRoutes(ctx)): State<OssRoutes>, req: Request) -> Response {
    let headers = req.headers().clone();
    let mut res = post(&ctx, req).await;
    ctx.cors(&headers, &mut res);
    res
}

/// A stored upload, before its answer.
struct Stored {
    bucket: String,
    key: String,
    size: u64,
    etag: String,
    mime_type: String,
    form: VerifiedPost,
}

async fn post(ctx: &StoreContext, req: Request) -> Response {
    let m = Method::POST;
    let Some(store) = ctx.store.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let uri: Uri = req.uri().clone();
    let bucket = percent_decode(uri.path().trim_matches('/')).unwrap_or_default();
    if store.bucket_path(&bucket).is_err() {
        return oss_error(
            StatusCode::BAD_REQUEST,
            "InvalidBucketName",
            &format!("The specified bucket {bucket:?} is not valid."),
            &m,
        );
    }
    let mut multipart =
        match Multipart::from_request(req, &()).await {
            Ok(mp) => mp,
            Err(_) => return error_response(
                &OssError::invalid_argument(
                    "PostObject takes a multipart/form-data body (Content-Type with a boundary).",
                ),
                &m,
            ),
        };
    match receive(ctx, store, &bucket, &mut multipart).await {
        Err(e) => {
            // Read what is left, so the uploader sees the answer rather than a reset.
            while let Ok(Some(mut f)) = multipart.next_field().await {
                while let Ok(Some(_)) = f.chunk().await {}
            }
            tracing::info!(bucket, code = %e.code, "local OSS: PostObject refused");
            error_response(&e, &m)
        }
        Ok(stored) => answer(ctx, stored).await,
    }
}

fn form_error(e: axum::extract::multipart::MultipartError) -> OssError {
    OssError::invalid_argument(format!("The multipart body is malformed: {e}"))
}

/// Reads the fields, checks them, streams the file into the store.
async fn receive(
    ctx: &StoreContext,
    store: &super::oss::LocalOss,
    bucket: &str,
    multipart: &mut Multipart,
) -> Result<Stored, OssError> {
    read_post_form(multipart, async |fields, mut file| {
        store_upload(ctx, store, bucket, &fields, &mut file).await
    })
    .await
}

/// Checks the form's `fields`, then streams its `file` into the store.
async fn store_upload(
    ctx: &StoreContext,
    store: &super::oss::LocalOss,
    bucket: &str,
    fields: &[(String, String)],
    field: &mut Field<'_>,
) -> Result<Stored, OssError> {
    let form = verify_post_fields(
        fields,
        &|id| ctx.secret_for(id),
        ctx.region_of(bucket),
        bucket,
        crate::clock::now(),
    )?;
    if let Some(id) = &form.access_key_id {
        let token = fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(crate::oss::SECURITY_TOKEN_HEADER))
            .map(|(_, v)| v.as_str());
        ctx.check_token(id, token)?;
    }
    // `${filename}` in the key is the uploaded file's name (OSS's one key variable).
    let filename = field.file_name().unwrap_or("").to_string();
    let key = form.key.replace("${filename}", &filename);
    if store.object_path(bucket, &key).is_err() {
        return Err(OssError::new(
            400,
            "InvalidObjectName",
            "The object key is not valid here (empty, `.` or `..` segments, or too long).",
        ));
    }
    let part_type = field.content_type().map(str::to_string);
    let tmp = store.tmp_path(&format!("post-{}", uuid::Uuid::new_v4().simple()));
    let (size, etag) = match stream_file(field, &tmp, &form).await {
        Ok(x) => x,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    if let Err(e) = store.commit(&tmp, bucket, &key).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        tracing::warn!(error = %e, bucket, key, "local OSS: cannot store an upload");
        return Err(OssError::new(
            500,
            "InternalError",
            "The object could not be stored.",
        ));
    }
    let mime_type = form
        .content_type
        .clone()
        .or(part_type.filter(|t| t != "application/octet-stream"))
        .unwrap_or_else(|| super::oss::content_type(&key).to_string());
    tracing::info!(bucket, key, size, signed_by = ?form.access_key_id, callback = form.callback.is_some(), "local OSS: PostObject stored");
    // Fields after `file` are ignored, as OSS ignores them.
    Ok(Stored {
        bucket: bucket.to_string(),
        key,
        size,
        etag,
        mime_type,
        form,
    })
}

/// Reads a PostObject form up to its `file` field: the text fields before it, in order (at
/// most `MAX_FORM_FIELDS_BYTES` together, each UTF-8), are handed with the `file` field, not
/// yet read, to `file`. OSS's `InvalidArgument` for a malformed body or a form without `file`.
/// Public so that the fuzz targets (`fuzz/`) read forms with it.
pub async fn read_post_form<T>(
    multipart: &mut Multipart,
    file: impl AsyncFnOnce(Vec<(String, String)>, Field<'_>) -> Result<T, OssError>,
) -> Result<T, OssError> {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut form_bytes = 0usize;
    loop {
        let Some(mut field) = multipart.next_field().await.map_err(form_error)? else {
            return Err(OssError::invalid_argument(
                "Bucket POST must contain a field named 'file', and it must be the last field.",
            ));
        };
        let name = field.name().unwrap_or("").to_string();
        if name.eq_ignore_ascii_case("file") {
            return file(fields, field).await;
        }
        let value = read_text_field(&mut field, &name, &mut form_bytes).await?;
        fields.push((name, value));
    }
}

/// A form field before the file, as text (the fields together at most
/// `MAX_FORM_FIELDS_BYTES`, counted in `form_bytes`).
async fn read_text_field(
    field: &mut Field<'_>,
    name: &str,
    form_bytes: &mut usize,
) -> Result<String, OssError> {
    let mut value = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(form_error)? {
        *form_bytes += chunk.len();
        if *form_bytes > MAX_FORM_FIELDS_BYTES {
            return Err(OssError::invalid_argument(
                "The form fields before the file exceed 1 MiB.",
            ));
        }
        value.extend_from_slice(&chunk);
    }
    String::from_utf8(value)
        .map_err(|_| OssError::invalid_argument(format!("The form field {name:?} is not UTF-8.")))
}

/// Streams the file part into `tmp`, stopping beyond the size the form allows: its size and
/// ETag.
async fn stream_file(
    field: &mut Field<'_>,
    tmp: &std::path::Path,
    form: &VerifiedPost,
) -> Result<(u64, String), OssError> {
    let max = *form.content_length.end();
    let io = |e: std::io::Error| {
        tracing::warn!(error = %e, "local OSS: cannot write an upload");
        OssError::new(500, "InternalError", "The object could not be stored.")
    };
    tokio::fs::create_dir_all(tmp.parent().expect("has a parent"))
        .await
        .map_err(io)?;
    let mut file = tokio::fs::File::create(tmp).await.map_err(io)?;
    let (mut size, mut md5) = (0u64, Md5::new());
    while let Some(chunk) = field.chunk().await.map_err(form_error)? {
        size += chunk.len() as u64;
        if size > max {
            // Stop storing; the caller drains the rest.
            form.check_size(size)?;
        }
        md5.update(&chunk);
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    form.check_size(size)?;
    Ok((size, etag(md5)))
}

fn with_common_headers(mut res: Response, etag: &str) -> Response {
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        h.insert("x-oss-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        h.insert(header::ETAG, v);
    }
    res
}

/// The uploader's answer after an upload with a callback (PostObject, or
/// CompleteMultipartUpload in `oss_multipart.rs`): the callback's JSON (200), or OSS's
/// `203 CallbackFailed` (the object stays stored).
pub(super) async fn callback_answer(
    ctx: &StoreContext,
    spec: &CallbackSpec,
    vars: &Variables,
    requester: &str,
) -> Response {
    match perform_callback(ctx, spec, vars, requester).await {
        Ok(json) => {
            let mut res = (StatusCode::OK, json).into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            res
        }
        Err(why) => {
            tracing::info!(bucket = %vars.bucket, key = %vars.object, %why, "local OSS: upload callback failed (203 CallbackFailed)");
            let mut res = error_response(&OssError::new(203, "CallbackFailed", why), &Method::POST);
            *res.status_mut() = StatusCode::NON_AUTHORITATIVE_INFORMATION;
            res
        }
    }
}

/// The uploader's answer: the callback's, or `success_action_status`'s.
async fn answer(ctx: &StoreContext, s: Stored) -> Response {
    if let Some(spec) = s.form.callback.clone() {
        let vars = Variables {
            bucket: s.bucket.clone(),
            object: s.key.clone(),
            etag: s.etag.clone(),
            size: s.size,
            mime_type: s.mime_type.clone(),
            custom: s.form.custom.clone(),
        };
        let requester = s.form.access_key_id.as_deref().unwrap_or("anonymous");
        let res = callback_answer(ctx, &spec, &vars, requester).await;
        return with_common_headers(res, &s.etag);
    }
    let res = match s.form.success_action_status {
        200 => StatusCode::OK.into_response(),
        201 => {
            let location = format!(
                "{}/{}/{}",
                ctx.public_url,
                s.bucket,
                crate::oss::uri_encode(&s.key, true)
            );
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<PostResponse>\n  <Bucket>{}</Bucket>\n  <Location>{}</Location>\n  <Key>{}</Key>\n  <ETag>\"{}\"</ETag>\n</PostResponse>\n",
                crate::oss::xml_escape(&s.bucket),
                crate::oss::xml_escape(&location),
                crate::oss::xml_escape(&s.key),
                s.etag
            );
            let mut res = (StatusCode::CREATED, body).into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml"),
            );
            res
        }
        _ => StatusCode::NO_CONTENT.into_response(),
    };
    with_common_headers(res, &s.etag)
}

/// The largest callback answer OSS relays (3 MB in the current doc).
const MAX_CALLBACK_ANSWER_BYTES: usize = 3 * 1024 * 1024;

/// Reads an answer's body up to `limit` bytes: `None` as soon as it passes the limit (the rest
/// is never read: an announced `Content-Length` over it is refused before any read), `Err` when
/// it cannot be read.
async fn read_bounded(mut res: reqwest::Response, limit: usize) -> Result<Option<Vec<u8>>, ()> {
    if res.content_length().is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|_| ())? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// Calls back each URL in turn; the first `200` with a JSON body is the answer. `Err`: OSS's
/// `CallbackFailed` message.
async fn perform_callback(
    ctx: &StoreContext,
    spec: &CallbackSpec,
    vars: &Variables,
    requester: &str,
) -> Result<String, String> {
    let body = callback::fill(&spec.body, &spec.body_type, vars);
    let key = ctx.callback_key().await;
    let key_url = base64::engine::general_purpose::STANDARD.encode(ctx.callback_pub_key_url());
    let mut last = String::from("No callbackUrl to call.");
    for raw in spec
        .url
        .split(';')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .take(5)
    {
        let url = if raw.contains("://") {
            raw.to_string()
        } else {
            format!("http://{raw}")
        };
        let Ok(parsed) = reqwest::Url::parse(&url) else {
            last = format!("The callbackUrl {raw:?} is not a URL.");
            continue;
        };
        let target = match parsed.query() {
            Some(q) => format!("{}?{q}", parsed.path()),
            None => parsed.path().to_string(),
        };
        let authorization = callback::sign(&key.private, &target, body.as_bytes());
        let sent = ctx
            .http
            .post(parsed)
            .header(header::CONTENT_TYPE, &spec.body_type)
            .header(header::AUTHORIZATION, authorization)
            .header("x-oss-pub-key-url", &key_url)
            .header("x-oss-bucket", &vars.bucket)
            .header("x-oss-requester", requester)
            .body(body.clone())
            .send()
            .await;
        let res = match sent {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, url = %url, "local OSS: callback not delivered");
                last =
                    "Error status : -1. OSS can not connect to your callbackUrl, please check it."
                        .into();
                continue;
            }
        };
        let status = res.status().as_u16();
        if status != 200 {
            last = format!("Error status : {status}.");
            continue;
        }
        let text = match read_bounded(res, MAX_CALLBACK_ANSWER_BYTES).await {
            Ok(Some(t)) => t,
            Ok(None) => {
                last = "Response body is too large (over 3 MB).".into();
                continue;
            }
            Err(()) => {
                last = "Error status : -1. OSS could not read the callback's answer.".into();
                continue;
            }
        };
        let Ok(text) = String::from_utf8(text) else {
            last = "Response body is not valid json format.".into();
            continue;
        };
        if serde_json::from_str::<serde_json::Value>(&text).is_err() {
            last = "Response body is not valid json format.".into();
            continue;
        }
        return Ok(text);
    }
    Err(last)
}
