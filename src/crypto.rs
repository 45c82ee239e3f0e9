//! The primitives every signer and every secret at rest shares, written once: RFC 3986
//! percent-encoding, HMAC-SHA1/HMAC-SHA256, SHA-256 in hex, token hashes, and the master key
//! that encrypts team secrets (AES-256-GCM). The signatures themselves are made in `mps/sign.rs`
//! (MPS RPC v1, ACS3, MNS), `oss/` (OSS V1, V4, PostObject policies) and `webhooks/sign.rs`
//! (Standard Webhooks).

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use anyhow::Context;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::config::AuthSettings;
use crate::secret::Secret;

/// Every byte but RFC 3986's unreserved `A-Z a-z 0-9 - _ . ~` is escaped (non-ASCII always is).
const RFC3986_RESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// RFC 3986 percent-encoding: UTF-8 bytes, only `A-Z a-z 0-9 - _ . ~` left as they are, every
/// other byte as `%XX` with upper-case hex (space is `%20`, never `+`).
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, RFC3986_RESERVED).to_string()
}

/// Strict `%XX` decoding to UTF-8; `None` on a malformed escape or invalid UTF-8. `+` stays `+`
/// (form decoding, where `+` is a space, is the caller's business).
pub fn percent_decode(s: &str) -> Option<String> {
    // The crate passes a malformed escape (`%zz`, `%4`, `%+A`) through as text; refuse it first.
    let bytes = s.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|text| text.into_owned())
}

/// Base64 of HMAC-SHA1 (RPC v1 keys it with `secret&`, MNS with the bare secret).
pub fn hmac_sha1_base64(key: &[u8], data: &str) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Raw HMAC-SHA256 (OSS V4 derives its signing key with it).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Hex SHA-256 (ACS3's hashed payload and canonical request).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// What a bearer token is stored as (like crates.io's API tokens): its hex SHA-256.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_rules() {
        assert_eq!(percent_encode("a b*~+/中"), "a%20b%2A~%2B%2F%E4%B8%AD");
        assert_eq!(
            percent_decode("a%20b%2A~%2B%2F%E4%B8%AD").unwrap(),
            "a b*~+/中"
        );
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%+A"), None);
        assert_eq!(percent_decode("%-f"), None);
    }

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
}
