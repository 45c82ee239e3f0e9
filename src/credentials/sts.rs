//! STS (API version 2015-04-01): `AssumeRole` (RPC v1 signed with the source credential, its
//! token as the signed `SecurityToken` when it has one) and `AssumeRoleWithOIDC` (unsigned; the
//! OIDC token file is read again on every call, as RRSA rotates it), as `credentials-go`'s
//! `ram_role_arn.go` and `oidc.go` send them: POST to the endpoint, common parameters in the
//! query, the action's in a form body.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{Credential, CredentialError, Provider};
use crate::crypto::{hmac_sha1_base64, percent_encode};
use crate::secret::Secret;

pub const STS_VERSION: &str = "2015-04-01";

/// The STS endpoint as the SDKs choose it: an explicit one (`ALIBABA_CLOUD_STS_ENDPOINT`, a host
/// or a URL), else `sts.<region>.aliyuncs.com` for `ALIBABA_CLOUD_STS_REGION` (`sts-vpc.` with
/// `ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED`), else `sts.aliyuncs.com`. Always a URL.
pub fn endpoint(explicit: Option<&str>, region: Option<&str>, vpc: bool) -> String {
    let host = match (
        explicit.filter(|e| !e.is_empty()),
        region.filter(|r| !r.is_empty()),
    ) {
        (Some(e), _) => e.trim_end_matches('/').to_string(),
        (None, Some(r)) if vpc => format!("sts-vpc.{r}.aliyuncs.com"),
        (None, Some(r)) => format!("sts.{r}.aliyuncs.com"),
        (None, None) => "sts.aliyuncs.com".to_string(),
    };
    if host.contains("://") {
        host
    } else {
        format!("https://{host}")
    }
}

/// What a role session asks for (`AssumeRole` and `AssumeRoleWithOIDC`).
#[derive(Debug, Clone)]
pub struct RoleSession {
    pub role_arn: String,
    pub session_name: String,
    pub duration_s: u64,
    pub policy: Option<String>,
    pub external_id: Option<String>,
}

impl RoleSession {
    fn form(&self) -> BTreeMap<String, String> {
        let mut f = BTreeMap::new();
        f.insert("RoleArn".into(), self.role_arn.clone());
        f.insert("RoleSessionName".into(), self.session_name.clone());
        f.insert("DurationSeconds".into(), self.duration_s.to_string());
        if let Some(p) = self.policy.as_ref().filter(|p| !p.is_empty()) {
            f.insert("Policy".into(), p.clone());
        }
        f
    }
}

/// An STS endpoint and the HTTP client that reaches it (1 s connect, as the SDKs).
#[derive(Clone, Debug)]
pub struct Sts {
    pub endpoint: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsAnswer {
    credentials: Option<StsCredentials>,
    code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StsCredentials {
    pub access_key_id: String,
    pub access_key_secret: String,
    pub security_token: String,
    pub expiration: String,
}

impl StsCredentials {
    pub fn into_credential(self, who: &'static str) -> Result<Credential, CredentialError> {
        let exp = chrono::DateTime::parse_from_rfc3339(&self.expiration).map_err(|e| {
            CredentialError::new(who, format!("bad Expiration {:?}: {e}", self.expiration))
        })?;
        Ok(Credential {
            access_key_id: self.access_key_id,
            access_key_secret: Secret::new(self.access_key_secret),
            security_token: Some(Secret::new(self.security_token)),
            expiration: Some(exp.to_utc()),
        })
    }
}

impl Sts {
    pub fn new(endpoint: String, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1).min(timeout))
            .timeout(timeout)
            .user_agent(concat!("snapgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a plain HTTP client builds");
        Self { endpoint, http }
    }

    fn common(action: &str) -> BTreeMap<String, String> {
        let mut q = BTreeMap::new();
        q.insert("Action".into(), action.into());
        q.insert("Version".into(), STS_VERSION.into());
        q.insert("Format".into(), "JSON".into());
        q.insert(
            "Timestamp".into(),
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        );
        q
    }

    /// `AssumeRole` signed with `source` (RPC v1: the signature covers query and form).
    pub async fn assume_role(
        &self,
        source: &Credential,
        s: &RoleSession,
    ) -> Result<Credential, CredentialError> {
        let mut query = Self::common("AssumeRole");
        query.insert("SignatureMethod".into(), "HMAC-SHA1".into());
        query.insert("SignatureVersion".into(), "1.0".into());
        query.insert("SignatureNonce".into(), uuid::Uuid::new_v4().to_string());
        query.insert("AccessKeyId".into(), source.access_key_id.clone());
        if let Some(t) = source.token() {
            query.insert("SecurityToken".into(), t.to_string());
        }
        let mut form = s.form();
        if let Some(x) = s.external_id.as_ref().filter(|x| !x.is_empty()) {
            form.insert("ExternalId".into(), x.clone());
        }
        let mut all = query.clone();
        all.extend(form.clone());
        let sig = sign_v1(source.access_key_secret.expose(), "POST", &all);
        query.insert("Signature".into(), sig);
        self.post("ram_role_arn", &query, &form).await
    }

    /// `AssumeRoleWithOIDC`: unsigned, the OIDC token in the form.
    pub async fn assume_role_with_oidc(
        &self,
        provider_arn: &str,
        oidc_token: &str,
        s: &RoleSession,
    ) -> Result<Credential, CredentialError> {
        let query = Self::common("AssumeRoleWithOIDC");
        let mut form = s.form();
        form.insert("OIDCProviderArn".into(), provider_arn.into());
        form.insert("OIDCToken".into(), oidc_token.into());
        self.post("oidc_role_arn", &query, &form).await
    }

    async fn post(
        &self,
        who: &'static str,
        query: &BTreeMap<String, String>,
        form: &BTreeMap<String, String>,
    ) -> Result<Credential, CredentialError> {
        let url = format!("{}/?{}", self.endpoint.trim_end_matches('/'), encode(query));
        let resp = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(form))
            .send()
            .await
            // The URL carries a signature, not a secret; the error names the endpoint only.
            .map_err(|e| {
                CredentialError::new(
                    who,
                    format!("STS {} unreachable: {}", self.endpoint, e.without_url()),
                )
            })?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CredentialError::new(who, format!("STS answer cut short: {e}")))?;
        let answer: StsAnswer = serde_json::from_slice(&bytes).map_err(|_| {
            CredentialError::new(who, format!("STS answered HTTP {status} without JSON"))
        })?;
        match answer.credentials {
            Some(c) if status < 300 => c.into_credential(who),
            _ => Err(CredentialError::new(
                who,
                format!(
                    "STS refused (HTTP {status}): {}: {}",
                    answer.code.unwrap_or_default(),
                    answer.message.unwrap_or_default()
                ),
            )),
        }
    }
}

/// `k=v&…`, percent-encoded as RPC wants it.
fn encode(p: &BTreeMap<String, String>) -> String {
    p.iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// RPC v1: Base64 HMAC-SHA1 (`secret&`) of `METHOD&%2F&enc(canonicalized query)` (the same
/// algorithm as `mps::sign`, which is a layer above).
pub fn sign_v1(secret: &str, method: &str, params: &BTreeMap<String, String>) -> String {
    let sts = format!("{method}&%2F&{}", percent_encode(&encode(params)));
    hmac_sha1_base64(format!("{secret}&").as_bytes(), &sts)
}

/// A RAM role assumed from a source credential (a narrow key, or any other provider's).
pub struct RamRoleArn {
    pub sts: Sts,
    pub source: Box<dyn Provider>,
    pub session: RoleSession,
}

#[async_trait]
impl Provider for RamRoleArn {
    fn name(&self) -> &'static str {
        "ram_role_arn"
    }
    async fn fetch(&self) -> Result<Credential, CredentialError> {
        let source = self.source.fetch().await?;
        self.sts.assume_role(&source, &self.session).await
    }
}

/// RRSA: the OIDC token file (read again on every refresh) exchanged for a role's credential.
pub struct OidcRoleArn {
    pub sts: Sts,
    pub provider_arn: String,
    pub token_file: std::path::PathBuf,
    pub session: RoleSession,
}

#[async_trait]
impl Provider for OidcRoleArn {
    fn name(&self) -> &'static str {
        "oidc_role_arn"
    }
    async fn fetch(&self) -> Result<Credential, CredentialError> {
        let token = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|e| {
                CredentialError::new(
                    "oidc_role_arn",
                    format!(
                        "cannot read the OIDC token file {}: {e}",
                        self.token_file.display()
                    ),
                )
            })?;
        self.sts
            .assume_role_with_oidc(&self.provider_arn, token.trim(), &self.session)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_as_the_sdks_choose_them() {
        assert_eq!(endpoint(None, None, false), "https://sts.aliyuncs.com");
        assert_eq!(
            endpoint(None, Some("cn-beijing"), false),
            "https://sts.cn-beijing.aliyuncs.com"
        );
        assert_eq!(
            endpoint(None, Some("cn-beijing"), true),
            "https://sts-vpc.cn-beijing.aliyuncs.com"
        );
        assert_eq!(
            endpoint(Some("sts-vpc.cn-hangzhou.aliyuncs.com"), Some("x"), false),
            "https://sts-vpc.cn-hangzhou.aliyuncs.com"
        );
        assert_eq!(
            endpoint(Some("http://127.0.0.1:9/"), None, false),
            "http://127.0.0.1:9"
        );
    }
}
