//! Team credentials. A key is an AccessKey-style pair (`access_key_id`, `access_key_secret`) plus a
//! bearer token for the REST API.
//!
//! - The token is stored only as its SHA-256 (like crates.io's API tokens): a database leak does
//!   not reveal it, and lookup by hash does not leak timing about the token.
//! - The secret is kept so that the same pair can later verify MPS-style HMAC signatures sent to
//!   snapgate itself; HMAC verification needs the clear secret, so it is stored encrypted with
//!   AES-256-GCM under the server master key (`auth.master_key`, or a key file created on first
//!   use for the embedded single-instance default).

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use anyhow::Context;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::AuthSettings;
use crate::secret::Secret;
use crate::store::{ApiKeyRecord, DynStore};

/// Bearer tokens start with this, so leaked ones are easy to recognize and scan for.
pub const TOKEN_PREFIX: &str = "sgt_";

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random(n: usize) -> String {
    rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// The server master key that encrypts team secrets at rest.
pub struct MasterKey(Key<Aes256Gcm>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    pub fn from_base64(s: &str) -> anyhow::Result<Self> {
        let bytes = B64
            .decode(s.trim())
            .context("auth.master_key must be base64")?;
        anyhow::ensure!(
            bytes.len() == 32,
            "auth.master_key must be 32 bytes (base64 of 32 random bytes)"
        );
        Ok(Self(*Key::<Aes256Gcm>::from_slice(&bytes)))
    }

    /// `auth.master_key` if set; else the key file, created (mode 0600) if absent.
    pub fn load(settings: &AuthSettings) -> anyhow::Result<Self> {
        if let Some(k) = &settings.master_key {
            return Self::from_base64(k.expose());
        }
        let path = Path::new(&settings.master_key_file);
        if path.exists() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            return Self::from_base64(&text);
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let key = Aes256Gcm::generate_key(OsRng);
        let encoded = B64.encode(key);
        write_private(path, &encoded)?;
        tracing::info!(path = %path.display(), "created a new master key file (keep it with the database)");
        Ok(Self(key))
    }

    pub fn encrypt(&self, plain: &str) -> String {
        let cipher = Aes256Gcm::new(&self.0);
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = cipher
            .encrypt(&nonce, plain.as_bytes())
            .expect("AES-GCM encryption does not fail for small inputs");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        B64.encode(out)
    }

    pub fn decrypt(&self, stored: &str) -> anyhow::Result<Secret> {
        let raw = B64.decode(stored).context("stored secret is not base64")?;
        anyhow::ensure!(raw.len() > 12, "stored secret is too short");
        let (nonce, ct) = raw.split_at(12);
        let plain = Aes256Gcm::new(&self.0)
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| anyhow::anyhow!("stored secret does not decrypt with this master key"))?;
        Ok(Secret::new(String::from_utf8(plain)?))
    }
}

/// The master key as the request path needs it (the MPS-compatible endpoint decrypts a team's
/// secret with it to check a signature): loaded on first use and then kept. Unlike
/// [`MasterKey::load`] it never creates a key file, so a server that has issued no key yet has
/// no side effect on disk, and a key file written later by `snapgate key create` is picked up.
pub struct MasterKeySlot {
    settings: AuthSettings,
    key: std::sync::OnceLock<std::sync::Arc<MasterKey>>,
}

impl std::fmt::Debug for MasterKeySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKeySlot([redacted])")
    }
}

impl MasterKeySlot {
    pub fn new(settings: &AuthSettings) -> Self {
        Self {
            settings: settings.clone(),
            key: std::sync::OnceLock::new(),
        }
    }

    pub fn get(&self) -> anyhow::Result<std::sync::Arc<MasterKey>> {
        if let Some(k) = self.key.get() {
            return Ok(k.clone());
        }
        let s = &self.settings;
        anyhow::ensure!(
            s.master_key.is_some() || Path::new(&s.master_key_file).exists(),
            "no master key: set auth.master_key, or create {} with `snapgate key create`",
            s.master_key_file
        );
        let key = MasterKey::load(s)?;
        Ok(self.key.get_or_init(|| std::sync::Arc::new(key)).clone())
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text)?;
    Ok(())
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
    fn secrets_round_trip_and_do_not_decrypt_with_another_key() {
        let a = MasterKey::from_base64(&B64.encode([7u8; 32])).unwrap();
        let b = MasterKey::from_base64(&B64.encode([8u8; 32])).unwrap();
        let stored = a.encrypt("the-secret");
        assert!(!stored.contains("the-secret"));
        assert_eq!(a.decrypt(&stored).unwrap().expose(), "the-secret");
        assert!(b.decrypt(&stored).is_err());
        assert_ne!(a.encrypt("x"), a.encrypt("x"), "fresh nonce each time");
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        assert_eq!(format!("{a:?}"), "MasterKey([redacted])");
    }

    #[test]
    fn team_names() {
        assert!(valid_team_name("video-upload_1"));
        assert!(!valid_team_name(""));
        assert!(!valid_team_name("-x"));
        assert!(!valid_team_name("Upper"));
        assert!(!valid_team_name(&"a".repeat(65)));
    }
}
