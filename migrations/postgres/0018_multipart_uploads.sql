-- Multipart upload intents (issue 34): an intent above `uploads.multipart_threshold_bytes` is
-- an OSS multipart upload that snapgate initiated. `multipart_id` is OSS's upload id (never
-- shown to the browser), `part_size` and `part_count` the plan every part is checked against.
-- `multipart_closed_at`: when the OSS upload was known to be gone (aborted after the intent
-- expired); an expired intent with an open multipart upload is what the sweeper still aborts,
-- so a failed abort is retried and no part stays billed.
ALTER TABLE uploads ADD COLUMN multipart_id TEXT;
ALTER TABLE uploads ADD COLUMN part_size BIGINT;
ALTER TABLE uploads ADD COLUMN part_count BIGINT;
ALTER TABLE uploads ADD COLUMN multipart_closed_at TIMESTAMPTZ;
ALTER TABLE uploads ADD CONSTRAINT uploads_multipart_plan CHECK (
    (multipart_id IS NULL AND part_size IS NULL AND part_count IS NULL)
    OR (multipart_id IS NOT NULL AND part_size > 0 AND part_count BETWEEN 1 AND 10000));

CREATE INDEX uploads_multipart_to_abort ON uploads (updated_at)
    WHERE state = 'expired' AND multipart_id IS NOT NULL AND multipart_closed_at IS NULL;
