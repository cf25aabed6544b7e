//! Currencies a payout may be denominated in.
//!
//! [`Currency`] wraps `iso_currency::Currency` and adds one invariant: the currency has a minor-unit
//! exponent, is not a fund or special code, and is not superseded. Every other crate may therefore
//! call [`Currency::exponent`] without handling a missing exponent.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An ISO 4217 currency that can carry a payout.
///
/// Construct it with [`Currency::from_code`]; that is the only place the invariant is checked.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(iso_currency::Currency);

/// Why a currency code was refused, in the order the checks run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurrencyError {
    #[error("{code:?} is not an ISO 4217 currency code")]
    Unknown { code: String },
    #[error("{code} has no minor unit (precious metals, SDR, test and no-currency codes cannot carry payouts)")]
    NoMinorUnit { code: &'static str },
    #[error("{code} is a fund code, not a currency that can be paid out")]
    Fund { code: &'static str },
    #[error("{code} is superseded by {by}")]
    Superseded { code: &'static str, by: &'static str },
}

impl Currency {
    /// The largest exponent among payable currencies (CLF and UYW, exponent 4, are funds and refused).
    pub const EXPONENT_MAX: u32 = 4;

    /// Parses a three-letter code. Lower case is refused: ISO codes are upper case on every wire we speak.
    pub fn from_code(code: &str) -> Result<Currency, CurrencyError> {
        let iso = iso_currency::Currency::from_code(code)
            .ok_or_else(|| CurrencyError::Unknown { code: code.chars().take(16).collect() })?;
        Currency::from_iso(iso)
    }

    /// Checks the invariant on a currency that is already an `iso_currency` value.
    pub fn from_iso(iso: iso_currency::Currency) -> Result<Currency, CurrencyError> {
        let code = iso.code();
        let Some(exponent) = iso.exponent() else {
            return Err(CurrencyError::NoMinorUnit { code });
        };
        if iso.is_special() {
            return Err(CurrencyError::NoMinorUnit { code });
        }
        if iso.is_fund() {
            return Err(CurrencyError::Fund { code });
        }
        if let Some(by) = iso.is_superseded() {
            return Err(CurrencyError::Superseded { code, by: by.code() });
        }
        debug_assert!(u32::from(exponent) <= Currency::EXPONENT_MAX);
        Ok(Currency(iso))
    }

    /// The three-letter ISO code, for example `"USD"`.
    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// Number of decimal places of the minor unit: 2 for USD, 0 for JPY, 3 for KWD.
    pub fn exponent(self) -> u32 {
        // The constructor refused every currency without an exponent.
        self.0.exponent().map(u32::from).unwrap_or(0)
    }

    /// The ISO numeric code, for example 840 for USD.
    pub fn numeric(self) -> u16 {
        self.0.numeric()
    }

    /// The English name, for example "United States dollar".
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// The underlying `iso_currency` value.
    pub fn iso(self) -> iso_currency::Currency {
        self.0
    }

    /// Every payable currency, in code order.
    pub fn all() -> Vec<Currency> {
        let mut all: Vec<Currency> = <iso_currency::Currency as iso_currency::IntoEnumIterator>::iter()
            .filter_map(|iso| Currency::from_iso(iso).ok())
            .collect();
        all.sort_by_key(|currency| currency.code());
        all
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = CurrencyError;

    fn from_str(code: &str) -> Result<Currency, CurrencyError> {
        Currency::from_code(code)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Currency, D::Error> {
        let code = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Currency::from_code(&code).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(code: &str, expected: Result<u32, &str>) {
        let got = Currency::from_code(code).map(Currency::exponent).map_err(|error| error.to_string());
        match (got, expected) {
            (Ok(exponent), Ok(want)) => assert_eq!(exponent, want, "{code}"),
            (Err(message), Err(want)) => assert!(message.contains(want), "{code}: {message}"),
            (got, want) => panic!("{code}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn codes_are_checked_in_precedence_order() {
        check("USD", Ok(2));
        check("JPY", Ok(0));
        check("KWD", Ok(3));
        check("BHD", Ok(3));
        check("usd", Err("not an ISO 4217"));
        check("ABC", Err("not an ISO 4217"));
        check("", Err("not an ISO 4217"));
        check("XAU", Err("no minor unit"));
        check("XDR", Err("no minor unit"));
        check("XXX", Err("no minor unit"));
        check("CLF", Err("fund code"));
        check("BGN", Err("superseded by EUR"));
        check("HRK", Err("superseded by EUR"));
    }

    #[test]
    fn names_and_numbers() {
        let usd = Currency::from_code("USD").unwrap();
        assert_eq!(usd.numeric(), 840);
        assert_eq!(usd.name(), "United States dollar");
        assert!(Currency::all().len() > 140);
        assert!(Currency::all().iter().all(|c| c.exponent() <= Currency::EXPONENT_MAX));
    }
}
