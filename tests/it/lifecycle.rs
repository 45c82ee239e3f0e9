//! Data lifecycle and operations (issue 33): usage per team, day and region counted with the
//! changes themselves; pausing a team (held on every replica, across a restart); redrive of
//! failed jobs (one retry per job, however many calls race; bulk by filter, bounded).

use crate::common;

use common::app::emulator_ledger;
use common::TestApp;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use snapgate::config::{DatabaseSettings, Settings};
use snapgate::domain::{JobId, JobState, MpsStatus, NewJob};
use snapgate::emulator::EmulatorHandle;
use snapgate::store::{CreateOutcome, DynStore, MpsUpdate, PgStore, RetryOutcome};

async fn app(store: DynStore, emu: &EmulatorHandle, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    TestApp::builder(store)
        .emulator(emu, 5_000)
        .fast_worker()
        .settings(|s| {
            s.worker.backoff_max_ms = 400;
            s.worker.status_poll_max_ms = 500;
            s.worker.idle_poll_ms = 100;
            s.worker.list_visibility_ms = 0;
            tweak(s);
        })
        .start()
        .await
}

/// A job body; the emulator fails jobs whose input key contains "fail".
fn body(i: usize, fail: bool) -> Value {
    let object = if fail {
        format!("uploads/will-fail-{i}.mp4")
    } else {
        format!("uploads/clip-{i}.mp4")
    };
    json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": object},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("thumbs/{i}/{{Count}}.jpg")},
        "time_ms": 1000, "interval_s": 2, "num": 3,
        "sprite": {"output": {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("sprites/{i}.jpg")}, "lines": 2, "columns": 2}
    })
}

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let res = app
        .req(reqwest::Method::POST, path)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let res = app.get(path).await;
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.unwrap()
}

async fn submit(app: &TestApp, body: &Value, key: Option<&str>) -> String {
    let res = app.post_job(body, key).await;
    assert!(res.status().is_success(), "{}", res.status());
    let job: Value = res.json().await.unwrap();
    job["id"].as_str().unwrap().to_string()
}

// --- usage -------------------------------------------------------------------------------

async fn usage_totals_equal_counting_the_jobs(store: DynStore) {
    let emu = common::app::test_emulator(|_| {}).await;
    let app = app(store, &emu, |s| s.lifecycle.price_per_snapshot = 0.25).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        // Some with a key (recorded in the key's transaction), some through the group commit.
        let key = (i % 2 == 0).then(|| format!("usage-{i}"));
        ids.push(submit(&app, &body(i, i % 3 == 0), key.as_deref()).await);
    }
    let (mut succeeded, mut failed, mut snapshots, mut sprites) = (0, 0, 0, 0);
    let mut calls;
    for id in &ids {
        let job = app.wait_final(id, Duration::from_secs(60)).await;
        match job["state"].as_str().unwrap() {
            "succeeded" => {
                succeeded += 1;
                snapshots += job["mps"]["count"].as_u64().unwrap();
                sprites += job["mps"]["tile_count"].as_u64().unwrap();
            }
            _ => failed += 1,
        }
    }
    // Every MPS response is recorded with its usage in one transaction, but a last one (a
    // status query of a job just ended) may still be on its way when the jobs are final: read
    // both until they agree (a count twice would never agree), for at most 20 s.
    app.run_worker_until_idle().await;
    assert_eq!((succeeded, failed), (4, 2));
    assert!(snapshots > 0 && sprites > 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let usage = loop {
        calls = 0;
        for id in &ids {
            let history = get_json(&app, &format!("/v1/snapshot-jobs/{id}/mps-responses")).await;
            calls += history
                .as_array()
                .unwrap()
                .iter()
                .filter(|h| !h["action"].as_str().unwrap().starts_with("MNS:"))
                .count() as u64;
        }
        let usage = get_json(&app, "/v1/admin/usage?group_by=team").await;
        let counted = usage["rows"][0]["mps_calls"].as_u64();
        if counted == Some(calls) || std::time::Instant::now() > deadline {
            break usage;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(calls >= 12);
    let rows = usage["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{usage}");
    let row = &rows[0];
    println!("usage {row}; counted: 6 submitted, {succeeded} succeeded, {failed} failed, {snapshots} snapshots, {sprites} sprite sheets, {calls} MPS calls");
    assert_eq!(row["team"], "default");
    assert_eq!(row["day"], Value::Null, "not grouped by day");
    assert_eq!(row["submitted"], 6);
    assert_eq!(row["succeeded"], succeeded);
    assert_eq!(row["failed"], failed);
    assert_eq!(row["snapshots"], snapshots);
    assert_eq!(row["sprite_sheets"], sprites);
    assert_eq!(row["mps_calls"], calls);
    assert_eq!(row["cost"], json!(snapshots as f64 * 0.25));
    assert_eq!(usage["currency"], "USD");

    // By day and region: today, in the jobs' region (their input bucket's); the team's own route agrees.
    let today = snapgate::store::usage_day(snapgate::store::now());
    let full = get_json(&app, "/v1/usage").await;
    let rows = full["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{full}");
    assert_eq!(rows[0]["day"], today.as_str());
    assert_eq!(rows[0]["region"], "cn-shanghai");
    assert_eq!(rows[0]["submitted"], 6);

    // CSV.
    let csv = app
        .req(reqwest::Method::GET, "/v1/admin/usage?group_by=team,day")
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "team,day,region,submitted,succeeded,failed,snapshots,sprite_sheets,mps_calls,cost"
    );
    assert_eq!(
        lines[1],
        format!(
            "default,{today},,6,{succeeded},{failed},{snapshots},{sprites},{calls},{}",
            snapshots as f64 * 0.25
        )
    );
    // A bad range is a 400 naming the parameter.
    let bad = app.get("/v1/admin/usage?from=2026-13-01").await;
    assert_eq!(bad.status(), 400);
}

pub(crate) fn new_job() -> NewJob {
    let (request, warnings) = snapgate::domain::validate_request(&body(1, false)).unwrap();
    NewJob {
        id: JobId::new(),
        team: "default".into(),
        request,
        warnings,
        created_at: snapgate::store::now(),
        preset: None,
    }
}

/// A job's final state recorded twice (an MNS message redelivered) is counted once.
async fn a_final_state_recorded_twice_counts_once(store: DynStore) {
    let job = new_job();
    let id = job.id;
    store.create_job(job, None).await.unwrap();
    let now = store.clock().await.unwrap();
    let claims = store
        .claim_dispatch("t", now, now + chrono::Duration::seconds(60), 10)
        .await
        .unwrap();
    assert_eq!(claims.len(), 1);
    let mps = MpsStatus {
        job_id: Some("0123456789abcdef0123456789abcdef".into()),
        ..MpsStatus::default()
    };
    let submitted = MpsUpdate {
        state: JobState::Submitted,
        mps: mps.clone(),
        next_poll_at: Some(now),
    };
    assert!(store
        .complete_dispatch(&claims[0].key, &submitted)
        .await
        .unwrap());
    let done = MpsUpdate {
        state: JobState::Succeeded,
        mps: MpsStatus {
            state: Some("Success".into()),
            count: Some(5),
            tile_count: Some(2),
            ..mps
        },
        next_poll_at: None,
    };
    store.record_poll(id, &done).await.unwrap();
    store.record_poll(id, &done).await.unwrap();
    let day = snapgate::store::usage_day(snapgate::store::now());
    let usage = store.usage(&day, &day, None).await.unwrap();
    assert_eq!(usage.len(), 1, "{usage:?}");
    let u = &usage[0];
    assert_eq!(
        u.region, "cn-shanghai",
        "counted in the job's own region (its input bucket's)"
    );
    assert_eq!(
        (
            u.submitted,
            u.succeeded,
            u.failed,
            u.snapshots,
            u.sprite_sheets
        ),
        (1, 1, 0, 5, 2),
        "{u:?}"
    );
}

/// A new job of `team` (the same valid request each time).
fn job_of(team: &str) -> NewJob {
    NewJob {
        team: team.into(),
        ..new_job()
    }
}

/// What usage says `team` submitted, over every day.
async fn submitted(store: &DynStore, team: &str) -> u64 {
    let usage = store
        .usage("2000-01-01", "2999-12-31", Some(team))
        .await
        .unwrap();
    usage.iter().map(|u| u.submitted).sum()
}

/// Creates `n` jobs of `team` at once under `limit` (every third with an idempotency key: the
/// one-job path; the others through the group commit, in batches mixed with the other calls
/// running meanwhile); answers how many were admitted. Every other answer is a quota refusal.
async fn create_at_once(store: &DynStore, team: &str, n: usize, limit: u64) -> u64 {
    let creates = (0..n).map(|i| {
        let key = (i % 3 == 0).then(|| snapgate::store::NewIdempotencyKey {
            key: format!("{team}-{}", JobId::new()),
            fingerprint: "f".into(),
            expires_at: snapgate::store::now() + chrono::Duration::hours(1),
        });
        store.create_job_within(job_of(team), key, limit)
    });
    let mut admitted = 0;
    for outcome in futures::future::join_all(creates).await {
        match outcome.unwrap() {
            CreateOutcome::Created(_) => admitted += 1,
            CreateOutcome::QuotaExceeded => {}
            CreateOutcome::KeyExists(k) => panic!("no key is used twice: {k:?}"),
        }
    }
    admitted
}

/// Usage counts the jobs the quota admitted, never one it refused: batches of the group commit
/// hold jobs of a full team (tried, refused by the admission in the insert's own statement),
/// jobs of a team with some room (refused together, then admitted one by one) and jobs of a
/// team with room for all, committed concurrently; each team's usage equals its jobs recorded.
async fn usage_counts_only_the_jobs_the_quota_admitted(store: DynStore) {
    const LIMIT: u64 = 5;
    let teams = ["full", "some-room", "room"];
    // Before: "full" has its 5 in flight, "some-room" 3 (room for 2), "room" none.
    assert_eq!(create_at_once(&store, teams[0], 5, LIMIT).await, 5);
    assert_eq!(create_at_once(&store, teams[1], 3, LIMIT).await, 3);
    let rounds = teams.map(|t| {
        let store = store.clone();
        tokio::spawn(async move { create_at_once(&store, t, 24, LIMIT).await })
    });
    let mut admitted = Vec::new();
    for r in rounds {
        admitted.push(r.await.unwrap());
    }
    assert_eq!(admitted, [0, 2, 5], "the quota is exact: {admitted:?}");
    for (team, before) in teams.iter().zip([5, 3, 0]) {
        let in_flight = store.count_active_jobs(team).await.unwrap();
        assert_eq!(in_flight, LIMIT, "{team}");
        assert_eq!(
            submitted(&store, team).await,
            in_flight,
            "{team}: usage counts the {} jobs recorded ({before} before, {} now), not the {} refused",
            in_flight,
            in_flight - before,
            24 - (in_flight - before)
        );
    }
}

/// A retry (redrive) is admitted under the in-flight quota by the store, as any new job: refused
/// while the team is full (nothing recorded, nothing counted, the failed job still unretried),
/// recorded and counted once a place is free.
async fn a_retry_is_admitted_under_the_quota_like_any_job(store: DynStore) {
    const LIMIT: u64 = 2;
    let team = "retried";
    let cancelled = store
        .create_job_within(job_of(team), None, LIMIT)
        .await
        .unwrap();
    let CreateOutcome::Created(failed) = cancelled else {
        panic!("admitted")
    };
    let error = snapgate::domain::JobError {
        code: "Cancelled".into(),
        message: "cancelled".into(),
        at: snapgate::store::now(),
    };
    assert!(store.cancel_job(None, failed.id, &error).await.unwrap());
    assert_eq!(create_at_once(&store, team, 2, LIMIT).await, 2);
    let refused = store
        .create_retry(None, failed.id, job_of(team), LIMIT)
        .await
        .unwrap();
    assert!(
        matches!(refused, RetryOutcome::QuotaExceeded),
        "{refused:?}"
    );
    assert_eq!(
        submitted(&store, team).await,
        3,
        "a refused retry is not counted"
    );
    assert_eq!(store.count_active_jobs(team).await.unwrap(), LIMIT);
    let still = store.get_job(None, failed.id).await.unwrap().unwrap();
    assert_eq!(still.retried_by, None, "a refused retry links nothing");

    // A place is given back: the retry is admitted, linked and counted.
    let queued = store
        .list_jobs(&snapgate::store::JobFilter {
            team: Some(team.into()),
            state: Some(JobState::Queued),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(store.cancel_job(None, queued[0].id, &error).await.unwrap());
    let retry = store
        .create_retry(None, failed.id, job_of(team), LIMIT)
        .await
        .unwrap();
    let RetryOutcome::Created(retry) = retry else {
        panic!("admitted once a place is free: {retry:?}")
    };
    assert_eq!(retry.retry_of, Some(failed.id));
    assert_eq!(submitted(&store, team).await, 4);
    assert_eq!(store.count_active_jobs(team).await.unwrap(), LIMIT);
}

/// Over HTTP, a retry refused by the quota is answered as any submit so refused: 429
/// `quota_exceeded`. No worker runs: admitted jobs stay queued, in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_a_full_team_answers_429_quota_exceeded() {
    let (store, _dir) = common::sqlite_store().await;
    let app = TestApp::builder(store)
        .settings(|s| s.limits.team_max_active_jobs = 1)
        .start()
        .await;
    let failed = submit(&app, &body(1, false), None).await;
    let cancel = app
        .req(
            reqwest::Method::DELETE,
            &format!("/v1/snapshot-jobs/{failed}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        cancel.status(),
        200,
        "cancelled: failed, its place given back"
    );
    submit(&app, &body(2, false), None).await;
    let path = format!("/v1/snapshot-jobs/{failed}/retry");
    let (status, problem) = post(&app, &path, json!({})).await;
    assert_eq!(status, 429, "{problem}");
    assert_eq!(problem["code"], "quota_exceeded");
    assert_eq!(app.job(&failed).await["retried_by"], Value::Null);
    app.stop().await.unwrap();
}

common::both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    usage_totals_equal_counting_the_jobs,
    a_final_state_recorded_twice_counts_once,
    usage_counts_only_the_jobs_the_quota_admitted,
    a_retry_is_admitted_under_the_quota_like_any_job,
    a_paused_team_holds_its_jobs_across_a_restart_until_resumed,
    a_failed_job_is_retried_once_however_many_calls_race,
    a_bulk_redrive_is_bounded_and_takes_each_job_once,
    retention_plateaus_over_thirty_simulated_days,
);

// --- pause -------------------------------------------------------------------------------

fn unique_team() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// An admin's and a team member's view of `app` (auth on).
async fn views(app: &TestApp, team: &str) -> (TestApp, TestApp) {
    let admin = app.key("ops", true).await.token;
    let member = app.key(team, false).await.token;
    (app.with_token(Some(&admin)), app.with_token(Some(&member)))
}

async fn a_paused_team_holds_its_jobs_across_a_restart_until_resumed(store: DynStore) {
    let emu = common::app::test_emulator(|_| {}).await;
    let team = unique_team();
    let app1 = app(store.clone(), &emu, |s| s.auth.enabled = true).await;
    let (admin, member) = views(&app1, &team).await;
    let (status, pause) = post(
        &admin,
        &format!("/v1/admin/teams/{team}/pause"),
        json!({"reason": "flood"}),
    )
    .await;
    assert_eq!(status, 200, "{pause}");
    assert_eq!(pause["paused"], true);
    let held = submit(&member, &body(1, false), None).await;
    member.run_worker_until_idle().await;
    assert_eq!(member.job(&held).await["state"], "queued");
    assert_eq!(emulator_ledger(&emu.url()).await.get(&held), None);
    let stats = get_json(&admin, "/v1/admin/stats").await;
    let paused = stats["paused_teams"].as_array().unwrap();
    assert_eq!(paused.len(), 1, "{stats}");
    assert_eq!(paused[0]["team"], team.as_str());
    assert_eq!(paused[0]["reason"], "flood");
    let metrics = admin.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(&format!("snapgate_team_paused{{team=\"{team}\"}} 1")),
        "{metrics}"
    );
    // Refusing new jobs is the pause's choice.
    let (status, _) = post(
        &admin,
        &format!("/v1/admin/teams/{team}/pause"),
        json!({"refuse_new": true}),
    )
    .await;
    assert_eq!(status, 200);
    let refused = member.post_job(&body(2, false), None).await;
    assert_eq!(refused.status(), 409);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "team_paused");

    // A restart keeps the pause.
    drop((admin, member));
    app1.stop().await.unwrap();
    let app2 = app(store.clone(), &emu, |s| s.auth.enabled = true).await;
    let (admin, member) = views(&app2, &team).await;
    assert_eq!(
        member.post_job(&body(3, false), None).await.status(),
        409,
        "still refused after a restart"
    );
    member.run_worker_until_idle().await;
    assert_eq!(member.job(&held).await["state"], "queued");
    assert_eq!(
        admin
            .req(reqwest::Method::POST, "/v1/admin/teams/no-such-team/pause")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        member
            .req(
                reqwest::Method::POST,
                &format!("/v1/admin/teams/{team}/pause")
            )
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

    let (status, resumed) =
        post(&admin, &format!("/v1/admin/teams/{team}/resume"), json!({})).await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["paused"], false);
    let done = member.wait_final(&held, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(emulator_ledger(&emu.url()).await.get(&held), Some(&1));
    let metrics = admin.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains(&format!("snapgate_team_paused{{team=\"{team}\"}} 0")));
}

/// Two replicas (each its own pool, worker and caches) on one Postgres database: a pause made
/// through one holds the other's dispatcher at once, a refusing pause reaches the other's
/// POSTs within a second, and a resume wakes the other's dispatcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_holds_on_every_replica_within_a_second() {
    let (store_a, db) = common::pg_store().await;
    let store_b: DynStore = Arc::new(
        PgStore::connect(&DatabaseSettings {
            url: db.url.clone(),
            max_connections: 8,
            ..DatabaseSettings::default()
        })
        .await
        .unwrap(),
    );
    let emu = common::app::test_emulator(|_| {}).await;
    let team = unique_team();
    let a = app(store_a, &emu, |s| s.auth.enabled = true).await;
    let b = app(store_b, &emu, |s| s.auth.enabled = true).await;
    let (admin_a, _) = views(&a, &team).await;
    let (_, member_b) = views(&b, &team).await;

    let (status, _) = post(
        &admin_a,
        &format!("/v1/admin/teams/{team}/pause"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let held = submit(&member_b, &body(7, false), None).await;
    b.run_worker_until_idle().await;
    a.run_worker_until_idle().await;
    assert_eq!(member_b.job(&held).await["state"], "queued");
    assert_eq!(emulator_ledger(&emu.url()).await.get(&held), None);

    // Resumed through A: B's dispatcher (woken by NOTIFY) or A's sends it; exactly once.
    let (status, _) = post(
        &admin_a,
        &format!("/v1/admin/teams/{team}/resume"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let done = member_b.wait_final(&held, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "succeeded");
    assert_eq!(emulator_ledger(&emu.url()).await.get(&held), Some(&1));

    // A refusing pause through A: B refuses within a second.
    let (status, _) = post(
        &admin_a,
        &format!("/v1/admin/teams/{team}/pause"),
        json!({"refuse_new": true}),
    )
    .await;
    assert_eq!(status, 200);
    let paused_at = Instant::now();
    let mut accepted_meanwhile = 0;
    loop {
        let res = member_b.post_job(&body(8, false), None).await;
        if res.status() == 409 {
            break;
        }
        accepted_meanwhile += 1;
        assert!(
            paused_at.elapsed() < Duration::from_secs(1),
            "replica B still accepts jobs {:?} after the pause",
            paused_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "replica B refused after {:?} ({accepted_meanwhile} accepted meanwhile)",
        paused_at.elapsed()
    );
}

// --- redrive -----------------------------------------------------------------------------

async fn a_failed_job_is_retried_once_however_many_calls_race(store: DynStore) {
    let emu = common::app::test_emulator(|_| {}).await;
    let app = app(store, &emu, |_| {}).await;
    let failed = submit(&app, &body(1, true), None).await;
    assert_eq!(
        app.wait_final(&failed, Duration::from_secs(60)).await["state"],
        "failed"
    );
    let ok = submit(&app, &body(2, false), None).await;
    app.wait_final(&ok, Duration::from_secs(60)).await;
    let (status, problem) = post(&app, &format!("/v1/snapshot-jobs/{ok}/retry"), json!({})).await;
    assert_eq!(status, 409);
    assert_eq!(problem["code"], "job_not_retryable");

    let path = format!("/v1/snapshot-jobs/{failed}/retry");
    let calls = (0..4).map(|_| post(&app, &path, json!({})));
    let answers = futures::future::join_all(calls).await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|(status, job)| {
            assert!(*status == 202 || *status == 201, "{status} {job}");
            assert_eq!(job["retry_of"], failed.as_str());
            job["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one retry however many calls: {ids:?}");
    let retry = ids.into_iter().next().unwrap();
    assert_eq!(app.job(&failed).await["retried_by"], retry.as_str());
    let again = app.req(reqwest::Method::POST, &path).send().await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let listed = get_json(&app, "/v1/snapshot-jobs?limit=100").await;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 3, "{listed}");
    let done = app.wait_final(&retry, Duration::from_secs(60)).await;
    // The same request (the emulator fails it again).
    assert_eq!(done["request"], app.job(&failed).await["request"]);
}

async fn a_bulk_redrive_is_bounded_and_takes_each_job_once(store: DynStore) {
    let emu = common::app::test_emulator(|_| {}).await;
    let app = app(store, &emu, |s| s.lifecycle.redrive_max_per_call = 2).await;
    for i in 0..3 {
        let id = submit(&app, &body(i, true), None).await;
        app.wait_final(&id, Duration::from_secs(60)).await;
    }
    let cutoff = snapgate::store::now().to_rfc3339();
    let filter = |extra: Value| {
        let mut f = json!({"state": "failed", "ended_to": cutoff});
        f.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        f
    };
    let (status, dry) = post(&app, "/v1/admin/redrive", filter(json!({"dry_run": true}))).await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(
        (
            dry["matched"].as_u64(),
            dry["jobs"].as_array().unwrap().len()
        ),
        (Some(3), 0)
    );
    let (_, first) = post(&app, "/v1/admin/redrive", filter(json!({}))).await;
    assert_eq!(first["limit"], 2);
    assert_eq!(first["jobs"].as_array().unwrap().len(), 2, "{first}");
    assert!(first["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["outcome"] == "retried" && j["retry_id"].is_string()));
    let (_, second) = post(&app, "/v1/admin/redrive", filter(json!({}))).await;
    assert_eq!(second["matched"], 1, "{second}");
    assert_eq!(second["jobs"].as_array().unwrap().len(), 1);
    let (_, third) = post(&app, "/v1/admin/redrive", filter(json!({}))).await;
    assert_eq!(
        (
            third["matched"].as_u64(),
            third["jobs"].as_array().unwrap().len()
        ),
        (Some(0), 0)
    );
    let (status, _) = post(&app, "/v1/admin/redrive", filter(json!({"limit": 3}))).await;
    assert_eq!(status, 422, "over lifecycle.redrive_max_per_call");
    let (status, _) = post(&app, "/v1/admin/redrive", json!({"state": "succeeded"})).await;
    assert_eq!(status, 422);
    let listed = get_json(&app, "/v1/snapshot-jobs?limit=100").await;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 6, "{listed}");
}

// --- retention ---------------------------------------------------------------------------

/// One simulated day's traffic at `now` (the shifted clock): `n` jobs, every other one with an
/// idempotency key (kept a day), each sent, answered twice by MPS, and ended (one in four
/// failed); the team's webhook endpoint gets their events.
pub(crate) async fn one_day(store: &DynStore, day: i64, n: usize) {
    for i in 0..n {
        let job = new_job();
        let id = job.id;
        let key = (i % 2 == 0).then(|| snapgate::store::NewIdempotencyKey {
            key: format!("d{day}-{i}"),
            fingerprint: "f".into(),
            expires_at: job.created_at + chrono::Duration::days(1),
        });
        store.create_job(job, key).await.unwrap();
        let now = snapgate::clock::now();
        let claims = store
            .claim_dispatch("sim", now, now + chrono::Duration::seconds(60), 1)
            .await
            .unwrap();
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].key.job_id, id);
        let fail = i % 4 == 0;
        let done = MpsUpdate {
            state: if fail {
                JobState::Failed
            } else {
                JobState::Succeeded
            },
            mps: MpsStatus {
                job_id: Some(uuid::Uuid::new_v4().simple().to_string()),
                state: Some(if fail { "Fail" } else { "Success" }.into()),
                code: fail.then(|| "InternalError".to_string()),
                count: (!fail).then_some(3),
                tile_count: (!fail).then_some(1),
                ..MpsStatus::default()
            },
            next_poll_at: None,
        };
        assert!(store
            .complete_dispatch(&claims[0].key, &done)
            .await
            .unwrap());
        let answer = |action: &str| snapgate::store::MpsResponseRecord {
            job_id: id,
            action: action.into(),
            request_id: None,
            code: None,
            body: json!({}),
            received_at: now,
        };
        store
            .append_mps_responses(&[answer("SubmitSnapshotJob"), answer("QuerySnapshotJobList")])
            .await
            .unwrap();
    }
}

/// 30 simulated days at a fixed daily rate, a purge at the end of each: every table's row count
/// reaches a plateau once the retention periods have passed, the usage stays exact, and the
/// jobs that never ended are never removed.
async fn retention_plateaus_over_thirty_simulated_days(store: DynStore) {
    const PER_DAY: usize = 20;
    store
        .create_webhook_endpoint(&snapgate::store::NewWebhookEndpoint {
            id: uuid::Uuid::now_v7(),
            team: "default".into(),
            url: "https://hooks.example.com/sim".into(),
            description: None,
            event_types: snapgate::store::EVENT_TYPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            secret_ciphertext: "not-used".into(),
            created_at: snapgate::store::now(),
        })
        .await
        .unwrap();
    let cfg = crate::archive::lifecycle(7);
    let purger = snapgate::worker::purge::Purger::new(store.clone(), cfg);
    let stop = tokio_util::sync::CancellationToken::new();
    // Two jobs that never end: queued on day 0, then claimed under a lease that outlasts the
    // simulation (the day's claims take only the day's jobs).
    let never_final: Vec<JobId> = {
        let mut ids = Vec::new();
        for _ in 0..2 {
            let job = new_job();
            ids.push(job.id);
            store.create_job(job, None).await.unwrap();
        }
        ids
    };
    let far = snapgate::store::now() + chrono::Duration::days(400);
    let held = store
        .claim_dispatch("holder", snapgate::store::now(), far, 2)
        .await
        .unwrap();
    assert_eq!(held.len(), 2);

    let mut table: Vec<Vec<(String, u64)>> = Vec::new();
    let mut purged_total = 0;
    for day in 0..30i64 {
        let rows = snapgate::clock::shifted(chrono::Duration::days(day), async {
            one_day(&store, day, PER_DAY).await;
            let report = purger
                .run_once(snapgate::clock::now(), &stop)
                .await
                .unwrap()
                .expect("the lease is free");
            purged_total += report.classes.iter().map(|c| c.deleted).sum::<u64>();
            store.table_rows().await.unwrap()
        })
        .await;
        println!(
            "day {day:2}: {}",
            rows.iter()
                .map(|(t, n)| format!("{t}={n}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        table.push(rows);
    }
    // From day 10 on (past every retention, 5 days at most, and the 1-day keys) each table holds
    // the same number of rows at the end of every day; only the usage aggregate grows (a few
    // rows a day, kept on purpose: it is what outlives the purge).
    let bounded = |rows: &Vec<(String, u64)>| -> Vec<(String, u64)> {
        rows.iter()
            .filter(|(t, _)| t != "usage_daily")
            .cloned()
            .collect()
    };
    for day in 10..30 {
        assert_eq!(
            bounded(&table[day]),
            bounded(&table[29]),
            "day {day} differs from day 29"
        );
    }
    let rows: std::collections::HashMap<_, _> = table[29].iter().cloned().collect();
    // Jobs: the last 5 days' (ended after the cutoff) and the two that never ended.
    assert_eq!(rows["jobs"], 5 * PER_DAY as u64 + 2, "{rows:?}");
    assert_eq!(rows["mps_responses"], 5 * PER_DAY as u64 * 2);
    assert_eq!(rows["webhook_events"], 3 * PER_DAY as u64 * 2);
    assert!(purged_total > 0);
    for id in &never_final {
        let job = store
            .get_job(None, *id)
            .await
            .unwrap()
            .expect("a non-final job is kept");
        assert_eq!(job.state, JobState::Queued);
    }
    // Usage outlives the purge: all 30 days, exactly.
    let usage = store.usage("0000-01-01", "9999-12-31", None).await.unwrap();
    let submitted: u64 = usage.iter().map(|u| u.submitted).sum();
    let failed: u64 = usage.iter().map(|u| u.failed).sum();
    let calls: u64 = usage.iter().map(|u| u.mps_calls).sum();
    assert_eq!(submitted, 30 * PER_DAY as u64 + 2);
    assert_eq!(failed, 30 * (PER_DAY as u64 / 4));
    assert_eq!(calls, 30 * PER_DAY as u64 * 2);
    // The dry run finds nothing left to do at the last day.
    let left = snapgate::clock::shifted(chrono::Duration::days(29), async {
        purger.dry_run(snapgate::clock::now()).await.unwrap()
    })
    .await;
    assert!(left.iter().all(|c| c.rows == 0), "{left:?}");
}
