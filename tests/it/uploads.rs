//! Browser uploads, the product side: presets (versions, immutability, the validator's messages, the
//! version a job keeps) through the REST API on Postgres; and browser uploads on the embedded
//! default over Postgres — the built-in emulator's object store takes the signed PostObject form
//! and calls snapgate back, signed with its RSA key. The browser token's reach, a forged and a
//! replayed callback, callback and `complete` racing, `complete` before the object exists, an
//! expired intent, the live events and their resumption, and the job's outputs.
//!
//! OSS's callbacks reach snapgate through a small recording relay in the test (the
//! `http.public_url`): it forwards each callback and keeps the request, so the test can replay it
//! byte for byte, tamper with it, or hold it back to race it against `complete`.

use crate::common;
use crate::support::media;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use snapgate::config::Settings;

use common::TestApp;

const LOC: &str = "oss-cn-shanghai";

fn out(key: &str) -> Value {
    json!({"location": LOC, "bucket": "media", "object": key})
}

// ---------------------------------------------------------------------------------------------
// Presets (REST, Postgres, auth on)

async fn preset_app() -> (TestApp, TestApp) {
    let (store, db) = common::pg_store().await;
    let app = TestApp::builder(store)
        .keep(db)
        .settings(|s| s.auth.enabled = true)
        .start()
        .await;
    let a = app.key("alpha", false).await;
    let b = app.key("beta", false).await;
    (
        app.with_token(Some(&a.token)),
        app.with_token(Some(&b.token)),
    )
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

async fn get_json(app: &TestApp, path: &str) -> (u16, Value) {
    let res = app.get(path).await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn thumbs(key: &str) -> Value {
    json!({"output": out(key), "num": 3, "interval_s": 2, "width": 320, "frame_type": "normal"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presets_are_versioned_immutable_and_checked_by_the_job_validator() {
    let (alpha, beta) = preset_app().await;
    let v1 = thumbs("t/{FileName}/{Count}.jpg");
    let v2 = thumbs("t2/{FileName}/{Count}.jpg");

    let (s, p) = post(
        &alpha,
        "/v1/presets",
        &json!({"name": "thumbs", "request": v1}),
    )
    .await;
    assert_eq!(
        (s, p["ref"].as_str(), p["version"].as_u64()),
        (201, Some("thumbs@1"), Some(1)),
        "{p}"
    );
    let (s, p) = post(
        &alpha,
        "/v1/presets",
        &json!({"name": "thumbs", "request": v1}),
    )
    .await;
    assert_eq!(
        (s, p["ref"].as_str()),
        (200, Some("thumbs@1")),
        "the same body is the same version"
    );
    let (s, p) = post(
        &alpha,
        "/v1/presets",
        &json!({"name": "thumbs", "request": v2}),
    )
    .await;
    assert_eq!(
        (s, p["ref"].as_str()),
        (201, Some("thumbs@2")),
        "a new body is the next version"
    );
    // Version 1 is unchanged (immutable), the name alone is the latest.
    assert_eq!(
        get_json(&alpha, "/v1/presets/thumbs@1").await.1["request"],
        v1
    );
    assert_eq!(
        get_json(&alpha, "/v1/presets/thumbs").await.1["ref"],
        "thumbs@2"
    );
    let (_, list) = get_json(&alpha, "/v1/presets").await;
    let refs: Vec<&str> = list["presets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ref"].as_str().unwrap())
        .collect();
    assert_eq!(refs, ["thumbs@1", "thumbs@2"]);
    // Another team sees none of it.
    assert_eq!(get_json(&beta, "/v1/presets/thumbs").await.0, 404);
    assert_eq!(get_json(&beta, "/v1/presets").await.1["presets"], json!([]));
    assert_eq!(get_json(&alpha, "/v1/presets/thumbs@3").await.0, 404);

    // A bad preset: the job validator's own fields, codes and messages, all at once.
    let bad = json!({"name": "bad", "request": {
        "input": out("x.mp4"),
        "output": {"location": "cn-shanghai", "bucket": "media", "object": "t/x.jpg"},
        "num": 3, "width": 5000}});
    let (s, p) = post(&alpha, "/v1/presets", &bad).await;
    assert_eq!(s, 422, "{p}");
    let errors: Vec<(String, String)> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_string(),
                e["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        errors.contains(&("/request/input".into(), "not_allowed".into())),
        "{p}"
    );
    assert!(
        errors.contains(&("/request/output/location".into(), "invalid_format".into())),
        "{p}"
    );
    assert!(
        errors.contains(&("/request/width".into(), "out_of_range".into())),
        "{p}"
    );
    assert!(
        errors.contains(&(
            "/request/output/object".into(),
            "missing_placeholder".into()
        )),
        "{p}"
    );
    let width = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["field"] == "/request/width")
        .unwrap();
    assert_eq!(width["message"], "must be an integer from 8 to 4096");
    let (s, p) = post(
        &alpha,
        "/v1/presets",
        &json!({"name": "Bad Name", "request": v1}),
    )
    .await;
    assert_eq!((s, p["errors"][0]["field"].as_str()), (422, Some("/name")));
    assert_eq!(
        get_json(&alpha, "/v1/presets/bad").await.0,
        404,
        "nothing stored"
    );

    // A job from a preset keeps the resolved request and the version.
    let input = out("in/clip.mp4");
    let (s, j) = post(
        &alpha,
        "/v1/snapshot-jobs",
        &json!({"preset": "thumbs@1", "input": input}),
    )
    .await;
    assert_eq!(s, 202, "{j}");
    assert_eq!(j["preset"], "thumbs@1");
    assert_eq!(j["request"]["output"]["object"], "t/{FileName}/{Count}.jpg");
    assert_eq!(j["request"]["input"], input);
    // The name alone: the latest; overrides merge over the preset (JSON Merge Patch).
    let (s, j) = post(
        &alpha,
        "/v1/snapshot-jobs",
        &json!({"preset": "thumbs", "input": input, "width": 640}),
    )
    .await;
    assert_eq!(s, 202, "{j}");
    assert_eq!(
        (j["preset"].as_str(), j["request"]["width"].as_u64()),
        (Some("thumbs@2"), Some(640))
    );
    assert_eq!(
        j["request"]["output"]["object"],
        "t2/{FileName}/{Count}.jpg"
    );
    let stored = get_json(
        &alpha,
        &format!("/v1/snapshot-jobs/{}", j["id"].as_str().unwrap()),
    )
    .await
    .1;
    assert_eq!(
        (stored["preset"].clone(), stored["request"].clone()),
        (j["preset"].clone(), j["request"].clone())
    );
    // Overrides are validated like any job.
    let (s, p) = post(
        &alpha,
        "/v1/snapshot-jobs",
        &json!({"preset": "thumbs", "input": input, "width": 1}),
    )
    .await;
    assert_eq!(
        (s, p["errors"][0]["field"].as_str()),
        (422, Some("/width")),
        "{p}"
    );
    // Unknown, another team's, and malformed presets.
    for (body, code) in [
        (json!({"preset": "nope", "input": input}), "unknown_preset"),
        (
            json!({"preset": "thumbs@9", "input": input}),
            "unknown_preset",
        ),
        (
            json!({"preset": "thumbs@x", "input": input}),
            "invalid_format",
        ),
        (json!({"preset": 3, "input": input}), "invalid_type"),
    ] {
        let (s, p) = post(&alpha, "/v1/snapshot-jobs", &body).await;
        assert_eq!(
            (
                s,
                p["errors"][0]["field"].as_str(),
                p["errors"][0]["code"].as_str()
            ),
            (422, Some("/preset"), Some(code)),
            "{body}: {p}"
        );
    }
    let (s, p) = post(
        &beta,
        "/v1/snapshot-jobs",
        &json!({"preset": "thumbs", "input": input}),
    )
    .await;
    assert_eq!(
        (s, p["errors"][0]["code"].as_str()),
        (422, Some("unknown_preset"))
    );
    // A preset writing {UploadId} makes jobs for uploads only.
    let up = json!({"output": out("u/{UploadId}/{Count}.jpg"), "num": 2, "interval_s": 1});
    assert_eq!(
        post(&alpha, "/v1/presets", &json!({"name": "up", "request": up}))
            .await
            .0,
        201
    );
    let (s, p) = post(
        &alpha,
        "/v1/snapshot-jobs",
        &json!({"preset": "up", "input": input}),
    )
    .await;
    assert_eq!(
        (s, p["errors"][0]["code"].as_str()),
        (422, Some("needs_upload")),
        "{p}"
    );
}

// ---------------------------------------------------------------------------------------------
// Uploads on the embedded default (Postgres), with a recording callback relay

/// What OSS's callback carried, as the relay received it.
#[derive(Debug, Clone)]
struct Captured {
    path_and_query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A relay on `http.public_url`: records every callback; forwards it to snapgate unless told to
/// hold it (then answers OSS with an error, as an unreachable app server would).
struct Relay {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Captured>>>,
    hold: Arc<std::sync::atomic::AtomicBool>,
}

async fn relay(target: String) -> Relay {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Captured>>> = Arc::default();
    let hold: Arc<std::sync::atomic::AtomicBool> = Arc::default();
    let (seen2, hold2) = (seen.clone(), hold.clone());
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (seen, hold, http, target) =
            (seen2.clone(), hold2.clone(), http.clone(), target.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec();
            let pq = parts.uri.path_and_query().unwrap().as_str().to_string();
            let headers: Vec<(String, String)> = parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            seen.lock().unwrap().push(Captured {
                path_and_query: pq.clone(),
                headers: headers.clone(),
                body: body.clone(),
            });
            if hold.load(std::sync::atomic::Ordering::SeqCst) {
                return json_response(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "{\"held\": true}".into(),
                );
            }
            let c = Captured {
                path_and_query: pq,
                headers,
                body,
            };
            let res = send_callback(&http, &target, &c).await;
            let status = axum::http::StatusCode::from_u16(res.status().as_u16()).unwrap();
            json_response(status, res.text().await.unwrap())
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Relay { addr, seen, hold }
}

fn json_response(status: axum::http::StatusCode, body: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    (status, [("content-type", "application/json")], body).into_response()
}

/// Sends a captured callback to snapgate at `base`, headers as OSS sent them.
async fn send_callback(http: &reqwest::Client, base: &str, c: &Captured) -> reqwest::Response {
    let mut req = http
        .post(format!("{base}{}", c.path_and_query))
        .body(c.body.clone());
    for (k, v) in &c.headers {
        if matches!(
            k.as_str(),
            "authorization" | "x-oss-pub-key-url" | "content-type"
        ) {
            req = req.header(k, v);
        }
    }
    req.send().await.unwrap()
}

struct Env {
    base: String,
    http: reqwest::Client,
    token: String,
    relay: Relay,
    app_store: snapgate::store::DynStore,
    _db: common::PgDb,
    _dir: tempfile::TempDir,
    app: TestApp,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn env(tweak: impl FnOnce(&mut Settings)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = common::pg_store().await;
    let port = free_port();
    let relay = relay(format!("http://127.0.0.1:{port}")).await;
    let mut s = common::test_settings();
    s.http.listen = format!("127.0.0.1:{port}");
    s.http.public_url = Some(format!("http://{}", relay.addr));
    s.database.url = db.url.clone();
    s.worker.enabled = true;
    s.worker.status_poll_min_ms = 100;
    s.worker.status_poll_max_ms = 300;
    s.worker.idle_poll_ms = 100;
    s.auth.enabled = true;
    s.auth.master_key = Some(snapgate::secret::Secret::new(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        [42u8; 32],
    )));
    s.emulator.oss_dir = dir.path().join("oss").display().to_string();
    s.emulator.state_dir = dir.path().join("emulator").display().to_string();
    tweak(&mut s);
    let app = TestApp::from_settings(s).start().await;
    let base = app.base.clone();
    store
        .create_team("alpha", snapgate::store::now())
        .await
        .unwrap();
    let key =
        snapgate::services::keys::issue_key(&store, &common::app::master_key(), "alpha", false)
            .await
            .unwrap();
    let env = Env {
        base,
        http: reqwest::Client::new(),
        token: key.token,
        relay,
        app_store: store,
        _db: db,
        _dir: dir,
        app,
    };
    let (s, p) = env.post("/v1/presets", &json!({"name": "story", "request": {
        "output": out("thumbs/{UploadId}/{Count}.jpg"), "num": 3, "interval_s": 2, "width": 160, "frame_type": "normal",
        "sprite": {"output": out("sprites/{UploadId}/{TileCount}.jpg"), "lines": 1, "columns": 3, "cell_width": 80, "cell_height": 45},
        "webvtt": {"sprite": true}}})).await;
    assert_eq!(s, 201, "{p}");
    env
}

impl Env {
    async fn stop(self) {
        self.app.stop().await.unwrap();
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        let res = r.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(&self.token), Some(body))
            .await
    }

    async fn intent(&self, video: &Path) -> Value {
        let size = std::fs::metadata(video).unwrap().len();
        let (s, i) = self.post("/v1/uploads", &json!({"preset": "story", "filename": "clip 01.mp4", "content_type": "video/mp4", "size_bytes": size})).await;
        assert_eq!(s, 201, "{i}");
        i
    }

    async fn status(&self, id: &str, token: &str) -> (u16, Value) {
        self.send(
            reqwest::Method::GET,
            &format!("/v1/uploads/{id}"),
            Some(token),
            None,
        )
        .await
    }

    async fn complete(&self, id: &str, token: &str) -> (u16, Value) {
        self.send(
            reqwest::Method::POST,
            &format!("/v1/uploads/{id}/complete"),
            Some(token),
            None,
        )
        .await
    }

    async fn wait_final(&self, id: &str, token: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let (_, u) = self.status(id, token).await;
            if matches!(
                u["state"].as_str(),
                Some("succeeded" | "failed" | "expired")
            ) {
                return u;
            }
            assert!(Instant::now() < deadline, "upload {id} never ended: {u}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Jobs the store holds for `alpha`.
    async fn job_count(&self) -> usize {
        self.app_store
            .list_jobs(&snapgate::store::JobFilter {
                team: Some("alpha".into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    }
}

/// The browser's form post, `multipart/form-data` with the fields in order and the file last.
async fn post_form(http: &reqwest::Client, intent: &Value, file: &[u8]) -> (u16, String) {
    let boundary = format!("----snapgate{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::new();
    for f in intent["form"]["fields"].as_array().unwrap() {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n{}\r\n",
                f["name"].as_str().unwrap(),
                f["value"].as_str().unwrap()
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"clip 01.mp4\"\r\nContent-Type: video/mp4\r\n\r\n").as_bytes());
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let res = http
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_lands_by_callback_makes_one_job_and_streams_its_states() {
    let video = media::small_video();
    let e = env(|_| {}).await;
    let intent = e.intent(&video).await;
    let id = intent["upload_id"].as_str().unwrap().to_string();
    let token = intent["browser_token"].as_str().unwrap().to_string();
    assert!(token.starts_with("sgu_"));
    assert_eq!(intent["upload"]["state"], "waiting");
    assert_eq!(intent["upload"]["preset"], "story@1");
    assert!(intent["callback"].as_bool().unwrap());
    let names: Vec<&str> = intent["form"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for n in [
        "key",
        "policy",
        "x-oss-signature-version",
        "x-oss-credential",
        "x-oss-date",
        "x-oss-signature",
        "success_action_status",
        "callback",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    assert_eq!(
        intent["upload"]["object"]["object"],
        format!("uploads/alpha/{id}/clip 01.mp4")
    );

    // Events from the start: opened before the upload.
    let events = tokio::spawn(read_events(
        e.http.clone(),
        format!("{}/v1/uploads/{id}/events?access_token={token}", e.base),
        None,
    ));

    // The form post: the store calls snapgate back and relays its answer, the upload with its job.
    let (s, answer) = post_form(&e.http, &intent, &std::fs::read(&video).unwrap()).await;
    assert_eq!(s, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["uploaded_via"], "callback");
    let job_id = answer["job"]["id"].as_str().unwrap().to_string();
    assert_eq!(answer["job"]["preset"], "story@1");
    assert_eq!(
        answer["job"]["request"]["output"]["object"],
        format!("thumbs/{id}/{{Count}}.jpg")
    );
    assert_eq!(e.relay.seen.lock().unwrap().len(), 1);

    // The replayed callback (byte for byte): the same job, no second one.
    let c = e.relay.seen.lock().unwrap()[0].clone();
    let again = send_callback(&e.http, &e.base, &c).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["job"]["id"], job_id.as_str());
    // complete after the callback: the same job.
    let (s, done) = e.complete(&id, &token).await;
    assert_eq!(
        (s, done["job"]["id"].as_str()),
        (200, Some(job_id.as_str()))
    );

    // A forged callback: the body changed under OSS's signature, or a key URL that is not OSS's.
    let mut forged = c.clone();
    forged.body = String::from_utf8(c.body.clone())
        .unwrap()
        .replace("\"size\":", "\"size\":1")
        .into_bytes();
    let res = send_callback(&e.http, &e.base, &forged).await;
    assert_eq!(res.status(), 403);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["code"], "callback_refused");
    let mut elsewhere = c.clone();
    for (k, v) in elsewhere.headers.iter_mut() {
        if k == "x-oss-pub-key-url" {
            *v = base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                "http://127.0.0.1:9/key.pem",
            );
        }
    }
    assert_eq!(
        send_callback(&e.http, &e.base, &elsewhere).await.status(),
        403
    );
    let mut unsigned = c.clone();
    unsigned.headers.retain(|(k, _)| k != "authorization");
    assert_eq!(
        send_callback(&e.http, &e.base, &unsigned).await.status(),
        403
    );

    // The job runs; the upload ends with it, outputs included; it is the team's job too.
    let fin = e.wait_final(&id, &token).await;
    assert_eq!(fin["state"], "succeeded", "{fin}");
    let snaps = fin["job"]["outputs"]["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 3, "{fin}");
    assert_eq!(snaps[0]["file"]["object"], format!("thumbs/{id}/00001.jpg"));
    let (s, job) = e
        .send(
            reqwest::Method::GET,
            &format!("/v1/snapshot-jobs/{job_id}"),
            Some(&e.token),
            None,
        )
        .await;
    assert_eq!(
        (s, job["state"].as_str(), job["preset"].as_str()),
        (200, Some("succeeded"), Some("story@1"))
    );
    assert_eq!(e.job_count().await, 1, "one job for one upload");
    let img = e
        .http
        .get(snaps[0]["file"]["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(img.status(), 200);
    assert!(
        img.bytes().await.unwrap().starts_with(&[0xFF, 0xD8]),
        "a JPEG"
    );

    // The stream: each state once, in order, then the outputs, then it closed by itself.
    let seen = tokio::time::timeout(Duration::from_secs(60), events)
        .await
        .expect("the stream closes at a final state")
        .unwrap();
    let kinds: Vec<(String, String)> = seen
        .iter()
        .map(|(id, ev, d)| {
            (
                id.clone(),
                format!("{ev}:{}", d["state"].as_str().unwrap_or("-")),
            )
        })
        .collect();
    assert_eq!(kinds.first().unwrap().1, "state:waiting", "{kinds:?}");
    assert_eq!(
        kinds.last().unwrap(),
        &("7".to_string(), "outputs:-".to_string()),
        "{kinds:?}"
    );
    assert_eq!(kinds[kinds.len() - 2].1, "state:succeeded", "{kinds:?}");
    let ids: Vec<u64> = seen.iter().map(|(id, _, _)| id.parse().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids only grow: {ids:?}"
    );
    assert_eq!(
        seen.last().unwrap().2["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // Resumed after the final state: only the outputs; after the outputs: nothing.
    let resumed = read_events(
        e.http.clone(),
        format!("{}/v1/uploads/{id}/events?access_token={token}", e.base),
        Some("6"),
    )
    .await;
    assert_eq!(
        resumed
            .iter()
            .map(|(i, ev, _)| format!("{i}:{ev}"))
            .collect::<Vec<_>>(),
        ["7:outputs"]
    );
    let none = read_events(
        e.http.clone(),
        format!("{}/v1/uploads/{id}/events?access_token={token}", e.base),
        Some("7"),
    )
    .await;
    assert!(none.is_empty(), "{none:?}");
    // The storyboard of the upload's job, with the browser token.
    let vtt = e
        .http
        .get(format!("{}/v1/uploads/{id}/storyboard.vtt", e.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(vtt.status(), 200);
    assert!(vtt.text().await.unwrap().starts_with("WEBVTT"));
    e.stop().await;
}

/// Reads an event stream to its end: (id, event, data).
async fn read_events(
    http: reqwest::Client,
    url: String,
    last: Option<&str>,
) -> Vec<(String, String, Value)> {
    let mut req = http.get(url);
    if let Some(l) = last {
        req = req.header("last-event-id", l);
    }
    let mut res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut buf = String::new();
    while let Some(chunk) = res.chunk().await.unwrap() {
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    buf.split("\n\n")
        .filter_map(|block| {
            let (mut id, mut ev, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().into()
                }
                if let Some(v) = line.strip_prefix("event:") {
                    ev = v.trim().into()
                }
                if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start())
                }
            }
            (!ev.is_empty()).then(|| (id, ev, serde_json::from_str(&data).unwrap_or(Value::Null)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_token_reads_its_upload_only_and_complete_needs_the_object() {
    let video = media::small_video();
    let e = env(|_| {}).await;
    e.relay
        .hold
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let a = e.intent(&video).await;
    let b = e.intent(&video).await;
    let (a_id, a_tok) = (
        a["upload_id"].as_str().unwrap(),
        a["browser_token"].as_str().unwrap(),
    );
    let b_id = b["upload_id"].as_str().unwrap();
    assert_eq!(e.status(a_id, a_tok).await.0, 200);
    // Another upload: 404 (as another team's job); team routes: 401 (a browser token is no key).
    assert_eq!(e.status(b_id, a_tok).await.0, 404);
    assert_eq!(e.complete(b_id, a_tok).await.0, 404);
    let (s, p) = e
        .send(reqwest::Method::GET, "/v1/snapshot-jobs", Some(a_tok), None)
        .await;
    assert_eq!((s, p["code"].as_str()), (401, Some("unauthorized")));
    assert_eq!(
        e.send(
            reqwest::Method::POST,
            "/v1/snapshot-jobs",
            Some(a_tok),
            Some(&json!({}))
        )
        .await
        .0,
        401
    );
    assert_eq!(
        e.send(reqwest::Method::GET, "/v1/presets", Some(a_tok), None)
            .await
            .0,
        401
    );
    assert_eq!(
        e.send(
            reqwest::Method::POST,
            "/v1/uploads",
            Some(a_tok),
            Some(&json!({}))
        )
        .await
        .0,
        401
    );
    let events = e
        .http
        .get(format!(
            "{}/v1/uploads/{b_id}/events?access_token={a_tok}",
            e.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 404);
    // A made-up browser token, and no token at all.
    assert_eq!(
        e.status(a_id, "sgu_0000000000000000000000000000000000000000")
            .await
            .0,
        401
    );
    assert_eq!(
        e.send(
            reqwest::Method::GET,
            &format!("/v1/uploads/{a_id}"),
            None,
            None
        )
        .await
        .0,
        401
    );
    // Another team's key: 404; the owning team's key: 200.
    e.app_store
        .create_team("beta", snapgate::store::now())
        .await
        .unwrap();
    let beta = snapgate::services::keys::issue_key(
        &e.app_store,
        &common::app::master_key(),
        "beta",
        false,
    )
    .await
    .unwrap();
    assert_eq!(e.status(a_id, &beta.token).await.0, 404);
    assert_eq!(e.status(a_id, &e.token).await.0, 200);

    // complete before the object exists: refused, nothing made.
    let (s, p) = e.complete(a_id, a_tok).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (409, Some("object_not_uploaded")),
        "{p}"
    );
    assert_eq!(e.status(a_id, a_tok).await.1["state"], "waiting");
    assert_eq!(e.job_count().await, 0);

    // The callback is held back (OSS could not reach snapgate): the store tells the browser so.
    let (s, _) = post_form(&e.http, &a, &std::fs::read(&video).unwrap()).await;
    assert_eq!(
        s, 203,
        "OSS answers 203 CallbackFailed when the callback fails"
    );
    let held = e.relay.seen.lock().unwrap()[0].clone();
    // Now the held callback and several completes race: one job.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (http, base, held, id, tok) = (
            e.http.clone(),
            e.base.clone(),
            held.clone(),
            a_id.to_string(),
            a_tok.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let res = if i % 3 == 0 {
                send_callback(&http, &base, &held).await
            } else {
                http.post(format!("{base}/v1/uploads/{id}/complete"))
                    .bearer_auth(tok)
                    .send()
                    .await
                    .unwrap()
            };
            let status = res.status().as_u16();
            let v: Value = res.json().await.unwrap();
            (status, v["job"]["id"].as_str().map(str::to_string))
        }));
    }
    let mut jobs = std::collections::BTreeSet::new();
    for t in tasks {
        let (s, j) = t.await.unwrap();
        assert_eq!(s, 200);
        jobs.insert(j.expect("every answer names the job"));
    }
    assert_eq!(
        jobs.len(),
        1,
        "callback and complete racing make one job: {jobs:?}"
    );
    assert_eq!(e.job_count().await, 1);
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intent_expires_and_stays_expired() {
    let video = media::small_video();
    let e = env(|s| s.uploads.ttl_s = 1).await;
    let i = e.intent(&video).await;
    let (id, tok) = (
        i["upload_id"].as_str().unwrap(),
        i["browser_token"].as_str().unwrap(),
    );
    let events = tokio::spawn(read_events(
        e.http.clone(),
        format!("{}/v1/uploads/{id}/events?access_token={tok}", e.base),
        None,
    ));
    // Its TTL (1 s) runs on the database's clock, which no test can move: look until the hub
    // has expired it, for 30 s at most.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (s, u) = loop {
        let (s, u) = e.status(id, tok).await;
        if s != 200 || u["state"] != "waiting" || Instant::now() > deadline {
            break (s, u);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((s, u["state"].as_str()), (200, Some("expired")), "{u}");
    // The store refuses the expired policy; complete refuses the expired intent.
    let (s, body) = post_form(&e.http, &i, &std::fs::read(&video).unwrap()).await;
    assert_eq!(s, 403, "{body}");
    let (s, p) = e.complete(id, tok).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (409, Some("upload_expired")),
        "{p}"
    );
    assert_eq!(e.job_count().await, 0);
    // The stream told it and closed.
    let seen = tokio::time::timeout(Duration::from_secs(10), events)
        .await
        .unwrap()
        .unwrap();
    let states: Vec<&str> = seen
        .iter()
        .map(|(_, _, d)| d["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["waiting", "expired"]);
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intent_is_checked_before_anything_is_uploaded() {
    let e = env(|s| s.uploads.max_size_bytes = 1000).await;
    let (s, p) = e.post("/v1/uploads", &json!({"preset": "nope", "filename": "a/b.mp4", "content_type": "video", "size_bytes": 5000})).await;
    assert_eq!(s, 422, "{p}");
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["/preset", "/filename", "/content_type", "/size_bytes"]
    );
    // The preset's job must be valid for this upload: a bad user_data is the validator's.
    let (s, p) = e.post("/v1/uploads", &json!({"preset": "story@1", "filename": "a.mp4", "content_type": "video/mp4", "size_bytes": 10, "user_data": "!bad"})).await;
    assert_eq!(
        (s, p["errors"][0]["field"].as_str()),
        (422, Some("/user_data")),
        "{p}"
    );
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_landed_without_its_job_gets_it() {
    // The window: a process marked the upload `uploaded` and stopped before making the job.
    let video = media::small_video();
    let e = env(|_| {}).await;
    let i = e.intent(&video).await;
    let (id, tok) = (
        i["upload_id"].as_str().unwrap(),
        i["browser_token"].as_str().unwrap(),
    );
    let uuid = uuid::Uuid::parse_str(id).unwrap();
    let now = e.app_store.clock().await.unwrap();
    assert!(e
        .app_store
        .mark_uploaded(uuid, "complete", now)
        .await
        .unwrap());
    assert_eq!(e.status(id, tok).await.1["state"], "uploaded");
    assert_eq!(e.job_count().await, 0);
    // The hub's tick finds it past the grace and makes its job, once.
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let (_, u) = e.status(id, tok).await;
        if !u["job"].is_null() {
            break u["job"].clone();
        }
        assert!(Instant::now() < deadline, "never healed: {u}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(job["preset"], "story@1");
    // Once: what the tick does next (heal_landed, driven here) finds nothing left to heal.
    let healed = e.app.state.uploads.heal_landed().await.unwrap();
    assert_eq!(healed, 0, "a second job was made");
    assert_eq!(e.job_count().await, 1);
    e.stop().await;
}

/// An anonymous PostObject (the local buckets are public-write, as any OSS customer's own bucket
/// is to its owner) with an uploader-written `callback`: the store signs whatever body it is given.
async fn post_anonymous(
    http: &reqwest::Client,
    bucket_url: &str,
    key: &str,
    callback: &Value,
    file: &[u8],
) -> (u16, String) {
    let boundary = format!("----snapgate{}", uuid::Uuid::new_v4().simple());
    let cb = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        callback.to_string(),
    );
    let mut body = Vec::new();
    for (n, v) in [("key", key), ("callback", cb.as_str())] {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{n}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\nContent-Type: video/mp4\r\n\r\n").as_bytes());
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let res = http
        .post(bucket_url)
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

/// D02: a callback is bound to its upload. A 1-byte anonymous PostObject to another key whose
/// callback body names the victim's upload id, bucket, key and size is signed by the store as
/// given; it must land nothing. A replayed valid callback makes no second job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_callback_for_another_upload_lands_nothing_and_a_replay_makes_no_second_job() {
    let video = media::small_video();
    let e = env(|_| {}).await;
    let victim = e.intent(&video).await;
    let (id, token) = (
        victim["upload_id"].as_str().unwrap().to_string(),
        victim["browser_token"].as_str().unwrap().to_string(),
    );
    let obj = &victim["upload"]["object"];
    let size = std::fs::metadata(&video).unwrap().len();
    let forged_body = json!({
        "upload_id": id, "bucket": obj["bucket"], "object": obj["object"], "size": size,
        "etag": "00000000000000000000000000000000", "mime_type": "video/mp4",
    });
    let callback = json!({
        "callbackUrl": format!("{}/callbacks/oss", e.base),
        "callbackBody": forged_body.to_string(),
        "callbackBodyType": "application/json",
    });
    let (s, answer) = post_anonymous(
        &e.http,
        victim["form"]["url"].as_str().unwrap(),
        "attacker/one-byte.bin",
        &callback,
        b"x",
    )
    .await;
    assert_eq!(s, 203, "the store's callback must be refused: {answer}");
    let (_, u) = e.status(&id, &token).await;
    assert_eq!(u["state"], "waiting", "the victim did not land: {u}");
    assert_eq!(e.job_count().await, 0, "no job for a forged callback");

    // The victim's own upload lands once; its captured callback replayed lands nothing new.
    let (s, answer) = post_form(&e.http, &victim, &std::fs::read(&video).unwrap()).await;
    assert_eq!(s, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    let job_id = answer["job"]["id"].as_str().unwrap().to_string();
    let c = e.relay.seen.lock().unwrap().last().unwrap().clone();
    for _ in 0..3 {
        let again = send_callback(&e.http, &e.base, &c).await;
        assert_eq!(again.status(), 200);
        let again: Value = again.json().await.unwrap();
        assert_eq!(again["job"]["id"], job_id.as_str());
    }
    assert_eq!(e.job_count().await, 1, "a replay makes no second job");
    e.stop().await;
}

/// D15: the store expands `${…}` in a PostObject key (as OSS does), so a file name with one
/// would put the object under another key and the upload could never complete: refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filename_with_a_store_variable_is_refused() {
    let e = env(|_| {}).await;
    for name in ["${filename}", "clip-${filename}.mp4", "a${x:var}.mp4"] {
        let (s, p) = e.post("/v1/uploads", &json!({"preset": "story@1", "filename": name, "content_type": "video/mp4", "size_bytes": 10})).await;
        assert_eq!(
            (s, p["errors"][0]["field"].as_str()),
            (422, Some("/filename")),
            "{name}: {p}"
        );
    }
    // A lone `$` or brace is an ordinary character.
    let (s, p) = e.post("/v1/uploads", &json!({"preset": "story@1", "filename": "cost $5 {draft}.mp4", "content_type": "video/mp4", "size_bytes": 10})).await;
    assert_eq!(s, 201, "{p}");
    e.stop().await;
}

/// D11: the browser token in the query (`?access_token=`) is for `EventSource` only: the events
/// stream takes it; every other upload route answers 401 pointing to the `Authorization` header
/// (tokens in URLs land in access logs and referrers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_token_is_taken_on_the_events_stream_only() {
    let video = media::small_video();
    let e = env(|_| {}).await;
    e.relay
        .hold
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let intent = e.intent(&video).await;
    let (id, token) = (
        intent["upload_id"].as_str().unwrap(),
        intent["browser_token"].as_str().unwrap(),
    );
    for (method, path) in [
        (reqwest::Method::GET, format!("/v1/uploads/{id}")),
        (reqwest::Method::POST, format!("/v1/uploads/{id}/complete")),
        (
            reqwest::Method::GET,
            format!("/v1/uploads/{id}/storyboard.vtt"),
        ),
    ] {
        let res = e
            .http
            .request(
                method.clone(),
                format!("{}{path}?access_token={token}", e.base),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{method} {path}");
        let p: Value = res.json().await.unwrap();
        assert_eq!(p["code"], "unauthorized", "{p}");
        assert!(
            p["detail"].as_str().unwrap_or("").contains("Authorization"),
            "{p}"
        );
    }
    // The header works there; the query token works on the stream.
    assert_eq!(e.status(id, token).await.0, 200);
    let res = e
        .http
        .get(format!(
            "{}/v1/uploads/{id}/events?access_token={token}",
            e.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    drop(res);
    e.stop().await;
}
