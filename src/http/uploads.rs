//! `/v1/uploads` (browser uploads straight to OSS: a PostObject form, or above
//! `uploads.multipart_threshold_bytes` a multipart upload whose part URLs `/v1/uploads/{id}/parts`
//! signs and lists), `POST /callbacks/oss` (OSS's upload callback) and the demo page `/upload`. Adapters over [`crate::services::uploads::UploadService`],
//! where every rule of uploads lives.
//!
//! Who may read an upload ([`UploadAccess`]): the team's token (its own uploads), or the
//! upload's browser token (`sgu_…`, only that upload and its job, until it expires) — sent as
//! `Authorization: Bearer`, or as `?access_token=` on the events stream only (`EventSource`
//! cannot send headers); a query token on any other route is a 401 that points to the header
//! (tokens in URLs land in access logs and referrers). A browser token is no team token: every
//! other route answers it 401.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{
    ApiError, BodyErrors, JsonWriteErrors, Problem, ReadErrors, TeamRateLimited, Unauthenticated,
};
use super::views::JobResource;
use super::{AppState, Caller};
use crate::http::strict_json::StrictJson;
use crate::services::uploads::{
    CreatedUpload, NewUpload, PartUrls, StoredParts, UploadStatus, OUTPUTS_EVENT_ID,
};

/// Who reads an upload.
#[derive(Debug, Clone)]
pub enum UploadAccess {
    /// A browser token: this upload only.
    Browser(Uuid),
    /// A team token: the team's uploads.
    Team { team: String },
}

fn query_token(parts: &Parts) -> Option<String> {
    let q = parts.uri.query()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
}

impl FromRequestParts<AppState> for UploadAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header_token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| rest.trim().to_string())
            });
        // The query token is for `EventSource` only (it cannot send headers).
        let query = query_token(parts);
        if query.is_some() && !parts.uri.path().ends_with("/events") {
            return Err(ApiError::Unauthorized);
        }
        let token = header_token.or(query);
        if let Some(t) =
            token.filter(|t| t.starts_with(crate::services::uploads::BROWSER_TOKEN_PREFIX))
        {
            if t.len() > 256 {
                return Err(ApiError::Unauthorized);
            }
            let upload = state
                .uploads
                .by_browser_token(&t)
                .await?
                .ok_or(ApiError::Unauthorized)?;
            tracing::Span::current().record("team", upload.team.as_str());
            super::auth::check_rate(parts, state, &upload.team)?;
            return Ok(UploadAccess::Browser(upload.id));
        }
        let caller = Caller::from_request_parts(parts, state).await?;
        Ok(UploadAccess::Team { team: caller.team })
    }
}

impl UploadAccess {
    /// Whether this caller may read `upload` (else: 404, as for another team's job).
    fn may_read(&self, s: &UploadStatus) -> bool {
        match self {
            UploadAccess::Browser(id) => *id == s.upload.id,
            UploadAccess::Team { team } => *team == s.upload.team,
        }
    }
}

/// `POST /v1/uploads`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUploadBody {
    /// The preset the job is made from: `name@version`, or `name` (pinned to its latest version now).
    #[schema(example = "storyboard@2")]
    pub preset: String,
    /// The file's name (the object key's last part).
    #[schema(example = "clip 01.mp4")]
    pub filename: String,
    #[schema(example = "video/mp4")]
    pub content_type: String,
    /// The exact size the policy allows.
    #[schema(example = 1048576)]
    pub size_bytes: u64,
    /// The job's `user_data` (the job validator's rules).
    pub user_data: Option<String>,
}

/// One field of the PostObject form.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FormField {
    pub name: String,
    pub value: String,
}

/// The browser's form: `POST` `multipart/form-data` to `url` with `fields` in this order,
/// then the file as the field `file`, last.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UploadForm {
    pub url: String,
    pub method: String,
    pub fields: Vec<FormField>,
}

/// A multipart upload's plan: part `n` (from 1) is bytes `[(n-1)·part_size, min(n·part_size,
/// size_bytes))`; every part is `part_size` bytes but the last.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = MultipartPlan)]
pub struct MultipartResource {
    #[schema(example = 8388608)]
    pub part_size: u64,
    #[schema(example = 25)]
    pub part_count: u32,
}

fn multipart_resource(u: &crate::store::UploadRecord) -> Option<MultipartResource> {
    u.multipart.as_ref().map(|m| MultipartResource {
        part_size: m.part_size,
        part_count: m.part_count,
    })
}

/// The uploaded object.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = UploadObject)]
pub struct UploadObjectResource {
    pub location: String,
    pub bucket: String,
    pub object: String,
}

/// An upload: `state` is `waiting`, `uploaded` or `expired`, then its job's state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Upload)]
pub struct UploadResource {
    pub id: Uuid,
    #[schema(example = "waiting")]
    pub state: String,
    /// `name@version`.
    pub preset: String,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: u64,
    pub user_data: Option<String>,
    pub object: UploadObjectResource,
    pub created_at: DateTime<Utc>,
    /// Until then the form may be posted.
    pub expires_at: DateTime<Utc>,
    /// `callback` or `complete`: how snapgate learned the object had landed.
    pub uploaded_via: Option<String>,
    /// The part plan of a multipart upload (`null`: a PostObject form upload).
    pub multipart: Option<MultipartResource>,
    /// The job made from the preset (the same job `/v1/snapshot-jobs/{id}` shows the team),
    /// with its `outputs` once it has succeeded.
    pub job: Option<JobResource>,
}

impl UploadResource {
    fn new(s: &UploadStatus, state: &AppState) -> Self {
        let u = &s.upload;
        UploadResource {
            id: u.id,
            state: s.state().to_string(),
            preset: u.preset.clone(),
            filename: u.filename.clone(),
            content_type: u.content_type.clone(),
            size_bytes: u.size_bytes,
            user_data: u.user_data.clone(),
            object: UploadObjectResource {
                location: u.location.clone(),
                bucket: u.bucket.clone(),
                object: u.object_key.clone(),
            },
            created_at: u.created_at,
            expires_at: u.expires_at,
            uploaded_via: u.uploaded_via.clone(),
            multipart: multipart_resource(u),
            job: s.job.clone().map(|j| JobResource::new(j, &state.outputs)),
        }
    }
}

/// A new upload intent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = UploadIntent)]
pub struct UploadIntentResource {
    pub upload_id: Uuid,
    pub upload: UploadResource,
    /// Where and how the browser uploads a file up to `uploads.multipart_threshold_bytes`
    /// (`null` for a multipart upload).
    pub form: Option<UploadForm>,
    /// A larger file's multipart plan (`null` for a form upload): ask `parts_url` for part URLs,
    /// `PUT` each part, then call `complete_url`.
    pub multipart: Option<MultipartResource>,
    /// Give this to the browser: it reads this upload (and its job) only, until
    /// `browser_token_expires_at`. Shown once.
    pub browser_token: String,
    pub browser_token_expires_at: DateTime<Utc>,
    /// Whether OSS will call snapgate back when the object lands (`http.public_url` is set);
    /// either way the browser may call `complete_url`.
    pub callback: bool,
    pub status_url: String,
    pub events_url: String,
    pub complete_url: String,
    /// `POST` for part URLs, `GET` for the stored parts (multipart uploads).
    pub parts_url: String,
}

fn intent_resource(c: CreatedUpload, state: &AppState) -> UploadIntentResource {
    let id = c.upload.id;
    let multipart = multipart_resource(&c.upload);
    let status = UploadStatus {
        upload: c.upload,
        job: None,
    };
    UploadIntentResource {
        upload_id: id,
        upload: UploadResource::new(&status, state),
        callback: state.uploads.config().callback_url.is_some(),
        form: c.form.map(|form| UploadForm {
            url: form.url,
            method: "POST".into(),
            fields: form
                .fields
                .into_iter()
                .map(|(name, value)| FormField { name, value })
                .collect(),
        }),
        multipart,
        browser_token: c.token,
        browser_token_expires_at: c.token_expires_at,
        status_url: format!("/v1/uploads/{id}"),
        events_url: format!("/v1/uploads/{id}/events"),
        complete_url: format!("/v1/uploads/{id}/complete"),
        parts_url: format!("/v1/uploads/{id}/parts"),
    }
}

fn parse_body(body: Result<StrictJson, ApiError>) -> Result<NewUpload, ApiError> {
    let StrictJson(body) = body?;
    let b: CreateUploadBody = serde_json::from_value(body).map_err(|e| {
        ApiError::Validation(vec![crate::domain::Violation {
            field: String::new(),
            code: "invalid_body".into(),
            message: format!("expected preset, filename, content_type, size_bytes, user_data: {e}"),
        }])
    })?;
    Ok(NewUpload {
        preset: b.preset,
        filename: b.filename,
        content_type: b.content_type,
        size_bytes: b.size_bytes,
        user_data: b.user_data,
    })
}

/// Make an upload intent (the team's backend calls this; the browser gets the form and token).
#[utoipa::path(
    post,
    path = "/v1/uploads",
    tag = "uploads",
    request_body(content = CreateUploadBody, content_type = "application/json"),
    responses(
        (status = 201, body = UploadIntentResource),
        JsonWriteErrors,
        BodyErrors,
        (status = 422, description = "Bad intent, or the preset's job would not be valid for it; every violation listed", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No OSS key configured", body = Problem, content_type = "application/problem+json"),
        TeamRateLimited,
    ),
    security(("bearer" = []))
)]
pub async fn create_upload(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<StrictJson, ApiError>,
) -> Result<Response, ApiError> {
    let req = parse_body(body)?;
    let created = state.uploads.create(&caller.team, req).await?;
    let res = intent_resource(created, &state);
    let location = res.status_url.clone();
    let mut out = (StatusCode::CREATED, Json(res)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        out.headers_mut().insert(header::LOCATION, v);
    }
    Ok(out)
}

async fn readable(
    state: &AppState,
    access: &UploadAccess,
    id: &str,
) -> Result<UploadStatus, ApiError> {
    let id = Uuid::parse_str(id).map_err(|_| ApiError::NotFound)?;
    let status = state.uploads.status(id).await?.ok_or(ApiError::NotFound)?;
    if !access.may_read(&status) {
        return Err(ApiError::NotFound);
    }
    Ok(status)
}

/// An upload and its job.
#[utoipa::path(
    get,
    path = "/v1/uploads/{id}",
    tag = "uploads",
    params(("id" = String, Path, description = "The upload id")),
    responses(
        (status = 200, body = UploadResource),
        ReadErrors,
    ),
    security(("bearer" = []))
)]
pub async fn get_upload(
    State(state): State<AppState>,
    access: UploadAccess,
    Path(id): Path<String>,
) -> Result<Json<UploadResource>, ApiError> {
    let s = readable(&state, &access, &id).await?;
    Ok(Json(UploadResource::new(&s, &state)))
}

/// The browser says the object is uploaded (when OSS cannot call snapgate back): snapgate
/// checks with a signed `HEAD` that it is there with the declared size, then makes the job
/// (once, whoever asks first: this or the callback). On a multipart upload snapgate first
/// checks every planned part is stored with its planned size (409 `parts_missing` or
/// `size_mismatch`, each part listed) and completes the upload itself. Called again, it answers
/// the same upload and job.
#[utoipa::path(
    post,
    path = "/v1/uploads/{id}/complete",
    tag = "uploads",
    params(("id" = String, Path, description = "The upload id")),
    responses(
        (status = 200, body = UploadResource),
        ReadErrors,
        (status = 409, description = "Not uploaded yet (`object_not_uploaded`, or `parts_missing`), another size (`size_mismatch`), or the intent expired", body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn complete_upload(
    State(state): State<AppState>,
    access: UploadAccess,
    Path(id): Path<String>,
) -> Result<Json<UploadResource>, ApiError> {
    let s = readable(&state, &access, &id).await?;
    let s = state.uploads.complete(s.upload.id).await?;
    Ok(Json(UploadResource::new(&s, &state)))
}

/// `POST /v1/uploads/{id}/parts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartUrlsBody {
    /// 1 to 100 part numbers, each from 1 to the plan's `part_count`.
    #[schema(example = json!([1, 2, 3]))]
    pub part_numbers: Vec<u64>,
}

/// Where to `PUT` one part: exactly `size` bytes, with no `Content-Type` header (the URL is
/// signed with none).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = PartUrl)]
pub struct PartUrlResource {
    pub part_number: u32,
    #[schema(example = "PUT")]
    pub method: String,
    /// A presigned `UploadPart` URL for this part of this upload only.
    pub url: String,
    pub size: u64,
}

/// Part URLs, usable until `expires_at` (at most 15 minutes; never past the browser token or
/// the intent): ask again for fresh ones.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = PartUrls)]
pub struct PartUrlsResource {
    pub parts: Vec<PartUrlResource>,
    pub expires_at: DateTime<Utc>,
}

impl From<PartUrls> for PartUrlsResource {
    fn from(p: PartUrls) -> Self {
        PartUrlsResource {
            parts: p
                .parts
                .into_iter()
                .map(|p| PartUrlResource {
                    part_number: p.number,
                    method: "PUT".into(),
                    url: p.url,
                    size: p.size,
                })
                .collect(),
            expires_at: p.expires_at,
        }
    }
}

/// A part the store holds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = StoredPart)]
pub struct StoredPartResource {
    pub part_number: u32,
    /// The part's ETag, without quotes.
    pub etag: String,
    pub size: u64,
}

/// What the store holds of a multipart upload (ascending), with the plan: a client resumes by
/// sending the parts that are missing or have another size than planned.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = StoredParts)]
pub struct StoredPartsResource {
    pub part_size: u64,
    pub part_count: u32,
    pub parts: Vec<StoredPartResource>,
}

impl From<StoredParts> for StoredPartsResource {
    fn from(s: StoredParts) -> Self {
        StoredPartsResource {
            part_size: s.plan.part_size,
            part_count: s.plan.part_count,
            parts: s
                .parts
                .into_iter()
                .map(|p| StoredPartResource {
                    part_number: p.number,
                    etag: p.etag,
                    size: p.size,
                })
                .collect(),
        }
    }
}

/// Presigned `UploadPart` URLs for parts of a multipart upload (its browser token or the team's
/// token, in the `Authorization` header).
#[utoipa::path(
    post,
    path = "/v1/uploads/{id}/parts",
    tag = "uploads",
    params(("id" = String, Path, description = "The upload id")),
    request_body(content = PartUrlsBody, content_type = "application/json"),
    responses(
        (status = 200, body = PartUrlsResource),
        ReadErrors,
        BodyErrors,
        (status = 409, description = "The upload expired (`upload_expired`), is no longer waiting (`upload_not_waiting`), or is a form upload (`not_multipart`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Part numbers out of range, every one listed", body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_part_urls(
    State(state): State<AppState>,
    access: UploadAccess,
    Path(id): Path<String>,
    body: Result<StrictJson, ApiError>,
) -> Result<Json<PartUrlsResource>, ApiError> {
    let s = readable(&state, &access, &id).await?;
    let StrictJson(body) = body?;
    let b: PartUrlsBody = serde_json::from_value(body).map_err(|e| {
        ApiError::Validation(vec![crate::domain::Violation {
            field: String::new(),
            code: "invalid_body".into(),
            message: format!("expected part_numbers, a list of positive integers: {e}"),
        }])
    })?;
    let urls = state
        .uploads
        .part_urls(s.upload.id, &b.part_numbers)
        .await?;
    Ok(Json(urls.into()))
}

/// The parts the store holds of a multipart upload (OSS's ListParts), so a client resumes.
#[utoipa::path(
    get,
    path = "/v1/uploads/{id}/parts",
    tag = "uploads",
    params(("id" = String, Path, description = "The upload id")),
    responses(
        (status = 200, body = StoredPartsResource),
        ReadErrors,
        (status = 409, description = "The upload expired (`upload_expired`), is no longer waiting (`upload_not_waiting`), or is a form upload (`not_multipart`)", body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_upload_parts(
    State(state): State<AppState>,
    access: UploadAccess,
    Path(id): Path<String>,
) -> Result<Json<StoredPartsResource>, ApiError> {
    let s = readable(&state, &access, &id).await?;
    let parts = state.uploads.stored_parts(s.upload.id).await?;
    Ok(Json(parts.into()))
}

/// Live status as Server-Sent Events: `state` events (the upload resource; `id` is the
/// state's rank, so `Last-Event-ID` resumes), then once succeeded an `outputs` event (the
/// manifest); the stream ends at a final state.
#[utoipa::path(
    get,
    path = "/v1/uploads/{id}/events",
    tag = "uploads",
    params(
        ("id" = String, Path, description = "The upload id"),
        ("access_token" = Option<String>, Query, description = "The browser token, for EventSource (which sends no headers)"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event"),
    ),
    responses(
        (status = 200, description = "text/event-stream", content_type = "text/event-stream", body = String),
        ReadErrors,
    ),
    security(("bearer" = []))
)]
pub async fn upload_events(
    State(state): State<AppState>,
    access: UploadAccess,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let s = readable(&state, &access, &id).await?;
    let last: u64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let rx = state.upload_hub.watch(s.upload.id).await?;
    let closing = state.upload_hub.closing();
    let st = state.clone();
    let stream = futures::stream::unfold((rx, last, false), move |(mut rx, mut last, done)| {
        let st = st.clone();
        let closing = closing.clone();
        async move {
            if done {
                return None;
            }
            loop {
                let cur = rx.borrow_and_update().clone();
                if let Some(s) = cur {
                    let n = s.ordinal();
                    if n > last {
                        let body = UploadResource::new(&s, &st);
                        let ev = Event::default()
                            .id(n.to_string())
                            .event("state")
                            .json_data(&body)
                            .expect("serializable");
                        return Some((Ok::<_, Infallible>(ev), (rx, n, false)));
                    }
                    if s.is_final() {
                        let outputs = body_outputs(&s, &st);
                        if last < OUTPUTS_EVENT_ID {
                            if let Some(o) = outputs {
                                let ev = Event::default()
                                    .id(OUTPUTS_EVENT_ID.to_string())
                                    .event("outputs")
                                    .json_data(&o)
                                    .expect("serializable");
                                last = OUTPUTS_EVENT_ID;
                                return Some((Ok(ev), (rx, last, true)));
                            }
                        }
                        return None;
                    }
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return None },
                    _ = closing.cancelled() => return None,
                }
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The upload's job's storyboard as WebVTT (the job storyboard route's answer), readable with
/// the browser token (in the `Authorization` header); the storyboard's own `urls`, `duration_ms`.
#[utoipa::path(
    get,
    path = "/v1/uploads/{id}/storyboard.vtt",
    tag = "uploads",
    params(("id" = String, Path, description = "The upload id"), super::outputs::StoryboardParams),
    responses(
        (status = 200, description = "WebVTT thumbnails", body = String, content_type = "text/vtt"),
        (status = 400, description = "Bad query parameters", body = Problem, content_type = "application/problem+json"),
        Unauthenticated,
        (status = 404, description = "No such upload, no job yet, or no sprite", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has not succeeded", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_upload_storyboard_vtt(
    State(state): State<AppState>,
    access: UploadAccess,
    Path(id): Path<String>,
    axum::extract::Query(params): axum::extract::Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let (urls, duration) = super::outputs::parse_params(&params)?;
    let s = readable(&state, &access, &id).await?;
    let job = s.job.as_ref().ok_or(ApiError::NotFound)?;
    let sb = super::outputs::storyboard_for(&state, job, urls, duration).await?;
    Ok(super::outputs::vtt_response(&sb))
}

fn body_outputs(s: &UploadStatus, state: &AppState) -> Option<super::views::OutputsResource> {
    let job = s.job.as_ref()?;
    let m = state.outputs.manifest(job)?;
    let max = state.outputs.max_listed();
    Some(super::views::OutputsResource::page(&m, &state.outputs, job.id, 0, max).0)
}

/// `POST /callbacks/oss`: OSS's upload callback. Verified as OSS signs it; the answer (the
/// upload with its job) is what OSS relays to the browser.
pub async fn oss_callback(
    State(state): State<AppState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<UploadResource>, ApiError> {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string());
    let s = state
        .uploads
        .callback(
            h("authorization"),
            h("x-oss-pub-key-url"),
            &path_and_query,
            &body,
        )
        .await?;
    Ok(Json(UploadResource::new(&s, &state)))
}

/// The demo page (embedded default with `uploads.demo_page = true`).
pub async fn upload_page(State(state): State<AppState>) -> Result<Response, ApiError> {
    if !state.demo_uploads {
        return Err(ApiError::NotFound);
    }
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Html(include_str!("upload_page.html")),
    )
        .into_response())
}

#[derive(Debug, Serialize)]
struct DemoPresets {
    presets: Vec<String>,
}

/// The demo page's presets: the `default` team's.
pub async fn demo_presets(State(state): State<AppState>) -> Result<Response, ApiError> {
    if !state.demo_uploads {
        return Err(ApiError::NotFound);
    }
    let mut names: Vec<String> = Vec::new();
    for p in state
        .store
        .list_presets(crate::domain::DEFAULT_TEAM)
        .await?
    {
        names.retain(|n| !n.starts_with(&format!("{}@", p.name)));
        names.push(p.reference());
    }
    Ok(Json(DemoPresets { presets: names }).into_response())
}

/// The demo page's intent endpoint: an intent for the `default` team, without a token (this is
/// what a team's backend does in production).
pub async fn demo_intent(
    State(state): State<AppState>,
    body: Result<StrictJson, ApiError>,
) -> Result<Response, ApiError> {
    if !state.demo_uploads {
        return Err(ApiError::NotFound);
    }
    let req = parse_body(body)?;
    let created = state
        .uploads
        .create(crate::domain::DEFAULT_TEAM, req)
        .await?;
    Ok((StatusCode::CREATED, Json(intent_resource(created, &state))).into_response())
}
