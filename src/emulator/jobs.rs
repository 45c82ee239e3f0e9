//! The emulator's jobs: the checks MPS makes on `Input` and `SnapshotConfig` (docs/mps/API.md §1.2 to
//! §1.5), the request in the domain's terms, and each job's life.
//!
//! A job run by the local engine is `Submitted` until the engine takes it, `Snapshoting` while it
//! works, then `Success` or `Fail` with what really happened. A simulated job (no local store or
//! no ffmpeg) lives by its age on the emulator's clock (`clock.rs`): `Submitted` → `Snapshoting` → `Success` (or `Fail` for
//! an input key containing `fail`), with `Count` and `TileCount` (the number of sprite images)
//! predicted by `domain::outputs` for the assumed video duration.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::error::Fault;
use crate::crypto::percent_decode;
use crate::domain::job::{FrameType, JobRequest, OssObject, SpriteSpec, WebVttSpec};
use crate::domain::outputs::{self, Known, OutputManifest};

/// Why a job failed: MPS's `Code` and `Message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

impl Failure {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

/// One job of the ledger, as persisted in the state directory (one JSON line each).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    /// Creation time in Unix milliseconds, on the emulator's clock (the wall clock unless it is
    /// manual): ages survive a restart.
    pub created_ms: i64,
    pub pipeline_id: String,
    pub user_data: String,
    pub input: Value,
    pub config: Value,
    pub sync: bool,
    pub count: u64,
    pub tile_count: Option<u64>,
    pub failure: Option<Failure>,
    /// The request in the domain's terms (what the engine runs).
    #[serde(default)]
    pub request: Option<JobRequest>,
    /// Run by the local engine (else simulated from its age).
    #[serde(default)]
    pub engine: bool,
    /// The local engine has finished it.
    #[serde(default)]
    pub done: bool,
    /// What it produced (engine), or would produce (simulated).
    #[serde(default)]
    pub outputs: Option<OutputManifest>,
    /// The local engine is working on it now (not persisted: a restart runs it again).
    #[serde(skip)]
    pub running: bool,
    /// When the local engine finished it (Unix ms); a simulated job ends at its age.
    #[serde(default)]
    pub finished_ms: Option<i64>,
    /// `QuerySnapshotJobList` calls that named it by id (not persisted).
    #[serde(skip)]
    pub queries: u64,
    /// Its end was published to the MNS queue (or lost by a fault): never twice by itself.
    #[serde(default)]
    pub notified: bool,
    /// The signature its submit carried: `v1` or `acs3` (none in a ledger older than this).
    #[serde(default)]
    pub signature: Option<String>,
}

/// The emulator's timing of a simulated job.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub start_ms: u64,
    pub process_ms: u64,
}

impl Job {
    pub fn creation_time(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.created_ms).unwrap_or_default()
    }

    fn age_ms(&self, now_ms: i64) -> u64 {
        now_ms.saturating_sub(self.created_ms).max(0) as u64
    }

    /// Whether `QuerySnapshotJobList` shows the job yet (MPS lists a new job only after a while).
    pub fn listed(&self, now_ms: i64, list_delay_ms: u64) -> bool {
        self.age_ms(now_ms) >= list_delay_ms
    }

    pub fn state(&self, now_ms: i64, t: Timing) -> &'static str {
        if self.engine {
            return match (self.done, self.running) {
                (true, _) if self.failure.is_some() => "Fail",
                (true, _) => "Success",
                (false, true) => "Snapshoting",
                (false, false) => "Submitted",
            };
        }
        let age = self.age_ms(now_ms);
        if self.sync || age >= t.process_ms {
            if self.failure.is_some() {
                "Fail"
            } else {
                "Success"
            }
        } else if age >= t.start_ms {
            "Snapshoting"
        } else {
            "Submitted"
        }
    }

    /// When it became final (Unix ms), if it is.
    pub fn final_at_ms(&self, now_ms: i64, t: Timing) -> Option<i64> {
        if self.engine {
            return self
                .done
                .then(|| self.finished_ms.unwrap_or(self.created_ms));
        }
        if self.sync {
            return Some(self.created_ms);
        }
        let at = self.created_ms + t.process_ms as i64;
        (now_ms >= at).then_some(at)
    }

    /// What the emulator knows beyond MPS's fields: how the job is made and its output manifest.
    pub fn emulator_view(&self) -> Value {
        serde_json::json!({
            "engine": if self.engine { "ffmpeg" } else { "simulated" },
            "outputs": self.outputs,
        })
    }

    /// The ledger's view (`/_emulator/jobs`): [`Job::emulator_view`] plus, for tests and
    /// benchmarks, when it was created (Unix ms; `CreationTime` has whole seconds), the signature
    /// its submit carried, the queries that named the job, when it ended and whether MNS was told.
    pub fn ledger_view(&self, now_ms: i64, t: Timing) -> Value {
        let mut v = self.emulator_view();
        v["created_ms"] = json!(self.created_ms);
        v["signature"] = json!(self.signature);
        v["queries"] = json!(self.queries);
        v["finished_at_ms"] = json!(self.final_at_ms(now_ms, t));
        v["notified"] = json!(self.notified);
        v
    }

    /// The message MPS publishes to MNS when the job ends (docs/mps/API.md §5.2): every key
    /// in both casings, `Count` as a number, `code`/`msg` on failure; plus the emulator's
    /// `Emulator` object (as in query answers), so a job ended by its message has its manifest.
    pub fn to_notification(&self, now_ms: i64, t: Timing, request_id: &str) -> Value {
        let q = self.to_json(now_ms, t);
        let state = q["State"].clone();
        let mut m = json!({
            "jobId": self.id, "JobId": self.id,
            "requestId": request_id, "RequestId": request_id,
            "type": "Snapshot", "Type": "Snapshot",
            "state": state, "State": state,
            "userData": self.user_data, "UserData": self.user_data,
            "Count": self.count,
        });
        if let Some(tc) = self.tile_count {
            m["TileCount"] = json!(tc);
        }
        if let Some(f) = self.failure.as_ref().filter(|_| q["State"] == "Fail") {
            m["code"] = json!(f.code);
            m["msg"] = json!(f.message);
        }
        m["Emulator"] = self.emulator_view();
        m
    }

    /// A `SnapshotJob` as queries answer it: MPS's fields, plus the emulator's own `Emulator`
    /// object once the job is final. Real MPS has no such field; clients ignore it, and snapgate
    /// keeps it with the response, so a job run by the local engine reports its real outputs.
    pub fn to_query_json(&self, now_ms: i64, t: Timing) -> Value {
        let mut v = self.to_json(now_ms, t);
        if matches!(v["State"].as_str(), Some("Success" | "Fail")) {
            v["Emulator"] = self.emulator_view();
        }
        v
    }

    /// The `SnapshotJob` object MPS returns (every scalar a string).
    pub fn to_json(&self, now_ms: i64, t: Timing) -> Value {
        let state = self.state(now_ms, t);
        let done = state == "Success";
        let mut j = json!({
            "Id": self.id,
            "State": state,
            "CreationTime": crate::mps::wire::format_time(self.creation_time()),
            "PipelineId": self.pipeline_id,
            "UserData": self.user_data,
            "Input": self.input,
            "SnapshotConfig": self.config,
            "Count": if done { self.count.to_string() } else { "0".to_string() },
        });
        if let Some(t) = self.tile_count {
            j["TileCount"] = json!(if done { t.to_string() } else { "0".to_string() });
        }
        if state == "Fail" {
            if let Some(f) = &self.failure {
                j["Code"] = json!(f.code);
                j["Message"] = json!(f.message);
            }
        }
        j
    }
}

fn parse_json_object(name: &str, raw: &str) -> Result<Map<String, Value>, Fault> {
    let v: Value = serde_json::from_str(raw).map_err(|_| {
        Fault::bad(
            "InvalidParameter.JsonFormatInvalid",
            format!("The parameter \"{name}\" is not a valid JSON."),
        )
    })?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(Fault::bad(
            "InvalidParameter.JsonObjectFormatInvalid",
            format!("The parameter \"{name}\" must be a JSON object."),
        )),
    }
}

/// A value MPS documents as a string holding an integer; JSON numbers are accepted too.
fn int(cfg: &Map<String, Value>, name: &str) -> Result<Option<i64>, Fault> {
    match cfg.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| nf(name)),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| nf(name)),
        _ => Err(nf(name)),
    }
}

fn nf(name: &str) -> Fault {
    Fault::bad(
        "InvalidParameter.NumberFormatInvalid",
        format!("The parameter \"{name}\" is not a valid number."),
    )
}

fn range(name: &str, v: Option<i64>, lo: i64, hi: i64) -> Result<Option<i64>, Fault> {
    match v {
        Some(x) if x < lo || x > hi => Err(Fault::bad(
            "InvalidParameter.OutOfRange",
            format!("The parameter \"{name}\" is out of range [{lo}, {hi}]."),
        )),
        other => Ok(other),
    }
}

/// Checks an OSS file object (`Input`, `OutputFile`, `TileOutputFile`); returns the decoded key.
fn oss_file(name: &str, m: &Map<String, Value>) -> Result<String, Fault> {
    let field = |f: &str| {
        m.get(f)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Fault::bad(
                    "InvalidParameter.NullValue",
                    format!("The parameter \"{name}.{f}\" cannot be null."),
                )
            })
    };
    let bucket = field("Bucket")?;
    let location = field("Location")?;
    let object = field("Object")?;
    let b = bucket.as_bytes();
    if !(3..=63).contains(&b.len())
        || !b
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        || b[0] == b'-'
        || b[b.len() - 1] == b'-'
    {
        return Err(Fault::bad(
            "InvalidParameter.BucketNameInvalid",
            format!("The bucket name \"{bucket}\" is invalid."),
        ));
    }
    if !location.starts_with("oss-") || location.len() < 5 {
        return Err(Fault::bad(
            "InvalidParameter.LocationInvalid",
            format!("The location \"{location}\" is invalid."),
        ));
    }
    let key = percent_decode(object).ok_or_else(|| {
        Fault::bad(
            "InvalidParameter.ObjectKeyInvalid",
            "The object key is not properly URL-encoded.",
        )
    })?;
    if key.is_empty() || key.len() > 1023 || key.contains(['\r', '\n']) {
        return Err(Fault::bad(
            "InvalidParameter.ObjectKeyInvalid",
            "The object key must be 1 to 1023 bytes of UTF-8 without CR or LF.",
        ));
    }
    Ok(key)
}

fn object<'a>(
    cfg: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a Map<String, Value>>, Fault> {
    match cfg.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        _ => Err(Fault::bad(
            "InvalidParameter.JsonObjectFormatInvalid",
            format!("\"{name}\" must be a JSON object."),
        )),
    }
}

/// Every scalar as a string, as MPS echoes configs back.
fn stringify(v: &Value) -> Value {
    match v {
        Value::Number(n) => Value::String(n.to_string()),
        Value::Bool(b) => Value::String(b.to_string()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), stringify(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(stringify).collect()),
        other => other.clone(),
    }
}

pub struct NewJob {
    pub input: Value,
    pub config: Value,
    pub sync: bool,
    pub count: u64,
    pub tile_count: Option<u64>,
    pub failure: Option<Failure>,
    /// The request in the domain's terms (keys decoded, defaults filled).
    pub request: JobRequest,
    /// What the job yields when simulated.
    pub simulated: OutputManifest,
}

/// MPS processes only OSS buckets of its own region: an `Input`, `OutputFile` or
/// `TileOutputFile` in another region's location is refused with the code MPS gives a bucket
/// it cannot reach (`InvalidParameter.ResourceNotFound`; whether MPS refuses it at submit or
/// fails the job with it is not documented: this emulator refuses it at submit). Run after
/// [`check_submit`], so the objects are well formed.
pub fn check_region(region: &str, input_raw: &str, config_raw: &str) -> Result<(), Fault> {
    let own = format!("oss-{region}");
    let input = parse_json_object("Input", input_raw)?;
    let cfg = parse_json_object("SnapshotConfig", config_raw)?;
    let tile = object(&cfg, "TileOutputFile").ok().flatten();
    let output = object(&cfg, "OutputFile").ok().flatten();
    let files = [
        ("Input", Some(&input)),
        ("OutputFile", output),
        ("TileOutputFile", tile),
    ];
    for (name, file) in files {
        let Some(file) = file else { continue };
        let location = file.get("Location").and_then(Value::as_str).unwrap_or("");
        if location != own {
            let bucket = file.get("Bucket").and_then(Value::as_str).unwrap_or("");
            return Err(Fault::bad(
                "InvalidParameter.ResourceNotFound",
                format!("The resource operated \"{name}\" cannot be found: bucket \"{bucket}\" is in {location}, and this MPS processes only buckets of {own}."),
            ));
        }
    }
    Ok(())
}

/// Checks a `SubmitSnapshotJob` the way MPS does and works out what the job will produce.
pub fn check_submit(
    input_raw: &str,
    config_raw: &str,
    video_duration_s: u64,
) -> Result<NewJob, Fault> {
    let input = parse_json_object("Input", input_raw)?;
    let input_key = oss_file("Input", &input)?;
    let cfg = parse_json_object("SnapshotConfig", config_raw)?;
    let output = object(&cfg, "OutputFile")?.ok_or_else(|| {
        Fault::bad(
            "InvalidParameter.NullValue",
            "The parameter \"SnapshotConfig.OutputFile\" cannot be null.",
        )
    })?;
    let output_key = oss_file("OutputFile", output)?;
    let time = range("Time", int(&cfg, "Time")?, 0, i64::MAX)?.unwrap_or(0);
    let interval = range("Interval", int(&cfg, "Interval")?, 0, i64::MAX)?;
    let num = range("Num", int(&cfg, "Num")?, 1, i64::MAX)?;
    range("Width", int(&cfg, "Width")?, 8, 4096)?;
    range("Height", int(&cfg, "Height")?, 8, 4096)?;
    range("BlackLevel", int(&cfg, "BlackLevel")?, 30, 100)?;
    if let Some(ft) = cfg.get("FrameType").and_then(Value::as_str) {
        if !matches!(ft.to_ascii_lowercase().as_str(), "normal" | "intra") {
            return Err(Fault::bad(
                "InvalidParameter.OutOfRange",
                "FrameType must be normal or intra.",
            ));
        }
    }
    let sync = num.is_none() && interval.is_none();
    let multi = match num {
        Some(n) => n > 1,
        None => interval.is_some(),
    };
    if multi && !output_key.contains("{Count}") {
        return Err(Fault::bad(
            "InvalidParameter.OutOfRange",
            "OutputFile.Object must contain {Count} when several snapshots are taken.",
        ));
    }
    let sprite = tile_out(&cfg, num, interval)?;
    let webvtt = text(&cfg, "Format")
        .filter(|f| f.eq_ignore_ascii_case("vtt"))
        .map(|_| WebVttSpec {
            sprite: object(&cfg, "SubOut")
                .ok()
                .flatten()
                .and_then(|s| text(s, "IsSptFrag"))
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        });
    let frame_type = match text(&cfg, "FrameType").map(|f| f.to_ascii_lowercase()) {
        Some(f) if f == "normal" => FrameType::Normal,
        _ => FrameType::Intra,
    };
    let request = JobRequest {
        input: oss_object(&input, input_key.clone()),
        output: oss_object(output, output_key),
        time_ms: time as u64,
        interval_s: interval.map(|x| x as u64),
        num: num.map(|x| x as u64),
        width: int(&cfg, "Width")?.map(|x| x as u32),
        height: int(&cfg, "Height")?.map(|x| x as u32),
        frame_type,
        black_level: int(&cfg, "BlackLevel")?.map(|x| x as u32),
        sprite,
        webvtt,
        pipeline_id: None,
        user_data: None,
    };
    let simulated = simulate(&request, video_duration_s);
    let count = simulated.snapshots.len() as u64;
    let tile_count = request
        .sprite
        .as_ref()
        .map(|_| (simulated.sprites.len() as u64).max(1));
    let failure = scripted_failure(&input_key, count);
    Ok(NewJob {
        input: stringify(&Value::Object(input)),
        config: stringify(&Value::Object(cfg)),
        sync,
        count,
        tile_count,
        failure,
        request,
        simulated,
    })
}

/// `TileOut` and `TileOutputFile` as the sprite they ask for (`None` without `TileOut`), checked
/// as MPS does: ranges, and `{TileCount}` in the key when several sprites can result.
fn tile_out(
    cfg: &Map<String, Value>,
    num: Option<i64>,
    interval: Option<i64>,
) -> Result<Option<SpriteSpec>, Fault> {
    let Some(tile) = object(cfg, "TileOut")? else {
        return Ok(None);
    };
    let lines = range("TileOut.Lines", int(tile, "Lines")?, 1, 1000)?.unwrap_or(10);
    let columns = range("TileOut.Columns", int(tile, "Columns")?, 1, 1000)?.unwrap_or(10);
    let cell_width = range("TileOut.CellWidth", int(tile, "CellWidth")?, 1, 4096)?;
    let cell_height = range("TileOut.CellHeight", int(tile, "CellHeight")?, 1, 4096)?;
    let margin = range("TileOut.Margin", int(tile, "Margin")?, 0, 4096)?.unwrap_or(0);
    let padding = range("TileOut.Padding", int(tile, "Padding")?, 0, 4096)?.unwrap_or(0);
    let cell_step = range("TileOut.CellSelStep", int(tile, "CellSelStep")?, 1, 100_000)?;
    let tile_out = object(cfg, "TileOutputFile")?.ok_or_else(|| {
        Fault::bad(
            "InvalidParameter.NullValue",
            "The parameter \"SnapshotConfig.TileOutputFile\" cannot be null.",
        )
    })?;
    let tile_key = oss_file("TileOutputFile", tile_out)?;
    let cells = (lines * columns) as u64;
    let several = match num {
        Some(n) => n as u64 > cells,
        None => interval.is_some(),
    };
    if several && !tile_key.contains("{TileCount}") {
        return Err(Fault::bad(
            "InvalidParameter.OutOfRange",
            "TileOutputFile.Object must contain {TileCount} when several sprites are produced.",
        ));
    }
    Ok(Some(SpriteSpec {
        output: oss_object(tile_out, tile_key),
        lines: lines as u32,
        columns: columns as u32,
        cell_width: cell_width.map(|x| x as u32),
        cell_height: cell_height.map(|x| x as u32),
        margin: margin as u32,
        padding: padding as u32,
        color: text(tile, "Color").unwrap_or_else(|| "black".into()),
        keep_cells: text(tile, "IsKeepCellPic").is_none_or(|v| !v.eq_ignore_ascii_case("false")),
        cell_step: cell_step.map(|x| x as u32),
    }))
}

/// What a simulated job yields on a video of the assumed duration (docs/mps/API.md §1.4).
fn simulate(request: &JobRequest, video_duration_s: u64) -> OutputManifest {
    let mut simulated = outputs::predict(
        request,
        &Known {
            duration_ms: Some(video_duration_s.saturating_mul(1000)),
            ..Known::default()
        },
    );
    simulated.simulated = true;
    simulated
}

/// The failure a simulated job is scripted to end in: an input key with `fail` in it, or no
/// snapshot at all (the time is beyond the end of the video).
fn scripted_failure(input_key: &str, count: u64) -> Option<Failure> {
    if input_key.contains("fail") {
        Some(Failure::new(
            "InvalidParameter.ResourceNotFound",
            "The resource operated cannot be found.",
        ))
    } else if count == 0 {
        Some(Failure::new(
            "InvalidParameter.ResourceContentBad",
            "The snapshot time is beyond the end of the video.",
        ))
    } else {
        None
    }
}

/// A string value (MPS echoes every scalar as a string; numbers and booleans accepted).
fn text(m: &Map<String, Value>, name: &str) -> Option<String> {
    match m.get(name)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The domain's view of an OSS file object: the key decoded.
fn oss_object(m: &Map<String, Value>, key: String) -> OssObject {
    let field = |f: &str| {
        m.get(f)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    OssObject {
        location: field("Location"),
        bucket: field("Bucket"),
        object: key,
    }
}
