//! What a row costs written in bulk on SQLite: 13-column rows shaped like the ledger's transfers,
//! 128 a statement, one transaction per statement (flushed), into a fresh file. Two ways, runs
//! alternated:
//!
//! - `json`: the rows as one JSON array in one parameter, read with `json_each` and `->>` (what
//!   `railyard_store::bulk` did on SQLite before, and still does on PostgreSQL);
//! - `bound`: `railyard_store::bulk::execute`, every value bound, padded to a shape.
//!
//! `cargo run --release -p railyard-store --example bulk_rows`

use std::time::{Duration, Instant};

use railyard_store::{Store, StoreOptions, bulk};
use sqlx::AssertSqlSafe;

const ROWS: usize = 128;
const ROUNDS: usize = 200;
const COLUMNS: &str = "sequence, id, debit, credit, amount, currency, kind, pending_id, payout_id, note, created_at, \
                       previous_hash, hash";

type Row = (
    i64,
    String,
    &'static str,
    &'static str,
    i64,
    &'static str,
    &'static str,
    String,
    String,
    &'static str,
    i64,
    String,
    String,
);

fn row(sequence: i64) -> Row {
    let payout = format!("pay_{sequence:032x}");
    (
        sequence,
        format!("{payout}:a0-leg1:post"),
        "clearing:EUR",
        "nostro:sepa-inst:EUR",
        123_456,
        "EUR",
        "post_pending",
        format!("{payout}:a0-leg1"),
        payout,
        "liquidity for leg 1 on sepa-inst",
        1_764_743_000_000_000,
        "ab".repeat(32),
        "cd".repeat(32),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("railyard-bulk-rows-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = Store::open(&format!("sqlite:{}/bench.db", dir.display()), &StoreOptions::default()).await?;
    sqlx::query(
        "CREATE TABLE probe (sequence INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, debit TEXT NOT NULL, \
         credit TEXT NOT NULL, amount INTEGER NOT NULL, currency TEXT NOT NULL, kind TEXT NOT NULL, pending_id TEXT, \
         payout_id TEXT, note TEXT NOT NULL, created_at INTEGER NOT NULL, previous_hash TEXT NOT NULL, hash TEXT NOT NULL)",
    )
    .execute(store.pool())
    .await?;
    let extract: Vec<String> = (0..13).map(|index| format!("j.value ->> {index}")).collect();
    let json = format!("INSERT INTO probe ({COLUMNS}) SELECT {} FROM json_each($1) AS j", extract.join(", "));
    let bound = format!("INSERT INTO probe ({COLUMNS}) {{rows}}");
    let types =
        ["BIGINT", "TEXT", "TEXT", "TEXT", "BIGINT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "BIGINT", "TEXT", "TEXT"];
    let mut sequence = 0_i64;
    for way in ["json", "bound", "json", "bound"] {
        let mut statements = Duration::ZERO;
        let started = Instant::now();
        for _ in 0..ROUNDS {
            let rows: Vec<Row> = (0..ROWS)
                .map(|_| {
                    sequence += 1;
                    row(sequence)
                })
                .collect();
            let mut tx = store.begin().await?;
            let statement = Instant::now();
            if way == "json" {
                sqlx::query(AssertSqlSafe(json.clone())).bind(serde_json::to_string(&rows)?).execute(&mut *tx).await?;
            } else {
                bulk::execute(&mut tx, &bound, &types, &rows, &[]).await?;
            }
            statements += statement.elapsed();
            tx.commit().await?;
        }
        let rows = (ROWS * ROUNDS) as f64;
        println!(
            "{way:5}  statement {:5.2} µs a row   with its flushed commit {:5.2} µs a row",
            statements.as_secs_f64() * 1e6 / rows,
            started.elapsed().as_secs_f64() * 1e6 / rows
        );
    }
    store.close().await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
