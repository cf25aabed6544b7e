//! The ledger's rules, on SQLite and PostgreSQL: two-phase transfers, no overdraft, resolution at
//! most once, currencies, the hash chain, and `verify` catching what it must.

mod common;

use railyard_core::{Currency, Money};
use railyard_store::ledger::{self, AccountSpec, LedgerError, Normal, TransferSpec};
use railyard_store::verify;
use sqlx::Executor;

fn usd(minor: i64) -> Money {
    Money::from_minor(minor, Currency::from_code("USD").unwrap())
}

fn account(id: &str, currency: &str, normal: Normal, no_overdraft: bool) -> AccountSpec {
    AccountSpec {
        id: id.into(),
        kind: id.split(':').next().unwrap().into(),
        currency: Currency::from_code(currency).unwrap(),
        normal,
        no_overdraft,
    }
}

fn transfer(id: &str, debit: &str, credit: &str, amount: Money, pending: bool) -> TransferSpec {
    TransferSpec {
        id: id.into(),
        debit: debit.into(),
        credit: credit.into(),
        amount,
        pending,
        payout_id: None,
        note: String::new(),
    }
}

/// A PSP funded with 1,000.00 USD: funding (debit-normal) → psp (credit-normal, no overdraft).
async fn setup(store: &railyard_store::Store) {
    let mut tx = store.begin().await.unwrap();
    for spec in [
        account("funding:USD", "USD", Normal::Debit, false),
        account("psp:acme:USD", "USD", Normal::Credit, true),
        account("nostro:rtp:USD", "USD", Normal::Debit, false),
        account("revenue:fees:USD", "USD", Normal::Credit, false),
        account("psp:acme:EUR", "EUR", Normal::Credit, true),
    ] {
        ledger::open_account(&mut tx, &spec).await.unwrap();
    }
    ledger::transfer(&mut tx, &transfer("fund-1", "funding:USD", "psp:acme:USD", usd(100_000), false)).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn reserve_post_partially_and_void() {
    for db in common::databases().await {
        let store = &db.store;
        setup(store).await;
        let mut tx = store.begin().await.unwrap();
        ledger::transfer(&mut tx, &transfer("hold-1", "psp:acme:USD", "nostro:rtp:USD", usd(30_000), true))
            .await
            .unwrap();
        ledger::transfer(&mut tx, &transfer("hold-2", "psp:acme:USD", "nostro:rtp:USD", usd(20_000), true))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let psp = ledger::balance(store.pool(), "psp:acme:USD").await.unwrap();
        assert_eq!((psp.posted(), psp.available()), (usd(100_000), usd(50_000)), "{}", db.name);

        let mut tx = store.begin().await.unwrap();
        ledger::post_pending(&mut tx, "post-1", "hold-1", Some(usd(29_500))).await.unwrap();
        ledger::void_pending(&mut tx, "void-2", "hold-2").await.unwrap();
        tx.commit().await.unwrap();
        let psp = ledger::balance(store.pool(), "psp:acme:USD").await.unwrap();
        assert_eq!((psp.posted(), psp.available()), (usd(70_500), usd(70_500)), "{}", db.name);
        let nostro = ledger::balance(store.pool(), "nostro:rtp:USD").await.unwrap();
        // Paying out of the prefunded account at the rail lowers that asset.
        assert_eq!(nostro.posted(), usd(-29_500));

        // Resolving again, posting more than reserved, or an unknown reservation: refused.
        // (One transaction at a time: on SQLite a second writer waits for the first.)
        let mut tx = store.begin().await.unwrap();
        let error = ledger::void_pending(&mut tx, "void-1b", "hold-1").await.unwrap_err().to_string();
        assert!(error.contains("already posted or voided"), "{}: {error}", db.name);
        drop(tx);
        let mut tx = store.begin().await.unwrap();
        let error = ledger::post_pending(&mut tx, "post-2b", "hold-2", None).await.unwrap_err().to_string();
        assert!(error.contains("already posted or voided"), "{}: {error}", db.name);
        drop(tx);
        let mut tx = store.begin().await.unwrap();
        let error = ledger::post_pending(&mut tx, "post-9", "nope", None).await.unwrap_err().to_string();
        assert!(error.contains("does not exist"), "{}: {error}", db.name);
        drop(tx);
        let mut tx = store.begin().await.unwrap();
        ledger::transfer(&mut tx, &transfer("hold-3", "psp:acme:USD", "nostro:rtp:USD", usd(1_000), true))
            .await
            .unwrap();
        let over = ledger::post_pending(&mut tx, "post-3", "hold-3", Some(usd(1_001))).await.unwrap_err();
        assert!(matches!(over, LedgerError::PostExceedsPending { .. }), "{}: {over}", db.name);
        drop(tx);

        let report = verify::verify(store).await.unwrap();
        assert!(report.ok(), "{}: {report:?}", db.name);
        assert_eq!(report.get("sequence_contiguous").unwrap().checked, 5, "{}", db.name);
    }
}

#[tokio::test]
async fn refusals_change_nothing() {
    for db in common::databases().await {
        let store = &db.store;
        setup(store).await;
        let before = ledger::balances(store.pool()).await.unwrap();
        let cases: Vec<(TransferSpec, &str)> = vec![
            (transfer("over", "psp:acme:USD", "nostro:rtp:USD", usd(100_001), false), "may not be overdrawn"),
            (transfer("over-pending", "psp:acme:USD", "nostro:rtp:USD", usd(100_001), true), "may not be overdrawn"),
            (transfer("fx", "psp:acme:EUR", "nostro:rtp:USD", usd(1), false), "is in EUR"),
            (transfer("zero", "psp:acme:USD", "nostro:rtp:USD", usd(0), false), "greater than zero"),
            (transfer("self", "psp:acme:USD", "psp:acme:USD", usd(1), false), "same account"),
            (transfer("ghost", "psp:ghost:USD", "nostro:rtp:USD", usd(1), false), "does not exist"),
            (transfer("fund-1", "funding:USD", "psp:acme:USD", usd(1), false), "already exists"),
        ];
        for (spec, expected) in cases {
            let mut tx = store.begin().await.unwrap();
            let error = ledger::transfer(&mut tx, &spec).await.unwrap_err().to_string();
            assert!(error.contains(expected), "{} {}: {error}", db.name, spec.id);
            tx.rollback().await.unwrap();
        }
        assert_eq!(ledger::balances(store.pool()).await.unwrap(), before, "{}", db.name);
        assert!(verify::verify(store).await.unwrap().ok());
    }
}

/// Fifty concurrent reservations of 30.00 against 1,000.00: exactly 33 fit, whatever the interleaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reservations_never_overdraw() {
    for db in common::databases().await {
        let store = db.store.clone();
        setup(&store).await;
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..50 {
            let store = store.clone();
            tasks.spawn(async move {
                let mut tx = store.begin().await?;
                let spec = transfer(&format!("race-{index}"), "psp:acme:USD", "nostro:rtp:USD", usd(3_000), true);
                match ledger::transfer(&mut tx, &spec).await {
                    Ok(_) => {
                        tx.commit().await?;
                        Ok::<bool, sqlx::Error>(true)
                    }
                    Err(LedgerError::Overdraft(_)) => Ok(false),
                    Err(other) => panic!("{other}"),
                }
            });
        }
        let mut accepted = 0;
        while let Some(result) = tasks.join_next().await {
            if result.unwrap().unwrap() {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 33, "{}", db.name);
        let psp = ledger::balance(store.pool(), "psp:acme:USD").await.unwrap();
        assert_eq!(psp.available(), usd(1_000), "{}", db.name);
        assert!(verify::verify(&store).await.unwrap().ok(), "{}", db.name);
    }
}

/// Ten concurrent attempts to post one reservation: exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reservation_is_resolved_once_under_concurrency() {
    for db in common::databases().await {
        let store = db.store.clone();
        setup(&store).await;
        let mut tx = store.begin().await.unwrap();
        ledger::transfer(&mut tx, &transfer("hold", "psp:acme:USD", "nostro:rtp:USD", usd(5_000), true)).await.unwrap();
        tx.commit().await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..10 {
            let store = store.clone();
            tasks.spawn(async move {
                let mut tx = store.begin().await.unwrap();
                let result = if index % 2 == 0 {
                    ledger::post_pending(&mut tx, &format!("post-{index}"), "hold", None).await
                } else {
                    ledger::void_pending(&mut tx, &format!("void-{index}"), "hold").await
                };
                match result {
                    Ok(_) => tx.commit().await.is_ok(),
                    Err(_) => false,
                }
            });
        }
        let mut winners = 0;
        while let Some(result) = tasks.join_next().await {
            winners += usize::from(result.unwrap());
        }
        assert_eq!(winners, 1, "{}", db.name);
        assert!(verify::verify(&store).await.unwrap().ok(), "{}", db.name);
    }
}

#[tokio::test]
async fn verify_finds_tampering() {
    for db in common::databases().await {
        let store = &db.store;
        setup(store).await;
        let mut tx = store.begin().await.unwrap();
        ledger::transfer(&mut tx, &transfer("t-2", "psp:acme:USD", "nostro:rtp:USD", usd(1_000), false)).await.unwrap();
        ledger::transfer(&mut tx, &transfer("t-3", "psp:acme:USD", "nostro:rtp:USD", usd(2_000), false)).await.unwrap();
        tx.commit().await.unwrap();
        assert!(verify::verify(store).await.unwrap().ok());
        // Someone edits an amount in place.
        store.pool().execute("UPDATE transfers SET amount = 1 WHERE id = 't-2'").await.unwrap();
        let report = verify::verify(store).await.unwrap();
        assert_eq!(report.get("hash_chain_intact").unwrap().violations, 1, "{}: {report:?}", db.name);
        assert_eq!(report.get("totals_match_journal").unwrap().violations, 2, "{}", db.name);
        // Someone points an entry at an account that does not exist (PostgreSQL lets the row in:
        // the journal's accounts are the ledger's check, and verify's).
        if db.name == "postgres" {
            store
                .pool()
                .execute("UPDATE transfers SET credit_account = 'nostro:nowhere:USD' WHERE id = 't-3'")
                .await
                .unwrap();
            let report = verify::verify(store).await.unwrap();
            assert_eq!(report.get("currency_consistent").unwrap().violations, 1, "{report:?}");
            store
                .pool()
                .execute("UPDATE transfers SET credit_account = 'nostro:rtp:USD' WHERE id = 't-3'")
                .await
                .unwrap();
        }
        // Someone files an entry under a payout its id does not name.
        store.pool().execute("UPDATE transfers SET payout_id = 'pay_other' WHERE id = 't-3'").await.unwrap();
        let report = verify::verify(store).await.unwrap();
        assert_eq!(report.get("transfer_ids_carry_payout").unwrap().violations, 1, "{}: {report:?}", db.name);
        store.pool().execute("UPDATE transfers SET payout_id = NULL WHERE id = 't-3'").await.unwrap();
        // Someone deletes an entry.
        store.pool().execute("DELETE FROM transfers WHERE id = 't-2'").await.unwrap();
        let report = verify::verify(store).await.unwrap();
        assert!(report.get("sequence_contiguous").unwrap().violations >= 1, "{}", db.name);
        assert!(report.get("hash_chain_intact").unwrap().violations >= 1, "{}", db.name);
    }
}

/// A caller that treats a repeated transfer id as "already done" and commits must not commit half
/// a transfer (regression: the soak test found totals without journal entries on SQLite).
#[tokio::test]
async fn a_duplicate_id_changes_no_totals_even_if_the_caller_commits() {
    for db in common::databases().await {
        let store = &db.store;
        setup(store).await;
        let before = ledger::balances(store.pool()).await.unwrap();
        let mut tx = store.begin().await.unwrap();
        let again = transfer("fund-1", "funding:USD", "psp:acme:USD", usd(100_000), false);
        assert!(matches!(ledger::transfer(&mut tx, &again).await, Err(LedgerError::Duplicate(_))), "{}", db.name);
        tx.commit().await.unwrap();
        assert_eq!(ledger::balances(store.pool()).await.unwrap(), before, "{}", db.name);
        assert!(verify::verify(store).await.unwrap().ok(), "{}", db.name);
    }
}

fn entry(id: &str, debit: &str, credit: &str, amount: Money, kind: ledger::GroupEntryKind) -> ledger::GroupEntry {
    ledger::GroupEntry {
        id: id.into(),
        debit: debit.into(),
        credit: credit.into(),
        amount,
        kind,
        // A payout's transfer ids start with its id and a colon (`verify` checks it).
        payout_id: id.split_once(':').map(|(payout, _)| payout.to_string()),
        note: "group".into(),
    }
}

/// Groups appended in one go: each group goes in whole or not at all, checked against what the
/// groups before it left (an overdraft, a repeated id, a second posting and an unknown pending
/// transfer are refused with their reason, the rest go in), and the result is what the same
/// transfers one by one give: the same totals, a contiguous sequence, a verifying chain.
#[tokio::test]
async fn groups_go_in_whole_and_match_one_by_one() {
    use ledger::GroupEntryKind::{Pending, PostPending, Posted};
    for db in common::databases().await {
        let store = &db.store;
        setup(store).await;
        let groups = vec![
            // 600.00 reserved for the rail, 1.00 fee posted.
            vec![
                entry("g1-hold", "psp:acme:USD", "nostro:rtp:USD", usd(60_000), Pending),
                entry("g1-fee", "psp:acme:USD", "revenue:fees:USD", usd(100), Posted),
            ],
            // 500.00 more would overdraw (399.00 left): the whole group is refused, fee included.
            vec![
                entry("g2-fee", "psp:acme:USD", "revenue:fees:USD", usd(100), Posted),
                entry("g2-hold", "psp:acme:USD", "nostro:rtp:USD", usd(50_000), Pending),
            ],
            // Fits after the refusal: 399.00 → 99.00.
            vec![entry("g3-hold", "psp:acme:USD", "nostro:rtp:USD", usd(30_000), Pending)],
            // An id already in the journal.
            vec![entry("fund-1", "funding:USD", "psp:acme:USD", usd(1), Posted)],
            // No such pending transfer.
            vec![entry("g5-post", "psp:acme:USD", "nostro:rtp:USD", usd(1), PostPending { pending_id: "nope".into() })],
            // An account nobody opened: the ledger refuses it (PostgreSQL has no foreign key on
            // the journal's accounts since migration 14; this is the check).
            vec![entry("g6-hold", "psp:acme:USD", "nostro:nowhere:USD", usd(1), Pending)],
        ];
        let mut tx = store.begin().await.unwrap();
        let results = ledger::append_groups(&mut tx, &groups).await.unwrap();
        tx.commit().await.unwrap();
        let kinds: Vec<String> = results
            .iter()
            .map(|result| result.as_ref().map_or_else(|error| error.to_string(), |()| "ok".into()))
            .collect();
        assert_eq!(kinds[0], "ok", "{}: {kinds:?}", db.name);
        assert!(kinds[1].contains("may not be overdrawn"), "{}: {kinds:?}", db.name);
        assert_eq!(kinds[2], "ok", "{}: {kinds:?}", db.name);
        assert!(kinds[3].contains("already exists"), "{}: {kinds:?}", db.name);
        assert!(kinds[4].contains("does not exist"), "{}: {kinds:?}", db.name);
        assert!(kinds[5].contains("nostro:nowhere:USD"), "{}: {kinds:?}", db.name);
        let stray: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM transfers WHERE id = 'g6-hold'")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(stray, 0, "{}", db.name);

        // Posting the first hold, and the same pending transfer twice in one call: once only.
        let post = |id: &str| {
            entry(id, "psp:acme:USD", "nostro:rtp:USD", usd(60_000), PostPending { pending_id: "g1-hold".into() })
        };
        let mut tx = store.begin().await.unwrap();
        let results =
            ledger::append_groups(&mut tx, &[vec![post("g1-post")], vec![post("g1-post-again")]]).await.unwrap();
        tx.commit().await.unwrap();
        assert!(results[0].is_ok(), "{}: {results:?}", db.name);
        assert!(matches!(results[1], Err(LedgerError::AlreadyResolved(_))), "{}: {results:?}", db.name);
        // And in a later call, from what the journal holds.
        let mut tx = store.begin().await.unwrap();
        let results = ledger::append_groups(&mut tx, &[vec![post("g1-post-later")]]).await.unwrap();
        tx.commit().await.unwrap();
        assert!(matches!(results[0], Err(LedgerError::AlreadyResolved(_))), "{}: {results:?}", db.name);

        let psp = ledger::balance(store.pool(), "psp:acme:USD").await.unwrap();
        // 1,000.00 - 600.00 posted - 1.00 fee = 399.00 posted; 300.00 still reserved.
        assert_eq!((psp.posted(), psp.available()), (usd(39_900), usd(9_900)), "{}", db.name);
        let report = verify::verify(store).await.unwrap();
        assert!(report.ok(), "{}: {report:?}", db.name);
        // fund-1, g1-hold, g1-fee, g3-hold, g1-post.
        assert_eq!(report.get("sequence_contiguous").unwrap().checked, 5, "{}", db.name);

        // Every account's totals equal the sum of its journal entries (verify's totals_match_journal),
        // and each account moved as the accepted groups say.
        let fees = ledger::balance(store.pool(), "revenue:fees:USD").await.unwrap();
        let nostro = ledger::balance(store.pool(), "nostro:rtp:USD").await.unwrap();
        assert_eq!(
            (fees.posted(), nostro.posted(), nostro.credits_pending),
            (usd(100), usd(-60_000), 30_000),
            "{}",
            db.name
        );
    }
}

/// Every PostgreSQL connection the store hands out, read or step, plans each execution with its
/// own parameters: a generic plan kept from when `transfers` was nearly empty scanned the whole
/// table for every lookup of a group's transfers once it had grown (see BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_plan_every_execution() {
    let Some(db) = common::postgres().await else { return };
    let read: String = sqlx::query_scalar("SHOW plan_cache_mode").fetch_one(db.store.pool()).await.unwrap();
    assert_eq!(read, "force_custom_plan");
    let mut step = db.store.begin_step().await.unwrap();
    let stepped: String = sqlx::query_scalar("SHOW plan_cache_mode").fetch_one(&mut *step).await.unwrap();
    assert_eq!(stepped, "force_custom_plan");
    step.commit().await.unwrap();
}
