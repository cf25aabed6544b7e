//! ISO 20022 status reason codes the instant rail uses, and the common code each maps to.

use railyard_connector::ReasonCode;

/// (ISO or RTP code, common code, meaning). RTP's proprietary codes are the four-digit ones.
pub const REASONS: &[(&str, ReasonCode, &str)] = &[
    ("AC03", ReasonCode::InvalidAccount, "invalid creditor account number"),
    ("AC04", ReasonCode::AccountClosed, "closed account number"),
    ("AC06", ReasonCode::Regulatory, "blocked account"),
    ("AG01", ReasonCode::DoNotHonour, "transaction forbidden on this account"),
    ("AM02", ReasonCode::LimitExceeded, "amount above the rail's per-payment maximum"),
    ("AM04", ReasonCode::InsufficientFunds, "insufficient funds in the settlement account"),
    ("AM09", ReasonCode::InvalidAmount, "wrong amount"),
    ("AM12", ReasonCode::InvalidAmount, "invalid amount"),
    ("BE04", ReasonCode::BeneficiaryMismatch, "missing creditor address"),
    ("DUPL", ReasonCode::Duplicate, "duplicate payment"),
    ("DS24", ReasonCode::Cancelled, "waiting time expired: cancelled on recall"),
    ("FF02", ReasonCode::FormatError, "syntax error"),
    ("FF08", ReasonCode::FormatError, "invalid end-to-end id"),
    ("RC01", ReasonCode::InvalidAccount, "invalid BIC or member id"),
    ("TM01", ReasonCode::Timeout, "the creditor agent did not answer within the rail's timeout"),
    ("NARR", ReasonCode::Other, "see narrative"),
    ("9909", ReasonCode::RailUnavailable, "central system malfunction"),
    ("9910", ReasonCode::RailUnavailable, "instructed agent signed off"),
    ("9912", ReasonCode::RailUnavailable, "recipient connection not available"),
    ("9947", ReasonCode::Timeout, "the creditor agent timed out"),
    ("1100", ReasonCode::Other, "any other reason"),
];

/// The common code for an ISO or RTP reason code; unknown codes map to [`ReasonCode::Other`].
pub fn map(code: &str) -> ReasonCode {
    REASONS.iter().find(|(rail, _, _)| *rail == code).map(|(_, common, _)| *common).unwrap_or(ReasonCode::Other)
}

pub fn meaning(code: &str) -> &'static str {
    REASONS.iter().find(|(rail, _, _)| *rail == code).map(|(_, _, meaning)| *meaning).unwrap_or("unlisted reason code")
}

/// RTP puts its four-digit codes under `Prtry`, ISO codes under `Cd`.
pub fn is_proprietary(code: &str) -> bool {
    code.chars().all(|character| character.is_ascii_digit())
}
