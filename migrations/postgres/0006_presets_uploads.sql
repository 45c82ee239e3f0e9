-- Presets (per team, versioned, immutable job requests without `input`) and upload intents
-- (issue 13). A job made from a preset keeps the `name@version` it came from.

CREATE TABLE presets (
    team        TEXT NOT NULL,
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    -- The preset as given (a job request without `input`), validated at creation.
    body        JSONB NOT NULL,
    -- SHA-256 of the canonical body: the same body again answers the existing version.
    fingerprint TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (team, name, version)
);

CREATE UNIQUE INDEX presets_body ON presets (team, name, fingerprint);

ALTER TABLE jobs ADD COLUMN preset TEXT;

-- One browser upload: the object it may create, the preset its job is made from, the browser
-- token (only its SHA-256), and its job once the object has landed.
CREATE TABLE uploads (
    id              UUID PRIMARY KEY,
    team            TEXT NOT NULL,
    -- `name@version`, pinned when the intent is made.
    preset          TEXT NOT NULL,
    filename        TEXT NOT NULL,
    content_type    TEXT NOT NULL,
    size_bytes      BIGINT NOT NULL,
    user_data       TEXT,
    location        TEXT NOT NULL,
    bucket          TEXT NOT NULL,
    object_key      TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('waiting', 'uploaded', 'expired')),
    token_hash      TEXT NOT NULL,
    token_expires_at TIMESTAMPTZ NOT NULL,
    -- How the landing was learned: `callback` or `complete`.
    uploaded_via    TEXT,
    job_id          UUID REFERENCES jobs (id),
    created_at      TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE UNIQUE INDEX uploads_token ON uploads (token_hash);
CREATE INDEX uploads_waiting_expiry ON uploads (expires_at) WHERE state = 'waiting';
CREATE INDEX uploads_job ON uploads (job_id) WHERE job_id IS NOT NULL;
