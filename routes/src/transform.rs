//! What one leg does to an amount, compiled to integer arithmetic for the search's hot path.
//!
//! A leg is given `send` (minor units of its source currency), charges
//! `fee = clamp(fixed + ceil(send x bps / 10_000), min, max)`, and forwards `net = send - fee`,
//! converted at its rate with its rounding mode when it changes currency. "Deliver exactly" runs the
//! other way: the smallest `net` whose conversion reaches the target, then the smallest `send` that
//! leaves at least `net` after the fee; the leg delivers exactly the target and its fee is
//! `send - net` (the fee, plus any rounding surplus: in the house's favour).
//!
//! These functions must give exactly what `railyard_core::FeeSchedule` and `Rate` give; the router
//! recomputes every chosen route through those and refuses a mismatch.

use railyard_core::{FeeSchedule, Rate, RoundingMode, div_rounded};

/// Basis points are stored in hundredths (2.5 bps = 250), so a fee is `send x bps_hundredths / 10^6`.
const BPS_HUNDREDTHS_PER_UNIT: i64 = 1_000_000;

/// A fee schedule in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompiledFee {
    pub fixed: i64,
    pub bps_hundredths: i64,
    pub minimum: i64,
    /// `i64::MAX` when there is no cap.
    pub maximum: i64,
}

impl CompiledFee {
    pub fn compile(schedule: &FeeSchedule) -> CompiledFee {
        let hundredths = schedule.bps() * railyard_core::Decimal::from(100);
        CompiledFee {
            fixed: schedule.fixed().minor_units(),
            // FeeSchedule allows at most two decimals of a basis point, so this is exact.
            bps_hundredths: i64::try_from(hundredths.trunc().mantissa()).unwrap_or(i64::MAX),
            minimum: schedule.minimum().map(|m| m.minor_units()).unwrap_or(0),
            maximum: schedule.maximum().map(|m| m.minor_units()).unwrap_or(i64::MAX),
        }
    }

    pub const FREE: CompiledFee = CompiledFee { fixed: 0, bps_hundredths: 0, minimum: 0, maximum: i64::MAX };

    /// The fee on `send` (which must not be negative).
    #[inline]
    pub fn fee(&self, send: i64) -> Option<i64> {
        debug_assert!(send >= 0);
        let proportional = if self.bps_hundredths == 0 {
            0
        } else {
            match send.checked_mul(self.bps_hundredths) {
                // The common case stays in 64 bits, where dividing by a constant is a multiplication.
                Some(product) => (product + BPS_HUNDREDTHS_PER_UNIT - 1) / BPS_HUNDREDTHS_PER_UNIT,
                None => {
                    let product = i128::from(send) * i128::from(self.bps_hundredths);
                    i64::try_from(div_rounded(product, i128::from(BPS_HUNDREDTHS_PER_UNIT), RoundingMode::Ceiling)?)
                        .ok()?
                }
            }
        };
        let raw = self.fixed.checked_add(proportional)?;
        Some(raw.max(self.minimum).min(self.maximum))
    }

    /// The smallest `send` with `send - fee(send) >= net`.
    pub fn gross_for_net(&self, net: i64) -> Option<i64> {
        let reaches = |send: i64| -> Option<bool> { Some(send.checked_sub(self.fee(send)?)? >= net) };
        // A guess from the proportional part, then a bracket and bisection over the monotone function.
        let rate_kept = BPS_HUNDREDTHS_PER_UNIT - self.bps_hundredths;
        let linear = i128::from(net.checked_add(self.fixed)?) * i128::from(BPS_HUNDREDTHS_PER_UNIT);
        let guess = i64::try_from(div_rounded(linear, i128::from(rate_kept), RoundingMode::Ceiling)?).ok()?;
        let guess = guess.max(net).min(net.saturating_add(self.maximum.min(i64::MAX / 4)));
        let (mut low, mut high) = if reaches(guess)? { (net.checked_sub(1)?, guess) } else { (guess, guess) };
        if low == high {
            let mut step: i64 = 1;
            loop {
                high = high.checked_add(step)?;
                if reaches(high)? {
                    break;
                }
                low = high;
                step = step.checked_mul(2)?;
            }
        }
        // Invariant: `low` does not reach (or is below `net`), `high` reaches.
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if reaches(middle)? {
                high = middle;
            } else {
                low = middle;
            }
        }
        Some(high)
    }
}

/// `receive = round(net x numerator / denominator)`: a rate with the exponent difference folded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompiledRate {
    pub numerator: i128,
    pub denominator: i128,
    pub rounding: RoundingMode,
}

impl CompiledRate {
    /// Compiles `rate` for amounts in minor units of its base into minor units of its quote.
    pub fn compile(rate: &Rate, rounding: RoundingMode) -> Option<CompiledRate> {
        let value = rate.value();
        // receive_minor = net_minor x mantissa x 10^(quote_exp - base_exp - scale)
        let shift = i64::from(rate.quote().exponent()) - i64::from(rate.base().exponent()) - i64::from(value.scale());
        let mantissa = value.mantissa();
        let (numerator, denominator) = if shift >= 0 {
            (mantissa.checked_mul(10_i128.checked_pow(u32::try_from(shift).ok()?)?)?, 1)
        } else {
            (mantissa, 10_i128.checked_pow(u32::try_from(-shift).ok()?)?)
        };
        Some(CompiledRate { numerator, denominator, rounding })
    }

    #[inline]
    pub fn apply(&self, net: i64) -> Option<i64> {
        let product = i128::from(net).checked_mul(self.numerator)?;
        i64::try_from(div_rounded(product, self.denominator, self.rounding)?).ok()
    }

    /// The smallest `net` whose [`CompiledRate::apply`] is at least `target` (`target >= 0`).
    pub fn inverse(&self, target: i64) -> Option<i64> {
        // apply(net) >= target exactly when net x numerator / denominator reaches a threshold below the
        // target that depends on the rounding mode; start from it and step to the exact answer.
        let twice_threshold: i128 = match self.rounding {
            RoundingMode::Ceiling | RoundingMode::AwayFromZero => 2 * i128::from(target) - 2,
            RoundingMode::HalfUp | RoundingMode::HalfEven => 2 * i128::from(target) - 1,
            RoundingMode::Floor | RoundingMode::TowardZero => 2 * i128::from(target),
        }
        .max(0);
        let estimate = div_rounded(
            twice_threshold.checked_mul(self.denominator)?,
            self.numerator.checked_mul(2)?,
            RoundingMode::Floor,
        )?;
        let mut net = i64::try_from(estimate).ok()?.max(0);
        while self.apply(net)? < target {
            net = net.checked_add(1)?;
        }
        while net > 0 && self.apply(net - 1)? >= target {
            net -= 1;
        }
        Some(net)
    }
}

/// A whole leg: fee, then an optional conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompiledLeg {
    pub fee: CompiledFee,
    pub rate: Option<CompiledRate>,
}

impl CompiledLeg {
    /// `(fee, receive)` for `send`, or `None` when the fee leaves nothing or the arithmetic overflows.
    #[inline]
    pub fn forward(&self, send: i64) -> Option<(i64, i64)> {
        let fee = self.fee.fee(send)?;
        let net = send.checked_sub(fee)?;
        if net <= 0 {
            return None;
        }
        let receive = match &self.rate {
            Some(rate) => rate.apply(net)?,
            None => net,
        };
        (receive > 0).then_some((fee, receive))
    }

    /// `(send, fee)` that delivers exactly `receive`, the send being the smallest that does.
    pub fn backward(&self, receive: i64) -> Option<(i64, i64)> {
        let net = match &self.rate {
            Some(rate) => rate.inverse(receive)?,
            None => receive,
        };
        if net <= 0 {
            return None;
        }
        let send = self.fee.gross_for_net(net)?;
        Some((send, send - net))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use railyard_core::{Currency, Decimal, Money};

    fn c(code: &str) -> Currency {
        Currency::from_code(code).unwrap()
    }

    #[test]
    fn compiled_fees_match_decimal_fees() {
        let usd = c("USD");
        let schedules = [
            FeeSchedule::new(Money::from_minor(25, usd), Decimal::new(15, 0), None, None).unwrap(),
            FeeSchedule::new(
                Money::from_minor(0, usd),
                Decimal::new(25, 1),
                Some(Money::from_minor(100, usd)),
                Some(Money::from_minor(1_500, usd)),
            )
            .unwrap(),
            FeeSchedule::new(
                Money::from_minor(300, usd),
                Decimal::new(999_999, 2),
                None,
                Some(Money::from_minor(500, usd)),
            )
            .unwrap(),
        ];
        for schedule in &schedules {
            let compiled = CompiledFee::compile(schedule);
            for send in [0_i64, 1, 7, 99, 100, 101, 12_345, 999_999, 123_456_789, 10_i64.pow(15), i64::MAX / 3] {
                let want = schedule.fee_for(Money::from_minor(send, usd)).unwrap().minor_units();
                assert_eq!(compiled.fee(send), Some(want), "{schedule:?} {send}");
            }
            for net in [1_i64, 50, 12_345, 10_i64.pow(12)] {
                let want = schedule.gross_for_net(Money::from_minor(net, usd)).unwrap().minor_units();
                assert_eq!(compiled.gross_for_net(net), Some(want), "{schedule:?} {net}");
            }
        }
    }

    #[test]
    fn compiled_rates_match_decimal_rates() {
        let pairs = [
            ("USD", "JPY", "157.2513"),
            ("JPY", "USD", "0.00635929"),
            ("IDR", "KWD", "0.0000168728548269"),
            ("EUR", "BHD", "0.4201"),
            ("KWD", "IDR", "59267.3"),
        ];
        for (base, quote, value) in pairs {
            let rate = Rate::new(c(base), c(quote), value.parse().unwrap()).unwrap();
            for mode in RoundingMode::ALL {
                let compiled = CompiledRate::compile(&rate, mode).unwrap();
                for net in [1_i64, 3, 99, 12_345, 987_654_321, 10_i64.pow(14)] {
                    let want = rate.convert(Money::from_minor(net, c(base)), mode).unwrap().minor_units();
                    assert_eq!(compiled.apply(net), Some(want), "{base}/{quote} {mode} {net}");
                }
                for target in [1_i64, 2, 1_000, 123_457, 10_i64.pow(12)] {
                    let want = rate.convert_inverse(Money::from_minor(target, c(quote)), mode).unwrap().minor_units();
                    assert_eq!(compiled.inverse(target), Some(want), "{base}/{quote} {mode} inverse {target}");
                }
            }
        }
    }
}
