//! Liquidity: each rail's prefunded (nostro) position per currency, read live from the ledger;
//! alerts when a position crosses its low- or high-water mark; and rebalancing suggestions that
//! keep every rail above its low-water mark for the next hours, at the least FX cost.
//!
//! A position's `prefunded` is the nostro account's posted balance, `reserved` the liquidity held
//! by legs submitted and not yet resolved, `available` the difference: what new legs may use.

use std::time::Duration;

use chrono::Utc;
use railyard_config::TreasuryConfig;
use railyard_core::{Currency, Money};
use railyard_fx::{AmountSide, FxBook, QuoteRequest};
use railyard_saga::nostro_account;
use railyard_store::{Store, now_micros};
use serde::Serialize;
use sqlx::Row;

/// How often `railyard serve` compares positions with their marks.
pub const LIQUIDITY_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Where a position stands against its marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Available below the low-water mark.
    Low,
    Normal,
    /// Available above the high-water mark: idle money a rebalance could use elsewhere.
    High,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Low => "low",
            Level::Normal => "normal",
            Level::High => "high",
        }
    }
}

/// One rail's position in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Position {
    pub rail: String,
    pub currency: Currency,
    pub prefunded: Money,
    pub reserved: Money,
    pub available: Money,
    pub low_water: Option<Money>,
    pub high_water: Option<Money>,
    pub level: Level,
}

/// Every configured rail's positions, from the ledger.
pub async fn positions(store: &Store, config: &TreasuryConfig) -> Result<Vec<Position>, sqlx::Error> {
    let mut positions = Vec::new();
    for rail in &config.rails {
        for &currency in &rail.currencies {
            let account = nostro_account(rail.id.as_str(), currency);
            let row = sqlx::query("SELECT debits_posted, credits_posted, credits_pending FROM accounts WHERE id = $1")
                .bind(&account)
                .fetch_optional(store.pool())
                .await?;
            let Some(row) = row else { continue };
            let debits: i64 = row.try_get(0)?;
            let credits: i64 = row.try_get(1)?;
            let pending: i64 = row.try_get(2)?;
            let prefunded = debits.saturating_sub(credits);
            let available = prefunded.saturating_sub(pending);
            let marks = config.liquidity_for(rail.id.as_str(), currency);
            let low_water = marks.map(|marks| marks.low_water);
            let high_water = marks.and_then(|marks| marks.high_water);
            let level = if low_water.is_some_and(|low| available < low.minor_units()) {
                Level::Low
            } else if high_water.is_some_and(|high| available > high.minor_units()) {
                Level::High
            } else {
                Level::Normal
            };
            positions.push(Position {
                rail: rail.id.to_string(),
                currency,
                prefunded: Money::from_minor(prefunded, currency),
                reserved: Money::from_minor(pending, currency),
                available: Money::from_minor(available, currency),
                low_water,
                high_water,
                level,
            });
        }
    }
    Ok(positions)
}

/// An alert: raised when a position crossed a mark, cleared when it came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub id: String,
    pub rail: String,
    pub currency: Currency,
    pub level: Level,
    /// Available when the alert was raised.
    pub available: Money,
    /// The mark crossed.
    pub threshold: Money,
    pub raised_at: chrono::DateTime<Utc>,
    pub cleared_at: Option<chrono::DateTime<Utc>>,
}

/// Open alerts, newest first.
pub async fn open_alerts(store: &Store) -> Result<Vec<Alert>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, rail, currency, level, available, threshold, raised_at, cleared_at FROM liquidity_alerts \
         WHERE cleared_at IS NULL ORDER BY raised_at DESC",
    )
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let currency = Currency::from_code(&row.try_get::<String, _>(2)?)
                .map_err(|error| sqlx::Error::Decode(error.to_string().into()))?;
            Ok(Alert {
                id: row.try_get(0)?,
                rail: row.try_get(1)?,
                currency,
                level: if row.try_get::<String, _>(3)? == "low" { Level::Low } else { Level::High },
                available: Money::from_minor(row.try_get(4)?, currency),
                threshold: Money::from_minor(row.try_get(5)?, currency),
                raised_at: chrono::DateTime::from_timestamp_micros(row.try_get(6)?).unwrap_or_default(),
                cleared_at: row.try_get::<Option<i64>, _>(7)?.and_then(chrono::DateTime::from_timestamp_micros),
            })
        })
        .collect()
}

/// The tenant whose webhook receives treasury events: the first with a treasury-scoped key.
pub fn treasury_tenant(config: &TreasuryConfig) -> Option<String> {
    config
        .tenants
        .iter()
        .find(|tenant| tenant.keys.iter().any(|key| key.scopes.contains(&railyard_config::Scope::Treasury)))
        .map(|tenant| tenant.id.to_string())
}

/// Compares every position with its marks: raises an alert for each newly crossed mark, clears
/// those whose position came back, and queues a webhook (`liquidity.low`, `liquidity.high`,
/// `liquidity.normal`) to the treasury tenant for each change. Returns the changes.
pub async fn check(store: &Store, config: &TreasuryConfig) -> Result<Vec<(Alert, &'static str)>, sqlx::Error> {
    let positions = positions(store, config).await?;
    let open = open_alerts(store).await?;
    let tenant = treasury_tenant(config).unwrap_or_default();
    let mut changes = Vec::new();
    for position in positions {
        let current = open.iter().find(|alert| alert.rail == position.rail && alert.currency == position.currency);
        if current.map(|alert| alert.level) == Some(position.level) {
            continue;
        }
        if current.is_none() && position.level == Level::Normal {
            continue;
        }
        let mut tx = store.begin().await?;
        let now = now_micros();
        if let Some(alert) = current {
            sqlx::query("UPDATE liquidity_alerts SET cleared_at = $1 WHERE id = $2 AND cleared_at IS NULL")
                .bind(now)
                .bind(&alert.id)
                .execute(&mut *tx)
                .await?;
            let mut cleared = alert.clone();
            cleared.cleared_at = chrono::DateTime::from_timestamp_micros(now);
            if position.level == Level::Normal {
                queue(&mut tx, &tenant, &cleared, "liquidity.normal", &position).await?;
                changes.push((cleared, "liquidity.normal"));
            }
        }
        if position.level != Level::Normal {
            let threshold = match position.level {
                Level::Low => position.low_water,
                _ => position.high_water,
            }
            .unwrap_or(Money::zero(position.currency));
            let alert = Alert {
                id: format!("liq_{}", uuid_like(now, &position.rail, position.currency)),
                rail: position.rail.clone(),
                currency: position.currency,
                level: position.level,
                available: position.available,
                threshold,
                raised_at: chrono::DateTime::from_timestamp_micros(now).unwrap_or_default(),
                cleared_at: None,
            };
            sqlx::query(
                "INSERT INTO liquidity_alerts (id, rail, currency, level, available, threshold, raised_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&alert.id)
            .bind(&alert.rail)
            .bind(alert.currency.code())
            .bind(alert.level.as_str())
            .bind(alert.available.minor_units())
            .bind(alert.threshold.minor_units())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let event = if position.level == Level::Low { "liquidity.low" } else { "liquidity.high" };
            queue(&mut tx, &tenant, &alert, event, &position).await?;
            changes.push((alert, event));
        }
        tx.commit().await?;
    }
    Ok(changes)
}

fn uuid_like(now: i64, rail: &str, currency: Currency) -> String {
    format!("{now:x}_{rail}_{}", currency.code().to_lowercase())
}

async fn queue(
    tx: &mut sqlx::AnyConnection,
    tenant: &str,
    alert: &Alert,
    event: &str,
    position: &Position,
) -> Result<(), sqlx::Error> {
    if tenant.is_empty() {
        return Ok(());
    }
    let body = serde_json::json!({
        "event": event,
        "alert_id": alert.id,
        "rail": position.rail,
        "currency": position.currency.code(),
        "available": position.available.amount_text(),
        "reserved": position.reserved.amount_text(),
        "prefunded": position.prefunded.amount_text(),
        "low_water": position.low_water.map(|mark| mark.amount_text()),
        "high_water": position.high_water.map(|mark| mark.amount_text()),
        "occurred_at": Utc::now().to_rfc3339(),
    });
    // The outbox is keyed by (subject, event): the alert id is the subject.
    railyard_store::outbox::queue(&mut *tx, &alert.id, event, &body.to_string(), tenant).await?;
    Ok(())
}

/// Runs forever inside `railyard serve`: checks the marks every `every`.
pub async fn watch(store: Store, config: std::sync::Arc<TreasuryConfig>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match check(&store, &config).await {
            Ok(changes) => {
                for (alert, event) in changes {
                    tracing::warn!(rail = %alert.rail, currency = %alert.currency.code(), available = %alert.available, threshold = %alert.threshold, "{event}");
                }
            }
            Err(error) => tracing::warn!("liquidity check failed: {error}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rebalancing.

/// A position with its recent flow and where it will be after the horizon.
#[derive(Debug, Clone, Serialize)]
pub struct Projection {
    #[serde(flatten)]
    pub position: Position,
    /// Paid out on the rail per hour, averaged over the window.
    pub outflow_per_hour: Money,
    /// Expected to be paid out over the horizon.
    pub projected_outflow: Money,
    /// Available after the horizon with no top-up.
    pub projected_available: Money,
    /// What it needs to stay at its low-water mark through the horizon.
    pub shortfall: Money,
    /// What it can give and still stay at its low-water mark (above the high-water mark first).
    pub surplus: Money,
}

/// A suggested movement.
#[derive(Debug, Clone, Serialize)]
pub struct Suggestion {
    /// `transfer` between two rails' accounts, or `top_up` from the house's bank.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_rail: Option<String>,
    pub to_rail: String,
    pub send: Money,
    pub receive: Money,
    /// What the conversion costs (the provider's spread against the mid), in the receiving currency.
    pub fx_cost: Money,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fx_provider: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub horizon_hours: u32,
    pub window_hours: u32,
    pub positions: Vec<Projection>,
    pub suggestions: Vec<Suggestion>,
}

/// Most movements one plan suggests.
pub const SUGGESTIONS_MAX: usize = 256;

/// Outflow per nostro account over the last `window`: liquidity of legs that executed.
async fn outflows(store: &Store, window: Duration) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let since = now_micros() - i64::try_from(window.as_micros()).unwrap_or(i64::MAX / 2);
    let rows = sqlx::query(
        "SELECT t.credit_account, CAST(SUM(t.amount) AS BIGINT) FROM transfers t WHERE t.kind = 'pending' \
         AND t.credit_account LIKE 'nostro:%' AND t.created_at >= $1 \
         AND EXISTS (SELECT 1 FROM transfers r WHERE r.pending_id = t.id AND r.kind = 'post_pending') \
         GROUP BY t.credit_account",
    )
    .bind(since)
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?))).collect()
}

/// Suggests top-ups and transfers between rails that keep every rail with a low-water mark above
/// it for the next `horizon`, projecting each rail's outflow over the last `window`. Same-currency
/// transfers come first (no FX cost), then conversions from the rail with the cheapest quote, then
/// top-ups from the house's bank for what is left.
pub async fn rebalance(
    store: &Store,
    config: &TreasuryConfig,
    fx: &FxBook,
    horizon: Duration,
    window: Duration,
) -> Result<Plan, sqlx::Error> {
    let flows = outflows(store, window).await?;
    let window_hours = (window.as_secs() / 3600).max(1);
    let horizon_hours = horizon.as_secs() / 3600;
    let mut projections: Vec<Projection> = Vec::new();
    for position in positions(store, config).await? {
        let currency = position.currency;
        let account = nostro_account(&position.rail, currency);
        let flow = flows.iter().find(|(id, _)| *id == account).map(|(_, amount)| *amount).unwrap_or(0);
        // Rounded up: a projection of need errs on the side of more.
        let per_hour = ceil_div(flow, i64::try_from(window_hours).unwrap_or(1));
        let projected = per_hour.saturating_mul(i64::try_from(horizon_hours).unwrap_or(0));
        let projected_available = position.available.minor_units().saturating_sub(projected);
        let low = position.low_water.map(|mark| mark.minor_units());
        let shortfall = low.map(|low| low.saturating_sub(projected_available).max(0)).unwrap_or(0);
        // A rail gives what it holds above its low-water mark after its own projected outflow.
        let surplus = projected_available.saturating_sub(low.unwrap_or(0)).max(0);
        projections.push(Projection {
            outflow_per_hour: Money::from_minor(per_hour, currency),
            projected_outflow: Money::from_minor(projected, currency),
            projected_available: Money::from_minor(projected_available, currency),
            shortfall: Money::from_minor(shortfall, currency),
            surplus: Money::from_minor(surplus, currency),
            position,
        });
    }
    // What each rail can still give, by index.
    let mut left: Vec<i64> = projections.iter().map(|projection| projection.surplus.minor_units()).collect();
    let mut suggestions = Vec::new();
    let mut needy: Vec<usize> =
        (0..projections.len()).filter(|index| projections[*index].shortfall.is_positive()).collect();
    needy.sort_by_key(|index| std::cmp::Reverse(projections[*index].shortfall.minor_units()));
    for need_index in needy {
        let target = &projections[need_index];
        let currency = target.position.currency;
        let mut remaining = target.shortfall.minor_units();
        let reason = format!(
            "{} {}: {} available, {} expected out over {horizon_hours} h, low-water mark {}",
            target.position.rail,
            currency.code(),
            target.position.available,
            target.projected_outflow,
            target.position.low_water.map(|mark| mark.to_string()).unwrap_or_default()
        );
        // 1. The same currency at another rail: no conversion.
        let mut donors: Vec<usize> = (0..projections.len())
            .filter(|index| {
                *index != need_index && projections[*index].position.currency == currency && left[*index] > 0
            })
            .collect();
        // The largest surplus first: fewer, larger movements.
        donors.sort_by_key(|index| std::cmp::Reverse(left[*index]));
        for donor in donors {
            if remaining == 0 || suggestions.len() >= SUGGESTIONS_MAX {
                break;
            }
            let amount = remaining.min(left[donor]);
            left[donor] -= amount;
            remaining -= amount;
            let money = Money::from_minor(amount, currency);
            suggestions.push(Suggestion {
                action: "transfer",
                from_rail: Some(projections[donor].position.rail.clone()),
                to_rail: target.position.rail.clone(),
                send: money,
                receive: money,
                fx_cost: Money::zero(currency),
                fx_provider: None,
                reason: reason.clone(),
            });
        }
        // 2. Another currency, converted: the cheapest quote among rails that can cover the rest.
        while remaining > 0 && suggestions.len() < SUGGESTIONS_MAX {
            let wanted = Money::from_minor(remaining, currency);
            let mut best: Option<(usize, railyard_fx::Quote)> = None;
            for donor in 0..projections.len() {
                let from = projections[donor].position.currency;
                if donor == need_index || from == currency || left[donor] <= 0 {
                    continue;
                }
                let request = QuoteRequest { base: from, quote: currency, amount: wanted, side: AmountSide::Deliver };
                let Ok(quotes) = fx.quote(&request, Utc::now()) else { continue };
                let Some(quote) = quotes.into_iter().next() else { continue };
                if quote.send.minor_units() > left[donor] {
                    continue;
                }
                if best
                    .as_ref()
                    .is_none_or(|(_, current)| quote.spread_paid.minor_units() < current.spread_paid.minor_units())
                {
                    best = Some((donor, quote));
                }
            }
            let Some((donor, quote)) = best else { break };
            left[donor] -= quote.send.minor_units();
            remaining = 0;
            suggestions.push(Suggestion {
                action: "transfer",
                from_rail: Some(projections[donor].position.rail.clone()),
                to_rail: target.position.rail.clone(),
                send: quote.send,
                receive: quote.receive,
                fx_cost: quote.spread_paid,
                fx_provider: Some(quote.provider.to_string()),
                reason: reason.clone(),
            });
        }
        // 3. What no rail can give: a top-up from the house's bank in the rail's currency.
        if remaining > 0 && suggestions.len() < SUGGESTIONS_MAX {
            let money = Money::from_minor(remaining, currency);
            suggestions.push(Suggestion {
                action: "top_up",
                from_rail: None,
                to_rail: target.position.rail.clone(),
                send: money,
                receive: money,
                fx_cost: Money::zero(currency),
                fx_provider: None,
                reason,
            });
        }
    }
    Ok(Plan {
        horizon_hours: u32::try_from(horizon_hours).unwrap_or(u32::MAX),
        window_hours: u32::try_from(window_hours).unwrap_or(u32::MAX),
        positions: projections,
        suggestions,
    })
}

fn ceil_div(value: i64, divisor: i64) -> i64 {
    if divisor <= 0 {
        return value;
    }
    let quotient = value / divisor;
    if value % divisor > 0 { quotient + 1 } else { quotient }
}
