-- Usage per team, UTC day (YYYY-MM-DD) and region: written in the same transaction as the job's
-- submission, its final state, or the MPS responses it counts, so it is exact under crashes and
-- outlives the purge of the jobs themselves. A counter row is split in `shard`s (a writer picks
-- one at random) so that concurrent commits of one team do not queue on one row lock; a read
-- sums the shards.
CREATE TABLE usage_daily (
    team          TEXT NOT NULL,
    day           TEXT NOT NULL,
    region        TEXT NOT NULL,
    shard         SMALLINT NOT NULL DEFAULT 0,
    submitted     BIGINT NOT NULL DEFAULT 0,
    succeeded     BIGINT NOT NULL DEFAULT 0,
    failed        BIGINT NOT NULL DEFAULT 0,
    snapshots     BIGINT NOT NULL DEFAULT 0,
    sprite_sheets BIGINT NOT NULL DEFAULT 0,
    mps_calls     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (team, day, region, shard)
);

CREATE INDEX usage_daily_day ON usage_daily (day);
