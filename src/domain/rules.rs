//! The ranges and formats of a job request, stated once: the validator checks them and the
//! OpenAPI document publishes them (`http/schema.rs` copies them into the request schema), so
//! the two cannot drift. `tests/it/api.rs` checks every published bound against the validator.

use std::sync::LazyLock;

use regex::Regex;

/// An inclusive integer range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: u64,
    pub max: u64,
}

impl Range {
    pub const fn new(min: u64, max: u64) -> Self {
        Self { min, max }
    }

    pub fn contains(&self, v: u64) -> bool {
        (self.min..=self.max).contains(&v)
    }
}

/// The largest integer a JSON number carries exactly; bigger values are refused, not rounded.
pub const MAX_SAFE: u64 = (1 << 53) - 1;

/// MPS `Time`, milliseconds (docs/mps/API.md §1.3).
pub const TIME_MS: Range = Range::new(0, MAX_SAFE);
/// MPS `Interval`, seconds; 0 spreads `Num` evenly.
pub const INTERVAL_S: Range = Range::new(0, MAX_SAFE);
/// MPS `Num`.
pub const NUM: Range = Range::new(1, MAX_SAFE);
/// MPS `Width` / `Height` and sprite cell sizes, pixels.
pub const DIMENSION: Range = Range::new(8, 4096);
/// MPS `BlackLevel`.
pub const BLACK_LEVEL: Range = Range::new(30, 100);
/// `TileOut` `Lines` / `Columns`.
pub const GRID: Range = Range::new(1, 1000);
/// `TileOut` `Margin` / `Padding`, pixels.
pub const SPACING: Range = Range::new(0, 4096);
/// `TileOut` `CellSelStep`.
pub const CELL_STEP: Range = Range::new(1, 100_000);

/// A video duration given in a query (`duration_ms`): what the documented `int64` holds.
pub const DURATION_MS: Range = Range::new(0, i64::MAX as u64);

/// The integer fields of the request body, with their ranges.
pub const BODY_INTEGERS: &[(&str, Range)] = &[
    ("time_ms", TIME_MS),
    ("interval_s", INTERVAL_S),
    ("num", NUM),
    ("width", DIMENSION),
    ("height", DIMENSION),
    ("black_level", BLACK_LEVEL),
];

/// The integer fields of `sprite`, with their ranges.
pub const SPRITE_INTEGERS: &[(&str, Range)] = &[
    ("lines", GRID),
    ("columns", GRID),
    ("cell_width", DIMENSION),
    ("cell_height", DIMENSION),
    ("margin", SPACING),
    ("padding", SPACING),
    ("cell_step", CELL_STEP),
];

/// OSS location: `oss-<region>`.
pub const LOCATION_PATTERN: &str = "^oss-[a-z0-9]+(-[a-z0-9]+)*$";
/// OSS bucket naming rules: 3 to 63 of `a-z 0-9 -`, starting and ending with a letter or digit.
pub const BUCKET_PATTERN: &str = "^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$";
/// MPS resource ids (pipelines, jobs): 32 lower-case hex characters.
pub const MPS_ID_PATTERN: &str = "^[0-9a-f]{32}$";
/// Object keys: 1 to this many bytes of UTF-8.
pub const OBJECT_KEY_MAX_BYTES: usize = 1023;
/// Characters an object key may not start with (OSS).
pub const OBJECT_KEY_FORBIDDEN_FIRST: &[char] = &['/', '\\'];
/// Sprite colour keywords (any letter case), besides `#RRGGBB`.
pub const COLOR_KEYWORDS: &[&str] = &[
    "black", "white", "red", "green", "blue", "yellow", "gray", "grey", "random",
];

/// MPS's `UserData` limit (docs/mps/API.md §1.2).
pub const MPS_USER_DATA_MAX: usize = 1024;

fn class(chars: &[char]) -> String {
    chars
        .iter()
        .map(|c| match c {
            '\\' => "\\\\".to_string(),
            '\0' => "\\x00".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// The object-key rule as a pattern (for the schema; the validator reports each part apart).
pub fn object_key_pattern() -> String {
    // No control character (the text rule, `super::text`): CR and LF break OSS, NUL Postgres.
    let forbidden = super::text::CONTROL_CLASS;
    format!(
        "^[^{}{forbidden}][^{forbidden}]*$",
        class(OBJECT_KEY_FORBIDDEN_FIRST)
    )
}

/// The colour rule as a pattern: `#RRGGBB` or a keyword in any letter case.
pub fn color_pattern() -> String {
    let keywords: Vec<String> = COLOR_KEYWORDS
        .iter()
        .map(|k| {
            k.chars()
                .map(|c| format!("[{}{}]", c.to_ascii_uppercase(), c))
                .collect()
        })
        .collect();
    format!("^(#[0-9A-Fa-f]{{6}}|{})$", keywords.join("|"))
}

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("a valid pattern")
}

static LOCATION: LazyLock<Regex> = LazyLock::new(|| regex(LOCATION_PATTERN));
static BUCKET: LazyLock<Regex> = LazyLock::new(|| regex(BUCKET_PATTERN));
static MPS_ID: LazyLock<Regex> = LazyLock::new(|| regex(MPS_ID_PATTERN));
static COLOR: LazyLock<Regex> = LazyLock::new(|| regex(&color_pattern()));

pub fn is_location(s: &str) -> bool {
    LOCATION.is_match(s)
}

pub fn is_bucket(s: &str) -> bool {
    BUCKET.is_match(s)
}

pub fn is_mps_id(s: &str) -> bool {
    MPS_ID.is_match(s)
}

pub fn is_color(s: &str) -> bool {
    COLOR.is_match(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_say_what_the_rules_say() {
        assert!(is_location("oss-cn-shanghai") && !is_location("cn-shanghai"));
        assert!(!is_location("oss-") && !is_location("oss-cn--x"));
        assert!(is_bucket("abc") && !is_bucket("ab") && !is_bucket("-abc") && !is_bucket("abc-"));
        assert!(is_bucket(&"a".repeat(63)) && !is_bucket(&"a".repeat(64)));
        assert!(is_mps_id(&"a".repeat(32)) && !is_mps_id(&"A".repeat(32)));
        assert!(
            is_color("BlAcK") && is_color("#00ff00") && !is_color("#00ff0") && !is_color("pink")
        );
        let key = regex(&object_key_pattern());
        assert!(key.is_match("a/b c.mp4") && !key.is_match("/a") && !key.is_match("\\a"));
        assert!(!key.is_match("a\nb") && !key.is_match("a\rb"));
    }
}
