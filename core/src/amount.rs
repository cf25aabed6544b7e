//! [`Money`]: an integer count of a currency's minor unit.
//!
//! Money is stored as `i64` minor units (cents for USD, yen for JPY, fils for KWD) beside its currency.
//! That is the form the ledger and the database use; decimals appear only at the edges (parsing,
//! formatting, FX and fee arithmetic), always through a named [`RoundingMode`].

use std::fmt;

use rust_decimal::Decimal;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Currency, RoundingMode};

/// An amount of one currency, exact to its minor unit.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    minor_units: i64,
    currency: Currency,
}

/// Which signs an amount may have where it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// Greater than zero: payout, quote and fee-cap amounts.
    Positive,
    /// Zero or more: fees, balances that cannot be overdrawn, limits.
    NonNegative,
    /// Any sign: ledger balances and adjustments.
    Any,
}

/// Why an amount was refused, in the order the checks run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount is empty")]
    Empty,
    #[error("amount is longer than {max} characters")]
    TooLong { max: usize },
    #[error(
        "amount {text:?} is not a plain decimal number (character {position}: {found:?}); write digits with an optional '.' and no exponent, sign '+' or separators"
    )]
    Malformed { text: String, position: usize, found: char },
    #[error("{currency} allows {allowed} decimal place(s); {text:?} has {found}")]
    TooManyDecimals { currency: Currency, allowed: u32, found: u32, text: String },
    #[error("amount must not be negative")]
    Negative,
    #[error("amount must be greater than zero")]
    Zero,
    #[error("amount is too large to represent in {currency} minor units")]
    Overflow { currency: Currency },
    #[error("cannot combine {left} with {right}")]
    CurrencyMismatch { left: Currency, right: Currency },
}

impl Money {
    /// Longest amount text accepted; longer inputs are refused before any arithmetic.
    pub const TEXT_LENGTH_MAX: usize = 40;

    /// An amount given in minor units.
    pub const fn from_minor(minor_units: i64, currency: Currency) -> Money {
        Money { minor_units, currency }
    }

    /// Zero of a currency.
    pub const fn zero(currency: Currency) -> Money {
        Money { minor_units: 0, currency }
    }

    /// Parses a plain decimal string ("1234.5", "-0.01", "1000") in `currency`.
    ///
    /// More fractional digits than the currency's exponent are refused, even when they are zeros:
    /// "10.00" is not a JPY amount. The sign policy is checked last.
    pub fn parse(text: &str, currency: Currency, sign: Sign) -> Result<Money, AmountError> {
        if text.is_empty() {
            return Err(AmountError::Empty);
        }
        if text.len() > Money::TEXT_LENGTH_MAX {
            return Err(AmountError::TooLong { max: Money::TEXT_LENGTH_MAX });
        }
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let offset = text.len() - digits.len();
        let (integer, fraction) = match digits.split_once('.') {
            Some((integer, fraction)) => (integer, Some(fraction)),
            None => (digits, None),
        };
        let malformed = |position: usize, found: char| AmountError::Malformed {
            text: text.to_string(),
            position: position + 1,
            found,
        };
        if integer.is_empty() {
            let found = digits.chars().next().unwrap_or('-');
            return Err(malformed(offset, found));
        }
        if let Some(index) = integer.find(|c: char| !c.is_ascii_digit()) {
            let found = integer[index..].chars().next().unwrap_or('?');
            return Err(malformed(offset + index, found));
        }
        let fraction = fraction.unwrap_or("");
        let fraction_offset = offset + integer.len() + 1;
        if digits.contains('.') && fraction.is_empty() {
            return Err(malformed(fraction_offset - 1, '.'));
        }
        if let Some(index) = fraction.find(|c: char| !c.is_ascii_digit()) {
            let found = fraction[index..].chars().next().unwrap_or('?');
            return Err(malformed(fraction_offset + index, found));
        }
        let exponent = currency.exponent();
        let decimals = fraction.len() as u32;
        if decimals > exponent {
            return Err(AmountError::TooManyDecimals {
                currency,
                allowed: exponent,
                found: decimals,
                text: text.to_string(),
            });
        }
        let overflow = || AmountError::Overflow { currency };
        let mut minor: i64 = 0;
        let padding = std::iter::repeat_n(b'0', (exponent - decimals) as usize);
        for byte in integer.bytes().chain(fraction.bytes()).chain(padding) {
            let digit = i64::from(byte - b'0');
            minor = minor.checked_mul(10).and_then(|m| m.checked_add(digit)).ok_or_else(overflow)?;
        }
        if negative {
            minor = -minor;
        }
        let money = Money::from_minor(minor, currency);
        money.check_sign(sign)?;
        Ok(money)
    }

    /// Refuses the amount if its sign is not allowed.
    pub fn check_sign(self, sign: Sign) -> Result<Money, AmountError> {
        match sign {
            Sign::Positive if self.minor_units == 0 => Err(AmountError::Zero),
            Sign::Positive | Sign::NonNegative if self.minor_units < 0 => Err(AmountError::Negative),
            _ => Ok(self),
        }
    }

    /// Converts an exact decimal, refusing it if it has more decimals than the currency allows.
    pub fn from_decimal_exact(value: Decimal, currency: Currency) -> Result<Money, AmountError> {
        let normalized = value.normalize();
        if normalized.scale() > currency.exponent() {
            return Err(AmountError::TooManyDecimals {
                currency,
                allowed: currency.exponent(),
                found: normalized.scale(),
                text: normalized.to_string(),
            });
        }
        Money::from_decimal(value, currency, RoundingMode::TowardZero)
    }

    /// Converts a decimal, rounding to the currency's minor unit with `mode`.
    pub fn from_decimal(value: Decimal, currency: Currency, mode: RoundingMode) -> Result<Money, AmountError> {
        let exponent = currency.exponent();
        let rounded = value.round_dp_with_strategy(exponent, mode.strategy());
        let mut mantissa = rounded.mantissa();
        let mut scale = rounded.scale();
        // Bring the mantissa to exactly `exponent` decimal places.
        while scale < exponent {
            mantissa = mantissa.checked_mul(10).ok_or(AmountError::Overflow { currency })?;
            scale += 1;
        }
        debug_assert_eq!(scale, exponent);
        let minor_units = i64::try_from(mantissa).map_err(|_| AmountError::Overflow { currency })?;
        Ok(Money::from_minor(minor_units, currency))
    }

    /// The amount in minor units.
    pub const fn minor_units(self) -> i64 {
        self.minor_units
    }

    /// The currency.
    pub const fn currency(self) -> Currency {
        self.currency
    }

    /// The amount as an exact decimal with the currency's scale ("12.30", never "12.3").
    pub fn to_decimal(self) -> Decimal {
        Decimal::from_i128_with_scale(i128::from(self.minor_units), self.currency.exponent())
    }

    /// The amount as text with exactly the currency's number of decimals, without the code.
    pub fn amount_text(self) -> String {
        self.to_decimal().to_string()
    }

    pub fn is_zero(self) -> bool {
        self.minor_units == 0
    }

    pub fn is_positive(self) -> bool {
        self.minor_units > 0
    }

    pub fn is_negative(self) -> bool {
        self.minor_units < 0
    }

    /// Sum of two amounts of the same currency.
    pub fn checked_add(self, other: Money) -> Result<Money, AmountError> {
        self.same_currency(other)?;
        let minor = self.minor_units.checked_add(other.minor_units);
        minor.map(|m| Money::from_minor(m, self.currency)).ok_or(AmountError::Overflow { currency: self.currency })
    }

    /// Difference of two amounts of the same currency.
    pub fn checked_sub(self, other: Money) -> Result<Money, AmountError> {
        self.same_currency(other)?;
        let minor = self.minor_units.checked_sub(other.minor_units);
        minor.map(|m| Money::from_minor(m, self.currency)).ok_or(AmountError::Overflow { currency: self.currency })
    }

    /// The amount with its sign flipped.
    pub fn checked_neg(self) -> Result<Money, AmountError> {
        let minor = self.minor_units.checked_neg();
        minor.map(|m| Money::from_minor(m, self.currency)).ok_or(AmountError::Overflow { currency: self.currency })
    }

    /// The smaller of two amounts of the same currency.
    pub fn min(self, other: Money) -> Result<Money, AmountError> {
        self.same_currency(other)?;
        Ok(if other.minor_units < self.minor_units { other } else { self })
    }

    /// The larger of two amounts of the same currency.
    pub fn max(self, other: Money) -> Result<Money, AmountError> {
        self.same_currency(other)?;
        Ok(if other.minor_units > self.minor_units { other } else { self })
    }

    fn same_currency(self, other: Money) -> Result<(), AmountError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(AmountError::CurrencyMismatch { left: self.currency, right: other.currency })
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount_text(), self.currency)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount_text(), self.currency)
    }
}

/// JSON form: `{"amount": "12.30", "currency": "USD"}`. Amounts are strings so that no JSON parser
/// turns them into binary floating point.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoneyWire<'a> {
    #[serde(borrow)]
    amount: std::borrow::Cow<'a, str>,
    currency: Currency,
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.amount_text();
        MoneyWire { amount: text.into(), currency: self.currency }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Money, D::Error> {
        let wire = MoneyWire::deserialize(deserializer)?;
        Money::parse(&wire.amount, wire.currency, Sign::Any).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn currency(code: &str) -> Currency {
        Currency::from_code(code).unwrap()
    }

    /// One row per case: text, currency, sign policy, and the expected minor units or error text.
    fn check(text: &str, code: &str, sign: Sign, expected: Result<i64, &str>) {
        let got = Money::parse(text, currency(code), sign).map(Money::minor_units).map_err(|e| e.to_string());
        match (&got, &expected) {
            (Ok(minor), Ok(want)) => assert_eq!(minor, want, "{text} {code}"),
            (Err(message), Err(want)) => assert!(message.contains(want), "{text} {code}: {message}"),
            _ => panic!("{text} {code}: got {got:?}, want {expected:?}"),
        }
    }

    #[test]
    fn parsing_table() {
        use Sign::*;
        check("1000", "USD", Positive, Ok(100_000));
        check("12.3", "USD", Positive, Ok(1_230));
        check("12.34", "USD", Positive, Ok(1_234));
        check("0.01", "USD", Positive, Ok(1));
        check("007.50", "EUR", Positive, Ok(750));
        check("12.345", "USD", Positive, Err("USD allows 2 decimal place(s); \"12.345\" has 3"));
        check("12.340", "USD", Positive, Err("has 3"));
        check("1000", "JPY", Positive, Ok(1_000));
        check("1000.5", "JPY", Positive, Err("JPY allows 0 decimal place(s)"));
        check("10.00", "JPY", Positive, Err("JPY allows 0"));
        check("1.234", "KWD", Positive, Ok(1_234));
        check("1.2345", "KWD", Positive, Err("KWD allows 3"));
        check("-5", "USD", Any, Ok(-500));
        check("-5", "USD", NonNegative, Err("must not be negative"));
        check("0", "USD", NonNegative, Ok(0));
        check("0.00", "USD", Positive, Err("greater than zero"));
        check("-0", "USD", Positive, Err("greater than zero"));
        check("", "USD", Any, Err("empty"));
        check("1e5", "USD", Any, Err("character 2: 'e'"));
        check("+5", "USD", Any, Err("character 1: '+'"));
        check("1,000.00", "USD", Any, Err("character 2: ','"));
        check(" 1", "USD", Any, Err("character 1: ' '"));
        check(".5", "USD", Any, Err("character 1: '.'"));
        check("5.", "USD", Any, Err("character 2: '.'"));
        check("1.2.3", "USD", Any, Err("character 4: '.'"));
        check("--1", "USD", Any, Err("character 2: '-'"));
        check("92233720368547758.07", "USD", Any, Ok(i64::MAX));
        check("92233720368547758.08", "USD", Any, Err("too large"));
        check("99999999999999999999999999999", "USD", Any, Err("too large"));
        check(&"1".repeat(41), "USD", Any, Err("longer than 40"));
    }

    #[test]
    fn arithmetic_is_checked() {
        let usd = currency("USD");
        let eur = currency("EUR");
        let a = Money::from_minor(i64::MAX, usd);
        assert_eq!(a.checked_add(Money::from_minor(1, usd)), Err(AmountError::Overflow { currency: usd }));
        assert!(matches!(a.checked_add(Money::zero(eur)), Err(AmountError::CurrencyMismatch { .. })));
        assert_eq!(Money::from_minor(i64::MIN, usd).checked_neg(), Err(AmountError::Overflow { currency: usd }));
        assert_eq!(Money::from_minor(5, usd).checked_sub(Money::from_minor(7, usd)).unwrap().minor_units(), -2);
    }

    #[test]
    fn decimals_convert_with_named_rounding() {
        use rust_decimal_macros::dec;
        let usd = currency("USD");
        let jpy = currency("JPY");
        assert_eq!(Money::from_decimal(dec!(1.005), usd, RoundingMode::HalfEven).unwrap().minor_units(), 100);
        assert_eq!(Money::from_decimal(dec!(1.005), usd, RoundingMode::HalfUp).unwrap().minor_units(), 101);
        assert_eq!(Money::from_decimal(dec!(1.001), usd, RoundingMode::Ceiling).unwrap().minor_units(), 101);
        assert_eq!(Money::from_decimal(dec!(-1.001), usd, RoundingMode::Ceiling).unwrap().minor_units(), -100);
        assert_eq!(Money::from_decimal(dec!(149.5), jpy, RoundingMode::HalfEven).unwrap().minor_units(), 150);
        assert!(Money::from_decimal_exact(dec!(1.001), usd).is_err());
        assert_eq!(Money::from_decimal_exact(dec!(1.100), usd).unwrap().minor_units(), 110);
        assert!(Money::from_decimal(Decimal::MAX, usd, RoundingMode::Floor).is_err());
    }

    #[test]
    fn json_uses_strings() {
        let money = Money::parse("1234.50", currency("EUR"), Sign::Positive).unwrap();
        let json = serde_json::to_string(&money).unwrap();
        assert_eq!(json, r#"{"amount":"1234.50","currency":"EUR"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), money);
        let number = serde_json::from_str::<Money>(r#"{"amount":1234.5,"currency":"EUR"}"#);
        assert!(number.is_err(), "a JSON number must be refused");
        let decimals = serde_json::from_str::<Money>(r#"{"amount":"1.5","currency":"JPY"}"#);
        assert!(decimals.unwrap_err().to_string().contains("JPY allows 0"));
        let currency = serde_json::from_str::<Money>(r#"{"amount":"1","currency":"XAU"}"#);
        assert!(currency.unwrap_err().to_string().contains("no minor unit"));
    }
}
