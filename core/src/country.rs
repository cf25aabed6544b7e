//! ISO 3166-1 alpha-2 country codes, as rails and beneficiaries use them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A country, by its upper-case ISO 3166-1 alpha-2 code ("DE", "BR").
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?} is not an ISO 3166-1 alpha-2 country code")]
pub struct CountryError {
    pub code: String,
}

impl Country {
    pub fn from_code(code: &str) -> Result<Country, CountryError> {
        let error = || CountryError { code: code.chars().take(16).collect() };
        let bytes: [u8; 2] = code.as_bytes().try_into().map_err(|_| error())?;
        if !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err(error());
        }
        match iso_country::Country::from_str(code) {
            Ok(iso_country::Country::Unspecified) | Err(_) => Err(error()),
            Ok(_) => Ok(Country(bytes)),
        }
    }

    pub fn code(&self) -> &str {
        // Both bytes are ASCII upper-case letters, checked by the constructor.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// The English short name, for example "Germany".
    pub fn name(&self) -> &'static str {
        iso_country::Country::from_str(self.code()).map(|country| country.name()).unwrap_or("")
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Country {
    type Err = CountryError;

    fn from_str(code: &str) -> Result<Country, CountryError> {
        Country::from_code(code)
    }
}

impl Serialize for Country {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Country {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Country, D::Error> {
        let code = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Country::from_code(&code).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(Country::from_code("DE").unwrap().name(), "Germany");
        assert_eq!(Country::from_code("BR").unwrap().code(), "BR");
        for bad in ["de", "DEU", "", "ZZ", "D", "É1"] {
            assert!(Country::from_code(bad).is_err(), "{bad}");
        }
    }
}
