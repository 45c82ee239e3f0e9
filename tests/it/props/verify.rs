//! Property tests of the one verifier (`mps/verify.rs`, used by the emulator and by the
//! MPS-compatible endpoint) against the one signer (`mps/sign.rs`): any request the signer
//! produces — v1 or ACS3, any parameter names and values, sent through the wire encoding and
//! decoded as the server decodes it — verifies; any single-byte change to a signed parameter
//! (name or value), a signed header, or the body does not.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use chrono::Utc;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use snapgate::mps::{sign, verify};

const NOW_TS: fn() -> String = sign::timestamp_now;

fn api_params() -> impl Strategy<Value = BTreeMap<String, String>> {
    // Names as the APIs have them (and a few odd ones); values anything printable, JSON-ish,
    // empty, or multi-byte.
    let name = "[A-Za-z_][A-Za-z0-9_.]{0,12}";
    let value = prop_oneof![
        "\\PC{0,24}",
        Just(String::new()),
        r#"\{"Bucket":"[a-z]{3,8}","Object":"[a-z%0-9 /+*~]{1,12}"\}"#,
        "[中文🎬 +*~%&=]{1,8}",
    ];
    prop::collection::btree_map(name, value, 0..6).prop_map(|mut m| {
        for c in verify::COMMON {
            m.remove(*c);
        }
        m
    })
}

fn wire_query(params: &BTreeMap<String, String>) -> String {
    params
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                snapgate::crypto::percent_encode(k),
                snapgate::crypto::percent_encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Changes one byte of `s`: an ASCII byte is replaced by another ASCII byte; a string with no
/// ASCII byte gets one inserted (still a one-byte edit, and valid UTF-8 either way).
fn change_one_byte(s: &str, pos: Index, byte: u8) -> String {
    let ascii: Vec<usize> = s
        .bytes()
        .enumerate()
        .filter(|(_, b)| b.is_ascii())
        .map(|(i, _)| i)
        .collect();
    let mut bytes = s.as_bytes().to_vec();
    if ascii.is_empty() {
        bytes.insert(0, byte);
    } else {
        let i = ascii[pos.index(ascii.len())];
        bytes[i] = if bytes[i] == byte {
            if byte == b'~' {
                b'a'
            } else {
                byte + 1
            }
        } else {
            byte
        };
    }
    String::from_utf8(bytes).expect("ASCII edits keep UTF-8 valid")
}

fn v1_signed(
    method: &str,
    api: &BTreeMap<String, String>,
    secret: &str,
) -> BTreeMap<String, String> {
    let mut all = api.clone();
    for (k, v) in [
        ("Action", "SubmitSnapshotJob".to_string()),
        ("Version", "2014-06-18".into()),
        ("Format", "JSON".into()),
        ("AccessKeyId", "SGAKPROPTEST".into()),
        ("SignatureMethod", "HMAC-SHA1".into()),
        ("SignatureVersion", "1.0".into()),
        ("SignatureNonce", sign::new_nonce()),
        ("Timestamp", NOW_TS()),
    ] {
        all.insert(k.into(), v);
    }
    let sig = sign::sign_v1(secret, &sign::string_to_sign_v1(method, &all));
    all.insert("Signature".into(), sig);
    all
}

fn verify_wire(
    method: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    secret: &str,
) -> Result<verify::Verified, verify::AuthError> {
    let params = verify::collect_params(Some(query), headers, body)?;
    verify::parse(method, headers, params, body, Utc::now())?.verify(secret)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn v1_signed_requests_verify_and_one_byte_changes_do_not(
        api in api_params(),
        secret in "[!-~]{1,40}",
        method in select(vec!["GET", "POST"]),
        which in any::<Index>(),
        pos in any::<Index>(),
        byte in 0x20u8..0x7f,
        in_name in any::<bool>(),
    ) {
        let signed = v1_signed(method, &api, &secret);
        let empty = HeaderMap::new();
        let v = verify_wire(method, &wire_query(&signed), &empty, b"", &secret)
            .map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(&v.params, &api);
        prop_assert_eq!(v.action.as_str(), "SubmitSnapshotJob");

        // One byte of one signed parameter (its name or its value); the signature is kept.
        let names: Vec<&String> = signed.keys().filter(|k| *k != "Signature").collect();
        let name = names[which.index(names.len())].clone();
        let mut changed = signed.clone();
        let value = changed.remove(&name).unwrap();
        if in_name {
            changed.insert(change_one_byte(&name, pos, byte), value);
        } else {
            changed.insert(name, change_one_byte(&value, pos, byte));
        }
        prop_assert!(verify_wire(method, &wire_query(&changed), &empty, b"", &secret).is_err());
        // And the method.
        let other = if method == "GET" { "POST" } else { "GET" };
        prop_assert!(verify_wire(other, &wire_query(&signed), &empty, b"", &secret).is_err());
    }

    #[test]
    fn acs3_signed_requests_verify_and_one_byte_changes_do_not(
        api in api_params(),
        body in prop::collection::vec(any::<u8>(), 0..64),
        secret in "[!-~]{1,40}",
        which in any::<Index>(),
        pos in any::<Index>(),
        byte in 0x21u8..0x7f,
        target in 0u8..3,
    ) {
        let mut headers: BTreeMap<String, String> = [
            ("host", "snapgate.example:8080".to_string()),
            ("x-acs-action", "QuerySnapshotJobList".into()),
            ("x-acs-version", "2014-06-18".into()),
            ("x-acs-date", NOW_TS()),
            ("x-acs-signature-nonce", sign::new_nonce()),
            ("x-acs-content-sha256", snapgate::crypto::sha256_hex(&body)),
            ("accept", "application/json".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let sign_and_send = |api: &BTreeMap<String, String>, h: &BTreeMap<String, String>, body: &[u8], signature: Option<&str>| {
            let cr = sign::canonical_request_acs3("POST", "/", api, h, &snapgate::crypto::sha256_hex(body));
            let computed = sign::sign_acs3(&secret, &sign::string_to_sign_acs3(&cr));
            let sig = signature.map(str::to_string).unwrap_or(computed);
            let mut map = HeaderMap::new();
            for (k, v) in h {
                map.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
            }
            map.insert("authorization", HeaderValue::from_str(&sign::authorization_acs3("SGAKPROPTEST", h, &sig)).unwrap());
            (sig, verify_wire("POST", &wire_query(api), &map, body, &secret))
        };
        let (sig, ok) = sign_and_send(&api, &headers, &body, None);
        let v = ok.map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(&v.params, &api);
        prop_assert_eq!(v.access_key_id.as_str(), "SGAKPROPTEST");

        // One byte of a query parameter, a signed header, or the body; the signature kept.
        let (api2, body2) = match target {
            0 if !api.is_empty() => {
                let names: Vec<&String> = api.keys().collect();
                let name = names[which.index(names.len())].clone();
                let mut a = api.clone();
                let value = a.remove(&name).unwrap();
                a.insert(name, change_one_byte(&value, pos, byte));
                (a, body.clone())
            }
            1 => {
                let names: Vec<String> = headers.keys().cloned().collect();
                let name = &names[which.index(names.len())];
                let value = headers[name].clone();
                headers.insert(name.clone(), change_one_byte(&value, pos, byte));
                (api.clone(), body.clone())
            }
            _ => {
                let mut b = body.clone();
                if b.is_empty() {
                    b.push(byte);
                } else {
                    let i = pos.index(b.len());
                    b[i] ^= 0x01;
                }
                // Re-declared honestly: the header matches the changed body.
                headers.insert("x-acs-content-sha256".into(), snapgate::crypto::sha256_hex(&b));
                (api.clone(), b)
            }
        };
        let (_, changed) = sign_and_send(&api2, &headers, &body2, Some(&sig));
        prop_assert!(changed.is_err());
    }
}
