//! Outbound webhooks to teams: Standard Webhooks signing (`sign.rs`), where a webhook may go and
//! the guarded client that sends it (`net.rs`, on the IANA special-purpose address tables of
//! `special_purpose.rs`), and the payload every delivery carries.
//!
//! Flow: a job transition in the store records its events and one delivery per subscribed
//! endpoint in the same transaction (`store/webhooks.rs::record_event`); the delivery worker
//! (`worker/deliver.rs`) on any replica claims due deliveries with a lease, renders the payload
//! (the job as the REST API shows it, through the [`EventRenderer`] the app wires in, so this
//! module does not depend on `http`), signs and sends it, and records the attempt under its claim.
//! The rules of an endpoint (URL, event types, secrets) are `services::webhooks`.

pub mod net;
pub mod sign;
pub mod special_purpose;

use serde_json::{json, Value};

use crate::store::WebhookEvent;

/// Turns a stored event into its payload's `data` (for job events: the job exactly as
/// `GET /v1/snapshot-jobs/{id}` shows it). Implemented by the REST API, passed in by the app.
pub trait EventRenderer: Send + Sync {
    fn render_data(&self, event: &WebhookEvent) -> anyhow::Result<Value>;
}

/// The body of every delivery of an event: `{id, type, timestamp, data}` (Standard Webhooks'
/// `type`/`timestamp`/`data`, plus the event id that is also the `webhook-id`).
pub fn payload(event: &WebhookEvent, data: Value) -> Value {
    json!({
        "id": event.id,
        "type": event.event_type,
        "timestamp": event.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": data,
    })
}
