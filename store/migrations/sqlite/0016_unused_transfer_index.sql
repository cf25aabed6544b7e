-- `transfers_payout` served no statement: every transfer of a payout has an id that starts with
-- the payout's id and a colon (`pay_…:a0:reserve`, `pay_…:a0-leg0`, `…:post`, `…:void`), so a
-- payout's transfers are a range of the unique index on `id`
-- (`id >= 'pay_…:' AND id < 'pay_…;'`). The index cost an entry per transfer, five a payout,
-- written while the journal head's lock is held (BENCHMARKS.md, sixteenth session).
DROP INDEX IF EXISTS transfers_payout;
