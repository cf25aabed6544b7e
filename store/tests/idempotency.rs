//! Idempotency records: new, replay, in progress, conflict; and a 100-way race on one key.

mod common;

use railyard_store::idempotency::{self, Claim};

#[tokio::test]
async fn replay_conflict_and_in_progress() {
    for db in common::databases().await {
        let store = &db.store;
        let mut tx = store.begin().await.unwrap();
        assert_eq!(idempotency::claim(&mut tx, "acme", "k1", "hash-a", "pay_1").await.unwrap(), Claim::New);
        tx.commit().await.unwrap();
        let mut tx = store.begin().await.unwrap();
        let again = idempotency::claim(&mut tx, "acme", "k1", "hash-a", "pay_2").await.unwrap();
        assert!(matches!(&again, Claim::InProgress(record) if record.resource_id == "pay_1"), "{}: {again:?}", db.name);
        idempotency::store_response(&mut tx, "acme", "k1", 201, "{\"id\":\"pay_1\"}").await.unwrap();
        tx.commit().await.unwrap();
        let mut tx = store.begin().await.unwrap();
        match idempotency::claim(&mut tx, "acme", "k1", "hash-a", "pay_3").await.unwrap() {
            Claim::Replay(record) => {
                assert_eq!(
                    (record.response_status, record.response_body.as_deref()),
                    (Some(201), Some("{\"id\":\"pay_1\"}"))
                )
            }
            other => panic!("{}: {other:?}", db.name),
        }
        assert!(matches!(
            idempotency::claim(&mut tx, "acme", "k1", "hash-b", "pay_4").await.unwrap(),
            Claim::Conflict(_)
        ));
        // Keys are per tenant.
        assert_eq!(idempotency::claim(&mut tx, "globex", "k1", "hash-b", "pay_5").await.unwrap(), Claim::New);
        tx.commit().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_hundred_concurrent_first_uses_have_one_winner() {
    for db in common::databases().await {
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..100 {
            let store = db.store.clone();
            tasks.spawn(async move {
                let mut tx = store.begin().await.unwrap();
                let claim = idempotency::claim(&mut tx, "acme", "race", "same", &format!("pay_{index}")).await.unwrap();
                tx.commit().await.unwrap();
                claim
            });
        }
        let mut new = 0;
        while let Some(claim) = tasks.join_next().await {
            match claim.unwrap() {
                Claim::New => new += 1,
                Claim::InProgress(_) | Claim::Replay(_) => {}
                Claim::Conflict(record) => panic!("{}: same payload reported as conflict: {record:?}", db.name),
            }
        }
        assert_eq!(new, 1, "{}", db.name);
    }
}
