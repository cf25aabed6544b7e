//! A rail's daily use is taken only within its cap, one rail and currency at a time or several in
//! one statement (`usage::take_many`, what a saga group does), on both databases.

mod common;

use railyard_core::{Currency, Money};
use railyard_store::usage;

fn money(minor: i64, code: &str) -> Money {
    Money::from_minor(minor, Currency::from_code(code).unwrap())
}

#[tokio::test]
async fn several_rails_are_taken_in_one_statement_each_within_its_cap() {
    for db in common::databases().await {
        let store = &db.store;
        let day = 20_000;
        let cap = Some(money(10_000, "EUR"));
        let mut tx = store.begin_step().await.unwrap();
        // A first take creates the day's row; an amount past the cap alone is never taken.
        assert!(usage::take(&mut tx, "sepa-inst", money(6_000, "EUR"), cap, day).await.unwrap(), "{}", db.name);
        let taken = usage::take_many(
            &mut tx,
            &[
                ("sepa-inst", money(5_000, "EUR"), cap),        // 6,000 + 5,000 > 10,000
                ("faster-payments", money(3_000, "GBP"), None), // no cap
                ("rtp-us", money(20_000, "USD"), Some(money(10_000, "USD"))), // alone past its cap
                ("visa-direct", money(4_000, "EUR"), Some(money(4_000, "EUR"))), // exactly the cap
            ],
            day,
        )
        .await
        .unwrap();
        assert_eq!(taken, [false, true, false, true], "{}", db.name);
        // The refused ones changed nothing: 4,000 more still fit on SEPA Instant.
        let again = usage::take_many(&mut tx, &[("sepa-inst", money(4_000, "EUR"), cap)], day).await.unwrap();
        assert_eq!(again, [true], "{}", db.name);
        assert!(
            usage::take_many(&mut tx, &[("a", money(1, "EUR"), None), ("a", money(1, "EUR"), None)], day)
                .await
                .is_err(),
            "{}: a rail and currency twice in one statement",
            db.name
        );
        drop(tx);
        let mut tx = store.begin_step().await.unwrap();
        let taken = usage::take_many(
            &mut tx,
            &[("sepa-inst", money(6_000, "EUR"), cap), ("faster-payments", money(1, "GBP"), None)],
            day,
        )
        .await
        .unwrap();
        assert_eq!(taken, [true, true], "{}", db.name);
        tx.commit().await.unwrap();
        let used = usage::on_day(store.pool(), day).await.unwrap();
        assert_eq!(used["sepa-inst"][&Currency::from_code("EUR").unwrap()], money(6_000, "EUR"), "{}", db.name);
        assert_eq!(used["faster-payments"][&Currency::from_code("GBP").unwrap()], money(1, "GBP"), "{}", db.name);
    }
}
