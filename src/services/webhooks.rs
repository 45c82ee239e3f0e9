//! The rules of webhook endpoints (URL, event types, secrets, deletion, replays):
//! [`WebhookService`]. Every entry point that makes or changes an endpoint or an event calls it.
//! Signing, the guarded client and the payload are `webhooks/`; delivery is `worker/deliver.rs`.

use std::sync::Arc;

use uuid::Uuid;

use crate::config::{AuthSettings, WebhooksSettings};
use crate::crypto::{MasterKey, MasterKeySlot};
use crate::domain::Violation;
use crate::secret::Secret;
use crate::store::{
    DynStore, NewWebhookEndpoint, StoreError, WebhookEndpoint, WebhookEndpointUpdate, EVENT_TYPES,
};
use crate::webhooks::{net, sign};

/// Longest endpoint URL accepted.
const MAX_URL_BYTES: usize = 2048;
/// Longest description accepted.
const MAX_DESCRIPTION_CHARS: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the webhook endpoint is not valid")]
    Invalid(Vec<Violation>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// What a team asks for when it registers an endpoint.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    pub url: String,
    pub event_types: Vec<String>,
    pub description: Option<String>,
}

/// The rules of webhook endpoints: every entry point that makes or changes one calls this.
pub struct WebhookService {
    store: DynStore,
    cfg: WebhooksSettings,
    auth: AuthSettings,
    master_key: Arc<MasterKeySlot>,
}

fn violation(field: &str, code: &str, message: impl Into<String>) -> Violation {
    Violation {
        field: field.into(),
        code: code.into(),
        message: message.into(),
    }
}

impl WebhookService {
    pub fn new(
        store: DynStore,
        cfg: WebhooksSettings,
        auth: AuthSettings,
        master_key: Arc<MasterKeySlot>,
    ) -> Self {
        Self {
            store,
            cfg,
            auth,
            master_key,
        }
    }

    /// The master key that encrypts webhook secrets (created in its file on first use, as
    /// `snapgate key create` does, when none is configured).
    fn key(&self) -> anyhow::Result<Arc<MasterKey>> {
        self.master_key
            .get()
            .or_else(|_| MasterKey::load(&self.auth).map(Arc::new))
    }

    fn check_url(&self, url: &str, errors: &mut Vec<Violation>) {
        if let Some(v) = crate::domain::text::check("/url", url) {
            errors.push(v);
        } else if url.len() > MAX_URL_BYTES {
            errors.push(violation(
                "/url",
                "too_long",
                format!("must be at most {MAX_URL_BYTES} bytes"),
            ));
        } else if let Err(p) = net::check_url(url, self.cfg.allow_private_networks) {
            let code = match p {
                net::UrlProblem::PrivateAddress(_) => "private_address",
                _ => "invalid_url",
            };
            errors.push(violation("/url", code, p.to_string()));
        }
    }

    fn check_event_types(types: &[String], errors: &mut Vec<Violation>) -> Vec<String> {
        if types.is_empty() {
            errors.push(violation(
                "/event_types",
                "required",
                format!("name at least one of {}", EVENT_TYPES.join(", ")),
            ));
        }
        let mut out: Vec<String> = Vec::new();
        for (i, t) in types.iter().enumerate() {
            if !EVENT_TYPES.contains(&t.as_str()) {
                errors.push(violation(
                    &format!("/event_types/{i}"),
                    "unknown_event_type",
                    format!("must be one of {}", EVENT_TYPES.join(", ")),
                ));
            } else if !out.contains(t) {
                out.push(t.clone());
            }
        }
        out
    }

    fn check_description(d: &Option<String>, errors: &mut Vec<Violation>) {
        if let Some(v) = d
            .as_deref()
            .and_then(|d| crate::domain::text::check("/description", d))
        {
            errors.push(v);
        } else if d
            .as_ref()
            .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
        {
            errors.push(violation(
                "/description",
                "too_long",
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
    }

    /// Registers an endpoint; returns it with its new secret (shown once).
    pub async fn create(
        &self,
        team: &str,
        spec: EndpointSpec,
    ) -> Result<(WebhookEndpoint, Secret), WebhookError> {
        let mut errors = Vec::new();
        self.check_url(&spec.url, &mut errors);
        let event_types = Self::check_event_types(&spec.event_types, &mut errors);
        Self::check_description(&spec.description, &mut errors);
        if !errors.is_empty() {
            return Err(WebhookError::Invalid(errors));
        }
        // A cap per team, so that one team's endpoints cannot take every delivery slot.
        let max = self.cfg.max_endpoints_per_team;
        if self.store.list_webhook_endpoints(team).await?.len() >= max {
            return Err(WebhookError::Invalid(vec![Violation {
                field: String::new(),
                code: "too_many_endpoints".into(),
                message: format!(
                    "a team may have at most {max} webhook endpoints; delete one first"
                ),
            }]));
        }
        let secret = sign::new_secret();
        let endpoint = self
            .store
            .create_webhook_endpoint(&NewWebhookEndpoint {
                id: Uuid::now_v7(),
                team: team.to_string(),
                url: spec.url,
                description: spec.description,
                event_types,
                secret_ciphertext: self.key()?.encrypt(secret.expose()),
                created_at: crate::store::now(),
            })
            .await?;
        tracing::info!(endpoint_id = %endpoint.id, team, "webhook endpoint created");
        Ok((endpoint, secret))
    }

    /// Changes an endpoint; `None` if the team has no such endpoint.
    pub async fn update(
        &self,
        team: &str,
        id: Uuid,
        mut u: WebhookEndpointUpdate,
    ) -> Result<Option<WebhookEndpoint>, WebhookError> {
        let mut errors = Vec::new();
        if let Some(url) = &u.url {
            self.check_url(url, &mut errors);
        }
        if let Some(types) = &u.event_types {
            u.event_types = Some(Self::check_event_types(types, &mut errors));
        }
        if let Some(d) = &u.description {
            Self::check_description(d, &mut errors);
        }
        if !errors.is_empty() {
            return Err(WebhookError::Invalid(errors));
        }
        Ok(self.store.update_webhook_endpoint(team, id, &u).await?)
    }

    /// A new secret; the previous one keeps signing for `webhooks.rotation_grace_s`.
    pub async fn rotate_secret(
        &self,
        team: &str,
        id: Uuid,
    ) -> Result<Option<(WebhookEndpoint, Secret)>, WebhookError> {
        let secret = sign::new_secret();
        let grace =
            chrono::Duration::seconds(self.cfg.rotation_grace_s.min(i64::MAX as u64) as i64);
        let until = self.store.clock().await? + grace;
        let endpoint = self
            .store
            .rotate_webhook_secret(team, id, &self.key()?.encrypt(secret.expose()), until)
            .await?;
        Ok(endpoint.map(|e| {
            tracing::info!(endpoint_id = %e.id, team, "webhook secret rotated");
            (e, secret)
        }))
    }

    /// Deletes an endpoint and its delivery history; `false` if the team has no such endpoint.
    pub async fn delete(&self, team: &str, id: Uuid) -> Result<bool, WebhookError> {
        let deleted = self.store.delete_webhook_endpoint(team, id).await?;
        if deleted {
            tracing::info!(endpoint_id = %id, team, "webhook endpoint deleted");
        }
        Ok(deleted)
    }

    /// Queues an event of `team` for delivery again to every endpoint that subscribes to it
    /// (the same event id, so the same `webhook-id`); `None` if the team has no such event.
    pub async fn replay(
        &self,
        team: &str,
        event_id: &str,
    ) -> Result<Option<Vec<Uuid>>, WebhookError> {
        let deliveries = self.store.replay_webhook_event(team, event_id).await?;
        if let Some(d) = &deliveries {
            tracing::info!(
                event_id,
                team,
                deliveries = d.len(),
                "webhook event replayed"
            );
        }
        Ok(deliveries)
    }
}
