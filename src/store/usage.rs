//! Usage counters as they are written: one [`UsageDelta`] per change that counts (a job
//! recorded, a job ending, MPS responses recorded), added to `usage_daily` by
//! [`push_usage_upsert`] inside the transaction (or statement) of the change itself, so the
//! counters are exact under crashes and outlive the purge of the jobs. A leaf of its own so that
//! `sql.rs`, `group_commit.rs` and `lifecycle.rs` all write usage without importing each other.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::db::Stmt;
use crate::domain::{Job, JobState, NewJob};

/// Counter rows per (team, day, region): a writer adds to one of them at random, so concurrent
/// commits of one team do not queue on one row lock. Reads sum them.
const SHARDS: u8 = 8;

/// The UTC day a time falls on, as usage keys it (`YYYY-MM-DD`: sorts as text).
pub fn usage_day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// What one change adds to one team's day in one region.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct UsageDelta {
    pub team: String,
    pub day: String,
    pub region: String,
    pub submitted: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub snapshots: i64,
    pub sprite_sheets: i64,
    pub mps_calls: i64,
}

impl UsageDelta {
    /// A job's usage is counted in its MPS region (its input bucket's, `jobs.region`).
    fn key(team: &str, day: String, region: &str) -> Self {
        Self {
            team: team.to_string(),
            day,
            region: region.to_string(),
            ..Self::default()
        }
    }

    /// A job recorded (queued), on the day it was created.
    pub fn submitted(job: &NewJob) -> Self {
        Self {
            submitted: 1,
            ..Self::key(&job.team, usage_day(job.created_at), job.request.region())
        }
    }

    /// A job that reached a final state, on the day it did (`updated_at` of the transition);
    /// `None` while it is not final.
    pub fn ended(job: &Job) -> Option<Self> {
        let mut d = Self::key(&job.team, usage_day(job.updated_at), job.request.region());
        match job.state {
            JobState::Succeeded => {
                d.succeeded = 1;
                d.snapshots = job.mps.count.unwrap_or(0) as i64;
                d.sprite_sheets = job.mps.tile_count.unwrap_or(0) as i64;
            }
            JobState::Failed => d.failed = 1,
            _ => return None,
        }
        Some(d)
    }

    /// `n` MPS calls answered for the team's jobs of `region` on `day`.
    pub fn mps_calls(team: &str, day: String, n: i64, region: &str) -> Self {
        Self {
            mps_calls: n,
            ..Self::key(team, day, region)
        }
    }

    fn add(&mut self, o: &UsageDelta) {
        self.submitted += o.submitted;
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.snapshots += o.snapshots;
        self.sprite_sheets += o.sprite_sheets;
        self.mps_calls += o.mps_calls;
    }
}

/// Deltas summed per (team, day, region): one statement may not touch a row twice.
fn merged(deltas: &[UsageDelta]) -> Vec<UsageDelta> {
    let mut by_key: BTreeMap<(String, String, String), UsageDelta> = BTreeMap::new();
    for d in deltas {
        by_key
            .entry((d.team.clone(), d.day.clone(), d.region.clone()))
            .and_modify(|m| m.add(d))
            .or_insert_with(|| d.clone());
    }
    by_key.into_values().collect()
}

/// The counters of `usage_daily`, in the order [`push_usage_upsert`] writes them.
const COUNTERS: [&str; 6] = [
    "submitted",
    "succeeded",
    "failed",
    "snapshots",
    "sprite_sheets",
    "mps_calls",
];

/// The shard a statement adds to, picked at random.
fn shard() -> i64 {
    i64::from(uuid::Uuid::new_v4().as_bytes()[0] % SHARDS)
}

/// `ON CONFLICT … DO UPDATE`: each of `counters` added to the row already there.
fn push_add_on_conflict(q: &mut Stmt, counters: &[&str]) {
    q.push(" ON CONFLICT (team, day, region, shard) DO UPDATE SET ");
    let set: Vec<String> = counters
        .iter()
        .map(|c| format!("{c} = usage_daily.{c} + excluded.{c}"))
        .collect();
    q.push(&set.join(", "));
}

/// Appends to `q` the upsert that adds `deltas` to the counters (nothing when there are none):
/// `q` is empty (the statement is the upsert) or a `WITH … AS (…)` prefix on Postgres.
pub(super) fn push_usage_upsert(q: &mut Stmt, deltas: &[UsageDelta]) {
    let shard = shard();
    q.push(&format!(
        "INSERT INTO usage_daily (team, day, region, shard, {}) VALUES ",
        COUNTERS.join(", ")
    ));
    // `merged` answers them sorted: concurrent upserts lock their rows in one order.
    for (i, d) in merged(deltas).iter().enumerate() {
        q.push(if i == 0 { "(" } else { ", (" });
        q.push_bind(&d.team).push(", ").push_bind(&d.day);
        q.push(", ")
            .push_bind(&d.region)
            .push(", ")
            .push_bind(shard);
        for n in [
            d.submitted,
            d.succeeded,
            d.failed,
            d.snapshots,
            d.sprite_sheets,
            d.mps_calls,
        ] {
            q.push(", ").push_bind(n);
        }
        q.push(")");
    }
    push_add_on_conflict(q, &COUNTERS);
}

/// Postgres, inside a `WITH` chain: the upsert that counts as submitted the rows of `jobs`
/// (a relation with `team`, `usage_day`, `usage_region`: one row per job recorded), so that
/// only the jobs the statement did insert are counted. In one sorted order, as
/// [`push_usage_upsert`].
pub(super) fn push_submitted_from(q: &mut Stmt, jobs: &str) {
    q.push(
        "INSERT INTO usage_daily (team, day, region, shard, submitted) \
         SELECT team, usage_day, usage_region, ",
    );
    q.push_bind(shard());
    q.push(&format!(
        ", count(*) FROM {jobs} GROUP BY team, usage_day, usage_region \
         ORDER BY team, usage_day, usage_region"
    ));
    push_add_on_conflict(q, &["submitted"]);
}

/// The upsert of `deltas` as a statement of its own.
pub(super) fn usage_upsert(deltas: &[UsageDelta]) -> Stmt {
    let mut q = Stmt::default();
    push_usage_upsert(&mut q, deltas);
    q
}
