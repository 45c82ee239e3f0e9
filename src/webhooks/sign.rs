//! Standard Webhooks signing (<https://www.standardwebhooks.com>), the one implementation:
//! secrets are `whsec_` + base64 of random bytes, the key is the base64-decoded part;
//! `webhook-signature` is `v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">`,
//! several space-separated during a secret rotation (old and new both sign).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::secret::Secret;

pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a new secret (Standard Webhooks asks for 24 to 64).
const SECRET_BYTES: usize = 32;

/// A new `whsec_…` secret.
pub fn new_secret() -> Secret {
    let mut key = [0u8; SECRET_BYTES];
    rand::thread_rng().fill_bytes(&mut key);
    Secret::new(format!("{SECRET_PREFIX}{}", B64.encode(key)))
}

/// The HMAC key of a `whsec_…` secret.
pub fn secret_key(secret: &Secret) -> anyhow::Result<Vec<u8>> {
    let s = secret.expose();
    let b64 = s.strip_prefix(SECRET_PREFIX).unwrap_or(s);
    B64.decode(b64)
        .map_err(|_| anyhow::anyhow!("a webhook secret is not whsec_ + base64"))
}

/// One `v1,<base64>` signature of a message.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one signature per key, space-separated.
pub fn signature_header(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| sign(k, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors of the Standard Webhooks reference libraries (the first one recomputed with the
    /// Python `standardwebhooks` package's `Webhook.sign`).
    #[test]
    fn the_reference_vector() {
        let key = secret_key(&Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).unwrap();
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        // The Rust `standardwebhooks` crate's `test_sign` vector.
        let key = secret_key(&Secret::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")).unwrap();
        let sig = sign(
            &key,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn several_keys_sign_space_separated_and_secrets_are_fresh() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with("whsec_"));
        let keys = [secret_key(&a).unwrap(), secret_key(&b).unwrap()];
        assert_eq!(keys[0].len(), 32);
        let h = signature_header(&keys, "evt_1", 1, b"{}");
        let parts: Vec<&str> = h.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&keys[0], "evt_1", 1, b"{}"));
        assert_ne!(parts[0], parts[1]);
    }
}
