-- Payout sagas, their event log and the webhook outbox (SQLite).

CREATE TABLE payouts (
    id              TEXT PRIMARY KEY,
    tenant          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request         TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempt         INTEGER NOT NULL DEFAULT 0,
    leg             INTEGER NOT NULL DEFAULT 0,
    route           TEXT,
    reservation     TEXT,
    reason          TEXT,
    inquiries       INTEGER NOT NULL DEFAULT 0,
    next_action_at  INTEGER NOT NULL,
    in_doubt_since  INTEGER,
    lease_owner     TEXT,
    lease_until     INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (tenant, idempotency_key),
    CHECK (state <> 'in_doubt' OR reason IS NOT NULL)
);
CREATE INDEX payouts_due ON payouts (state, next_action_at);

CREATE TABLE saga_events (
    payout_id  TEXT NOT NULL,
    at         INTEGER NOT NULL,
    state      TEXT NOT NULL,
    detail     TEXT NOT NULL
);
CREATE INDEX saga_events_payout ON saga_events (payout_id, at);

CREATE TABLE outbox (
    payout_id     TEXT NOT NULL,
    event         TEXT NOT NULL,
    body          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    delivered_at  INTEGER,
    PRIMARY KEY (payout_id, event)
);
