//! The MPS client against small local servers: the request is what the SDKs send, every attempt
//! is freshly signed, and failures are classified by what is known about the outcome.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use serde_json::{json, Value};
use snapgate::mps::client::{MpsApi, MpsClient, MpsClientConfig, SignatureMethod};
use snapgate::mps::error::ErrorClass;
use snapgate::mps::sign;
use snapgate::mps::wire::SubmitParams;
use snapgate::secret::Secret;

type Request = (String, Option<String>, HeaderMap, usize);

#[derive(Default, Clone)]
struct Seen(Arc<Mutex<Vec<Request>>>);

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn client(endpoint: &str, sig: SignatureMethod, timeout_ms: u64) -> MpsClient {
    MpsClient::new(MpsClientConfig {
        endpoint: endpoint.into(),
        credentials: snapgate::credentials::Credentials::key(
            "testid",
            Secret::new("testsecret-DO-NOT-PRINT"),
        ),
        signature: sig,
        region_id: Some("cn-shanghai".into()),
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_millis(timeout_ms),
    })
    .unwrap()
}

fn params() -> SubmitParams {
    SubmitParams {
        input: r#"{"Bucket":"b-1","Location":"oss-cn-shanghai","Object":"a%20b.mp4"}"#.into(),
        snapshot_config: r#"{"OutputFile":{"Bucket":"b-1","Location":"oss-cn-shanghai","Object":"%7BCount%7D.jpg"},"Num":"2","Time":"0"}"#.into(),
        pipeline_id: Some("9bad3801a2c561c22c4df9c6abcd0000".into()),
        user_data: Some("id-1 team data".into()),
    }
}

async fn record(
    State(seen): State<Seen>,
    method: Method,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    seen.0
        .lock()
        .unwrap()
        .push((method.to_string(), q, headers, body.len()));
    axum::Json(json!({
        "RequestId": "R-1",
        "SnapshotJob": {"Id": "0123456789abcdef0123456789abcdef", "State": "Submitted", "Count": "0"},
        "SnapshotJobList": {"SnapshotJob": [{"Id": "0123456789abcdef0123456789abcdef", "State": "Success", "Count": "2"}]}
    }))
}

/// A server that records every request (method, query, headers, body length) and answers as
/// MPS does to a submit and to a query: its URL and what it saw.
async fn recording_server() -> (String, Seen) {
    let seen = Seen::default();
    let url = serve(
        Router::new()
            .route("/", axum::routing::any(record))
            .with_state(seen.clone()),
    )
    .await;
    (url, seen)
}

#[tokio::test]
async fn v1_requests_are_posts_with_everything_in_the_query_and_a_fresh_nonce() {
    let (url, seen) = recording_server().await;
    let c = client(&url, SignatureMethod::V1, 2000);
    let r = c.submit_snapshot_job(&params()).await.unwrap();
    assert_eq!(r.request_id, "R-1");
    assert_eq!(r.body.snapshot_job.state, "Submitted");
    c.submit_snapshot_job(&params()).await.unwrap();
    let seen = seen.0.lock().unwrap();
    let mut nonces = Vec::new();
    for (method, q, _, body_len) in seen.iter() {
        assert_eq!(method, "POST");
        assert_eq!(*body_len, 0, "empty body");
        let q = q.as_deref().unwrap();
        assert!(!q.contains('+'), "spaces are %20 on the wire: {q}");
        let mut p: BTreeMap<String, String> =
            form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        let sig = p.remove("Signature").unwrap();
        assert_eq!(
            sign::sign_v1(
                "testsecret-DO-NOT-PRINT",
                &sign::string_to_sign_v1("POST", &p)
            ),
            sig
        );
        for (k, v) in [
            ("Action", "SubmitSnapshotJob"),
            ("Version", "2014-06-18"),
            ("Format", "JSON"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("AccessKeyId", "testid"),
            ("UserData", "id-1 team data"),
            ("PipelineId", "9bad3801a2c561c22c4df9c6abcd0000"),
        ] {
            assert_eq!(p.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_eq!(p["Input"], params().input);
        assert!(
            chrono::NaiveDateTime::parse_from_str(&p["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").is_ok()
        );
        nonces.push(p["SignatureNonce"].clone());
    }
    assert_ne!(nonces[0], nonces[1], "a fresh nonce on every attempt");
}

#[tokio::test]
async fn acs3_requests_carry_a_verifiable_authorization_header() {
    let (url, seen) = recording_server().await;
    let c = client(&url, SignatureMethod::Acs3, 2000);
    let ids = ["a".repeat(32), "b".repeat(32)];
    let r = c.query_snapshot_jobs(&ids).await.unwrap();
    assert_eq!(r.body.jobs[0].count, Some(2));
    let seen = seen.0.lock().unwrap();
    let (_, q, headers, _) = &seen[0];
    let auth = sign::parse_acs3_authorization(headers["authorization"].to_str().unwrap()).unwrap();
    let query: BTreeMap<String, String> = form_urlencoded::parse(q.as_deref().unwrap().as_bytes())
        .into_owned()
        .collect();
    assert_eq!(query["SnapshotJobIds"], ids.join(","));
    assert!(
        !query.contains_key("Action"),
        "ACS3 puts the action in a header"
    );
    let signed: BTreeMap<String, String> = auth
        .signed_headers
        .iter()
        .map(|n| (n.clone(), headers[n.as_str()].to_str().unwrap().to_string()))
        .collect();
    for h in [
        "host",
        "x-acs-action",
        "x-acs-version",
        "x-acs-date",
        "x-acs-signature-nonce",
        "x-acs-content-sha256",
    ] {
        assert!(signed.contains_key(h), "{h} signed");
    }
    let cr = sign::canonical_request_acs3("POST", "/", &query, &signed, sign::EMPTY_BODY_SHA256);
    assert_eq!(
        sign::sign_acs3("testsecret-DO-NOT-PRINT", &sign::string_to_sign_acs3(&cr)),
        auth.signature
    );
}

fn answer(status: StatusCode, body: Value) -> Router {
    Router::new().route(
        "/",
        axum::routing::any(move || {
            let body = body.clone();
            async move { (status, axum::Json(body)) }
        }),
    )
}

#[tokio::test]
async fn errors_are_classified_by_code_and_by_what_is_known() {
    let throttled = serve(answer(
        StatusCode::BAD_REQUEST,
        json!({"RequestId": "R", "HostId": "h", "Code": "Throttling.User", "Message": "flow control", "Recommend": "x"}),
    ))
    .await;
    let e = client(&throttled, SignatureMethod::V1, 2000)
        .submit_snapshot_job(&params())
        .await
        .unwrap_err();
    assert_eq!(
        (
            e.class,
            e.code.as_str(),
            e.request_id.as_deref(),
            e.http_status
        ),
        (
            ErrorClass::Retryable,
            "Throttling.User",
            Some("R"),
            Some(400)
        )
    );
    assert_eq!(e.host_id.as_deref(), Some("h"));
    assert_eq!(e.recommend.as_deref(), Some("x"));

    let bad_sig = serve(answer(
        StatusCode::BAD_REQUEST,
        json!({"RequestId": "R", "Code": "SignatureDoesNotMatch", "Message": "Specified signature is not matched with our calculation. server string to sign is:POST&%2F&x"}),
    ))
    .await;
    let e = client(&bad_sig, SignatureMethod::V1, 2000)
        .submit_snapshot_job(&params())
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.code.as_str()),
        (ErrorClass::Gateway, "SignatureDoesNotMatch"),
        "the gateway's own credentials: dispatch pauses, no job fails"
    );

    let unavailable = serve(answer(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"RequestId": "R", "Code": "ServiceUnavailable", "Message": "m"}),
    ))
    .await;
    let e = client(&unavailable, SignatureMethod::V1, 2000)
        .submit_snapshot_job(&params())
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Retryable);

    // Nothing listens: the request was never sent.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = client(
        &format!("http://127.0.0.1:{port}"),
        SignatureMethod::V1,
        2000,
    )
    .submit_snapshot_job(&params())
    .await
    .unwrap_err();
    assert_eq!(
        (e.class, e.code.as_str()),
        (ErrorClass::Unreachable, "Transport.ConnectFailed")
    );
    assert!(
        !e.message.contains("Signature") && !e.message.contains("AccessKeyId"),
        "a transport error never carries the signed URL: {}",
        e.message
    );

    // Sent, but no answer in time: the outcome is unknown.
    let slow = serve(Router::new().route(
        "/",
        axum::routing::any(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        }),
    ))
    .await;
    let e = client(&slow, SignatureMethod::V1, 200)
        .submit_snapshot_job(&params())
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.code.as_str()),
        (ErrorClass::OutcomeUnknown, "Transport.OutcomeUnknown")
    );

    // Read and closed without a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 65536];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            drop(s);
        }
    });
    let e = client(&format!("http://{addr}"), SignatureMethod::V1, 2000)
        .submit_snapshot_job(&params())
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::OutcomeUnknown, "{e}");

    // A 2xx that is not MPS's JSON: MPS may have created the job.
    let garbage =
        serve(Router::new().route("/", axum::routing::any(|| async { "<html>proxy</html>" })))
            .await;
    let e = client(&garbage, SignatureMethod::V1, 2000)
        .submit_snapshot_job(&params())
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.code.as_str()),
        (ErrorClass::OutcomeUnknown, "Transport.InvalidResponse")
    );

    // A proxy's 5xx without MPS's body: the request may have reached MPS.
    let gateway_html = serve(Router::new().route(
        "/",
        axum::routing::any(|| async { (StatusCode::GATEWAY_TIMEOUT, "<html>504</html>") }),
    ))
    .await;
    let e = client(&gateway_html, SignatureMethod::V1, 2000)
        .submit_snapshot_job(&params())
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.http_status),
        (ErrorClass::OutcomeUnknown, Some(504))
    );
    let no_code = serve(answer(
        StatusCode::BAD_GATEWAY,
        json!({"error": "upstream"}),
    ))
    .await;
    let e = client(&no_code, SignatureMethod::V1, 2000)
        .submit_snapshot_job(&params())
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::OutcomeUnknown);

    // Throttling answers may say when to come back (x-acs-retry-after, milliseconds).
    let later = serve(Router::new().route(
        "/",
        axum::routing::any(|| async {
            (
                StatusCode::BAD_REQUEST,
                [("x-acs-retry-after", "1500")],
                axum::Json(json!({"RequestId": "R", "Code": "Throttling.Api", "Message": "m"})),
            )
        }),
    ))
    .await;
    let e = client(&later, SignatureMethod::V1, 2000)
        .submit_snapshot_job(&params())
        .await
        .unwrap_err();
    assert_eq!(e.retry_after, Some(Duration::from_millis(1500)));

    // More than 10 ids is refused before sending.
    let ids: Vec<String> = (0..11).map(|i| format!("{i:032x}")).collect();
    let e = client(&throttled, SignatureMethod::V1, 2000)
        .query_snapshot_jobs(&ids)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Fatal);
}

#[test]
fn the_secret_never_shows_in_debug_output() {
    let c = client("http://127.0.0.1:1", SignatureMethod::V1, 10);
    let text = format!("{c:?}");
    assert!(text.contains("testid"));
    assert!(!text.contains("DO-NOT-PRINT"), "{text}");
}
