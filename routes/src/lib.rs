//! Routing: the best way to move one payment across rails and FX conversions.
//!
//! The graph's nodes are currencies at locations; its edges are legs operated by rails and FX
//! providers, with fees that depend on the amount each leg carries, per-payment limits, daily caps,
//! liquidity, operating hours and corridor rules. For each payment the [`Router`] solves either "send
//! exactly X" or "deliver exactly Y" with a label-setting search over integer minor units, returns the
//! best route and up to k alternatives (each with why it lost), splits a payment over several routes
//! when no single one can carry it, and recomputes every returned leg with `railyard_core`'s decimal
//! arithmetic, refusing any disagreement.
//!
//! The routing graph is an immutable snapshot: updates (rail reports, treasury changes) build a new
//! [`Router`]. This crate does no I/O and spawns nothing.

pub mod bench;
mod config;
mod graph;
mod router;
mod search;
pub mod synthetic;
mod transform;

pub use config::{LiveState, RailState, build_router};
pub use graph::{
    Account, Edge, EdgeId, EdgeSpec, Graph, GraphBuilder, GraphError, NodeId, NodeKey, Operator, OperatorKind,
};
pub use router::{
    ALTERNATIVES_MAX, AMOUNT_MAX_MINOR, BENEFICIARY, BlockedLeg, LEDGER, Leg, PathEvaluation, Route, RouteError,
    RouteRequest, RouteSet, Router, SPLIT_PARTS_MAX, Split, route_json,
};
pub use search::{Block, LABELS_PER_NODE_MAX, Mode};
pub use transform::{CompiledFee, CompiledLeg, CompiledRate};
