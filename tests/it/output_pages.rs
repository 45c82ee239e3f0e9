//! A job's answer is bounded however many outputs it has (issue 31, D08): a job whose outputs
//! are 100,000 snapshots (a long input, one every second) answers at most `outputs.max_listed`
//! of them with a link to the rest, and the whole manifest is paged on
//! `GET /v1/snapshot-jobs/{id}/outputs?cursor=&limit=`, every output exactly once. Before: the
//! job's answer listed all 100,000 (about 20 MB).

use crate::common;

use std::collections::BTreeSet;

use common::TestApp;
use serde_json::{json, Value};

const SNAPSHOTS: u64 = 100_000;
/// The answer's bound: 1,000 outputs listed (the default `outputs.max_listed`), each under 400
/// bytes.
const ANSWER_BOUND: usize = 1_000 * 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_100000_outputs_answers_a_bounded_page_and_pages_the_rest() {
    let (store, db) = common::pg_store().await;
    let app = TestApp::builder(store).start().await;
    let body = json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": "long.mp4"},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "out/{Count}.jpg"},
        "interval_s": 1
    });
    let res = app.post_job(&body, None).await;
    assert!(res.status().is_success(), "{}", res.status());
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // MPS reported 100,000 snapshots (written behind the API's back: no worker runs).
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let done = sqlx::query(
        "UPDATE jobs SET state = 'succeeded', mps_state = 'Success', mps_count = $1, \
         finished_at = now(), updated_at = now() WHERE id = $2::uuid",
    )
    .bind(SNAPSHOTS as i64)
    .bind(&id)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(done.rows_affected(), 1);
    pool.close().await;

    let res = app.get(&format!("/v1/snapshot-jobs/{id}")).await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(
        text.len() < ANSWER_BOUND,
        "the job's answer is {} bytes",
        text.len()
    );
    let job: Value = serde_json::from_str(&text).unwrap();
    let outputs = &job["outputs"];
    assert_eq!(outputs["truncated"], true, "{outputs:#}");
    assert_eq!(outputs["total"], SNAPSHOTS, "{outputs:#}");
    let mut seen = BTreeSet::new();
    let mut count = |page: &Value| {
        for s in page["snapshots"].as_array().unwrap() {
            let n = s["count"].as_u64().unwrap();
            assert!(seen.insert(n), "snapshot {n} listed twice");
        }
    };
    let listed = outputs["snapshots"].as_array().unwrap().len();
    assert!(listed > 0 && listed <= 1_000, "{listed}");
    // The link goes on from what the answer listed.
    let mut next = outputs["next"].as_str().map(str::to_string);
    count(outputs);
    let mut pages = 0;
    while let Some(link) = next {
        let res = app.get(&format!("{link}&limit=5000")).await;
        assert_eq!(res.status(), 200, "{link}");
        let page: Value = res.json().await.unwrap();
        count(&page);
        next = page["next"].as_str().map(str::to_string);
        pages += 1;
        assert!(pages <= 100, "paging does not end");
    }
    assert_eq!(seen.len() as u64, SNAPSHOTS);
    assert_eq!(seen.first(), Some(&1));
    assert_eq!(seen.last(), Some(&SNAPSHOTS));

    // A page is bounded too, and a bad cursor or limit is a 400.
    let res = app
        .get(&format!("/v1/snapshot-jobs/{id}/outputs?limit=100000"))
        .await;
    assert_eq!(res.status(), 400);
    let res = app
        .get(&format!("/v1/snapshot-jobs/{id}/outputs?cursor=x"))
        .await;
    assert_eq!(res.status(), 400);
    app.stop().await.unwrap();
}
