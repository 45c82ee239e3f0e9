//! A string that must never be printed (`Debug` and `Display` redact it, and it has no
//! `Serialize`), and the constant-time comparison every secret check uses.

use serde::Deserialize;

#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The clear value. Call it only where the secret is used (signing, encryption), never to log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Compares secrets (signatures, token hashes) in constant time.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// A header value that carries a credential (an outgoing `Authorization`, a webhook signature):
/// `.header(name, Sensitive(&value))` marks it sensitive, so that no `Debug` of the request or
/// its headers (reqwest's, hyper's, a tracing field's) prints it. An invalid value fails the
/// request at `send` exactly as a plain string would.
pub struct Sensitive<'a>(pub &'a str);

impl TryFrom<Sensitive<'_>> for reqwest::header::HeaderValue {
    type Error = reqwest::header::InvalidHeaderValue;

    fn try_from(s: Sensitive<'_>) -> Result<Self, Self::Error> {
        let mut v = reqwest::header::HeaderValue::from_str(s.0)?;
        v.set_sensitive(true);
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn a_sensitive_header_is_not_printed_with_its_request() {
        let client = reqwest::Client::new();
        let plain = client
            .post("http://127.0.0.1:9/")
            .header("authorization", "ACS3-HMAC-SHA256 Signature=deadbeef")
            .build()
            .unwrap();
        assert!(format!("{plain:?}").contains("deadbeef"), "{plain:?}");
        let marked = client
            .post("http://127.0.0.1:9/")
            .header(
                "authorization",
                Sensitive("ACS3-HMAC-SHA256 Signature=deadbeef"),
            )
            .build()
            .unwrap();
        assert!(marked.headers()["authorization"].is_sensitive());
        assert!(!format!("{marked:?}").contains("deadbeef"), "{marked:?}");
        assert!(!format!("{:?}", marked.headers()).contains("deadbeef"));
        // Invalid values still fail the request, as before.
        assert!(client
            .post("http://127.0.0.1:9/")
            .header("authorization", Sensitive("bad\nvalue"))
            .build()
            .is_err());
    }
}
