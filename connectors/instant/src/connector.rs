//! The instant rail's connector: turns a leg into a pacs.008 and the rail's pacs.002 into an
//! outcome; asks with pacs.028; recalls with camt.056 when the rail's answer does not come in time;
//! reads availability from admi.004 broadcasts.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use railyard_connector::transport::{Method, Transport, TransportError};
use railyard_connector::{
    CancelOutcome, Capabilities, Connector, Execution, Health, IdempotencyKey, Leg, LegQuote, Notification, Outcome,
    ReasonCode, Rejection, Status, Unknown, UnknownCause,
};

use crate::iso20022::{self, CancellationRequest, CreditTransfer, Message, Party, Profile, StatusRequest, TxState};
use crate::reasons;

/// Share of the timeout kept for the camt.056 recall after the pacs.008 went unanswered.
const RECALL_SHARE_DIVISOR: u32 = 4;

/// What the connector needs to know about the house's side.
#[derive(Debug, Clone)]
pub struct InstantSettings {
    pub capabilities: Capabilities,
    /// The house's member id at the network (the debtor agent).
    pub member_id: String,
    /// The member id payments are addressed to (the sandbox has one creditor agent).
    pub creditor_agent: String,
    /// The house's settlement account.
    pub debtor: Party,
}

pub struct InstantConnector {
    settings: InstantSettings,
    transport: Transport,
}

impl InstantConnector {
    pub fn new(settings: InstantSettings, transport: Transport) -> InstantConnector {
        InstantConnector { settings, transport }
    }

    fn profile(&self, leg: &Leg) -> Profile {
        Profile::for_currency(leg.amount.currency())
    }

    fn transfer(&self, leg: &Leg, quote: &LegQuote) -> CreditTransfer {
        let date = leg.instructed_at.date_naive();
        CreditTransfer {
            ids: iso20022::payment_ids(leg.key.as_str(), date, &self.settings.member_id),
            created_at: leg.instructed_at,
            amount: quote.receive,
            settlement_date: date,
            debtor: self.settings.debtor.clone(),
            debtor_agent: self.settings.member_id.clone(),
            creditor: Party {
                name: leg.beneficiary.name.clone(),
                account: leg.beneficiary.account.clone(),
                country: leg.beneficiary.country.code().to_string(),
            },
            creditor_agent: self.settings.creditor_agent.clone(),
            remittance: leg.remittance.clone(),
        }
    }

    fn execution(quote: &LegQuote, reference: String, at: DateTime<Utc>) -> Execution {
        Execution { reference, send: quote.send, fee: quote.fee, receive: quote.receive, rate: None, executed_at: at }
    }

    /// Reads a pacs.002 answer into a status.
    fn read_report(&self, quote: &LegQuote, body: &[u8]) -> Status {
        let parsed = match iso20022::parse(body) {
            Ok(parsed) => parsed,
            Err(error) => return Status::Unknown(Unknown::new(UnknownCause::Unreadable, error.to_string())),
        };
        let Message::StatusReport(report) = parsed.message else {
            return Status::Unknown(Unknown::new(
                UnknownCause::Unreadable,
                format!("expected pacs.002, got {}", parsed.message_type),
            ));
        };
        match TxState::from_code(&report.status, parsed.profile) {
            Some(TxState::Settled) => {
                Status::Executed(Self::execution(quote, report.original.transaction_id, report.created_at))
            }
            Some(TxState::Pending) => Status::Pending,
            Some(TxState::Rejected) => {
                let code = report.reason.unwrap_or_else(|| "NARR".into());
                let detail = report.additional_info.unwrap_or_else(|| reasons::meaning(&code).to_string());
                Status::Rejected(Rejection::by_rail(reasons::map(&code), code, detail))
            }
            None => Status::Unknown(Unknown::new(
                UnknownCause::Unreadable,
                format!("unknown transaction status {:?}", report.status),
            )),
        }
    }

    fn quote_or_refuse(&self, leg: &Leg) -> Result<LegQuote, Rejection> {
        if let Some(refusal) = self.settings.capabilities.refuse(leg) {
            return Err(refusal);
        }
        self.settings.capabilities.quote_from_schedule(leg)
    }

    async fn recall(&self, leg: &Leg, quote: &LegQuote, budget: Duration) -> Option<Status> {
        let transfer = self.transfer(leg, quote);
        let now = Utc::now();
        let recall = CancellationRequest {
            assignment_id: iso20022::message_id('M', now, &self.settings.member_id, &format!("recall:{}", leg.key)),
            created_at: now,
            original: transfer.ids,
            original_message_name: pacs008_version(self.profile(leg)).into(),
            amount: transfer.amount,
            settlement_date: transfer.settlement_date,
            assigner: self.settings.member_id.clone(),
            reason: "DS24".into(),
            to_agent: self.settings.creditor_agent.clone(),
        };
        let xml = iso20022::emit_cancellation_request(self.profile(leg), &recall);
        let answer = self.transport.exchange(Method::Post, "/camt.056", xml.into_bytes(), budget).await.ok()?;
        if answer.status != 200 {
            return None;
        }
        Some(self.read_report(quote, &answer.body))
    }
}

fn pacs008_version(profile: Profile) -> &'static str {
    match profile {
        Profile::Rtp => "pacs.008.001.08",
        Profile::Iso => "pacs.008.001.09",
    }
}

fn outcome_of(status: Status, cause: UnknownCause, detail: String) -> Outcome {
    match status {
        Status::Executed(execution) => Outcome::Executed(execution),
        Status::Rejected(rejection) => Outcome::Rejected(rejection),
        Status::Pending => {
            Outcome::Unknown(Unknown::new(UnknownCause::Pending, "the rail holds the payment unsettled"))
        }
        Status::NotFound => Outcome::Unknown(Unknown::new(cause, detail)),
        Status::Unknown(unknown) => Outcome::Unknown(unknown),
    }
}

#[async_trait]
impl Connector for InstantConnector {
    fn capabilities(&self) -> &Capabilities {
        &self.settings.capabilities
    }

    fn rail_key(&self, key: &IdempotencyKey) -> IdempotencyKey {
        IdempotencyKey::new(iso20022::uetr_for(key.as_str())).unwrap_or_else(|_| key.clone())
    }

    async fn submit(&self, leg: &Leg) -> Outcome {
        let quote = match self.quote_or_refuse(leg) {
            Ok(quote) => quote,
            Err(refusal) => return Outcome::Rejected(refusal),
        };
        let timeout = self.settings.capabilities.timeout;
        let recall_budget = timeout / RECALL_SHARE_DIVISOR;
        let xml = iso20022::emit_credit_transfer(self.profile(leg), &self.transfer(leg, &quote));
        match self.transport.exchange(Method::Post, "/pacs.008", xml.into_bytes(), timeout - recall_budget).await {
            Ok(answer) if answer.status == 200 => {
                outcome_of(self.read_report(&quote, &answer.body), UnknownCause::Unreadable, String::new())
            }
            Ok(answer) if answer.status == 400 => Outcome::Rejected(Rejection::by_rail(
                ReasonCode::FormatError,
                "400",
                String::from_utf8_lossy(&answer.body).into_owned(),
            )),
            Ok(answer) => Outcome::Unknown(Unknown::new(
                UnknownCause::Transport,
                format!("rail answered HTTP {}: {}", answer.status, String::from_utf8_lossy(&answer.body)),
            )),
            Err(TransportError::Unreachable(detail)) => Outcome::Rejected(Rejection {
                code: ReasonCode::RailUnavailable,
                rail_code: String::new(),
                detail: format!("rail unreachable, nothing sent: {detail}"),
                before_send: true,
            }),
            Err(TransportError::Timeout(waited)) => {
                // The rail's answer did not come in time: recall (camt.056, DS24) so the payment
                // either is cancelled for good or is reported settled. No answer to the recall
                // leaves the outcome unknown, for status inquiry and reconciliation.
                // The recall has the share kept for it: the time the pacs.008 waited for its turn
                // on the transport was not spent on the network.
                match self.recall(leg, &quote, recall_budget).await {
                    Some(status) => outcome_of(status, UnknownCause::Timeout, String::new()),
                    None => Outcome::Unknown(Unknown::new(
                        UnknownCause::Timeout,
                        format!("no pacs.002 within {waited:?} and no answer to the camt.056 recall"),
                    )),
                }
            }
            Err(error) => Outcome::Unknown(Unknown::new(UnknownCause::Transport, error.to_string())),
        }
    }

    async fn status(&self, leg: &Leg) -> Status {
        let quote = match self.settings.capabilities.quote_from_schedule(leg) {
            Ok(quote) => quote,
            // A leg we would have refused was never sent.
            Err(_) => return Status::NotFound,
        };
        let transfer = self.transfer(leg, &quote);
        let now = Utc::now();
        let request = StatusRequest {
            message_id: iso20022::message_id('M', now, &self.settings.member_id, &format!("status:{}:{now}", leg.key)),
            created_at: now,
            original_message_name: pacs008_version(self.profile(leg)).into(),
            original_created_at: transfer.created_at,
            original: transfer.ids,
            amount: transfer.amount,
            settlement_date: transfer.settlement_date,
            from_agent: self.settings.member_id.clone(),
            to_agent: self.settings.creditor_agent.clone(),
        };
        let xml = iso20022::emit_status_request(self.profile(leg), &request);
        match self
            .transport
            .exchange(Method::Post, "/pacs.028", xml.into_bytes(), self.settings.capabilities.timeout)
            .await
        {
            Ok(answer) if answer.status == 200 => self.read_report(&quote, &answer.body),
            Ok(answer) if answer.status == 404 => Status::NotFound,
            Ok(answer) => Status::Unknown(Unknown::new(UnknownCause::Transport, format!("HTTP {}", answer.status))),
            Err(TransportError::Timeout(_)) => {
                Status::Unknown(Unknown::new(UnknownCause::Timeout, "no answer to pacs.028"))
            }
            Err(error) => Status::Unknown(Unknown::new(UnknownCause::Transport, error.to_string())),
        }
    }

    async fn cancel(&self, leg: &Leg) -> CancelOutcome {
        let quote = match self.settings.capabilities.quote_from_schedule(leg) {
            Ok(quote) => quote,
            Err(_) => return CancelOutcome::NotFound,
        };
        match self.recall(leg, &quote, self.settings.capabilities.timeout).await {
            Some(Status::Executed(execution)) => CancelOutcome::TooLate(execution),
            Some(Status::Rejected(rejection)) if rejection.code == ReasonCode::Cancelled => CancelOutcome::Cancelled,
            // Rejected for another reason: it will never execute either.
            Some(Status::Rejected(_)) => CancelOutcome::Cancelled,
            Some(Status::NotFound) => CancelOutcome::NotFound,
            Some(Status::Pending) => CancelOutcome::Unknown(Unknown::new(UnknownCause::Pending, "recall pending")),
            Some(Status::Unknown(unknown)) => CancelOutcome::Unknown(unknown),
            None => CancelOutcome::Unknown(Unknown::new(UnknownCause::Timeout, "no answer to the camt.056 recall")),
        }
    }

    async fn health(&self) -> Health {
        let started = Instant::now();
        let answer = self.transport.probe("/admi.004", self.settings.capabilities.timeout).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (available, detail) = match answer {
            Ok(answer) if answer.status == 200 => match iso20022::parse(&answer.body) {
                Ok(iso20022::Parsed { message: Message::SystemEvent(event), .. }) => match event.availability() {
                    Some(true) => (true, format!("admi.004 {}: AVAILABLE", event.code)),
                    Some(false) => (false, format!("admi.004 {}: UNAVAILABLE", event.code)),
                    None => (false, format!("admi.004 {} without availability", event.code)),
                },
                Ok(other) => (false, format!("expected admi.004, got {}", other.message_type)),
                Err(error) => (false, error.to_string()),
            },
            Ok(answer) => (false, format!("HTTP {}", answer.status)),
            Err(error) => (false, error.to_string()),
        };
        Health { available, latency_ms, detail, checked_at: Utc::now() }
    }

    async fn notifications(&self, after: u64, max: usize) -> Result<Vec<Notification>, Unknown> {
        railyard_connector::sandbox::poll_notifications(&self.transport, after, max, self.settings.capabilities.timeout)
            .await
    }
}
