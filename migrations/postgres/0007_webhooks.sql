-- Webhooks to teams: endpoints, events, one delivery per (event, endpoint) and every attempt.
-- An event and its deliveries are written in the same transaction as the job state change that
-- causes it (store/webhooks.rs::record_event), so a crash never loses one.

CREATE TABLE webhook_endpoints (
    id                     UUID PRIMARY KEY,
    team                   TEXT NOT NULL REFERENCES teams (name),
    url                    TEXT NOT NULL,
    description            TEXT,
    -- JSON array of event type names.
    event_types            JSONB NOT NULL,
    -- `whsec_…` secrets, AES-256-GCM-encrypted under auth.master_key.
    secret_ciphertext      TEXT NOT NULL,
    -- After a rotation the previous secret keeps signing until previous_secret_expires_at.
    previous_secret_ciphertext TEXT,
    previous_secret_expires_at TIMESTAMPTZ,
    created_at             TIMESTAMPTZ NOT NULL,
    updated_at             TIMESTAMPTZ NOT NULL,
    disabled_at            TIMESTAMPTZ,
    -- `manual` (the team) or `failing` (failing for webhooks.disable_after_s).
    disabled_reason        TEXT,
    -- First failed attempt since the last success.
    failing_since          TIMESTAMPTZ
);

CREATE INDEX webhook_endpoints_team ON webhook_endpoints (team, created_at);

CREATE TABLE webhook_events (
    id          TEXT PRIMARY KEY,
    team        TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    job_id      UUID,
    -- What the payload's `data` is rendered from (a job: the job as recorded by the transition).
    data        JSONB NOT NULL
);

CREATE INDEX webhook_events_job ON webhook_events (job_id) WHERE job_id IS NOT NULL;

CREATE TABLE webhook_deliveries (
    id               UUID PRIMARY KEY,
    event_id         TEXT NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    endpoint_id      UUID NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    -- `pending`, `succeeded` or `failed`.
    state            TEXT NOT NULL CHECK (state IN ('pending', 'succeeded', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    claim_token      UUID,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at DESC);
CREATE INDEX webhook_deliveries_claim ON webhook_deliveries (claim_token);

CREATE TABLE webhook_attempts (
    id               BIGSERIAL PRIMARY KEY,
    delivery_id      UUID NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at     TIMESTAMPTZ NOT NULL,
    status_code      INTEGER,
    error            TEXT,
    latency_ms       BIGINT NOT NULL,
    response_snippet TEXT
);

CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);
