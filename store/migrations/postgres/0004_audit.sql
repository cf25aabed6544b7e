-- Treasury and operator changes: who, when, what (PostgreSQL).

CREATE TABLE audit_log (
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    change  TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
