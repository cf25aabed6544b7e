//! `railyard route`: the best route for one payment, with alternatives, as text, JSON or DOT.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use railyard_core::{Country, Money, Sign};
use railyard_fx::FxBook;
use railyard_routes::{LiveState, Mode, Route, RouteError, RouteRequest, Router, build_router};
use serde_json::{Value, json};

use crate::fx_cmd::{load_config, parse_currency, reference_rates};

#[derive(Args)]
pub struct RouteArgs {
    /// Treasury configuration.
    #[arg(long, default_value = "config/demo.toml")]
    config: PathBuf,
    /// Currency the payer's funds are in.
    #[arg(long)]
    from: String,
    /// Currency the beneficiary receives.
    #[arg(long)]
    to: String,
    /// Amount to send (in --from), or to deliver (in --to) with --deliver.
    #[arg(long)]
    amount: String,
    /// Deliver exactly --amount instead of sending it.
    #[arg(long)]
    deliver: bool,
    /// The instant the payment is submitted (RFC 3339, for example 2026-11-24T09:30:00Z); default now.
    /// Rails closed at that instant are not used.
    #[arg(long)]
    at: Option<DateTime<Utc>>,
    /// Beneficiary country (ISO 3166 alpha-2): only rails serving it are used.
    #[arg(long)]
    country: Option<String>,
    /// How many alternative routes to show besides the best.
    #[arg(long, default_value_t = 0)]
    alternatives: usize,
    /// Print JSON.
    #[arg(long, conflicts_with = "dot")]
    json: bool,
    /// Print the routing graph in Graphviz DOT with the chosen route highlighted.
    #[arg(long)]
    dot: bool,
}

pub fn build_demo_router(config: &railyard_config::TreasuryConfig) -> anyhow::Result<Router> {
    let fx = FxBook::build(&config.fx_providers, reference_rates(config, None)?)?;
    Ok(build_router(config, &fx, &LiveState::default())?)
}

pub fn run(args: RouteArgs) -> anyhow::Result<ExitCode> {
    let source = parse_currency(&args.from, "from")?;
    let destination = parse_currency(&args.to, "to")?;
    let mode = if args.deliver { Mode::Deliver } else { Mode::Send };
    let amount_currency = if args.deliver { destination } else { source };
    let amount = Money::parse(&args.amount, amount_currency, Sign::Positive).context("--amount")?;
    let config = load_config(&args.config)?;
    let router = build_demo_router(&config)?;
    let mut request = RouteRequest::payout(source, destination, amount, mode, args.at.unwrap_or_else(Utc::now));
    request.alternatives = args.alternatives;
    if let Some(country) = &args.country {
        request.country = Some(Country::from_code(country).context("--country")?);
    }
    match router.route(&request) {
        Ok(set) => {
            let highlight: Vec<u32> = set.routes[0].legs.iter().map(|leg| leg.edge).collect();
            if args.dot {
                print!("{}", router.to_dot(&highlight));
            } else if args.json {
                let routes: Vec<Value> = set.routes.iter().map(railyard_routes::route_json).collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "routes": routes, "exact": set.exact, "split": false }))?
                );
            } else {
                for (index, route) in set.routes.iter().enumerate() {
                    let title = if index == 0 { "best".to_string() } else { format!("alternative {index}") };
                    print_route(&title, route);
                }
                if !set.exact {
                    println!("note: a search bound was reached; a better route may exist");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(RouteError::NoRoute { .. }) if !args.dot => match router.split(&request) {
            Ok(split) => {
                if args.json {
                    let parts: Vec<Value> = split.parts.iter().map(railyard_routes::route_json).collect();
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&json!({
                            "routes": parts, "split": true, "minimal": split.minimal,
                            "send": split.send.amount_text(), "receive": split.receive.amount_text(),
                        }))?
                    );
                } else {
                    println!(
                        "No single route carries {}: split into {} parts{} (sends {}, delivers {}).\n",
                        request.amount,
                        split.parts.len(),
                        if split.minimal { ", the fewest possible" } else { "" },
                        split.send,
                        split.receive
                    );
                    for (index, part) in split.parts.iter().enumerate() {
                        print_route(&format!("part {}", index + 1), part);
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(split_error) => {
                if !args.json {
                    eprintln!("{split_error}\n");
                }
                report_error(router.route(&request).err(), args.json)
            }
        },
        Err(error) => report_error(Some(error), args.json),
    }
}

fn report_error(error: Option<RouteError>, json: bool) -> anyhow::Result<ExitCode> {
    let Some(error) = error else {
        return Ok(ExitCode::from(1));
    };
    if json {
        let blocked = match &error {
            RouteError::NoRoute { blocked, .. } => serde_json::to_value(blocked)?,
            _ => Value::Array(Vec::new()),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "routes": [], "error": error.to_string(), "blocked": blocked }))?
        );
    } else {
        eprintln!("{error}");
    }
    Ok(ExitCode::from(1))
}

fn print_route(title: &str, route: &Route) {
    println!(
        "{title}: send {} → receive {}, cost {}, {} ms, success {}%",
        route.send,
        route.receive,
        route.cost,
        route.latency_ms,
        (route.success_probability * railyard_core::Decimal::from(100)).round_dp(3)
    );
    for leg in &route.legs {
        let rate = leg.rate.map(|rate| format!(" @ {rate}")).unwrap_or_default();
        println!(
            "  {:<16} {:<4} {} → {}  send {:>20}  fee {:>14}  receive {:>20}{rate}",
            leg.rail,
            leg.kind,
            leg.from,
            leg.to,
            leg.send.to_string(),
            leg.fee.to_string(),
            leg.receive.to_string()
        );
    }
    if let Some(why) = &route.why_not_best {
        println!("  why not best: {why}");
    }
    println!();
}
