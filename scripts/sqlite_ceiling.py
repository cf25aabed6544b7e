#!/usr/bin/env python3
"""What SQLite itself does with Railyard's rows on this machine (issue 8, BENCHMARKS.md).

Takes a Railyard SQLite database that has settled payouts (a `railyard serve` database after
`railyard simulate`, or a soak's), snapshots it with SQLite's online backup, and writes every row
of it again into a fresh database with the same schema, from one thread, each table's rows through
one prepared statement (Python's sqlite3 module: SQLite's C library with a thin loop around it),
1,024 rows per transaction:

1. WAL with synchronous=FULL, tables interleaved per transaction as payouts arrive: the ceiling
   of a writer that pays no thread hand-off and no driver per statement;
2. each table alone with synchronous=OFF: SQLite's own CPU per payout, table by table.

Only the rows a payout leaves behind are written, not the updates its saga makes on the way, so
both are upper bounds for a saga's write path with this schema.

    python3 scripts/sqlite_ceiling.py path/to/railyard.db [--json] [--narrow-transfers]

--narrow-transfers measures a schema that does not exist yet, to size a change before making it:
the journal's rows without the columns a row repeats from elsewhere (`previous_hash`, the hash of
the row before; `payout_id`, the prefix of the transfer's id) and with the hash as 32 bytes
instead of 64 hex characters.
"""

import json
import os
import sqlite3
import sys
import tempfile
import time

ROWS_PER_TRANSACTION = 1024


def schema(connection):
    """CREATE statements of the tables and indexes, tables first (sqlx's own table left out)."""
    return [
        sql
        for (sql,) in connection.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
            "AND name NOT LIKE '_sqlx%' ORDER BY type = 'index'"
        )
    ]


def fresh(path, synchronous, statements):
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    for statement in statements:
        connection.execute(statement)
    return connection


NARROWED_AWAY = ("previous_hash", "payout_id")


def narrow_transfers(connection, statements, rows):
    """The transfers table's CREATE statement and rows, narrowed (see --narrow-transfers); its
    constraints and other columns as they are."""
    names = [row[1] for row in connection.execute("PRAGMA table_info(transfers)")]
    keep = [index for index, name in enumerate(names) if name not in NARROWED_AWAY]
    hash_at = names.index("hash")

    def narrowed_create(statement):
        lines = []
        for line in statement.split("\n"):
            words = line.split()
            if words and words[0] in NARROWED_AWAY:
                continue
            if words and words[0] == "hash":
                line = line.replace("TEXT", "BLOB")
            lines.append(line)
        return "\n".join(lines)

    statements = [
        narrowed_create(statement) if statement.startswith("CREATE TABLE transfers") else statement
        for statement in statements
        if not any(f"({name})" in statement for name in NARROWED_AWAY)
    ]
    narrowed = [
        tuple(bytes.fromhex(row[index]) if index == hash_at else row[index] for index in keep)
        for row in rows["transfers"][1]
    ]
    rows["transfers"] = (len(keep), narrowed)
    return statements


def insert_sql(table, columns):
    return f"INSERT INTO {table} VALUES ({', '.join('?' * columns)})"


def main():
    args = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
    as_json = "--json" in sys.argv[1:]
    narrow = "--narrow-transfers" in sys.argv[1:]
    if len(args) != 1 or not os.path.exists(args[0]):
        sys.exit("usage: sqlite_ceiling.py path/to/railyard.db [--json] [--narrow-transfers]")
    scratch = tempfile.mkdtemp(prefix="railyard-ceiling-")
    snapshot = sqlite3.connect(os.path.join(scratch, "snapshot.db"))
    live = sqlite3.connect(f"file:{args[0]}?mode=ro", uri=True)
    live.backup(snapshot)
    live.close()

    statements = schema(snapshot)
    payouts = snapshot.execute("SELECT count(*) FROM payouts").fetchone()[0]
    if payouts == 0:
        sys.exit(f"{args[0]} has no payouts")
    tables = [
        name
        for (name,) in snapshot.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND name NOT LIKE '_sqlx%'"
        )
    ]
    rows = {}
    for table in tables:
        columns = len(snapshot.execute(f"PRAGMA table_info({table})").fetchall())
        rows[table] = (columns, snapshot.execute(f"SELECT * FROM {table}").fetchall())
    if narrow:
        statements = narrow_transfers(snapshot, statements, rows)
    total_rows = sum(len(table_rows) for _, table_rows in rows.values())

    # 1. As payouts arrive: each transaction holds the next 1,024 rows of every table in turn.
    interleaved = []
    cursors = {table: 0 for table in tables}
    share = {table: len(table_rows) / total_rows for table, (_, table_rows) in rows.items()}
    while any(cursors[table] < len(rows[table][1]) for table in tables):
        batch = []
        for table in tables:
            take = max(1, round(ROWS_PER_TRANSACTION * share[table]))
            start = cursors[table]
            chunk = rows[table][1][start : start + take]
            cursors[table] = start + len(chunk)
            if chunk:
                batch.append((table, chunk))
        interleaved.append(batch)
    full = fresh(os.path.join(scratch, "full.db"), "FULL", statements)
    started = time.perf_counter()
    for batch in interleaved:
        full.execute("BEGIN")
        for table, chunk in batch:
            full.executemany(insert_sql(table, rows[table][0]), chunk)
        full.execute("COMMIT")
    full_s = time.perf_counter() - started
    full.close()

    # 2. Each table alone, without flushes: SQLite's CPU per payout for it.
    per_table = []
    off = fresh(os.path.join(scratch, "off.db"), "OFF", statements)
    for table, (columns, table_rows) in sorted(rows.items(), key=lambda item: -len(item[1][1])):
        if not table_rows:
            continue
        started = time.perf_counter()
        for start in range(0, len(table_rows), ROWS_PER_TRANSACTION):
            off.execute("BEGIN")
            off.executemany(insert_sql(table, columns), table_rows[start : start + ROWS_PER_TRANSACTION])
            off.execute("COMMIT")
        seconds = time.perf_counter() - started
        indexes = off.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (table,)
        ).fetchone()[0]
        per_table.append(
            {
                "table": table,
                "rows_per_payout": round(len(table_rows) / payouts, 2),
                "indexes": indexes,
                "us_per_payout": round(seconds * 1e6 / payouts, 1),
            }
        )
    off.close()
    snapshot.close()
    for name in os.listdir(scratch):
        os.remove(os.path.join(scratch, name))
    os.rmdir(scratch)

    off_us = sum(table["us_per_payout"] for table in per_table)
    report = {
        "narrow_transfers": narrow,
        "payouts": payouts,
        "rows": total_rows,
        "rows_per_payout": round(total_rows / payouts, 1),
        "full_rows_per_s": round(total_rows / full_s),
        "full_payouts_per_s": round(payouts / full_s),
        "off_us_per_payout": round(off_us, 1),
        "off_payouts_per_s": round(1e6 / off_us) if off_us else None,
        "tables": [table for table in per_table if table["us_per_payout"] >= 0.1],
    }
    if as_json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{payouts} payouts, {total_rows} rows ({report['rows_per_payout']} a payout)\n"
        f"synchronous=FULL, one thread: {report['full_rows_per_s']:,} rows/s = "
        f"{report['full_payouts_per_s']:,} payouts/s\n"
        f"synchronous=OFF, table by table: {report['off_us_per_payout']} us a payout = "
        f"{report['off_payouts_per_s']:,} payouts/s"
    )
    for table in report["tables"]:
        print(
            f"  {table['table']:24s} {table['rows_per_payout']:6.2f} rows  "
            f"{table['indexes']} indexes  {table['us_per_payout']:6.1f} us"
        )


if __name__ == "__main__":
    main()
