-- Every foreign key gets an index led by its columns (tests/it/list_indexes.rs checks it): a
-- delete of the referenced row (the purge's ON DELETE CASCADE, its NOT EXISTS checks) otherwise
-- scans the whole referencing table once per row. Measured: 1,000 webhook events purged in
-- 3.4 s with 30,000 deliveries and no index on event_id.
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);
CREATE INDEX idempotency_keys_job ON idempotency_keys (job_id);
CREATE INDEX api_keys_team ON api_keys (team);
