-- The in-flight quota, exact: one row per team counts its jobs not final (queued, submitted,
-- snapshotting). A job is admitted in the transaction that inserts it, by adding to its team's
-- row only while the count stays within the limit (`INSERT … ON CONFLICT DO UPDATE … WHERE
-- in_flight + n <= limit`; SQLite's one writer orders admissions). A job's place is given back
-- by the triggers below, in the transaction that makes it final (or cancels or deletes it):
-- exactly once, as a job leaves the not-final states only once.

CREATE TABLE team_in_flight (
    team TEXT PRIMARY KEY,
    in_flight INTEGER NOT NULL CHECK (in_flight >= 0)
);

INSERT INTO team_in_flight (team, in_flight)
    SELECT team, count(*) FROM jobs WHERE state IN ('queued', 'submitted', 'snapshotting')
    GROUP BY team;

CREATE TRIGGER jobs_release_in_flight AFTER UPDATE OF state ON jobs FOR EACH ROW
    WHEN OLD.state IN ('queued', 'submitted', 'snapshotting')
     AND NEW.state NOT IN ('queued', 'submitted', 'snapshotting')
BEGIN
    UPDATE team_in_flight SET in_flight = in_flight - 1 WHERE team = OLD.team AND in_flight > 0;
END;

CREATE TRIGGER jobs_deleted_in_flight AFTER DELETE ON jobs FOR EACH ROW
    WHEN OLD.state IN ('queued', 'submitted', 'snapshotting')
BEGIN
    UPDATE team_in_flight SET in_flight = in_flight - 1 WHERE team = OLD.team AND in_flight > 0;
END;

-- Fair webhook delivery: a claim counts each endpoint's attempts in progress (live leases) and
-- ranks each endpoint's own due deliveries (src/store/webhooks.rs, CLAIMABLE).
CREATE INDEX webhook_deliveries_endpoint_pending ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE state = 'pending';
