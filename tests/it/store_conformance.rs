//! One conformance suite, run unchanged against every store backend (SQLite and Postgres).
//! It is what keeps the two implementations from drifting apart.

use crate::common;

use chrono::Duration;
use serde_json::{json, Value};
use snapgate::domain::{validate_request, JobId, JobState};
use snapgate::domain::{JobError, MpsStatus, NewJob};
use snapgate::store::{
    self, CreateOutcome, DeliveryAttempt, DeliveryOutcome, DynStore, JobFilter, JobStore,
    MpsResponseRecord, MpsUpdate, NewIdempotencyKey, NewWebhookEndpoint, NewWebhookEvent,
    WebhookEndpointUpdate,
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
        preset: None,
    }
}

fn created(o: CreateOutcome) -> snapgate::domain::Job {
    match o {
        CreateOutcome::Created(j) => *j,
        other => panic!("unexpected {other:?}"),
    }
}

/// The in-flight quota is the store's, decided with the insert (group-committed or keyed): a
/// team at its limit gets nothing written; a job that ends gives its place back, once; other
/// teams are apart; a key already taken wins over the quota.
async fn the_in_flight_quota_is_decided_with_the_insert(s: DynStore) {
    let now = store::now();
    let within = |team: &'static str, key: Option<&'static str>| {
        let s = s.clone();
        async move {
            let key = key.map(|k| NewIdempotencyKey {
                key: k.into(),
                fingerprint: "fp".into(),
                expires_at: now + Duration::hours(1),
            });
            s.create_job_within(new_job(team, now), key, 2)
                .await
                .unwrap()
        }
    };
    let first = created(within("q", None).await);
    created(within("q", Some("k1")).await);
    assert!(matches!(
        within("q", None).await,
        CreateOutcome::QuotaExceeded
    ));
    assert!(matches!(
        within("q", Some("k2")).await,
        CreateOutcome::QuotaExceeded
    ));
    assert!(
        matches!(within("q", Some("k1")).await, CreateOutcome::KeyExists(_)),
        "a replay is not refused for the quota"
    );
    created(within("other", None).await);
    assert!(s
        .cancel_job(Some("q"), first.id, &err("Cancelled"))
        .await
        .unwrap());
    assert!(!s
        .cancel_job(Some("q"), first.id, &err("Cancelled"))
        .await
        .unwrap());
    created(within("q", None).await);
    assert!(matches!(
        within("q", None).await,
        CreateOutcome::QuotaExceeded
    ));
    assert_eq!(s.count_active_jobs("q").await.unwrap(), 2);
    assert!(matches!(
        s.create_job_within(new_job("zero", now), None, 0)
            .await
            .unwrap(),
        CreateOutcome::QuotaExceeded
    ));
}

fn accepted(mps_id: &str) -> MpsUpdate {
    MpsUpdate {
        state: JobState::Submitted,
        mps: MpsStatus {
            job_id: Some(mps_id.into()),
            state: Some("Submitted".into()),
            request_id: Some("REQ-1".into()),
            response: Some(json!({"Id": mps_id, "State": "Submitted"}).into()),
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

/// A job of `team` created under the idempotency key `k1` with fingerprint `fp`, the key
/// expiring at `expires_at`.
async fn create_keyed(
    s: &DynStore,
    team: &str,
    now: chrono::DateTime<chrono::Utc>,
    fp: &str,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> CreateOutcome {
    let key = NewIdempotencyKey {
        key: "k1".into(),
        fingerprint: fp.into(),
        expires_at,
    };
    s.create_job(new_job(team, now), Some(key)).await.unwrap()
}

async fn idempotency_keys_scope_replay_and_expire(s: DynStore) {
    let now = store::now();
    let first = created(create_keyed(&s, "a", now, "fp", now + Duration::hours(24)).await);
    match create_keyed(&s, "a", now, "fp2", now + Duration::hours(24)).await {
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
    created(create_keyed(&s, "b", now, "fp", now + Duration::hours(24)).await);
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
    created(create_keyed(&s, "c", now, "fp", now - Duration::seconds(1)).await);
    created(create_keyed(&s, "c", now, "fp", now + Duration::hours(1)).await);
    // A purge takes only keys past their expiry: two hours on, team c's key (1 h) goes, the
    // 24-hour keys of teams a and b stay and still replay.
    assert_eq!(
        s.purge_idempotency_keys(now + Duration::hours(2))
            .await
            .unwrap(),
        1
    );
    match create_keyed(&s, "a", now, "fp", now + Duration::hours(24)).await {
        CreateOutcome::KeyExists(r) => assert_eq!(r.job_id, first.id),
        other => panic!("a's unexpired key must survive the purge: {other:?}"),
    }
    assert_eq!(
        s.purge_idempotency_keys(now + Duration::hours(25))
            .await
            .unwrap(),
        2
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

/// A cancel wins only over a job MPS cannot have seen, in one statement against the claim.
async fn cancel_only_takes_jobs_mps_cannot_have_seen(s: DynStore) {
    let now = store::now();
    let lease = now + Duration::seconds(30);
    s.create_team("t", now).await.unwrap();
    s.create_webhook_endpoint(&endpoint("t", &[store::JOB_SUBMITTED, store::JOB_FAILED]))
        .await
        .unwrap();
    let fresh = created(s.create_job(new_job("t", now), None).await.unwrap());
    assert!(
        !s.cancel_job(Some("u"), fresh.id, &err("Cancelled"))
            .await
            .unwrap(),
        "another team's job is not touched"
    );
    assert_eq!(s.count_active_jobs("t").await.unwrap(), 1);
    assert!(s
        .cancel_job(Some("t"), fresh.id, &err("Cancelled"))
        .await
        .unwrap());
    let job = s.get_job(None, fresh.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.last_error.as_ref().unwrap().code, "Cancelled");
    assert_eq!(job.mps.code, None, "no MPS code: MPS never saw it");
    assert_eq!(s.count_active_jobs("t").await.unwrap(), 0, "quota released");
    let events = s.job_webhook_events(fresh.id).await.unwrap();
    assert_eq!(
        types_of(&events),
        [store::JOB_FAILED],
        "failed, never submitted"
    );
    assert!(
        !s.cancel_job(None, fresh.id, &err("Cancelled"))
            .await
            .unwrap(),
        "once"
    );
    assert!(s
        .claim_dispatch("w", now, lease, 10)
        .await
        .unwrap()
        .is_empty());

    // Claimed (a worker may be sending): refused. An attempt of unknown outcome: refused even
    // after the claim ended. A definite refusal by MPS: cancellable again.
    let sent = created(s.create_job(new_job("t", now), None).await.unwrap());
    let c = s.claim_dispatch("w", now, lease, 1).await.unwrap();
    assert_eq!(c[0].job.id, sent.id);
    assert!(!s
        .cancel_job(None, sent.id, &err("Cancelled"))
        .await
        .unwrap());
    assert!(s.begin_attempt(&c[0].key, lease, None).await.unwrap());
    assert!(s
        .retry_dispatch(&c[0].key, &err("Transport.OutcomeUnknown"), lease, true)
        .await
        .unwrap());
    assert!(!s
        .cancel_job(None, sent.id, &err("Cancelled"))
        .await
        .unwrap());
    let c = s
        .claim_dispatch("w", lease, lease + Duration::seconds(30), 1)
        .await
        .unwrap();
    assert!(s.confirm_absent(&c[0].key).await.unwrap());
    assert!(s
        .retry_dispatch(&c[0].key, &err("Throttling.User"), lease, false)
        .await
        .unwrap());
    assert!(s
        .cancel_job(None, sent.id, &err("Cancelled"))
        .await
        .unwrap());
    let accepted_job = created(s.create_job(new_job("t", now), None).await.unwrap());
    let c = s.claim_dispatch("w", now, lease, 1).await.unwrap();
    assert!(s
        .complete_dispatch(&c[0].key, &accepted("m-cancel"))
        .await
        .unwrap());
    assert!(!s
        .cancel_job(None, accepted_job.id, &err("Cancelled"))
        .await
        .unwrap());
    assert_eq!(
        s.get_job(None, accepted_job.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        JobState::Submitted
    );

    // Racing a claimer: every job is claimed or cancelled, never both, never neither.
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(created(s.create_job(new_job("r", now), None).await.unwrap()).id);
    }
    let claimer = {
        let s = s.clone();
        tokio::spawn(async move { s.claim_dispatch("w", now, lease, 20).await.unwrap() })
    };
    let mut cancels = Vec::new();
    for id in ids.clone() {
        let s = s.clone();
        cancels.push(tokio::spawn(async move {
            (
                id,
                s.cancel_job(Some("r"), id, &err("Cancelled"))
                    .await
                    .unwrap(),
            )
        }));
    }
    let claimed: Vec<JobId> = claimer.await.unwrap().iter().map(|c| c.job.id).collect();
    for c in cancels {
        let (id, cancelled) = c.await.unwrap();
        assert_ne!(
            cancelled,
            claimed.contains(&id),
            "job {id:?}: claimed xor cancelled"
        );
    }
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
                response: Some(json!({"Id": "mps-1", "State": "Success", "Count": "3"}).into()),
                ..MpsStatus::default()
            },
            next_poll_at: None,
        },
    )
    .await
    .unwrap();
    // A late, stale answer does not move a final job back.
    s.record_poll(j.id, &accepted("mps-1")).await.unwrap();
    // An MNS message names the job by its MPS id.
    let by_mps = s.job_by_mps_job_id("mps-1").await.unwrap().unwrap();
    assert_eq!(by_mps.id, j.id);
    assert!(s.job_by_mps_job_id("mps-2").await.unwrap().is_none());
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

fn endpoint(team: &str, types: &[&str]) -> NewWebhookEndpoint {
    NewWebhookEndpoint {
        id: uuid::Uuid::now_v7(),
        team: team.into(),
        url: "https://hooks.example.com/x".into(),
        description: Some("d".into()),
        event_types: types.iter().map(|t| t.to_string()).collect(),
        secret_ciphertext: "ct-1".into(),
        created_at: store::now(),
    }
}

fn types_of(events: &[store::WebhookEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

async fn webhook_events_commit_with_the_job_transitions(s: DynStore) {
    let now = store::now();
    s.create_team("t", now).await.unwrap();
    s.create_team("other", now).await.unwrap();
    let all = s
        .create_webhook_endpoint(&endpoint(
            "t",
            &[
                store::JOB_SUBMITTED,
                store::JOB_SUCCEEDED,
                store::JOB_FAILED,
            ],
        ))
        .await
        .unwrap();
    assert_eq!(all.event_types.len(), 3);
    assert_eq!(all.disabled_at, None);
    let failed_only = s
        .create_webhook_endpoint(&endpoint("t", &[store::JOB_FAILED]))
        .await
        .unwrap();
    let off = s
        .create_webhook_endpoint(&endpoint("t", &[store::JOB_SUCCEEDED]))
        .await
        .unwrap();
    let disable = WebhookEndpointUpdate {
        enabled: Some(false),
        ..Default::default()
    };
    let off = s
        .update_webhook_endpoint("t", off.id, &disable)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(off.disabled_reason.as_deref(), Some("manual"));
    s.create_webhook_endpoint(&endpoint("other", &[store::JOB_SUCCEEDED]))
        .await
        .unwrap();

    // queued -> submitted (dispatch) -> succeeded (poll): two events, each delivered only to
    // the enabled endpoints of the job's team that subscribe to it.
    let j = created(s.create_job(new_job("t", now), None).await.unwrap());
    assert!(s.job_webhook_events(j.id).await.unwrap().is_empty());
    let c = s
        .claim_dispatch("w", now, now + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert!(s
        .complete_dispatch(&c[0].key, &accepted("m-1"))
        .await
        .unwrap());
    let events = s.job_webhook_events(j.id).await.unwrap();
    assert_eq!(types_of(&events), [store::JOB_SUBMITTED]);
    assert_eq!(events[0].team, "t");
    assert!(events[0].id.starts_with("evt_"));
    // The data is the job as the transition left it.
    let as_job: snapgate::domain::Job = serde_json::from_value(events[0].data.clone()).unwrap();
    assert_eq!(as_job, s.get_job(None, j.id).await.unwrap().unwrap());
    let done = MpsUpdate {
        state: JobState::Succeeded,
        mps: MpsStatus {
            job_id: Some("m-1".into()),
            state: Some("Success".into()),
            ..MpsStatus::default()
        },
        next_poll_at: None,
    };
    s.record_poll(j.id, &done).await.unwrap();
    s.record_poll(j.id, &done).await.unwrap();
    let events = s.job_webhook_events(j.id).await.unwrap();
    assert_eq!(
        types_of(&events),
        [store::JOB_SUBMITTED, store::JOB_SUCCEEDED],
        "a final job records nothing more"
    );
    assert_eq!(s.list_deliveries("t", all.id, 50).await.unwrap().len(), 2);
    assert!(s
        .list_deliveries("t", failed_only.id, 50)
        .await
        .unwrap()
        .is_empty());
    assert!(s.list_deliveries("t", off.id, 50).await.unwrap().is_empty());
    assert!(
        s.list_deliveries("other", all.id, 50)
            .await
            .unwrap()
            .is_empty(),
        "another team sees none"
    );

    // A job that never reached MPS fails without `submitted`.
    let k = created(s.create_job(new_job("t", now), None).await.unwrap());
    let c = s
        .claim_dispatch("w", now, now + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert!(s.fail_dispatch(&c[0].key, &err("Gave.Up")).await.unwrap());
    assert_eq!(
        types_of(&s.job_webhook_events(k.id).await.unwrap()),
        [store::JOB_FAILED]
    );
    assert_eq!(
        s.list_deliveries("t", failed_only.id, 50)
            .await
            .unwrap()
            .len(),
        1
    );
    // An in-flight job ended by its deadline: `failed`; a lookup that adopts a job: `submitted`.
    let l = created(s.create_job(new_job("t", now), None).await.unwrap());
    assert!(s.adopt_submitted(l.id, &accepted("m-3")).await.unwrap());
    assert!(s
        .fail_in_flight(l.id, &err("deadline_exceeded"))
        .await
        .unwrap());
    assert!(!s
        .fail_in_flight(l.id, &err("deadline_exceeded"))
        .await
        .unwrap());
    assert_eq!(
        types_of(&s.job_webhook_events(l.id).await.unwrap()),
        [store::JOB_SUBMITTED, store::JOB_FAILED]
    );
    // Retries record nothing.
    let m = created(s.create_job(new_job("t", now), None).await.unwrap());
    let c = s
        .claim_dispatch("w", now, now + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert!(s
        .retry_dispatch(&c[0].key, &err("Throttling.User"), now, false)
        .await
        .unwrap());
    assert!(s.job_webhook_events(m.id).await.unwrap().is_empty());
    // Events not caused by a job: recorded in their own transaction.
    let n = s
        .record_webhook_event(&NewWebhookEvent::new(
            "t",
            store::UPLOAD_EXPIRED,
            None,
            json!({"upload": "u1"}),
        ))
        .await
        .unwrap();
    assert_eq!(n, 0, "no endpoint subscribes to upload.expired");
}

async fn deliveries_are_leased_retried_recorded_and_disable_a_failing_endpoint(s: DynStore) {
    s.create_team("t", store::now()).await.unwrap();
    let e = s
        .create_webhook_endpoint(&endpoint("t", &[store::UPLOAD_EXPIRED]))
        .await
        .unwrap();
    let event = NewWebhookEvent::new("t", store::UPLOAD_EXPIRED, None, json!({"upload": "u1"}));
    assert_eq!(s.record_webhook_event(&event).await.unwrap(), 1);
    // The delivery is due at the event's time (the process clock, microseconds); SQLite's own
    // clock reads milliseconds, so within the same millisecond it can be a little earlier (a
    // real worker claims it on its next round): claim at the later of the two.
    let now = s.clock().await.unwrap().max(event.created_at);
    assert_eq!(
        s.get_webhook_event("t", &event.id)
            .await
            .unwrap()
            .unwrap()
            .data,
        json!({"upload": "u1"})
    );
    assert!(s
        .get_webhook_event("other", &event.id)
        .await
        .unwrap()
        .is_none());
    let lease = now + Duration::seconds(30);
    let a = s.claim_deliveries("a", now, lease, 10, 2).await.unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].attempts, 0);
    assert_eq!(a[0].event.id, event.id);
    assert_eq!(a[0].endpoint.id, e.id);
    assert!(
        s.claim_deliveries("b", now, lease, 10, 2)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    let attempt = |code: Option<u16>| DeliveryAttempt {
        attempted_at: now,
        status_code: code,
        error: code.is_none().then(|| "timed out".to_string()),
        latency_ms: 12,
        response_snippet: code.map(|c| format!("answer {c}")),
    };
    let retry_at = now + Duration::seconds(5);
    let far = now - Duration::days(1);
    assert!(s
        .finish_delivery(
            &a[0],
            &attempt(Some(500)),
            DeliveryOutcome::Retry(retry_at),
            far
        )
        .await
        .unwrap());
    assert!(
        !s.finish_delivery(&a[0], &attempt(Some(500)), DeliveryOutcome::Failed, far)
            .await
            .unwrap(),
        "a finished claim records nothing more"
    );
    let e1 = s.get_webhook_endpoint("t", e.id).await.unwrap().unwrap();
    assert_eq!(e1.failing_since, Some(now));
    assert_eq!(e1.disabled_at, None, "not failing long enough");
    assert!(
        s.claim_deliveries("b", now, lease, 10, 2)
            .await
            .unwrap()
            .is_empty(),
        "not yet due"
    );
    let b = s
        .claim_deliveries("b", retry_at, retry_at + Duration::seconds(30), 10, 2)
        .await
        .unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].attempts, 1);
    // b crashes; after its lease, c takes over and b's claim is dead.
    let later = retry_at + Duration::seconds(31);
    let c = s
        .claim_deliveries("c", later, later + Duration::seconds(30), 10, 2)
        .await
        .unwrap();
    assert_eq!(c.len(), 1);
    assert!(!s
        .finish_delivery(&b[0], &attempt(Some(200)), DeliveryOutcome::Succeeded, far)
        .await
        .unwrap());
    // Failing since `now`, and the threshold is later: disabled.
    assert!(s
        .finish_delivery(&c[0], &attempt(None), DeliveryOutcome::Failed, later)
        .await
        .unwrap());
    let e2 = s.get_webhook_endpoint("t", e.id).await.unwrap().unwrap();
    assert_eq!(e2.disabled_reason.as_deref(), Some("failing"));
    assert!(e2.disabled_at.is_some());
    let ds = s.list_deliveries("t", e.id, 10).await.unwrap();
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0].state, "failed");
    assert_eq!(ds[0].event_type, store::UPLOAD_EXPIRED);
    let codes: Vec<Option<u16>> = ds[0].attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), None]);
    assert_eq!(ds[0].attempts[1].error.as_deref(), Some("timed out"));
    assert_eq!(
        ds[0].attempts[0].response_snippet.as_deref(),
        Some("answer 500")
    );
    // Disabled: a replay goes nowhere; enabled again (failures forgotten): a new delivery.
    assert_eq!(
        s.replay_webhook_event("t", &event.id).await.unwrap(),
        Some(vec![])
    );
    let enable = WebhookEndpointUpdate {
        enabled: Some(true),
        ..Default::default()
    };
    let e3 = s
        .update_webhook_endpoint("t", e.id, &enable)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((e3.disabled_at, e3.failing_since), (None, None));
    assert_eq!(
        s.replay_webhook_event("t", &event.id)
            .await
            .unwrap()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.replay_webhook_event("other", &event.id).await.unwrap(),
        None
    );
    let r = s
        .claim_deliveries("d", later, later + Duration::seconds(30), 10, 2)
        .await
        .unwrap();
    assert_eq!((r.len(), r[0].attempts), (1, 0));
    assert!(s
        .finish_delivery(&r[0], &attempt(Some(204)), DeliveryOutcome::Succeeded, far)
        .await
        .unwrap());
    assert_eq!(
        s.list_deliveries("t", e.id, 10).await.unwrap()[0].state,
        "succeeded"
    );
    // Rotation keeps the previous secret until the grace ends; leases are given back.
    let rotated = s
        .rotate_webhook_secret("t", e.id, "ct-2", later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.secret_ciphertext, "ct-2");
    assert_eq!(rotated.previous_secret_ciphertext.as_deref(), Some("ct-1"));
    assert_eq!(rotated.previous_secret_expires_at, Some(later));
    assert!(s
        .rotate_webhook_secret("other", e.id, "x", later)
        .await
        .unwrap()
        .is_none());
    assert_eq!(s.release_deliveries("d").await.unwrap(), 0);
    assert!(!s.delete_webhook_endpoint("other", e.id).await.unwrap());
    assert!(s.delete_webhook_endpoint("t", e.id).await.unwrap());
    assert!(s.list_webhook_endpoints("t").await.unwrap().is_empty());
}

async fn presets_number_versions_and_find_a_body_again(s: DynStore) {
    let now = store::now();
    let a = json!({"output": {"location": "oss-cn-shanghai", "bucket": "m", "object": "a.jpg"}});
    let b = json!({"output": {"location": "oss-cn-shanghai", "bucket": "m", "object": "b.jpg"}});
    let (p1, new1) = s.create_preset("t", "thumbs", &a, "fa", now).await.unwrap();
    assert_eq!((p1.version, new1), (1, true));
    let (p2, new2) = s.create_preset("t", "thumbs", &b, "fb", now).await.unwrap();
    assert_eq!((p2.version, new2), (2, true));
    let (again, new3) = s.create_preset("t", "thumbs", &a, "fa", now).await.unwrap();
    assert_eq!(
        (again.version, new3),
        (1, false),
        "the same body is the version it already is"
    );
    // Another team numbers its own versions.
    let (other, _) = s.create_preset("u", "thumbs", &b, "fb", now).await.unwrap();
    assert_eq!(other.version, 1);
    assert_eq!(
        s.get_preset("t", "thumbs", None)
            .await
            .unwrap()
            .unwrap()
            .body,
        b
    );
    assert_eq!(
        s.get_preset("t", "thumbs", Some(1))
            .await
            .unwrap()
            .unwrap()
            .body,
        a
    );
    assert!(s
        .get_preset("t", "thumbs", Some(3))
        .await
        .unwrap()
        .is_none());
    assert!(s.get_preset("v", "thumbs", None).await.unwrap().is_none());
    let list: Vec<String> = s
        .list_presets("t")
        .await
        .unwrap()
        .iter()
        .map(|p| p.reference())
        .collect();
    assert_eq!(list, ["thumbs@1", "thumbs@2"]);
    // Racing creators of different bodies get different numbers.
    let bodies: Vec<Value> = (0..8).map(|i| json!({"n": i})).collect();
    let tasks: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let (s, body) = (s.clone(), body.clone());
            tokio::spawn(async move {
                s.create_preset("t", "race", &body, &format!("f{i}"), now)
                    .await
                    .unwrap()
                    .0
                    .version
            })
        })
        .collect();
    let mut versions: Vec<u32> = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort();
    assert_eq!(versions, (1..=8).collect::<Vec<u32>>());
}

fn upload(id: uuid::Uuid, now: chrono::DateTime<chrono::Utc>, ttl_s: i64) -> store::UploadRecord {
    store::UploadRecord {
        id,
        team: "t".into(),
        preset: "thumbs@1".into(),
        filename: "clip.mp4".into(),
        content_type: "video/mp4".into(),
        size_bytes: 1234,
        user_data: Some("u 1".into()),
        location: "oss-cn-shanghai".into(),
        bucket: "media".into(),
        object_key: format!("uploads/t/{id}/clip.mp4"),
        state: store::UploadState::Waiting,
        token_hash: format!("hash-{id}"),
        token_expires_at: now + chrono::Duration::hours(1),
        uploaded_via: None,
        job_id: None,
        created_at: now,
        expires_at: now + chrono::Duration::seconds(ttl_s),
        updated_at: now,
        multipart: None,
    }
}

/// A multipart intent keeps its OSS upload id and plan; once expired it is offered to the
/// sweeper until its OSS upload is closed, then never again; an uploaded one never is.
async fn multipart_intents_keep_their_plan_and_are_aborted_once_expired(s: DynStore) {
    let now = s.clock().await.unwrap();
    let (a, b, c) = (
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    let plan = |n: u32| store::MultipartPlan {
        oss_upload_id: format!("OSS-UPLOAD-{n}"),
        part_size: 8 << 20,
        part_count: n,
    };
    let mp = |id, ttl_s, n| store::UploadRecord {
        multipart: Some(plan(n)),
        ..upload(id, now, ttl_s)
    };
    let (ra, rb) = (mp(a, -1, 3), mp(b, -1, 10_000));
    s.create_upload(&ra).await.unwrap();
    s.create_upload(&rb).await.unwrap();
    s.create_upload(&upload(c, now, -1)).await.unwrap();
    assert_eq!(s.get_upload(a).await.unwrap().unwrap(), ra);
    assert_eq!(s.get_upload(c).await.unwrap().unwrap().multipart, None);
    assert!(
        s.multipart_to_abort(10).await.unwrap().is_empty(),
        "nothing to abort while waiting"
    );
    assert!(s.mark_uploaded(b, "complete", now).await.unwrap());
    let mut expired = s.expire_uploads(now).await.unwrap();
    expired.sort();
    let mut want = vec![a, c];
    want.sort();
    assert_eq!(expired, want);
    let due: Vec<_> = s.multipart_to_abort(10).await.unwrap();
    assert_eq!(
        due.iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![a],
        "only the expired multipart one"
    );
    assert_eq!(due[0].multipart, Some(plan(3)));
    s.close_multipart(a, now).await.unwrap();
    s.close_multipart(a, now).await.unwrap();
    assert!(s.multipart_to_abort(10).await.unwrap().is_empty());
}

async fn uploads_move_once_and_expire_in_one_place(s: DynStore) {
    let now = s.clock().await.unwrap();
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let rec = upload(a, now, 3600);
    s.create_upload(&rec).await.unwrap();
    s.create_upload(&upload(b, now, -1)).await.unwrap();
    assert_eq!(s.get_upload(a).await.unwrap().unwrap(), rec);
    assert_eq!(
        s.upload_by_token_hash(&rec.token_hash)
            .await
            .unwrap()
            .unwrap()
            .id,
        a
    );
    assert!(s.upload_by_token_hash("nope").await.unwrap().is_none());
    // Only the past-due waiting one expires, once, with its `upload.expired` event in the
    // same transaction.
    let team = rec.team.clone();
    let _ = s.create_team(&team, now).await;
    let hook = s
        .create_webhook_endpoint(&endpoint(&team, &[store::UPLOAD_EXPIRED]))
        .await
        .unwrap();
    assert_eq!(s.expire_uploads(now).await.unwrap(), vec![b]);
    assert!(s.expire_uploads(now).await.unwrap().is_empty());
    let sent = s.list_deliveries(&team, hook.id, 10).await.unwrap();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].event_type, store::UPLOAD_EXPIRED);
    let event = s
        .get_webhook_event(&team, &sent[0].event_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.data["upload_id"], json!(b));
    assert_eq!(event.data["state"], "expired");
    assert!(event.data.get("token_hash").is_none());
    assert_eq!(
        s.get_upload(b).await.unwrap().unwrap().state,
        store::UploadState::Expired
    );
    assert!(
        !s.mark_uploaded(b, "complete", now).await.unwrap(),
        "an expired intent stays expired"
    );
    // waiting -> uploaded happens once, whoever comes second is told so.
    assert!(s.mark_uploaded(a, "callback", now).await.unwrap());
    assert!(!s.mark_uploaded(a, "complete", now).await.unwrap());
    // Landed without its job (a process stopped in between): found once past the grace.
    assert!(
        s.landed_without_job(now, 10).await.unwrap().is_empty(),
        "not before the grace"
    );
    let later = now + chrono::Duration::seconds(10);
    let stale: Vec<uuid::Uuid> = s
        .landed_without_job(later, 10)
        .await
        .unwrap()
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(stale, vec![a]);
    let job = created(s.create_job(new_job("t", now), None).await.unwrap());
    s.set_upload_job(a, job.id, now).await.unwrap();
    assert!(
        s.landed_without_job(later, 10).await.unwrap().is_empty(),
        "it has its job now"
    );
    let got = s.get_upload(a).await.unwrap().unwrap();
    assert_eq!(
        (got.state, got.uploaded_via.as_deref(), got.job_id),
        (store::UploadState::Uploaded, Some("callback"), Some(job.id))
    );
    assert!(
        s.expire_uploads(now + chrono::Duration::hours(2))
            .await
            .unwrap()
            .is_empty(),
        "an uploaded intent never expires"
    );
}

/// A revocation counts as a key change for caches of verified keys (only a real one: revoking
/// twice changes nothing the second time).
async fn revocations_count_as_key_changes(s: DynStore) {
    let now = snapgate::store::now();
    s.create_team("alpha", now).await.unwrap();
    let master =
        snapgate::crypto::MasterKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
            .unwrap();
    let k = snapgate::services::keys::issue_key(&s, &master, "alpha", false)
        .await
        .unwrap();
    let changes = s.key_changes();
    // On Postgres a listener hears the revocations of every process: it bumps once when it
    // connects, and once for each announcement it hears.
    let listener = s.backend() == "postgres";
    let reach = |n: u64| {
        let changes = changes.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while changes.current() < n {
                assert!(
                    std::time::Instant::now() < deadline,
                    "key changes at {} after 10 s, {n} expected",
                    changes.current()
                );
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    };
    if listener {
        reach(1).await;
    }
    let before = changes.current();
    assert!(s.revoke_api_key(&k.access_key_id, now).await.unwrap());
    assert!(changes.current() > before, "a revocation is a change");
    if listener {
        // ... and its announcement, heard.
        reach(before + 2).await;
    }
    let after = changes.current();
    assert!(!s.revoke_api_key(&k.access_key_id, now).await.unwrap());
    assert_eq!(changes.current(), after, "revoking again is no change");
    // Whatever the repeat announced was sent before the revocation of a second key is: once
    // that one's announcement is heard, so would the repeat's have been.
    let k2 = snapgate::services::keys::issue_key(&s, &master, "alpha", false)
        .await
        .unwrap();
    assert!(s.revoke_api_key(&k2.access_key_id, now).await.unwrap());
    if listener {
        reach(after + 2).await;
    }
    assert!(
        changes.current() <= after + if listener { 2 } else { 1 },
        "revoking again is no change"
    );
}

/// `n` creates released at once (the group commit's load); with `duplicate`, the last reuses
/// the first's id.
async fn create_at_once(
    s: &DynStore,
    team: &str,
    n: usize,
    duplicate: bool,
) -> Vec<Result<snapgate::domain::Job, store::StoreError>> {
    let now = store::now();
    let mut jobs: Vec<NewJob> = (0..n).map(|_| new_job(team, now)).collect();
    if duplicate {
        jobs[n - 1].id = jobs[0].id;
    }
    jobs[1].preset = Some("thumbs@2".into());
    let gate = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = jobs
        .into_iter()
        .map(|j| {
            let (s, gate) = (s.clone(), gate.clone());
            tokio::spawn(async move {
                gate.wait().await;
                s.create_job(j, None).await.map(created)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Concurrent creates (recorded through the group commit): each answered with its own job as
/// stored, and a job that cannot be recorded (a duplicate id) fails alone.
async fn concurrent_creates_are_recorded_and_fail_alone(s: DynStore) {
    let results = create_at_once(&s, "g", 60, true).await;
    let failed: Vec<usize> = (0..60).filter(|i| results[*i].is_err()).collect();
    assert_eq!(
        failed.len(),
        1,
        "only one of the two jobs with one id fails"
    );
    assert!(failed[0] == 0 || failed[0] == 59, "{failed:?}");
    for job in results.iter().filter_map(|r| r.as_ref().ok()) {
        let got = s.get_job(Some("g"), job.id).await.unwrap().unwrap();
        assert_eq!(&got, job, "the answer is the job as stored");
    }
    assert_eq!(
        results[1].as_ref().unwrap().preset.as_deref(),
        Some("thumbs@2")
    );
    assert_eq!(s.count_active_jobs("g").await.unwrap(), 59);
}

/// On Postgres, concurrent creates share commits: rows written by one transaction share
/// `xmin`, so fewer transactions than jobs means jobs were committed together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_creates_share_commits() {
    let (s, db) = common::pg_store().await;
    let results = create_at_once(&s, "g", 60, false).await;
    assert!(results.iter().all(|r| r.is_ok()));
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let (transactions,): (i64,) =
        sqlx::query_as("SELECT count(DISTINCT xmin::text) FROM jobs WHERE team = 'g'")
            .fetch_one(&pool)
            .await
            .unwrap();
    println!("60 concurrent creates in {transactions} transactions");
    assert!(
        transactions < 30,
        "60 jobs in {transactions} transactions: commits were not shared"
    );
}

common::both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    create_get_roundtrip,
    the_in_flight_quota_is_decided_with_the_insert,
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
    webhook_events_commit_with_the_job_transitions,
    deliveries_are_leased_retried_recorded_and_disable_a_failing_endpoint,
    presets_number_versions_and_find_a_body_again,
    uploads_move_once_and_expire_in_one_place,
    multipart_intents_keep_their_plan_and_are_aborted_once_expired,
    revocations_count_as_key_changes,
    cancel_only_takes_jobs_mps_cannot_have_seen,
    concurrent_creates_are_recorded_and_fail_alone,
);

/// The group commit keeps its connections between batches (sqlx pings every connection given
/// back to its pool, a second round trip per batch). A kept connection, or an idle one in the
/// pool, that the server ended meanwhile (a restart, an idle timeout, an administrator) costs
/// no job: the batch goes again on another connection. Jobs are created one after another
/// (so the committer's connection is kept throughout) while every connection of the store is
/// terminated twice; every create must succeed, each job recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_creates_survive_their_connections_being_ended() {
    let (s, db) = common::pg_store().await;
    // One connection (a pool's idle ones would be terminated too).
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db)
        .await
        .unwrap();
    let mut ids = Vec::new();
    let mut ended = 0;
    for i in 0..60 {
        if i == 20 || i == 40 {
            // Every backend of the test database but this query's own.
            let pids: Vec<i32> = sqlx::query_scalar(
                "SELECT pid FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            sqlx::query("SELECT pg_terminate_backend(p) FROM unnest($1::int[]) p")
                .bind(&pids)
                .execute(&mut conn)
                .await
                .unwrap();
            ended += pids.len();
            // They are gone before the next create (termination is asynchronous; the store's
            // listener may connect again meanwhile, under a new pid).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let (left,): (i64,) =
                    sqlx::query_as("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
                        .bind(&pids)
                        .fetch_one(&mut conn)
                        .await
                        .unwrap();
                if left == 0 {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{left} backends live on"
                );
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        let job = s.create_job(new_job("e", store::now()), None).await;
        let job = created(job.unwrap_or_else(|e| panic!("create {i} failed: {e}")));
        ids.push(job.id);
    }
    assert!(ended >= 2, "the store's connections were ended ({ended})");
    let (recorded,): (i64,) = sqlx::query_as("SELECT count(*) FROM jobs WHERE team = 'e'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(recorded, 60, "each job recorded once");
    for id in ids {
        assert!(s.get_job(Some("e"), id).await.unwrap().is_some());
    }
}

/// A Postgres store whose pool holds `max_connections`, its pool, a job of `team` created
/// through it, and the database's guard.
async fn pg_store_of(
    max_connections: u32,
    team: &str,
) -> (
    store::SqlStore,
    sqlx::PgPool,
    snapgate::domain::Job,
    common::PgDb,
) {
    let (_, db) = common::pg_store().await;
    let s = store::PgStore::connect(&snapgate::config::DatabaseSettings {
        url: db.url.clone(),
        max_connections,
        ..Default::default()
    })
    .await
    .unwrap();
    let pool = s.pg_pool().unwrap().clone();
    let job = created(
        s.create_job(new_job(team, store::now()), None)
            .await
            .unwrap(),
    );
    (s, pool, job, db)
}

/// Single statements keep their connection warm for the next one (sqlx pings every connection
/// given back to its pool: a second round trip each), and kept connections go back to the pool
/// once unused, so transactions, listeners and a closing pool get them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_kept_warm_go_back_to_the_pool_once_unused() {
    let (s, pool, job, _db) = pg_store_of(8, "w").await;
    assert!(s.get_job(Some("w"), job.id).await.unwrap().is_some());
    // Read at once (no sleep): a statement that ran to its end keeps its connection before it
    // returns, and the reaper gives one back only after 250 ms unused.
    let kept = s.kept_warm();
    assert!(kept >= 1, "no connection kept warm after a statement");
    assert!(kept <= 2, "{kept} connections kept: a quarter of 8 at most");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pool.num_idle() < pool.size() as usize {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} connections still out of the pool 5 s after the last statement",
            pool.size() as usize - pool.num_idle(),
            pool.size()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Kept again, then closed: the close gives it back and ends.
    assert!(s.get_job(Some("w"), job.id).await.unwrap().is_some());
    assert!(pool.num_idle() < pool.size() as usize);
    tokio::time::timeout(std::time::Duration::from_secs(5), s.close())
        .await
        .expect("the pool closed with a connection kept warm");
}

/// While every connection of the pool is out, a statement's connection is not kept warm: callers
/// may be queued for the pool, and it goes to them in their turn (kept, it would let the next
/// caller pass the queue, and leave the waiters the tail of the latency).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_no_connection_is_kept_warm_while_the_pool_is_full() {
    let (s, pool, job, _db) = pg_store_of(4, "f").await;
    // Until the group commit's and the announcement's connections are back in the pool.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pool.num_idle() < pool.size() as usize {
        assert!(
            std::time::Instant::now() < deadline,
            "{} connections still out",
            pool.size() as usize - pool.num_idle()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut held = Vec::new();
    while held.len() < 3 {
        held.push(pool.acquire().await.unwrap());
    }
    // The fourth connection serves this read, the pool full meanwhile.
    assert!(s.get_job(Some("f"), job.id).await.unwrap().is_some());
    assert_eq!(pool.size(), 4);
    // Read at once (no sleep): keeping is decided before the statement returns.
    assert_eq!(
        s.kept_warm(),
        0,
        "the read's connection was kept warm while the pool was full"
    );
    // Given back through the pool's check (one round trip, asynchronous in sqlx): it comes back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pool.num_idle() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the read's connection did not go back to the pool: {} idle",
            pool.num_idle()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(held);
}
