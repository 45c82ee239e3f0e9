-- Pausing a team and redrive links (see migrations/postgres/0015_pause_redrive.sql).
ALTER TABLE teams ADD COLUMN paused_at INTEGER;
ALTER TABLE teams ADD COLUMN pause_refuses_new INTEGER NOT NULL DEFAULT 0;
ALTER TABLE teams ADD COLUMN pause_reason TEXT;

ALTER TABLE jobs ADD COLUMN retry_of TEXT;
ALTER TABLE jobs ADD COLUMN retried_by TEXT;

CREATE INDEX jobs_failed_finished ON jobs (finished_at) WHERE state = 'failed';
