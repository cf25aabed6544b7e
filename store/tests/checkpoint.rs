//! An SQLite store copies its WAL into the database file in the background: commits never wait
//! for a checkpoint up to the fallback threshold, and the WAL's content still reaches the file.

use std::time::{Duration, Instant};

use railyard_store::{CHECKPOINT_EVERY, CHECKPOINT_FALLBACK_PAGES, Store, StoreOptions};
use sqlx::Executor;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_reaches_the_database_file_without_a_commit_checkpointing() {
    let directory = std::env::temp_dir().join(format!("railyard-checkpoint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("checkpoint.db");
    let store = Store::open(&format!("sqlite:{}", path.display()), &StoreOptions::default()).await.unwrap();
    store.pool().execute("CREATE TABLE scratch (body BLOB NOT NULL)").await.unwrap();
    // 6 MiB in 4 KiB rows: past SQLite's own default threshold (1,000 pages), far below ours.
    let rows = 1_536;
    assert!(rows < CHECKPOINT_FALLBACK_PAGES as usize / 4);
    for chunk in 0..(rows / 64) {
        let mut tx = store.begin().await.unwrap();
        for row in 0..64 {
            let body = vec![u8::try_from((chunk * 64 + row) % 251).unwrap(); 4_096];
            sqlx::query("INSERT INTO scratch (body) VALUES ($1)").bind(body).execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    let file_size = || std::fs::metadata(&path).map(|metadata| metadata.len()).unwrap_or(0);
    let started = Instant::now();
    while file_size() < 6 * 1024 * 1024 {
        assert!(
            // Many checkpoints' time, and room for a loaded machine's disk.
            started.elapsed() < (CHECKPOINT_EVERY * 20).max(Duration::from_secs(10)),
            "the database file holds {} bytes {:?} after the writes: the WAL was not checkpointed",
            file_size(),
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM scratch").fetch_one(store.pool()).await.unwrap();
    assert_eq!(count, rows as i64);
    store.close().await;
    let _ = std::fs::remove_dir_all(&directory);
}
