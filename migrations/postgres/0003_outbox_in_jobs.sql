-- The delivery queue moves into the jobs table: queueing a job is one row written, and every
-- dispatch outcome is one UPDATE of that row. `due_at` is set while the job waits for
-- (re)submission and cleared when MPS has it or it failed; the lease columns say which replica
-- holds it; `attempt_started_at` is set while an attempt's outcome is unknown.

ALTER TABLE jobs
    ADD COLUMN due_at             TIMESTAMPTZ,
    ADD COLUMN lease_owner        TEXT,
    ADD COLUMN lease_expires_at   TIMESTAMPTZ,
    ADD COLUMN attempt_started_at TIMESTAMPTZ;

UPDATE jobs j SET due_at = o.due_at, lease_owner = o.lease_owner,
    lease_expires_at = o.lease_expires_at, attempts = o.attempts,
    attempt_started_at = o.attempt_started_at
FROM job_outbox o WHERE o.job_id = j.id;

DROP TABLE job_outbox;

CREATE INDEX jobs_dispatch_due ON jobs (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX jobs_lease_owner ON jobs (lease_owner) WHERE lease_owner IS NOT NULL;
-- `?state=` lists one team's jobs in one state, newest first.
CREATE INDEX jobs_team_state_created ON jobs (team, state, created_at DESC, id DESC);
