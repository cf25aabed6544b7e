//! What a statement costs on the steps' SQLite connection when it goes to sqlx's worker thread on
//! its own, against the same statements sent in one query string (one hand-off): 20 one-row
//! updates a transaction, 500 transactions, unflushed step commits.
//!
//! `cargo run --release -p railyard-store --example handoff`

use std::time::{Duration, Instant};

use railyard_store::{Store, StoreOptions};
use sqlx::AssertSqlSafe;

const STATEMENTS: usize = 20;
const ROUNDS: usize = 500;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("railyard-handoff-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = Store::open(&format!("sqlite:{}/bench.db", dir.display()), &StoreOptions::default()).await?;
    sqlx::query("CREATE TABLE probe (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)").execute(store.pool()).await?;
    for id in 0..STATEMENTS as i64 {
        sqlx::query("INSERT INTO probe (id, n) VALUES ($1, 0)").bind(id).execute(store.pool()).await?;
    }
    let one = "UPDATE probe SET n = n + 1 WHERE id = $1";
    let together: String =
        (1..=STATEMENTS).map(|index| format!("UPDATE probe SET n = n + 1 WHERE id = ${index};")).collect();
    for way in ["apart", "together", "apart", "together"] {
        let mut held = Duration::ZERO;
        let started = Instant::now();
        for _ in 0..ROUNDS {
            let mut tx = store.begin_step().await?;
            let hold = Instant::now();
            if way == "apart" {
                for id in 0..STATEMENTS as i64 {
                    let done = sqlx::query(one).bind(id).execute(&mut *tx).await?;
                    assert_eq!(done.rows_affected(), 1);
                }
            } else {
                let mut query = sqlx::query(AssertSqlSafe(together.clone()));
                for id in 0..STATEMENTS as i64 {
                    query = query.bind(id);
                }
                let done = query.execute(&mut *tx).await?;
                assert_eq!(done.rows_affected(), STATEMENTS as u64);
            }
            tx.commit().await?;
            held += hold.elapsed();
        }
        let statements = (STATEMENTS * ROUNDS) as f64;
        println!(
            "{way:8}  {:6.2} µs a statement with its share of the commit, {:6.2} µs a transaction",
            held.as_secs_f64() * 1e6 / statements,
            started.elapsed().as_secs_f64() * 1e6 / ROUNDS as f64
        );
    }
    let total: i64 = sqlx::query_scalar("SELECT SUM(n) FROM probe").fetch_one(store.pool()).await?;
    assert_eq!(total, (STATEMENTS * ROUNDS * 4) as i64);
    store.close().await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
