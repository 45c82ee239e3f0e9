-- The in-flight quota, exact under concurrency and across replicas: one row per team counts its
-- jobs not final (queued, submitted, snapshotting). A job is admitted by the statement that
-- inserts it, which first adds to its team's row only while the count stays within the limit
-- (`INSERT … ON CONFLICT DO UPDATE … WHERE in_flight + n <= limit`; the row lock orders
-- concurrent admissions of a team, on every replica). A job's place is given back by the
-- trigger below, in the transaction that makes it final (or cancels it, or deletes it), whoever
-- makes it: exactly once, as a job leaves the not-final states only once.

CREATE TABLE team_in_flight (
    team TEXT PRIMARY KEY,
    in_flight BIGINT NOT NULL CHECK (in_flight >= 0)
);

INSERT INTO team_in_flight (team, in_flight)
    SELECT team, count(*) FROM jobs WHERE state IN ('queued', 'submitted', 'snapshotting')
    GROUP BY team;

CREATE FUNCTION snapgate_release_in_flight() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE team_in_flight SET in_flight = in_flight - 1 WHERE team = OLD.team AND in_flight > 0;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_release_in_flight AFTER UPDATE OF state ON jobs FOR EACH ROW
    WHEN (OLD.state IN ('queued', 'submitted', 'snapshotting')
          AND NEW.state NOT IN ('queued', 'submitted', 'snapshotting'))
    EXECUTE FUNCTION snapgate_release_in_flight();

CREATE TRIGGER jobs_deleted_in_flight AFTER DELETE ON jobs FOR EACH ROW
    WHEN (OLD.state IN ('queued', 'submitted', 'snapshotting'))
    EXECUTE FUNCTION snapgate_release_in_flight();

-- Fair webhook delivery: a claim counts each endpoint's attempts in progress (live leases) and
-- ranks each endpoint's own due deliveries (src/store/webhooks.rs, CLAIMABLE).
CREATE INDEX webhook_deliveries_endpoint_pending ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE state = 'pending';
