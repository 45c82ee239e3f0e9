//! A validated job → MPS `SubmitSnapshotJob` parameters (docs/mps/API.md §1.2 to §1.5).
//!
//! Object keys are URL-encoded whole (`/` → `%2F`, `{Count}` → `%7BCount%7D`: "the documented
//! form", §1.5); every `SnapshotConfig` value is sent as a string, as documented; `FrameType` is
//! always explicit because the docs disagree on its default (§7).

use serde_json::{json, Map, Value};

use crate::crypto::percent_encode;
use crate::domain::{user_data, JobId, JobRequest, OssObject};
use crate::mps::wire::SubmitParams;

fn oss(o: &OssObject) -> Value {
    json!({"Bucket": o.bucket, "Location": o.location, "Object": percent_encode(&o.object)})
}

pub fn snapshot_config(r: &JobRequest) -> Value {
    let mut c = Map::new();
    c.insert("OutputFile".into(), oss(&r.output));
    c.insert("Time".into(), json!(r.time_ms.to_string()));
    if let Some(i) = r.interval_s {
        c.insert("Interval".into(), json!(i.to_string()));
    }
    if let Some(n) = r.num {
        c.insert("Num".into(), json!(n.to_string()));
    }
    if let Some(w) = r.width {
        c.insert("Width".into(), json!(w.to_string()));
    }
    if let Some(h) = r.height {
        c.insert("Height".into(), json!(h.to_string()));
    }
    c.insert("FrameType".into(), json!(r.frame_type.as_str()));
    if let Some(b) = r.black_level {
        c.insert("BlackLevel".into(), json!(b.to_string()));
    }
    if let Some(s) = &r.sprite {
        c.insert("TileOutputFile".into(), oss(&s.output));
        let mut t = Map::new();
        t.insert("Lines".into(), json!(s.lines.to_string()));
        t.insert("Columns".into(), json!(s.columns.to_string()));
        if let Some(w) = s.cell_width {
            t.insert("CellWidth".into(), json!(w.to_string()));
        }
        if let Some(h) = s.cell_height {
            t.insert("CellHeight".into(), json!(h.to_string()));
        }
        t.insert("Margin".into(), json!(s.margin.to_string()));
        t.insert("Padding".into(), json!(s.padding.to_string()));
        t.insert("Color".into(), json!(s.color));
        t.insert("IsKeepCellPic".into(), json!(s.keep_cells.to_string()));
        if let Some(step) = s.cell_step {
            t.insert("CellSelStep".into(), json!(step.to_string()));
        }
        c.insert("TileOut".into(), Value::Object(t));
    }
    if let Some(v) = &r.webvtt {
        c.insert("Format".into(), json!("vtt"));
        c.insert("SubOut".into(), json!({"IsSptFrag": v.sprite.to_string()}));
    }
    Value::Object(c)
}

pub fn submit_params(id: JobId, r: &JobRequest, default_pipeline: Option<&str>) -> SubmitParams {
    SubmitParams {
        input: oss(&r.input).to_string(),
        snapshot_config: snapshot_config(r).to_string(),
        pipeline_id: r
            .pipeline_id
            .clone()
            .or_else(|| default_pipeline.map(str::to_string)),
        user_data: Some(user_data::for_mps(id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::validate_request;

    #[test]
    fn example_maps_to_documented_wire_form() {
        let (r, _) = validate_request(&json!({
            "input":  {"location": "oss-cn-shanghai", "bucket": "media", "object": "uploads/clip 01.mp4"},
            "output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "thumbs/clip01/{Count}.jpg"},
            "time_ms": 2000, "interval_s": 2, "num": 3, "frame_type": "normal",
            "sprite": {"output": {"location": "oss-cn-shanghai", "bucket": "media", "object": "sprites/{TileCount}.jpg"}},
            "webvtt": {"sprite": true},
            "user_data": "team x"
        }))
        .unwrap();
        let id = JobId::new();
        let p = submit_params(id, &r, Some("0123456789abcdef0123456789abcdef"));
        let input: Value = serde_json::from_str(&p.input).unwrap();
        assert_eq!(input["Object"], "uploads%2Fclip%2001.mp4");
        let c: Value = serde_json::from_str(&p.snapshot_config).unwrap();
        assert_eq!(
            c["OutputFile"]["Object"],
            "thumbs%2Fclip01%2F%7BCount%7D.jpg"
        );
        assert_eq!(c["Time"], "2000");
        assert_eq!(c["Interval"], "2");
        assert_eq!(c["Num"], "3");
        assert_eq!(c["FrameType"], "normal");
        assert_eq!(
            c["TileOutputFile"]["Object"],
            "sprites%2F%7BTileCount%7D.jpg"
        );
        assert_eq!(c["TileOut"]["Lines"], "10");
        assert_eq!(c["TileOut"]["IsKeepCellPic"], "true");
        assert_eq!(c["Format"], "vtt");
        assert_eq!(c["SubOut"]["IsSptFrag"], "true");
        assert_eq!(
            p.pipeline_id.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(
            p.user_data,
            Some(id.to_string()),
            "the team's text stays in snapgate"
        );
    }
}
