//! MPS's region rule: MPS processes only OSS buckets of its own region (docs/mps/API.md §4.1,
//! "The OSS bucket must reside in the same region as your MPS service"). A job's MPS region is
//! its input bucket's (`input.location` `oss-cn-beijing` → `cn-beijing`); its output and sprite
//! buckets must be in that region, and snapgate must serve that region (have its MPS endpoint).

use super::{JobRequest, Violation};

/// The rule's violations for a valid request: an input in a region snapgate does not serve
/// (`region_not_served`, naming the served ones), an output or sprite bucket in another region
/// than the input's (`region_mismatch`).
pub fn violations(request: &JobRequest, served: &[String]) -> Vec<Violation> {
    let mut errors = Vec::new();
    let location = &request.input.location;
    let region = request.region();
    if !served.iter().any(|s| s == region) {
        errors.push(not_served("/input/location", region, served));
    }
    let outputs = std::iter::once(("/output/location", &request.output.location)).chain(
        request
            .sprite
            .as_ref()
            .map(|s| ("/sprite/output/location", &s.output.location)),
    );
    for (field, other) in outputs {
        if other != location {
            errors.push(Violation {
                field: field.into(),
                code: "region_mismatch".into(),
                message: format!(
                    "must be in the input's region ({location}), not {other}: MPS processes only OSS buckets of its own region"
                ),
            });
        }
    }
    errors
}

/// `field` names a region snapgate has no MPS endpoint for.
pub fn not_served(field: &str, region: &str, served: &[String]) -> Violation {
    Violation {
        field: field.into(),
        code: "region_not_served".into(),
        message: format!(
            "snapgate is not configured for MPS region {region}; it serves {}",
            served.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(input: &str, output: &str, sprite: Option<&str>) -> JobRequest {
        let o = |l: &str, k: &str| json!({"location": l, "bucket": "media", "object": k});
        let mut body =
            json!({"input": o(input, "a.mp4"), "output": o(output, "{Count}.jpg"), "num": 2});
        if let Some(s) = sprite {
            body["sprite"] = json!({"output": o(s, "s.jpg")});
        }
        crate::domain::validate_request(&body).expect("valid").0
    }

    #[test]
    fn same_region_served_passes_and_each_rule_names_its_field() {
        let served = vec!["cn-shanghai".to_string(), "cn-beijing".to_string()];
        let ok = request("oss-cn-beijing", "oss-cn-beijing", Some("oss-cn-beijing"));
        assert!(violations(&ok, &served).is_empty());
        let bad = request("oss-cn-beijing", "oss-cn-shanghai", Some("oss-cn-hangzhou"));
        let v = violations(&bad, &served);
        let fields: Vec<_> = v
            .iter()
            .map(|v| (v.field.as_str(), v.code.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("/output/location", "region_mismatch"),
                ("/sprite/output/location", "region_mismatch")
            ]
        );
        let unknown = request("oss-cn-hangzhou", "oss-cn-hangzhou", None);
        let v = violations(&unknown, &served);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].code, "region_not_served");
        assert!(
            v[0].message.contains("cn-shanghai, cn-beijing"),
            "{}",
            v[0].message
        );
    }
}
