//! Faults MPS can show, settable while the emulator runs: `GET /_emulator/faults` reads them,
//! `POST /_emulator/faults` with a JSON object sets any of them (fields left out are kept). This
//! file holds the settings and their update; the endpoints are in `control.rs`, and `rpc.rs`
//! spends the counters.
//!
//! Counters (`*_next_*`) make tests deterministic: the next N calls of that kind get the fault,
//! then the counter is spent. Rates are random (seeded by `--seed`).
//!
//! | field | meaning |
//! |---|---|
//! | `list_delay_ms` | a new job appears in `QuerySnapshotJobList` (by id or by pipeline) only this long after its creation |
//! | `slow_ms` | how long a slow answer waits (after the work is done: a slow submit has already created its job) |
//! | `slow_rate` | fraction of successful calls answered slowly |
//! | `slow_next_submits` / `slow_next_queries` | the next N successful submits (jobs created) / queries are answered slowly |
//! | `drop_next_submits` | the next N submits create their job, then the connection closes with no answer |
//! | `throttle_next_submits` / `throttle_next_queries` | the next N calls answer `Throttling.User` (400), nothing done |
//! | `unavailable_next_submits` / `unavailable_next_queries` | the next N calls answer `ServiceUnavailable` (503), nothing done |
//! | `mns_lose_rate` / `mns_lose_next` | fraction of job messages (the next N) never published to the MNS queue |
//! | `mns_duplicate_rate` / `mns_duplicate_next` | fraction of job messages (the next N) published twice, the copy `mns_delay_ms` later |
//! | `mns_delay_rate` / `mns_delay_next` | fraction of job messages (the next N) visible only `mns_delay_ms` after the job ended |
//! | `mns_delay_ms` | the delay of delayed messages and of duplicate copies |

use serde::{Deserialize, Serialize};

use super::config::EmulatorConfig;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    pub list_delay_ms: u64,
    pub slow_ms: u64,
    pub slow_rate: f64,
    pub slow_next_submits: u64,
    pub slow_next_queries: u64,
    pub drop_next_submits: u64,
    pub throttle_next_submits: u64,
    pub throttle_next_queries: u64,
    pub unavailable_next_submits: u64,
    pub unavailable_next_queries: u64,
    pub mns_lose_rate: f64,
    pub mns_lose_next: u64,
    pub mns_duplicate_rate: f64,
    pub mns_duplicate_next: u64,
    pub mns_delay_rate: f64,
    pub mns_delay_next: u64,
    pub mns_delay_ms: u64,
}

/// A partial update: every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsUpdate {
    list_delay_ms: Option<u64>,
    slow_ms: Option<u64>,
    slow_rate: Option<f64>,
    slow_next_submits: Option<u64>,
    slow_next_queries: Option<u64>,
    drop_next_submits: Option<u64>,
    throttle_next_submits: Option<u64>,
    throttle_next_queries: Option<u64>,
    unavailable_next_submits: Option<u64>,
    unavailable_next_queries: Option<u64>,
    mns_lose_rate: Option<f64>,
    mns_lose_next: Option<u64>,
    mns_duplicate_rate: Option<f64>,
    mns_duplicate_next: Option<u64>,
    mns_delay_rate: Option<f64>,
    mns_delay_next: Option<u64>,
    mns_delay_ms: Option<u64>,
}

impl Faults {
    pub fn from_config(c: &EmulatorConfig) -> Self {
        Self {
            list_delay_ms: c.list_delay_ms,
            slow_ms: c.slow_ms,
            slow_rate: c.slow_rate,
            mns_delay_ms: 1000,
            ..Self::default()
        }
    }

    pub(super) fn apply(&mut self, u: FaultsUpdate) -> Result<(), String> {
        for (name, rate, field) in [
            ("slow_rate", u.slow_rate, &mut self.slow_rate),
            ("mns_lose_rate", u.mns_lose_rate, &mut self.mns_lose_rate),
            (
                "mns_duplicate_rate",
                u.mns_duplicate_rate,
                &mut self.mns_duplicate_rate,
            ),
            ("mns_delay_rate", u.mns_delay_rate, &mut self.mns_delay_rate),
        ] {
            if let Some(r) = rate {
                if !(0.0..=1.0).contains(&r) {
                    return Err(format!("{name} must be between 0 and 1"));
                }
                *field = r;
            }
        }
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = u.$f { self.$f = v; } )* };
        }
        set!(
            list_delay_ms,
            slow_ms,
            slow_next_submits,
            slow_next_queries,
            drop_next_submits,
            throttle_next_submits,
            throttle_next_queries,
            unavailable_next_submits,
            unavailable_next_queries,
            mns_lose_next,
            mns_duplicate_next,
            mns_delay_next,
            mns_delay_ms
        );
        Ok(())
    }
}

/// Spends one unit of a counter; true if there was one.
pub fn take(counter: &mut u64) -> bool {
    if *counter > 0 {
        *counter -= 1;
        true
    } else {
        false
    }
}
