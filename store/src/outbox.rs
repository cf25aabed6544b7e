//! The webhook outbox: an event for a PSP is a row written in the same transaction as the change
//! it reports, keyed by (subject, event), so it is queued exactly once and never for a change that
//! was rolled back. The API's webhook worker delivers the rows.

use sqlx::{Any, Executor};

/// Queues `event` about `subject` (a payout or alert id) for `tenant`, with its JSON `body`.
/// Returns false when that subject's event was queued already (nothing changes then).
pub async fn queue<'c, E>(
    executor: E,
    subject: &str,
    event: &str,
    body: &str,
    tenant: &str,
) -> Result<bool, sqlx::Error>
where
    E: Executor<'c, Database = Any>,
{
    let written = sqlx::query(
        "INSERT INTO outbox (payout_id, event, body, created_at, tenant) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (payout_id, event) DO NOTHING",
    )
    .bind(subject)
    .bind(event)
    .bind(body)
    .bind(crate::now_micros())
    .bind(tenant)
    .execute(executor)
    .await?;
    Ok(written.rows_affected() == 1)
}
