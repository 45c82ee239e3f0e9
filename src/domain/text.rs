//! The one text rule for every string that reaches storage or a signature (job requests and
//! presets through the validator, upload intents, webhook endpoints, the MPS-compatible
//! endpoint's parameters): no NUL and no other control character (Unicode `Cc`: U+0000 to
//! U+001F and U+007F to U+009F). Postgres cannot store NUL in `text` or `jsonb`, SQLite would
//! store it and echo it back, and CR/LF or escape sequences in a key, a URL or a description end
//! up in headers, logs and terminals. File names add the rules of an OSS key's last segment.

use super::job::Violation;

/// The code of a violation of the rule.
pub const CODE: &str = "invalid_characters";

/// What a violation says.
pub const RULE: &str =
    "must not contain NUL or other control characters (U+0000 to U+001F, U+007F to U+009F)";

/// The rule as a character class for JSON Schema patterns (ECMA-262 and the `regex` crate).
pub const CONTROL_CLASS: &str = "\\u0000-\\u001f\\u007f-\\u009f";

/// Whether `s` breaks the rule.
pub fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// The violation of the rule by `s` at `field` (a JSON pointer), if any.
pub fn check(field: &str, s: &str) -> Option<Violation> {
    has_control(s).then(|| Violation {
        field: field.to_string(),
        code: CODE.to_string(),
        message: RULE.to_string(),
    })
}

/// Checks `s` at `field` and adds its violation to `errors`.
pub fn check_into(errors: &mut Vec<Violation>, field: &str, s: &str) {
    errors.extend(check(field, s));
}

/// The longest file name of an upload, in bytes.
pub const FILENAME_MAX_BYTES: usize = 255;

/// What is wrong with an upload's file name, if anything: the text rule, then a name of 1 to
/// 255 bytes without `/` or `\`, not `.` or `..`, and without `${` (OSS and the local store
/// expand `${…}` in a PostObject key: the object would land under another key and the upload
/// could never complete).
pub fn filename_problem(f: &str) -> Option<(&'static str, &'static str)> {
    if has_control(f) {
        return Some((CODE, RULE));
    }
    if f.is_empty()
        || f.len() > FILENAME_MAX_BYTES
        || f.contains(['/', '\\'])
        || f == "."
        || f == ".."
    {
        return Some((
            "invalid_format",
            "must be a file name of 1 to 255 bytes without '/' or '\\', not '.' or '..'",
        ));
    }
    if f.contains("${") {
        return Some((
            "invalid_format",
            "must not contain '${' (OSS expands ${...} variables in object keys)",
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_and_every_control_character_break_the_rule_and_nothing_else_does() {
        for bad in [
            "a\0b",
            "\u{1}",
            "tab\there",
            "cr\r",
            "lf\n",
            "\u{1b}[31m",
            "\u{7f}",
            "\u{85}",
            "\u{9f}",
        ] {
            let v = check("/x", bad).expect(bad);
            assert_eq!((v.field.as_str(), v.code.as_str()), ("/x", CODE));
        }
        for good in ["", "plain", "日本語 ü", "{Count}", "a\u{a0}b", "\u{200b}"] {
            assert!(check("/x", good).is_none(), "{good:?}");
        }
        let pattern = regex::Regex::new(&format!("^[^{CONTROL_CLASS}]*$")).unwrap();
        for c in (0u32..0x200).filter_map(char::from_u32) {
            assert_eq!(pattern.is_match(&c.to_string()), !c.is_control(), "{c:?}");
        }
    }

    #[test]
    fn file_names_follow_the_text_rule_and_the_key_rules() {
        assert_eq!(filename_problem("clip one.mp4"), None);
        assert_eq!(filename_problem("a\0.mp4").map(|p| p.0), Some(CODE));
        assert_eq!(filename_problem("a\u{7}.mp4").map(|p| p.0), Some(CODE));
        for bad in [
            "",
            ".",
            "..",
            "a/b.mp4",
            "a\\b.mp4",
            "${filename}",
            "x${y}.mp4",
        ] {
            assert_eq!(
                filename_problem(bad).map(|p| p.0),
                Some("invalid_format"),
                "{bad:?}"
            );
        }
        assert!(filename_problem(&"a".repeat(256)).is_some());
        assert_eq!(filename_problem("$ {x}.mp4"), None);
    }
}
