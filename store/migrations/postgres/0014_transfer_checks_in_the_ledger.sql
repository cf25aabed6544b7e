-- The journal's account references are checked by the ledger, not by foreign keys. Every append
-- reads its accounts inside the transaction that holds the journal head and refuses an unknown
-- one (ledger.rs, UnknownAccount); accounts are never deleted; `railyard verify` checks that
-- every transfer's accounts exist in its currency (currency_consistent). The two foreign keys
-- made PostgreSQL run two lookups per inserted transfer while the journal head's row lock is
-- held, about half of a group's insert (see BENCHMARKS.md).
ALTER TABLE transfers DROP CONSTRAINT IF EXISTS transfers_debit_account_fkey;
ALTER TABLE transfers DROP CONSTRAINT IF EXISTS transfers_credit_account_fkey;
