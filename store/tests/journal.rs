//! The intake journal: claims within a batch and across batches, forgetting, reads, and the
//! binding that keeps one database's acknowledged payouts out of another.

mod common;

use railyard_store::journal::{Appended, Journal, NewIntent};
use railyard_store::vault::VaultKeys;
use railyard_store::{Durability, Store, StoreOptions};

fn intent<'a>(
    key: &'a str,
    hash: &'a str,
    payout_id: &'a str,
    sealed: &'a railyard_store::vault::Sealed,
) -> NewIntent<'a> {
    NewIntent {
        tenant: "acme",
        key,
        request_hash: hash,
        payout_id,
        request: "{\"amount\":\"10.00\"}",
        submitted_by: Some("rk_1"),
        sealed,
    }
}

/// A journal beside a fresh flushed SQLite database (kept alive by the first value), and an
/// account sealed for its intents.
async fn journal_beside_a_database() -> (common::TestDb, Journal, railyard_store::vault::Sealed) {
    let db = common::sqlite().await;
    let path = db.store.journal_path().expect("a flushed SQLite store has a journal");
    let journal = Journal::open(&path, Durability::Full, &db.store).await.unwrap();
    let sealed = VaultKeys::generate().seal_account("acme", "DE89370400440532013000").unwrap();
    (db, journal, sealed)
}

#[tokio::test]
async fn keys_are_claimed_once_and_forgotten_once_moved() {
    let (_db, journal, sealed) = journal_beside_a_database().await;
    // In one batch: a new key, the same key again (replay), the same key with another request.
    let answers = journal
        .append(
            &[
                intent("k1", "h1", "pay_1", &sealed),
                intent("k1", "h1", "pay_2", &sealed),
                intent("k1", "hx", "pay_3", &sealed),
            ],
            1_000,
        )
        .await
        .unwrap();
    assert_eq!(
        answers,
        vec![
            Appended::New,
            Appended::Existing { payout_id: "pay_1".into(), same_request: true },
            Appended::Existing { payout_id: "pay_1".into(), same_request: false },
        ]
    );
    // In a later batch: the journal still holds k1; k2 is new.
    let answers = journal
        .append(&[intent("k2", "h2", "pay_4", &sealed), intent("k1", "hx", "pay_5", &sealed)], 2_000)
        .await
        .unwrap();
    assert_eq!(answers, vec![Appended::New, Appended::Existing { payout_id: "pay_1".into(), same_request: false }]);
    let held = journal.by_payout("pay_4").await.unwrap().unwrap();
    assert_eq!((held.key.as_str(), held.accepted_at, held.submitted_by.as_deref()), ("k2", 2_000, Some("rk_1")));
    assert_eq!(held.sealed, sealed, "the sealed account comes back as it was written");
    assert_eq!(journal.by_key("acme", "k1").await.unwrap().unwrap().payout_id, "pay_1");
    let pending = journal.pending(0).await.unwrap();
    assert_eq!(pending.iter().map(|intent| intent.payout_id.as_str()).collect::<Vec<_>>(), vec!["pay_1", "pay_4"]);
    assert_eq!(journal.pending(pending[0].seq).await.unwrap().len(), 1);
    // Forgotten once moved.
    journal.forget(&["pay_1".to_string()]).await.unwrap();
    assert!(journal.by_payout("pay_1").await.unwrap().is_none());
    journal.forget(&["pay_4".to_string()]).await.unwrap();
    assert_eq!(journal.count().await.unwrap(), 0);
}

#[tokio::test]
async fn a_batch_of_new_keys_is_written_in_one_statement_and_any_held_key_sends_it_the_long_way() {
    let (db, journal, sealed) = journal_beside_a_database().await;
    // All new (a key repeated in the batch answers against its first use).
    let answers = journal
        .append_if_new(&[intent("n1", "h1", "pay_1", &sealed), intent("n1", "h1", "pay_2", &sealed)], 1_000)
        .await
        .unwrap();
    assert_eq!(
        answers,
        Some(vec![Appended::New, Appended::Existing { payout_id: "pay_1".into(), same_request: true }])
    );
    assert_eq!(journal.by_key("acme", "n1").await.unwrap().unwrap().accepted_at, 1_000);
    // A key the journal holds: nothing answered, the new keys beside it written all the same;
    // the long way then finds them as the batch's own.
    let batch = [intent("n2", "h2", "pay_3", &sealed), intent("n1", "hx", "pay_4", &sealed)];
    assert_eq!(journal.append_if_new(&batch, 2_000).await.unwrap(), None);
    assert_eq!(
        journal.append(&batch, 2_000).await.unwrap(),
        vec![Appended::New, Appended::Existing { payout_id: "pay_1".into(), same_request: false }]
    );
    // A key the database holds (moved and forgotten here): not written to the journal again.
    let mut connection = db.store.pool().acquire().await.unwrap();
    let claim = railyard_store::idempotency::claim(&mut connection, "acme", "d1", "h5", "pay_5").await.unwrap();
    assert_eq!(claim, railyard_store::idempotency::Claim::New);
    drop(connection);
    let batch = [intent("d1", "h5", "pay_6", &sealed), intent("n3", "h7", "pay_7", &sealed)];
    assert_eq!(journal.append_if_new(&batch, 3_000).await.unwrap(), None);
    assert!(journal.by_key("acme", "d1").await.unwrap().is_none(), "a key the database holds stays out");
    assert_eq!(journal.by_key("acme", "n3").await.unwrap().unwrap().payout_id, "pay_7");
    assert_eq!(journal.count().await.unwrap(), 3);
    // Another tenant's use of the same key is no conflict.
    let mut other = intent("d1", "h8", "pay_8", &sealed);
    other.tenant = "globex";
    assert_eq!(journal.append_if_new(&[other], 4_000).await.unwrap(), Some(vec![Appended::New]));
}

#[tokio::test]
async fn a_journal_holding_another_databases_payouts_is_refused() {
    let first = common::sqlite().await;
    let path = first.store.journal_path().unwrap();
    let journal = Journal::open(&path, Durability::Full, &first.store).await.unwrap();
    let keys = VaultKeys::generate();
    let sealed = keys.seal_account("acme", "DE89370400440532013000").unwrap();
    journal.append(&[intent("k1", "h1", "pay_1", &sealed)], 1_000).await.unwrap();
    journal.close().await;

    // Another database at another path, its journal file replaced by the first one's.
    let second = common::sqlite().await;
    std::fs::copy(&path, second.store.journal_path().unwrap()).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::copy(
            format!("{}{suffix}", path.display()),
            format!("{}{suffix}", second.store.journal_path().unwrap().display()),
        );
    }
    let refused = Journal::open(&second.store.journal_path().unwrap(), Durability::Full, &second.store).await;
    let message = refused.err().expect("refused").to_string();
    assert!(message.contains("another database"), "{message}");
    let report = railyard_store::verify::verify(&second.store).await.unwrap();
    assert_eq!(report.get("intake_journal_consistent").unwrap().violations, 1);

    // Its own database opened again: accepted as before.
    let reopened = Store::open(&first.url, &StoreOptions::default()).await.unwrap();
    let journal = Journal::open(&path, Durability::Full, &reopened).await.unwrap();
    assert_eq!(journal.count().await.unwrap(), 1);
}

/// `--intake-journal`: the database remembers where its journal is; moving it is refused while
/// the old one still holds acknowledged payouts not yet moved, and allowed once it is empty.
#[tokio::test]
async fn the_journal_moves_only_when_empty_and_the_database_remembers_where() {
    let db = common::sqlite().await;
    let beside = db.store.journal_path().unwrap();
    let elsewhere = std::env::temp_dir().join(format!("railyard_journal_elsewhere_{}", std::process::id()));
    let _ = std::fs::remove_file(&elsewhere);
    let journal = Journal::open(&beside, Durability::Full, &db.store).await.unwrap();
    let sealed = VaultKeys::generate().seal_account("acme", "DE89370400440532013000").unwrap();
    journal.append(&[intent("k1", "h1", "pay_1", &sealed)], 1_000).await.unwrap();
    journal.close().await;
    db.store.pool().close().await;

    let moved = StoreOptions { journal: Some(elsewhere.clone()), ..StoreOptions::default() };
    let refused = Store::open(&db.url, &moved).await.err().expect("refused while it holds a payout").to_string();
    assert!(
        refused.contains("holds 1 acknowledged payouts") && refused.contains(&beside.display().to_string()),
        "{refused}"
    );
    // Refused means unchanged: without the option the journal is still the one beside the file.
    let store = Store::open(&db.url, &StoreOptions::default()).await.unwrap();
    assert_eq!(store.journal_path().unwrap(), beside);

    // Once what it held is moved (forgotten), the journal goes elsewhere, and the database says
    // so to every later open, with or without the option, and to `verify`'s read-only open.
    let journal = Journal::open(&beside, Durability::Full, &store).await.unwrap();
    journal.forget(&["pay_1".to_string()]).await.unwrap();
    assert_eq!(journal.count().await.unwrap(), 0);
    journal.close().await;
    store.pool().close().await;
    let store = Store::open(&db.url, &moved).await.unwrap();
    assert_eq!(store.journal_path().unwrap(), elsewhere);
    store.pool().close().await;
    let store = Store::open(&db.url, &StoreOptions::default()).await.unwrap();
    assert_eq!(store.journal_path().unwrap(), elsewhere);
    let existing = Store::open_existing(&db.url, &StoreOptions::default()).await.unwrap();
    assert_eq!(existing.journal_path().unwrap(), elsewhere);

    // The database itself is no place for its journal; a database without a journal takes none.
    let onto_itself = StoreOptions { journal: Some(db.file().unwrap().to_path_buf()), ..StoreOptions::default() };
    let refused = Store::open(&db.url, &onto_itself).await.err().expect("refused").to_string();
    assert!(refused.contains("the database itself"), "{refused}");
    let normal = StoreOptions { durability: Durability::Normal, ..moved.clone() };
    let refused = Store::open(&db.url, &normal).await.err().expect("refused").to_string();
    assert!(refused.contains("without a journal"), "{refused}");
    let _ = std::fs::remove_file(&elsewhere);
}
