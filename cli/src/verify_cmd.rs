//! `railyard verify --db URL [--json]`: checks every store invariant and reports each with a count.

use std::process::ExitCode;

use clap::Args;
use railyard_store::{Store, StoreOptions};
use serde_json::{Map, Value, json};

#[derive(Args)]
pub struct VerifyArgs {
    /// The database: sqlite:PATH or postgres://USER@HOST:PORT/DB.
    #[arg(long)]
    db: String,
    #[arg(long)]
    json: bool,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = runtime.block_on(async {
        let store = Store::open_existing(&args.db, &StoreOptions::default()).await?;
        anyhow::Ok(railyard_store::verify::verify(&store).await?)
    })?;
    if args.json {
        let mut object = Map::new();
        for invariant in &report.invariants {
            object.insert(
                invariant.name.to_string(),
                json!({
                    "description": invariant.description,
                    "checked": invariant.checked,
                    "violations": invariant.violations,
                    "details": invariant.details,
                }),
            );
        }
        object.insert("ok".into(), Value::Bool(report.ok()));
        println!("{}", serde_json::to_string_pretty(&Value::Object(object))?);
    } else {
        for invariant in &report.invariants {
            let verdict = if invariant.violations == 0 { "ok  " } else { "FAIL" };
            println!(
                "{verdict} {:<32} {:>10} checked {:>6} violations  {}",
                invariant.name, invariant.checked, invariant.violations, invariant.description
            );
            for detail in &invariant.details {
                println!("       {detail}");
            }
        }
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
