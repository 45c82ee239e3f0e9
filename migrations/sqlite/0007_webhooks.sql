-- Webhooks to teams: endpoints, events, one delivery per (event, endpoint) and every attempt.
-- Same tables and columns as migrations/postgres/0007_webhooks.sql (times: INTEGER microseconds).
-- An event and its deliveries are written in the same transaction as the job state change that
-- causes it (store/webhooks.rs::record_event), so a crash never loses one.

CREATE TABLE webhook_endpoints (
    id                     TEXT PRIMARY KEY,
    team                   TEXT NOT NULL REFERENCES teams (name),
    url                    TEXT NOT NULL,
    description            TEXT,
    -- JSON array of event type names.
    event_types            TEXT NOT NULL,
    -- `whsec_…` secrets, AES-256-GCM-encrypted under auth.master_key.
    secret_ciphertext      TEXT NOT NULL,
    -- After a rotation the previous secret keeps signing until previous_secret_expires_at.
    previous_secret_ciphertext TEXT,
    previous_secret_expires_at INTEGER,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL,
    disabled_at            INTEGER,
    -- `manual` (the team) or `failing` (failing for webhooks.disable_after_s).
    disabled_reason        TEXT,
    -- First failed attempt since the last success.
    failing_since          INTEGER
);

CREATE INDEX webhook_endpoints_team ON webhook_endpoints (team, created_at);

CREATE TABLE webhook_events (
    id          TEXT PRIMARY KEY,
    team        TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    job_id      TEXT,
    -- What the payload's `data` is rendered from (a job: the job as recorded by the transition).
    data        TEXT NOT NULL
);

CREATE INDEX webhook_events_job ON webhook_events (job_id) WHERE job_id IS NOT NULL;

CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    event_id         TEXT NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    endpoint_id      TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    -- `pending`, `succeeded` or `failed`.
    state            TEXT NOT NULL CHECK (state IN ('pending', 'succeeded', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    claim_token      TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at DESC);
CREATE INDEX webhook_deliveries_claim ON webhook_deliveries (claim_token);

CREATE TABLE webhook_attempts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id      TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at     INTEGER NOT NULL,
    status_code      INTEGER,
    error            TEXT,
    latency_ms       INTEGER NOT NULL,
    response_snippet TEXT
);

CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);
