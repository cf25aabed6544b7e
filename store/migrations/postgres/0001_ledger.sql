-- Railyard store, PostgreSQL. Money is BIGINT minor units beside an ISO 4217 code; times are
-- microseconds since the Unix epoch (UTC).

CREATE TABLE accounts (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    currency        TEXT NOT NULL,
    normal          TEXT NOT NULL CHECK (normal IN ('debit', 'credit')),
    no_overdraft    BIGINT NOT NULL DEFAULT 0 CHECK (no_overdraft IN (0, 1)),
    debits_pending  BIGINT NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    debits_posted   BIGINT NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_pending BIGINT NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    credits_posted  BIGINT NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    created_at      BIGINT NOT NULL,
    CHECK (
        no_overdraft = 0
        OR (normal = 'credit' AND credits_posted - debits_posted - debits_pending >= 0)
        OR (normal = 'debit' AND debits_posted - credits_posted - credits_pending >= 0)
    )
);

CREATE TABLE transfers (
    sequence        BIGINT PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    debit_account   TEXT NOT NULL REFERENCES accounts (id),
    credit_account  TEXT NOT NULL REFERENCES accounts (id),
    amount          BIGINT NOT NULL CHECK (amount >= 0),
    currency        TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('posted', 'pending', 'post_pending', 'void_pending')),
    pending_id      TEXT,
    payout_id       TEXT,
    note            TEXT NOT NULL DEFAULT '',
    created_at      BIGINT NOT NULL,
    previous_hash   TEXT NOT NULL,
    hash            TEXT NOT NULL,
    CHECK (debit_account <> credit_account),
    CHECK ((kind IN ('post_pending', 'void_pending')) = (pending_id IS NOT NULL))
);

-- A pending transfer is resolved (posted or voided) at most once.
CREATE UNIQUE INDEX transfers_resolved_once ON transfers (pending_id) WHERE pending_id IS NOT NULL;
CREATE INDEX transfers_payout ON transfers (payout_id);

CREATE TABLE journal_head (
    id        BIGINT PRIMARY KEY CHECK (id = 1),
    sequence  BIGINT NOT NULL,
    hash      TEXT NOT NULL
);
INSERT INTO journal_head (id, sequence, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE idempotency (
    tenant          TEXT NOT NULL,
    key             TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    resource_id     TEXT NOT NULL,
    response_status BIGINT,
    response_body   TEXT,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant, key)
);
