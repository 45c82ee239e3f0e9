//! Property tests that complement tests/proptests.rs with structure-aware hostile input:
//! request-shaped bodies whose every field (nested ones included) may be missing, null, of the
//! wrong type, at a numeric edge, or exotic Unicode; grammar-built ACS3 `Authorization` values;
//! percent-escapes of arbitrary bytes.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use snapgate::domain::user_data::USER_DATA_MAX;
use snapgate::domain::validate::{OSS_FIELDS, SPRITE_FIELDS, TOP_FIELDS};
use snapgate::domain::{validate_request, JobRequest};
use snapgate::mps::sign::{
    authorization_acs3, parse_acs3_authorization, percent_decode, percent_encode,
};

/// Numbers at the edges a JSON number can take.
fn edge_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            json!(0),
            json!(1),
            json!(-1),
            json!(7),
            json!(8),
            json!(29),
            json!(30),
            json!(100),
            json!(101),
            json!(1000),
            json!(1001),
            json!(4096),
            json!(4097),
            json!(100_000),
            json!(100_001),
            json!((1u64 << 53) - 1),
            json!(1u64 << 53),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(0.5),
            json!(-0.0),
            json!(1000.0),
            json!(1e300),
            json!(-1e300),
            json!(f64::MIN_POSITIVE),
            json!(f64::MAX),
        ]),
        any::<u64>().prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        (0u64..5000).prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
    ]
}

/// Strings MPS fields meet: plausible ones, placeholders, control characters, exotic Unicode.
fn edge_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            " ",
            "oss-cn-shanghai",
            "cn-shanghai",
            "oss-",
            "media",
            "MEDIA",
            "ab",
            "a-b-c",
            "uploads/clip 01.mp4",
            "out/{Count}.jpg",
            "s/{TileCount}.jpg",
            "{Count}{TileCount}{ObjectPrefix}{FileName}{ExtName}{SnapshotTime}",
            "{Count",
            "}{",
            "{}",
            "{count}",
            "%2F%ZZ%",
            "a\r\nb",
            "\u{0}",
            "\u{7f}",
            "\u{feff}x",
            "\u{202e}gpj.exe",
            "e\u{301}",
            "😀/{Count}.jpg",
            "中文 team-1_x.y",
            "black",
            "BLACK",
            "#A1b2C3",
            "#12345",
            "random",
            "normal",
            "intra",
            "Normal",
            "9bad3801a2c561c22c4df9c6abcd0000",
            "9BAD3801A2C561C22C4DF9C6ABCD0000",
            "-lead",
            "team data",
        ])
        .prop_map(str::to_string),
        "\\PC{0,24}",
        "[a-z0-9{}/ .-]{0,40}",
        (
            prop::sample::select(vec!['a', 'é', '中', '😀', '/', '\n']),
            300usize..1100
        )
            .prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
}

/// Any JSON value, shallow, from the pools above.
fn edge_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        3 => edge_number(),
        3 => edge_string().prop_map(Value::String),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(edge_string(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Values a field accepts (range edges included), per field; `None` for the nested objects.
fn valid_value(name: &'static str) -> BoxedStrategy<Value> {
    let int = |lo: u64, hi: u64| {
        prop_oneof![Just(lo), Just(hi), lo..=hi]
            .prop_map(|n| json!(n))
            .boxed()
    };
    let pick = |v: Vec<&'static str>| prop::sample::select(v).prop_map(|s| json!(s)).boxed();
    const MAX_SAFE: u64 = (1 << 53) - 1;
    match name {
        "location" => pick(vec![
            "oss-cn-shanghai",
            "oss-cn-beijing",
            "oss-ap-southeast-1",
        ]),
        "bucket" => pick(vec!["media", "my-bucket-01", "abc"]),
        "object" => prop_oneof![
            pick(vec![
                "in/clip 01.mp4",
                "out/{Count}.jpg",
                "t/{Count}-{SnapshotTime}.jpg",
                "{ObjectPrefix}{FileName}_{Count}.{ExtName}",
                "s/{TileCount}-{Count}.jpg",
                "中文/{Count}.jpg",
                "😀 {Count} %41+.jpg",
                "a\u{202e}b{Count}",
            ]),
            r"[a-z0-9 /._-]{1,20}\{Count\}(\{TileCount\})?".prop_map(|s| json!(s)),
            r"\PC{1,30}".prop_map(|s| json!(s)),
        ]
        .boxed(),
        "time_ms" => prop_oneof![int(0, 600_000), Just(json!(MAX_SAFE))].boxed(),
        "interval_s" => prop_oneof![int(0, 100), Just(json!(MAX_SAFE))].boxed(),
        "num" => prop_oneof![int(1, 100), Just(json!(MAX_SAFE))].boxed(),
        "width" | "height" | "cell_width" | "cell_height" => int(8, 4096),
        "black_level" => int(30, 100),
        "lines" | "columns" => int(1, 1000),
        "margin" | "padding" => int(0, 4096),
        "cell_step" => int(1, 100_000),
        "frame_type" => pick(vec!["normal", "intra"]),
        "color" => pick(vec!["black", "White", "random", "#A1b2C3"]),
        "keep_cells" | "sprite" => any::<bool>().prop_map(Value::Bool).boxed(),
        "pipeline_id" => "[0-9a-f]{32}".prop_map(|s| json!(s)).boxed(),
        "user_data" => prop_oneof![
            pick(vec!["team data", "中文 team-1_x.y", "a"]),
            "[A-Za-z0-9][A-Za-z0-9 ._-]{0,40}".prop_map(|s| json!(s)),
            (1usize..=987).prop_map(|n| json!("u".repeat(n))),
        ]
        .boxed(),
        _ => Just(Value::Null).boxed(),
    }
}

/// A field's value: nearly always one the field accepts, sometimes a hostile one, so that
/// bodies are accepted often enough for the normalization properties to bite.
fn field_value(name: &'static str) -> BoxedStrategy<Value> {
    let hostile: BoxedStrategy<Value> = match name {
        "time_ms" | "interval_s" | "num" | "width" | "height" | "black_level" | "lines"
        | "columns" | "cell_width" | "cell_height" | "margin" | "padding" | "cell_step" => {
            edge_number().boxed()
        }
        "keep_cells" | "sprite" => any::<bool>().prop_map(Value::Bool).boxed(),
        _ => edge_string().prop_map(Value::String).boxed(),
    };
    prop_oneof![40 => valid_value(name), 1 => hostile, 1 => edge_value()].boxed()
}

/// An object with a random subset of `fields` (`required` ones nearly always), each from
/// `value`; rarely an unknown member, or not an object at all.
fn shaped(
    fields: &'static [&'static str],
    required: &'static [&'static str],
    value: impl Fn(&'static str) -> BoxedStrategy<Value>,
) -> BoxedStrategy<Value> {
    let members: Vec<BoxedStrategy<Option<(String, Value)>>> = fields
        .iter()
        .map(|&f| {
            let p = if required.contains(&f) { 0.99 } else { 0.4 };
            prop::option::weighted(p, value(f))
                .prop_map(move |v| v.map(|v| (f.to_string(), v)))
                .boxed()
        })
        .collect();
    let object = (
        members,
        prop::option::weighted(0.02, ("\\PC{0,8}|[a-z/~]{1,6}", edge_value())),
    )
        .prop_map(|(members, extra)| {
            let mut map: Map<String, Value> = members.into_iter().flatten().collect();
            if let Some((k, v)) = extra {
                map.insert(k, v);
            }
            Value::Object(map)
        });
    prop_oneof![60 => object, 1 => edge_value()].boxed()
}

fn oss() -> BoxedStrategy<Value> {
    shaped(OSS_FIELDS, OSS_FIELDS, field_value)
}

/// Request-shaped bodies, every level of which may be broken.
fn request() -> BoxedStrategy<Value> {
    shaped(TOP_FIELDS, &["input", "output"], |name| match name {
        "input" | "output" => oss(),
        "sprite" => shaped(SPRITE_FIELDS, &["output"], |n| match n {
            "output" => oss(),
            _ => field_value(n),
        }),
        "webvtt" => shaped(&["sprite"], &[], field_value),
        _ => field_value(name),
    })
}

fn is_pointer(p: &str) -> bool {
    // "" (the whole body) or "/a/b" with `~` only as `~0`/`~1`.
    p.is_empty()
        || (p.starts_with('/')
            && p.split('/').skip(1).all(|seg| {
                let mut it = seg.chars();
                while let Some(c) = it.next() {
                    if c == '~' && !matches!(it.next(), Some('0' | '1')) {
                        return false;
                    }
                }
                true
            }))
}

fn unescape(seg: &str) -> String {
    seg.replace("~1", "/").replace("~0", "~")
}

/// The invariants of an accepted request that MPS relies on.
fn check_accepted(r: &JobRequest) -> Result<(), TestCaseError> {
    for o in [
        Some(&r.input),
        Some(&r.output),
        r.sprite.as_ref().map(|s| &s.output),
    ]
    .into_iter()
    .flatten()
    {
        prop_assert!(
            (1..=1023).contains(&o.object.len()),
            "object {:?}",
            o.object
        );
        prop_assert!(!o.object.contains(['\r', '\n']), "object {:?}", o.object);
        prop_assert!(o.location.starts_with("oss-"), "location {:?}", o.location);
    }
    const MAX_SAFE: u64 = (1 << 53) - 1;
    prop_assert!(r.time_ms <= MAX_SAFE);
    prop_assert!(r.interval_s.is_none_or(|x| x <= MAX_SAFE));
    prop_assert!(r.num.is_none_or(|x| (1..=MAX_SAFE).contains(&x)));
    for d in [r.width, r.height].into_iter().flatten() {
        prop_assert!((8..=4096).contains(&d), "dimension {}", d);
    }
    prop_assert!(r.black_level.is_none_or(|b| (30..=100).contains(&b)));
    if let Some(u) = &r.user_data {
        prop_assert!(u.len() <= USER_DATA_MAX, "user_data of {} bytes", u.len());
    }
    if r.webvtt.as_ref().is_some_and(|w| w.sprite) {
        prop_assert!(r.sprite.is_some(), "webvtt.sprite needs a sprite");
    }
    if r.is_multi() {
        prop_assert!(r.output.object.contains("{Count}"), "{:?}", r.output.object);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Request-shaped hostile bodies: no panic, the same answer twice, well-formed problems;
    /// an accepted body's normalized form (serialized with serde, every field present) is
    /// accepted again with the same request and the same warnings, and is what MPS allows.
    #[test]
    fn request_shaped_bodies_are_validated_consistently(body in request()) {
        let first = validate_request(&body);
        prop_assert_eq!(&first, &validate_request(&body), "deterministic");
        match first {
            Err(violations) => {
                prop_assert!(!violations.is_empty(), "a refusal says why");
                for v in &violations {
                    prop_assert!(is_pointer(&v.field), "field {:?} is not a JSON pointer", v.field);
                    prop_assert!(!v.code.is_empty() && !v.message.is_empty(), "{:?}", v);
                    if v.code == "unknown_field" {
                        // The pointer names a member that is really in the body.
                        let segs: Vec<String> = v.field.split('/').skip(1).map(unescape).collect();
                        let mut at = &body;
                        for s in &segs[..segs.len() - 1] {
                            at = &at[s.as_str()];
                        }
                        prop_assert!(at.get(segs.last().unwrap()).is_some(), "{:?} names nothing in {}", v.field, body);
                    }
                }
            }
            Ok((request, warnings)) => {
                check_accepted(&request)?;
                for w in &warnings {
                    prop_assert!(is_pointer(&w.field), "warning field {:?}", w.field);
                }
                let normalized = serde_json::to_value(&request).unwrap();
                prop_assert!(normalized.get("time_ms").is_some(), "time_ms is always present");
                prop_assert_eq!(&serde_json::from_value::<JobRequest>(normalized.clone()).unwrap(), &request);
                match validate_request(&normalized) {
                    Ok((again, warnings_again)) => {
                        prop_assert_eq!(&again, &request, "normalization is idempotent");
                        prop_assert_eq!(warnings_again, warnings, "the same warnings");
                    }
                    Err(v) => prop_assert!(false, "the normalized form of {} is refused: {:?}", body, v),
                }
            }
        }
    }

    /// Any unknown member, at any level, is named exactly (escaped as a JSON pointer).
    #[test]
    fn unknown_members_are_named_by_an_escaped_pointer(
        name in "[a-z~/]{1,6}|\\PC{1,6}",
        at in prop::sample::select(vec!["", "/input", "/output", "/sprite", "/sprite/output", "/webvtt"]),
    ) {
        let mut body = json!({
            "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.mp4"},
            "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "{Count}.jpg"},
            "sprite": {"output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "{TileCount}.jpg"}},
            "webvtt": {"sprite": true}
        });
        prop_assert!(validate_request(&body).is_ok());
        let parent = body.pointer_mut(at).unwrap().as_object_mut().unwrap();
        let known = [TOP_FIELDS, OSS_FIELDS, SPRITE_FIELDS].concat();
        prop_assume!(!parent.contains_key(&name) && !known.contains(&name.as_str()));
        parent.insert(name.clone(), json!(1));
        let expected = format!("{at}/{}", name.replace('~', "~0").replace('/', "~1"));
        let violations = validate_request(&body).unwrap_err();
        prop_assert!(violations.iter().any(|v| v.field == expected && v.code == "unknown_field"),
            "{:?} not reported as {:?}: {:?}", name, expected, violations);
    }

    /// Values built from the ACS3 grammar's own pieces reach every branch of the parser: it
    /// never panics, and what it accepts has every part non-empty and formats back to itself.
    #[test]
    fn grammar_built_authorizations_parse_safely(parts in prop::collection::vec(prop_oneof![
        Just("ACS3-HMAC-SHA256".to_string()), Just(" ".to_string()), Just(",".to_string()),
        Just("=".to_string()), Just(";".to_string()), Just("Credential".to_string()),
        Just("SignedHeaders".to_string()), Just("Signature".to_string()),
        "[ -~]{0,4}", "\\PC{0,3}",
    ], 0..16)) {
        let value = parts.concat();
        for candidate in [value.clone(), format!("ACS3-HMAC-SHA256 {value}")] {
            if let Ok(a) = parse_acs3_authorization(&candidate) {
                prop_assert!(!a.access_key_id.is_empty() && !a.signature.is_empty());
                prop_assert!(!a.signed_headers.is_empty() && a.signed_headers.iter().all(|h| !h.is_empty()));
                // Parts free of the separators format back to the same value.
                let plain = |s: &str| !s.contains([',', ';', ' ']) && !s.contains(char::is_whitespace);
                let lower = a.signed_headers.iter().all(|h| *h == h.to_ascii_lowercase());
                let sorted = a.signed_headers.windows(2).all(|w| w[0] < w[1]);
                if plain(&a.access_key_id) && plain(&a.signature) && a.signed_headers.iter().all(|h| plain(h)) && lower && sorted {
                    let headers: BTreeMap<String, String> = a.signed_headers.iter().map(|h| (h.clone(), String::new())).collect();
                    let again = parse_acs3_authorization(&authorization_acs3(&a.access_key_id, &headers, &a.signature));
                    prop_assert_eq!(again.as_ref(), Ok(&a));
                }
            }
        }
    }

    /// What `authorization_acs3` writes, for any printable id and signature without the
    /// separators and any set of header names, parses back (names lower-cased, sorted).
    #[test]
    fn formatted_authorizations_round_trip(
        id in "[!-+\\--:<-~]{1,40}",
        sig in "[!-+\\--:<-~]{1,80}",
        names in prop::collection::btree_set("[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", 1..8),
    ) {
        let headers: BTreeMap<String, String> = names.iter().map(|n| (n.clone(), "v".into())).collect();
        let parsed = parse_acs3_authorization(&authorization_acs3(&id, &headers, &sig)).unwrap();
        prop_assert_eq!(parsed.access_key_id, id);
        prop_assert_eq!(parsed.signature, sig);
        let want: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        prop_assert_eq!(parsed.signed_headers, want);
    }

    /// Percent-escapes of arbitrary bytes (either hex case) decode exactly when the bytes are
    /// UTF-8, and to those bytes.
    #[test]
    fn escaped_bytes_decode_iff_utf8(bytes in prop::collection::vec(any::<u8>(), 0..64), upper in any::<bool>()) {
        let escaped: String = bytes.iter().map(|b| if upper { format!("%{b:02X}") } else { format!("%{b:02x}") }).collect();
        prop_assert_eq!(percent_decode(&escaped), String::from_utf8(bytes).ok());
    }

    /// Decoding never panics; what decodes re-encodes to a canonical form that decodes to the
    /// same text, and a `%` not followed by two hex digits is always refused.
    #[test]
    fn decoding_is_strict_and_stable(s in "([%+0-9A-Fa-fgG~. ]|\\PC){0,40}") {
        let decoded = percent_decode(&s);
        let bad_escape = s.as_bytes().iter().enumerate().any(|(i, &b)| b == b'%'
            && !(s.as_bytes().get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))));
        if bad_escape {
            prop_assert_eq!(decoded, None, "{:?} has a malformed escape", s);
        } else if let Some(d) = decoded {
            let canonical = percent_encode(&d);
            let again = percent_decode(&canonical);
            prop_assert_eq!(again.as_deref(), Some(d.as_str()));
            prop_assert_eq!(percent_encode(&d), canonical);
        }
    }

    /// Exactly `A-Z a-z 0-9 - _ . ~` stay as they are; every other character becomes its UTF-8
    /// bytes as `%XX` with upper-case hex.
    #[test]
    fn only_unreserved_characters_stay_unencoded(c in any::<char>()) {
        let encoded = percent_encode(&c.to_string());
        if c.is_ascii_alphanumeric() || "-_.~".contains(c) {
            prop_assert_eq!(encoded, c.to_string());
        } else {
            let mut buf = [0u8; 4];
            let want: String = c.encode_utf8(&mut buf).bytes().map(|b| format!("%{b:02X}")).collect();
            prop_assert_eq!(encoded, want);
        }
    }
}

/// The generator is useful only if it reaches both sides: a fair share of bodies is accepted
/// (so the normalization properties are exercised) and many kinds of violation occur.
#[test]
fn the_request_generator_reaches_acceptance_and_many_violations() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = request();
    let (mut accepted, mut with_warnings) = (0, 0);
    let mut codes = std::collections::BTreeSet::new();
    let n = 3000;
    for _ in 0..n {
        let body = strategy.new_tree(&mut runner).unwrap().current();
        match validate_request(&body) {
            Ok((_, w)) => {
                accepted += 1;
                with_warnings += usize::from(!w.is_empty());
            }
            Err(v) => codes.extend(v.into_iter().map(|v| v.code)),
        }
    }
    println!(
        "{accepted} of {n} accepted ({with_warnings} with warnings); violation codes: {codes:?}"
    );
    assert!(accepted * 50 >= n, "only {accepted} of {n} accepted");
    assert!(with_warnings > 0, "no accepted body had a warning");
    assert!(codes.len() >= 8, "few kinds of violation: {codes:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// An in-range whole number written with a fraction part (`640.0`, `1e3`) is an integer to
    /// JSON Schema 2020-12, which the OpenAPI 3.1 document states: it is either accepted as the
    /// integer, or refused as a type problem; never called `out_of_range` (found by
    /// schemathesis' positive_data_acceptance: `"width": 640.0` answered "must be an integer from
    /// 8 to 4096").
    #[test]
    fn whole_numbers_written_as_floats_get_a_truthful_answer(
        (field, n) in prop::sample::select(vec![
            ("time_ms", 0u64, 600_000u64), ("num", 1, 1), ("width", 8, 4096),
            ("height", 8, 4096), ("black_level", 30, 100),
        ]).prop_flat_map(|(f, lo, hi)| (Just(f), lo..=hi)),
    ) {
        let mut body = json!({
            "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.mp4"},
            "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "b.jpg"},
        });
        body[field] = json!(n);
        let as_integer = validate_request(&body);
        prop_assert!(as_integer.is_ok(), "{}: {:?}", body, as_integer);
        body[field] = json!(n as f64);
        match validate_request(&body) {
            Ok(r) => prop_assert_eq!(Ok(r), as_integer),
            Err(v) => prop_assert!(
                v.iter().all(|v| v.code != "out_of_range"),
                "{} = {:?} is in range, yet: {:?}", field, body[field], v
            ),
        }
    }
}
