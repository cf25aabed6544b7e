//! The intake journal: accepted payouts, durable in an SQLite file of their own until the engine
//! has moved them into the database.
//!
//! SQLite has one writer per file. With the intake in the main database an accept waited for
//! whichever saga group held that writer (a group's submit or completion, milliseconds under
//! load) before its own commit, and a PSP's 202 paid for the settling of other payouts. The
//! journal is a second file with its own writer: an intake group claims its keys and writes its
//! intents here, flushes (`synchronous=FULL`) and answers; the engine then moves the intents into
//! the database (idempotency record, vault row, payout, first event) in its own transaction and
//! tells the intake, which forgets them once it has answered (a group's worth at a time).
//!
//! Keys stay unique per tenant across both files because one task claims them all (the intake's
//! writer): a key is written only where neither the database's idempotency records nor the
//! journal hold it. The database is attached to the journal's connections (read only by us), so
//! a batch of new keys is checked and written by one statement ([`Journal::append_if_new`]);
//! a batch with a key held somewhere is looked up in the database, then claimed in the journal.
//! A moved intent is forgotten only after the database's commit is durable, so at every moment
//! an acknowledged key is in one file or the other (or both, briefly, with the same payout id).
//! Moving is idempotent: an intent already in the database claims its key as a replay of itself.
//! After a crash the engine moves whatever the journal still holds before it accepts anything.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, AssertSqlSafe, Row};

use crate::vault::Sealed;
use crate::{Dialect, Durability};

/// Intents one read of [`Journal::pending`] returns at most.
pub const PENDING_PAGE_MAX: i64 = 256;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS intents (\
     seq INTEGER PRIMARY KEY AUTOINCREMENT, \
     key TEXT NOT NULL, \
     tenant TEXT NOT NULL, \
     request_hash TEXT NOT NULL, \
     payout_id TEXT NOT NULL UNIQUE, \
     request TEXT NOT NULL, \
     submitted_by TEXT, \
     sealed TEXT NOT NULL, \
     accepted_at INTEGER NOT NULL, \
     UNIQUE (key, tenant)); \
     CREATE TABLE IF NOT EXISTS binding (id INTEGER PRIMARY KEY CHECK (id = 1), database TEXT NOT NULL)";

/// A payout accepted into the journal and not yet known to be in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub seq: i64,
    pub tenant: String,
    pub key: String,
    /// The request's fingerprint, as the idempotency record keeps it.
    pub request_hash: String,
    pub payout_id: String,
    /// The request as stored (the account tokenised), JSON.
    pub request: String,
    pub submitted_by: Option<String>,
    /// The beneficiary's account, sealed for the vault.
    pub sealed: Sealed,
    /// Microseconds since the epoch: when its group was committed here.
    pub accepted_at: i64,
}

/// One request for [`Journal::append`].
#[derive(Debug, Clone, Copy)]
pub struct NewIntent<'a> {
    pub tenant: &'a str,
    pub key: &'a str,
    pub request_hash: &'a str,
    pub payout_id: &'a str,
    pub request: &'a str,
    pub submitted_by: Option<&'a str>,
    pub sealed: &'a Sealed,
}

/// What [`Journal::append`] answered for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Written now, as `payout_id` of the request.
    New,
    /// The key is in the journal already (possibly earlier in the same batch), for `payout_id`;
    /// `same_request` tells a replay from a conflict.
    Existing { payout_id: String, same_request: bool },
}

/// The journal beside one SQLite database.
#[derive(Clone)]
pub struct Journal {
    pool: AnyPool,
    path: PathBuf,
    /// The database is attached to every connection as `db` (read only by us): a batch of new
    /// keys is checked against its idempotency records in the statement that writes the batch
    /// ([`Journal::append_if_new`]).
    attached: bool,
}

/// Attaches the database to a journal connection, as `db`.
const ATTACH: &str = "ATTACH DATABASE $1 AS db";

/// [`Journal::append_if_new`]: the batch, unless a key is in the database's idempotency records
/// or in the journal already.
const APPEND_IF_NEW: &str = "INSERT INTO intents \
     (key, tenant, request_hash, payout_id, request, submitted_by, sealed, accepted_at) \
     SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, v.column8 \
     FROM ({rows}) AS v WHERE NOT EXISTS (SELECT 1 FROM db.idempotency i \
     WHERE i.tenant = v.column2 AND i.key = v.column1) ON CONFLICT (key, tenant) DO NOTHING";

const COLUMNS: &str = "seq, tenant, key, request_hash, payout_id, request, submitted_by, sealed, accepted_at";

fn intent(row: &sqlx::any::AnyRow) -> Result<Intent, sqlx::Error> {
    let sealed: String = row.try_get(7)?;
    Ok(Intent {
        seq: row.try_get(0)?,
        tenant: row.try_get(1)?,
        key: row.try_get(2)?,
        request_hash: row.try_get(3)?,
        payout_id: row.try_get(4)?,
        request: row.try_get(5)?,
        submitted_by: row.try_get(6)?,
        sealed: serde_json::from_str(&sealed).map_err(|error| sqlx::Error::Decode(Box::new(error)))?,
        accepted_at: row.try_get(8)?,
    })
}

impl Journal {
    /// The journal's file for the database at `database`: the same name with `-intake`.
    pub fn path_for(database: &Path) -> PathBuf {
        let mut name = database.as_os_str().to_os_string();
        name.push("-intake");
        PathBuf::from(name)
    }

    /// Opens (creating if need be) the journal at `path` for the database `store`, flushing every
    /// commit when `durability` is [`Durability::Full`]. A journal belongs to one database (see
    /// [`crate::Store::identity`]): one that holds payouts of another database (its database was
    /// replaced, or the file copied beside another) is refused, since moving them would put another
    /// database's payouts into this one; an empty one is taken over.
    pub async fn open(path: &Path, durability: Durability, store: &crate::Store) -> Result<Journal, sqlx::Error> {
        let database = store.identity().await?;
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let connect = AnyConnectOptions::from_str(&url)?;
        let attach = store.database_file().map(|file| file.display().to_string());
        let attached = attach.is_some();
        let pool = AnyPoolOptions::new()
            // One writer (the intake's task) and reads of a payout not moved yet.
            .max_connections(3)
            .test_before_acquire(false)
            .after_connect(move |connection, _| {
                let attach = attach.clone();
                Box::pin(async move {
                    crate::prepare(connection, Dialect::Sqlite, durability, crate::JOURNAL_BUSY_MS).await?;
                    // The intake's writes, and reads of one payout each.
                    crate::keep_statement_journals_in_memory(connection).await?;
                    // After the pragmas, which would otherwise apply to the database too.
                    if let Some(file) = attach {
                        sqlx::query(ATTACH).bind(file).execute(connection).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(connect)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        let bound: Option<String> =
            sqlx::query_scalar("SELECT database FROM binding WHERE id = 1").fetch_optional(&pool).await?;
        if bound.as_deref() != Some(database.as_str()) {
            let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM intents").fetch_one(&pool).await?;
            if held > 0 {
                pool.close().await;
                return Err(sqlx::Error::Protocol(format!(
                    "the intake journal {} holds {held} acknowledged payouts of another database ({}, not {database}); \
                     restore that database beside it, or move the journal away",
                    path.display(),
                    bound.unwrap_or_default()
                )));
            }
            sqlx::query(
                "INSERT INTO binding (id, database) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET database = excluded.database",
            )
            .bind(&database)
            .execute(&pool)
            .await?;
        }
        // The log is copied back into the file by a task of its own, as the database's is (see
        // `Store::open`), so the intake's commits never copy it while a PSP waits; the journal
        // forgets what it moved, so the file stays small.
        let checkpointed = pool.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(crate::JOURNAL_CHECKPOINT_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if checkpointed.is_closed() {
                    break;
                }
                // The journal's log only: the database's has a checkpointer of its own.
                if let Err(error) = sqlx::query("PRAGMA main.wal_checkpoint(PASSIVE)").execute(&checkpointed).await {
                    if checkpointed.is_closed() {
                        break;
                    }
                    tracing::warn!("intake journal checkpoint failed: {error}");
                }
            }
        });
        Ok(Journal { pool, path: path.to_path_buf(), attached })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many acknowledged payouts the journal file at `path` holds, not yet moved into its
    /// database (0 when there is no file), read without opening it as the intake does.
    pub async fn held(path: &Path) -> Result<i64, sqlx::Error> {
        if !path.exists() {
            return Ok(0);
        }
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=rw", path.display());
        let mut connection = <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'intents'")
                .fetch_optional(&mut connection)
                .await?;
        let held = match exists {
            Some(_) => sqlx::query_scalar("SELECT COUNT(*) FROM intents").fetch_one(&mut connection).await?,
            None => 0,
        };
        let _ = sqlx::Connection::close(connection).await;
        Ok(held)
    }

    /// Writes each of `intents` whose key the journal does not hold yet, flushed before it
    /// returns: one statement, committed on its own (one lock, one flush, one hand-off to the
    /// connection's thread) for a batch of up to [`crate::bulk::ROWS_MAX`], a transaction for
    /// more. A key repeated in the batch answers against its first use. `accepted_at`
    /// (microseconds since the epoch) is the new intents' acceptance time.
    pub async fn append(&self, intents: &[NewIntent<'_>], accepted_at: i64) -> Result<Vec<Appended>, sqlx::Error> {
        if intents.len() <= crate::bulk::ROWS_MAX {
            let mut connection = self.pool.acquire().await?;
            append_in(&mut connection, intents, accepted_at).await
        } else {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let answers = append_in(&mut tx, intents, accepted_at).await?;
            tx.commit().await?;
            Ok(answers)
        }
    }

    /// [`Journal::append`] for a batch whose keys are expected to be new everywhere, as nearly
    /// all are: one statement writes the batch unless a key is held already, in the database's
    /// idempotency records or in the journal, so that claiming a key takes no read of the
    /// database of its own (and no hand-off to another connection's thread). `None` when some
    /// key was held (or the database is not attached): nothing is answered then, and the caller
    /// claims the batch as before, looking in the database and then calling [`Journal::append`]
    /// with the same `accepted_at`, which finds the intents this call wrote as its own.
    pub async fn append_if_new(
        &self,
        intents: &[NewIntent<'_>],
        accepted_at: i64,
    ) -> Result<Option<Vec<Appended>>, sqlx::Error> {
        if !self.attached || intents.is_empty() || intents.len() > crate::bulk::ROWS_MAX {
            return Ok(None);
        }
        let batch = Batch::of(intents, accepted_at)?;
        let mut connection = self.pool.acquire().await?;
        let written = crate::bulk::execute(&mut connection, APPEND_IF_NEW, &INTENT_TYPES, &batch.rows, &[]).await?;
        if written != batch.rows.len() as u64 {
            return Ok(None);
        }
        Ok(Some(batch.answers(intents, &std::collections::HashMap::new())))
    }

    /// Forgets the intents of `moved` (payout ids the database holds durably): one statement
    /// each [`crate::bulk::ROWS_MAX`], each committed on its own (forgetting twice is harmless).
    pub async fn forget(&self, moved: &[String]) -> Result<(), sqlx::Error> {
        if moved.is_empty() {
            return Ok(());
        }
        let mut connection = self.pool.acquire().await?;
        forget_in(&mut connection, moved).await
    }

    /// The intent of `payout_id`, if the journal holds it.
    pub async fn by_payout(&self, payout_id: &str) -> Result<Option<Intent>, sqlx::Error> {
        let row = sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM intents WHERE payout_id = $1")))
            .bind(payout_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(intent).transpose()
    }

    /// The intent `tenant` accepted under `key`, if the journal holds it.
    pub async fn by_key(&self, tenant: &str, key: &str) -> Result<Option<Intent>, sqlx::Error> {
        let row = sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM intents WHERE key = $1 AND tenant = $2")))
            .bind(key)
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(intent).transpose()
    }

    /// `tenant`'s intents with a payout id after `after` accepted after `created_after`
    /// (microseconds), by payout id, at most `limit` (for a payout list).
    pub async fn of_tenant(
        &self,
        tenant: &str,
        after: &str,
        created_after: i64,
        limit: i64,
    ) -> Result<Vec<Intent>, sqlx::Error> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM intents WHERE tenant = $1 AND payout_id > $2 AND accepted_at > $3 \
             ORDER BY payout_id LIMIT $4"
        )))
        .bind(tenant)
        .bind(after)
        .bind(created_after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(intent)
        .collect()
    }

    /// The oldest intents after `after` (a `seq`), at most [`PENDING_PAGE_MAX`], in the order
    /// they were accepted.
    pub async fn pending(&self, after: i64) -> Result<Vec<Intent>, sqlx::Error> {
        sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM intents WHERE seq > $1 ORDER BY seq LIMIT $2")))
            .bind(after)
            .bind(PENDING_PAGE_MAX)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(intent)
            .collect()
    }

    /// Intents held now (for `railyard verify` and tests).
    pub async fn count(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM intents").fetch_one(&self.pool).await
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Column types of an intent row for [`crate::bulk::execute`].
const INTENT_TYPES: [&str; 8] = ["TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "BIGINT"];

/// An intent as bound: key, tenant, request hash, payout id, request, submitted by, sealed, accepted at.
type IntentRow<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, Option<&'a str>, String, i64);

/// A batch of requests as rows: the first use of each key (the only one that can be new).
struct Batch<'a> {
    first: std::collections::HashMap<(&'a str, &'a str), usize>,
    rows: Vec<IntentRow<'a>>,
}

impl<'a> Batch<'a> {
    fn of(intents: &[NewIntent<'a>], accepted_at: i64) -> Result<Batch<'a>, sqlx::Error> {
        let mut first = std::collections::HashMap::with_capacity(intents.len());
        let mut rows = Vec::with_capacity(intents.len());
        for (index, intent) in intents.iter().enumerate() {
            if let std::collections::hash_map::Entry::Vacant(entry) = first.entry((intent.tenant, intent.key)) {
                entry.insert(index);
                let sealed =
                    serde_json::to_string(intent.sealed).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
                rows.push((
                    intent.key,
                    intent.tenant,
                    intent.request_hash,
                    intent.payout_id,
                    intent.request,
                    intent.submitted_by,
                    sealed,
                    accepted_at,
                ));
            }
        }
        Ok(Batch { first, rows })
    }

    /// Each request's answer, given the (request hash, payout id) the journal holds for the keys
    /// it held already (`held`; a key not in it was written by this batch, under its first use).
    fn answers(
        &self,
        intents: &[NewIntent<'_>],
        held: &std::collections::HashMap<(String, String), (String, String)>,
    ) -> Vec<Appended> {
        let mut answers = Vec::with_capacity(intents.len());
        for (index, intent) in intents.iter().enumerate() {
            let first = self.first[&(intent.tenant, intent.key)];
            let owner = &intents[first];
            let (hash, payout_id) = match held.get(&(intent.tenant.to_string(), intent.key.to_string())) {
                Some((hash, payout_id)) => (hash.as_str(), payout_id.as_str()),
                None => (owner.request_hash, owner.payout_id),
            };
            answers.push(if payout_id == intent.payout_id && first == index {
                Appended::New
            } else {
                Appended::Existing { payout_id: payout_id.to_string(), same_request: hash == intent.request_hash }
            });
        }
        answers
    }
}

/// [`Journal::append`] on `connection`.
async fn append_in(
    connection: &mut sqlx::AnyConnection,
    intents: &[NewIntent<'_>],
    accepted_at: i64,
) -> Result<Vec<Appended>, sqlx::Error> {
    let batch = Batch::of(intents, accepted_at)?;
    let written = crate::bulk::execute(
        &mut *connection,
        "INSERT INTO intents (key, tenant, request_hash, payout_id, request, submitted_by, sealed, accepted_at) \
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, v.column8 \
         FROM ({rows}) AS v WHERE true ON CONFLICT (key, tenant) DO NOTHING",
        &INTENT_TYPES,
        &batch.rows,
        &[],
    )
    .await?;
    // Every key new, as nearly always: nothing to read back. Otherwise the journal's
    // (request hash, payout id) of each key, ours where the payout id is this batch's.
    let mut held = std::collections::HashMap::new();
    if written != batch.rows.len() as u64 {
        let keys: Vec<&str> = batch.rows.iter().map(|row| row.0).collect();
        for chunk in keys.chunks(crate::bulk::IN_MAX) {
            let chunk = crate::bulk::padded(chunk);
            let statement = AssertSqlSafe(format!(
                "SELECT tenant, key, request_hash, payout_id FROM intents WHERE key IN ({})",
                crate::bulk::placeholders(1, chunk.len())
            ));
            let mut query = sqlx::query(statement);
            for key in chunk {
                query = query.bind(key);
            }
            for row in query.fetch_all(&mut *connection).await? {
                held.insert((row.try_get(0)?, row.try_get(1)?), (row.try_get(2)?, row.try_get(3)?));
            }
        }
    }
    Ok(batch.answers(intents, &held))
}

async fn forget_in(connection: &mut sqlx::AnyConnection, moved: &[String]) -> Result<(), sqlx::Error> {
    let ids: Vec<(&str,)> = moved.iter().map(|id| (id.as_str(),)).collect();
    crate::bulk::execute(
        connection,
        "DELETE FROM intents WHERE payout_id IN (SELECT column1 FROM ({rows}) AS v)",
        &["TEXT"],
        &ids,
        &[],
    )
    .await?;
    Ok(())
}
