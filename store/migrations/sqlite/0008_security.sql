-- Authorisation and evidence (sqlite): the hash-chained audit log, the encrypted beneficiary vault,
-- the counters risk rules read, and the payout columns screening and approval need.

-- Every security-relevant action, each row chained to the one before by its hash; the head row
-- serialises appends (its row lock) and anchors the end of the chain.
CREATE TABLE audit_chain (
    sequence       INTEGER PRIMARY KEY,
    at             INTEGER NOT NULL,
    actor          TEXT NOT NULL,
    action         TEXT NOT NULL,
    detail         TEXT NOT NULL,
    previous_hash  TEXT NOT NULL,
    hash           TEXT NOT NULL
);
CREATE TABLE audit_head (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    sequence  INTEGER NOT NULL,
    hash      TEXT NOT NULL
);
INSERT INTO audit_head (id, sequence, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Beneficiary account numbers, encrypted (AES-256-GCM, the token as associated data) under the key
-- named by key_id; the token is an HMAC of tenant and account, so one account is one token.
CREATE TABLE vault (
    token         TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    ciphertext    TEXT NOT NULL,
    masked        TEXT NOT NULL,
    first_payout  TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

-- Payout counts and amounts per scope (tenant and currency, corridor, beneficiary) per minute.
CREATE TABLE risk_counters (
    scope   TEXT NOT NULL,
    bucket  INTEGER NOT NULL,
    count   INTEGER NOT NULL,
    amount  INTEGER NOT NULL,
    PRIMARY KEY (scope, bucket)
);
-- Every assessed payout's amount per tenant and currency, for "unusual amount".
CREATE TABLE risk_history (
    tenant    TEXT NOT NULL,
    currency  TEXT NOT NULL,
    count     INTEGER NOT NULL,
    amount    INTEGER NOT NULL,
    PRIMARY KEY (tenant, currency)
);

ALTER TABLE payouts ADD COLUMN submitted_by TEXT;
ALTER TABLE payouts ADD COLUMN risk TEXT;
ALTER TABLE payouts ADD COLUMN decided_by TEXT;
