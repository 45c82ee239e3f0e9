-- Teams and their API keys (see migrations/postgres/0002_teams_keys.sql).

CREATE TABLE teams (
    name        TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL
);

INSERT INTO teams (name, created_at) VALUES ('default', CAST(unixepoch('subsec') * 1000000 AS INTEGER));

CREATE TABLE api_keys (
    access_key_id     TEXT PRIMARY KEY,
    team              TEXT NOT NULL REFERENCES teams (name),
    admin             INTEGER NOT NULL DEFAULT 0,
    token_hash        TEXT NOT NULL UNIQUE,
    secret_ciphertext TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    revoked_at        INTEGER
);

CREATE INDEX jobs_team_active ON jobs (team) WHERE state IN ('queued', 'submitted', 'snapshotting');
