//! Where snapgate's Alibaba Cloud credentials come from: one provider chain (`chain.rs`, in the
//! order and with the names of the official `credentials-go`), read by every signer (MPS v1 and
//! ACS3, MNS, OSS V1/V4 headers, presigned URLs, PostObject policies, the `HEAD` of uploads).
//!
//! - a static key (`mps.access_key_*` or `ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET`), with
//!   `ALIBABA_CLOUD_SECURITY_TOKEN` when that key is itself a temporary one;
//! - the credentials file (`file.rs`): `access_key`, `ram_role_arn`, `ecs_ram_role`,
//!   `oidc_role_arn` profiles;
//! - STS `AssumeRole` from a source credential and `AssumeRoleWithOIDC` (RRSA) (`sts.rs`);
//! - the ECS instance metadata server's RAM role (`imds.rs`).
//!
//! [`Credentials`] holds the current credential. Temporary ones are refreshed in the background
//! (`worker::credentials` drives [`Credentials::refresh`] at [`Credentials::refresh_due`]), well
//! before they expire: 15 minutes before, as the SDKs do, or a third of a short token's
//! lifetime. A request takes the current credential without waiting ([`Credentials::get`]
//! refreshes on the request's path only when nothing valid is left). A failed refresh keeps the
//! current credential until it expires; it is counted in `/metrics`, shown in `/readyz` and
//! logged. Secrets stay in [`crate::secret::Secret`]; only the provider's name and the key id
//! are ever logged.
//!
//! No kept crate is used for the providers: `reqsign-aliyun-oss` (the one maintained option)
//! refreshes lazily on the request's path (a credential is valid until 120 s before it expires),
//! has no counters or status to show, signs OSS only and brings its own context and HTTP
//! abstractions; snapgate's signers stay its own (docs/architecture.md).

pub mod chain;
pub mod file;
pub mod imds;
pub mod sts;

use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::secret::Secret;

/// One credential: a key pair, and for temporary ones the STS token and its expiry.
#[derive(Clone)]
pub struct Credential {
    pub access_key_id: String,
    pub access_key_secret: Secret,
    pub security_token: Option<Secret>,
    pub expiration: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("access_key_id", &self.access_key_id)
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expiration", &self.expiration)
            .finish()
    }
}

impl Credential {
    /// A long-lived key pair.
    pub fn key(id: impl Into<String>, secret: Secret) -> Self {
        Self {
            access_key_id: id.into(),
            access_key_secret: secret,
            security_token: None,
            expiration: None,
        }
    }

    /// The token's text, when there is one.
    pub fn token(&self) -> Option<&str> {
        self.security_token.as_ref().map(Secret::expose)
    }

    /// Still usable at `now` (a key without expiry always is).
    pub fn valid_at(&self, now: DateTime<Utc>) -> bool {
        self.expiration.is_none_or(|e| e > now)
    }

    /// Seconds from `now` to the expiry (negative once expired); `None` without one.
    pub fn seconds_left(&self, now: DateTime<Utc>) -> Option<i64> {
        self.expiration.map(|e| (e - now).num_seconds())
    }

    /// A lifetime of `want_s` from `now`, shortened so that it ends with the token (a presigned
    /// URL or a PostObject policy never outlives the credential that signs it).
    pub fn cap_lifetime(&self, now: DateTime<Utc>, want: Duration) -> Duration {
        match self.expiration {
            Some(e) => want.min(e - now).max(Duration::zero()),
            None => want,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{provider}: {message}")]
pub struct CredentialError {
    pub provider: &'static str,
    pub message: String,
}

impl CredentialError {
    pub fn new(provider: &'static str, message: impl Into<String>) -> Self {
        Self {
            provider,
            message: message.into(),
        }
    }
}

/// One source of credentials.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The chain's name for it (`static`, `env_sts_token`, `ram_role_arn`, `ecs_ram_role`,
    /// `oidc_role_arn`, `credentials_file/<type>`): logged at start.
    fn name(&self) -> &'static str;
    /// A fresh credential.
    async fn fetch(&self) -> Result<Credential, CredentialError>;
}

/// What `/readyz` shows and `/metrics` counts.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CredentialsView {
    /// The provider in use.
    pub provider: &'static str,
    /// The key id in use (not a secret; an STS one starts with `STS.`).
    pub access_key_id: String,
    /// Seconds until the current credential expires; absent for a long-lived key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<i64>,
    pub refreshes_ok: u64,
    pub refreshes_failed: u64,
    /// The last refresh failed (the current credential is still used until it expires).
    pub refresh_failing: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Nothing valid is left: every signed call fails until a refresh succeeds.
    pub expired: bool,
}

#[derive(Default)]
struct Status {
    ok: u64,
    failed: u64,
    last_error: Option<String>,
    /// When the current credential was obtained (its lifetime is measured from there).
    obtained: Option<DateTime<Utc>>,
    /// Earliest time of the next attempt after a failure.
    retry_at: Option<DateTime<Utc>>,
}

struct Inner {
    provider: Box<dyn Provider>,
    current: RwLock<Arc<Credential>>,
    /// The credential before the last refresh (what was signed with it may still come back:
    /// an upload's callback tag).
    previous: RwLock<Option<Arc<Credential>>>,
    status: Mutex<Status>,
    /// One refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// Refresh when this much of the lifetime is left at most (`credentials.refresh_before_s`).
    refresh_before: Duration,
}

/// The credential in use, shared by every signer; cheap to clone.
#[derive(Clone)]
pub struct Credentials(Arc<Inner>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("provider", &self.0.provider.name())
            .field("current", &self.current())
            .finish()
    }
}

/// A provider that always answers the same key (a long-lived pair).
struct Fixed(Credential, &'static str);

#[async_trait]
impl Provider for Fixed {
    fn name(&self) -> &'static str {
        self.1
    }
    async fn fetch(&self) -> Result<Credential, CredentialError> {
        Ok(self.0.clone())
    }
}

/// The SDKs' margin: a temporary credential is refreshed 15 minutes before it expires.
pub const DEFAULT_REFRESH_BEFORE_S: u64 = 15 * 60;

impl Credentials {
    /// A fixed credential (a key pair, or a key with a token from the environment).
    pub fn fixed(cred: Credential, name: &'static str) -> Self {
        Self::with_first(
            Box::new(Fixed(cred.clone(), name)),
            cred,
            DEFAULT_REFRESH_BEFORE_S,
        )
    }

    /// A long-lived key pair (`static`).
    pub fn key(access_key_id: &str, access_key_secret: Secret) -> Self {
        Self::fixed(Credential::key(access_key_id, access_key_secret), "static")
    }

    /// Fetches the first credential from `provider` (an error if it has none).
    pub async fn start(
        provider: Box<dyn Provider>,
        refresh_before_s: u64,
    ) -> Result<Self, CredentialError> {
        let first = provider.fetch().await?;
        Ok(Self::with_first(provider, first, refresh_before_s))
    }

    fn with_first(provider: Box<dyn Provider>, first: Credential, refresh_before_s: u64) -> Self {
        let status = Status {
            obtained: Some(crate::clock::now()),
            ..Status::default()
        };
        Self(Arc::new(Inner {
            provider,
            current: RwLock::new(Arc::new(first)),
            previous: RwLock::new(None),
            status: Mutex::new(status),
            refreshing: tokio::sync::Mutex::new(()),
            refresh_before: Duration::seconds(refresh_before_s as i64),
        }))
    }

    pub fn provider_name(&self) -> &'static str {
        self.0.provider.name()
    }

    /// The current credential, as it is (possibly expired: see [`Credentials::get`]).
    pub fn current(&self) -> Arc<Credential> {
        self.0
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The credential before the last refresh, if any.
    pub fn previous(&self) -> Option<Arc<Credential>> {
        self.0
            .previous
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The current credential if it is still valid; else one refresh on this request's path
    /// (nothing valid is left), and its error if that fails too.
    pub async fn get(&self) -> Result<Arc<Credential>, CredentialError> {
        let cur = self.current();
        if cur.valid_at(crate::clock::now()) {
            return Ok(cur);
        }
        self.refresh().await?;
        let cur = self.current();
        if cur.valid_at(crate::clock::now()) {
            Ok(cur)
        } else {
            Err(CredentialError::new(
                self.provider_name(),
                "the provider answered an expired credential",
            ))
        }
    }

    /// Fetches a new credential now. On failure the current one is kept (until it expires),
    /// the failure counted and logged, and the next attempt is due a little later.
    pub async fn refresh(&self) -> Result<(), CredentialError> {
        let _one = self.0.refreshing.lock().await;
        let out = self.0.provider.fetch().await;
        let now = crate::clock::now();
        let mut st = self.0.status.lock().unwrap_or_else(|e| e.into_inner());
        match out {
            Ok(cred) => {
                st.ok += 1;
                st.last_error = None;
                st.obtained = Some(now);
                st.retry_at = None;
                metrics::counter!("snapgate_credential_refreshes_total", "result" => "ok")
                    .increment(1);
                tracing::info!(provider = self.provider_name(), access_key_id = %cred.access_key_id, expiration = ?cred.expiration, "credentials refreshed");
                let old = std::mem::replace(
                    &mut *self.0.current.write().unwrap_or_else(|e| e.into_inner()),
                    Arc::new(cred),
                );
                *self.0.previous.write().unwrap_or_else(|e| e.into_inner()) = Some(old);
                Ok(())
            }
            Err(e) => {
                st.failed += 1;
                st.last_error = Some(e.to_string());
                let left = self.current().seconds_left(now).unwrap_or(0);
                // Try again soon, but not in a tight loop: a quarter of what is left, 1 to 30 s.
                st.retry_at = Some(now + Duration::seconds((left / 4).clamp(1, 30)));
                metrics::counter!("snapgate_credential_refreshes_total", "result" => "failed")
                    .increment(1);
                tracing::warn!(provider = self.provider_name(), error = %e, seconds_left = left, "credential refresh failed: the current credential is kept until it expires");
                Err(e)
            }
        }
    }

    /// When the next background refresh is due; `None` for a credential that never expires.
    /// Refreshes when `refresh_before` (15 min) is left, or a third of the lifetime for short
    /// tokens; after a failure, at the retry time.
    pub fn refresh_due(&self) -> Option<DateTime<Utc>> {
        let cur = self.current();
        let exp = cur.expiration?;
        let st = self.0.status.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(retry) = st.retry_at {
            return Some(retry);
        }
        let obtained = st.obtained.unwrap_or_else(crate::clock::now);
        let lifetime = (exp - obtained).max(Duration::zero());
        let margin = self.0.refresh_before.min(lifetime / 3);
        Some(exp - margin)
    }

    /// What `/readyz` shows.
    pub fn view(&self) -> CredentialsView {
        let cur = self.current();
        let now = crate::clock::now();
        let st = self.0.status.lock().unwrap_or_else(|e| e.into_inner());
        CredentialsView {
            provider: self.provider_name(),
            access_key_id: cur.access_key_id.clone(),
            expires_in_s: cur.seconds_left(now),
            refreshes_ok: st.ok,
            refreshes_failed: st.failed,
            refresh_failing: st.last_error.is_some(),
            last_error: st.last_error.clone(),
            expired: !cur.valid_at(now),
        }
    }

    /// Sets the seconds-to-expiry gauge (at scrape time).
    pub fn record_gauge(&self) {
        if let Some(left) = self.current().seconds_left(crate::clock::now()) {
            metrics::gauge!("snapgate_credential_expiry_seconds").set(left as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Counting(AtomicU32, i64);

    #[async_trait]
    impl Provider for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        async fn fetch(&self) -> Result<Credential, CredentialError> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            if n == 2 {
                return Err(CredentialError::new("counting", "down"));
            }
            Ok(Credential {
                access_key_id: format!("STS.{n}"),
                access_key_secret: Secret::new("s"),
                security_token: Some(Secret::new("t")),
                expiration: Some(crate::clock::now() + Duration::seconds(self.1)),
            })
        }
    }

    #[tokio::test]
    async fn refresh_due_margin_failure_keeps_current() {
        let c = Credentials::start(Box::new(Counting(AtomicU32::new(0), 3600)), 900)
            .await
            .unwrap();
        let due = c.refresh_due().unwrap();
        let left = (due - crate::clock::now()).num_seconds();
        assert!((2690..=2700).contains(&left), "{left}");
        c.refresh().await.unwrap();
        assert_eq!(c.current().access_key_id, "STS.1");
        assert!(c.refresh().await.is_err());
        assert_eq!(c.current().access_key_id, "STS.1", "kept after a failure");
        let v = c.view();
        assert_eq!((v.refreshes_ok, v.refreshes_failed), (1, 1));
        assert!(v.refresh_failing && !v.expired);
        // A short token: refreshed with a third of its life left.
        let s = Credentials::start(Box::new(Counting(AtomicU32::new(0), 60)), 900)
            .await
            .unwrap();
        let left = (s.refresh_due().unwrap() - crate::clock::now()).num_seconds();
        assert!((38..=40).contains(&left), "{left}");
        assert!(format!("{:?}", s).contains("[redacted]"));
    }

    #[test]
    fn cap_lifetime_never_outlives_the_token() {
        let now = crate::clock::now();
        let mut c = Credential::key("k", Secret::new("s"));
        assert_eq!(c.cap_lifetime(now, Duration::hours(1)), Duration::hours(1));
        c.expiration = Some(now + Duration::seconds(100));
        assert_eq!(
            c.cap_lifetime(now, Duration::hours(1)),
            Duration::seconds(100)
        );
    }
}
