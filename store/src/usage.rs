//! What each rail has been given to send per UTC day and currency, held against its daily cap.
//!
//! The saga takes a leg's amount here in the transaction that reserves the leg's liquidity
//! ([`take`]), and only if the day's total stays within the cap: two payouts racing for the last
//! of a cap cannot both get it. A definitive reject gives the amount back ([`give_back`]); an
//! executed leg keeps it. Routing reads the day's totals ([`on_day`]) to stop offering a rail
//! before its cap refuses a payout. Counted for every rail, capped or not, so a cap set during
//! the day applies to what the rail was already given. One row per rail, currency and day.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use railyard_core::{Currency, Money};
use sqlx::{AnyConnection, Row};

/// The UTC day `at` falls on, as days since 1970-01-01.
pub fn day_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(86_400)
}

/// Adds `amount` to `rail`'s use on `day` if the total stays within `cap` (no cap: always).
/// Returns false, changing nothing, when it would pass the cap.
pub async fn take(
    transaction: &mut AnyConnection,
    rail: &str,
    amount: Money,
    cap: Option<Money>,
    day: i64,
) -> Result<bool, sqlx::Error> {
    let cap = cap.map_or(i64::MAX, |cap| cap.minor_units());
    if amount.minor_units() > cap {
        return Ok(false);
    }
    lock_journal_first(transaction).await?;
    let taken = sqlx::query(
        "INSERT INTO rail_usage (rail, currency, day, used) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (rail, currency, day) DO UPDATE SET used = rail_usage.used + excluded.used \
         WHERE rail_usage.used + excluded.used <= $5",
    )
    .bind(rail)
    .bind(amount.currency().code())
    .bind(day)
    .bind(amount.minor_units())
    .bind(cap)
    .execute(&mut *transaction)
    .await?;
    Ok(taken.rows_affected() == 1)
}

/// [`take`] for several rails and currencies at once (each pair at most once), in one statement:
/// per `(rail, amount, cap)`, whether its amount was taken.
pub async fn take_many(
    transaction: &mut AnyConnection,
    takes: &[(&str, Money, Option<Money>)],
    day: i64,
) -> Result<Vec<bool>, sqlx::Error> {
    let mut seen = std::collections::BTreeSet::new();
    let mut rows = Vec::with_capacity(takes.len());
    for (rail, amount, cap) in takes {
        let currency = amount.currency().code();
        if !seen.insert((*rail, currency)) {
            return Err(sqlx::Error::Protocol(format!("{rail} {currency} taken twice in one statement")));
        }
        let cap = cap.map_or(i64::MAX, |cap| cap.minor_units());
        // An amount past the cap on its own is never taken, even on a day with no row yet.
        if amount.minor_units() <= cap {
            rows.push((*rail, currency, amount.minor_units(), cap));
        }
    }
    let mut taken = std::collections::BTreeSet::new();
    if !rows.is_empty() {
        lock_journal_first(transaction).await?;
        let returned = crate::bulk::fetch_all(
            transaction,
            "WITH v AS ({rows}) INSERT INTO rail_usage (rail, currency, day, used) \
             SELECT column1, column2, $2, column3 FROM v WHERE true \
             ON CONFLICT (rail, currency, day) DO UPDATE SET used = rail_usage.used + excluded.used \
             WHERE rail_usage.used + excluded.used <= \
             (SELECT column4 FROM v WHERE column1 = excluded.rail AND column2 = excluded.currency) \
             RETURNING rail, currency",
            &["TEXT", "TEXT", "BIGINT", "BIGINT"],
            &rows,
            &[day.into()],
        )
        .await?;
        for row in returned {
            taken.insert((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?));
        }
    }
    Ok(takes
        .iter()
        .map(|(rail, amount, _)| taken.contains(&(rail.to_string(), amount.currency().code().to_string())))
        .collect())
}

/// Gives `amount` back to `rail`'s use on `day` (never below zero: a reservation taken on the
/// day before and released today lowers today's count at most to nothing).
pub async fn give_back(
    transaction: &mut AnyConnection,
    rail: &str,
    amount: Money,
    day: i64,
) -> Result<(), sqlx::Error> {
    lock_journal_first(transaction).await?;
    sqlx::query(
        "UPDATE rail_usage SET used = CASE WHEN used > $4 THEN used - $4 ELSE 0 END \
         WHERE rail = $1 AND currency = $2 AND day = $3",
    )
    .bind(rail)
    .bind(amount.currency().code())
    .bind(day)
    .bind(amount.minor_units())
    .execute(&mut *transaction)
    .await?;
    Ok(())
}

/// The transactions that take or give back use also write the ledger: on PostgreSQL they lock the
/// journal head before a usage row, in the one order every ledger writer keeps, so two of them
/// cannot deadlock (one cheap statement when the transaction holds it already; nothing on SQLite).
async fn lock_journal_first(transaction: &mut AnyConnection) -> Result<(), sqlx::Error> {
    match crate::ledger::lock_journal(transaction).await {
        Ok(()) => Ok(()),
        Err(crate::ledger::LedgerError::Database(error)) => Err(error),
        Err(error) => Err(sqlx::Error::Protocol(error.to_string())),
    }
}

/// Every rail's use on `day`, per currency.
pub async fn on_day(
    pool: &sqlx::AnyPool,
    day: i64,
) -> Result<BTreeMap<String, BTreeMap<Currency, Money>>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT rail, currency, used FROM rail_usage WHERE day = $1").bind(day).fetch_all(pool).await?;
    let mut used: BTreeMap<String, BTreeMap<Currency, Money>> = BTreeMap::new();
    for row in rows {
        let code: String = row.try_get(1)?;
        let currency = Currency::from_code(&code).map_err(|error| sqlx::Error::Decode(error.to_string().into()))?;
        used.entry(row.try_get(0)?).or_default().insert(currency, Money::from_minor(row.try_get(2)?, currency));
    }
    Ok(used)
}
