//! Fair webhook delivery (issue 31, D06): a team whose endpoints accept connections and never
//! answer slows only itself. Team `slow` has 20 such endpoints (one delivery due on each,
//! recorded first); team `fast` has one endpoint that answers at once (its delivery recorded
//! last). The delivery loop the test starts must deliver `fast`'s event while every `slow`
//! attempt is still hanging: before any of them has timed out and been recorded. The bound is
//! the attempt timeout (10 s here), taken as an order, not measured with sleeps: a worker that
//! waits for a whole batch of claims before claiming more delivers `fast` only after the
//! hanging attempts' timeout, and then after their attempts are recorded (seen: 16 of them
//! ended first, 10.3 s). A team's endpoint beyond `webhooks.max_endpoints_per_team` is refused.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestApp;
use serde_json::json;
use snapgate::domain::{validate_request, JobError, JobId, NewJob};
use snapgate::services::webhooks::EndpointSpec;
use snapgate::store::{self, DynStore};
use snapgate::worker::deliver::DeliveryWorker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const SLOW_ENDPOINTS: usize = 20;
const TIMEOUT_MS: u64 = 10_000;

/// Accepts every connection and never answers (the sockets are kept open).
async fn black_hole() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            kept.push(s);
        }
    });
    url
}

/// Answers every request `204` at once, and tells of each.
async fn quick_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Instant>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = Vec::new();
                // Read the head and the body (Content-Length) before answering.
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_lowercase();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if got.len() >= head_end + 4 + len {
                            break;
                        }
                    }
                }
                let _ = tx.send(Instant::now());
                let _ = s
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, rx)
}

fn new_job(team: &str) -> NewJob {
    let (request, warnings) = validate_request(&json!({
        "input": {"location": "oss-cn-shanghai", "bucket": "media", "object": "in/a.mp4"},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "out/{Count}.jpg"},
        "num": 1
    }))
    .unwrap();
    NewJob {
        id: JobId::new(),
        team: team.into(),
        request,
        warnings,
        created_at: store::now(),
        preset: None,
    }
}

/// A job of `team` cancelled: its `snapshot_job.failed` event goes to each of its endpoints.
async fn failed_job_event(store: &DynStore, team: &str) {
    let job = new_job(team);
    let id = job.id;
    store.create_job(job, None).await.unwrap();
    let error = JobError {
        code: "Cancelled".into(),
        message: "test".into(),
        at: store::now(),
    };
    assert!(store.cancel_job(Some(team), id, &error).await.unwrap());
}

async fn endpoint(app: &TestApp, team: &str, url: &str) -> uuid::Uuid {
    let (e, _) = app
        .state
        .webhooks
        .create(
            team,
            EndpointSpec {
                url: url.into(),
                event_types: vec![store::JOB_FAILED.into()],
                description: None,
            },
        )
        .await
        .unwrap();
    e.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_team_whose_endpoints_never_answer_does_not_delay_another_team() {
    let (store, _db) = common::pg_store().await;
    let mut cfg = None;
    let app = TestApp::builder(store.clone())
        .settings(|s| {
            s.webhooks.enabled = false;
            s.webhooks.allow_private_networks = true;
            s.webhooks.timeout_ms = TIMEOUT_MS;
            s.webhooks.lease_ms = 60_000;
            s.webhooks.schedule_s = vec![3600];
            s.webhooks.max_endpoints_per_team = SLOW_ENDPOINTS;
            s.webhooks.endpoint_concurrency = 1;
            cfg = Some(s.webhooks.clone());
        })
        .start()
        .await;
    let mut cfg = cfg.unwrap();
    let hole = black_hole().await;
    let (quick, mut received) = quick_receiver().await;
    store.create_team("slow", store::now()).await.unwrap();
    store.create_team("fast", store::now()).await.unwrap();
    let mut slow = Vec::new();
    for _ in 0..SLOW_ENDPOINTS {
        slow.push(endpoint(&app, "slow", &hole).await);
    }
    let fast = endpoint(&app, "fast", &quick).await;
    // The cap: one endpoint more is refused, clearly.
    let over = app
        .state
        .webhooks
        .create(
            "slow",
            EndpointSpec {
                url: hole.clone(),
                event_types: vec![store::JOB_FAILED.into()],
                description: None,
            },
        )
        .await;
    match over {
        Err(snapgate::services::webhooks::WebhookError::Invalid(v)) => {
            assert_eq!(v[0].code, "too_many_endpoints", "{v:?}")
        }
        other => panic!("the 21st endpoint was not refused: {other:?}"),
    }
    failed_job_event(&store, "slow").await;
    failed_job_event(&store, "fast").await;

    cfg.enabled = true;
    let worker = Arc::new(
        DeliveryWorker::new(
            store.clone(),
            cfg,
            app.state.master_key.clone(),
            Arc::new(snapgate::http::webhooks::RestRenderer {
                outputs: app.state.outputs.clone(),
            }),
        )
        .unwrap(),
    );
    let stop = CancellationToken::new();
    let started = Instant::now();
    let run = tokio::spawn(worker.clone().run(stop.clone()));

    let at = tokio::time::timeout(Duration::from_millis(3 * TIMEOUT_MS), received.recv())
        .await
        .expect("the fast team's delivery never arrived")
        .unwrap();
    let waited = at - started;
    // Not one hanging attempt may have ended (timed out and been recorded) before it.
    let mut ended = 0;
    for id in &slow {
        for d in store.list_deliveries("slow", *id, 10).await.unwrap() {
            ended += d.attempts.len();
        }
    }
    assert_eq!(
        ended, 0,
        "the fast team's delivery came after {ended} hanging attempts of the slow team ended ({waited:?})"
    );
    assert!(
        waited < Duration::from_millis(TIMEOUT_MS),
        "the fast team waited {waited:?}"
    );
    // Its outcome is recorded at once (not after the slow team's round).
    let start = Instant::now();
    loop {
        let d = store.list_deliveries("fast", fast, 10).await.unwrap();
        if d.iter().all(|d| d.state == "succeeded") && !d.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_millis(TIMEOUT_MS / 2),
            "fast delivery not recorded: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    run.abort();
    app.stop().await.unwrap();
}
