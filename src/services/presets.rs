//! Presets: a team's named, versioned job requests without `input` (browser uploads).
//! [`PresetService`] creates them (every rule of a new version, then the store); the rules
//! themselves are plain functions: names and `name@version` references, checking a preset with the job validator
//! (`domain::validate_request`, on the preset plus a stand-in input, so its messages are the
//! validator's own), merging a job body's overrides onto a preset (JSON Merge Patch, RFC 7386)
//! and filling in `{UploadId}`. The store keeps the versions (`store::PresetStore`); the one
//! submit path (`services/jobs.rs`) resolves `"preset"` in a job body with these functions.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::domain::{self, Violation};
use crate::store::{DynStore, PresetRecord, StoreError};

/// Why a preset was not created.
#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    #[error("the preset is not valid")]
    Invalid(Vec<Violation>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates preset versions: a preset is immutable, so a new body makes the next version and the
/// same body again answers the version it already is.
pub struct PresetService {
    store: DynStore,
    /// The MPS regions served: a preset's outputs must be in one of them.
    served: Vec<String>,
}

impl PresetService {
    pub fn new(store: DynStore, served: Vec<String>) -> Self {
        Self { store, served }
    }

    /// Checks a `{name, request}` body (every violation listed, the request's with the job
    /// validator's own messages under `/request`) and records it for `team`. Returns the version
    /// and whether it is new.
    pub async fn create(
        &self,
        team: &str,
        body: &Value,
    ) -> Result<(PresetRecord, bool), PresetError> {
        let (name, request) = check_create(body, &self.served).map_err(PresetError::Invalid)?;
        let now = self.store.clock().await?;
        let (preset, created) = self
            .store
            .create_preset(team, name, request, &fingerprint(request), now)
            .await?;
        if created {
            tracing::info!(team, preset = %preset.reference(), "preset created");
        }
        Ok((preset, created))
    }
}

/// The name and request of a `{name, request}` body, or every violation.
fn check_create<'a>(
    body: &'a Value,
    served: &[String],
) -> Result<(&'a str, &'a Value), Vec<Violation>> {
    let mut errors = Vec::new();
    let name = match body.get("name").and_then(|v| v.as_str()) {
        Some(n) => {
            if let Some(p) = name_problem(n) {
                errors.push(violation("/name", "invalid_format", p));
            }
            n
        }
        None => {
            errors.push(violation(
                "/name",
                "required",
                "a preset needs a name (string)",
            ));
            ""
        }
    };
    if let Some(m) = body.as_object() {
        for k in m
            .keys()
            .filter(|k| !matches!(k.as_str(), "name" | "request"))
        {
            errors.push(violation(
                &format!("/{k}"),
                "unknown_field",
                "expected name, request",
            ));
        }
    }
    let request = body.get("request");
    match request {
        Some(r) => {
            if let Err(v) = validate_preset(r, served) {
                errors.extend(v.into_iter().map(|mut v| {
                    v.field = format!("/request{}", v.field);
                    v
                }));
            }
        }
        None => errors.push(violation(
            "/request",
            "required",
            "a preset needs a request: a job request without input",
        )),
    }
    match request {
        Some(request) if errors.is_empty() => Ok((name, request)),
        _ => Err(errors),
    }
}

fn violation(field: &str, code: &str, message: &str) -> Violation {
    Violation {
        field: field.into(),
        code: code.into(),
        message: message.into(),
    }
}

/// The job body member that names a preset.
pub const PRESET_FIELD: &str = "preset";
/// snapgate's own placeholder in a preset's output keys: the upload's id.
pub const UPLOAD_ID_PLACEHOLDER: &str = "{UploadId}";
/// The longest preset name.
pub const NAME_MAX: usize = 64;

/// A preset named in a job body: `name` (the latest version) or `name@version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresetRef {
    pub name: String,
    pub version: Option<u32>,
}

/// A preset name: 1 to 64 of lower-case letters, digits, `-`, `_`, `.`, starting with a letter
/// or digit.
pub fn name_problem(name: &str) -> Option<&'static str> {
    let ok_first = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok_rest = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    if name.is_empty() || name.len() > NAME_MAX || !ok_first || !ok_rest {
        return Some("must be 1 to 64 lower-case letters, digits, '-', '_' or '.', starting with a letter or digit");
    }
    None
}

impl PresetRef {
    pub fn parse(s: &str) -> Result<Self, Violation> {
        let bad = |message: &str| Violation {
            field: format!("/{PRESET_FIELD}"),
            code: "invalid_format".into(),
            message: message.into(),
        };
        let (name, version) = match s.split_once('@') {
            None => (s, None),
            Some((n, v)) => match v.parse::<u32>() {
                Ok(num) if num > 0 && num.to_string() == v => (n, Some(num)),
                _ => {
                    return Err(bad(
                        "must be a preset name, or name@version with a version from 1",
                    ))
                }
            },
        };
        if let Some(p) = name_problem(name) {
            return Err(bad(p));
        }
        Ok(PresetRef {
            name: name.to_string(),
            version,
        })
    }
}

/// What makes two preset bodies the same version: the canonical JSON (members sorted).
pub fn fingerprint(body: &Value) -> String {
    hex::encode(Sha256::digest(
        serde_json::to_vec(body).expect("serializable"),
    ))
}

/// The MPS region a preset's jobs go to: its output's (`oss-cn-beijing` → `cn-beijing`), where
/// their input must be too. `None` for a body without an output location.
pub fn output_region(body: &Value) -> Option<&str> {
    let location = body.get("output")?.get("location")?.as_str()?;
    Some(location.strip_prefix("oss-").unwrap_or(location))
}

/// A stand-in input, only to run the job validator over a preset: in the region of the
/// preset's output (the input a job of the preset gives must be there too).
fn sample_input(body: &Map<String, Value>) -> Value {
    let location = body
        .get("output")
        .and_then(|o| o.get("location"))
        .and_then(Value::as_str)
        .filter(|l| crate::domain::rules::is_location(l))
        .unwrap_or("oss-cn-shanghai");
    serde_json::json!({"location": location, "bucket": "preset-check", "object": "uploads/preset-check.mp4"})
}

/// Checks a preset body with the job validator: a JSON object, no `input` (the upload, or the
/// job body, gives it), no `preset`, and otherwise a valid job request (`{UploadId}` counts as
/// an id), whose outputs are in one region of `served` (MPS's region rule). Every violation is
/// listed, in the validator's words.
pub fn validate_preset(body: &Value, served: &[String]) -> Result<(), Vec<Violation>> {
    let Some(map) = body.as_object() else {
        return Err(vec![Violation {
            field: String::new(),
            code: "invalid_type".into(),
            message: "a preset must be a JSON object: a job request without `input`".into(),
        }]);
    };
    let mut errors = Vec::new();
    for (field, why) in [
        (
            "input",
            "a preset has no input: the upload (or the job naming the preset) gives it",
        ),
        (PRESET_FIELD, "a preset cannot name another preset"),
    ] {
        if map.contains_key(field) {
            errors.push(Violation {
                field: format!("/{field}"),
                code: "not_allowed".into(),
                message: why.into(),
            });
        }
    }
    let mut sample = map.clone();
    sample.remove(PRESET_FIELD);
    sample.insert("input".into(), sample_input(map));
    let mut sample = Value::Object(sample);
    fill_upload_id(&mut sample, "00000000-0000-0000-0000-000000000000");
    match domain::validate_request(&sample) {
        Err(v) => errors.extend(v.into_iter().filter(|v| !v.field.starts_with("/input"))),
        // The stand-in input is in the output's region: a region not served is the output's.
        Ok((request, _)) => errors.extend(
            domain::regions::violations(&request, served)
                .into_iter()
                .map(|mut v| {
                    if v.field == "/input/location" {
                        v.field = "/output/location".into();
                    }
                    v
                }),
        ),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// JSON Merge Patch (RFC 7386): `patch`'s members replace `target`'s, objects merge member by
/// member, `null` removes.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The output keys a preset may write `{UploadId}` in.
const KEY_POINTERS: &[&str] = &["/output/object", "/sprite/output/object"];

/// Whether any output key of `body` names `{UploadId}`.
pub fn uses_upload_id(body: &Value) -> bool {
    KEY_POINTERS.iter().any(|p| {
        body.pointer(p)
            .and_then(Value::as_str)
            .is_some_and(|k| k.contains(UPLOAD_ID_PLACEHOLDER))
    })
}

/// Replaces `{UploadId}` in the output keys of `body` with `upload_id`.
pub fn fill_upload_id(body: &mut Value, upload_id: &str) {
    for p in KEY_POINTERS {
        if let Some(v) = body.pointer_mut(p) {
            if let Some(k) = v.as_str() {
                if k.contains(UPLOAD_ID_PLACEHOLDER) {
                    *v = Value::String(k.replace(UPLOAD_ID_PLACEHOLDER, upload_id));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_parse_and_bad_ones_are_refused() {
        assert_eq!(
            PresetRef::parse("storyboard@2").unwrap(),
            PresetRef {
                name: "storyboard".into(),
                version: Some(2)
            }
        );
        assert_eq!(PresetRef::parse("thumbs").unwrap().version, None);
        for bad in ["", "a@0", "a@x", "A", "-a", "a@", "a b", "a@-1"] {
            assert!(PresetRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn merge_patch_is_rfc_7386() {
        let mut t = json!({"a": 1, "s": {"x": 1, "y": 2}, "k": "v"});
        merge_patch(
            &mut t,
            &json!({"a": 2, "s": {"y": null, "z": 3}, "k": null}),
        );
        assert_eq!(t, json!({"a": 2, "s": {"x": 1, "z": 3}}));
    }

    #[test]
    fn a_preset_is_checked_by_the_job_validator() {
        let ok = json!({"output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "t/{UploadId}/{Count}.jpg"}, "num": 3});
        let served = ["cn-shanghai".to_string()];
        assert!(validate_preset(&ok, &served).is_ok());
        let bad = json!({"input": {}, "output": {"location": "cn-shanghai", "bucket": "media", "object": "t/x.jpg"}, "num": 3, "width": 5000});
        let errors = validate_preset(&bad, &served).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["/input", "/output/location", "/width", "/output/object"]
        );
    }
}
