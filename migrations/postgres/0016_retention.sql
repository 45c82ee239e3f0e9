-- Retention: the purge finds each class's oldest rows through these indexes, and runs on one
-- replica at a time under a lease row (which also keeps the last run's report for the stats).
CREATE INDEX jobs_final_finished ON jobs (finished_at) WHERE state IN ('succeeded', 'failed');
CREATE INDEX webhook_events_created ON webhook_events (created_at);
CREATE INDEX webhook_attempts_attempted ON webhook_attempts (attempted_at);
CREATE INDEX uploads_ended ON uploads (updated_at) WHERE state <> 'waiting';

CREATE TABLE maintenance_leases (
    name             TEXT PRIMARY KEY,
    owner            TEXT,
    lease_expires_at TIMESTAMPTZ,
    last_run_at      TIMESTAMPTZ,
    last_report      JSONB
);
