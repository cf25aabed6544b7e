//! `railyard sandbox card|instant|cbdc --listen ADDRESS`: a sandbox rail in its own process, so
//! that end-to-end tests cross a real network boundary with real timeouts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use railyard_config::RailKind;
use railyard_connector::faults::FaultPlan;
use railyard_connector::transport;

use crate::fx_cmd::{load_config, reference_rates};

#[derive(Clone, Copy, ValueEnum)]
pub enum Kind {
    Card,
    Instant,
    Cbdc,
}

#[derive(Args)]
pub struct SandboxArgs {
    /// Which kind of rail to run.
    kind: Kind,
    /// Address to listen on, for example 127.0.0.1:7101 (port 0 picks a free port).
    #[arg(long)]
    listen: String,
    /// Treasury configuration the rail is seeded from (currencies, limits, fees, FX, liquidity).
    #[arg(long, default_value = "config/demo.toml")]
    config: PathBuf,
    /// Which configured rail of that kind (default: the first one).
    #[arg(long)]
    rail: Option<String>,
    /// A fault plan (JSON: seed, latency, rejects, reply_lost_permille, request_lost_permille,
    /// outages, duplicate_callback_permille, late_callback_ms, slow_percent). Change it at run time
    /// with POST /sandbox/faults.
    #[arg(long)]
    faults: Option<PathBuf>,
}

pub fn run(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let kind = match args.kind {
        Kind::Card => RailKind::Card,
        Kind::Instant => RailKind::Instant,
        Kind::Cbdc => RailKind::Cbdc,
    };
    let rail = match &args.rail {
        Some(id) => config.rail(id).with_context(|| format!("--rail: no rail {id:?} in {}", args.config.display()))?,
        None => config
            .rails
            .iter()
            .find(|rail| rail.kind == kind)
            .with_context(|| format!("{} has no {kind} rail", args.config.display()))?,
    };
    if rail.kind != kind {
        bail!("--rail {}: that rail is of kind {}, not {kind}", rail.id, rail.kind);
    }
    let faults = match &args.faults {
        // Without --faults, the plan the configuration names for this rail (if any).
        None => railyard_rails::fault_plan(rail)?,
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let plan: FaultPlan = serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
            plan.validate().with_context(|| format!("{}", path.display()))?;
            plan
        }
    };
    let rates = reference_rates(&config, None)?;
    let sandbox = railyard_rails::sandbox(&config, rail, &rates, faults)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("--listen: cannot bind {}", args.listen))?;
        let address = listener.local_addr()?;
        println!("sandbox {kind} rail {} listening on http://{address}", rail.id);
        transport::serve(sandbox.service(), listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
