//! The plain data a connector exchanges with Railyard.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use railyard_config::RailKind;
use railyard_core::{Country, Currency, Decimal, FeeSchedule, Money};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The key that makes a rail call exactly-once: derived from the payout and the step, stable across
/// retries, restarts and processes.
///
/// 1 to [`IdempotencyKey::LENGTH_MAX`] characters from `A-Z a-z 0-9 - _ . :`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

/// Why a text is not an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("idempotency key is empty")]
    Empty,
    #[error("idempotency key is longer than {max} characters")]
    TooLong { max: usize },
    #[error("idempotency key has {found:?} at character {position}; allowed are A-Z a-z 0-9 - _ . :")]
    Character { position: usize, found: char },
}

impl IdempotencyKey {
    /// Longest key: fits a UUID-based payout id, a step name and a part number with room to spare.
    pub const LENGTH_MAX: usize = 96;

    pub fn new(text: impl Into<String>) -> Result<IdempotencyKey, KeyError> {
        let text = text.into();
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        if text.len() > Self::LENGTH_MAX {
            return Err(KeyError::TooLong { max: Self::LENGTH_MAX });
        }
        if let Some((position, found)) =
            text.chars().enumerate().find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
        {
            return Err(KeyError::Character { position: position + 1, found });
        }
        Ok(IdempotencyKey(text))
    }

    /// The key of one step of one payout: `"{payout}:{step}"`. The same inputs give the same key.
    pub fn for_step(payout: &str, step: &str) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::new(format!("{payout}:{step}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A fixed-length uppercase hexadecimal digest of the key, for rails whose identifiers are
    /// shorter or stricter than our keys (ISO 20022 ids, card trace numbers). Deterministic.
    pub fn digest_hex(&self, length: usize) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        let mut text = hex::encode_upper(digest);
        text.truncate(length.min(64));
        text
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = KeyError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        IdempotencyKey::new(text)
    }
}

impl From<IdempotencyKey> for String {
    fn from(key: IdempotencyKey) -> String {
        key.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Per-payment bounds in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub minimum: Money,
    pub maximum: Money,
}

/// What a rail can carry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Capabilities {
    /// The rail's id in the treasury configuration (`sepa-inst`, `visa-direct` ...).
    pub rail: String,
    pub kind: RailKind,
    /// Currencies the rail debits (what a leg's `amount` may be in).
    pub currencies: Vec<Currency>,
    /// Currencies the beneficiary may receive. Equal to `currencies` unless the rail converts.
    pub payout_currencies: Vec<Currency>,
    /// Beneficiary countries; empty means any.
    pub countries: Vec<Country>,
    /// Per-payment bounds, one per debited currency.
    pub limits: Vec<Limit>,
    /// Published fee schedules, one per debited currency.
    pub fees: Vec<FeeSchedule>,
    pub supports_cancel: bool,
    /// How long the connector waits for the rail before answering Unknown.
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
}

impl Capabilities {
    /// Why this rail cannot take `leg` at all, decided without contacting it; `None` when it can.
    ///
    /// Checks, in this order: debited currency, payout currency, beneficiary country, minimum,
    /// maximum. Every connector calls this before sending anything.
    pub fn refuse(&self, leg: &Leg) -> Option<Rejection> {
        let currency = leg.amount.currency();
        if !self.currencies.contains(&currency) {
            return Some(Rejection::before_send(
                ReasonCode::UnsupportedCurrency,
                format!("{} does not debit {currency}", self.rail),
            ));
        }
        if !self.payout_currencies.contains(&leg.payout_currency) {
            return Some(Rejection::before_send(
                ReasonCode::UnsupportedCurrency,
                format!("{} does not pay out {}", self.rail, leg.payout_currency),
            ));
        }
        if !self.countries.is_empty() && !self.countries.contains(&leg.beneficiary.country) {
            return Some(Rejection::before_send(
                ReasonCode::UnsupportedCountry,
                format!("{} does not pay beneficiaries in {}", self.rail, leg.beneficiary.country),
            ));
        }
        if !leg.amount.is_positive() {
            return Some(Rejection::before_send(ReasonCode::InvalidAmount, "amount must be greater than zero".into()));
        }
        if let Some(limit) = self.limits.iter().find(|limit| limit.maximum.currency() == currency) {
            if leg.amount.minor_units() < limit.minimum.minor_units() {
                return Some(Rejection::before_send(
                    ReasonCode::BelowMinimum,
                    format!("{} is below {}'s minimum of {}", leg.amount, self.rail, limit.minimum),
                ));
            }
            if leg.amount.minor_units() > limit.maximum.minor_units() {
                return Some(Rejection::before_send(
                    ReasonCode::LimitExceeded,
                    format!("{} is above {}'s per-payment maximum of {}", leg.amount, self.rail, limit.maximum),
                ));
            }
        }
        None
    }

    /// The fee schedule for a debited currency.
    pub fn fee_for(&self, currency: Currency) -> Option<&FeeSchedule> {
        self.fees.iter().find(|fee| fee.currency() == currency)
    }

    /// A quote from the published schedule, for rails that do not convert.
    pub fn quote_from_schedule(&self, leg: &Leg) -> Result<LegQuote, Rejection> {
        if let Some(refusal) = self.refuse(leg) {
            return Err(refusal);
        }
        if leg.payout_currency != leg.amount.currency() {
            return Err(Rejection::before_send(
                ReasonCode::UnsupportedCurrency,
                format!("{} does not convert {} to {}", self.rail, leg.amount.currency(), leg.payout_currency),
            ));
        }
        let fee = match self.fee_for(leg.amount.currency()) {
            Some(schedule) => schedule
                .fee_for(leg.amount)
                .map_err(|error| Rejection::before_send(ReasonCode::InvalidAmount, error.to_string()))?,
            None => Money::zero(leg.amount.currency()),
        };
        let receive = leg
            .amount
            .checked_sub(fee)
            .map_err(|error| Rejection::before_send(ReasonCode::InvalidAmount, error.to_string()))?;
        if !receive.is_positive() {
            return Err(Rejection::before_send(
                ReasonCode::InvalidAmount,
                format!("the fee {fee} leaves nothing of {}", leg.amount),
            ));
        }
        Ok(LegQuote { send: leg.amount, fee, receive, rate: None })
    }
}

/// Who is paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beneficiary {
    pub name: String,
    /// Rail-specific account: an IBAN or account number, a card token, a wallet id.
    pub account: String,
    pub country: Country,
}

/// One leg of a payout, as a rail sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    pub key: IdempotencyKey,
    /// What the rail debits from the house, fee included.
    pub amount: Money,
    /// What the beneficiary receives in. Differs from `amount`'s currency only on converting rails.
    pub payout_currency: Currency,
    pub beneficiary: Beneficiary,
    /// Remittance information shown to the beneficiary.
    pub remittance: String,
    /// When Railyard accepted the payout this leg belongs to. Stable across retries: rails that
    /// put a date in their identifiers take it from here.
    pub instructed_at: DateTime<Utc>,
}

/// A price for a leg.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegQuote {
    pub send: Money,
    pub fee: Money,
    pub receive: Money,
    /// The rail's conversion rate, payout units per debited unit, when it converts.
    pub rate: Option<Decimal>,
}

/// A completed execution, as the rail reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    /// The rail's own reference (ISO 20022 transaction id, card approval code, block receipt).
    pub reference: String,
    pub send: Money,
    pub fee: Money,
    pub receive: Money,
    pub rate: Option<Decimal>,
    pub executed_at: DateTime<Utc>,
}

/// The common reason codes every rail's own codes map onto.
///
/// Ordered roughly by who is at fault: the request, the beneficiary, the house, the rail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// The message or a field in it was malformed.
    FormatError,
    InvalidAmount,
    UnsupportedCurrency,
    UnsupportedCountry,
    BelowMinimum,
    /// Above the rail's per-payment maximum (or a velocity limit).
    LimitExceeded,
    /// The account or card does not exist or cannot be credited.
    InvalidAccount,
    AccountClosed,
    /// Beneficiary name or details do not match the account.
    BeneficiaryMismatch,
    /// The house's settlement account at the rail lacks funds.
    InsufficientFunds,
    /// The receiving institution declined without a specific reason.
    DoNotHonour,
    SuspectedFraud,
    /// Sanctions, regulation or a blocked account.
    Regulatory,
    /// The rail already saw this payment under another key.
    Duplicate,
    /// The rail or the receiving institution is down.
    RailUnavailable,
    /// The rail gave up waiting for the receiving institution (a definitive reject, not an Unknown).
    Timeout,
    /// Cancelled on our request before execution.
    Cancelled,
    /// A rail code with no mapping; the rail's code is kept beside it.
    Other,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 18] = [
        ReasonCode::FormatError,
        ReasonCode::InvalidAmount,
        ReasonCode::UnsupportedCurrency,
        ReasonCode::UnsupportedCountry,
        ReasonCode::BelowMinimum,
        ReasonCode::LimitExceeded,
        ReasonCode::InvalidAccount,
        ReasonCode::AccountClosed,
        ReasonCode::BeneficiaryMismatch,
        ReasonCode::InsufficientFunds,
        ReasonCode::DoNotHonour,
        ReasonCode::SuspectedFraud,
        ReasonCode::Regulatory,
        ReasonCode::Duplicate,
        ReasonCode::RailUnavailable,
        ReasonCode::Timeout,
        ReasonCode::Cancelled,
        ReasonCode::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::FormatError => "format_error",
            ReasonCode::InvalidAmount => "invalid_amount",
            ReasonCode::UnsupportedCurrency => "unsupported_currency",
            ReasonCode::UnsupportedCountry => "unsupported_country",
            ReasonCode::BelowMinimum => "below_minimum",
            ReasonCode::LimitExceeded => "limit_exceeded",
            ReasonCode::InvalidAccount => "invalid_account",
            ReasonCode::AccountClosed => "account_closed",
            ReasonCode::BeneficiaryMismatch => "beneficiary_mismatch",
            ReasonCode::InsufficientFunds => "insufficient_funds",
            ReasonCode::DoNotHonour => "do_not_honour",
            ReasonCode::SuspectedFraud => "suspected_fraud",
            ReasonCode::Regulatory => "regulatory",
            ReasonCode::Duplicate => "duplicate",
            ReasonCode::RailUnavailable => "rail_unavailable",
            ReasonCode::Timeout => "timeout",
            ReasonCode::Cancelled => "cancelled",
            ReasonCode::Other => "other",
        }
    }

    /// Whether a payout may try another route after this rejection (the fault was the rail's or
    /// the rail's limits', or nobody's, not the beneficiary's).
    pub fn another_route_may_succeed(self) -> bool {
        matches!(
            self,
            ReasonCode::UnsupportedCurrency
                | ReasonCode::UnsupportedCountry
                | ReasonCode::BelowMinimum
                | ReasonCode::LimitExceeded
                | ReasonCode::InsufficientFunds
                | ReasonCode::RailUnavailable
                | ReasonCode::Timeout
                | ReasonCode::Cancelled
        )
    }

    /// Whether the rejection says nothing against the rail, so that the payout's next route may
    /// use the same rail again (under a new idempotency key). A payment cancelled on our own
    /// request before it executed is one: a connector recalls a payment whose answer did not come
    /// within its timeout, most often because the request was late leaving our side, and the rail
    /// then cancels it for good (ISO 20022 `DS24`), so it can never execute.
    pub fn same_rail_may_succeed(self) -> bool {
        matches!(self, ReasonCode::Cancelled)
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A definitive refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: ReasonCode,
    /// The rail's own code (`AM02`, `51`, `insufficient_balance`); empty when refused before sending.
    pub rail_code: String,
    pub detail: String,
    /// True when the connector refused without contacting the rail.
    pub before_send: bool,
}

impl Rejection {
    pub fn before_send(code: ReasonCode, detail: String) -> Rejection {
        Rejection { code, rail_code: String::new(), detail, before_send: true }
    }

    pub fn by_rail(code: ReasonCode, rail_code: impl Into<String>, detail: impl Into<String>) -> Rejection {
        Rejection { code, rail_code: rail_code.into(), detail: detail.into(), before_send: false }
    }
}

/// Why an outcome could not be learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownCause {
    /// The rail did not answer within the connector's timeout.
    Timeout,
    /// The connection failed after the request may have been sent.
    Transport,
    /// The rail accepted the request and has not finished it.
    Pending,
    /// The rail answered something the connector could not understand.
    Unreadable,
}

/// An outcome that could not be learned. The money may or may not have moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unknown {
    pub cause: UnknownCause,
    pub detail: String,
}

impl Unknown {
    pub fn new(cause: UnknownCause, detail: impl Into<String>) -> Unknown {
        Unknown { cause, detail: detail.into() }
    }
}

/// The answer to a submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Executed(Execution),
    Rejected(Rejection),
    Unknown(Unknown),
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Executed(_) => "executed",
            Outcome::Rejected(_) => "rejected",
            Outcome::Unknown(_) => "unknown",
        }
    }
}

/// What the rail knows of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    Executed(Execution),
    Rejected(Rejection),
    /// The rail holds it and has not finished.
    Pending,
    /// The rail never accepted this key. Definitive: resubmitting with the same key is safe.
    NotFound,
    /// The inquiry itself failed; ask again later.
    Unknown(Unknown),
}

impl Status {
    pub fn name(&self) -> &'static str {
        match self {
            Status::Executed(_) => "executed",
            Status::Rejected(_) => "rejected",
            Status::Pending => "pending",
            Status::NotFound => "not_found",
            Status::Unknown(_) => "unknown",
        }
    }
}

/// The answer to a cancellation request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cancel", rename_all = "snake_case")]
pub enum CancelOutcome {
    /// The rail will never execute the key.
    Cancelled,
    /// The rail had already executed it; the money moved.
    TooLate(Execution),
    /// The rail never received the key.
    NotFound,
    Unsupported,
    Unknown(Unknown),
}

/// A health probe's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub available: bool,
    /// Round trip of the probe, milliseconds.
    pub latency_ms: u64,
    pub detail: String,
    pub checked_at: DateTime<Utc>,
}

/// Something the rail pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Increases by one per notification the rail sends; a duplicate delivery repeats it.
    pub sequence: u64,
    pub event: NotificationEvent,
    pub sent_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum NotificationEvent {
    /// A key reached a final status.
    Status { key: IdempotencyKey, status: Status },
    /// The rail became available or unavailable.
    Availability { available: bool, detail: String },
}

/// Serialises a [`Duration`] as whole milliseconds.
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(deserializer)?))
    }
}
