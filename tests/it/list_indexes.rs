//! Every job list query uses an index (performance work): with enough rows in Postgres for the planner to
//! care (100,000 jobs of 10 teams, analyzed), `EXPLAIN` of each statement the store runs for a
//! list — the REST list with each of its filters and its next page by cursor, the admin list,
//! and the MPS-compatible endpoint's list — shows an index scan and no sequential scan; the
//! REST lists are also read in index order (no sort of every matching row), a team's through an
//! index led by `team` (never the all-teams index with a filter, which walks other teams' jobs).

use crate::common;

use chrono::{Duration, Utc};
use snapgate::domain::{JobId, JobState};
use snapgate::store::{JobFilter, PgStore, PipelineJobFilter};

#[tokio::test]
async fn every_list_query_uses_an_index() {
    let (_store, url) = common::pg_store().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO jobs (id, team, state, request, warnings, created_at, updated_at) \
         SELECT md5('j' || i)::uuid, 't' || (i % 10), \
                CASE WHEN i % 20 = 0 THEN 'queued' WHEN i % 7 = 0 THEN 'failed' ELSE 'succeeded' END, \
                CASE WHEN i % 3 = 0 THEN '{\"pipeline_id\": \"9bad3801a2c561c22c4df9c6abcd0000\"}' ELSE '{}' END::jsonb, \
                '[]', ts, ts \
         FROM generate_series(1, 100000) i, \
              LATERAL (SELECT timestamptz '2026-01-01' + i * interval '1 s' AS ts) x",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE jobs").execute(&pool).await.unwrap();
    let store = PgStore::from_pool(pool);

    let cursor = Some((
        "2026-01-01T12:00:00Z".parse().unwrap(),
        JobId::parse("0190a0b0-0000-7000-8000-000000000000").unwrap(),
    ));
    let team = |state: Option<JobState>| JobFilter {
        team: Some("t3".into()),
        state,
        limit: 51,
        ..JobFilter::default()
    };
    let lists = [
        ("team", team(None), Some("jobs_team_page")),
        (
            "team, state",
            team(Some(JobState::Succeeded)),
            Some("jobs_team_state_page"),
        ),
        (
            "team, state, next page",
            JobFilter {
                before: cursor,
                ..team(Some(JobState::Succeeded))
            },
            Some("jobs_team_state_page"),
        ),
        (
            "team, next page",
            JobFilter {
                before: cursor,
                ..team(None)
            },
            Some("jobs_team_page"),
        ),
        (
            "team, created range",
            JobFilter {
                created_after: Some(Utc::now() - Duration::days(400)),
                created_before: Some(Utc::now()),
                ..team(Some(JobState::Failed))
            },
            Some("jobs_team_state_page"),
        ),
        (
            "admin, every team",
            JobFilter {
                limit: 51,
                ..JobFilter::default()
            },
            Some("jobs_created"),
        ),
        (
            "admin, every team, state",
            JobFilter {
                state: Some(JobState::Queued),
                limit: 51,
                ..JobFilter::default()
            },
            None,
        ),
    ];
    let mut failures = Vec::new();
    for (name, filter, index) in &lists {
        let plan = store.explain_job_list(filter).await.unwrap();
        check(name, &plan, *index, &mut failures);
    }
    let pipeline = PipelineJobFilter {
        team: "t3".into(),
        pipeline_id: Some("9bad3801a2c561c22c4df9c6abcd0000".into()),
        include_unset_pipeline: true,
        states: vec![JobState::Succeeded, JobState::Failed],
        created_from: Some(Utc::now() - Duration::days(400)),
        created_to: Some(Utc::now()),
        before: cursor,
        limit: 101,
    };
    let plan = store.explain_pipeline_list(&pipeline).await.unwrap();
    check("MPS-compatible list", &plan, None, &mut failures);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// An index read, no sequential scan; with `index`, a read of that index in its order.
fn check(name: &str, plan: &str, index: Option<&str>, failures: &mut Vec<String>) {
    let indexed = plan.contains("Index Scan") || plan.contains("Index Only Scan");
    let mut bad = plan.contains("Seq Scan") || !(indexed || plan.contains("Bitmap Index Scan"));
    if let Some(index) = index {
        bad |= !plan.contains(&format!("Scan using {index} on jobs")) || plan.contains("Sort");
    }
    if bad {
        let want = index
            .map(|i| format!(" (wanted {i}, in its order)"))
            .unwrap_or_default();
        failures.push(format!(
            "{name}: not the index read it should be{want}:\n{plan}"
        ));
    } else {
        eprintln!("{name}:\n{plan}\n");
    }
}

/// Every foreign key has an index led by its columns (Postgres): deleting a referenced row (the
/// purge, `ON DELETE CASCADE`) or locking one otherwise scans the whole referencing table per
/// row. Seen as 3.4 s per 1,000 webhook events purged while `webhook_deliveries.event_id` had
/// none (bench/bench.py --purge-only with 30,000 events).
#[tokio::test]
async fn every_foreign_key_has_an_index() {
    let (_store, url) = common::pg_store().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let missing: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.conrelid::regclass::text, \
                (SELECT string_agg(a.attname, ', ' ORDER BY k.n) \
                 FROM unnest(c.conkey) WITH ORDINALITY k(attnum, n) \
                 JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum) \
         FROM pg_constraint c \
         WHERE c.contype = 'f' AND NOT EXISTS ( \
             SELECT 1 FROM pg_index i WHERE i.indrelid = c.conrelid \
               AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] @> c.conkey \
               AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] <@ c.conkey) \
         ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        missing.is_empty(),
        "foreign keys with no index led by their columns: {missing:?}"
    );
}
