//! `railyard config ...`: checking the treasury configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use railyard_config::LoadError;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file and print every problem with its line, column and reason.
    ///
    /// Exits 0 when the file is valid and 1 when it is not.
    Check {
        /// The configuration file, for example config/demo.toml.
        file: PathBuf,
        /// Print the result as JSON: {"valid": bool, "errors": [{"line", "column", "message"}]}.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: ConfigCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Check { file, json } => check(&file, json),
    }
}

fn check(file: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let result = railyard_config::load(file);
    if json {
        let report = match &result {
            Ok(_) => serde_json::json!({ "valid": true, "errors": [] }),
            Err(LoadError::Invalid(errors)) => serde_json::json!({
                "valid": false,
                "errors": errors.diagnostics.iter().map(|d| serde_json::json!({
                    "line": d.line, "column": d.column, "message": d.message,
                })).collect::<Vec<_>>(),
            }),
            Err(other) => serde_json::json!({
                "valid": false,
                "errors": [{ "line": 0, "column": 0, "message": other.to_string() }],
            }),
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }
    match result {
        Ok(config) => {
            let currencies: Vec<&str> = config.currencies().iter().map(|c| c.code()).collect();
            println!(
                "{}: valid: {} rails, {} FX providers, {} liquidity accounts, {} tenants; currencies {}",
                file.display(),
                config.rails.len(),
                config.fx_providers.len(),
                config.liquidity.len(),
                config.tenants.len(),
                currencies.join(" "),
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(LoadError::Invalid(errors)) => {
            eprintln!("{errors}");
            let count = errors.diagnostics.len();
            eprintln!("{}: {count} error{}", file.display(), if count == 1 { "" } else { "s" });
            Ok(ExitCode::from(1))
        }
        Err(other) => {
            eprintln!("{other}");
            Ok(ExitCode::from(1))
        }
    }
}
