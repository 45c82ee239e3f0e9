//! OSS multipart upload on the emulator's local object store, driven by the official SDKs,
//! which sign, send and parse on their own: `oss2.resumable_upload` (Python, V1 and V4, cut
//! and resumed from its checkpoint with `ListParts`), presigned `UploadPart` URLs from
//! `oss2`'s `sign_url` (V1 and V4) and a Complete with an upload callback
//! (`tests/oss_store/multipart_client.py`), and ali-oss's `multipartUpload` (Node, V1 and V4,
//! cancelled and resumed: `tests/oss_node/multipart.js`). OSS's error codes with plain HTTP,
//! and a part URL from snapgate's own `Presigner::url_with`. FAILS (never skips) without
//! python3 or node.

use crate::common;
use crate::oss_store::{receiver, venv_python, xml_code, Store, AK, BUCKET, REGION, SECRET};

use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use serde_json::{json, Value};
use snapgate::domain::OssObject;
use snapgate::oss::v1::Presigner;
use snapgate::secret::Secret;

const KB: usize = 1024;

/// A file of `len` bytes that no two parts share, written in a temporary folder.
fn sample_file(dir: &Path, len: usize) -> (PathBuf, String) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let path = dir.join("clip.mp4");
    std::fs::write(&path, &data).unwrap();
    (path, hex::encode(Md5::digest(&data)))
}

fn md5_of(path: &Path) -> String {
    hex::encode(Md5::digest(std::fs::read(path).unwrap()))
}

/// Runs one action of `multipart_client.py`.
async fn py(args: Value) -> Value {
    let python = tokio::task::spawn_blocking(venv_python).await.unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oss_store/multipart_client.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(args.to_string())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "multipart_client.py {} failed:\n{}\n{}",
        args["action"],
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn part_puts(store: &Store) -> u64 {
    let stats: Value = reqwest::get(format!("{}/_emulator/stats", store.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["oss"]["upload_part"].as_u64().unwrap()
}

/// No upload folder is left behind (every upload completed or aborted).
fn no_uploads_left(store: &Store) -> bool {
    let dir = store.dir.path().join(".snapgate-tmp/multipart");
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

/// `oss2.resumable_upload`, cut after two parts, resumes from its checkpoint: `ListParts`
/// (paged one part at a time by oss2) tells it what is stored, and only the missing parts
/// are sent again; the object is the file, byte for byte. V1 and V4.
#[tokio::test(flavor = "multi_thread")]
async fn oss2_resumable_upload_sends_only_the_missing_parts_again() {
    let store = Store::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let part = 200 * KB;
    let (file, md5) = sample_file(tmp.path(), 5 * part + 1234);
    for version in ["v1", "v4"] {
        let key = format!("big/{version} clip.mp4");
        let before = part_puts(&store).await;
        let out = py(json!({
            "action": "resumable", "endpoint": store.url(), "bucket": BUCKET, "ak": AK,
            "secret": SECRET, "region": REGION, "version": version, "key": key,
            "file": file, "part_size": part, "fail_after": 2,
            "checkpoint_dir": tmp.path().join(format!("cp-{version}")),
        }))
        .await;
        assert_eq!(out["first_completed"], false, "{version}: {out}");
        // The third call was cut before it reached the store.
        assert_eq!(out["first_parts"], json!([1, 2, 3]), "{version}: {out}");
        assert_eq!(out["second_parts"], json!([3, 4, 5, 6]), "{version}: {out}");
        assert_eq!(out["status"], 200, "{version}: {out}");
        assert!(out["etag"].as_str().unwrap().ends_with("-6"), "{out}");
        assert_eq!(part_puts(&store).await - before, 6, "{version}");
        assert_eq!(md5_of(&store.file(&key)), md5, "{version}");
    }
    assert!(no_uploads_left(&store));
}

/// Parts sent to presigned URLs (`oss2`'s `sign_url`, V1 and V4) by a plain HTTP client, listed
/// in pages of two (a URL with another part number is refused), completed with an upload
/// callback (V1): the callback carries the object's
/// size and multipart ETag and its answer is relayed; the upload is gone afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn presigned_part_urls_and_a_complete_with_callback() {
    let store = Store::start().await;
    let (base, seen) = receiver(200, r#"{"job":"j-1"}"#).await;
    let tmp = tempfile::tempdir().unwrap();
    let part = 100 * KB;
    let len = 3 * part + 7;
    let (file, md5) = sample_file(tmp.path(), len);
    for version in ["v1", "v4"] {
        let key = format!("presigned/{version}.mp4");
        let mut args = json!({
            "action": "presigned", "endpoint": store.url(), "bucket": BUCKET, "ak": AK,
            "secret": SECRET, "region": REGION, "version": version, "key": key,
            "file": file, "part_size": part,
        });
        if version == "v1" {
            args["callback"] = json!({
                "url": format!("{base}/cb"),
                "body": r#"{"object":${object},"size":${size},"etag":${etag},"mimeType":${mimeType},"upload":${x:upload}}"#,
                "vars": {"x:upload": "u-7"},
            });
        }
        let out = py(args).await;
        assert_eq!(out["status"], 200, "{version}: {out}");
        assert_eq!(out["listed"], json!([1, 2, 3, 4]), "{version}: {out}");
        assert_eq!(out["after_complete"], "NoSuchUpload", "{version}: {out}");
        assert_eq!(
            out["tampered"],
            json!({"status": 403, "code": "SignatureDoesNotMatch"}),
            "{version}: {out}"
        );
        assert_eq!(md5_of(&store.file(&key)), md5, "{version}");
        if version == "v1" {
            assert_eq!(out["callback_answer"], r#"{"job":"j-1"}"#, "{out}");
            let call = seen.lock().unwrap()[0].clone();
            let body: Value = serde_json::from_str(&call.body).unwrap();
            let etag = out["etag"].as_str().unwrap();
            assert!(etag.ends_with("-4"), "{etag}");
            assert_eq!(
                body,
                json!({"object": key, "size": len, "etag": etag, "mimeType": "video/mp4", "upload": "u-7"})
            );
        }
    }
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert!(no_uploads_left(&store));
}

/// ali-oss's `multipartUpload` (Node), cancelled after three parts and resumed from the
/// checkpoint it handed to `progress`: the parts it had are not sent again. V1 and V4.
#[tokio::test(flavor = "multi_thread")]
async fn ali_oss_multipart_upload_resumes_from_its_checkpoint() {
    let node = tokio::task::spawn_blocking(|| common::node_modules("oss-node", "tests/oss_node"))
        .await
        .unwrap();
    let script = node.join("multipart.js");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oss_node/multipart.js"),
        &script,
    )
    .unwrap();
    let store = Store::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let part = 100 * KB;
    let (file, md5) = sample_file(tmp.path(), 8 * part + 99);
    for v4 in [false, true] {
        let key = format!("ali/{v4}/clip.mp4");
        let args = json!({
            "endpoint": store.url(), "bucket": BUCKET, "ak": AK, "secret": SECRET,
            "region": format!("oss-{REGION}"), "v4": v4, "key": key, "file": file,
            "part_size": part, "cancel_after": 3,
        });
        let out = tokio::process::Command::new("node")
            .arg(&script)
            .arg(args.to_string())
            .current_dir(&node)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "ali-oss (v4 {v4}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(out["first_completed"], false, "{out}");
        assert_eq!(out["first_error"], "cancel", "{out}");
        let done = out["checkpoint_parts"].as_u64().unwrap();
        assert!(done >= 3, "{out}");
        let first: Vec<u64> = serde_json::from_value(out["first_parts"].clone()).unwrap();
        let second: Vec<u64> = serde_json::from_value(out["second_parts"].clone()).unwrap();
        // Only the parts the checkpoint did not hold went out again.
        assert_eq!(second, ((done + 1)..=9).collect::<Vec<_>>(), "{out}");
        assert!(first.len() as u64 >= done, "{out}");
        assert_eq!(out["status"], 200, "{out}");
        assert_eq!(md5_of(&store.file(&key)), md5, "v4 {v4}");
    }
}

/// `(status, OSS code or "")` of an answer.
async fn code(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let body = res.text().await.unwrap();
    (status, xml_code(&body).to_string())
}

fn complete_body(parts: &[(u32, &str)]) -> String {
    let mut xml = String::from("<CompleteMultipartUpload>");
    for (n, etag) in parts {
        xml.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>\"{etag}\"</ETag></Part>"
        ));
    }
    xml + "</CompleteMultipartUpload>"
}

async fn initiate(http: &reqwest::Client, url: &str) -> String {
    let text = http
        .post(format!("{url}?uploads"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.split_once("<UploadId>")
        .and_then(|(_, r)| r.split_once("</UploadId>"))
        .unwrap()
        .0
        .to_string()
}

/// OSS's rules, with OSS's codes: part numbers 1–10,000, ascending parts in Complete, each
/// with its ETag, each but the last at least 100 KB, `x-oss-complete-all` with no body, an
/// aborted or completed upload is `NoSuchUpload` and leaves no part on disk; an upload id
/// is bound to its object; a part URL from snapgate's `Presigner::url_with` works and a
/// tampered one is refused.
#[tokio::test(flavor = "multi_thread")]
async fn multipart_rules_answer_osss_codes() {
    let store = Store::start().await;
    let http = reqwest::Client::new();
    let url = format!("{}/{BUCKET}/rules/a.mp4", store.url());
    let id = initiate(&http, &url).await;
    let put = |n: &str, body: Vec<u8>| {
        http.put(format!("{url}?partNumber={n}&uploadId={id}"))
            .body(body)
            .send()
    };
    for n in ["0", "10001", "x"] {
        assert_eq!(
            code(put(n, b"x".to_vec()).await.unwrap()).await,
            (400, "InvalidArgument".into()),
            "{n}"
        );
    }
    let small = put("1", b"tiny".to_vec()).await.unwrap();
    let etag1 = small.headers()["etag"]
        .to_str()
        .unwrap()
        .trim_matches('"')
        .to_string();
    assert_eq!(etag1, hex::encode_upper(Md5::digest(b"tiny")));
    let big = vec![7u8; 100 * KB];
    let res = put("2", big.clone()).await.unwrap();
    let etag2 = res.headers()["etag"]
        .to_str()
        .unwrap()
        .trim_matches('"')
        .to_string();
    let complete = |body: String, all: bool| {
        let mut r = http.post(format!("{url}?uploadId={id}")).body(body);
        if all {
            r = r.header("x-oss-complete-all", "yes");
        }
        r.send()
    };
    let cases = [
        (complete_body(&[(1, &etag1), (2, &etag2)]), "EntityTooSmall"),
        (
            complete_body(&[(2, &etag2), (1, &etag1)]),
            "InvalidPartOrder",
        ),
        (complete_body(&[(2, &etag1)]), "InvalidPart"),
        (complete_body(&[(3, &etag2)]), "InvalidPart"),
        ("<nope/>".to_string(), "MalformedXML"),
    ];
    for (body, want) in cases {
        assert_eq!(
            code(complete(body.clone(), false).await.unwrap()).await,
            (400, want.to_string()),
            "{body}"
        );
    }
    assert_eq!(
        code(complete(complete_body(&[(2, &etag2)]), true).await.unwrap()).await,
        (400, "InvalidArgument".into())
    );
    // The same upload id on another key is no upload.
    let other = format!("{}/{BUCKET}/rules/b.mp4?uploadId={id}", store.url());
    assert_eq!(
        code(http.get(&other).send().await.unwrap()).await,
        (404, "NoSuchUpload".into())
    );
    // Part 2 alone (the last part may be small; here it is 100 KB) completes.
    let res = complete(complete_body(&[(2, &etag2)]), false)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(std::fs::read(store.file("rules/a.mp4")).unwrap(), big);
    for res in [
        http.get(format!("{url}?uploadId={id}"))
            .send()
            .await
            .unwrap(),
        put("3", b"late".to_vec()).await.unwrap(),
        http.delete(format!("{url}?uploadId={id}"))
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(code(res).await, (404, "NoSuchUpload".into()));
    }
    assert!(no_uploads_left(&store));

    // Aborted: its parts are gone.
    let id = initiate(&http, &url).await;
    let res = http
        .put(format!("{url}?partNumber=1&uploadId={id}"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(!no_uploads_left(&store));
    let res = http
        .delete(format!("{url}?uploadId={id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(no_uploads_left(&store));

    // A part URL signed by snapgate; tampered (another part number), it is refused.
    let id = initiate(&http, &url).await;
    let signer = Presigner::with_key(AK, Secret::new(SECRET.to_string()), 60);
    let object = OssObject {
        location: format!("oss-{REGION}"),
        bucket: BUCKET.into(),
        object: "rules/a.mp4".into(),
    };
    let sub = vec![
        ("partNumber".to_string(), "1".to_string()),
        ("uploadId".to_string(), id.clone()),
    ];
    let expires = chrono::Utc::now().timestamp() + 60;
    let signed = signer.url_with("PUT", &url, &object, &sub, expires);
    let res = http.put(&signed).body(big.clone()).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let tampered = signed.replace("partNumber=1", "partNumber=2");
    assert_eq!(
        code(http.put(&tampered).body(big).send().await.unwrap()).await,
        (403, "SignatureDoesNotMatch".into())
    );
}

/// A part announcing more than 5 GB is refused from its `Content-Length`, before its body.
#[tokio::test(flavor = "multi_thread")]
async fn a_part_over_5_gib_is_refused_from_its_content_length() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let store = Store::start().await;
    let http = reqwest::Client::new();
    let id = initiate(&http, &format!("{}/{BUCKET}/huge.bin", store.url())).await;
    let addr = store.url().trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "PUT /{BUCKET}/huge.bin?partNumber=1&uploadId={id} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n\r\nx",
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
}

/// snapgate's own multipart client (`oss::multipart`, V4 headers) against the store: it
/// initiates, the parts go to URLs snapgate presigned, it lists them in pages, completes with
/// an upload callback, and aborts (twice: an upload already gone is no error).
#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_client_initiates_lists_completes_and_aborts() {
    use snapgate::oss::multipart::{MultipartClient, StoredPart};
    let store = Store::start().await;
    let (base, seen) = receiver(200, r#"{"ok":1}"#).await;
    let http = reqwest::Client::new();
    let creds = snapgate::oss::OssCredentials {
        access_key_id: AK.into(),
        access_key_secret: Secret::new(SECRET.to_string()),
        security_token: None,
    };
    let bucket_url = format!("{}/{BUCKET}", store.url());
    let client = MultipartClient {
        http: &http,
        creds: &creds,
        region: REGION,
        bucket_url: &bucket_url,
    };
    let key = "gw/a b.mp4";
    let id = client.initiate(key, "video/mp4").await.unwrap();
    let signer = Presigner::with_key(AK, Secret::new(SECRET.to_string()), 60);
    let object = OssObject {
        location: format!("oss-{REGION}"),
        bucket: BUCKET.into(),
        object: key.into(),
    };
    let object_url = format!("{bucket_url}/{}", snapgate::oss::uri_encode(key, true));
    let mut whole = Vec::new();
    for n in 1..=3u8 {
        let body = vec![n; if n < 3 { 100 * KB } else { 10 }];
        whole.extend_from_slice(&body);
        let sub = vec![
            ("partNumber".to_string(), n.to_string()),
            ("uploadId".to_string(), id.clone()),
        ];
        let url = signer.url_with(
            "PUT",
            &object_url,
            &object,
            &sub,
            chrono::Utc::now().timestamp() + 60,
        );
        assert_eq!(http.put(url).body(body).send().await.unwrap().status(), 200);
    }
    let (page, next) = client.list_parts_page(key, &id, 0, 2).await.unwrap();
    assert_eq!((page.len(), next), (2, Some(2)));
    let parts: Vec<StoredPart> = client.list_parts(key, &id).await.unwrap();
    assert_eq!(
        parts.iter().map(|p| (p.number, p.size)).collect::<Vec<_>>(),
        [(1, 100 * KB as u64), (2, 100 * KB as u64), (3, 10)]
    );
    let spec = snapgate::oss::callback::CallbackSpec {
        url: format!("{base}/cb"),
        body: "object=${object}&size=${size}&u=${x:u}".into(),
        body_type: snapgate::oss::callback::FORM.into(),
    };
    let vars = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        json!({"x:u": "7"}).to_string(),
    );
    let done = client
        .complete(key, &id, &parts, Some((&spec.encode(), &vars)))
        .await
        .unwrap();
    assert_eq!((done.status, done.body.as_str()), (200, r#"{"ok":1}"#));
    assert_eq!(
        seen.lock().unwrap()[0].body,
        format!("object=gw%2Fa+b.mp4&size={}&u=7", whole.len())
    );
    assert_eq!(std::fs::read(store.file(key)).unwrap(), whole);
    // A completed upload cannot be completed again.
    let again = client.complete(key, &id, &parts, None).await.unwrap_err();
    assert_eq!(again.code, "NoSuchUpload");

    let id = client.initiate(key, "video/mp4").await.unwrap();
    assert!(!no_uploads_left(&store));
    client.abort(key, &id).await.unwrap();
    client.abort(key, &id).await.unwrap();
    assert!(no_uploads_left(&store));
    assert_eq!(
        client.list_parts(key, &id).await.unwrap_err().code,
        "NoSuchUpload"
    );
}
