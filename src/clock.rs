//! The clock: times at the precision both databases keep (microseconds). Anything two replicas
//! compare (leases, idempotency windows, the shared upstream budget) is compared in the store.
//!
//! A test may run a future on a shifted clock ([`shifted`]): every [`now`] read inside it (not
//! in tasks it spawns) is moved by the offset, so days of retention can be simulated in seconds
//! without touching any other test of the process.

use chrono::{DateTime, TimeZone, Utc};

tokio::task_local! {
    /// Microseconds added to the wall clock inside [`shifted`].
    static OFFSET_MICROS: i64;
}

/// The current time, truncated to microseconds.
pub fn now() -> DateTime<Utc> {
    let offset = OFFSET_MICROS.try_with(|o| *o).unwrap_or(0);
    micros_to_time(Utc::now().timestamp_micros() + offset)
}

pub fn micros_to_time(micros: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(micros).single().unwrap_or_default()
}

/// Runs `fut` with [`now`] moved by `offset` (an injected clock for tests and simulations).
pub async fn shifted<F: std::future::Future>(offset: chrono::Duration, fut: F) -> F::Output {
    let micros = offset.num_microseconds().unwrap_or(i64::MAX);
    OFFSET_MICROS.scope(micros, fut).await
}
