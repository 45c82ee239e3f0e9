//! `ETag` on every successful JSON read, and `If-None-Match` → `304 Not Modified`, so a poller
//! pays a header, not a body, while its job has not changed. The tag is a hash of the answer's
//! bytes (a strong validator: equal bytes, equal tag), computed after the handler, so it holds
//! for any JSON route without each handler knowing about it.
//!
//! A layer never drops a body: an answer too large to tag (over [`MAX_TAGGED_BYTES`]) goes out
//! untagged and whole — what was buffered, then the rest as it comes, with its length kept when
//! it was known.

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;

/// JSON answers are small (a job, a page of jobs); a larger one is passed on untagged.
const MAX_TAGGED_BYTES: usize = 4 << 20;

/// Does `If-None-Match` name `tag` (weak comparison, RFC 9110 §13.1.2)?
pub(super) fn matches(if_none_match: &str, tag: &str) -> bool {
    if_none_match.trim() == "*"
        || if_none_match
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == tag)
}

pub async fn etag(req: Request, next: Next) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return next.run(req).await;
    }
    let if_none_match = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let res = next.run(req).await;
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if res.status() != StatusCode::OK || !json {
        return res;
    }
    // An answer kept in memory carries the tag computed when it was kept.
    if let Some(tag) = res
        .headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
    {
        if if_none_match.is_some_and(|inm| matches(&inm, tag)) {
            return not_modified(res.into_parts().0);
        }
        return res;
    }
    let (mut parts, body) = res.into_parts();
    // The length, when the body knows it, goes into the header: the streamed rest knows none.
    let length = body.size_hint().exact();
    let bytes = match buffer(body, MAX_TAGGED_BYTES).await {
        Ok(bytes) => bytes,
        Err(whole) => {
            if let Some(n) = length {
                parts
                    .headers
                    .entry(header::CONTENT_LENGTH)
                    .or_insert(n.into());
            }
            return Response::from_parts(parts, whole);
        }
    };
    let tag = tag_of(&bytes);
    if if_none_match.is_some_and(|inm| matches(&inm, tag.to_str().expect("hex"))) {
        parts.headers.insert(header::ETAG, tag);
        return not_modified(parts);
    }
    parts.headers.insert(header::ETAG, tag);
    Response::from_parts(parts, Body::from(bytes))
}

/// The body's bytes if it ends within `limit` bytes; else (or on an error) a body that yields
/// exactly what the original would have: what was read, then the rest.
async fn buffer(body: Body, limit: usize) -> Result<Bytes, Body> {
    if body.size_hint().lower() > limit as u64 {
        return Err(body);
    }
    let mut stream = body.into_data_stream();
    let mut read: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    let unread = loop {
        match stream.next().await {
            None => break None,
            Some(Ok(chunk)) => {
                len += chunk.len();
                read.push(chunk);
                if len > limit {
                    break Some(Ok(()));
                }
            }
            Some(Err(e)) => break Some(Err(e)),
        }
    };
    match unread {
        None if read.len() == 1 => Ok(read.pop().expect("one chunk")),
        None => Ok(Bytes::from(read.concat())),
        Some(end) => {
            let error = end.err().map(Err);
            let read = futures::stream::iter(read.into_iter().map(Ok).chain(error));
            Err(Body::from_stream(read.chain(stream)))
        }
    }
}

/// The `ETag` of an answer's bytes: their XXH3-128, quoted. A validator needs no secrecy, only
/// that different bytes get different tags and every replica computes the same one: XXH3 (a
/// fixed seed) does both at memory speed. SHA-256 was a tenth of a list's CPU.
pub fn tag_of(bytes: &[u8]) -> HeaderValue {
    let digest = xxhash_rust::xxh3::xxh3_128(bytes);
    HeaderValue::from_str(&format!("\"{digest:032x}\"")).expect("hex")
}

fn not_modified(mut parts: axum::http::response::Parts) -> Response {
    parts.status = StatusCode::NOT_MODIFIED;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    Response::from_parts(parts, Body::empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn if_none_match_lists_weak_tags_and_star() {
        let tag = "\"abc\"";
        assert!(super::matches("\"abc\"", tag));
        assert!(super::matches("\"x\", W/\"abc\"", tag));
        assert!(super::matches("*", tag));
        assert!(!super::matches("\"abcd\"", tag));
        assert!(!super::matches("abc", tag));
    }

    /// Every replica (and every version) tags the same bytes alike: the tag is XXH3-128 of the
    /// bytes (the reference value of the empty input), 32 hex digits, quoted.
    #[test]
    fn the_tag_is_the_xxh3_128_of_the_bytes() {
        assert_eq!(super::tag_of(b""), "\"99aa06d3014798d86001c324468d497f\"");
        assert_ne!(super::tag_of(b"{\"a\":1}"), super::tag_of(b"{\"a\":2}"));
    }
}
