//! What the gateway knows of its own access to MPS: reachable and accepting its credentials, or
//! not. An outage (nothing reaches MPS) or a misconfiguration (MPS refuses the gateway's key,
//! signature or clock) is not any job's fault: dispatch pauses as a whole, with backoff (a
//! circuit breaker), jobs stay queued, `/readyz` and `/v1/admin/stats` report it, and the log
//! says so once per change, not once per job.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::mps::error::{ErrorClass, MpsError};

/// Why dispatch is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trouble {
    /// Nothing reaches MPS.
    Unreachable,
    /// MPS refuses the gateway's credentials or clock.
    Credentials,
}

/// A view for operators.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HealthView {
    /// MPS answers and accepts the gateway.
    pub ok: bool,
    pub trouble: Option<Trouble>,
    /// The MPS (or transport) code that says so.
    pub code: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// Whether a signed call has succeeded since the process started.
    pub verified: bool,
}

#[derive(Debug, Default)]
struct State {
    trouble: Option<(Trouble, String, DateTime<Utc>)>,
    failures: u32,
    paused_until: Option<Instant>,
    verified: bool,
}

/// One region's access to MPS (each region's worker has its own: one region's outage pauses
/// only its own dispatch).
#[derive(Debug, Default)]
pub struct MpsHealth {
    /// The MPS region, as `snapgate_mps_up`'s `region` label.
    region: String,
    state: Mutex<State>,
}

const MAX_PAUSE: Duration = Duration::from_secs(60);

impl MpsHealth {
    pub fn of_region(region: &str) -> Self {
        Self {
            region: region.to_string(),
            state: Mutex::default(),
        }
    }

    /// The MPS region this is the health of.
    pub fn region(&self) -> &str {
        &self.region
    }

    fn up(&self, up: bool) {
        metrics::gauge!("snapgate_mps_up", "region" => self.region.clone())
            .set(f64::from(u8::from(up)));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the outcome of one MPS call. Returns the pause to apply when it shows trouble.
    pub fn observe<T>(&self, result: &Result<T, MpsError>) -> Option<Duration> {
        match result {
            Ok(_) => {
                self.recovered();
                None
            }
            Err(e) => match e.class {
                ErrorClass::Unreachable => Some(self.trip(Trouble::Unreachable, &e.code)),
                ErrorClass::Gateway => Some(self.trip(Trouble::Credentials, &e.code)),
                // MPS answered: it is reachable and knows the gateway.
                _ => {
                    self.recovered();
                    None
                }
            },
        }
    }

    fn trip(&self, trouble: Trouble, code: &str) -> Duration {
        let mut s = self.lock();
        s.failures = s.failures.saturating_add(1);
        let pause = Duration::from_millis(500 * (1u64 << s.failures.min(7))).min(MAX_PAUSE);
        s.paused_until = Some(Instant::now() + pause);
        let changed = s
            .trouble
            .as_ref()
            .is_none_or(|(t, c, _)| *t != trouble || c != code);
        if changed {
            s.trouble = Some((trouble, code.to_string(), Utc::now()));
            match trouble {
                Trouble::Unreachable => {
                    tracing::error!(code, region = %self.region, "MPS unreachable: the region's dispatch paused, its jobs stay queued")
                }
                Trouble::Credentials => {
                    tracing::error!(code, region = %self.region, "MPS refuses the gateway's credentials or clock (check the credentials and the system clock): the region's dispatch paused, its jobs stay queued")
                }
            }
            drop(s);
            self.up(false);
        }
        pause
    }

    fn recovered(&self) {
        let mut s = self.lock();
        s.verified = true;
        s.failures = 0;
        s.paused_until = None;
        if let Some((_, code, since)) = s.trouble.take() {
            let down_s = (Utc::now() - since).num_milliseconds() as f64 / 1000.0;
            tracing::info!(was = %code, down_s, region = %self.region, "MPS reachable and accepting the gateway again: dispatch resumed");
        }
        drop(s);
        self.up(true);
    }

    /// While paused, how long until the next probe.
    pub fn paused_for(&self) -> Option<Duration> {
        let s = self.lock();
        s.paused_until
            .and_then(|t| t.checked_duration_since(Instant::now()))
    }

    pub fn view(&self) -> HealthView {
        let s = self.lock();
        HealthView {
            ok: s.trouble.is_none(),
            trouble: s.trouble.as_ref().map(|t| t.0),
            code: s.trouble.as_ref().map(|t| t.1.clone()),
            since: s.trouble.as_ref().map(|t| t.2),
            verified: s.verified,
        }
    }
}
