//! The MPS side: request signing (`sign`, where a signature is made, MNS's included), its
//! verification (`verify`, where a signature is checked: the emulator and the MPS-compatible
//! endpoint), wire types (`wire`), errors and their classification (`error`), the HTTP client
//! (`client`), the MNS queue client (`mns`) and the job messages MPS publishes there
//! (`notification`), the mapping of a job to MPS's parameters (`params`), and what the worker
//! has seen of MPS's health (`health`).
pub mod client;
pub mod error;
pub mod health;
pub mod mns;
pub mod notification;
pub mod params;
pub mod sign;
pub mod verify;
pub mod wire;

/// The largest answer read from MPS or MNS (an MPS answer is a few KiB; a `ReceiveMessage`
/// batch of 16 messages of at most 64 KiB is about 1 MiB): a larger one is refused, and never
/// buffered past this.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Reads an answer's body, at most `limit` bytes: an announced `Content-Length` over it is
/// refused before any read, a longer body as soon as it passes the limit (the rest is never read).
pub async fn read_bounded(mut res: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let too_large = || format!("the answer is larger than {limit} bytes");
    if res.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
