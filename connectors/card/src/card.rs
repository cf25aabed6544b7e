//! Card numbers: the Luhn check, the sandbox BIN table and tokens.

use railyard_core::{Country, Currency};
use sha2::{Digest, Sha256};

/// True when `pan` is 12 to 19 digits and its last digit is the Luhn check digit of the rest.
pub fn luhn_valid(pan: &str) -> bool {
    let digits: Vec<u32> = pan.chars().filter_map(|character| character.to_digit(10)).collect();
    if digits.len() != pan.len() || !(12..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(
            |(index, digit)| {
                if index % 2 == 1 { if digit * 2 > 9 { digit * 2 - 9 } else { digit * 2 } } else { *digit }
            },
        )
        .sum();
    sum.is_multiple_of(10)
}

/// A BIN range: the first digits of a PAN, the issuing country and the card's billing currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bin {
    pub prefix: &'static str,
    pub scheme: &'static str,
    pub country: &'static str,
    pub currency: &'static str,
}

/// The sandbox's BIN table. Longest prefix wins.
pub const BINS: &[Bin] = &[
    Bin { prefix: "411111", scheme: "visa", country: "US", currency: "USD" },
    Bin { prefix: "400005", scheme: "visa", country: "GB", currency: "GBP" },
    Bin { prefix: "400027", scheme: "visa", country: "DE", currency: "EUR" },
    Bin { prefix: "400076", scheme: "visa", country: "BR", currency: "BRL" },
    Bin { prefix: "400035", scheme: "visa", country: "IN", currency: "INR" },
    Bin { prefix: "400048", scheme: "visa", country: "MX", currency: "MXN" },
    Bin { prefix: "555555", scheme: "mastercard", country: "US", currency: "USD" },
    Bin { prefix: "520082", scheme: "mastercard", country: "MX", currency: "MXN" },
    Bin { prefix: "530011", scheme: "mastercard", country: "JP", currency: "JPY" },
    Bin { prefix: "545454", scheme: "mastercard", country: "PH", currency: "PHP" },
];

pub fn bin_for(pan: &str) -> Option<&'static Bin> {
    BINS.iter().filter(|bin| pan.starts_with(bin.prefix)).max_by_key(|bin| bin.prefix.len())
}

/// What the vault knows about a tokenised card.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CardInfo {
    pub token: String,
    pub scheme: String,
    pub country: Country,
    pub currency: Currency,
    pub last4: String,
    /// MM/YY
    pub expiry: String,
}

/// The token of a PAN: stable, and revealing nothing of the PAN but its last four digits.
pub fn token_for(pan: &str) -> String {
    let digest = Sha256::digest(format!("railyard-card-vault:{pan}").as_bytes());
    format!("tok_{}", hex::encode(&digest[..12]))
}

/// Builds a valid PAN from a prefix and a body by appending the Luhn check digit (tests, demos).
pub fn with_check_digit(partial: &str) -> String {
    for check in 0..10 {
        let candidate = format!("{partial}{check}");
        if luhn_valid(&candidate) {
            return candidate;
        }
    }
    partial.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn() {
        assert!(luhn_valid("4111111111111111"));
        assert!(luhn_valid("5555555555554444"));
        assert!(!luhn_valid("4111111111111112"));
        assert!(!luhn_valid("4111 1111 1111 1111"));
        assert!(!luhn_valid("41111"));
        assert_eq!(with_check_digit("411111111111111"), "4111111111111111");
    }

    #[test]
    fn bins() {
        assert_eq!(bin_for("4000051234567890").map(|bin| bin.currency), Some("GBP"));
        assert_eq!(bin_for("6011000000000004"), None);
    }
}
