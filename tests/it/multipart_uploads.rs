//! Multipart upload intents over real HTTP (issue 34): the embedded default (`Application::build`:
//! the built-in emulator's object store and its ffmpeg engine) on SQLite and on Postgres, with
//! `uploads.multipart_threshold_bytes` at 1 MiB and a video padded to three parts (8 + 8 + 3 MiB;
//! a trailing MP4 `free` box, so ffmpeg reads it as the clip it is).
//!
//! The browser's side is played with reqwest: the intent (no form, a plan), part URLs from
//! `POST /v1/uploads/{id}/parts` with the browser token, each part `PUT` to the store without a
//! Content-Type (with an `Origin`: the store's CORS exposes `ETag`; the preflight allows `PUT`),
//! `GET …/parts`, `complete` (three at once: one job), the job's thumbnails, the stored object's
//! MD5 against the file's; with the OSS callback, the callback replayed (the same job) and
//! forged (refused). A completion OSS took that snapgate never recorded (it lands on the
//! next `complete`). Resume (some parts, the list, the rest; a short part is named), the
//! part numbers' bounds, a token's reach (another upload's browser token finds nothing), and an
//! expired intent whose OSS upload the sweeper aborts (no part left in the store).

use crate::common;
use crate::support::media;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use serde_json::{json, Value};
use snapgate::config::Settings;

use common::TestApp;

const LOC: &str = "oss-cn-shanghai";
const MIB: u64 = 1024 * 1024;

fn out(key: &str) -> Value {
    json!({"location": LOC, "bucket": "media", "object": key})
}

#[derive(Clone, Copy, Debug)]
enum Db {
    Sqlite,
    Postgres,
}

struct Env {
    base: String,
    http: reqwest::Client,
    token: String,
    relay: Option<Relay>,
    dir: tempfile::TempDir,
    app: TestApp,
    _db: Option<common::PgDb>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A callback as OSS sent it (the headers snapgate reads).
#[derive(Debug, Clone)]
struct Captured {
    path_and_query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// The `http.public_url` of a test with callbacks: records each callback and forwards it to
/// snapgate, so the test can replay or tamper with it.
struct Relay {
    addr: std::net::SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Captured>>>,
}

async fn relay(target: String) -> Relay {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: std::sync::Arc<std::sync::Mutex<Vec<Captured>>> = Default::default();
    let (seen2, http) = (seen.clone(), reqwest::Client::new());
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (seen, http, target) = (seen2.clone(), http.clone(), target.clone());
        async move {
            let (parts, body) = req.into_parts();
            let c = Captured {
                path_and_query: parts.uri.path_and_query().unwrap().as_str().to_string(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").into()))
                    .collect(),
                body: axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec(),
            };
            seen.lock().unwrap().push(c.clone());
            let res = send_callback(&http, &target, &c).await;
            let status = axum::http::StatusCode::from_u16(res.status().as_u16()).unwrap();
            let text = res.text().await.unwrap();
            axum::response::IntoResponse::into_response((
                status,
                [("content-type", "application/json")],
                text,
            ))
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Relay { addr, seen }
}

/// Sends a captured callback to snapgate at `base`, with the headers OSS sent.
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

/// The embedded default on `db`, auth on, a multipart threshold of 1 MiB; with `callback`, OSS's
/// callback comes to snapgate through a recording [`Relay`] (`http.public_url`).
async fn env(db: Db, callback: bool, tweak: impl FnOnce(&mut Settings)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut s = common::test_settings();
    s.http.listen = format!("127.0.0.1:{port}");
    let relay = match callback {
        true => Some(relay(format!("http://127.0.0.1:{port}")).await),
        false => None,
    };
    if let Some(r) = &relay {
        s.http.public_url = Some(format!("http://{}", r.addr));
    }
    let pg = match db {
        Db::Sqlite => {
            s.database.url = format!("sqlite://{}/snapgate.db", dir.path().display());
            None
        }
        Db::Postgres => {
            let pg = common::pg_database().await;
            s.database.url = pg.url.clone();
            Some(pg)
        }
    };
    s.worker.enabled = true;
    s.worker.status_poll_min_ms = 100;
    s.worker.status_poll_max_ms = 300;
    s.worker.idle_poll_ms = 100;
    s.auth.enabled = true;
    s.auth.master_key = Some(snapgate::secret::Secret::new(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        [42u8; 32],
    )));
    s.uploads.multipart_threshold_bytes = MIB;
    s.emulator.oss_dir = dir.path().join("oss").display().to_string();
    s.emulator.state_dir = dir.path().join("emulator").display().to_string();
    tweak(&mut s);
    let app = TestApp::from_settings(s).start().await;
    let store = app.store.clone();
    store
        .create_team("alpha", snapgate::store::now())
        .await
        .unwrap();
    let key =
        snapgate::services::keys::issue_key(&store, &common::app::master_key(), "alpha", false)
            .await
            .unwrap();
    let env = Env {
        base: app.base.clone(),
        http: reqwest::Client::new(),
        token: key.token,
        relay,
        dir,
        app,
        _db: pg,
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
        token: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            r = r.json(b);
        }
        let res = r.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, &self.token, Some(body))
            .await
    }

    async fn intent(&self, size: u64) -> Value {
        let (s, i) = self.post("/v1/uploads", &json!({"preset": "story", "filename": "big clip.mp4", "content_type": "video/mp4", "size_bytes": size})).await;
        assert_eq!(s, 201, "{i}");
        i
    }

    async fn part_urls(&self, id: &str, token: &str, numbers: &[u64]) -> (u16, Value) {
        let body = json!({ "part_numbers": numbers });
        let path = format!("/v1/uploads/{id}/parts");
        self.send(reqwest::Method::POST, &path, token, Some(&body))
            .await
    }

    async fn stored_parts(&self, id: &str, token: &str) -> (u16, Value) {
        let path = format!("/v1/uploads/{id}/parts");
        self.send(reqwest::Method::GET, &path, token, None).await
    }

    async fn complete(&self, id: &str, token: &str) -> (u16, Value) {
        let path = format!("/v1/uploads/{id}/complete");
        self.send(reqwest::Method::POST, &path, token, None).await
    }

    async fn wait_final(&self, id: &str, token: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let (_, u) = self
                .send(
                    reqwest::Method::GET,
                    &format!("/v1/uploads/{id}"),
                    token,
                    None,
                )
                .await;
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

    async fn job_count(&self) -> usize {
        self.app
            .store
            .list_jobs(&snapgate::store::JobFilter {
                team: Some("alpha".into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    }

    /// `PUT`s `bytes` to a part URL as a browser on another origin would: no Content-Type.
    async fn put_part(&self, url: &str, bytes: &[u8]) -> reqwest::Response {
        self.http
            .put(url)
            .header("origin", "http://app.example")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// The OSS upload id snapgate keeps (no answer has it as a field).
    async fn oss_upload_id(&self, id: &str) -> String {
        let u = self
            .app
            .store
            .get_upload(uuid::Uuid::parse_str(id).unwrap())
            .await
            .unwrap()
            .unwrap();
        u.multipart.unwrap().oss_upload_id
    }

    /// Part files the local store holds, across every multipart upload.
    fn stored_part_files(&self) -> Vec<PathBuf> {
        let root = self.dir.path().join("oss").join(".snapgate-tmp/multipart");
        let mut found = Vec::new();
        for up in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(up.path()).into_iter().flatten().flatten() {
                if f.path().extension().is_some_and(|e| e == "part") {
                    found.push(f.path());
                }
            }
        }
        found
    }
}

/// The small test clip followed by a `free` box up to `size` bytes: still a valid MP4.
fn padded_video(dir: &Path, size: u64) -> Vec<u8> {
    let mut bytes = std::fs::read(media::small_video()).unwrap();
    let pad = size - bytes.len() as u64;
    bytes.extend_from_slice(&(pad as u32).to_be_bytes());
    bytes.extend_from_slice(b"free");
    bytes.resize(size as usize, 0);
    std::fs::write(dir.join("big clip.mp4"), &bytes).unwrap();
    bytes
}

fn part(file: &[u8], part_size: u64, n: u64) -> &[u8] {
    let start = ((n - 1) * part_size) as usize;
    let end = (start + part_size as usize).min(file.len());
    &file[start..end]
}

fn md5_hex(b: &[u8]) -> String {
    hex::encode(Md5::digest(b))
}

/// The URL of each part of `urls`' answer, by part number.
fn urls_by_number(answer: &Value) -> Vec<(u64, String, u64)> {
    answer["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["method"], "PUT");
            (
                p["part_number"].as_u64().unwrap(),
                p["url"].as_str().unwrap().to_string(),
                p["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn a_large_file_goes_in_parts_and_makes_one_job(db: Db, callback: bool) {
    let e = env(db, callback, |_| {}).await;
    let file = padded_video(e.dir.path(), 19 * MIB + 12345);
    let i = e.intent(file.len() as u64).await;
    let (id, tok) = (
        i["upload_id"].as_str().unwrap(),
        i["browser_token"].as_str().unwrap(),
    );
    // No form: the plan; OSS's upload id is no field of the answer.
    assert_eq!(i["form"], Value::Null, "{i}");
    assert_eq!(
        i["multipart"],
        json!({"part_size": 8 * MIB, "part_count": 3})
    );
    assert_eq!(i["upload"]["multipart"], i["multipart"]);
    assert_eq!(i["parts_url"], format!("/v1/uploads/{id}/parts"));
    assert_eq!(i["callback"], callback);
    let oss_id = e.oss_upload_id(id).await;
    assert!(!i.to_string().contains(&oss_id), "{i}");

    let (s, urls) = e.part_urls(id, tok, &[3, 1, 2]).await;
    assert_eq!(s, 200, "{urls}");
    let parts = urls_by_number(&urls);
    assert_eq!(
        parts.iter().map(|p| (p.0, p.2)).collect::<Vec<_>>(),
        [(3, 3 * MIB + 12345), (1, 8 * MIB), (2, 8 * MIB)]
    );
    let expires: chrono::DateTime<chrono::Utc> =
        urls["expires_at"].as_str().unwrap().parse().unwrap();
    let ttl = expires - chrono::Utc::now();
    assert!(
        ttl <= chrono::Duration::minutes(15) && ttl > chrono::Duration::minutes(13),
        "{ttl}"
    );

    // The store's CORS: a browser may PUT a part and read its ETag.
    let pre = e
        .http
        .request(reqwest::Method::OPTIONS, &parts[0].1)
        .header("origin", "http://app.example")
        .header("access-control-request-method", "PUT")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 200);
    let allow = pre.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(allow.contains("PUT"), "{allow}");
    for (n, url, size) in &parts {
        let bytes = part(&file, 8 * MIB, *n);
        assert_eq!(bytes.len() as u64, *size);
        let res = e.put_part(url, bytes).await;
        assert_eq!(res.status(), 200, "part {n}: {:?}", res.text().await);
        let h = res.headers();
        let exposed = h["access-control-expose-headers"].to_str().unwrap();
        assert!(exposed.split(',').any(|x| x.trim() == "ETag"), "{exposed}");
        assert_eq!(
            h["etag"].to_str().unwrap().trim_matches('"'),
            md5_hex(bytes).to_uppercase()
        );
    }
    let (s, stored) = e.stored_parts(id, tok).await;
    assert_eq!(s, 200, "{stored}");
    assert_eq!(
        (stored["part_size"].as_u64(), stored["part_count"].as_u64()),
        (Some(8 * MIB), Some(3))
    );
    let listed: Vec<(u64, u64)> = stored["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["part_number"].as_u64().unwrap(),
                p["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, [(1, 8 * MIB), (2, 8 * MIB), (3, 3 * MIB + 12345)]);

    // Three completions at once (a double click, a retry): one job, the same for each.
    let (a, b, c) = tokio::join!(
        e.complete(id, tok),
        e.complete(id, tok),
        e.complete(id, &e.token)
    );
    let jobs: Vec<&str> = [&a, &b, &c]
        .iter()
        .map(|(s, u)| {
            assert_eq!(*s, 200, "{u}");
            u["job"]["id"].as_str().unwrap()
        })
        .collect();
    assert!(jobs.iter().all(|j| *j == jobs[0]), "{jobs:?}");
    let via = if callback { "callback" } else { "complete" };
    assert_eq!(a.1["uploaded_via"], via, "{}", a.1);

    let fin = e.wait_final(id, tok).await;
    assert_eq!(fin["state"], "succeeded", "{fin}");
    let snaps = fin["job"]["outputs"]["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 3, "{fin}");
    let img = e
        .http
        .get(snaps[0]["file"]["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert!(img.bytes().await.unwrap().starts_with(&[0xFF, 0xD8]));
    // The stored object is the file, byte for byte.
    let object_url = format!(
        "{}/{}",
        e.app.state.uploads.config().buckets[0].bucket_url,
        snapgate::oss::uri_encode(i["upload"]["object"]["object"].as_str().unwrap(), true)
    );
    let stored = e.http.get(&object_url).send().await.unwrap();
    assert_eq!(stored.status(), 200);
    assert_eq!(md5_hex(&stored.bytes().await.unwrap()), md5_hex(&file));
    assert!(
        e.stored_part_files().is_empty(),
        "the parts became the object"
    );

    // Replayed later: the same job; the parts routes say it is done.
    let (s, again) = e.complete(id, tok).await;
    assert_eq!((s, again["job"]["id"].as_str()), (200, Some(jobs[0])));
    if let Some(relay) = &e.relay {
        // CompleteMultipartUpload's callback, once; replayed byte for byte: the same job;
        // its body changed under OSS's signature: refused.
        let seen = relay.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        let res = send_callback(&e.http, &e.base, &seen[0]).await;
        assert_eq!(res.status(), 200);
        let replayed: Value = res.json().await.unwrap();
        assert_eq!(replayed["job"]["id"].as_str(), Some(jobs[0]));
        let mut forged = seen[0].clone();
        forged.body = String::from_utf8(forged.body)
            .unwrap()
            .replace("\"size\":", "\"size\":1")
            .into_bytes();
        assert_eq!(send_callback(&e.http, &e.base, &forged).await.status(), 403);
    }
    let (s, p) = e.part_urls(id, tok, &[1]).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (409, Some("upload_not_waiting")),
        "{p}"
    );
    assert_eq!(e.job_count().await, 1, "one job for one upload");
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_large_file_goes_in_parts_completed_by_snapgate() {
    a_large_file_goes_in_parts_and_makes_one_job(Db::Sqlite, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_large_file_goes_in_parts_with_the_oss_callback() {
    a_large_file_goes_in_parts_and_makes_one_job(Db::Postgres, true).await;
}

async fn an_upload_resumes_from_the_stored_parts(db: Db) {
    let e = env(db, false, |_| {}).await;
    let file = padded_video(e.dir.path(), 17 * MIB);
    let i = e.intent(file.len() as u64).await;
    let (id, tok) = (
        i["upload_id"].as_str().unwrap(),
        i["browser_token"].as_str().unwrap(),
    );
    // Parts 1 and 3, then the connection "drops".
    let (_, urls) = e.part_urls(id, tok, &[1, 3]).await;
    for (n, url, _) in urls_by_number(&urls) {
        assert_eq!(
            e.put_part(&url, part(&file, 8 * MIB, n)).await.status(),
            200
        );
    }
    let (s, p) = e.complete(id, tok).await;
    assert_eq!((s, p["code"].as_str()), (409, Some("parts_missing")), "{p}");
    assert_eq!(p["errors"][0]["field"], "/parts/2", "{p}");
    assert_eq!(p["errors"].as_array().unwrap().len(), 1, "{p}");
    // After a reload: what is stored, then only the rest — first cut short.
    let (_, stored) = e.stored_parts(id, tok).await;
    let have: Vec<u64> = stored["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["part_number"].as_u64().unwrap())
        .collect();
    assert_eq!(have, [1, 3]);
    let (_, urls) = e.part_urls(id, tok, &[2]).await;
    let url = urls_by_number(&urls)[0].1.clone();
    let two = part(&file, 8 * MIB, 2);
    assert_eq!(e.put_part(&url, &two[..two.len() - 1]).await.status(), 200);
    let (s, p) = e.complete(id, tok).await;
    assert_eq!((s, p["code"].as_str()), (409, Some("size_mismatch")), "{p}");
    assert_eq!(p["errors"][0]["field"], "/parts/2", "{p}");
    assert_eq!(e.job_count().await, 0, "nothing landed");
    assert_eq!(e.put_part(&url, two).await.status(), 200);
    let (s, u) = e.complete(id, tok).await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["uploaded_via"], "complete");
    assert_eq!(e.wait_final(id, tok).await["state"], "succeeded");
    assert_eq!(e.job_count().await, 1);
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_upload_resumes_from_the_stored_parts() {
    an_upload_resumes_from_the_stored_parts(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_upload_resumes_from_the_stored_parts() {
    an_upload_resumes_from_the_stored_parts(Db::Postgres).await;
}

/// A completion OSS took but snapgate never recorded (the process stopped between
/// CompleteMultipartUpload and the landing): the next `complete` finds the OSS upload gone and
/// the object there, lands it, and makes the one job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_snapgate_did_not_record_lands_on_the_next_complete() {
    let e = env(Db::Sqlite, false, |_| {}).await;
    let file = padded_video(e.dir.path(), 9 * MIB);
    let i = e.intent(file.len() as u64).await;
    let (id, tok) = (
        i["upload_id"].as_str().unwrap(),
        i["browser_token"].as_str().unwrap(),
    );
    let (_, urls) = e.part_urls(id, tok, &[1, 2]).await;
    for (n, url, _) in urls_by_number(&urls) {
        assert_eq!(
            e.put_part(&url, part(&file, 8 * MIB, n)).await.status(),
            200
        );
    }
    // OSS completes it (as snapgate's own call would have) and snapgate hears nothing.
    let creds = e.app.state.uploads.config().creds.clone().unwrap();
    let cred = snapgate::oss::OssCredentials::from(&*creds.current());
    let http = reqwest::Client::new();
    let client = snapgate::oss::multipart::MultipartClient {
        http: &http,
        creds: &cred,
        region: "cn-shanghai",
        bucket_url: &e.app.state.uploads.config().buckets[0].bucket_url,
    };
    let key = i["upload"]["object"]["object"].as_str().unwrap();
    let oss_id = e.oss_upload_id(id).await;
    let parts = client.list_parts(key, &oss_id).await.unwrap();
    client.complete(key, &oss_id, &parts, None).await.unwrap();
    let (s, u) = e
        .send(
            reqwest::Method::GET,
            &format!("/v1/uploads/{id}"),
            tok,
            None,
        )
        .await;
    assert_eq!((s, u["state"].as_str()), (200, Some("waiting")), "{u}");
    let (s, u) = e.complete(id, tok).await;
    assert_eq!(
        (s, u["uploaded_via"].as_str()),
        (200, Some("complete")),
        "{u}"
    );
    assert_eq!(e.wait_final(id, tok).await["state"], "succeeded");
    assert_eq!(e.job_count().await, 1);
    e.stop().await;
}

/// Part numbers within the plan, at most 100 at once; the browser token reaches its own upload
/// only, in the header only; a form upload has no parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_urls_are_bounded_and_for_the_tokens_own_upload_only() {
    let e = env(Db::Postgres, false, |_| {}).await;
    let i = e.intent(17 * MIB).await;
    let other = e.intent(17 * MIB).await;
    let small = e.intent(MIB).await;
    assert!(small["form"]["url"].is_string(), "{small}");
    assert_eq!(small["multipart"], Value::Null);
    let (id, tok) = (
        i["upload_id"].as_str().unwrap(),
        i["browser_token"].as_str().unwrap(),
    );
    for bad in [vec![0], vec![4], vec![], (1..=101).collect::<Vec<u64>>()] {
        let (s, p) = e.part_urls(id, tok, &bad).await;
        assert_eq!(
            (s, p["code"].as_str()),
            (422, Some("validation_failed")),
            "{bad:?}: {p}"
        );
    }
    let (s, p) = e.part_urls(id, tok, &[0, 2, 9]).await;
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        (s, fields),
        (422, vec!["/part_numbers/0", "/part_numbers/2"])
    );
    let (s, _) = e
        .send(
            reqwest::Method::POST,
            &format!("/v1/uploads/{id}/parts"),
            tok,
            Some(&json!({"part_numbers": [1], "extra": 1})),
        )
        .await;
    assert_eq!(s, 422);

    // Another upload's browser token: nothing of this upload (404), on every route.
    let theirs = other["browser_token"].as_str().unwrap();
    assert_eq!(e.part_urls(id, theirs, &[1]).await.0, 404);
    assert_eq!(e.stored_parts(id, theirs).await.0, 404);
    assert_eq!(e.complete(id, theirs).await.0, 404);
    // The token in the query is refused here (the events stream only).
    let res = e
        .http
        .get(format!(
            "{}/v1/uploads/{id}/parts?access_token={tok}",
            e.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // A URL is for its part and its upload: part 1's URL does not take part 2, nor the other
    // upload's key.
    let (_, urls) = e.part_urls(id, tok, &[1]).await;
    let url = urls_by_number(&urls)[0].1.clone();
    let moved = url.replace("partNumber=1", "partNumber=2");
    assert_eq!(e.put_part(&moved, b"x").await.status(), 403);
    let other_key = urlencoding_key(&other);
    let mine = urlencoding_key(&i);
    assert_eq!(
        e.put_part(&url.replace(&mine, &other_key), b"x")
            .await
            .status(),
        403
    );
    // A form upload has no parts.
    let (sid, stok) = (
        small["upload_id"].as_str().unwrap(),
        small["browser_token"].as_str().unwrap(),
    );
    let (s, p) = e.part_urls(sid, stok, &[1]).await;
    assert_eq!((s, p["code"].as_str()), (409, Some("not_multipart")), "{p}");
    assert_eq!(e.stored_parts(sid, stok).await.0, 409);
    // Nothing was completed: nothing landed.
    let (s, p) = e.complete(id, tok).await;
    assert_eq!((s, p["code"].as_str()), (409, Some("parts_missing")), "{p}");
    assert_eq!(p["errors"].as_array().unwrap().len(), 3, "{p}");
    assert_eq!(e.job_count().await, 0);
    e.stop().await;
}

/// The object key of an intent as it appears in a part URL's path.
fn urlencoding_key(intent: &Value) -> String {
    snapgate::oss::uri_encode(intent["upload"]["object"]["object"].as_str().unwrap(), true)
}

/// An intent that expires: the sweeper aborts its OSS upload, so no part stays in the store;
/// URLs, the list and `complete` say it expired.
async fn an_expired_multipart_intent_leaves_no_parts(db: Db) {
    let e = env(db, false, |s| s.uploads.ttl_s = 3).await;
    let file = padded_video(e.dir.path(), 17 * MIB);
    let i = e.intent(file.len() as u64).await;
    let (id, tok) = (
        i["upload_id"].as_str().unwrap(),
        i["browser_token"].as_str().unwrap(),
    );
    let (_, urls) = e.part_urls(id, tok, &[1, 2]).await;
    let parts = urls_by_number(&urls);
    assert_eq!(
        e.put_part(&parts[0].1, part(&file, 8 * MIB, 1))
            .await
            .status(),
        200
    );
    assert_eq!(e.stored_part_files().len(), 1);
    let oss_id = e.oss_upload_id(id).await;
    // The intent's TTL runs on the database's clock: look until the sweeper has aborted it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let creds = e.app.state.uploads.config().creds.clone().unwrap();
    let cred = snapgate::oss::OssCredentials::from(&*creds.current());
    let http = reqwest::Client::new();
    let client = snapgate::oss::multipart::MultipartClient {
        http: &http,
        creds: &cred,
        region: "cn-shanghai",
        bucket_url: &e.app.state.uploads.config().buckets[0].bucket_url,
    };
    let key = i["upload"]["object"]["object"].as_str().unwrap();
    loop {
        match client.list_parts(key, &oss_id).await {
            Err(err) if err.code == "NoSuchUpload" => break,
            other => assert!(Instant::now() < deadline, "never aborted: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        e.stored_part_files().is_empty(),
        "{:?}",
        e.stored_part_files()
    );
    // The URL handed out before: it no longer stores anything (the store refuses it before
    // reading the body, and may close the connection while the body is still being sent).
    let late = e
        .http
        .put(&parts[1].1)
        .body(part(&file, 8 * MIB, 2).to_vec())
        .send()
        .await;
    if let Ok(res) = late {
        assert!(
            matches!(res.status().as_u16(), 403 | 404),
            "{}",
            res.status()
        );
    }
    assert!(e.stored_part_files().is_empty());
    for (s, p) in [
        e.part_urls(id, tok, &[1]).await,
        e.stored_parts(id, tok).await,
        e.complete(id, tok).await,
    ] {
        assert_eq!(
            (s, p["code"].as_str()),
            (409, Some("upload_expired")),
            "{p}"
        );
    }
    assert_eq!(e.job_count().await, 0);
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_expired_multipart_intent_leaves_no_parts() {
    an_expired_multipart_intent_leaves_no_parts(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_expired_multipart_intent_leaves_no_parts() {
    an_expired_multipart_intent_leaves_no_parts(Db::Postgres).await;
}
