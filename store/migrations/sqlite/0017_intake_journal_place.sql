-- Where this database's intake journal lives, once it has been put somewhere other than beside the
-- database (`railyard serve --intake-journal PATH`, a disk of its own for the journal's flushes).
-- The database remembers it, so a start without the flag, `railyard verify` and recovery find the
-- journal; a start that names another place is refused while the journal here still holds
-- acknowledged payouts not yet moved into the database. No row: the journal is beside the file.
CREATE TABLE IF NOT EXISTS intake_journal (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    path TEXT NOT NULL
);
