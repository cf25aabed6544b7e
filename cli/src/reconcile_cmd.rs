//! `railyard reconcile --db URL FILE... [--json]`: matches rail reports and bank statements with the
//! ledger and resolves in-doubt payouts from the evidence.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use railyard_core::Decimal;
use railyard_saga::{Engine, EngineSettings};
use railyard_store::{Store, StoreOptions};
use railyard_treasury::reconcile::{self, Settings};
use railyard_treasury::reports;

use crate::fx_cmd::{load_config, reference_rates};

#[derive(Args)]
pub struct ReconcileArgs {
    /// The database: sqlite:PATH or postgres://USER@HOST:PORT/DB.
    #[arg(long)]
    db: String,
    /// Reports and statements: camt.052/053/054 and pacs.002 (XML), card settlement files (CSV),
    /// CBDC block logs (JSON).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The treasury configuration (rails and their kinds).
    #[arg(long, default_value = crate::serve_cmd::DEMO_CONFIG)]
    config: PathBuf,
    /// The rail the complete reports given are about (a bank statement of a rail's settlement
    /// account). Card settlement files and block logs default to the one rail of their kind.
    #[arg(long)]
    rail: Option<String>,
    /// A leg submitted less than this many seconds before a complete report ends may still
    /// execute after it: its absence proves nothing yet.
    #[arg(long, default_value_t = 600)]
    absence_grace_seconds: u64,
    /// Report only: resolve no in-doubt payout.
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
}

pub fn run(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let config = Arc::new(load_config(&args.config)?);
    if let Some(rail) = &args.rail
        && !config.rails.iter().any(|configured| configured.id.as_str() == rail)
    {
        anyhow::bail!("--rail {rail}: no such rail in {}", args.config.display());
    }
    // Every file is read before anything is compared: one unreadable file changes nothing.
    let reports = args.files.iter().map(|path| reports::read_file(path)).collect::<Result<Vec<_>, _>>()?;
    let rates = reference_rates(&config, None)?;
    let fx = Arc::new(railyard_fx::FxBook::build(&config.fx_providers, rates)?);
    let settings = Settings {
        absence_grace: Duration::from_secs(args.absence_grace_seconds),
        rail: args.rail.clone(),
        rails: config.rails.iter().map(|rail| (rail.id.to_string(), rail.kind)).collect(),
        resolve: !args.dry_run,
        // The rails are `railyard serve`'s: a resolved saga is left due for it to carry on.
        drive_on: false,
        ..Settings::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let run = runtime.block_on(async {
        let store = Store::open_existing(&args.db, &StoreOptions::default()).await?;
        let engine_settings = EngineSettings::new(
            format!("reconcile-{}", std::process::id()),
            Duration::from_secs(30),
            Duration::from_millis(500),
            10,
            3,
            Decimal::from(50),
        );
        // With drive_on false no leg is ever sent from here, so the vault is never read: throwaway
        // keys stand in for the deployment's.
        let vault = Arc::new(railyard_store::vault::VaultKeys::generate());
        let engine =
            Engine::new(store.clone(), config.clone(), fx, railyard_connector::Registry::new(), engine_settings, vault);
        let run = reconcile::reconcile(&store, Some(&engine), &reports, &settings).await?;
        store.pool().close().await;
        anyhow::Ok(run)
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&run)?);
    } else {
        print_text(&run);
    }
    Ok(if run.clean() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn print_text(run: &reconcile::Reconciliation) {
    for file in &run.files {
        let complete = match (&file.complete_for, file.from, file.until) {
            (Some(rail), Some(from), Some(until)) => format!(", complete for {rail} from {from} until {until}"),
            _ => String::new(),
        };
        println!("{}: {:?}, {} lines{complete}", file.file, file.kind, file.lines);
        for note in &file.notes {
            println!("  note: {note}");
        }
    }
    let summary = &run.summary;
    println!(
        "\n{} lines: {} matched, {} unmatched in the reports, {} unmatched in the ledger, {} mismatches; {} in-doubt payouts resolved",
        summary.lines,
        summary.matched,
        summary.unmatched_report,
        summary.unmatched_ledger,
        summary.mismatches,
        summary.resolved
    );
    for line in &run.unmatched_report {
        println!("unmatched  {} {}: {} on {}: {}", line.file, line.locator, line.amount, line.date, line.reason);
    }
    for leg in &run.unmatched_ledger {
        println!("missing    {} ({}) {} on {}: {}", leg.leg_key, leg.payout_id, leg.amount, leg.rail, leg.reason);
    }
    for mismatch in &run.mismatches {
        println!(
            "mismatch   {} {}: {}: expected {}, found {}: {}",
            mismatch.file, mismatch.locator, mismatch.leg_key, mismatch.expected, mismatch.found, mismatch.reason
        );
    }
    for resolution in &run.resolutions {
        let outcome = match (&resolution.result, &resolution.error) {
            (_, Some(error)) => format!("not applied: {error}"),
            (Some(result), None) => format!("{result:?}"),
            (None, None) => "not applied (--dry-run)".into(),
        };
        println!("resolve    {} {}: {:?} → {outcome}", resolution.payout_id, resolution.leg_key, resolution.evidence);
    }
}
