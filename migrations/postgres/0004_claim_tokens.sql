-- Exactly-once delivery, fenced: every claim gets a token, and an attempt's start, its lease
-- renewals and its outcome are written only under that token (a replica whose lease expired
-- mid-call cannot overwrite the next claimer). The pipeline actually sent to MPS is kept for the
-- lookup that follows a lost answer. `not_found_since` starts the clock on a job MPS does not
-- know (it fails `mps_job_not_found` when that lasts too long).

ALTER TABLE jobs
    ADD COLUMN claim_token     UUID,
    ADD COLUMN mps_pipeline_id TEXT,
    ADD COLUMN not_found_since TIMESTAMPTZ;

-- Claims take each team's oldest due jobs in turn (fair scheduling across teams).
CREATE INDEX jobs_team_due ON jobs (team, due_at) WHERE due_at IS NOT NULL;
