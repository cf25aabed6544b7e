-- Liquidity alerts: a rail's prefunded position crossed its low- or high-water mark (PostgreSQL).

CREATE TABLE liquidity_alerts (
    id          TEXT PRIMARY KEY,
    rail        TEXT NOT NULL,
    currency    TEXT NOT NULL,
    level       TEXT NOT NULL CHECK (level IN ('low', 'high')),
    available   BIGINT NOT NULL,
    threshold   BIGINT NOT NULL,
    raised_at   BIGINT NOT NULL,
    cleared_at  BIGINT
);
-- At most one open alert per position.
CREATE UNIQUE INDEX liquidity_alerts_open ON liquidity_alerts (rail, currency) WHERE cleared_at IS NULL;
