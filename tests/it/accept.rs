//! POST accept speed: a POST waits for MPS's job id only when the dispatcher can send
//! its job at once. With the upstream budget spent, a burst is answered `202 queued` at once
//! instead of each request sitting out `http.submit_wait_ms` behind the budget.

use crate::common;

use common::TestApp;

use std::time::{Duration, Instant};

use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_accepted_at_once_when_the_budget_cannot_send_it() {
    let (store, _g) = common::pg_store().await;
    let emu = common::app::test_emulator(|_| {}).await;
    let app = TestApp::builder(store)
        .settings(|s| {
            // One submit a second: a burst of 10 takes 10 s to reach MPS.
            s.worker.submit_qps = 1;
            s.http.submit_wait_ms = 3000;
        })
        .mps(common::app::mps_client(
            &emu.url(),
            common::app::EMU_SECRET,
            5000,
        ))
        .start()
        .await;
    let body = json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.mp4"},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.jpg"}
    });
    // The first job goes at once (the budget has a token): it may wait for its MPS id. The
    // burst is smaller than a claim batch, so the dispatcher sees no backlog: only the budget
    // says the jobs cannot be sent at once.
    let first = app.post_job(&body, None).await;
    assert!(first.status().is_success());

    let t0 = Instant::now();
    let answers = futures::future::join_all((0..10).map(|_| async {
        let t = Instant::now();
        let res = app.post_job(&body, None).await;
        (res.status().as_u16(), t.elapsed())
    }))
    .await;
    let slow: Vec<_> = answers
        .iter()
        .filter(|(_, took)| *took > Duration::from_millis(1500))
        .collect();
    assert!(
        answers
            .iter()
            .all(|(status, _)| *status == 201 || *status == 202),
        "{answers:?}"
    );
    // At most the one the budget lets through at once may wait; none sits out the full wait.
    assert!(slow.len() <= 1, "waited behind the budget: {answers:?}");
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t0.elapsed()
    );
}
