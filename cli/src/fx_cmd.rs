//! `railyard fx ...`: reference rates and provider quotes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use chrono::{NaiveDate, Utc};
use clap::Subcommand;
use railyard_config::TreasuryConfig;
use railyard_core::{Currency, Money, Sign};
use railyard_fx::{AmountSide, FxBook, QuoteRequest, RateHistory, ReferenceRates};

#[derive(Subcommand)]
pub enum FxCommand {
    /// Quote a conversion from every configured FX provider, best first.
    ///
    /// The amount is what you send, in the --from currency, unless --deliver is given, in which case
    /// it is what the beneficiary receives, in the --to currency.
    Quote {
        /// Currency to convert from (ISO 4217, for example USD).
        #[arg(long)]
        from: String,
        /// Currency to convert to (for example BRL).
        #[arg(long)]
        to: String,
        /// Amount as a decimal string, for example 1000 or 250.50.
        #[arg(long)]
        amount: String,
        /// Treat --amount as the amount delivered in the --to currency.
        #[arg(long)]
        deliver: bool,
        /// Use the ECB reference rates of this date (YYYY-MM-DD) instead of the latest.
        #[arg(long)]
        date: Option<NaiveDate>,
        /// Treasury configuration with the FX providers.
        #[arg(long, default_value = "config/demo.toml")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: FxCommand) -> anyhow::Result<ExitCode> {
    match command {
        FxCommand::Quote { from, to, amount, deliver, date, config, json } => {
            quote(&from, &to, &amount, deliver, date, &config, json)
        }
    }
}

/// Loads a configuration, turning its diagnostics into one error message.
pub fn load_config(path: &Path) -> anyhow::Result<TreasuryConfig> {
    railyard_config::load(path).map_err(|error| anyhow::anyhow!("{error}"))
}

/// The reference rates for `date` (or the latest), from the configured file or the bundled ECB data.
pub fn reference_rates(config: &TreasuryConfig, date: Option<NaiveDate>) -> anyhow::Result<ReferenceRates> {
    let history = match (&config.fx.rates_file, date) {
        (Some(path), _) => RateHistory::load(path)?,
        (None, Some(_)) => RateHistory::bundled_history(),
        (None, None) => RateHistory::bundled_daily(),
    };
    Ok(match date {
        Some(date) => history.as_of(date)?,
        None => history.latest(),
    })
}

pub fn parse_currency(code: &str, flag: &str) -> anyhow::Result<Currency> {
    Currency::from_code(code).with_context(|| format!("--{flag}"))
}

fn quote(
    from: &str,
    to: &str,
    amount: &str,
    deliver: bool,
    date: Option<NaiveDate>,
    config_path: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let base = parse_currency(from, "from")?;
    let quote = parse_currency(to, "to")?;
    let (side, amount_currency) = if deliver { (AmountSide::Deliver, quote) } else { (AmountSide::Send, base) };
    let amount = Money::parse(amount, amount_currency, Sign::Positive).context("--amount")?;
    let config = load_config(config_path)?;
    let book = FxBook::build(&config.fx_providers, reference_rates(&config, date)?)?;
    let quotes = book.quote(&QuoteRequest { base, quote, amount, side }, Utc::now())?;
    if json {
        let best = &quotes[0];
        let report = serde_json::json!({
            "quote": best,
            "alternatives": &quotes[1..],
            "rates_source": book.reference().source(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{base} → {quote}, ECB reference rates of {} ({})", book.reference().date(), book.reference().source());
    println!();
    println!(
        "{:<12} {:<16} {:>18} {:>18} {:>20} {:>20} {:>14}",
        "provider", "path", "mid", "rate", "send", "receive", "spread paid"
    );
    for candidate in &quotes {
        let path: Vec<&str> = candidate.path.iter().map(|c| c.code()).collect();
        println!(
            "{:<12} {:<16} {:>18} {:>18} {:>20} {:>20} {:>14}",
            candidate.provider.as_str(),
            path.join("→"),
            candidate.mid_rate.to_string(),
            candidate.rate.to_string(),
            candidate.send.to_string(),
            candidate.receive.to_string(),
            candidate.spread_paid.to_string(),
        );
    }
    let best = &quotes[0];
    println!();
    println!(
        "best: {} (quote {}), 1 {base} = {} {quote}, 1 {quote} = {} {base}, rounding {}, valid until {}",
        best.provider,
        best.id,
        best.rate,
        best.inverse_rate,
        best.rounding,
        best.expires_at.to_rfc3339()
    );
    Ok(ExitCode::SUCCESS)
}
