//! The credential refresher: sleeps until the current temporary credential is due for refresh
//! (`Credentials::refresh_due`: 15 minutes before it expires, a third of a short token's
//! lifetime, or the retry time after a failure), refreshes it, and records the outcome in the
//! credential's status (`/readyz`, `/metrics`, the log). A long-lived key is never refreshed.
//! Claim → process → record as `dispatch.rs`, with one thing to claim: the due refresh.

use tokio_util::sync::CancellationToken;

use crate::credentials::Credentials;

/// Runs until `stop` is cancelled.
pub async fn run(creds: Credentials, stop: CancellationToken) {
    loop {
        // Claim: the next due refresh (none: a key that never expires).
        let Some(due) = creds.refresh_due() else {
            return;
        };
        let wait = (due - crate::clock::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        // Process and record: `refresh` keeps the current credential on failure, counts and
        // logs the outcome, and sets the retry time `refresh_due` answers next.
        let _ = creds.refresh().await;
    }
}
