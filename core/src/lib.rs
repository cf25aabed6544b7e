//! Railyard's shared vocabulary: currencies, countries, amounts, rates, fee schedules and rounding.
//!
//! Design choice: an amount is an `i64` count of its currency's minor unit, stored beside an ISO 4217
//! [`Currency`] whose exponent is guaranteed to exist. The ledger and the database use exactly this
//! form (sqlx cannot carry decimals on SQLite), so no conversion sits between computing an amount and
//! storing it. Decimals (`rust_decimal`) appear only where fractions are real — rates, basis points,
//! parsing and formatting — and every step from a decimal back to an amount names its
//! [`RoundingMode`]. Every operation that can overflow returns an error instead of panicking.
//!
//! Nothing here does I/O, and nothing here uses floating point.

#![deny(clippy::float_arithmetic)]

mod amount;
mod country;
mod currency;
mod fee;
mod rate;
mod rounding;

pub use amount::{AmountError, Money, Sign};
pub use country::{Country, CountryError};
pub use currency::{Currency, CurrencyError};
pub use fee::{FeeError, FeeSchedule};
pub use rate::{Rate, RateError};
pub use rounding::{RoundingMode, div_rounded};
pub use rust_decimal::Decimal;
