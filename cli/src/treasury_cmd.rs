//! `railyard treasury ...`: liquidity positions, rebalancing suggestions and settlement windows.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use railyard_store::{Store, StoreOptions};
use railyard_treasury::{liquidity, settlement};

use crate::fx_cmd::{load_config, reference_rates};

#[derive(Subcommand)]
pub enum TreasuryCommand {
    /// Each rail's prefunded position per currency and the open water-mark alerts.
    Positions(PositionArgs),
    /// Top-ups and transfers between rails that keep every rail above its low-water mark for the
    /// next --hours, projecting each rail's outflow over the last --window-hours, at the least FX
    /// cost.
    Rebalance(RebalanceArgs),
    /// Settlement windows of net-settled rails (open, closed, settling, settled).
    Windows(WindowArgs),
    /// Close a net rail's open window now (the next one opens).
    Close(CloseArgs),
    /// Settle a closed window: net it, post one movement per currency, print its report.
    Settle(SettleArgs),
}

#[derive(Args)]
pub struct WindowArgs {
    #[command(flatten)]
    common: PositionArgs,
    /// Only this rail's windows.
    #[arg(long)]
    rail: Option<String>,
}

#[derive(Args)]
pub struct CloseArgs {
    #[command(flatten)]
    common: PositionArgs,
    #[arg(long)]
    rail: String,
}

#[derive(Args)]
pub struct SettleArgs {
    #[command(flatten)]
    common: PositionArgs,
    /// The window, as `railyard treasury windows` lists it (for example rtp-us:w3).
    #[arg(long)]
    window: String,
    /// Print the report as CSV instead of text.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
}

#[derive(Args)]
pub struct PositionArgs {
    /// The database: sqlite:PATH or postgres://USER@HOST:PORT/DB.
    #[arg(long, default_value = "sqlite:railyard.db")]
    db: String,
    #[arg(long, default_value = crate::serve_cmd::DEMO_CONFIG)]
    config: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RebalanceArgs {
    #[command(flatten)]
    common: PositionArgs,
    /// How far ahead every rail must stay above its low-water mark.
    #[arg(long, default_value_t = 24)]
    hours: u32,
    /// The recent span whose outflow is projected forward.
    #[arg(long, default_value_t = 24)]
    window_hours: u32,
}

/// Who acts from the command line, in the audit log: `cli/<login>`.
fn cli_actor() -> String {
    format!("cli/{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

fn open(runtime: &tokio::runtime::Runtime, db: &str) -> anyhow::Result<Store> {
    Ok(runtime.block_on(Store::open_existing(db, &StoreOptions::default()))?)
}

pub fn run(command: TreasuryCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match command {
        TreasuryCommand::Windows(args) => {
            let store = open(&runtime, &args.common.db)?;
            let windows = runtime.block_on(settlement::windows(&store, args.rail.as_deref()))?;
            if args.common.json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "windows": windows }))?);
            } else {
                for window in &windows {
                    println!(
                        "{:<24} {:<9} opened {} closed {} settled {}",
                        window.id,
                        format!("{:?}", window.state).to_lowercase(),
                        window.opened_at,
                        window.closed_at.map(|at| at.to_string()).unwrap_or_else(|| "-".into()),
                        window.settled_at.map(|at| at.to_string()).unwrap_or_else(|| "-".into())
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TreasuryCommand::Close(args) => {
            let config = load_config(&args.common.config)?;
            let store = open(&runtime, &args.common.db)?;
            let window = runtime.block_on(settlement::close(&store, &config, &args.rail, &cli_actor()))?;
            if args.common.json {
                println!("{}", serde_json::to_string_pretty(&window)?);
            } else {
                println!("closed {} (journal entries up to {})", window.id, window.to_sequence.unwrap_or(0));
            }
            Ok(ExitCode::SUCCESS)
        }
        TreasuryCommand::Settle(args) => {
            let store = open(&runtime, &args.common.db)?;
            let report = runtime.block_on(settlement::settle(&store, &args.window, &cli_actor()))?;
            if args.csv {
                print!("{}", settlement::report_csv(&report));
            } else if args.common.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{} settled: {} payouts", report.window, report.payouts);
                for position in &report.positions {
                    println!("  net {}: {} over {} payouts", position.currency.code(), position.net, position.payouts);
                }
                for total in &report.by_tenant {
                    println!(
                        "  {} {}: {} over {} payouts",
                        total.tenant,
                        total.currency.code(),
                        total.amount,
                        total.payouts
                    );
                }
                for posting in &report.postings {
                    println!("  posted {}: {} → {} {}", posting.id, posting.credit, posting.debit, posting.amount);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TreasuryCommand::Positions(args) => {
            let config = load_config(&args.config)?;
            let (positions, alerts) = runtime.block_on(async {
                let store = Store::open_existing(&args.db, &StoreOptions::default()).await?;
                let positions = liquidity::positions(&store, &config).await?;
                let alerts = liquidity::open_alerts(&store).await?;
                anyhow::Ok((positions, alerts))
            })?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "positions": positions, "alerts": alerts }))?
                );
            } else {
                println!(
                    "{:<18} {:>4} {:>20} {:>18} {:>20} {:>18}  level",
                    "rail", "ccy", "prefunded", "reserved", "available", "low water"
                );
                for position in &positions {
                    println!(
                        "{:<18} {:>4} {:>20} {:>18} {:>20} {:>18}  {:?}",
                        position.rail,
                        position.currency.code(),
                        position.prefunded.amount_text(),
                        position.reserved.amount_text(),
                        position.available.amount_text(),
                        position.low_water.map(|mark| mark.amount_text()).unwrap_or_default(),
                        position.level
                    );
                }
                for alert in &alerts {
                    println!(
                        "alert {:?}: {} {} at {} (mark {}) since {}",
                        alert.level,
                        alert.rail,
                        alert.currency.code(),
                        alert.available,
                        alert.threshold,
                        alert.raised_at
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TreasuryCommand::Rebalance(args) => {
            if args.window_hours == 0 {
                anyhow::bail!("--window-hours: must be at least 1");
            }
            let config = load_config(&args.common.config)?;
            let fx = railyard_fx::FxBook::build(&config.fx_providers, reference_rates(&config, None)?)?;
            let plan = runtime.block_on(async {
                let store = Store::open_existing(&args.common.db, &StoreOptions::default()).await?;
                let plan = liquidity::rebalance(
                    &store,
                    &config,
                    &fx,
                    Duration::from_secs(u64::from(args.hours) * 3600),
                    Duration::from_secs(u64::from(args.window_hours) * 3600),
                )
                .await?;
                anyhow::Ok(plan)
            })?;
            if args.common.json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                println!("next {} h, projecting the last {} h:", plan.horizon_hours, plan.window_hours);
                for projection in plan.positions.iter().filter(|projection| projection.shortfall.is_positive()) {
                    println!(
                        "  {} {}: {} available, {} expected out, short {}",
                        projection.position.rail,
                        projection.position.currency.code(),
                        projection.position.available,
                        projection.projected_outflow,
                        projection.shortfall
                    );
                }
                if plan.suggestions.is_empty() {
                    println!("every rail stays above its low-water mark: nothing to move");
                }
                for suggestion in &plan.suggestions {
                    let from = suggestion.from_rail.clone().unwrap_or_else(|| "the house's bank".into());
                    let provider =
                        suggestion.fx_provider.as_ref().map(|provider| format!(" via {provider}")).unwrap_or_default();
                    println!(
                        "  {}: {from} → {}: send {}, receive {}{provider}, FX cost {}",
                        suggestion.action, suggestion.to_rail, suggestion.send, suggestion.receive, suggestion.fx_cost
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
