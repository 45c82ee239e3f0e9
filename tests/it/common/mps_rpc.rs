//! Requests to snapgate's MPS-compatible endpoint signed with `snapgate::mps::sign`, as the
//! official SDKs sign them (for the tests the Python SDKs cannot drive: replays, clocks, limits).

use std::collections::BTreeMap;

use snapgate::mps::sign;

/// The parameters every v1 call carries (`Action`, `Version`, `Format`, `AccessKeyId`, the
/// signature method and version, a fresh nonce and timestamp), for tests that add to or change
/// any of them before signing with [`signed_v1_query`].
pub fn v1_params(action: &str, key_id: &str) -> BTreeMap<String, String> {
    [
        ("Action", action),
        ("Version", "2014-06-18"),
        ("Format", "JSON"),
        ("AccessKeyId", key_id),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([
        ("SignatureNonce".to_string(), sign::new_nonce()),
        ("Timestamp".to_string(), sign::timestamp_now()),
    ])
    .collect()
}

/// `params` (all of them, as given: any `Signature` among them is replaced) signed v1 with
/// `secret` for `method`: the query string, parameters in order, each percent-encoded.
pub fn signed_v1_query(method: &str, params: &BTreeMap<String, String>, secret: &str) -> String {
    let mut all = params.clone();
    all.remove("Signature");
    let sig = sign::sign_v1(secret, &sign::string_to_sign_v1(method, &all));
    all.insert("Signature".into(), sig);
    v1_query(&all)
}

/// `params` as a query string, in order, each percent-encoded (nothing signed or added).
pub fn v1_query(params: &BTreeMap<String, String>) -> String {
    params
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                snapgate::crypto::percent_encode(k),
                snapgate::crypto::percent_encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A v1 (HMAC-SHA1) call: every parameter in the query, as the legacy SDK sends it.
pub struct V1Call<'a> {
    pub method: &'a str,
    pub action: &'a str,
    pub params: &'a [(&'a str, &'a str)],
    pub key_id: &'a str,
    pub secret: &'a str,
    pub nonce: String,
    pub timestamp: String,
}

impl<'a> V1Call<'a> {
    pub fn new(
        action: &'a str,
        params: &'a [(&'a str, &'a str)],
        key_id: &'a str,
        secret: &'a str,
    ) -> Self {
        Self {
            method: "POST",
            action,
            params,
            key_id,
            secret,
            nonce: sign::new_nonce(),
            timestamp: sign::timestamp_now(),
        }
    }

    /// The signed query string.
    pub fn query(&self) -> String {
        let mut all: BTreeMap<String, String> = self
            .params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in [
            ("Action", self.action),
            ("Version", "2014-06-18"),
            ("Format", "JSON"),
            ("AccessKeyId", self.key_id),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", self.nonce.as_str()),
            ("Timestamp", self.timestamp.as_str()),
        ] {
            all.insert(k.into(), v.into());
        }
        signed_v1_query(self.method, &all, self.secret)
    }

    pub fn request(&self, http: &reqwest::Client, base: &str) -> reqwest::RequestBuilder {
        let m = reqwest::Method::from_bytes(self.method.as_bytes()).unwrap();
        http.request(m, format!("{base}/?{}", self.query()))
    }
}
