-- Webhook delivery state on the outbox, per-tenant signing secrets, and the delivery log (SQLite).

ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN next_attempt_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN failed_at INTEGER;
ALTER TABLE outbox ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
CREATE INDEX outbox_due ON outbox (delivered_at, failed_at, next_attempt_at);

CREATE TABLE webhook_secrets (
    tenant      TEXT PRIMARY KEY,
    secret      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE webhook_deliveries (
    payout_id   TEXT NOT NULL,
    event       TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status      INTEGER,
    error       TEXT
);
CREATE INDEX webhook_deliveries_payout ON webhook_deliveries (payout_id, at);
