-- Presets and upload intents (see migrations/postgres/0006_presets_uploads.sql).

CREATE TABLE presets (
    team        TEXT NOT NULL,
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    body        TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (team, name, version)
);

CREATE UNIQUE INDEX presets_body ON presets (team, name, fingerprint);

ALTER TABLE jobs ADD COLUMN preset TEXT;

CREATE TABLE uploads (
    id              TEXT PRIMARY KEY,
    team            TEXT NOT NULL,
    preset          TEXT NOT NULL,
    filename        TEXT NOT NULL,
    content_type    TEXT NOT NULL,
    size_bytes      INTEGER NOT NULL,
    user_data       TEXT,
    location        TEXT NOT NULL,
    bucket          TEXT NOT NULL,
    object_key      TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('waiting', 'uploaded', 'expired')),
    token_hash      TEXT NOT NULL,
    token_expires_at INTEGER NOT NULL,
    uploaded_via    TEXT,
    job_id          TEXT REFERENCES jobs (id),
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE UNIQUE INDEX uploads_token ON uploads (token_hash);
CREATE INDEX uploads_waiting_expiry ON uploads (expires_at) WHERE state = 'waiting';
CREATE INDEX uploads_job ON uploads (job_id) WHERE job_id IS NOT NULL;
