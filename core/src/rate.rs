//! Exchange rates between two currencies, and conversion with a named rounding mode.
//!
//! A [`Rate`] says how many units of `quote` one unit of `base` buys. Converting forwards
//! ("send exactly X") multiplies and rounds with the caller's mode. Converting backwards ("deliver
//! exactly Y") finds the smallest base amount whose forward conversion with the same mode delivers at
//! least Y: the house never delivers less than it promised.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{AmountError, Currency, Money, RoundingMode};

/// Units of `quote` per unit of `base`; always greater than zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rate {
    base: Currency,
    quote: Currency,
    value: Decimal,
}

/// Why a rate or a conversion was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("rate {base}/{quote} must be greater than zero, got {value}")]
    NotPositive { base: Currency, quote: Currency, value: Decimal },
    #[error("rate {base}/{quote} converts {base}, not {given}")]
    WrongCurrency { base: Currency, quote: Currency, given: Currency },
    #[error("conversion overflowed")]
    Overflow,
    #[error(transparent)]
    Amount(#[from] AmountError),
}

impl Rate {
    /// Significant digits kept when a rate is derived (inverted, crossed, spread applied).
    ///
    /// Twelve keep the relative error of a derived rate below 5e-12, and keep `amount x rate` within
    /// rust_decimal's 28 digits for amounts below [`Rate::EXACT_AMOUNT_MAX_MINOR`], so the decimal
    /// conversion and the routing search's integer conversion agree exactly.
    pub const SIGNIFICANT_DIGITS: u32 = 12;

    /// Amounts (in minor units) up to which a conversion is computed without intermediate rounding.
    pub const EXACT_AMOUNT_MAX_MINOR: i64 = 10_i64.pow(15);

    pub fn new(base: Currency, quote: Currency, value: Decimal) -> Result<Rate, RateError> {
        if value <= Decimal::ZERO {
            return Err(RateError::NotPositive { base, quote, value });
        }
        Ok(Rate { base, quote, value: value.normalize() })
    }

    /// The identity rate of a currency to itself.
    pub fn identity(currency: Currency) -> Rate {
        Rate { base: currency, quote: currency, value: Decimal::ONE }
    }

    pub fn base(&self) -> Currency {
        self.base
    }

    pub fn quote(&self) -> Currency {
        self.quote
    }

    pub fn value(&self) -> Decimal {
        self.value
    }

    /// The rate the other way round, rounded half-even to [`Rate::SIGNIFICANT_DIGITS`].
    pub fn inverse(&self) -> Result<Rate, RateError> {
        let value = Decimal::ONE.checked_div(self.value).ok_or(RateError::Overflow)?;
        Rate::new(self.quote, self.base, round_derived(value))
    }

    /// `self` followed by `next` (base→quote→next.quote), rounded half-even to the significant digits.
    pub fn cross(&self, next: &Rate) -> Result<Rate, RateError> {
        if next.base != self.quote {
            return Err(RateError::WrongCurrency { base: next.base, quote: next.quote, given: self.quote });
        }
        let value = self.value.checked_mul(next.value).ok_or(RateError::Overflow)?;
        Rate::new(self.base, next.quote, round_derived(value))
    }

    /// The rate after the house keeps `spread_bps` basis points of the converted amount, rounded
    /// towards zero at the significant digits (so the customer's rate is never better than stated).
    pub fn with_spread(&self, spread_bps: Decimal) -> Result<Rate, RateError> {
        let keep = Decimal::ONE
            .checked_sub(spread_bps.checked_div(Decimal::from(10_000)).ok_or(RateError::Overflow)?)
            .ok_or(RateError::Overflow)?;
        let value = self.value.checked_mul(keep).ok_or(RateError::Overflow)?;
        let value = value
            .round_sf_with_strategy(Rate::SIGNIFICANT_DIGITS, rust_decimal::RoundingStrategy::ToZero)
            .ok_or(RateError::Overflow)?;
        Rate::new(self.base, self.quote, value)
    }

    /// The cross rate base→quote from two rates against a common currency (`common→base`,
    /// `common→quote`), computed with one rounding: how rates quoted per EUR are crossed.
    pub fn cross_through(common_base: &Rate, common_quote: &Rate) -> Result<Rate, RateError> {
        if common_base.base != common_quote.base {
            return Err(RateError::WrongCurrency {
                base: common_quote.base,
                quote: common_quote.quote,
                given: common_base.base,
            });
        }
        let value = common_quote.value.checked_div(common_base.value).ok_or(RateError::Overflow)?;
        Rate::new(common_base.quote, common_quote.quote, round_derived(value))
    }

    /// Converts `amount` (in `base`) to `quote`, rounding with `mode`.
    pub fn convert(&self, amount: Money, mode: RoundingMode) -> Result<Money, RateError> {
        self.check_base(amount)?;
        let exact = amount.to_decimal().checked_mul(self.value).ok_or(RateError::Overflow)?;
        Ok(Money::from_decimal(exact, self.quote, mode)?)
    }

    /// The smallest amount of `base` whose [`Rate::convert`] with `mode` gives at least `target`.
    ///
    /// `target` must not be negative: "deliver exactly Y" is only asked for payouts.
    pub fn convert_inverse(&self, target: Money, mode: RoundingMode) -> Result<Money, RateError> {
        if target.currency() != self.quote {
            return Err(RateError::WrongCurrency { base: self.quote, quote: self.base, given: target.currency() });
        }
        if target.is_negative() {
            return Err(RateError::Amount(AmountError::Negative));
        }
        // `convert(s) >= target` holds exactly when `s * rate` reaches a threshold below `target` that
        // depends on the mode: a whole minor unit below for modes that round up, half a unit for the
        // midpoint modes, none for modes that round down.
        let unit = Money::from_minor(1, self.quote).to_decimal();
        let slack = match mode {
            RoundingMode::Ceiling | RoundingMode::AwayFromZero => unit,
            RoundingMode::HalfUp | RoundingMode::HalfEven => unit / Decimal::TWO,
            RoundingMode::Floor | RoundingMode::TowardZero => Decimal::ZERO,
        };
        let threshold = target.to_decimal().checked_sub(slack).ok_or(RateError::Overflow)?.max(Decimal::ZERO);
        let exact = threshold.checked_div(self.value).ok_or(RateError::Overflow)?;
        let mut send = Money::from_decimal(exact, self.base, RoundingMode::Floor)?;
        // The threshold may be strict (Ceiling: more than target − 1) and the division is rounded at
        // 28 digits, so the floor is within two minor units of the answer: step to it.
        let one = Money::from_minor(1, self.base);
        let mut steps = 0;
        while self.convert(send, mode)?.minor_units() < target.minor_units() {
            send = send.checked_add(one)?;
            steps += 1;
            debug_assert!(steps <= 3, "inverse conversion drifted: {self:?} {target:?} {mode}");
        }
        while send.is_positive() {
            let smaller = send.checked_sub(one)?;
            if self.convert(smaller, mode)?.minor_units() < target.minor_units() {
                break;
            }
            send = smaller;
            steps += 1;
            debug_assert!(steps <= 3, "inverse conversion drifted: {self:?} {target:?} {mode}");
        }
        Ok(send)
    }

    fn check_base(&self, amount: Money) -> Result<(), RateError> {
        if amount.currency() == self.base {
            Ok(())
        } else {
            Err(RateError::WrongCurrency { base: self.base, quote: self.quote, given: amount.currency() })
        }
    }
}

fn round_derived(value: Decimal) -> Decimal {
    value
        .round_sf_with_strategy(Rate::SIGNIFICANT_DIGITS, rust_decimal::RoundingStrategy::MidpointNearestEven)
        .unwrap_or(value)
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1 {} = {} {}", self.base, self.value, self.quote)
    }
}

impl fmt::Debug for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.base, self.quote, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn c(code: &str) -> Currency {
        Currency::from_code(code).unwrap()
    }

    #[test]
    fn forward_and_inverse_conversions() {
        let usd_jpy = Rate::new(c("USD"), c("JPY"), dec!(157.2513)).unwrap();
        let ten = Money::from_minor(1_000, c("USD"));
        assert_eq!(usd_jpy.convert(ten, RoundingMode::Floor).unwrap().minor_units(), 1_572);
        assert_eq!(usd_jpy.convert(ten, RoundingMode::HalfEven).unwrap().minor_units(), 1_573);
        let target = Money::from_minor(1_573, c("JPY"));
        for mode in RoundingMode::ALL {
            let send = usd_jpy.convert_inverse(target, mode).unwrap();
            assert!(usd_jpy.convert(send, mode).unwrap().minor_units() >= 1_573);
            let less = Money::from_minor(send.minor_units() - 1, c("USD"));
            assert!(usd_jpy.convert(less, mode).unwrap().minor_units() < 1_573, "{mode}");
        }
        // One IDR minor unit is worth a tiny fraction of a KWD minor unit: the answer is far from
        // the ceiling of the exact inverse for modes that round up.
        let idr_kwd = Rate::new(c("IDR"), c("KWD"), dec!(0.0000186)).unwrap();
        let target = Money::from_minor(1_000, c("KWD"));
        for mode in RoundingMode::ALL {
            let send = idr_kwd.convert_inverse(target, mode).unwrap();
            assert!(idr_kwd.convert(send, mode).unwrap().minor_units() >= 1_000, "{mode}");
            let less = Money::from_minor(send.minor_units() - 1, c("IDR"));
            assert!(idr_kwd.convert(less, mode).unwrap().minor_units() < 1_000, "{mode}");
        }
    }

    #[test]
    fn spread_inverse_and_cross() {
        let eur_usd = Rate::new(c("EUR"), c("USD"), dec!(1.1172)).unwrap();
        let eur_brl = Rate::new(c("EUR"), c("BRL"), dec!(6.0692)).unwrap();
        let usd_brl = eur_usd.inverse().unwrap().cross(&eur_brl).unwrap();
        // The inverse is rounded before crossing, so chaining differs from the exact quotient
        // (5.43250984604368...) in the last digit; crossing through EUR divides once instead.
        assert_eq!(usd_brl.value(), dec!(5.43250984604));
        let direct = Rate::cross_through(&eur_usd, &eur_brl).unwrap();
        assert_eq!(direct.value(), dec!(5.43250984604));
        let idr = Rate::new(c("EUR"), c("IDR"), dec!(20275.17)).unwrap();
        let kwd = Rate::new(c("EUR"), c("KWD"), dec!(0.3421)).unwrap();
        let idr_kwd = Rate::cross_through(&idr, &kwd).unwrap();
        assert_eq!(idr_kwd.value(), dec!(0.0000168728548269), "twelve significant digits, not twelve decimals");
        let spread = eur_usd.with_spread(dec!(25)).unwrap();
        assert_eq!(spread.value(), dec!(1.1144070));
        assert!(Rate::new(c("EUR"), c("USD"), dec!(0)).is_err());
        assert!(eur_usd.cross(&eur_brl).is_err());
        let yen = Money::from_minor(5, c("JPY"));
        assert!(matches!(eur_usd.convert(yen, RoundingMode::Floor), Err(RateError::WrongCurrency { .. })));
    }
}
