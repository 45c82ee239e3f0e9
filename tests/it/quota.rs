//! The in-flight quota is exact under concurrency (issue 31, D09): 40 concurrent POSTs with a
//! limit of 5 admit exactly 5, on each store and across two replicas on one Postgres database;
//! a cancelled job gives back exactly one place. No worker runs: admitted jobs stay `queued`,
//! in flight, for as long as the test needs.

use crate::common;

use common::TestApp;
use futures::future::join_all;
use serde_json::{json, Value};
use snapgate::store::{DynStore, PgStore};

const LIMIT: u64 = 5;
const POSTS: usize = 40;

fn body(i: usize) -> Value {
    json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("in/{i}.mp4")},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("out/{i}/{{Count}}.jpg")},
        "num": 2, "interval_s": 1
    })
}

async fn app(store: DynStore) -> TestApp {
    TestApp::builder(store)
        .settings(|s| {
            s.limits.team_max_active_jobs = LIMIT;
            s.limits.team_requests_per_second = 10_000;
            s.limits.team_burst = 10_000;
        })
        .start()
        .await
}

/// POSTs `POSTS` jobs at once, spread over `apps` in turn (half with an idempotency key, half
/// without: both insert paths); answers the ids admitted. Every other answer must be 429.
async fn post_all(apps: &[&TestApp], round: usize) -> Vec<String> {
    let posts = (0..POSTS).map(|i| {
        let app = apps[i % apps.len()];
        let key = (i % 2 == 0).then(|| format!("quota-{round}-{i}"));
        async move {
            let r = app.post_job(&body(i), key.as_deref()).await;
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            (status, v)
        }
    });
    let mut admitted = Vec::new();
    for (status, v) in join_all(posts).await {
        match status {
            201 | 202 => admitted.push(v["id"].as_str().unwrap().to_string()),
            429 => assert_eq!(v["code"], "quota_exceeded", "{v}"),
            other => panic!("unexpected {other}: {v}"),
        }
    }
    admitted
}

async fn forty_concurrent_posts_with_a_limit_of_five_admit_exactly_five(store: DynStore) {
    let app = app(store.clone()).await;
    let admitted = post_all(&[&app], 0).await;
    assert_eq!(admitted.len(), LIMIT as usize, "admitted: {admitted:?}");
    assert_eq!(store.count_active_jobs("default").await.unwrap(), LIMIT);

    // A cancel gives back exactly one place, once.
    let r = app
        .req(
            reqwest::Method::DELETE,
            &format!("/v1/snapshot-jobs/{}", admitted[0]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let again = app
        .req(
            reqwest::Method::DELETE,
            &format!("/v1/snapshot-jobs/{}", admitted[0]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "a second cancel changes nothing");
    let more = post_all(&[&app], 1).await;
    assert_eq!(more.len(), 1, "one place was given back: {more:?}");
    assert_eq!(store.count_active_jobs("default").await.unwrap(), LIMIT);
    app.stop().await.unwrap();
}

common::both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    forty_concurrent_posts_with_a_limit_of_five_admit_exactly_five,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_one_database_admit_exactly_five_of_forty() {
    let (store, db) = common::pg_store().await;
    let other: DynStore = std::sync::Arc::new(
        PgStore::connect(&snapgate::config::DatabaseSettings {
            url: db.url.clone(),
            max_connections: 20,
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    let (a, b) = (app(store.clone()).await, app(other).await);
    // Each replica counts its team for itself first (what a cached count relied on).
    assert_eq!(a.get("/v1/snapshot-jobs").await.status(), 200);
    assert_eq!(b.get("/v1/snapshot-jobs").await.status(), 200);
    let admitted = post_all(&[&a, &b], 0).await;
    assert_eq!(admitted.len(), LIMIT as usize, "admitted: {admitted:?}");
    assert_eq!(store.count_active_jobs("default").await.unwrap(), LIMIT);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
