//! The emulator's clock, in Unix milliseconds: what every job's life is measured with (its
//! state, the list delay, when it ended) and the MNS queue's times (enqueue, delay, visibility).
//! The wall clock by default; with `--manual-clock` (`EmulatorConfig::manual_clock`) it starts
//! at the wall-clock time of the start and moves only when told (`POST /_emulator/clock`), so a
//! test reaches each state of a job exactly instead of sleeping for it. Signature timestamps,
//! QPS windows and answer delays (latency, slow answers) always follow real time: they are
//! about the wire, not about jobs.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::Utc;

#[derive(Debug, Clone)]
pub struct Clock {
    /// The manual clock's time; `None`: the wall clock.
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The wall clock, or (`manual`) a clock standing at the wall-clock time now.
    pub fn new(manual: bool) -> Self {
        Self {
            manual: manual.then(|| Arc::new(AtomicI64::new(wall_ms()))),
        }
    }

    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            Some(t) => t.load(Ordering::SeqCst),
            None => wall_ms(),
        }
    }

    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }

    /// Moves a manual clock `ms` forward: its new time; `None` for the wall clock (which
    /// nobody moves).
    pub fn advance(&self, ms: u64) -> Option<i64> {
        let t = self.manual.as_ref()?;
        let ms = i64::try_from(ms).unwrap_or(i64::MAX);
        let before = t
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(ms))
            })
            .unwrap_or_else(|now| now);
        Some(before.saturating_add(ms))
    }
}

fn wall_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_the_wall_clock_never_is() {
        let c = Clock::new(true);
        let t0 = c.now_ms();
        assert!(
            (t0 - wall_ms()).abs() < 60_000,
            "starts at the wall-clock time"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(c.now_ms(), t0);
        let copy = c.clone();
        assert_eq!(copy.advance(250), Some(t0 + 250));
        assert_eq!(c.now_ms(), t0 + 250, "clones share the time");
        let wall = Clock::new(false);
        assert!(!wall.is_manual());
        assert_eq!(wall.advance(250), None);
    }
}
