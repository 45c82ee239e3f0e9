-- Nonces of MPS-signed requests (see migrations/postgres/0005_rpc_nonces.sql).

CREATE TABLE rpc_nonces (
    access_key_id TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    expires_at    INTEGER NOT NULL,
    PRIMARY KEY (access_key_id, nonce)
);

CREATE INDEX rpc_nonces_expires ON rpc_nonces (expires_at);

CREATE INDEX jobs_team_pipeline_created ON jobs (team, json_extract(request, '$.pipeline_id'), created_at DESC, id DESC);
