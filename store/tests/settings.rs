//! Treasury settings on both databases: a change and its audit entry are one transaction; the
//! newest value of a key replaces the older one; removing a key is audited too; the chain verifies.

mod common;

use railyard_store::settings;

#[tokio::test]
async fn settings_are_upserted_removed_and_audited() {
    for db in common::databases().await {
        let store = &db.store;
        settings::record(
            store,
            "house/treasury",
            "treasury.fee",
            "fee/sepa-inst/EUR: a -> b",
            "fee/sepa-inst/EUR",
            Some(r#"{"fixed":"1.00","bps":"0"}"#),
        )
        .await
        .unwrap();
        settings::record(
            store,
            "house/admin",
            "rail.kill_switch",
            "sepa-inst: engaged",
            "kill_switch/sepa-inst",
            Some("{}"),
        )
        .await
        .unwrap();
        settings::record(
            store,
            "house/ops",
            "treasury.fee",
            "fee/sepa-inst/EUR: b -> c",
            "fee/sepa-inst/EUR",
            Some(r#"{"fixed":"2.00","bps":"0"}"#),
        )
        .await
        .unwrap();
        let listed = settings::list(store).await.unwrap();
        assert_eq!(listed.len(), 2, "{}: {listed:?}", db.name);
        let fee = listed.iter().find(|setting| setting.key == "fee/sepa-inst/EUR").unwrap();
        assert_eq!(
            (fee.value.as_str(), fee.changed_by.as_str()),
            (r#"{"fixed":"2.00","bps":"0"}"#, "house/ops"),
            "{}",
            db.name
        );
        assert_eq!(listed.last().unwrap().key, "fee/sepa-inst/EUR", "{}: newest last", db.name);

        settings::record(
            store,
            "house/admin",
            "rail.kill_switch",
            "sepa-inst: released",
            "kill_switch/sepa-inst",
            None,
        )
        .await
        .unwrap();
        let listed = settings::list(store).await.unwrap();
        assert_eq!(listed.len(), 1, "{}: {listed:?}", db.name);

        let log = store.audit_log(10).await.unwrap();
        let actions: Vec<&str> = log.iter().map(|entry| entry.action.as_str()).collect();
        assert_eq!(actions, ["rail.kill_switch", "treasury.fee", "rail.kill_switch", "treasury.fee"], "{}", db.name);
        let report = railyard_store::audit::verify(store).await.unwrap();
        assert!(report.intact(), "{}: {report:?}", db.name);
    }
}
