//! MPS regions (issue 32 item 3): a job goes to the MPS region of its input bucket; its output
//! and sprite buckets must be in that region, and a region snapgate does not serve is refused,
//! naming the served ones — on the REST API, the MPS-compatible endpoint, presets and upload
//! intents. Then three regions, each its own emulator: every job reaches only its region's
//! endpoint, and one region's outage or throttling leaves the other two draining at full budget.

use crate::common;

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
    // writing to Beijing has no upload bucket in its region.
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
    assert!(
        violations(&p)
            .iter()
            .any(|(f, c)| f == "/output/location" && c.starts_with("region_")),
        "{p}"
    );
    app.stop().await.unwrap();
}
