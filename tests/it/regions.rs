//! MPS regions (issue 32 item 3): a job goes to the MPS region of its input bucket; its output
//! and sprite buckets must be in that region, and a region snapgate does not serve is refused,
//! naming the served ones — on the REST API, the MPS-compatible endpoint, presets and upload
//! intents. Then three regions, each its own emulator: every job reaches only its region's
//! endpoint, and one region's outage or throttling leaves the other two draining at full budget.

use crate::common;
use crate::support::media;

use serde_json::{json, Value};
use snapgate::config::{RegionSettings, Settings};

use common::mps_rpc::V1Call;
use common::TestApp;

fn oss(location: &str, key: &str) -> Value {
    json!({"location": location, "bucket": "media", "object": key})
}

fn job(input: &str, output: &str) -> Value {
    json!({"input": oss(input, "in/a.mp4"), "output": oss(output, "o/{Count}.jpg"), "num": 2})
}

/// Shanghai (the default region) and Beijing; Hangzhou is not served.
fn two_regions(s: &mut Settings) {
    s.regions
        .insert("cn-beijing".into(), RegionSettings::default());
}

async fn post(app: &TestApp, path: &str, body: &Value) -> (u16, Value) {
    let res = app
        .req(reqwest::Method::POST, path)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// `(field, code)` of each violation of a problem answer.
fn violations(p: &Value) -> Vec<(String, String)> {
    p["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors: {p}"))
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_string(),
                e["code"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(f, c)| (f.to_string(), c.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_of_another_region_and_unserved_regions_answer_422_everywhere() {
    let (store, db) = common::pg_store().await;
    let app = TestApp::builder(store)
        .keep(db)
        .settings(|s| {
            two_regions(s);
            s.auth.enabled = true;
            s.http.submit_wait_ms = 0;
            // Intents sign forms with this key; nothing reaches OSS here.
            s.uploads.access_key_id = Some("uploadkey".into());
            s.uploads.access_key_secret = Some(snapgate::secret::Secret::new("uploadsecret"));
        })
        .start()
        .await;
    let k = app.key("alpha", false).await;
    let alpha = app.with_token(Some(&k.token));

    // REST: in one served region, accepted (either region).
    for loc in ["oss-cn-shanghai", "oss-cn-beijing"] {
        let (s, j) = post(&alpha, "/v1/snapshot-jobs", &job(loc, loc)).await;
        assert_eq!(s, 202, "{loc}: {j}");
    }
    // Output and sprite in other regions than the input's.
    let mut body = job("oss-cn-beijing", "oss-cn-shanghai");
    body["sprite"] = json!({"output": oss("oss-cn-hangzhou", "s/{TileCount}.jpg")});
    let (s, p) = post(&alpha, "/v1/snapshot-jobs", &body).await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(
        violations(&p),
        pairs(&[
            ("/output/location", "region_mismatch"),
            ("/sprite/output/location", "region_mismatch")
        ])
    );
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("oss-cn-beijing"),
        "{p}"
    );
    // A region not served names the served ones.
    let (s, p) = post(
        &alpha,
        "/v1/snapshot-jobs",
        &job("oss-cn-hangzhou", "oss-cn-hangzhou"),
    )
    .await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(
        violations(&p),
        pairs(&[("/input/location", "region_not_served")])
    );
    let msg = p["errors"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("cn-hangzhou") && msg.contains("cn-shanghai, cn-beijing"),
        "{msg}"
    );
    // The dry run says the same.
    let (s, p) = post(
        &alpha,
        "/v1/snapshot-jobs?dry_run=true",
        &job("oss-cn-beijing", "oss-cn-shanghai"),
    )
    .await;
    assert_eq!(
        (s, violations(&p)),
        (422, pairs(&[("/output/location", "region_mismatch")]))
    );

    // The MPS-compatible endpoint: MPS's error shape, 422.
    let http = reqwest::Client::new();
    let (id, secret) = (k.access_key_id.as_str(), k.access_key_secret.as_str());
    let mismatched = [
        (
            "Input",
            r#"{"Bucket":"media","Location":"oss-cn-beijing","Object":"in%2Fa.mp4"}"#,
        ),
        (
            "SnapshotConfig",
            r#"{"OutputFile":{"Bucket":"media","Location":"oss-cn-shanghai","Object":"o.jpg"},"Time":"0"}"#,
        ),
    ];
    let unserved = [
        (
            "Input",
            r#"{"Bucket":"media","Location":"oss-cn-hangzhou","Object":"in%2Fa.mp4"}"#,
        ),
        (
            "SnapshotConfig",
            r#"{"OutputFile":{"Bucket":"media","Location":"oss-cn-hangzhou","Object":"o.jpg"},"Time":"0"}"#,
        ),
    ];
    for (params, says) in [
        (&mismatched[..], "SnapshotConfig.OutputFile.Location"),
        (&unserved[..], "cn-shanghai, cn-beijing"),
    ] {
        let call = V1Call::new("SubmitSnapshotJob", params, id, secret);
        let res = call.request(&http, &app.base).send().await.unwrap();
        let status = res.status().as_u16();
        let e: Value = res.json().await.unwrap();
        assert_eq!(
            (status, e["Code"].as_str()),
            (422, Some("InvalidParameter.ResourceNotFound")),
            "{e}"
        );
        assert!(e["RequestId"].is_string(), "{e}");
        assert!(e["Message"].as_str().unwrap().contains(says), "{e}");
    }

    // Presets: outputs in two regions, or in one not served.
    let mut request =
        json!({"output": oss("oss-cn-shanghai", "t/{UploadId}/{Count}.jpg"), "num": 3});
    request["sprite"] = json!({"output": oss("oss-cn-beijing", "s/{UploadId}/{TileCount}.jpg")});
    let (s, p) = post(
        &alpha,
        "/v1/presets",
        &json!({"name": "split", "request": request}),
    )
    .await;
    assert_eq!(
        (s, violations(&p)),
        (
            422,
            pairs(&[("/request/sprite/output/location", "region_mismatch")])
        ),
        "{p}"
    );
    let far = json!({"output": oss("oss-cn-hangzhou", "t/{UploadId}/{Count}.jpg"), "num": 3});
    let (s, p) = post(
        &alpha,
        "/v1/presets",
        &json!({"name": "far", "request": far}),
    )
    .await;
    assert_eq!(
        (s, violations(&p)),
        (
            422,
            pairs(&[("/request/output/location", "region_not_served")])
        ),
        "{p}"
    );

    // Upload intents: the upload bucket is in Shanghai (the default `uploads.*`); a preset
    // writing to Beijing has no upload bucket in its region (regions.cn-beijing.upload_bucket).
    let bj = json!({"output": oss("oss-cn-beijing", "t/{UploadId}/{Count}.jpg"), "num": 3});
    let (s, p) = post(&alpha, "/v1/presets", &json!({"name": "bj", "request": bj})).await;
    assert_eq!(s, 201, "{p}");
    let sh = json!({"output": oss("oss-cn-shanghai", "t/{UploadId}/{Count}.jpg"), "num": 3});
    let (s, p) = post(&alpha, "/v1/presets", &json!({"name": "sh", "request": sh})).await;
    assert_eq!(s, 201, "{p}");
    let intent = |preset: &str| json!({"preset": preset, "filename": "a.mp4", "content_type": "video/mp4", "size_bytes": 1000});
    let (s, p) = post(&alpha, "/v1/uploads", &intent("sh")).await;
    assert_eq!(s, 201, "{p}");
    let (s, p) = post(&alpha, "/v1/uploads", &intent("bj")).await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(
        violations(&p),
        pairs(&[("/preset", "region_no_upload_bucket")]),
        "{p}"
    );
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("cn-beijing"),
        "{p}"
    );
    app.stop().await.unwrap();
}

/// The browser's form post, `multipart/form-data` with the fields in order and the file last.
async fn post_form(intent: &Value, file: &[u8]) -> (u16, String) {
    let boundary = format!("----snapgate{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::new();
    for f in intent["form"]["fields"].as_array().unwrap() {
        let (name, value) = (f["name"].as_str().unwrap(), f["value"].as_str().unwrap());
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp4\"\r\nContent-Type: video/mp4\r\n\r\n").as_bytes());
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let res = reqwest::Client::new()
        .post(intent["form"]["url"].as_str().unwrap())
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// Per region an upload bucket: an intent goes to the bucket of its preset's output region (the
/// form posts to that region's store, signed for that region), the object lands there, and its
/// job goes to that region's MPS only and writes its outputs there. A served region without an
/// upload bucket refuses intents, naming the regions that have one. Shanghai and Beijing are
/// each an emulator playing only its region, MPS and store (its V4 scope checked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_goes_to_the_bucket_of_its_presets_region_and_its_job_to_that_region() {
    let video = std::fs::read(media::small_video()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut emus = Vec::new();
    for region in ["cn-shanghai", "cn-beijing"] {
        let oss_dir = dir.path().join(region);
        emus.push(
            common::app::test_emulator(|c| {
                c.region = Some(region.into());
                c.oss_region = Some(region.into());
                c.oss_dir = Some(oss_dir);
                c.start_ms = 10;
                c.process_ms = 50;
            })
            .await,
        );
    }
    let (sh, bj) = (emus[0].url(), emus[1].url());
    let (store, db) = common::pg_store().await;
    let app = TestApp::builder(store)
        .keep(db)
        .embedded_default()
        .settings(|s| {
            s.worker.enabled = true;
            s.worker.status_poll_min_ms = 100;
            s.worker.status_poll_max_ms = 300;
            s.worker.idle_poll_ms = 100;
            s.auth.enabled = true;
            s.http.submit_wait_ms = 0;
            s.mps.endpoint = Some(sh.clone());
            s.mps.access_key_id = Some(common::app::EMU_KEY_ID.into());
            s.mps.access_key_secret = Some(snapgate::secret::Secret::new(common::app::EMU_SECRET));
            s.uploads.endpoint = Some(format!("{sh}/media"));
            let beijing = RegionSettings {
                endpoint: Some(bj.clone()),
                upload_bucket: Some("media-bj".into()),
                upload_endpoint: Some(format!("{bj}/media-bj")),
                ..RegionSettings::default()
            };
            s.regions.insert("cn-beijing".into(), beijing);
            // Served, no upload bucket (its MPS is never called here).
            let hangzhou = RegionSettings {
                endpoint: Some(sh.clone()),
                ..RegionSettings::default()
            };
            s.regions.insert("cn-hangzhou".into(), hangzhou);
        })
        .start()
        .await;
    let k = app.key("alpha", false).await;
    let alpha = app.with_token(Some(&k.token));
    let preset = |location: &str, bucket: &str| {
        json!({"output": {"location": location, "bucket": bucket, "object": "t/{UploadId}/{Count}.jpg"},
               "num": 2, "time_ms": 0, "interval_s": 1, "width": 160, "frame_type": "normal"})
    };
    for (name, loc, bucket) in [
        ("sh", "oss-cn-shanghai", "media"),
        ("bj", "oss-cn-beijing", "media-bj"),
        ("hz", "oss-cn-hangzhou", "media-hz"),
    ] {
        let body = json!({"name": name, "request": preset(loc, bucket)});
        let (s, p) = post(&alpha, "/v1/presets", &body).await;
        assert_eq!(s, 201, "{p}");
    }
    let intent = |preset: &str| json!({"preset": preset, "filename": "a.mp4", "content_type": "video/mp4", "size_bytes": video.len()});

    // Hangzhou is served but has no upload bucket.
    let (s, p) = post(&alpha, "/v1/uploads", &intent("hz")).await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(
        violations(&p),
        pairs(&[("/preset", "region_no_upload_bucket")]),
        "{p}"
    );
    let message = p["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("cn-shanghai, cn-beijing"), "{message}");

    for (r, (preset, region, bucket)) in [
        ("sh", "cn-shanghai", "media"),
        ("bj", "cn-beijing", "media-bj"),
    ]
    .into_iter()
    .enumerate()
    {
        let (s, i) = post(&alpha, "/v1/uploads", &intent(preset)).await;
        assert_eq!(s, 201, "{i}");
        assert_eq!(i["upload"]["object"]["location"], format!("oss-{region}"));
        assert_eq!(i["upload"]["object"]["bucket"], bucket);
        assert_eq!(i["form"]["url"], format!("{}/{bucket}", emus[r].url()));
        // The region's own store takes the form: it checks the scope names its region.
        let (s, text) = post_form(&i, &video).await;
        assert_eq!(s, 200, "{text}");
        let id = i["upload_id"].as_str().unwrap();
        let key = i["upload"]["object"]["object"].as_str().unwrap();
        let region_dir = dir.path().join(region).join(bucket);
        assert!(region_dir.join(key).is_file(), "{bucket}/{key}");

        // `complete`: the HEAD in that region's store finds it; the job goes to its MPS.
        let browser = app.with_token(Some(i["browser_token"].as_str().unwrap()));
        let (s, p) = post(&browser, &format!("/v1/uploads/{id}/complete"), &json!({})).await;
        assert!(s == 200 || s == 201, "{s} {p}");
        let job_id = p["job"]["id"].as_str().unwrap().to_string();
        let job = alpha
            .wait_final(&job_id, std::time::Duration::from_secs(60))
            .await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["request"]["input"]["location"], format!("oss-{region}"));
        assert_eq!(job["request"]["input"]["bucket"], bucket, "{job}");
        for (other, emu) in emus.iter().enumerate() {
            let ledger = common::app::emulator_ledger(&emu.url()).await;
            assert_eq!(
                ledger.contains_key(&job_id),
                other == r,
                "{region}: {ledger:?}"
            );
        }
        assert!(
            region_dir.join(format!("t/{id}")).is_dir(),
            "{region}'s outputs"
        );
    }
    app.stop().await.unwrap();
}

/// The local store checks the region of a V4 signature per bucket: an upload bucket of another
/// region than the store's (`oss_bucket_regions`) needs its own region in the scope, as OSS.
#[tokio::test]
async fn the_local_store_checks_each_upload_buckets_region() {
    let dir = tempfile::tempdir().unwrap();
    let emu = common::app::test_emulator(|c| {
        c.oss_dir = Some(dir.path().into());
        c.oss_region = Some("cn-shanghai".into());
        c.oss_bucket_regions = vec![("media-bj".into(), "cn-beijing".into())];
    })
    .await;
    let creds = snapgate::oss::OssCredentials {
        access_key_id: common::app::EMU_KEY_ID.into(),
        access_key_secret: snapgate::secret::Secret::new(common::app::EMU_SECRET),
        security_token: None,
    };
    let http = reqwest::Client::new();
    let head = |region: &'static str, bucket: &'static str| {
        let (http, creds, url) = (
            http.clone(),
            creds.clone(),
            format!("{}/{bucket}", emu.url()),
        );
        async move { snapgate::oss::v4::head_object(&http, &creds, region, &url, "x.mp4").await }
    };
    // Signed for the bucket's region: authenticated (and the object is not there).
    assert_eq!(head("cn-beijing", "media-bj").await.unwrap(), None);
    assert_eq!(head("cn-shanghai", "media").await.unwrap(), None);
    // Signed for another region: refused.
    let e = head("cn-shanghai", "media-bj").await.unwrap_err();
    assert_eq!(e.status, 403, "{e:?}");
    let e = head("cn-beijing", "media").await.unwrap_err();
    assert_eq!(e.status, 403, "{e:?}");
}

const REGIONS: [&str; 3] = ["cn-shanghai", "cn-beijing", "cn-hangzhou"];
/// Each region's own submit budget (`worker.budget_scope = "region"`).
/// Low enough that the budget, not a loaded machine running a debug build, is what limits
/// each region's drain (three regions at 20/s each drained at 4 to 11 jobs/s apiece here): so
/// "full budget" can be read off the figures the test prints.
const QPS: u32 = 5;
/// Jobs per region per phase.
const N: usize = 25;

/// Posts `N` jobs in each region at once; answers each region's job ids.
async fn post_jobs(app: &TestApp, phase: &str) -> Vec<Vec<String>> {
    use futures::StreamExt;
    let bodies: Vec<(usize, Value)> = (0..N)
        .flat_map(|i| {
            REGIONS.iter().enumerate().map(move |(r, region)| {
                let loc = format!("oss-{region}");
                let mut b = job(&loc, &loc);
                b["user_data"] = json!(format!("{phase}-{i}"));
                (r, b)
            })
        })
        .collect();
    let answers: Vec<(usize, String)> = futures::stream::iter(bodies)
        .map(|(r, b)| async move {
            let res = app.post_job(&b, None).await;
            let status = res.status().as_u16();
            let j: Value = res.json().await.unwrap();
            assert!(status == 201 || status == 202, "{status} {j}");
            (r, j["id"].as_str().unwrap().to_string())
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut ids = vec![Vec::new(); REGIONS.len()];
    for (r, id) in answers {
        ids[r].push(id);
    }
    ids
}

/// Waits until every region in `regions` has accepted `target` jobs in all on its emulator;
/// answers each one's time from `start`, in seconds.
async fn drained(
    emus: &[snapgate::emulator::EmulatorHandle],
    regions: &[usize],
    target: usize,
    start: std::time::Instant,
) -> Vec<f64> {
    let mut done: Vec<Option<f64>> = vec![None; REGIONS.len()];
    let limit = start + std::time::Duration::from_secs(60);
    while regions.iter().any(|r| done[*r].is_none()) {
        for &r in regions {
            if done[r].is_none()
                && common::app::emulator_ledger(&emus[r].url())
                    .await
                    .values()
                    .sum::<usize>()
                    >= target
            {
                done[r] = Some(start.elapsed().as_secs_f64());
            }
        }
        assert!(std::time::Instant::now() < limit, "not drained: {done:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    regions.iter().map(|r| done[*r].unwrap()).collect()
}

async fn set_faults(emu: &snapgate::emulator::EmulatorHandle, faults: Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/_emulator/faults", emu.url()))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
}

/// The role the three regions' credential is assumed as.
const ROLE: &str = "acs:ram::1234567890123456:role/snapgate";
/// The lifetime of that credential's tokens: several refreshes within the test.
const TOKEN_TTL_S: u64 = 4;

/// Three regions, each its own emulator playing only that region (it refuses another region's
/// buckets, as MPS does), built as `serve` builds them: every region's client from the one
/// credential of the chain — a RAM role assumed from a narrow key on an STS the three share
/// (STS credentials are account-wide), its 4-second tokens refreshed in the background. The
/// regions' emulators know no static key at all, so a client signing with anything but the
/// chain's current token is refused. Every job reaches its own region's endpoint only, and
/// with one region's MPS down, then throttled, the other two still drain at their full budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_regions_each_job_reaches_its_own_region_and_one_regions_fault_holds_no_other() {
    use snapgate::emulator::sts::StsIssuer;
    let sts = std::sync::Arc::new(StsIssuer::new(TOKEN_TTL_S, "snapgate".into()));
    // STS alone: the only emulator that knows the narrow key the role is assumed from.
    let sts_emu = common::app::test_emulator(|c| c.sts = Some(sts.clone())).await;
    let mut emus = Vec::new();
    for region in REGIONS {
        emus.push(
            common::app::test_emulator(|c| {
                c.region = Some(region.to_string());
                c.access_keys = Vec::new();
                c.sts = Some(sts.clone());
                c.start_ms = 10;
                c.process_ms = 50;
            })
            .await,
        );
    }
    let (store, db) = common::pg_store().await;
    let urls: Vec<String> = emus.iter().map(|e| e.url()).collect();
    let app = TestApp::builder(store)
        .keep(db)
        .embedded_default()
        .settings(|s| {
            s.worker.enabled = true;
            s.mps.region = REGIONS[0].into();
            s.mps.endpoint = Some(urls[0].clone());
            for (r, url) in REGIONS.iter().zip(&urls).skip(1) {
                let table = RegionSettings {
                    endpoint: Some(url.clone()),
                    ..RegionSettings::default()
                };
                s.regions.insert(r.to_string(), table);
            }
            s.mps.access_key_id = Some(common::app::EMU_KEY_ID.into());
            s.mps.access_key_secret = Some(snapgate::secret::Secret::new(common::app::EMU_SECRET));
            s.credentials.role_arn = Some(ROLE.into());
            s.credentials.sts_endpoint = Some(sts_emu.url());
            s.http.submit_wait_ms = 0;
            s.worker.submit_qps = QPS;
            s.worker.query_qps = 1000;
            s.worker.backoff_base_ms = 20;
            s.worker.backoff_max_ms = 500;
            s.worker.idle_poll_ms = 100;
            s.worker.status_poll_min_ms = 100;
            s.worker.status_poll_max_ms = 300;
            s.limits.team_requests_per_second = 10_000;
            s.limits.team_burst = 10_000;
        })
        .start()
        .await;
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["credentials"]["provider"], "ram_role_arn", "{ready}");
    let all = [0, 1, 2];

    // No fault: every region drains at its own budget, side by side.
    let start = std::time::Instant::now();
    let mut ids = post_jobs(&app, "a").await;
    let posted = start.elapsed().as_secs_f64();
    let base = drained(&emus, &all, N, start).await;

    // Hangzhou's MPS down (every call 503): Shanghai and Beijing drain as before.
    set_faults(
        &emus[2],
        json!({"unavailable_next_submits": 1_000_000, "unavailable_next_queries": 1_000_000}),
    )
    .await;
    let start = std::time::Instant::now();
    for (r, more) in post_jobs(&app, "b").await.into_iter().enumerate() {
        ids[r].extend(more);
    }
    let down = drained(&emus, &[0, 1], 2 * N, start).await;

    // Hangzhou throttled instead (every call Throttling.User).
    set_faults(
        &emus[2],
        json!({"unavailable_next_submits": 0, "unavailable_next_queries": 0,
        "throttle_next_submits": 1_000_000, "throttle_next_queries": 1_000_000}),
    )
    .await;
    let start = std::time::Instant::now();
    for (r, more) in post_jobs(&app, "c").await.into_iter().enumerate() {
        ids[r].extend(more);
    }
    let throttled = drained(&emus, &[0, 1], 3 * N, start).await;
    assert_eq!(
        common::app::emulator_ledger(&emus[2].url())
            .await
            .values()
            .sum::<usize>(),
        N,
        "Hangzhou took nothing while down or throttled"
    );
    // Hangzhou back: its backlog drains.
    set_faults(
        &emus[2],
        json!({"throttle_next_submits": 0, "throttle_next_queries": 0}),
    )
    .await;
    drained(&emus, &[2], 3 * N, std::time::Instant::now()).await;

    // Jobs per second from the first POST of a phase to its N-th job accepted by the region's
    // MPS, and that as a share of the region's budget.
    let rate = |secs: f64| N as f64 / secs;
    let share = |secs: f64| 100.0 * rate(secs) / f64::from(QPS);
    eprintln!(
        "posting the {} jobs of the first phase took {posted:.1} s",
        3 * N
    );
    eprintln!(
        "jobs/s per region (budget {QPS}/s each, {N} jobs per region): no fault: shanghai {:.1}, beijing {:.1}, hangzhou {:.1}; hangzhou down: shanghai {:.1}, beijing {:.1}; hangzhou throttled: shanghai {:.1}, beijing {:.1}",
        rate(base[0]), rate(base[1]), rate(base[2]), rate(down[0]), rate(down[1]), rate(throttled[0]), rate(throttled[1])
    );
    eprintln!(
        "share of each region's budget: no fault: {:.0} %, {:.0} %, {:.0} %; hangzhou down: {:.0} %, {:.0} %; hangzhou throttled: {:.0} %, {:.0} %",
        share(base[0]), share(base[1]), share(base[2]), share(down[0]), share(down[1]), share(throttled[0]), share(throttled[1])
    );
    for (phase, secs) in [("down", &down), ("throttled", &throttled)] {
        for (r, s) in secs.iter().enumerate() {
            // Full budget: within 40% of the time without a fault (a loaded machine's slack),
            // and well within the time the two would take sharing one region's budget.
            assert!(
                *s < base[r] * 1.4 + 0.5,
                "{}: {s:.2} s with hangzhou {phase}, {:.2} s without",
                REGIONS[r],
                base[r]
            );
        }
    }

    // Each job reached its own region's endpoint only, once.
    for (r, emu) in emus.iter().enumerate() {
        let ledger = common::app::emulator_ledger(&emu.url()).await;
        let mut mine: Vec<&String> = ids[r].iter().collect();
        let mut seen: Vec<&String> = ledger.keys().collect();
        mine.sort();
        seen.sort();
        assert_eq!(seen, mine, "{}'s emulator saw exactly its jobs", REGIONS[r]);
        assert!(
            ledger.values().all(|n| *n == 1),
            "{}: {ledger:?}",
            REGIONS[r]
        );
    }
    for id in ids.iter().flatten() {
        let j = app.wait_final(id, std::time::Duration::from_secs(60)).await;
        assert_eq!(j["state"], "succeeded", "{j}");
    }

    // The one credential: refreshed meanwhile, and no region's emulator refused a call over a
    // key or a token (they know no static key: every call carried the chain's STS credential).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ready: Value = app.get("/readyz").await.json().await.unwrap();
        if ready["credentials"]["refreshes_ok"].as_u64().unwrap_or(0) >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{ready}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for (r, emu) in emus.iter().enumerate() {
        let stats: Value = reqwest::get(format!("{}/_emulator/stats", emu.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let text = stats.to_string();
        for code in [
            "InvalidSecurityToken",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
        ] {
            assert!(!text.contains(code), "{}: {text}", REGIONS[r]);
        }
    }

    // Stats and metrics by region.
    let stats: Value = app.get("/v1/admin/stats").await.json().await.unwrap();
    for region in REGIONS {
        let succeeded = stats["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["region"] == region && c["state"] == "succeeded")
            .unwrap_or_else(|| panic!("{region}: {stats}"));
        assert_eq!(succeeded["count"], 3 * N as u64, "{stats}");
    }
    let budgets: Vec<&str> = stats["upstream_budget"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    for name in [
        "mps.submit",
        "mps.submit.cn-beijing",
        "mps.submit.cn-hangzhou",
    ] {
        assert!(budgets.contains(&name), "{name}: {budgets:?}");
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for region in REGIONS {
        assert!(
            metrics.contains(&format!(
                "snapgate_region_jobs{{region=\"{region}\",state=\"succeeded\"}} {}",
                3 * N
            )),
            "{region}"
        );
        assert!(
            metrics.contains(&format!("snapgate_mps_calls_total{{region=\"{region}\",action=\"SubmitSnapshotJob\",code=\"Success\"}}")),
            "{region}"
        );
    }
    assert!(metrics.contains(
        "snapgate_mps_calls_total{region=\"cn-hangzhou\",action=\"SubmitSnapshotJob\",code=\"Throttling.User\"}"
    ));
    app.stop().await.unwrap();
}

/// An emulator playing one region refuses a bucket of another with MPS's code, before any job
/// is made; its own region's buckets pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emulator_region_refuses_another_regions_bucket() {
    let emu = common::app::test_emulator(|c| c.region = Some("cn-beijing".into())).await;
    let http = reqwest::Client::new();
    let file = |loc: &str, key: &str| {
        format!(r#"{{"Bucket":"media","Location":"{loc}","Object":"{key}"}}"#)
    };
    for (input, output, tile, refused) in [
        ("oss-cn-beijing", "oss-cn-beijing", None, None),
        ("oss-cn-shanghai", "oss-cn-beijing", None, Some("Input")),
        (
            "oss-cn-beijing",
            "oss-cn-shanghai",
            None,
            Some("OutputFile"),
        ),
        (
            "oss-cn-beijing",
            "oss-cn-beijing",
            Some("oss-cn-hangzhou"),
            Some("TileOutputFile"),
        ),
    ] {
        let input = file(input, "in.mp4");
        let mut config = format!(
            r#"{{"OutputFile":{},"Time":"0","Num":"2""#,
            file(output, "o%7BCount%7D.jpg")
        );
        if let Some(t) = tile {
            config.push_str(&format!(
                r#","TileOut":{{"Lines":"1","Columns":"2"}},"TileOutputFile":{}"#,
                file(t, "t.jpg")
            ));
        }
        config.push('}');
        let params = [
            ("Input", input.as_str()),
            ("SnapshotConfig", config.as_str()),
        ];
        let call = V1Call::new(
            "SubmitSnapshotJob",
            &params,
            common::app::EMU_KEY_ID,
            common::app::EMU_SECRET,
        );
        let res = call.request(&http, &emu.url()).send().await.unwrap();
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        match refused {
            None => assert_eq!(status, 200, "{body}"),
            Some(name) => {
                assert_eq!(
                    (status, body["Code"].as_str()),
                    (400, Some("InvalidParameter.ResourceNotFound")),
                    "{body}"
                );
                assert!(body["Message"].as_str().unwrap().contains(name), "{body}");
            }
        }
    }
    assert_eq!(common::app::emulator_ledger(&emu.url()).await.len(), 1);
    emu.shutdown().await;
}
