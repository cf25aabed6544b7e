//! The keys the API accepts: those in the configuration file, minus the ones revoked, plus those
//! created through `POST /v1/admin/keys` (kept in the store, table `api_keys`).
//!
//! Authentication reads an in-memory [`KeyRing`] so a request never waits on the database. The
//! instance that creates or revokes a key rebuilds its ring before answering; other instances
//! sharing a PostgreSQL store pick the change up within [`KEY_REFRESH_EVERY`].

use std::sync::{Arc, RwLock};
use std::time::Duration;

use railyard_config::{Scope, TreasuryConfig};
use railyard_store::Store;
use railyard_store::keys::{Origin, StoredKey};

/// How often [`refresh`] re-reads the key table.
pub const KEY_REFRESH_EVERY: Duration = Duration::from_secs(2);

/// One key the API knows of.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub tenant: String,
    pub id: String,
    pub sha256: [u8; 32],
    pub scopes: Vec<Scope>,
    pub origin: Origin,
    pub created_at: Option<i64>,
    pub created_by: Option<String>,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
}

impl KeyEntry {
    pub fn active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// The keys in force, rebuilt whole on every change (a handful of keys: cloning the list is cheaper
/// than finer locking, and readers never see half a change).
pub struct KeyRing {
    entries: RwLock<Arc<Vec<KeyEntry>>>,
}

impl KeyRing {
    /// The configuration's keys only: for tests and tools that run without a store.
    pub fn from_config(config: &TreasuryConfig) -> KeyRing {
        KeyRing { entries: RwLock::new(Arc::new(build(config, &[]))) }
    }

    /// The configuration's keys and the store's.
    pub async fn load(store: &Store, config: &TreasuryConfig) -> Result<KeyRing, sqlx::Error> {
        let stored = railyard_store::keys::list(store).await?;
        Ok(KeyRing { entries: RwLock::new(Arc::new(build(config, &stored))) })
    }

    pub async fn reload(&self, store: &Store, config: &TreasuryConfig) -> Result<(), sqlx::Error> {
        let stored = railyard_store::keys::list(store).await?;
        let entries = Arc::new(build(config, &stored));
        *self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = entries;
        Ok(())
    }

    pub fn entries(&self) -> Arc<Vec<KeyEntry>> {
        self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The key whose hash is `digest`, compared in constant time over every key so the time taken
    /// does not tell how close a guess came.
    pub fn find(&self, digest: &[u8; 32]) -> Option<KeyEntry> {
        let entries = self.entries();
        let mut found = None;
        for entry in entries.iter() {
            let difference = entry.sha256.iter().zip(digest.iter()).fold(0_u8, |acc, (a, b)| acc | (a ^ b));
            if difference == 0 {
                found = Some(entry.clone());
            }
        }
        found
    }

    /// Whether `tenant` holds an active treasury or admin key: the operator, whose approvers decide
    /// for every tenant.
    pub fn operator(&self, tenant: &str) -> bool {
        self.entries().iter().any(|entry| {
            entry.tenant == tenant
                && entry.active()
                && entry.scopes.iter().any(|scope| matches!(scope, Scope::Treasury | Scope::Admin))
        })
    }
}

fn build(config: &TreasuryConfig, stored: &[StoredKey]) -> Vec<KeyEntry> {
    let mut entries = Vec::new();
    for tenant in &config.tenants {
        for key in &tenant.keys {
            // A revocation of a configuration key is matched by its hash: a new secret under the
            // same id in the file is a new key.
            let revocation = stored.iter().find(|row| {
                row.origin == Origin::Config && row.sha256 == key.sha256 && row.tenant == tenant.id.as_str()
            });
            entries.push(KeyEntry {
                tenant: tenant.id.to_string(),
                id: key.id.to_string(),
                sha256: key.sha256,
                scopes: key.scopes.clone(),
                origin: Origin::Config,
                created_at: None,
                created_by: None,
                revoked_at: revocation.and_then(|row| row.revoked_at),
                revoked_by: revocation.and_then(|row| row.revoked_by.clone()),
            });
        }
    }
    for row in stored.iter().filter(|row| row.origin == Origin::Api) {
        // A tenant removed from the configuration takes its keys with it.
        if config.tenants.iter().all(|tenant| tenant.id.as_str() != row.tenant) {
            continue;
        }
        entries.push(KeyEntry {
            tenant: row.tenant.clone(),
            id: row.id.clone(),
            sha256: row.sha256,
            scopes: row.scopes.iter().filter_map(|scope| Scope::parse(scope)).collect(),
            origin: Origin::Api,
            created_at: Some(row.created_at),
            created_by: Some(row.created_by.clone()),
            revoked_at: row.revoked_at,
            revoked_by: row.revoked_by.clone(),
        });
    }
    entries
}

/// Re-reads the key table every `every`, so keys created or revoked by another instance take
/// effect here too. A failed read keeps the ring as it was and is logged.
pub async fn refresh(ring: Arc<KeyRing>, store: Store, config: Arc<TreasuryConfig>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = ring.reload(&store, &config).await {
            tracing::warn!(%error, "API keys not refreshed");
        }
    }
}
