//! The clock: times at the precision both databases keep (microseconds). Anything two replicas
//! compare (leases, idempotency windows, the shared upstream budget) is compared in the store.

use chrono::{DateTime, TimeZone, Utc};

/// The current time, truncated to microseconds.
pub fn now() -> DateTime<Utc> {
    micros_to_time(Utc::now().timestamp_micros())
}

pub fn micros_to_time(micros: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(micros).single().unwrap_or_default()
}
