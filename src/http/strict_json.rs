//! The JSON value every request body is read as: `serde_json::Value`, except that an object
//! with the same key twice, or a key holding U+0000, is refused (RFC 8259 §4 leaves duplicate
//! names to the parser; silently keeping the last one hides a client's bug, and Postgres's JSONB
//! cannot store a NUL). Read through [`StrictJson`], which keeps axum's content-type, size and
//! syntax rejections and adds two rules of its own:
//! - a number too large for a double (`1e400`) is read as the largest finite one (`±1e308`), so
//!   the validator answers it as it answers `1e29`: `out_of_range` at the field, not a syntax error;
//! - a lone UTF-16 surrogate escape (`"\ud800"`) gets a message that says what is wrong.

use std::fmt;

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::Json;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::http::error::ApiError;

/// A request body read as a [`StrictValue`] (see the module docs). Take it as
/// `Result<StrictJson, ApiError>` to decide when its error counts.
#[derive(Debug, Clone, PartialEq)]
pub struct StrictJson(pub Value);

impl<S: Send + Sync> FromRequest<S> for StrictJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|e| ApiError::from(JsonRejection::from(e)))?;
        // axum's own content-type rule and parse.
        let req = Request::from_parts(parts, Body::from(bytes.clone()));
        match Json::<StrictValue>::from_request(req, state).await {
            Ok(Json(StrictValue(v))) => Ok(StrictJson(v)),
            Err(JsonRejection::JsonSyntaxError(e)) => {
                let cause = std::error::Error::source(&e).map(ToString::to_string);
                parse_lenient(&bytes, cause).map(StrictJson)
            }
            Err(other) => Err(other.into()),
        }
    }
}

/// The largest finite double, which a number beyond it is read as.
const HUGE: &str = "1e308";

/// Re-reads a body that failed to parse with `cause`: numbers beyond a double become `±1e308`
/// (at most 64 of them); a lone surrogate gets a clear message; anything else keeps the
/// parser's own words (line and column).
fn parse_lenient(bytes: &[u8], cause: Option<String>) -> Result<Value, ApiError> {
    let mut body = bytes.to_vec();
    let mut cause = cause.unwrap_or_else(|| "the request body is not valid JSON".into());
    for _ in 0..64 {
        // The parser's own error, never the cause's text: that quotes the path, keys included.
        match serde_json::from_slice::<StrictValue>(&body) {
            Err(e) if e.is_syntax() && e.to_string().starts_with("number out of range") => {
                cause = e.to_string();
            }
            _ => break,
        }
        let Some(end) = error_offset(&body, &cause) else {
            break;
        };
        let start = body[..end]
            .iter()
            .rposition(|b| !matches!(b, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'))
            .map_or(0, |i| i + 1);
        let replacement = if body.get(start) == Some(&b'-') {
            format!("-{HUGE}")
        } else {
            HUGE.to_string()
        };
        body.splice(start..end, replacement.into_bytes());
        match serde_json::from_slice::<StrictValue>(&body) {
            Ok(StrictValue(v)) => return Ok(v),
            Err(e) => cause = e.to_string(),
        }
    }
    if lone_surrogate(&body, &cause) {
        let at = cause.find(" at line ").map_or("", |i| &cause[i..]);
        cause = format!(
            "invalid \\u escape{at}: a lone UTF-16 surrogate (\\uD800 to \\uDFFF without its pair) \
             is not a character; send the character itself, or both halves of its surrogate pair"
        );
    }
    Err(ApiError::MalformedJson(cause))
}

/// Whether a string-escape error is about a surrogate: one of `\\uD800` to `\\uDFFF` just before
/// the error's position.
fn lone_surrogate(body: &[u8], cause: &str) -> bool {
    if !(cause.contains("hex escape") || cause.contains("unicode code point")) {
        return false;
    }
    let Some((line_start, column)) = error_position(body, cause) else {
        return false;
    };
    let end = (line_start + column).min(body.len());
    let window = &body[end.saturating_sub(14)..end];
    window.windows(4).any(|w| {
        w[0] == b'\\'
            && w[1] == b'u'
            && matches!(w[2], b'd' | b'D')
            && matches!(w[3], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
    })
}

/// The error's position (`... at line L column C`, 1-based; serde_json's column counts bytes and
/// points at the last one it read): the byte offset of its line and its column.
fn error_position(body: &[u8], cause: &str) -> Option<(usize, usize)> {
    let rest = &cause[cause.rfind(" at line ")? + " at line ".len()..];
    let (line, column) = rest.split_once(" column ")?;
    let (line, column): (usize, usize) = (line.parse().ok()?, column.parse().ok()?);
    let line_start = if line == 1 {
        0
    } else {
        body.iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(line - 2)?
            .0
            + 1
    };
    Some((line_start, column))
}

/// The byte just past the number an out-of-range error points at.
fn error_offset(body: &[u8], cause: &str) -> Option<usize> {
    let (line_start, column) = error_position(body, cause)?;
    let end = line_start + column;
    // serde_json stops at the first byte after the number; step back over it if it was read.
    (line_start..=end.min(body.len()))
        .rev()
        .find(|&i| i > 0 && body[i - 1].is_ascii_digit())
}

/// A request body's JSON, checked as described in the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct StrictValue(pub Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        StrictValue::deserialize(d).map(|v| v.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key.contains('\0') {
                return Err(de::Error::custom(format!(
                    "object key {key:?} contains U+0000, which is not allowed"
                )));
            }
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "duplicate object key {key:?} (each key may appear once)"
                )));
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Value, String> {
        serde_json::from_str::<StrictValue>(s)
            .map(|v| v.0)
            .map_err(|e| e.to_string())
    }

    fn lenient(s: &str) -> Result<Value, String> {
        match serde_json::from_str::<StrictValue>(s) {
            Ok(v) => Ok(v.0),
            Err(e) => parse_lenient(s.as_bytes(), Some(e.to_string())).map_err(|e| match e {
                ApiError::MalformedJson(m) => m,
                other => panic!("{other:?}"),
            }),
        }
    }

    #[test]
    fn numbers_beyond_a_double_read_as_the_largest_one() {
        let v = lenient(r#"{"a":1e400,"b":[-12e999, 2.5E+1000],"c":{"d":1e400}}"#).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": 1e308, "b": [-1e308, 1e308], "c": {"d": 1e308}})
        );
        let v = lenient("{\n  \"a\": 1,\n  \"b\": 1e400\n}").unwrap();
        assert_eq!(v, serde_json::json!({"a": 1, "b": 1e308}));
        assert_eq!(lenient("1e400").unwrap(), serde_json::json!(1e308));
        // Other syntax errors keep the parser's words.
        let e = lenient(r#"{"a":1e400,"b":}"#).unwrap_err();
        assert!(e.starts_with("expected value at line 1 column"), "{e}");
    }

    /// Found by fuzzing (`strict_json`): a key that reads "number out of range" made any syntax
    /// error look like one (the cause quotes the path), and the number before it was replaced:
    /// `{"…number out of range…":00}` was accepted as `1e308`.
    #[test]
    fn only_the_parser_s_own_error_makes_a_number_out_of_range() {
        let body = r#"{"a number out of range b":00}"#;
        let cause = format!("a number out of range b: {}", parse(body).unwrap_err());
        let e = parse_lenient(body.as_bytes(), Some(cause)).unwrap_err();
        assert!(matches!(e, ApiError::MalformedJson(_)), "{e:?}");
    }

    #[test]
    fn a_lone_surrogate_says_what_is_wrong() {
        for s in [
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"\ud800x"}"#,
            r#"{"a":"\uD83D\u0041"}"#,
        ] {
            let e = lenient(s).unwrap_err();
            assert!(
                e.starts_with("invalid \\u escape at line 1 column")
                    && e.contains("lone UTF-16 surrogate"),
                "{s}: {e}"
            );
        }
        // Another bad escape keeps the parser's words.
        let e = lenient(r#"{"a":"\u12"}"#).unwrap_err();
        assert!(!e.contains("surrogate"), "{e}");
    }

    #[test]
    fn reads_what_serde_json_reads() {
        for s in [
            r#"{"a":[1,-2,3.5,true,null,"x"],"b":{"c":{}},"d":18446744073709551615}"#,
            "[]",
            r#""\ud83d\ude00""#,
        ] {
            assert_eq!(
                parse(s).unwrap(),
                serde_json::from_str::<Value>(s).unwrap(),
                "{s}"
            );
        }
    }

    #[test]
    fn refuses_duplicate_and_nul_keys_at_any_depth() {
        let e = parse(r#"{"a":1,"b":{"c":1,"c":2}}"#).unwrap_err();
        assert!(e.contains("duplicate object key \"c\""), "{e}");
        let e = parse(r#"{"a\u0000b":1}"#).unwrap_err();
        assert!(e.contains("U+0000"), "{e}");
        // A NUL in a value is the validator's business (fields say what they accept).
        assert!(parse(r#"{"a":"x\u0000"}"#).is_ok());
    }
}
