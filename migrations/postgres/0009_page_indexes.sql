-- Keyset pages of one team's jobs are read in the order of an index led by the columns the list
-- holds equal: the cursor is compared as one row with them, `(team, state, created_at, id) <
-- (…)`, a range only these indexes can take (their columns all descending, as the row needs),
-- so a next page never walks the all-teams `jobs_created` with a filter. They replace the
-- ascending-team indexes of the same columns.

DROP INDEX jobs_team_created;
CREATE INDEX jobs_team_page ON jobs (team DESC, created_at DESC, id DESC);

DROP INDEX jobs_team_state_created;
CREATE INDEX jobs_team_state_page ON jobs (team DESC, state DESC, created_at DESC, id DESC);
