//! Webhooks to teams, as stored: endpoints, events, one delivery per (event, endpoint) and every
//! attempt. Events are written by `events.rs` ([`record_event`]) on a connection that is inside
//! the caller's transaction: the job transitions in `sql.rs` call it (through
//! [`record_job_events`]) in the same transaction as the state change, so an event is never lost
//! and never recorded for a change that did not commit. The delivery worker
//! (`crate::worker::deliver`) claims due deliveries with a lease ([`WebhookStore::claim_deliveries`],
//! `SKIP LOCKED` on Postgres) and records each attempt under its claim.
//!
//! [`record_event`]: super::events::record_event
//! [`record_job_events`]: super::events::record_job_events

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::FromRow;
use uuid::Uuid;

use super::codec::{DbId, DbTime};
use super::db::{Dialect, Stmt};
use super::events::{insert_deliveries, record_event, NewWebhookEvent, EVENT_COLUMNS};
use super::{SqlStore, StoreResult};
use crate::domain::JobId;

/// A team's webhook endpoint as stored (secrets only encrypted).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEndpoint {
    pub id: Uuid,
    pub team: String,
    pub url: String,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    pub secret_ciphertext: String,
    pub previous_secret_ciphertext: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    /// `manual` or `failing`.
    pub disabled_reason: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
}

/// A new endpoint.
#[derive(Debug, Clone)]
pub struct NewWebhookEndpoint {
    pub id: Uuid,
    pub team: String,
    pub url: String,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    pub secret_ciphertext: String,
    pub created_at: DateTime<Utc>,
}

/// A change to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookEndpointUpdate {
    pub url: Option<String>,
    /// `Some(None)` clears the description.
    pub description: Option<Option<String>>,
    pub event_types: Option<Vec<String>>,
    /// `Some(false)` disables (`manual`), `Some(true)` enables and forgets past failures.
    pub enabled: Option<bool>,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    pub id: String,
    pub team: String,
    pub event_type: String,
    pub created_at: DateTime<Utc>,
    pub job_id: Option<JobId>,
    pub data: Value,
}

/// A delivery claimed for an attempt, with what the attempt needs.
#[derive(Debug, Clone)]
pub struct DeliveryClaim {
    pub delivery_id: Uuid,
    pub token: Uuid,
    /// Attempts already made (before this one).
    pub attempts: u32,
    pub event: WebhookEvent,
    pub endpoint: WebhookEndpoint,
}

/// One attempt's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    pub attempted_at: DateTime<Utc>,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<u16>,
    /// Why no status (refused address, timeout, connection error).
    pub error: Option<String>,
    pub latency_ms: u64,
    /// The start of the response body.
    pub response_snippet: Option<String>,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DeliveryOutcome {
    Succeeded,
    /// Try again at this time.
    Retry(DateTime<Utc>),
    /// No more attempts.
    Failed,
}

/// A delivery and its attempts, for `GET /v1/webhook-endpoints/{id}/deliveries`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub id: Uuid,
    pub event_id: String,
    pub event_type: String,
    pub endpoint_id: Uuid,
    /// `pending`, `succeeded` or `failed`.
    pub state: String,
    pub attempts: Vec<DeliveryAttempt>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Webhook endpoints, events and their deliveries.
#[async_trait]
pub trait WebhookStore {
    async fn create_webhook_endpoint(&self, e: &NewWebhookEndpoint)
        -> StoreResult<WebhookEndpoint>;
    /// The team's endpoints, oldest first.
    async fn list_webhook_endpoints(&self, team: &str) -> StoreResult<Vec<WebhookEndpoint>>;
    async fn get_webhook_endpoint(
        &self,
        team: &str,
        id: Uuid,
    ) -> StoreResult<Option<WebhookEndpoint>>;
    async fn update_webhook_endpoint(
        &self,
        team: &str,
        id: Uuid,
        u: &WebhookEndpointUpdate,
    ) -> StoreResult<Option<WebhookEndpoint>>;
    /// The current secret becomes the previous one (signing until `previous_expires_at`) and
    /// `secret_ciphertext` the current one.
    async fn rotate_webhook_secret(
        &self,
        team: &str,
        id: Uuid,
        secret_ciphertext: &str,
        previous_expires_at: DateTime<Utc>,
    ) -> StoreResult<Option<WebhookEndpoint>>;
    /// Deletes the endpoint and its deliveries; false if unknown.
    async fn delete_webhook_endpoint(&self, team: &str, id: Uuid) -> StoreResult<bool>;
    /// Records an event and a delivery for every enabled endpoint of its team subscribed to its
    /// type, in one transaction (for events not caused by a job transition). Returns the
    /// deliveries made.
    async fn record_webhook_event(&self, e: &NewWebhookEvent) -> StoreResult<u64>;
    async fn get_webhook_event(&self, team: &str, id: &str) -> StoreResult<Option<WebhookEvent>>;
    /// The events recorded for a job, oldest first.
    async fn job_webhook_events(&self, job: JobId) -> StoreResult<Vec<WebhookEvent>>;
    /// Sends the event again: a new delivery (same event, so the same `webhook-id`) to every
    /// enabled endpoint of the team that it was delivered to or that subscribes to its type.
    /// `None` if the team has no such event.
    async fn replay_webhook_event(&self, team: &str, id: &str) -> StoreResult<Option<Vec<Uuid>>>;
    /// Claims up to `limit` due deliveries whose lease is free or expired.
    async fn claim_deliveries(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        per_endpoint: u32,
    ) -> StoreResult<Vec<DeliveryClaim>>;
    /// Records an attempt and its outcome under the claim, and the endpoint's health: a
    /// success clears `failing_since`; a failure sets it if unset, and disables the endpoint
    /// (`failing`) once it has failed since `disable_failing_since_before` or earlier. False
    /// (nothing written) if the claim was lost.
    async fn finish_delivery(
        &self,
        claim: &DeliveryClaim,
        attempt: &DeliveryAttempt,
        outcome: DeliveryOutcome,
        disable_failing_since_before: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Gives back every delivery lease `owner` holds (graceful shutdown).
    async fn release_deliveries(&self, owner: &str) -> StoreResult<u64>;
    /// An endpoint's deliveries, newest first, each with its attempts.
    async fn list_deliveries(
        &self,
        team: &str,
        endpoint_id: Uuid,
        limit: u32,
    ) -> StoreResult<Vec<DeliveryRecord>>;
}

/// The deliveries a claim may take (`$2` now, `$4` how many, `$6` attempts at once per
/// endpoint): due, not leased, and at most as many per endpoint as its attempts in progress (live
/// leases, any replica's) leave room for, earliest due first. Each endpoint's own earliest
/// deliveries are ranked before the whole list is cut, so that one endpoint's backlog never
/// hides another endpoint's due delivery.
const CLAIMABLE: &str = "SELECT c.id FROM (SELECT d.id, d.endpoint_id, d.next_attempt_at, \
     ROW_NUMBER() OVER (PARTITION BY d.endpoint_id ORDER BY d.next_attempt_at, d.id) AS nth \
     FROM webhook_deliveries d WHERE d.state = 'pending' AND d.next_attempt_at <= $2 \
     AND (d.lease_expires_at IS NULL OR d.lease_expires_at < $2)) c \
     WHERE c.nth + (SELECT count(*) FROM webhook_deliveries l WHERE l.endpoint_id = c.endpoint_id \
     AND l.state = 'pending' AND l.lease_expires_at >= $2) <= $6 \
     ORDER BY c.next_attempt_at LIMIT $4";

#[derive(FromRow)]
struct EndpointRow {
    id: DbId,
    team: String,
    url: String,
    description: Option<String>,
    event_types: Json<Vec<String>>,
    secret_ciphertext: String,
    previous_secret_ciphertext: Option<String>,
    previous_secret_expires_at: Option<DbTime>,
    created_at: DbTime,
    updated_at: DbTime,
    disabled_at: Option<DbTime>,
    disabled_reason: Option<String>,
    failing_since: Option<DbTime>,
}

const ENDPOINT_COLUMNS: &str = "id, team, url, description, event_types, secret_ciphertext, \
     previous_secret_ciphertext, previous_secret_expires_at, created_at, updated_at, \
     disabled_at, disabled_reason, failing_since";

impl From<EndpointRow> for WebhookEndpoint {
    fn from(r: EndpointRow) -> Self {
        WebhookEndpoint {
            id: r.id.0,
            team: r.team,
            url: r.url,
            description: r.description,
            event_types: r.event_types.0,
            secret_ciphertext: r.secret_ciphertext,
            previous_secret_ciphertext: r.previous_secret_ciphertext,
            previous_secret_expires_at: r.previous_secret_expires_at.map(|t| t.0),
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
            disabled_at: r.disabled_at.map(|t| t.0),
            disabled_reason: r.disabled_reason,
            failing_since: r.failing_since.map(|t| t.0),
        }
    }
}

#[derive(FromRow)]
struct EventRow {
    id: String,
    team: String,
    event_type: String,
    created_at: DbTime,
    job_id: Option<DbId>,
    data: Json<Value>,
}

impl From<EventRow> for WebhookEvent {
    fn from(r: EventRow) -> Self {
        WebhookEvent {
            id: r.id,
            team: r.team,
            event_type: r.event_type,
            created_at: r.created_at.0,
            job_id: r.job_id.map(|i| JobId(i.0)),
            data: r.data.0,
        }
    }
}

#[derive(FromRow)]
struct ClaimedRow {
    id: DbId,
    event_id: String,
    endpoint_id: DbId,
    attempts: i32,
}

#[derive(FromRow)]
struct DeliveryRow {
    id: DbId,
    event_id: String,
    event_type: String,
    endpoint_id: DbId,
    state: String,
    next_attempt_at: Option<DbTime>,
    created_at: DbTime,
    updated_at: DbTime,
}

#[derive(FromRow)]
struct AttemptRow {
    delivery_id: DbId,
    attempted_at: DbTime,
    status_code: Option<i32>,
    error: Option<String>,
    latency_ms: i64,
    response_snippet: Option<String>,
}

#[derive(FromRow)]
struct IdRow {
    id: DbId,
}

impl SqlStore {
    async fn endpoint(&self, team: &str, id: Uuid) -> StoreResult<Option<WebhookEndpoint>> {
        Ok(self
            .pool()
            .fetch_optional::<EndpointRow>(
                Stmt::new(format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND team = $2"
                ))
                .bind(id)
                .bind(team),
            )
            .await?
            .map(Into::into))
    }
}

#[async_trait]
impl WebhookStore for SqlStore {
    #[tracing::instrument(name = "store.create_webhook_endpoint", level = "debug", skip_all)]
    async fn create_webhook_endpoint(
        &self,
        e: &NewWebhookEndpoint,
    ) -> StoreResult<WebhookEndpoint> {
        let row: EndpointRow = self
            .pool()
            .fetch_one(
                Stmt::new(format!(
                    "INSERT INTO webhook_endpoints (id, team, url, description, event_types, \
                     secret_ciphertext, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING {ENDPOINT_COLUMNS}"
                ))
                .bind(e.id)
                .bind(&e.team)
                .bind(&e.url)
                .bind(e.description.clone())
                .bind(serde_json::json!(e.event_types))
                .bind(&e.secret_ciphertext)
                .bind(e.created_at),
            )
            .await?;
        Ok(row.into())
    }

    #[tracing::instrument(name = "store.list_webhook_endpoints", level = "debug", skip_all)]
    async fn list_webhook_endpoints(&self, team: &str) -> StoreResult<Vec<WebhookEndpoint>> {
        let rows: Vec<EndpointRow> = self
            .pool()
            .fetch_all(
                Stmt::new(format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE team = $1 \
                     ORDER BY created_at, id"
                ))
                .bind(team),
            )
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    #[tracing::instrument(name = "store.get_webhook_endpoint", level = "debug", skip_all)]
    async fn get_webhook_endpoint(
        &self,
        team: &str,
        id: Uuid,
    ) -> StoreResult<Option<WebhookEndpoint>> {
        self.endpoint(team, id).await
    }

    #[tracing::instrument(name = "store.update_webhook_endpoint", level = "debug", skip_all)]
    async fn update_webhook_endpoint(
        &self,
        team: &str,
        id: Uuid,
        u: &WebhookEndpointUpdate,
    ) -> StoreResult<Option<WebhookEndpoint>> {
        let now = super::now();
        let mut q = Stmt::new("UPDATE webhook_endpoints SET updated_at = ");
        q.push_bind(now);
        if let Some(url) = &u.url {
            q.push(", url = ").push_bind(url);
        }
        if let Some(d) = &u.description {
            q.push(", description = ").push_bind(d.clone());
        }
        if let Some(t) = &u.event_types {
            q.push(", event_types = ").push_bind(serde_json::json!(t));
        }
        match u.enabled {
            Some(true) => {
                q.push(", disabled_at = NULL, disabled_reason = NULL, failing_since = NULL");
            }
            Some(false) => {
                q.push(", disabled_at = COALESCE(disabled_at, ")
                    .push_bind(now)
                    .push("), disabled_reason = COALESCE(disabled_reason, 'manual')");
            }
            None => {}
        }
        q.push(" WHERE id = ")
            .push_bind(id)
            .push(" AND team = ")
            .push_bind(team)
            .push(&format!(" RETURNING {ENDPOINT_COLUMNS}"));
        Ok(self
            .pool()
            .fetch_optional::<EndpointRow>(q)
            .await?
            .map(Into::into))
    }

    #[tracing::instrument(name = "store.rotate_webhook_secret", level = "debug", skip_all)]
    async fn rotate_webhook_secret(
        &self,
        team: &str,
        id: Uuid,
        secret_ciphertext: &str,
        previous_expires_at: DateTime<Utc>,
    ) -> StoreResult<Option<WebhookEndpoint>> {
        Ok(self
            .pool()
            .fetch_optional::<EndpointRow>(
                Stmt::new(format!(
                    "UPDATE webhook_endpoints SET previous_secret_ciphertext = secret_ciphertext, \
                     previous_secret_expires_at = $3, secret_ciphertext = $4, updated_at = $5 \
                     WHERE id = $1 AND team = $2 RETURNING {ENDPOINT_COLUMNS}"
                ))
                .bind(id)
                .bind(team)
                .bind(previous_expires_at)
                .bind(secret_ciphertext)
                .bind(super::now()),
            )
            .await?
            .map(Into::into))
    }

    #[tracing::instrument(name = "store.delete_webhook_endpoint", level = "debug", skip_all)]
    async fn delete_webhook_endpoint(&self, team: &str, id: Uuid) -> StoreResult<bool> {
        let n = self
            .pool()
            .execute(
                Stmt::new("DELETE FROM webhook_endpoints WHERE id = $1 AND team = $2")
                    .bind(id)
                    .bind(team),
            )
            .await?;
        Ok(n == 1)
    }

    #[tracing::instrument(name = "store.record_webhook_event", level = "debug", skip_all)]
    async fn record_webhook_event(&self, e: &NewWebhookEvent) -> StoreResult<u64> {
        let mut tx = self.pool().begin().await?;
        let n = record_event(&mut tx.conn(), e).await?;
        tx.commit().await?;
        Ok(n)
    }

    #[tracing::instrument(name = "store.get_webhook_event", level = "debug", skip_all)]
    async fn get_webhook_event(&self, team: &str, id: &str) -> StoreResult<Option<WebhookEvent>> {
        Ok(self
            .pool()
            .fetch_optional::<EventRow>(
                Stmt::new(format!(
                    "SELECT {EVENT_COLUMNS} FROM webhook_events WHERE id = $1 AND team = $2"
                ))
                .bind(id)
                .bind(team),
            )
            .await?
            .map(Into::into))
    }

    #[tracing::instrument(name = "store.job_webhook_events", level = "debug", skip_all)]
    async fn job_webhook_events(&self, job: JobId) -> StoreResult<Vec<WebhookEvent>> {
        let rows: Vec<EventRow> = self
            .pool()
            .fetch_all(
                Stmt::new(format!(
                    "SELECT {EVENT_COLUMNS} FROM webhook_events WHERE job_id = $1 \
                     ORDER BY created_at, id"
                ))
                .bind(job),
            )
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    #[tracing::instrument(name = "store.replay_webhook_event", level = "debug", skip_all)]
    async fn replay_webhook_event(&self, team: &str, id: &str) -> StoreResult<Option<Vec<Uuid>>> {
        let Some(event) = self.get_webhook_event(team, id).await? else {
            return Ok(None);
        };
        let mut tx = self.pool().begin().await?;
        let mut conn = tx.conn();
        let endpoints: Vec<EndpointRow> = conn
            .fetch_all(
                Stmt::new(format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints e \
                     WHERE team = $1 AND disabled_at IS NULL ORDER BY created_at"
                ))
                .bind(team),
            )
            .await?;
        let delivered: Vec<IdRow> = conn
            .fetch_all(
                Stmt::new(
                    "SELECT DISTINCT endpoint_id AS id FROM webhook_deliveries WHERE event_id = $1",
                )
                .bind(id),
            )
            .await?;
        let ids: Vec<Uuid> = endpoints
            .into_iter()
            .filter(|e| {
                delivered.iter().any(|d| d.id == e.id)
                    || e.event_types.0.contains(&event.event_type)
            })
            .map(|e| e.id.0)
            .collect();
        let made = if ids.is_empty() {
            Vec::new()
        } else {
            insert_deliveries(&mut conn, id, &ids, super::now()).await?
        };
        tx.commit().await?;
        Ok(Some(made))
    }

    #[tracing::instrument(name = "store.claim_deliveries", level = "debug", skip_all)]
    async fn claim_deliveries(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        per_endpoint: u32,
    ) -> StoreResult<Vec<DeliveryClaim>> {
        // Postgres: replicas skip each other's locked rows; SQLite's single connection
        // serializes the statement.
        let lock = match self.dialect() {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let token = Uuid::new_v4();
        let claimed: Vec<ClaimedRow> = self
            .pool()
            .fetch_all(
                Stmt::new(format!(
                    "UPDATE webhook_deliveries SET lease_owner = $1, lease_expires_at = $3, \
                     claim_token = $5 WHERE id IN (SELECT id FROM webhook_deliveries \
                     WHERE id IN ({CLAIMABLE}) \
                     AND (lease_expires_at IS NULL OR lease_expires_at < $2){lock}) \
                     RETURNING id, event_id, endpoint_id, attempts"
                ))
                .bind(owner)
                .bind(now)
                .bind(lease_until)
                .bind(limit)
                .bind(token)
                .bind(per_endpoint),
            )
            .await?;
        let mut out = Vec::with_capacity(claimed.len());
        for c in claimed {
            let event: Option<EventRow> = self
                .pool()
                .fetch_optional(
                    Stmt::new(format!(
                        "SELECT {EVENT_COLUMNS} FROM webhook_events WHERE id = $1"
                    ))
                    .bind(&c.event_id),
                )
                .await?;
            let endpoint: Option<EndpointRow> = self
                .pool()
                .fetch_optional(
                    Stmt::new(format!(
                        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"
                    ))
                    .bind(c.endpoint_id),
                )
                .await?;
            // Both are referenced with ON DELETE CASCADE: gone only if deleted meanwhile.
            if let (Some(event), Some(endpoint)) = (event, endpoint) {
                out.push(DeliveryClaim {
                    delivery_id: c.id.0,
                    token,
                    attempts: c.attempts as u32,
                    event: event.into(),
                    endpoint: endpoint.into(),
                });
            }
        }
        Ok(out)
    }

    #[tracing::instrument(name = "store.finish_delivery", level = "debug", skip_all)]
    async fn finish_delivery(
        &self,
        claim: &DeliveryClaim,
        attempt: &DeliveryAttempt,
        outcome: DeliveryOutcome,
        disable_failing_since_before: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (state, next) = match outcome {
            DeliveryOutcome::Succeeded => ("succeeded", None),
            DeliveryOutcome::Retry(at) => ("pending", Some(at)),
            DeliveryOutcome::Failed => ("failed", None),
        };
        let mut tx = self.pool().begin().await?;
        let mut conn = tx.conn();
        let n = conn
            .execute(
                Stmt::new(
                    "UPDATE webhook_deliveries SET state = $3, attempts = attempts + 1, \
                     next_attempt_at = $4, updated_at = $5, lease_owner = NULL, \
                     lease_expires_at = NULL, claim_token = NULL \
                     WHERE id = $1 AND claim_token = $2 AND state = 'pending'",
                )
                .bind(claim.delivery_id)
                .bind(claim.token)
                .bind(state)
                .bind(next)
                .bind(super::now()),
            )
            .await?;
        if n != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        conn.execute(
            Stmt::new(
                "INSERT INTO webhook_attempts (delivery_id, attempted_at, status_code, error, \
                 latency_ms, response_snippet) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(claim.delivery_id)
            .bind(attempt.attempted_at)
            .bind(attempt.status_code.map(i64::from))
            .bind(attempt.error.clone())
            .bind(attempt.latency_ms as i64)
            .bind(attempt.response_snippet.clone()),
        )
        .await?;
        let endpoint = claim.endpoint.id;
        if outcome == DeliveryOutcome::Succeeded {
            conn.execute(
                Stmt::new("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1")
                    .bind(endpoint),
            )
            .await?;
        } else {
            conn.execute(
                Stmt::new(
                    "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $2) \
                     WHERE id = $1",
                )
                .bind(endpoint)
                .bind(attempt.attempted_at),
            )
            .await?;
            conn.execute(
                Stmt::new(
                    "UPDATE webhook_endpoints SET disabled_at = $2, disabled_reason = 'failing', \
                     updated_at = $2 \
                     WHERE id = $1 AND disabled_at IS NULL AND failing_since <= $3",
                )
                .bind(endpoint)
                .bind(attempt.attempted_at)
                .bind(disable_failing_since_before),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    #[tracing::instrument(name = "store.release_deliveries", level = "debug", skip_all)]
    async fn release_deliveries(&self, owner: &str) -> StoreResult<u64> {
        self.pool()
            .execute(
                Stmt::new(
                    "UPDATE webhook_deliveries SET lease_owner = NULL, lease_expires_at = NULL, \
                     claim_token = NULL WHERE lease_owner = $1 AND state = 'pending'",
                )
                .bind(owner),
            )
            .await
    }

    #[tracing::instrument(name = "store.list_deliveries", level = "debug", skip_all)]
    async fn list_deliveries(
        &self,
        team: &str,
        endpoint_id: Uuid,
        limit: u32,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let rows: Vec<DeliveryRow> = self
            .pool()
            .fetch_all(
                Stmt::new(
                    "SELECT d.id, d.event_id, e.event_type, d.endpoint_id, d.state, \
                     d.next_attempt_at, d.created_at, d.updated_at \
                     FROM webhook_deliveries d \
                     JOIN webhook_events e ON e.id = d.event_id \
                     JOIN webhook_endpoints p ON p.id = d.endpoint_id \
                     WHERE d.endpoint_id = $1 AND p.team = $2 \
                     ORDER BY d.created_at DESC, d.id DESC LIMIT $3",
                )
                .bind(endpoint_id)
                .bind(team)
                .bind(limit),
            )
            .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = Stmt::new(
            "SELECT delivery_id, attempted_at, status_code, error, latency_ms, response_snippet \
             FROM webhook_attempts WHERE delivery_id IN (",
        );
        for (i, r) in rows.iter().enumerate() {
            q.push(if i == 0 { "" } else { ", " }).push_bind(r.id);
        }
        q.push(") ORDER BY id");
        let attempts: Vec<AttemptRow> = self.pool().fetch_all(q).await?;
        Ok(rows
            .into_iter()
            .map(|r| DeliveryRecord {
                attempts: attempts
                    .iter()
                    .filter(|a| a.delivery_id == r.id)
                    .map(|a| DeliveryAttempt {
                        attempted_at: a.attempted_at.0,
                        status_code: a.status_code.map(|s| s as u16),
                        error: a.error.clone(),
                        latency_ms: a.latency_ms.max(0) as u64,
                        response_snippet: a.response_snippet.clone(),
                    })
                    .collect(),
                id: r.id.0,
                event_id: r.event_id,
                event_type: r.event_type,
                endpoint_id: r.endpoint_id.0,
                state: r.state,
                next_attempt_at: r.next_attempt_at.map(|t| t.0),
                created_at: r.created_at.0,
                updated_at: r.updated_at.0,
            })
            .collect())
    }
}
