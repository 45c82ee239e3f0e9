-- Every change to what a job shows is announced on `snapgate_job_changes` (payload: the job's
-- id), delivered when the changing transaction commits, whoever made it: any replica's worker, a
-- cancel, the CLI, or SQL typed by hand. Each replica's in-memory job cache drops the job when
-- it hears of it (src/http/job_cache.rs), so a job that is not final can be answered from memory
-- without outliving a change another replica made. A new row needs no announcement: nothing is
-- cached for an id before it exists. Postgres folds repeated announcements of one id within one
-- transaction into one.
--
-- An update that touches only the queue's bookkeeping (leases, claim tokens, when the next poll
-- or attempt is due, the poll count) is not announced: no answer shows those columns, and lease
-- renewals and poll claims are most of the worker's writes. Any other column, including one
-- added later, is announced.

CREATE FUNCTION snapgate_job_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('snapgate_job_changes', OLD.id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_changed AFTER UPDATE ON jobs FOR EACH ROW
    WHEN ((to_jsonb(OLD) - '{lease_owner,lease_expires_at,claim_token,due_at,next_poll_at,polls,attempt_started_at}'::text[])
          IS DISTINCT FROM
          (to_jsonb(NEW) - '{lease_owner,lease_expires_at,claim_token,due_at,next_poll_at,polls,attempt_started_at}'::text[]))
    EXECUTE FUNCTION snapgate_job_changed();

CREATE TRIGGER jobs_deleted AFTER DELETE ON jobs FOR EACH ROW
    EXECUTE FUNCTION snapgate_job_changed();
