//! MNS (Simple Message Queue) queue client: `ReceiveMessage` (long poll with `waitseconds`, up
//! to 16 messages with `numOfMessages`) and `DeleteMessage` (by `ReceiptHandle`), signed as MNS
//! signs (`sign::string_to_sign_mns`), over MNS's XML wire format — whose few flat elements the
//! helpers here read and write (`xml_element`, `xml_escape`; the emulator's queue uses them too).
//!
//! A received message stays invisible for the queue's visibility timeout; it is gone only when
//! deleted with the receipt handle of that receive. Not deleting it (the consumer failed) makes
//! it come back: that is how nothing is lost.

use std::time::Duration;

use md5::{Digest, Md5};

use super::sign;
use crate::secret::Sensitive;

/// MNS's XML namespace.
pub const XMLNS: &str = "http://mns.aliyuncs.com/doc/v1/";
/// At most 16 messages per receive, at most 30 s of long poll (MNS's limits).
pub use crate::config::MNS_MAX_BATCH as MAX_BATCH;
pub use crate::config::MNS_MAX_WAIT_S as MAX_WAIT_S;

/// `&`, `<`, `>`, `"` and `'` as entities.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The inverse of [`xml_escape`], plus numeric references and CDATA sections; `None` on an
/// unknown or unterminated entity.
pub fn xml_unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(['&', '<']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(cdata) = rest.strip_prefix("<![CDATA[") {
            let end = cdata.find("]]>")?;
            out.push_str(&cdata[..end]);
            rest = &cdata[end + 3..];
            continue;
        }
        if rest.starts_with('<') {
            return None;
        }
        let end = rest.find(';')?;
        let entity = &rest[1..end];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            e if e.starts_with("#x") || e.starts_with("#X") => {
                char::from_u32(u32::from_str_radix(&e[2..], 16).ok()?)?
            }
            e if e.starts_with('#') => char::from_u32(e[1..].parse().ok()?)?,
            _ => return None,
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// The unescaped text of the first `<tag>…</tag>` (or `<tag attr…>…</tag>`) in `doc`.
pub fn xml_element(doc: &str, tag: &str) -> Option<String> {
    xml_elements(doc, tag).into_iter().next()
}

/// The raw (still escaped) inner text of every `<tag>…</tag>` in `doc`, in order.
fn xml_raw_elements<'a>(doc: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut rest = doc;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        // `<Message>` must not match `<MessageId>`.
        let Some(gt) = after.find('>') else { break };
        let head = &after[..gt];
        if !(head.is_empty() || head.starts_with(char::is_whitespace)) {
            rest = after;
            continue;
        }
        let body = &after[gt + 1..];
        let Some(end) = body.find(&close) else { break };
        found.push(&body[..end]);
        rest = &body[end + close.len()..];
    }
    found
}

/// The unescaped text of every `<tag>…</tag>` in `doc` (flat elements only).
pub fn xml_elements(doc: &str, tag: &str) -> Vec<String> {
    xml_raw_elements(doc, tag)
        .into_iter()
        .filter_map(xml_unescape)
        .collect()
}

/// Upper-case hex MD5, as MNS gives `MessageBodyMD5`.
pub fn body_md5(body: &str) -> String {
    hex::encode_upper(Md5::digest(body.as_bytes()))
}

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// How many times it was received (1 the first time).
    pub dequeue_count: u32,
    pub enqueue_time_ms: Option<i64>,
}

/// The `<Message>` elements of a receive answer (`<Messages>` or a single `<Message>`).
pub fn parse_messages(doc: &str) -> Result<Vec<QueueMessage>, String> {
    let mut out = Vec::new();
    for m in xml_raw_elements(doc, "Message") {
        let field = |t: &str| xml_element(m, t);
        let body = field("MessageBody").ok_or("a message without MessageBody")?;
        if let Some(md5) = field("MessageBodyMD5") {
            if !md5.eq_ignore_ascii_case(&body_md5(&body)) {
                return Err(format!("MessageBodyMD5 {md5} does not match the body"));
            }
        }
        out.push(QueueMessage {
            message_id: field("MessageId").ok_or("a message without MessageId")?,
            receipt_handle: field("ReceiptHandle").ok_or("a message without ReceiptHandle")?,
            body,
            dequeue_count: field("DequeueCount")
                .and_then(|c| c.parse().ok())
                .unwrap_or(1),
            enqueue_time_ms: field("EnqueueTime").and_then(|c| c.parse().ok()),
        });
    }
    Ok(out)
}

/// An MNS error answer (or a transport failure: status 0).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MNS {status} {code}: {message}")]
pub struct MnsError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
}

impl MnsError {
    fn transport(message: String) -> Self {
        Self {
            status: 0,
            code: "Transport".into(),
            message,
            request_id: None,
        }
    }

    fn from_answer(status: u16, body: &str) -> Self {
        Self {
            status,
            code: xml_element(body, "Code").unwrap_or_else(|| format!("HTTP{status}")),
            message: xml_element(body, "Message").unwrap_or_default(),
            request_id: xml_element(body, "RequestId"),
        }
    }
}

/// The MNS error body.
pub fn error_xml(code: &str, message: &str, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error xmlns=\"{XMLNS}\"><Code>{}</Code><Message>{}</Message><RequestId>{}</RequestId><HostId>snapgate-emulator</HostId></Error>",
        xml_escape(code),
        xml_escape(message),
        xml_escape(request_id)
    )
}

/// Where a temporary credential's token goes on an MNS request.
pub const SECURITY_TOKEN_HEADER: &str = "security-token";

#[derive(Debug, Clone)]
pub struct MnsClientConfig {
    /// `https://<account-id>.mns.<region>.aliyuncs.com` (or the emulator's URL).
    pub endpoint: String,
    pub queue: String,
    /// The credential chain (a temporary credential's token goes in `security-token`).
    pub credentials: crate::credentials::Credentials,
    /// Long-poll wait per receive, 0 to 30 s.
    pub wait_s: u32,
    /// Messages per receive, 1 to 16.
    pub batch: u32,
    pub connect_timeout: Duration,
    /// Beyond the long poll's wait.
    pub request_timeout: Duration,
}

pub struct MnsClient {
    http: reqwest::Client,
    cfg: MnsClientConfig,
}

impl std::fmt::Debug for MnsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MnsClient").field("cfg", &self.cfg).finish()
    }
}

impl MnsClient {
    pub fn new(mut cfg: MnsClientConfig) -> anyhow::Result<Self> {
        reqwest::Url::parse(&cfg.endpoint).map_err(|e| {
            anyhow::anyhow!("mps.mns.endpoint {:?} is not a URL: {e}", cfg.endpoint)
        })?;
        anyhow::ensure!(
            !cfg.queue.is_empty()
                && cfg
                    .queue
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "mps.mns.queue must be letters, digits and '-' (got {:?})",
            cfg.queue
        );
        cfg.endpoint = cfg.endpoint.trim_end_matches('/').to_string();
        cfg.wait_s = cfg.wait_s.min(MAX_WAIT_S);
        cfg.batch = cfg.batch.clamp(1, MAX_BATCH);
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("snapgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, cfg })
    }

    pub fn queue(&self) -> &str {
        &self.cfg.queue
    }

    /// Signs and sends one request; the answer's status and body.
    async fn send(
        &self,
        method: reqwest::Method,
        resource: &str,
        timeout: Duration,
    ) -> Result<(u16, String), MnsError> {
        let date = sign::http_date(chrono::Utc::now());
        let content_type = "text/xml;charset=utf-8";
        let sts = sign::string_to_sign_mns(
            method.as_str(),
            [
                ("content-type", content_type),
                ("date", date.as_str()),
                ("x-mns-version", sign::MNS_VERSION),
            ],
            resource,
        );
        let cred = self
            .cfg
            .credentials
            .get()
            .await
            .map_err(|e| MnsError::transport(format!("no valid credential: {e}")))?;
        let signature = sign::sign_mns(cred.access_key_secret.expose(), &sts);
        let mut req = self
            .http
            .request(method, format!("{}{resource}", self.cfg.endpoint));
        if let Some(t) = cred.token() {
            // MNS's SDKs send the token unsigned, in this header.
            req = req.header(SECURITY_TOKEN_HEADER, Sensitive(t));
        }
        let res = req
            .header("content-type", content_type)
            .header("date", &date)
            .header("x-mns-version", sign::MNS_VERSION)
            .header(
                "authorization",
                Sensitive(&sign::authorization_mns(&cred.access_key_id, &signature)),
            )
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| MnsError::transport(format!("{e}")))?;
        let status = res.status().as_u16();
        let body = super::read_bounded(res, super::MAX_ANSWER_BYTES)
            .await
            .map_err(|e| MnsError::transport(format!("reading the answer: {e}")))?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// `ReceiveMessage`: waits up to `wait_s` for messages; empty when none came.
    pub async fn receive(&self) -> Result<Vec<QueueMessage>, MnsError> {
        let resource = format!(
            "/queues/{}/messages?numOfMessages={}&waitseconds={}",
            self.cfg.queue, self.cfg.batch, self.cfg.wait_s
        );
        let timeout = self.cfg.request_timeout + Duration::from_secs(self.cfg.wait_s.into());
        let (status, body) = self.send(reqwest::Method::GET, &resource, timeout).await?;
        match status {
            200 => parse_messages(&body).map_err(|e| MnsError {
                status,
                code: "InvalidResponse".into(),
                message: e,
                request_id: None,
            }),
            _ => {
                let e = MnsError::from_answer(status, &body);
                if status == 404 && e.code == "MessageNotExist" {
                    Ok(Vec::new())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// `DeleteMessage` with the receipt handle of the receive.
    pub async fn delete(&self, receipt_handle: &str) -> Result<(), MnsError> {
        let resource = format!(
            "/queues/{}/messages?ReceiptHandle={}",
            self.cfg.queue,
            crate::crypto::percent_encode(receipt_handle)
        );
        let (status, body) = self
            .send(reqwest::Method::DELETE, &resource, self.cfg.request_timeout)
            .await?;
        if status == 204 || status == 200 {
            Ok(())
        } else {
            Err(MnsError::from_answer(status, &body))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_round_trip_and_elements() {
        let text = "a<b>&\"c'\u{4e2d}";
        assert_eq!(xml_unescape(&xml_escape(text)).unwrap(), text);
        assert_eq!(
            xml_unescape("x&#65;&#x42;<![CDATA[<raw>&]]>y").unwrap(),
            "xAB<raw>&y"
        );
        assert_eq!(xml_unescape("&bogus;"), None);
        assert_eq!(xml_unescape("&amp"), None);
        let doc = format!(
            "<Messages xmlns=\"{XMLNS}\"><Message><MessageId>1</MessageId><ReceiptHandle>h1</ReceiptHandle><MessageBodyMD5>{}</MessageBodyMD5><MessageBody>{{&quot;a&quot;:1}}</MessageBody><DequeueCount>2</DequeueCount></Message><Message><MessageId>2</MessageId><ReceiptHandle>h2</ReceiptHandle><MessageBody>b</MessageBody></Message></Messages>",
            body_md5("{\"a\":1}")
        );
        let m = parse_messages(&doc).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].body, "{\"a\":1}");
        assert_eq!(m[0].dequeue_count, 2);
        assert_eq!(m[1].receipt_handle, "h2");
        let bad = doc.replace(&body_md5("{\"a\":1}"), &body_md5("other"));
        assert!(parse_messages(&bad).is_err());
        let err = error_xml("MessageNotExist", "Message not exist.", "r1");
        let e = MnsError::from_answer(404, &err);
        assert_eq!(e.code, "MessageNotExist");
        assert_eq!(e.request_id.as_deref(), Some("r1"));
    }
}
