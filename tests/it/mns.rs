//! MNS in, polling only as the safety net: real Postgres, the real emulator over HTTP (its MNS
//! queue publishes MPS-shaped job messages, with lost, duplicated and delayed messages as
//! faults), snapgate through `TestApp`. Queries per job are read from the emulator's ledger
//! (`Emulator.queries`), queue counters from `/_emulator/mns`.

use crate::common;

use std::time::{Duration, Instant};

use common::app::{mps_client, test_emulator, EMU_KEY_ID, EMU_SECRET};
use common::TestApp;
use serde_json::{json, Value};
use snapgate::emulator::{EmulatorConfig, EmulatorHandle};
use snapgate::mps::mns::{MnsClient, MnsClientConfig};
use snapgate::mps::sign;
use snapgate::secret::Secret;
use snapgate::store::DynStore;

const QUEUE: &str = "snapgate-test";
const PIPELINE: &str = "9bad3801a2c561c22c4df9c6abcd0000";

async fn emulator(tweak: impl FnOnce(&mut EmulatorConfig)) -> EmulatorHandle {
    test_emulator(|c| {
        c.mns_queue = Some(QUEUE.into());
        tweak(c);
    })
    .await
}

/// snapgate with MNS on against `emu`, polls fast (when they happen at all).
async fn app(
    store: DynStore,
    emu: &EmulatorHandle,
    tweak: impl FnOnce(&mut snapgate::config::Settings),
) -> TestApp {
    let url = emu.url();
    TestApp::builder(store)
        .mps(mps_client(&url, EMU_SECRET, 5_000))
        .settings(|s| {
            s.mps.access_key_id = Some(EMU_KEY_ID.into());
            s.mps.access_key_secret = Some(Secret::new(EMU_SECRET));
            s.mps.mns.endpoint = Some(url.clone());
            s.mps.mns.queue = QUEUE.into();
            s.mps.mns.wait_s = 1;
            s.worker.status_poll_min_ms = 100;
            s.worker.status_poll_max_ms = 500;
            s.worker.idle_poll_ms = 100;
            s.worker.list_visibility_ms = 0;
            s.worker.query_qps = 1000;
            s.worker.submit_qps = 1000;
            // Far away unless a test wants the safety net: a poll means a message was missed.
            s.worker.mns_grace_s = 120;
            tweak(s);
        })
        .start()
        .await
}

fn job_body(i: usize) -> Value {
    json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("uploads/clip {i}.mp4")},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": format!("thumbs/{i}/{{Count}}.jpg")},
        "time_ms": 1000, "interval_s": 2, "num": 3,
        "pipeline_id": PIPELINE,
    })
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn post_json(url: &str, body: Value) -> Value {
    let res = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{url}: {}", res.status());
    res.json().await.unwrap()
}

async fn submit(app: &TestApp, i: usize) -> String {
    let res = app.post_job(&job_body(i), None).await;
    assert!(res.status().is_success(), "{}", res.status());
    let v: Value = res.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

async fn job(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/snapshot-jobs/{id}"))
        .await
        .json()
        .await
        .unwrap()
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn mns_stats(emu: &EmulatorHandle) -> Value {
    get_json(&format!("{}/_emulator/mns", emu.url())).await
}

/// The emulator's ledger entry of an MPS job (its `Emulator.queries` counts the queries).
async fn ledger(emu: &EmulatorHandle, mps_id: &str) -> Value {
    get_json(&format!("{}/_emulator/jobs/{mps_id}", emu.url())).await
}

async fn responses(app: &TestApp, id: &str) -> Vec<Value> {
    let v: Value = app
        .get(&format!("/v1/snapshot-jobs/{id}/mps-responses"))
        .await
        .json()
        .await
        .unwrap();
    v.as_array()
        .or_else(|| v["responses"].as_array())
        .or_else(|| v["items"].as_array())
        .unwrap_or_else(|| panic!("mps-responses answer: {v}"))
        .clone()
}

fn actions(r: &[Value]) -> Vec<String> {
    r.iter()
        .map(|x| x["action"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_ends_by_its_message_without_any_query_for_it() {
    let (store, _db) = common::pg_store().await;
    let emu = emulator(|_| {}).await;
    let app = app(store, &emu, |_| {}).await;
    let id = submit(&app, 1).await;
    let done = app.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let mps_id = done["mps"]["job_id"].as_str().unwrap().to_string();
    let l = ledger(&emu, &mps_id).await;
    assert_eq!(
        l["Emulator"]["queries"], 0,
        "no QuerySnapshotJobList named the job: {l}"
    );
    assert_eq!(l["Emulator"]["notified"], true);
    // The message is one of the job's responses, and MPS's Count came with it.
    let r = responses(&app, &id).await;
    assert!(actions(&r).contains(&"MNS:Message".to_string()), "{r:?}");
    assert!(
        !actions(&r).contains(&"QuerySnapshotJobList".to_string()),
        "{r:?}"
    );
    assert_eq!(done["mps"]["count"], 3, "{done}");
    assert_eq!(done["mps"]["state"], "Success");
    assert!(done["outputs"].is_object(), "the manifest: {done}");
    // From MPS's end to snapgate's final state: well under a second.
    let ended_ms = l["Emulator"]["finished_at_ms"].as_i64().unwrap();
    let updated = chrono::DateTime::parse_from_rfc3339(done["updated_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    assert!(updated - ended_ms < 1000, "{} ms", updated - ended_ms);
    // Deleted once recorded: nothing left in the queue.
    wait_for("message deleted", Duration::from_secs(5), || async {
        mns_stats(&emu).await["stats"]["deleted"] == 1
    })
    .await;
    let s = mns_stats(&emu).await;
    assert_eq!(s["messages"].as_array().unwrap().len(), 0, "{s}");
    assert_eq!(
        s["stats"]["refused"], 0,
        "every request was signed right: {s}"
    );
    app.stop().await.unwrap();
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_late_and_stale_messages_never_move_a_job_back() {
    let (store, _db) = common::pg_store().await;
    let emu = emulator(|_| {}).await;
    // The job's message twice, the copy half a second later.
    post_json(
        &format!("{}/_emulator/faults", emu.url()),
        json!({"mns_duplicate_next": 1, "mns_delay_ms": 500}),
    )
    .await;
    let app = app(store, &emu, |_| {}).await;
    let id = submit(&app, 1).await;
    let done = app.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(done["state"], "succeeded");
    wait_for("both copies deleted", Duration::from_secs(5), || async {
        mns_stats(&emu).await["stats"]["deleted"] == 2
    })
    .await;
    assert_eq!(mns_stats(&emu).await["stats"]["duplicated"], 1);
    let mps_id = done["mps"]["job_id"].as_str().unwrap();
    // Stale messages for the same job: a failure, and a non-final state.
    for state in ["Fail", "Snapshoting"] {
        post_json(
            &format!("{}/_emulator/mns/messages", emu.url()),
            json!({"JobId": mps_id, "jobId": mps_id, "Type": "Snapshot", "State": state,
                   "UserData": id, "code": "InternalError", "msg": "stale"}),
        )
        .await;
    }
    wait_for("stale messages deleted", Duration::from_secs(5), || async {
        mns_stats(&emu).await["stats"]["deleted"] == 4
    })
    .await;
    let after = job(&app, &id).await;
    assert_eq!(after["state"], "succeeded", "{after}");
    assert_eq!(after["mps"]["state"], "Success");
    assert_eq!(after["updated_at"], done["updated_at"], "nothing changed");
    assert_eq!(after["last_error"], Value::Null);
    let r = responses(&app, &id).await;
    assert_eq!(
        actions(&r).iter().filter(|a| *a == "MNS:Message").count(),
        1,
        "only the applied message is kept: {r:?}"
    );
    assert_eq!(ledger(&emu, mps_id).await["Emulator"]["queries"], 0);
    app.stop().await.unwrap();
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_answer_older_than_the_message_does_not_move_the_job_back() {
    let (store, _db) = common::pg_store().await;
    let emu = emulator(|c| {
        c.start_ms = 50;
        c.process_ms = 700;
    })
    .await;
    // The first query answers `Snapshoting`, but only 1.5 s later: after the message.
    post_json(
        &format!("{}/_emulator/faults", emu.url()),
        json!({"slow_next_queries": 2, "slow_ms": 1500}),
    )
    .await;
    let app = app(store, &emu, |s| s.worker.mns_grace_s = 0).await;
    // The worker's start check spends the first slow query; wait for its answer (the first
    // signed call that succeeds marks MPS verified).
    wait_for(
        "the worker's start check answered",
        Duration::from_secs(10),
        || async {
            let r: Value = app.get("/readyz").await.json().await.unwrap();
            r["mps"]["verified"] == true
        },
    )
    .await;
    let id = submit(&app, 1).await;
    let done = app.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(done["state"], "succeeded");
    let mps_id = done["mps"]["job_id"].as_str().unwrap().to_string();
    wait_for(
        "the slow poll answered",
        Duration::from_secs(10),
        || async {
            actions(&responses(&app, &id).await).contains(&"QuerySnapshotJobList".to_string())
        },
    )
    .await;
    let r = responses(&app, &id).await;
    let a = actions(&r);
    let msg = a
        .iter()
        .position(|x| x == "MNS:Message")
        .expect("message kept");
    let poll = a.iter().position(|x| x == "QuerySnapshotJobList").unwrap();
    assert!(
        msg < poll,
        "the query's answer came after the message: {a:?}"
    );
    assert_ne!(
        r[poll]["body"]["State"], "Success",
        "a stale answer: {:?}",
        r[poll]
    );
    let after = job(&app, &id).await;
    assert_eq!(after["state"], "succeeded", "{after}");
    assert_eq!(after["mps"]["state"], "Success");
    assert!(
        ledger(&emu, &mps_id).await["Emulator"]["queries"]
            .as_u64()
            .unwrap()
            >= 1
    );
    app.stop().await.unwrap();
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_tenth_of_messages_lost_every_job_still_ends_final() {
    let (store, _db) = common::pg_store().await;
    let emu = emulator(|c| c.seed = Some(14)).await;
    post_json(
        &format!("{}/_emulator/faults", emu.url()),
        json!({"mns_lose_rate": 0.1, "mns_lose_next": 1}),
    )
    .await;
    // The grace is what a delivered message has to be handled in before its job is queried:
    // 3 s, not 1, so that a loaded machine (the whole suite on 2 cores) does not query a job
    // whose message is merely late, which the count below would take for a lost one.
    let app = app(store, &emu, |s| {
        s.worker.mns_grace_s = 3;
        s.http.submit_wait_ms = 0;
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(submit(&app, i).await);
    }
    let mut queried = 0;
    for id in &ids {
        let done = app.wait_final(id, Duration::from_secs(30)).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        let mps_id = done["mps"]["job_id"].as_str().unwrap();
        let l = ledger(&emu, mps_id).await;
        if l["Emulator"]["queries"].as_u64().unwrap() > 0 {
            queried += 1;
        }
    }
    let s = mns_stats(&emu).await;
    let lost = s["stats"]["lost"].as_u64().unwrap();
    assert!(lost >= 1, "{s}");
    // Exactly the jobs whose message was lost needed the safety net.
    assert_eq!(queried, lost, "{s}");
    assert_eq!(s["stats"]["deleted"].as_u64().unwrap(), 40 - lost);
    app.stop().await.unwrap();
    emu.shutdown().await;
}

/// The verbatim success example of MPS's notification page (notes §1.2).
const DOC_MESSAGE: &str = include_str!("../data/mns/mps_snapshot_success.json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_about_an_unknown_job_is_deleted_and_counted() {
    let (store, _db) = common::pg_store().await;
    let emu = emulator(|_| {}).await;
    let app = app(store, &emu, |_| {}).await;
    let counted = |text: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("snapgate_mns_messages_total")
                    && l.contains("outcome=\"unknown_job\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = counted(&app.get("/metrics").await.text().await.unwrap());
    let res = reqwest::Client::new()
        .post(format!("{}/_emulator/mns/messages", emu.url()))
        .body(DOC_MESSAGE)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    wait_for("deleted", Duration::from_secs(5), || async {
        mns_stats(&emu).await["stats"]["deleted"] == 1
    })
    .await;
    assert!(mns_stats(&emu).await["messages"]
        .as_array()
        .unwrap()
        .is_empty());
    let after = counted(&app.get("/metrics").await.text().await.unwrap());
    assert!(after > before, "counted: {before} -> {after}");
    app.stop().await.unwrap();
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_kept_when_recording_fails_and_applied_when_it_comes_back() {
    let (store, url) = common::pg_store().await;
    let emu = emulator(|c| {
        c.process_ms = 1500;
        c.mns_visibility_ms = 600;
    })
    .await;
    let app = app(store, &emu, |_| {}).await;
    let id = submit(&app, 1).await;
    let j = job(&app, &id).await;
    assert_eq!(j["state"], "submitted", "{j}");
    // The database refuses every change to a job: recording the message fails.
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'store down'; END $$;
         CREATE TRIGGER refuse BEFORE UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .execute(&db)
    .await
    .unwrap();
    wait_for("the message came back", Duration::from_secs(10), || async {
        mns_stats(&emu).await["stats"]["delivered"]
            .as_u64()
            .unwrap()
            >= 3
    })
    .await;
    let s = mns_stats(&emu).await;
    assert_eq!(
        s["stats"]["deleted"], 0,
        "not deleted while unrecorded: {s}"
    );
    assert!(
        s["messages"][0]["dequeue_count"].as_u64().unwrap() >= 3,
        "{s}"
    );
    assert_eq!(job(&app, &id).await["state"], "submitted");
    sqlx::raw_sql("DROP TRIGGER refuse ON jobs; DROP FUNCTION refuse();")
        .execute(&db)
        .await
        .unwrap();
    let done = app.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(done["state"], "succeeded");
    wait_for("deleted once recorded", Duration::from_secs(5), || async {
        mns_stats(&emu).await["stats"]["deleted"] == 1
    })
    .await;
    let mps_id = done["mps"]["job_id"].as_str().unwrap();
    assert_eq!(ledger(&emu, mps_id).await["Emulator"]["queries"], 0);
    db.close().await;
    app.stop().await.unwrap();
    emu.shutdown().await;
}

fn mns(endpoint: &str, secret: &str) -> MnsClient {
    MnsClient::new(MnsClientConfig {
        endpoint: endpoint.into(),
        queue: QUEUE.into(),
        credentials: snapgate::credentials::Credentials::key(EMU_KEY_ID, Secret::new(secret)),
        wait_s: 0,
        batch: 16,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    })
    .unwrap()
}

/// A fixed vector computed by Python's hmac (tests/data/mns/signature_vector.py).
#[test]
fn the_signature_matches_an_independent_vector() {
    let v: Value = serde_json::from_str(include_str!("../data/mns/signature_vector.json")).unwrap();
    let headers: Vec<(String, String)> = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h[0].as_str().unwrap().into(), h[1].as_str().unwrap().into()))
        .collect();
    let sts = sign::string_to_sign_mns(
        v["method"].as_str().unwrap(),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        v["resource"].as_str().unwrap(),
    );
    assert_eq!(sts, v["string_to_sign"].as_str().unwrap());
    let sig = sign::sign_mns(v["secret"].as_str().unwrap(), &sts);
    assert_eq!(
        sign::authorization_mns(v["id"].as_str().unwrap(), &sig),
        v["authorization"].as_str().unwrap()
    );
}

/// What the client really sends, captured off the wire, signed again by Python's hmac.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_signs_on_the_wire_as_mns_expects() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let capture = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0);
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = snapgate::mps::mns::error_xml("MessageNotExist", "Message not exist.", "R1");
            let answer = format!(
                "HTTP/1.1 404 Not Found\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(answer.as_bytes()).await.unwrap();
            seen.push(String::from_utf8(buf).unwrap());
        }
        seen
    });
    let client = mns(&endpoint, "wire-secret");
    assert!(
        client.receive().await.unwrap().is_empty(),
        "MessageNotExist is no message"
    );
    let _ = client.delete("1-abc/+=").await;
    for raw in capture.await.unwrap() {
        let mut lines = raw.split("\r\n");
        let request_line = lines.next().unwrap();
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap();
        let resource = parts.next().unwrap();
        let headers: Vec<(String, String)> = lines
            .take_while(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.to_string(), v.trim().to_string())
            })
            .collect();
        let auth = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.clone())
            .unwrap();
        let input = json!({"method": method, "resource": resource, "headers": headers,
                           "id": EMU_KEY_ID, "secret": "wire-secret"});
        let out = python_sign(&input);
        assert_eq!(auth, out, "{raw}");
        assert!(headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("x-mns-version") && v == "2015-06-06"));
    }
    // And the emulator refuses a wrong secret as MNS does.
    let emu = emulator(|_| {}).await;
    let e = mns(&emu.url(), "wrong").receive().await.unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (403, "SignatureDoesNotMatch"));
    assert!(mns(&emu.url(), EMU_SECRET)
        .receive()
        .await
        .unwrap()
        .is_empty());
    emu.shutdown().await;
}

/// `tests/data/mns/signature_vector.py --sign`: the Authorization for a captured request.
fn python_sign(input: &Value) -> String {
    use std::io::Write;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/mns/signature_vector.py"
    );
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .arg("--sign")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
