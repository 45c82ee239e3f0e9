//! Every listener snapgate opens bounds what a client that never finishes a request can hold
//! (security review D07, issue 31; `src/listener.rs`): a header-read timeout closes a
//! connection whose request head does not arrive, and a connection limit keeps the number of
//! sockets served at once (so file descriptors) bounded, while a healthy request still gets
//! its answer. Loopback only, a handful of sockets.

use crate::common;

use common::TestApp;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use snapgate::listener::ConnLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMITS: ConnLimits = ConnLimits {
    header_read_timeout: Duration::from_millis(1000),
    max_connections: 4,
};

/// Twice the limit of sockets that send half a request line and then nothing; then a healthy
/// `GET path` answers 200 within a few seconds, and every slow socket has been closed by the
/// server (read: end of stream or reset) within a few header timeouts.
async fn slow_sockets_then_a_healthy_request(addr: SocketAddr, path: &str) {
    let mut slow = Vec::new();
    for _ in 0..2 * LIMITS.max_connections {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /v1/snapshot-jobs HT").await.unwrap();
        slow.push(s);
    }
    let t0 = Instant::now();
    let res = tokio::time::timeout(
        Duration::from_secs(8),
        reqwest::get(format!("http://{addr}{path}")),
    )
    .await
    .expect("a healthy request answered within 8 s")
    .unwrap();
    assert_eq!(res.status(), 200, "{path}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    for (i, mut s) in slow.into_iter().enumerate() {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(4), s.read(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            // hyper may answer the timed-out head before closing: then the close follows.
            Ok(Ok(_)) => {
                let rest = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
                assert!(
                    matches!(rest, Ok(Ok(0)) | Ok(Err(_))),
                    "slow socket {i} still open"
                );
            }
            Err(_) => panic!(
                "slow socket {i} still open {:?} after the healthy request (header timeout {:?})",
                t0.elapsed(),
                LIMITS.header_read_timeout
            ),
        }
    }
}

#[tokio::test]
async fn the_api_closes_sockets_that_never_send_their_head_and_still_answers() {
    let (store, _dir) = common::sqlite_store().await;
    let app = TestApp::builder(store)
        .settings(|s| {
            s.http.header_read_timeout_ms = LIMITS.header_read_timeout.as_millis() as u64;
            s.http.max_connections = LIMITS.max_connections;
        })
        .start()
        .await;
    let addr: SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    slow_sockets_then_a_healthy_request(addr, "/healthz").await;
}

#[tokio::test]
async fn the_emulator_closes_sockets_that_never_send_their_head_and_still_answers() {
    let emu = common::app::test_emulator(|c| c.conn_limits = LIMITS).await;
    slow_sockets_then_a_healthy_request(emu.addr(), "/_emulator/stats").await;
}
