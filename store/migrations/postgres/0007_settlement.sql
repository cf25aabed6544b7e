-- Settlement windows of net-settled rails (PostgreSQL). A window holds the rail legs posted with
-- journal sequence numbers in (from_sequence, to_sequence]; it moves open → closed → settling →
-- settled, and closing one opens the next.

CREATE TABLE settlement_windows (
    id             TEXT PRIMARY KEY,
    rail           TEXT NOT NULL,
    number         BIGINT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('open', 'closed', 'settling', 'settled')),
    from_sequence  BIGINT NOT NULL,
    to_sequence    BIGINT,
    opened_at      BIGINT NOT NULL,
    closed_at      BIGINT,
    settled_at     BIGINT,
    report         TEXT,
    UNIQUE (rail, number)
);
-- One open window per rail.
CREATE UNIQUE INDEX settlement_windows_open ON settlement_windows (rail) WHERE state = 'open';
