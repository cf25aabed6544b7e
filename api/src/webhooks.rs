//! Webhooks: payout status changes from the outbox, delivered to each PSP's endpoint, signed.
//!
//! Signature header: `Railyard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//! A receiver recomputes the HMAC over the timestamp, a dot and the raw body with its secret
//! (`GET /v1/webhooks/secret`), compares in constant time, and rejects timestamps older than a few
//! minutes to stop replays. Deliveries are retried with exponential backoff and jitter up to
//! [`DELIVERY_ATTEMPTS_MAX`], every attempt is written to the delivery log, and a failed event can
//! be delivered again on request.

use std::sync::Arc;
use std::time::Duration;

use railyard_config::TreasuryConfig;
use railyard_store::{Store, now_micros};
use sqlx::Row;

/// Attempts before an event is marked failed (it stays re-deliverable by API).
pub const DELIVERY_ATTEMPTS_MAX: i64 = 8;
/// First retry delay; doubled each attempt, with up to 50% jitter, capped at [`RETRY_DELAY_MAX`].
pub const RETRY_DELAY: Duration = Duration::from_secs(1);
pub const RETRY_DELAY_MAX: Duration = Duration::from_secs(600);
/// How long one delivery may take.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Events one pass picks up.
pub const DELIVERY_BATCH_MAX: i64 = 100;
/// How often the deliverer looks for due events.
pub const DELIVERY_POLL: Duration = Duration::from_millis(200);

pub use railyard_store::vault::hmac_sha256;

/// The `Railyard-Signature` header value for `body` sent at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mac = hmac_sha256(secret.as_bytes(), format!("{timestamp}.{body}").as_bytes());
    format!("t={timestamp},v1={}", hex_encode(&mac))
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The tenant's signing secret, created on first use.
pub async fn secret_for(store: &Store, tenant: &str) -> Result<String, sqlx::Error> {
    let read = || {
        sqlx::query_scalar::<_, String>("SELECT secret FROM webhook_secrets WHERE tenant = $1")
            .bind(tenant)
            .fetch_optional(store.pool())
    };
    // Read first: the write (and its flush) happens once per tenant, not once per delivery.
    if let Some(secret) = read().await? {
        return Ok(secret);
    }
    let fresh = format!("whsec_{}{}", uuid_hex(), uuid_hex());
    sqlx::query(
        "INSERT INTO webhook_secrets (tenant, secret, created_at) VALUES ($1, $2, $3) ON CONFLICT (tenant) DO NOTHING",
    )
    .bind(tenant)
    .bind(&fresh)
    .bind(now_micros())
    .execute(store.pool())
    .await?;
    // Another instance may have created it first: its secret is the one.
    read().await?.ok_or(sqlx::Error::RowNotFound)
}

fn uuid_hex() -> String {
    // v4 UUIDs come from the operating system's cryptographic generator (getrandom).
    uuid::Uuid::new_v4().simple().to_string()
}

/// Delivers due events until the process stops.
pub async fn run(store: Store, config: Arc<TreasuryConfig>) {
    let client = reqwest::Client::builder().timeout(DELIVERY_TIMEOUT).build().unwrap_or_default();
    loop {
        if let Err(error) = deliver_due(&store, &config, &client).await {
            tracing::warn!("webhook delivery pass failed: {error}");
        }
        tokio::time::sleep(DELIVERY_POLL).await;
    }
}

/// One pass: every due, undelivered, unfailed event, oldest first.
pub async fn deliver_due(
    store: &Store,
    config: &TreasuryConfig,
    client: &reqwest::Client,
) -> Result<usize, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT payout_id, event, body, tenant, attempts FROM outbox \
         WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1 ORDER BY created_at LIMIT $2",
    )
    .bind(now_micros())
    .bind(DELIVERY_BATCH_MAX)
    .fetch_all(store.pool())
    .await?;
    if !rows.is_empty() {
        // An event is announced only once the saga step that queued it is durable.
        store.sync().await?;
    }
    // Bookkeeping goes through the saga steps' writer (one writer on SQLite, no waiting in its
    // busy handler) and is made durable by one shared flush at the end of the pass. A crash
    // before that flush can only lose "delivered" marks: those events are sent again
    // (at-least-once, as receivers must expect).
    let mut nowhere = Vec::new();
    let mut due = Vec::new();
    for row in rows {
        let payout_id: String = row.try_get(0)?;
        let event: String = row.try_get(1)?;
        let body: String = row.try_get(2)?;
        let tenant: String = row.try_get(3)?;
        let attempts: i64 = row.try_get(4)?;
        match config
            .tenants
            .iter()
            .find(|known| known.id.as_str() == tenant)
            .and_then(|known| known.webhook_url.clone())
        {
            Some(url) => due.push((payout_id, event, body, tenant, attempts, url)),
            None => nowhere.push((payout_id, event)),
        }
    }
    if !nowhere.is_empty() {
        // No endpoint configured: keep the events in the outbox as delivered-nowhere, in one transaction.
        let mut tx = store.begin_step().await?;
        for (payout_id, event) in &nowhere {
            sqlx::query("UPDATE outbox SET delivered_at = $1 WHERE payout_id = $2 AND event = $3")
                .bind(now_micros())
                .bind(payout_id)
                .bind(event)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    let mut delivered = 0;
    for (payout_id, event, body, tenant, attempts, url) in due {
        let secret = secret_for(store, &tenant).await?;
        let timestamp = chrono::Utc::now().timestamp();
        let result = client
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Railyard-Event", &event)
            .header("Railyard-Signature", signature(&secret, timestamp, &body))
            .body(body.clone())
            .send()
            .await;
        let (status, error) = match &result {
            Ok(response) => (Some(i64::from(response.status().as_u16())), None),
            Err(error) => (None, Some(error.to_string())),
        };
        let attempt = attempts + 1;
        let mut tx = store.begin_step().await?;
        sqlx::query("INSERT INTO webhook_deliveries (payout_id, event, attempt, at, status, error) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&payout_id)
            .bind(&event)
            .bind(attempt)
            .bind(now_micros())
            .bind(status)
            .bind(&error)
            .execute(&mut *tx)
            .await?;
        if status.is_some_and(|code| (200..300).contains(&code)) {
            delivered += 1;
            sqlx::query("UPDATE outbox SET delivered_at = $1, attempts = $2 WHERE payout_id = $3 AND event = $4")
                .bind(now_micros())
                .bind(attempt)
                .bind(&payout_id)
                .bind(&event)
                .execute(&mut *tx)
                .await?;
        } else if attempt >= DELIVERY_ATTEMPTS_MAX {
            sqlx::query("UPDATE outbox SET failed_at = $1, attempts = $2 WHERE payout_id = $3 AND event = $4")
                .bind(now_micros())
                .bind(attempt)
                .bind(&payout_id)
                .bind(&event)
                .execute(&mut *tx)
                .await?;
        } else {
            let exponent = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
            let base = RETRY_DELAY.saturating_mul(2_u32.saturating_pow(exponent)).min(RETRY_DELAY_MAX);
            // Up to 50% jitter, so many failing endpoints do not retry in lockstep.
            let jitter_permille = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * 500 / 255;
            let base_ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX / 2);
            let wait = Duration::from_millis(base_ms + base_ms * jitter_permille / 1000);
            sqlx::query("UPDATE outbox SET attempts = $1, next_attempt_at = $2 WHERE payout_id = $3 AND event = $4")
                .bind(attempt)
                .bind(now_micros() + i64::try_from(wait.as_micros()).unwrap_or(i64::MAX / 4))
                .bind(&payout_id)
                .bind(&event)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    store.sync().await?;
    Ok(delivered)
}

/// Makes a tenant's events for a payout deliverable again (after a failure or on request).
pub async fn redeliver(store: &Store, tenant: &str, payout_id: &str) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE outbox SET delivered_at = NULL, failed_at = NULL, attempts = 0, next_attempt_at = 0 \
         WHERE payout_id = $1 AND tenant = $2",
    )
    .bind(payout_id)
    .bind(tenant)
    .execute(store.pool())
    .await?;
    Ok(result.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2.
    #[test]
    fn hmac_matches_rfc_4231() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex_encode(&mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
