//! The MPS-compatible endpoint (`/`) against real clients: the official Alibaba Cloud
//! Python SDKs (the legacy aliyun-python-sdk-core + mts, running the MPS guide's sample with only
//! endpoint and key changed; the Tea SDK alibabacloud-mts20140618 with ACS3 and with v1) talk to
//! a running snapgate — auth on, team keys, a worker delivering to the emulator — and what they
//! submitted is the same job the REST API shows. Then what the SDKs cannot provoke on purpose
//! (replays across replicas, clocks, limits, paging), signed with `snapgate::mps::sign`, and the
//! new store traits on both databases.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::app::{mps_client, test_emulator, EMU_SECRET};
use common::mps_rpc::V1Call;
use common::TestApp;
use serde_json::Value;
use snapgate::domain::JobId;
use snapgate::store::{DynStore, PipelineJobFilter};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const PIPELINE: &str = "9bad3801a2c561c22c4df9c6abcd0000";

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_run_unchanged_against_snapgate() {
    let venv = common::python_venv("sdk-venv", "tests/official_sdks/requirements.txt");
    let (store, _db) = common::pg_store().await;
    let emu = test_emulator(|_| {}).await;
    let app = TestApp::builder(store.clone())
        .mps(mps_client(&emu.url(), EMU_SECRET, 5_000))
        .settings(|s| {
            s.auth.enabled = true;
            s.worker.status_poll_min_ms = 50;
            s.worker.idle_poll_ms = 50;
        })
        .start()
        .await;
    let a = app.key("alpha", false).await;
    let b = app.key("beta", false).await;
    let revoked = app.key("alpha", false).await;
    assert!(store
        .revoke_api_key(&revoked.access_key_id, snapgate::store::now())
        .await
        .unwrap());

    let endpoint = app.base.trim_start_matches("http://").to_string();
    let python = venv.join("bin/python");
    let script = Path::new(ROOT).join("tests/mps_compat/mps_compat.py");
    let args = [
        "--endpoint".to_string(),
        endpoint,
        "--key-a".into(),
        format!("{}:{}", a.access_key_id, a.access_key_secret),
        "--key-b".into(),
        format!("{}:{}", b.access_key_id, b.access_key_secret),
        "--revoked".into(),
        format!("{}:{}", revoked.access_key_id, revoked.access_key_secret),
    ];
    let out = tokio::task::spawn_blocking(move || run(Command::new(python).arg(script).args(args)))
        .await
        .unwrap();
    let s: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    println!("{}", serde_json::to_string_pretty(&s).unwrap());

    // The dry-run header through the legacy SDK: the MPS parameters snapgate would send.
    let d = &s["dry_run_legacy"];
    assert!(d["error"].is_null(), "{d}");
    assert_eq!(d["DryRun"]["dry_run"], true, "{d}");
    assert_eq!(
        d["DryRun"]["snapshot_times_ms"],
        serde_json::json!([1000, 2000]),
        "{d}"
    );
    assert_eq!(
        d["DryRun"]["outputs"]["snapshots"][1]["file"]["object"], "dry/00002.jpg",
        "{d}"
    );

    // (1) The guide's sample: submitted, queried until Success, the team's UserData unchanged.
    let g = &s["guide_sample"];
    assert!(g["error"].is_null(), "{g}");
    let id = g["id"].as_str().unwrap();
    assert!(JobId::parse(id).is_some(), "Id is snapgate's job id: {id}");
    assert!(
        ["Submitted", "Snapshoting", "Success"].contains(&g["state"].as_str().unwrap()),
        "{g}"
    );
    assert_eq!(g["user_data"], "guide-sample");
    assert_eq!(g["pipeline"], PIPELINE);
    let f = &g["final"];
    assert_eq!(f["State"], "Success", "{f}");
    assert_eq!(f["Count"], "3", "Count is a string, as MPS sends it");
    assert_eq!(f["Id"], id);
    assert_eq!(f["UserData"], "guide-sample");
    assert_eq!(f["Input"]["Object"], "example%2Ftest.flv");
    assert_eq!(
        f["SnapshotConfig"]["OutputFile"]["Object"],
        "output_%7BCount%7D.jpg"
    );
    assert_eq!(f["SnapshotConfig"]["Time"], "2");
    assert_eq!(f["SnapshotConfig"]["Num"], "3");
    assert!(f["SnapshotConfig"].get("BlackLevel").is_none());
    assert_eq!(g["get_state"], "Success");
    assert!(
        g["listed_ids"].as_array().unwrap().iter().any(|x| x == id),
        "by pipeline and time window: {g}"
    );

    // ... and it is the job the REST API shows: same id, state, MPS's answers.
    let rest = app.with_token(Some(&a.token));
    let res = rest.get(&format!("/v1/snapshot-jobs/{id}")).await;
    assert_eq!(res.status(), 200);
    let job: Value = res.json().await.unwrap();
    assert_eq!(job["id"], id);
    assert_eq!(job["team"], "alpha");
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["mps"]["state"], "Success");
    assert_eq!(job["mps"]["count"], 3);
    assert_eq!(job["request"]["user_data"], "guide-sample");
    assert_eq!(job["request"]["input"]["object"], "example/test.flv");
    assert_eq!(job["request"]["output"]["object"], "output_{Count}.jpg");
    assert_eq!(job["request"]["time_ms"], 2);
    let warnings: Vec<&str> = job["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    assert!(warnings.contains(&"time_ms_tiny"), "{warnings:?}");
    let responses: Value = rest
        .get(&format!("/v1/snapshot-jobs/{id}/mps-responses"))
        .await
        .json()
        .await
        .unwrap();
    assert!(responses.as_array().unwrap().len() >= 2, "{responses}");
    // MPS got the gateway id as UserData, never the team's text.
    let ledger: Value = reqwest::get(format!("{}/_emulator/jobs", emu.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(ledger["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["UserData"] == id));

    // (2) The Tea SDK, ACS3 and v1.
    for client in ["tea_acs3", "tea_v1"] {
        let t = &s[client];
        assert!(t["error"].is_null(), "{client}: {t}");
        assert_eq!(t["final_state"], "Success", "{client}: {t}");
        assert_eq!(t["count"], "3", "{client}");
        assert_eq!(t["num"], "3", "{client}");
        assert_eq!(
            t["user_data"],
            client.replace('_', "-").replace("v1", "v2"),
            "{client}"
        );
        let id = t["id"].as_str().unwrap();
        let job: Value = rest
            .get(&format!("/v1/snapshot-jobs/{id}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(job["state"], "succeeded", "{client}: {job}");
    }

    // (3) A wrong secret: SignatureDoesNotMatch. The legacy SDK compares the server's
    // string-to-sign with its own and, when equal, reports InvalidAccessKeySecret: proof that
    // snapgate canonicalized byte for byte like the SDK and only the secret differs.
    assert_eq!(
        s["wrong_secret_legacy"]["code"], "InvalidAccessKeySecret",
        "{}",
        s["wrong_secret_legacy"]
    );
    assert_eq!(s["wrong_secret_tea_acs3"]["code"], "SignatureDoesNotMatch");
    assert_eq!(s["wrong_secret_tea_v1"]["code"], "SignatureDoesNotMatch");
    // (4) A revoked key, an unknown one.
    assert_eq!(s["revoked_legacy"]["code"], "InvalidAccessKeyId.Inactive");
    assert_eq!(s["revoked_tea_acs3"]["code"], "InvalidAccessKeyId.Inactive");
    assert_eq!(s["unknown_key"]["code"], "InvalidAccessKeyId.NotFound");
    // (5) Team B cannot see team A's job: it is "non-existent", like an unknown id.
    let o = &s["other_team"];
    assert_eq!(o["found"], serde_json::json!([]), "{o}");
    assert_eq!(
        o["non_exist"],
        serde_json::json!([id, "0190a0b0-0000-7000-8000-000000000000"])
    );
    // (6) Every violation in one error.
    let inv = &s["invalid_config"];
    assert_eq!(inv["status"], 400, "{inv}");
    assert!(inv["code"]
        .as_str()
        .unwrap()
        .starts_with("InvalidParameter"));
    let msg = inv["message"].as_str().unwrap();
    for field in [
        "SnapshotConfig.OutputFile.Location",
        "SnapshotConfig.OutputFile.Object",
        "SnapshotConfig.Width",
        "SnapshotConfig.Height",
        "SnapshotConfig.FrameType",
        "SnapshotConfig.BlackLevel",
        "SnapshotConfig.TimeArray",
        "PipelineId",
    ] {
        assert!(msg.contains(field), "{field} not in: {msg}");
    }
    assert!(msg.starts_with("The request breaks 8 rule(s)"), "{msg}");

    app.stop().await.unwrap();
    emu.shutdown().await;
}

fn submit_params() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "Input",
            r#"{"Bucket":"media","Location":"oss-cn-shanghai","Object":"in%2Fa.mp4"}"#,
        ),
        (
            "SnapshotConfig",
            r#"{"OutputFile":{"Bucket":"media","Location":"oss-cn-shanghai","Object":"o.jpg"},"Time":"0"}"#,
        ),
        ("PipelineId", PIPELINE),
        ("UserData", "rust"),
    ]
}

async fn answer(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_clocks_limits_and_paging_answer_as_mps() {
    let (store, _db) = common::pg_store().await;
    let spawn = |store: DynStore| {
        TestApp::builder(store)
            .settings(|s| {
                s.auth.enabled = true;
                s.http.submit_wait_ms = 0;
                s.limits.team_max_active_jobs = 4;
            })
            .start()
    };
    let app = spawn(store.clone()).await;
    let replica = spawn(store.clone()).await;
    let k = app.key("alpha", false).await;
    let (id, secret) = (k.access_key_id.as_str(), k.access_key_secret.as_str());
    let http = reqwest::Client::new();
    let params = submit_params();

    // A nonce is good once, on every replica (the nonces are in the database).
    let call = V1Call::new("SubmitSnapshotJob", &params, id, secret);
    let (st, first) = answer(call.request(&http, &app.base).send().await.unwrap()).await;
    assert_eq!(st, 200, "{first}");
    assert_eq!(
        first["SnapshotJob"]["State"], "Submitted",
        "queued shows Submitted"
    );
    assert_eq!(first["SnapshotJob"]["UserData"], "rust");
    assert!(first["RequestId"].is_string());
    let (st, replay) = answer(call.request(&http, &replica.base).send().await.unwrap()).await;
    assert_eq!(
        (st, replay["Code"].as_str()),
        (400, Some("SignatureNonceUsed"))
    );
    let (st, _) = answer(call.request(&http, &app.base).send().await.unwrap()).await;
    assert_eq!(st, 400);

    // Outside ±15 minutes.
    let mut old = V1Call::new("QuerySnapshotJobList", &[], id, secret);
    old.timestamp = (chrono::Utc::now() - chrono::Duration::minutes(16))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let (st, e) = answer(old.request(&http, &app.base).send().await.unwrap()).await;
    assert_eq!(
        (st, e["Code"].as_str()),
        (400, Some("InvalidTimeStamp.Expired"))
    );

    // A missing parameter; an unknown action; the parameters in a form body (GET too).
    let only_input = [params[0]];
    let c = V1Call::new("SubmitSnapshotJob", &only_input, id, secret);
    let (st, e) = answer(c.request(&http, &app.base).send().await.unwrap()).await;
    assert_eq!(
        (st, e["Code"].as_str()),
        (400, Some("MissingParameter")),
        "{e}"
    );
    assert!(e["Message"].as_str().unwrap().contains("SnapshotConfig"));
    let c = V1Call::new("SubmitTranscodeJobs", &[], id, secret);
    let (st, e) = answer(c.request(&http, &app.base).send().await.unwrap()).await;
    assert_eq!(
        (st, e["Code"].as_str()),
        (404, Some("InvalidAction.NotFound"))
    );
    let c = V1Call::new("SubmitSnapshotJob", &params, id, secret);
    let res = http
        .post(format!("{}/", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(c.query())
        .send()
        .await
        .unwrap();
    let (st, body) = answer(res).await;
    assert_eq!(st, 200, "form body: {body}");
    let mut c = V1Call::new("QuerySnapshotJobList", &[], id, secret);
    c.method = "GET";
    let (st, body) = answer(c.request(&http, &app.base).send().await.unwrap()).await;
    assert_eq!(st, 200, "GET: {body}");

    // Over the in-flight quota (4, nothing is delivered here): Throttling.User, 400, with the
    // Tea SDK's retry hint.
    let mut codes = Vec::new();
    for _ in 0..3 {
        let c = V1Call::new("SubmitSnapshotJob", &params, id, secret);
        let res = c.request(&http, &app.base).send().await.unwrap();
        let retry = res.headers().get("x-acs-retry-after").cloned();
        let (st, body) = answer(res).await;
        codes.push((
            st,
            body["Code"].as_str().map(str::to_string),
            retry.is_some(),
        ));
    }
    assert_eq!(
        codes.last().unwrap(),
        &(400, Some("Throttling.User".to_string()), true),
        "{codes:?}"
    );

    // Paging by pipeline, newest first, 32-hex tokens.
    let size = [("PipelineId", PIPELINE), ("MaximumPageSize", "2")];
    let c = V1Call::new("QuerySnapshotJobList", &size, id, secret);
    let (st, page1) = answer(c.request(&http, &app.base).send().await.unwrap()).await;
    assert_eq!(st, 200, "{page1}");
    let token = page1["NextPageToken"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 32);
    let with_token = [
        ("PipelineId", PIPELINE),
        ("MaximumPageSize", "2"),
        ("NextPageToken", token.as_str()),
    ];
    let c = V1Call::new("QuerySnapshotJobList", &with_token, id, secret);
    let (_, page2) = answer(c.request(&http, &app.base).send().await.unwrap()).await;
    let ids = |p: &Value| -> Vec<String> {
        p["SnapshotJobList"]["SnapshotJob"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["Id"].as_str().unwrap().to_string())
            .collect()
    };
    let (p1, p2) = (ids(&page1), ids(&page2));
    assert_eq!((p1.len(), p2.len()), (2, 2), "{page1} {page2}");
    assert!(page2.get("NextPageToken").is_none());
    assert!(p1.iter().all(|x| !p2.contains(x)));
    // Bad filters: every one in one answer.
    let bad = [
        ("State", "Done"),
        ("MaximumPageSize", "0"),
        ("StartOfJobCreatedTimeRange", "yesterday"),
    ];
    let c = V1Call::new("QuerySnapshotJobList", &bad, id, secret);
    let (st, e) = answer(c.request(&http, &app.base).send().await.unwrap()).await;
    assert_eq!(st, 400);
    let m = e["Message"].as_str().unwrap();
    assert!(
        m.contains("State") && m.contains("MaximumPageSize") && m.contains("StartOf"),
        "{m}"
    );
    // More than 10 ids.
    let many = [p1[0].as_str(); 11].join(",");
    let q = [("SnapshotJobIds", many.as_str())];
    let c = V1Call::new("QuerySnapshotJobList", &q, id, secret);
    let (st, e) = answer(c.request(&http, &app.base).send().await.unwrap()).await;
    assert_eq!(
        (st, e["Code"].as_str()),
        (400, Some("InvalidParameter.OutOfRange"))
    );

    app.stop().await.unwrap();
    replica.stop().await.unwrap();
}

async fn nonce_and_lookup_conformance(store: DynStore) {
    let now = snapgate::store::now();
    let later = now + chrono::Duration::minutes(16);
    assert!(store.use_nonce("k", "n1", now, later).await.unwrap());
    assert!(!store.use_nonce("k", "n1", now, later).await.unwrap());
    assert!(store.use_nonce("other", "n1", now, later).await.unwrap());
    // Expired: taken over, then live again.
    let after = later + chrono::Duration::seconds(1);
    assert!(store
        .use_nonce("k", "n1", after, after + chrono::Duration::minutes(16))
        .await
        .unwrap());
    assert!(!store.use_nonce("k", "n1", after, after).await.unwrap());
    assert_eq!(store.purge_nonces(after).await.unwrap(), 1, "other/n1");

    assert!(store
        .api_key_by_access_key_id("nope")
        .await
        .unwrap()
        .is_none());
    store.create_team("alpha", now).await.unwrap();
    let master = common::app::master_key();
    let key = snapgate::services::keys::issue_key(&store, &master, "alpha", false)
        .await
        .unwrap();
    store.revoke_api_key(&key.access_key_id, now).await.unwrap();
    let rec = store
        .api_key_by_access_key_id(&key.access_key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.team, "alpha");
    assert!(
        rec.revoked_at.is_some(),
        "revoked keys are found, and refused by the caller"
    );
    assert_eq!(
        master.decrypt(&rec.secret_ciphertext).unwrap().expose(),
        key.access_key_secret
    );

    let body = |pipeline: Option<&str>| {
        let mut b = serde_json::json!({
            "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.mp4"},
            "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.jpg"}
        });
        if let Some(p) = pipeline {
            b["pipeline_id"] = p.into();
        }
        snapgate::domain::validate_request(&b).unwrap().0
    };
    let mut ids = Vec::new();
    for (i, (team, pl)) in [
        ("alpha", Some(PIPELINE)),
        ("alpha", None),
        ("beta", Some(PIPELINE)),
        ("alpha", Some("0123456789abcdef0123456789abcdef")),
    ]
    .into_iter()
    .enumerate()
    {
        let id = JobId::new();
        store
            .create_job(
                snapgate::domain::NewJob {
                    id,
                    team: team.into(),
                    request: body(pl),
                    warnings: vec![],
                    created_at: now + chrono::Duration::milliseconds(i as i64),
                    preset: None,
                },
                None,
            )
            .await
            .unwrap();
        ids.push(id);
    }
    let found = store.jobs_by_ids("alpha", &ids).await.unwrap();
    assert_eq!(found.len(), 3, "beta's job is not alpha's");
    let list = |f: PipelineJobFilter| {
        let store = store.clone();
        async move {
            store
                .list_pipeline_jobs(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|j| j.id)
                .collect::<Vec<_>>()
        }
    };
    let base = PipelineJobFilter {
        team: "alpha".into(),
        pipeline_id: Some(PIPELINE.into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(list(base.clone()).await, vec![ids[0]]);
    let with_default = PipelineJobFilter {
        include_unset_pipeline: true,
        ..base.clone()
    };
    assert_eq!(
        list(with_default).await,
        vec![ids[1], ids[0]],
        "newest first"
    );
    let window = PipelineJobFilter {
        created_from: Some(now + chrono::Duration::milliseconds(1)),
        created_to: Some(now + chrono::Duration::milliseconds(3)),
        pipeline_id: None,
        ..base.clone()
    };
    assert_eq!(list(window).await, vec![ids[3], ids[1]], "inclusive window");
    let states = PipelineJobFilter {
        states: vec![snapgate::domain::JobState::Succeeded],
        ..base.clone()
    };
    assert!(list(states).await.is_empty());
}

#[tokio::test]
async fn nonce_and_lookup_stores_agree_on_postgres() {
    let (store, _db) = common::pg_store().await;
    nonce_and_lookup_conformance(store).await;
}

#[tokio::test]
async fn nonce_and_lookup_stores_agree_on_sqlite() {
    let (store, _dir) = common::sqlite_store().await;
    nonce_and_lookup_conformance(store).await;
}

#[tokio::test]
async fn with_auth_off_calls_are_the_default_teams() {
    let (store, _dir) = common::sqlite_store().await;
    let app = TestApp::builder(store)
        .settings(|s| s.http.submit_wait_ms = 0)
        .start()
        .await;
    let params = submit_params();
    let c = V1Call::new("SubmitSnapshotJob", &params, "anyone", "anything");
    let http = reqwest::Client::new();
    let (st, body) = answer(c.request(&http, &app.base).send().await.unwrap()).await;
    assert_eq!(st, 200, "{body}");
    let id = body["SnapshotJob"]["Id"].as_str().unwrap();
    let job: Value = app
        .get(&format!("/v1/snapshot-jobs/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["team"], "default");
    app.stop().await.unwrap();
}

/// `x-snapgate-dry-run: true` on `SubmitSnapshotJob` answers the REST dry run (the MPS parameters
/// that would be sent, the predicted outputs) and records nothing; invalid parameters still get
/// every violation in one MPS error; a bad header value is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_header_previews_and_records_nothing() {
    let (store, _db) = common::pg_store().await;
    let app = TestApp::builder(store.clone())
        .settings(|s| s.auth.enabled = true)
        .start()
        .await;
    let k = app.key("alpha", false).await;
    let (id, secret) = (k.access_key_id.as_str(), k.access_key_secret.as_str());
    let http = reqwest::Client::new();
    let params = submit_params();

    let call = V1Call::new("SubmitSnapshotJob", &params, id, secret);
    let res = call
        .request(&http, &app.base)
        .header("x-snapgate-dry-run", "true")
        .header("x-snapgate-duration-ms", "10000")
        .send()
        .await
        .unwrap();
    let (st, a) = answer(res).await;
    assert_eq!(st, 200, "{a}");
    assert!(a["RequestId"].is_string());
    let dry = &a["DryRun"];
    assert_eq!(dry["dry_run"], true, "{a}");
    assert_eq!(dry["mps"]["Action"], "SubmitSnapshotJob");
    assert_eq!(dry["mps"]["PipelineId"], PIPELINE);
    assert!(
        dry["mps"]["Input"]
            .as_str()
            .unwrap()
            .contains("\"Object\":\"in%2Fa.mp4\""),
        "the object key as MPS gets it: {a}"
    );
    assert_eq!(dry["duration_ms"], 10000);
    assert_eq!(dry["snapshot_times_ms"], serde_json::json!([0]));
    assert!(a.get("SnapshotJob").is_none());
    // Nothing recorded for the team.
    let jobs = store
        .list_pipeline_jobs(&PipelineJobFilter {
            team: "alpha".into(),
            limit: 10,
            ..PipelineJobFilter::default()
        })
        .await
        .unwrap();
    assert!(jobs.is_empty(), "a dry run recorded {} job(s)", jobs.len());

    // Invalid: every violation, as a real submit answers.
    let bad = [
        params[0],
        (
            "SnapshotConfig",
            r#"{"OutputFile":{"Bucket":"m","Location":"x","Object":"o.jpg"},"Num":"0"}"#,
        ),
    ];
    let call = V1Call::new("SubmitSnapshotJob", &bad, id, secret);
    let res = call
        .request(&http, &app.base)
        .header("x-snapgate-dry-run", "true")
        .send()
        .await
        .unwrap();
    let (st, e) = answer(res).await;
    assert_eq!(st, 400, "{e}");
    assert!(
        e["Code"].as_str().unwrap().starts_with("InvalidParameter"),
        "{e}"
    );
    assert!(e["Message"].as_str().unwrap().contains("rule(s)"), "{e}");

    let call = V1Call::new("SubmitSnapshotJob", &params, id, secret);
    let res = call
        .request(&http, &app.base)
        .header("x-snapgate-dry-run", "maybe")
        .send()
        .await
        .unwrap();
    let (st, e) = answer(res).await;
    assert_eq!(
        (st, e["Code"].as_str()),
        (400, Some("InvalidParameter")),
        "{e}"
    );
    app.stop().await.unwrap();
}
