//! The CBDC rail's connector. Transfers are final when the block is committed, so there is no
//! cancellation; the execution reference is the block height and hash prefix (the finality receipt).

use async_trait::async_trait;
use railyard_connector::transport::{self, Method, Transport, TransportError};
use railyard_connector::{
    Capabilities, Connector, Health, Leg, LegQuote, Notification, Outcome, ReasonCode, Rejection, Status, Unknown,
    UnknownCause,
};
use serde::Serialize;

use crate::rail::{OpenWallet, QuoteAnswer, QuoteRequest, TransferAnswer, TransferRequest};
use crate::{map_refusal, refusal_meaning};

pub struct CbdcConnector {
    capabilities: Capabilities,
    transport: Transport,
}

impl CbdcConnector {
    pub fn new(capabilities: Capabilities, transport: Transport) -> CbdcConnector {
        CbdcConnector { capabilities, transport }
    }

    async fn post(&self, path: &str, value: &impl Serialize) -> Result<(u16, Vec<u8>), TransportError> {
        let body = serde_json::to_vec(value).map_err(|error| TransportError::Connection(error.to_string()))?;
        let answer = self.transport.exchange(Method::Post, path, body, self.capabilities.timeout).await?;
        Ok((answer.status, answer.body))
    }

    /// Opens a beneficiary wallet on the platform (sandbox onboarding).
    pub async fn open_wallet(&self, wallet: &str, currency: railyard_core::Currency) -> Result<(), String> {
        match self.post("/wallets", &OpenWallet { wallet: wallet.into(), currency }).await {
            Ok((200, _)) => Ok(()),
            Ok((_, body)) => Err(String::from_utf8_lossy(&body).into_owned()),
            Err(error) => Err(error.to_string()),
        }
    }

    fn read_answer(body: &[u8]) -> Status {
        match serde_json::from_slice::<TransferAnswer>(body) {
            Ok(TransferAnswer::Final { execution, .. }) => Status::Executed(execution),
            Ok(TransferAnswer::Refused { code, message }) => {
                let detail = if message.is_empty() { refusal_meaning(&code).to_string() } else { message };
                Status::Rejected(Rejection::by_rail(map_refusal(&code), code, detail))
            }
            Ok(TransferAnswer::Pending) => Status::Pending,
            Err(error) => Status::Unknown(Unknown::new(UnknownCause::Unreadable, error.to_string())),
        }
    }
}

#[async_trait]
impl Connector for CbdcConnector {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn quote(&self, leg: &Leg) -> Result<LegQuote, Rejection> {
        if let Some(refusal) = self.capabilities.refuse(leg) {
            return Err(refusal);
        }
        match self.post("/quote", &QuoteRequest { amount: leg.amount, payout_currency: leg.payout_currency }).await {
            Ok((200, body)) => {
                let quote: QuoteAnswer = serde_json::from_slice(&body)
                    .map_err(|error| Rejection::by_rail(ReasonCode::Other, "", error.to_string()))?;
                Ok(LegQuote { send: quote.send, fee: quote.fee, receive: quote.receive, rate: quote.rate })
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
        let request = TransferRequest {
            key: leg.key.clone(),
            amount: leg.amount,
            payout_currency: leg.payout_currency,
            to_wallet: leg.beneficiary.account.clone(),
            memo: leg.remittance.clone(),
        };
        let body = match serde_json::to_vec(&request) {
            Ok(body) => body,
            Err(error) => return Outcome::Rejected(Rejection::before_send(ReasonCode::FormatError, error.to_string())),
        };
        let result = self.transport.exchange(Method::Post, "/transfers", body, self.capabilities.timeout).await;
        transport::submission_outcome(result, Self::read_answer)
    }

    async fn status(&self, leg: &Leg) -> Status {
        let target = format!("/transfers/{}", leg.key);
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
