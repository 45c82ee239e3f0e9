-- Claim tokens, the pipeline sent, and the not-found clock (see migrations/postgres/0004_claim_tokens.sql).

ALTER TABLE jobs ADD COLUMN claim_token TEXT;
ALTER TABLE jobs ADD COLUMN mps_pipeline_id TEXT;
ALTER TABLE jobs ADD COLUMN not_found_since INTEGER;

CREATE INDEX jobs_team_due ON jobs (team, due_at) WHERE due_at IS NOT NULL;
