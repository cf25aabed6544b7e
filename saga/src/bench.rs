//! `railyard bench store`: durable accepts per second, three ways, on fresh databases in one run.
//!
//! - **baseline**: raw batched writes of the same rows (payout + idempotency record + event) in
//!   transactions of [`crate::intake::GROUP_MAX`], one writer: what the database does with no
//!   engine in the way.
//! - **single**: `Engine::accept` from `concurrency` tasks, one transaction (one flush) each.
//! - **group**: the [`crate::intake::Intake`] group commit from the same tasks.

use std::sync::Arc;
use std::time::Instant;

use railyard_config::TreasuryConfig;
use railyard_connector::{Beneficiary, Registry};
use railyard_core::{Country, Currency, Decimal, Money};
use railyard_fx::FxBook;
use railyard_store::{Store, StoreOptions, now_micros};
use serde::Serialize;
use sqlx::{AssertSqlSafe, Executor};

use crate::intake::{GROUP_MAX, Intake};
use crate::{AmountMode, Engine, EngineSettings, PayoutRequest};

#[derive(Debug, Clone, Serialize)]
pub struct StoreBenchReport {
    pub database: String,
    pub payouts: usize,
    pub concurrency: usize,
    pub baseline_per_s: f64,
    pub single_per_s: f64,
    pub group_per_s: f64,
    /// group ÷ baseline: how close the engine's durable accept comes to the raw database.
    pub ratio_group: f64,
    /// single ÷ baseline.
    pub ratio_single: f64,
}

/// A fresh database for one variant: a new SQLite file in `target` (a directory), or a new schema
/// in the PostgreSQL database `target` names. Returns its URL and how to remove it.
async fn fresh(target: &str, name: &str) -> Result<(String, Option<String>), String> {
    if target.starts_with("postgres://") || target.starts_with("postgresql://") {
        let schema = format!("bench_{name}_{}", std::process::id());
        sqlx::any::install_default_drivers();
        let admin = sqlx::AnyPool::connect(target).await.map_err(|error| error.to_string())?;
        admin
            .execute(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
            .await
            .map_err(|error| error.to_string())?;
        admin.execute(AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).await.map_err(|error| error.to_string())?;
        admin.close().await;
        let separator = if target.contains('?') { '&' } else { '?' };
        Ok((format!("{target}{separator}options=-c%20search_path%3D{schema}"), Some(schema)))
    } else {
        let directory = target.strip_prefix("sqlite:").unwrap_or(target);
        std::fs::create_dir_all(directory).map_err(|error| error.to_string())?;
        let path = std::path::Path::new(directory).join(format!("bench-{name}-{}.db", std::process::id()));
        for suffix in ["", "-wal", "-shm", "-intake", "-intake-wal", "-intake-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        Ok((format!("sqlite:{}", path.display()), None))
    }
}

async fn cleanup(target: &str, url: &str, schema: Option<String>) {
    match schema {
        Some(schema) => {
            if let Ok(admin) = sqlx::AnyPool::connect(target).await {
                let _ = admin.execute(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))).await;
                admin.close().await;
            }
        }
        None => {
            let path = url.trim_start_matches("sqlite:");
            for suffix in ["", "-wal", "-shm", "-intake", "-intake-wal", "-intake-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
        }
    }
}

fn request(index: usize) -> PayoutRequest {
    let usd = Currency::from_code("USD").unwrap_or_else(|_| unreachable!("USD exists"));
    let eur = Currency::from_code("EUR").unwrap_or_else(|_| unreachable!("EUR exists"));
    PayoutRequest {
        source: usd,
        destination: eur,
        amount: Money::from_minor(10_000 + index as i64, usd),
        mode: AmountMode::Send,
        beneficiary: Beneficiary {
            name: "Bench Payee".into(),
            account: "DE89370400440532013000".into(),
            country: Country::from_code("DE").unwrap_or_else(|_| unreachable!("DE exists")),
        },
        remittance: String::new(),
        rail_kind: None,
        quote_id: None,
        originator: None,
        account_masked: None,
        submitted_by: None,
    }
}

fn engine(store: Store, config: Arc<TreasuryConfig>, fx: Arc<FxBook>) -> Arc<Engine> {
    let settings = EngineSettings::new(
        "bench",
        std::time::Duration::from_secs(30),
        std::time::Duration::from_secs(1),
        8,
        3,
        Decimal::from(50),
    );
    Arc::new(Engine::new(
        store,
        config,
        fx,
        Registry::new(),
        settings,
        std::sync::Arc::new(railyard_store::vault::VaultKeys::generate()),
    ))
}

/// Runs the three variants; `target` is a directory (SQLite) or a PostgreSQL URL.
pub async fn run(
    target: &str,
    config: Arc<TreasuryConfig>,
    fx: Arc<FxBook>,
    payouts: usize,
    concurrency: usize,
) -> Result<StoreBenchReport, String> {
    let tenant = config.tenants.first().map(|tenant| tenant.id.to_string()).ok_or("the configuration has no tenant")?;
    let concurrency = concurrency.max(1);
    let failed = |error: &dyn std::fmt::Display| error.to_string();

    // Baseline: the same rows, batched, no engine.
    let (url, schema) = fresh(target, "baseline").await?;
    let store = Store::open(&url, &StoreOptions::default()).await.map_err(|error| failed(&error))?;
    let body = serde_json::to_string(&request(0)).map_err(|error| failed(&error))?;
    let started = Instant::now();
    for chunk in (0..payouts).collect::<Vec<_>>().chunks(GROUP_MAX) {
        let mut tx = store.begin().await.map_err(|error| failed(&error))?;
        for index in chunk {
            let id = format!("pay_base_{index}");
            let now = now_micros();
            sqlx::query("INSERT INTO idempotency (tenant, key, request_hash, resource_id, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(&tenant)
                .bind(format!("k{index}"))
                .bind("hash")
                .bind(&id)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|error| failed(&error))?;
            sqlx::query(
                "INSERT INTO payouts (id, tenant, idempotency_key, request, state, next_action_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, 'accepted', $5, $5, $5)",
            )
            .bind(&id)
            .bind(&tenant)
            .bind(format!("k{index}"))
            .bind(&body)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|error| failed(&error))?;
            sqlx::query(
                "INSERT INTO saga_events (payout_id, at, state, detail) VALUES ($1, $2, 'accepted', 'accepted')",
            )
            .bind(&id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|error| failed(&error))?;
        }
        tx.commit().await.map_err(|error| failed(&error))?;
    }
    let baseline = payouts as f64 / started.elapsed().as_secs_f64();
    store.pool().close().await;
    cleanup(target, &url, schema).await;

    // Single commit per accept.
    let (url, schema) = fresh(target, "single").await?;
    let store = Store::open(&url, &StoreOptions::default()).await.map_err(|error| failed(&error))?;
    let single_engine = engine(store.clone(), config.clone(), fx.clone());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let engine = single_engine.clone();
        let tenant = tenant.clone();
        tasks.spawn(async move {
            for index in (worker..payouts).step_by(concurrency) {
                engine
                    .accept(&tenant, &format!("k{index}"), &request(index))
                    .await
                    .map_err(|error| error.to_string())?;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.map_err(|error| failed(&error))??;
    }
    let single = payouts as f64 / started.elapsed().as_secs_f64();
    store.pool().close().await;
    cleanup(target, &url, schema).await;

    // Group commit.
    let (url, schema) = fresh(target, "group").await?;
    let store = Store::open(&url, &StoreOptions::default()).await.map_err(|error| failed(&error))?;
    let intake = Intake::start(engine(store.clone(), config.clone(), fx.clone()));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let intake = intake.clone();
        let tenant = tenant.clone();
        tasks.spawn(async move {
            for index in (worker..payouts).step_by(concurrency) {
                intake
                    .accept(&tenant, &format!("k{index}"), &request(index))
                    .await
                    .map_err(|error| error.to_string())?;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.map_err(|error| failed(&error))??;
    }
    // Counted once every payout is in the database, as the other two (on SQLite the intake
    // acknowledges from its journal and moves the payouts in right after).
    if !intake.settled_within(std::time::Duration::from_secs(600)).await {
        return Err("the intake did not move its payouts into the database within 600 s".into());
    }
    let group = payouts as f64 / started.elapsed().as_secs_f64();
    store.pool().close().await;
    cleanup(target, &url, schema).await;

    let round = |value: f64| (value * 100.0).round() / 100.0;
    Ok(StoreBenchReport {
        database: if target.starts_with("postgres") {
            "postgres".into()
        } else {
            "sqlite (WAL, synchronous=FULL)".into()
        },
        payouts,
        concurrency,
        baseline_per_s: round(baseline),
        single_per_s: round(single),
        group_per_s: round(group),
        ratio_group: round(group / baseline),
        ratio_single: round(single / baseline),
    })
}

/// Which database `railyard bench e2e` runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E2eStore {
    /// SQLite, WAL, `synchronous=FULL` (the default).
    Sqlite,
    /// SQLite, WAL, `synchronous=NORMAL`.
    SqliteNormal,
    /// PostgreSQL (its default `synchronous_commit=on`).
    Postgres,
}

impl E2eStore {
    pub fn name(self) -> &'static str {
        match self {
            E2eStore::Sqlite => "sqlite",
            E2eStore::SqliteNormal => "sqlite-normal",
            E2eStore::Postgres => "postgres",
        }
    }
}

/// What `railyard bench e2e` offers the engine: `payouts` from `concurrency` clients, each
/// submitting one and waiting for it to come to rest, with up to `sagas_running` sagas at once.
#[derive(Debug, Clone, Copy)]
pub struct E2eLoad {
    pub payouts: usize,
    pub concurrency: usize,
    pub sagas_running: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct E2eReport {
    pub store: String,
    pub payouts: usize,
    pub concurrency: usize,
    /// Sagas the driver ran at once at most.
    pub sagas_running: usize,
    /// Payouts accepted and driven to a terminal state per second, end to end.
    pub payouts_per_s: f64,
    /// The same rows, written by plain batched inserts into a fresh database in the same run.
    pub raw_bound_per_s: f64,
    /// payouts_per_s ÷ raw_bound_per_s.
    pub ratio: f64,
    /// Accept to terminal, per payout.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub completed: usize,
    pub failed: usize,
    /// In doubt, held for screening or approval: not terminal when the run ended.
    pub not_terminal: usize,
    /// Rows the run inserted (payouts, events, ledger transfers, idempotency, outbox, ...).
    pub rows_inserted: u64,
    pub rows_per_payout: f64,
    pub seconds: f64,
    /// CPU time the whole process (engine, store, sandbox rails, clients) spent per payout during
    /// the run, in microseconds: steadier than wall time on a shared machine, since time stolen
    /// by other tenants is not counted. Null where `/proc/self/stat` cannot be read.
    pub cpu_us_per_payout: Option<f64>,
    /// Saga passes the driver started ([`crate::driver::Driver::started`]); one a payout when
    /// nothing rests on the way (each pass runs a saga as far as it goes).
    pub saga_passes: u64,
}

/// This process's CPU time so far (user and system, all threads), from `/proc/self/stat` (Linux),
/// in seconds.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces, inside parentheses): utime and stime
    // are the 12th and 13th of them, in clock ticks (USER_HZ, 100 a second on Linux).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Tells each client when its payout came to rest.
#[derive(Default)]
struct Finish {
    inner: std::sync::Mutex<FinishState>,
}

#[derive(Default)]
struct FinishState {
    waiting: std::collections::HashMap<String, tokio::sync::oneshot::Sender<crate::State>>,
    done: std::collections::HashMap<String, crate::State>,
}

impl Finish {
    fn wait(&self, id: &str) -> tokio::sync::oneshot::Receiver<crate::State> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let mut state = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match state.done.remove(id) {
            Some(at_rest) => {
                let _ = sender.send(at_rest);
            }
            None => {
                state.waiting.insert(id.to_string(), sender);
            }
        }
        receiver
    }
}

impl crate::OutcomeObserver for Finish {
    fn leg_outcome(&self, _rail: &str, _success: bool, _elapsed: std::time::Duration) {}

    fn payout_moved(&self, moved: &crate::PayoutMoved<'_>) {
        use crate::State;
        if !(moved.to.terminal() || matches!(moved.to, State::InDoubt | State::Screening | State::AwaitingApproval)) {
            return;
        }
        let mut state = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match state.waiting.remove(&moved.payout.id) {
            Some(sender) => {
                let _ = sender.send(moved.to);
            }
            None => {
                state.done.insert(moved.payout.id.clone(), moved.to);
            }
        }
    }
}

/// The corridors the e2e run cycles through: domestic instant, cross-currency via FX, card.
pub fn e2e_request(index: usize) -> PayoutRequest {
    const CORRIDORS: [(&str, &str, &str, &str); 4] = [
        ("EUR", "EUR", "DE", "DE89370400440532013000"),
        ("USD", "EUR", "FR", "FR1420041010050500013M02606"),
        ("GBP", "GBP", "GB", "GB29NWBK60161331926819"),
        ("EUR", "GBP", "GB", "GB29NWBK60161331926819"),
    ];
    let (source, destination, country, account) = CORRIDORS[index % CORRIDORS.len()];
    let source = Currency::from_code(source).unwrap_or_else(|_| unreachable!("a listed currency"));
    let destination = Currency::from_code(destination).unwrap_or_else(|_| unreachable!("a listed currency"));
    let mut request = request(index);
    request.source = source;
    request.destination = destination;
    // 10.00 to 59.99: small enough that liquidity and risk tiers never decide the outcome.
    request.amount = Money::from_minor(1_000 + (index as i64 * 7_919) % 5_000, source);
    request.beneficiary.name = format!("Bench Payee {}", index % 1_000);
    request.beneficiary.country = Country::from_code(country).unwrap_or_else(|_| unreachable!("a listed country"));
    request.beneficiary.account = account.into();
    request
}

/// Tables whose rows the raw bound writes, in an order that satisfies foreign keys.
const E2E_TABLES: &[&str] = &[
    "transfers",
    "idempotency",
    "payouts",
    "saga_events",
    "outbox",
    "webhook_deliveries",
    "audit_chain",
    "quotes",
    "liquidity_alerts",
    "vault",
    "risk_counters",
    "risk_history",
];

/// Rows in each of [`E2E_TABLES`].
async fn row_counts(store: &Store) -> Result<Vec<i64>, String> {
    let mut counts = Vec::with_capacity(E2E_TABLES.len());
    for table in E2E_TABLES {
        let count: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(store.pool())
            .await
            .map_err(|error| format!("{table}: {error}"))?;
        counts.push(count);
    }
    Ok(counts)
}

/// A column value as it crosses the `Any` driver.
enum Cell {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
    Bool(Option<bool>),
}

fn cells(row: &sqlx::any::AnyRow) -> Result<Vec<Cell>, String> {
    use sqlx::{Column, Row, TypeInfo};
    let failed = |error: sqlx::Error| error.to_string();
    row.columns()
        .iter()
        .enumerate()
        .map(|(index, column)| {
            let name = column.type_info().name().to_ascii_uppercase();
            Ok(if name.contains("INT") {
                Cell::Int(row.try_get(index).map_err(failed)?)
            } else if name.contains("BOOL") {
                Cell::Bool(row.try_get(index).map_err(failed)?)
            } else if name.contains("REAL") || name.contains("FLOAT") || name.contains("DOUBLE") {
                Cell::Real(row.try_get(index).map_err(failed)?)
            } else if name.contains("BLOB") || name.contains("BYTEA") {
                Cell::Blob(row.try_get(index).map_err(failed)?)
            } else if name == "NULL" {
                Cell::Text(None)
            } else {
                Cell::Text(row.try_get(index).map_err(failed)?)
            })
        })
        .collect()
}

/// Copies as many rows of each table as the run inserted (`added[i]`, read without an order, so
/// a few may be setup rows of the same shape) into `raw`, one writer,
/// [`RAW_ROWS_PER_TRANSACTION`] rows per transaction, and returns the seconds the writes took.
/// Reading the rows happens before the clock starts.
async fn raw_bound(run: &Store, raw: &Store, added: &[i64]) -> Result<f64, String> {
    use sqlx::Row;
    let failed = |error: sqlx::Error| error.to_string();
    // The accounts are the run's setup, not its work: copied before timing.
    let accounts = sqlx::query("SELECT * FROM accounts").fetch_all(run.pool()).await.map_err(failed)?;
    let mut inserts: Vec<(String, Vec<Cell>)> = Vec::new();
    for row in &accounts {
        inserts.push((insert_sql("accounts", row.columns().len()), cells(row)?));
    }
    write_rows(raw, &inserts).await?;
    let mut timed: Vec<(String, Vec<Cell>)> = Vec::new();
    for (table, count) in E2E_TABLES.iter().zip(added) {
        if *count <= 0 {
            continue;
        }
        let total: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(run.pool())
            .await
            .map_err(failed)?;
        let rows = sqlx::query(AssertSqlSafe(format!("SELECT * FROM {table} LIMIT {count} OFFSET {}", total - count)))
            .fetch_all(run.pool())
            .await
            .map_err(failed)?;
        for row in &rows {
            timed.push((insert_sql(table, row.len()), cells(row)?));
        }
    }
    let started = Instant::now();
    write_rows(raw, &timed).await?;
    Ok(started.elapsed().as_secs_f64())
}

/// Rows per transaction for the raw bound.
pub const RAW_ROWS_PER_TRANSACTION: usize = 1_024;

fn insert_sql(table: &str, columns: usize) -> String {
    let placeholders: Vec<String> = (1..=columns).map(|index| format!("${index}")).collect();
    format!("INSERT INTO {table} VALUES ({})", placeholders.join(", "))
}

async fn write_rows(store: &Store, rows: &[(String, Vec<Cell>)]) -> Result<(), String> {
    let failed = |error: sqlx::Error| error.to_string();
    for chunk in rows.chunks(RAW_ROWS_PER_TRANSACTION) {
        let mut tx = store.begin().await.map_err(failed)?;
        for (sql, cells) in chunk {
            let mut query = sqlx::query(AssertSqlSafe(sql.clone()));
            for cell in cells {
                query = match cell {
                    Cell::Int(value) => query.bind(*value),
                    Cell::Real(value) => query.bind(*value),
                    Cell::Text(value) => query.bind(value.clone()),
                    Cell::Blob(value) => query.bind(value.clone()),
                    Cell::Bool(value) => query.bind(*value),
                };
            }
            query.execute(&mut *tx).await.map_err(failed)?;
        }
        tx.commit().await.map_err(failed)?;
    }
    Ok(())
}

/// `railyard bench e2e`: `load.payouts` payouts from `load.concurrency` clients, each accepted
/// through the group-commit intake and driven by the saga driver `railyard serve` uses (up to
/// `load.sagas_running` at once), over the in-process
/// sandbox rails in `registry` (no injected latency), on a fresh database; then the raw bound.
/// `target` is a directory (SQLite) or a PostgreSQL URL.
pub async fn e2e(
    target: &str,
    store_kind: E2eStore,
    config: Arc<TreasuryConfig>,
    fx: Arc<FxBook>,
    registry: Registry,
    load: E2eLoad,
) -> Result<E2eReport, String> {
    let E2eLoad { payouts, concurrency, sagas_running } = load;
    let failed = |error: &dyn std::fmt::Display| error.to_string();
    let tenant = config.tenants.first().map(|tenant| tenant.id.to_string()).ok_or("the configuration has no tenant")?;
    let concurrency = concurrency.clamp(1, payouts.max(1));
    let options = StoreOptions {
        durability: if store_kind == E2eStore::SqliteNormal {
            railyard_store::Durability::Normal
        } else {
            railyard_store::Durability::Full
        },
        ..StoreOptions::default()
    };

    let (url, schema) = fresh(target, "e2e").await?;
    let store = Store::open(&url, &options).await.map_err(|error| failed(&error))?;
    let settings = EngineSettings::new(
        "bench-e2e",
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(200),
        8,
        3,
        Decimal::from(50),
    );
    let mut engine = Engine::new(
        store.clone(),
        config.clone(),
        fx,
        registry,
        settings,
        Arc::new(railyard_store::vault::VaultKeys::generate()),
    );
    engine.screening_ready().map_err(|error| format!("[risk] sanctions_list: {error}"))?;
    let finish = Arc::new(Finish::default());
    engine.set_observer(finish.clone());
    let engine = Arc::new(engine);
    engine.ensure_accounts().await.map_err(|error| failed(&error))?;
    let mut currencies: Vec<Currency> = config.rails.iter().flat_map(|rail| rail.currencies.iter().copied()).collect();
    currencies.sort_by_key(|currency| currency.code());
    currencies.dedup();
    for currency in currencies {
        let amount = Money::from_minor(i64::MAX / 4, currency);
        engine
            .fund_psp(&tenant, amount, &format!("bench-{}", currency.code()))
            .await
            .map_err(|error| failed(&error))?;
    }
    let before = row_counts(&store).await?;

    let driver = crate::driver::Driver::start(
        engine.clone(),
        crate::driver::DriverOptions { concurrent_max: sagas_running, ..crate::driver::DriverOptions::default() },
    );
    let intake = Intake::start_with(engine.clone(), crate::intake::INTAKE_QUEUE_MAX).with_driver(driver.clone());
    let started = Instant::now();
    let cpu_started = process_cpu_seconds();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let intake = intake.clone();
        let tenant = tenant.clone();
        let finish = finish.clone();
        tasks.spawn(async move {
            let mut outcomes = Vec::new();
            for index in (worker..payouts).step_by(concurrency) {
                let accepted_at = Instant::now();
                let accepted = intake
                    .accept(&tenant, &format!("e2e-{index}"), &e2e_request(index))
                    .await
                    .map_err(|error| error.to_string())?;
                let state = finish.wait(&accepted.payout_id).await.map_err(|error| error.to_string())?;
                outcomes.push((state, accepted_at.elapsed()));
            }
            Ok::<_, String>(outcomes)
        });
    }
    let mut outcomes = Vec::with_capacity(payouts);
    while let Some(result) = tasks.join_next().await {
        outcomes.extend(result.map_err(|error| failed(&error))??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = process_cpu_seconds().zip(cpu_started).map(|(now, then)| now - then);
    driver.stop().await;
    let saga_passes = driver.started();
    let after = row_counts(&store).await?;
    let added: Vec<i64> = after.iter().zip(&before).map(|(after, before)| after - before).collect();

    let (raw_url, raw_schema) = fresh(target, "e2e_raw").await?;
    let raw = Store::open(&raw_url, &options).await.map_err(|error| failed(&error))?;
    let raw_seconds = raw_bound(&store, &raw, &added).await?;
    raw.pool().close().await;
    cleanup(target, &raw_url, raw_schema).await;
    store.pool().close().await;
    cleanup(target, &url, schema).await;

    let mut latencies: Vec<f64> = outcomes.iter().map(|(_, latency)| latency.as_secs_f64() * 1_000.0).collect();
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        latencies[((latencies.len() - 1) as f64 * p).round() as usize]
    };
    let count = |wanted: crate::State| outcomes.iter().filter(|(state, _)| *state == wanted).count();
    let completed = count(crate::State::Completed);
    let failed_count = count(crate::State::Failed) + count(crate::State::Returned) + count(crate::State::Cancelled);
    let rows_inserted = added.iter().map(|rows| u64::try_from(*rows).unwrap_or(0)).sum::<u64>();
    let payouts_per_s = payouts as f64 / seconds;
    let raw_bound_per_s = payouts as f64 / raw_seconds.max(f64::MIN_POSITIVE);
    let round = |value: f64| (value * 100.0).round() / 100.0;
    Ok(E2eReport {
        store: store_kind.name().into(),
        payouts,
        concurrency,
        sagas_running,
        payouts_per_s: round(payouts_per_s),
        raw_bound_per_s: round(raw_bound_per_s),
        ratio: round(payouts_per_s / raw_bound_per_s),
        p50_ms: round(percentile(0.50)),
        p99_ms: round(percentile(0.99)),
        completed,
        failed: failed_count,
        not_terminal: outcomes.len() - completed - failed_count,
        rows_inserted,
        rows_per_payout: round(rows_inserted as f64 / payouts.max(1) as f64),
        seconds: round(seconds),
        cpu_us_per_payout: cpu_seconds.map(|cpu| round(cpu * 1e6 / payouts.max(1) as f64)),
        saga_passes,
    })
}

/// Fills the database at `url` with `payouts` accepted payouts of the e2e mix through the
/// group-commit intake from `concurrency` clients, and runs none of them: the starting point of
/// the process-level benchmarks (`railyard bench recovery`, `railyard bench memory`), where a
/// `railyard serve` started on the database finds them all in flight. Funds the first tenant in
/// every rail currency first, so that no payout fails for its balance. `vault`: the keys the server
/// will read. Returns the accepts per second.
pub async fn prefill(
    url: &str,
    config: Arc<TreasuryConfig>,
    fx: Arc<FxBook>,
    vault: Arc<railyard_store::vault::VaultKeys>,
    payouts: usize,
    concurrency: usize,
) -> Result<f64, String> {
    let failed = |error: &dyn std::fmt::Display| error.to_string();
    let tenant = config.tenants.first().map(|tenant| tenant.id.to_string()).ok_or("the configuration has no tenant")?;
    let store = Store::open(url, &StoreOptions::default()).await.map_err(|error| failed(&error))?;
    let settings = EngineSettings::new(
        "bench-prefill",
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(200),
        8,
        3,
        Decimal::from(50),
    );
    let engine = Arc::new(Engine::new(store.clone(), config.clone(), fx, Registry::new(), settings, vault));
    engine.ensure_accounts().await.map_err(|error| failed(&error))?;
    let mut currencies: Vec<Currency> = config.rails.iter().flat_map(|rail| rail.currencies.iter().copied()).collect();
    currencies.sort_by_key(|currency| currency.code());
    currencies.dedup();
    for currency in currencies {
        let amount = Money::from_minor(i64::MAX / 4, currency);
        engine
            .fund_psp(&tenant, amount, &format!("prefill-{}", currency.code()))
            .await
            .map_err(|error| failed(&error))?;
    }
    let intake = Intake::start_with(engine, crate::intake::INTAKE_QUEUE_MAX);
    let concurrency = concurrency.clamp(1, payouts.max(1));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let intake = intake.clone();
        let tenant = tenant.clone();
        tasks.spawn(async move {
            for index in (worker..payouts).step_by(concurrency) {
                intake
                    .accept(&tenant, &format!("prefill-{index}"), &e2e_request(index))
                    .await
                    .map_err(|error| format!("payout {index}: {error}"))?;
            }
            Ok::<_, String>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.map_err(|error| failed(&error))??;
    }
    if !intake.settled_within(std::time::Duration::from_secs(600)).await {
        return Err("the intake did not move its payouts into the database within 600 s".into());
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(intake);
    store.close().await;
    Ok(payouts as f64 / seconds.max(f64::MIN_POSITIVE))
}

/// `railyard bench statements`: what one statement and one row cost on the store's write path.
#[derive(Debug, Clone, Serialize)]
pub struct StatementsReport {
    pub rounds: usize,
    /// A round trip to a thread of our own and back (std channel there, tokio oneshot back): what
    /// handing work to another thread costs on this machine, with nothing done there.
    pub thread_round_trip_us: f64,
    /// `SELECT 1` inside a write transaction on the steps' connection: one statement's round trip
    /// through sqlx's SQLite worker thread.
    pub statement_round_trip_us: f64,
    /// A one-row `INSERT INTO saga_events` in that transaction.
    pub insert_1_row_us: f64,
    /// Multi-row inserts of the same rows: microseconds per statement and per row, by rows per
    /// statement.
    pub insert_multi: Vec<MultiRowFigure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MultiRowFigure {
    pub rows_per_statement: usize,
    pub statement_us: f64,
    pub row_us: f64,
}

/// Runs the statement figures on a fresh SQLite file in the directory `target`.
pub async fn statements(target: &str, rounds: usize) -> Result<StatementsReport, String> {
    let failed = |error: &dyn std::fmt::Display| error.to_string();
    let rounds = rounds.max(64);
    let micros_each = |started: Instant, count: usize| started.elapsed().as_secs_f64() * 1e6 / count as f64;

    // The baseline: a bare thread answering each request.
    let (requests, inbox) = std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>();
    let worker = std::thread::spawn(move || {
        while let Ok(reply) = inbox.recv() {
            let _ = reply.send(());
        }
    });
    let started = Instant::now();
    for _ in 0..rounds {
        let (reply, answer) = tokio::sync::oneshot::channel();
        requests.send(reply).map_err(|error| failed(&error))?;
        answer.await.map_err(|error| failed(&error))?;
    }
    let thread_round_trip_us = micros_each(started, rounds);
    drop(requests);
    let _ = worker.join();

    let (url, schema) = fresh(target, "statements").await?;
    let store = Store::open(&url, &StoreOptions::default()).await.map_err(|error| failed(&error))?;
    let mut tx = store.begin_step().await.map_err(|error| failed(&error))?;
    let started = Instant::now();
    for _ in 0..rounds {
        sqlx::query("SELECT 1").fetch_one(&mut *tx).await.map_err(|error| failed(&error))?;
    }
    let statement_round_trip_us = micros_each(started, rounds);
    let mut at: i64 = 0;
    let started = Instant::now();
    for _ in 0..rounds {
        at += 1;
        sqlx::query("INSERT INTO saga_events (payout_id, at, state, detail) VALUES ($1, $2, 'accepted', $3)")
            .bind("pay_bench")
            .bind(at)
            .bind("accepted")
            .execute(&mut *tx)
            .await
            .map_err(|error| failed(&error))?;
    }
    let insert_1_row_us = micros_each(started, rounds);
    let mut insert_multi = Vec::new();
    for rows in [4usize, 16, 64] {
        let values: Vec<String> = (0..rows)
            .map(|row| format!("(${}, ${}, 'accepted', ${})", row * 3 + 1, row * 3 + 2, row * 3 + 3))
            .collect();
        let statement = format!("INSERT INTO saga_events (payout_id, at, state, detail) VALUES {}", values.join(", "));
        let count = (rounds / rows).max(16);
        let started = Instant::now();
        for _ in 0..count {
            let mut query = sqlx::query(AssertSqlSafe(statement.clone()));
            for _ in 0..rows {
                at += 1;
                query = query.bind("pay_bench").bind(at).bind("accepted");
            }
            query.execute(&mut *tx).await.map_err(|error| failed(&error))?;
        }
        let statement_us = micros_each(started, count);
        insert_multi.push(MultiRowFigure {
            rows_per_statement: rows,
            statement_us,
            row_us: statement_us / rows as f64,
        });
    }
    tx.rollback().await.map_err(|error| failed(&error))?;
    store.pool().close().await;
    cleanup(target, &url, schema).await;
    Ok(StatementsReport { rounds, thread_round_trip_us, statement_round_trip_us, insert_1_row_us, insert_multi })
}

#[cfg(test)]
mod tests {
    /// The statement figures run on a fresh file, measure something and leave nothing behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn statement_figures_run_and_clean_up() {
        let directory = std::env::temp_dir().join(format!("railyard-bench-statements-{}", std::process::id()));
        let target = directory.display().to_string();
        let report = super::statements(&target, 64).await.unwrap();
        let figures = [report.thread_round_trip_us, report.statement_round_trip_us, report.insert_1_row_us];
        assert!(figures.iter().all(|figure| figure.is_finite() && *figure > 0.0), "{report:?}");
        let rows: Vec<usize> = report.insert_multi.iter().map(|figure| figure.rows_per_statement).collect();
        assert_eq!(rows, [4, 16, 64]);
        assert!(report.insert_multi.iter().all(|figure| figure.row_us > 0.0 && figure.row_us < figure.statement_us));
        let left: Vec<_> = std::fs::read_dir(&directory).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        std::fs::remove_dir(&directory).unwrap();
    }
}
