//! Settlement windows for net-settled rails.
//!
//! A gross rail settles each payout on its own: the leg's posting moves the rail's prefunded
//! account, and that is all. A net rail lets payouts run against its prefunded account (the
//! house's net debit cap at the rail) during a window; at the window's close the net position per
//! currency is computed, and at settlement (the configured `delay_hours` later: T+1 for the card
//! networks) the house pays it from its bank in one movement, which restores the prefunded
//! account. Windows move `open → closed → settling → settled`; closing one opens the next.
//!
//! A window holds the rail legs posted with journal sequence numbers in `(from, to]`: the journal
//! sequence is assigned under the journal head's lock, so a leg committed after the close reads
//! the head always lands in the next window, and no leg is in two windows or none.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use railyard_config::{SettlementModel, TreasuryConfig};
use railyard_core::{Currency, Money};
use railyard_saga::nostro_account;
use railyard_store::ledger::{self, LedgerError, TransferSpec};
use railyard_store::{Store, now_micros};
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// How often `railyard serve` closes and settles due windows.
pub const SETTLEMENT_CHECK_EVERY: Duration = Duration::from_secs(5);
/// Most windows one listing returns.
pub const WINDOWS_PAGE_MAX: i64 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowState {
    Open,
    Closed,
    Settling,
    Settled,
}

impl WindowState {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowState::Open => "open",
            WindowState::Closed => "closed",
            WindowState::Settling => "settling",
            WindowState::Settled => "settled",
        }
    }

    fn parse(text: &str) -> Option<WindowState> {
        [WindowState::Open, WindowState::Closed, WindowState::Settling, WindowState::Settled]
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    pub id: String,
    pub rail: String,
    pub number: i64,
    pub state: WindowState,
    pub from_sequence: i64,
    pub to_sequence: Option<i64>,
    pub opened_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub settled_at: Option<DateTime<Utc>>,
}

/// A window's net position in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPosition {
    pub currency: Currency,
    pub payouts: usize,
    /// Paid out through the rail.
    pub gross_out: Money,
    /// Owed to the rail: what the settlement moves (payouts only flow out today, so it equals
    /// `gross_out`; returns through the rail would reduce it).
    pub net: Money,
}

/// One PSP's share of a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantTotal {
    pub tenant: String,
    pub currency: Currency,
    pub payouts: usize,
    pub amount: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub id: String,
    pub debit: String,
    pub credit: String,
    pub amount: Money,
}

/// What a window settled: computed when it starts settling, kept with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementReport {
    pub window: String,
    pub rail: String,
    pub number: i64,
    pub from_sequence: i64,
    pub to_sequence: i64,
    pub opened_at: DateTime<Utc>,
    pub closed_at: DateTime<Utc>,
    pub payouts: usize,
    pub positions: Vec<NetPosition>,
    pub by_tenant: Vec<TenantTotal>,
    pub postings: Vec<Posting>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettlementError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("no rail {0} settles net")]
    NotNet(String),
    #[error("no window {0}")]
    NoWindow(String),
    #[error("window {id} is {state:?}; only a closed window settles")]
    WrongState { id: String, state: WindowState },
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

fn at(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

fn window_id(rail: &str, number: i64) -> String {
    format!("{rail}:w{number}")
}

fn read_window(row: &sqlx::any::AnyRow) -> Result<Window, SettlementError> {
    let state: String = row.try_get("state")?;
    Ok(Window {
        id: row.try_get("id")?,
        rail: row.try_get("rail")?,
        number: row.try_get("number")?,
        state: WindowState::parse(&state).ok_or_else(|| SettlementError::Corrupt(format!("window state {state:?}")))?,
        from_sequence: row.try_get("from_sequence")?,
        to_sequence: row.try_get("to_sequence")?,
        opened_at: at(row.try_get("opened_at")?),
        closed_at: row.try_get::<Option<i64>, _>("closed_at")?.map(at),
        settled_at: row.try_get::<Option<i64>, _>("settled_at")?.map(at),
    })
}

const COLUMNS: &str = "id, rail, number, state, from_sequence, to_sequence, opened_at, closed_at, settled_at";

/// Windows, newest first; of one rail when given.
pub async fn windows(store: &Store, rail: Option<&str>) -> Result<Vec<Window>, SettlementError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM settlement_windows WHERE ($1 = '' OR rail = $1) ORDER BY opened_at DESC, number DESC LIMIT $2"
    )))
    .bind(rail.unwrap_or(""))
    .bind(WINDOWS_PAGE_MAX)
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(read_window).collect()
}

pub async fn window(store: &Store, id: &str) -> Result<Window, SettlementError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM settlement_windows WHERE id = $1")))
        .bind(id)
        .fetch_optional(store.pool())
        .await?
        .ok_or_else(|| SettlementError::NoWindow(id.into()))?;
    read_window(&row)
}

/// The rails that settle net.
pub fn net_rails(config: &TreasuryConfig) -> Vec<&railyard_config::RailConfig> {
    config.rails.iter().filter(|rail| rail.settlement.model == SettlementModel::Net).collect()
}

async fn journal_sequence(tx: &mut sqlx::AnyConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT sequence FROM journal_head WHERE id = 1").fetch_one(&mut *tx).await
}

/// Opens the first window of every net rail that has none open.
pub async fn ensure_open(store: &Store, config: &TreasuryConfig) -> Result<(), SettlementError> {
    for rail in net_rails(config) {
        let mut tx = store.begin().await?;
        let open: Option<String> =
            sqlx::query_scalar("SELECT id FROM settlement_windows WHERE rail = $1 AND state = 'open'")
                .bind(rail.id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if open.is_some() {
            continue;
        }
        let last: Option<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT number, to_sequence FROM settlement_windows WHERE rail = $1 ORDER BY number DESC LIMIT 1",
        )
        .bind(rail.id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        // The first window starts at the journal's current head: earlier legs predate net settlement.
        let (number, from) = match last {
            Some((number, to)) => (number + 1, to.unwrap_or(0)),
            None => (1, journal_sequence(&mut tx).await?),
        };
        let inserted = sqlx::query(
            "INSERT INTO settlement_windows (id, rail, number, state, from_sequence, opened_at) VALUES ($1, $2, $3, 'open', $4, $5) \
             ON CONFLICT DO NOTHING",
        )
        .bind(window_id(rail.id.as_str(), number))
        .bind(rail.id.as_str())
        .bind(number)
        .bind(from)
        .bind(now_micros())
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            tx.commit().await?;
        }
    }
    Ok(())
}

/// Who closes and settles windows on their schedule, in the audit log.
pub const SCHEDULE_ACTOR: &str = "railyard/settlement-schedule";

/// Closes a net rail's open window at the journal's current head and opens the next one, in one
/// transaction with its audit entry (`settlement.close`, by `by`). Returns the closed window.
pub async fn close(store: &Store, config: &TreasuryConfig, rail: &str, by: &str) -> Result<Window, SettlementError> {
    if !net_rails(config).iter().any(|net| net.id.as_str() == rail) {
        return Err(SettlementError::NotNet(rail.into()));
    }
    ensure_open(store, config).await?;
    let mut tx = store.begin().await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM settlement_windows WHERE rail = $1 AND state = 'open'"
    )))
    .bind(rail)
    .fetch_one(&mut *tx)
    .await?;
    let open = read_window(&row)?;
    let head = journal_sequence(&mut tx).await?;
    let now = now_micros();
    let closed = sqlx::query(
        "UPDATE settlement_windows SET state = 'closed', to_sequence = $1, closed_at = $2 WHERE id = $3 AND state = 'open'",
    )
    .bind(head)
    .bind(now)
    .bind(&open.id)
    .execute(&mut *tx)
    .await?;
    if closed.rows_affected() != 1 {
        return Err(SettlementError::WrongState { id: open.id, state: WindowState::Closed });
    }
    sqlx::query(
        "INSERT INTO settlement_windows (id, rail, number, state, from_sequence, opened_at) VALUES ($1, $2, $3, 'open', $4, $5)",
    )
    .bind(window_id(rail, open.number + 1))
    .bind(rail)
    .bind(open.number + 1)
    .bind(head)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let detail = format!(
        "{}: journal entries {} to {head}; {} opened",
        open.id,
        open.from_sequence,
        window_id(rail, open.number + 1)
    );
    railyard_store::audit::append(&mut tx, by, "settlement.close", &detail).await?;
    tx.commit().await?;
    tracing::info!(window = %open.id, to_sequence = head, "settlement window closed");
    window(store, &open.id).await
}

/// The legs a closed window holds: (payout, tenant, posted amount).
async fn window_legs(store: &Store, window: &Window) -> Result<Vec<(String, String, Money)>, SettlementError> {
    let to = window.to_sequence.ok_or_else(|| SettlementError::Corrupt(format!("{} has no end", window.id)))?;
    let rows = sqlx::query(
        "SELECT t.payout_id, p.tenant, r.amount, r.currency FROM transfers r \
         JOIN transfers t ON t.id = r.pending_id JOIN payouts p ON p.id = t.payout_id \
         WHERE r.kind = 'post_pending' AND t.credit_account LIKE $1 AND r.sequence > $2 AND r.sequence <= $3 \
         ORDER BY r.sequence",
    )
    .bind(format!("nostro:{}:%", window.rail))
    .bind(window.from_sequence)
    .bind(to)
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let currency = Currency::from_code(&row.try_get::<String, _>(3)?)
                .map_err(|error| SettlementError::Corrupt(error.to_string()))?;
            Ok((row.try_get(0)?, row.try_get(1)?, Money::from_minor(row.try_get(2)?, currency)))
        })
        .collect()
}

/// Settles a closed window: computes its report (kept with it, state `settling`), then posts one
/// movement per currency from the house's bank to the rail, which restores its prefunded account
/// (state `settled`), with its audit entry (`settlement.settle`, by `by`). Resumes a window left
/// `settling`; a settled window returns its report and records nothing.
pub async fn settle(store: &Store, id: &str, by: &str) -> Result<SettlementReport, SettlementError> {
    let current = window(store, id).await?;
    let report = match current.state {
        WindowState::Open => return Err(SettlementError::WrongState { id: id.into(), state: current.state }),
        WindowState::Settling | WindowState::Settled => report(store, id).await?,
        WindowState::Closed => {
            let legs = window_legs(store, &current).await?;
            let mut positions: BTreeMap<&'static str, NetPosition> = BTreeMap::new();
            let mut tenants: BTreeMap<(String, &'static str), TenantTotal> = BTreeMap::new();
            for (_, tenant, amount) in &legs {
                let currency = amount.currency();
                let position = positions.entry(currency.code()).or_insert(NetPosition {
                    currency,
                    payouts: 0,
                    gross_out: Money::zero(currency),
                    net: Money::zero(currency),
                });
                position.payouts += 1;
                position.gross_out =
                    position.gross_out.checked_add(*amount).map_err(|e| SettlementError::Corrupt(e.to_string()))?;
                position.net = position.gross_out;
                let total = tenants.entry((tenant.clone(), currency.code())).or_insert(TenantTotal {
                    tenant: tenant.clone(),
                    currency,
                    payouts: 0,
                    amount: Money::zero(currency),
                });
                total.payouts += 1;
                total.amount =
                    total.amount.checked_add(*amount).map_err(|e| SettlementError::Corrupt(e.to_string()))?;
            }
            let postings = positions
                .values()
                .filter(|position| position.net.is_positive())
                .map(|position| Posting {
                    id: format!("settlement:{id}:{}", position.currency.code()),
                    debit: nostro_account(&current.rail, position.currency),
                    credit: format!("funding:{}", position.currency.code()),
                    amount: position.net,
                })
                .collect();
            let report = SettlementReport {
                window: current.id.clone(),
                rail: current.rail.clone(),
                number: current.number,
                from_sequence: current.from_sequence,
                to_sequence: current.to_sequence.unwrap_or(current.from_sequence),
                opened_at: current.opened_at,
                closed_at: current.closed_at.unwrap_or(current.opened_at),
                payouts: legs.len(),
                positions: positions.into_values().collect(),
                by_tenant: tenants.into_values().collect(),
                postings,
            };
            let text = serde_json::to_string(&report).map_err(|error| SettlementError::Corrupt(error.to_string()))?;
            let updated = sqlx::query(
                "UPDATE settlement_windows SET state = 'settling', report = $1 WHERE id = $2 AND state = 'closed'",
            )
            .bind(text)
            .bind(id)
            .execute(store.pool())
            .await?;
            if updated.rows_affected() != 1 {
                // Another process moved it on: use what it kept.
                return Box::pin(settle(store, id, by)).await;
            }
            report
        }
    };
    if current.state != WindowState::Settled {
        // The postings and the state change commit together; posting ids make a retry harmless.
        let mut tx = store.begin().await?;
        for posting in &report.postings {
            let spec = TransferSpec {
                id: posting.id.clone(),
                debit: posting.debit.clone(),
                credit: posting.credit.clone(),
                amount: posting.amount,
                pending: false,
                payout_id: None,
                note: format!("net settlement of {id}"),
            };
            match ledger::transfer(&mut tx, &spec).await {
                Ok(_) | Err(LedgerError::Duplicate(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let settled = sqlx::query(
            "UPDATE settlement_windows SET state = 'settled', settled_at = $1 WHERE id = $2 AND state = 'settling'",
        )
        .bind(now_micros())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if settled.rows_affected() == 1 {
            let net: Vec<String> = report.positions.iter().map(|position| position.net.to_string()).collect();
            let detail = format!(
                "{id}: {} payouts, net {}",
                report.payouts,
                if net.is_empty() { "nothing".into() } else { net.join(", ") }
            );
            railyard_store::audit::append(&mut tx, by, "settlement.settle", &detail).await?;
        }
        tx.commit().await?;
        tracing::info!(window = %id, payouts = report.payouts, "settlement window settled");
    }
    Ok(report)
}

/// A settling or settled window's report.
pub async fn report(store: &Store, id: &str) -> Result<SettlementReport, SettlementError> {
    let text: Option<String> = sqlx::query_scalar("SELECT report FROM settlement_windows WHERE id = $1")
        .bind(id)
        .fetch_optional(store.pool())
        .await?
        .ok_or_else(|| SettlementError::NoWindow(id.into()))?;
    let text = text.ok_or_else(|| SettlementError::WrongState { id: id.into(), state: WindowState::Closed })?;
    serde_json::from_str(&text).map_err(|error| SettlementError::Corrupt(error.to_string()))
}

/// The report as CSV: one line per PSP and currency, then the net per currency.
pub fn report_csv(report: &SettlementReport) -> String {
    let mut text = String::from("window,rail,line,tenant,currency,payouts,amount\n");
    for total in &report.by_tenant {
        text.push_str(&format!(
            "{},{},psp,{},{},{},{}\n",
            report.window,
            report.rail,
            total.tenant,
            total.currency.code(),
            total.payouts,
            total.amount.amount_text()
        ));
    }
    for position in &report.positions {
        text.push_str(&format!(
            "{},{},net,,{},{},{}\n",
            report.window,
            report.rail,
            position.currency.code(),
            position.payouts,
            position.net.amount_text()
        ));
    }
    text
}

/// One pass of the schedule: opens missing windows, closes those whose time is up, settles those
/// whose settlement delay has passed.
pub async fn tick(store: &Store, config: &TreasuryConfig) -> Result<(), SettlementError> {
    ensure_open(store, config).await?;
    let now = Utc::now();
    for rail in net_rails(config) {
        let minutes = i64::from(rail.settlement.window_minutes);
        for window in windows(store, Some(rail.id.as_str())).await? {
            match window.state {
                WindowState::Open if minutes > 0 && window.opened_at + chrono::Duration::minutes(minutes) <= now => {
                    close(store, config, rail.id.as_str(), SCHEDULE_ACTOR).await?;
                }
                WindowState::Closed | WindowState::Settling
                    if window.closed_at.is_some_and(|closed| {
                        closed + chrono::Duration::hours(i64::from(rail.settlement.delay_hours)) <= now
                    }) =>
                {
                    settle(store, &window.id, SCHEDULE_ACTOR).await?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Runs the schedule forever inside `railyard serve`.
pub async fn run(store: Store, config: std::sync::Arc<TreasuryConfig>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = tick(&store, &config).await {
            tracing::warn!("settlement: {error}");
        }
    }
}
