//! A push-to-card sandbox network (Visa Direct / Mastercard Send style) and its connector.
//!
//! The network keeps a token vault (PANs never leave it: the connector checks the Luhn digit and
//! exchanges the PAN for a token once), a BIN table that gives each card's country and billing
//! currency, network FX from ECB mids plus a markup, interchange plus scheme fees, ISO 8583
//! approval and decline codes, and settles each day's payouts at T+1 in a settlement file.
//!
//! Wire protocol (JSON): `POST /tokens`, `POST /quote`, `POST /payouts`, `GET /payouts/{key}`,
//! `GET /health`, `GET /settlement?date=YYYY-MM-DD` (CSV), plus the sandbox control paths.

pub mod card;
pub mod connector;
pub mod rail;

/// ISO 8583 response codes the network declines with, and the common code each maps to.
pub const DECLINES: &[(&str, railyard_connector::ReasonCode, &str)] = {
    use railyard_connector::ReasonCode as R;
    &[
        ("05", R::DoNotHonour, "do not honour"),
        ("13", R::InvalidAmount, "invalid amount"),
        ("14", R::InvalidAccount, "invalid card number"),
        ("51", R::InsufficientFunds, "insufficient funds: settlement exposure exceeded"),
        ("54", R::AccountClosed, "expired card"),
        ("57", R::DoNotHonour, "transaction not permitted to cardholder"),
        ("59", R::SuspectedFraud, "suspected fraud"),
        ("61", R::LimitExceeded, "exceeds amount limit"),
        ("62", R::Regulatory, "restricted card"),
        ("91", R::RailUnavailable, "issuer or switch inoperative"),
        ("93", R::Regulatory, "transaction cannot be completed: violation of law"),
        ("96", R::RailUnavailable, "system malfunction"),
    ]
};

/// The common code for an ISO 8583 response code.
pub fn map_decline(code: &str) -> railyard_connector::ReasonCode {
    DECLINES
        .iter()
        .find(|(rail, _, _)| *rail == code)
        .map(|(_, common, _)| *common)
        .unwrap_or(railyard_connector::ReasonCode::Other)
}

pub fn decline_meaning(code: &str) -> &'static str {
    DECLINES
        .iter()
        .find(|(rail, _, _)| *rail == code)
        .map(|(_, _, meaning)| *meaning)
        .unwrap_or("unlisted response code")
}
