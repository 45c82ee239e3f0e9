//! The credentials file: INI, one section per profile (`ALIBABA_CLOUD_PROFILE`, else
//! `default`), `type = access_key | ram_role_arn | ecs_ram_role | oidc_role_arn` and that type's
//! keys (`access_key_id`, `access_key_secret`, `role_arn`, `role_session_name`, `policy`,
//! `role_name`, `oidc_provider_arn`, `oidc_token_file_path`). Its path: `ALIBABA_CLOUD_CREDENTIALS_FILE`,
//! else `~/.alibabacloud/credentials` (Go, Java) or `~/.alibabacloud/credentials.ini` (Python),
//! the first that exists.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::CredentialError;

/// The default paths under `home`, in the order they are tried.
pub fn default_paths(home: &Path) -> [PathBuf; 2] {
    [
        home.join(".alibabacloud").join("credentials"),
        home.join(".alibabacloud").join("credentials.ini"),
    ]
}

/// A profile's keys (lower-cased names, values trimmed of spaces and quotes).
pub type Profile = HashMap<String, String>;

/// Reads `profile` from the INI text.
pub fn parse(text: &str, profile: &str) -> Option<Profile> {
    let mut current: Option<&str> = None;
    let mut out: Option<Profile> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.trim());
            if current == Some(profile) {
                out.get_or_insert_with(HashMap::new);
            }
            continue;
        }
        if current != Some(profile) {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().trim_matches('"').trim_matches('\'');
            out.get_or_insert_with(HashMap::new)
                .insert(k.trim().to_ascii_lowercase(), v.to_string());
        }
    }
    out
}

/// Reads `profile` from the file at `path`: an error if the file or the profile is missing.
pub fn load(path: &Path, profile: &str) -> Result<Profile, CredentialError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CredentialError::new(
            "credentials_file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    parse(&text, profile).ok_or_else(|| {
        CredentialError::new(
            "credentials_file",
            format!("{} has no profile [{profile}]", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_read_by_name() {
        let text = "[default]\ntype = access_key\naccess_key_id = foo\naccess_key_secret = \"bar\"\n\n# c\n[client1]\ntype = ecs_ram_role\nrole_name = EcsRamRoleTest\n";
        let d = parse(text, "default").unwrap();
        assert_eq!(d["type"], "access_key");
        assert_eq!(d["access_key_secret"], "bar");
        assert_eq!(
            parse(text, "client1").unwrap()["role_name"],
            "EcsRamRoleTest"
        );
        assert!(parse(text, "nope").is_none());
    }
}
