-- A job's MPS region: its input bucket's (`input.location` oss-cn-beijing → cn-beijing). MPS
-- processes only OSS buckets of its own region, so each region has its own MPS endpoint,
-- pipeline, MNS queue, budget and workers, and each region's workers claim only its jobs.
--
-- Rows written before this column existed went to the one region snapgate served then: `serve`
-- sets their region to the configured default region (`mps.region`) at start (they are the
-- rows whose region is ''), and until then the default region's workers claim them too.

ALTER TABLE jobs ADD COLUMN region TEXT NOT NULL DEFAULT '';

-- Each region's claims read only its own due jobs and polls.
CREATE INDEX jobs_region_team_due ON jobs (region, team, due_at) WHERE due_at IS NOT NULL;
CREATE INDEX jobs_region_poll_due ON jobs (region, next_poll_at) WHERE next_poll_at IS NOT NULL;
-- The rows the start-up backfill gives the default region (empty once done).
CREATE INDEX jobs_region_unset ON jobs (id) WHERE region = '';
