-- Pausing a team: while `paused_at` is set its queued jobs are not claimed (the claim query
-- excludes them, so every replica obeys at once); `pause_refuses_new`: new jobs are refused (409)
-- instead of recorded.
ALTER TABLE teams
    ADD COLUMN paused_at TIMESTAMPTZ,
    ADD COLUMN pause_refuses_new BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN pause_reason TEXT;

-- Redrive: a job made again from a failed one names it (`retry_of`), and the failed one names
-- its one retry (`retried_by`, set once, in the transaction that records the new job).
ALTER TABLE jobs
    ADD COLUMN retry_of UUID,
    ADD COLUMN retried_by UUID;

CREATE INDEX jobs_failed_finished ON jobs (finished_at) WHERE state = 'failed';
