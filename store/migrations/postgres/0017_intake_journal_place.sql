-- Where an SQLite database's intake journal lives (see the SQLite migration of the same number).
-- PostgreSQL accepts into the database itself and has no journal: the table stays empty, kept so
-- both databases have the same tables.
CREATE TABLE IF NOT EXISTS intake_journal (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    path TEXT NOT NULL
);
