-- Quotes a PSP may pay out against while they hold (PostgreSQL).

CREATE TABLE quotes (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    request     TEXT NOT NULL,
    route       TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
