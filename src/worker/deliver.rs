//! The delivery worker: runs on every replica, in the shape of the dispatcher
//! (`worker/dispatch.rs`): claim due deliveries with a lease, make one attempt each (render,
//! sign, send through the guarded client), record the attempt and its outcome under the claim.
//!
//! - 2xx is success; anything else (3xx included: redirects are not followed), a timeout, a
//!   refused address or a connection error is a failure, retried after `webhooks.schedule_s[n]`
//!   (or the receiver's larger `Retry-After`, capped at the schedule's largest step); after the
//!   last step the delivery is `failed`. A `410 Gone` fails it at once and disables the
//!   endpoint (`failing`).
//! - Every attempt of an event carries the same `webhook-id` (the event id); `webhook-timestamp`
//!   is the attempt's own time (this host's clock, which receivers compare with theirs).
//! - Fair: attempts run concurrently, up to `webhooks.max_in_flight` per replica, and the worker
//!   claims more as soon as one ends: it never waits for a whole batch, so a receiver that
//!   accepts and never answers holds only its own slot until `timeout_ms`. An endpoint has at
//!   most `webhooks.endpoint_concurrency` attempts in progress (the claim counts live leases,
//!   any replica's); its other deliveries wait for it, not for anyone else, and a team has at
//!   most `webhooks.max_endpoints_per_team` endpoints, so one team cannot take every slot.
//! - Ordering is not promised: deliveries are claimed by due time and sent concurrently, and a
//!   retried one comes after later events.
//! - A crash between the state change and the attempt loses nothing: the delivery is in the
//!   database and its lease expires; a crash after sending but before recording sends it again
//!   (at least once, the same `webhook-id`: receivers dedupe on it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::WebhooksSettings;
use crate::crypto::MasterKeySlot;
use crate::secret::Sensitive;
use crate::store::{DeliveryAttempt, DeliveryClaim, DeliveryOutcome, DynStore};
use crate::webhooks::{net, payload, sign, EventRenderer};

pub struct DeliveryWorker {
    store: DynStore,
    cfg: WebhooksSettings,
    master_key: Arc<MasterKeySlot>,
    renderer: Arc<dyn EventRenderer>,
    client: reqwest::Client,
    owner: String,
}

/// What one HTTP attempt gave.
#[derive(Debug, Default)]
struct Sent {
    status: Option<u16>,
    error: Option<String>,
    snippet: Option<String>,
    retry_after: Option<Duration>,
}

/// The outcome after `attempts_made` attempts of which the last failed.
pub fn after_failure(
    schedule_s: &[u64],
    attempts_made: u32,
    retry_after: Option<Duration>,
    now: DateTime<Utc>,
) -> DeliveryOutcome {
    let Some(step) = schedule_s.get((attempts_made as usize).saturating_sub(1)) else {
        return DeliveryOutcome::Failed;
    };
    let cap = schedule_s.iter().copied().max().unwrap_or(0);
    let wait_s = retry_after
        .map(|r| r.as_secs_f64().min(cap as f64))
        .unwrap_or(0.0)
        .max(*step as f64);
    DeliveryOutcome::Retry(now + chrono::Duration::milliseconds((wait_s * 1000.0) as i64))
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    (at - Utc::now()).to_std().ok()
}

/// An error with its causes (reqwest's own text omits them: the refused address is a cause).
fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

impl DeliveryWorker {
    pub fn new(
        store: DynStore,
        cfg: WebhooksSettings,
        master_key: Arc<MasterKeySlot>,
        renderer: Arc<dyn EventRenderer>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            client: net::client(&cfg)?,
            store,
            cfg,
            master_key,
            renderer,
            owner: format!("webhooks-{}", uuid::Uuid::new_v4().simple()),
        })
    }

    /// Delivers until `stop` is cancelled, then lets the attempts in progress end (each within
    /// `timeout_ms`) and gives back its leases. Claims whenever a slot is free: at start, when an
    /// attempt ends, and every `poll_interval_ms` while idle.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        tracing::info!(owner = %self.owner, "webhook delivery worker started");
        let mut running = JoinSet::new();
        let slots = self.cfg.max_in_flight.max(1);
        loop {
            let free = slots.saturating_sub(running.len());
            let mut full_claim = false;
            if free > 0 {
                match self.claim(free).await {
                    Ok((claims, asked)) => {
                        full_claim = claims.len() == asked && asked > 0;
                        for (c, at, started) in claims {
                            let me = self.clone();
                            running.spawn(async move { me.deliver_logged(c, at, started).await });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming webhook deliveries failed"),
                }
            }
            if stop.is_cancelled() {
                break;
            }
            if full_claim && running.len() < slots {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = tokio::time::sleep(Duration::from_millis(self.cfg.poll_interval_ms)) => {}
            }
        }
        while running.join_next().await.is_some() {}
        if let Err(e) = self.store.release_deliveries(&self.owner).await {
            tracing::warn!(error = %e, "could not give back webhook delivery leases");
        }
    }

    /// Runs rounds until one finds no delivery due (tests): every delivery due now has been
    /// attempted and its outcome recorded. A retry scheduled for later is not waited for. Exact
    /// only while no other delivery worker claims from the same store (see the test harness's
    /// `deliveries_by_hand`).
    pub async fn run_until_idle(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while self.round().await? > 0 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "webhook deliveries not idle after {limit:?}"
            );
        }
        Ok(())
    }

    /// One round (tests): claims what is due (up to a batch, as many per endpoint as
    /// `endpoint_concurrency` allows) and attempts each once, concurrently. Returns how many
    /// were attempted.
    pub async fn round(&self) -> anyhow::Result<usize> {
        let (claims, _) = self.claim(self.cfg.max_in_flight.max(1)).await?;
        let n = claims.len();
        futures::future::join_all(
            claims
                .into_iter()
                .map(|(c, at, started)| self.deliver_logged(c, at, started)),
        )
        .await;
        Ok(n)
    }

    /// Claims up to `free` (at most a batch) due deliveries; each with the database's time of
    /// the claim and when it was read. Also answers how many were asked for.
    async fn claim(
        &self,
        free: usize,
    ) -> anyhow::Result<(Vec<(DeliveryClaim, DateTime<Utc>, Instant)>, usize)> {
        // Started before the clock is read: `at + elapsed` is then never behind the
        // database's time, so a retry is never due early.
        let started = Instant::now();
        let now = self.store.clock().await?;
        let lease = chrono::Duration::milliseconds(self.cfg.lease_ms as i64);
        let asked = free.min(self.cfg.batch_size.max(1) as usize);
        let claims = self
            .store
            .claim_deliveries(
                &self.owner,
                now,
                now + lease,
                asked as u32,
                self.cfg.endpoint_concurrency.clamp(1, 2),
            )
            .await?;
        Ok((
            claims.into_iter().map(|c| (c, now, started)).collect(),
            asked,
        ))
    }

    async fn deliver_logged(&self, c: DeliveryClaim, at: DateTime<Utc>, started: Instant) {
        if let Err(e) = self.deliver(c, at, started).await {
            tracing::warn!(error = %e, "webhook delivery not recorded");
        }
    }

    async fn deliver(
        &self,
        c: DeliveryClaim,
        round_at: DateTime<Utc>,
        round_started: Instant,
    ) -> anyhow::Result<()> {
        // The database's clock, advanced by the time this round has taken.
        let db_now =
            || round_at + chrono::Duration::from_std(round_started.elapsed()).unwrap_or_default();
        let attempted_at = db_now();
        let t0 = Instant::now();
        let disabled = c.endpoint.disabled_at.is_some();
        let sent = if disabled {
            let reason = c.endpoint.disabled_reason.as_deref().unwrap_or("manual");
            Sent {
                error: Some(format!("endpoint disabled ({reason}); not sent")),
                ..Sent::default()
            }
        } else {
            self.send(&c, attempted_at).await
        };
        let attempt = DeliveryAttempt {
            attempted_at,
            status_code: sent.status,
            error: sent.error.clone(),
            latency_ms: t0.elapsed().as_millis() as u64,
            response_snippet: sent.snippet,
        };
        let made = c.attempts + 1;
        let ok = sent.status.is_some_and(|s| (200..300).contains(&s));
        // `410 Gone`: the receiver says the endpoint is no more (Standard Webhooks).
        let gone = sent.status == Some(410);
        let outcome = if ok {
            DeliveryOutcome::Succeeded
        } else if disabled || gone {
            DeliveryOutcome::Failed
        } else {
            after_failure(&self.cfg.schedule_s, made, sent.retry_after, db_now())
        };
        let result = if ok { "success" } else { "failure" };
        metrics::counter!("snapgate_webhook_attempts_total", "result" => result).increment(1);
        tracing::info!(
            event_id = %c.event.id, event_type = %c.event.event_type,
            endpoint_id = %c.endpoint.id, team = %c.endpoint.team, attempt = made,
            status = ?sent.status, error = ?sent.error, outcome = ?outcome,
            latency_ms = attempt.latency_ms, "webhook attempt"
        );
        // Failing since this time or earlier disables the endpoint (at once after a 410).
        let disable_before = if gone {
            attempted_at
        } else {
            attempted_at
                - chrono::Duration::seconds(self.cfg.disable_after_s.min(i64::MAX as u64 / 2) as i64)
        };
        if !self
            .store
            .finish_delivery(&c, &attempt, outcome, disable_before)
            .await?
        {
            tracing::warn!(event_id = %c.event.id, endpoint_id = %c.endpoint.id, "webhook delivery claim lost; its next claimer decides");
        }
        Ok(())
    }

    /// The signing keys: the current secret, and the previous one during its grace period.
    fn keys(&self, c: &DeliveryClaim, now: DateTime<Utc>) -> anyhow::Result<Vec<Vec<u8>>> {
        let master = self.master_key.get()?;
        let mut keys = vec![sign::secret_key(
            &master.decrypt(&c.endpoint.secret_ciphertext)?,
        )?];
        if let (Some(prev), Some(until)) = (
            &c.endpoint.previous_secret_ciphertext,
            c.endpoint.previous_secret_expires_at,
        ) {
            if until > now {
                keys.push(sign::secret_key(&master.decrypt(prev)?)?);
            }
        }
        Ok(keys)
    }

    /// One attempt; its error, which the team reads, names no IP address but the URL's own
    /// ([`net::without_addresses`]): not what a name resolved to.
    async fn send(&self, c: &DeliveryClaim, now: DateTime<Utc>) -> Sent {
        let mut sent = self.attempt(c, now).await;
        let own = reqwest::Url::parse(&c.endpoint.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string));
        sent.error = sent
            .error
            .map(|e| net::without_addresses(&e, own.as_deref()));
        sent
    }

    async fn attempt(&self, c: &DeliveryClaim, now: DateTime<Utc>) -> Sent {
        let fail = |e: String| Sent {
            error: Some(e),
            ..Sent::default()
        };
        let url = match net::check_url(&c.endpoint.url, self.cfg.allow_private_networks) {
            Ok(u) => u,
            Err(p) => return fail(format!("refused: {p}")),
        };
        let body = match self
            .renderer
            .render_data(&c.event)
            .map(|data| serde_json::to_vec(&payload(&c.event, data)))
        {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return fail(format!("cannot render the event: {e}")),
            Err(e) => return fail(format!("cannot render the event: {e:#}")),
        };
        let keys = match self.keys(c, now) {
            Ok(k) => k,
            Err(e) => return fail(format!("cannot read the endpoint's secret: {e:#}")),
        };
        let timestamp = Utc::now().timestamp();
        let signature = sign::signature_header(&keys, &c.event.id, timestamp, &body);
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &c.event.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", Sensitive(&signature))
            .body(body)
            .send()
            .await;
        let mut response = match response {
            Ok(r) => r,
            Err(e) => return fail(describe(&e)),
        };
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        // Read at most the limit; the rest of the body is never read.
        let mut snippet = Vec::new();
        let mut error = None;
        while snippet.len() < self.cfg.response_limit_bytes {
            match response.chunk().await {
                Ok(Some(chunk)) => snippet.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    error = Some(format!("reading the answer: {}", describe(&e)));
                    break;
                }
            }
        }
        snippet.truncate(self.cfg.response_limit_bytes);
        drop(response);
        Sent {
            status: Some(status),
            error,
            snippet: (!snippet.is_empty()).then(|| String::from_utf8_lossy(&snippet).into_owned()),
            retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_then_failed_and_retry_after_wins_up_to_the_largest_step() {
        let now = crate::store::now();
        let s = [5, 300, 1800];
        let at = |n, ra| match after_failure(&s, n, ra, now) {
            DeliveryOutcome::Retry(t) => (t - now).num_seconds(),
            other => panic!("{other:?}"),
        };
        assert_eq!(at(1, None), 5);
        assert_eq!(at(2, None), 300);
        assert_eq!(at(3, None), 1800);
        assert_eq!(after_failure(&s, 4, None, now), DeliveryOutcome::Failed);
        assert_eq!(at(1, Some(Duration::from_secs(60))), 60);
        assert_eq!(at(1, Some(Duration::from_secs(1))), 5);
        assert_eq!(at(1, Some(Duration::from_secs(99_999))), 1800);
        assert_eq!(after_failure(&[], 1, None, now), DeliveryOutcome::Failed);
    }
}
