-- Multipart upload intents (see migrations/postgres/0018_multipart_uploads.sql). SQLite cannot
-- add a CHECK constraint to an existing table: the store writes the three columns together.
ALTER TABLE uploads ADD COLUMN multipart_id TEXT;
ALTER TABLE uploads ADD COLUMN part_size INTEGER;
ALTER TABLE uploads ADD COLUMN part_count INTEGER;
ALTER TABLE uploads ADD COLUMN multipart_closed_at INTEGER;

CREATE INDEX uploads_multipart_to_abort ON uploads (updated_at)
    WHERE state = 'expired' AND multipart_id IS NOT NULL AND multipart_closed_at IS NULL;
