//! The databases every store test runs on: a fresh SQLite file, and a fresh schema on PostgreSQL
//! when it is reachable (`RAILYARD_TEST_POSTGRES_URL`, default postgres://postgres@127.0.0.1:5432/test).
//! Without PostgreSQL the tests say `SKIPPED: PostgreSQL not reachable` on stderr; with
//! `RAILYARD_REQUIRE_POSTGRES=1` (CI) they fail instead.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use railyard_store::{Store, StoreOptions};
use sqlx::Executor;

pub struct TestDb {
    pub name: &'static str,
    pub url: String,
    pub store: Store,
    file: Option<PathBuf>,
    schema: Option<String>,
}

impl TestDb {
    /// The SQLite file, for tests that look at what is on disk.
    #[allow(dead_code)]
    pub fn file(&self) -> Option<&std::path::Path> {
        self.file.as_deref()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            for suffix in ["", "-wal", "-shm", "-intake", "-intake-wal", "-intake-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
        }
        if let Some(schema) = self.schema.take() {
            // Drop the test's schema from a thread of its own: Drop cannot await.
            let _ = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                runtime.block_on(async {
                    if let Ok(pool) = sqlx::AnyPool::connect(&postgres_url()).await {
                        let _ =
                            pool.execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))).await;
                        pool.close().await;
                    }
                });
            })
            .join();
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{prefix}_{}_{nanos:x}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

pub fn postgres_url() -> String {
    std::env::var("RAILYARD_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub async fn sqlite() -> TestDb {
    let file = std::env::temp_dir().join(format!("{}.db", unique("railyard_store")));
    let url = format!("sqlite:{}", file.display());
    let store = Store::open(&url, &StoreOptions::default()).await.expect("open SQLite");
    TestDb { name: "sqlite", url, store, file: Some(file), schema: None }
}

/// A fresh schema on the test PostgreSQL, or `None` (with a SKIPPED line) when it is unreachable.
pub async fn postgres() -> Option<TestDb> {
    let base = postgres_url();
    sqlx::any::install_default_drivers();
    let admin = match sqlx::AnyPool::connect(&base).await {
        Ok(pool) => pool,
        Err(error) => {
            if std::env::var("RAILYARD_REQUIRE_POSTGRES").is_ok_and(|value| value == "1") {
                panic!("PostgreSQL is required (RAILYARD_REQUIRE_POSTGRES=1) but {base} is not reachable: {error}");
            }
            eprintln!("SKIPPED: PostgreSQL not reachable at {base}: {error}");
            return None;
        }
    };
    let schema = unique("rt");
    admin.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).await.expect("create schema");
    admin.close().await;
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
    let store = Store::open(&url, &StoreOptions::default()).await.expect("open PostgreSQL");
    Some(TestDb { name: "postgres", url, store, file: None, schema: Some(schema) })
}

/// SQLite, and PostgreSQL when reachable.
pub async fn databases() -> Vec<TestDb> {
    let mut all = vec![sqlite().await];
    if let Some(postgres) = postgres().await {
        all.push(postgres);
    }
    all
}
