//! Idempotency records, per tenant: the same key with the same request replays the stored answer;
//! with a different request it is a conflict; concurrent first uses race to exactly one winner.

use serde::Serialize;
use sqlx::{Any, Row, Transaction};

use crate::now_micros;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdempotencyRecord {
    pub tenant: String,
    pub key: String,
    pub request_hash: String,
    /// What the first request created (a payout id).
    pub resource_id: String,
    pub response_status: Option<i64>,
    pub response_body: Option<String>,
    pub created_at: i64,
}

/// The outcome of claiming a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First use: the caller goes on and creates `resource_id`.
    New,
    /// Same key, same request, answer stored: return it, marked as a replay.
    Replay(IdempotencyRecord),
    /// Same key, same request, the first request has not stored its answer yet.
    InProgress(IdempotencyRecord),
    /// Same key, different request: refuse (409), change nothing.
    Conflict(IdempotencyRecord),
}

fn record(row: &sqlx::any::AnyRow) -> Result<IdempotencyRecord, sqlx::Error> {
    Ok(IdempotencyRecord {
        tenant: row.try_get("tenant")?,
        key: row.try_get("key")?,
        request_hash: row.try_get("request_hash")?,
        resource_id: row.try_get("resource_id")?,
        response_status: row.try_get("response_status")?,
        response_body: row.try_get("response_body")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Claims `key` for `tenant`. Under concurrency exactly one caller gets [`Claim::New`]: the insert
/// waits on the winner's row and then finds it.
pub async fn claim(
    transaction: &mut Transaction<'_, Any>,
    tenant: &str,
    key: &str,
    request_hash: &str,
    resource_id: &str,
) -> Result<Claim, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency (tenant, key, request_hash, resource_id, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (tenant, key) DO NOTHING",
    )
    .bind(tenant)
    .bind(key)
    .bind(request_hash)
    .bind(resource_id)
    .bind(now_micros())
    .execute(&mut **transaction)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::New);
    }
    let row = sqlx::query(
        "SELECT tenant, key, request_hash, resource_id, response_status, response_body, created_at FROM idempotency \
         WHERE tenant = $1 AND key = $2",
    )
    .bind(tenant)
    .bind(key)
    .fetch_one(&mut **transaction)
    .await?;
    let existing = record(&row)?;
    Ok(if existing.request_hash != request_hash {
        Claim::Conflict(existing)
    } else if existing.response_status.is_some() {
        Claim::Replay(existing)
    } else {
        Claim::InProgress(existing)
    })
}

/// Stores the answer the first request gave, for replays.
pub async fn store_response(
    transaction: &mut Transaction<'_, Any>,
    tenant: &str,
    key: &str,
    status: i64,
    body: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE idempotency SET response_status = $1, response_body = $2 WHERE tenant = $3 AND key = $4")
        .bind(status)
        .bind(body)
        .bind(tenant)
        .bind(key)
        .execute(&mut **transaction)
        .await?;
    Ok(())
}
