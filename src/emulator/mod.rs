//! A local MPS that speaks MPS's wire protocol for `SubmitSnapshotJob` and
//! `QuerySnapshotJobList`: the same signatures (v1 and ACS3), response shapes, string-typed
//! numbers, error bodies and codes (docs/mps/API.md §1 to §5), plus fault injection for tests and
//! benchmarks. `snapgate emulator` runs it alone; `snapgate serve` embeds it when no MPS key is
//! configured. This file holds the router and the listener.
//!
//! Files, each depending only on those listed before it (no import cycle):
//! - `config.rs`: `EmulatorArgs` (the command line) and `EmulatorConfig`.
//! - `clock.rs`: the clock jobs live by and the MNS queue's times are measured on: the wall
//!   clock, or with `--manual-clock` one that moves only on `POST /_emulator/clock`.
//! - `error.rs`: `Fault`, an MPS error answer (status, code, message).
//! - `auth.rs`: signature and timestamp checks (through `mps::verify`), and the nonces.
//! - `jobs.rs`: a job, the config checks MPS makes, and each job's life.
//! - `ledger.rs`: the job ledger on disk (`--state-dir`), so jobs survive a restart.
//! - `faults.rs`: faults settable at run time: listing delay, slow, dropped, throttled and
//!   unavailable answers.
//! - `oss.rs`: a local object store (`--oss-dir`, a folder per bucket), also served over HTTP
//!   as OSS path-style `PUT`/`GET`/`HEAD /<bucket>/<key>` (signatures checked with
//!   `crate::oss`, unsigned requests allowed), CORS, and the callback public key.
//! - `oss_multipart.rs`: multipart upload (initiate, parts, list, complete with callback, abort)
//!   on the object routes, parts on disk, assembled file to file.
//! - `oss_post.rs`: PostObject (`POST /<bucket>`: policy and signature checked with
//!   `crate::oss::post_policy`) and the upload callback, signed with the emulator's RSA key.
//! - `engine.rs`: the local engine: with a local store and ffmpeg on the PATH, jobs really run
//!   and write their snapshots, sprites and WebVTT into the store. Queries answer a final job
//!   with an extra `Emulator` object holding its output manifest (real MPS has none).
//! - `mns.rs`: the MNS queue (`--mns-queue`): jobs that end publish MPS's job message there;
//!   MNS's `ReceiveMessage`/`DeleteMessage` with MNS signatures, visibility timeout, receipt
//!   handles, and lost, duplicated and delayed messages as faults. The queue's data (messages,
//!   counters, its durable file) is `mns_queue.rs`, which `state.rs` holds.
//! - `state.rs`: `EmulatorState`, the shared state: the ledger, faults, nonces, QPS windows,
//!   call counters, the hand-over of jobs to the engine, and publishing ended jobs to the queue.
//! - `rpc.rs`: the MPS RPC endpoint (`/`), an adapter: the two actions and MPS's error bodies.
//! - `control.rs`: the emulator's own endpoints (`/_emulator/jobs`, `stats`, `faults`, `clock`;
//!   the queue's `/_emulator/mns` are in `mns.rs`). They take no credentials: served only with
//!   `EmulatorConfig::control_routes` (`snapgate emulator` by default, `snapgate serve` only
//!   with `emulator.control_routes`); otherwise every `/_emulator/…` path but the callback key
//!   answers 404.

mod auth;
mod clock;
mod config;
mod control;
mod engine;
mod error;
mod faults;
mod jobs;
mod ledger;
mod mns;
mod mns_queue;
mod oss;
mod oss_multipart;
mod oss_post;
mod rpc;
mod state;
pub mod sts;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub use config::{EmulatorArgs, EmulatorConfig};
pub use engine::{probe, Probe};
pub use mns::{verify_mns_request, MnsRefusal};
pub use oss::LocalOss;
pub use oss_post::read_post_form;
pub use state::EmulatorState;

pub struct EmulatorHandle {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    callback_pub_key_url: String,
}

impl EmulatorHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of the public key the local store signs upload callbacks with (what its
    /// callbacks name in `x-oss-pub-key-url`): the `local` URL `oss::callback::pub_key_url_allowed`
    /// accepts when snapgate runs this emulator itself.
    pub fn callback_pub_key_url(&self) -> &str {
        &self.callback_pub_key_url
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

pub fn router(state: Arc<EmulatorState>) -> Router {
    let control = state.config.control_routes;
    let mut r = Router::new()
        .route("/", get(rpc::handle).post(rpc::handle))
        // The local object store, path-style (answers 404 when there is none).
        .route(
            "/{bucket}/{*key}",
            get(oss_multipart::get)
                .put(oss_multipart::put)
                .post(oss_multipart::post)
                .delete(oss_multipart::delete)
                .options(oss::preflight),
        )
        // PostObject (uploads are as large as OSS allows: 5 GiB, checked by the policy); the
        // other methods on a bare bucket answer OSS's InvalidObjectName/InvalidBucketName.
        .route("/{bucket}", bucket_routes())
        .route("/{bucket}/", bucket_routes())
        .route(oss::CALLBACK_PUB_KEY_PATH, get(oss::callback_pub_key))
        // MNS's queue API (a static first segment wins over the object routes' `{bucket}`).
        .route(
            "/queues/{name}/messages",
            get(mns::receive_messages).delete(mns::delete_message),
        );
    r = if control {
        r.merge(control_routes())
    } else {
        r.route("/_emulator/{*rest}", axum::routing::any(control::off))
    };
    r.with_state(state)
}

/// The emulator's own routes: no credentials, so only when `EmulatorConfig::control_routes`.
fn control_routes() -> Router<Arc<EmulatorState>> {
    Router::new()
        .route("/_emulator/jobs", get(control::list_ledger))
        .route("/_emulator/jobs/{id}", get(control::get_ledger_job))
        .route("/_emulator/stats", get(control::stats))
        .route("/_emulator/sts", get(sts::stats).post(sts::control))
        // The ECS metadata server: it hands out credentials to whoever asks, as a real one
        // does to the instance, so it is one of the control routes.
        .route("/latest/api/token", axum::routing::put(sts::imds_token))
        .route(
            "/latest/meta-data/ram/security-credentials/",
            get(sts::imds_roles),
        )
        .route(
            "/latest/meta-data/ram/security-credentials/{role}",
            get(sts::imds_role),
        )
        .route("/_emulator/mns", get(mns::stats))
        .route("/_emulator/mns/messages", axum::routing::post(mns::inject))
        .route(
            "/_emulator/faults",
            get(control::get_faults).post(control::set_faults),
        )
        .route(
            "/_emulator/clock",
            get(control::get_clock).post(control::advance_clock),
        )
}

fn bucket_routes() -> axum::routing::MethodRouter<Arc<EmulatorState>> {
    post(oss_post::post_object)
        .layer(DefaultBodyLimit::disable())
        .options(oss::preflight)
        .get(oss::get_object)
        .put(oss::put_object)
}

/// Binds and serves in a background task. Connections are served one by one with hyper so that
/// the "dropped response" fault can really close a connection with no answer; under
/// `config.conn_limits` (header-read timeout, connection limit: `crate::listener`).
pub async fn spawn(mut config: EmulatorConfig) -> anyhow::Result<EmulatorHandle> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("the emulator cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    // The bound address (port 0 resolved): the store names its callback key URL with it.
    config.listen = addr;
    let state = Arc::new(EmulatorState::new(config)?);
    state.resume();
    // The callback key is made in the background now, ready before the first upload.
    let store = state.store.clone();
    tokio::spawn(async move {
        store.callback_key().await;
    });
    let callback_pub_key_url = state.store.callback_pub_key_url();
    let stop = state.stop.clone();
    if state.mns.is_some() {
        // Jobs end by their age or in the engine: look for ended ones every 10 ms.
        let st = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => st.publish_ended(),
                    _ = st.stop.cancelled() => break,
                }
            }
        });
    }
    let gate = crate::listener::Gate::new(listener, state.config.conn_limits);
    let app = router(state);
    let token = stop.clone();
    let task = tokio::spawn(async move {
        loop {
            let (stream, permit) = tokio::select! {
                c = gate.accept() => c,
                _ = token.cancelled() => break,
            };
            let app = app.clone();
            let token = token.clone();
            // The header-read timeout set; the permit counts the connection until it closes.
            let builder = gate.http1();
            tokio::spawn(async move {
                let _permit = permit;
                let kill = Arc::new(Notify::new());
                let marker = rpc::DropConnection(kill.clone());
                let svc = hyper::service::service_fn(
                    move |mut req: hyper::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(marker.clone());
                        app.clone().oneshot(req.map(axum::body::Body::new))
                    },
                );
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    // Dropping the connection future closes the socket: no answer at all.
                    _ = kill.notified() => {}
                    _ = token.cancelled() => {}
                }
            });
        }
    });
    Ok(EmulatorHandle {
        addr,
        stop,
        task,
        callback_pub_key_url,
    })
}

/// `snapgate emulator`: serves until Ctrl-C or SIGTERM.
pub async fn run(args: EmulatorArgs) -> anyhow::Result<()> {
    let config = EmulatorConfig::try_from(args)?;
    tracing::info!(?config, "starting the MPS emulator");
    let handle = spawn(config).await?;
    tracing::info!(url = %handle.url(), "MPS emulator listening");
    crate::shutdown::signal().await;
    handle.shutdown().await;
    Ok(())
}
