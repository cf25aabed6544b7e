-- Quotes a PSP may pay out against while they hold (SQLite).

CREATE TABLE quotes (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    request     TEXT NOT NULL,
    route       TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
