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
        for suffix in ["", "-wal", "-shm"] {
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
            for suffix in ["", "-wal", "-shm"] {
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
