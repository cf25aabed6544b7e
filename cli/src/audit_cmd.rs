//! `railyard audit verify|head|log` and `railyard vault rekey`: the tamper-evident audit log and the
//! beneficiary vault's key rotation.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use railyard_store::{Store, StoreOptions};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain of the audit log: every edited, removed or reordered row is named
    /// (exit 1 when any is found).
    Verify {
        /// The database: sqlite:PATH or postgres://USER@HOST:PORT/DB.
        #[arg(long, default_value = "sqlite:railyard.db")]
        db: String,
        #[arg(long)]
        json: bool,
    },
    /// The chain's head (last sequence and hash): publish it where the database's administrators
    /// cannot write, so that a rewrite of the whole chain is detectable too.
    Head {
        #[arg(long, default_value = "sqlite:railyard.db")]
        db: String,
    },
    /// The newest entries.
    Log {
        #[arg(long, default_value = "sqlite:railyard.db")]
        db: String,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum VaultCommand {
    /// Re-encrypt every stored beneficiary account under the active key (the first `key` line), so
    /// that older keys can be retired. Keys come from RAILYARD_VAULT_KEYS, RAILYARD_VAULT_KEY_FILE or
    /// the file beside the database.
    Rekey {
        #[arg(long, default_value = "sqlite:railyard.db")]
        db: String,
        /// The key file, when not given by the environment (default: beside an SQLite database).
        #[arg(long)]
        keys: Option<PathBuf>,
    },
}

fn open(db: &str) -> anyhow::Result<(tokio::runtime::Runtime, Store)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = runtime.block_on(Store::open_existing(db, &StoreOptions::default()))?;
    Ok((runtime, store))
}

pub fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify { db, json } => {
            let (runtime, store) = open(&db)?;
            let report = runtime.block_on(railyard_store::audit::verify(&store))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "intact": report.intact(), "report": report }))?
                );
            } else {
                for problem in &report.listed {
                    println!("row {}: {}", problem.sequence, problem.problem);
                }
                println!(
                    "{} entries, head {} {}: {}",
                    report.entries,
                    report.head_sequence,
                    report.head_hash,
                    if report.intact() { "intact".to_string() } else { format!("{} problems", report.problems) }
                );
            }
            Ok(if report.intact() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        AuditCommand::Head { db } => {
            let (runtime, store) = open(&db)?;
            let (sequence, hash) = runtime.block_on(railyard_store::audit::head(&store))?;
            println!("{sequence} {hash}");
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Log { db, limit, json } => {
            let (runtime, store) = open(&db)?;
            let entries = runtime.block_on(store.audit_log(limit))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                for entry in &entries {
                    let at =
                        chrono::DateTime::from_timestamp_micros(entry.at).map(|at| at.to_rfc3339()).unwrap_or_default();
                    println!("{:>6} {at} {:<28} {:<20} {}", entry.sequence, entry.actor, entry.action, entry.detail);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn run_vault(command: VaultCommand) -> anyhow::Result<ExitCode> {
    match command {
        VaultCommand::Rekey { db, keys } => {
            let default = keys.unwrap_or_else(|| crate::serve_cmd::vault_file(&db));
            let (vault, source) = railyard_store::vault::keys_from_environment(&default, false)?;
            let (runtime, store) = open(&db)?;
            let count = runtime.block_on(railyard_store::vault::rekey(&store, &vault))?;
            println!("{count} accounts re-encrypted under key {} (keys from {source})", vault.active_key());
            Ok(ExitCode::SUCCESS)
        }
    }
}
