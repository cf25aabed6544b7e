//! `railyard verify --db URL --json`: one key per invariant with its violations; exit 1 when any.

use std::process::Command;

use railyard_core::{Currency, Money};
use railyard_store::ledger::{self, AccountSpec, Normal, TransferSpec};
use railyard_store::{Store, StoreOptions};
use sqlx::Executor;

fn verify(url: &str) -> (i32, serde_json::Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_railyard")).args(["verify", "--db", url, "--json"]).output().unwrap();
    (output.status.code().unwrap_or(-1), serde_json::from_slice(&output.stdout).unwrap())
}

#[tokio::test]
async fn verify_reports_each_invariant_and_fails_on_tampering() {
    let path = std::env::temp_dir().join(format!("railyard_verify_{}.db", std::process::id()));
    let url = format!("sqlite:{}", path.display());
    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    let usd = Currency::from_code("USD").unwrap();
    let mut tx = store.begin().await.unwrap();
    for (id, normal) in [("funding:USD", Normal::Debit), ("psp:acme:USD", Normal::Credit)] {
        let spec = AccountSpec { id: id.into(), kind: "test".into(), currency: usd, normal, no_overdraft: false };
        ledger::open_account(&mut tx, &spec).await.unwrap();
    }
    let spec = TransferSpec {
        id: "fund".into(),
        debit: "funding:USD".into(),
        credit: "psp:acme:USD".into(),
        amount: Money::from_minor(5_000, usd),
        pending: false,
        payout_id: None,
        note: String::new(),
    };
    ledger::transfer(&mut tx, &spec).await.unwrap();
    tx.commit().await.unwrap();

    let (code, report) = verify(&url);
    assert_eq!(code, 0, "{report}");
    for key in
        ["ledger_balanced", "no_overdraft", "pending_resolved_at_most_once", "hash_chain_intact", "sequence_contiguous"]
    {
        assert_eq!(report[key]["violations"], 0, "{key}: {report}");
    }
    assert_eq!(report["hash_chain_intact"]["checked"], 1);

    store.pool().execute("UPDATE accounts SET credits_posted = 1 WHERE id = 'psp:acme:USD'").await.unwrap();
    let (code, report) = verify(&url);
    assert_eq!(code, 1);
    assert_eq!(report["ledger_balanced"]["violations"], 1, "{report}");
    assert_eq!(report["totals_match_journal"]["violations"], 1, "{report}");
    store.pool().close().await;
    for suffix in ["", "-wal", "-shm", "-intake", "-intake-wal", "-intake-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
