//! Rows passed as one JSON parameter (`bulk::json_rows`) arrive in the database exactly as bound,
//! on both databases: 64-bit extremes, NULLs, quotes, backslashes, non-ASCII text, text that is
//! itself JSON; and a join on them by key updates exactly the rows named.

mod common;

use railyard_store::bulk;
use sqlx::Row;

#[tokio::test]
async fn json_rows_round_trip_exactly() {
    for db in common::databases().await {
        let store = &db.store;
        let dialect = store.dialect();
        let mut tx = store.begin().await.unwrap();
        sqlx::query("CREATE TABLE bulk_probe (id TEXT PRIMARY KEY, amount BIGINT, note TEXT, owner TEXT)")
            .execute(&mut *tx)
            .await
            .unwrap();
        let rows: Vec<(String, i64, Option<&str>)> = vec![
            ("max".into(), i64::MAX, Some(r#"{"route":"a → b","q":"\"x\""}"#)),
            ("min".into(), i64::MIN, None),
            ("zero".into(), 0, Some("back\\slash\nnew line, tab\t, 'quote'")),
            ("ünï".into(), -1, Some("€ 1.00")),
        ];
        let insert = sqlx::AssertSqlSafe(format!(
            "INSERT INTO bulk_probe (id, amount, note, owner) SELECT v.column1, v.column2, v.column3, $2 FROM ({}) AS v",
            bulk::json_rows(dialect, 1, &["TEXT", "BIGINT", "TEXT"])
        ));
        sqlx::query(insert).bind(bulk::json_array(&rows).unwrap()).bind("us").execute(&mut *tx).await.unwrap();
        sqlx::query("INSERT INTO bulk_probe (id, amount, note, owner) VALUES ('other', 7, NULL, 'them')")
            .execute(&mut *tx)
            .await
            .unwrap();

        // Update two rows by key, filtered on a column the join must not lead with.
        let update = sqlx::AssertSqlSafe(format!(
            "UPDATE bulk_probe SET amount = bulk_probe.amount + v.column2 FROM ({}) AS v \
             WHERE bulk_probe.id = v.column1 AND {} = $2 RETURNING bulk_probe.id",
            bulk::json_rows(dialect, 1, &["TEXT", "BIGINT"]),
            bulk::unindexed(dialect, "bulk_probe.owner"),
        ));
        let changes = [("zero", i64::MAX), ("ünï", i64::MIN + 1), ("other", 1)];
        let updated =
            sqlx::query(update).bind(bulk::json_array(&changes).unwrap()).bind("us").fetch_all(&mut *tx).await.unwrap();
        assert_eq!(updated.len(), 2, "{}: 'other' belongs to another owner", db.name);

        let stored: Vec<(String, i64, Option<String>)> =
            sqlx::query("SELECT id, amount, note FROM bulk_probe ORDER BY amount")
                .fetch_all(&mut *tx)
                .await
                .unwrap()
                .iter()
                .map(|row| (row.get(0), row.get(1), row.get(2)))
                .collect();
        let expected: Vec<(String, i64, Option<String>)> = vec![
            ("min".into(), i64::MIN, None),
            ("other".into(), 7, None),
            ("max".into(), i64::MAX, Some(r#"{"route":"a → b","q":"\"x\""}"#.into())),
            ("zero".into(), i64::MAX, Some("back\\slash\nnew line, tab\t, 'quote'".into())),
            ("ünï".into(), i64::MIN, Some("€ 1.00".into())),
        ];
        let mut sorted = stored.clone();
        sorted.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        let mut wanted = expected.clone();
        wanted.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        assert_eq!(sorted, wanted, "{}", db.name);
        tx.rollback().await.unwrap();
    }
}
