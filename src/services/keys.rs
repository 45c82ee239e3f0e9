//! Team credentials. A key is an AccessKey-style pair (`access_key_id`, `access_key_secret`) plus a
//! bearer token for the REST API.
//!
//! - The token is stored only as its SHA-256 (like crates.io's API tokens): a database leak does
//!   not reveal it, and lookup by hash does not leak timing about the token.
//! - The secret is kept so that the same pair can later verify MPS-style HMAC signatures sent to
//!   snapgate itself; HMAC verification needs the clear secret, so it is stored encrypted with
//!   AES-256-GCM under the server master key (`auth.master_key`, or a key file created on first
//!   use for the embedded single-instance default).

use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::Serialize;

use crate::crypto::{token_hash, MasterKey};
use crate::store::{ApiKeyRecord, DynStore};

/// Bearer tokens start with this, so leaked ones are easy to recognize and scan for.
pub const TOKEN_PREFIX: &str = "sgt_";

fn random(n: usize) -> String {
    rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// What `snapgate key create` prints, once. Nothing else ever shows the secret or the token.
#[derive(Serialize)]
pub struct IssuedKey {
    pub access_key_id: String,
    pub access_key_secret: String,
    pub token: String,
    pub team: String,
    pub admin: bool,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("access_key_id", &self.access_key_id)
            .field("team", &self.team)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

impl IssuedKey {
    /// The three lines a team changes in its MPS SDK code (the MPS guide's Python sample) to run
    /// it against snapgate at `endpoint`. The secret is named, not repeated: it is shown once.
    pub fn mps_sdk_lines(&self, endpoint: &str) -> String {
        format!(
            "access_key_id = '{}'\n\
             access_key_secret = '<the access_key_secret printed above>'\n\
             client.add_endpoint('cn-shanghai', 'Mts', '{endpoint}')  # snapgate's host:port (Tea SDK: Config(endpoint='{endpoint}'))",
            self.access_key_id
        )
    }
}

/// Issues a new key for an existing team.
pub async fn issue_key(
    store: &DynStore,
    master: &MasterKey,
    team: &str,
    admin: bool,
) -> anyhow::Result<IssuedKey> {
    anyhow::ensure!(
        store.team_exists(team).await?,
        "no team named {team:?}; create it with `snapgate team create {team}`"
    );
    let access_key_id = format!("SGAK{}", random(16).to_ascii_uppercase());
    let access_key_secret = random(30);
    let token = format!("{TOKEN_PREFIX}{}", random(40));
    store
        .create_api_key(&ApiKeyRecord {
            access_key_id: access_key_id.clone(),
            team: team.to_string(),
            admin,
            token_hash: token_hash(&token),
            secret_ciphertext: master.encrypt(&access_key_secret),
            created_at: crate::store::now(),
            revoked_at: None,
        })
        .await?;
    Ok(IssuedKey {
        access_key_id,
        access_key_secret,
        token,
        team: team.to_string(),
        admin,
    })
}

/// Team names: 1 to 64 of `a-z 0-9 - _`, starting with a letter or digit.
pub fn valid_team_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_names() {
        assert!(valid_team_name("video-upload_1"));
        assert!(!valid_team_name(""));
        assert!(!valid_team_name("-x"));
        assert!(!valid_team_name("Upper"));
        assert!(!valid_team_name(&"a".repeat(65)));
    }
}
