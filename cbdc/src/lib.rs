//! The CBDC / token sandbox (an mBridge-style multi-currency platform) and its connector.
//!
//! [`ledger`] is the token ledger itself: wallets, an issuer per token who alone mints and burns,
//! transfers with finality receipts, a hash-chained block log that detects tampering, and
//! hash-time-locked escrow that makes a two-currency swap settle both legs or neither.
//! [`rail`] puts a rail in front of it (payouts from the house's wallets, cross-currency payouts
//! settled payment-versus-payment against a liquidity provider in one block), and [`connector`]
//! is the Railyard connector for that rail.

pub mod connector;
pub mod ledger;
pub mod rail;

/// Rail codes the CBDC rail refuses with, and the common code each maps to.
pub const REFUSALS: &[(&str, railyard_connector::ReasonCode, &str)] = {
    use railyard_connector::ReasonCode as R;
    &[
        ("unknown_wallet", R::InvalidAccount, "the beneficiary wallet does not exist"),
        ("frozen_wallet", R::Regulatory, "the wallet is frozen by its issuer"),
        ("insufficient_balance", R::InsufficientFunds, "the house wallet lacks tokens"),
        ("lp_liquidity", R::InsufficientFunds, "the liquidity provider lacks tokens for the swap"),
        ("over_limit", R::LimitExceeded, "above the platform's per-payment maximum"),
        ("currency_mismatch", R::UnsupportedCurrency, "the wallet holds another token"),
        ("no_pvp_pair", R::UnsupportedCurrency, "no payment-versus-payment pair for these tokens"),
        ("ledger_halted", R::RailUnavailable, "the platform is halted"),
        ("rejected", R::DoNotHonour, "refused by the platform"),
    ]
};

pub fn map_refusal(code: &str) -> railyard_connector::ReasonCode {
    REFUSALS
        .iter()
        .find(|(rail, _, _)| *rail == code)
        .map(|(_, common, _)| *common)
        .unwrap_or(railyard_connector::ReasonCode::Other)
}

pub fn refusal_meaning(code: &str) -> &'static str {
    REFUSALS.iter().find(|(rail, _, _)| *rail == code).map(|(_, _, meaning)| *meaning).unwrap_or("unlisted code")
}
