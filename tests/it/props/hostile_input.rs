//! Property tests for the code that meets hostile input first: the request validator, the
//! ACS3 Authorization parser and the percent-encoder.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use snapgate::crypto::{percent_decode, percent_encode};
use snapgate::domain::validate_request;
use snapgate::mps::sign::{authorization_acs3, parse_acs3_authorization};

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".*".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("input".to_string()),
                    Just("output".to_string()),
                    Just("num".to_string()),
                    Just("sprite".to_string()),
                    Just("object".to_string()),
                    ".{0,12}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A valid request holding every field of [`FIELDS`], so that each mutation replaces a value.
fn valid() -> Value {
    json!({
        "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": "uploads/clip 01.mp4"},
        "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "thumbs/{Count}.jpg"},
        "time_ms": 2000, "interval_s": 2, "num": 3, "width": 640, "height": 360, "black_level": 50,
        "frame_type": "normal",
        "sprite": {"output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "s/{TileCount}.jpg"},
                   "lines": 4},
        "webvtt": {"sprite": true}, "user_data": "team"
    })
}

const FIELDS: &[&str] = &[
    "/input/object",
    "/output/object",
    "/time_ms",
    "/interval_s",
    "/num",
    "/width",
    "/height",
    "/black_level",
    "/sprite/lines",
    "/sprite/output",
    "/webvtt/sprite",
    "/user_data",
    "/frame_type",
];

/// The base request is accepted, and every mutated field is in it (a mutation of an absent
/// field would leave the body as it was and test nothing).
#[test]
fn the_base_request_is_valid_and_holds_every_mutated_field() {
    let base = valid();
    assert!(
        validate_request(&base).is_ok(),
        "{:?}",
        validate_request(&base)
    );
    for field in FIELDS {
        assert!(
            base.pointer(field).is_some_and(|v| !v.is_null()),
            "{field} is not in the base request"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_validator_never_panics_on_any_json(v in any_json()) {
        let _ = validate_request(&v);
    }

    /// Mutating one field of a valid request to anything: no panic, and whatever is accepted
    /// is stable: its normalized form validates again to the same request.
    #[test]
    fn accepted_requests_are_stable_under_normalization(field in prop::sample::select(FIELDS), value in any_json()) {
        let mut body = valid();
        let slot = body.pointer_mut(field).expect("every mutated field is in the base request");
        // A value equal to the one there would be no mutation.
        prop_assume!(*slot != value);
        *slot = value;
        prop_assert_ne!(&body, &valid(), "the mutation changed the body");
        if let Ok((request, _)) = validate_request(&body) {
            let again = serde_json::to_value(&request).unwrap();
            let (request2, _) = validate_request(&again).expect("a normalized request is valid");
            prop_assert_eq!(request, request2);
        }
    }

    #[test]
    fn the_authorization_parser_never_panics(s in ".*", t in "ACS3-HMAC-SHA256 [ -~]{0,80}") {
        let _ = parse_acs3_authorization(&s);
        let _ = parse_acs3_authorization(&t);
    }

    #[test]
    fn authorization_headers_round_trip(id in "[A-Za-z0-9]{1,24}", sig in "[0-9a-f]{64}",
                                         names in prop::collection::btree_set("[a-z][a-z0-9-]{0,15}", 1..6)) {
        let headers = names.iter().map(|n| (n.clone(), "v".to_string())).collect();
        let parsed = parse_acs3_authorization(&authorization_acs3(&id, &headers, &sig)).unwrap();
        prop_assert_eq!(parsed.access_key_id, id);
        prop_assert_eq!(parsed.signature, sig);
        prop_assert_eq!(parsed.signed_headers, names.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn percent_encoding_round_trips_any_utf8(s in ".*") {
        let encoded = percent_encode(&s);
        let decoded = percent_decode(&encoded);
        prop_assert_eq!(decoded.as_deref(), Some(s.as_str()));
        let mut chars = encoded.chars();
        while let Some(c) = chars.next() {
            if c == '%' {
                let hex: String = chars.by_ref().take(2).collect();
                prop_assert!(hex.len() == 2 && hex.chars().all(|h| h.is_ascii_digit() || ('A'..='F').contains(&h)), "{}", encoded);
            } else {
                prop_assert!(c.is_ascii_alphanumeric() || "-_.~".contains(c), "{} left unencoded", c);
            }
        }
    }

    #[test]
    fn unreserved_characters_are_never_encoded(s in "[A-Za-z0-9._~-]*") {
        prop_assert_eq!(percent_encode(&s), s);
    }
}
