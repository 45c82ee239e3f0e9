//! OSS upload callbacks (OSS API reference, "Callback"): after an upload with a `callback`
//! field, OSS POSTs `callbackBody` (its `${…}` variables filled) to `callbackUrl`, signed with
//! RSA over MD5: `authorization = base64(RSA-PKCS#1-v1.5-MD5(url_decode(path) + ?query +
//! "\n" + body))`, the query kept as sent, and names the public key in
//! `x-oss-pub-key-url` (base64 of the URL). OSS's key is 512 bits: `rsa` 0.9 verifies it
//! (0.10 and `ring` refuse keys that small), so this file pins `rsa` 0.9.
//!
//! `sign` is the emulator's (it holds a real key of its own), `verify` and
//! `pub_key_url_allowed` the gateway's. `fill` fills a body template as OSS does.

use base64::Engine;
use md5::{Digest, Md5};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};

use super::OssError;
use crate::crypto::percent_decode;

const B64: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::STANDARD;

/// What OSS is asked to call back: the URL, the body template and its type
/// (`application/x-www-form-urlencoded`, OSS's default, or `application/json`). In a JSON
/// template the variables stand unquoted (`{"object":${object},"size":${size}}`): OSS puts
/// each string in as a JSON string and `size` as a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackSpec {
    pub url: String,
    pub body: String,
    pub body_type: String,
}

pub const FORM: &str = "application/x-www-form-urlencoded";
pub const JSON: &str = "application/json";

impl CallbackSpec {
    /// The `callback` form field: base64 of `{"callbackUrl","callbackBody","callbackBodyType"}`.
    pub fn encode(&self) -> String {
        let json = serde_json::json!({
            "callbackUrl": self.url,
            "callbackBody": self.body,
            "callbackBodyType": self.body_type,
        });
        B64.encode(json.to_string())
    }

    /// Reads a `callback` field (OSS's `InvalidArgument` when it is not base64 JSON with a
    /// `callbackUrl` and a `callbackBody`). `callbackHost` and `callbackSNI` are accepted and
    /// not kept (the call goes to the URL's own host).
    pub fn decode(field: &str) -> Result<Self, OssError> {
        let bad = |why: &str| {
            OssError::invalid_argument(format!("The callback configuration is not valid: {why}."))
        };
        let raw = B64.decode(field.trim()).map_err(|_| bad("not base64"))?;
        let v: serde_json::Value = serde_json::from_slice(&raw).map_err(|_| bad("not JSON"))?;
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let url = s("callbackUrl")
            .filter(|u| !u.is_empty())
            .ok_or_else(|| bad("callbackUrl is missing"))?;
        let body = s("callbackBody").ok_or_else(|| bad("callbackBody is missing"))?;
        let body_type = s("callbackBodyType").unwrap_or_else(|| FORM.to_string());
        if body_type != FORM && body_type != JSON {
            return Err(bad(
                "callbackBodyType must be application/x-www-form-urlencoded or application/json",
            ));
        }
        Ok(Self {
            url,
            body,
            body_type,
        })
    }
}

/// The values OSS puts in a callback body.
#[derive(Debug, Clone, Default)]
pub struct Variables {
    pub bucket: String,
    pub object: String,
    pub etag: String,
    pub size: u64,
    pub mime_type: String,
    /// Custom `x:<name>` variables (PostObject: the form's `x:` fields), names with the `x:`.
    pub custom: Vec<(String, String)>,
}

/// Fills `${bucket}`, `${object}`, `${etag}`, `${size}`, `${mimeType}`, `${x:name}` (and the
/// `${imageInfo.*}` of non-images: empty) in a body template. Form bodies get each value
/// URL-encoded, JSON bodies JSON strings (`size` a number); an unknown variable is empty.
pub fn fill(template: &str, body_type: &str, v: &Variables) -> String {
    let json = body_type == JSON;
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = &after[..end];
        let value: Option<String> = match name {
            "bucket" => Some(v.bucket.clone()),
            "object" => Some(v.object.clone()),
            "etag" => Some(v.etag.clone()),
            "mimeType" => Some(v.mime_type.clone()),
            "size" => None,
            n => Some(
                v.custom
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, x)| x.clone())
                    .unwrap_or_default(),
            ),
        };
        match (value, json) {
            (None, _) => out.push_str(&v.size.to_string()),
            (Some(s), true) => out.push_str(&serde_json::Value::String(s).to_string()),
            (Some(s), false) => {
                out.push_str(&form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>())
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// What is signed: the path URL-decoded, the query (with its `?`) as sent, `\n`, the body.
fn signed_bytes(path_and_query: &str, body: &[u8]) -> Vec<u8> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut m = percent_decode(path)
        .unwrap_or_else(|| path.to_string())
        .into_bytes();
    if let Some(q) = query {
        m.push(b'?');
        m.extend_from_slice(q.as_bytes());
    }
    m.push(b'\n');
    m.extend_from_slice(body);
    m
}

/// The `authorization` header of a callback to `path_and_query` (the request target as sent,
/// e.g. `/callbacks/oss?x=1`) with `body`.
pub fn sign(key: &RsaPrivateKey, path_and_query: &str, body: &[u8]) -> String {
    let digest = Md5::digest(signed_bytes(path_and_query, body));
    let sig = key
        .sign(Pkcs1v15Sign::new::<Md5>(), &digest)
        .expect("an RSA key of at least 512 bits signs an MD5 digest");
    B64.encode(sig)
}

/// Why a callback does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("the public key is not an RSA public key in PEM")]
    BadKey,
    #[error("the authorization header is not base64")]
    BadEncoding,
    #[error("the signature does not match")]
    Mismatch,
}

/// Parses a PEM RSA public key: `BEGIN PUBLIC KEY` (what OSS publishes) or `BEGIN RSA PUBLIC
/// KEY`. Read leniently (any line length, CRLF), as OpenSSL reads it: a strict RFC 7468 parser
/// refuses a key file whose base64 is not wrapped at 64 columns.
pub fn parse_public_key(pem: &str) -> Result<RsaPublicKey, CallbackError> {
    let mut label = None;
    let mut b64 = String::new();
    for line in pem.lines().map(str::trim) {
        if let Some(l) = line.strip_prefix("-----BEGIN ") {
            label = Some(l.trim_end_matches('-').trim().to_string());
        } else if line.starts_with("-----END ") {
            break;
        } else if label.is_some() {
            b64.push_str(line);
        }
    }
    let der = B64.decode(b64).map_err(|_| CallbackError::BadKey)?;
    match label.as_deref() {
        Some("PUBLIC KEY") => {
            RsaPublicKey::from_public_key_der(&der).map_err(|_| CallbackError::BadKey)
        }
        Some("RSA PUBLIC KEY") => {
            RsaPublicKey::from_pkcs1_der(&der).map_err(|_| CallbackError::BadKey)
        }
        _ => Err(CallbackError::BadKey),
    }
}

/// Verifies a callback's `authorization` against the public key (PEM) named by
/// `x-oss-pub-key-url`. `body` must be the raw bytes received, never re-serialized.
pub fn verify(
    public_key_pem: &str,
    authorization_b64: &str,
    path_and_query: &str,
    body: &[u8],
) -> Result<(), CallbackError> {
    let key = parse_public_key(public_key_pem)?;
    let sig = B64
        .decode(authorization_b64.trim())
        .map_err(|_| CallbackError::BadEncoding)?;
    let digest = Md5::digest(signed_bytes(path_and_query, body));
    key.verify(Pkcs1v15Sign::new::<Md5>(), &digest, &sig)
        .map_err(|_| CallbackError::Mismatch)
}

/// The public key in PEM (`BEGIN PUBLIC KEY`, as OSS serves its own).
pub fn public_key_pem(key: &RsaPrivateKey) -> String {
    use rsa::pkcs8::EncodePublicKey;
    RsaPublicKey::from(key)
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .expect("an RSA public key encodes")
}

/// The `x-oss-pub-key-url` (already base64-decoded) must be an OSS key URL
/// (`http(s)://gosspublic.alicdn.com/…`), or — only when snapgate runs the emulator itself —
/// exactly the emulator's own key URL passed in `local`.
pub fn pub_key_url_allowed(url: &str, local: Option<&str>) -> bool {
    let oss = [
        "http://gosspublic.alicdn.com/",
        "https://gosspublic.alicdn.com/",
    ]
    .iter()
    .any(|p| url.starts_with(p) && url.len() > p.len() && !url.contains(['@', '\\']));
    oss || local.is_some_and(|l| l == url)
}

/// Decodes the `x-oss-pub-key-url` header (base64 of the URL).
pub fn decode_pub_key_url(header: &str) -> Option<String> {
    String::from_utf8(B64.decode(header.trim()).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors() -> serde_json::Value {
        crate::oss::post_policy::tests::vectors()["callback_rsa_md5"].clone()
    }

    fn oss_key_pem() -> String {
        let b64 = vectors()["oss_public_key_spki_b64"]
            .as_str()
            .unwrap()
            .to_string();
        format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
    }

    /// Both verified vectors pass with OSS's published 512-bit key; a changed byte fails.
    #[test]
    fn oss_vectors_verify_with_the_512_bit_key() {
        let pem = oss_key_pem();
        assert_eq!(
            rsa::traits::PublicKeyParts::size(&parse_public_key(&pem).unwrap()),
            64
        );
        for c in vectors()["cases"].as_array().unwrap() {
            let (pq, body, auth) = (
                c["path_and_query"].as_str().unwrap(),
                c["body"].as_str().unwrap(),
                c["authorization"].as_str().unwrap(),
            );
            assert_eq!(
                verify(&pem, auth, pq, body.as_bytes()),
                Ok(()),
                "{}",
                c["name"]
            );
            let mut tampered = body.as_bytes().to_vec();
            tampered[0] ^= 1;
            assert_eq!(
                verify(&pem, auth, pq, &tampered),
                Err(CallbackError::Mismatch)
            );
            assert_eq!(
                verify(&pem, auth, &format!("{pq}x"), body.as_bytes()),
                Err(CallbackError::Mismatch)
            );
        }
        assert_eq!(
            verify(&pem, "%%%", "/", b""),
            Err(CallbackError::BadEncoding)
        );
        assert_eq!(verify("nope", "AAAA", "/", b""), Err(CallbackError::BadKey));
    }

    /// A key of our own (512 bits like OSS's): what `sign` makes, `verify` accepts; the path
    /// is signed decoded, the query as sent.
    #[test]
    fn sign_then_verify_with_an_own_key() {
        let key = RsaPrivateKey::new(&mut rand::thread_rng(), 512).unwrap();
        let pem = public_key_pem(&key);
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        let sig = sign(&key, "/callbacks/a%20b?x=%2F1", b"{\"a\":1}");
        assert_eq!(
            verify(&pem, &sig, "/callbacks/a%20b?x=%2F1", b"{\"a\":1}"),
            Ok(())
        );
        assert_eq!(
            verify(&pem, &sig, "/callbacks/a b?x=%2F1", b"{\"a\":1}"),
            Ok(())
        );
        assert_eq!(
            verify(&pem, &sig, "/callbacks/a%20b?x=/1", b"{\"a\":1}"),
            Err(CallbackError::Mismatch)
        );
    }

    #[test]
    fn key_urls() {
        let local = "http://127.0.0.1:8081/_emulator/oss/callback_pub_key.pem";
        assert!(pub_key_url_allowed(
            "http://gosspublic.alicdn.com/callback_pub_key_v1.pem",
            None
        ));
        assert!(pub_key_url_allowed(
            "https://gosspublic.alicdn.com/callback_pub_key_v1.pem",
            None
        ));
        assert!(pub_key_url_allowed(local, Some(local)));
        for bad in [
            local,
            "https://gosspublic.alicdn.com.evil.example/k.pem",
            "https://evil.example/gosspublic.alicdn.com/k.pem",
            "https://gosspublic.alicdn.com@evil.example/k.pem",
            "https://gosspublic.alicdn.com/",
            "ftp://gosspublic.alicdn.com/k.pem",
        ] {
            assert!(!pub_key_url_allowed(bad, None), "{bad}");
        }
        assert!(!pub_key_url_allowed(
            "http://127.0.0.1:9/other.pem",
            Some(local)
        ));
        assert_eq!(
            decode_pub_key_url(&B64.encode(local)).as_deref(),
            Some(local)
        );
    }

    #[test]
    fn spec_round_trip_and_fill() {
        let spec = CallbackSpec {
            url: "http://127.0.0.1:8080/callbacks/oss".into(),
            body: r#"{"bucket":${bucket},"object":${object},"size":${size},"mimeType":${mimeType},"etag":${etag},"upload":${x:upload_id}}"#.into(),
            body_type: JSON.into(),
        };
        assert_eq!(CallbackSpec::decode(&spec.encode()).unwrap(), spec);
        let v = Variables {
            bucket: "media".into(),
            object: "up/a \"b\".mp4".into(),
            etag: "D41D8CD98F00B204E9800998ECF8427E".into(),
            size: 12,
            mime_type: "video/mp4".into(),
            custom: vec![("x:upload_id".into(), "u1".into())],
        };
        let body = fill(&spec.body, JSON, &v);
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["object"], "up/a \"b\".mp4");
        assert_eq!(parsed["size"], 12);
        assert_eq!(parsed["upload"], "u1");
        assert_eq!(
            fill("object=${object}&size=${size}&v=${x:none}", FORM, &v),
            "object=up%2Fa+%22b%22.mp4&size=12&v="
        );
        assert!(CallbackSpec::decode("bm9wZQ==").is_err());
    }
}
