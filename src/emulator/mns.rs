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
//! messages. With a state directory the queue is durable, as MNS is (`mns-<queue>.jsonl`: one
//! line per message put and per delete, compacted at start; a message received before a restart
//! is visible again after it). `GET /_emulator/mns` shows counters and the messages in the queue;
//! `POST /_emulator/mns/messages` enqueues any body (tests send stale or foreign messages).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use super::clock::Clock;
use super::state::EmulatorState;
use crate::mps::mns::{body_md5, error_xml, xml_escape, MAX_BATCH, MAX_WAIT_S, XMLNS};
use crate::mps::sign;

/// Counters of `GET /_emulator/mns`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MnsStats {
    /// Job messages published (copies of duplicates included).
    pub published: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub delayed: u64,
    /// Enqueued through `POST /_emulator/mns/messages`.
    pub injected: u64,
    /// Message deliveries (a message received twice counts twice).
    pub delivered: u64,
    pub deleted: u64,
    pub receive_calls: u64,
    pub empty_receives: u64,
    /// Requests refused (signature, date, unknown key or queue).
    pub refused: u64,
}

struct Queued {
    id: String,
    body: String,
    enqueue_ms: i64,
    visible_at_ms: i64,
    handle: Option<String>,
    dequeue_count: u32,
    first_dequeue_ms: Option<i64>,
}

#[derive(Default)]
struct QueueInner {
    messages: VecDeque<Queued>,
    seq: u64,
    stats: MnsStats,
    log: Option<std::fs::File>,
}

/// One line of the queue's file.
#[derive(Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum LogRecord {
    Put {
        id: String,
        body: String,
        enqueue_ms: i64,
        visible_at_ms: i64,
    },
    Del(String),
}

impl QueueInner {
    fn append(&mut self, r: &LogRecord) {
        use std::io::Write;
        if let Some(f) = &mut self.log {
            let mut line = serde_json::to_vec(r).unwrap_or_default();
            line.push(b'\n');
            if let Err(e) = f.write_all(&line) {
                tracing::error!(error = %e, "cannot append to the emulator's MNS queue file");
            }
        }
    }
}

/// Replays and compacts `<dir>/mns-<name>.jsonl`: the messages not deleted, and the file
/// opened for appending.
fn open_log(
    dir: &std::path::Path,
    name: &str,
) -> anyhow::Result<(VecDeque<Queued>, std::fs::File)> {
    use std::io::{BufRead, Write};
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("mns-{name}.jsonl"));
    let mut live: Vec<Queued> = Vec::new();
    if let Ok(f) = std::fs::File::open(&path) {
        for line in std::io::BufReader::new(f).lines() {
            // A torn last line is skipped.
            match serde_json::from_str::<LogRecord>(&line?) {
                Ok(LogRecord::Put {
                    id,
                    body,
                    enqueue_ms,
                    visible_at_ms,
                }) => live.push(Queued {
                    id,
                    body,
                    enqueue_ms,
                    visible_at_ms,
                    handle: None,
                    dequeue_count: 0,
                    first_dequeue_ms: None,
                }),
                Ok(LogRecord::Del(id)) => live.retain(|m| m.id != id),
                Err(_) => {}
            }
        }
    }
    let tmp = dir.join(format!("mns-{name}.jsonl.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        for m in &live {
            let r = LogRecord::Put {
                id: m.id.clone(),
                body: m.body.clone(),
                enqueue_ms: m.enqueue_ms,
                visible_at_ms: m.visible_at_ms,
            };
            let mut line = serde_json::to_vec(&r)?;
            line.push(b'\n');
            f.write_all(&line)?;
        }
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    let file = std::fs::OpenOptions::new().append(true).open(&path)?;
    if !live.is_empty() {
        tracing::info!(
            queue = name,
            messages = live.len(),
            "emulator MNS queue reloaded"
        );
    }
    Ok((live.into(), file))
}

pub struct MnsQueue {
    pub(super) name: String,
    visibility_ms: u64,
    /// The emulator's clock: enqueue times, delays and visibility are measured on it.
    clock: Clock,
    inner: Mutex<QueueInner>,
    arrived: tokio::sync::Notify,
}

impl MnsQueue {
    /// The queue, durable in `state_dir` when one is given.
    pub fn new(
        name: String,
        visibility_ms: u64,
        state_dir: Option<&std::path::Path>,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let mut inner = QueueInner::default();
        if let Some(dir) = state_dir {
            let (messages, file) = open_log(dir, &name)?;
            inner.messages = messages;
            inner.log = Some(file);
        }
        Ok(Self {
            name,
            visibility_ms,
            clock,
            inner: Mutex::new(inner),
            arrived: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a job message that a fault lost.
    pub(super) fn count_lost(&self) {
        self.lock().stats.lost += 1;
    }

    /// Enqueues `body`, visible after `delay_ms`. `kind` says what it is, for the counters.
    pub(super) fn enqueue(&self, body: String, delay_ms: u64, kind: Publish) -> String {
        let mut q = self.lock();
        q.seq += 1;
        let now = self.clock.now_ms();
        let id = format!("{:016X}{:016X}", now, q.seq);
        q.append(&LogRecord::Put {
            id: id.clone(),
            body: body.clone(),
            enqueue_ms: now,
            visible_at_ms: now + delay_ms as i64,
        });
        q.messages.push_back(Queued {
            id: id.clone(),
            body,
            enqueue_ms: now,
            visible_at_ms: now + delay_ms as i64,
            handle: None,
            dequeue_count: 0,
            first_dequeue_ms: None,
        });
        match kind {
            Publish::Job => q.stats.published += 1,
            Publish::Duplicate => {
                q.stats.published += 1;
                q.stats.duplicated += 1;
            }
            Publish::Injected => q.stats.injected += 1,
        }
        if delay_ms > 0 && kind == Publish::Job {
            q.stats.delayed += 1;
        }
        drop(q);
        self.arrived.notify_waiters();
        id
    }

    /// Takes up to `n` visible messages, each with a new receipt handle, as `<Message>` XML.
    fn take(&self, n: usize) -> Vec<String> {
        let now = self.clock.now_ms();
        let mut q = self.lock();
        let QueueInner {
            messages,
            seq,
            stats,
            ..
        } = &mut *q;
        let mut out = Vec::new();
        for m in messages.iter_mut().filter(|m| m.visible_at_ms <= now) {
            if out.len() >= n {
                break;
            }
            *seq += 1;
            let handle = format!("{:X}-{}", *seq, uuid::Uuid::new_v4().simple());
            m.handle = Some(handle.clone());
            m.dequeue_count += 1;
            m.first_dequeue_ms.get_or_insert(now);
            m.visible_at_ms = now + self.visibility_ms as i64;
            stats.delivered += 1;
            out.push(format!(
                "<Message><MessageId>{}</MessageId><ReceiptHandle>{}</ReceiptHandle><MessageBodyMD5>{}</MessageBodyMD5><MessageBody>{}</MessageBody><EnqueueTime>{}</EnqueueTime><NextVisibleTime>{}</NextVisibleTime><FirstDequeueTime>{}</FirstDequeueTime><DequeueCount>{}</DequeueCount><Priority>8</Priority></Message>",
                m.id,
                xml_escape(&handle),
                body_md5(&m.body),
                xml_escape(&m.body),
                m.enqueue_ms,
                m.visible_at_ms,
                m.first_dequeue_ms.unwrap_or(now),
                m.dequeue_count
            ));
        }
        out
    }

    /// Waits up to `wait` for visible messages.
    async fn receive(&self, n: usize, wait: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.arrived.notified();
            let got = self.take(n);
            if !got.is_empty() || tokio::time::Instant::now() >= deadline {
                return got;
            }
            // New messages wake the wait; delayed ones and expired visibility are seen within
            // 20 ms.
            let tick = deadline.min(tokio::time::Instant::now() + Duration::from_millis(20));
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(tick) => {}
            }
        }
    }

    fn delete(&self, handle: &str) -> Result<(), (&'static str, &'static str)> {
        let now = self.clock.now_ms();
        let mut q = self.lock();
        let Some(i) = q
            .messages
            .iter()
            .position(|m| m.handle.as_deref() == Some(handle))
        else {
            return Err((
                "ReceiptHandleError",
                "The receipt handle you provide is not valid.",
            ));
        };
        if q.messages[i].visible_at_ms <= now {
            // Visible again: the handle expired with the visibility timeout.
            return Err(("MessageNotExist", "Message not exist."));
        }
        if let Some(m) = q.messages.remove(i) {
            q.append(&LogRecord::Del(m.id));
        }
        q.stats.deleted += 1;
        Ok(())
    }

    fn view(&self) -> Value {
        let now = self.clock.now_ms();
        let q = self.lock();
        let messages: Vec<Value> = q
            .messages
            .iter()
            .map(|m| {
                json!({"id": m.id, "body": m.body, "dequeue_count": m.dequeue_count,
                       "visible": m.visible_at_ms <= now})
            })
            .collect();
        json!({"queue": self.name, "visibility_ms": self.visibility_ms, "stats": q.stats, "messages": messages})
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Publish {
    Job,
    Duplicate,
    Injected,
}

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
type Refusal = (StatusCode, &'static str, &'static str);

/// The queue this request names, after MNS's signature and date checks; a refusal is answered
/// with MNS's error body (`mns_error`).
fn check<'a>(
    state: &'a EmulatorState,
    name: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<&'a MnsQueue, Refusal> {
    let refuse = |status, code, message| {
        if let Some(q) = &state.mns {
            q.lock().stats.refused += 1;
        }
        Err((status, code, message))
    };
    let Some(queue) = state.mns.as_ref().filter(|q| q.name == name) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "QueueNotExist",
            "The queue name you provided is not exist.",
        );
    };
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if header("x-mns-version").is_none() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "MissingVersionHeader",
            "The x-mns-version header is required.",
        );
    }
    let fresh = header("date")
        .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
        .is_some_and(|d| (chrono::Utc::now() - d.to_utc()).num_seconds().abs() <= 15 * 60);
    if !fresh {
        return refuse(
            StatusCode::FORBIDDEN,
            "TimeExpired",
            "The Date header is missing, malformed or more than 15 minutes off.",
        );
    }
    let Some((id, signature)) =
        header("authorization").and_then(|a| sign::parse_mns_authorization(a).ok())
    else {
        return refuse(
            StatusCode::FORBIDDEN,
            "InvalidAuthorizationHeader",
            "The Authorization header must be MNS AccessKeyId:Signature.",
        );
    };
    let Some((_, secret)) = state.config.access_keys.iter().find(|(k, _)| k == id) else {
        return refuse(
            StatusCode::FORBIDDEN,
            "InvalidAccessKeyId",
            "The access key id you provided does not exist.",
        );
    };
    let resource = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let pairs = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
    let expected = sign::sign_mns(
        secret,
        &sign::string_to_sign_mns(method.as_str(), pairs, resource),
    );
    if !crate::secret::constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        return refuse(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        );
    }
    Ok(queue)
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `GET /queues/{name}/messages`: `ReceiveMessage` / `BatchReceiveMessage`.
pub async fn receive_messages(
    State(state): State<Arc<EmulatorState>>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let queue = match check(&state, &name, &method, &uri, &headers) {
        Ok(q) => q,
        Err((status, code, message)) => return mns_error(status, code, message),
    };
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
    queue.lock().stats.receive_calls += 1;
    let got = tokio::select! {
        got = queue.receive(n as usize, Duration::from_secs(wait.into())) => got,
        _ = state.stop.cancelled() => Vec::new(),
    };
    if got.is_empty() {
        queue.lock().stats.empty_receives += 1;
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
pub async fn delete_message(
    State(state): State<Arc<EmulatorState>>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let queue = match check(&state, &name, &method, &uri, &headers) {
        Ok(q) => q,
        Err((status, code, message)) => return mns_error(status, code, message),
    };
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
