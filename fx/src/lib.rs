//! Foreign exchange: reference rates, providers, quotes.
//!
//! - [`RateHistory`] reads the ECB's daily and historical files (CSV or zip), with `N/A` gaps and
//!   retired currencies, and gives the [`ReferenceRates`] that apply on any date.
//! - [`FxBook`] applies each configured provider's spread per pair (or its own fixed rates), refuses
//!   pairs with no rate and rate sets with an arbitrage cycle, and computes [`Quote`]s: direct, or
//!   triangulated through a currency the provider quotes against both sides.
//!
//! All arithmetic is decimal; amounts are rounded with the provider's configured mode. This crate
//! does no I/O except reading a rates file it is pointed at.

#![deny(clippy::float_arithmetic)]

mod arbitrage;
mod book;
mod ecb;
mod zip;

pub use arbitrage::CycleStep;
pub use book::{AmountSide, Conversion, FxBook, Quote, QuoteRequest, new_quote_id};
pub use ecb::{RateHistory, ReferenceRates, STALE_DAYS_MAX, SkippedColumn};

use chrono::NaiveDate;
use railyard_core::{AmountError, Currency, Decimal, RateError};

/// Why rates could not be read or a quote could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FxError {
    #[error("{file}: {message}")]
    Source { file: String, message: String },
    #[error("{file}, line {line}: {message}")]
    Format { file: String, line: usize, message: String },
    #[error("no reference rates on or before {date} (the first are from {first})")]
    NoRatesOn { date: NaiveDate, first: NaiveDate },
    #[error("no reference rate for {currency} on {date} (none published in the {STALE_DAYS_MAX} days before)")]
    NoRate { currency: Currency, date: NaiveDate },
    #[error(
        "FX provider {provider} (line {origin}) quotes {pair}, but there is no reference rate for {currency} on {date}; add a fixed rate or remove the pair"
    )]
    MissingPairRate { provider: String, pair: String, currency: Currency, date: NaiveDate, origin: String },
    #[error("arbitrage cycle: {} gives {product} per unit (more than 1): a rate or spread is wrong", describe_cycle(.steps))]
    Arbitrage { steps: Vec<CycleStep>, product: Decimal },
    #[error("no FX provider converts {base} to {quote}")]
    NoProvider { base: Currency, quote: Currency },
    #[error("the amount must be in {expected}, not {found}")]
    AmountCurrency { expected: Currency, found: Currency },
    #[error("the amount must be greater than zero")]
    AmountNotPositive,
    #[error("{currency} to {currency} needs no conversion")]
    SameCurrency { currency: Currency },
    #[error(transparent)]
    Rate(#[from] RateError),
    #[error(transparent)]
    Amount(#[from] AmountError),
    #[error("internal FX error: {0}")]
    Internal(String),
}

fn describe_cycle(steps: &[CycleStep]) -> String {
    steps
        .iter()
        .map(|step| format!("{}→{} at {} ({})", step.base, step.quote, step.rate, step.provider))
        .collect::<Vec<_>>()
        .join(", then ")
}
