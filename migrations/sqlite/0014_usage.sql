-- Usage per team, UTC day and region (see migrations/postgres/0014_usage.sql).
CREATE TABLE usage_daily (
    team          TEXT NOT NULL,
    day           TEXT NOT NULL,
    region        TEXT NOT NULL,
    shard         INTEGER NOT NULL DEFAULT 0,
    submitted     INTEGER NOT NULL DEFAULT 0,
    succeeded     INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    snapshots     INTEGER NOT NULL DEFAULT 0,
    sprite_sheets INTEGER NOT NULL DEFAULT 0,
    mps_calls     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (team, day, region, shard)
);

CREATE INDEX usage_daily_day ON usage_daily (day);
