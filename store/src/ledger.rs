//! The double-entry ledger: accounts, two-phase transfers, a hash-chained journal.
//!
//! Modelled on TigerBeetle: an account keeps four running totals (debits and credits, pending and
//! posted); a transfer moves an amount from a debit account to a credit account of the same
//! currency, either posted at once or pending (a reservation) that is later posted (possibly for
//! less) or voided, exactly once. Cross-currency movements are two transfers through FX position
//! accounts.
//!
//! The database enforces what must never happen, so no isolation level or code path can get
//! around it: a CHECK constraint keeps no-overdraft accounts from going below zero counting pending
//! debits; a unique index resolves each pending transfer at most once; amounts and totals are
//! non-negative. Every transfer takes the next global sequence number and chains its hash to the
//! previous transfer's, through a one-row journal head whose update serialises appends.
//!
//! Every function takes an open transaction so a caller can commit ledger entries together with
//! its own state (a saga step and its money move are one commit).

use railyard_core::{Currency, Money};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, AssertSqlSafe, Row};

use crate::{bulk, now_micros};

/// Which side increases an account's balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Normal {
    /// Assets: the house's nostro accounts at rails, FX positions held.
    Debit,
    /// Liabilities and revenue: what the house owes PSPs, fee income.
    Credit,
}

impl Normal {
    fn as_str(self) -> &'static str {
        match self {
            Normal::Debit => "debit",
            Normal::Credit => "credit",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSpec {
    /// Stable id, for example `psp:demo-psp:USD` or `nostro:rtp-us:USD`.
    pub id: String,
    /// `psp`, `nostro`, `fx_position`, `fee_revenue`, `suspense`, `funding` ...
    pub kind: String,
    pub currency: Currency,
    pub normal: Normal,
    /// The balance (posted, less pending on the decreasing side) may never go below zero.
    pub no_overdraft: bool,
}

/// An account's totals, in minor units of its currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub id: String,
    pub currency: Currency,
    pub normal: Normal,
    pub debits_pending: i64,
    pub debits_posted: i64,
    pub credits_pending: i64,
    pub credits_posted: i64,
}

impl Balance {
    /// Posted balance on the account's normal side.
    pub fn posted(&self) -> Money {
        let minor = match self.normal {
            Normal::Debit => self.debits_posted - self.credits_posted,
            Normal::Credit => self.credits_posted - self.debits_posted,
        };
        Money::from_minor(minor, self.currency)
    }

    /// Posted balance less pending movements away from the normal side: what can still be spent.
    pub fn available(&self) -> Money {
        let minor = match self.normal {
            Normal::Debit => self.debits_posted - self.credits_posted - self.credits_pending,
            Normal::Credit => self.credits_posted - self.debits_posted - self.debits_pending,
        };
        Money::from_minor(minor, self.currency)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferSpec {
    /// Unique id; the same id twice is refused (a retry of a committed step must not post again).
    pub id: String,
    pub debit: String,
    pub credit: String,
    pub amount: Money,
    /// A reservation to be posted or voided later.
    pub pending: bool,
    pub payout_id: Option<String>,
    pub note: String,
}

/// A transfer as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transfer {
    pub sequence: i64,
    pub id: String,
    pub debit_account: String,
    pub credit_account: String,
    pub amount: Money,
    pub kind: String,
    pub pending_id: Option<String>,
    pub payout_id: Option<String>,
    pub created_at: i64,
    pub hash: String,
}

/// Why a ledger operation was refused. The caller rolls the transaction back; nothing changes.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("account {0:?} does not exist")]
    UnknownAccount(String),
    #[error("account {account:?} is in {held}, the transfer in {wanted}")]
    Currency { account: String, held: Currency, wanted: Currency },
    #[error("amount must be greater than zero")]
    NotPositive,
    #[error("a transfer cannot debit and credit the same account {0:?}")]
    SameAccount(String),
    #[error("account {0:?} may not be overdrawn")]
    Overdraft(String),
    #[error("transfer {0:?} already exists")]
    Duplicate(String),
    #[error("pending transfer {0:?} does not exist")]
    PendingNotFound(String),
    #[error("pending transfer {0:?} is already posted or voided")]
    AlreadyResolved(String),
    #[error("posting {posted} exceeds the pending {pending}")]
    PostExceedsPending { posted: Money, pending: Money },
    #[error("account {id:?} exists with different settings")]
    AccountConflict { id: String },
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for LedgerError {
    fn from(error: sqlx::Error) -> LedgerError {
        LedgerError::Database(error)
    }
}

fn is_check_violation(error: &sqlx::Error) -> bool {
    let text = error.to_string().to_lowercase();
    text.contains("check constraint")
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    let text = error.to_string().to_lowercase();
    text.contains("unique") || text.contains("duplicate key")
}

fn currency(code: &str) -> Result<Currency, LedgerError> {
    Currency::from_code(code).map_err(|error| LedgerError::Corrupt(error.to_string()))
}

/// Creates an account, or checks that an existing one has the same settings.
pub async fn open_account(transaction: &mut AnyConnection, spec: &AccountSpec) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO accounts (id, kind, currency, normal, no_overdraft, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&spec.id)
    .bind(&spec.kind)
    .bind(spec.currency.code())
    .bind(spec.normal.as_str())
    .bind(i64::from(spec.no_overdraft))
    .bind(now_micros())
    .execute(&mut *transaction)
    .await?;
    let row = sqlx::query("SELECT kind, currency, normal, no_overdraft FROM accounts WHERE id = $1")
        .bind(&spec.id)
        .fetch_one(&mut *transaction)
        .await?;
    let same = row.try_get::<String, _>(0)? == spec.kind
        && row.try_get::<String, _>(1)? == spec.currency.code()
        && row.try_get::<String, _>(2)? == spec.normal.as_str()
        && row.try_get::<i64, _>(3)? == i64::from(spec.no_overdraft);
    if !same {
        return Err(LedgerError::AccountConflict { id: spec.id.clone() });
    }
    Ok(())
}

fn balance_from_row(row: &AnyRow) -> Result<Balance, LedgerError> {
    let normal = match row.try_get::<String, _>("normal")?.as_str() {
        "debit" => Normal::Debit,
        "credit" => Normal::Credit,
        other => return Err(LedgerError::Corrupt(format!("normal side {other:?}"))),
    };
    Ok(Balance {
        id: row.try_get("id")?,
        currency: currency(&row.try_get::<String, _>("currency")?)?,
        normal,
        debits_pending: row.try_get("debits_pending")?,
        debits_posted: row.try_get("debits_posted")?,
        credits_pending: row.try_get("credits_pending")?,
        credits_posted: row.try_get("credits_posted")?,
    })
}

const BALANCE_COLUMNS: &str = "id, currency, normal, debits_pending, debits_posted, credits_pending, credits_posted";

/// An account's totals.
pub async fn balance<'e, E>(executor: E, account: &str) -> Result<Balance, LedgerError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let row = sqlx::query(AssertSqlSafe(format!("SELECT {BALANCE_COLUMNS} FROM accounts WHERE id = $1")))
        .bind(account)
        .fetch_optional(executor)
        .await?
        .ok_or_else(|| LedgerError::UnknownAccount(account.into()))?;
    balance_from_row(&row)
}

/// Every account's totals, by id.
pub async fn balances<'e, E>(executor: E) -> Result<Vec<Balance>, LedgerError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let rows = sqlx::query(AssertSqlSafe(format!("SELECT {BALANCE_COLUMNS} FROM accounts ORDER BY id")))
        .fetch_all(executor)
        .await?;
    rows.iter().map(balance_from_row).collect()
}

/// The hash of one journal entry, chained to the previous entry's hash.
#[allow(clippy::too_many_arguments)]
pub fn entry_hash(
    previous_hash: &str,
    sequence: i64,
    id: &str,
    debit: &str,
    credit: &str,
    amount: i64,
    currency: &str,
    kind: &str,
    pending_id: Option<&str>,
    payout_id: Option<&str>,
    created_at: i64,
) -> String {
    let mut hasher = Sha256::new();
    for part in [
        previous_hash,
        &sequence.to_string(),
        id,
        debit,
        credit,
        &amount.to_string(),
        currency,
        kind,
        pending_id.unwrap_or(""),
        payout_id.unwrap_or(""),
        &created_at.to_string(),
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0x1f]);
    }
    hex::encode(hasher.finalize())
}

struct Entry<'a> {
    id: &'a str,
    debit: &'a str,
    credit: &'a str,
    amount: Money,
    kind: &'static str,
    pending_id: Option<&'a str>,
    payout_id: Option<&'a str>,
    note: &'a str,
}

/// Takes the journal head's row lock before any account total is touched. Every posting ends at
/// the head (see [`append`]); taking it first means every ledger writer locks in one order (head,
/// then accounts), so two transactions that post more than once cannot deadlock on PostgreSQL.
/// On SQLite the transaction holds the database's write lock already and this is skipped.
/// Rows another module locks in a transaction that also writes the ledger are locked after it
/// (see `usage`), so the one order holds for them too.
pub async fn lock_journal(transaction: &mut AnyConnection) -> Result<(), LedgerError> {
    if crate::dialect_of(transaction) == crate::Dialect::Sqlite {
        // The transaction holds the database's one write lock already (BEGIN IMMEDIATE).
        return Ok(());
    }
    sqlx::query("UPDATE journal_head SET sequence = sequence WHERE id = 1").execute(&mut *transaction).await?;
    Ok(())
}

/// Appends one entry to the journal: next sequence, chained hash.
async fn append(transaction: &mut AnyConnection, entry: Entry<'_>) -> Result<Transfer, LedgerError> {
    // Taking the head's row lock serialises appends, so sequence and hash chain have no gaps or forks.
    let head = sqlx::query("UPDATE journal_head SET sequence = sequence + 1 WHERE id = 1 RETURNING sequence, hash")
        .fetch_one(&mut *transaction)
        .await?;
    let sequence: i64 = head.try_get(0)?;
    let previous_hash: String = head.try_get(1)?;
    let created_at = now_micros();
    let currency = entry.amount.currency().code();
    let hash = entry_hash(
        &previous_hash,
        sequence,
        entry.id,
        entry.debit,
        entry.credit,
        entry.amount.minor_units(),
        currency,
        entry.kind,
        entry.pending_id,
        entry.payout_id,
        created_at,
    );
    let inserted = sqlx::query(
        "INSERT INTO transfers (sequence, id, debit_account, credit_account, amount, currency, kind, pending_id, \
         payout_id, note, created_at, previous_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(sequence)
    .bind(entry.id)
    .bind(entry.debit)
    .bind(entry.credit)
    .bind(entry.amount.minor_units())
    .bind(currency)
    .bind(entry.kind)
    .bind(entry.pending_id)
    .bind(entry.payout_id)
    .bind(entry.note)
    .bind(created_at)
    .bind(&previous_hash)
    .bind(&hash)
    .execute(&mut *transaction)
    .await;
    if let Err(error) = inserted {
        return Err(if is_unique_violation(&error) {
            let text = error.to_string();
            match entry.pending_id {
                Some(pending) if text.contains("pending_id") || text.contains("resolved_once") => {
                    LedgerError::AlreadyResolved(pending.into())
                }
                _ => LedgerError::Duplicate(entry.id.into()),
            }
        } else {
            LedgerError::Database(error)
        });
    }
    sqlx::query("UPDATE journal_head SET hash = $1 WHERE id = 1").bind(&hash).execute(&mut *transaction).await?;
    Ok(Transfer {
        sequence,
        id: entry.id.into(),
        debit_account: entry.debit.into(),
        credit_account: entry.credit.into(),
        amount: entry.amount,
        kind: entry.kind.into(),
        pending_id: entry.pending_id.map(str::to_string),
        payout_id: entry.payout_id.map(str::to_string),
        created_at,
        hash,
    })
}

/// Adds to one account's totals (one or two of them, in one statement); a no-overdraft violation
/// comes back as [`LedgerError::Overdraft`].
async fn adjust(
    transaction: &mut AnyConnection,
    account: &str,
    changes: &[(&'static str, i64)],
) -> Result<(), LedgerError> {
    // The columns are constants chosen by this module, never input.
    let sets: Vec<String> = changes
        .iter()
        .enumerate()
        .map(|(index, (column, _))| format!("{column} = {column} + ${}", index + 1))
        .collect();
    let statement = AssertSqlSafe(format!("UPDATE accounts SET {} WHERE id = ${}", sets.join(", "), changes.len() + 1));
    let mut query = sqlx::query(statement);
    for (_, delta) in changes {
        query = query.bind(*delta);
    }
    match query.bind(account).execute(&mut *transaction).await {
        Ok(result) if result.rows_affected() == 1 => Ok(()),
        Ok(_) => Err(LedgerError::UnknownAccount(account.into())),
        Err(error) if is_check_violation(&error) => Err(LedgerError::Overdraft(account.into())),
        Err(error) => Err(LedgerError::Database(error)),
    }
}

/// Adds `deltas` (debits pending, debits posted, credits pending, credits posted) to each account,
/// in `UPDATE ... FROM (VALUES ...)` statements of up to 16 accounts.
async fn adjust_many(transaction: &mut AnyConnection, changes: &[(&str, [i64; 4])]) -> Result<(), LedgerError> {
    if changes.is_empty() {
        return Ok(());
    }
    let values: Vec<(&str, i64, i64, i64, i64)> =
        changes.iter().map(|(account, [a, b, c, d])| (*account, *a, *b, *c, *d)).collect();
    let accounts = || changes.iter().map(|(account, _)| *account).collect::<Vec<_>>().join(", ");
    let updated = bulk::execute(
        transaction,
        "UPDATE accounts SET debits_pending = accounts.debits_pending + v.column2, \
         debits_posted = accounts.debits_posted + v.column3, credits_pending = accounts.credits_pending + v.column4, \
         credits_posted = accounts.credits_posted + v.column5 FROM ({rows}) AS v WHERE accounts.id = v.column1",
        &["TEXT", "BIGINT", "BIGINT", "BIGINT", "BIGINT"],
        &values,
        &[],
    )
    .await;
    match updated {
        Ok(rows) if rows == changes.len() as u64 => Ok(()),
        Ok(_) => Err(LedgerError::UnknownAccount(accounts())),
        Err(error) if is_check_violation(&error) => Err(LedgerError::Overdraft(accounts())),
        Err(error) => Err(LedgerError::Database(error)),
    }
}

/// Checks both accounts and that the transfer's id is new, in one read.
async fn check_accounts(transaction: &mut AnyConnection, spec: &TransferSpec) -> Result<(), LedgerError> {
    if !spec.amount.is_positive() {
        return Err(LedgerError::NotPositive);
    }
    if spec.debit == spec.credit {
        return Err(LedgerError::SameAccount(spec.debit.clone()));
    }
    let rows = sqlx::query(
        "SELECT id, currency, (SELECT COUNT(*) FROM transfers WHERE id = $3) FROM accounts WHERE id = $1 OR id = $2",
    )
    .bind(&spec.debit)
    .bind(&spec.credit)
    .bind(&spec.id)
    .fetch_all(&mut *transaction)
    .await?;
    for account in [&spec.debit, &spec.credit] {
        let row = rows
            .iter()
            .find(|row| row.try_get::<String, _>(0).is_ok_and(|id| id == *account))
            .ok_or_else(|| LedgerError::UnknownAccount(account.clone()))?;
        let held = currency(&row.try_get::<String, _>(1)?)?;
        if held != spec.amount.currency() {
            return Err(LedgerError::Currency { account: account.clone(), held, wanted: spec.amount.currency() });
        }
    }
    // Refuse a repeated id before touching any total: a caller that treats Duplicate as "already
    // done" and commits must not commit half a transfer. (SQLite keeps a transaction usable after a
    // failed statement, so the unique index alone would leave the totals changed.)
    if rows.first().map(|row| row.try_get::<i64, _>(2)).transpose()?.unwrap_or(0) > 0 {
        return Err(LedgerError::Duplicate(spec.id.clone()));
    }
    Ok(())
}

/// Records a transfer: posted at once, or pending (a reservation).
pub async fn transfer(transaction: &mut AnyConnection, spec: &TransferSpec) -> Result<Transfer, LedgerError> {
    lock_journal(transaction).await?;
    check_accounts(transaction, spec).await?;
    let amount = spec.amount.minor_units();
    let (debit_column, credit_column, kind) = if spec.pending {
        ("debits_pending", "credits_pending", "pending")
    } else {
        ("debits_posted", "credits_posted", "posted")
    };
    // Credit first: a transfer between two no-overdraft accounts checks the debit side last.
    adjust(transaction, &spec.credit, &[(credit_column, amount)]).await?;
    adjust(transaction, &spec.debit, &[(debit_column, amount)]).await?;
    append(
        transaction,
        Entry {
            id: &spec.id,
            debit: &spec.debit,
            credit: &spec.credit,
            amount: spec.amount,
            kind,
            pending_id: None,
            payout_id: spec.payout_id.as_deref(),
            note: &spec.note,
        },
    )
    .await
}

/// A pending transfer and whether it was resolved already, in one read.
async fn pending_transfer(transaction: &mut AnyConnection, pending_id: &str) -> Result<Transfer, LedgerError> {
    let row = sqlx::query(
        "SELECT sequence, id, debit_account, credit_account, amount, currency, kind, pending_id, payout_id, created_at, \
         hash, (SELECT COUNT(*) FROM transfers r WHERE r.pending_id = $1) AS resolved \
         FROM transfers WHERE id = $1 AND kind = 'pending'",
    )
    .bind(pending_id)
    .fetch_optional(&mut *transaction)
    .await?
    .ok_or_else(|| LedgerError::PendingNotFound(pending_id.into()))?;
    if row.try_get::<i64, _>("resolved")? > 0 {
        return Err(LedgerError::AlreadyResolved(pending_id.into()));
    }
    Ok(Transfer {
        sequence: row.try_get("sequence")?,
        id: row.try_get("id")?,
        debit_account: row.try_get("debit_account")?,
        credit_account: row.try_get("credit_account")?,
        amount: Money::from_minor(row.try_get("amount")?, currency(&row.try_get::<String, _>("currency")?)?),
        kind: row.try_get("kind")?,
        pending_id: row.try_get("pending_id")?,
        payout_id: row.try_get("payout_id")?,
        created_at: row.try_get("created_at")?,
        hash: row.try_get("hash")?,
    })
}

/// Posts a pending transfer, for its full amount or less (the rest is released).
pub async fn post_pending(
    transaction: &mut AnyConnection,
    id: &str,
    pending_id: &str,
    amount: Option<Money>,
) -> Result<Transfer, LedgerError> {
    lock_journal(transaction).await?;
    let pending = pending_transfer(transaction, pending_id).await?;
    let posted = amount.unwrap_or(pending.amount);
    if posted.currency() != pending.amount.currency() {
        return Err(LedgerError::Currency {
            account: pending.debit_account,
            held: pending.amount.currency(),
            wanted: posted.currency(),
        });
    }
    if !posted.is_positive() {
        return Err(LedgerError::NotPositive);
    }
    if posted.minor_units() > pending.amount.minor_units() {
        return Err(LedgerError::PostExceedsPending { posted, pending: pending.amount });
    }
    let reserved = pending.amount.minor_units();
    adjust(
        transaction,
        &pending.credit_account,
        &[("credits_pending", -reserved), ("credits_posted", posted.minor_units())],
    )
    .await?;
    adjust(
        transaction,
        &pending.debit_account,
        &[("debits_pending", -reserved), ("debits_posted", posted.minor_units())],
    )
    .await?;
    append(
        transaction,
        Entry {
            id,
            debit: &pending.debit_account,
            credit: &pending.credit_account,
            amount: posted,
            kind: "post_pending",
            pending_id: Some(pending_id),
            payout_id: pending.payout_id.as_deref(),
            note: "",
        },
    )
    .await
}

/// Voids a pending transfer: the reservation is released, nothing moves.
pub async fn void_pending(
    transaction: &mut AnyConnection,
    id: &str,
    pending_id: &str,
) -> Result<Transfer, LedgerError> {
    lock_journal(transaction).await?;
    let pending = pending_transfer(transaction, pending_id).await?;
    let reserved = pending.amount.minor_units();
    adjust(transaction, &pending.credit_account, &[("credits_pending", -reserved)]).await?;
    adjust(transaction, &pending.debit_account, &[("debits_pending", -reserved)]).await?;
    append(
        transaction,
        Entry {
            id,
            debit: &pending.debit_account,
            credit: &pending.credit_account,
            amount: pending.amount,
            kind: "void_pending",
            pending_id: Some(pending_id),
            payout_id: pending.payout_id.as_deref(),
            note: "",
        },
    )
    .await
}

/// What one entry of [`append_groups`] records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEntryKind {
    /// A reservation, to be posted or voided later.
    Pending,
    /// Posted at once.
    Posted,
    /// Posts the pending transfer `pending_id` for its full amount (the entry's accounts and
    /// amount must be the pending transfer's).
    PostPending { pending_id: String },
}

/// One transfer of a group given to [`append_groups`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub id: String,
    pub debit: String,
    pub credit: String,
    pub amount: Money,
    pub kind: GroupEntryKind,
    pub payout_id: Option<String>,
    pub note: String,
}

/// One account's totals while [`append_groups`] works through its groups.
#[derive(Debug, Clone, Copy)]
struct Totals {
    currency: Currency,
    normal: Normal,
    no_overdraft: bool,
    debits_pending: i64,
    debits_posted: i64,
    credits_pending: i64,
    credits_posted: i64,
}

impl Totals {
    /// The database's CHECK constraints on an account, as arithmetic.
    fn valid(&self) -> bool {
        let non_negative = self.debits_pending >= 0
            && self.debits_posted >= 0
            && self.credits_pending >= 0
            && self.credits_posted >= 0;
        let covered = !self.no_overdraft
            || match self.normal {
                Normal::Credit => self.credits_posted - self.debits_posted - self.debits_pending >= 0,
                Normal::Debit => self.debits_posted - self.credits_posted - self.credits_pending >= 0,
            };
        non_negative && covered
    }
}

/// A transfer as [`append_groups`] reads it back: id, debit and credit accounts, amount in minor
/// units, currency, kind, and the pending transfer it resolves.
type FoundTransfer = (String, String, String, i64, String, String, Option<String>);

/// Appends many transfers in one go, in groups that each go in whole or not at all (a payout's
/// reservation and its rail leg's liquidity, say). Each group is checked against the totals the
/// groups before it leave (accounts exist, one currency, a positive amount, two accounts,
/// no-overdraft, a new id, a pending transfer posted once and exactly), and a group that fails is
/// left out with its reason while the others go in. Returns one result per group, in order.
///
/// The same rows as [`transfer`] and [`post_pending`] one after another (sequence numbers in
/// order, hashes chained), in five statements whatever the count (on PostgreSQL a sixth locks the
/// head after the first): one read of the transfers the entries name (pending ones to post, ids
/// taken), one of the accounts with the journal's head, one insert of every transfer, one update of every
/// account, one of the head. The
/// database's constraints still hold the line: if one fires anyway, the statement fails and the
/// caller must abandon the transaction.
pub async fn append_groups(
    transaction: &mut AnyConnection,
    groups: &[Vec<GroupEntry>],
) -> Result<Vec<Result<(), LedgerError>>, LedgerError> {
    use std::collections::{BTreeMap, BTreeSet};
    let entries = || groups.iter().flatten();
    let pending_ids: BTreeSet<&str> = entries()
        .filter_map(|entry| match &entry.kind {
            GroupEntryKind::PostPending { pending_id } => Some(pending_id.as_str()),
            _ => None,
        })
        .collect();
    // In one read: the pending transfers to post, which of them something resolved already, and
    // which of the new ids are taken. Each id looked up says whether it names a pending transfer
    // to post (1): only those are probed as `pending_id`, the new ids by `id` alone; a step
    // without posts (a reservation) reads by `id` only.
    let ids: BTreeSet<&str> = entries().map(|entry| entry.id.as_str()).collect();
    let looked_up: Vec<(&str, i64)> =
        ids.union(&pending_ids).map(|id| (*id, i64::from(pending_ids.contains(id)))).collect();
    let mut pending: BTreeMap<String, (String, String, Money)> = BTreeMap::new();
    let mut resolved: BTreeSet<String> = BTreeSet::new();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let dialect = crate::dialect_of(transaction);
    let resolving = if pending_ids.is_empty() {
        String::new()
    } else {
        format!(" OR pending_id {}", bulk::in_rows(dialect, "(SELECT column1 FROM v WHERE column2 = 1) AS p"))
    };
    // On SQLite the transfers found come back as one JSON array a statement, not a row each: a
    // completion reads two rows a payout, and each row returned costs a hand-off from SQLite's
    // worker thread and a conversion through the `Any` driver. Inside the one writer's hold that
    // was ~12 µs a row, against ~3 µs as JSON. PostgreSQL sends rows cheaply and its CPU is the
    // scarce one there: building the JSON made its runs slower (BENCHMARKS.md, "The ledger's read
    // as one value").
    let columns = "id, debit_account, credit_account, amount, currency, kind, pending_id";
    let selected = match dialect {
        crate::Dialect::Sqlite => format!("json_group_array(json_array({columns}))"),
        crate::Dialect::Postgres => columns.to_string(),
    };
    let found = bulk::fetch_all(
        transaction,
        &format!(
            "WITH v AS ({{rows}}) SELECT {selected} FROM transfers WHERE id {in_v}{resolving}",
            in_v = bulk::in_rows(dialect, "v")
        ),
        &["TEXT", "BIGINT"],
        &looked_up,
        &[],
    )
    .await?;
    let mut transfers: Vec<FoundTransfer> = Vec::new();
    for row in found {
        match dialect {
            crate::Dialect::Sqlite => {
                let list: String = row.try_get(0)?;
                transfers.extend(
                    serde_json::from_str::<Vec<FoundTransfer>>(&list)
                        .map_err(|error| LedgerError::Corrupt(format!("the transfers read back: {error}")))?,
                );
            }
            crate::Dialect::Postgres => transfers.push((
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
                row.try_get(4)?,
                row.try_get(5)?,
                row.try_get(6)?,
            )),
        }
    }
    for (id, debit, credit, amount, code, kind, resolves) in transfers {
        if kind == "pending" && pending_ids.contains(id.as_str()) {
            pending.insert(id.clone(), (debit, credit, Money::from_minor(amount, currency(&code)?)));
        }
        if let Some(resolves) = resolves
            && pending_ids.contains(resolves.as_str())
        {
            resolved.insert(resolves);
        }
        if ids.contains(id.as_str()) {
            taken.insert(id);
        }
    }
    // Ledger writers lock the head before any account (see `lock_journal`); after it the totals
    // read below cannot change under this transaction on PostgreSQL either. The transfers read
    // above need no lock: a pending transfer does not change once written, and should another
    // transaction resolve one, or take an id, between that read and this append (two engines on
    // one payout's step, which leases exclude), the unique indexes refuse the insert below.
    // Every writer waits for the head, so it is held for as few statements as can be.
    lock_journal(transaction).await?;
    // Every account the groups touch, with its totals now, and the journal's head (locked above on
    // PostgreSQL; SQLite's one write lock is held).
    let account_ids: Vec<(&str,)> = entries()
        .flat_map(|entry| [entry.debit.as_str(), entry.credit.as_str()])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|id| (id,))
        .collect();
    let mut totals: BTreeMap<String, Totals> = BTreeMap::new();
    let mut head: Option<(i64, String)> = None;
    let rows = bulk::fetch_all(
        transaction,
        &format!(
            "WITH v AS ({{rows}}) SELECT id, currency, normal, no_overdraft, debits_pending, debits_posted, \
             credits_pending, credits_posted, (SELECT sequence FROM journal_head WHERE id = 1), \
             (SELECT hash FROM journal_head WHERE id = 1) FROM accounts WHERE id {}",
            bulk::in_rows(dialect, "v")
        ),
        &["TEXT"],
        &account_ids,
        &[],
    )
    .await?;
    for row in rows {
        let normal = match row.try_get::<String, _>(2)?.as_str() {
            "debit" => Normal::Debit,
            "credit" => Normal::Credit,
            other => return Err(LedgerError::Corrupt(format!("normal side {other:?}"))),
        };
        totals.insert(
            row.try_get(0)?,
            Totals {
                currency: currency(&row.try_get::<String, _>(1)?)?,
                normal,
                no_overdraft: row.try_get::<i64, _>(3)? != 0,
                debits_pending: row.try_get(4)?,
                debits_posted: row.try_get(5)?,
                credits_pending: row.try_get(6)?,
                credits_posted: row.try_get(7)?,
            },
        );
        head = Some((row.try_get(8)?, row.try_get(9)?));
    }
    // Each group against the totals the groups before it leave: applied in place, and a group
    // refused puts back the totals of the accounts it touched (a copy of every account for every
    // group would cost, inside the one writer's hold, the group count times the account count).
    let before = totals.clone();
    let mut results = Vec::with_capacity(groups.len());
    let mut accepted: Vec<&GroupEntry> = Vec::new();
    let mut touched: Vec<(&str, Totals)> = Vec::new();
    for group in groups {
        touched.clear();
        let mut seen: Vec<&str> = Vec::new();
        let outcome = group.iter().try_for_each(|entry| {
            for account in [entry.debit.as_str(), entry.credit.as_str()] {
                if let Some(was) = totals.get(account)
                    && !touched.iter().any(|(id, _)| *id == account)
                {
                    touched.push((account, *was));
                }
            }
            apply_entry(&mut totals, entry, &pending, &resolved, &taken, &seen)?;
            seen.push(entry.id.as_str());
            if let GroupEntryKind::PostPending { pending_id } = &entry.kind {
                seen.push(pending_id.as_str());
            }
            Ok(())
        });
        match outcome {
            Ok(()) => {
                for entry in group {
                    taken.insert(entry.id.clone());
                    if let GroupEntryKind::PostPending { pending_id } = &entry.kind {
                        resolved.insert(pending_id.clone());
                    }
                    accepted.push(entry);
                }
                results.push(Ok(()));
            }
            Err(error) => {
                for (id, was) in &touched {
                    if let Some(totals) = totals.get_mut(*id) {
                        *totals = *was;
                    }
                }
                results.push(Err(error));
            }
        }
    }
    if accepted.is_empty() {
        return Ok(results);
    }
    // The journal: consecutive sequence numbers after the head's, each hash chained to the one
    // before.
    let (head_sequence, mut previous_hash) =
        head.ok_or_else(|| LedgerError::Corrupt("accepted entries without their accounts".into()))?;
    let created_at = now_micros();
    let mut rows = Vec::with_capacity(accepted.len());
    let mut last = head_sequence;
    for entry in &accepted {
        last += 1;
        let sequence = last;
        let (kind, pending_id) = match &entry.kind {
            GroupEntryKind::Pending => ("pending", None),
            GroupEntryKind::Posted => ("posted", None),
            GroupEntryKind::PostPending { pending_id } => ("post_pending", Some(pending_id.as_str())),
        };
        let hash = entry_hash(
            &previous_hash,
            sequence,
            &entry.id,
            &entry.debit,
            &entry.credit,
            entry.amount.minor_units(),
            entry.amount.currency().code(),
            kind,
            pending_id,
            entry.payout_id.as_deref(),
            created_at,
        );
        rows.push((sequence, *entry, kind, pending_id, previous_hash, hash.clone()));
        previous_hash = hash;
    }
    // Every row in one statement (see `bulk`).
    let columns =
        ["BIGINT", "TEXT", "TEXT", "TEXT", "BIGINT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "BIGINT", "TEXT", "TEXT"];
    let values: Vec<_> = rows
        .iter()
        .map(|(sequence, entry, kind, pending_id, previous, hash)| {
            (
                sequence,
                &entry.id,
                &entry.debit,
                &entry.credit,
                entry.amount.minor_units(),
                entry.amount.currency().code(),
                kind,
                pending_id,
                entry.payout_id.as_deref(),
                &entry.note,
                created_at,
                previous,
                hash,
            )
        })
        .collect();
    bulk::execute(
        transaction,
        "INSERT INTO transfers (sequence, id, debit_account, credit_account, amount, currency, kind, pending_id, \
         payout_id, note, created_at, previous_hash, hash) {rows}",
        &columns,
        &values,
        &[],
    )
    .await?;
    // Each account once, by the sum of what the accepted groups moved, all in a few statements.
    let mut changed: Vec<(&str, [i64; 4])> = Vec::new();
    for (id, after) in &totals {
        let Some(was) = before.get(id) else { continue };
        let deltas = [
            after.debits_pending - was.debits_pending,
            after.debits_posted - was.debits_posted,
            after.credits_pending - was.credits_pending,
            after.credits_posted - was.credits_posted,
        ];
        if deltas.iter().any(|delta| *delta != 0) {
            changed.push((id.as_str(), deltas));
        }
    }
    adjust_many(transaction, &changed).await?;
    sqlx::query("UPDATE journal_head SET sequence = $1, hash = $2 WHERE id = 1")
        .bind(last)
        .bind(&previous_hash)
        .execute(&mut *transaction)
        .await?;
    Ok(results)
}

/// Checks one entry against `working` and applies it there (on error, possibly half: the caller
/// puts back what the entry's group touched).
fn apply_entry(
    working: &mut std::collections::BTreeMap<String, Totals>,
    entry: &GroupEntry,
    pending: &std::collections::BTreeMap<String, (String, String, Money)>,
    resolved: &std::collections::BTreeSet<String>,
    taken: &std::collections::BTreeSet<String>,
    earlier_in_group: &[&str],
) -> Result<(), LedgerError> {
    if !entry.amount.is_positive() {
        return Err(LedgerError::NotPositive);
    }
    if entry.debit == entry.credit {
        return Err(LedgerError::SameAccount(entry.debit.clone()));
    }
    if taken.contains(&entry.id) || earlier_in_group.contains(&entry.id.as_str()) {
        return Err(LedgerError::Duplicate(entry.id.clone()));
    }
    for account in [&entry.debit, &entry.credit] {
        let held = working.get(account).ok_or_else(|| LedgerError::UnknownAccount(account.clone()))?.currency;
        if held != entry.amount.currency() {
            return Err(LedgerError::Currency { account: account.clone(), held, wanted: entry.amount.currency() });
        }
    }
    let amount = entry.amount.minor_units();
    // (pending, posted) change on each side.
    let (pending_delta, posted_delta) = match &entry.kind {
        GroupEntryKind::Pending => (amount, 0),
        GroupEntryKind::Posted => (0, amount),
        GroupEntryKind::PostPending { pending_id } => {
            if resolved.contains(pending_id) || earlier_in_group.contains(&pending_id.as_str()) {
                return Err(LedgerError::AlreadyResolved(pending_id.clone()));
            }
            let (debit, credit, reserved) =
                pending.get(pending_id).ok_or_else(|| LedgerError::PendingNotFound(pending_id.clone()))?;
            if *debit != entry.debit || *credit != entry.credit || *reserved != entry.amount {
                return Err(LedgerError::Corrupt(format!(
                    "posting {} does not match pending transfer {pending_id}",
                    entry.id
                )));
            }
            (-amount, amount)
        }
    };
    let overflow = || LedgerError::Corrupt("account total overflows".into());
    // Credit first, as `transfer` does: the debit side is checked last.
    for (account, credit_side) in [(&entry.credit, true), (&entry.debit, false)] {
        let totals = working.get_mut(account).ok_or_else(|| LedgerError::UnknownAccount(account.clone()))?;
        let (pending, posted) = if credit_side {
            (&mut totals.credits_pending, &mut totals.credits_posted)
        } else {
            (&mut totals.debits_pending, &mut totals.debits_posted)
        };
        *pending = pending.checked_add(pending_delta).ok_or_else(overflow)?;
        *posted = posted.checked_add(posted_delta).ok_or_else(overflow)?;
        if !totals.valid() {
            return Err(LedgerError::Overdraft(account.clone()));
        }
    }
    Ok(())
}
