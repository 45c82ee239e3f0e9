//! The request body as the OpenAPI document shows it. These types only document: the body is
//! validated field by field by `domain::validate` (so that every violation is reported), and the
//! ranges, patterns and lengths are not written here but copied from `domain::rules` — the
//! validator's own constants — by [`RequestRules`], so the document cannot drift from the rules.

use serde::Deserialize;
use utoipa::openapi::schema::{Object, Schema};
use utoipa::openapi::{OpenApi, RefOr};
use utoipa::ToSchema;

use crate::domain::rules::{self, Range};
use crate::domain::user_data::USER_DATA_MAX;

/// The job request body. Only `input` and `output` are required; object keys are raw.
/// (Documentation schema: the body is validated field by field so that every violation is
/// reported; its ranges and formats are the validator's own constants, from `domain::rules`.) Rules
/// that JSON Schema cannot state are listed in the README: `{Count}`/`{TileCount}` placeholders
/// when several outputs can result, `webvtt.sprite` needing `sprite`, `user_data` characters,
/// object keys counted in UTF-8 bytes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CreateJobBody {
    pub input: OssObjectBody,
    pub output: OssObjectBody,
    /// Milliseconds (MPS `Time`). Default 0.
    #[schema(example = 2000)]
    pub time_ms: Option<u64>,
    /// Seconds (MPS `Interval`); 0 spreads `num` evenly.
    #[schema(example = 2)]
    pub interval_s: Option<u64>,
    /// Number of snapshots.
    #[schema(example = 3)]
    pub num: Option<u64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// `normal` or `intra` (default).
    pub frame_type: Option<crate::domain::job::FrameType>,
    pub black_level: Option<u32>,
    pub sprite: Option<SpriteBody>,
    pub webvtt: Option<WebVttBody>,
    /// MPS pipeline id.
    pub pipeline_id: Option<String>,
    /// Letters, digits, spaces, `-`, `_`, `.`, starting with a letter or digit; at most 987 bytes.
    pub user_data: Option<String>,
    /// A preset of the team (`POST /v1/presets`): `name@version`, or `name` for its latest
    /// version. The body's other members are merged over it (JSON Merge Patch: objects member
    /// by member, `null` removes); `input` and `output` are then required of the result.
    #[schema(example = "storyboard@2")]
    pub preset: Option<String>,
}

/// An OSS object in a request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct OssObjectBody {
    /// OSS location, `oss-<region>`.
    #[schema(example = "oss-cn-shanghai")]
    pub location: String,
    /// OSS bucket name.
    #[schema(example = "media")]
    pub bucket: String,
    /// Raw object key (1 to 1023 UTF-8 bytes, no CR/LF, not starting with `/` or `\`).
    #[schema(example = "uploads/clip 01.mp4")]
    pub object: String,
}

/// WebVTT output.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct WebVttBody {
    /// Tile the thumbnails into the sprite (needs `sprite`).
    pub sprite: Option<bool>,
}

/// Sprite settings in a request; all but `output` have defaults.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct SpriteBody {
    pub output: OssObjectBody,
    pub lines: Option<u32>,
    pub columns: Option<u32>,
    pub cell_width: Option<u32>,
    pub cell_height: Option<u32>,
    pub margin: Option<u32>,
    pub padding: Option<u32>,
    /// `#RRGGBB`, `random` or a colour keyword (black, white, red, green, blue, yellow, gray, grey).
    pub color: Option<String>,
    pub keep_cells: Option<bool>,
    pub cell_step: Option<u32>,
}

/// Adds the validator's ranges and formats to the request schemas.
pub struct RequestRules;

impl utoipa::Modify for RequestRules {
    fn modify(&self, openapi: &mut OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let mut field = |schema: &str, name: &str, apply: &dyn Fn(&mut Object)| {
            if let Some(RefOr::T(Schema::Object(o))) = components.schemas.get_mut(schema) {
                if let Some(RefOr::T(Schema::Object(p))) = o.properties.get_mut(name) {
                    apply(p);
                }
            }
        };
        let range = |r: Range| {
            move |p: &mut Object| {
                p.minimum = Some((r.min as usize).into());
                p.maximum = Some((r.max as usize).into());
            }
        };
        for (name, r) in rules::BODY_INTEGERS {
            field("CreateJobBody", name, &range(*r));
        }
        for (name, r) in rules::SPRITE_INTEGERS {
            field("SpriteBody", name, &range(*r));
        }
        let pattern = |pat: String| move |p: &mut Object| p.pattern = Some(pat.clone());
        let length = |min: usize, max: usize| {
            move |p: &mut Object| {
                p.min_length = Some(min);
                p.max_length = Some(max);
            }
        };
        field(
            "CreateJobBody",
            "pipeline_id",
            &pattern(rules::MPS_ID_PATTERN.into()),
        );
        field("CreateJobBody", "user_data", &length(1, USER_DATA_MAX));
        field(
            "OssObjectBody",
            "location",
            &pattern(rules::LOCATION_PATTERN.into()),
        );
        field(
            "OssObjectBody",
            "bucket",
            &pattern(rules::BUCKET_PATTERN.into()),
        );
        field(
            "OssObjectBody",
            "object",
            &pattern(rules::object_key_pattern()),
        );
        field(
            "OssObjectBody",
            "object",
            &length(1, rules::OBJECT_KEY_MAX_BYTES),
        );
        field("SpriteBody", "color", &pattern(rules::color_pattern()));
    }
}
