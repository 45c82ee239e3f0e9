//! Property tests that complement tests/it/props/hostile_input.rs with structure-aware input: request
//! bodies valid by every rule, and the same with one change (a member set to a hostile value:
//! missing, null, of the wrong type, at a numeric edge, exotic Unicode; removed; an unknown
//! member; the whole body replaced), so that both sides of the validator are reached; an
//! accepted body is checked against every rule. Grammar-built ACS3 `Authorization` values;
//! percent-escapes of arbitrary bytes.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use snapgate::crypto::{percent_decode, percent_encode};
use snapgate::domain::job::FrameType;
use snapgate::domain::user_data::USER_DATA_MAX;
use snapgate::domain::validate::{OSS_FIELDS, SPRITE_FIELDS, TOP_FIELDS, WEBVTT_FIELDS};
use snapgate::domain::{rules, validate_request, JobRequest, OssObject};
use snapgate::mps::sign::{authorization_acs3, parse_acs3_authorization};

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
        // Small grids often: more snapshots than cells, where {TileCount} is needed.
        "lines" | "columns" => prop_oneof![int(1, 1000), int(1, 4)].boxed(),
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

/// An object key the rules accept (1 to 1023 bytes, no CR/LF, not starting with `/` or `\`).
fn object_key() -> BoxedStrategy<String> {
    valid_value("object")
        .prop_map(|v| v.as_str().unwrap().to_string())
        .prop_filter("an object key may not start with / or \\", |k| {
            !k.starts_with(['/', '\\'])
        })
        .boxed()
}

/// An OSS object the rules accept, its key from `key`.
fn valid_oss(key: BoxedStrategy<String>) -> BoxedStrategy<Value> {
    (valid_value("location"), valid_value("bucket"), key)
        .prop_map(|(location, bucket, object)| {
            json!({"location": location, "bucket": bucket, "object": object})
        })
        .boxed()
}

/// An object with `required` members always and each other one of `fields` 40% of the time,
/// each from `value`.
fn members(
    fields: &'static [&'static str],
    required: &'static [&'static str],
    value: impl Fn(&'static str) -> BoxedStrategy<Value>,
) -> BoxedStrategy<Map<String, Value>> {
    let members: Vec<BoxedStrategy<Option<(String, Value)>>> = fields
        .iter()
        .map(|&f| {
            let v = value(f).prop_map(move |v| (f.to_string(), v));
            if required.contains(&f) {
                v.prop_map(Some).boxed()
            } else {
                prop::option::weighted(0.4, v).boxed()
            }
        })
        .collect();
    members
        .prop_map(|m| m.into_iter().flatten().collect())
        .boxed()
}

/// A body every rule accepts: each member from the values its field accepts, the output key
/// with `{Count}` and the sprite's with `{TileCount}` (so any number of snapshots is allowed),
/// `webvtt.sprite` true only beside a `sprite`.
fn valid_request() -> BoxedStrategy<Value> {
    members(TOP_FIELDS, &["input", "output"], |name| match name {
        "input" => valid_oss(object_key()),
        "output" => valid_oss(
            object_key()
                .prop_map(|k| format!("{k}/{{Count}}.jpg"))
                .boxed(),
        ),
        "sprite" => members(SPRITE_FIELDS, &["output"], |n| match n {
            "output" => valid_oss(
                object_key()
                    .prop_map(|k| format!("{k}/{{TileCount}}.jpg"))
                    .boxed(),
            ),
            _ => valid_value(n),
        })
        .prop_map(Value::Object)
        .boxed(),
        "webvtt" => members(WEBVTT_FIELDS, WEBVTT_FIELDS, valid_value)
            .prop_map(Value::Object)
            .boxed(),
        _ => valid_value(name),
    })
    .prop_map(|mut map| {
        if !map.contains_key("sprite") {
            if let Some(w) = map.get_mut("webvtt") {
                w["sprite"] = json!(false);
            }
        }
        Value::Object(map)
    })
    .boxed()
}

/// One change to a valid body.
#[derive(Debug, Clone)]
enum Mutation {
    /// A member (present, or a known field absent from a present object) set to a hostile
    /// value: mostly of the field's own type (a number at a numeric edge, an odd string), else
    /// any value.
    Set(prop::sample::Index, Hostile),
    /// The same, to a value its field accepts (by the member's name): alone valid, it may break
    /// a rule between fields (`{Count}`, `{TileCount}`, `webvtt.sprite`).
    SetValid(prop::sample::Index, BTreeMap<&'static str, Value>),
    /// A present member removed.
    Remove(prop::sample::Index),
    /// An unknown member added to a present object.
    Unknown(prop::sample::Index, String, Value),
    /// The whole body replaced.
    Replace(Value),
}

/// Hostile values of each kind; [`Mutation::apply`] takes the one for the field it changes.
#[derive(Debug, Clone)]
struct Hostile {
    number: Value,
    string: String,
    any: Value,
    typed: bool,
}

impl Hostile {
    fn for_field(&self, name: &str) -> Value {
        let numeric = rules::BODY_INTEGERS
            .iter()
            .chain(rules::SPRITE_INTEGERS)
            .any(|(n, _)| *n == name);
        let string = [
            OSS_FIELDS,
            &["frame_type", "pipeline_id", "user_data", "color"],
        ]
        .concat()
        .contains(&name);
        match (self.typed, numeric, string) {
            (true, true, _) => self.number.clone(),
            (true, _, true) => Value::String(self.string.clone()),
            _ => self.any.clone(),
        }
    }
}

fn hostile() -> BoxedStrategy<Hostile> {
    (
        edge_number(),
        edge_string(),
        hostile_value(),
        prop::bool::weighted(0.7),
    )
        .prop_map(|(number, string, any, typed)| Hostile {
            number,
            string,
            any,
            typed,
        })
        .boxed()
}

/// A hostile value: at a numeric edge, an odd string, null, a boolean, or a small structure.
fn hostile_value() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => edge_number(),
        3 => edge_string().prop_map(Value::String),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => edge_value(),
    ]
    .boxed()
}

/// One value each field accepts, by the field's name.
fn valid_values() -> BoxedStrategy<BTreeMap<&'static str, Value>> {
    let mut names = [TOP_FIELDS, OSS_FIELDS, SPRITE_FIELDS, WEBVTT_FIELDS].concat();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| valid_value(n).prop_map(move |v| (n, v)))
        .collect::<Vec<_>>()
        .prop_map(|v| v.into_iter().collect())
        .boxed()
}

fn mutation() -> BoxedStrategy<Mutation> {
    prop_oneof![
        4 => (any::<prop::sample::Index>(), hostile()).prop_map(|(i, v)| Mutation::Set(i, v)),
        2 => (any::<prop::sample::Index>(), valid_values()).prop_map(|(i, v)| Mutation::SetValid(i, v)),
        2 => any::<prop::sample::Index>().prop_map(Mutation::Remove),
        1 => (any::<prop::sample::Index>(), "\\PC{0,8}|[a-z/~]{1,6}", edge_value())
            .prop_map(|(i, k, v)| Mutation::Unknown(i, k, v)),
        1 => edge_value().prop_map(Mutation::Replace),
    ]
    .boxed()
}

/// The known fields of the object at `ptr` in a request body.
fn known_fields(ptr: &str) -> &'static [&'static str] {
    match ptr {
        "" => TOP_FIELDS,
        "/input" | "/output" | "/sprite/output" => OSS_FIELDS,
        "/sprite" => SPRITE_FIELDS,
        "/webvtt" => WEBVTT_FIELDS,
        _ => &[],
    }
}

/// Every object in `v` (at `ptr`) with its pointer, and every member's pointer.
fn walk(v: &Value, ptr: &str, objects: &mut Vec<String>, present: &mut Vec<String>) {
    if let Value::Object(map) = v {
        objects.push(ptr.to_string());
        for (k, child) in map {
            let p = format!("{ptr}/{}", k.replace('~', "~0").replace('/', "~1"));
            present.push(p.clone());
            walk(child, &p, objects, present);
        }
    }
}

impl Mutation {
    /// The mutated body and what was done (for failure messages).
    fn apply(&self, mut body: Value) -> (Value, String) {
        let (mut objects, mut present) = (Vec::new(), Vec::new());
        walk(&body, "", &mut objects, &mut present);
        let mut slots = present.clone();
        for o in &objects {
            for f in known_fields(o) {
                let p = format!("{o}/{f}");
                if !slots.contains(&p) {
                    slots.push(p);
                }
            }
        }
        match self {
            Mutation::Set(i, _) | Mutation::SetValid(i, _) => {
                let at = i.get(&slots).clone();
                let (parent, name) = at.rsplit_once('/').unwrap();
                let name = unescape(name);
                let v = match self {
                    Mutation::Set(_, h) => h.for_field(&name),
                    Mutation::SetValid(_, valid) => {
                        valid.get(name.as_str()).cloned().unwrap_or(Value::Null)
                    }
                    _ => unreachable!(),
                };
                let what = format!("{at} set to {v}");
                body.pointer_mut(parent)
                    .unwrap()
                    .as_object_mut()
                    .unwrap()
                    .insert(name, v);
                (body, what)
            }
            Mutation::Remove(i) => {
                let at = i.get(&present).clone();
                let (parent, name) = at.rsplit_once('/').unwrap();
                body.pointer_mut(parent)
                    .unwrap()
                    .as_object_mut()
                    .unwrap()
                    .remove(&unescape(name));
                (body, format!("{at} removed"))
            }
            Mutation::Unknown(i, k, v) => {
                let at = i.get(&objects).clone();
                let map = body.pointer_mut(&at).unwrap().as_object_mut().unwrap();
                if !known_fields(&at).contains(&k.as_str()) {
                    map.insert(k.clone(), v.clone());
                }
                (body, format!("{k:?} = {v} added at {at:?}"))
            }
            Mutation::Replace(v) => (v.clone(), format!("body replaced by {v}")),
        }
    }
}

/// Request-shaped bodies: 40% valid as generated (`None`), 60% a valid body with one mutation
/// (`Some(what was done)`), which may or may not break a rule.
fn request() -> BoxedStrategy<(Value, Option<String>)> {
    prop_oneof![
        2 => valid_request().prop_map(|b| (b, None)),
        3 => (valid_request(), mutation()).prop_map(|(b, m)| {
            let (b, what) = m.apply(b);
            (b, Some(what))
        }),
    ]
    .boxed()
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

/// A member that is present and not null (a null member is as good as absent).
fn member<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.get(name).filter(|v| !v.is_null())
}

/// `v` is an object with none but the `known` members.
fn only_known<'a>(
    v: &'a Value,
    at: &str,
    known: &[&str],
) -> Result<&'a Map<String, Value>, TestCaseError> {
    let map = v.as_object();
    prop_assert!(map.is_some(), "{} is not an object: {}", at, v);
    let map = map.unwrap();
    for k in map.keys() {
        prop_assert!(
            known.contains(&k.as_str()),
            "unknown member {:?} at {:?}",
            k,
            at
        );
    }
    Ok(map)
}

/// An integer member: absent (and then `got` is `default`), or a whole number within `range`
/// and at most 2^53 - 1, exactly the value in the request.
fn check_integer(
    map: &Map<String, Value>,
    at: &str,
    range: rules::Range,
    got: Option<u64>,
    default: Option<u64>,
) -> Result<(), TestCaseError> {
    let Some(v) = member(map, at.rsplit('/').next().unwrap()) else {
        prop_assert_eq!(got, default, "{} is absent", at);
        return Ok(());
    };
    let n = match v.as_u64() {
        Some(n) => Some(n),
        // A whole number written as a float is that integer (JSON Schema); never a fraction.
        None => v
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= rules::MAX_SAFE as f64)
            .map(|f| f as u64),
    };
    prop_assert!(
        n.is_some(),
        "{} = {} is not a whole number up to 2^53",
        at,
        v
    );
    let n = n.unwrap();
    prop_assert!(
        n <= rules::MAX_SAFE && range.contains(n),
        "{} = {} out of {:?}",
        at,
        n,
        range
    );
    prop_assert_eq!(got, Some(n), "{} = {} in the body", at, v);
    Ok(())
}

/// A string member as the request holds it (`None` when absent).
fn string_member<'a>(
    map: &'a Map<String, Value>,
    at: &str,
) -> Result<Option<&'a str>, TestCaseError> {
    match member(map, at.rsplit('/').next().unwrap()) {
        None => Ok(None),
        Some(v) => {
            prop_assert!(v.is_string(), "{} = {} is not a string", at, v);
            Ok(v.as_str())
        }
    }
}

/// A boolean member: the request's value, or `default` when absent.
fn check_bool(
    map: &Map<String, Value>,
    at: &str,
    got: bool,
    default: bool,
) -> Result<(), TestCaseError> {
    match member(map, at.rsplit('/').next().unwrap()) {
        None => prop_assert_eq!(got, default, "{} is absent", at),
        Some(v) => prop_assert_eq!(Some(got), v.as_bool(), "{} = {}", at, v),
    }
    Ok(())
}

/// An OSS object: an object of `location`, `bucket` and `object`, all strings, as in the
/// request; the location `oss-<region>`, the bucket named per OSS, the key 1 to 1023 bytes
/// without CR/LF and not starting with `/` or `\`.
fn check_oss(v: Option<&Value>, at: &str, got: &OssObject) -> Result<(), TestCaseError> {
    prop_assert!(v.is_some(), "{} is required", at);
    let map = only_known(v.unwrap(), at, OSS_FIELDS)?;
    let location = string_member(map, &format!("{at}/location"))?;
    let bucket = string_member(map, &format!("{at}/bucket"))?;
    let object = string_member(map, &format!("{at}/object"))?;
    prop_assert_eq!(location, Some(got.location.as_str()), "{}/location", at);
    prop_assert_eq!(bucket, Some(got.bucket.as_str()), "{}/bucket", at);
    prop_assert_eq!(object, Some(got.object.as_str()), "{}/object", at);
    prop_assert!(
        rules::is_location(&got.location),
        "{} location {:?}",
        at,
        got.location
    );
    prop_assert!(
        rules::is_bucket(&got.bucket),
        "{} bucket {:?}",
        at,
        got.bucket
    );
    let key = &got.object;
    prop_assert!(
        (1..=rules::OBJECT_KEY_MAX_BYTES).contains(&key.len()),
        "{} key of {} bytes",
        at,
        key.len()
    );
    prop_assert!(
        !snapgate::domain::text::has_control(key),
        "{} key {:?}",
        at,
        key
    );
    prop_assert!(
        !key.starts_with(rules::OBJECT_KEY_FORBIDDEN_FIRST),
        "{} key {:?}",
        at,
        key
    );
    Ok(())
}

/// Every rule the validator enforces, checked on an accepted body and the request made of it:
/// the ranges and formats stated in `domain::rules`, the rest as README "Validation rules"
/// states them (a null member counts as absent). Written from the rules, not from the
/// validator's code.
fn check_accepted(body: &Value, r: &JobRequest) -> Result<(), TestCaseError> {
    let top = only_known(body, "", TOP_FIELDS)?;
    check_oss(member(top, "input"), "/input", &r.input)?;
    check_oss(member(top, "output"), "/output", &r.output)?;
    for (name, range) in rules::BODY_INTEGERS {
        let (got, default) = match *name {
            "time_ms" => (Some(r.time_ms), Some(0)),
            "interval_s" => (r.interval_s, None),
            "num" => (r.num, None),
            "width" => (r.width.map(u64::from), None),
            "height" => (r.height.map(u64::from), None),
            "black_level" => (r.black_level.map(u64::from), None),
            other => panic!("a body integer this test does not know: {other}"),
        };
        check_integer(top, &format!("/{name}"), *range, got, default)?;
    }
    let frame_type = string_member(top, "/frame_type")?;
    let want = match frame_type {
        None | Some("intra") => FrameType::Intra,
        Some("normal") => FrameType::Normal,
        Some(other) => {
            prop_assert!(false, "frame_type {:?} accepted", other);
            unreachable!()
        }
    };
    prop_assert_eq!(r.frame_type, want);
    prop_assert_eq!(
        string_member(top, "/pipeline_id")?,
        r.pipeline_id.as_deref()
    );
    if let Some(p) = &r.pipeline_id {
        prop_assert!(rules::is_mps_id(p), "pipeline_id {:?}", p);
    }
    prop_assert_eq!(string_member(top, "/user_data")?, r.user_data.as_deref());
    if let Some(u) = &r.user_data {
        prop_assert!(u.len() <= USER_DATA_MAX, "user_data of {} bytes", u.len());
        // An empty user_data has no first character to break "starting with a letter or
        // digit": accepted (as no user data).
        let first = u.chars().next();
        prop_assert!(first.is_none_or(char::is_alphanumeric), "user_data {:?}", u);
        prop_assert!(
            u.chars()
                .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.')),
            "user_data {:?}",
            u
        );
    }
    match (member(top, "sprite"), &r.sprite) {
        (None, None) => {}
        (Some(v), Some(s)) => {
            let map = only_known(v, "/sprite", SPRITE_FIELDS)?;
            check_oss(member(map, "output"), "/sprite/output", &s.output)?;
            for (name, range) in rules::SPRITE_INTEGERS {
                let (got, default) = match *name {
                    "lines" => (Some(u64::from(s.lines)), Some(10)),
                    "columns" => (Some(u64::from(s.columns)), Some(10)),
                    "cell_width" => (s.cell_width.map(u64::from), None),
                    "cell_height" => (s.cell_height.map(u64::from), None),
                    "margin" => (Some(u64::from(s.margin)), Some(0)),
                    "padding" => (Some(u64::from(s.padding)), Some(0)),
                    "cell_step" => (s.cell_step.map(u64::from), None),
                    other => panic!("a sprite integer this test does not know: {other}"),
                };
                check_integer(map, &format!("/sprite/{name}"), *range, got, default)?;
            }
            let color = string_member(map, "/sprite/color")?;
            prop_assert_eq!(color.unwrap_or("black"), s.color.as_str());
            prop_assert!(rules::is_color(&s.color), "color {:?}", s.color);
            check_bool(map, "/sprite/keep_cells", s.keep_cells, true)?;
        }
        (v, s) => prop_assert!(false, "sprite {:?} in the body, {:?} in the request", v, s),
    }
    match (member(top, "webvtt"), &r.webvtt) {
        (None, None) => {}
        (Some(v), Some(w)) => {
            let map = only_known(v, "/webvtt", WEBVTT_FIELDS)?;
            check_bool(map, "/webvtt/sprite", w.sprite, false)?;
            if w.sprite {
                prop_assert!(r.sprite.is_some(), "webvtt.sprite needs a sprite");
            }
        }
        (v, w) => prop_assert!(false, "webvtt {:?} in the body, {:?} in the request", v, w),
    }
    // Several snapshots can result (num > 1, or interval_s without num): {Count} in the key.
    let several = match (r.num, r.interval_s) {
        (Some(n), _) => n > 1,
        (None, interval) => interval.is_some(),
    };
    if several {
        prop_assert!(r.output.object.contains("{Count}"), "{:?}", r.output.object);
    }
    // Several sprites can result (more snapshots than cells, or interval_s without num):
    // {TileCount} in the sprite's key.
    if let Some(s) = &r.sprite {
        let cells = u64::from(s.lines) * u64::from(s.columns);
        let sprites = match (r.num, r.interval_s) {
            (Some(n), _) => n > cells,
            (None, interval) => interval.is_some(),
        };
        if sprites {
            prop_assert!(
                s.output.object.contains("{TileCount}"),
                "{:?}",
                s.output.object
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Request bodies, valid or with one change: no panic, the same answer twice, a valid body
    /// accepted, well-formed problems; an accepted body keeps every rule, and its normalized
    /// form (serialized with serde, every field present) is accepted again with the same
    /// request and the same warnings.
    #[test]
    fn request_shaped_bodies_are_validated_consistently((body, mutation) in request()) {
        let first = validate_request(&body);
        prop_assert_eq!(&first, &validate_request(&body), "deterministic");
        if mutation.is_none() {
            prop_assert!(first.is_ok(), "a valid body is refused: {} {:?}", body, first);
        }
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
                check_accepted(&body, &request)?;
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

/// The generator is useful only if it reaches both sides: at least 30% of bodies accepted (so
/// the rules of an accepted body and the normalization properties are exercised), at least 30%
/// refused, and every kind of violation the validator reports.
#[test]
fn the_request_generator_reaches_acceptance_and_every_violation() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = request();
    let (mut accepted, mut refused, mut with_warnings) = (0, 0, 0);
    let mut codes = std::collections::BTreeSet::new();
    let n = 3000;
    for _ in 0..n {
        let (body, _) = strategy.new_tree(&mut runner).unwrap().current();
        match validate_request(&body) {
            Ok((_, w)) => {
                accepted += 1;
                with_warnings += usize::from(!w.is_empty());
            }
            Err(v) => {
                refused += 1;
                codes.extend(v.into_iter().map(|v| v.code));
            }
        }
    }
    println!(
        "{accepted} of {n} accepted ({with_warnings} with warnings), {refused} refused; violation codes: {codes:?}"
    );
    assert!(accepted * 10 >= n * 3, "only {accepted} of {n} accepted");
    assert!(refused * 10 >= n * 3, "only {refused} of {n} refused");
    assert!(with_warnings > 0, "no accepted body had a warning");
    for code in [
        "invalid_type",
        "unknown_field",
        "required",
        "out_of_range",
        "invalid_format",
        "invalid_length",
        "invalid_characters",
        "invalid_value",
        "too_long",
        "missing_placeholder",
        "requires_sprite",
    ] {
        assert!(codes.contains(code), "{code} never reached: {codes:?}");
    }
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
