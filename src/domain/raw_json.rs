//! [`RawJson`]: a JSON document kept as the database returned it — read without being parsed,
//! written into answers as it is (serde_json's `RawValue`), and parsed only where one field of it
//! is needed ([`RawJson::field`]). A list of 50 jobs used to parse each job's stored MPS response
//! into a `serde_json::Value` tree and encode it again; now its bytes are copied.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// A stored JSON document. Equality compares the documents, not their spelling (Postgres
/// renders JSONB with its own spacing and key order).
#[derive(Clone)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// The document's text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The document as serde_json's `RawValue` (what a JSON column binds).
    pub fn into_raw(self) -> Box<RawValue> {
        self.0
    }

    /// The document parsed.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }

    /// Field `name` of the top-level object, as a `T`: `None` when the document is not an
    /// object, has no such field, or the field is not a `T`. Only that field is decoded; the
    /// others are skipped without building anything.
    pub fn field<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        let mut de = serde_json::Deserializer::from_str(self.0.get());
        de.deserialize_map(FieldOf::<T>(name, PhantomData))
            .ok()
            .flatten()
    }
}

impl From<Box<RawValue>> for RawJson {
    fn from(raw: Box<RawValue>) -> Self {
        RawJson(raw)
    }
}

impl From<&Value> for RawJson {
    fn from(v: &Value) -> Self {
        RawJson(serde_json::value::to_raw_value(v).expect("a JSON value always encodes"))
    }
}

impl From<Value> for RawJson {
    fn from(v: Value) -> Self {
        RawJson::from(&v)
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get() || self.to_value() == other.to_value()
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// From any deserializer (a `Value` included, which `RawValue` itself refuses).
impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(RawJson::from)
    }
}

/// Whether a map key is `name`, without keeping the key.
struct KeyIs<'n>(&'n str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

/// The value of one field of an object, the others skipped.
struct FieldOf<'n, T>(&'n str, PhantomData<T>);

impl<'de, T: DeserializeOwned> Visitor<'de> for FieldOf<'_, T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let mut found = None;
        while let Some(is) = map.next_key_seed(KeyIs(self.0))? {
            if is && found.is_none() {
                found = Some(map.next_value::<T>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn passes_the_text_through_and_reads_one_field() {
        let text = r#"{"Id": "j1", "Emulator": {"outputs": [1, 2]}, "Count": "3"}"#;
        let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
        let r = RawJson::from(raw);
        assert_eq!(serde_json::to_string(&r).unwrap(), text);
        assert_eq!(r.field::<String>("Id").as_deref(), Some("j1"));
        assert_eq!(
            r.field::<Value>("Emulator"),
            Some(json!({"outputs": [1, 2]}))
        );
        assert_eq!(r.field::<String>("Missing"), None);
        // A field of another type, or a document that is not an object: nothing.
        assert_eq!(r.field::<u64>("Id"), None);
        assert_eq!(RawJson::from(json!([1])).field::<Value>("Id"), None);
        // Escaped keys compare by their value.
        let esc: Box<RawValue> = serde_json::from_str(r#"{"P\u0069pelineId": "p"}"#).unwrap();
        assert_eq!(
            RawJson::from(esc).field::<String>("PipelineId").as_deref(),
            Some("p")
        );
    }

    #[test]
    fn equal_documents_spelled_differently_are_equal() {
        let a: Box<RawValue> = serde_json::from_str(r#"{"b": 1, "a": [true]}"#).unwrap();
        assert_eq!(
            RawJson::from(a),
            RawJson::from(json!({"a": [true], "b": 1}))
        );
        assert_ne!(
            RawJson::from(json!({"a": 1})),
            RawJson::from(json!({"a": 2}))
        );
        // Through a Value (webhook event data is decoded that way) and back.
        let v = serde_json::to_value(RawJson::from(json!({"a": 1}))).unwrap();
        let back: RawJson = serde_json::from_value(v).unwrap();
        assert_eq!(back.get(), r#"{"a":1}"#);
    }
}
