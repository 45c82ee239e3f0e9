//! A store call cancelled part way (a client that disconnects, a `select!`, a timeout: the
//! worker's stop races its upstream-budget transaction this way) leaves nothing behind on the
//! pooled connection: the next statement on that connection commits as its own.
//!
//! The database's answers pass through a proxy that holds each one back, so the cancel lands
//! while a statement of the transaction is on the wire; first while its `BEGIN` is (sqlx 0.8's
//! Postgres `begin` then queues no `ROLLBACK`, launchbadge/sqlx#4393), then at later points.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as ChronoDuration;
use snapgate::config::DatabaseSettings;
use snapgate::domain::JobId;
use snapgate::domain::NewJob;
use snapgate::store::{DynStore, PgStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy to Postgres that holds each chunk of the server's answers back `delay_ms`.
struct SlowProxy {
    addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
}

impl SlowProxy {
    async fn start(upstream: String) -> SlowProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(&upstream).await.unwrap();
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
                });
                let delay = delay.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = from_server.read(&mut buf).await {
                        let ms = delay.load(Ordering::SeqCst);
                        if ms > 0 {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        if to_client.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        SlowProxy { addr, delay_ms }
    }

    fn hold_answers(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }
}

/// `host:port` of a `postgres://` URL.
fn host_port(url: &str) -> String {
    let u = reqwest::Url::parse(url).unwrap();
    format!("{}:{}", u.host_str().unwrap(), u.port().unwrap_or(5432))
}

async fn queue_job(store: &DynStore) -> JobId {
    let body = serde_json::json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": "in/a.mp4"},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "out/a.jpg"}
    });
    let (request, warnings) = snapgate::domain::validate_request(&body).unwrap();
    let job = NewJob {
        id: JobId::new(),
        team: "default".into(),
        request,
        warnings,
        created_at: snapgate::store::now(),
        preset: None,
    };
    let id = job.id;
    store.create_job(job, None).await.unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_cancelled_at_any_point_leaves_the_next_statement_its_own_commit() {
    let (store, url) = common::pg_store().await;
    let id = queue_job(&store).await;
    let proxy = SlowProxy::start(host_port(&url)).await;
    let through_proxy = url.replacen(&host_port(&url), &proxy.addr.to_string(), 1);
    // One connection: the statement after the cancel runs on the connection the cancel left.
    let slow: DynStore = Arc::new(
        PgStore::connect(&DatabaseSettings {
            url: through_proxy,
            max_connections: 1,
            ..DatabaseSettings::default()
        })
        .await
        .unwrap(),
    );
    let direct = sqlx::PgPool::connect(&url).await.unwrap();
    let start = slow.clock().await.unwrap();
    let mut cancelled_rounds = Vec::new();

    // Each answer held 40 ms; the cancel at 20 ms lands on `BEGIN`, the later ones on the
    // transaction's later statements and on its `COMMIT`.
    for (round, cancel_after_ms) in [20u64, 60, 100, 140, 180, 20].into_iter().enumerate() {
        proxy.hold_answers(40);
        let now = start + ChronoDuration::minutes(10 * round as i64);
        let cancelled = tokio::time::timeout(
            Duration::from_millis(cancel_after_ms),
            slow.acquire_budget("cancelled", 1, 1.0, 1.0, now),
        )
        .await;
        proxy.hold_answers(0);
        if cancelled.is_ok() {
            // Finished before the cancel: nothing to show at this point.
            continue;
        }
        cancelled_rounds.push(round);
        // A statement of its own on the connection the cancelled call used: the claim.
        let owner = format!("after-cancel-{round}");
        let claims = slow
            .claim_dispatch(&owner, now, now + ChronoDuration::minutes(5), 10)
            .await
            .unwrap();
        assert_eq!(claims.len(), 1, "round {round}: the job is due again");
        // Committed: another connection sees it, and no row stays locked behind it.
        let seen: (Option<String>,) = sqlx::query_as(
            "SELECT lease_owner FROM jobs WHERE id = $1 FOR UPDATE NOWAIT",
        )
        .bind(id.0)
        .fetch_one(&direct)
        .await
        .unwrap_or_else(|e| {
            panic!("round {round} (cancel after {cancel_after_ms} ms): the claim's row is still locked: {e}")
        });
        assert_eq!(
            seen.0.as_deref(),
            Some(owner.as_str()),
            "round {round} (cancel after {cancel_after_ms} ms): the claim after the cancel was committed"
        );
    }
    // The window was reached: a `BEGIN` answer held 40 ms is cancelled at 20 (rounds 0 and 5).
    assert!(
        cancelled_rounds.contains(&0) && cancelled_rounds.contains(&5),
        "cancelled rounds: {cancelled_rounds:?}"
    );
    let open: (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND state LIKE 'idle in transaction%'",
    )
    .fetch_one(&direct)
    .await
    .unwrap();
    assert_eq!(open.0, 0, "no session is left inside a transaction");
}
