-- Payout sagas, their event log and the webhook outbox (PostgreSQL).

CREATE TABLE payouts (
    id              TEXT PRIMARY KEY,
    tenant          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request         TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempt         BIGINT NOT NULL DEFAULT 0,
    leg             BIGINT NOT NULL DEFAULT 0,
    route           TEXT,
    reservation     TEXT,
    reason          TEXT,
    inquiries       BIGINT NOT NULL DEFAULT 0,
    next_action_at  BIGINT NOT NULL,
    in_doubt_since  BIGINT,
    lease_owner     TEXT,
    lease_until     BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (tenant, idempotency_key),
    CHECK (state <> 'in_doubt' OR reason IS NOT NULL)
);
CREATE INDEX payouts_due ON payouts (state, next_action_at);

CREATE TABLE saga_events (
    payout_id  TEXT NOT NULL,
    at         BIGINT NOT NULL,
    state      TEXT NOT NULL,
    detail     TEXT NOT NULL
);
CREATE INDEX saga_events_payout ON saga_events (payout_id, at);

CREATE TABLE outbox (
    payout_id     TEXT NOT NULL,
    event         TEXT NOT NULL,
    body          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    delivered_at  BIGINT,
    PRIMARY KEY (payout_id, event)
);
