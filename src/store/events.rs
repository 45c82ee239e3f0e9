//! Webhook events as they are recorded: the event types, a new event, and the one way to write
//! an event with its pending deliveries inside the caller's transaction ([`record_event`];
//! [`record_job_events`] for job transitions). A leaf of its own so that `sql.rs` (job
//! transitions) and `uploads.rs` (`upload.expired`) record events without importing
//! `webhooks.rs`, which implements [`WebhookStore`](super::WebhookStore) for `SqlStore`.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::FromRow;
use uuid::Uuid;

use super::codec::DbId;
use super::db::{Conn, Stmt};
use super::{now, StoreError, StoreResult};
use crate::domain::{Job, JobId, JobState};

/// Every event type a team can subscribe to.
pub const EVENT_TYPES: [&str; 4] = [JOB_SUBMITTED, JOB_SUCCEEDED, JOB_FAILED, UPLOAD_EXPIRED];
pub const JOB_SUBMITTED: &str = "snapshot_job.submitted";
pub const JOB_SUCCEEDED: &str = "snapshot_job.succeeded";
pub const JOB_FAILED: &str = "snapshot_job.failed";
pub const UPLOAD_EXPIRED: &str = "upload.expired";

/// An event to record (see [`record_event`]).
#[derive(Debug, Clone)]
pub struct NewWebhookEvent {
    /// `evt_…`: the `webhook-id` of every delivery of it.
    pub id: String,
    pub team: String,
    pub event_type: String,
    pub created_at: DateTime<Utc>,
    pub job_id: Option<JobId>,
    /// What the payload's `data` is rendered from.
    pub data: Value,
}

impl NewWebhookEvent {
    /// A new event with a fresh id.
    pub fn new(team: &str, event_type: &str, job_id: Option<JobId>, data: Value) -> Self {
        Self {
            id: new_event_id(),
            team: team.to_string(),
            event_type: event_type.to_string(),
            created_at: now(),
            job_id,
            data,
        }
    }
}

/// `evt_` and a time-ordered UUID in hex.
pub fn new_event_id() -> String {
    format!("evt_{}", Uuid::now_v7().simple())
}

/// The columns of `webhook_events`, in the order [`record_event`] writes them.
pub(super) const EVENT_COLUMNS: &str = "id, team, event_type, created_at, job_id, data";

/// An endpoint as [`record_event`] needs it: its id and the event types it subscribes to.
#[derive(FromRow)]
struct SubscriberRow {
    id: DbId,
    event_types: Json<Vec<String>>,
}

/// Records `event` and one pending delivery (due now) for every enabled endpoint of its team
/// that subscribes to its type, on `conn` — a connection inside the caller's transaction, so
/// the event commits (or not) with the change that causes it. Nothing is written when no
/// endpoint subscribes. Returns the number of deliveries. This is the one way an event is
/// recorded: job transitions (`sql.rs`), [`WebhookStore::record_webhook_event`], and any later
/// transition (e.g. `upload.expired`) call it.
///
/// [`WebhookStore::record_webhook_event`]: super::WebhookStore::record_webhook_event
pub async fn record_event(conn: &mut Conn<'_>, event: &NewWebhookEvent) -> StoreResult<u64> {
    let endpoints: Vec<SubscriberRow> = conn
        .fetch_all(
            Stmt::new(
                "SELECT id, event_types FROM webhook_endpoints \
                 WHERE team = $1 AND disabled_at IS NULL ORDER BY created_at",
            )
            .bind(&event.team),
        )
        .await?;
    let ids: Vec<Uuid> = endpoints
        .into_iter()
        .filter(|e| e.event_types.0.contains(&event.event_type))
        .map(|e| e.id.0)
        .collect();
    if ids.is_empty() {
        return Ok(0);
    }
    conn.execute(
        Stmt::new(format!(
            "INSERT INTO webhook_events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
        ))
        .bind(&event.id)
        .bind(&event.team)
        .bind(&event.event_type)
        .bind(event.created_at)
        .bind(event.job_id)
        .bind(&event.data),
    )
    .await?;
    insert_deliveries(conn, &event.id, &ids, event.created_at).await?;
    Ok(ids.len() as u64)
}

/// The events a job transition causes: leaving `queued` for MPS (`submitted`, also when MPS's
/// answer is already final) and reaching a final state. `from_queued`: the job was queued
/// before the transition. Each is recorded with [`record_event`], the job as it is after the
/// change as its data.
pub(super) async fn record_job_events(
    conn: &mut Conn<'_>,
    job: &Job,
    from_queued: bool,
) -> StoreResult<()> {
    let accepted = job.state != JobState::Failed || job.mps.job_id.is_some();
    let mut types = Vec::new();
    if from_queued && job.state != JobState::Queued && accepted {
        types.push(JOB_SUBMITTED);
    }
    match job.state {
        JobState::Succeeded => types.push(JOB_SUCCEEDED),
        JobState::Failed => types.push(JOB_FAILED),
        _ => {}
    }
    if types.is_empty() {
        return Ok(());
    }
    let data = serde_json::to_value(job).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    for t in types {
        let event = NewWebhookEvent::new(&job.team, t, Some(job.id), data.clone());
        record_event(conn, &event).await?;
    }
    Ok(())
}

/// One pending delivery of the event `event_id`, due at `at`, to each of `endpoints` (on
/// `conn`, inside the caller's transaction); returns the new deliveries' ids.
pub(super) async fn insert_deliveries(
    conn: &mut Conn<'_>,
    event_id: &str,
    endpoints: &[Uuid],
    at: DateTime<Utc>,
) -> StoreResult<Vec<Uuid>> {
    let mut q = Stmt::new(
        "INSERT INTO webhook_deliveries (id, event_id, endpoint_id, state, attempts, \
         next_attempt_at, created_at, updated_at) VALUES ",
    );
    let mut made = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let id = Uuid::now_v7();
        made.push(id);
        q.push(if i == 0 { "(" } else { ", (" })
            .push_bind(id)
            .push(", ")
            .push_bind(event_id)
            .push(", ")
            .push_bind(*endpoint)
            .push(", 'pending', 0, ")
            .push_bind(at)
            .push(", ")
            .push_bind(at)
            .push(", ")
            .push_bind(at)
            .push(")");
    }
    conn.execute(q).await?;
    Ok(made)
}
