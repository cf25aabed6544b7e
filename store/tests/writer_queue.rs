//! SQLite with deferred step flushes: saga steps and urgent writers (intake groups, flushes) share
//! one connection; urgent ones must not queue behind every step.

use std::sync::{Arc, Mutex};
use std::time::Duration;

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
        // A flush is urgent too (rail calls and answers wait for it).
        let (store, order) = (store.clone(), order.clone());
        tasks.spawn(async move {
            store.sync().await.unwrap();
            order.lock().unwrap().push("sync");
        });
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    holder.commit().await.unwrap();
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 7, "{order:?}");
    // At most the one step already waiting at the pool goes first (and the sync records itself
    // after giving the connection back, so one more may slip in); FIFO would put all five first.
    for (urgent, latest) in [("urgent", 2), ("sync", 3)] {
        let position = order.iter().position(|entry| *entry == urgent).unwrap();
        assert!(position <= latest, "{urgent} came at {position}: {order:?}");
    }
    store.close().await;
    let _ = std::fs::remove_dir_all(&directory);
}
