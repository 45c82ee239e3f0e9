//! Every read of a remote's body is bounded before it is buffered (issue 31): MPS and MNS
//! answers are read up to `mps::MAX_ANSWER_BYTES` and refused past it, whatever the remote sends
//! (a chunked answer that never ends, an announced length over the bound). Before the fix the
//! clients read the whole answer (`bytes()`/`text()`): an endless answer was read until the
//! request timed out ("answer cut short: error decoding response body"), buffering all of it.

use crate::common;

use std::time::{Duration, Instant};

use snapgate::mps::mns::{MnsClient, MnsClientConfig};
use snapgate::secret::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Answers every request 200 with a chunked body that never ends (64 KiB chunks, paced at about
/// 64 MB/s so that a client without a bound buffers only some 200 MB before its 3 s timeout),
/// and counts the bytes sent.
async fn endless() -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let _ = s.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                            transfer-encoding: chunked\r\n\r\n";
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b' '; 64 * 1024];
                let framed =
                    [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                while s.write_all(&framed).await.is_ok() {
                    counter.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
        }
    });
    (url, sent)
}

/// `snapgate::mps::MAX_ANSWER_BYTES`.
const BOUND: u64 = 4 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_mps_answer_is_refused_at_the_bound() {
    let (url, sent) = endless().await;
    let client = common::app::mps_client(&url, common::app::EMU_SECRET, 3_000);
    let start = Instant::now();
    let err = client
        .query_snapshot_jobs(&["a".to_string()])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("larger than"),
        "{err} (after {:?}, {} bytes sent)",
        start.elapsed(),
        sent.load(std::sync::atomic::Ordering::Relaxed)
    );
    // What the remote managed to send is the bound plus what sat in the socket buffers.
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(sent < BOUND + 16 * 1024 * 1024, "{sent} bytes were read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_mns_answer_is_refused_at_the_bound() {
    let (url, _) = endless().await;
    let mns = MnsClient::new(MnsClientConfig {
        endpoint: url,
        queue: "q".into(),
        credentials: snapgate::credentials::Credentials::key(
            "id",
            Secret::new("secret".to_string()),
        ),
        wait_s: 0,
        batch: 1,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(3),
    })
    .unwrap();
    let start = Instant::now();
    let err = mns.receive().await.unwrap_err();
    assert!(
        format!("{err:?}").contains("larger than"),
        "{err:?} (after {:?})",
        start.elapsed()
    );
}
