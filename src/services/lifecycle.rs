//! Operations on the data's lifecycle: usage per team, day and region (with cost when the
//! operator sets prices), pausing and resuming a team, and the bulk redrive of failed jobs
//! (each one through [`SubmitService::retry`], the one submit path).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::config::LifecycleSettings;
use crate::domain::{JobId, Violation};
use crate::services::jobs::{RetryError, SubmitService};
use crate::signals::JobSignals;
use crate::store::{usage_day, DynStore, RedriveFilter, StoreError, TeamPause, UsageRecord};

/// A dimension usage is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum UsageDim {
    Team,
    Day,
    Region,
}

impl UsageDim {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "team" => Some(Self::Team),
            "day" => Some(Self::Day),
            "region" => Some(Self::Region),
            _ => None,
        }
    }
}

/// What usage to read: days `from` to `to` (inclusive, UTC), one team or all.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub team: Option<String>,
    pub group_by: Vec<UsageDim>,
}

/// At most this many days per usage query.
pub const MAX_USAGE_DAYS: i64 = 366;

impl UsageQuery {
    /// From the query string's values: `from`/`to` as `YYYY-MM-DD` (default: the 30 days to
    /// today), `group_by` a comma list of `team`, `day`, `region` (default: all three).
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        group_by: Option<&str>,
        team: Option<String>,
    ) -> Result<Self, Vec<Violation>> {
        let mut errors = Vec::new();
        let mut date = |field: &str, v: Option<&str>, default: NaiveDate| match v {
            None => default,
            Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_else(|_| {
                errors.push(violation(field, "a day as YYYY-MM-DD"));
                default
            }),
        };
        let today = crate::clock::now().date_naive();
        let to = date("to", to, today);
        let from = date("from", from, to - chrono::Days::new(29));
        let mut dims = Vec::new();
        for part in group_by.unwrap_or("team,day,region").split(',') {
            match UsageDim::parse(part.trim()) {
                Some(d) if !dims.contains(&d) => dims.push(d),
                Some(_) => {}
                None => errors.push(violation("group_by", "a list of team, day, region")),
            }
        }
        if from > to {
            errors.push(violation("from", "not after `to`"));
        } else if (to - from).num_days() >= MAX_USAGE_DAYS {
            errors.push(violation("from", "at most 366 days before `to`"));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        dims.sort();
        Ok(Self {
            from,
            to,
            team,
            group_by: dims,
        })
    }
}

fn violation(field: &str, what: &str) -> Violation {
    Violation {
        field: field.to_string(),
        code: "invalid".into(),
        message: format!("must be {what}"),
    }
}

/// One row of usage: a group's totals (a dimension not grouped by is `None`), and its cost
/// when prices are set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct UsageRow {
    pub team: Option<String>,
    pub day: Option<String>,
    pub region: Option<String>,
    pub submitted: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Snapshots made (MPS `Count`).
    pub snapshots: u64,
    /// Sprite sheets made (MPS `TileCount`).
    pub sprite_sheets: u64,
    /// MPS calls answered about the group's jobs.
    pub mps_calls: u64,
    /// The price table applied (absent when no price is set).
    pub cost: Option<f64>,
}

/// Pause options.
#[derive(Debug, Clone, Default)]
pub struct PauseRequest {
    /// New jobs are refused (409) instead of recorded and held.
    pub refuse_new: bool,
    pub reason: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("no such team")]
    UnknownTeam,
    #[error("invalid request")]
    Invalid(Vec<Violation>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A bulk redrive's filter as asked (the limit checked against the configured maximum).
#[derive(Debug, Clone, Default)]
pub struct RedriveRequest {
    pub team: Option<String>,
    pub code: Option<String>,
    pub ended_from: Option<DateTime<Utc>>,
    pub ended_to: Option<DateTime<Utc>>,
    pub limit: Option<u32>,
    pub dry_run: bool,
}

/// One job of a bulk redrive.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RedriveItem {
    #[schema(value_type = String, format = Uuid)]
    pub job_id: JobId,
    /// `retried` (a new job), `already_retried` (its earlier retry), or `refused`.
    pub outcome: String,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub retry_id: Option<JobId>,
    /// Why it was refused.
    pub error: Option<String>,
}

/// A bulk redrive's answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RedriveReport {
    pub dry_run: bool,
    /// Failed jobs the filter matches that were not retried yet (before this call).
    pub matched: u64,
    /// The most this call takes.
    pub limit: u32,
    /// Per job taken (none on a dry run).
    pub jobs: Vec<RedriveItem>,
}

pub struct LifecycleService {
    store: DynStore,
    submit: Arc<SubmitService>,
    signals: JobSignals,
    cfg: LifecycleSettings,
}

impl LifecycleService {
    pub fn new(
        store: DynStore,
        submit: Arc<SubmitService>,
        signals: JobSignals,
        cfg: LifecycleSettings,
    ) -> Self {
        Self {
            store,
            submit,
            signals,
            cfg,
        }
    }

    /// Usage grouped as asked, sorted by its groups; with cost when any price is set.
    pub async fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageRow>, OpsError> {
        let records = self
            .store
            .usage(
                &usage_day(q.from.and_hms_opt(0, 0, 0).expect("midnight").and_utc()),
                &usage_day(q.to.and_hms_opt(0, 0, 0).expect("midnight").and_utc()),
                q.team.as_deref(),
            )
            .await?;
        let mut groups: BTreeMap<GroupKey, UsageRow> = BTreeMap::new();
        for r in records {
            let pick = |d: UsageDim, v: &str| q.group_by.contains(&d).then(|| v.to_string());
            let key = (
                pick(UsageDim::Team, &r.team),
                pick(UsageDim::Day, &r.day),
                pick(UsageDim::Region, &r.region),
            );
            let row = groups.entry(key.clone()).or_insert_with(|| UsageRow {
                team: key.0,
                day: key.1,
                region: key.2,
                ..UsageRow::default()
            });
            add(row, &r);
        }
        let mut rows: Vec<UsageRow> = groups.into_values().collect();
        for row in &mut rows {
            row.cost = self.cost(row);
        }
        Ok(rows)
    }

    fn cost(&self, r: &UsageRow) -> Option<f64> {
        let c = &self.cfg;
        let prices = [
            c.price_per_job,
            c.price_per_snapshot,
            c.price_per_sprite_sheet,
            c.price_per_mps_call,
        ];
        if prices.iter().all(|p| *p == 0.0) {
            return None;
        }
        let cost = r.succeeded as f64 * c.price_per_job
            + r.snapshots as f64 * c.price_per_snapshot
            + r.sprite_sheets as f64 * c.price_per_sprite_sheet
            + r.mps_calls as f64 * c.price_per_mps_call;
        // Cents of a cent: no float noise in a bill.
        Some((cost * 10_000.0).round() / 10_000.0)
    }

    pub fn currency(&self) -> &str {
        &self.cfg.currency
    }

    /// Pauses `team`: its queued jobs are not sent (every replica's claim skips them at once),
    /// jobs MPS has finish, new jobs are held (or refused, by `req.refuse_new`).
    pub async fn pause(&self, team: &str, req: &PauseRequest) -> Result<TeamPause, OpsError> {
        let at = crate::clock::now();
        if !self
            .store
            .pause_team(team, at, req.refuse_new, req.reason.as_deref())
            .await?
        {
            return Err(OpsError::UnknownTeam);
        }
        self.submit.pauses().invalidate().await;
        tracing::info!(team, refuse_new = req.refuse_new, "team paused");
        self.pause_of(team).await
    }

    /// Resumes `team`: its queued jobs are due again on every replica at once.
    pub async fn resume(&self, team: &str) -> Result<(), OpsError> {
        if !self.store.resume_team(team).await? {
            return Err(OpsError::UnknownTeam);
        }
        self.submit.pauses().invalidate().await;
        self.signals.wake.notify_one();
        tracing::info!(team, "team resumed");
        Ok(())
    }

    async fn pause_of(&self, team: &str) -> Result<TeamPause, OpsError> {
        self.store
            .paused_teams()
            .await?
            .into_iter()
            .find(|p| p.team == team)
            .ok_or(OpsError::UnknownTeam)
    }

    pub async fn paused_teams(&self) -> Result<Vec<TeamPause>, OpsError> {
        Ok(self.store.paused_teams().await?)
    }

    /// Redrives the failed jobs the filter matches, oldest end first, at most the limit
    /// (`lifecycle.redrive_max_per_call` at most), each by [`SubmitService::retry`]: a second
    /// call takes the next ones (a retried job no longer matches), and a job retried
    /// meanwhile answers its one retry. A dry run counts only.
    pub async fn redrive(&self, req: &RedriveRequest) -> Result<RedriveReport, OpsError> {
        let max = self.cfg.redrive_max_per_call;
        let limit = req.limit.unwrap_or(max);
        if limit == 0 || limit > max {
            return Err(OpsError::Invalid(vec![violation(
                "limit",
                &format!("between 1 and {max} (lifecycle.redrive_max_per_call)"),
            )]));
        }
        let filter = RedriveFilter {
            team: req.team.clone(),
            code: req.code.clone(),
            ended_from: req.ended_from,
            ended_to: req.ended_to,
            limit,
        };
        let matched = self.store.count_redrive(&filter).await?;
        let mut jobs = Vec::new();
        if !req.dry_run {
            for id in self.store.redrive_candidates(&filter).await? {
                jobs.push(self.redrive_one(id).await?);
            }
            tracing::info!(matched, retried = jobs.len(), "bulk redrive");
        }
        Ok(RedriveReport {
            dry_run: req.dry_run,
            matched,
            limit,
            jobs,
        })
    }

    async fn redrive_one(&self, id: JobId) -> Result<RedriveItem, OpsError> {
        let item = |outcome: &str, retry_id, error| RedriveItem {
            job_id: id,
            outcome: outcome.into(),
            retry_id,
            error,
        };
        Ok(match self.submit.retry(None, id).await {
            Ok(s) if s.replayed => item("already_retried", Some(s.job.id), None),
            Ok(s) => item("retried", Some(s.job.id), None),
            Err(RetryError::Submit(crate::services::jobs::SubmitError::Store(e))) => {
                return Err(e.into())
            }
            Err(e) => item("refused", None, Some(e.to_string())),
        })
    }
}

/// A usage group: (team, day, region), `None` where not grouped by.
type GroupKey = (Option<String>, Option<String>, Option<String>);

fn add(row: &mut UsageRow, r: &UsageRecord) {
    row.submitted += r.submitted;
    row.succeeded += r.succeeded;
    row.failed += r.failed;
    row.snapshots += r.snapshots;
    row.sprite_sheets += r.sprite_sheets;
    row.mps_calls += r.mps_calls;
}
