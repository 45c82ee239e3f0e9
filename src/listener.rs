//! What every listener snapgate opens (the API in `app.rs`, the emulator's MPS and store) sets
//! on its connections, so that clients that open sockets and never finish a request cannot
//! exhaust file descriptors (security review D07, issue 31):
//! - a **header-read timeout**: the request head must arrive within it, else the connection is
//!   closed. hyper starts this clock whenever the connection waits for a head, including after
//!   an answer on a kept-alive connection, so it is also the **keep-alive idle bound**;
//! - a **connection limit**: at most `max_connections` connections are served at once; the
//!   next ones wait in the kernel's accept backlog until one closes (no descriptor is taken
//!   for them meanwhile).
//!
//! After a body has begun, the API's own `http.request_timeout_ms` bounds the request.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bounds of one listener (`http.header_read_timeout_ms`, `http.max_connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

/// Accepts connections under a [`ConnLimits`]: each accepted stream comes with the permit
/// that counts it (dropped when the connection's task ends).
pub struct Gate {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    limits: ConnLimits,
}

impl Gate {
    pub fn new(listener: TcpListener, limits: ConnLimits) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(permits_of(limits) as usize)),
            limits,
        }
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection, once fewer than `max_connections` are open. An accept error (out
    /// of descriptors, say) is logged and retried after a short pause, never a busy loop.
    pub async fn accept(&self) -> (TcpStream, OwnedSemaphorePermit) {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    return (stream, permit);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Closes the listener at once (new clients are refused), then waits until every
    /// connection accepted so far has closed.
    pub async fn close_and_drain(self) {
        let Gate {
            listener,
            permits,
            limits,
        } = self;
        drop(listener);
        let _all = permits.acquire_many(permits_of(limits)).await;
    }

    /// An HTTP/1 connection builder with the header-read timeout (and hyper's timer) set.
    pub fn http1(&self) -> hyper::server::conn::http1::Builder {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout);
        b
    }
}

/// The connection limit as a count of permits (at least 1; one `acquire_many` takes them all).
fn permits_of(limits: ConnLimits) -> u32 {
    u32::try_from(limits.max_connections.clamp(1, 1 << 24)).expect("small")
}

/// Serves `app` on `gate` until `shutdown` resolves; then accepts nothing more, asks every
/// open connection to close after its request in flight, and returns once all have closed.
pub async fn serve(
    gate: Gate,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    use tower::ServiceExt;
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, permit) = tokio::select! {
            c = gate.accept() => c,
            _ = &mut shutdown => break,
        };
        let app = app.clone();
        let stop = stop.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            app.clone().oneshot(req.map(axum::body::Body::new))
        });
        let conn = gate.http1().serve_connection(TokioIo::new(stream), svc);
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    stop.cancel();
    gate.close_and_drain().await;
}
