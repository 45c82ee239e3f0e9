//! The ECS RAM role from the instance metadata server, as `credentials-go`'s `ecs_ram_role.go`
//! reads it: an IMDSv2 token (`PUT /latest/api/token`, `X-aliyun-ecs-metadata-token-ttl-seconds`),
//! the role name (`GET /latest/meta-data/ram/security-credentials/`, unless pinned), then the
//! role's credential (`GET …/security-credentials/<role>`), each with the token in
//! `X-aliyun-ecs-metadata-token`. Without a token (an old server), IMDSv1 unless disabled.
//! 1 s connect and read timeouts.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::sts::StsCredentials;
use super::{Credential, CredentialError, Provider};

pub const DEFAULT_ENDPOINT: &str = "http://100.100.100.200";
const TOKEN_TTL_S: &str = "21600";
const WHO: &str = "ecs_ram_role";

pub struct EcsRamRole {
    pub endpoint: String,
    /// Pinned role name (`ALIBABA_CLOUD_ECS_METADATA`); else asked of the server.
    pub role_name: Option<String>,
    /// Go on without an IMDSv2 token when the server gives none.
    pub v1_fallback: bool,
    http: reqwest::Client,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    code: Option<String>,
    #[serde(flatten)]
    creds: Option<StsCredentials>,
}

fn err(message: impl Into<String>) -> CredentialError {
    CredentialError::new(WHO, message)
}

impl EcsRamRole {
    pub fn new(endpoint: String, role_name: Option<String>, v1_fallback: bool) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(2))
            .build()
            .expect("a plain HTTP client builds");
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            role_name: role_name.filter(|r| !r.is_empty()),
            v1_fallback,
            http,
        }
    }

    async fn token(&self) -> Result<Option<String>, CredentialError> {
        let out = self
            .http
            .put(format!("{}/latest/api/token", self.endpoint))
            .header("X-aliyun-ecs-metadata-token-ttl-seconds", TOKEN_TTL_S)
            .send()
            .await;
        match out {
            Ok(r) if r.status().is_success() => Ok(Some(
                r.text()
                    .await
                    .map_err(|e| err(format!("IMDS token: {e}")))?,
            )),
            other if self.v1_fallback => {
                let why = match other {
                    Ok(r) => format!("HTTP {}", r.status()),
                    Err(e) => e.to_string(),
                };
                tracing::debug!(%why, "no IMDSv2 token: IMDSv1");
                Ok(None)
            }
            Ok(r) => Err(err(format!(
                "IMDSv2 token refused: HTTP {} (IMDSv1 disabled)",
                r.status()
            ))),
            Err(e) => Err(err(format!(
                "metadata server {} unreachable: {e}",
                self.endpoint
            ))),
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Result<String, CredentialError> {
        let mut req = self.http.get(format!("{}{path}", self.endpoint));
        if let Some(t) = token {
            req = req.header("X-aliyun-ecs-metadata-token", crate::secret::Sensitive(t));
        }
        let r = req.send().await.map_err(|e| {
            err(format!(
                "metadata server {} unreachable: {e}",
                self.endpoint
            ))
        })?;
        let status = r.status();
        let text = r.text().await.map_err(|e| err(format!("{path}: {e}")))?;
        if !status.is_success() {
            return Err(err(format!("GET {path}: HTTP {status}")));
        }
        Ok(text)
    }
}

#[async_trait]
impl Provider for EcsRamRole {
    fn name(&self) -> &'static str {
        WHO
    }

    async fn fetch(&self) -> Result<Credential, CredentialError> {
        let token = self.token().await?;
        let base = "/latest/meta-data/ram/security-credentials/";
        let role = match &self.role_name {
            Some(r) => r.clone(),
            None => {
                let listed = self.get(base, token.as_deref()).await?;
                listed
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .ok_or_else(|| err("no RAM role is attached to this instance"))?
                    .to_string()
            }
        };
        let body = self.get(&format!("{base}{role}"), token.as_deref()).await?;
        let a: Answer = serde_json::from_str(&body)
            .map_err(|e| err(format!("role {role}: not the credentials JSON: {e}")))?;
        match (a.code.as_deref(), a.creds) {
            (Some("Success"), Some(c)) => c.into_credential(WHO),
            (code, _) => Err(err(format!("role {role}: Code {code:?}"))),
        }
    }
}
