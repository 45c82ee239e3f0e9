//! MPS's `SubmitSnapshotJob` parameters → the REST API's job body (the `serde_json::Value`
//! `POST /v1/snapshot-jobs` takes, validated by `domain/validate.rs`); the reverse of
//! `mps/params.rs`. Only the transport's shapes are handled here — every rule of a job
//! stays in the validator — and every problem is reported at once, in MPS's names.
//!
//! Accepted: `Input` and `SnapshotConfig` as JSON objects (also when the whole JSON arrives
//! percent-encoded once more), object keys URL-encoded as MPS requires (decoded here; a raw key
//! without `%` passes unchanged), numbers as JSON numbers or strings of digits, booleans as
//! `true`/`false` or their strings, member names in any letter case.
//!
//! Refused (`InvalidParameter.NotSupported`, listed with the other problems): `RoleArn` (snapgate
//! reaches OSS through its own MPS account), `SnapshotConfig.TimeArray` and `PixelBlackThreshold`
//! (not documented for Mts), any other unknown member, `Format` other than `vtt`, `SubOut`
//! without `Format=vtt`. Ignored with a debug log: the account plumbing `OwnerId`,
//! `ResourceOwnerId`, `OwnerAccount`, `ResourceOwnerAccount` (snapgate's own account applies)
//! and unknown top-level parameters, as MPS ignores them.

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

use super::RpcError;
use crate::crypto::percent_decode;
use crate::domain::{self, Violation};
use crate::http::strict_json::StrictValue;

/// Parameters that name the caller's Alibaba Cloud account; snapgate's own account applies.
pub const IGNORED: &[&str] = &[
    "OwnerId",
    "ResourceOwnerId",
    "OwnerAccount",
    "ResourceOwnerAccount",
];
/// `SnapshotConfig` members snapgate refuses (not documented for Mts requests).
pub const UNSUPPORTED_CONFIG: &[&str] = &["TimeArray", "PixelBlackThreshold"];
const SUBMIT_PARAMS: &[&str] = &["Input", "SnapshotConfig", "PipelineId", "UserData"];

/// One problem, named as MPS names it (`SnapshotConfig.OutputFile.Object`).
struct Problem {
    field: String,
    kind: Kind,
    message: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    NotSupported,
    OutOfRange,
    Other,
}

impl Kind {
    fn of_violation(code: &str) -> Self {
        match code {
            "out_of_range" | "too_long" | "invalid_length" => Kind::OutOfRange,
            "unknown_field" => Kind::NotSupported,
            _ => Kind::Other,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Kind::Json => "InvalidParameter.JsonObjectFormatInvalid",
            Kind::NotSupported => "InvalidParameter.NotSupported",
            Kind::OutOfRange => "InvalidParameter.OutOfRange",
            Kind::Other => "InvalidParameter",
        }
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, kind: Kind, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            kind,
            message: message.into(),
        });
    }
}

/// Every problem in one MPS error: the code names the kind when all share one
/// (`InvalidParameter.OutOfRange`, …), else `InvalidParameter`; the message lists them all.
fn into_error(problems: Vec<Problem>) -> RpcError {
    let kind = problems
        .first()
        .map(|p| p.kind)
        .filter(|k| problems.iter().all(|p| p.kind == *k))
        .unwrap_or(Kind::Other);
    let list: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {}", p.field, p.message))
        .collect();
    RpcError::invalid(
        kind.code(),
        format!(
            "The request breaks {} rule(s): {}",
            list.len(),
            list.join("; ")
        ),
    )
}

/// The validator's violations (REST pointers) as one MPS error, in MPS's names. Breaking
/// MPS's region rule (`domain::regions`, checked only on an otherwise valid request) is
/// `RpcError::Region`.
pub fn invalid(violations: &[Violation]) -> RpcError {
    if !violations.is_empty() && violations.iter().all(|v| v.code.starts_with("region_")) {
        let list: Vec<String> = violations
            .iter()
            .map(|v| format!("{}: {}", mps_field(&v.field), v.message))
            .collect();
        return RpcError::Region(format!(
            "The bucket is not in a region this endpoint reaches: {}",
            list.join("; ")
        ));
    }
    into_error(
        violations
            .iter()
            .map(|v| Problem {
                field: mps_field(&v.field),
                kind: Kind::of_violation(&v.code),
                message: in_mps_names(&v.message),
            })
            .collect(),
    )
}

/// Messages already written with MPS names (`Name: what is wrong`), as one MPS error.
pub fn invalid_messages(code: &'static str, messages: &[String]) -> RpcError {
    RpcError::invalid(
        code,
        format!(
            "The request breaks {} rule(s): {}",
            messages.len(),
            messages.join("; ")
        ),
    )
}

/// A REST body pointer (`/sprite/output/object`) as MPS names the field
/// (`SnapshotConfig.TileOutputFile.Object`).
pub fn mps_field(pointer: &str) -> String {
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    let oss = |base: &str, rest: &[&str]| match rest {
        [] => base.to_string(),
        [f, ..] => format!("{base}.{}", pascal(f)),
    };
    match parts.as_slice() {
        ["input", rest @ ..] => oss("Input", rest),
        ["output", rest @ ..] => oss("SnapshotConfig.OutputFile", rest),
        ["sprite", "output", rest @ ..] => oss("SnapshotConfig.TileOutputFile", rest),
        ["sprite"] => "SnapshotConfig.TileOut".into(),
        ["sprite", f] => format!("SnapshotConfig.TileOut.{}", sprite_name(f)),
        ["webvtt"] => "SnapshotConfig.Format".into(),
        ["webvtt", ..] => "SnapshotConfig.SubOut.IsSptFrag".into(),
        ["time_ms"] => "SnapshotConfig.Time".into(),
        ["interval_s"] => "SnapshotConfig.Interval".into(),
        ["num"] => "SnapshotConfig.Num".into(),
        ["width"] => "SnapshotConfig.Width".into(),
        ["height"] => "SnapshotConfig.Height".into(),
        ["frame_type"] => "SnapshotConfig.FrameType".into(),
        ["black_level"] => "SnapshotConfig.BlackLevel".into(),
        ["pipeline_id"] => "PipelineId".into(),
        ["user_data"] => "UserData".into(),
        _ => pointer.to_string(),
    }
}

/// A validator message in MPS's parameter names: the REST names it mentions (`num > 1, or
/// interval_s without num`) become MPS's (`Num > 1, or Interval without Num`), so an MPS caller
/// reads only the names it sent.
pub fn in_mps_names(message: &str) -> String {
    static REST_NAMES: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"\b(time_ms|interval_s|num|width|height|frame_type|black_level|pipeline_id|user_data|lines|columns|cell_width|cell_height|cell_step|keep_cells)\b",
        )
        .expect("a valid pattern")
    });
    REST_NAMES
        .replace_all(message, |c: &regex::Captures| match &c[1] {
            "time_ms" => "Time".to_string(),
            "interval_s" => "Interval".to_string(),
            "pipeline_id" => "PipelineId".to_string(),
            "user_data" => "UserData".to_string(),
            "frame_type" => "FrameType".to_string(),
            "black_level" => "BlackLevel".to_string(),
            name @ ("num" | "width" | "height") => pascal(name),
            name => sprite_name(name),
        })
        .into_owned()
}

fn pascal(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `TileOut` member names, REST → MPS.
const SPRITE_NAMES: &[(&str, &str)] = &[
    ("lines", "Lines"),
    ("columns", "Columns"),
    ("cell_width", "CellWidth"),
    ("cell_height", "CellHeight"),
    ("margin", "Margin"),
    ("padding", "Padding"),
    ("color", "Color"),
    ("keep_cells", "IsKeepCellPic"),
    ("cell_step", "CellSelStep"),
];

fn sprite_name(rest: &str) -> String {
    SPRITE_NAMES
        .iter()
        .find(|(r, _)| *r == rest)
        .map(|(_, m)| m.to_string())
        .unwrap_or_else(|| pascal(rest))
}

/// A JSON object parameter: JSON text, or JSON text percent-encoded once more. Read by the
/// REST API's strict parser ([`StrictValue`]): a member given twice is refused, not "last wins".
fn json_object(name: &str, raw: &str, problems: &mut Problems) -> Option<Map<String, Value>> {
    let strict = |s: &str| serde_json::from_str::<StrictValue>(s).map(|v| v.0);
    let parsed = strict(raw).or_else(|e| {
        percent_decode(raw)
            .filter(|d| d != raw)
            .and_then(|d| strict(&d).ok())
            .ok_or(e)
    });
    match parsed {
        Ok(Value::Object(m)) => Some(m),
        Ok(_) => {
            problems.add(name, Kind::Json, "must be a JSON object");
            None
        }
        Err(e) => {
            problems.add(name, Kind::Json, format!("is not valid JSON: {e}"));
            None
        }
    }
}

/// Members of an MPS object by canonical name (any letter case accepted); unknown members are
/// problems, unsupported ones too.
fn members(
    ptr: &str,
    map: Map<String, Value>,
    known: &'static [&'static str],
    unsupported: &[(&str, &str)],
    problems: &mut Problems,
) -> BTreeMap<&'static str, Value> {
    let mut out = BTreeMap::new();
    for (k, v) in map {
        if let Some((name, why)) = unsupported.iter().find(|(n, _)| n.eq_ignore_ascii_case(&k)) {
            problems.add(format!("{ptr}.{name}"), Kind::NotSupported, *why);
        } else if let Some(name) = known.iter().find(|n| n.eq_ignore_ascii_case(&k)) {
            // Names are matched in any letter case: `Bucket` and `bucket` are the same member.
            if out.insert(*name, v).is_some() {
                problems.add(
                    format!("{ptr}.{name}"),
                    Kind::Other,
                    "is given more than once (member names match in any letter case)",
                );
            }
        } else {
            problems.add(
                format!("{ptr}.{k}"),
                Kind::NotSupported,
                format!("unknown member; snapgate takes: {}", known.join(", ")),
            );
        }
    }
    out
}

const OSS_NAMES: &[&str] = &["Bucket", "Location", "Object"];
const CONFIG_NAMES: &[&str] = &[
    "OutputFile",
    "Time",
    "Interval",
    "Num",
    "Width",
    "Height",
    "FrameType",
    "BlackLevel",
    "TileOutputFile",
    "TileOut",
    "Format",
    "SubOut",
];
const TILE_NAMES: &[&str] = &[
    "Lines",
    "Columns",
    "CellWidth",
    "CellHeight",
    "Margin",
    "Padding",
    "Color",
    "IsKeepCellPic",
    "CellSelStep",
];
const SUB_OUT_NAMES: &[&str] = &["IsSptFrag"];
const ROLE_ARN: (&str, &str) = (
    "RoleArn",
    "not supported: snapgate reads and writes OSS through its own MPS account",
);

/// `{Bucket, Location, Object}` → `{bucket, location, object}`, the object key URL-decoded.
fn oss(ptr: &str, v: Value, problems: &mut Problems) -> Value {
    let Value::Object(map) = v else {
        // The validator names the wrong type.
        return v;
    };
    let m = members(ptr, map, OSS_NAMES, &[ROLE_ARN], problems);
    let mut out = Map::new();
    for (name, v) in m {
        let v = match (name, v) {
            ("Object", Value::String(s)) => match percent_decode(&s) {
                Some(d) => Value::String(d),
                None => {
                    problems.add(
                        format!("{ptr}.Object"),
                        Kind::Other,
                        "must be URL-encoded UTF-8, as MPS requires (e.g. a%2Fb%20c.mp4)",
                    );
                    continue;
                }
            },
            (_, v) => v,
        };
        out.insert(name.to_ascii_lowercase(), v);
    }
    Value::Object(out)
}

/// A whole number as a JSON number or a string of digits.
fn number(field: &str, v: Value, problems: &mut Problems) -> Option<Value> {
    match v {
        Value::String(s) => {
            match serde_json::from_str::<Number>(s.trim()) {
                Ok(n) => Some(Value::Number(n)),
                Err(_) => {
                    problems.add(
                    field,
                    Kind::Other,
                    format!("must be a whole number (a JSON number or a string of digits), got {s:?}"),
                );
                    None
                }
            }
        }
        other => Some(other),
    }
}

fn boolean(field: &str, v: Value, problems: &mut Problems) -> Option<Value> {
    match v {
        Value::Bool(b) => Some(Value::Bool(b)),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(Value::Bool(true)),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(Value::Bool(false)),
        other => {
            problems.add(
                field,
                Kind::Other,
                format!("must be true or false, got {other}"),
            );
            None
        }
    }
}

/// The REST body for a `SubmitSnapshotJob` call, or every problem found in one MPS error.
pub fn submit_body(p: &BTreeMap<String, String>) -> Result<Value, RpcError> {
    for name in p.keys().filter(|k| !SUBMIT_PARAMS.contains(&k.as_str())) {
        if IGNORED.contains(&name.as_str()) {
            tracing::debug!(parameter = %name, "MPS account parameter ignored: snapgate's own account applies");
        } else {
            tracing::debug!(parameter = %name, "unknown SubmitSnapshotJob parameter ignored");
        }
    }
    let input = p
        .get("Input")
        .ok_or_else(|| crate::mps::verify::AuthError::missing("Input"))?;
    let config = p
        .get("SnapshotConfig")
        .ok_or_else(|| crate::mps::verify::AuthError::missing("SnapshotConfig"))?;

    let mut problems = Problems::default();
    let mut body = Map::new();
    if let Some(i) = json_object("Input", input, &mut problems) {
        body.insert(
            "input".into(),
            oss("Input", Value::Object(i), &mut problems),
        );
    }
    if let Some(c) = json_object("SnapshotConfig", config, &mut problems) {
        snapshot_config(c, &mut body, &mut problems);
    }
    if let Some(pl) = p.get("PipelineId").filter(|s| !s.is_empty()) {
        body.insert("pipeline_id".into(), Value::String(pl.clone()));
    }
    if let Some(ud) = p.get("UserData").filter(|s| !s.is_empty()) {
        body.insert("user_data".into(), Value::String(ud.clone()));
    }
    let body = Value::Object(body);
    if problems.0.is_empty() {
        return Ok(body);
    }
    // Report the validator's findings too, except about what was already reported (or left
    // out because it could not be read).
    let mut all = problems.0;
    if let Err(violations) = domain::validate_request(&body) {
        for v in violations {
            let field = mps_field(&v.field);
            let within = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}."));
            let covered = all
                .iter()
                .any(|p| within(&field, &p.field) || within(&p.field, &field));
            if !covered {
                all.push(Problem {
                    field,
                    kind: Kind::of_violation(&v.code),
                    message: in_mps_names(&v.message),
                });
            }
        }
    }
    Err(into_error(all))
}

fn snapshot_config(c: Map<String, Value>, body: &mut Map<String, Value>, problems: &mut Problems) {
    const P: &str = "SnapshotConfig";
    let unsupported: Vec<(&str, &str)> = UNSUPPORTED_CONFIG
        .iter()
        .map(|n| {
            (
                *n,
                "not supported by snapgate (not documented for Mts requests)",
            )
        })
        .collect();
    let m = members(P, c, CONFIG_NAMES, &unsupported, problems);
    let mut sprite = Map::new();
    let mut format: Option<Value> = None;
    let mut sub_out: Option<Value> = None;
    for (name, v) in m {
        let field = format!("{P}.{name}");
        match name {
            "OutputFile" => {
                body.insert("output".into(), oss(&field, v, problems));
            }
            "Time" | "Interval" | "Num" | "Width" | "Height" | "BlackLevel" => {
                let rest = match name {
                    "Time" => "time_ms",
                    "Interval" => "interval_s",
                    "Num" => "num",
                    "Width" => "width",
                    "Height" => "height",
                    _ => "black_level",
                };
                if let Some(n) = number(&field, v, problems) {
                    body.insert(rest.into(), n);
                }
            }
            "FrameType" => {
                let v = match v {
                    Value::String(s) => Value::String(s.to_ascii_lowercase()),
                    other => other,
                };
                body.insert("frame_type".into(), v);
            }
            "TileOutputFile" => {
                sprite.insert("output".into(), oss(&field, v, problems));
            }
            "TileOut" => match v {
                Value::Object(t) => tile_out(t, &mut sprite, problems),
                _ => problems.add(field, Kind::Other, "must be an object"),
            },
            "Format" => format = Some(v),
            _ => sub_out = Some(v),
        }
    }
    if !sprite.is_empty() {
        body.insert("sprite".into(), Value::Object(sprite));
    }
    let vtt = match &format {
        None => false,
        Some(Value::String(s)) if s.is_empty() => false,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("vtt") => true,
        Some(other) => {
            problems.add(
                format!("{P}.Format"),
                Kind::NotSupported,
                format!("only vtt is supported, got {other}"),
            );
            false
        }
    };
    let mut webvtt = Map::new();
    if let Some(s) = sub_out {
        if !vtt {
            problems.add(
                format!("{P}.SubOut"),
                Kind::Other,
                "needs Format=vtt (WebVTT tiling)",
            );
        }
        match s {
            Value::Object(s) => {
                for (name, v) in members(&format!("{P}.SubOut"), s, SUB_OUT_NAMES, &[], problems) {
                    if let Some(b) = boolean(&format!("{P}.SubOut.{name}"), v, problems) {
                        webvtt.insert("sprite".into(), b);
                    }
                }
            }
            _ => problems.add(format!("{P}.SubOut"), Kind::Other, "must be an object"),
        }
    }
    if vtt {
        body.insert("webvtt".into(), Value::Object(webvtt));
    }
}

fn tile_out(t: Map<String, Value>, sprite: &mut Map<String, Value>, problems: &mut Problems) {
    const P: &str = "SnapshotConfig.TileOut";
    for (name, v) in members(P, t, TILE_NAMES, &[], problems) {
        let field = format!("{P}.{name}");
        let rest = SPRITE_NAMES
            .iter()
            .find(|(_, m)| *m == name)
            .map(|(r, _)| *r)
            .unwrap_or("?");
        let v = match name {
            "Color" => Some(v),
            "IsKeepCellPic" => boolean(&field, v, problems),
            _ => number(&field, v, problems),
        };
        if let Some(v) = v {
            sprite.insert(rest.into(), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An MPS caller reads the names it sent: the validator's REST names become MPS's, and
    /// words that merely contain one stay as they are.
    #[test]
    fn validator_messages_speak_mps_names() {
        assert_eq!(
            in_mps_names("num > 1, or interval_s without num"),
            "Num > 1, or Interval without Num"
        );
        assert_eq!(
            in_mps_names("time_ms must be below the video's length; pipeline_id, user_data"),
            "Time must be below the video's length; PipelineId, UserData"
        );
        assert_eq!(in_mps_names("numbers and widths"), "numbers and widths");
    }
    use serde_json::json;

    fn p(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_sample_maps_to_the_rest_body() {
        let body = submit_body(&p(&[
            ("Input", r#"{"Location": "oss-cn-shanghai", "Bucket": "bucket", "Object": "in%2Fa%20b.mp4"}"#),
            ("SnapshotConfig", r#"{"OutputFile": {"Location": "oss-cn-shanghai", "Bucket": "bucket", "Object": "output_%7BCount%7D.jpg"}, "Time": 2, "Interval": "2", "Num": "3", "Height": 360, "FrameType": "Normal",
               "TileOutputFile": {"Location": "oss-cn-shanghai", "Bucket": "bucket", "Object": "s.jpg"}, "TileOut": {"Lines": "2", "IsKeepCellPic": "false", "Color": "black"},
               "Format": "vtt", "SubOut": {"IsSptFrag": "true"}}"#),
            ("PipelineId", "9bad3801a2c561c22c4df9c6abcd0000"),
            ("UserData", "my data"),
            ("OwnerId", "1"),
        ]))
        .unwrap();
        assert_eq!(
            body,
            json!({
                "input": {"location": "oss-cn-shanghai", "bucket": "bucket", "object": "in/a b.mp4"},
                "output": {"location": "oss-cn-shanghai", "bucket": "bucket", "object": "output_{Count}.jpg"},
                "time_ms": 2, "interval_s": 2, "num": 3, "height": 360, "frame_type": "normal",
                "sprite": {"output": {"location": "oss-cn-shanghai", "bucket": "bucket", "object": "s.jpg"}, "lines": 2, "keep_cells": false, "color": "black"},
                "webvtt": {"sprite": true},
                "pipeline_id": "9bad3801a2c561c22c4df9c6abcd0000",
                "user_data": "my data"
            })
        );
        assert!(domain::validate_request(&body).is_ok());
    }

    #[test]
    fn every_problem_in_one_error() {
        let e = submit_body(&p(&[
            ("Input", r#"{"Bucket": "B", "Location": "oss-cn-shanghai", "Object": "a%zz", "RoleArn": "x"}"#),
            ("SnapshotConfig", r#"{"OutputFile": {"Bucket": "media", "Location": "oss-cn-shanghai", "Object": "o.jpg"}, "Width": "abc", "TimeArray": {"TimePointList": [1]}, "Zoom": 1, "Num": "0"}"#),
        ]))
        .unwrap_err();
        let msg = e.to_string();
        for f in [
            "Input.Object",
            "Input.RoleArn",
            "SnapshotConfig.Width",
            "SnapshotConfig.TimeArray",
            "SnapshotConfig.Zoom",
            "Input.Bucket",
            "SnapshotConfig.Num",
        ] {
            assert!(msg.contains(f), "{f} missing in {msg}");
        }
        assert!(e.code().starts_with("InvalidParameter"));
    }

    #[test]
    fn percent_encoded_json_and_missing_parameters() {
        let body = submit_body(&p(&[
            ("Input", "%7B%22Bucket%22%3A%22media%22%2C%22Location%22%3A%22oss-cn-shanghai%22%2C%22Object%22%3A%22a.mp4%22%7D"),
            ("SnapshotConfig", r#"{"outputfile": {"bucket": "media", "location": "oss-cn-shanghai", "object": "a.jpg"}}"#),
        ]))
        .unwrap();
        assert_eq!(body["input"]["object"], "a.mp4");
        assert_eq!(body["output"]["object"], "a.jpg");
        let e = submit_body(&p(&[("Input", "{}")])).unwrap_err();
        assert_eq!(e.code(), "MissingParameter");
        let e = submit_body(&p(&[("Input", "[1]"), ("SnapshotConfig", "{oops")])).unwrap_err();
        assert_eq!(e.code(), "InvalidParameter.JsonObjectFormatInvalid", "{e}");
    }

    #[test]
    fn rest_pointers_in_mps_names() {
        assert_eq!(
            mps_field("/sprite/output/object"),
            "SnapshotConfig.TileOutputFile.Object"
        );
        assert_eq!(mps_field("/sprite/output"), "SnapshotConfig.TileOutputFile");
        assert_eq!(
            mps_field("/sprite/keep_cells"),
            "SnapshotConfig.TileOut.IsKeepCellPic"
        );
        assert_eq!(mps_field("/input/bucket"), "Input.Bucket");
        assert_eq!(mps_field("/time_ms"), "SnapshotConfig.Time");
    }
}
