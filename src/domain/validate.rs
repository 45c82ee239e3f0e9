//! Complete validation of a job request against MPS's rules (docs/mps/API.md §1.2 to §1.5, §4.3).
//!
//! The body is walked as a `serde_json::Value` rather than deserialized, so that *every* violation
//! (wrong types included) is reported with a JSON pointer, not only the first one serde meets.

use serde_json::{Map, Value};

use super::job::{FrameType, JobRequest, OssObject, SpriteSpec, Violation, Warning, WebVttSpec};
use super::rules::{self, Range, COLOR_KEYWORDS, MPS_USER_DATA_MAX};
use super::text;
use super::user_data::{USER_DATA_MAX, USER_DATA_RESERVED};

pub const TOP_FIELDS: &[&str] = &[
    "input",
    "output",
    "time_ms",
    "interval_s",
    "num",
    "width",
    "height",
    "frame_type",
    "black_level",
    "sprite",
    "webvtt",
    "pipeline_id",
    "user_data",
];
pub const OSS_FIELDS: &[&str] = &["location", "bucket", "object"];
pub const SPRITE_FIELDS: &[&str] = &[
    "output",
    "lines",
    "columns",
    "cell_width",
    "cell_height",
    "margin",
    "padding",
    "color",
    "keep_cells",
    "cell_step",
];
pub const WEBVTT_FIELDS: &[&str] = &["sprite"];
const PLACEHOLDERS: &[&str] = &[
    "{ObjectPrefix}",
    "{FileName}",
    "{ExtName}",
    "{SnapshotTime}",
    "{Count}",
    "{TileCount}",
];

struct Ctx {
    errors: Vec<Violation>,
    warnings: Vec<Warning>,
}

impl Ctx {
    fn err(&mut self, field: impl Into<String>, code: &str, message: impl Into<String>) {
        self.errors.push(Violation {
            field: field.into(),
            code: code.into(),
            message: message.into(),
        });
    }

    fn warn(&mut self, field: &str, code: &str, message: impl Into<String>) {
        self.warnings.push(Warning {
            field: field.into(),
            code: code.into(),
            message: message.into(),
        });
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn object<'a>(
    cx: &mut Ctx,
    v: &'a Value,
    ptr: &str,
    known: &[&str],
) -> Option<&'a Map<String, Value>> {
    let Some(map) = v.as_object() else {
        cx.err(
            ptr,
            "invalid_type",
            format!("must be an object, got {}", type_name(v)),
        );
        return None;
    };
    for key in map.keys() {
        if !known.contains(&key.as_str()) {
            cx.err(
                format!("{ptr}/{}", escape_pointer(key)),
                "unknown_field",
                format!("unknown field; expected one of: {}", known.join(", ")),
            );
        }
    }
    Some(map)
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// A present, non-null member.
fn member<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.get(name).filter(|v| !v.is_null())
}

fn integer(
    cx: &mut Ctx,
    map: &Map<String, Value>,
    ptr: &str,
    name: &str,
    bounds: Range,
) -> Option<u64> {
    let Range { min, max } = bounds;
    let v = member(map, name)?;
    let field = format!("{ptr}/{name}");
    let range = format!("an integer from {min} to {max}");
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(x) if bounds.contains(x) => Some(x),
            Some(_) => {
                cx.err(field, "out_of_range", format!("must be {range}"));
                None
            }
            None if n.is_i64() => {
                cx.err(field, "out_of_range", format!("must be {range}"));
                None
            }
            None => {
                // A whole number written as a float (640.0, 1e3) is that integer, as JSON
                // Schema says; beyond 2^53 a float no longer names one integer exactly.
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() == 0.0 && f.is_finite() && f >= min as f64 && f <= max as f64 {
                    return Some(f as u64);
                }
                if f.fract() == 0.0 && f.is_finite() {
                    cx.err(field, "out_of_range", format!("must be {range}"));
                } else {
                    cx.err(
                        field,
                        "invalid_type",
                        format!("must be {range}, not a fraction"),
                    );
                }
                None
            }
        },
        other => {
            cx.err(
                field,
                "invalid_type",
                format!("must be {range}, got {}", type_name(other)),
            );
            None
        }
    }
}

/// A string member; every string the validator reads is held to the text rule
/// ([`super::text`]) here.
fn string<'a>(cx: &mut Ctx, map: &'a Map<String, Value>, ptr: &str, name: &str) -> Option<&'a str> {
    let v = member(map, name)?;
    match v.as_str() {
        Some(s) if text::has_control(s) => {
            cx.err(format!("{ptr}/{name}"), text::CODE, text::RULE);
            None
        }
        Some(s) => Some(s),
        None => {
            cx.err(
                format!("{ptr}/{name}"),
                "invalid_type",
                format!("must be a string, got {}", type_name(v)),
            );
            None
        }
    }
}

fn boolean(cx: &mut Ctx, map: &Map<String, Value>, ptr: &str, name: &str) -> Option<bool> {
    let v = member(map, name)?;
    match v.as_bool() {
        Some(b) => Some(b),
        None => {
            cx.err(
                format!("{ptr}/{name}"),
                "invalid_type",
                format!("must be true or false, got {}", type_name(v)),
            );
            None
        }
    }
}

fn required<'a>(
    cx: &mut Ctx,
    map: &'a Map<String, Value>,
    ptr: &str,
    name: &str,
) -> Option<&'a Value> {
    let v = member(map, name);
    if v.is_none() {
        cx.err(format!("{ptr}/{name}"), "required", "is required");
    }
    v
}

fn oss_object(cx: &mut Ctx, v: &Value, ptr: &str) -> Option<OssObject> {
    let map = object(cx, v, ptr, OSS_FIELDS)?;
    let location =
        required(cx, map, ptr, "location").and_then(|_| string(cx, map, ptr, "location"));
    let bucket = required(cx, map, ptr, "bucket").and_then(|_| string(cx, map, ptr, "bucket"));
    let key = required(cx, map, ptr, "object").and_then(|_| string(cx, map, ptr, "object"));
    if let Some(l) = location {
        if !rules::is_location(l) {
            cx.err(
                format!("{ptr}/location"),
                "invalid_format",
                "must be an OSS location of the form oss-<region>, e.g. oss-cn-shanghai (not the region id)",
            );
        }
    }
    if let Some(b) = bucket {
        if !rules::is_bucket(b) {
            cx.err(
                format!("{ptr}/bucket"),
                "invalid_format",
                "must be an OSS bucket name: 3 to 63 lower-case letters, digits or hyphens, not starting or ending with a hyphen",
            );
        }
    }
    if let Some(k) = key {
        let field = format!("{ptr}/object");
        if k.is_empty() || k.len() > rules::OBJECT_KEY_MAX_BYTES {
            cx.err(
                &field,
                "invalid_length",
                format!(
                    "must be 1 to {} bytes of UTF-8",
                    rules::OBJECT_KEY_MAX_BYTES
                ),
            );
        }
        if k.starts_with(rules::OBJECT_KEY_FORBIDDEN_FIRST) {
            cx.err(
                &field,
                "invalid_format",
                "an OSS object key must not start with / or \\",
            );
        }
    }
    Some(OssObject {
        location: location?.to_string(),
        bucket: bucket?.to_string(),
        object: key?.to_string(),
    })
}

fn check_placeholders(cx: &mut Ctx, key: &str, field: &str, allowed: &[&str]) {
    let mut rest = key;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let token = &rest[start..start + len + 1];
        if !allowed.contains(&token) {
            cx.warn(
                field,
                "unknown_placeholder",
                format!(
                    "{token} is not an MPS placeholder here and will be written literally; known: {}",
                    allowed.join(" ")
                ),
            );
        }
        rest = &rest[start + len + 1..];
    }
}

/// `UserData` characters: MPS documents letters (Chinese included), digits and hyphens, not
/// starting with a special character; spaces, `_` and `.` are accepted by MPS in practice (the
/// SDK vectors send `user data+1`), so snapgate allows those too. See the README.
fn user_data_problem(s: &str) -> Option<&'static str> {
    let first = s.chars().next()?;
    if !first.is_alphanumeric() {
        return Some("must start with a letter or digit");
    }
    if s.chars()
        .any(|c| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ' ')))
    {
        return Some("may contain only letters, digits, spaces, '-', '_' and '.'");
    }
    None
}

fn sprite(cx: &mut Ctx, v: &Value) -> Option<SpriteSpec> {
    let ptr = "/sprite";
    let map = object(cx, v, ptr, SPRITE_FIELDS)?;
    let output = required(cx, map, ptr, "output").and_then(|o| oss_object(cx, o, "/sprite/output"));
    let lines = integer(cx, map, ptr, "lines", rules::GRID);
    let columns = integer(cx, map, ptr, "columns", rules::GRID);
    let cell_width = integer(cx, map, ptr, "cell_width", rules::DIMENSION);
    let cell_height = integer(cx, map, ptr, "cell_height", rules::DIMENSION);
    let margin = integer(cx, map, ptr, "margin", rules::SPACING);
    let padding = integer(cx, map, ptr, "padding", rules::SPACING);
    let cell_step = integer(cx, map, ptr, "cell_step", rules::CELL_STEP);
    let color = string(cx, map, ptr, "color");
    if let Some(c) = color {
        if !rules::is_color(c) {
            cx.err(
                "/sprite/color",
                "invalid_format",
                format!(
                    "must be #RRGGBB, `random` or one of: {}",
                    COLOR_KEYWORDS.join(", ")
                ),
            );
        }
    }
    let keep_cells = boolean(cx, map, ptr, "keep_cells");
    Some(SpriteSpec {
        output: output?,
        lines: lines.unwrap_or(10) as u32,
        columns: columns.unwrap_or(10) as u32,
        cell_width: cell_width.map(|x| x as u32),
        cell_height: cell_height.map(|x| x as u32),
        margin: margin.unwrap_or(0) as u32,
        padding: padding.unwrap_or(0) as u32,
        color: color.unwrap_or("black").to_string(),
        keep_cells: keep_cells.unwrap_or(true),
        cell_step: cell_step.map(|x| x as u32),
    })
}

/// Validates a request body. On success returns the normalized request and its warnings; on
/// failure, every violation found.
pub fn validate_request(body: &Value) -> Result<(JobRequest, Vec<Warning>), Vec<Violation>> {
    let mut cx = Ctx {
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let Some(map) = object(&mut cx, body, "", TOP_FIELDS) else {
        return Err(cx.errors);
    };
    let input = required(&mut cx, map, "", "input").and_then(|v| oss_object(&mut cx, v, "/input"));
    let output =
        required(&mut cx, map, "", "output").and_then(|v| oss_object(&mut cx, v, "/output"));
    let time_ms = integer(&mut cx, map, "", "time_ms", rules::TIME_MS);
    let interval_s = integer(&mut cx, map, "", "interval_s", rules::INTERVAL_S);
    let num = integer(&mut cx, map, "", "num", rules::NUM);
    let width = integer(&mut cx, map, "", "width", rules::DIMENSION);
    let height = integer(&mut cx, map, "", "height", rules::DIMENSION);
    let black_level = integer(&mut cx, map, "", "black_level", rules::BLACK_LEVEL);
    let frame_type = match string(&mut cx, map, "", "frame_type") {
        None => Some(FrameType::Intra),
        Some("normal") => Some(FrameType::Normal),
        Some("intra") => Some(FrameType::Intra),
        Some(_) => {
            cx.err(
                "/frame_type",
                "invalid_value",
                "must be `normal` or `intra`",
            );
            None
        }
    };
    let sprite = member(map, "sprite").and_then(|v| sprite(&mut cx, v));
    let webvtt = member(map, "webvtt").and_then(|v| {
        let m = object(&mut cx, v, "/webvtt", WEBVTT_FIELDS)?;
        Some(WebVttSpec {
            sprite: boolean(&mut cx, m, "/webvtt", "sprite").unwrap_or(false),
        })
    });
    let pipeline_id = pipeline_id(&mut cx, map);
    let user_data = user_data(&mut cx, map);

    // Cross-field rules, checked only on fields that were individually valid.
    cross_field_rules(
        &mut cx,
        map,
        num,
        interval_s,
        output.as_ref(),
        sprite.as_ref(),
        webvtt.as_ref(),
    );
    if !cx.errors.is_empty() {
        return Err(cx.errors);
    }

    let request = JobRequest {
        input: input.expect("checked"),
        output: output.expect("checked"),
        time_ms: time_ms.unwrap_or(0),
        interval_s,
        num,
        width: width.map(|x| x as u32),
        height: height.map(|x| x as u32),
        frame_type: frame_type.expect("checked"),
        black_level: black_level.map(|x| x as u32),
        sprite,
        webvtt,
        pipeline_id: pipeline_id.map(str::to_string),
        user_data: user_data.map(str::to_string),
    };
    // Warnings: what MPS would ignore silently, and likely unit mistakes.
    warnings(&mut cx, &request);
    Ok((request, cx.warnings))
}

/// `pipeline_id`: an MPS pipeline id.
fn pipeline_id<'a>(cx: &mut Ctx, map: &'a Map<String, Value>) -> Option<&'a str> {
    let pipeline_id = string(cx, map, "", "pipeline_id");
    if let Some(p) = pipeline_id {
        if !rules::is_mps_id(p) {
            cx.err(
                "/pipeline_id",
                "invalid_format",
                format!(
                    "must be a real MPS pipeline id, 32 lower-case hex characters (this one has \
                     {}): copy it from the MPS console, or leave it out for mps.pipeline_id",
                    p.chars().count()
                ),
            );
        }
    }
    pipeline_id
}

/// `user_data`: at most `USER_DATA_MAX` bytes, of characters MPS takes.
fn user_data<'a>(cx: &mut Ctx, map: &'a Map<String, Value>) -> Option<&'a str> {
    let user_data = string(cx, map, "", "user_data");
    if let Some(u) = user_data {
        if u.len() > USER_DATA_MAX {
            cx.err(
                "/user_data",
                "too_long",
                format!(
                    "must be at most {USER_DATA_MAX} bytes (MPS allows {MPS_USER_DATA_MAX}; snapgate uses {USER_DATA_RESERVED} for its job id)"
                ),
            );
        }
        if let Some(problem) = user_data_problem(u) {
            cx.err("/user_data", "invalid_characters", problem);
        }
    }
    user_data
}

/// The rules between fields, checked only on fields that were individually valid: the
/// `{Count}` and `{TileCount}` placeholders several outputs need, the placeholders each key
/// may hold, and the sprite a `webvtt.sprite` needs.
fn cross_field_rules(
    cx: &mut Ctx,
    map: &Map<String, Value>,
    num: Option<u64>,
    interval_s: Option<u64>,
    output: Option<&OssObject>,
    sprite: Option<&SpriteSpec>,
    webvtt: Option<&WebVttSpec>,
) {
    let shape = JobShape {
        num,
        interval_s,
        has_num: member(map, "num").is_some(),
        has_interval: member(map, "interval_s").is_some(),
    };
    let multi = shape.is_multi();
    if let Some(out) = output {
        if multi && !out.object.contains("{Count}") && shape.valid() {
            let hint = if out.object.contains("%7BCount%7D") {
                " (object keys are sent raw: write {Count}, snapgate encodes it)"
            } else {
                ""
            };
            cx.err(
                "/output/object",
                "missing_placeholder",
                format!("must contain {{Count}} when several snapshots can result (num > 1, or interval_s without num){hint}"),
            );
        }
        check_placeholders(cx, &out.object, "/output/object", &PLACEHOLDERS[..5]);
    }
    if let Some(sp) = sprite {
        let cells = u64::from(sp.lines) * u64::from(sp.columns);
        let several = match (num, shape.has_num, shape.has_interval) {
            (Some(n), true, _) => n > cells,
            (None, false, true) => true,
            _ => false,
        };
        if several && !sp.output.object.contains("{TileCount}") {
            cx.err(
                "/sprite/output/object",
                "missing_placeholder",
                format!("must contain {{TileCount}} when several sprites can result (more snapshots than {cells} cells)"),
            );
        }
        check_placeholders(cx, &sp.output.object, "/sprite/output/object", PLACEHOLDERS);
    }
    if let Some(w) = webvtt {
        if w.sprite && member(map, "sprite").is_none() {
            cx.err(
                "/webvtt/sprite",
                "requires_sprite",
                "WebVTT thumbnails tiled into sprites need a `sprite` section",
            );
        }
    }
}

/// The warnings on a valid request: what MPS would ignore silently, and likely unit mistakes.
/// (`r.is_multi()` is the `JobShape`'s: in a valid request, `num` and `interval_s` are set
/// exactly when their fields are.)
fn warnings(cx: &mut Ctx, r: &JobRequest) {
    let time = r.time_ms;
    if r.black_level.is_some() {
        if time > 0 {
            cx.warn(
                "/black_level",
                "black_level_ignored",
                "MPS ignores black_level when time_ms > 0 (black-frame filtering only applies from the start of the video)",
            );
        } else if !r.is_multi() {
            cx.warn(
                "/black_level",
                "black_level_ignored",
                "MPS ignores black_level for a single snapshot (it applies to the first of several snapshots)",
            );
        }
    }
    if r.interval_s.is_some() && r.num == Some(1) {
        cx.warn(
            "/interval_s",
            "interval_ignored",
            "MPS ignores interval_s when num = 1",
        );
    }
    if time > 0 && time < 100 {
        cx.warn(
            "/time_ms",
            "time_ms_tiny",
            format!(
                "time_ms is in milliseconds: {time} means {time} ms; for {time} seconds send {}",
                time * 1000
            ),
        );
    }
    if r.width.is_some() && r.height.is_some() {
        cx.warn(
            "/height",
            "aspect_ratio_not_kept",
            "with both width and height set MPS does not keep the aspect ratio; set one to keep it",
        );
    }
}

struct JobShape {
    num: Option<u64>,
    interval_s: Option<u64>,
    has_num: bool,
    has_interval: bool,
}

impl JobShape {
    /// Both fields, if present, were valid.
    fn valid(&self) -> bool {
        self.has_num == self.num.is_some() && self.has_interval == self.interval_s.is_some()
    }

    fn is_multi(&self) -> bool {
        match (self.num, self.has_interval) {
            (Some(n), _) => n > 1,
            (None, true) => !self.has_num,
            (None, false) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A made-up pipeline id (the MPS guide's 28-hex example) is refused with the length it has
    /// and where a real one comes from.
    #[test]
    fn a_short_pipeline_id_is_refused_with_its_length_and_where_a_real_one_is() {
        let body = serde_json::json!({
            "input": {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.mp4"},
            "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "a.jpg"},
            "time_ms": 0,
            "pipeline_id": "88c6ca184c0e47098a5b665e2a12",
        });
        let errors = validate_request(&body).unwrap_err();
        let e = errors
            .iter()
            .find(|v| v.field == "/pipeline_id")
            .expect("a pipeline_id violation");
        assert_eq!(e.code, "invalid_format");
        assert!(e.message.contains("32 lower-case hex"), "{}", e.message);
        assert!(e.message.contains("this one has 28"), "{}", e.message);
        assert!(e.message.contains("MPS console"), "{}", e.message);
    }
    use serde_json::json;

    fn example() -> Value {
        json!({
          "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": "uploads/clip 01.mp4"},
          "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "thumbs/clip01/{Count}.jpg"},
          "time_ms": 2000, "interval_s": 2, "num": 3,
          "width": 640, "height": 360,
          "frame_type": "normal",
          "black_level": 50,
          "sprite": {"output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "sprites/{TileCount}.jpg"},
                     "lines": 10, "columns": 10, "cell_width": 160, "cell_height": 90,
                     "margin": 0, "padding": 0, "color": "black", "keep_cells": true},
          "webvtt": {"sprite": true},
          "pipeline_id": "9bad3801a2c561c22c4df9c6abcd0000",
          "user_data": "any team data"
        })
    }

    fn codes(errs: &[Violation]) -> Vec<(String, String)> {
        errs.iter()
            .map(|e| (e.field.clone(), e.code.clone()))
            .collect()
    }

    #[test]
    fn the_issue_example_is_accepted_with_warnings() {
        let (req, warnings) = validate_request(&example()).unwrap();
        assert_eq!(req.num, Some(3));
        assert_eq!(req.frame_type, FrameType::Normal);
        let w: Vec<_> = warnings.iter().map(|w| w.code.as_str()).collect();
        assert!(w.contains(&"black_level_ignored"), "{w:?}");
        assert!(w.contains(&"aspect_ratio_not_kept"), "{w:?}");
    }

    #[test]
    fn minimal_request_gets_defaults() {
        let (req, warnings) = validate_request(&json!({
            "input": {"location": "oss-cn-hangzhou", "bucket": "abc", "object": "a.mp4"},
            "output": {"location": "oss-cn-hangzhou", "bucket": "abc", "object": "a.jpg"}
        }))
        .unwrap();
        assert_eq!(req.time_ms, 0);
        assert_eq!(req.frame_type, FrameType::Intra);
        assert!(!req.is_async());
        assert!(warnings.is_empty());
    }

    #[test]
    fn every_violation_is_listed() {
        let errs = validate_request(&json!({
            "input": {"location": "cn-shanghai", "bucket": "B", "object": "a\nb"},
            "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "x.jpg"},
            "num": 0, "width": 7, "height": 4097, "interval_s": -1, "black_level": 29,
            "frame_type": "key", "pipeline_id": "XYZ", "user_data": "-bad",
            "sprite": {"output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "s.jpg"}, "lines": 0, "columns": 1001},
            "extra": 1
        }))
        .unwrap_err();
        let c = codes(&errs);
        for expected in [
            ("/input/location", "invalid_format"),
            ("/input/bucket", "invalid_format"),
            ("/input/object", "invalid_characters"),
            ("/num", "out_of_range"),
            ("/width", "out_of_range"),
            ("/height", "out_of_range"),
            ("/interval_s", "out_of_range"),
            ("/black_level", "out_of_range"),
            ("/frame_type", "invalid_value"),
            ("/pipeline_id", "invalid_format"),
            ("/user_data", "invalid_characters"),
            ("/sprite/lines", "out_of_range"),
            ("/sprite/columns", "out_of_range"),
            ("/extra", "unknown_field"),
        ] {
            assert!(
                c.contains(&(expected.0.to_string(), expected.1.to_string())),
                "missing {expected:?} in {c:?}"
            );
        }
    }

    #[test]
    fn placeholders_are_required_when_several_outputs_can_result() {
        let mut body = example();
        body["output"]["object"] = json!("thumbs/x.jpg");
        body["num"] = json!(500);
        body["sprite"]["output"]["object"] = json!("sprite.jpg");
        let c = codes(&validate_request(&body).unwrap_err());
        assert!(c.contains(&("/output/object".into(), "missing_placeholder".into())));
        assert!(c.contains(&("/sprite/output/object".into(), "missing_placeholder".into())));
        // interval without num: unbounded, so both are needed too.
        let mut body = example();
        body.as_object_mut().unwrap().remove("num");
        body["sprite"]["output"]["object"] = json!("sprite.jpg");
        let c = codes(&validate_request(&body).unwrap_err());
        assert_eq!(
            c,
            vec![("/sprite/output/object".into(), "missing_placeholder".into())]
        );
        // a single snapshot needs neither.
        let mut body = example();
        body["num"] = json!(1);
        body["output"]["object"] = json!("x.jpg");
        body["sprite"]["output"]["object"] = json!("s.jpg");
        let (_, w) = validate_request(&body).unwrap();
        assert!(w.iter().any(|w| w.code == "interval_ignored"));
    }

    #[test]
    fn wrong_types_and_huge_numbers_are_violations_not_panics() {
        for bad in [
            json!({"input": 1, "output": "x"}),
            json!([1, 2]),
            json!(null),
            json!({"input": {"location": 1, "bucket": [], "object": {}}, "output": null, "num": 1e300, "time_ms": 18446744073709551616u128 as f64, "width": "640", "webvtt": {"sprite": "yes"}}),
            json!({"input": {"location": "oss-a", "bucket": "abc", "object": "a"}, "output": {"location": "oss-a", "bucket": "abc", "object": "a"}, "num": 2.5, "height": -3}),
        ] {
            let errs = validate_request(&bad).unwrap_err();
            assert!(!errs.is_empty());
        }
    }

    #[test]
    fn user_data_limits() {
        let mut body = example();
        body["user_data"] = json!("a".repeat(USER_DATA_MAX));
        assert!(validate_request(&body).is_ok());
        body["user_data"] = json!("a".repeat(USER_DATA_MAX + 1));
        let c = codes(&validate_request(&body).unwrap_err());
        assert_eq!(c, vec![("/user_data".into(), "too_long".into())]);
        body["user_data"] = json!("中文 team-1_x.y");
        assert!(validate_request(&body).is_ok());
    }

    #[test]
    fn object_keys_are_limited_in_bytes() {
        let mut body = example();
        body["input"]["object"] = json!("中".repeat(341)); // 1023 bytes
        assert!(validate_request(&body).is_ok());
        body["input"]["object"] = json!(format!("{}a", "中".repeat(341)));
        assert!(validate_request(&body).is_err());
        body["input"]["object"] = json!("");
        assert!(validate_request(&body).is_err());
    }

    #[test]
    fn tiny_time_is_flagged_as_a_likely_unit_mistake() {
        let mut body = example();
        body["time_ms"] = json!(2);
        let (_, w) = validate_request(&body).unwrap();
        assert!(w.iter().any(|w| w.code == "time_ms_tiny"));
    }
}
