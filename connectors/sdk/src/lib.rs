//! Railyard's connector SDK: what a rail connector implements, and how it proves it behaves.
//!
//! A rail connector is one implementation of [`Connector`]. It tells Railyard what the rail can do
//! ([`Capabilities`]), prices a leg ([`Connector::quote`]), submits it with a stable
//! [`IdempotencyKey`] ([`Connector::submit`]), asks what became of a key ([`Connector::status`]),
//! cancels where the rail allows it and reports the rail's health.
//!
//! The central contract is the three-state answer to a submission, [`Outcome`]:
//!
//! - [`Outcome::Executed`]: the rail moved the money; the answer carries the rail's reference.
//! - [`Outcome::Rejected`]: the rail definitively refused; nothing moved and nothing will. The reason
//!   is mapped onto the common [`ReasonCode`] set; the rail's own code is kept beside it. The code
//!   decides what the payout does next: [`ReasonCode::another_route_may_succeed`] lets it try
//!   another route under new keys, and [`ReasonCode::same_rail_may_succeed`] lets that route use
//!   this rail again. A connector that recalls its own timed-out submission and has the rail
//!   confirm the cancellation answers [`ReasonCode::Cancelled`], which allows both.
//! - [`Outcome::Unknown`]: the connector could not learn the outcome (timeout, broken connection,
//!   a rail still processing). The money may or may not have moved. Railyard resolves this with
//!   [`Connector::status`] and reconciliation; it never resends blindly and never releases the funds
//!   it reserved on an Unknown.
//!
//! Design choice: the idempotency key, not the connector, is what makes a payout exactly-once. A
//! connector MUST pass the key (or a value derived from it deterministically) to the rail on every
//! attempt so that the rail itself refuses a second execution, and MUST answer `status` by that key.
//! A connector MUST NOT retry a submission on its own after sending it: a retry is Railyard's
//! decision, taken after a status inquiry.
//!
//! Adding a rail is one dependency line and one registration call:
//!
//! ```toml
//! [dependencies]
//! railyard-connector = { path = "../sdk" }
//! ```
//!
//! and `registry.register(Arc::new(MyRailConnector::new(..)))`. `connectors/example` is a complete
//! connector crate to copy: its crate documentation shows the registration as a compiled example,
//! and its tests run the [`kit`].

mod registry;
mod types;

pub mod faults;
pub mod kit;
pub mod ledger;
pub mod sandbox;
pub mod transport;

use async_trait::async_trait;

pub use railyard_config::RailKind;
pub use registry::{Registry, RegistryError};
pub use types::*;

/// A rail connector. Implementations must be cheap to share (`Arc`) and safe to call concurrently.
///
/// Timeouts are the connector's to enforce: every method returns within
/// [`Capabilities::timeout`] plus scheduling slack, answering Unknown (or an unavailable
/// [`Health`]) when the rail did not answer in time.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// What the rail can carry. Constant for the connector's lifetime.
    fn capabilities(&self) -> &Capabilities;

    /// Prices a leg without sending anything.
    ///
    /// The default prices with the published fee schedule; a connector whose rail prices
    /// dynamically (network FX, say) overrides it.
    async fn quote(&self, leg: &Leg) -> Result<LegQuote, Rejection> {
        self.capabilities().quote_from_schedule(leg)
    }

    /// Submits a leg. See the crate documentation for the three outcomes.
    ///
    /// MUST refuse, without contacting the rail, a leg that [`Capabilities::refuse`] refuses
    /// (the [`kit`] checks that nothing reached the rail). MUST be idempotent per key: submitting a key
    /// that already executed answers Executed with the same reference, and executes nothing new.
    async fn submit(&self, leg: &Leg) -> Outcome;

    /// What the rail knows of the leg's key. [`Status::NotFound`] is definitive: the rail never
    /// accepted it. Takes the whole leg because rails identify the original by more than the key
    /// (an ISO 20022 status request carries the original ids, amount and date).
    async fn status(&self, leg: &Leg) -> Status;

    /// Asks the rail to cancel or recall the leg. Rails that cannot answer [`CancelOutcome::Unsupported`].
    async fn cancel(&self, leg: &Leg) -> CancelOutcome {
        let _ = leg;
        CancelOutcome::Unsupported
    }

    /// The key under which the rail records this leg in its own ledger, when the rail cannot carry
    /// ours verbatim (an ISO 20022 UETR, say). Deterministic. Proof tests join on it.
    fn rail_key(&self, key: &IdempotencyKey) -> IdempotencyKey {
        key.clone()
    }

    /// Probes the rail. MUST report `available: false` while the rail is in an outage.
    async fn health(&self) -> Health;

    /// Notifications the rail pushed after sequence number `after` (status callbacks, availability
    /// broadcasts), at most `max` of them. Rails may deliver a notification twice or late: consumers
    /// must treat them as hints to be checked against [`Connector::status`], never as the truth.
    async fn notifications(&self, after: u64, max: usize) -> Result<Vec<Notification>, Unknown> {
        let _ = (after, max);
        Ok(Vec::new())
    }
}
