-- Snapshot jobs, their delivery outbox, every MPS response, and idempotency keys.
-- Same tables and columns as migrations/postgres; times are INTEGER microseconds since the epoch,
-- UUIDs and JSON are TEXT.

CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    team            TEXT NOT NULL,
    state           TEXT NOT NULL
                    CHECK (state IN ('queued', 'submitted', 'snapshotting', 'succeeded', 'failed')),
    request         TEXT NOT NULL,
    warnings        TEXT NOT NULL DEFAULT '[]',
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    mps_job_id      TEXT,
    mps_state       TEXT,
    mps_request_id  TEXT,
    mps_count       INTEGER,
    mps_tile_count  INTEGER,
    mps_code        TEXT,
    mps_message     TEXT,
    mps_response    TEXT,
    submitted_at    INTEGER,
    finished_at     INTEGER,
    next_poll_at    INTEGER,
    polls           INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX jobs_team_created ON jobs (team, created_at DESC, id DESC);
CREATE INDEX jobs_created ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_poll_due ON jobs (next_poll_at) WHERE next_poll_at IS NOT NULL;
CREATE UNIQUE INDEX jobs_mps_job_id ON jobs (mps_job_id) WHERE mps_job_id IS NOT NULL;

CREATE TABLE job_outbox (
    job_id            TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    due_at            INTEGER NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    attempts          INTEGER NOT NULL DEFAULT 0,
    attempt_started_at INTEGER
);

CREATE INDEX job_outbox_due ON job_outbox (due_at);

CREATE TABLE mps_responses (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    action      TEXT NOT NULL,
    request_id  TEXT,
    code        TEXT,
    body        TEXT NOT NULL,
    received_at INTEGER NOT NULL
);

CREATE INDEX mps_responses_job ON mps_responses (job_id, id);

CREATE TABLE idempotency_keys (
    team            TEXT NOT NULL,
    key             TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    job_id          TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    response_status INTEGER,
    response_body   TEXT,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    PRIMARY KEY (team, key)
);

CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

CREATE TABLE upstream_budget (
    name        TEXT PRIMARY KEY,
    tokens      REAL NOT NULL,
    refilled_at INTEGER NOT NULL
);
