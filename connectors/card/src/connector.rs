//! The card network's connector.

use async_trait::async_trait;
use railyard_connector::transport::{self, Method, Transport, TransportError};
use railyard_connector::{
    Capabilities, Connector, Health, Leg, LegQuote, Notification, Outcome, ReasonCode, Rejection, Status, Unknown,
    UnknownCause,
};
use serde::Serialize;

use crate::card::{self, CardInfo};
use crate::rail::{PayoutAnswer, PayoutRequest, QuoteAnswer, QuoteRequest, TokenRequest};
use crate::{decline_meaning, map_decline};

pub struct CardConnector {
    capabilities: Capabilities,
    transport: Transport,
}

/// Why a card could not be tokenised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("pan: not 12 to 19 digits with a valid Luhn check digit")]
    Luhn,
    #[error("the network refused the card: {0}")]
    Refused(String),
    #[error("the network did not answer: {0}")]
    Transport(String),
}

impl CardConnector {
    pub fn new(capabilities: Capabilities, transport: Transport) -> CardConnector {
        CardConnector { capabilities, transport }
    }

    async fn post(&self, path: &str, value: &impl Serialize) -> Result<(u16, Vec<u8>), TransportError> {
        let body = serde_json::to_vec(value).map_err(|error| TransportError::Connection(error.to_string()))?;
        let answer = self.transport.exchange(Method::Post, path, body, self.capabilities.timeout).await?;
        Ok((answer.status, answer.body))
    }

    /// Exchanges a PAN for a token. The Luhn digit is checked here, so a mistyped number never
    /// leaves the process.
    pub async fn tokenise(&self, pan: &str, expiry: &str) -> Result<CardInfo, TokenError> {
        if !card::luhn_valid(pan) {
            return Err(TokenError::Luhn);
        }
        match self.post("/tokens", &TokenRequest { pan: pan.into(), expiry: expiry.into() }).await {
            Ok((200, body)) => serde_json::from_slice(&body).map_err(|error| TokenError::Transport(error.to_string())),
            Ok((_, body)) => Err(TokenError::Refused(String::from_utf8_lossy(&body).into_owned())),
            Err(error) => Err(TokenError::Transport(error.to_string())),
        }
    }

    fn read_answer(body: &[u8]) -> Status {
        match serde_json::from_slice::<PayoutAnswer>(body) {
            Ok(PayoutAnswer::Approved { execution, .. }) => Status::Executed(execution),
            Ok(PayoutAnswer::Declined { code, message }) => {
                let detail = if message.is_empty() { decline_meaning(&code).to_string() } else { message };
                Status::Rejected(Rejection::by_rail(map_decline(&code), code, detail))
            }
            Ok(PayoutAnswer::Pending) => Status::Pending,
            Err(error) => Status::Unknown(Unknown::new(UnknownCause::Unreadable, error.to_string())),
        }
    }
}

#[async_trait]
impl Connector for CardConnector {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// The network prices: its FX rate and fees, for the card's currency.
    async fn quote(&self, leg: &Leg) -> Result<LegQuote, Rejection> {
        if let Some(refusal) = self.capabilities.refuse(leg) {
            return Err(refusal);
        }
        let request = QuoteRequest { amount: leg.amount, token: leg.beneficiary.account.clone() };
        match self.post("/quote", &request).await {
            Ok((200, body)) => {
                let quote: QuoteAnswer = serde_json::from_slice(&body)
                    .map_err(|error| Rejection::by_rail(ReasonCode::Other, "", error.to_string()))?;
                if quote.receive.currency() != leg.payout_currency {
                    return Err(Rejection::before_send(
                        ReasonCode::UnsupportedCurrency,
                        format!("the card is billed in {}, not {}", quote.receive.currency(), leg.payout_currency),
                    ));
                }
                Ok(LegQuote { send: quote.send, fee: quote.fee, receive: quote.receive, rate: Some(quote.rate) })
            }
            Ok((_, body)) => match Self::read_answer(&body) {
                Status::Rejected(rejection) => Err(rejection),
                other => Err(Rejection::by_rail(ReasonCode::Other, "", format!("quote failed: {other:?}"))),
            },
            Err(error) => Err(Rejection::by_rail(ReasonCode::RailUnavailable, "", error.to_string())),
        }
    }

    async fn submit(&self, leg: &Leg) -> Outcome {
        if let Some(refusal) = self.capabilities.refuse(leg) {
            return Outcome::Rejected(refusal);
        }
        let request = PayoutRequest {
            key: leg.key.clone(),
            token: leg.beneficiary.account.clone(),
            amount: leg.amount,
            payout_currency: leg.payout_currency,
            name: leg.beneficiary.name.clone(),
        };
        let body = match serde_json::to_vec(&request) {
            Ok(body) => body,
            Err(error) => return Outcome::Rejected(Rejection::before_send(ReasonCode::FormatError, error.to_string())),
        };
        let result = self.transport.exchange(Method::Post, "/payouts", body, self.capabilities.timeout).await;
        transport::submission_outcome(result, Self::read_answer)
    }

    async fn status(&self, leg: &Leg) -> Status {
        let target = format!("/payouts/{}", leg.key);
        let result = self.transport.exchange(Method::Get, &target, Vec::new(), self.capabilities.timeout).await;
        transport::inquiry_status(result, Self::read_answer)
    }

    async fn health(&self) -> Health {
        transport::probe_json_health(&self.transport, "/health", self.capabilities.timeout).await
    }

    async fn notifications(&self, after: u64, max: usize) -> Result<Vec<Notification>, Unknown> {
        railyard_connector::sandbox::poll_notifications(&self.transport, after, max, self.capabilities.timeout).await
    }
}
