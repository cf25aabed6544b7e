//! Named rounding modes, for decimals and for integer division.
//!
//! Every conversion that can lose precision names its mode; there is no default. The house rules are:
//! fees round [`RoundingMode::Ceiling`] (a fee is never understated), FX conversions round with the
//! mode the treasury configures for each provider (see the configuration crate).
//!
//! The integer form, [`div_rounded`], gives the same answer as the decimal form for the same mode; the
//! routing search uses it on its hot path and the decimal recomputation checks it.

use std::fmt;
use std::str::FromStr;

use rust_decimal::RoundingStrategy;
use serde::{Deserialize, Serialize};

/// How a value that falls between two representable amounts is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundingMode {
    /// Towards positive infinity. Fees use this: in the house's favour.
    Ceiling,
    /// Towards negative infinity.
    Floor,
    /// Towards zero (truncation).
    TowardZero,
    /// Away from zero.
    AwayFromZero,
    /// To the nearest; halves away from zero (commercial rounding).
    HalfUp,
    /// To the nearest; halves to the even neighbour (banker's rounding).
    HalfEven,
}

impl RoundingMode {
    /// Every mode, in the order they are documented.
    pub const ALL: [RoundingMode; 6] = [
        RoundingMode::Ceiling,
        RoundingMode::Floor,
        RoundingMode::TowardZero,
        RoundingMode::AwayFromZero,
        RoundingMode::HalfUp,
        RoundingMode::HalfEven,
    ];

    /// The name used in configuration files and JSON.
    pub fn name(self) -> &'static str {
        match self {
            RoundingMode::Ceiling => "ceiling",
            RoundingMode::Floor => "floor",
            RoundingMode::TowardZero => "toward_zero",
            RoundingMode::AwayFromZero => "away_from_zero",
            RoundingMode::HalfUp => "half_up",
            RoundingMode::HalfEven => "half_even",
        }
    }

    /// The equivalent rust_decimal strategy.
    pub fn strategy(self) -> RoundingStrategy {
        match self {
            RoundingMode::Ceiling => RoundingStrategy::ToPositiveInfinity,
            RoundingMode::Floor => RoundingStrategy::ToNegativeInfinity,
            RoundingMode::TowardZero => RoundingStrategy::ToZero,
            RoundingMode::AwayFromZero => RoundingStrategy::AwayFromZero,
            RoundingMode::HalfUp => RoundingStrategy::MidpointAwayFromZero,
            RoundingMode::HalfEven => RoundingStrategy::MidpointNearestEven,
        }
    }
}

impl fmt::Display for RoundingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RoundingMode {
    type Err = String;

    fn from_str(name: &str) -> Result<RoundingMode, String> {
        RoundingMode::ALL.into_iter().find(|mode| mode.name() == name).ok_or_else(|| {
            let names: Vec<&str> = RoundingMode::ALL.iter().map(|mode| mode.name()).collect();
            format!("unknown rounding mode {name:?}; expected one of {}", names.join(", "))
        })
    }
}

/// `numerator / denominator` rounded to an integer with `mode`; `None` when the denominator is zero or
/// the result does not fit.
pub fn div_rounded(numerator: i128, denominator: i128, mode: RoundingMode) -> Option<i128> {
    if denominator == 0 {
        return None;
    }
    let quotient = numerator.checked_div(denominator)?;
    let remainder = numerator.checked_rem(denominator)?;
    if remainder == 0 {
        return Some(quotient);
    }
    // The exact value lies strictly between `quotient` and `quotient + direction`.
    let negative = (numerator < 0) != (denominator < 0);
    let direction: i128 = if negative { -1 } else { 1 };
    let away = quotient.checked_add(direction)?;
    let twice_remainder = remainder.unsigned_abs().checked_mul(2)?;
    let half = twice_remainder.cmp(&denominator.unsigned_abs());
    let round_away = match mode {
        RoundingMode::Ceiling => !negative,
        RoundingMode::Floor => negative,
        RoundingMode::TowardZero => false,
        RoundingMode::AwayFromZero => true,
        RoundingMode::HalfUp => half != std::cmp::Ordering::Less,
        RoundingMode::HalfEven => match half {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => quotient % 2 != 0,
        },
    };
    Some(if round_away { away } else { quotient })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    #[test]
    fn integer_division_matches_decimal_rounding() {
        // Every mode against rust_decimal on a grid of signed fractions, including exact halves.
        for mode in RoundingMode::ALL {
            for numerator in -41_i128..=41 {
                for denominator in [-8_i128, -3, -2, -1, 1, 2, 3, 4, 8, 10] {
                    let exact =
                        Decimal::from_i128_with_scale(numerator, 0) / Decimal::from_i128_with_scale(denominator, 0);
                    let want = exact.round_dp_with_strategy(0, mode.strategy());
                    let got = div_rounded(numerator, denominator, mode).unwrap();
                    assert_eq!(Decimal::from(got), want, "{numerator}/{denominator} {mode}");
                }
            }
        }
    }

    #[test]
    fn division_refuses_zero_and_overflow() {
        assert_eq!(div_rounded(1, 0, RoundingMode::Ceiling), None);
        assert_eq!(div_rounded(i128::MIN, -1, RoundingMode::Ceiling), None);
    }

    #[test]
    fn names_round_trip() {
        for mode in RoundingMode::ALL {
            assert_eq!(mode.name().parse::<RoundingMode>(), Ok(mode));
        }
        assert!("bankers".parse::<RoundingMode>().unwrap_err().contains("half_even"));
    }
}
