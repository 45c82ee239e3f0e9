//! In-process wake-ups between the services (which record jobs) and the worker (which sends
//! them), created once by the app and handed to both, so neither depends on the other. Across
//! replicas, Postgres `LISTEN/NOTIFY` does the same job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, Notify};

use crate::domain::JobId;

/// In-process wake-ups between the API and the worker. Across replicas, Postgres
/// `LISTEN/NOTIFY` does the same job.
#[derive(Clone)]
pub struct JobSignals {
    /// Nudges the dispatcher: a job was queued.
    pub wake: Arc<Notify>,
    /// A job left `queued` (MPS accepted it, or it failed): the waiting POST can answer.
    pub dispatched: broadcast::Sender<JobId>,
    /// The dispatcher has more than it can send at once (a full batch, or dispatch paused): a
    /// POST then answers 202 at once instead of waiting behind the backlog.
    pub backlog: Arc<std::sync::atomic::AtomicBool>,
    /// A job in flight changed state (a status poll recorded it): live views (upload events)
    /// refresh from this one source instead of each reading the database.
    pub changed: broadcast::Sender<JobId>,
    /// A submit had to wait for the upstream budget (MPS's rate) since the queue was last
    /// empty: a new job would not be sent at once either, so a POST answers 202 at once.
    /// Cleared by a dispatch round that finds nothing to claim.
    pub budget_short: Arc<std::sync::atomic::AtomicBool>,
    /// Each MPS region's own `wake`, `backlog` and `budget_short` ([`JobSignals::for_region`]),
    /// by region id: a job wakes its region's dispatcher, and one region's backlog never makes
    /// another's POSTs answer early.
    regional: Arc<Mutex<HashMap<String, JobSignals>>>,
}

impl JobSignals {
    /// The signals of `region`'s worker (made on first use), sharing `dispatched` and `changed`.
    pub fn for_region(&self, region: &str) -> JobSignals {
        let mut regional = self.regional.lock().expect("not poisoned");
        regional
            .entry(region.to_string())
            .or_insert_with(|| JobSignals {
                wake: Arc::new(Notify::new()),
                backlog: Arc::default(),
                budget_short: Arc::default(),
                ..self.clone()
            })
            .clone()
    }

    /// The signals of `region`'s worker if one was made, else these.
    pub fn region(&self, region: &str) -> JobSignals {
        let regional = self.regional.lock().expect("not poisoned");
        regional
            .get(region)
            .cloned()
            .unwrap_or_else(|| self.clone())
    }
}

impl Default for JobSignals {
    fn default() -> Self {
        Self {
            wake: Arc::new(Notify::new()),
            dispatched: broadcast::channel(1024).0,
            backlog: Arc::default(),
            changed: broadcast::channel(1024).0,
            budget_short: Arc::default(),
            regional: Arc::default(),
        }
    }
}
