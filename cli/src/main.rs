//! The `railyard` command: every entry point a treasurer, an operator or an integrator uses.
//!
//! This crate only parses arguments, calls into the library crates and chooses exit codes; it holds
//! no business logic. Exit status: 0 on success, 1 when the command ran and found problems (invalid
//! configuration, no route), 2 for usage errors (clap's own).

mod audit_cmd;
mod bench_cmd;
mod bench_process;
mod config_cmd;
mod fx_cmd;
mod iso_cmd;
mod reconcile_cmd;
mod route_cmd;
mod sandbox_cmd;
mod serve_cmd;
mod simulate_cmd;
mod treasury_cmd;
mod verify_cmd;

/// jemalloc, not glibc's malloc: measured in release builds, alternated against the same commit
/// (BENCHMARKS.md, "jemalloc as the allocator"), it takes 15-25 % less CPU a payout end to end and
/// +6-18 % payouts/s on both stores: glibc's arena locks and `malloc_consolidate` were a quarter of
/// Railyard's samples on PostgreSQL. Resident memory per payout in flight rises from ~60 to ~75 bytes.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "railyard",
    version,
    about = "Smart routing and settlement for cross-border payouts",
    long_about = "Railyard routes each payout over the cheapest, fastest and safest combination of \
rails (card networks, instant payment systems, CBDC corridors) and FX conversions, then settles it \
exactly once against a double-entry ledger.\n\nMost commands read the treasury configuration: a TOML \
file describing rails, fees, FX spreads, limits, liquidity and API keys (see config/demo.toml)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with the treasury configuration file.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Reference rates and FX provider quotes.
    #[command(subcommand)]
    Fx(fx_cmd::FxCommand),
    /// Find the best route for a payment, with alternatives and why they lost.
    Route(route_cmd::RouteArgs),
    /// Benchmarks (build with --release).
    #[command(subcommand)]
    Bench(bench_cmd::BenchCommand),
    /// Validate and read ISO 20022 messages (pacs.008, pacs.002, pacs.028, camt.056, admi.004).
    #[command(name = "iso20022", subcommand)]
    Iso20022(iso_cmd::IsoCommand),
    /// Run a sandbox rail (card network, instant payments, CBDC platform) over HTTP.
    Sandbox(sandbox_cmd::SandboxArgs),
    /// Run Railyard: store, sandbox rails, actors and the HTTP API. With no flags: the demo on
    /// embedded SQLite (railyard.db) at http://127.0.0.1:8080.
    Serve(serve_cmd::ServeArgs),
    /// Drive a running Railyard through its HTTP API with a realistic mix of payouts and report
    /// throughput, latencies, route shares and outcomes.
    Simulate(simulate_cmd::SimulateArgs),
    /// Treasury: liquidity positions and rebalancing suggestions.
    #[command(subcommand)]
    Treasury(treasury_cmd::TreasuryCommand),
    /// Match rail reports and bank statements (camt.053/054, pacs.002, card settlement files, CBDC
    /// block logs) with the ledger; resolve in-doubt payouts from the evidence.
    Reconcile(reconcile_cmd::ReconcileArgs),
    /// Check every invariant of a Railyard database (ledger balanced, no overdraft, reservations
    /// resolved once, journal sequence and hash chain) and count violations.
    Verify(verify_cmd::VerifyArgs),
    /// The hash-chained audit log: verify it, print its head, read it.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// The beneficiary vault: re-encrypt under the active key after a rotation.
    #[command(subcommand)]
    Vault(audit_cmd::VaultCommand),
}

fn main() -> ExitCode {
    // A reader that goes away (`railyard ... | head`) is not an error: stop quietly, like ripgrep.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config(command) => config_cmd::run(command),
        Command::Fx(command) => fx_cmd::run(command),
        Command::Route(args) => route_cmd::run(args),
        Command::Bench(command) => bench_cmd::run(command),
        Command::Iso20022(command) => iso_cmd::run(command),
        Command::Sandbox(args) => sandbox_cmd::run(args),
        Command::Verify(args) => verify_cmd::run(args),
        Command::Audit(command) => audit_cmd::run(command),
        Command::Vault(command) => audit_cmd::run_vault(command),
        Command::Reconcile(args) => reconcile_cmd::run(args),
        Command::Treasury(command) => treasury_cmd::run(command),
        Command::Serve(args) => serve_cmd::run(args),
        Command::Simulate(args) => simulate_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}
