-- Liquidity alerts: a rail's prefunded position crossed its low- or high-water mark (SQLite).

CREATE TABLE liquidity_alerts (
    id          TEXT PRIMARY KEY,
    rail        TEXT NOT NULL,
    currency    TEXT NOT NULL,
    level       TEXT NOT NULL CHECK (level IN ('low', 'high')),
    available   INTEGER NOT NULL,
    threshold   INTEGER NOT NULL,
    raised_at   INTEGER NOT NULL,
    cleared_at  INTEGER
);
-- At most one open alert per position.
CREATE UNIQUE INDEX liquidity_alerts_open ON liquidity_alerts (rail, currency) WHERE cleared_at IS NULL;
