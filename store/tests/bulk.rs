//! Rows written in bulk (`bulk::execute`, `bulk::fetch_all`: one JSON parameter on PostgreSQL,
//! bound values padded to a shape on SQLite) arrive in the database exactly as given, on both
//! databases: 64-bit extremes, NULLs, quotes, backslashes, non-ASCII text, text that is itself
//! JSON, text that looks like SQL or a parameter; a join on them by key updates exactly the rows
//! named; and counts past one statement's rows go in several.

mod common;

use railyard_store::bulk;
use sqlx::Row;

#[tokio::test]
async fn bulk_rows_round_trip_exactly() {
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
            ("ünï".into(), -1, Some("€ 1.00 ? $2 ); DROP TABLE bulk_probe; --")),
        ];
        let inserted = bulk::execute(
            &mut tx,
            "INSERT INTO bulk_probe (id, amount, note, owner) SELECT v.column1, v.column2, v.column3, $2 FROM ({rows}) AS v",
            &["TEXT", "BIGINT", "TEXT"],
            &rows,
            &["us".into()],
        )
        .await
        .unwrap();
        assert_eq!(inserted, 4, "{}: the padding rows are not inserted", db.name);
        sqlx::query("INSERT INTO bulk_probe (id, amount, note, owner) VALUES ('other', 7, NULL, 'them')")
            .execute(&mut *tx)
            .await
            .unwrap();

        // Update two rows by key, filtered on a column the join must not lead with.
        let update = format!(
            "UPDATE bulk_probe SET amount = bulk_probe.amount + v.column2 FROM ({{rows}}) AS v \
             WHERE bulk_probe.id = v.column1 AND {} = $2 AND bulk_probe.amount <> $3 RETURNING bulk_probe.id",
            bulk::unindexed(dialect, "bulk_probe.owner"),
        );
        let changes = [("zero", i64::MAX), ("ünï", i64::MIN + 1), ("other", 1)];
        let updated = bulk::fetch_all(&mut tx, &update, &["TEXT", "BIGINT"], &changes, &["us".into(), 42_i64.into()])
            .await
            .unwrap();
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
            ("ünï".into(), i64::MIN, Some("€ 1.00 ? $2 ); DROP TABLE bulk_probe; --".into())),
        ];
        let mut sorted = stored.clone();
        sorted.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        let mut wanted = expected.clone();
        wanted.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        assert_eq!(sorted, wanted, "{}", db.name);

        // More rows than one statement takes, of a size between two shapes: all of them, once.
        let many: Vec<(String, i64)> =
            (0..(bulk::ROWS_MAX * 2 + 5)).map(|index| (format!("n{index}"), index as i64)).collect();
        let inserted = bulk::execute(
            &mut tx,
            "INSERT INTO bulk_probe (id, amount, owner) SELECT v.column1, v.column2, $2 FROM ({rows}) AS v",
            &["TEXT", "BIGINT"],
            &many,
            &["many".into()],
        )
        .await
        .unwrap();
        assert_eq!(inserted, many.len() as u64, "{}", db.name);
        let (count, sum): (i64, i64) =
            sqlx::query("SELECT COUNT(*), CAST(SUM(amount) AS BIGINT) FROM bulk_probe WHERE owner = 'many'")
                .fetch_one(&mut *tx)
                .await
                .map(|row| (row.get(0), row.get(1)))
                .unwrap();
        assert_eq!(
            (count, sum),
            (many.len() as i64, many.iter().map(|(_, amount)| amount).sum::<i64>()),
            "{}",
            db.name
        );

        // A row of the wrong width, or one whose key is NULL, is refused before anything runs.
        let wrong: Vec<(&str, i64, i64)> = vec![("w", 1, 2)];
        let refused = bulk::execute(
            &mut tx,
            "INSERT INTO bulk_probe (id, amount) SELECT v.column1, v.column2 FROM ({rows}) AS v",
            &["TEXT", "BIGINT"],
            &wrong,
            &[],
        )
        .await;
        assert!(refused.is_err(), "{}: a row of three values for two columns", db.name);
        tx.rollback().await.unwrap();
    }
}
