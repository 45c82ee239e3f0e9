//! The JSON value every request body is read as: `serde_json::Value`, except that an object
//! with the same key twice, or a key holding U+0000, is refused (RFC 8259 §4 leaves duplicate
//! names to the parser; silently keeping the last one hides a client's bug, and Postgres's JSONB
//! cannot store a NUL). Used through `Json<StrictValue>`, so axum's content-type, size and syntax
//! rejections stay as they are.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

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
