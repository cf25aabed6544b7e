//! Treasury operations: where the money is, and proof that Railyard's ledger agrees with what the
//! rails and banks say happened.
//!
//! - [`liquidity`] reads each rail's prefunded position, raises alerts at its low- and high-water
//!   marks, and suggests rebalancing.
//! - [`settlement`] runs the settlement windows of net-settled rails: open, closed, settling,
//!   settled, with a netted report and one posting per currency.
//! - [`reports`] reads rail reports and bank statements (ISO 20022 camt.052/053/054 and pacs.002,
//!   the card network's settlement file, the CBDC block log) into lines.
//! - [`reconcile`] matches the lines to the ledger's rail legs and resolves in-doubt sagas from the
//!   evidence; [`schedule`] does so inside `railyard serve` for rails that publish reports.

pub mod liquidity;
pub mod reconcile;
pub mod reports;
pub mod schedule;
pub mod settlement;
