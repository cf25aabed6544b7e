//! `railyard serve`: store, sandbox rails, actors, saga coordinator and the HTTP API in one process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use railyard_core::{Decimal, Money};
use railyard_saga::{Engine, EngineSettings};
use railyard_store::{Durability, Store, StoreOptions};

use crate::fx_cmd::{load_config, reference_rates};

/// The demo configuration, used when `--config` is not given.
pub const DEMO_CONFIG: &str = "config/demo.toml";

#[derive(Args)]
pub struct ServeArgs {
    /// Treasury configuration (default: the demo, which also opens demo PSP balances).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Database: sqlite:PATH (embedded, the default) or postgres://USER@HOST:PORT/DB.
    #[arg(long, default_value = "sqlite:railyard.db")]
    db: String,
    /// Address for the HTTP API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// SQLite only: where the intake journal lives, which every accept is flushed to before its
    /// 202 (default: beside the database, `PATH-intake`). A disk of its own keeps the accepts'
    /// flushes from queueing behind the database's. The database remembers the place; naming
    /// another is refused while the old journal still holds payouts not yet moved.
    #[arg(long, value_name = "PATH")]
    intake_journal: Option<PathBuf>,
    /// SQLite only: synchronous=NORMAL instead of FULL (faster; a power loss may lose the last
    /// commits, a process crash does not).
    #[arg(long)]
    sqlite_normal_sync: bool,
    /// Requests per second per API key (bursts of twice as many); over it the API answers 429.
    #[arg(long, default_value_t = railyard_api::RateLimit::DEFAULT.per_second)]
    rate_limit: u32,
    /// Payout requests waiting to be written; beyond it the API answers 429 with Retry-After.
    #[arg(long, default_value_t = railyard_saga::intake::INTAKE_QUEUE_MAX)]
    intake_queue: usize,
    /// Open the demo PSP balances with a --config of your own too (a sandbox deployment).
    #[arg(long)]
    demo_balances: bool,
    /// Anomaly detection: the factor a misbehaving rail's success probability is multiplied by in
    /// routing until it recovers (in (0, 1]; 1 leaves routing alone).
    #[arg(long, default_value = "0.5", value_parser = parse_factor)]
    anomaly_deweight: railyard_core::Decimal,
    /// Anomaly detection raises alerts only and never changes routing.
    #[arg(long)]
    anomaly_alert_only: bool,
    /// How often the monitor samples (metrics, dashboard updates, anomaly detection), milliseconds.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    monitor_tick_ms: u64,
    /// Sagas running at once (1 to 4096). On PostgreSQL more settles a large burst faster (on
    /// SQLite the one writer sets the pace); fewer keeps the API's accept latency lower while a
    /// backlog settles on the same cores (BENCHMARKS.md).
    #[arg(long, default_value_t = railyard_saga::driver::SAGAS_RUNNING_MAX, value_parser = parse_sagas_running)]
    sagas_running: usize,
    /// The nice value added to the threads that settle payouts (the sagas, the rails, the
    /// database's writes), 0 to 19; the API's threads keep the process's. Above 0 an accept does
    /// not wait for a core behind a backlog's settling; settling still gets every core the API
    /// leaves idle. 0 runs everything on one runtime at one priority.
    #[arg(long, default_value_t = SETTLE_NICE, value_parser = clap::value_parser!(i32).range(0..=19))]
    settle_nice: i32,
}

/// `--settle-nice` by default. At 10 settling gets about a tenth of a core's share beside a busy
/// API (the kernel's weights: 110 against 1024) and all of what the API leaves idle: the
/// half-burst accept tail on SQLite falls by a third to a half, and what the server keeps up with
/// does not move (BENCHMARKS.md, "Settling below the API"). Under a kill -9 soak's overload this
/// once recalled instant legs whose pacs.008 a burst of calls had kept from going out within its
/// timeout; calls to a rail over HTTP now wait for a turn before their timeout starts
/// (`railyard_connector::transport::HTTP_CALLS_IN_FLIGHT_MAX`).
pub const SETTLE_NICE: i32 = 10;

/// The runtime that settles payouts (`--settle-nice` above 0), apart from the one that answers the
/// API: its threads run at the calling thread's nice value plus `nice` (at most 19). Linux keeps the nice value per thread
/// and threads inherit it from the one that starts them, such as the database driver's connection
/// threads; each thread is set to the one value, not raised by `nice` again, as a blocking thread
/// started from a settling thread would be.
fn settle_runtime(nice: i32) -> anyhow::Result<tokio::runtime::Runtime> {
    let base = rustix::process::getpriority_process(None).context("getpriority")?;
    let target = base.saturating_add(nice).min(NICE_MAX);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("railyard-settle")
        .on_thread_start(move || {
            // `None`: the calling thread. Raising one's own nice value needs no privilege; a
            // failure leaves the thread at the API's priority, which only costs latency.
            if let Err(error) = rustix::process::setpriority_process(None, target) {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| tracing::warn!("settling threads keep the API's priority: setpriority: {error}"));
            }
        })
        .build()?;
    Ok(runtime)
}

/// The lowest priority a nice value gives.
const NICE_MAX: i32 = 19;

pub(crate) fn parse_sagas_running(text: &str) -> Result<usize, String> {
    let ceiling = railyard_saga::driver::SAGAS_RUNNING_CEILING;
    match text.parse::<usize>() {
        Ok(count) if (1..=ceiling).contains(&count) => Ok(count),
        Ok(count) => Err(format!("{count} is not in 1..={ceiling}")),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

fn parse_factor(text: &str) -> Result<railyard_core::Decimal, String> {
    let factor: railyard_core::Decimal = text.parse().map_err(|_| format!("{text:?} is not a decimal number"))?;
    if factor <= railyard_core::Decimal::ZERO || factor > railyard_core::Decimal::ONE {
        return Err(format!("{factor} is not in (0, 1]"));
    }
    Ok(factor)
}

/// Where the vault keys live when neither `RAILYARD_VAULT_KEYS` nor `RAILYARD_VAULT_KEY_FILE` is
/// set: beside an SQLite database (`railyard.db.keys`), or `railyard-vault.keys` in the working
/// directory for PostgreSQL.
pub fn vault_file(db: &str) -> PathBuf {
    let path = db.strip_prefix("sqlite://").or_else(|| db.strip_prefix("sqlite:"));
    match path {
        Some(path) if !path.is_empty() && !path.starts_with(':') => {
            let path = path.split('?').next().unwrap_or(path);
            PathBuf::from(format!("{path}.keys"))
        }
        _ => PathBuf::from("railyard-vault.keys"),
    }
}

/// The configuration with the treasury settings stored at run time laid over it, the FX book built
/// from it, and the rails whose kill switch is stored as engaged. A stored setting that no longer
/// applies to the file is skipped with a warning.
async fn restore_settings(
    store: &Store,
    config: Arc<railyard_config::TreasuryConfig>,
    fx: Arc<railyard_fx::FxBook>,
    rates: &railyard_fx::ReferenceRates,
) -> anyhow::Result<(Arc<railyard_config::TreasuryConfig>, Arc<railyard_fx::FxBook>, Vec<String>)> {
    let stored = railyard_store::settings::list(store).await.context("treasury settings")?;
    if stored.is_empty() {
        return Ok((config, fx, Vec::new()));
    }
    let rows: Vec<(String, String)> = stored.into_iter().map(|setting| (setting.key, setting.value)).collect();
    let mut restored = (*config).clone();
    let warnings = railyard_actors::change::restore(&mut restored, &rows, |candidate| {
        let book =
            railyard_fx::FxBook::build(&candidate.fx_providers, rates.clone()).map_err(|error| error.to_string())?;
        railyard_routes::build_router(candidate, &book, &Default::default())
            .map(|_| ())
            .map_err(|error| error.to_string())
    });
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    let killed = railyard_actors::change::restored_kill_switches(&restored, &rows);
    tracing::info!(
        settings = rows.len(),
        skipped = warnings.len(),
        kill_switches = killed.len(),
        "treasury settings restored from the store"
    );
    let fx = Arc::new(railyard_fx::FxBook::build(&restored.fx_providers, rates.clone())?);
    Ok((Arc::new(restored), fx, killed))
}

/// Opening balance each demo PSP gets in each currency, once.
const DEMO_BALANCE_UNITS: i64 = 1_000_000;

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Structured logs on stderr: RUST_LOG filters (default info), RAILYARD_LOG_FORMAT=json for JSON.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("RAILYARD_LOG_FORMAT").is_ok_and(|format| format == "json") {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(args, shutdown_signal(), None))?;
    Ok(ExitCode::SUCCESS)
}

/// Runs everything `railyard serve` runs until `shutdown` completes; tells `listening` the bound
/// address once the API accepts connections (`railyard simulate --in-process` runs it this way).
pub async fn serve(
    args: ServeArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    listening: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> anyhow::Result<()> {
    let demo = args.config.is_none();
    let config_path = args.config.clone().unwrap_or_else(|| PathBuf::from(DEMO_CONFIG));
    let config = Arc::new(load_config(&config_path)?);
    let rates = reference_rates(&config, None)?;
    let fx = Arc::new(railyard_fx::FxBook::build(&config.fx_providers, rates.clone())?);
    // At 0 everything runs on the one runtime.
    let settle = if args.settle_nice > 0 { Some(settle_runtime(args.settle_nice)?) } else { None };
    let settling = settle.as_ref().map_or_else(tokio::runtime::Handle::current, |runtime| runtime.handle().clone());
    let served = async move {
        let options = StoreOptions {
            durability: if args.sqlite_normal_sync { Durability::Normal } else { Durability::Full },
            journal: args.intake_journal.clone(),
            ..StoreOptions::default()
        };
        // Opened on the settling runtime: the database driver's connection threads start there
        // and keep its priority, and so do the store's own tasks (the checkpointer).
        let url = args.db.clone();
        let store = settling
            .spawn(async move { Store::open(&url, &options).await })
            .await
            .context("opening the store")?
            .with_context(|| format!("--db {}", args.db))?;
        // Treasury changes made over the API are kept in the store: lay them over the file.
        let (config, fx, killed) = restore_settings(&store, config, fx, &rates).await?;
        let rails = railyard_rails::build(&config, &rates)?;
        let runtime_options = railyard_actors::RuntimeOptions {
            store: Some(store.clone()),
            killed: killed.into_iter().collect(),
            ..Default::default()
        };
        let actors =
            railyard_actors::Runtime::start(config.clone(), fx.clone(), rails.registry.clone(), runtime_options)
                .await
                .map_err(|error| anyhow::anyhow!(error))?;
        let settings = EngineSettings::new(
            format!("serve-{}", std::process::id()),
            Duration::from_secs(30),
            Duration::from_millis(500),
            10,
            3,
            Decimal::from(50),
        );
        let (vault, vault_source) =
            railyard_store::vault::keys_from_environment(&vault_file(&args.db), true).context("vault keys")?;
        tracing::info!(source = %vault_source, active_key = vault.active_key(), "vault keys loaded");
        let mut engine =
            Engine::new(store.clone(), config.clone(), fx.clone(), rails.registry.clone(), settings, Arc::new(vault));
        // Screening fails closed (every payout held) without its list: refuse to start instead.
        let listed = engine.screening_ready().map_err(|error| anyhow::anyhow!("[risk] sanctions_list: {error}"))?;
        if config.risk.is_some() {
            tracing::info!(entries = listed, "sanctions list loaded");
        } else {
            tracing::warn!("no [risk] section: payouts are not screened or scored");
        }
        engine.set_routing(actors.routing_source());
        let (monitor, monitor_task) = railyard_monitor::create(railyard_monitor::Settings {
            tick: Duration::from_millis(args.monitor_tick_ms),
            deweight: (!args.anomaly_alert_only).then_some(args.anomaly_deweight),
            ..railyard_monitor::Settings::default()
        })
        .map_err(|error| anyhow::anyhow!("monitor: {error}"))?;
        engine.set_observer(monitor.observer(Some(actors.observer())));
        actors.set_probe_observer(monitor.probe_observer());
        engine.ensure_accounts().await?;
        // Before the first payout: a net rail's first window starts at the journal's head when it
        // opens, so legs posted before it would belong to no window and never settle.
        railyard_treasury::settlement::ensure_open(&store, &config).await?;
        replay_liquidity_moves(&engine, &rails.sandboxes).await?;
        if demo || args.demo_balances {
            open_demo_balances(&engine, &config).await?;
        }
        let engine = Arc::new(engine);
        actors
            .start_fx(config.clone(), railyard_actors::fx::FX_REFRESH)
            .await
            .map_err(|error| anyhow::anyhow!(error))?;
        let (coordinator, driver) = actors
            .start_coordinator(
                engine.clone(),
                railyard_saga::driver::DriverOptions {
                    concurrent_max: args.sagas_running,
                    scan_every: Duration::from_millis(20),
                    runtime: Some(settling.clone()),
                    ..railyard_saga::driver::DriverOptions::default()
                },
            )
            .await
            .map_err(|error| anyhow::anyhow!(error))?;
        let committed = monitor.clone();
        let intake = railyard_saga::intake::Intake::start_settling_on(
            engine.clone(),
            args.intake_queue,
            Some(settling.clone()),
        )
            .with_driver(driver)
            .with_commit_observer(Arc::new(move |elapsed| committed.intake_committed(elapsed)));
        let deliverer = settling.spawn(railyard_api::webhooks::run(store.clone(), config.clone()));
        let liquidity_watch = settling.spawn(railyard_treasury::liquidity::watch(
            store.clone(),
            config.clone(),
            railyard_treasury::liquidity::LIQUIDITY_CHECK_EVERY,
        ));
        let settlement_schedule = settling.spawn(railyard_treasury::settlement::run(
            store.clone(),
            config.clone(),
            railyard_treasury::settlement::SETTLEMENT_CHECK_EVERY,
        ));
        let reconciler = settling.spawn(railyard_treasury::schedule::run(
            store.clone(),
            engine.clone(),
            railyard_treasury::schedule::feeds(&config, &rails),
            railyard_treasury::schedule::RECONCILE_EVERY,
            railyard_treasury::reconcile::Settings {
                rails: config.rails.iter().map(|rail| (rail.id.to_string(), rail.kind)).collect(),
                drive_on: true,
                ..railyard_treasury::reconcile::Settings::default()
            },
        ));
        let monitor_task = monitor_task.start(railyard_monitor::Sources {
            store: store.clone(),
            config: config.clone(),
            snapshots: actors.snapshots.clone(),
            routing: actors.routing.clone(),
            rails: actors.rails.clone(),
            intake: Some(intake.clone()),
        });
        let keys = Arc::new(railyard_api::keys::KeyRing::load(&store, &config).await?);
        let key_refresh = tokio::spawn(railyard_api::keys::refresh(
            keys.clone(),
            store.clone(),
            config.clone(),
            railyard_api::keys::KEY_REFRESH_EVERY,
        ));
        let api = railyard_api::router(railyard_api::ApiState {
            keys,
            monitor: Some(monitor),
            streams: Arc::default(),
            config: config.clone(),
            engine: engine.clone(),
            intake,
            routing: actors.routing.clone(),
            snapshots: actors.snapshots.clone(),
            sandboxes: Arc::new(rails.sandboxes.clone()),
            limiter: Arc::new(railyard_api::RateLimiter::new(railyard_api::RateLimit {
                per_second: args.rate_limit,
                burst: args.rate_limit.saturating_mul(2),
            })),
        });
        let listener =
            tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("--listen {}", args.listen))?;
        let address = listener.local_addr()?;
        // Embedded (simulate --in-process): the caller reports, stdout stays its own.
        let embedded = listening.is_some();
        if let Some(listening) = listening {
            let _ = listening.send(address);
        } else {
            println!("railyard listening on http://{address} (config {}, db {})", config_path.display(), args.db);
        }
        if demo && !embedded {
            println!("demo API keys: rk_demo_psp (psp), rk_demo_treasury (treasury); try:");
            println!(
                "  curl -s -X POST http://{address}/v1/payouts -H 'Authorization: Bearer rk_demo_psp' -H 'Idempotency-Key: demo-1' \\\n    -d '{{\"source_currency\":\"USD\",\"destination_currency\":\"EUR\",\"amount\":\"250.00\",\"amount_type\":\"send\",\"beneficiary\":{{\"name\":\"Jonas Weber\",\"account\":\"DE89370400440532013000\",\"country\":\"DE\"}}}}'"
            );
        }
        axum::serve(listener, api).with_graceful_shutdown(shutdown).await?;
        // Stop taking work; sagas in flight are durable and resume on the next start.
        coordinator.stop(Some("shutdown".into()));
        deliverer.abort();
        key_refresh.abort();
        monitor_task.abort();
        reconciler.abort();
        liquidity_watch.abort();
        settlement_schedule.abort();
        actors.stop().await;
        store.pool().close().await;
        if !embedded {
            println!("railyard stopped");
        }
        anyhow::Ok(())
    }
    .await;
    // Inside an async context a runtime may not block on its own shutdown.
    if let Some(settle) = settle {
        settle.shutdown_background();
    }
    served
}

async fn open_demo_balances(engine: &Engine, config: &railyard_config::TreasuryConfig) -> anyhow::Result<()> {
    let mut currencies: Vec<_> = config.rails.iter().flat_map(|rail| rail.currencies.iter().copied()).collect();
    currencies.sort_by_key(|currency| currency.code());
    currencies.dedup();
    for tenant in &config.tenants {
        for currency in &currencies {
            let amount = Money::from_minor(DEMO_BALANCE_UNITS * 10_i64.pow(currency.exponent()), *currency);
            match engine
                .fund_psp(tenant.id.as_str(), amount, &format!("demo-opening-balance-{}", currency.code()))
                .await
            {
                Ok(()) | Err(railyard_saga::EngineError::Ledger(railyard_store::ledger::LedgerError::Duplicate(_))) => {
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
    Ok(())
}

/// Completes on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Gives the sandbox networks this process runs the net of the liquidity the treasury moved before
/// this start (`POST /v1/treasury/rails/{rail}/liquidity` tells a running one; a restarted one
/// begins from the configuration). A move the network cannot follow is logged; the ledger's
/// booking stands.
async fn replay_liquidity_moves(
    engine: &Engine,
    sandboxes: &[(String, railyard_rails::SandboxRail)],
) -> anyhow::Result<()> {
    if sandboxes.is_empty() {
        return Ok(());
    }
    let moves = engine.liquidity_moves().await.context("reading the treasury's liquidity moves")?;
    let mut replayed = 0;
    for (rail, amount, withdraw) in moves {
        let Some((_, sandbox)) = sandboxes.iter().find(|(id, _)| *id == rail) else { continue };
        match sandbox.move_house_funds(amount, withdraw) {
            Ok(_) => replayed += 1,
            Err(reason) => {
                tracing::warn!(rail = %rail, "the sandbox network did not follow a {} of {amount}: {reason}", if withdraw { "sweep" } else { "top-up" })
            }
        }
    }
    if replayed > 0 {
        tracing::info!(moves = replayed, "liquidity moves replayed on the sandbox networks");
    }
    Ok(())
}
