//! SQLite with deferred step flushes: saga steps and urgent writers (intake groups, flushes) share
//! one connection; urgent ones must not queue behind every step.

use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use railyard_store::{Store, StoreOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_writers_go_ahead_of_queued_saga_steps() {
    let directory = std::env::temp_dir().join(format!("railyard-writer-queue-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let store = Store::open(&format!("sqlite:{}", directory.join("queue.db").display()), &StoreOptions::default())
        .await
        .unwrap();
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
        // A flush takes no connection at all (it flushes the write-ahead log itself): it is done
        // while the holder still holds the connection, before any of them.
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
