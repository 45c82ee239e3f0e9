//! The emulator's MNS queue itself, apart from its HTTP handlers (`mns.rs`): the messages,
//! their visibility and receipt handles, the counters, and the queue's file in the state
//! directory. `EmulatorState` holds the queue and publishes to it, and the handlers need
//! `EmulatorState`; keeping the queue here lets both import it without importing each other.
//!
//! With a state directory the queue is durable, as MNS is (`mns-<queue>.jsonl`: one line per
//! message put and per delete, compacted at start; a message received before a restart is
//! visible again after it).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use super::clock::Clock;
use crate::mps::mns::{body_md5, xml_escape};

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

    /// Changes the counters of `GET /_emulator/mns` (the handlers count refusals and receives).
    pub(super) fn count(&self, f: impl FnOnce(&mut MnsStats)) {
        f(&mut self.lock().stats);
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
    pub(super) async fn receive(&self, n: usize, wait: Duration) -> Vec<String> {
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

    pub(super) fn delete(&self, handle: &str) -> Result<(), (&'static str, &'static str)> {
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

    pub(super) fn view(&self) -> Value {
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
