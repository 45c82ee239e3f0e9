//! One API error type, rendered as `application/problem+json` (RFC 9457).
//!
//! Handlers return [`ApiError`]; its `IntoResponse` only attaches the error to the response, and
//! the [`render_problems`] middleware writes the body, because only the middleware knows the
//! request id. The same middleware turns bare error responses from the framework and tower layers
//! (unknown route, 405, 413, timeouts) into problem documents too, so every error has one shape.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use axum::extract::rejection::JsonRejection;

use crate::domain::Violation;
use crate::services::jobs::{CancelError, SubmitError};
use crate::services::presets::PresetError;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON")]
    MalformedJson(String),
    #[error("the request body must be JSON")]
    UnsupportedMediaType,
    #[error("the request is not valid")]
    Validation(Vec<Violation>),
    #[error("bad query parameters")]
    BadQuery(Vec<Violation>),
    #[error("bad header")]
    BadHeader {
        header: &'static str,
        message: String,
    },
    #[error("not found")]
    NotFound,
    /// A 404 too (no job has that id), saying why.
    #[error("malformed job id")]
    MalformedJobId,
    #[error("no storyboard")]
    NoStoryboard(String),
    #[error("the job has not succeeded")]
    JobNotSucceeded { state: crate::domain::JobState },
    #[error("the job cannot be cancelled")]
    NotCancellable { state: crate::domain::JobState },
    #[error("the job cannot be retried")]
    NotRetryable { state: crate::domain::JobState },
    #[error("the team is paused")]
    TeamPaused,
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still being processed")]
    IdempotencyKeyInProgress,
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("forbidden")]
    Forbidden,
    #[error("too many requests")]
    RateLimited { retry_after: std::time::Duration },
    #[error("too many jobs in flight")]
    QuotaExceeded { limit: u64 },
    #[error("the upload intent expired")]
    UploadExpired,
    #[error("the object is not uploaded")]
    ObjectNotUploaded,
    #[error("the object's size differs from the intent's")]
    SizeMismatch { declared: u64, found: u64 },
    #[error("callback refused")]
    CallbackRefused,
    #[error("uploads are not configured")]
    UploadsNotConfigured,
    #[error("the upload is not waiting for its object")]
    UploadNotWaiting { state: &'static str },
    #[error("the upload is not a multipart upload")]
    NotMultipart,
    /// Every missing part (up to 100 listed), and how many are missing.
    #[error("parts are missing")]
    PartsMissing {
        listed: Vec<Violation>,
        count: usize,
    },
    /// Every part stored with another size than planned (up to 100 listed).
    #[error("parts have other sizes than planned")]
    PartSizeMismatch {
        listed: Vec<Violation>,
        count: usize,
    },
    #[error("OSS did not answer")]
    OssUnavailable,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<crate::services::uploads::UploadError> for ApiError {
    fn from(e: crate::services::uploads::UploadError) -> Self {
        use crate::services::uploads::UploadError as E;
        match e {
            E::Invalid(v) => ApiError::Validation(v),
            E::NotFound => ApiError::NotFound,
            E::Expired => ApiError::UploadExpired,
            E::ObjectMissing => ApiError::ObjectNotUploaded,
            E::SizeMismatch { declared, found } => ApiError::SizeMismatch { declared, found },
            // Why (already logged) stays out of the answer: it goes to whoever forged it.
            E::CallbackRefused(_) => ApiError::CallbackRefused,
            E::NotConfigured => ApiError::UploadsNotConfigured,
            E::Oss(why) => {
                tracing::warn!(error = %why, "OSS request failed");
                ApiError::OssUnavailable
            }
            E::NotWaiting(state) => ApiError::UploadNotWaiting {
                state: state.as_str(),
            },
            E::NotMultipart => ApiError::NotMultipart,
            E::PartsMissing(missing) => ApiError::PartsMissing {
                count: missing.len(),
                listed: missing
                    .iter()
                    .take(crate::services::upload_parts::MAX_LISTED_PROBLEMS)
                    .map(|n| Violation {
                        field: format!("/parts/{n}"),
                        code: "missing".into(),
                        message: format!("part {n} is not stored: upload it, then complete again"),
                    })
                    .collect(),
            },
            E::PartSizes(wrong) => ApiError::PartSizeMismatch {
                count: wrong.len(),
                listed: wrong
                    .iter()
                    .take(crate::services::upload_parts::MAX_LISTED_PROBLEMS)
                    .map(|(n, found, want)| Violation {
                        field: format!("/parts/{n}"),
                        code: "size_mismatch".into(),
                        message: format!(
                            "part {n} has {found} bytes, the plan {want}: upload it again"
                        ),
                    })
                    .collect(),
            },
            E::Submit(e) => e.into(),
            E::Store(e) => e.into(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge
            }
            // The parser's own words (line and column), without axum's preamble.
            JsonRejection::JsonSyntaxError(e) => ApiError::MalformedJson(
                std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| e.body_text()),
            ),
            // A duplicate or NUL object key (`strict_json.rs`), with its line and column.
            JsonRejection::JsonDataError(e) => ApiError::MalformedJson(
                std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| e.body_text()),
            ),
            other => ApiError::MalformedJson(other.body_text()),
        }
    }
}

impl From<PresetError> for ApiError {
    fn from(e: PresetError) -> Self {
        match e {
            PresetError::Invalid(v) => ApiError::Validation(v),
            PresetError::Store(e) => e.into(),
        }
    }
}

impl From<CancelError> for ApiError {
    fn from(e: CancelError) -> Self {
        match e {
            CancelError::NotFound => ApiError::NotFound,
            CancelError::NotCancellable { state } => ApiError::NotCancellable { state },
            CancelError::Store(e) => e.into(),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Invalid(v) => ApiError::Validation(v),
            SubmitError::KeyReused => ApiError::IdempotencyKeyReused,
            SubmitError::KeyInProgress => ApiError::IdempotencyKeyInProgress,
            SubmitError::QuotaExceeded { limit } => ApiError::QuotaExceeded { limit },
            SubmitError::TeamPaused => ApiError::TeamPaused,
            SubmitError::Store(e) => e.into(),
        }
    }
}

impl From<crate::services::jobs::RetryError> for ApiError {
    fn from(e: crate::services::jobs::RetryError) -> Self {
        use crate::services::jobs::RetryError;
        match e {
            RetryError::NotFound => ApiError::NotFound,
            RetryError::NotFailed { state } => ApiError::NotRetryable { state },
            RetryError::Submit(e) => e.into(),
        }
    }
}

impl From<crate::services::lifecycle::OpsError> for ApiError {
    fn from(e: crate::services::lifecycle::OpsError) -> Self {
        use crate::services::lifecycle::OpsError;
        match e {
            OpsError::UnknownTeam => ApiError::NotFound,
            OpsError::Invalid(v) => ApiError::Validation(v),
            OpsError::Store(e) => e.into(),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Internal(e.into())
    }
}

/// The problem document every error answers with.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable, machine-readable code (e.g. `validation_failed`).
    pub code: String,
    /// The id of this request (also in the `x-request-id` header): quote it when reporting a problem.
    pub request_id: Option<String>,
    /// Every violation, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Violation>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) | ApiError::BadQuery(_) | ApiError::BadHeader { .. } => {
                StatusCode::BAD_REQUEST
            }
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) | ApiError::IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::NotFound | ApiError::NoStoryboard(_) => StatusCode::NOT_FOUND,
            ApiError::MalformedJobId => StatusCode::NOT_FOUND,
            ApiError::JobNotSucceeded { .. }
            | ApiError::NotCancellable { .. }
            | ApiError::NotRetryable { .. }
            | ApiError::TeamPaused => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::IdempotencyKeyInProgress => StatusCode::CONFLICT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } | ApiError::QuotaExceeded { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::UploadExpired
            | ApiError::ObjectNotUploaded
            | ApiError::SizeMismatch { .. }
            | ApiError::UploadNotWaiting { .. }
            | ApiError::NotMultipart
            | ApiError::PartsMissing { .. }
            | ApiError::PartSizeMismatch { .. } => StatusCode::CONFLICT,
            ApiError::CallbackRefused => StatusCode::FORBIDDEN,
            ApiError::UploadsNotConfigured => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::OssUnavailable => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Validation(_) => "validation_failed",
            ApiError::BadQuery(_) => "invalid_query",
            ApiError::BadHeader { .. } => "invalid_header",
            ApiError::NotFound | ApiError::MalformedJobId => "not_found",
            ApiError::NoStoryboard(_) => "storyboard_not_available",
            ApiError::JobNotSucceeded { .. } => "job_not_succeeded",
            ApiError::NotCancellable { .. } => "job_not_cancellable",
            ApiError::NotRetryable { .. } => "job_not_retryable",
            ApiError::TeamPaused => "team_paused",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::IdempotencyKeyInProgress => "idempotency_key_in_progress",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::QuotaExceeded { .. } => "quota_exceeded",
            ApiError::UploadExpired => "upload_expired",
            ApiError::ObjectNotUploaded => "object_not_uploaded",
            ApiError::SizeMismatch { .. } | ApiError::PartSizeMismatch { .. } => "size_mismatch",
            ApiError::UploadNotWaiting { .. } => "upload_not_waiting",
            ApiError::NotMultipart => "not_multipart",
            ApiError::PartsMissing { .. } => "parts_missing",
            ApiError::CallbackRefused => "callback_refused",
            ApiError::UploadsNotConfigured => "uploads_not_configured",
            ApiError::OssUnavailable => "oss_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn detail(&self) -> String {
        match self {
            ApiError::MalformedJson(why) => format!("the request body is not valid JSON: {why}"),
            ApiError::UnsupportedMediaType => {
                "send the body as JSON with `Content-Type: application/json`".into()
            }
            ApiError::Validation(errors) => format!(
                "the request breaks {} rule(s); see `errors`",
                errors.len()
            ),
            ApiError::BadQuery(_) => "some query parameters are not valid; see `errors`".into(),
            ApiError::BadHeader { header, message } => format!("{header}: {message}"),
            ApiError::NotFound => "no such resource".into(),
            ApiError::MalformedJobId => "the job id in the path is not a UUID (job ids look like \
                 0190a0b0-0000-7000-8000-000000000000)"
                .into(),
            ApiError::NoStoryboard(why) => format!("this job has no storyboard: {why}"),
            ApiError::JobNotSucceeded { state } => format!(
                "the job is {}; a storyboard exists once it has succeeded",
                state.as_str()
            ),
            ApiError::NotCancellable { state } => format!(
                "the job is {}; only a job MPS has not been sent can be cancelled, and MPS offers \
                 no cancel for a snapshot job once it is sent",
                state.as_str()
            ),
            ApiError::NotRetryable { state } => format!(
                "the job is {}; only a failed job can be retried",
                state.as_str()
            ),
            ApiError::TeamPaused => "an operator paused this team and new jobs are refused until it is resumed".into(),
            ApiError::PayloadTooLarge => "the request body is larger than this gateway accepts".into(),
            ApiError::IdempotencyKeyReused => "this Idempotency-Key was already used with a different request body; use a new key for a new job".into(),
            ApiError::IdempotencyKeyInProgress => "the first request with this Idempotency-Key is still being processed; retry shortly".into(),
            // Never which part was wrong (missing, malformed, unknown or revoked).
            ApiError::Unauthorized => "send a valid API token as `Authorization: Bearer <token>`".into(),
            ApiError::Forbidden => "this needs an admin key".into(),
            ApiError::RateLimited { retry_after } => format!(
                "this team is sending requests too fast; retry after {} s",
                retry_after.as_secs().max(1)
            ),
            ApiError::QuotaExceeded { limit } => format!(
                "this team already has {limit} jobs in flight; wait for some to finish"
            ),
            ApiError::UploadExpired => "this upload intent expired before the object landed; ask for a new one".into(),
            ApiError::ObjectNotUploaded => "the object is not in the bucket yet: upload it with the form first".into(),
            ApiError::SizeMismatch { declared, found } => format!("the object has {found} bytes, the intent declared {declared}"),
            ApiError::CallbackRefused => "this callback is not signed by OSS for an upload snapgate knows".into(),
            ApiError::UploadsNotConfigured => "uploads need an OSS key (uploads.access_key_id, or the MPS key)".into(),
            ApiError::UploadNotWaiting { state } => format!("this upload is {state}: its parts can no longer change"),
            ApiError::NotMultipart => "this upload is a PostObject form upload; parts are for multipart uploads (size_bytes above uploads.multipart_threshold_bytes)".into(),
            ApiError::PartsMissing { count, .. } => format!("{count} part(s) are not stored yet; see `errors` (the first 100); upload them, then complete again"),
            ApiError::PartSizeMismatch { count, .. } => format!("{count} part(s) are stored with another size than planned; see `errors` (the first 100); upload them again, then complete again"),
            ApiError::OssUnavailable => "OSS did not answer (the object check, or a multipart call); retry shortly".into(),
            // Never the cause: it goes to the log, with the request id.
            ApiError::Internal(_) => "an internal error occurred; report the request_id".into(),
        }
    }

    fn into_problem(self, request_id: Option<String>) -> Problem {
        let status = self.status();
        let detail = self.detail();
        let code = self.code().to_string();
        let errors = match self {
            ApiError::Validation(v) | ApiError::BadQuery(v) => v,
            ApiError::PartsMissing { listed, .. } | ApiError::PartSizeMismatch { listed, .. } => {
                listed
            }
            _ => Vec::new(),
        };
        Problem::new(status, code, detail, request_id, errors)
    }
}

impl Problem {
    fn new(
        status: StatusCode,
        code: String,
        detail: String,
        request_id: Option<String>,
        errors: Vec<Violation>,
    ) -> Self {
        Problem {
            type_: format!("https://snapgate.dev/problems/{}", code.replace('_', "-")),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail,
            code,
            request_id,
            errors,
        }
    }
}

/// Carried in response extensions until [`render_problems`] writes it.
#[derive(Clone)]
struct PendingProblem(std::sync::Arc<std::sync::Mutex<Option<ApiError>>>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = self.status().into_response();
        match &self {
            ApiError::Unauthorized => {
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"snapgate\""),
                );
            }
            ApiError::RateLimited { retry_after } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            ApiError::QuotaExceeded { .. } => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(5u64));
            }
            _ => {}
        }
        res.extensions_mut()
            .insert(PendingProblem(std::sync::Arc::new(std::sync::Mutex::new(
                Some(self),
            ))));
        res
    }
}

fn generic_error(status: StatusCode) -> (String, String) {
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => "timeout",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::UNAUTHORIZED => "unauthorized",
        _ if status.is_server_error() => "internal_error",
        _ => "bad_request",
    };
    let detail = match status {
        StatusCode::NOT_FOUND => "no such resource",
        StatusCode::METHOD_NOT_ALLOWED => "this method is not allowed on this resource",
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than this gateway accepts",
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => {
            "the request took too long; retry later"
        }
        _ => "the request could not be processed",
    };
    (code.to_string(), detail.to_string())
}

/// What [`render_problems`] says beyond the error itself.
#[derive(Clone, Copy, Debug)]
pub struct ProblemContext {
    /// `http.body_limit_bytes`, stated in every 413.
    pub body_limit_bytes: usize,
}

/// Writes problem bodies (see the module docs) and logs internal errors with the request id.
pub async fn render_problems(
    axum::extract::State(cx): axum::extract::State<ProblemContext>,
    req: Request,
    next: Next,
) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut res = next.run(req).await;
    let pending = res
        .extensions_mut()
        .remove::<PendingProblem>()
        .and_then(|p| p.0.lock().ok().and_then(|mut g| g.take()));
    let problem = match pending {
        Some(err) => {
            if let ApiError::Internal(cause) = &err {
                tracing::error!(request_id = request_id.as_deref().unwrap_or("-"), error = ?cause, "internal error");
            }
            err.into_problem(request_id)
        }
        None => {
            let status = res.status();
            // Only bare answers (no body type, or framework plain text) are rewritten; a
            // handler's own JSON error body (e.g. /readyz) is left as it is.
            let bare = res
                .headers()
                .get(header::CONTENT_TYPE)
                .is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
            if !(status.is_client_error() || status.is_server_error()) || !bare {
                return res;
            }
            let (code, detail) = generic_error(status);
            Problem::new(status, code, detail, request_id, Vec::new())
        }
    };
    let mut problem = problem;
    if problem.status == StatusCode::PAYLOAD_TOO_LARGE.as_u16() {
        problem.detail = format!(
            "the request body is larger than this gateway accepts: at most {} bytes \
             (http.body_limit_bytes)",
            cx.body_limit_bytes
        );
    }
    let body = serde_json::to_vec(&problem).expect("serializable");
    let (mut parts, _) = res.into_parts();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

// ---------------------------------------------------------------------------------------------
// The problem responses the OpenAPI document lists, written once. Each `#[utoipa::path]` names
// the sets it can answer with (`responses((status = 200, …), ReadErrors)`); a response whose
// description is particular to one route stays written out there. The variants are never built:
// they only describe. A variant's doc comment would become its description, so they have none.
// ---------------------------------------------------------------------------------------------

/// 401: missing or invalid credentials.
#[derive(utoipa::IntoResponses)]
pub enum Unauthenticated {
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
}

/// 401 and 404: a read (or an action) on one resource by id.
#[derive(utoipa::IntoResponses)]
pub enum ReadErrors {
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
}

/// 401, 404 and 429: a read on one job, which counts against the team rate limit.
#[derive(utoipa::IntoResponses)]
pub enum LimitedReadErrors {
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Problem),
}

/// 400, 401 and 429: a list with query parameters, counted against the team rate limit.
#[derive(utoipa::IntoResponses)]
pub enum ListErrors {
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Problem),
}

/// A job's storyboard (WebVTT or JSON): the list errors, plus no sprite (404) or not yet
/// succeeded (409).
#[derive(utoipa::IntoResponses)]
pub enum StoryboardErrors {
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    #[response(
        status = 404,
        description = "No such job, or it has no sprite",
        content_type = "application/problem+json"
    )]
    NotFound(Problem),
    #[response(
        status = 409,
        description = "The job has not succeeded",
        content_type = "application/problem+json"
    )]
    Conflict(Problem),
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Problem),
}

/// 413 and 415: what the body limit and the JSON body readers answer.
#[derive(utoipa::IntoResponses)]
pub enum BodyErrors {
    #[response(
        status = 413,
        description = "Body too large",
        content_type = "application/problem+json"
    )]
    PayloadTooLarge(Problem),
    #[response(
        status = 415,
        description = "Not JSON",
        content_type = "application/problem+json"
    )]
    UnsupportedMediaType(Problem),
}

/// 400 and 401: a JSON write, listed beside [`BodyErrors`] (the route adds its own 422).
#[derive(utoipa::IntoResponses)]
pub enum JsonWriteErrors {
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
}

/// 429 on a write counted against the team rate limit only (no quota).
#[derive(utoipa::IntoResponses)]
pub enum TeamRateLimited {
    #[response(
        status = 429,
        description = "Team rate limit reached (see Retry-After)",
        content_type = "application/problem+json"
    )]
    TooManyRequests(Problem),
}

/// 401, 403 and 429: an admin-only route.
#[derive(utoipa::IntoResponses)]
pub enum AdminErrors {
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Problem),
}
