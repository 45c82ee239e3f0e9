//! The emulator speaks MPS's wire protocol: every error code below is provoked by a real
//! malformed request over HTTP, and the success shapes carry MPS's field names and string numbers.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use snapgate::emulator::{self, EmulatorConfig, EmulatorHandle};
use snapgate::mps::sign;

async fn emu(tweak: impl FnOnce(&mut EmulatorConfig)) -> EmulatorHandle {
    let mut c = EmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        start_ms: 50,
        process_ms: 200,
        ..EmulatorConfig::default()
    };
    tweak(&mut c);
    emulator::spawn(c).await.unwrap()
}

/// A job's life on a clock no test outlives: it moves only through [`advance`], so a state is
/// seen exactly when the clock says, never because a query came early or late.
const START_MS: u64 = 60_000;
const PROCESS_MS: u64 = 120_000;

async fn manual_emu(tweak: impl FnOnce(&mut EmulatorConfig)) -> EmulatorHandle {
    emu(|c| {
        c.manual_clock = true;
        c.start_ms = START_MS;
        c.process_ms = PROCESS_MS;
        tweak(c);
    })
    .await
}

/// `GET /_emulator/clock`.
async fn clock(e: &EmulatorHandle) -> Value {
    reqwest::get(format!("{}/_emulator/clock", e.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `POST /_emulator/clock` `{"advance_ms": ms}`: the emulator's time after it.
async fn advance(e: &EmulatorHandle, ms: u64) -> i64 {
    let res = reqwest::Client::new()
        .post(format!("{}/_emulator/clock", e.url()))
        .json(&json!({ "advance_ms": ms }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["manual"], true, "{v}");
    v["now_ms"].as_i64().unwrap()
}

fn common(action: &str) -> BTreeMap<String, String> {
    crate::common::mps_rpc::v1_params(action, "testid")
}

fn input(key: &str) -> String {
    json!({"Bucket": "media", "Location": "oss-cn-shanghai", "Object": snapgate::crypto::percent_encode(key)})
        .to_string()
}

fn config(extra: Value) -> String {
    let mut c = json!({"OutputFile": {"Bucket": "media", "Location": "oss-cn-shanghai", "Object": "out%2F%7BCount%7D.jpg"}, "Time": "0", "Num": "3", "Interval": "1"});
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    c.to_string()
}

fn submit_params(key: &str, extra: Value) -> BTreeMap<String, String> {
    let mut p = common("SubmitSnapshotJob");
    p.insert("Input".into(), input(key));
    p.insert("SnapshotConfig".into(), config(extra));
    p.insert(
        "PipelineId".into(),
        "9bad3801a2c561c22c4df9c6abcd0000".into(),
    );
    p.insert("UserData".into(), "gateway-id team data".into());
    p
}

/// Signs with `secret` and sends; returns (status, body).
async fn send(e: &EmulatorHandle, p: BTreeMap<String, String>, secret: &str) -> (u16, Value) {
    post(
        e,
        &crate::common::mps_rpc::signed_v1_query("POST", &p, secret),
    )
    .await
}

async fn post(e: &EmulatorHandle, query: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/?{query}", e.url()))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

fn assert_error(r: &(u16, Value), status: u16, code: &str) {
    assert_eq!(r.1["Code"], code, "{}", r.1);
    assert_eq!(r.0, status, "{}", r.1);
    for f in ["RequestId", "HostId", "Message", "Recommend"] {
        assert!(r.1[f].is_string(), "{f} missing in {}", r.1);
    }
}

#[tokio::test]
async fn a_job_lives_submitted_snapshoting_success_with_string_numbers() {
    let e = manual_emu(|_| {}).await;
    let t0 = clock(&e).await["now_ms"].as_i64().unwrap();
    let sprite = json!({"TileOut": {"Lines": "2", "Columns": 1}, "TileOutputFile": {"Bucket": "media", "Location": "oss-cn-shanghai", "Object": "s%2F%7BTileCount%7D.jpg"}});
    let (status, body) = send(&e, submit_params("in/a b.mp4", sprite), "testsecret").await;
    assert_eq!(status, 200, "{body}");
    let job = &body["SnapshotJob"];
    assert_eq!(job["State"], "Submitted");
    assert_eq!(job["UserData"], "gateway-id team data");
    assert_eq!(
        job["SnapshotConfig"]["TileOut"]["Columns"], "1",
        "echoed as strings"
    );
    let id = job["Id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    let query = |id: String| {
        let mut p = common("QuerySnapshotJobList");
        p.insert(
            "SnapshotJobIds".into(),
            format!("{id},ffffffffffffffffffffffffffffffff"),
        );
        p
    };
    let state = |b: &Value| b["SnapshotJobList"]["SnapshotJob"][0]["State"].clone();
    // Created at the clock's time, which stands still until it is moved.
    let ledger: Value = reqwest::get(format!("{}/_emulator/jobs/{id}", e.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ledger["Emulator"]["created_ms"], t0);
    assert_eq!(ledger["Emulator"]["finished_at_ms"], Value::Null);
    // 1 ms before start_ms: still Submitted.
    assert_eq!(advance(&e, START_MS - 1).await, t0 + START_MS as i64 - 1);
    let (_, b) = send(&e, query(id.clone()), "testsecret").await;
    assert_eq!(state(&b), "Submitted", "{b}");
    assert_eq!(
        b["NonExistSnapshotJobIds"]["String"],
        json!(["ffffffffffffffffffffffffffffffff"])
    );
    // At start_ms: Snapshoting, in MPS's spelling, with no count yet.
    advance(&e, 1).await;
    let (_, b) = send(&e, query(id.clone()), "testsecret").await;
    assert_eq!(state(&b), "Snapshoting", "MPS spelling: {b}");
    // 1 ms before process_ms (counted from the submit, like start_ms): still Snapshoting.
    advance(&e, PROCESS_MS - START_MS - 1).await;
    let (_, b) = send(&e, query(id.clone()), "testsecret").await;
    assert_eq!(state(&b), "Snapshoting", "{b}");
    // At process_ms: Success, ended exactly then.
    advance(&e, 1).await;
    let (_, b) = send(&e, query(id.clone()), "testsecret").await;
    let j = &b["SnapshotJobList"]["SnapshotJob"][0];
    assert_eq!(j["State"], "Success");
    assert_eq!(j["Count"], "3");
    assert_eq!(j["TileCount"], "2", "3 snapshots in 2x1 sprites");
    let ledger: Value = reqwest::get(format!("{}/_emulator/jobs/{id}", e.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ledger["Emulator"]["finished_at_ms"], t0 + PROCESS_MS as i64);
    // Sync mode (neither Num nor Interval) answers Success at once.
    let mut p = submit_params("in/x.mp4", json!({}));
    let mut c: Value = serde_json::from_str(&p["SnapshotConfig"]).unwrap();
    c.as_object_mut()
        .unwrap()
        .retain(|k, _| k == "OutputFile" || k == "Time");
    c["OutputFile"]["Object"] = json!("x.jpg");
    p.insert("SnapshotConfig".into(), c.to_string());
    let (_, b) = send(&e, p, "testsecret").await;
    assert_eq!(b["SnapshotJob"]["State"], "Success");
}

type Params = BTreeMap<String, String>;

/// One malformed request: what it is, how it is made, the secret it is signed with, and the
/// status and code MPS answers.
struct Case {
    what: &'static str,
    params: fn() -> Params,
    secret: &'static str,
    status: u16,
    code: &'static str,
}

/// A valid submit with `key` set to `value` (`None`: removed).
fn submit_with(key: &str, value: Option<String>) -> Params {
    let mut p = submit_params("a.mp4", json!({}));
    match value {
        Some(v) => p.insert(key.into(), v),
        None => p.remove(key),
    };
    p
}

fn input_json(location: &str, object: &str) -> Option<String> {
    Some(json!({"Bucket": "media", "Location": location, "Object": object}).to_string())
}

const OK: &str = "testsecret";

const CASES: &[Case] = &[
    Case {
        what: "an unknown AccessKeyId",
        params: || submit_with("AccessKeyId", Some("nobody".into())),
        secret: OK,
        status: 404,
        code: "InvalidAccessKeyId.NotFound",
    },
    Case {
        what: "a Timestamp 20 minutes old",
        params: || {
            let old = chrono::Utc::now() - chrono::Duration::minutes(20);
            submit_with(
                "Timestamp",
                Some(old.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            )
        },
        secret: OK,
        status: 400,
        code: "InvalidTimeStamp.Expired",
    },
    Case {
        what: "a Timestamp not in ISO 8601",
        params: || submit_with("Timestamp", Some("2024-01-01 12:00:00".into())),
        secret: OK,
        status: 400,
        code: "InvalidTimeStamp.Format",
    },
    Case {
        what: "no Timestamp",
        params: || submit_with("Timestamp", None),
        secret: OK,
        status: 400,
        code: "IllegalTimestamp",
    },
    Case {
        what: "no Input",
        params: || submit_with("Input", None),
        secret: OK,
        status: 400,
        code: "MissingParameter",
    },
    Case {
        what: "an Input that is not JSON",
        params: || submit_with("Input", Some("{not json".into())),
        secret: OK,
        status: 400,
        code: "InvalidParameter.JsonFormatInvalid",
    },
    Case {
        what: "a PipelineId that is not one",
        params: || submit_with("PipelineId", Some("NOT-A-PIPELINE".into())),
        secret: OK,
        status: 400,
        code: "InvalidParameter.UUIDFormatInvalid",
    },
    Case {
        what: "a Width over 4096",
        params: || submit_params("a.mp4", json!({"Width": "5000"})),
        secret: OK,
        status: 400,
        code: "InvalidParameter.OutOfRange",
    },
    Case {
        what: "an output Object with no {Count} for several snapshots",
        params: || {
            submit_params(
                "a.mp4",
                json!({"OutputFile": {"Bucket": "media", "Location": "oss-cn-shanghai", "Object": "no-placeholder.jpg"}}),
            )
        },
        secret: OK,
        status: 400,
        code: "InvalidParameter.OutOfRange",
    },
    Case {
        what: "an Object with a bad percent escape",
        params: || submit_with("Input", input_json("oss-cn-shanghai", "bad%zzkey")),
        secret: OK,
        status: 400,
        code: "InvalidParameter.ObjectKeyInvalid",
    },
    Case {
        what: "a Location without the oss- prefix",
        params: || submit_with("Input", input_json("cn-shanghai", "a.mp4")),
        secret: OK,
        status: 400,
        code: "InvalidParameter.LocationInvalid",
    },
    Case {
        what: "11 ids in one QuerySnapshotJobList",
        params: || {
            let mut p = common("QuerySnapshotJobList");
            let ids: Vec<String> = (0..11).map(|i| format!("{i:032x}")).collect();
            p.insert("SnapshotJobIds".into(), ids.join(","));
            p
        },
        secret: OK,
        status: 400,
        code: "InvalidParameter.OutOfRange",
    },
    Case {
        what: "an action MPS does not have",
        params: || common("DeleteEverything"),
        secret: OK,
        status: 404,
        code: "InvalidAction.NotFound",
    },
];

#[tokio::test]
async fn each_malformed_request_gets_mps_error_code() {
    let e = emu(|_| {}).await;
    let mut wrong = Vec::new();
    for case in CASES {
        let (status, body) = send(&e, (case.params)(), case.secret).await;
        if status != case.status || body["Code"] != case.code {
            wrong.push(format!(
                "{}: {status} {} (expected {} {})",
                case.what, body["Code"], case.status, case.code
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn a_bad_signature_shows_the_string_to_sign_and_a_nonce_is_used_once() {
    let e = emu(|_| {}).await;
    let r = send(&e, submit_params("a.mp4", json!({})), "wrong").await;
    assert_error(&r, 400, "SignatureDoesNotMatch");
    assert!(r.1["Message"]
        .as_str()
        .unwrap()
        .contains("server string to sign is:POST&%2F&AccessKeyId%3Dtestid"));

    let p = submit_params("a.mp4", json!({}));
    assert_eq!(send(&e, p.clone(), OK).await.0, 200);
    assert_error(&send(&e, p, OK).await, 400, "SignatureNonceUsed");
}

#[tokio::test]
async fn failing_inputs_end_in_fail_and_listing_pages_newest_first() {
    let e = manual_emu(|_| {}).await;
    let (_, b) = send(
        &e,
        submit_params("in/will-fail.mp4", json!({})),
        "testsecret",
    )
    .await;
    let failed = b["SnapshotJob"]["Id"].as_str().unwrap().to_string();
    let mut ids = vec![failed.clone()];
    for i in 0..4 {
        let (_, b) = send(
            &e,
            submit_params(&format!("in/{i}.mp4"), json!({})),
            "testsecret",
        )
        .await;
        ids.push(b["SnapshotJob"]["Id"].as_str().unwrap().to_string());
    }
    // Every job was created now, and ends at process_ms: move the clock there.
    let created_ms = clock(&e).await["now_ms"].as_i64().unwrap();
    advance(&e, PROCESS_MS).await;
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut p = common("QuerySnapshotJobList");
        p.insert(
            "PipelineId".into(),
            "9bad3801a2c561c22c4df9c6abcd0000".into(),
        );
        // A window around the jobs' creation, on the emulator's clock.
        let now = chrono::DateTime::from_timestamp_millis(created_ms).unwrap();
        p.insert(
            "StartOfJobCreatedTimeRange".into(),
            (now - chrono::Duration::minutes(1))
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string(),
        );
        p.insert(
            "EndOfJobCreatedTimeRange".into(),
            (now + chrono::Duration::minutes(1))
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string(),
        );
        p.insert("MaximumPageSize".into(), "2".into());
        if let Some(t) = &token {
            p.insert("NextPageToken".into(), t.clone());
        }
        let (status, b) = send(&e, p, "testsecret").await;
        assert_eq!(status, 200, "{b}");
        pages += 1;
        for j in b["SnapshotJobList"]["SnapshotJob"].as_array().unwrap() {
            if j["Id"] == failed.as_str() {
                assert_eq!(j["State"], "Fail");
                assert_eq!(j["Code"], "InvalidParameter.ResourceNotFound");
            } else {
                assert_eq!(j["State"], "Success", "{j}");
            }
            seen.push(j["Id"].as_str().unwrap().to_string());
        }
        match b["NextPageToken"].as_str() {
            Some(t) => {
                assert_eq!(t.len(), 32);
                token = Some(t.to_string());
            }
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, every job once");
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn faults_throttle_fail_and_drop() {
    let e = emu(|c| c.throttle_rate = 1.0).await;
    assert_error(
        &send(&e, submit_params("a.mp4", json!({})), "testsecret").await,
        400,
        "Throttling.User",
    );

    let e = emu(|c| c.unavailable_rate = 1.0).await;
    assert_error(
        &send(&e, submit_params("a.mp4", json!({})), "testsecret").await,
        503,
        "ServiceUnavailable",
    );

    let e = emu(|c| c.submit_qps = 2).await;
    assert_eq!(
        send(&e, submit_params("a.mp4", json!({})), "testsecret")
            .await
            .0,
        200
    );
    assert_eq!(
        send(&e, submit_params("b.mp4", json!({})), "testsecret")
            .await
            .0,
        200
    );
    assert_error(
        &send(&e, submit_params("c.mp4", json!({})), "testsecret").await,
        400,
        "Throttling.User",
    );

    // A dropped answer: the connection closes with no HTTP response, yet the job exists.
    let e = emu(|c| c.drop_response_rate = 1.0).await;
    let p = submit_params("a.mp4", json!({}));
    let q = crate::common::mps_rpc::signed_v1_query("POST", &p, "testsecret");
    let err = reqwest::Client::new()
        .post(format!("{}/?{q}", e.url()))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "closed, not hung: {err}");
    let ledger: Value = reqwest::get(format!("{}/_emulator/jobs", e.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ledger["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(ledger["jobs"][0]["UserData"], "gateway-id team data");
}

#[tokio::test]
async fn acs3_and_form_encoded_spaces() {
    let e = emu(|_| {}).await;
    let host = e.addr().to_string();
    let mut query = BTreeMap::new();
    query.insert("Input".to_string(), input("in/a b.mp4"));
    query.insert("SnapshotConfig".to_string(), config(json!({})));
    let send_acs3 = |query: BTreeMap<String, String>, tamper: bool| {
        let host = host.clone();
        let url = e.url();
        async move {
            let mut h = BTreeMap::new();
            h.insert("host".to_string(), host);
            h.insert("x-acs-action".to_string(), "SubmitSnapshotJob".to_string());
            h.insert("x-acs-version".to_string(), "2014-06-18".to_string());
            h.insert("x-acs-date".to_string(), sign::timestamp_now());
            h.insert("x-acs-signature-nonce".to_string(), sign::new_nonce());
            h.insert(
                "x-acs-content-sha256".to_string(),
                sign::EMPTY_BODY_SHA256.to_string(),
            );
            let cr = sign::canonical_request_acs3("POST", "/", &query, &h, sign::EMPTY_BODY_SHA256);
            let auth = sign::authorization_acs3(
                "testid",
                &h,
                &sign::sign_acs3("testsecret", &sign::string_to_sign_acs3(&cr)),
            );
            let mut q = query.clone();
            if tamper {
                q.insert("UserData".into(), "added after signing".into());
            }
            // Spaces as '+', the way the Tea SDK sends them.
            let qs = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(q.iter())
                .finish();
            let mut req = reqwest::Client::new()
                .post(format!("{url}/?{qs}"))
                .header("authorization", auth);
            for (k, v) in &h {
                if k != "host" {
                    req = req.header(k.as_str(), v.as_str());
                }
            }
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let ok = send_acs3(query.clone(), false).await;
    assert_eq!(ok.0, 200, "{}", ok.1);
    assert_eq!(ok.1["SnapshotJob"]["Input"]["Object"], "in%2Fa%20b.mp4");
    assert_error(&send_acs3(query, true).await, 400, "SignatureDoesNotMatch");
}

#[tokio::test]
async fn the_clock_is_the_wall_clock_unless_manual_and_then_moves_only_when_told() {
    let http = reqwest::Client::new();
    let post = |e: &EmulatorHandle, body: Value| {
        http.post(format!("{}/_emulator/clock", e.url()))
            .json(&body)
            .send()
    };
    // By default: the wall clock, which nobody moves.
    let wall = emu(|_| {}).await;
    let before = chrono::Utc::now().timestamp_millis();
    let c = clock(&wall).await;
    let after = chrono::Utc::now().timestamp_millis();
    assert_eq!(c["manual"], false, "{c}");
    assert!(
        (before..=after).contains(&c["now_ms"].as_i64().unwrap()),
        "{c}"
    );
    let res = post(&wall, json!({"advance_ms": 1000})).await.unwrap();
    assert_eq!(res.status(), 409);
    let c = clock(&wall).await["now_ms"].as_i64().unwrap();
    assert!(c - chrono::Utc::now().timestamp_millis() <= 0, "not moved");

    // Manual: it moves by what it is told, and refuses what it cannot read.
    let e = manual_emu(|c| {
        c.list_delay_ms = 5_000;
        c.mns_queue = Some("q".into());
    })
    .await;
    let t0 = clock(&e).await["now_ms"].as_i64().unwrap();
    for bad in [
        json!({"advance_ms": -1}),
        json!({"advance_ms": 1.5}),
        json!({}),
        json!({"advance_ms": 1, "extra": true}),
    ] {
        let res = post(&e, bad.clone()).await.unwrap();
        assert_eq!(res.status(), 400, "{bad}");
    }
    assert_eq!(
        clock(&e).await["now_ms"],
        t0,
        "the refused bodies moved nothing"
    );
    // The list delay is on the same clock: a new job is unknown to queries until it passes.
    let (_, b) = send(&e, submit_params("a.mp4", json!({})), "testsecret").await;
    let id = b["SnapshotJob"]["Id"].as_str().unwrap().to_string();
    let by_id = || {
        let mut p = common("QuerySnapshotJobList");
        p.insert("SnapshotJobIds".into(), id.clone());
        p
    };
    let (_, b) = send(&e, by_id(), "testsecret").await;
    assert_eq!(b["NonExistSnapshotJobIds"]["String"], json!([id]), "{b}");
    advance(&e, 4_999).await;
    let (_, b) = send(&e, by_id(), "testsecret").await;
    assert_eq!(b["NonExistSnapshotJobIds"]["String"], json!([id]), "{b}");
    advance(&e, 1).await;
    let (_, b) = send(&e, by_id(), "testsecret").await;
    assert_eq!(
        b["SnapshotJobList"]["SnapshotJob"][0]["State"], "Submitted",
        "{b}"
    );
    // The job's end goes to the MNS queue once the clock reaches it (the queue's publisher
    // looks every 10 ms: waited for with a generous deadline, the condition itself).
    let mns = || async {
        reqwest::get(format!("{}/_emulator/mns", e.url()))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    assert_eq!(mns().await["stats"]["published"], 0);
    advance(&e, PROCESS_MS - 5_000).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let q = loop {
        let q = mns().await;
        if q["stats"]["published"] == 1 {
            break q;
        }
        assert!(std::time::Instant::now() < deadline, "never published: {q}");
        tokio::task::yield_now().await;
    };
    let body: Value = serde_json::from_str(q["messages"][0]["body"].as_str().unwrap()).unwrap();
    assert!(body.to_string().contains(&id), "{body}");
}
