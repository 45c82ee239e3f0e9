-- The delivery queue moves into the jobs table (see migrations/postgres/0003_outbox_in_jobs.sql).

ALTER TABLE jobs ADD COLUMN due_at INTEGER;
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_expires_at INTEGER;
ALTER TABLE jobs ADD COLUMN attempt_started_at INTEGER;

UPDATE jobs SET due_at = o.due_at, lease_owner = o.lease_owner,
    lease_expires_at = o.lease_expires_at, attempts = o.attempts,
    attempt_started_at = o.attempt_started_at
FROM job_outbox o WHERE o.job_id = jobs.id;

DROP TABLE job_outbox;

CREATE INDEX jobs_dispatch_due ON jobs (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX jobs_lease_owner ON jobs (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX jobs_team_state_created ON jobs (team, state, created_at DESC, id DESC);
