//! API keys managed at run time: created and revoked through the admin API, each change written to
//! the hash-chained audit log in the same transaction as the key row.
//!
//! The store keeps only a key's SHA-256, never its secret; [`new_secret`] makes a secret that is
//! shown to the caller once. Keys written in the configuration file are not copied here: revoking
//! one records a row with origin `config`, so the revocation holds across restarts while the file
//! still lists the key.

use sqlx::{AnyConnection, Row};

use crate::{Store, audit, now_micros};

/// Prefix of secrets made by [`new_secret`], so a leaked one is recognisable in a scan.
pub const SECRET_PREFIX: &str = "rk_live_";
/// Keys one tenant may hold in the store (created and revoked alike), so the table stays bounded.
pub const KEYS_PER_TENANT_MAX: i64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("tenant {tenant} already has a key {id}")]
    Exists { tenant: String, id: String },
    #[error("tenant {tenant} has no key {id}")]
    NotFound { tenant: String, id: String },
    #[error("key {tenant}/{id} is already revoked")]
    AlreadyRevoked { tenant: String, id: String },
    #[error("tenant {0} holds {KEYS_PER_TENANT_MAX} keys; delete revoked ones from the table first")]
    TooMany(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Where a key was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Created through the admin API.
    Api,
    /// Listed in the configuration file; a row exists only once it is revoked.
    Config,
}

impl Origin {
    pub fn name(self) -> &'static str {
        match self {
            Origin::Api => "api",
            Origin::Config => "config",
        }
    }
}

/// A key row. `scopes` are the configuration's scope names (`psp`, `treasury`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub tenant: String,
    pub id: String,
    pub sha256: [u8; 32],
    pub scopes: Vec<String>,
    pub origin: Origin,
    pub created_at: i64,
    pub created_by: String,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
}

impl StoredKey {
    pub fn active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// A fresh secret: the prefix and 256 bits from the operating system's random source, in hex.
pub fn new_secret() -> String {
    use aes_gcm::aead::Generate;
    let bytes = aes_gcm::Key::<aes_gcm::Aes256Gcm>::generate();
    format!("{SECRET_PREFIX}{}", hex::encode(bytes))
}

/// The SHA-256 the store and the configuration keep of a secret.
pub fn digest(secret: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(secret.trim().as_bytes()).into()
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<StoredKey, sqlx::Error> {
    let decode = |error: String| sqlx::Error::Decode(error.into());
    let sha256: String = row.try_get("sha256")?;
    let sha256: [u8; 32] = hex::decode(&sha256)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| decode(format!("api_keys.sha256 {sha256:?} is not 64 hex digits")))?;
    let scopes: String = row.try_get("scopes")?;
    let origin: String = row.try_get("origin")?;
    let origin = match origin.as_str() {
        "api" => Origin::Api,
        "config" => Origin::Config,
        other => return Err(decode(format!("api_keys.origin {other:?}"))),
    };
    Ok(StoredKey {
        tenant: row.try_get("tenant")?,
        id: row.try_get("id")?,
        sha256,
        scopes: scopes.split(',').filter(|scope| !scope.is_empty()).map(str::to_owned).collect(),
        origin,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        revoked_at: row.try_get("revoked_at")?,
        revoked_by: row.try_get("revoked_by")?,
    })
}

/// Every key row, oldest first.
pub async fn list(store: &Store) -> Result<Vec<StoredKey>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT tenant, id, sha256, scopes, origin, created_at, created_by, revoked_at, revoked_by \
         FROM api_keys ORDER BY created_at, tenant, id",
    )
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(from_row).collect()
}

async fn find(transaction: &mut AnyConnection, tenant: &str, id: &str) -> Result<Option<StoredKey>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT tenant, id, sha256, scopes, origin, created_at, created_by, revoked_at, revoked_by \
         FROM api_keys WHERE tenant = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(id)
    .fetch_optional(&mut *transaction)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Records a new key and its `key.create` audit entry in one transaction. The caller checks the
/// tenant, id and scopes against the configuration (the store does not know it).
pub async fn create(
    store: &Store,
    tenant: &str,
    id: &str,
    sha256: &[u8; 32],
    scopes: &[&str],
    by: &str,
) -> Result<StoredKey, KeyError> {
    let mut transaction = store.begin().await?;
    if find(&mut transaction, tenant, id).await?.is_some() {
        return Err(KeyError::Exists { tenant: tenant.into(), id: id.into() });
    }
    let held: i64 = sqlx::query("SELECT COUNT(*) FROM api_keys WHERE tenant = $1")
        .bind(tenant)
        .fetch_one(&mut *transaction)
        .await?
        .try_get(0)?;
    if held >= KEYS_PER_TENANT_MAX {
        return Err(KeyError::TooMany(tenant.into()));
    }
    let key = StoredKey {
        tenant: tenant.into(),
        id: id.into(),
        sha256: *sha256,
        scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
        origin: Origin::Api,
        created_at: now_micros(),
        created_by: by.into(),
        revoked_at: None,
        revoked_by: None,
    };
    sqlx::query(
        "INSERT INTO api_keys (tenant, id, sha256, scopes, origin, created_at, created_by) \
         VALUES ($1, $2, $3, $4, 'api', $5, $6)",
    )
    .bind(tenant)
    .bind(id)
    .bind(hex::encode(sha256))
    .bind(key.scopes.join(","))
    .bind(key.created_at)
    .bind(by)
    .execute(&mut *transaction)
    .await?;
    let detail = format!("{tenant}/{id} scopes {}", key.scopes.join(","));
    audit::append(&mut transaction, by, "key.create", &detail).await?;
    transaction.commit().await?;
    Ok(key)
}

/// Revokes a key and writes its `key.revoke` audit entry in one transaction. `config_key` is the
/// hash and scopes of a key the configuration file lists under that tenant and id, if it does: its
/// revocation is recorded as a row of origin `config`.
pub async fn revoke(
    store: &Store,
    tenant: &str,
    id: &str,
    config_key: Option<(&[u8; 32], &[&str])>,
    by: &str,
) -> Result<StoredKey, KeyError> {
    let mut transaction = store.begin().await?;
    let now = now_micros();
    let mut existing = find(&mut transaction, tenant, id).await?;
    if let (Some(key), Some((sha256, _))) = (&existing, config_key)
        && key.origin == Origin::Config
        && key.sha256 != *sha256
    {
        // The file now holds a different secret under this id: the row revoked the old one, which
        // is gone from the file anyway, so it may now record the revocation of the new one.
        sqlx::query("DELETE FROM api_keys WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&mut *transaction)
            .await?;
        existing = None;
    }
    let revoked = match (existing, config_key) {
        (Some(key), _) if !key.active() => {
            return Err(KeyError::AlreadyRevoked { tenant: tenant.into(), id: id.into() });
        }
        (Some(key), _) => {
            sqlx::query("UPDATE api_keys SET revoked_at = $1, revoked_by = $2 WHERE tenant = $3 AND id = $4")
                .bind(now)
                .bind(by)
                .bind(tenant)
                .bind(id)
                .execute(&mut *transaction)
                .await?;
            StoredKey { revoked_at: Some(now), revoked_by: Some(by.into()), ..key }
        }
        (None, Some((sha256, scopes))) => {
            let scopes = scopes.join(",");
            sqlx::query(
                "INSERT INTO api_keys (tenant, id, sha256, scopes, origin, created_at, created_by, revoked_at, revoked_by) \
                 VALUES ($1, $2, $3, $4, 'config', $5, 'configuration', $5, $6)",
            )
            .bind(tenant)
            .bind(id)
            .bind(hex::encode(sha256))
            .bind(&scopes)
            .bind(now)
            .bind(by)
            .execute(&mut *transaction)
            .await?;
            StoredKey {
                tenant: tenant.into(),
                id: id.into(),
                sha256: *sha256,
                scopes: scopes.split(',').filter(|scope| !scope.is_empty()).map(str::to_owned).collect(),
                origin: Origin::Config,
                created_at: now,
                created_by: "configuration".into(),
                revoked_at: Some(now),
                revoked_by: Some(by.into()),
            }
        }
        (None, None) => return Err(KeyError::NotFound { tenant: tenant.into(), id: id.into() }),
    };
    audit::append(&mut transaction, by, "key.revoke", &format!("{tenant}/{id} ({})", revoked.origin.name())).await?;
    transaction.commit().await?;
    Ok(revoked)
}
