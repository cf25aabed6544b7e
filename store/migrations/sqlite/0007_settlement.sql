-- Settlement windows of net-settled rails (SQLite). A window holds the rail legs posted with
-- journal sequence numbers in (from_sequence, to_sequence]; it moves open → closed → settling →
-- settled, and closing one opens the next.

CREATE TABLE settlement_windows (
    id             TEXT PRIMARY KEY,
    rail           TEXT NOT NULL,
    number         INTEGER NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('open', 'closed', 'settling', 'settled')),
    from_sequence  INTEGER NOT NULL,
    to_sequence    INTEGER,
    opened_at      INTEGER NOT NULL,
    closed_at      INTEGER,
    settled_at     INTEGER,
    report         TEXT,
    UNIQUE (rail, number)
);
-- One open window per rail.
CREATE UNIQUE INDEX settlement_windows_open ON settlement_windows (rail) WHERE state = 'open';
