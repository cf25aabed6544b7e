//! A file-backed SQLite database: saga steps and urgent writers (intake groups, flushes) share one
//! connection, whether commits are flushed (with deferred step flushes) or not
//! (`synchronous=NORMAL` by choice); urgent ones must not queue behind every step.

use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use railyard_store::{Durability, Store, StoreOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_writers_go_ahead_of_queued_saga_steps() {
    urgent_writers_go_ahead(Durability::Full).await;
}

/// At `synchronous=NORMAL` the steps queue for the one connection too (in SQLite's busy handler
/// on pooled connections before, where the order was the handler's back-off, not ours).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_writers_go_ahead_of_queued_saga_steps_without_flushed_commits() {
    urgent_writers_go_ahead(Durability::Normal).await;
}

async fn urgent_writers_go_ahead(durability: Durability) {
    let directory = std::env::temp_dir().join(format!("railyard-writer-queue-{durability:?}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let options = StoreOptions { durability, ..StoreOptions::default() };
    let store = Store::open(&format!("sqlite:{}", directory.join("queue.db").display()), &options).await.unwrap();
    // A step holds the one connection; five more queue behind it.
    let holder = store.begin_step().await.unwrap();
    let order: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let (store, order) = (store.clone(), order.clone());
        tasks.spawn(async move {
            let tx = store.begin_step().await.unwrap();
            order.lock().unwrap().push("step");
            tx.commit().await.unwrap();
        });
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    {
        let (store, order) = (store.clone(), order.clone());
        tasks.spawn(async move {
            let tx = store.begin_urgent().await.unwrap();
            order.lock().unwrap().push("urgent");
            tx.commit().await.unwrap();
        });
    }
    {
        // A flush takes no connection at all (it flushes the write-ahead log itself, or there is
        // nothing to flush): it is done while the holder still holds the connection, before any
        // of them.
        let (store, order) = (store.clone(), order.clone());
        tasks.spawn(async move {
            store.sync().await.unwrap();
            order.lock().unwrap().push("sync");
        });
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(order.lock().unwrap().clone(), ["sync"], "only the flush finishes while the connection is held");
    holder.commit().await.unwrap();
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 7, "{order:?}");
    // At most the one step already waiting at the pool goes ahead of the urgent writer (after the
    // flush, done first); FIFO would put all five first.
    let position = order.iter().position(|entry| *entry == "urgent").unwrap();
    assert!(position <= 2, "urgent came at {position}: {order:?}");
    store.close().await;
    let _ = std::fs::remove_dir_all(&directory);
}

/// A step transaction dropped without a commit (an error, a crash hook, a cancelled task) rolls
/// back before the connection goes to the next writer: what it wrote is gone and the next step
/// begins normally. On both databases (SQLite's one writer connection, PostgreSQL's pool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_step_transaction_rolls_back_before_the_next_writer() {
    for db in common::databases().await {
        let store = &db.store;
        let mut tx = store.begin_step().await.unwrap();
        sqlx::query("INSERT INTO engines (owner, started_at, alive_until) VALUES ('dropped', 1, 2)")
            .execute(&mut *tx)
            .await
            .unwrap();
        drop(tx);
        let mut tx = store.begin_step().await.unwrap();
        let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM engines WHERE owner = 'dropped'")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(kept, 0, "{}: the dropped transaction's row", db.name);
        sqlx::query("INSERT INTO engines (owner, started_at, alive_until) VALUES ('kept', 1, 2)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        store.sync().await.unwrap();
        let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM engines WHERE owner = 'kept'")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(kept, 1, "{}", db.name);
    }
}

/// A step waits for the one connection as long as the step before it holds it, whatever SQLite's
/// busy timeout: at `synchronous=NORMAL` too, a step queued behind a long one is not refused with
/// "database is locked" (each step on a pooled connection of its own gave up after the timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_behind_a_long_one_waits_past_the_busy_timeout() {
    for durability in [Durability::Full, Durability::Normal] {
        let directory =
            std::env::temp_dir().join(format!("railyard-writer-wait-{durability:?}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        let options = StoreOptions { durability, busy_timeout: Duration::from_millis(50), ..StoreOptions::default() };
        let store = Store::open(&format!("sqlite:{}", directory.join("wait.db").display()), &options).await.unwrap();
        let holder = store.begin_step().await.unwrap();
        let waiting = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin_step().await?;
                sqlx::query("UPDATE durability_marks SET mark = mark + 1 WHERE id = 1").execute(&mut *tx).await?;
                tx.commit().await
            })
        };
        // Four busy timeouts.
        tokio::time::sleep(Duration::from_millis(200)).await;
        holder.commit().await.unwrap();
        waiting.await.unwrap().unwrap_or_else(|error| panic!("{durability:?}: the queued step failed: {error}"));
        store.close().await;
        let _ = std::fs::remove_dir_all(&directory);
    }
}

/// The writer's statement journals stay in memory (`temp_store = MEMORY`): a group's multi-row
/// statements would otherwise spill them to a file under `/var/tmp` several times a group. The
/// pool that serves reads keeps SQLite's default, so a large sort does not grow the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_keeps_its_statement_journals_in_memory_and_readers_do_not() {
    let directory = std::env::temp_dir().join(format!("railyard-temp-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let store = Store::open(&format!("sqlite:{}", directory.join("temp.db").display()), &StoreOptions::default())
        .await
        .unwrap();
    // 0 is the default (the build's choice: files), 2 is memory.
    let mut step = store.begin_step().await.unwrap();
    let writer: i64 = sqlx::query_scalar("PRAGMA temp_store").fetch_one(&mut *step).await.unwrap();
    step.commit().await.unwrap();
    let reader: i64 = sqlx::query_scalar("PRAGMA temp_store").fetch_one(store.pool()).await.unwrap();
    assert_eq!((writer, reader), (2, 0));
    let _ = std::fs::remove_dir_all(&directory);
}
