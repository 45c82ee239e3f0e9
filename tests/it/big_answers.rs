//! Answers too large for the layers that hold them in memory (security review, issue 31): the
//! `ETag` layer (D01: a JSON answer over its 4 MiB buffer must go out whole, untagged) and the
//! job cache (D08: bounded by bytes, `http.job_cache_bytes`). SQLite, auth off, no worker: a
//! queued job whose recorded MPS response is made large behind the API's back.

use crate::common;

use common::TestApp;

use reqwest::StatusCode;
use serde_json::{json, Value};

/// A queued job posted through the API, then given an MPS response of `bytes` bytes in the
/// database (`{"Big": "xxx…"}`); returns its id.
async fn big_job(app: &TestApp, db: &std::path::Path, bytes: usize) -> String {
    let body = json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.mp4"},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.jpg"}
    });
    let res = app.post_job(&body, None).await;
    assert!(res.status().is_success(), "{}", res.status());
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let response = json!({ "Big": "x".repeat(bytes) }).to_string();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let done = sqlx::query("UPDATE jobs SET mps_response = ?1 WHERE id = ?2")
        .bind(&response)
        .bind(&id)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1, "job {id} not found by its text id");
    pool.close().await;
    id
}

/// The answer's status, its `content-length` (if any), its `ETag` (if any) and its body.
async fn read(app: &TestApp, path: &str) -> (StatusCode, Option<u64>, bool, Vec<u8>) {
    let res = app.get(path).await;
    let length = res
        .headers()
        .get("content-length")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let tagged = res.headers().contains_key("etag");
    (
        res.status(),
        length,
        tagged,
        res.bytes().await.unwrap().to_vec(),
    )
}

/// D01: the `ETag` layer buffered at most 4 MiB and, past it, answered `200` with
/// `content-length: 0`. An answer too large to tag now goes out whole and untagged, with its
/// true length; a small one is still tagged.
#[tokio::test]
async fn a_json_answer_over_the_etag_buffer_arrives_whole_and_untagged() {
    let (store, dir) = common::sqlite_store().await;
    let app = TestApp::builder(store).start().await;
    let db = dir.path().join("snapgate.db");
    let big = big_job(&app, &db, 5 << 20).await;

    for path in [
        format!("/v1/snapshot-jobs/{big}"),
        "/v1/snapshot-jobs?limit=10".to_string(),
    ] {
        let (status, length, tagged, body) = read(&app, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            body.len() > 5 << 20,
            "{path}: {} bytes arrived (content-length {length:?})",
            body.len()
        );
        if let Some(n) = length {
            assert_eq!(n, body.len() as u64, "{path}: content-length");
        }
        assert!(!tagged, "{path}: an answer too large to tag is untagged");
        let v: Value = serde_json::from_slice(&body).expect("the whole JSON");
        let job = if v["jobs"].is_array() {
            v["jobs"][0].clone()
        } else {
            v
        };
        assert_eq!(job["id"], big.as_str(), "{path}");
        assert_eq!(
            job["mps"]["response"]["Big"].as_str().unwrap().len(),
            5 << 20
        );
    }

    // A small answer is still tagged and revalidated.
    let small = big_job(&app, &db, 10).await;
    let path = format!("/v1/snapshot-jobs/{small}");
    let res = app.get(&path).await;
    let tag = res.headers()["etag"].to_str().unwrap().to_string();
    let again = app
        .req(reqwest::Method::GET, &path)
        .header("if-none-match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
}

/// D08: the job cache kept whole answers bounded by count only (5 reads of huge jobs kept
/// 508 MB). Now an answer over an eighth of `http.job_cache_bytes` (64 MiB by default) is
/// answered but not kept: with its row gone behind the app's back (SQLite has no change feed;
/// a final job is kept until evicted), only a cache could still answer it. A small final job is
/// still kept. (The byte bound itself: `src/http/job_cache.rs`'s and `src/cache.rs`'s tests.)
#[tokio::test]
async fn a_final_job_too_large_for_the_job_cache_is_not_kept() {
    let (store, dir) = common::sqlite_store().await;
    let app = TestApp::builder(store).start().await;
    let db = dir.path().join("snapgate.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let big = big_job(&app, &db, 9 << 20).await;
    let small = big_job(&app, &db, 10).await;
    for id in [&big, &small] {
        sqlx::query("UPDATE jobs SET state = 'succeeded' WHERE id = ?1")
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        let (status, _, _, body) = read(&app, &format!("/v1/snapshot-jobs/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["state"], "succeeded");
        sqlx::query("DELETE FROM jobs WHERE id = ?1")
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    let (status, ..) = read(&app, &format!("/v1/snapshot-jobs/{small}")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a small final job is answered from memory"
    );
    let (status, _, _, body) = read(&app, &format!("/v1/snapshot-jobs/{big}")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a 9 MiB answer was kept in memory ({} bytes answered from the cache)",
        body.len()
    );
}
