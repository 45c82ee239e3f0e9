//! One conformance suite, run unchanged against every store backend (SQLite and Postgres).
//! It is what keeps the two implementations from drifting apart.

mod common;

use chrono::Duration;
use serde_json::json;
use snapgate::domain::{validate_request, JobId, JobState};
use snapgate::store::{
    self, CreateOutcome, DynStore, JobError, JobFilter, MpsResponseRecord, MpsStatus, MpsUpdate,
    NewIdempotencyKey, NewJob,
};

fn new_job(team: &str, at: chrono::DateTime<chrono::Utc>) -> NewJob {
    let (request, warnings) = validate_request(&json!({
        "input": {"location": "oss-cn-shanghai", "bucket": "media", "object": "in/a b.mp4"},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "out/{Count}.jpg"},
        "num": 3, "interval_s": 2, "black_level": 40, "time_ms": 5
    }))
    .unwrap();
    NewJob {
        id: JobId::new(),
        team: team.into(),
        request,
        warnings,
        created_at: at,
    }
}

fn created(o: CreateOutcome) -> store::Job {
    match o {
        CreateOutcome::Created(j) => *j,
        CreateOutcome::KeyExists(r) => panic!("unexpected existing key {r:?}"),
    }
}

fn accepted(mps_id: &str) -> MpsUpdate {
    MpsUpdate {
        state: JobState::Submitted,
        mps: MpsStatus {
            job_id: Some(mps_id.into()),
            state: Some("Submitted".into()),
            request_id: Some("REQ-1".into()),
            response: Some(json!({"Id": mps_id, "State": "Submitted"})),
            ..MpsStatus::default()
        },
        next_poll_at: Some(store::now()),
    }
}

fn err(code: &str) -> JobError {
    JobError {
        code: code.into(),
        message: format!("{code} happened"),
        at: store::now(),
    }
}

async fn create_get_roundtrip(s: DynStore) {
    let now = store::now();
    let new = new_job("team-a", now);
    let id = new.id;
    let request = new.request.clone();
    let job = created(s.create_job(new, None).await.unwrap());
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.created_at, now);
    let got = s.get_job(Some("team-a"), id).await.unwrap().unwrap();
    assert_eq!(got, job);
    assert_eq!(got.request, request);
    assert!(!got.warnings.is_empty());
    assert!(
        s.get_job(Some("team-b"), id).await.unwrap().is_none(),
        "team isolation"
    );
    assert!(s.get_job(None, id).await.unwrap().is_some(), "admin read");
    assert!(s.get_job(None, JobId::new()).await.unwrap().is_none());
    s.ping().await.unwrap();
}

async fn list_newest_first_with_filters_and_cursor(s: DynStore) {
    let base = store::now() - Duration::minutes(10);
    let mut ids = Vec::new();
    for i in 0..7 {
        let j = new_job("t", base + Duration::seconds(i));
        ids.push(j.id);
        s.create_job(j, None).await.unwrap();
    }
    s.create_job(new_job("other", base), None).await.unwrap();
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s
            .list_jobs(&JobFilter {
                team: Some("t".into()),
                before,
                limit: 3,
                ..JobFilter::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(|j| (j.created_at, j.id));
        seen.extend(page.into_iter().map(|j| j.id));
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, every job once");
    let window = s
        .list_jobs(&JobFilter {
            team: Some("t".into()),
            created_after: Some(base + Duration::seconds(1)),
            created_before: Some(base + Duration::seconds(5)),
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(window.len(), 3);
    let queued = s
        .list_jobs(&JobFilter {
            state: Some(JobState::Queued),
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(queued.len(), 8, "no team filter lists every team");
    let none = s
        .list_jobs(&JobFilter {
            team: Some("t".into()),
            state: Some(JobState::Failed),
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

async fn idempotency_keys_scope_replay_and_expire(s: DynStore) {
    let now = store::now();
    let key = |fp: &str, exp| NewIdempotencyKey {
        key: "k1".into(),
        fingerprint: fp.into(),
        expires_at: exp,
    };
    let first = created(
        s.create_job(
            new_job("a", now),
            Some(key("fp", now + Duration::hours(24))),
        )
        .await
        .unwrap(),
    );
    match s
        .create_job(
            new_job("a", now),
            Some(key("fp2", now + Duration::hours(24))),
        )
        .await
        .unwrap()
    {
        CreateOutcome::KeyExists(r) => {
            assert_eq!(r.job_id, first.id);
            assert_eq!(r.fingerprint, "fp");
            assert_eq!(r.response_status, None);
        }
        other => panic!("expected KeyExists, got {other:?}"),
    }
    // The losing request left nothing behind.
    let all = s
        .list_jobs(&JobFilter {
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    // Keys are per team.
    created(
        s.create_job(
            new_job("b", now),
            Some(key("fp", now + Duration::hours(24))),
        )
        .await
        .unwrap(),
    );
    s.complete_idempotency_key("a", "k1", 201, &json!({"id": first.id}))
        .await
        .unwrap();
    let rec = s.get_idempotency_key("a", "k1").await.unwrap().unwrap();
    assert_eq!(rec.response_status, Some(201));
    assert_eq!(rec.response_body, Some(json!({"id": first.id})));
    // Completing twice keeps the first answer.
    s.complete_idempotency_key("a", "k1", 500, &json!({}))
        .await
        .unwrap();
    assert_eq!(
        s.get_idempotency_key("a", "k1")
            .await
            .unwrap()
            .unwrap()
            .response_status,
        Some(201)
    );
    // An expired key is purged, and may be reused even before the purge.
    created(
        s.create_job(
            new_job("c", now),
            Some(key("fp", now - Duration::seconds(1))),
        )
        .await
        .unwrap(),
    );
    created(
        s.create_job(new_job("c", now), Some(key("fp", now + Duration::hours(1))))
            .await
            .unwrap(),
    );
    assert_eq!(
        s.purge_idempotency_keys(now + Duration::hours(25))
            .await
            .unwrap(),
        3
    );
}

async fn claims_are_exclusive_and_leases_expire(s: DynStore) {
    let now = store::now();
    for _ in 0..5 {
        s.create_job(new_job("t", now), None).await.unwrap();
    }
    let lease = now + Duration::seconds(30);
    let a = s.claim_dispatch("a", now, lease, 3).await.unwrap();
    let b = s.claim_dispatch("b", now, lease, 10).await.unwrap();
    assert_eq!(a.len(), 3);
    assert_eq!(b.len(), 2);
    let mut ids: Vec<_> = a.iter().chain(&b).map(|c| c.job.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "no job claimed twice");
    assert!(a
        .iter()
        .all(|c| c.attempts == 0 && c.attempt_started_at.is_none() && c.key.job_id == c.job.id));
    assert!(s
        .claim_dispatch("c", now, lease, 10)
        .await
        .unwrap()
        .is_empty());
    // b starts its attempts (the pipeline it sends is kept), then crashes; after its lease
    // expires, c takes over and learns that an attempt had started, and with which pipeline.
    for claim in &b {
        assert!(s
            .begin_attempt(&claim.key, lease, Some("0123456789abcdef0123456789abcdef"))
            .await
            .unwrap());
    }
    let later = lease + Duration::seconds(1);
    let c = s
        .claim_dispatch("c", later, later + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(c.len(), 5, "every expired lease is taken over");
    let started: Vec<_> = c
        .iter()
        .filter(|x| x.attempt_started_at.is_some())
        .collect();
    assert_eq!(started.len(), 2, "only b's attempts had started");
    assert!(started.iter().all(|x| x.attempts == 1
        && x.pipeline_sent.as_deref() == Some("0123456789abcdef0123456789abcdef")));
    // The old claim can no longer start, renew or record anything.
    let old = &b[0].key;
    let id = old.job_id;
    assert!(!s.begin_attempt(old, later, None).await.unwrap());
    assert!(!s.renew_lease(old, later).await.unwrap());
    assert!(!s.confirm_absent(old).await.unwrap());
    assert!(!s.complete_dispatch(old, &accepted("m1")).await.unwrap());
    assert!(!s.retry_dispatch(old, &err("X"), now, false).await.unwrap());
    assert!(!s.fail_dispatch(old, &err("X")).await.unwrap());
    assert_eq!(
        s.get_job(None, id).await.unwrap().unwrap().state,
        JobState::Queued
    );
    let new = c.iter().find(|x| x.job.id == id).unwrap().key;
    assert!(s
        .renew_lease(&new, later + Duration::seconds(60))
        .await
        .unwrap());
    assert!(s.complete_dispatch(&new, &accepted("m1")).await.unwrap());
    let job = s.get_job(None, id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Submitted);
    assert_eq!(job.attempts, 2);
    assert_eq!(job.mps.job_id.as_deref(), Some("m1"));
    assert_eq!(job.mps.request_id.as_deref(), Some("REQ-1"));
    assert!(
        job.submitted_at.is_some_and(|t| t >= now),
        "submitted_at is recorded"
    );
    assert!(
        !s.complete_dispatch(&new, &accepted("m1")).await.unwrap(),
        "only once"
    );
    assert!(
        !s.adopt_submitted(id, &accepted("m2")).await.unwrap(),
        "an answer arriving under a lost claim never replaces a recorded MPS job"
    );
    assert_eq!(s.release_dispatch("c").await.unwrap(), 4);
}

async fn a_lost_claim_still_records_what_mps_answered(s: DynStore) {
    let now = store::now();
    let j = created(s.create_job(new_job("t", now), None).await.unwrap());
    let lease = now + Duration::seconds(30);
    let first = s
        .claim_dispatch("a", now, lease, 1)
        .await
        .unwrap()
        .remove(0);
    assert!(s.begin_attempt(&first.key, lease, None).await.unwrap());
    let later = lease + Duration::seconds(1);
    let second = s
        .claim_dispatch("b", later, later + Duration::seconds(30), 1)
        .await
        .unwrap()
        .remove(0);
    assert_ne!(first.key, second.key);
    // The first replica's MPS call answers after it lost the claim: its complete is refused,
    // but the answer is adopted since no MPS job is recorded yet...
    assert!(!s
        .complete_dispatch(&first.key, &accepted("m1"))
        .await
        .unwrap());
    assert!(s.adopt_submitted(j.id, &accepted("m1")).await.unwrap());
    // ...and the second claimer can no longer start an attempt of its own.
    assert!(!s
        .begin_attempt(&second.key, later + Duration::seconds(30), None)
        .await
        .unwrap());
    let job = s.get_job(None, j.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Submitted);
    assert_eq!(job.mps.job_id.as_deref(), Some("m1"));
    assert_eq!(
        s.release_dispatch("b").await.unwrap(),
        0,
        "the adoption freed the lease"
    );
}

async fn retry_keeps_or_clears_the_unknown_outcome(s: DynStore) {
    let now = store::now();
    let j = created(s.create_job(new_job("t", now), None).await.unwrap());
    let lease = now + Duration::seconds(30);
    let c = s.claim_dispatch("w", now, lease, 1).await.unwrap();
    assert!(s.begin_attempt(&c[0].key, lease, None).await.unwrap());
    // A definite failure (throttled): the next attempt need not reconcile.
    let due = now + Duration::seconds(2);
    assert!(s
        .retry_dispatch(&c[0].key, &err("Throttling.User"), due, false)
        .await
        .unwrap());
    assert!(
        s.claim_dispatch("w", now, lease, 1)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    let c = s.claim_dispatch("w", due, lease, 1).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].attempts, 1);
    assert_eq!(c[0].attempt_started_at, None);
    assert_eq!(
        c[0].job.last_error.as_ref().unwrap().code,
        "Throttling.User"
    );
    // An unknown outcome: the next claimer is told when the attempt started, until a lookup
    // confirms it created nothing.
    assert!(s.begin_attempt(&c[0].key, lease, None).await.unwrap());
    assert!(s
        .retry_dispatch(&c[0].key, &err("Transport.OutcomeUnknown"), due, true)
        .await
        .unwrap());
    let c = s.claim_dispatch("w2", due, lease, 1).await.unwrap();
    let started = c[0].attempt_started_at.expect("the mark stays");
    assert!(
        started >= now - Duration::seconds(5),
        "marked by the database clock"
    );
    assert!(s
        .defer_lookup(&c[0].key, &err("Snapgate.LookupTooEarly"), due)
        .await
        .unwrap());
    let c = s.claim_dispatch("w2", due, lease, 1).await.unwrap();
    assert_eq!(c[0].attempt_started_at, Some(started), "still unsettled");
    assert_eq!(c[0].attempts, 2, "a lookup is not counted as an attempt");
    assert!(s.confirm_absent(&c[0].key).await.unwrap());
    assert!(s
        .fail_dispatch(&c[0].key, &err("InvalidParameter"))
        .await
        .unwrap());
    let job = s.get_job(None, j.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.attempts, 3);
    assert_eq!(job.mps.code.as_deref(), Some("InvalidParameter"));
    assert!(s
        .claim_dispatch(
            "w",
            due + Duration::hours(1),
            lease + Duration::hours(1),
            10
        )
        .await
        .unwrap()
        .is_empty());
}

async fn in_flight_jobs_end_by_deadline_or_not_found(s: DynStore) {
    let now = store::now();
    let j = created(s.create_job(new_job("t", now), None).await.unwrap());
    let c = s
        .claim_dispatch("w", now, now + Duration::seconds(30), 1)
        .await
        .unwrap();
    assert!(s
        .complete_dispatch(&c[0].key, &accepted("m"))
        .await
        .unwrap());
    let first = s.poll_not_found(j.id, now).await.unwrap();
    let again = s.poll_not_found(j.id, now).await.unwrap();
    assert_eq!(first, again, "the clock starts at the first miss");
    assert_eq!(s.count_active_jobs("t").await.unwrap(), 1);
    assert!(s
        .fail_in_flight(j.id, &err("mps_job_not_found"))
        .await
        .unwrap());
    assert!(
        !s.fail_in_flight(j.id, &err("mps_job_not_found"))
            .await
            .unwrap(),
        "once"
    );
    let job = s.get_job(None, j.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.last_error.unwrap().code, "mps_job_not_found");
    assert_eq!(
        s.count_active_jobs("t").await.unwrap(),
        0,
        "the quota is freed"
    );
    assert_eq!(s.next_due().await.unwrap(), None, "no more polls");
    let t = s.clock().await.unwrap();
    assert!((t - store::now()).num_seconds().abs() < 5);
}

async fn polls_are_claimed_recorded_and_never_regress(s: DynStore) {
    let now = store::now();
    let j = created(s.create_job(new_job("t", now), None).await.unwrap());
    let c = s
        .claim_dispatch("w", now, now + Duration::seconds(30), 1)
        .await
        .unwrap();
    let mut up = accepted("mps-1");
    up.next_poll_at = Some(now + Duration::seconds(1));
    s.complete_dispatch(&c[0].key, &up).await.unwrap();
    assert!(s
        .claim_polls(now, now + Duration::seconds(30), 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.next_due().await.unwrap(),
        Some(now + Duration::seconds(1))
    );
    let t1 = now + Duration::seconds(1);
    let polled = s
        .claim_polls(t1, t1 + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(polled.len(), 1);
    assert!(
        s.claim_polls(t1, t1 + Duration::seconds(30), 10)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    s.record_poll(
        j.id,
        &MpsUpdate {
            state: JobState::Succeeded,
            mps: MpsStatus {
                job_id: Some("mps-1".into()),
                state: Some("Success".into()),
                request_id: Some("REQ-2".into()),
                count: Some(3),
                tile_count: Some(1),
                response: Some(json!({"Id": "mps-1", "State": "Success", "Count": "3"})),
                ..MpsStatus::default()
            },
            next_poll_at: None,
        },
    )
    .await
    .unwrap();
    // A late, stale answer does not move a final job back.
    s.record_poll(j.id, &accepted("mps-1")).await.unwrap();
    let job = s.get_job(None, j.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.mps.count, Some(3));
    assert_eq!(job.mps.tile_count, Some(1));
    assert_eq!(s.next_due().await.unwrap(), None);
    s.append_mps_responses(&[
        MpsResponseRecord {
            job_id: j.id,
            action: "SubmitSnapshotJob".into(),
            request_id: Some("REQ-1".into()),
            code: None,
            body: json!({"a": 1}),
            received_at: now,
        },
        MpsResponseRecord {
            job_id: j.id,
            action: "QuerySnapshotJobList".into(),
            request_id: Some("REQ-2".into()),
            code: None,
            body: json!({"b": 2}),
            received_at: t1,
        },
    ])
    .await
    .unwrap();
    let history = s.mps_responses(j.id).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].action, "QuerySnapshotJobList");
    assert_eq!(history[1].body, json!({"b": 2}));
    let counts = s.job_counts().await.unwrap();
    assert_eq!(
        counts.by_state,
        vec![("t".to_string(), "succeeded".to_string(), 1)]
    );
}

async fn postponed_polls_wait(s: DynStore) {
    let now = store::now();
    let j = created(s.create_job(new_job("t", now), None).await.unwrap());
    let c = s
        .claim_dispatch("w", now, now + Duration::seconds(30), 1)
        .await
        .unwrap();
    s.complete_dispatch(&c[0].key, &accepted("m"))
        .await
        .unwrap();
    s.postpone_poll(j.id, now + Duration::seconds(60))
        .await
        .unwrap();
    assert!(s
        .claim_polls(now + Duration::seconds(59), now + Duration::seconds(90), 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.claim_polls(now + Duration::seconds(60), now + Duration::seconds(90), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let counts = s.job_counts().await.unwrap();
    assert_eq!(counts.oldest_in_flight, Some(now));
    assert_eq!(counts.oldest_queued, None);
}

async fn concurrent_claimers_never_share_a_job(s: DynStore) {
    let now = store::now();
    for _ in 0..60 {
        s.create_job(new_job("t", now), None).await.unwrap();
    }
    let mut tasks = Vec::new();
    for w in 0..6 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let c = s
                    .claim_dispatch(&format!("w{w}"), now, now + Duration::seconds(30), 4)
                    .await
                    .unwrap();
                if c.is_empty() {
                    break;
                }
                mine.extend(c.into_iter().map(|c| c.job.id));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(n, 60);
    assert_eq!(all.len(), 60);
}

async fn claims_are_fair_across_teams(s: DynStore) {
    let base = store::now() - Duration::minutes(5);
    for i in 0..40 {
        s.create_job(new_job("big", base + Duration::milliseconds(i)), None)
            .await
            .unwrap();
    }
    let small = created(
        s.create_job(new_job("small", base + Duration::seconds(10)), None)
            .await
            .unwrap(),
    );
    let now = store::now();
    let batch = s
        .claim_dispatch("w", now, now + Duration::seconds(30), 8)
        .await
        .unwrap();
    assert_eq!(batch.len(), 8);
    assert!(
        batch.iter().any(|c| c.job.id == small.id),
        "a small team's job is not held behind a big team's backlog"
    );
    let big: Vec<_> = batch.iter().filter(|c| c.job.team == "big").collect();
    assert_eq!(big.len(), 7);
    assert!(
        big.iter()
            .all(|c| c.job.created_at < base + Duration::milliseconds(7)),
        "within a team, its oldest jobs first"
    );
}

async fn teams_are_created_once_and_listed_by_name(s: DynStore) {
    let now = snapgate::store::now();
    assert!(s.create_team("zeta", now).await.unwrap());
    assert!(s.create_team("alpha", now).await.unwrap());
    assert!(
        !s.create_team("alpha", now).await.unwrap(),
        "already exists"
    );
    let names: Vec<String> = s
        .list_teams()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    // `default` comes with the migrations.
    assert_eq!(names, ["alpha", "default", "zeta"]);
    assert!(s.team_exists("zeta").await.unwrap());
}

/// A revocation counts as a key change for caches of verified keys (only a real one: revoking
/// twice changes nothing the second time).
async fn revocations_count_as_key_changes(s: DynStore) {
    let now = snapgate::store::now();
    s.create_team("alpha", now).await.unwrap();
    let master =
        snapgate::auth::MasterKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
            .unwrap();
    let k = snapgate::auth::issue_key(&s, &master, "alpha", false)
        .await
        .unwrap();
    let changes = s.key_changes();
    // On Postgres the listener bumps once when it connects: let it settle.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = changes.current();
    assert!(s.revoke_api_key(&k.access_key_id, now).await.unwrap());
    assert!(changes.current() > before, "a revocation is a change");
    let after = changes.current();
    assert!(!s.revoke_api_key(&k.access_key_id, now).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // Postgres: the revocation's own NOTIFY may arrive after `after` was read.
    assert!(
        changes.current() <= after + 1,
        "revoking again is no change"
    );
}

macro_rules! conformance {
    ($backend:ident, $make:path) => {
        mod $backend {
            use super::*;
            conformance!(@tests $make;
                create_get_roundtrip,
                list_newest_first_with_filters_and_cursor,
                idempotency_keys_scope_replay_and_expire,
                claims_are_exclusive_and_leases_expire,
                retry_keeps_or_clears_the_unknown_outcome,
                polls_are_claimed_recorded_and_never_regress,
                postponed_polls_wait,
                a_lost_claim_still_records_what_mps_answered,
                in_flight_jobs_end_by_deadline_or_not_found,
                concurrent_claimers_never_share_a_job,
                teams_are_created_once_and_listed_by_name,
                claims_are_fair_across_teams,
                revocations_count_as_key_changes
            );
        }
    };
    (@tests $make:path; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = $make().await;
                super::$name(store).await;
            }
        )*
    };
}

conformance!(sqlite, common::sqlite_store);
conformance!(postgres, common::pg_store);
