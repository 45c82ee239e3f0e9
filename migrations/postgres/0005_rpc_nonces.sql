-- Nonces of MPS-signed requests (the MPS-compatible endpoint at `/`): a SignatureNonce may not be
-- used twice by a key within the 15-minute window. Shared by every replica; rows past
-- `expires_at` are dead (a replay that old is refused by its timestamp) and purged.
-- UNLOGGED: a nonce is written on every signed request, and without WAL that write costs no
-- fsync. The price: after a Postgres crash the table is empty, so a request captured in the
-- 15 minutes before the crash could be replayed once; replicas still share it while Postgres runs.

CREATE UNLOGGED TABLE rpc_nonces (
    access_key_id TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (access_key_id, nonce)
);

CREATE INDEX rpc_nonces_expires ON rpc_nonces (expires_at);

-- QuerySnapshotJobList by pipeline and creation time.
CREATE INDEX jobs_team_pipeline_created ON jobs (team, (request->>'pipeline_id'), created_at DESC, id DESC);
