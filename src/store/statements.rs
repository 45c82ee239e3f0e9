//! The statements that more than one store file builds, kept in a leaf of their own so that
//! none of those files has to import another for them: the insert of new jobs (`sql.rs`'s
//! one-job insert and `group_commit.rs`'s batches, admitted and counted in usage in the same
//! statement), keyset paging (`sql.rs`'s job list and `rpc.rs`'s pipeline list) and the
//! pipeline list itself (`rpc.rs` runs it, `sql.rs` explains it).

use chrono::{DateTime, Utc};

use super::db::{json_arg, Arg, Dialect, Stmt};
use super::rows::job_columns;
use super::usage::{push_submitted_from, UsageDelta};
use super::PipelineJobFilter;
use crate::domain::{JobId, NewJob};

/// The end of every job list query: keyset paging, newest first (`(created_at, id)` strictly
/// before the cursor), at most `limit` rows. `fixed` are the columns the query holds equal
/// (`team`, then `state`), in the order of the page index (migration 0009): the cursor is
/// compared as one row with them, `(team, state, created_at, id) < (…)`, which only an index
/// led by those columns can use as its range — so a team's next page is read in that index's
/// order from the cursor on, never through the all-teams `jobs_created` with a filter.
pub(super) fn push_page(
    q: &mut Stmt,
    fixed: &[(&str, Arg)],
    before: Option<(DateTime<Utc>, JobId)>,
    limit: u32,
) {
    if let Some((t, id)) = before {
        q.push(" AND (");
        for (column, _) in fixed {
            q.push(column).push(", ");
        }
        q.push("created_at, id) < (");
        for (_, value) in fixed {
            q.push_bind(value.clone()).push(", ");
        }
        q.push_bind(t).push(", ").push_bind(id).push(")");
    }
    q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(limit);
}

/// The columns of a new job, in the order [`push_job_values`] writes them.
const NEW_JOB_COLUMNS: &str =
    "id, team, state, request, warnings, created_at, updated_at, due_at, preset, region";

/// The insert of new `queued` jobs, due at once (one statement for the group commit).
pub(super) fn insert_jobs_stmt<'a>(jobs: impl IntoIterator<Item = &'a NewJob>) -> Stmt {
    let mut q = Stmt::new(format!("INSERT INTO jobs ({NEW_JOB_COLUMNS}) VALUES "));
    push_job_values(&mut q, jobs);
    q
}

/// `(…), (…)`: one row of [`NEW_JOB_COLUMNS`] per job, each in its input's MPS region.
fn push_job_values<'a>(q: &mut Stmt, jobs: impl IntoIterator<Item = &'a NewJob>) {
    for (i, job) in jobs.into_iter().enumerate() {
        push_job_row(q, i == 0, job);
        q.push(")");
    }
}

/// One row of [`NEW_JOB_COLUMNS`], left open: the caller may add values, then closes it.
fn push_job_row(q: &mut Stmt, first: bool, job: &NewJob) {
    q.push(if first { "(" } else { ", (" });
    q.push_bind(job.id).push(", ").push_bind(&job.team);
    q.push(", 'queued', ").push_bind(json_arg(&job.request));
    q.push(", ").push_bind(json_arg(&job.warnings));
    q.push(", ").push_bind(job.created_at);
    let at = q.args_len();
    q.push(&format!(", ${at}, ${at}, "));
    q.push_bind(job.preset.clone()).push(", ");
    q.push_bind(job.request.region());
}

/// The in-flight quota's admission (migration 0011): adds `n` to each team's count of jobs not
/// final, only where the count stays within the team's `limit`, and answers the teams admitted
/// (`RETURNING team`). Each `(team, n, limit)` needs `n <= limit` (a new row is not checked).
/// Teams in sorted order, so that concurrent admissions lock their rows in one order.
pub(super) fn admit_stmt(teams: &[(&str, i64, i64)]) -> Stmt {
    let mut q = Stmt::new("INSERT INTO team_in_flight AS q (team, in_flight) VALUES ");
    let mut at = Vec::with_capacity(teams.len());
    for (i, (team, n, _)) in teams.iter().enumerate() {
        q.push(if i == 0 { "(" } else { ", (" });
        q.push_bind(*team);
        at.push(q.args_len());
        q.push(", ").push_bind(*n).push(")");
    }
    q.push(
        " ON CONFLICT (team) DO UPDATE SET in_flight = q.in_flight + excluded.in_flight \
         WHERE q.in_flight + excluded.in_flight <= CASE q.team",
    );
    for (i, (_, _, limit)) in teams.iter().enumerate() {
        q.push(&format!(" WHEN ${} THEN ", at[i])).push_bind(*limit);
    }
    q.push(" ELSE 0 END RETURNING team");
    q
}

/// Postgres: the admission ([`admit_stmt`]), the insert of the admitted teams' jobs and their
/// count in usage in one statement (a data-modifying `WITH`), answering the ids inserted. Each
/// job comes with its usage key (`UsageDelta::submitted`: its team, day and region); usage
/// counts the rows the insert returns, so a job refused by the quota is never counted.
pub(super) fn admit_and_insert_stmt<'a>(
    teams: &[(&str, i64, i64)],
    jobs: impl IntoIterator<Item = (&'a NewJob, &'a UsageDelta)>,
) -> Stmt {
    let mut q = admit_stmt(teams);
    let admission = q.sql().to_string();
    q = q.with_sql(format!(
        "WITH admitted AS ({admission}), \
         v ({NEW_JOB_COLUMNS}, usage_day, usage_region) AS (VALUES "
    ));
    for (i, (job, usage)) in jobs.into_iter().enumerate() {
        push_job_row(&mut q, i == 0, job);
        q.push(", ").push_bind(&usage.day);
        q.push(", ").push_bind(&usage.region).push(")");
    }
    q.push(&format!(
        "), inserted AS (INSERT INTO jobs ({NEW_JOB_COLUMNS}) SELECT {NEW_JOB_COLUMNS} FROM v \
         WHERE v.team IN (SELECT team FROM admitted) RETURNING id), counted AS ("
    ));
    push_submitted_from(&mut q, "v JOIN inserted USING (id)");
    q.push(") SELECT id FROM inserted");
    q
}

/// The statement of [`JobLookupStore::list_pipeline_jobs`](super::JobLookupStore::list_pipeline_jobs).
pub(super) fn pipeline_jobs_stmt(dialect: Dialect, f: &PipelineJobFilter) -> Stmt {
    // The one expression that differs: a member of the JSON request.
    let pipeline = match dialect {
        Dialect::Postgres => "request->>'pipeline_id'",
        Dialect::Sqlite => "json_extract(request, '$.pipeline_id')",
    };
    let mut q = Stmt::new(format!(
        "SELECT {} FROM jobs WHERE team = ",
        job_columns(None)
    ));
    q.push_bind(&f.team);
    if let Some(p) = &f.pipeline_id {
        q.push(&format!(" AND ({pipeline} = ")).push_bind(p);
        if f.include_unset_pipeline {
            q.push(&format!(" OR {pipeline} IS NULL"));
        }
        q.push(")");
    }
    if !f.states.is_empty() {
        q.push(" AND state IN (");
        for (i, s) in f.states.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.push_bind(s.as_str());
        }
        q.push(")");
    }
    if let Some(t) = f.created_from {
        q.push(" AND created_at >= ").push_bind(t);
    }
    if let Some(t) = f.created_to {
        q.push(" AND created_at <= ").push_bind(t);
    }
    push_page(
        &mut q,
        &[("team", f.team.as_str().into())],
        f.before,
        f.limit,
    );
    q
}
