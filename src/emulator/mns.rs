//! The emulator's MNS queue (`--mns-queue NAME`): every pipeline is bound to it, so each job
//! that ends publishes MPS's job message (`Job::to_notification`) there. MNS's queue API on the
//! emulator's listener, signed and verified as MNS signs (`mps::sign::string_to_sign_mns`):
//!
//! - `GET /queues/{name}/messages?numOfMessages=N&waitseconds=S`: `ReceiveMessage`, long poll;
//!   a received message is invisible for the visibility timeout (`--mns-visibility-ms`), then
//!   comes back with a new receipt handle unless it was deleted; `404 MessageNotExist` when
//!   nothing came within the wait;
//! - `DELETE /queues/{name}/messages?ReceiptHandle=H`: `DeleteMessage`, `204`; an old handle
//!   (the message came back since) answers `404 ReceiptHandleError`.
//!
//! Faults (`faults.rs`): lost, duplicated (the copy arrives `mns_delay_ms` later) and delayed
//! messages. The queue itself (messages, visibility, counters, its durable file in a state
//! directory) is `mns_queue.rs`; this file is its HTTP side. `GET /_emulator/mns` shows counters
//! and the messages in the queue; `POST /_emulator/mns/messages` enqueues any body (tests send
//! stale or foreign messages).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::mns_queue::{MnsQueue, Publish};
use super::state::EmulatorState;
use crate::mps::mns::{error_xml, MAX_BATCH, MAX_WAIT_S, XMLNS};
use crate::mps::sign;

fn mns_error(status: StatusCode, code: &str, message: &str) -> Response {
    let rid = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    (
        status,
        [
            ("content-type", "text/xml;charset=utf-8"),
            ("x-mns-request-id", rid.as_str()),
        ],
        error_xml(code, message, &rid),
    )
        .into_response()
}

/// Why a request was refused: status, MNS code, message.
pub type MnsRefusal = (StatusCode, &'static str, &'static str);

/// The queue this request names, after MNS's signature and date checks; a refusal is answered
/// with MNS's error body (`mns_error`, by [`AuthedQueue`]).
fn check<'a>(
    state: &'a EmulatorState,
    name: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<&'a Arc<MnsQueue>, MnsRefusal> {
    let refuse = |(status, code, message): MnsRefusal| {
        if let Some(q) = &state.mns {
            q.count(|s| s.refused += 1);
        }
        Err((status, code, message))
    };
    let Some(queue) = state.mns.as_ref().filter(|q| q.name == name) else {
        return refuse((
            StatusCode::NOT_FOUND,
            "QueueNotExist",
            "The queue name you provided is not exist.",
        ));
    };
    let keys = &state.config.access_keys;
    let sts = Some(state.sts.as_ref());
    match verify_mns_request(keys, sts, method, uri, headers, chrono::Utc::now()) {
        Ok(()) => Ok(queue),
        Err(refusal) => refuse(refusal),
    }
}

/// MNS's checks of a queue request, as MNS makes them: `x-mns-version` present, a `Date`
/// within 15 minutes of `now`, and an `Authorization: MNS <id>:<signature>` made with the
/// secret of one of `access_keys` (id, secret), or of temporary credentials `sts` issued (with
/// their `security-token`), over the method, the headers MNS signs and the path and query.
/// Public so that the fuzz targets (`fuzz/`) check requests with it.
pub fn verify_mns_request(
    access_keys: &[(String, String)],
    sts: Option<&super::sts::StsIssuer>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), MnsRefusal> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if header("x-mns-version").is_none() {
        return Err((
            StatusCode::BAD_REQUEST,
            "MissingVersionHeader",
            "The x-mns-version header is required.",
        ));
    }
    let fresh = header("date")
        .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
        .is_some_and(|d| (now - d.to_utc()).num_seconds().abs() <= 15 * 60);
    if !fresh {
        return Err((
            StatusCode::FORBIDDEN,
            "TimeExpired",
            "The Date header is missing, malformed or more than 15 minutes off.",
        ));
    }
    let Some((id, signature)) =
        header("authorization").and_then(|a| sign::parse_mns_authorization(a).ok())
    else {
        return Err((
            StatusCode::FORBIDDEN,
            "InvalidAuthorizationHeader",
            "The Authorization header must be MNS AccessKeyId:Signature.",
        ));
    };
    let known = access_keys
        .iter()
        .find(|(k, _)| k == id)
        .map(|(_, s)| s.clone())
        .or_else(|| sts.and_then(|sts| sts.secret_for(id)));
    let Some(secret) = known else {
        return Err((
            StatusCode::FORBIDDEN,
            "InvalidAccessKeyId",
            "The access key id you provided does not exist.",
        ));
    };
    let resource = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let pairs = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
    if let Some(Err(p)) = sts.map(|sts| sts.check_token(id, header("security-token"))) {
        return Err(match p {
            super::sts::TokenProblem::Expired => (
                StatusCode::FORBIDDEN,
                "SecurityTokenExpired",
                "The security token you provided has expired.",
            ),
            super::sts::TokenProblem::Mismatch => (
                StatusCode::FORBIDDEN,
                "InvalidAccessKeyId",
                "The security token you provided does not match the AccessKey Id.",
            ),
        });
    }
    let expected = sign::sign_mns(
        &secret,
        &sign::string_to_sign_mns(method.as_str(), pairs, resource),
    );
    if !crate::secret::constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        return Err((
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        ));
    }
    Ok(())
}

/// The queue a request to `/queues/{name}/…` names, once [`check`] accepts the request: the
/// extractor of every MNS queue handler. A refused request gets MNS's error body and never
/// reaches the handler.
pub struct AuthedQueue(Arc<MnsQueue>);

impl FromRequestParts<Arc<EmulatorState>> for AuthedQueue {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<EmulatorState>,
    ) -> Result<Self, Response> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        match check(state, &name, &parts.method, &parts.uri, &parts.headers) {
            Ok(queue) => Ok(Self(queue.clone())),
            Err((status, code, message)) => Err(mns_error(status, code, message)),
        }
    }
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `GET /queues/{name}/messages`: `ReceiveMessage` / `BatchReceiveMessage`.
pub async fn receive_messages(
    State(state): State<Arc<EmulatorState>>,
    AuthedQueue(queue): AuthedQueue,
    uri: Uri,
) -> Response {
    let batch = query_param(&uri, "numOfMessages");
    let n = match batch.as_deref().map(str::parse::<u32>) {
        None => 1,
        Some(Ok(n)) if (1..=MAX_BATCH).contains(&n) => n,
        Some(_) => {
            return mns_error(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                "numOfMessages must be an integer from 1 to 16.",
            )
        }
    };
    let wait = match query_param(&uri, "waitseconds")
        .as_deref()
        .map(str::parse::<u32>)
    {
        None => 0,
        Some(Ok(s)) if s <= MAX_WAIT_S => s,
        Some(_) => {
            return mns_error(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                "waitseconds must be an integer from 0 to 30.",
            )
        }
    };
    queue.count(|s| s.receive_calls += 1);
    let got = tokio::select! {
        got = queue.receive(n as usize, Duration::from_secs(wait.into())) => got,
        _ = state.stop.cancelled() => Vec::new(),
    };
    if got.is_empty() {
        queue.count(|s| s.empty_receives += 1);
        return mns_error(
            StatusCode::NOT_FOUND,
            "MessageNotExist",
            "Message not exist.",
        );
    }
    let body = if batch.is_some() {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Messages xmlns=\"{XMLNS}\">{}</Messages>",
            got.concat()
        )
    } else {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}",
            got[0].replacen("<Message>", &format!("<Message xmlns=\"{XMLNS}\">"), 1)
        )
    };
    (
        StatusCode::OK,
        [("content-type", "text/xml;charset=utf-8")],
        body,
    )
        .into_response()
}

/// `DELETE /queues/{name}/messages?ReceiptHandle=…`: `DeleteMessage`.
pub async fn delete_message(AuthedQueue(queue): AuthedQueue, uri: Uri) -> Response {
    let Some(handle) = query_param(&uri, "ReceiptHandle") else {
        return mns_error(
            StatusCode::BAD_REQUEST,
            "MissingReceiptHandle",
            "ReceiptHandle is required.",
        );
    };
    match queue.delete(&handle) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err((code, message)) => mns_error(StatusCode::NOT_FOUND, code, message),
    }
}

/// `GET /_emulator/mns`: counters and the messages in the queue.
pub async fn stats(State(state): State<Arc<EmulatorState>>) -> Response {
    match &state.mns {
        Some(q) => Json(q.view()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no MNS queue (--mns-queue)"})),
        )
            .into_response(),
    }
}

/// `POST /_emulator/mns/messages`: enqueues the body as a message.
pub async fn inject(State(state): State<Arc<EmulatorState>>, body: String) -> Response {
    match &state.mns {
        Some(q) => {
            Json(json!({"message_id": q.enqueue(body, 0, Publish::Injected)})).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no MNS queue (--mns-queue)"})),
        )
            .into_response(),
    }
}
