//! Railyard's durable store, on SQLite (the embedded default) or PostgreSQL.
//!
//! Design choice: one code path through sqlx's `Any` driver with runtime queries, so every rule is
//! written once and the same test suite runs on both databases. The price is that values cross as
//! integers and text only: money is BIGINT minor units beside the ISO code, times are microseconds
//! since the Unix epoch, ids are text. Where the two databases differ (opening a write transaction,
//! pragmas, row locks) the [`Dialect`] says so explicitly.
//!
//! Durability: SQLite runs in WAL mode with `synchronous=FULL` unless [`Durability::Normal`] is
//! chosen (faster; a power loss may lose the last transactions, a process crash does not); a
//! committed transaction is on disk when `commit` returns. PostgreSQL commits are durable by its
//! own configuration (`synchronous_commit`, on by default).

pub mod audit;
pub mod bulk;
pub mod journal;
pub mod keys;
pub mod ledger;
pub mod outbox;
pub mod settings;
pub mod usage;
pub mod vault;
pub mod verify;

pub mod idempotency;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, Connection, Executor, Row, Transaction};

pub use idempotency::{Claim, IdempotencyRecord};

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// How hard SQLite pushes each commit to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: a commit survives power loss. The default.
    #[default]
    Full,
    /// `synchronous=NORMAL`: in WAL mode a commit survives a process crash but the last ones may be
    /// lost on power loss. Opt in for throughput.
    Normal,
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub durability: Durability,
    /// Pool size. SQLite has one writer at a time whatever this is; readers run beside it in WAL.
    pub connections_max: u32,
    /// How long a SQLite writer waits for the write lock before giving up.
    pub busy_timeout: Duration,
    /// Where the intake journal lives (a flushed SQLite file only; [`Store::journal_path`]).
    /// `None`: where the database last had it, beside the file at first.
    pub journal: Option<std::path::PathBuf>,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            durability: Durability::Full,
            connections_max: 8,
            busy_timeout: Duration::from_secs(10),
            journal: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL {0:?}: expected sqlite:PATH, sqlite::memory: or postgres://...")]
    Url(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("not a Railyard database: {0}")]
    NotRailyard(String),
    #[error("migration {version}: {reason}")]
    Migration { version: i64, reason: String },
    #[error("intake journal: {0}")]
    Journal(String),
}

/// The migration that records where the intake journal lives (`intake_journal`).
const JOURNAL_PLACE_MIGRATION: i64 = 17;

/// A migration: its version and its statements, per database.
struct Migration {
    version: i64,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: include_str!("../migrations/sqlite/0001_ledger.sql"),
        postgres: include_str!("../migrations/postgres/0001_ledger.sql"),
    },
    Migration {
        version: 2,
        sqlite: include_str!("../migrations/sqlite/0002_sagas.sql"),
        postgres: include_str!("../migrations/postgres/0002_sagas.sql"),
    },
    Migration {
        version: 3,
        sqlite: include_str!("../migrations/sqlite/0003_webhooks.sql"),
        postgres: include_str!("../migrations/postgres/0003_webhooks.sql"),
    },
    Migration {
        version: 4,
        sqlite: include_str!("../migrations/sqlite/0004_audit.sql"),
        postgres: include_str!("../migrations/postgres/0004_audit.sql"),
    },
    Migration {
        version: 5,
        sqlite: include_str!("../migrations/sqlite/0005_quotes.sql"),
        postgres: include_str!("../migrations/postgres/0005_quotes.sql"),
    },
    Migration {
        version: 6,
        sqlite: include_str!("../migrations/sqlite/0006_liquidity.sql"),
        postgres: include_str!("../migrations/postgres/0006_liquidity.sql"),
    },
    Migration {
        version: 7,
        sqlite: include_str!("../migrations/sqlite/0007_settlement.sql"),
        postgres: include_str!("../migrations/postgres/0007_settlement.sql"),
    },
    Migration {
        version: 8,
        sqlite: include_str!("../migrations/sqlite/0008_security.sql"),
        postgres: include_str!("../migrations/postgres/0008_security.sql"),
    },
    Migration {
        version: 9,
        sqlite: include_str!("../migrations/sqlite/0009_api_keys.sql"),
        postgres: include_str!("../migrations/postgres/0009_api_keys.sql"),
    },
    Migration {
        version: 10,
        sqlite: include_str!("../migrations/sqlite/0010_treasury_settings.sql"),
        postgres: include_str!("../migrations/postgres/0010_treasury_settings.sql"),
    },
    Migration {
        version: 11,
        sqlite: include_str!("../migrations/sqlite/0011_saga_throughput.sql"),
        postgres: include_str!("../migrations/postgres/0011_saga_throughput.sql"),
    },
    Migration {
        version: 12,
        sqlite: include_str!("../migrations/sqlite/0012_engine_liveness.sql"),
        postgres: include_str!("../migrations/postgres/0012_engine_liveness.sql"),
    },
    Migration {
        version: 13,
        sqlite: include_str!("../migrations/sqlite/0013_rail_usage.sql"),
        postgres: include_str!("../migrations/postgres/0013_rail_usage.sql"),
    },
    Migration {
        version: 14,
        sqlite: include_str!("../migrations/sqlite/0014_transfer_checks_in_the_ledger.sql"),
        postgres: include_str!("../migrations/postgres/0014_transfer_checks_in_the_ledger.sql"),
    },
    Migration {
        version: 15,
        sqlite: include_str!("../migrations/sqlite/0015_packed_events.sql"),
        postgres: include_str!("../migrations/postgres/0015_packed_events.sql"),
    },
    Migration {
        version: 16,
        sqlite: include_str!("../migrations/sqlite/0016_unused_transfer_index.sql"),
        postgres: include_str!("../migrations/postgres/0016_unused_transfer_index.sql"),
    },
    Migration {
        version: 17,
        sqlite: include_str!("../migrations/sqlite/0017_intake_journal_place.sql"),
        postgres: include_str!("../migrations/postgres/0017_intake_journal_place.sql"),
    },
];

/// The store: a pool and the dialect it speaks.
///
/// Two ways to write. [`Store::begin`] commits durably, each commit flushed (what an API answer
/// acknowledges). [`Store::begin_step`] is for the saga's steps: on SQLite with
/// `synchronous=FULL` it uses one connection of its own running `synchronous=NORMAL`, so a step's
/// commit is visible at once but not yet flushed; then
/// [`Store::sync`] makes every step committed before it durable with one flush of the write-ahead
/// log (see [`WalFile`]), shared by every caller waiting at the same time. The engine calls it before anything outside the database
/// depends on a step (a rail call, a webhook, the end of a saga's pass), so the steps of many
/// payouts share one flush instead of taking one each.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    steps: Steps,
    dialect: Dialect,
    barrier: Option<Arc<Barrier>>,
    /// Who gets the steps' one connection next (a file-backed SQLite database only).
    queue: Option<Arc<WriterQueue>>,
    /// Keeps the SQLite checkpointer running while any clone of the store lives.
    alive: Option<Arc<()>>,
    /// Where the intake journal lives, as the database said when opened (`Store::place_journal`);
    /// `None` until read (then beside the file).
    journal: Option<std::path::PathBuf>,
}

/// Where saga steps write.
#[derive(Clone)]
enum Steps {
    /// A file-backed SQLite database: one connection of its own, kept out of any pool. sqlx tests
    /// a pooled connection with a round trip to its worker thread every time it is given back (a
    /// thread wake-up, costly on a VM), and every step, flush and intake group would pay it on the
    /// one writer's path. `None` once the store is closed.
    Dedicated(Arc<tokio::sync::Mutex<Option<AnyConnection>>>),
    /// A pool: PostgreSQL's steps (many writers), an in-memory SQLite database.
    Pool(AnyPool),
}

/// The connection a saga step writes on, held until dropped: on a file-backed SQLite database the
/// one writer connection (in the order [`WriterQueue`] gives), otherwise one from the steps' pool.
pub struct Writer(WriterConnection);

enum WriterConnection {
    Dedicated(tokio::sync::OwnedMappedMutexGuard<Option<AnyConnection>, AnyConnection>),
    Pooled(sqlx::pool::PoolConnection<sqlx::Any>),
}

impl std::ops::Deref for Writer {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match &self.0 {
            WriterConnection::Dedicated(connection) => connection,
            WriterConnection::Pooled(connection) => connection,
        }
    }
}

impl std::ops::DerefMut for Writer {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match &mut self.0 {
            WriterConnection::Dedicated(connection) => connection,
            WriterConnection::Pooled(connection) => connection,
        }
    }
}

/// A saga step's write transaction ([`Store::begin_step`], [`Store::begin_urgent`]): it holds the
/// steps' connection from `BEGIN` until it is committed or dropped, and derefs to the connection
/// for queries (`&mut *tx`). Dropped without [`StepTransaction::commit`], it rolls back (on a task
/// of its own, which keeps the connection until the rollback is done, so the next writer finds
/// it out of any transaction).
pub struct StepTransaction {
    writer: Option<Writer>,
}

impl StepTransaction {
    async fn begin(writer: Writer) -> Result<StepTransaction, sqlx::Error> {
        let begin = match dialect_of(&writer) {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        };
        // The transaction owns the connection before `BEGIN` is sent: a caller cancelled while it
        // runs (an aborted task, a dropped request) drops the transaction, which rolls back
        // whatever `BEGIN` opened. Otherwise the connection would go to the next writer inside a
        // transaction and every `BEGIN` after it fail ("cannot start a transaction within a
        // transaction"): the store wedged until restart. A failed `BEGIN` is dropped the same way
        // (the rollback then finds nothing open).
        let mut transaction = StepTransaction { writer: Some(writer) };
        sqlx::raw_sql(begin).execute(&mut *transaction).await?;
        Ok(transaction)
    }

    /// Commits; the connection goes to the next writer. The transaction keeps the connection until
    /// `COMMIT` has answered: cancelled before, or failed, it is dropped and rolls back (after a
    /// `COMMIT` that did run, the rollback finds nothing open).
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        sqlx::raw_sql("COMMIT").execute(&mut *self).await?;
        self.writer = None;
        Ok(())
    }

    /// Rolls back now; the connection goes to the next writer.
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        if self.writer.is_some() {
            // Cancelled meanwhile, the drop rolls back instead. A failed rollback (nothing was
            // open, or the connection is gone) leaves nothing to undo.
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *self).await;
            self.writer = None;
        }
        Ok(())
    }

    fn connection(&self) -> &Writer {
        self.writer.as_ref().unwrap_or_else(|| unreachable!("a step transaction holds its writer until consumed"))
    }
}

/// Rolls back whatever `writer`'s connection has open, then lets the connection go. A failed
/// rollback (nothing was open, or the connection is gone) leaves nothing to undo.
async fn rollback(mut writer: Writer) {
    let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *writer).await;
}

impl std::ops::Deref for StepTransaction {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        self.connection()
    }
}

impl std::ops::DerefMut for StepTransaction {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.writer.as_mut().unwrap_or_else(|| unreachable!("a step transaction holds its writer until consumed"))
    }
}

impl Drop for StepTransaction {
    fn drop(&mut self) {
        let Some(writer) = self.writer.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(rollback(writer));
            }
            // No runtime left (the process is ending): dropping the connection closes it, and
            // SQLite and PostgreSQL roll back what a closed connection left open.
            Err(_) => drop(writer),
        }
    }
}

/// How long the intake journal's connections wait for its lock (held by another process's
/// intake on the same files, or a checkpoint) before a write fails.
pub(crate) const JOURNAL_BUSY_MS: u128 = 10_000;

/// How often an SQLite store copies its WAL into the database file ([`Store::open`]). Each copy
/// ends with a flush of the database file, and on a disk the intake journal shares, a journal flush
/// a PSP's 202 waits for queues behind it: the smaller the copy, the shorter that wait. At 1,500
/// accepts/s the client's accept p99 was 12-17 ms at 250 ms, 11-12 ms at 100 ms, 9-10 ms at 50 ms
/// and 321 ms at 1 s, with no measurable cost to throughput (BENCHMARKS.md, "Smaller checkpoints").
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);
/// How often the intake journal copies its own WAL into its file (see [`journal`]): a few rows
/// each time, since the journal forgets what has moved.
pub const JOURNAL_CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// WAL pages after which a commit checkpoints by itself, should the checkpointer fall behind or
/// not run (a store opened with [`Store::open_existing`]): 64 MiB of 4 KiB pages.
pub const CHECKPOINT_FALLBACK_PAGES: u32 = 16_384;

/// Orders the waiters for the steps' one SQLite connection. FIFO would put an intake group (a PSP
/// waiting for its 202) and a flush (rail calls and answers waiting for it) behind every saga step
/// queued before them: with 256 sagas running that is ~100 ms. Urgent callers go to the pool at
/// once; saga steps wait until no urgent caller is waiting and go one at a time, so an urgent
/// caller waits for at most the step holding the connection and the one queued behind it, and a
/// step still gets a turn between two urgent ones (no starvation).
#[derive(Default)]
struct WriterQueue {
    /// Urgent callers waiting for the connection.
    urgent: AtomicUsize,
    /// Told when `urgent` falls to zero.
    clear: tokio::sync::Notify,
    /// Held by the one step waiting at the pool.
    step_turn: tokio::sync::Mutex<()>,
}

/// Counts an urgent caller as waiting until it has the connection (or gives up: cancellation).
struct Urgent<'a>(&'a WriterQueue);

impl<'a> Urgent<'a> {
    fn enter(queue: &'a WriterQueue) -> Urgent<'a> {
        queue.urgent.fetch_add(1, Ordering::SeqCst);
        Urgent(queue)
    }
}

impl Drop for Urgent<'_> {
    fn drop(&mut self) {
        if self.0.urgent.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.clear.notify_waiters();
        }
    }
}

impl WriterQueue {
    /// Waits for a step's turn at the pool; the guard is held until the connection is acquired.
    async fn step_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        let turn = self.step_turn.lock().await;
        loop {
            // Registered before the check, so a notification between the two is not missed.
            let clear = self.clear.notified();
            if self.urgent.load(Ordering::SeqCst) == 0 {
                return turn;
            }
            clear.await;
        }
    }
}

/// [`Store::sync`]'s fallback, a flushed commit on the steps' connection, which otherwise runs
/// `synchronous=NORMAL`: flushing it makes every commit before it durable (WAL frames are
/// appended in order, and a flush covers all of them).
const FLUSHED_MARK: &str = "PRAGMA synchronous = FULL; BEGIN IMMEDIATE; \
     UPDATE durability_marks SET mark = mark + 1 WHERE id = 1; COMMIT; PRAGMA synchronous = NORMAL";

/// Coalesces [`Store::sync`] calls: one flush covers every call made before it started.
struct Barrier {
    lock: tokio::sync::Mutex<()>,
    /// Calls so far (each call's ticket).
    requested: AtomicU64,
    /// Every ticket up to this one is durable.
    synced: AtomicU64,
    /// The database's write-ahead log, flushed without the writer connection (see [`WalFile`]).
    wal: Arc<WalFile>,
}

/// An SQLite database's write-ahead log, as [`Store::sync`] flushes it.
///
/// A commit at `synchronous=NORMAL` has written its frames into the WAL (the operating system's
/// cache of it) before `COMMIT` returns; it only skips the `fsync`. Calling `fsync` on the same
/// file afterwards, from any descriptor, makes those frames durable exactly as `synchronous=FULL`
/// would have at the commit. Frames a checkpoint has meanwhile copied into the database file are
/// durable there (a checkpoint flushes the database file before SQLite reuses the log), so the
/// flush never needs the writer connection: saga steps and intake groups keep writing while it
/// runs. Should the log file be replaced (every connection closed and the database reopened, or
/// another process), the flush notices by its inode and opens the new one; should anything about
/// the file fail, [`Store::sync`] falls back to a flushed commit on the writer connection.
struct WalFile {
    /// The database the log belongs to.
    database: std::path::PathBuf,
    path: std::path::PathBuf,
    /// The log as last opened, with its inode.
    open: std::sync::Mutex<Option<(std::fs::File, u64)>>,
}

impl WalFile {
    fn new(database: &std::path::Path) -> WalFile {
        let mut path = database.as_os_str().to_owned();
        path.push("-wal");
        WalFile { database: database.to_path_buf(), path: path.into(), open: std::sync::Mutex::new(None) }
    }

    /// Flushes the log as it is now (blocking: call it off the runtime's threads).
    fn flush(&self) -> std::io::Result<()> {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = inode(&std::fs::metadata(&self.path)?);
        if open.as_ref().is_none_or(|(_, known)| *known != now) {
            let file = std::fs::File::open(&self.path)?;
            let opened = inode(&file.metadata()?);
            // The log's directory entry is durable too: a log SQLite created since the last
            // open would otherwise vanish with the frames in it.
            if let Some(directory) = self.path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                std::fs::File::open(directory)?.sync_all()?;
            }
            *open = Some((file, opened));
        }
        let (file, _) = open.as_ref().unwrap_or_else(|| unreachable!("opened above"));
        file.sync_data()
    }
}

#[cfg(unix)]
fn inode(metadata: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(metadata)
}

/// Without inodes to tell one file from another, the log is opened again for every flush.
#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    static OPENS: AtomicU64 = AtomicU64::new(0);
    OPENS.fetch_add(1, Ordering::Relaxed)
}

/// The database a connection (or a transaction on one) speaks.
pub fn dialect_of(connection: &sqlx::AnyConnection) -> Dialect {
    if connection.backend_name().eq_ignore_ascii_case("sqlite") { Dialect::Sqlite } else { Dialect::Postgres }
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Most audit entries one read returns.
pub const AUDIT_PAGE_MAX: i64 = 500;

impl Store {
    /// Records a security-relevant action durably, in the hash-chained audit log, in its own
    /// transaction (see [`audit::append`] to record it with the change it describes).
    pub async fn audit(&self, actor: &str, action: &str, detail: &str) -> Result<audit::AuditEntry, sqlx::Error> {
        let mut transaction = self.begin().await?;
        let entry = audit::append(&mut transaction, actor, action, detail).await?;
        transaction.commit().await?;
        Ok(entry)
    }

    /// The newest audit entries first.
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<audit::AuditEntry>, sqlx::Error> {
        audit::log(self, limit).await
    }

    /// Opens (creating if needed) the database at `url` and applies pending migrations. On an
    /// SQLite file, starts its checkpointer (see [`CHECKPOINT_EVERY`]).
    pub async fn open(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        let mut store = Store::connect(url, options).await?;
        store.migrate().await?;
        audit::adopt_legacy(&store).await?;
        store.place_journal(options.journal.as_deref()).await?;
        if store.dialect == Dialect::Sqlite && !url.contains(":memory:") {
            store.alive = Some(store.spawn_checkpointer());
        }
        Ok(store)
    }

    /// Copies the WAL into the database file every [`CHECKPOINT_EVERY`], on a connection and a
    /// task of its own, until every clone of this store is dropped or its pool closed. A passive
    /// checkpoint waits for no one and stops no writer; left to SQLite, the commit that crosses
    /// the WAL's threshold does the copy and both flushes while holding the one write lock, and
    /// every writer behind it (an intake group a PSP is waiting on) waits too.
    fn spawn_checkpointer(&self) -> Arc<()> {
        let alive = Arc::new(());
        let watched = Arc::downgrade(&alive);
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(CHECKPOINT_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if watched.strong_count() == 0 || pool.is_closed() {
                    break;
                }
                if let Err(error) = pool.execute("PRAGMA wal_checkpoint(PASSIVE)").await {
                    if pool.is_closed() {
                        break;
                    }
                    tracing::warn!("sqlite checkpoint failed: {error}");
                }
            }
        });
        alive
    }

    /// Opens an existing Railyard database without changing it (for `railyard verify`); refuses a
    /// database that Railyard never migrated, or one newer than this build.
    pub async fn open_existing(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite:").map(|rest| rest.trim_start_matches("//"))
            && path != ":memory:"
            && !std::path::Path::new(path.split('?').next().unwrap_or(path)).exists()
        {
            return Err(StoreError::NotRailyard(format!("{path} does not exist")));
        }
        let mut store = Store::connect(url, options).await?;
        let versions = sqlx::query("SELECT version FROM schema_migrations")
            .fetch_all(&store.pool)
            .await
            .map_err(|_| StoreError::NotRailyard("it has no schema_migrations table".into()))?;
        let newest = MIGRATIONS.iter().map(|migration| migration.version).max().unwrap_or(0);
        let mut applied = 0;
        for row in versions {
            let version: i64 = row.try_get(0)?;
            applied = applied.max(version);
            if version > newest {
                return Err(StoreError::NotRailyard(format!("migration {version} is newer than this build")));
            }
        }
        // Where its intake journal lives, as the database says (read only: `wanted` is none).
        if applied >= JOURNAL_PLACE_MIGRATION {
            store.place_journal(None).await?;
        }
        Ok(store)
    }

    async fn connect(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let mut database = None;
        let (dialect, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            if path.is_empty() {
                return Err(StoreError::Url(url.into()));
            }
            database = Some(std::path::PathBuf::from(path.split('?').next().unwrap_or(path)));
            let url = if path == ":memory:" || path.contains('?') {
                format!("sqlite://{path}")
            } else {
                format!("sqlite://{path}?mode=rwc")
            };
            (Dialect::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Dialect::Postgres, url.to_string())
        } else {
            return Err(StoreError::Url(url.into()));
        };
        let connect = AnyConnectOptions::from_str(&url)?;
        let busy_ms = options.busy_timeout.as_millis();
        let durability = options.durability;
        let pool = Store::pool_with(&connect, options, dialect, durability, busy_ms).await?;
        let memory = url.contains(":memory:");
        // A file-backed SQLite database has one writer: its steps queue for one connection of
        // their own in process instead of sleeping in SQLite's busy handler on several (never for
        // an in-memory database: another connection would be another database). Flushes are
        // deferred where commits are flushed to begin with; at `synchronous=NORMAL` by choice no
        // commit is flushed, and there is nothing to defer.
        let (steps, barrier, queue) = if !memory && dialect == Dialect::Sqlite {
            let mut connection = AnyConnection::connect_with(&connect).await?;
            prepare(&mut connection, dialect, Durability::Normal, busy_ms).await?;
            keep_statement_journals_in_memory(&mut connection).await?;
            let steps = Steps::Dedicated(Arc::new(tokio::sync::Mutex::new(Some(connection))));
            let barrier = match durability {
                Durability::Full => {
                    // The log's path as the process sees it now, whatever its working directory later.
                    let database = database.ok_or_else(|| StoreError::Url(url.clone()))?;
                    let database = std::fs::canonicalize(&database).unwrap_or(database);
                    Some(Arc::new(Barrier {
                        lock: tokio::sync::Mutex::new(()),
                        requested: AtomicU64::new(0),
                        synced: AtomicU64::new(0),
                        wal: Arc::new(WalFile::new(&database)),
                    }))
                }
                Durability::Normal => None,
            };
            (steps, barrier, Some(Arc::new(WriterQueue::default())))
        } else if dialect == Dialect::Postgres {
            // The steps' connections of their own: hundreds of sagas queueing on the journal head
            // must not take every connection a payout's GET or an intake group needs. PostgreSQL
            // already shares one WAL flush among concurrent commits, so its steps commit durably
            // as they go.
            (Steps::Pool(Store::pool_with(&connect, options, dialect, durability, busy_ms).await?), None, None)
        } else {
            (Steps::Pool(pool.clone()), None, None)
        };
        Ok(Store { pool, steps, dialect, barrier, queue, alive: None, journal: None })
    }

    async fn pool_with(
        connect: &AnyConnectOptions,
        options: &StoreOptions,
        dialect: Dialect,
        durability: Durability,
        busy_ms: u128,
    ) -> Result<AnyPool, sqlx::Error> {
        AnyPoolOptions::new()
            .max_connections(options.connections_max.max(1))
            // An SQLite connection is a file handle in this process: it cannot have been hung up
            // on while idle, and sqlx's test of it is a round trip to its worker thread (a thread
            // wake-up, expensive on a VM) before every transaction and read. PostgreSQL's
            // connections can break while idle and keep the test.
            .test_before_acquire(dialect == Dialect::Postgres)
            .after_connect(move |connection, _| {
                Box::pin(async move { prepare(connection, dialect, durability, busy_ms).await })
            })
            .connect_with(connect.clone())
            .await
    }

    /// Opens a write transaction for a saga step: visible when committed, durable after the next
    /// [`Store::sync`] (see [`Store`]). It waits for the steps' turn (see [`WriterQueue`]).
    pub async fn begin_step(&self) -> Result<StepTransaction, sqlx::Error> {
        StepTransaction::begin(self.step_connection().await?).await
    }

    /// [`Store::begin_step`] for a caller someone is waiting on (an intake group): ahead of the
    /// saga steps queued for the connection.
    pub async fn begin_urgent(&self) -> Result<StepTransaction, sqlx::Error> {
        StepTransaction::begin(self.urgent_connection().await?).await
    }

    /// The connection for a saga step's write outside a transaction (leases), in the steps' turn.
    pub async fn step_connection(&self) -> Result<Writer, sqlx::Error> {
        let _turn = match &self.queue {
            Some(queue) => Some(queue.step_turn().await),
            None => None,
        };
        self.writer().await
    }

    /// [`Store::step_connection`] ahead of the saga steps queued for it (a flush, an intake group).
    async fn urgent_connection(&self) -> Result<Writer, sqlx::Error> {
        let _urgent = self.queue.as_deref().map(Urgent::enter);
        self.writer().await
    }

    async fn writer(&self) -> Result<Writer, sqlx::Error> {
        match &self.steps {
            Steps::Dedicated(connection) => {
                let held = connection.clone().lock_owned().await;
                let held =
                    tokio::sync::OwnedMutexGuard::try_map(held, Option::as_mut).map_err(|_| sqlx::Error::PoolClosed)?;
                Ok(Writer(WriterConnection::Dedicated(held)))
            }
            Steps::Pool(pool) => Ok(Writer(WriterConnection::Pooled(pool.acquire().await?))),
        }
    }

    /// Makes every commit made before this call durable, through [`Store::begin_step`] or not.
    /// Callers waiting together share one flush of the write-ahead log, which takes no connection
    /// (see [`WalFile`]); a flushed commit on the writer connection should that fail. A no-op where every commit is flushed
    /// anyway (PostgreSQL) or never (`synchronous=NORMAL` by choice, an in-memory database).
    pub async fn sync(&self) -> Result<(), sqlx::Error> {
        let Some(barrier) = &self.barrier else { return Ok(()) };
        let ticket = barrier.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = barrier.lock.lock().await;
        if barrier.synced.load(Ordering::SeqCst) >= ticket {
            // A flush that started after this call was made has finished.
            return Ok(());
        }
        // Every call up to here made its commits before taking its ticket: this flush covers it.
        let covering = barrier.requested.load(Ordering::SeqCst);
        let wal = barrier.wal.clone();
        let failed = match tokio::task::spawn_blocking(move || wal.flush()).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(error) => Some(format!("the flush did not finish: {error}")),
        };
        if let Some(error) = failed {
            tracing::warn!("flushing {} failed, a flushed commit instead: {error}", barrier.wal.path.display());
            self.flushed_commit().await?;
        }
        barrier.synced.store(covering, Ordering::SeqCst);
        Ok(())
    }

    /// One flushed commit on the steps' own connection ([`FLUSHED_MARK`]): every commit before it
    /// is durable after it. A second writer connection would wait for the lock in SQLite's busy
    /// handler, asleep.
    async fn flushed_commit(&self) -> Result<(), sqlx::Error> {
        // On a task of its own: a caller cancelled half way must not leave the connection inside
        // the mark's transaction (see `StepTransaction::begin`).
        let store = self.clone();
        tokio::spawn(async move { store.flushed_commit_now().await })
            .await
            .map_err(|error| sqlx::Error::Protocol(format!("the flushed commit's task ended: {error}")))?
    }

    async fn flushed_commit_now(&self) -> Result<(), sqlx::Error> {
        let mut writer = self.urgent_connection().await?;
        // One round trip to the connection's worker thread for all five statements.
        if let Err(error) = sqlx::raw_sql(FLUSHED_MARK).execute(&mut *writer).await {
            // Never leave the connection in an unknown state: out of any transaction, back to
            // deferred flushes.
            let restored = sqlx::raw_sql("ROLLBACK").execute(&mut *writer).await;
            let normal = sqlx::raw_sql("PRAGMA synchronous = NORMAL").execute(&mut *writer).await;
            if normal.is_err() || restored.as_ref().is_err_and(|error| !no_transaction(error)) {
                tracing::error!("the writer connection could not be restored after a failed flush: {error}");
            }
            return Err(error);
        }
        Ok(())
    }

    /// Closes the writer connection and the pools (waits for connections in use to come back).
    pub async fn close(&self) {
        match &self.steps {
            Steps::Dedicated(connection) => {
                if let Some(connection) = connection.lock().await.take() {
                    let _ = connection.close().await;
                }
            }
            Steps::Pool(pool) => pool.close().await,
        }
        self.pool.close().await;
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// This database's identity: when its first migration was applied (microseconds), which a
    /// database keeps for life and a new one at the same path does not share. The intake journal
    /// is bound to it.
    pub async fn identity(&self) -> Result<String, sqlx::Error> {
        let created: i64 = sqlx::query_scalar("SELECT applied_at FROM schema_migrations ORDER BY version LIMIT 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(format!("created {created}"))
    }

    /// Where this store's intake journal lives ([`journal`]), for an SQLite file whose commits
    /// are flushed ([`Durability::Full`]): where the database says (`railyard serve
    /// --intake-journal`), beside the file otherwise; `None` for PostgreSQL, an in-memory database
    /// or `synchronous=NORMAL` by choice, which accept into the database itself.
    pub fn journal_path(&self) -> Option<std::path::PathBuf> {
        let database = self.database_file()?;
        Some(self.journal.clone().unwrap_or_else(|| journal::Journal::path_for(database)))
    }

    /// Reads where the database keeps its intake journal and, when `wanted` names another place,
    /// moves it there: refused while the journal at the old place still holds acknowledged
    /// payouts not yet moved into the database (they would wait there unseen), allowed once it
    /// is empty or gone. Does nothing without a journal ([`Store::journal_path`] is `None`).
    async fn place_journal(&mut self, wanted: Option<&std::path::Path>) -> Result<(), StoreError> {
        let Some(database) = self.database_file().map(std::path::Path::to_path_buf) else {
            if let Some(wanted) = wanted {
                return Err(StoreError::Journal(format!(
                    "{} was given, but this database accepts without a journal (only a flushed SQLite file has one)",
                    wanted.display()
                )));
            }
            return Ok(());
        };
        let recorded: Option<String> =
            sqlx::query_scalar("SELECT path FROM intake_journal WHERE id = 1").fetch_optional(&self.pool).await?;
        let current = recorded.map(std::path::PathBuf::from).unwrap_or_else(|| journal::Journal::path_for(&database));
        let Some(wanted) = wanted else {
            self.journal = Some(current);
            return Ok(());
        };
        let absolute = |path: &std::path::Path| {
            std::path::absolute(path).map_err(|error| StoreError::Journal(format!("{}: {error}", path.display())))
        };
        let wanted = absolute(wanted)?;
        if wanted == absolute(&current)? {
            self.journal = Some(current);
            return Ok(());
        }
        if wanted == absolute(&database)? {
            return Err(StoreError::Journal(format!("{} is the database itself", wanted.display())));
        }
        let held = journal::Journal::held(&current).await?;
        if held > 0 {
            return Err(StoreError::Journal(format!(
                "the journal at {} holds {held} acknowledged payouts not yet moved into the database; start once \
                 with it (--intake-journal {}) so they are moved, then name the new place",
                current.display(),
                current.display()
            )));
        }
        sqlx::query(
            "INSERT INTO intake_journal (id, path) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET path = excluded.path",
        )
        .bind(wanted.display().to_string())
        .execute(&self.pool)
        .await?;
        self.journal = Some(wanted);
        Ok(())
    }

    /// The SQLite database file, where [`Store::journal_path`] is `Some`.
    pub fn database_file(&self) -> Option<&std::path::Path> {
        Some(&self.barrier.as_ref()?.wal.database)
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Opens a write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`),
    /// so two writers never deadlock upgrading a read lock.
    pub async fn begin(&self) -> Result<Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => self.pool.begin().await,
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut transaction = self.begin().await?;
        if self.dialect == Dialect::Postgres {
            // Two processes starting together must not both apply a migration.
            transaction.execute("SELECT pg_advisory_xact_lock(7301997)").await?;
        }
        transaction
            .execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
            )
            .await?;
        let applied: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
            .fetch_all(&mut *transaction)
            .await?
            .iter()
            .map(|row| row.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()?;
        for migration in MIGRATIONS {
            if applied.contains(&migration.version) {
                continue;
            }
            let text = match self.dialect {
                Dialect::Sqlite => migration.sqlite,
                Dialect::Postgres => migration.postgres,
            };
            for statement in statements(text) {
                transaction.execute(AssertSqlSafe(statement.clone())).await.map_err(|error| StoreError::Migration {
                    version: migration.version,
                    reason: format!("{error}: {statement}"),
                })?;
            }
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(migration.version)
                .bind(now_micros())
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(())
    }
}

/// Settings every SQLite connection gets when opened: WAL, the synchronous level, foreign keys,
/// how long to wait for the write lock, and the commit-time checkpoint only as a fallback.
pub(crate) async fn prepare(
    connection: &mut AnyConnection,
    dialect: Dialect,
    durability: Durability,
    busy_ms: u128,
) -> Result<(), sqlx::Error> {
    if dialect == Dialect::Postgres {
        // Plan every execution with its own parameters. After five runs of a prepared statement
        // PostgreSQL may keep a generic plan made with what it then knew of the tables: one made
        // while `transfers` was nearly empty scanned the whole table for each of a group's
        // lookups once it held hundreds of thousands of rows (1.4-1.8 s a statement, a run at a
        // third of its throughput; see BENCHMARKS.md). Our statements carry lists of varying
        // length, which a generic plan cannot size either; planning them costs far less.
        sqlx::raw_sql("SET plan_cache_mode = force_custom_plan").execute(connection).await?;
        return Ok(());
    }
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    sqlx::raw_sql(AssertSqlSafe(format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON; \
         PRAGMA busy_timeout = {busy_ms}; PRAGMA wal_autocheckpoint = {CHECKPOINT_FALLBACK_PAGES}"
    )))
    .execute(connection)
    .await?;
    Ok(())
}

/// For a SQLite connection that only writes (the steps' and the intake's): the copies of the
/// pages a statement or a savepoint changes, kept so that it can be undone alone, stay in memory.
/// SQLite otherwise moves them to a file under `/var/tmp` past 64 KiB, which a group's
/// multi-row statements pass several times a group: a file created, written and deleted each
/// time (see BENCHMARKS.md). What they hold is bounded by what one statement of ours changes, and
/// that by the group and batch bounds (256 sagas, 256 intake requests, `bulk::IN_MAX`).
/// Temporary tables and sorts would be held in memory too, so the connections that serve reads
/// (reports, listings) keep the default.
pub(crate) async fn keep_statement_journals_in_memory(connection: &mut AnyConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql("PRAGMA temp_store = MEMORY").execute(connection).await?;
    Ok(())
}

/// A `ROLLBACK` refused because no transaction was open: nothing to undo.
fn no_transaction(error: &sqlx::Error) -> bool {
    error.to_string().contains("no transaction is active")
}

/// Splits a migration into statements: on `;` at the end of a line, comments dropped.
fn statements(text: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.split("--").next().unwrap_or("").trim_end();
        if line.trim().is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if line.ends_with(';') {
            statements.push(current.trim().trim_end_matches(';').to_string());
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        statements.push(current.trim().to_string());
    }
    statements
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let directory = std::env::temp_dir().join(format!("railyard-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        directory
    }

    #[test]
    fn the_log_is_flushed_as_it_is_now_even_after_being_replaced() {
        let directory = scratch("wal-file");
        let database = directory.join("a.db");
        let wal = WalFile::new(&database);
        assert!(wal.flush().is_err(), "no log yet: nothing to flush, and the caller must hear it");
        let log = directory.join("a.db-wal");
        std::fs::write(&log, b"first").unwrap();
        wal.flush().unwrap();
        let first = wal.open.lock().unwrap().as_ref().map(|(_, inode)| *inode).unwrap();
        // Replaced (a new file under the same name): the next flush opens the new one.
        std::fs::remove_file(&log).unwrap();
        std::fs::write(&log, b"second").unwrap();
        wal.flush().unwrap();
        let second = wal.open.lock().unwrap().as_ref().map(|(_, inode)| *inode).unwrap();
        assert_eq!(second, inode(&std::fs::metadata(&log).unwrap()));
        assert_ne!(first, second);
        let _ = std::fs::remove_dir_all(&directory);
    }

    /// A writer cancelled while its `BEGIN`, `COMMIT` or `ROLLBACK` is on the way (an aborted
    /// task, a dropped request) leaves the connection out of any transaction: the next writer
    /// begins. Before, a cancelled `BEGIN` left it open and every write after it failed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_cancelled_mid_statement_leaves_no_transaction_open() {
        use futures_util::FutureExt;
        let directory = scratch("cancelled");
        let store = Store::open(&format!("sqlite:{}", directory.join("c.db").display()), &StoreOptions::default())
            .await
            .unwrap();
        let bump = "UPDATE durability_marks SET mark = mark + 1 WHERE id = 1";
        for round in 0..20 {
            // Polled once and dropped: `BEGIN` went to the connection's worker and (nearly always)
            // its answer had not come back.
            let _ = store.begin_step().now_or_never();
            let mut tx = store.begin_step().await.unwrap_or_else(|error| panic!("round {round}: {error}"));
            sqlx::raw_sql(bump).execute(&mut *tx).await.unwrap();
            let _ = tx.commit().now_or_never();
            let mut tx = store.begin_urgent().await.unwrap_or_else(|error| panic!("round {round}: {error}"));
            sqlx::raw_sql(bump).execute(&mut *tx).await.unwrap();
            let _ = tx.rollback().now_or_never();
        }
        let tx = store.begin_step().await.unwrap();
        tx.commit().await.unwrap();
        store.close().await;
        let _ = std::fs::remove_dir_all(&directory);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_that_cannot_be_flushed_falls_back_to_a_flushed_commit() {
        let directory = scratch("wal-fallback");
        let mut store = Store::open(&format!("sqlite:{}", directory.join("b.db").display()), &StoreOptions::default())
            .await
            .unwrap();
        let marks = |store: &Store| {
            let pool = store.pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT mark FROM durability_marks WHERE id = 1")
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        let tx = store.begin_step().await.unwrap();
        tx.commit().await.unwrap();
        store.sync().await.unwrap();
        assert_eq!(marks(&store).await, 0, "the log itself was flushed: no commit needed");
        // The log's path made unreachable: the flush fails, and a flushed commit stands in.
        store.barrier = Some(Arc::new(Barrier {
            lock: tokio::sync::Mutex::new(()),
            requested: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            wal: Arc::new(WalFile::new(&directory.join("gone").join("b.db"))),
        }));
        let tx = store.begin_step().await.unwrap();
        tx.commit().await.unwrap();
        store.sync().await.unwrap();
        assert_eq!(marks(&store).await, 1, "the fallback's flushed commit");
        store.close().await;
        let _ = std::fs::remove_dir_all(&directory);
    }
}
