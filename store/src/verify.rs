//! `railyard verify`: every invariant of the store, checked from the data alone, each with a count
//! of what was checked and of its violations.

use std::collections::{BTreeMap, HashMap};

use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::Row;

use crate::Store;
use crate::ledger::entry_hash;

/// Details kept per invariant; the count of violations is always exact.
pub const DETAILS_MAX: usize = 20;

/// One invariant's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invariant {
    pub name: &'static str,
    pub description: &'static str,
    pub checked: u64,
    pub violations: u64,
    /// The first few violations, in words.
    pub details: Vec<String>,
}

impl Invariant {
    fn new(name: &'static str, description: &'static str) -> Invariant {
        Invariant { name, description, checked: 0, violations: 0, details: Vec::new() }
    }

    fn check(&mut self, ok: bool, detail: impl FnOnce() -> String) {
        self.checked += 1;
        if !ok {
            self.violations += 1;
            if self.details.len() < DETAILS_MAX {
                self.details.push(detail());
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub invariants: Vec<Invariant>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.invariants.iter().all(|invariant| invariant.violations == 0)
    }

    pub fn get(&self, name: &str) -> Option<&Invariant> {
        self.invariants.iter().find(|invariant| invariant.name == name)
    }
}

#[derive(Default, Clone, Copy)]
struct Totals {
    debits_pending: i64,
    debits_posted: i64,
    credits_pending: i64,
    credits_posted: i64,
}

struct PendingEntry {
    debit: String,
    credit: String,
    amount: i64,
    resolutions: u32,
}

/// Checks every invariant. Reads the journal as a stream, so memory grows with accounts and open
/// reservations, not with history.
pub async fn verify(store: &Store) -> Result<Report, sqlx::Error> {
    let mut balanced = Invariant::new("ledger_balanced", "per currency, posted and pending debits equal credits");
    let mut totals_match =
        Invariant::new("totals_match_journal", "every account's totals equal the sum of its journal entries");
    let mut overdraft = Invariant::new("no_overdraft", "no-overdraft accounts are not below zero, counting pending");
    let mut resolved_once =
        Invariant::new("pending_resolved_at_most_once", "each reservation is posted or voided at most once");
    let mut within_pending = Invariant::new("posted_within_pending", "a posting never exceeds its reservation");
    let mut currency = Invariant::new("currency_consistent", "a transfer's currency is both accounts' currency");
    let mut sequence = Invariant::new("sequence_contiguous", "journal sequence numbers run 1, 2, 3 ... with no gap");
    let mut chain = Invariant::new("hash_chain_intact", "each entry's hash covers it and the previous entry's hash");
    // No index on `payout_id` (migration 16): a payout's transfers are found as the range of ids
    // that start with its id.
    let mut carries_payout =
        Invariant::new("transfer_ids_carry_payout", "a payout's transfer ids start with the payout's id and a colon");

    let accounts = crate::ledger::balances(store.pool()).await.map_err(|error| match error {
        crate::ledger::LedgerError::Database(error) => error,
        other => sqlx::Error::Protocol(other.to_string()),
    })?;
    let flags: HashMap<String, i64> = sqlx::query("SELECT id, no_overdraft FROM accounts")
        .fetch_all(store.pool())
        .await?
        .iter()
        .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?)))
        .collect::<Result<_, sqlx::Error>>()?;
    let account_currency: HashMap<&str, &str> =
        accounts.iter().map(|account| (account.id.as_str(), account.currency.code())).collect();

    let mut recomputed: HashMap<String, Totals> = HashMap::new();
    let mut pendings: HashMap<String, PendingEntry> = HashMap::new();
    let mut expected_sequence = 1_i64;
    let mut previous_hash = "0".repeat(64);
    let mut rows = sqlx::query(
        "SELECT sequence, id, debit_account, credit_account, amount, currency, kind, pending_id, payout_id, created_at, \
         previous_hash, hash FROM transfers ORDER BY sequence",
    )
    .fetch(store.pool());
    while let Some(row) = rows.try_next().await? {
        let number: i64 = row.try_get("sequence")?;
        let id: String = row.try_get("id")?;
        let debit: String = row.try_get("debit_account")?;
        let credit: String = row.try_get("credit_account")?;
        let amount: i64 = row.try_get("amount")?;
        let code: String = row.try_get("currency")?;
        let kind: String = row.try_get("kind")?;
        let pending_id: Option<String> = row.try_get("pending_id")?;
        let payout_id: Option<String> = row.try_get("payout_id")?;
        let created_at: i64 = row.try_get("created_at")?;
        let stored_previous: String = row.try_get("previous_hash")?;
        let hash: String = row.try_get("hash")?;

        sequence
            .check(number == expected_sequence, || format!("expected sequence {expected_sequence}, found {number}"));
        expected_sequence = number + 1;
        let computed = entry_hash(
            &previous_hash,
            number,
            &id,
            &debit,
            &credit,
            amount,
            &code,
            &kind,
            pending_id.as_deref(),
            payout_id.as_deref(),
            created_at,
        );
        chain.check(stored_previous == previous_hash && computed == hash, || {
            format!("entry {number} ({id}) does not chain: its hash or its link to entry {} is wrong", number - 1)
        });
        previous_hash = hash;
        if let Some(payout) = &payout_id {
            carries_payout.check(id.strip_prefix(payout.as_str()).is_some_and(|rest| rest.starts_with(':')), || {
                format!("transfer {id} of payout {payout} does not start with the payout's id")
            });
        }
        currency.check(
            account_currency.get(debit.as_str()) == Some(&code.as_str())
                && account_currency.get(credit.as_str()) == Some(&code.as_str()),
            || format!("transfer {id} in {code} between {debit} and {credit}"),
        );
        match kind.as_str() {
            "posted" => {
                recomputed.entry(debit).or_default().debits_posted += amount;
                recomputed.entry(credit).or_default().credits_posted += amount;
            }
            "pending" => {
                recomputed.entry(debit.clone()).or_default().debits_pending += amount;
                recomputed.entry(credit.clone()).or_default().credits_pending += amount;
                pendings.insert(id, PendingEntry { debit, credit, amount, resolutions: 0 });
            }
            "post_pending" | "void_pending" => {
                let Some(pending) = pending_id.as_ref().and_then(|pending| pendings.get_mut(pending)) else {
                    resolved_once.check(false, || format!("{id} resolves unknown reservation {pending_id:?}"));
                    continue;
                };
                pending.resolutions += 1;
                let reserved = pending.amount;
                let (pending_debit, pending_credit) = (pending.debit.clone(), pending.credit.clone());
                let resolutions = pending.resolutions;
                resolved_once
                    .check(resolutions == 1, || format!("reservation {pending_id:?} resolved {resolutions} times"));
                if resolutions == 1 {
                    let debit_totals = recomputed.entry(pending_debit).or_default();
                    debit_totals.debits_pending -= reserved;
                    if kind == "post_pending" {
                        debit_totals.debits_posted += amount;
                    }
                    let credit_totals = recomputed.entry(pending_credit).or_default();
                    credit_totals.credits_pending -= reserved;
                    if kind == "post_pending" {
                        credit_totals.credits_posted += amount;
                    }
                }
                if kind == "post_pending" {
                    within_pending
                        .check(amount <= reserved, || format!("{id} posts {amount} of a {reserved} reservation"));
                }
            }
            other => currency.check(false, || format!("transfer {id} has unknown kind {other:?}")),
        }
    }

    let mut per_currency: BTreeMap<&str, Totals> = BTreeMap::new();
    for account in &accounts {
        let entry = per_currency.entry(account.currency.code()).or_default();
        entry.debits_pending += account.debits_pending;
        entry.debits_posted += account.debits_posted;
        entry.credits_pending += account.credits_pending;
        entry.credits_posted += account.credits_posted;
        let expected = recomputed.get(&account.id).copied().unwrap_or_default();
        totals_match.check(
            (expected.debits_pending, expected.debits_posted, expected.credits_pending, expected.credits_posted)
                == (account.debits_pending, account.debits_posted, account.credits_pending, account.credits_posted),
            || format!("account {} totals differ from its journal", account.id),
        );
        if flags.get(&account.id).copied().unwrap_or(0) == 1 {
            overdraft.check(!account.available().is_negative(), || {
                format!("account {} is at {} available", account.id, account.available())
            });
        }
    }
    for (code, totals) in per_currency {
        balanced.check(
            totals.debits_posted == totals.credits_posted && totals.debits_pending == totals.credits_pending,
            || {
                format!(
                    "{code}: posted debits {} credits {}, pending debits {} credits {}",
                    totals.debits_posted, totals.credits_posted, totals.debits_pending, totals.credits_pending
                )
            },
        );
    }
    let mut in_doubt = Invariant::new("in_doubt_has_reason", "every payout in doubt says why");
    let mut settled = Invariant::new(
        "reservation_matches_outcome",
        "a completed payout's reservation is posted, a failed payout's reservation is not",
    );
    let payouts = sqlx::query(
        "SELECT p.id, p.state, p.reason, p.reservation,          (SELECT COUNT(*) FROM transfers t WHERE t.pending_id = p.reservation AND t.kind = 'post_pending') AS posted          FROM payouts p WHERE p.state IN ('completed', 'failed', 'cancelled', 'returned', 'in_doubt')",
    )
    .fetch_all(store.pool())
    .await?;
    for row in &payouts {
        let id: String = row.try_get(0)?;
        let state: String = row.try_get(1)?;
        let reason: Option<String> = row.try_get(2)?;
        let reservation: Option<String> = row.try_get(3)?;
        let posted: i64 = row.try_get(4)?;
        match state.as_str() {
            "in_doubt" => in_doubt.check(reason.as_deref().is_some_and(|text| !text.is_empty()), || {
                format!("payout {id} in doubt without a reason")
            }),
            "completed" => settled.check(reservation.is_some() && posted == 1, || {
                format!("payout {id} completed without posting its reservation")
            }),
            _ => settled.check(posted == 0, || format!("payout {id} failed but its reservation was posted")),
        }
    }
    let mut audit_chain =
        Invariant::new("audit_chain", "the audit log's rows chain by hash from the first to the head");
    let audit = crate::audit::verify(store).await?;
    for problem in &audit.listed {
        audit_chain.check(false, || format!("audit row {}: {}", problem.sequence, problem.problem));
    }
    audit_chain.checked = u64::try_from(audit.entries).unwrap_or(0);
    audit_chain.violations = audit.problems as u64;
    let journal = journal_consistent(store).await?;
    Ok(Report {
        invariants: vec![
            journal,
            balanced,
            totals_match,
            overdraft,
            resolved_once,
            within_pending,
            currency,
            sequence,
            chain,
            carries_payout,
            in_doubt,
            settled,
            audit_chain,
        ],
    })
}

/// Every payout acknowledged into the intake journal (see [`crate::journal`]) either waits there
/// to be moved or is in the database under its own key; never is its key another payout's.
async fn journal_consistent(store: &Store) -> Result<Invariant, sqlx::Error> {
    let mut invariant = Invariant::new(
        "intake_journal_consistent",
        "each payout acknowledged into the intake journal is in the database as itself, or waits to be moved",
    );
    let Some(path) = store.journal_path().filter(|path| path.exists()) else { return Ok(invariant) };
    let journal = match crate::journal::Journal::open(&path, crate::Durability::Full, store).await {
        Ok(journal) => journal,
        Err(sqlx::Error::Protocol(refused)) => {
            invariant.check(false, || refused);
            return Ok(invariant);
        }
        Err(error) => return Err(error),
    };
    let mut after = 0;
    loop {
        let page = journal.pending(after).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for intent in &page {
            let owner: Option<String> =
                sqlx::query_scalar("SELECT resource_id FROM idempotency WHERE tenant = $1 AND key = $2")
                    .bind(&intent.tenant)
                    .bind(&intent.key)
                    .fetch_optional(store.pool())
                    .await?;
            invariant.check(owner.as_ref().is_none_or(|owner| *owner == intent.payout_id), || {
                format!(
                    "payout {} ({} key {:?}) was acknowledged, but the database gives its key to {}",
                    intent.payout_id,
                    intent.tenant,
                    intent.key,
                    owner.clone().unwrap_or_default()
                )
            });
        }
    }
    journal.close().await;
    Ok(invariant)
}
