-- Treasury and operator changes: who, when, what (SQLite).

CREATE TABLE audit_log (
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    change  TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
