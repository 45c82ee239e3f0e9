//! Archive before delete (issue 33): every row the purge deletes of an archived class is first
//! in an OSS object (JSON lines per class and day, written signed to the emulator's local store
//! and read back), once; a purge killed at random points and run again leaves no row deleted
//! without its line, no object missing and no line twice; 30 simulated days at a fixed rate
//! plateau every table while the archive holds exactly what was deleted.

use crate::common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::app::{EMU_KEY_ID, EMU_SECRET};
use serde_json::Value;
use snapgate::config::LifecycleSettings;
use snapgate::credentials::Credentials;
use snapgate::emulator::EmulatorHandle;
use snapgate::secret::Secret;
use snapgate::store::{
    DeliveryAttempt, DeliveryOutcome, DynStore, PurgeClass, UploadRecord, UploadState,
};
use snapgate::worker::archive::{ArchiveTarget, Archiver};
use snapgate::worker::purge::Purger;

const BUCKET: &str = "snapgate-archive";
const PREFIX: &str = "archive/";

/// The emulator's local store in a folder of its own, and an archiver writing into it.
struct LocalArchive {
    dir: tempfile::TempDir,
    emu: EmulatorHandle,
}

impl LocalArchive {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let oss = dir.path().to_path_buf();
        let emu = common::app::test_emulator(|c| c.oss_dir = Some(oss)).await;
        Self { dir, emu }
    }

    fn target(&self) -> ArchiveTarget {
        ArchiveTarget {
            bucket_url: format!("{}/{BUCKET}", self.emu.url()),
            region: "cn-shanghai".into(),
            prefix: PREFIX.into(),
            creds: Credentials::key(EMU_KEY_ID, Secret::new(EMU_SECRET)),
        }
    }

    fn archiver(&self) -> Arc<Archiver> {
        Arc::new(Archiver::new(self.target()).unwrap())
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join(BUCKET)
    }
}

/// Every archive object below `root` (key → its lines), read from the store's folder.
fn objects(root: &Path) -> BTreeMap<String, Vec<Value>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let key = p.strip_prefix(root).unwrap().display().to_string();
                let text = std::fs::read_to_string(&p).unwrap();
                let lines = text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                out.insert(key, lines);
            }
        }
    }
    out
}

/// The archive's ids per class; panics on a line twice (across every object).
fn archived_ids(root: &Path) -> HashMap<String, HashSet<String>> {
    let mut ids: HashMap<String, HashSet<String>> = HashMap::new();
    for (key, lines) in objects(root) {
        let class = key.split('/').nth(1).unwrap().to_string();
        for l in lines {
            assert_eq!(l["class"], class.as_str(), "{key}");
            let id = match &l["row"]["id"] {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            assert!(
                ids.entry(class.clone()).or_default().insert(id.clone()),
                "{class} {id} archived twice (again in {key})"
            );
        }
    }
    ids
}

/// The purge settings of the retention simulations (`lifecycle.rs` too): short retentions,
/// batches of `batch`, no pacing.
pub(crate) fn lifecycle(batch: u32) -> LifecycleSettings {
    let mut cfg = common::test_settings().lifecycle;
    cfg.jobs_retention_days = 5;
    cfg.webhooks_retention_days = 3;
    cfg.uploads_retention_days = 3;
    cfg.purge_batch_size = batch;
    cfg.purge_pause_ms = 0;
    cfg.purge_duty_percent = 100;
    cfg
}

pub(crate) async fn webhook_endpoint(store: &DynStore) {
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
}

/// Every due delivery attempted once now (answered 200: one attempt row each).
async fn deliver_all(store: &DynStore) {
    let now = snapgate::clock::now();
    let claims = store
        .claim_deliveries(
            "sim",
            now,
            now + chrono::Duration::seconds(60),
            10_000,
            10_000,
        )
        .await
        .unwrap();
    for claim in claims {
        let attempt = DeliveryAttempt {
            attempted_at: now,
            status_code: Some(200),
            error: None,
            latency_ms: 3,
            response_snippet: Some("ok".into()),
        };
        assert!(store
            .finish_delivery(&claim, &attempt, DeliveryOutcome::Succeeded, now)
            .await
            .unwrap());
    }
}

/// An upload intent made now, waiting, its policy valid for an hour.
fn upload_record(id: uuid::Uuid) -> UploadRecord {
    let now = snapgate::clock::now();
    UploadRecord {
        id,
        team: "default".into(),
        preset: "p@1".into(),
        filename: "clip.mp4".into(),
        content_type: "video/mp4".into(),
        size_bytes: 1000,
        user_data: None,
        location: "oss-cn-shanghai".into(),
        bucket: "media".into(),
        object_key: format!("uploads/default/{id}/clip.mp4"),
        state: UploadState::Waiting,
        token_hash: format!("{:x}", rand::random::<u128>()),
        token_expires_at: now + chrono::Duration::hours(1),
        uploaded_via: None,
        job_id: None,
        created_at: now,
        expires_at: now + chrono::Duration::hours(1),
        updated_at: now,
        multipart: None,
    }
}

/// An upload intent made now: `landed` (uploaded) or expired at once.
async fn upload(store: &DynStore, landed: bool) -> uuid::Uuid {
    let now = snapgate::clock::now();
    let id = uuid::Uuid::new_v4();
    let mut u = upload_record(id);
    if !landed {
        u.expires_at = now - chrono::Duration::seconds(1);
    }
    store.create_upload(&u).await.unwrap();
    if landed {
        assert!(store.mark_uploaded(id, "complete", now).await.unwrap());
    } else {
        assert!(store.expire_uploads(now).await.unwrap().contains(&id));
    }
    id
}

/// One simulated day at the shifted clock: `n` jobs ended with their MPS answers and webhook
/// events (`lifecycle::one_day`), each delivery attempted, two uploads ended.
async fn seed_day(store: &DynStore, day: i64, n: usize) {
    crate::lifecycle::one_day(store, day, n).await;
    deliver_all(store).await;
    upload(store, true).await;
    upload(store, false).await;
}

/// A purge with the archive on deletes each archived class's old rows only once they are in
/// an object: one line each, times and JSON columns the same on both databases, a job with its
/// MPS answers, an event with its deliveries and their attempts. Run again over rows already
/// written (a crash before the delete), it writes the same bytes under the same keys.
async fn a_purge_archives_every_row_it_deletes_once(store: DynStore) {
    snapgate::metrics::handle(); // the recorder, before anything is counted
    let local = LocalArchive::start().await;
    webhook_endpoint(&store).await;
    snapgate::clock::shifted(chrono::Duration::days(-10), async {
        seed_day(&store, -10, 9).await;
    })
    .await;
    // Late attempts on old events: newer than the cutoff, they go with their events.
    snapgate::clock::shifted(chrono::Duration::days(-10), async {
        crate::lifecycle::one_day(&store, -9, 1).await;
    })
    .await;
    deliver_all(&store).await;
    let before: HashMap<String, u64> = store.table_rows().await.unwrap().into_iter().collect();

    // The crash: objects written for the first batch of jobs, then the process gone.
    let cfg = lifecycle(4);
    let purger = Purger::new(store.clone(), cfg.clone()).with_archive(Some(local.archiver()));
    let c = purger.cutoffs(snapgate::clock::now());
    let first = store.archive_rows(PurgeClass::Jobs, &c, 4).await.unwrap();
    assert_eq!(first.len(), 4);
    let written = local
        .archiver()
        .write(PurgeClass::Jobs, &first)
        .await
        .unwrap();
    let before_rerun = objects(&local.root());

    let stop = tokio_util::sync::CancellationToken::new();
    let report = purger
        .run_once(snapgate::clock::now(), &stop)
        .await
        .unwrap()
        .unwrap();
    println!("report: {}", serde_json::to_string(&report).unwrap());
    let after = objects(&local.root());
    for o in &written {
        assert_eq!(
            after[&o.key], before_rerun[&o.key],
            "{} rewritten the same",
            o.key
        );
    }
    let ids = archived_ids(&local.root());
    let rows: HashMap<String, u64> = store.table_rows().await.unwrap().into_iter().collect();
    for class in ["jobs", "webhook_events", "webhook_attempts", "uploads"] {
        let r = report
            .classes
            .iter()
            .find(|c| c.class.as_str() == class)
            .unwrap();
        let deleted = before[class] - rows[class];
        println!(
            "{class}: {} before, {} after, {} archived lines, report deleted {} archived {}",
            before[class],
            rows[class],
            ids.get(class).map_or(0, |s| s.len()),
            r.deleted,
            r.archived
        );
        assert!(deleted > 0, "{class}");
        assert_eq!(ids[class].len() as u64, r.deleted, "{class}");
        assert_eq!(r.archived, r.deleted, "{class}");
        if class != "webhook_attempts" {
            assert_eq!(r.deleted, deleted, "{class}");
        }
    }
    assert_eq!(rows["mps_responses"], 0);
    assert_eq!(rows["webhook_deliveries"], 0);
    // One object per class and day, named after its first row.
    for key in after.keys() {
        let parts: Vec<&str> = key.split('/').collect();
        assert_eq!(parts.len(), 4, "{key}");
        assert_eq!(parts[0], "archive");
        assert!(
            chrono::NaiveDate::parse_from_str(parts[2], "%Y-%m-%d").is_ok(),
            "{key}"
        );
        assert!(parts[3].ends_with(".jsonl"), "{key}");
    }
    let lines: Vec<&Value> = after.values().flatten().collect();
    let job = lines.iter().find(|l| l["class"] == "jobs").unwrap();
    assert!(job["row"]["request"].is_object(), "{job}");
    assert_eq!(job["mps_responses"].as_array().unwrap().len(), 2, "{job}");
    assert!(job["mps_responses"][0]["body"].is_object(), "{job}");
    let finished = job["row"]["finished_at"].as_str().unwrap();
    assert!(
        finished.ends_with('Z') && finished.len() == 27,
        "{finished}"
    );
    let late = lines
        .iter()
        .filter(|l| l["class"] == "webhook_events")
        .flat_map(|l| l["deliveries"].as_array().unwrap())
        .map(|d| d["attempts"].as_array().unwrap().len())
        .sum::<usize>();
    read_back_as_the_docs_show(&local.root(), &ids["jobs"]);
    let metrics = snapgate::metrics::handle().render();
    for class in ["jobs", "webhook_events", "webhook_attempts", "uploads"] {
        for name in [
            "snapgate_archived_rows_total",
            "snapgate_archive_objects_total",
        ] {
            let line = format!("{name}{{class=\"{class}\"}} ");
            assert!(metrics.contains(&line), "{line} in /metrics");
        }
    }
    // The attempts newer than the cutoff (the late event's two, and the expired upload's
    // event's, attempted today) went with their events: they are in the events' lines.
    assert_eq!(late, 3);
    let attempts = report
        .classes
        .iter()
        .find(|c| c.class == PurgeClass::WebhookAttempts);
    assert_eq!(
        attempts.unwrap().deleted + late as u64,
        before["webhook_attempts"],
        "every attempt deleted is in a line"
    );
}

/// The read-back example of docs/operations.md (the block that sets `ARCHIVE`), run over
/// this archive: one line per archived job, each with its two MPS answers.
fn read_back_as_the_docs_show(root: &Path, jobs: &HashSet<String>) {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    let start = page.find("```sh\nARCHIVE=").expect("the read-back example") + "```sh\n".len();
    let block = &page[start..start + page[start..].find("```").unwrap()];
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -eo pipefail\n{block}"))
        .env("ARCHIVE", root.join("archive"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), jobs.len(), "{lines:?}");
    for l in &lines {
        assert!(jobs.contains(l["id"].as_str().unwrap()), "{l}");
        assert_eq!(l["mps_answers"], 2, "{l}");
    }
    let ends: Vec<&str> = lines
        .iter()
        .map(|l| l["finished_at"].as_str().unwrap())
        .collect();
    assert!(
        ends.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {ends:?}"
    );
}

/// Nothing is deleted when the archive cannot be written: the run fails, the rows stay.
async fn no_row_goes_when_its_archive_cannot_be_written(store: DynStore) {
    snapgate::clock::shifted(chrono::Duration::days(-10), async {
        crate::lifecycle::one_day(&store, -10, 3).await;
    })
    .await;
    let port = common::process::free_port();
    let archiver = Arc::new(
        Archiver::new(ArchiveTarget {
            bucket_url: format!("http://127.0.0.1:{port}/{BUCKET}"),
            region: "cn-shanghai".into(),
            prefix: PREFIX.into(),
            creds: Credentials::key(EMU_KEY_ID, Secret::new(EMU_SECRET)),
        })
        .unwrap(),
    );
    let purger = Purger::new(store.clone(), lifecycle(10)).with_archive(Some(archiver));
    let stop = tokio_util::sync::CancellationToken::new();
    let err = purger
        .run_once(snapgate::clock::now(), &stop)
        .await
        .unwrap_err();
    println!("{err}");
    assert!(err.to_string().contains("archive"), "{err}");
    let rows: HashMap<String, u64> = store.table_rows().await.unwrap().into_iter().collect();
    assert_eq!(rows["jobs"], 3);
    assert_eq!(rows["mps_responses"], 6);
}

/// The local store checks a `Content-MD5` as OSS does: a body that is not the one announced is
/// refused (400 InvalidDigest) and not stored.
async fn the_local_store_refuses_a_body_that_is_not_its_content_md5() {
    let local = LocalArchive::start().await;
    let http = reqwest::Client::new();
    let url = format!("{}/{BUCKET}/archive/x.jsonl", local.emu.url());
    let md5_of_other = "XrY7u+Ae7tCTyyK7j1rNww=="; // MD5 of "hello world"
    let res = http
        .put(&url)
        .header("content-md5", md5_of_other)
        .body("not hello world")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("<Code>InvalidDigest</Code>"));
    assert_eq!(http.get(&url).send().await.unwrap().status(), 404);
    let res = http
        .put(&url)
        .header("content-md5", md5_of_other)
        .body("hello world")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["etag"].to_str().unwrap(),
        "\"5EB63BBBE01EEED093CB22BB8F5ACDC3\""
    );
}

#[tokio::test]
async fn the_local_store_refuses_a_body_that_is_not_its_md5() {
    the_local_store_refuses_a_body_that_is_not_its_content_md5().await;
}

common::both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_purge_archives_every_row_it_deletes_once,
    no_row_goes_when_its_archive_cannot_be_written,
    thirty_days_plateau_with_every_purged_row_archived,
    serve_archives_into_the_built_in_store,
    an_expired_multipart_upload_stays_until_its_parts_are_aborted,
);

/// An expired multipart intent whose OSS upload is not known aborted yet is the sweeper's only
/// record of the parts (billed until aborted): the purge keeps it past the retention, and takes
/// it once the abort is recorded.
async fn an_expired_multipart_upload_stays_until_its_parts_are_aborted(store: DynStore) {
    let now = snapgate::clock::now();
    let id = uuid::Uuid::new_v4();
    let mut u = upload_record(id);
    u.expires_at = now - chrono::Duration::seconds(1);
    u.size_bytes = 300 << 20;
    u.multipart = Some(snapgate::store::MultipartPlan {
        oss_upload_id: "0004B9894A22E5B1888A1E29F823XXXX".into(),
        part_size: 8 << 20,
        part_count: 38,
    });
    store.create_upload(&u).await.unwrap();
    assert!(store.expire_uploads(now).await.unwrap().contains(&id));
    // A multipart upload that landed (completed: no parts left) goes with the retention.
    let landed = uuid::Uuid::new_v4();
    let mut l = upload_record(landed);
    l.multipart = u.multipart.clone();
    store.create_upload(&l).await.unwrap();
    assert!(store.mark_uploaded(landed, "complete", now).await.unwrap());
    let purger = Purger::new(store.clone(), lifecycle(10));
    let stop = tokio_util::sync::CancellationToken::new();
    let purge = || async {
        snapgate::clock::shifted(chrono::Duration::days(10), async {
            purger
                .run_once(snapgate::clock::now(), &stop)
                .await
                .unwrap()
                .expect("the lease is free")
        })
        .await
    };
    purge().await;
    assert!(
        store.get_upload(id).await.unwrap().is_some(),
        "an expired multipart upload not yet aborted is kept"
    );
    assert!(store.get_upload(landed).await.unwrap().is_none());
    store.close_multipart(id, now).await.unwrap();
    purge().await;
    assert!(
        store.get_upload(id).await.unwrap().is_none(),
        "once aborted it goes with the retention"
    );
}

/// `serve` on the embedded default purges in the background and archives into the built-in
/// emulator's local store (its folder `<emulator.oss_dir>/<bucket>`, signed with the
/// emulator's own key); the admin stats show the run's archived rows.
async fn serve_archives_into_the_built_in_store(store: DynStore) {
    webhook_endpoint(&store).await;
    snapgate::clock::shifted(chrono::Duration::days(-10), async {
        seed_day(&store, -10, 5).await;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::test_settings();
    settings.emulator.oss_dir = dir.path().join("oss").display().to_string();
    settings.lifecycle = lifecycle(4);
    settings.lifecycle.purge_interval_s = 1;
    settings.lifecycle.archive.enabled = true;
    let app = common::TestApp::from_settings(settings)
        .store(store.clone())
        .start()
        .await;
    let root = dir.path().join("oss").join(BUCKET);
    let start = std::time::Instant::now();
    let stats = loop {
        let stats: Value = app.get("/v1/admin/stats").await.json().await.unwrap();
        if !stats["last_purge"].is_null() {
            break stats;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no purge ran: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ids = archived_ids(&root);
    let classes = stats["last_purge"]["classes"].as_array().unwrap();
    for class in ["jobs", "webhook_events", "webhook_attempts", "uploads"] {
        let c = classes.iter().find(|c| c["class"] == class).unwrap();
        println!("{class}: {c}");
        assert!(c["deleted"].as_u64().unwrap() > 0, "{c}");
        assert_eq!(c["archived"], c["deleted"], "{c}");
        assert_eq!(ids[class].len() as u64, c["archived"].as_u64().unwrap());
    }
    assert_eq!(ids["jobs"].len(), 5);
}

// --- steady state ----------------------------------------------------------------------

/// 30 simulated days (an injected clock) at a fixed daily rate — jobs with their MPS answers,
/// webhook events, deliveries and attempts, uploads — and a purge with the archive on at the
/// end of each: every table plateaus once the retentions have passed, the jobs that never
/// ended and the upload still waiting are kept, and the archive holds each deleted row once
/// (lines per class = rows deleted).
async fn thirty_days_plateau_with_every_purged_row_archived(store: DynStore) {
    const PER_DAY: usize = 12;
    let local = LocalArchive::start().await;
    webhook_endpoint(&store).await;
    let purger = Purger::new(store.clone(), lifecycle(7)).with_archive(Some(local.archiver()));
    let stop = tokio_util::sync::CancellationToken::new();
    // Two jobs that never end (claimed under a lease that outlasts the simulation) and an
    // upload that never lands.
    let mut never_final = Vec::new();
    for _ in 0..2 {
        let job = crate::lifecycle::new_job();
        never_final.push(job.id);
        store.create_job(job, None).await.unwrap();
    }
    let far = snapgate::store::now() + chrono::Duration::days(400);
    let held = store
        .claim_dispatch("holder", snapgate::store::now(), far, 2)
        .await
        .unwrap();
    assert_eq!(held.len(), 2);
    let waiting = uuid::Uuid::new_v4();
    let mut w = upload_record(waiting);
    w.expires_at = far;
    store.create_upload(&w).await.unwrap();

    let mut table: Vec<BTreeMap<String, u64>> = Vec::new();
    let mut deleted: HashMap<String, u64> = HashMap::new();
    for day in 0..30i64 {
        let rows = snapgate::clock::shifted(chrono::Duration::days(day), async {
            seed_day(&store, day, PER_DAY).await;
            let report = purger
                .run_once(snapgate::clock::now(), &stop)
                .await
                .unwrap()
                .expect("the lease is free");
            for c in &report.classes {
                assert_eq!(c.archived, if c.class.archived() { c.deleted } else { 0 });
                *deleted.entry(c.class.as_str().to_string()).or_default() += c.deleted;
            }
            store.table_rows().await.unwrap()
        })
        .await;
        let rows: BTreeMap<String, u64> = rows.into_iter().collect();
        println!(
            "day {day:2}: {}",
            rows.iter()
                .map(|(t, n)| format!("{t}={n}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        table.push(rows);
    }
    // From day 10 on (past every retention: 5 days at most) each table holds the same number
    // of rows at the end of each day; only the usage aggregate grows (kept on purpose).
    for day in 10..30 {
        for (t, n) in &table[29] {
            if t != "usage_daily" {
                assert_eq!(table[day][t], *n, "{t} on day {day}");
            }
        }
    }
    let last = &table[29];
    assert_eq!(last["jobs"], 5 * PER_DAY as u64 + 2, "{last:?}");
    // Every table the traffic writes holds rows (the MPS-compatible endpoint's nonces are not
    // part of it).
    assert!(
        last.iter().all(|(t, n)| *n > 0 || t == "rpc_nonces"),
        "{last:?}"
    );
    for id in &never_final {
        let job = store.get_job(None, *id).await.unwrap().expect("kept");
        assert_eq!(job.state, snapgate::domain::JobState::Queued);
    }
    assert!(store.get_upload(waiting).await.unwrap().is_some());
    // The archive: each class's lines are the rows its purge deleted, each once.
    let ids = archived_ids(&local.root());
    let lines: BTreeMap<_, _> = ids
        .iter()
        .map(|(k, v)| (k.clone(), v.len() as u64))
        .collect();
    println!("archive lines {lines:?}; rows deleted {deleted:?}");
    for class in ["jobs", "webhook_events", "webhook_attempts", "uploads"] {
        assert_eq!(lines[class], deleted[class], "{class}");
    }
    // Every job made and gone is in the archive: 30 days' jobs less the 5 days kept.
    assert_eq!(lines["jobs"], 25 * PER_DAY as u64);
    assert_eq!(lines["uploads"], 2 * 27);
}

// --- crash ---------------------------------------------------------------------------------

/// The ids left in each archived class's table.
async fn remaining(pool: &sqlx::PgPool) -> HashMap<String, HashSet<String>> {
    let mut out = HashMap::new();
    for t in ["jobs", "webhook_events", "webhook_attempts", "uploads"] {
        let ids: Vec<(String,)> = sqlx::query_as(&format!("SELECT id::text FROM {t}"))
            .fetch_all(pool)
            .await
            .unwrap();
        out.insert(t.to_string(), ids.into_iter().map(|r| r.0).collect());
    }
    out
}

/// A pass-through to `upstream` that answers each `GET` 15 ms late: the read-back that
/// verifies an object is the step between its write and its rows' delete, so most kills land
/// in that window. Signatures pass unchanged (V4 signs the path, not the host). Its base URL.
async fn slow_reads(upstream: String) -> String {
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (http, upstream) = (http.clone(), upstream.clone());
        async move {
            let (parts, body) = req.into_parts();
            if parts.method == axum::http::Method::GET {
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let mut fwd = http.request(parts.method, format!("{upstream}{}", parts.uri));
            for (k, v) in &parts.headers {
                if k != axum::http::header::HOST {
                    fwd = fwd.header(k, v);
                }
            }
            let res = fwd.body(body).send().await.unwrap();
            let mut out = axum::response::Response::builder().status(res.status());
            for (k, v) in res.headers() {
                out = out.header(k, v);
            }
            out.body(axum::body::Body::from(res.bytes().await.unwrap()))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// `snapgate purge` (the real binary) on `db`, archiving into `local` through `store_url`
/// (its store, or a pass-through to it), in small batches.
fn purge_command(db: &str, store_url: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(common::process::BIN);
    cmd.arg("purge")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "SNAPGATE_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
        )
        .env("DATABASE_URL", db)
        .env("SNAPGATE__LIFECYCLE__JOBS_RETENTION_DAYS", "5")
        .env("SNAPGATE__LIFECYCLE__WEBHOOKS_RETENTION_DAYS", "3")
        .env("SNAPGATE__LIFECYCLE__UPLOADS_RETENTION_DAYS", "3")
        .env("SNAPGATE__LIFECYCLE__PURGE_BATCH_SIZE", "7")
        .env("SNAPGATE__LIFECYCLE__PURGE_PAUSE_MS", "0")
        .env("SNAPGATE__LIFECYCLE__ARCHIVE__ENABLED", "true")
        .env(
            "SNAPGATE__LIFECYCLE__ARCHIVE__ENDPOINT",
            format!("{store_url}/{BUCKET}"),
        )
        .env("SNAPGATE__LIFECYCLE__ARCHIVE__ACCESS_KEY_ID", EMU_KEY_ID)
        .env(
            "SNAPGATE__LIFECYCLE__ARCHIVE__ACCESS_KEY_SECRET",
            EMU_SECRET,
        )
        .env("RUST_LOG", "info,snapgate=debug");
    cmd
}

/// SIGKILL `snapgate purge` at random points of archive-then-delete, twelve times, then run it to
/// its end: after every kill each row gone from the database is in the archive, and at the end
/// the archive holds every purged row exactly once (lines = rows deleted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_killed_anywhere_loses_no_row_and_writes_no_line_twice() {
    let (store, db) = common::pg_store().await;
    let local = LocalArchive::start().await;
    // Webhooks on the last two days only: the classes purged first (attempts, events) are then
    // no bigger than the jobs, so the kills land in every class.
    for day in 0..8 {
        if day == 6 {
            webhook_endpoint(&store).await;
        }
        snapgate::clock::shifted(chrono::Duration::days(-17 + day), async {
            seed_day(&store, 100 + day, 80).await;
        })
        .await;
    }
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let seeded = remaining(&pool).await;
    let sizes: BTreeMap<_, _> = seeded.iter().map(|(k, v)| (k.clone(), v.len())).collect();
    println!("seeded: {sizes:?}");

    let store_url = slow_reads(local.emu.url()).await;
    let (mut kills, mut in_window) = (0, 0);
    // Twelve runs killed (fewer if the work is done first), then one to the end.
    for round in 0..12 {
        let wait = Duration::from_millis(rand::Rng::gen_range(&mut rand::thread_rng(), 100..1500));
        let mut proc = common::process::Proc::spawn(
            "archive-crash",
            &format!("purge-{round}"),
            purge_command(&db, &store_url),
        );
        tokio::time::sleep(wait).await;
        let finished = proc.child.try_wait().unwrap().is_some();
        if !finished {
            proc.kill();
        }
        kills += usize::from(!finished);
        // The dead run's lease: expired at once (it would after a minute).
        sqlx::query("UPDATE maintenance_leases SET owner = NULL, lease_expires_at = NULL")
            .execute(&pool)
            .await
            .unwrap();
        let left = remaining(&pool).await;
        let archived = archived_ids(&local.root());
        for (class, ids) in &seeded {
            let gone: Vec<&String> = ids.difference(&left[class]).collect();
            let empty = HashSet::new();
            let in_archive = archived.get(class).unwrap_or(&empty);
            let lost: Vec<&&String> = gone
                .iter()
                .filter(|id| !in_archive.contains(**id))
                .collect();
            assert!(
                lost.is_empty(),
                "round {round}: {class} rows deleted without their archive: {lost:?}"
            );
        }
        // Rows archived but still there: this kill landed between a write and its delete.
        let written_not_deleted: usize = left
            .iter()
            .map(|(class, ids)| {
                archived
                    .get(class)
                    .map_or(0, |a| ids.intersection(a).count())
            })
            .sum();
        in_window += usize::from(written_not_deleted > 0);
        let figures: BTreeMap<_, _> = left.iter().map(|(k, v)| (k.clone(), v.len())).collect();
        println!(
            "round {round}: killed after {wait:?}{}; left {figures:?}; archive lines {:?}; \
             {written_not_deleted} archived, not yet deleted",
            if finished {
                " (it had already ended)"
            } else {
                ""
            },
            archived
                .iter()
                .map(|(k, v)| (k.clone(), v.len()))
                .collect::<BTreeMap<_, _>>()
        );
        if left.values().all(HashSet::is_empty) {
            break;
        }
    }
    println!("{in_window} of {kills} kills landed between an object's write and its rows' delete");
    assert!(kills >= 5, "most kills land inside a run ({kills} of 12)");
    assert!(in_window >= 1, "a kill between a write and its delete");

    let mut last = common::process::Proc::spawn(
        "archive-crash",
        "purge-final",
        purge_command(&db, &store_url),
    );
    let exit = last.wait_exit(Duration::from_secs(120)).await;
    assert!(exit.success(), "{}", last.log_text());
    let left = remaining(&pool).await;
    let archived = archived_ids(&local.root());
    for (class, ids) in &seeded {
        assert!(
            left[class].is_empty(),
            "{class}: {} left",
            left[class].len()
        );
        assert_eq!(
            &archived[class], ids,
            "{class}: the archive holds every purged row"
        );
    }
    let rows: HashMap<String, u64> = store.table_rows().await.unwrap().into_iter().collect();
    assert_eq!((rows["mps_responses"], rows["webhook_deliveries"]), (0, 0));
    let responses: usize = objects(&local.root())
        .values()
        .flatten()
        .filter(|l| l["class"] == "jobs")
        .map(|l| l["mps_responses"].as_array().unwrap().len())
        .sum();
    assert_eq!(
        responses,
        seeded["jobs"].len() * 2,
        "every MPS answer archived once"
    );
    pool.close().await;
}
