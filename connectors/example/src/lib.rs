//! A complete, minimal rail connector to copy when adding a rail to Railyard.
//!
//! The rail here is a bank's book-transfer API: `POST /payments` books a payment to an account
//! at the same bank, `GET /payments/{key}` reports it, `GET /ping` answers when the bank is up.
//! [`BookTransferBank`] is its sandbox (built on the SDK's [`Sandbox`] for faults and the execution
//! ledger), [`BookTransferConnector`] the connector. `tests/conformance.rs` runs the SDK's
//! conformance kit against both, and shows the kit failing a connector that cuts corners.
//!
//! To add your rail: copy this crate, replace the wire protocol in `submit`, `status` and `health`
//! with your rail's, map its reason codes in [`REASONS`], and register the connector:
//!
//! ```
//! use std::sync::Arc;
//! use railyard_connector::{Registry, transport::Transport};
//! use railyard_connector_example::{BookTransferBank, BookTransferConnector};
//!
//! let bank = Arc::new(BookTransferBank::new("book-eur", railyard_core::Currency::from_code("EUR").unwrap()));
//! let connector = BookTransferConnector::new(bank.capabilities(), Transport::in_process(bank.clone()));
//! let mut registry = Registry::new();
//! registry.register(Arc::new(connector)).unwrap();
//! assert_eq!(registry.rails().collect::<Vec<_>>(), ["book-eur"]);
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use railyard_connector::faults::{Fault, FaultPlan};
use railyard_connector::ledger::ExecutionRecord;
use railyard_connector::sandbox::Sandbox;
use railyard_connector::transport::{Method, RailService, Reply, Transport, TransportError};
use railyard_connector::{
    Capabilities, Connector, Execution, Health, IdempotencyKey, Leg, Limit, Outcome, RailKind, ReasonCode, Rejection,
    Status, Unknown, UnknownCause,
};
use railyard_core::{Currency, Decimal, FeeSchedule, Money};
use serde::{Deserialize, Serialize};

/// The bank's refusal codes and the common code each maps to.
pub const REASONS: &[(&str, ReasonCode)] = &[
    ("NO_SUCH_ACCOUNT", ReasonCode::InvalidAccount),
    ("ACCOUNT_CLOSED", ReasonCode::AccountClosed),
    ("NSF", ReasonCode::InsufficientFunds),
    ("BANK_OFFLINE", ReasonCode::RailUnavailable),
];

fn map_reason(code: &str) -> ReasonCode {
    REASONS.iter().find(|(rail, _)| *rail == code).map(|(_, common)| *common).unwrap_or(ReasonCode::Other)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payment {
    pub key: IdempotencyKey,
    pub amount: Money,
    pub account: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Answer {
    Booked { execution: Execution },
    Refused { code: String },
    Processing,
}

/// The bank's sandbox.
pub struct BookTransferBank {
    pub sandbox: Arc<Sandbox>,
    rail: String,
    currency: Currency,
    gate: tokio::sync::Mutex<()>,
}

impl BookTransferBank {
    pub fn new(rail: &str, currency: Currency) -> BookTransferBank {
        let sandbox =
            Sandbox::new(rail, FaultPlan::default()).unwrap_or_else(|_| unreachable!("the default plan is valid"));
        BookTransferBank { sandbox: Arc::new(sandbox), rail: rail.into(), currency, gate: tokio::sync::Mutex::new(()) }
    }

    /// What a connector to this bank declares: one currency, 0.01 to 50,000.00, a flat fee of 0.20.
    pub fn capabilities(&self) -> Capabilities {
        let currency = self.currency;
        Capabilities {
            rail: self.rail.clone(),
            kind: RailKind::Instant,
            currencies: vec![currency],
            payout_currencies: vec![currency],
            countries: Vec::new(),
            limits: vec![Limit {
                minimum: Money::from_minor(1, currency),
                maximum: Money::from_minor(5_000_000, currency),
            }],
            fees: vec![
                FeeSchedule::new(Money::from_minor(20, currency), Decimal::ZERO, None, None)
                    .unwrap_or_else(|_| FeeSchedule::free(currency)),
            ],
            supports_cancel: false,
            timeout: Duration::from_millis(300),
        }
    }

    fn answer(status: &Status) -> Reply {
        match status {
            Status::Executed(execution) => Reply::json(200, &Answer::Booked { execution: execution.clone() }),
            Status::Rejected(rejection) => Reply::json(200, &Answer::Refused { code: rejection.rail_code.clone() }),
            Status::NotFound => Reply::text(404, "unknown payment"),
            _ => Reply::json(202, &Answer::Processing),
        }
    }

    async fn book(&self, payment: Payment) -> Reply {
        let draw = self.sandbox.faults.draw(Utc::now());
        if draw.fault == Some(Fault::RequestLost) {
            return Reply::Lost;
        }
        self.sandbox.ledger.received(&payment.key);
        let guard = self.gate.lock().await;
        let status = self.sandbox.ledger.status(&payment.key);
        if status != Status::NotFound {
            return Self::answer(&status);
        }
        let refusal = match &draw.fault {
            _ if draw.outage => Some("BANK_OFFLINE".to_string()),
            Some(Fault::Reject { code }) => Some(code.clone()),
            _ if payment.account.is_empty() => Some("NO_SUCH_ACCOUNT".to_string()),
            _ => None,
        };
        if let Some(code) = refusal {
            let rejection = Rejection::by_rail(map_reason(&code), code, "refused by the bank");
            let _ = self.sandbox.ledger.reject(&payment.key, rejection.clone());
            return Self::answer(&Status::Rejected(rejection));
        }
        if let Some(Fault::Delay { ms }) = draw.fault {
            self.sandbox.ledger.hold(&payment.key, Utc::now());
            drop(guard);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let _guard = self.gate.lock().await;
            return self.execute(&payment, false);
        }
        self.execute(&payment, draw.fault == Some(Fault::ReplyLost))
    }

    fn execute(&self, payment: &Payment, lose_reply: bool) -> Reply {
        let fee = Money::from_minor(20, payment.amount.currency());
        let execution = Execution {
            reference: format!("BOOK-{}", self.sandbox.ledger.len() + 1),
            send: payment.amount,
            fee,
            receive: Money::from_minor(payment.amount.minor_units() - fee.minor_units(), payment.amount.currency()),
            rate: None,
            executed_at: Utc::now(),
        };
        let record = ExecutionRecord {
            key: payment.key.clone(),
            execution: execution.clone(),
            beneficiary_account: payment.account.clone(),
        };
        if self.sandbox.ledger.execute(record).is_err() {
            return Self::answer(&self.sandbox.ledger.status(&payment.key));
        }
        if lose_reply { Reply::Lost } else { Self::answer(&Status::Executed(execution)) }
    }
}

#[async_trait]
impl RailService for BookTransferBank {
    async fn call(&self, method: Method, target: &str, body: Vec<u8>) -> Reply {
        if let Some(reply) = self.sandbox.control(method, target, &body) {
            return reply;
        }
        match (method, target) {
            (Method::Get, "/ping") if self.sandbox.faults.outage_at(Utc::now()) => Reply::text(503, "offline"),
            (Method::Get, "/ping") => Reply::text(200, "pong"),
            (Method::Post, "/payments") => match serde_json::from_slice::<Payment>(&body) {
                Ok(payment) => self.book(payment).await,
                Err(error) => Reply::text(400, &error.to_string()),
            },
            (Method::Get, path) if path.starts_with("/payments/") => match IdempotencyKey::new(&path[10..]) {
                Ok(key) => Self::answer(&self.sandbox.ledger.status(&key)),
                Err(error) => Reply::text(400, &error.to_string()),
            },
            _ => Reply::text(404, "no such path"),
        }
    }
}

/// The connector.
pub struct BookTransferConnector {
    capabilities: Capabilities,
    transport: Transport,
}

impl BookTransferConnector {
    pub fn new(capabilities: Capabilities, transport: Transport) -> BookTransferConnector {
        BookTransferConnector { capabilities, transport }
    }

    fn read(body: &[u8]) -> Status {
        match serde_json::from_slice::<Answer>(body) {
            Ok(Answer::Booked { execution }) => Status::Executed(execution),
            Ok(Answer::Refused { code }) => {
                Status::Rejected(Rejection::by_rail(map_reason(&code), code, "refused by the bank"))
            }
            Ok(Answer::Processing) => Status::Pending,
            Err(error) => Status::Unknown(Unknown::new(UnknownCause::Unreadable, error.to_string())),
        }
    }
}

#[async_trait]
impl Connector for BookTransferConnector {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn submit(&self, leg: &Leg) -> Outcome {
        // 1. Refuse what the rail cannot take, before sending anything.
        if let Some(refusal) = self.capabilities.refuse(leg) {
            return Outcome::Rejected(refusal);
        }
        // 2. Send once, with the idempotency key; never retry here.
        let payment = Payment { key: leg.key.clone(), amount: leg.amount, account: leg.beneficiary.account.clone() };
        let body = serde_json::to_vec(&payment).unwrap_or_default();
        match self.transport.exchange(Method::Post, "/payments", body, self.capabilities.timeout).await {
            // 3. Map the answer onto Executed / Rejected / Unknown.
            Ok(answer) if matches!(answer.status, 200 | 202) => match Self::read(&answer.body) {
                Status::Executed(execution) => Outcome::Executed(execution),
                Status::Rejected(rejection) => Outcome::Rejected(rejection),
                Status::Unknown(unknown) => Outcome::Unknown(unknown),
                _ => Outcome::Unknown(Unknown::new(UnknownCause::Pending, "the bank is processing")),
            },
            Ok(answer) => Outcome::Unknown(Unknown::new(UnknownCause::Transport, format!("HTTP {}", answer.status))),
            Err(TransportError::Timeout(_)) => Outcome::Unknown(Unknown::new(UnknownCause::Timeout, "no answer")),
            Err(error) => Outcome::Unknown(Unknown::new(UnknownCause::Transport, error.to_string())),
        }
    }

    async fn status(&self, leg: &Leg) -> Status {
        let target = format!("/payments/{}", leg.key);
        match self.transport.exchange(Method::Get, &target, Vec::new(), self.capabilities.timeout).await {
            Ok(answer) if answer.status == 404 => Status::NotFound,
            Ok(answer) => Self::read(&answer.body),
            Err(error) => Status::Unknown(Unknown::new(UnknownCause::Transport, error.to_string())),
        }
    }

    async fn health(&self) -> Health {
        let started = Instant::now();
        let answer = self.transport.probe("/ping", self.capabilities.timeout).await;
        let available = matches!(&answer, Ok(answer) if answer.status == 200);
        Health {
            available,
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            detail: if available { "pong".into() } else { "bank offline".into() },
            checked_at: Utc::now(),
        }
    }
}
