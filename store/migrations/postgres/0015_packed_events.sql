-- A saga step that passes through several states writes one event row, not one per state: the
-- row holds the step's last state and detail, and `earlier` the states the step passed before it,
-- oldest first, as a JSON array of [state, detail] pairs (NULL when there were none). A grouped
-- step from `accepted` to `submitting` names five states and its completion two: as seven rows
-- they were 7 of the 16.5 rows a payout wrote; as two, PostgreSQL runs 5-7 % faster
-- (BENCHMARKS.md, sixteenth session).
-- Readers expand a row into its states (railyard_saga::payout_events): the history the API shows
-- is the same either way.
ALTER TABLE saga_events ADD COLUMN earlier TEXT;
