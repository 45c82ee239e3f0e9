//! The MPS-compatible endpoint's error answer: `{"RequestId","HostId","Code","Message"}` with
//! MPS's codes and HTTP statuses (docs/mps/API.md §4). A leaf: the handlers and the
//! authentication both answer with it.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::mps::verify::AuthError;

/// The only API version snapgate answers (Mts `2014-06-18`).
pub const VERSION: &str = "2014-06-18";

/// An MPS error answer: `{"RequestId","HostId","Code","Message"}` with MPS's HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// Authentication, as the shared verifier (`mps/verify.rs`) words it.
    #[error("{0}")]
    Auth(#[from] AuthError),
    /// A request MPS would refuse, with MPS's code.
    #[error("{code}: {message}")]
    Invalid { code: &'static str, message: String },
    /// A bucket of another MPS region than the input's, or an input in a region snapgate does
    /// not serve: MPS's code for a bucket it cannot reach, answered 422 (not sent to MPS).
    #[error("region: {0}")]
    Region(String),
    #[error("unknown action {0}")]
    UnknownAction(String),
    /// The team's request rate or in-flight quota (`Throttling.User`).
    #[error("throttled: {message}")]
    Throttled {
        retry_after: Duration,
        message: String,
    },
    /// The cause goes to the log, never to the client.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl RpcError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        RpcError::Invalid {
            code,
            message: message.into(),
        }
    }

    pub(super) fn status(&self) -> StatusCode {
        match self {
            RpcError::Auth(e) => StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            RpcError::Invalid { .. } => StatusCode::BAD_REQUEST,
            RpcError::Region(_) => StatusCode::UNPROCESSABLE_ENTITY,
            RpcError::UnknownAction(_) => StatusCode::NOT_FOUND,
            // MPS answers throttling with 400 (docs/mps/API.md §4.3, DOC 48054).
            RpcError::Throttled { .. } => StatusCode::BAD_REQUEST,
            RpcError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            RpcError::Auth(e) => e.code,
            RpcError::Invalid { code, .. } => code,
            RpcError::Region(_) => "InvalidParameter.ResourceNotFound",
            RpcError::UnknownAction(_) => "InvalidAction.NotFound",
            RpcError::Throttled { .. } => "Throttling.User",
            RpcError::Internal(_) => "InternalError",
        }
    }

    pub(super) fn message(&self) -> String {
        match self {
            RpcError::Auth(e) => e.message.clone(),
            RpcError::Invalid { message, .. } => message.clone(),
            RpcError::Region(message) => message.clone(),
            RpcError::UnknownAction(a) => format!(
                "Specified api is not found, please check your url and method: {a} (snapgate answers SubmitSnapshotJob and QuerySnapshotJobList)"
            ),
            RpcError::Throttled { message, .. } => {
                format!("Request was denied due to user flow control: {message}")
            }
            RpcError::Internal(_) => "The request processing has failed due to some unknown error, exception or failure.".into(),
        }
    }

    pub(super) fn into_response(self, request_id: &str, host: &str) -> Response {
        if let RpcError::Internal(cause) = &self {
            tracing::error!(request_id, error = ?cause, "internal error (MPS-compatible endpoint)");
        }
        let body = json!({
            "RequestId": request_id,
            "HostId": host,
            "Code": self.code(),
            "Message": self.message(),
        });
        let mut res = (self.status(), Json(body)).into_response();
        if let RpcError::Throttled { retry_after, .. } = &self {
            // The Tea SDK reads `x-acs-retry-after` (milliseconds) into ThrottlingException.
            let ms = retry_after.as_millis().max(1) as u64;
            res.headers_mut()
                .insert("x-acs-retry-after", HeaderValue::from(ms));
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl From<crate::store::StoreError> for RpcError {
    fn from(e: crate::store::StoreError) -> Self {
        RpcError::Internal(e.into())
    }
}
