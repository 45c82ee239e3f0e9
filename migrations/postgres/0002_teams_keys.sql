-- Teams and their API keys. A key's bearer token is stored only as its SHA-256; its
-- access_key_secret (for HMAC-signed requests) only encrypted with the server master key.

CREATE TABLE teams (
    name        TEXT PRIMARY KEY,
    created_at  TIMESTAMPTZ NOT NULL
);

INSERT INTO teams (name, created_at) VALUES ('default', now());

CREATE TABLE api_keys (
    access_key_id     TEXT PRIMARY KEY,
    team              TEXT NOT NULL REFERENCES teams (name),
    admin             BOOLEAN NOT NULL DEFAULT FALSE,
    token_hash        TEXT NOT NULL UNIQUE,
    secret_ciphertext TEXT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    revoked_at        TIMESTAMPTZ
);

CREATE INDEX jobs_team_active ON jobs (team) WHERE state IN ('queued', 'submitted', 'snapshotting');
