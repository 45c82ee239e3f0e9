//! The message MPS publishes to MNS when a job ends (docs/mps/API.md §5.2): a JSON object with
//! every key in two casings (`jobId`/`JobId`, `state`/`State`, `type`/`Type`, `userData`/
//! `UserData`), `State` `Success` or `Fail`, `Type` `Snapshot` for snapshot jobs, snapshot
//! fields (`Count`, as a number or a string; `UrlPattern`, `LastUrl`, `TimeArray` in some modes)
//! and `code`/`msg` on failure. Parsed leniently where the sources disagree: keys in any case,
//! the body as JSON or base64 of JSON (whether MPS base64-encodes is unconfirmed), and inside an
//! MNS topic wrapper (`NotifyContentFormat` JSON or XML) when a topic forwards to the queue.

use base64::Engine;
use serde_json::{Map, Value};

use super::mns::xml_element;

/// One job's end, as MPS announced it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobNotification {
    /// MPS's job id.
    pub job_id: String,
    /// `Snapshot`, `Transcode`, `Analysis`, `MediaInfo`.
    pub kind: String,
    /// `Success` or `Fail` (MPS's words).
    pub state: String,
    pub user_data: Option<String>,
    pub request_id: Option<String>,
    pub count: Option<u64>,
    pub tile_count: Option<u64>,
    pub code: Option<String>,
    pub message: Option<String>,
    /// The MPS message as it came (unwrapped, decoded).
    pub raw: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("the message is not an MPS job message (neither JSON nor base64 of JSON)")]
    NotJson,
    #[error("the message has no job id")]
    NoJobId,
    #[error("the message has no state")]
    NoState,
}

impl JobNotification {
    pub fn is_snapshot(&self) -> bool {
        self.kind.eq_ignore_ascii_case("snapshot")
    }
}

/// Parses a queue message body.
pub fn parse(body: &str) -> Result<JobNotification, NotificationError> {
    let obj = decode(body.trim(), 3).ok_or(NotificationError::NotJson)?;
    let text = |names: &[&str]| {
        get_ci(&obj, names)
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|s| !s.is_empty())
    };
    let number = |names: &[&str]| {
        get_ci(&obj, names).and_then(|v| match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
    };
    Ok(JobNotification {
        job_id: text(&["jobid"]).ok_or(NotificationError::NoJobId)?,
        state: text(&["state"]).ok_or(NotificationError::NoState)?,
        kind: text(&["type"]).unwrap_or_default(),
        user_data: text(&["userdata"]),
        request_id: text(&["requestid"]),
        count: number(&["count"]),
        tile_count: number(&["tilecount"]),
        code: text(&["code", "errorcode"]),
        message: text(&["msg", "message", "errormessage"]),
        raw: Value::Object(obj),
    })
}

/// The MPS JSON object inside `body`: as is, base64-decoded, or unwrapped from an MNS topic
/// notification (JSON with a string `Message`, or XML `<Notification>…<Message>`); at most
/// `depth` layers deep.
fn decode(body: &str, depth: u8) -> Option<Map<String, Value>> {
    if depth == 0 || body.is_empty() {
        return None;
    }
    let depth = depth - 1;
    if body.starts_with('<') {
        return decode(xml_element(body, "Message")?.trim(), depth);
    }
    let obj = match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return None,
        Err(_) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .ok()?;
            return decode(std::str::from_utf8(&bytes).ok()?.trim(), depth);
        }
    };
    // An MNS topic wrapper: the MPS message is the string `Message`.
    if obj.contains_key("TopicOwner") || obj.contains_key("SubscriptionName") {
        if let Some(Value::String(inner)) = obj.get("Message") {
            return decode(inner.trim(), depth);
        }
    }
    Some(obj)
}

/// The first of `names` (lower-case) present in `obj`, keys compared case-insensitively.
fn get_ci<'a>(obj: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    names.iter().find_map(|n| {
        obj.iter()
            .find(|(k, v)| k.eq_ignore_ascii_case(n) && !v.is_null())
            .map(|(_, v)| v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The success example of MPS's notification page, verbatim keys.
    const DOC_SUCCESS: &str = r#"{"jobId":"8f91f1b630f3469eb5ecf445028f****","JobId":"8f91f1b630f3469eb5ecf445028f****","Type":"Snapshot","userData":"{}","UserData":"{}","State":"Success","state":"Success","type":"Snapshot","LastUrl":"http://example.oss-cn-shanghai.aliyuncs.com/example_output/2021-11-14/V4/Async-V2-00005.jpg","TimeArray":[10050,50000,110000,1000500,1100500],"UrlPattern":"http://eaxmple.oss-cn-shanghai.aliyuncs.com/example_output/2021-11-14/V4/Async-V2-{Count}.jpg","Count":5}"#;

    #[test]
    fn the_documented_success_message() {
        let n = parse(DOC_SUCCESS).unwrap();
        assert_eq!(n.job_id, "8f91f1b630f3469eb5ecf445028f****");
        assert_eq!(n.state, "Success");
        assert!(n.is_snapshot());
        assert_eq!(n.count, Some(5));
        assert_eq!(n.user_data.as_deref(), Some("{}"));
        assert_eq!(n.code, None);
    }

    #[test]
    fn failure_string_counts_base64_and_wrappers() {
        let fail = r#"{"msg":"TimeArray greater than video duration.","code":"InvalidParameter.TimeArray","JobId":"j1","State":"Fail","Type":"Snapshot","Count":"0"}"#;
        let n = parse(fail).unwrap();
        assert_eq!(n.state, "Fail");
        assert_eq!(n.code.as_deref(), Some("InvalidParameter.TimeArray"));
        assert_eq!(
            n.message.as_deref(),
            Some("TimeArray greater than video duration.")
        );
        assert_eq!(n.count, Some(0));
        let b64 = base64::engine::general_purpose::STANDARD.encode(DOC_SUCCESS);
        assert_eq!(parse(&b64).unwrap(), parse(DOC_SUCCESS).unwrap());
        let json_wrapper =
            serde_json::json!({"TopicOwner": "1", "TopicName": "t", "Subscriber": "1",
            "SubscriptionName": "s", "MessageId": "m", "Message": DOC_SUCCESS, "MessageMD5": "x",
            "PublishTime": "1449556920975"})
            .to_string();
        assert_eq!(parse(&json_wrapper).unwrap().job_id, n_id());
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><Notification xmlns=\"http://mns.aliyuncs.com/doc/v1/\"><TopicOwner>1</TopicOwner><MessageId>m</MessageId><Message>{}</Message></Notification>",
            super::super::mns::xml_escape(DOC_SUCCESS)
        );
        assert_eq!(parse(&xml).unwrap().job_id, n_id());
        for bad in [
            "",
            "[1]",
            "not json",
            "{\"State\":\"Success\"}",
            "{\"JobId\":\"x\"}",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    fn n_id() -> String {
        "8f91f1b630f3469eb5ecf445028f****".into()
    }
}
