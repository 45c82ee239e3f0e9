//! The chain: which provider `credentials.provider` (default `auto`) picks, in the official
//! order (`credentials-go` `providers/default.go`; the environment variables of each are mapped
//! onto `credentials.*` keys by `config.rs`):
//!
//! 1. a static key: `mps.access_key_id/secret` (`ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET`), with
//!    `ALIBABA_CLOUD_SECURITY_TOKEN` when set (`env_sts_token`); with `credentials.role_arn`
//!    (`ALIBABA_CLOUD_ROLE_ARN`) and no OIDC provider, the key is the source of an `AssumeRole`
//!    (`ram_role_arn`);
//! 2. OIDC / RRSA: role ARN, `ALIBABA_CLOUD_OIDC_PROVIDER_ARN`, `ALIBABA_CLOUD_OIDC_TOKEN_FILE`;
//! 3. the credentials file (`file.rs`), its profile's type;
//! 4. the ECS RAM role, when a role name is pinned (`ALIBABA_CLOUD_ECS_METADATA`). `auto` does
//!    not probe the metadata server otherwise (snapgate without credentials runs its emulator,
//!    and a probe would cost every such start a timeout): on ECS set `provider = "ecs_ram_role"`.
//!
//! Nothing found: `None` (the caller runs the built-in emulator).

use std::path::{Path, PathBuf};

use super::imds::EcsRamRole;
use super::sts::{OidcRoleArn, RamRoleArn, RoleSession, Sts};
use super::{file, Credential, CredentialError, Credentials, Fixed, Provider};
use crate::config::{CredentialsSettings, Settings};
use crate::secret::Secret;

fn nonempty(o: &Option<String>) -> Option<&str> {
    o.as_deref().filter(|s| !s.is_empty())
}

/// The providers' shared settings.
struct Ctx<'a> {
    c: &'a CredentialsSettings,
    sts: Sts,
}

impl Ctx<'_> {
    fn session(&self, role_arn: &str, name: Option<&str>, policy: Option<&str>) -> RoleSession {
        RoleSession {
            role_arn: role_arn.to_string(),
            session_name: name.unwrap_or(&self.c.role_session_name).to_string(),
            duration_s: self.c.duration_s,
            policy: policy.or(nonempty(&self.c.policy)).map(str::to_string),
            external_id: nonempty(&self.c.external_id).map(str::to_string),
        }
    }

    fn ecs(&self, role: Option<&str>) -> Box<dyn Provider> {
        Box::new(EcsRamRole::new(
            self.c.imds_endpoint.clone(),
            role.or(nonempty(&self.c.ecs_role_name)).map(str::to_string),
            !self.c.imds_v1_disabled,
        ))
    }

    fn oidc(&self) -> Option<Box<dyn Provider>> {
        let (role, arn, file) = (
            nonempty(&self.c.role_arn)?,
            nonempty(&self.c.oidc_provider_arn)?,
            nonempty(&self.c.oidc_token_file)?,
        );
        Some(Box::new(OidcRoleArn {
            sts: self.sts.clone(),
            provider_arn: arn.to_string(),
            token_file: file.into(),
            session: self.session(role, None, None),
        }))
    }

    /// A profile of the credentials file as a provider.
    fn profile(&self, path: &Path) -> Result<Box<dyn Provider>, CredentialError> {
        let p = file::load(path, &self.c.profile)?;
        let get = |k: &str| p.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let need = |k: &str| {
            get(k).ok_or_else(|| {
                CredentialError::new(
                    "credentials_file",
                    format!("{}: [{}] has no {k}", path.display(), self.c.profile),
                )
            })
        };
        let key = || -> Result<Credential, CredentialError> {
            Ok(Credential::key(
                need("access_key_id")?,
                Secret::new(need("access_key_secret")?),
            ))
        };
        Ok(match get("type").unwrap_or("access_key") {
            "access_key" => Box::new(Fixed(key()?, "credentials_file/access_key")),
            "ram_role_arn" => Box::new(RamRoleArn {
                sts: self.sts.clone(),
                source: Box::new(Fixed(key()?, "credentials_file/access_key")),
                session: self.session(need("role_arn")?, get("role_session_name"), get("policy")),
            }),
            "ecs_ram_role" => self.ecs(get("role_name")),
            "oidc_role_arn" => Box::new(OidcRoleArn {
                sts: self.sts.clone(),
                provider_arn: need("oidc_provider_arn")?.to_string(),
                token_file: get("oidc_token_file_path").or(get("oidc_token_file")).ok_or_else(|| {
                    CredentialError::new("credentials_file", "oidc_role_arn needs oidc_token_file_path")
                })?.into(),
                session: self.session(need("role_arn")?, get("role_session_name"), get("policy")),
            }),
            other => {
                return Err(CredentialError::new(
                    "credentials_file",
                    format!("{}: [{}] type {other:?} is not one of access_key, ram_role_arn, ecs_ram_role, oidc_role_arn", path.display(), self.c.profile),
                ))
            }
        })
    }
}

/// The static key of the settings (with the environment's STS token, when set).
fn static_key(settings: &Settings) -> Option<Box<dyn Provider>> {
    let id = settings.mps.access_key_id.clone()?;
    let secret = settings.mps.access_key_secret.clone()?;
    let mut cred = Credential::key(id, secret);
    match nonempty(&settings.credentials.security_token) {
        Some(t) => {
            cred.security_token = Some(Secret::new(t));
            Some(Box::new(Fixed(cred, "env_sts_token")))
        }
        None => Some(Box::new(Fixed(cred, "static"))),
    }
}

/// The credentials file to read: the configured one, else the first default path that exists.
fn file_path(c: &CredentialsSettings, home: Option<&Path>) -> Option<PathBuf> {
    if let Some(f) = nonempty(&c.file) {
        return Some(f.into());
    }
    file::default_paths(home?).into_iter().find(|p| p.exists())
}

/// The provider the settings name, or `None` when `auto` finds nothing.
pub fn provider(
    settings: &Settings,
    home: Option<&Path>,
) -> Result<Option<Box<dyn Provider>>, CredentialError> {
    let c = &settings.credentials;
    let ctx = Ctx {
        c,
        sts: Sts::new(
            super::sts::endpoint(
                nonempty(&c.sts_endpoint),
                nonempty(&c.sts_region),
                c.sts_vpc,
            ),
            std::time::Duration::from_millis(c.timeout_ms),
        ),
    };
    let missing = |what: &str| {
        CredentialError::new(
            "chain",
            format!("credentials.provider = {:?} needs {what}", c.provider),
        )
    };
    let assume = |source: Box<dyn Provider>, role: &str| -> Box<dyn Provider> {
        Box::new(RamRoleArn {
            sts: ctx.sts.clone(),
            source,
            session: ctx.session(role, None, None),
        })
    };
    let oidc_set = nonempty(&c.oidc_provider_arn).is_some();
    Ok(match c.provider.as_str() {
        "auto" => match (static_key(settings), nonempty(&c.role_arn)) {
            (Some(key), Some(role)) if !oidc_set => Some(assume(key, role)),
            (Some(key), _) => Some(key),
            (None, _) => match (ctx.oidc(), file_path(c, home)) {
                (Some(o), _) => Some(o),
                (None, Some(path)) => Some(ctx.profile(&path)?),
                (None, None) if nonempty(&c.ecs_role_name).is_some() && !c.ecs_metadata_disabled => Some(ctx.ecs(None)),
                _ => None,
            },
        },
        "static" => Some(static_key(settings).ok_or_else(|| missing("mps.access_key_id and mps.access_key_secret"))?),
        "ram_role_arn" => {
            let key = static_key(settings).ok_or_else(|| missing("a source key (mps.access_key_*)"))?;
            Some(assume(key, nonempty(&c.role_arn).ok_or_else(|| missing("credentials.role_arn"))?))
        }
        "oidc_role_arn" => Some(ctx.oidc().ok_or_else(|| missing("role_arn, oidc_provider_arn and oidc_token_file"))?),
        "credentials_file" => Some(ctx.profile(&file_path(c, home).ok_or_else(|| missing("a credentials file"))?)?),
        "ecs_ram_role" => Some(ctx.ecs(None)),
        other => return Err(CredentialError::new("chain", format!("credentials.provider {other:?} is not one of auto, static, ram_role_arn, oidc_role_arn, credentials_file, ecs_ram_role"))),
    })
}

/// Resolves the chain and fetches the first credential; logs which provider is in use (its
/// name and key id, never a secret). `None`: no credentials configured.
pub async fn resolve(settings: &Settings) -> Result<Option<Credentials>, CredentialError> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let Some(p) = provider(settings, home.as_deref())? else {
        return Ok(None);
    };
    let name = p.name();
    let creds = Credentials::start(p, settings.credentials.refresh_before_s).await?;
    let cur = creds.current();
    tracing::info!(provider = name, access_key_id = %cur.access_key_id, temporary = cur.security_token.is_some(), expiration = ?cur.expiration, "Alibaba Cloud credentials");
    Ok(Some(creds))
}
