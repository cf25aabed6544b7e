//! Fee schedules: a fixed part plus basis points of the amount, clamped to a minimum and maximum.
//!
//! A fee is computed on the amount a leg is given to carry ("send"), rounded [`RoundingMode::Ceiling`]
//! to the currency's minor unit (in the house's favour), then clamped. The leg forwards `send - fee`.
//! [`FeeSchedule::gross_for_net`] inverts that: the smallest send that forwards at least a net amount.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{AmountError, Currency, Money, RoundingMode};

/// A fee schedule in one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FeeScheduleFields")]
pub struct FeeSchedule {
    fixed: Money,
    bps: Decimal,
    minimum: Option<Money>,
    maximum: Option<Money>,
}

/// The serialised form, validated by [`FeeSchedule::new`] on the way in.
#[derive(Deserialize)]
struct FeeScheduleFields {
    fixed: Money,
    bps: Decimal,
    minimum: Option<Money>,
    maximum: Option<Money>,
}

impl TryFrom<FeeScheduleFields> for FeeSchedule {
    type Error = FeeError;
    fn try_from(fields: FeeScheduleFields) -> Result<FeeSchedule, FeeError> {
        FeeSchedule::new(fields.fixed, fields.bps, fields.minimum, fields.maximum)
    }
}

/// Why a fee schedule was refused, or a fee could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeeError {
    #[error("fee amounts must be in {expected}, got {found}")]
    Currency { expected: Currency, found: Currency },
    #[error("fixed fee must not be negative")]
    NegativeFixed,
    #[error("basis points must be between 0 and {max} (exclusive), got {bps}")]
    BasisPointsRange { bps: Decimal, max: Decimal },
    #[error("basis points have at most {max} decimal places, got {bps}")]
    BasisPointsPrecision { bps: Decimal, max: u32 },
    #[error("minimum fee must not be negative")]
    NegativeMinimum,
    #[error("minimum fee {minimum} is above the maximum {maximum}")]
    MinimumAboveMaximum { minimum: Money, maximum: Money },
    #[error("no amount forwards {net} after fees")]
    Unreachable { net: Money },
    #[error(transparent)]
    Amount(#[from] AmountError),
}

impl FeeSchedule {
    /// Basis points are below this: a fee of 100% or more leaves nothing to forward.
    pub const BPS_LIMIT: Decimal = Decimal::from_parts(10_000, 0, 0, false, 0);
    /// Basis points may be given to hundredths ("2.5", "0.25").
    pub const BPS_SCALE_MAX: u32 = 2;

    pub fn new(
        fixed: Money,
        bps: Decimal,
        minimum: Option<Money>,
        maximum: Option<Money>,
    ) -> Result<FeeSchedule, FeeError> {
        let currency = fixed.currency();
        for amount in [minimum, maximum].into_iter().flatten() {
            if amount.currency() != currency {
                return Err(FeeError::Currency { expected: currency, found: amount.currency() });
            }
        }
        if fixed.is_negative() {
            return Err(FeeError::NegativeFixed);
        }
        if bps < Decimal::ZERO || bps >= FeeSchedule::BPS_LIMIT {
            return Err(FeeError::BasisPointsRange { bps, max: FeeSchedule::BPS_LIMIT });
        }
        if bps.normalize().scale() > FeeSchedule::BPS_SCALE_MAX {
            return Err(FeeError::BasisPointsPrecision { bps, max: FeeSchedule::BPS_SCALE_MAX });
        }
        if minimum.is_some_and(Money::is_negative) {
            return Err(FeeError::NegativeMinimum);
        }
        if let (Some(minimum), Some(maximum)) = (minimum, maximum)
            && minimum.minor_units() > maximum.minor_units()
        {
            return Err(FeeError::MinimumAboveMaximum { minimum, maximum });
        }
        Ok(FeeSchedule { fixed, bps: bps.normalize(), minimum, maximum })
    }

    /// A schedule that charges nothing.
    pub fn free(currency: Currency) -> FeeSchedule {
        FeeSchedule { fixed: Money::zero(currency), bps: Decimal::ZERO, minimum: None, maximum: None }
    }

    pub fn currency(&self) -> Currency {
        self.fixed.currency()
    }

    pub fn fixed(&self) -> Money {
        self.fixed
    }

    pub fn bps(&self) -> Decimal {
        self.bps
    }

    pub fn minimum(&self) -> Option<Money> {
        self.minimum
    }

    pub fn maximum(&self) -> Option<Money> {
        self.maximum
    }

    /// The fee on carrying `send`: `fixed + send * bps / 10_000`, rounded up, then clamped.
    pub fn fee_for(&self, send: Money) -> Result<Money, FeeError> {
        self.check_currency(send)?;
        let overflow = AmountError::Overflow { currency: self.currency() };
        let proportional = send
            .to_decimal()
            .checked_mul(self.bps)
            .and_then(|value| value.checked_div(Decimal::from(10_000)))
            .ok_or(overflow.clone())?;
        let raw = self.fixed.to_decimal().checked_add(proportional).ok_or(overflow)?;
        let mut fee = Money::from_decimal(raw, self.currency(), RoundingMode::Ceiling)?;
        if let Some(minimum) = self.minimum {
            fee = fee.max(minimum)?;
        }
        if let Some(maximum) = self.maximum {
            fee = fee.min(maximum)?;
        }
        Ok(fee)
    }

    /// What a leg forwards after its fee: `send - fee_for(send)`; negative when the fee exceeds it.
    pub fn net_of(&self, send: Money) -> Result<Money, FeeError> {
        Ok(send.checked_sub(self.fee_for(send)?)?)
    }

    /// The smallest `send` with `net_of(send) >= net`.
    ///
    /// `net_of` never decreases as `send` grows (the fee grows by less than one minor unit per minor
    /// unit sent, and clamping keeps that), so a bisection finds it.
    pub fn gross_for_net(&self, net: Money) -> Result<Money, FeeError> {
        self.check_currency(net)?;
        let currency = self.currency();
        let reaches = |send: i64| -> Result<bool, FeeError> {
            Ok(self.net_of(Money::from_minor(send, currency))?.minor_units() >= net.minor_units())
        };
        // Bracket: `low` does not reach (or is the answer), `high` does.
        let mut low = net.minor_units();
        if reaches(low)? {
            return Ok(net);
        }
        let mut gap = self.fee_for(net)?.minor_units().max(1);
        let mut high = loop {
            let candidate = low.checked_add(gap).ok_or(FeeError::Unreachable { net })?;
            if reaches(candidate)? {
                break candidate;
            }
            low = candidate;
            gap = gap.checked_mul(2).ok_or(FeeError::Unreachable { net })?;
        };
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if reaches(middle)? {
                high = middle;
            } else {
                low = middle;
            }
        }
        Ok(Money::from_minor(high, currency))
    }

    fn check_currency(&self, amount: Money) -> Result<(), FeeError> {
        if amount.currency() == self.currency() {
            Ok(())
        } else {
            Err(FeeError::Currency { expected: self.currency(), found: amount.currency() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn m(text: &str, code: &str) -> Money {
        Money::parse(text, Currency::from_code(code).unwrap(), crate::Sign::Any).unwrap()
    }

    fn schedule(fixed: &str, bps: Decimal, minimum: Option<&str>, maximum: Option<&str>, code: &str) -> FeeSchedule {
        FeeSchedule::new(m(fixed, code), bps, minimum.map(|x| m(x, code)), maximum.map(|x| m(x, code))).unwrap()
    }

    #[test]
    fn fees_table() {
        // fixed, bps, min, max, currency, send, expected fee
        type Row<'a> = (&'a str, Decimal, Option<&'a str>, Option<&'a str>, &'a str, &'a str, &'a str);
        let rows: &[Row] = &[
            ("0.25", dec!(10), None, None, "USD", "100.00", "0.35"),
            ("0.25", dec!(10), None, None, "USD", "100.01", "0.36"), // 0.350010 rounds up
            ("0", dec!(2.5), None, None, "USD", "1000.00", "0.25"),
            ("0", dec!(30), Some("1.00"), None, "EUR", "10.00", "1.00"), // minimum applies
            ("0", dec!(30), None, Some("25.00"), "EUR", "100000.00", "25.00"), // cap applies
            ("0", dec!(15), None, None, "JPY", "1001", "2"),             // 1.5015 yen rounds up to 2
            ("0.100", dec!(5), None, None, "KWD", "1000.000", "0.600"),
            ("0", dec!(0), None, None, "USD", "5.00", "0.00"),
        ];
        for (fixed, bps, minimum, maximum, code, send, want) in rows {
            let fees = schedule(fixed, *bps, *minimum, *maximum, code);
            assert_eq!(fees.fee_for(m(send, code)).unwrap(), m(want, code), "{send} {code}");
        }
    }

    #[test]
    fn gross_for_net_is_the_smallest_send() {
        let cases = [
            schedule("0.25", dec!(10), None, None, "USD"),
            schedule("0", dec!(30), Some("1.00"), Some("25.00"), "USD"),
            schedule("3.00", dec!(9999.99), None, Some("5.00"), "USD"),
        ];
        for fees in cases {
            for net in [1_i64, 99, 100, 12_345, 10_000_000, 987_654_321] {
                let net = Money::from_minor(net, fees.currency());
                let send = fees.gross_for_net(net).unwrap();
                assert!(fees.net_of(send).unwrap().minor_units() >= net.minor_units());
                let less = Money::from_minor(send.minor_units() - 1, fees.currency());
                assert!(fees.net_of(less).unwrap().minor_units() < net.minor_units(), "{fees:?} {net}");
            }
        }
    }

    #[test]
    fn schedules_are_validated() {
        let usd = |text| m(text, "USD");
        assert_eq!(FeeSchedule::new(usd("-1"), dec!(0), None, None), Err(FeeError::NegativeFixed));
        assert!(matches!(FeeSchedule::new(usd("0"), dec!(10000), None, None), Err(FeeError::BasisPointsRange { .. })));
        assert!(matches!(FeeSchedule::new(usd("0"), dec!(-1), None, None), Err(FeeError::BasisPointsRange { .. })));
        assert!(matches!(
            FeeSchedule::new(usd("0"), dec!(1.125), None, None),
            Err(FeeError::BasisPointsPrecision { .. })
        ));
        let min_above_max = FeeSchedule::new(usd("0"), dec!(1), Some(usd("2")), Some(usd("1")));
        assert!(matches!(min_above_max, Err(FeeError::MinimumAboveMaximum { .. })));
        let mixed = FeeSchedule::new(usd("0"), dec!(1), Some(m("1", "EUR")), None);
        assert!(matches!(mixed, Err(FeeError::Currency { .. })));
    }
}
