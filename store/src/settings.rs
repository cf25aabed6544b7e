//! Treasury settings changed at run time: the newest value of each, written with its audit entry
//! in one transaction, so the log never shows a change the table does not hold and vice versa.
//! The store does not interpret keys or values (the actors crate does).

use sqlx::Row;

use crate::{Store, audit, now_micros};

/// Settings kept at most; one per rail and currency and kind, so a real configuration stays far
/// below it. A change past it is refused rather than growing the table without bound.
pub const SETTINGS_MAX: i64 = 10_000;

/// A stored setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: String,
    pub changed_at: i64,
    pub changed_by: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    #[error("the store holds {SETTINGS_MAX} treasury settings already")]
    TooMany,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Writes `value` for `key` (or removes the key when `value` is `None`) and appends the audit entry
/// `action` / `detail` by `by`, in one transaction.
pub async fn record(
    store: &Store,
    by: &str,
    action: &str,
    detail: &str,
    key: &str,
    value: Option<&str>,
) -> Result<audit::AuditEntry, SettingError> {
    let mut transaction = store.begin().await?;
    match value {
        Some(value) => {
            let exists = sqlx::query("SELECT 1 FROM treasury_settings WHERE key = $1")
                .bind(key)
                .fetch_optional(&mut *transaction)
                .await?
                .is_some();
            if !exists {
                let count: i64 = sqlx::query("SELECT COUNT(*) FROM treasury_settings")
                    .fetch_one(&mut *transaction)
                    .await?
                    .try_get(0)?;
                if count >= SETTINGS_MAX {
                    return Err(SettingError::TooMany);
                }
            }
            sqlx::query(
                "INSERT INTO treasury_settings (key, value, changed_at, changed_by) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, changed_at = excluded.changed_at, \
                 changed_by = excluded.changed_by",
            )
            .bind(key)
            .bind(value)
            .bind(now_micros())
            .bind(by)
            .execute(&mut *transaction)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM treasury_settings WHERE key = $1").bind(key).execute(&mut *transaction).await?;
        }
    }
    let entry = audit::append(&mut transaction, by, action, detail).await?;
    transaction.commit().await?;
    Ok(entry)
}

/// Every stored setting, in the order they were last changed.
pub async fn list(store: &Store) -> Result<Vec<Setting>, sqlx::Error> {
    let rows = sqlx::query("SELECT key, value, changed_at, changed_by FROM treasury_settings ORDER BY changed_at, key")
        .fetch_all(store.pool())
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Setting {
                key: row.try_get("key")?,
                value: row.try_get("value")?,
                changed_at: row.try_get("changed_at")?,
                changed_by: row.try_get("changed_by")?,
            })
        })
        .collect()
}
