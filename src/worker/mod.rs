//! Background work: the dispatcher (claims queued jobs and submits them to MPS) and the status
//! poller (asks MPS about in-flight jobs). A handler never calls MPS: it writes to the store and
//! nudges the worker through [`WorkerSignals`].

use std::sync::Arc;

use tokio::sync::{broadcast, Notify};

use crate::domain::JobId;

/// In-process wake-ups between the API and the worker. Across replicas, Postgres
/// `LISTEN/NOTIFY` does the same job.
#[derive(Clone)]
pub struct WorkerSignals {
    /// Nudges the dispatcher: a job was queued.
    pub wake: Arc<Notify>,
    /// A job left `queued` (MPS accepted it, or it failed): the waiting POST can answer.
    pub dispatched: broadcast::Sender<JobId>,
}

impl Default for WorkerSignals {
    fn default() -> Self {
        Self {
            wake: Arc::new(Notify::new()),
            dispatched: broadcast::channel(1024).0,
        }
    }
}
