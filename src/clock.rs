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

/// The wall clock, never shifted: for times another party checks against its own clock (a
/// request signature's date), which a simulated day must not move.
pub fn wall_now() -> DateTime<Utc> {
    micros_to_time(Utc::now().timestamp_micros())
}

pub fn micros_to_time(micros: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(micros).single().unwrap_or_default()
}

/// Runs `fut` with [`now`] moved by `offset` (an injected clock for tests and simulations).
pub async fn shifted<F: std::future::Future>(offset: chrono::Duration, fut: F) -> F::Output {
    let micros = offset.num_microseconds().unwrap_or(i64::MAX);
    OFFSET_MICROS.scope(micros, fut).await
}

/// A clock that stands still until told to move ([`ManualClock::advance`]); its clones share
/// one time. Tests drive with it what would otherwise be measured on the monotonic clock (the
/// rate limiter's buckets, the job cache's trust), so nothing they show depends on how fast the
/// machine runs.
pub type ManualClock = governor::clock::FakeRelativeClock;

/// Time measured on the monotonic clock (what `serve` uses), or on a [`ManualClock`] (tests).
#[derive(Debug, Clone)]
pub enum Monotonic {
    /// Time since this instant.
    System(std::time::Instant),
    Manual(ManualClock),
}

impl Monotonic {
    pub fn system() -> Self {
        Self::System(std::time::Instant::now())
    }

    /// Time since the clock's start.
    pub fn elapsed(&self) -> std::time::Duration {
        use governor::clock::Clock;
        match self {
            Self::System(start) => start.elapsed(),
            Self::Manual(clock) => clock.now().into(),
        }
    }
}

impl governor::clock::Clock for Monotonic {
    type Instant = governor::nanos::Nanos;

    fn now(&self) -> governor::nanos::Nanos {
        self.elapsed().into()
    }
}
