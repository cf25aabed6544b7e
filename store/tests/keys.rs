//! API key rows on both databases: create and revoke are each one transaction with their audit
//! entry; a configuration key's revocation is keyed by its hash; the chain verifies after.

mod common;

use railyard_store::keys::{self, KeyError, Origin};

#[tokio::test]
async fn keys_are_created_revoked_and_audited() {
    for db in common::databases().await {
        let store = &db.store;
        let secret = keys::new_secret();
        assert!(secret.starts_with(keys::SECRET_PREFIX) && secret != keys::new_secret(), "{}", db.name);
        let digest = keys::digest(&secret);
        let created = keys::create(store, "acme", "ci", &digest, &["psp", "approver"], "house/admin").await.unwrap();
        assert_eq!((created.origin, created.active()), (Origin::Api, true), "{}", db.name);
        assert!(matches!(
            keys::create(store, "acme", "ci", &keys::digest("other"), &["psp"], "house/admin").await,
            Err(KeyError::Exists { .. })
        ));
        // The same id under another tenant is another key.
        keys::create(store, "globex", "ci", &keys::digest("globex"), &["psp"], "house/admin").await.unwrap();

        let listed = keys::list(store).await.unwrap();
        assert_eq!(listed.len(), 2, "{}", db.name);
        assert_eq!(listed[0].sha256, digest);
        assert_eq!(listed[0].scopes, ["psp", "approver"]);

        let revoked = keys::revoke(store, "acme", "ci", None, "house/admin").await.unwrap();
        assert_eq!(revoked.revoked_by.as_deref(), Some("house/admin"));
        assert!(!keys::list(store).await.unwrap()[0].active(), "{}", db.name);
        assert!(matches!(
            keys::revoke(store, "acme", "ci", None, "house/admin").await,
            Err(KeyError::AlreadyRevoked { .. })
        ));
        assert!(matches!(
            keys::revoke(store, "acme", "nope", None, "house/admin").await,
            Err(KeyError::NotFound { .. })
        ));

        // A configuration key: revoked by hash; a new secret under the same id can be revoked too.
        let old = keys::digest("config-old");
        keys::revoke(store, "acme", "live", Some((&old, &["psp"])), "house/admin").await.unwrap();
        let new = keys::digest("config-new");
        let again = keys::revoke(store, "acme", "live", Some((&new, &["psp"])), "house/admin").await.unwrap();
        assert_eq!((again.origin, again.sha256), (Origin::Config, new), "{}", db.name);

        let log = store.audit_log(100).await.unwrap();
        let actions: Vec<&str> = log.iter().map(|entry| entry.action.as_str()).collect();
        assert_eq!(actions.iter().filter(|action| **action == "key.create").count(), 2, "{}: {actions:?}", db.name);
        assert_eq!(actions.iter().filter(|action| **action == "key.revoke").count(), 3, "{}: {actions:?}", db.name);
        assert!(railyard_store::audit::verify(store).await.unwrap().intact(), "{}", db.name);
    }
}
