//! Team access on Postgres: authentication, isolation, revocation across replicas, limits,
//! CORS, and `/v1/admin/stats` (`/metrics` is in tests/globals/metrics.rs, alone in its binary).

use crate::common;

use common::TestApp;

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use snapgate::clock::ManualClock;
use snapgate::config::Settings;
use snapgate::crypto::MasterKey;
use snapgate::domain::{validate_request, JobId, JobState};
use snapgate::domain::{JobError, MpsStatus, NewJob};
use snapgate::services::keys::{issue_key, IssuedKey};
use snapgate::store::{CreateOutcome, DynStore, MpsResponseRecord, MpsUpdate};

fn master() -> MasterKey {
    common::app::master_key()
}

async fn key(store: &DynStore, team: &str, admin: bool) -> IssuedKey {
    store
        .create_team(team, snapgate::store::now())
        .await
        .unwrap();
    issue_key(store, &master(), team, admin).await.unwrap()
}

async fn spawn(store: DynStore, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    TestApp::builder(store)
        .settings(|s| {
            s.auth.enabled = true;
            s.http.submit_wait_ms = 0;
            tweak(s);
        })
        .start()
        .await
}

fn body() -> Value {
    json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.mp4"},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.jpg"}
    })
}

#[tokio::test]
async fn every_v1_route_needs_a_valid_token_and_says_nothing_more() {
    let (store, _g) = common::pg_store().await;
    let k = key(&store, "alpha", false).await;
    let base = spawn(store.clone(), |_| {}).await;
    let anonymous = base.with_token(None);
    let wrong = base.with_token(Some("sgt_notarealtokenatallxxxxxxxxxxxxxxxxxxxxxx"));
    let mut details = Vec::new();
    for c in [&anonymous, &wrong] {
        for res in [
            c.post_job(&body(), None).await,
            c.get("/v1/snapshot-jobs").await,
            c.get("/v1/snapshot-jobs/0190a0b0-0000-7000-8000-000000000000")
                .await,
            c.get("/v1/admin/stats").await,
        ] {
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
            assert!(res.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"));
            let p: Value = res.json().await.unwrap();
            assert_eq!(p["code"], "unauthorized");
            details.push(p["detail"].as_str().unwrap().to_string());
        }
    }
    details.dedup();
    assert_eq!(details.len(), 1, "one answer whatever was wrong");
    // Scheme other than Bearer, or the secret instead of the token: same 401.
    let res = reqwest::Client::new()
        .get(base.url("/v1/snapshot-jobs"))
        .header("authorization", format!("Basic {}", k.token))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = base
        .with_token(Some(&k.access_key_secret))
        .get("/v1/snapshot-jobs")
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Open routes stay open.
    for path in ["/healthz", "/readyz", "/openapi.json", "/metrics"] {
        assert_eq!(anonymous.get(path).await.status(), StatusCode::OK, "{path}");
    }
    assert_eq!(
        base.with_token(Some(&k.token))
            .get("/v1/snapshot-jobs")
            .await
            .status(),
        StatusCode::OK
    );
}

/// Status, sorted headers, body.
type Answer = (StatusCode, Vec<(String, String)>, Value);

/// One whole 401 answer, without what legitimately changes per request: the `Date` and
/// `x-request-id` headers and the body's `request_id`.
async fn answer(res: reqwest::Response) -> Answer {
    let status = res.status();
    let mut headers: Vec<(String, String)> = res
        .headers()
        .iter()
        .filter(|(n, _)| *n != "date" && *n != "x-request-id")
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    headers.sort();
    let mut body: Value = res.json().await.expect("a 401 has a JSON problem body");
    let id = body
        .as_object_mut()
        .and_then(|o| o.remove("request_id"))
        .expect("the problem names its request_id");
    assert!(id.as_str().is_some_and(|s| !s.is_empty()), "{id}");
    (status, headers, body)
}

#[tokio::test]
async fn the_same_whole_401_whatever_was_wrong() {
    let (store, _g) = common::pg_store().await;
    let k = key(&store, "alpha", false).await;
    let revoked = key(&store, "alpha", false).await;
    assert!(store
        .revoke_api_key(&revoked.access_key_id, snapgate::store::now())
        .await
        .unwrap());
    let base = spawn(store.clone(), |_| {}).await;
    let overlong = format!("sgt_{}", "a".repeat(300));
    let unknown = "sgt_notarealtokenatallxxxxxxxxxxxxxxxxxxxxxx".to_string();
    // (case, Authorization header or none)
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("unknown", Some(format!("Bearer {unknown}"))),
        ("revoked", Some(format!("Bearer {}", revoked.token))),
        ("basic scheme", Some(format!("Basic {}", k.token))),
        ("overlong", Some(format!("Bearer {overlong}"))),
        ("malformed: no space", Some(format!("Bearer{}", k.token))),
        ("malformed: empty token", Some("Bearer    ".to_string())),
        ("malformed: scheme only", Some("Bearer".to_string())),
        (
            "secret instead of token",
            Some(format!("Bearer {}", k.access_key_secret)),
        ),
    ];
    let routes = [
        (reqwest::Method::GET, "/v1/snapshot-jobs"),
        (reqwest::Method::POST, "/v1/snapshot-jobs"),
        (
            reqwest::Method::GET,
            "/v1/snapshot-jobs/0190a0b0-0000-7000-8000-000000000000",
        ),
        (reqwest::Method::GET, "/v1/admin/stats"),
    ];
    let http = reqwest::Client::new();
    for (method, path) in routes {
        let mut first: Option<(&str, Answer)> = None;
        for (case, header) in &cases {
            let mut r = http.request(method.clone(), base.url(path));
            if method == reqwest::Method::POST {
                r = r.json(&body());
            }
            if let Some(h) = header {
                r = r.header("authorization", h);
            }
            let got = answer(r.send().await.unwrap()).await;
            assert_eq!(got.0, StatusCode::UNAUTHORIZED, "{method} {path}: {case}");
            assert_eq!(got.2["code"], "unauthorized", "{method} {path}: {case}");
            assert!(
                got.1
                    .iter()
                    .any(|(n, v)| n == "www-authenticate" && v.starts_with("Bearer")),
                "{method} {path}: {case}: {:?}",
                got.1
            );
            match &first {
                None => first = Some((case, got)),
                Some((first_case, want)) => assert_eq!(
                    &got, want,
                    "{method} {path}: {case} differs from {first_case}"
                ),
            }
        }
    }
    // The valid key still works, so the 401s above were about the header, not the server.
    assert_eq!(
        base.with_token(Some(&k.token))
            .get("/v1/snapshot-jobs")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn teams_see_only_their_own_jobs_and_admins_see_all() {
    let (store, _g) = common::pg_store().await;
    let a = key(&store, "alpha", false).await;
    let b = key(&store, "beta", false).await;
    let root = key(&store, "ops", true).await;
    let base = spawn(store.clone(), |_| {}).await;
    let (ca, cb, cr) = (
        base.with_token(Some(&a.token)),
        base.with_token(Some(&b.token)),
        base.with_token(Some(&root.token)),
    );
    let job: Value = ca
        .post_job(&body(), Some("same-key"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["team"], "alpha");
    let id = job["id"].as_str().unwrap();
    // Another team's job does not exist for you (404, not 403).
    let res = cb.get(&format!("/v1/snapshot-jobs/{id}")).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        cb.get(&format!("/v1/snapshot-jobs/{id}/mps-responses"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let list: Value = cb.get("/v1/snapshot-jobs").await.json().await.unwrap();
    assert_eq!(list["jobs"], json!([]));
    // Idempotency keys are per team: beta's "same-key" is a new job.
    let other: Value = cb
        .post_job(&body(), Some("same-key"))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(other["id"], job["id"]);
    // Only admins may name a team; an admin sees every team.
    assert_eq!(
        cb.get("/v1/snapshot-jobs?team=alpha").await.status(),
        StatusCode::BAD_REQUEST
    );
    let all: Value = cr.get("/v1/snapshot-jobs").await.json().await.unwrap();
    assert_eq!(all["jobs"].as_array().unwrap().len(), 2);
    let alpha: Value = cr
        .get("/v1/snapshot-jobs?team=alpha")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(alpha["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(
        cr.get(&format!("/v1/snapshot-jobs/{id}")).await.status(),
        StatusCode::OK
    );
    // Admin stats: admins only.
    assert_eq!(
        ca.get("/v1/admin/stats").await.status(),
        StatusCode::FORBIDDEN
    );
    let stats: Value = cr.get("/v1/admin/stats").await.json().await.unwrap();
    assert_eq!(stats["totals"]["queued"], 2);
    assert!(stats["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["team"] == "alpha" && r["count"] == 1));
    // Ages, in-flight jobs, MPS error codes and the budget: `admin_stats_report_what_the_store_holds`.
}

fn new_job(team: &str, created_at: DateTime<Utc>) -> NewJob {
    let (request, warnings) = validate_request(&body()).unwrap();
    NewJob {
        id: JobId::new(),
        team: team.into(),
        request,
        warnings,
        created_at,
        preset: None,
    }
}

async fn create(store: &DynStore, job: NewJob) -> JobId {
    let id = job.id;
    match store.create_job(job, None).await.unwrap() {
        CreateOutcome::Created(j) => assert_eq!(j.id, id),
        other => panic!("{other:?}"),
    }
    id
}

/// A time in a stats answer.
fn time(v: &Value) -> DateTime<Utc> {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"))
}

/// `/v1/admin/stats` against a situation made through the store at known times: every figure is
/// the one expected, and each age lies between the ages at the request's start and its end.
#[tokio::test]
async fn admin_stats_report_what_the_store_holds() {
    let (store, _g) = common::pg_store().await;
    let root = key(&store, "ops", true).await;
    // No worker: nothing but this test moves a job.
    let base = spawn(store.clone(), |_| {}).await;
    let admin = base.with_token(Some(&root.token));
    let now = snapgate::store::now();
    let ago = |s: i64| now - chrono::Duration::seconds(s);
    let lease = now + chrono::Duration::seconds(60);
    // In flight: created 300 s ago, claimed, and accepted by MPS.
    let in_flight_at = ago(300);
    let in_flight = create(&store, new_job("beta", in_flight_at)).await;
    let claims = store.claim_dispatch("stats", now, lease, 10).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].job.id, in_flight);
    let accepted = MpsUpdate {
        state: JobState::Submitted,
        mps: MpsStatus {
            job_id: Some("mps-1".into()),
            state: Some("Submitted".into()),
            ..MpsStatus::default()
        },
        next_poll_at: Some(lease),
    };
    assert!(store
        .complete_dispatch(&claims[0].key, &accepted)
        .await
        .unwrap());
    // Queued 90 s ago, claimed by a worker whose call is in flight: still queued, the oldest.
    let queued_at = ago(90);
    let claimed = create(&store, new_job("alpha", queued_at)).await;
    let claims = store.claim_dispatch("stats", now, lease, 10).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].job.id, claimed);
    // Queued 30 s ago, not claimed.
    create(&store, new_job("alpha", ago(30))).await;
    // Created 600 s ago and cancelled: failed, neither queued nor in flight.
    let cancelled = create(&store, new_job("alpha", ago(600))).await;
    let error = JobError {
        code: "cancelled".into(),
        message: "cancelled by the test".into(),
        at: now,
    };
    assert!(store.cancel_job(None, cancelled, &error).await.unwrap());
    // MPS errors: two throttles 10 min ago, a missing input 59 min ago. Not counted: an error
    // 61 min ago, and an answer without a code.
    let answer = |code: Option<&str>, minutes_ago: i64| MpsResponseRecord {
        job_id: in_flight,
        action: "SubmitSnapshotJob".into(),
        request_id: Some("REQ".into()),
        code: code.map(str::to_string),
        body: json!({ "Code": code }),
        received_at: now - chrono::Duration::minutes(minutes_ago),
    };
    store
        .append_mps_responses(&[
            answer(Some("Throttling.User"), 10),
            answer(Some("Throttling.User"), 10),
            answer(Some("InvalidParameter.ResourceNotFound"), 59),
            answer(Some("ServiceUnavailable"), 61),
            answer(None, 1),
        ])
        .await
        .unwrap();

    let before = Utc::now();
    let stats: Value = admin.get("/v1/admin/stats").await.json().await.unwrap();
    let after = Utc::now();
    assert_eq!(
        stats["jobs"],
        json!([
            {"team": "alpha", "state": "failed", "count": 1},
            {"team": "alpha", "state": "queued", "count": 2},
            {"team": "beta", "state": "submitted", "count": 1},
        ]),
        "{stats}"
    );
    assert_eq!(
        stats["totals"],
        json!({"failed": 1, "queued": 2, "submitted": 1})
    );
    assert_eq!(time(&stats["oldest_queued_at"]), queued_at, "{stats}");
    assert_eq!(time(&stats["oldest_in_flight_at"]), in_flight_at, "{stats}");
    for (field, at) in [
        ("oldest_queued_age_s", queued_at),
        ("oldest_in_flight_age_s", in_flight_at),
    ] {
        let age = stats[field].as_f64().unwrap();
        let low = (before - at).num_milliseconds() as f64 / 1000.0;
        let high = (after - at).num_milliseconds() as f64 / 1000.0;
        assert!(
            low <= age && age <= high,
            "{field} {age} not in [{low}, {high}]"
        );
    }
    assert_eq!(
        stats["mps_error_codes_last_hour"],
        json!([
            {"code": "Throttling.User", "count": 2},
            {"code": "InvalidParameter.ResourceNotFound", "count": 1},
        ])
    );

    // `tokens_left` is what the shared submit budget holds when stats are read: a bucket
    // emptied ten seconds ago has refilled to its burst since, whatever the stored count says.
    let qps = f64::from(Settings::default().worker.submit_qps);
    let burst = snapgate::store::budget_burst(qps);
    let ten_s_ago = snapgate::store::now() - chrono::Duration::seconds(10);
    let granted = store
        .acquire_budget("mps.submit", 1_000, qps, burst, ten_s_ago)
        .await
        .unwrap()
        .granted;
    assert_eq!(f64::from(granted), burst.floor(), "the bucket was emptied");
    let stats: Value = admin.get("/v1/admin/stats").await.json().await.unwrap();
    let submit = stats["upstream_budget"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "mps.submit")
        .expect("the submit budget is listed")
        .clone();
    assert_eq!(submit["tokens_left"].as_f64().unwrap(), burst, "{submit}");
    assert_eq!(submit["qps"], Settings::default().worker.submit_qps);
    assert_eq!(time(&submit["last_taken_at"]), ten_s_ago);
}

#[tokio::test]
async fn revoked_keys_stop_at_once_on_every_replica() {
    let (store, _g) = common::pg_store().await;
    let k = key(&store, "alpha", false).await;
    let replica1 = spawn(store.clone(), |_| {}).await;
    let replica2 = spawn(store.clone(), |_| {}).await;
    for base in [&replica1, &replica2] {
        assert_eq!(
            base.with_token(Some(&k.token))
                .get("/v1/snapshot-jobs")
                .await
                .status(),
            StatusCode::OK
        );
    }
    assert!(store
        .revoke_api_key(&k.access_key_id, snapgate::store::now())
        .await
        .unwrap());
    for base in [&replica1, &replica2] {
        assert_eq!(
            base.with_token(Some(&k.token))
                .get("/v1/snapshot-jobs")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert!(!store
        .revoke_api_key(&k.access_key_id, snapgate::store::now())
        .await
        .unwrap());
    // The database holds neither the token nor the secret in clear.
    let keys = store.list_api_keys().await.unwrap();
    let row = format!("{:?}", keys);
    assert!(!row.contains(&k.token) && !row.contains(&k.access_key_secret));
    assert_eq!(
        master()
            .decrypt(&keys[0].secret_ciphertext)
            .unwrap()
            .expose(),
        k.access_key_secret
    );
}

/// A 429's `Retry-After` in seconds, and its `RateLimit` header.
fn refusal(res: &reqwest::Response) -> (u64, String) {
    let h = res.headers();
    (
        h["retry-after"].to_str().unwrap().parse().unwrap(),
        h["ratelimit"].to_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn rate_limit_quota_and_cors() {
    let (store, _g) = common::pg_store().await;
    let k = key(&store, "alpha", false).await;
    let other = key(&store, "beta", false).await;
    // The buckets run on a clock that moves only when this test says: no request below can
    // find a bucket refilled by the time the previous ones took.
    let clock = ManualClock::default();
    let base = TestApp::builder(store.clone())
        .settings(|s| {
            s.auth.enabled = true;
            s.http.submit_wait_ms = 0;
            s.limits.team_requests_per_second = 1;
            s.limits.team_burst = 3;
            s.limits.team_max_active_jobs = 2;
            s.http.cors_origins = vec!["https://upload.example.com".into()];
        })
        .rate_clock(clock.clone())
        .start()
        .await;
    let c = base.with_token(Some(&k.token));
    let res = c.post_job(&body(), None).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    // The IETF RateLimit headers: the team's bucket (3 at once, refilled in 3 s at 1/s) and
    // what is left of it after this request (2, full again in 1 s).
    assert_eq!(res.headers()["ratelimit-policy"], "\"team\";q=3;w=3");
    assert_eq!(res.headers()["ratelimit"], "\"team\";r=2;t=1");
    let res = c.post_job(&body(), None).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(res.headers()["ratelimit"], "\"team\";r=1;t=2");
    // The third job is over the quota of two in flight (it took the bucket's last token).
    let res = c.post_job(&body(), None).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(res.headers()["ratelimit"], "\"team\";r=0;t=3");
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "quota_exceeded");
    // The bucket is empty: the next token comes in exactly 1 s.
    let res = c.get("/v1/snapshot-jobs").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refusal(&res), (1, "\"team\";r=0;t=3".to_string()));
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "rate_limited");
    // Another team is not affected.
    assert_eq!(
        base.with_token(Some(&other.token))
            .get("/v1/snapshot-jobs")
            .await
            .status(),
        StatusCode::OK
    );
    // 1 ms short of the token: still refused (a refusal takes nothing), told to wait 1 s.
    clock.advance(Duration::from_millis(999));
    let res = c.get("/v1/snapshot-jobs").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refusal(&res), (1, "\"team\";r=0;t=3".to_string()));
    // The token is there: allowed, and the bucket is empty again.
    clock.advance(Duration::from_millis(1));
    let res = c.get("/v1/snapshot-jobs").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["ratelimit"], "\"team\";r=0;t=3");
    // Three seconds later the bucket is full: one taken, two left.
    clock.advance(Duration::from_secs(3));
    let res = c.get("/v1/snapshot-jobs").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["ratelimit"], "\"team\";r=2;t=1");
    // CORS: the configured origin is allowed, others are not.
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, base.url("/v1/snapshot-jobs"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,idempotency-key",
            )
            .send()
    };
    let ok = preflight("https://upload.example.com").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://upload.example.com"
    );
    let no = preflight("https://evil.example.com").await.unwrap();
    assert!(no.headers().get("access-control-allow-origin").is_none());
}
