//! The emulator's local object store over real HTTP, driven by clients that do not share
//! snapgate's signing code: the official OSS Python SDK `oss2` (its own V1 and V4 signing), a
//! PostObject form built in Python from OSS's docs, and the pure-Python `rsa` package as an
//! independent verifier of upload callbacks (`tests/oss_store/oss_client.py`). Also the
//! gateway's side against the same store: `oss::post_policy::sign_post`, `oss::v4::head_object`
//! and `oss::callback::verify`.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, Uri};
use serde_json::{json, Value};
use snapgate::emulator::{self, EmulatorConfig, EmulatorHandle};
use snapgate::oss::{self, OssCredentials};
use snapgate::secret::Secret;

pub(crate) const AK: &str = "LTAI5tLOCALTEST";
pub(crate) const SECRET: &str = "local-store-secret-0123456789";
pub(crate) const REGION: &str = "cn-shanghai";
pub(crate) const BUCKET: &str = "media";
const ORIGIN: &str = "http://page.example";

pub(crate) struct Store {
    pub(crate) handle: EmulatorHandle,
    pub(crate) dir: tempfile::TempDir,
}

impl Store {
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let handle = emulator::spawn(EmulatorConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            access_keys: vec![(AK.into(), SECRET.into())],
            oss_dir: Some(dir.path().to_path_buf()),
            ffmpeg: false,
            oss_cors_origins: vec![ORIGIN.into()],
            ..EmulatorConfig::default()
        })
        .await
        .unwrap();
        Self { handle, dir }
    }

    pub(crate) fn url(&self) -> String {
        self.handle.url()
    }

    fn bucket_url(&self) -> String {
        format!("{}/{BUCKET}", self.url())
    }

    pub(crate) fn file(&self, key: &str) -> PathBuf {
        key.split('/')
            .fold(self.dir.path().join(BUCKET), |p, s| p.join(s))
    }
}

pub(crate) fn venv_python() -> PathBuf {
    common::python_venv("oss-venv", "tests/oss_store/requirements.txt").join("bin/python")
}

/// Runs one action of `oss_client.py` (off the runtime's threads: the store and the callback
/// receiver keep serving meanwhile).
async fn py(args: Value) -> Value {
    let python = tokio::task::spawn_blocking(venv_python).await.unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oss_store/oss_client.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(args.to_string())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "oss_client.py {} failed:\n{}\n{}",
        args["action"],
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `<Code>` of an OSS XML error body.
pub(crate) fn xml_code(body: &str) -> &str {
    body.split_once("<Code>")
        .and_then(|(_, r)| r.split_once("</Code>"))
        .map(|(c, _)| c)
        .unwrap_or("")
}

fn post_args(store: &Store, key: &str, size: usize) -> Value {
    json!({
        "action": "post", "url": store.bucket_url(), "ak": AK, "secret": SECRET, "region": REGION,
        "bucket": BUCKET, "key": key, "range": [1, 1000], "expires_in_s": 600, "size": size,
    })
}

/// oss2 puts, heads and gets with V1 and with V4 signatures; a V1 presigned URL works; a wrong
/// secret and a tampered URL are refused with OSS's codes.
#[tokio::test(flavor = "multi_thread")]
async fn official_sdk_signs_v1_and_v4_and_the_store_verifies() {
    let store = Store::start().await;
    for version in ["v1", "v4"] {
        let key = format!("sdk/{version} ü+x.txt");
        let data = format!("hello from oss2 {version}");
        let out = py(json!({
            "action": "sdk", "endpoint": store.url(), "bucket": BUCKET, "ak": AK, "secret": SECRET,
            "region": REGION, "version": version, "key": key, "data": data,
        }))
        .await;
        assert_eq!(out["put_status"], 200, "{version}: {out}");
        assert_eq!(out["head_length"], data.len(), "{version}: {out}");
        assert_eq!(out["get_body"], data.as_str(), "{version}: {out}");
        assert_eq!(std::fs::read_to_string(store.file(&key)).unwrap(), data);
        assert_eq!(
            out["bad_secret"],
            json!({"status": 403, "code": "SignatureDoesNotMatch"}),
            "{version}: {out}"
        );
        assert_eq!(out["missing"], json!({"status": 404, "code": "NoSuchKey"}));
        assert!(!store.file(&format!("{key}.bad")).exists());
        if version == "v1" {
            assert_eq!(out["presigned_body"], data.as_str(), "{out}");
            assert_eq!(out["presigned_tampered_status"], 403, "{out}");
        }
    }
}

/// A PostObject form built from the docs (in Python) uploads, answers as
/// `success_action_status` asks, and carries CORS headers for the allowed origin.
#[tokio::test(flavor = "multi_thread")]
async fn documented_post_object_form_uploads() {
    let store = Store::start().await;
    let mut args = post_args(&store, "uploads/u1/clip.mp4", 321);
    args["success_action_status"] = json!("201");
    args["origin"] = json!(ORIGIN);
    let out = py(args).await;
    assert_eq!(out["status"], 201, "{out}");
    let body = out["body"].as_str().unwrap();
    assert!(body.contains("<Key>uploads/u1/clip.mp4</Key>"), "{body}");
    assert_eq!(out["allow_origin"], ORIGIN);
    assert_eq!(
        std::fs::metadata(store.file("uploads/u1/clip.mp4"))
            .unwrap()
            .len(),
        321
    );
    // The default answer is 204.
    let out = py(post_args(&store, "uploads/u2/clip.mp4", 5)).await;
    assert_eq!(out["status"], 204, "{out}");
    let etag = out["etag"].as_str().unwrap();
    let md5 = {
        use md5::Digest;
        hex::encode_upper(md5::Md5::digest(b"vvvvv"))
    };
    assert_eq!(etag, format!("\"{md5}\""));
}

/// Each way a form can break its policy is refused with OSS's status and code, and nothing
/// is stored.
#[tokio::test(flavor = "multi_thread")]
async fn policy_violations_are_refused_as_oss_refuses_them() {
    let store = Store::start().await;
    let key = "uploads/u3/clip.mp4";
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "wrong key",
            json!({"form_key": "uploads/other/clip.mp4"}),
            403,
            "AccessDenied",
        ),
        ("too large", json!({"size": 1001}), 400, "EntityTooLarge"),
        ("too small", json!({"size": 0}), 400, "EntityTooSmall"),
        ("expired", json!({"expires_in_s": -5}), 403, "AccessDenied"),
        (
            "tampered policy",
            json!({"tamper": "policy"}),
            403,
            "SignatureDoesNotMatch",
        ),
        (
            "wrong signature",
            json!({"tamper": "signature"}),
            403,
            "SignatureDoesNotMatch",
        ),
        (
            "wrong secret",
            json!({"secret": "not-the-secret"}),
            403,
            "SignatureDoesNotMatch",
        ),
        (
            "unknown key id",
            json!({"ak": "LTAI5tNOBODY"}),
            403,
            "InvalidAccessKeyId",
        ),
        (
            "x-oss-date ahead",
            json!({"date_offset_s": 3600}),
            403,
            "AccessDenied",
        ),
    ];
    for (name, tweak, status, code) in cases {
        let mut args = post_args(&store, key, 10);
        for (k, v) in tweak.as_object().unwrap() {
            args[k] = v.clone();
        }
        let out = py(args).await;
        let body = out["body"].as_str().unwrap();
        assert_eq!(out["status"], status, "{name}: {out}");
        assert_eq!(xml_code(body), code, "{name}: {body}");
        assert!(!store.file(key).exists(), "{name}: stored anyway");
        assert!(!store.file("uploads/other/clip.mp4").exists(), "{name}");
    }
    let expired = {
        let mut a = post_args(&store, key, 10);
        a["expires_in_s"] = json!(-5);
        py(a).await
    };
    assert!(
        expired["body"].as_str().unwrap().contains("Policy expired"),
        "{expired}"
    );
}

/// The gateway's own form (`sign_post`) uploads; its signed `HEAD` (`head_object`, V4) sees
/// the object and its size, and a wrong secret is refused.
#[tokio::test(flavor = "multi_thread")]
async fn gateway_form_uploads_and_head_object_sees_it() {
    let store = Store::start().await;
    let creds = OssCredentials {
        access_key_id: AK.into(),
        access_key_secret: Secret::new(SECRET),
        security_token: None,
    };
    let now = chrono::Utc::now();
    let form = oss::post_policy::sign_post(
        &creds,
        REGION,
        &store.bucket_url(),
        &oss::post_policy::PostPolicy {
            bucket: BUCKET.into(),
            key: "uploads/g1/a b.mp4".into(),
            content_length: 1..=100,
            expires_at: now + chrono::Duration::minutes(5),
            success_action_status: Some(200),
            callback: None,
        },
        now,
    );
    let out =
        py(json!({"action": "post_fields", "url": form.url, "fields": form.fields, "size": 42}))
            .await;
    assert_eq!(out["status"], 200, "{out}");
    let http = reqwest::Client::new();
    assert_eq!(
        oss::v4::head_object(
            &http,
            &creds,
            REGION,
            &store.bucket_url(),
            "uploads/g1/a b.mp4"
        )
        .await
        .unwrap(),
        Some(42)
    );
    assert_eq!(
        oss::v4::head_object(
            &http,
            &creds,
            REGION,
            &store.bucket_url(),
            "uploads/g1/none"
        )
        .await
        .unwrap(),
        None
    );
    let wrong = OssCredentials {
        access_key_secret: Secret::new("wrong"),
        ..creds.clone()
    };
    let e = oss::v4::head_object(
        &http,
        &wrong,
        REGION,
        &store.bucket_url(),
        "uploads/g1/a b.mp4",
    )
    .await
    .unwrap_err();
    assert_eq!(e.status, 403, "{e}");
    // Too large for the gateway's policy.
    let out =
        py(json!({"action": "post_fields", "url": form.url, "fields": form.fields, "size": 101}))
            .await;
    assert_eq!(out["status"], 400, "{out}");
    assert_eq!(xml_code(out["body"].as_str().unwrap()), "EntityTooLarge");
}

/// What a callback receiver saw.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) path_and_query: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

/// A callback receiver on a free port answering `status` with `answer`.
pub(crate) async fn receiver(status: u16, answer: &'static str) -> (String, Arc<Mutex<Vec<Seen>>>) {
    slow_receiver(status, answer, 0).await
}

/// A receiver that answers only after `delay_ms`.
async fn slow_receiver(
    status: u16,
    answer: &'static str,
    delay_ms: u64,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: String| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push(Seen {
                path_and_query: uri
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default(),
                headers,
                body,
            });
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                answer,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

/// The store performs the upload callback as OSS does: the body's variables filled, signed
/// with RSA-MD5 by a key served at the URL it names. `oss::callback::verify` and the
/// independent Python `rsa` package both accept it; the receiver's JSON is relayed.
#[tokio::test(flavor = "multi_thread")]
async fn upload_callback_is_signed_verifiable_and_relayed() {
    let store = Store::start().await;
    let (base, seen) = receiver(200, r#"{"ok":true,"job":"job-7"}"#).await;
    let key = "uploads/u9/clip.mp4";
    let mut args = post_args(&store, key, 77);
    args["callback"] = json!({
        "url": format!("{base}/callbacks/oss%20x?from=emulator&a=%2F"),
        "body": r#"{"bucket":${bucket},"object":${object},"size":${size},"mimeType":${mimeType},"etag":${etag},"upload":${x:upload_id}}"#,
        "body_type": "application/json",
    });
    args["vars"] = json!({"x:upload_id": "u-42"});
    let out = py(args).await;
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["body"], r#"{"ok":true,"job":"job-7"}"#);
    assert!(store.file(key).exists());

    let call = seen.lock().unwrap()[0].clone();
    assert_eq!(
        call.path_and_query,
        "/callbacks/oss%20x?from=emulator&a=%2F"
    );
    let body: Value = serde_json::from_str(&call.body).unwrap();
    let etag = out["etag"].as_str().unwrap().trim_matches('"').to_string();
    assert_eq!(
        body,
        json!({"bucket": BUCKET, "object": key, "size": 77, "mimeType": "video/mp4", "etag": etag, "upload": "u-42"})
    );
    let h = |n: &str| call.headers.get(n).unwrap().to_str().unwrap().to_string();
    assert_eq!(h("content-type"), "application/json");
    let key_url = oss::callback::decode_pub_key_url(&h("x-oss-pub-key-url")).unwrap();
    assert_eq!(key_url, store.handle.callback_pub_key_url());
    assert!(oss::callback::pub_key_url_allowed(
        &key_url,
        Some(store.handle.callback_pub_key_url())
    ));
    assert!(!oss::callback::pub_key_url_allowed(&key_url, None));
    let pem = reqwest::get(&key_url).await.unwrap().text().await.unwrap();
    let auth = h("authorization");
    assert_eq!(
        oss::callback::verify(&pem, &auth, &call.path_and_query, call.body.as_bytes()),
        Ok(())
    );
    assert_eq!(
        oss::callback::verify(&pem, &auth, &call.path_and_query, b"{}"),
        Err(oss::callback::CallbackError::Mismatch)
    );
    let independent = py(
        json!({"action": "verify_callback", "pem": pem, "authorization": auth,
        "path_and_query": call.path_and_query, "body": call.body}),
    )
    .await;
    assert_eq!(independent, json!({"ok": true, "method": "MD5"}));
    let forged = py(
        json!({"action": "verify_callback", "pem": pem, "authorization": auth,
        "path_and_query": call.path_and_query, "body": call.body.replace("u-42", "u-43")}),
    )
    .await;
    assert_eq!(forged["ok"], false);

    // A form-encoded body: each value URL-encoded, signed as sent.
    let mut args = post_args(&store, "uploads/u10/a b.mp4", 3);
    args["callback"] = json!({
        "url": format!("{base}/cb"),
        "body": "object=${object}&size=${size}&v=${x:v}",
        "body_type": "application/x-www-form-urlencoded",
    });
    args["vars"] = json!({"x:v": "a/b c"});
    let out = py(args).await;
    assert_eq!(out["status"], 200, "{out}");
    let call = seen.lock().unwrap()[1].clone();
    assert_eq!(call.body, "object=uploads%2Fu10%2Fa+b.mp4&size=3&v=a%2Fb+c");
    let auth = call.headers["authorization"].to_str().unwrap().to_string();
    assert_eq!(
        oss::callback::verify(&pem, &auth, "/cb", call.body.as_bytes()),
        Ok(())
    );
}

/// A callback that fails (an error status, or no answer at all) gives the uploader `203
/// CallbackFailed`, and the object is stored anyway, as on OSS.
#[tokio::test(flavor = "multi_thread")]
async fn failed_callback_answers_203_and_keeps_the_object() {
    let store = Store::start().await;
    let (base, seen) = receiver(500, r#"{"error":"nope"}"#).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for (url, message) in [
        (format!("{base}/cb"), "Error status : 500."),
        (format!("http://{closed}/cb"), "can not connect"),
    ] {
        let key = format!("uploads/f/{}.mp4", seen.lock().unwrap().len());
        let mut args = post_args(&store, &key, 9);
        args["callback"] = json!({"url": url, "body": "object=${object}", "body_type": "application/x-www-form-urlencoded"});
        let out = py(args).await;
        let body = out["body"].as_str().unwrap();
        assert_eq!(out["status"], 203, "{out}");
        assert_eq!(xml_code(body), "CallbackFailed", "{body}");
        assert!(body.contains(message), "{body}");
        assert!(store.file(&key).exists());
    }
    assert_eq!(seen.lock().unwrap().len(), 1);
    // A 200 that is not JSON fails too (OSS relays only JSON).
    let (base, seen) = receiver(200, "plain text").await;
    let mut args = post_args(&store, "uploads/f/text.mp4", 9);
    args["callback"] = json!({"url": format!("{base}/cb"), "body": "object=${object}", "body_type": "application/x-www-form-urlencoded"});
    let out = py(args).await;
    assert_eq!(out["status"], 203, "{out}");
    assert!(
        out["body"].as_str().unwrap().contains("not valid json"),
        "{out}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert!(store.file("uploads/f/text.mp4").exists());
    // OSS waits 5 s for the callback's answer, then fails the callback.
    let (base, seen) = slow_receiver(200, r#"{"late":true}"#, 10_000).await;
    let mut args = post_args(&store, "uploads/f/slow.mp4", 9);
    args["callback"] = json!({"url": format!("{base}/cb"), "body": "object=${object}", "body_type": "application/x-www-form-urlencoded"});
    let started = std::time::Instant::now();
    let out = py(args).await;
    assert_eq!(out["status"], 203, "{out}");
    assert_eq!(xml_code(out["body"].as_str().unwrap()), "CallbackFailed");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// CORS: preflights for the allowed origin and the four methods; others refused as OSS does.
#[tokio::test(flavor = "multi_thread")]
async fn cors_preflight_allows_only_the_configured_origin() {
    let store = Store::start().await;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str, method: &'static str, path: String| {
        http.request(reqwest::Method::OPTIONS, format!("{}{path}", store.url()))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "content-type")
            .send()
    };
    for (method, path) in [
        ("POST", "/media".to_string()),
        ("PUT", "/media/a/b.mp4".to_string()),
        ("GET", "/media/a/b.mp4".to_string()),
        ("HEAD", "/media/a/b.mp4".to_string()),
    ] {
        let res = preflight(ORIGIN, method, path).await.unwrap();
        assert_eq!(res.status(), 200, "{method}");
        assert_eq!(res.headers()["access-control-allow-origin"], ORIGIN);
        assert!(res.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains(method));
        assert_eq!(
            res.headers()["access-control-allow-headers"],
            "content-type"
        );
    }
    for (origin, method) in [("http://evil.example", "POST"), (ORIGIN, "DELETE")] {
        let res = preflight(origin, method, "/media".into()).await.unwrap();
        assert_eq!(res.status(), 403, "{origin} {method}");
        assert_eq!(xml_code(&res.text().await.unwrap()), "AccessForbidden");
    }
    // A simple GET from another origin gets no CORS header (the browser then refuses it).
    http.put(format!("{}/media/c.txt", store.url()))
        .body("x")
        .send()
        .await
        .unwrap();
    let res = http
        .get(format!("{}/media/c.txt", store.url()))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

/// A form whose fields before the file exceed 1 MiB is refused (the store keeps them in
/// memory), and a body that is not multipart is `InvalidArgument`.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_or_malformed_forms_are_refused() {
    let store = Store::start().await;
    let boundary = "snapgate-test-boundary";
    let part = |name: &str, value: &str| {
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        )
    };
    let form = |big: usize| {
        let mut body = part("key", "uploads/big/x.txt");
        body.push_str(&part("x:big", &"a".repeat(big)));
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--{boundary}--\r\n"
        ));
        body
    };
    let http = reqwest::Client::new();
    let send = |body: String, content_type: String| {
        http.post(store.bucket_url())
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let multipart = format!("multipart/form-data; boundary={boundary}");
    // Within the limit: stored (anonymous: the local bucket is public-read-write).
    let ok = send(form(1000), multipart.clone()).await.unwrap();
    assert_eq!(ok.status(), 204);
    assert_eq!(
        std::fs::read_to_string(store.file("uploads/big/x.txt")).unwrap(),
        "hello"
    );
    std::fs::remove_file(store.file("uploads/big/x.txt")).unwrap();
    let big = send(form(1024 * 1024 + 1), multipart).await.unwrap();
    assert_eq!(big.status(), 400);
    assert_eq!(xml_code(&big.text().await.unwrap()), "InvalidArgument");
    assert!(!store.file("uploads/big/x.txt").exists());
    let plain = send("key=a".into(), "application/x-www-form-urlencoded".into())
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    assert_eq!(xml_code(&plain.text().await.unwrap()), "InvalidArgument");
}

/// D03: the callback's answer is read bounded. A receiver that answers `200` JSON announcing
/// 20 MB, or not announcing a length, sends 4 MB and then stalls: the store stops reading past
/// 3 MB and fails the callback as too large (it does not wait for, or buffer, the rest; before,
/// it waited for the whole answer and failed only on its 5 s timeout, "could not read").
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_callback_answer_is_refused_without_reading_it_all() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let store = Store::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = sock.read(&mut buf).await;
                // Announced (20 MB), or not announced (read to the end of the connection).
                let head = if buf.windows(9).any(|w| w == b"announced") {
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 20971520\r\n\r\n"
                } else {
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n"
                };
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b' '; 64 * 1024];
                for _ in 0..64 {
                    if sock.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            });
        }
    });
    for path in ["announced", "streamed"] {
        let key = format!("uploads/f/{path}.mp4");
        let mut args = post_args(&store, &key, 9);
        args["callback"] = json!({"url": format!("http://{addr}/{path}"), "body": "object=${object}", "body_type": "application/x-www-form-urlencoded"});
        let out = py(args).await;
        let body = out["body"].as_str().unwrap();
        assert_eq!(out["status"], 203, "{path}: {out}");
        assert_eq!(xml_code(body), "CallbackFailed", "{body}");
        // "too large", not "could not read": the store stopped at the limit rather than waiting
        // for (and buffering) the rest of the answer until its timeout.
        assert!(body.contains("too large"), "{path}: {body}");
        assert!(store.file(&key).exists());
    }
}

/// D12: a `PUT` announcing more than 5 GiB is refused with OSS's `EntityTooLarge` from its
/// `Content-Length`, before the body is read (here a 1-byte body follows and the client waits).
#[tokio::test(flavor = "multi_thread")]
async fn a_put_over_5_gib_is_refused_from_its_content_length() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let store = Store::start().await;
    let addr = store.url().trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "PUT /media/big.bin HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n\r\nx",
        5u64 * 1024 * 1024 * 1024 + 1
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let n = sock.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&answer).contains("</Error>") {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer).to_string();
    assert!(read.is_ok(), "no answer before the body: {text:?}");
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert_eq!(xml_code(&text), "EntityTooLarge", "{text}");
    assert!(!store.file("big.bin").exists());
}
