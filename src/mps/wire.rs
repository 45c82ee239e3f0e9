//! MPS wire types (docs/mps/API.md §1.6, §2.2, §4.2). Parsed tolerantly: MPS sends numbers as strings,
//! and unknown fields are ignored.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// MPS's time on the wire: UTC `yyyy-MM-ddTHH:mm:ssZ`, whole seconds (`Timestamp`,
/// `CreationTime`, the `...CreatedTimeRange` bounds). The one formatter and parser of it.
pub const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";

/// `t` in [`TIME_FORMAT`] (its fraction of a second dropped).
pub fn format_time(t: DateTime<Utc>) -> String {
    t.format(TIME_FORMAT).to_string()
}

/// A [`TIME_FORMAT`] value; `None` for anything else.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    chrono::NaiveDateTime::parse_from_str(s, TIME_FORMAT)
        .ok()
        .map(|t| t.and_utc())
}

/// What `SubmitSnapshotJob` needs beyond the common parameters. `input` and `snapshot_config`
/// are the JSON strings MPS expects, object keys already URL-encoded inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitParams {
    pub input: String,
    pub snapshot_config: String,
    pub pipeline_id: Option<String>,
    pub user_data: Option<String>,
}

/// A number MPS may send as `"3"` or `3` (or `""`).
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnapshotJob {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub state: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub code: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub message: Option<String>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub count: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub tile_count: Option<u64>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub creation_time: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub pipeline_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub user_data: Option<String>,
    #[serde(default)]
    pub input: Option<Value>,
    #[serde(default)]
    pub snapshot_config: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SubmitSnapshotJobResponse {
    #[serde(default)]
    pub request_id: String,
    pub snapshot_job: SnapshotJob,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuerySnapshotJobListResponse {
    pub request_id: String,
    pub next_page_token: Option<String>,
    pub jobs: Vec<SnapshotJob>,
    pub non_exist_ids: Vec<String>,
}

impl<'de> Deserialize<'de> for QuerySnapshotJobListResponse {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct JobList {
            #[serde(default)]
            snapshot_job: Vec<SnapshotJob>,
        }
        #[derive(Deserialize)]
        struct Ids {
            #[serde(rename = "String", default)]
            string: Vec<String>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Raw {
            #[serde(default)]
            request_id: String,
            #[serde(default, deserialize_with = "lenient_string")]
            next_page_token: Option<String>,
            snapshot_job_list: Option<JobList>,
            non_exist_snapshot_job_ids: Option<Ids>,
        }
        let raw = Raw::deserialize(d)?;
        Ok(Self {
            request_id: raw.request_id,
            next_page_token: raw.next_page_token.filter(|t| !t.is_empty()),
            jobs: raw
                .snapshot_job_list
                .map(|l| l.snapshot_job)
                .unwrap_or_default(),
            non_exist_ids: raw
                .non_exist_snapshot_job_ids
                .map(|i| i.string)
                .unwrap_or_default(),
        })
    }
}

/// A paged `QuerySnapshotJobList` without ids (reconciliation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    pub pipeline_id: Option<String>,
    pub state: Option<String>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
    pub next_page_token: Option<String>,
    pub maximum_page_size: Option<u32>,
}

/// MPS's error body (docs/mps/API.md §4.2).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MpsErrorBody {
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub host_id: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub recommend: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_strings_and_unknown_fields() {
        let v = serde_json::json!({
            "RequestId": "R", "NextPageToken": "",
            "SnapshotJobList": {"SnapshotJob": [{"Id": "a", "State": "Success", "Count": "3", "TileCount": 1, "Extra": {"x": 1}}]},
            "NonExistSnapshotJobIds": {"String": ["b"]}
        });
        let r: QuerySnapshotJobListResponse = serde_json::from_value(v).unwrap();
        assert_eq!(r.jobs[0].count, Some(3));
        assert_eq!(r.jobs[0].tile_count, Some(1));
        assert_eq!(r.non_exist_ids, vec!["b"]);
        assert_eq!(r.next_page_token, None);
        let empty: QuerySnapshotJobListResponse =
            serde_json::from_value(serde_json::json!({"RequestId": "R"})).unwrap();
        assert!(empty.jobs.is_empty());
    }
}
