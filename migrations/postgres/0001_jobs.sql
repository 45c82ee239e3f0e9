-- Snapshot jobs, their delivery outbox, every MPS response, and idempotency keys.

CREATE TABLE jobs (
    id              UUID PRIMARY KEY,
    team            TEXT NOT NULL,
    state           TEXT NOT NULL
                    CHECK (state IN ('queued', 'submitted', 'snapshotting', 'succeeded', 'failed')),
    request         JSONB NOT NULL,
    warnings        JSONB NOT NULL DEFAULT '[]',
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      JSONB,
    mps_job_id      TEXT,
    mps_state       TEXT,
    mps_request_id  TEXT,
    mps_count       BIGINT,
    mps_tile_count  BIGINT,
    mps_code        TEXT,
    mps_message     TEXT,
    mps_response    JSONB,
    submitted_at    TIMESTAMPTZ,
    finished_at     TIMESTAMPTZ,
    -- Status refresh: due time of the next QuerySnapshotJobList while the job is in flight at MPS.
    -- A claim pushes it forward by the lease, so a crashed poller's jobs come due again.
    next_poll_at    TIMESTAMPTZ,
    polls           INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX jobs_team_created ON jobs (team, created_at DESC, id DESC);
CREATE INDEX jobs_created ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_poll_due ON jobs (next_poll_at) WHERE next_poll_at IS NOT NULL;
CREATE UNIQUE INDEX jobs_mps_job_id ON jobs (mps_job_id) WHERE mps_job_id IS NOT NULL;

-- One row per job that still has to reach MPS. Written in the same transaction as the job.
CREATE TABLE job_outbox (
    job_id            UUID PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    due_at            TIMESTAMPTZ NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  TIMESTAMPTZ,
    attempts          INTEGER NOT NULL DEFAULT 0,
    -- Set when a SubmitSnapshotJob attempt starts, cleared when its outcome is known. Found set
    -- by a claimer, it means the last attempt may have created an MPS job: reconcile first.
    attempt_started_at TIMESTAMPTZ
);

CREATE INDEX job_outbox_due ON job_outbox (due_at);

-- Every MPS response about a job (submit answers, and each job's entry of a query answer).
CREATE TABLE mps_responses (
    id          BIGSERIAL PRIMARY KEY,
    job_id      UUID NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    action      TEXT NOT NULL,
    request_id  TEXT,
    code        TEXT,
    body        JSONB NOT NULL,
    received_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX mps_responses_job ON mps_responses (job_id, id);

CREATE TABLE idempotency_keys (
    team            TEXT NOT NULL,
    key             TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    job_id          UUID NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    response_status INTEGER,
    response_body   JSONB,
    created_at      TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (team, key)
);

CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

-- Token buckets for upstream calls, shared by every replica: all of them together stay under
-- MPS's per-account limits (50 submits/s, 100 queries/s).
CREATE TABLE upstream_budget (
    name        TEXT PRIMARY KEY,
    tokens      DOUBLE PRECISION NOT NULL,
    refilled_at TIMESTAMPTZ NOT NULL
);
