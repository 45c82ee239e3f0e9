//! The checks behind snapgate's fuzz targets, one per parser that faces the outside. Each takes
//! the fuzzer's bytes, feeds them to snapgate's own public functions and asserts what must hold
//! for every input (a panic is a finding):
//!
//! - `strict_json`: a request body through `StrictJson` (axum's extractor, as the REST API reads
//!   it): what it accepts is what serde_json reads, with no duplicate or NUL key; what it refuses
//!   that serde_json reads has such a key.
//! - `mps_rpc_params`: an MPS RPC request (raw HTTP) through parameter collection, the signature
//!   parser and verifier, and `SubmitSnapshotJob`'s parameter reading.
//! - `mps_signature`: the same request re-signed (v1 or ACS3) with a known secret is accepted, and
//!   no change to what it means (a parameter, a signed header, the body, the method, the
//!   secret) is accepted any more.
//! - `post_policy`: PostObject form fields (URL-encoded) through `verify_post_fields`, then with
//!   their policy signed: an accepted policy re-encoded (re-serialized, re-signed) is accepted
//!   the same; a form `sign_post` makes is accepted, and refused once a pinned field changes.
//! - `oss_post_form`: a multipart body (first line: the Content-Type) through the emulator's
//!   PostObject form reader, then `post_policy`'s checks on its fields.
//! - `oss_callback`: callback specs (decode/encode round trip), body templates, key URLs, PEM keys
//!   and signatures; a signed callback verifies and a changed body never does.
//! - `mns_xml`: an MNS answer through the XML helpers, `parse_messages` and the MPS job message
//!   parser; escaping round-trips.
//! - `emulator_mns`: an MNS queue request (raw HTTP) through the emulator's check; re-signed it
//!   is accepted, changed it is refused.
//!
//! `tests/it/fuzz_corpus.rs` compiles this file too and replays every kept input
//! (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`) on the stable toolchain, so it uses
//! only crates snapgate itself depends on.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use axum::response::IntoResponse;
use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use snapgate::http::strict_json::StrictJson;
use snapgate::mps::{mns, notification, sign, verify, wire};
use snapgate::oss::post_policy::{self, PostPolicy, VerifiedPost};
use snapgate::oss::{callback, v1, v4, OssCredentials};
use snapgate::secret::Secret;

const B64: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::STANDARD;

/// The key pair every target signs with (the captured SDK requests' own).
pub const ACCESS_KEY_ID: &str = "testid";
pub const ACCESS_KEY_SECRET: &str = "testsecret";
/// The region and bucket PostObject forms are checked for.
const REGION: &str = "cn-shanghai";
const BUCKET: &str = "bucket";

/// The clock of every check (a fixed one: the same input gives the same answer every run).
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
}

/// Runs a future that never waits on I/O (an in-memory body) to its end.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..10_000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("a future over an in-memory body never completed");
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP requests: `METHOD TARGET [HTTP/1.1]`, `name: value` lines, an empty line, the body.

/// A request as the fuzzer wrote it (what `http` cannot represent is left out).
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl RawRequest {
    pub fn parse(data: &[u8]) -> RawRequest {
        let (head, body) = match find(data, b"\r\n\r\n") {
            Some(i) => (&data[..i], &data[i + 4..]),
            None => match find(data, b"\n\n") {
                Some(i) => (&data[..i], &data[i + 2..]),
                None => (data, &b""[..]),
            },
        };
        let head = String::from_utf8_lossy(head);
        let mut lines = head.lines();
        let first = lines.next().unwrap_or("");
        let mut words = first.split(' ');
        let method =
            Method::from_bytes(words.next().unwrap_or("").as_bytes()).unwrap_or(Method::GET);
        let uri = words
            .next()
            .and_then(|t| t.parse::<Uri>().ok())
            .unwrap_or_else(|| Uri::from_static("/"));
        let mut headers = HeaderMap::new();
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.trim().as_bytes()),
                HeaderValue::from_str(value.trim()),
            ) {
                headers.append(n, v);
            }
        }
        RawRequest {
            method,
            uri,
            headers,
            body: body.to_vec(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A small number taken from the input, to choose among mutations.
fn pick(data: &[u8], n: usize) -> usize {
    let h = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    (h % n.max(1) as u64) as usize
}

// ---------------------------------------------------------------------------------------------
// strict_json

/// Whether a JSON document has an object with the same key twice or a key holding U+0000: an
/// oracle written independently of `StrictValue`.
struct BadKeys(bool);

impl<'de> Deserialize<'de> for BadKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BadKeysVisitor)
    }
}

struct BadKeysVisitor;

macro_rules! scalar {
    ($($f:ident: $t:ty),*) => {$(
        fn $f<E>(self, _: $t) -> Result<BadKeys, E> {
            Ok(BadKeys(false))
        }
    )*};
}

impl<'de> Visitor<'de> for BadKeysVisitor {
    type Value = BadKeys;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
    fn visit_unit<E>(self) -> Result<BadKeys, E> {
        Ok(BadKeys(false))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BadKeys, A::Error> {
        let mut bad = false;
        while let Some(BadKeys(b)) = seq.next_element()? {
            bad |= b;
        }
        Ok(BadKeys(bad))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BadKeys, A::Error> {
        let mut seen = HashSet::new();
        let mut bad = false;
        while let Some(key) = map.next_key::<String>()? {
            bad |= key.contains('\0') || !seen.insert(key);
            let BadKeys(b) = map.next_value()?;
            bad |= b;
        }
        Ok(BadKeys(bad))
    }
}

/// A request body as the REST API reads it.
pub fn strict_json(data: &[u8]) {
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/snapshot-jobs")
        .header("content-type", "application/json")
        .body(Body::from(data.to_vec()))
        .unwrap();
    let strict = block_on(StrictJson::from_request(req, &()));
    let plain = serde_json::from_slice::<Value>(data);
    let bad_keys = serde_json::from_slice::<BadKeys>(data).map(|b| b.0);
    match strict {
        Ok(StrictJson(v)) => {
            match plain {
                Ok(plain) => assert_eq!(v, plain, "accepted JSON reads unlike serde_json"),
                // Only numbers beyond a double are read where serde_json refuses.
                Err(e) => assert!(
                    e.to_string().contains("number out of range"),
                    "accepted what serde_json refuses: {e}"
                ),
            }
            assert!(
                !matches!(bad_keys, Ok(true)),
                "accepted a duplicate or NUL key"
            );
            assert!(!has_nul_key(&v), "accepted a NUL key");
        }
        Err(e) => {
            if plain.is_ok() {
                assert!(
                    matches!(bad_keys, Ok(true)),
                    "refused JSON without a duplicate or NUL key: {e:?}"
                );
            }
            let _ = e.into_response();
        }
    }
}

fn has_nul_key(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul_key(v)),
        Value::Array(a) => a.iter().any(has_nul_key),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// mps_rpc_params, mps_signature

/// The time a request says it was made (`x-acs-date`, `Timestamp`), else [`now`]: the window
/// check then passes for a request captured long ago.
fn request_time(r: &RawRequest, params: &BTreeMap<String, String>) -> DateTime<Utc> {
    r.header("x-acs-date")
        .or(params.get("Timestamp").map(String::as_str))
        .and_then(wire::parse_time)
        .unwrap_or_else(now)
}

/// An MPS RPC request through what the MPS-compatible endpoint does before its service call.
pub fn mps_rpc_params(data: &[u8]) {
    let r = RawRequest::parse(data);
    // A parameter given twice is refused before anything else reads the request.
    let Ok(params) = verify::collect_params(r.uri.query(), &r.headers, &r.body) else {
        return;
    };
    let at = request_time(&r, &params.all);
    if let Ok(u) = verify::parse(r.method.as_str(), &r.headers, params.clone(), &r.body, at) {
        assert!(!u.string_to_sign().is_empty());
        if let Ok(v) = u.verify(ACCESS_KEY_SECRET) {
            submit_params(&v.params);
        }
    }
    // With authentication off, every parameter but the common ones reaches the service.
    let mut api = params.all;
    api.retain(|k, _| !verify::COMMON.contains(&k.as_str()));
    submit_params(&api);
}

fn submit_params(p: &BTreeMap<String, String>) {
    match snapgate::http::mps_rpc::submit_body(p) {
        Ok(body) => {
            assert!(body.is_object(), "a submit body that is not an object");
            let _ = snapgate::domain::validate_request(&body);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// Whether the endpoint's verifier accepts the request with the known secret.
fn mps_accepts(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8], secret: &str) -> bool {
    verify::collect_params(uri.query(), headers, body)
        .and_then(|params| verify::parse(method.as_str(), headers, params, body, now()))
        .and_then(|u| u.verify(secret))
        .is_ok()
}

fn query_of(params: &BTreeMap<String, String>) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

/// `/?query` (`None` past what a URI can hold).
fn uri_with(query: &str) -> Option<Uri> {
    format!("/?{query}").parse().ok()
}

/// A method that signs differently (methods are signed upper-cased).
fn other_method(m: &Method) -> Method {
    if m.as_str().eq_ignore_ascii_case("GET") {
        Method::POST
    } else {
        Method::GET
    }
}

/// A request re-signed with the known secret is accepted; changed, it is refused.
pub fn mps_signature(data: &[u8]) {
    let r = RawRequest::parse(data);
    if r.header("authorization")
        .is_some_and(|a| a.starts_with("ACS3-"))
    {
        acs3_signature(data, r);
    } else {
        v1_signature(data, r);
    }
}

fn v1_signature(data: &[u8], r: RawRequest) {
    let Ok(collected) = verify::collect_params(r.uri.query(), &r.headers, &r.body) else {
        return;
    };
    let mut params = collected.all;
    params.remove("Signature");
    let defaults = [
        ("Action", "SubmitSnapshotJob"),
        ("AccessKeyId", ACCESS_KEY_ID),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "nonce"),
    ];
    for (k, v) in defaults {
        params.entry(k.into()).or_insert_with(|| v.into());
    }
    params.insert("SignatureMethod".into(), "HMAC-SHA1".into());
    params.insert("Timestamp".into(), wire::format_time(now()));
    // Parameters only in the query; the body stays as it was, not read as a form.
    let mut headers = r.headers.clone();
    headers.remove("content-type");
    let method = r.method.clone();
    let signed = |p: &BTreeMap<String, String>, m: &Method| {
        let mut p = p.clone();
        p.insert(
            "Signature".into(),
            sign::sign_v1(ACCESS_KEY_SECRET, &sign::string_to_sign_v1(m.as_str(), &p)),
        );
        uri_with(&query_of(&p))
    };
    let Some(uri) = signed(&params, &method) else {
        return;
    };
    assert!(
        mps_accepts(&method, &uri, &headers, &r.body, ACCESS_KEY_SECRET),
        "a v1 request signed with the key is refused"
    );
    // Changes to what the request means, each refused.
    let names: Vec<String> = params.keys().cloned().collect();
    let name = &names[pick(data, names.len())];
    let mut changed = params.clone();
    changed.get_mut(name).unwrap().push('x');
    let refused = |p: &BTreeMap<String, String>, m: &Method, what: &str| {
        let mut with_sig = p.clone();
        with_sig.insert(
            "Signature".into(),
            sign::sign_v1(
                ACCESS_KEY_SECRET,
                &sign::string_to_sign_v1(method.as_str(), &params),
            ),
        );
        let Some(uri) = uri_with(&query_of(&with_sig)) else {
            return;
        };
        assert!(
            !mps_accepts(m, &uri, &headers, &r.body, ACCESS_KEY_SECRET),
            "a v1 request with {what} is still accepted"
        );
    };
    refused(&changed, &method, &format!("{name} changed"));
    let mut added = params.clone();
    added.insert(format!("{name}X"), "1".into());
    refused(&added, &method, "a parameter added");
    let mut removed = params.clone();
    removed.remove(name);
    refused(&removed, &method, &format!("{name} removed"));
    refused(&params, &other_method(&method), "another method");
    assert!(
        !mps_accepts(&method, &uri, &headers, &r.body, "another"),
        "a v1 request is accepted with another secret"
    );
}

fn acs3_signature(data: &[u8], r: RawRequest) {
    // A parameter given twice is refused before any signature is checked: no re-signing makes
    // such a request acceptable, so the invariant is about the others.
    if verify::collect_params(r.uri.query(), &r.headers, &r.body).is_err() {
        return;
    }
    let mut headers = r.headers.clone();
    let date = wire::format_time(now());
    headers.insert("x-acs-date", HeaderValue::from_str(&date).unwrap());
    for (name, default) in [
        ("host", "mts.cn-shanghai.aliyuncs.com"),
        ("x-acs-action", "SubmitSnapshotJob"),
        ("x-acs-signature-nonce", "nonce"),
        ("x-acs-version", "2014-06-18"),
    ] {
        if headers.get(name).and_then(|v| v.to_str().ok()).is_none() {
            headers.insert(name, HeaderValue::from_static(default));
        }
    }
    // A repeated required header is read as its first value: sent once here.
    for name in [
        "host",
        "x-acs-action",
        "x-acs-signature-nonce",
        "x-acs-version",
    ] {
        if let Some(first) = headers.get(name).cloned() {
            headers.insert(name, first);
        }
    }
    let body_hash = snapgate::crypto::sha256_hex(&r.body);
    if headers.contains_key("x-acs-content-sha256") {
        headers.insert(
            "x-acs-content-sha256",
            HeaderValue::from_str(&body_hash).unwrap(),
        );
    }
    // Signed: the headers the request named (those it has, readable), and the required ones.
    let named = r
        .header("authorization")
        .and_then(|a| sign::parse_acs3_authorization(a).ok())
        .map(|a| a.signed_headers)
        .unwrap_or_default();
    let mut signed = BTreeMap::new();
    let required = [
        "host",
        "x-acs-action",
        "x-acs-date",
        "x-acs-signature-nonce",
        "x-acs-version",
    ];
    for name in named.iter().map(String::as_str).chain(required) {
        let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        if n == "authorization" {
            continue;
        }
        // Only a header sent once: a repeated one is read as its first value.
        let mut values = headers.get_all(&n).iter();
        if let (Some(Ok(v)), None) = (values.next().map(|v| v.to_str()), values.next()) {
            signed.insert(n.as_str().to_string(), v.to_string());
        }
    }
    let sign_with = |headers: &HeaderMap, uri: &Uri, m: &Method, body: &[u8]| {
        // ACS3's canonical query is the URL's query only (the body is covered by its hash).
        let params = verify::collect_params(uri.query(), headers, body)
            .map(|p| p.query)
            .unwrap_or_default();
        let hashed = headers
            .get("x-acs-content-sha256")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| snapgate::crypto::sha256_hex(body));
        let cr = sign::canonical_request_acs3(m.as_str(), "/", &params, &signed, &hashed);
        let sig = sign::sign_acs3(ACCESS_KEY_SECRET, &sign::string_to_sign_acs3(&cr));
        let mut h = headers.clone();
        let authz = sign::authorization_acs3(ACCESS_KEY_ID, &signed, &sig);
        h.insert("authorization", HeaderValue::from_str(&authz).unwrap());
        h
    };
    let method = r.method.clone();
    let Some(uri) = uri_with(r.uri.query().unwrap_or("")) else {
        return;
    };
    let good = sign_with(&headers, &uri, &method, &r.body);
    assert!(
        mps_accepts(&method, &uri, &good, &r.body, ACCESS_KEY_SECRET),
        "an ACS3 request signed with the key is refused"
    );
    assert!(
        !mps_accepts(&method, &uri, &good, &r.body, "another"),
        "an ACS3 request is accepted with another secret"
    );
    assert!(
        !mps_accepts(
            &other_method(&method),
            &uri,
            &good,
            &r.body,
            ACCESS_KEY_SECRET
        ),
        "an ACS3 request is accepted with another method"
    );
    // A signed header changed.
    let names: Vec<&String> = signed.keys().collect();
    let name = names[pick(data, names.len())];
    let mut changed = good.clone();
    let value = format!("{}x", signed[name]);
    changed.insert(
        HeaderName::from_bytes(name.as_bytes()).unwrap(),
        HeaderValue::from_str(&value).unwrap(),
    );
    assert!(
        !mps_accepts(&method, &uri, &changed, &r.body, ACCESS_KEY_SECRET),
        "an ACS3 request is accepted with {name} changed"
    );
    // A query parameter changed or added, where that changes the parameters the endpoint
    // reads (a form body's parameter overrides the query's).
    let mut query: BTreeMap<String, String> =
        form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let key = query
        .keys()
        .next()
        .cloned()
        .unwrap_or_else(|| "Added".into());
    query.entry(key).or_default().push('x');
    if let Some(other_uri) = uri_with(&query_of(&query)) {
        let before = verify::collect_params(uri.query(), &good, &r.body).map(|p| p.all);
        let after = verify::collect_params(other_uri.query(), &good, &r.body).map(|p| p.all);
        assert!(
            before == after || !mps_accepts(&method, &other_uri, &good, &r.body, ACCESS_KEY_SECRET),
            "an ACS3 request is accepted with its query changed"
        );
    }
    // The body changed.
    let mut body = r.body.clone();
    body.push(b'x');
    assert!(
        !mps_accepts(&method, &uri, &good, &body, ACCESS_KEY_SECRET),
        "an ACS3 request is accepted with its body changed"
    );
}

// ---------------------------------------------------------------------------------------------
// post_policy, oss_post_form

fn creds() -> OssCredentials {
    OssCredentials {
        access_key_id: ACCESS_KEY_ID.into(),
        access_key_secret: Secret::new(ACCESS_KEY_SECRET),
        security_token: None,
    }
}

fn secret_for(id: &str) -> Option<Secret> {
    (id == ACCESS_KEY_ID).then(|| Secret::new(ACCESS_KEY_SECRET))
}

fn verify_fields(fields: &[(String, String)]) -> Result<VerifiedPost, snapgate::oss::OssError> {
    post_policy::verify_post_fields(fields, &secret_for, Some(REGION), BUCKET, now())
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn set_field(fields: &mut [(String, String)], name: &str, value: String) {
    if let Some(f) = fields
        .iter_mut()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
    {
        f.1 = value;
    }
}

/// The form's policy signed with the known key, V4 when it names a signature version, else V1.
fn signed_form(mut fields: Vec<(String, String)>, policy_b64: &str) -> Vec<(String, String)> {
    set_field(&mut fields, "policy", policy_b64.to_string());
    if field(&fields, "x-oss-signature-version").is_some() {
        let date = field(&fields, "x-oss-credential")
            .and_then(v4::Credential::parse)
            .map(|c| c.date)
            .unwrap_or_default();
        let sig = v4::signature(&Secret::new(ACCESS_KEY_SECRET), &date, REGION, policy_b64);
        set_field(&mut fields, "x-oss-signature", sig);
    } else {
        let sig = v1::sign_policy(&Secret::new(ACCESS_KEY_SECRET), policy_b64);
        set_field(&mut fields, "Signature", sig);
    }
    fields
}

/// PostObject form fields (`application/x-www-form-urlencoded`; a `policy` that starts with `{`
/// is the policy document itself, base64-encoded here).
pub fn post_policy(data: &[u8]) {
    let fields: Vec<(String, String)> = form_urlencoded::parse(data).into_owned().collect();
    post_fields(data, fields);
}

fn post_fields(data: &[u8], fields: Vec<(String, String)>) {
    // As sent.
    if let Ok(v) = verify_fields(&fields) {
        let _ = v.check_size(pick(data, 1 << 20) as u64);
    }
    // Signed with the known key: the conditions decide.
    if let Some(policy) = field(&fields, "policy") {
        let policy_b64 = if policy.trim_start().starts_with('{') {
            B64.encode(policy)
        } else {
            policy.to_string()
        };
        let form = signed_form(fields.clone(), &policy_b64);
        if let Ok(accepted) = verify_fields(&form) {
            if accepted.access_key_id.is_some() {
                reencoded_policy_is_accepted(&form, &policy_b64, &accepted);
            }
        }
    }
    signed_post_round_trip(&fields);
}

/// An accepted policy, re-serialized (compact and pretty) and re-signed, is accepted the same.
fn reencoded_policy_is_accepted(
    form: &[(String, String)],
    policy_b64: &str,
    accepted: &VerifiedPost,
) {
    let raw = B64
        .decode(policy_b64.trim())
        .expect("an accepted policy is base64");
    let doc: Value = serde_json::from_slice(&raw).expect("an accepted policy is JSON");
    for text in [doc.to_string(), serde_json::to_string_pretty(&doc).unwrap()] {
        let again = signed_form(form.to_vec(), &B64.encode(text));
        assert_eq!(
            verify_fields(&again).as_ref(),
            Ok(accepted),
            "a policy re-encoded is not accepted the same"
        );
    }
}

/// A form `sign_post` makes from these fields is accepted with what it pins, and refused once
/// the key, the callback or the status changes.
fn signed_post_round_trip(fields: &[(String, String)]) {
    let Some(key) = field(fields, "key").filter(|k| !k.is_empty()) else {
        return;
    };
    let callback = field(fields, "callback").and_then(|c| callback::CallbackSpec::decode(c).ok());
    let policy = PostPolicy {
        bucket: BUCKET.into(),
        key: key.to_string(),
        content_length: 1..=1000,
        expires_at: now() + chrono::Duration::hours(1),
        success_action_status: field(fields, "success_action_status").and_then(|s| s.parse().ok()),
        callback,
    };
    let form = post_policy::sign_post(&creds(), REGION, "http://127.0.0.1/bucket", &policy, now());
    let v = post_policy::verify_post(&form.fields, &secret_for, REGION, BUCKET, 10, now())
        .unwrap_or_else(|e| panic!("a form sign_post made is refused: {e:?}"));
    assert_eq!(v.key, policy.key);
    assert_eq!(v.access_key_id.as_deref(), Some(ACCESS_KEY_ID));
    assert_eq!(v.content_length, policy.content_length);
    assert_eq!(v.callback, policy.callback);
    let status = policy
        .success_action_status
        .filter(|s| matches!(s, 200 | 201))
        .unwrap_or(204);
    assert_eq!(v.success_action_status, status);
    assert!(v.check_size(1001).is_err() && v.check_size(0).is_err());
    let mut changes = vec![("key", format!("{key}x"))];
    if policy.callback.is_some() {
        changes.push((
            "callback",
            callback::CallbackSpec {
                url: "http://attacker.example/".into(),
                body: "x".into(),
                body_type: callback::FORM.into(),
            }
            .encode(),
        ));
    }
    if let Some(s) = policy.success_action_status {
        changes.push(("success_action_status", format!("{s}0")));
    }
    for (name, value) in changes {
        let mut changed = form.fields.clone();
        set_field(&mut changed, name, value);
        assert!(
            verify_fields(&changed).is_err(),
            "a signed form is still accepted with {name} changed"
        );
    }
}

/// A multipart body (the first line is its Content-Type) through the emulator's PostObject
/// form reader, then the checks of [`post_policy`] on its fields.
pub fn oss_post_form(data: &[u8]) {
    let (content_type, body) = match find(data, b"\n") {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(content_type) = HeaderValue::from_bytes(content_type.trim_ascii()) else {
        return;
    };
    let req = Request::builder()
        .method(Method::POST)
        .uri("/bucket")
        .header("content-type", content_type)
        .body(Body::from(body.to_vec()))
        .unwrap();
    let Ok(mut multipart) = block_on(Multipart::from_request(req, &())) else {
        return;
    };
    let read = block_on(snapgate::emulator::read_post_form(
        &mut multipart,
        async |fields, mut file| {
            let _ = (file.file_name(), file.content_type());
            let mut size = 0u64;
            while let Ok(Some(chunk)) = file.chunk().await {
                size += chunk.len() as u64;
            }
            Ok((fields, size))
        },
    ));
    if let Ok((fields, size)) = read {
        if let Ok(v) = verify_fields(&fields) {
            let _ = v.check_size(size);
        }
        post_fields(data, fields);
    }
}

// ---------------------------------------------------------------------------------------------
// oss_callback

/// The emulator's kind of callback key: RSA 512 bits (OSS's size), made once from a fixed seed.
fn callback_key() -> &'static (rsa::RsaPrivateKey, String) {
    static KEY: OnceLock<(rsa::RsaPrivateKey, String)> = OnceLock::new();
    KEY.get_or_init(|| {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(31);
        let key = rsa::RsaPrivateKey::new(&mut rng, 512).expect("an RSA key");
        let pem = callback::public_key_pem(&key);
        (key, pem)
    })
}

/// Callback fields (`application/x-www-form-urlencoded`): `callback` (base64, or the JSON
/// itself), `template`, `type`, `authorization`, `path`, `body`, `pem`, `pub_key_url`, and
/// custom `x:` variables.
pub fn oss_callback(data: &[u8]) {
    let fields: Vec<(String, String)> = form_urlencoded::parse(data).into_owned().collect();
    let get = |n: &str| field(&fields, n).unwrap_or("");
    let raw = get("callback");
    let encoded = if raw.trim_start().starts_with('{') {
        B64.encode(raw)
    } else {
        raw.to_string()
    };
    if let Ok(spec) = callback::CallbackSpec::decode(&encoded) {
        assert!(!spec.url.is_empty());
        assert_eq!(
            callback::CallbackSpec::decode(&spec.encode()).as_ref(),
            Ok(&spec),
            "a callback spec does not survive encode and decode"
        );
    }
    let vars = callback::Variables {
        bucket: get("bucket").into(),
        object: get("object").into(),
        etag: get("etag").into(),
        size: get("size").parse().unwrap_or(0),
        mime_type: get("mime_type").into(),
        custom: fields
            .iter()
            .filter(|(k, _)| k.starts_with("x:"))
            .cloned()
            .collect(),
    };
    let template = get("template");
    let filled = callback::fill(template, get("type"), &vars);
    if !template.contains("${") {
        assert_eq!(filled, template, "a template without variables was changed");
    }
    if get("type") == callback::JSON && template == "${object}" {
        let v: Value = serde_json::from_str(&filled).expect("a JSON variable fills as JSON");
        assert_eq!(v, Value::String(vars.object.clone()));
    }
    let url = callback::decode_pub_key_url(get("pub_key_url"));
    if let Some(url) = url.as_deref() {
        if callback::pub_key_url_allowed(url, None) {
            assert!(
                url.starts_with("http://gosspublic.alicdn.com/")
                    || url.starts_with("https://gosspublic.alicdn.com/")
            );
        }
    }
    let (key, pem) = callback_key();
    let given_pem = field(&fields, "pem").unwrap_or(pem.as_str());
    let _ = callback::parse_public_key(given_pem);
    let path = get("path");
    let body = get("body").as_bytes();
    let _ = callback::verify(given_pem, get("authorization"), path, body);
    // Signed with the key: verifies; another body, path or signature never does.
    let sig = callback::sign(key, path, body);
    assert_eq!(
        callback::verify(pem, &sig, path, body),
        Ok(()),
        "a signed callback does not verify"
    );
    let mut other = body.to_vec();
    other.push(b'x');
    assert!(
        callback::verify(pem, &sig, path, &other).is_err(),
        "a callback verifies with another body"
    );
    let other_path = match path.split_once('?') {
        Some((p, q)) => format!("{p}?{q}x"),
        None => format!("{path}?x"),
    };
    assert!(
        callback::verify(pem, &sig, &other_path, body).is_err(),
        "a callback verifies for another target"
    );
    if !get("authorization").is_empty() && get("authorization").trim() != sig {
        assert!(
            callback::verify(pem, get("authorization"), path, body).is_err()
                || given_signature_is_equivalent(get("authorization"), &sig)
        );
    }
}

/// Whether a given signature decodes to the same bytes as `sig` (base64 padding and spacing).
fn given_signature_is_equivalent(given: &str, sig: &str) -> bool {
    B64.decode(given.trim()).ok() == B64.decode(sig).ok()
}

// ---------------------------------------------------------------------------------------------
// mns_xml, emulator_mns

/// An MNS answer (or message body) through the XML helpers and the MPS job message parser.
pub fn mns_xml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let s = text.as_ref();
    assert_eq!(
        mns::xml_unescape(&mns::xml_escape(s)).as_deref(),
        Some(s),
        "escaping does not round-trip"
    );
    if let Some(u) = mns::xml_unescape(s) {
        assert_eq!(mns::xml_unescape(&mns::xml_escape(&u)), Some(u));
    }
    for tag in ["Code", "Message", "MessageBody"] {
        let _ = mns::xml_elements(s, tag);
    }
    if let Ok(messages) = mns::parse_messages(s) {
        for m in &messages {
            let _ = notification::parse(&m.body);
        }
    }
    if let Ok(n) = notification::parse(s) {
        assert!(!n.job_id.is_empty() && !n.state.is_empty());
        let _ = n.is_snapshot();
    }
    // A message whose body is the input, as the emulator's queue writes it, reads back whole.
    let doc = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Messages xmlns=\"{}\"><Message><MessageId>m1</MessageId><ReceiptHandle>h1</ReceiptHandle><MessageBodyMD5>{}</MessageBodyMD5><MessageBody>{}</MessageBody><DequeueCount>2</DequeueCount></Message></Messages>",
        mns::XMLNS,
        mns::body_md5(s),
        mns::xml_escape(s)
    );
    let got = mns::parse_messages(&doc).expect("a well-formed receive answer parses");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, s, "a message body does not read back whole");
    assert_eq!(
        (got[0].message_id.as_str(), got[0].dequeue_count),
        ("m1", 2)
    );
}

fn mns_accepts(method: &Method, uri: &Uri, headers: &HeaderMap) -> bool {
    let keys = [(ACCESS_KEY_ID.to_string(), ACCESS_KEY_SECRET.to_string())];
    snapgate::emulator::verify_mns_request(&keys, None, method, uri, headers, now()).is_ok()
}

fn mns_signed(method: &Method, uri: &Uri, headers: &HeaderMap) -> HeaderMap {
    let resource = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let pairs = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
    let sig = sign::sign_mns(
        ACCESS_KEY_SECRET,
        &sign::string_to_sign_mns(method.as_str(), pairs, resource),
    );
    let mut h = headers.clone();
    h.insert(
        "authorization",
        HeaderValue::from_str(&sign::authorization_mns(ACCESS_KEY_ID, &sig)).unwrap(),
    );
    h
}

/// An MNS queue request (raw HTTP) through the emulator's check: as sent, then re-signed
/// (accepted), then changed (refused).
pub fn emulator_mns(data: &[u8]) {
    let r = RawRequest::parse(data);
    let _ = mns_accepts(&r.method, &r.uri, &r.headers);
    let mut headers = r.headers.clone();
    headers.insert(
        "date",
        HeaderValue::from_str(&sign::http_date(now())).unwrap(),
    );
    if headers
        .get("x-mns-version")
        .and_then(|v| v.to_str().ok())
        .is_none()
    {
        headers.insert("x-mns-version", HeaderValue::from_static(sign::MNS_VERSION));
    }
    headers.remove("authorization");
    let good = mns_signed(&r.method, &r.uri, &headers);
    assert!(
        mns_accepts(&r.method, &r.uri, &good),
        "an MNS request signed with the key is refused"
    );
    assert!(
        !mns_accepts(&other_method(&r.method), &r.uri, &good),
        "an MNS request is accepted with another method"
    );
    let pq = r.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let other = match pq.split_once('?') {
        Some(_) => format!("{pq}x"),
        None => format!("{pq}?x"),
    };
    if let Ok(other) = other.parse::<Uri>() {
        assert!(
            !mns_accepts(&r.method, &other, &good),
            "an MNS request is accepted for another resource"
        );
    }
    // Every signed header (Content-MD5, Content-Type, Date, x-mns-*), changed in all its values.
    let names: Vec<HeaderName> = good
        .keys()
        .filter(|n| {
            let n = n.as_str();
            n == "content-md5" || n == "content-type" || n.starts_with("x-mns-")
        })
        .cloned()
        .collect();
    for name in names {
        let mut changed = good.clone();
        let values: Vec<HeaderValue> = good.get_all(&name).iter().cloned().collect();
        // A value that is not text is signed by nobody: changing only such values changes nothing.
        if values.iter().all(|v| v.to_str().is_err()) {
            continue;
        }
        changed.remove(&name);
        for v in values {
            let mut b = v.as_bytes().to_vec();
            b.push(b'x');
            changed.append(&name, HeaderValue::from_bytes(&b).unwrap());
        }
        assert!(
            !mns_accepts(&r.method, &r.uri, &changed),
            "an MNS request is accepted with {name} changed"
        );
    }
    if !good.contains_key("x-mns-fuzz-added") {
        let mut added = good.clone();
        added.insert("x-mns-fuzz-added", HeaderValue::from_static("1"));
        assert!(
            !mns_accepts(&r.method, &r.uri, &added),
            "an MNS request is accepted with an x-mns header added"
        );
    }
}
