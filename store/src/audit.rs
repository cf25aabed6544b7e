//! The audit trail: every security-relevant action (treasury change, kill switch, liquidity move,
//! approval, rejection, screening override, vault re-key) as one row in a hash chain.
//!
//! Row `n` stores `hash = SHA-256(previous_hash, n, at, actor, action, detail)` (length-prefixed,
//! so no two different rows hash the same text) with `previous_hash` the hash of row `n - 1`; the
//! head row holds the last sequence and hash. [`verify`] recomputes the chain: an edited row no
//! longer matches its hash, a removed row leaves a gap in the sequence or a broken link, a removed
//! tail no longer reaches the head. What it cannot see is a rewrite of the whole chain from the
//! edit onwards together with the head: publish [`head`] somewhere the database's administrators
//! cannot write (`railyard audit head`) to close that too.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

use crate::{Store, now_micros};

/// Rows read per page when verifying.
pub const VERIFY_PAGE: i64 = 1_000;
/// Problems listed by one verification (the count covers all).
pub const PROBLEMS_LISTED_MAX: usize = 100;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub sequence: i64,
    /// Microseconds since the Unix epoch.
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub detail: String,
    pub hash: String,
}

/// The hash of one row, chained to the previous one.
pub fn entry_hash(previous: &str, sequence: i64, at: i64, actor: &str, action: &str, detail: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(previous.as_bytes());
    hasher.update(sequence.to_be_bytes());
    hasher.update(at.to_be_bytes());
    for field in [actor, action, detail] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Appends one action inside `transaction`: it is durable exactly when what it records is.
pub async fn append(
    transaction: &mut AnyConnection,
    actor: &str,
    action: &str,
    detail: &str,
) -> Result<AuditEntry, sqlx::Error> {
    // The head's row lock serialises appends: no gaps, no forks.
    let head = sqlx::query("UPDATE audit_head SET sequence = sequence + 1 WHERE id = 1 RETURNING sequence, hash")
        .fetch_one(&mut *transaction)
        .await?;
    let sequence: i64 = head.try_get(0)?;
    let previous: String = head.try_get(1)?;
    let at = now_micros();
    let hash = entry_hash(&previous, sequence, at, actor, action, detail);
    sqlx::query(
        "INSERT INTO audit_chain (sequence, at, actor, action, detail, previous_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(sequence)
    .bind(at)
    .bind(actor)
    .bind(action)
    .bind(detail)
    .bind(&previous)
    .bind(&hash)
    .execute(&mut *transaction)
    .await?;
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1").bind(&hash).execute(&mut *transaction).await?;
    Ok(AuditEntry { sequence, at, actor: actor.into(), action: action.into(), detail: detail.into(), hash })
}

/// Moves rows written before the chain existed (table `audit_log`, migration 4) into the chain, in
/// their order, marked `legacy`. Runs when the store opens; a no-op once they are moved.
pub(crate) async fn adopt_legacy(store: &Store) -> Result<(), sqlx::Error> {
    let mut transaction = store.begin().await?;
    let rows = sqlx::query("SELECT at, actor, change FROM audit_log ORDER BY at").fetch_all(&mut *transaction).await?;
    if rows.is_empty() {
        return Ok(());
    }
    for row in &rows {
        let at: i64 = row.try_get(0)?;
        let actor: String = row.try_get(1)?;
        let change: String = row.try_get(2)?;
        let when = chrono::DateTime::from_timestamp_micros(at).map(|at| at.to_rfc3339()).unwrap_or_default();
        append(&mut transaction, &actor, "legacy", &format!("{change} (recorded {when}, before the chain)")).await?;
    }
    sqlx::query("DELETE FROM audit_log").execute(&mut *transaction).await?;
    transaction.commit().await
}

/// The newest entries first.
pub async fn log(store: &Store, limit: i64) -> Result<Vec<AuditEntry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT sequence, at, actor, action, detail, hash FROM audit_chain ORDER BY sequence DESC LIMIT $1",
    )
    .bind(limit.clamp(1, crate::AUDIT_PAGE_MAX))
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(entry).collect()
}

fn entry(row: &sqlx::any::AnyRow) -> Result<AuditEntry, sqlx::Error> {
    Ok(AuditEntry {
        sequence: row.try_get(0)?,
        at: row.try_get(1)?,
        actor: row.try_get(2)?,
        action: row.try_get(3)?,
        detail: row.try_get(4)?,
        hash: row.try_get(5)?,
    })
}

/// The chain's head: last sequence and hash.
pub async fn head(store: &Store) -> Result<(i64, String), sqlx::Error> {
    let row = sqlx::query("SELECT sequence, hash FROM audit_head WHERE id = 1").fetch_one(store.pool()).await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// A row (or the head) that does not fit the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditProblem {
    pub sequence: i64,
    pub problem: String,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    pub entries: i64,
    pub head_sequence: i64,
    pub head_hash: String,
    pub problems: usize,
    /// The first [`PROBLEMS_LISTED_MAX`] problems.
    pub listed: Vec<AuditProblem>,
}

impl AuditReport {
    pub fn intact(&self) -> bool {
        self.problems == 0
    }
}

/// Recomputes the whole chain, page by page.
pub async fn verify(store: &Store) -> Result<AuditReport, sqlx::Error> {
    let (head_sequence, head_hash) = head(store).await?;
    let mut problems = Vec::new();
    let mut expected_sequence = 1_i64;
    let mut previous = GENESIS.to_string();
    let mut entries = 0_i64;
    let mut after = 0_i64;
    loop {
        let rows = sqlx::query(
            "SELECT sequence, at, actor, action, detail, hash, previous_hash FROM audit_chain \
             WHERE sequence > $1 ORDER BY sequence LIMIT $2",
        )
        .bind(after)
        .bind(VERIFY_PAGE)
        .fetch_all(store.pool())
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let entry = entry(row)?;
            let stored_previous: String = row.try_get(6)?;
            entries += 1;
            if entry.sequence != expected_sequence {
                problems.push(AuditProblem {
                    sequence: entry.sequence,
                    problem: format!("rows {expected_sequence} to {} are missing", entry.sequence - 1),
                });
            }
            if stored_previous != previous {
                problems.push(AuditProblem {
                    sequence: entry.sequence,
                    problem: "its link to the row before does not match that row's hash".into(),
                });
            }
            let recomputed =
                entry_hash(&stored_previous, entry.sequence, entry.at, &entry.actor, &entry.action, &entry.detail);
            if recomputed != entry.hash {
                problems.push(AuditProblem {
                    sequence: entry.sequence,
                    problem: "its content does not match its hash (edited)".into(),
                });
            }
            previous = entry.hash.clone();
            expected_sequence = entry.sequence + 1;
            after = entry.sequence;
        }
    }
    if expected_sequence - 1 != head_sequence || previous != head_hash {
        problems.push(AuditProblem {
            sequence: head_sequence,
            problem: format!(
                "the chain ends at row {} but the head says {head_sequence} (rows removed from the end, or the head edited)",
                expected_sequence - 1
            ),
        });
    }
    let count = problems.len();
    problems.truncate(PROBLEMS_LISTED_MAX);
    Ok(AuditReport { entries, head_sequence, head_hash, problems: count, listed: problems })
}
