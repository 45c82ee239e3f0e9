//! The MPS RPC client: POST `/` with every parameter in the query and an empty body, exactly as
//! the official SDKs send it; a fresh nonce and timestamp on every attempt.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::Instrument;

use super::error::{
    classify_code, ErrorClass, MpsError, CONNECT_FAILED, INVALID_RESPONSE, OUTCOME_UNKNOWN,
};
use super::sign;
use super::wire::{
    ListQuery, MpsErrorBody, QuerySnapshotJobListResponse, SubmitParams, SubmitSnapshotJobResponse,
};
pub use crate::config::SignatureMethod;
use crate::secret::Sensitive;

pub const API_VERSION: &str = "2014-06-18";

/// A parsed answer plus what MPS sent, verbatim.
#[derive(Debug, Clone)]
pub struct MpsResponse<T> {
    pub body: T,
    pub raw: Value,
    pub request_id: String,
    pub http_status: u16,
}

/// The two snapshot actions, behind a trait so tests and the emulator can stand in.
#[async_trait]
pub trait MpsApi: Send + Sync + 'static {
    async fn submit_snapshot_job(
        &self,
        p: &SubmitParams,
    ) -> Result<MpsResponse<SubmitSnapshotJobResponse>, MpsError>;
    /// By 1 to 10 ids.
    async fn query_snapshot_jobs(
        &self,
        ids: &[String],
    ) -> Result<MpsResponse<QuerySnapshotJobListResponse>, MpsError>;
    /// One page of jobs by pipeline, state and creation window.
    async fn list_snapshot_jobs(
        &self,
        q: &ListQuery,
    ) -> Result<MpsResponse<QuerySnapshotJobListResponse>, MpsError>;
}

#[derive(Debug, Clone)]
pub struct MpsClientConfig {
    pub endpoint: String,
    /// The credential chain: each call signs with its current credential.
    pub credentials: crate::credentials::Credentials,
    pub signature: SignatureMethod,
    pub region_id: Option<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// `https://mts.<region>.aliyuncs.com`.
pub fn regional_endpoint(region: &str) -> String {
    format!("https://mts.{region}.aliyuncs.com")
}

pub struct MpsClient {
    http: reqwest::Client,
    cfg: MpsClientConfig,
    host: String,
}

impl std::fmt::Debug for MpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpsClient").field("cfg", &self.cfg).finish()
    }
}

use super::wire::format_time;

impl MpsClient {
    pub fn new(cfg: MpsClientConfig) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(&cfg.endpoint)
            .map_err(|e| anyhow::anyhow!("mps endpoint {:?} is not a URL: {e}", cfg.endpoint))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => anyhow::bail!("mps endpoint has no host"),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("snapgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, cfg, host })
    }

    fn url(&self, query: &BTreeMap<String, String>) -> String {
        let q: Vec<String> = query
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    crate::crypto::percent_encode(k),
                    crate::crypto::percent_encode(v)
                )
            })
            .collect();
        format!(
            "{}/?{}",
            self.cfg.endpoint.trim_end_matches('/'),
            q.join("&")
        )
    }

    /// Signs and sends one action in an `mps.call` span that records MPS's answer: its request
    /// id, code (`Success` or MPS's error code) and HTTP status; a submit's span carries the
    /// gateway job id too (read back from the `UserData` it sends).
    async fn call<T: DeserializeOwned>(
        &self,
        action: &'static str,
        api: BTreeMap<String, String>,
    ) -> Result<MpsResponse<T>, MpsError> {
        use tracing::field::Empty;
        let span = tracing::info_span!(
            "mps.call",
            action,
            job_id = Empty,
            mps_request_id = Empty,
            code = Empty,
            http_status = Empty
        );
        if let Some(id) = api
            .get("UserData")
            .and_then(|u| crate::domain::user_data::gateway_id(u))
        {
            span.record("job_id", tracing::field::display(id));
        }
        let out = self.send(action, api).instrument(span.clone()).await;
        let (request_id, code, status) = match &out {
            Ok(r) => (Some(r.request_id.as_str()), "Success", Some(r.http_status)),
            Err(e) => (e.request_id.as_deref(), e.code.as_str(), e.http_status),
        };
        if let Some(id) = request_id.filter(|id| !id.is_empty()) {
            span.record("mps_request_id", id);
        }
        span.record("code", code);
        if let Some(status) = status {
            span.record("http_status", status);
        }
        out
    }

    /// Signs and sends one action; every attempt gets a new nonce and timestamp.
    async fn send<T: DeserializeOwned>(
        &self,
        action: &'static str,
        api: BTreeMap<String, String>,
    ) -> Result<MpsResponse<T>, MpsError> {
        let cred = self.cfg.credentials.get().await.map_err(|e| {
            MpsError::transport(
                super::error::CREDENTIALS_UNAVAILABLE,
                format!("{action}: no valid credential: {e}"),
            )
        })?;
        let (request, client_sts) = self.signed_request(&cred, action, api);
        let response = request
            .header("content-length", "0")
            .send()
            .await
            .map_err(|e| transport_error(action, e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("x-acs-retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        let bytes = super::read_bounded(response, super::MAX_ANSWER_BYTES)
            .await
            .map_err(|e| {
                MpsError::transport(OUTCOME_UNKNOWN, format!("{action}: answer cut short: {e}"))
            })?;
        let raw = classify(action, status, &bytes, &client_sts, retry_after)?;
        decode(action, status, raw)
    }

    /// The POST of one action, signed as configured (V1: every parameter and the signature in
    /// the query; ACS3: the action in headers and an `Authorization` header), with the string
    /// it signed (for `SignatureDoesNotMatch` diagnostics).
    fn signed_request(
        &self,
        cred: &crate::credentials::Credential,
        action: &'static str,
        api: BTreeMap<String, String>,
    ) -> (reqwest::RequestBuilder, String) {
        let secret = cred.access_key_secret.expose();
        match self.cfg.signature {
            SignatureMethod::V1 => {
                let mut params = api;
                params.insert("Action".into(), action.into());
                params.insert("Version".into(), API_VERSION.into());
                params.insert("Format".into(), "JSON".into());
                params.insert("AccessKeyId".into(), cred.access_key_id.clone());
                // A temporary credential's token is a signed parameter.
                if let Some(t) = cred.token() {
                    params.insert("SecurityToken".into(), t.to_string());
                }
                params.insert("SignatureMethod".into(), "HMAC-SHA1".into());
                params.insert("SignatureVersion".into(), "1.0".into());
                params.insert("SignatureNonce".into(), sign::new_nonce());
                params.insert("Timestamp".into(), sign::timestamp_now());
                if let Some(r) = &self.cfg.region_id {
                    params.insert("RegionId".into(), r.clone());
                }
                let sts = sign::string_to_sign_v1("POST", &params);
                let signature = sign::sign_v1(secret, &sts);
                let mut url = self.url(&params);
                url.push_str("&Signature=");
                url.push_str(&crate::crypto::percent_encode(&signature));
                (self.http.post(url), sts)
            }
            SignatureMethod::Acs3 => {
                let mut headers = BTreeMap::new();
                headers.insert("host".to_string(), self.host.clone());
                headers.insert("x-acs-action".to_string(), action.to_string());
                headers.insert("x-acs-version".to_string(), API_VERSION.to_string());
                headers.insert("x-acs-date".to_string(), sign::timestamp_now());
                headers.insert("x-acs-signature-nonce".to_string(), sign::new_nonce());
                headers.insert(
                    "x-acs-content-sha256".to_string(),
                    sign::EMPTY_BODY_SHA256.to_string(),
                );
                headers.insert("accept".to_string(), "application/json".to_string());
                if let Some(t) = cred.token() {
                    // Every `x-acs-*` header is signed, the token too.
                    headers.insert("x-acs-security-token".to_string(), t.to_string());
                }
                let cr = sign::canonical_request_acs3(
                    "POST",
                    "/",
                    &api,
                    &headers,
                    sign::EMPTY_BODY_SHA256,
                );
                let sts = sign::string_to_sign_acs3(&cr);
                let signature = sign::sign_acs3(secret, &sts);
                let auth = sign::authorization_acs3(&cred.access_key_id, &headers, &signature);
                let mut req = self.http.post(self.url(&api));
                for (k, v) in &headers {
                    if k == "x-acs-security-token" {
                        req = req.header(k.as_str(), Sensitive(v));
                    } else if k != "host" {
                        req = req.header(k.as_str(), v.as_str());
                    }
                }
                (req.header("authorization", Sensitive(&auth)), sts)
            }
        }
    }
}

/// MPS's answer (`bytes`, with HTTP `status`) as its JSON body, or as the `MpsError` it
/// carries: a body that is not JSON, an HTTP error, or an MPS error code.
// The `MpsError` that `send` and every `MpsApi` call return, unboxed as there.
#[allow(clippy::result_large_err)]
fn classify(
    action: &'static str,
    status: u16,
    bytes: &[u8],
    client_sts: &str,
    retry_after: Option<Duration>,
) -> Result<Value, MpsError> {
    let raw: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(_) if (200..300).contains(&status) => {
            return Err(MpsError::transport(
                INVALID_RESPONSE,
                format!("{action}: HTTP {status} with a body that is not JSON"),
            ));
        }
        Err(_) => {
            let mut e = MpsError::transport(
                "UnknownError",
                format!("{action}: HTTP {status} with a body that is not JSON"),
            );
            e.http_status = Some(status);
            // A 5xx page, or a proxy's 408/429, without MPS's body comes from a proxy or
            // load balancer in front of MPS: the request may have reached MPS, so nothing is
            // sent again before a lookup.
            e.class = if status >= 500 || status == 408 || status == 429 {
                ErrorClass::OutcomeUnknown
            } else {
                ErrorClass::Fatal
            };
            return Err(e);
        }
    };
    if !(200..300).contains(&status)
        || raw.get("Code").is_some()
            && raw.get("SnapshotJob").is_none()
            && raw.get("SnapshotJobList").is_none()
    {
        let body: MpsErrorBody = serde_json::from_value(raw.clone()).unwrap_or_default();
        let code = body.code.clone().unwrap_or_else(|| format!("Http{status}"));
        let mut class = classify_code(&code);
        if body.code.is_none() && status >= 500 {
            class = ErrorClass::OutcomeUnknown;
        }
        let message = body.message.clone().unwrap_or_default();
        if code == "SignatureDoesNotMatch" {
            let server_sts = message
                .split("server string to sign is:")
                .nth(1)
                .unwrap_or("")
                .trim();
            tracing::warn!(action, mps_request_id = body.request_id.as_deref().unwrap_or("-"),
                client_string_to_sign = %client_sts, server_string_to_sign = %server_sts,
                same = client_sts == server_sts,
                "SignatureDoesNotMatch: equal strings mean a wrong secret, different ones a canonicalization difference");
        }
        return Err(MpsError {
            class,
            code,
            message,
            http_status: Some(status),
            request_id: body.request_id,
            host_id: body.host_id,
            recommend: body.recommend,
            raw: Some(raw),
            retry_after,
        });
    }
    Ok(raw)
}

/// A successful answer's JSON body as `T`, with its request id.
#[allow(clippy::result_large_err)]
fn decode<T: DeserializeOwned>(
    action: &'static str,
    status: u16,
    raw: Value,
) -> Result<MpsResponse<T>, MpsError> {
    let body: T = serde_json::from_value(raw.clone()).map_err(|e| {
        MpsError::transport(
            INVALID_RESPONSE,
            format!("{action}: unexpected answer shape: {e}"),
        )
    })?;
    let request_id = raw
        .get("RequestId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    tracing::debug!(action, mps_request_id = %request_id, status, "MPS answered");
    Ok(MpsResponse {
        body,
        raw,
        request_id,
        http_status: status,
    })
}

/// Before the request was written: retryable. After: the outcome is unknown. The message never
/// carries the URL: it holds the gateway's AccessKeyId and signature.
fn transport_error(action: &str, e: reqwest::Error) -> MpsError {
    let e = e.without_url();
    if e.is_builder() {
        // The request could not even be built: sending it again cannot help.
        let mut err = MpsError::transport("Transport.InvalidRequest", format!("{action}: {e}"));
        err.class = ErrorClass::Fatal;
        err
    } else if e.is_connect() {
        MpsError::transport(CONNECT_FAILED, format!("{action}: could not connect: {e}"))
    } else if e.is_timeout() {
        MpsError::transport(OUTCOME_UNKNOWN, format!("{action}: no answer in time"))
    } else {
        MpsError::transport(
            OUTCOME_UNKNOWN,
            format!("{action}: connection lost before the answer: {e}"),
        )
    }
}

#[async_trait]
impl MpsApi for MpsClient {
    async fn submit_snapshot_job(
        &self,
        p: &SubmitParams,
    ) -> Result<MpsResponse<SubmitSnapshotJobResponse>, MpsError> {
        let mut q = BTreeMap::new();
        q.insert("Input".to_string(), p.input.clone());
        q.insert("SnapshotConfig".to_string(), p.snapshot_config.clone());
        if let Some(v) = &p.pipeline_id {
            q.insert("PipelineId".to_string(), v.clone());
        }
        if let Some(v) = &p.user_data {
            q.insert("UserData".to_string(), v.clone());
        }
        self.call("SubmitSnapshotJob", q).await
    }

    async fn query_snapshot_jobs(
        &self,
        ids: &[String],
    ) -> Result<MpsResponse<QuerySnapshotJobListResponse>, MpsError> {
        if ids.is_empty() || ids.len() > 10 {
            let mut e = MpsError::transport(
                "InvalidParameter.OutOfRange",
                "QuerySnapshotJobList takes 1 to 10 ids",
            );
            e.class = ErrorClass::Fatal;
            return Err(e);
        }
        let mut q = BTreeMap::new();
        q.insert("SnapshotJobIds".to_string(), ids.join(","));
        self.call("QuerySnapshotJobList", q).await
    }

    async fn list_snapshot_jobs(
        &self,
        l: &ListQuery,
    ) -> Result<MpsResponse<QuerySnapshotJobListResponse>, MpsError> {
        let mut q = BTreeMap::new();
        if let Some(v) = &l.pipeline_id {
            q.insert("PipelineId".to_string(), v.clone());
        }
        if let Some(v) = &l.state {
            q.insert("State".to_string(), v.clone());
        }
        if let Some(t) = l.created_from {
            q.insert("StartOfJobCreatedTimeRange".to_string(), format_time(t));
        }
        if let Some(t) = l.created_to {
            q.insert("EndOfJobCreatedTimeRange".to_string(), format_time(t));
        }
        if let Some(v) = &l.next_page_token {
            q.insert("NextPageToken".to_string(), v.clone());
        }
        if let Some(n) = l.maximum_page_size {
            q.insert("MaximumPageSize".to_string(), n.to_string());
        }
        self.call("QuerySnapshotJobList", q).await
    }
}

/// Finds a job by id in a list answer's raw body.
pub fn raw_job(raw: &Value, id: &str) -> Option<Value> {
    raw.pointer("/SnapshotJobList/SnapshotJob")?
        .as_array()?
        .iter()
        .find(|j| j.get("Id").and_then(Value::as_str) == Some(id))
        .cloned()
}
