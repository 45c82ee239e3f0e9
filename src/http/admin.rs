//! Operations views: `/metrics` (Prometheus) and the admin-only `GET /v1/admin/stats`.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{AdminErrors, ApiError};
use super::AppState;
use super::Caller;
use crate::store;

#[derive(Debug, Serialize, ToSchema)]
pub struct TeamStateCount {
    pub team: String,
    pub state: String,
    pub count: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegionStateCount {
    /// MPS region id (`cn-beijing`): the job's input bucket's region.
    pub region: String,
    pub state: String,
    pub count: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorCodeCount {
    pub code: String,
    pub count: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetUse {
    /// `mps.submit` or `mps.query` (the default region's, or every region's with
    /// `worker.budget_scope = "account"`), `mps.submit.<region>` or `mps.query.<region>`.
    pub name: String,
    /// Configured calls per second, shared by all replicas.
    pub qps: u32,
    /// Tokens left in the bucket right now (a tenth of a second's worth at most).
    pub tokens_left: f64,
    pub last_taken_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// Jobs per team and state.
    pub jobs: Vec<TeamStateCount>,
    /// Totals per state, all teams.
    pub totals: std::collections::BTreeMap<String, u64>,
    /// Jobs per MPS region and state.
    pub regions: Vec<RegionStateCount>,
    pub oldest_queued_at: Option<DateTime<Utc>>,
    pub oldest_queued_age_s: Option<f64>,
    pub oldest_in_flight_at: Option<DateTime<Utc>>,
    pub oldest_in_flight_age_s: Option<f64>,
    /// MPS error codes received in the last hour.
    pub mps_error_codes_last_hour: Vec<ErrorCodeCount>,
    pub upstream_budget: Vec<BudgetUse>,
    /// The gateway's access to MPS (this replica's view): an outage or refused credentials
    /// pause dispatch; the code says which.
    #[schema(value_type = Object)]
    pub mps: crate::mps::health::HealthView,
    /// Teams paused by an operator (their queued jobs wait).
    pub paused_teams: Vec<PausedTeam>,
    /// The last retention purge (any replica): when it ended and what it deleted per class.
    #[schema(value_type = Option<Object>)]
    pub last_purge: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PausedTeam {
    pub team: String,
    pub paused_at: DateTime<Utc>,
    /// New jobs are refused (409) rather than held.
    pub refuse_new: bool,
    pub reason: Option<String>,
}

fn age(t: Option<DateTime<Utc>>) -> Option<f64> {
    t.map(|t| (Utc::now() - t).num_milliseconds() as f64 / 1000.0)
}

/// Gateway-wide counts for operators (admin keys only).
#[utoipa::path(
    get,
    path = "/v1/admin/stats",
    tag = "admin",
    responses(
        (status = 200, body = Stats),
        AdminErrors,
    ),
    security(("bearer" = []))
)]
pub async fn get_stats(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Stats>, ApiError> {
    if !caller.admin && state.settings.auth.enabled {
        return Err(ApiError::Forbidden);
    }
    let counts = state.store.job_counts().await?;
    let mut totals = std::collections::BTreeMap::new();
    for (_, st, n) in &counts.by_state {
        *totals.entry(st.clone()).or_insert(0) += n;
    }
    let codes = state
        .store
        .mps_error_codes_since(store::now() - chrono::Duration::hours(1))
        .await?;
    let budgets = state.store.budgets().await?;
    let paused = state.store.paused_teams().await?;
    let last_purge = state
        .store
        .last_lease_run(crate::worker::purge::PURGE_LEASE)
        .await?
        .map(|(_, report)| report);
    let now = store::now();
    let regions = state.settings.regions();
    let rate_of = |name: &str| {
        let r = regions
            .iter()
            .find(|r| r.submit_budget == name || r.query_budget == name);
        match r {
            Some(r) if r.submit_budget == name => r.submit_qps,
            Some(r) => r.query_qps,
            None => state.settings.worker.query_qps,
        }
    };
    Ok(Json(Stats {
        jobs: counts
            .by_state
            .into_iter()
            .map(|(team, state, count)| TeamStateCount { team, state, count })
            .collect(),
        totals,
        regions: counts
            .by_region
            .into_iter()
            .map(|(region, state, count)| RegionStateCount {
                region,
                state,
                count,
            })
            .collect(),
        oldest_queued_age_s: age(counts.oldest_queued),
        oldest_queued_at: counts.oldest_queued,
        oldest_in_flight_age_s: age(counts.oldest_in_flight),
        oldest_in_flight_at: counts.oldest_in_flight,
        mps_error_codes_last_hour: codes
            .into_iter()
            .map(|(code, count)| ErrorCodeCount { code, count })
            .collect(),
        upstream_budget: budgets
            .into_iter()
            .map(|(name, tokens, at)| {
                let qps = rate_of(&name);
                // What the bucket holds now: the stored count refilled up to this moment.
                let rate = f64::from(qps);
                let (_, left, _) = crate::store::take_tokens(
                    tokens,
                    at,
                    now,
                    0,
                    rate,
                    crate::store::budget_burst(rate),
                );
                BudgetUse {
                    qps,
                    name,
                    tokens_left: (left * 100.0).round() / 100.0,
                    last_taken_at: at,
                }
            })
            .collect(),
        last_purge,
        mps: state.mps_health.view(),
        paused_teams: paused
            .into_iter()
            .map(|p| PausedTeam {
                team: p.team,
                paused_at: p.paused_at,
                refuse_new: p.refuse_new,
                reason: p.reason,
            })
            .collect(),
    }))
}

/// `snapgate_team_paused{team}`: 1 for each paused team, 0 for every other team.
async fn team_pause_gauges(state: &AppState) -> crate::store::StoreResult<()> {
    let paused = state.store.paused_teams().await?;
    for t in state.store.list_teams().await? {
        let on = paused.iter().any(|p| p.team == t.name);
        metrics::gauge!("snapgate_team_paused", "team" => t.name).set(if on { 1.0 } else { 0.0 });
    }
    Ok(())
}

/// Prometheus exposition. Job gauges come from the store, cached for [`COUNTS_TTL`](super::state::COUNTS_TTL).
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Some(c) = &state.credentials {
        c.record_gauge();
    }
    if let Some(counts) = state.counts.get(&state.store).await {
        let mut totals = std::collections::BTreeMap::new();
        for (_, st, n) in &counts.by_state {
            *totals.entry(st.clone()).or_insert(0u64) += n;
        }
        for st in crate::domain::JobState::ALL {
            let n = totals.get(st.as_str()).copied().unwrap_or(0);
            metrics::gauge!("snapgate_jobs", "state" => st.as_str()).set(n as f64);
        }
        for (region, st, n) in &counts.by_region {
            metrics::gauge!("snapgate_region_jobs", "region" => region.clone(), "state" => st.clone())
                .set(*n as f64);
        }
        metrics::gauge!("snapgate_oldest_queued_job_age_seconds")
            .set(age(counts.oldest_queued).unwrap_or(0.0));
        metrics::gauge!("snapgate_oldest_in_flight_job_age_seconds")
            .set(age(counts.oldest_in_flight).unwrap_or(0.0));
    }
    if let Err(e) = team_pause_gauges(&state).await {
        tracing::warn!(error = %e, "paused teams for /metrics failed");
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::handle().render(),
    )
}
