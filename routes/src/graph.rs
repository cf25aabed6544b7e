//! The routing graph: an immutable snapshot in compressed sparse row form.
//!
//! Nodes are a currency at a location (`USD@ledger`, `BRL@beneficiary`); edges are legs operated by a
//! rail or an FX provider. A [`GraphBuilder`] collects nodes and edges with their decimal definitions
//! (fee schedules, rates); [`GraphBuilder::build`] compiles them into dense arrays the search walks
//! without hashing, sorted by source node (forward) and by target node (reverse), and keeps the
//! decimal definitions beside them for the recomputation of chosen routes.
//!
//! Updates never mutate a graph: they build a new snapshot.

use std::collections::HashMap;

use railyard_config::{OperatingHours, RailKind};
use railyard_core::{Country, Currency, Decimal, FeeSchedule, Money, Rate, RoundingMode};
use rust_decimal::MathematicalOps;

use crate::transform::{CompiledFee, CompiledLeg, CompiledRate};

/// Index of a node in a graph.
pub type NodeId = u32;
/// Index of an edge in a graph.
pub type EdgeId = u32;

/// Risk is −ln(success probability), stored in millionths.
pub const RISK_SCALE: i64 = 1_000_000;

/// A currency at a location.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeKey {
    pub currency: Currency,
    pub location: String,
}

impl std::fmt::Display for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.currency, self.location)
    }
}

/// Who operates a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorKind {
    Rail(RailKind),
    FxProvider,
}

/// A rail or FX provider, with what decides whether its legs can be used at an instant.
#[derive(Debug, Clone)]
pub struct Operator {
    pub id: String,
    pub kind: OperatorKind,
    pub hours: OperatingHours,
    /// False when the operator is killed or in an outage: none of its legs is used.
    pub available: bool,
    /// Beneficiary countries it serves; empty means any.
    pub countries: Vec<Country>,
}

/// A balance that several legs draw on: a rail's prefunded account (limits what legs deliver) or the
/// room left under a daily cap (limits what legs send).
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub available: Money,
}

/// An edge as the builder receives it, in decimals.
#[derive(Debug, Clone)]
pub struct EdgeSpec {
    pub from: NodeKey,
    pub to: NodeKey,
    pub operator: usize,
    /// In the `from` currency.
    pub fee: FeeSchedule,
    /// Present when the leg changes currency: the rate (base = from, quote = to) and its rounding.
    pub conversion: Option<(Rate, RoundingMode)>,
    /// Per-payment bounds on what the leg sends, in the `from` currency.
    pub send_minimum: Option<Money>,
    pub send_maximum: Option<Money>,
    /// Daily-cap account (in `from`) and liquidity account (in `to`).
    pub send_account: Option<usize>,
    pub receive_account: Option<usize>,
    pub latency_ms: u32,
    pub success_probability: Decimal,
}

/// An edge compiled for the search.
#[derive(Debug, Clone, Copy)]
pub struct Edge {
    pub from: NodeId,
    pub to: NodeId,
    pub operator: u32,
    pub leg: CompiledLeg,
    pub send_minimum: i64,
    pub send_maximum: i64,
    /// `u32::MAX` when the edge draws on no account.
    pub send_account: u32,
    pub receive_account: u32,
    pub latency_ms: u32,
    /// −ln(success probability) x [`RISK_SCALE`].
    pub risk: i64,
}

pub(crate) const NO_ACCOUNT: u32 = u32::MAX;

/// Why a graph could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("edge {from} → {to}: {message}")]
    Edge { from: String, to: String, message: String },
    #[error("the graph is too large: {0}")]
    TooLarge(String),
    #[error(
        "account {account} is drawn on by {first} and by {second}, which one route can take in turn; give each its own account"
    )]
    SharedAccountOnPath { account: String, first: String, second: String },
}

/// Collects nodes, operators, accounts and edges.
#[derive(Debug, Default, Clone)]
pub struct GraphBuilder {
    nodes: Vec<NodeKey>,
    node_index: HashMap<NodeKey, NodeId>,
    operators: Vec<Operator>,
    accounts: Vec<Account>,
    edges: Vec<EdgeSpec>,
}

impl GraphBuilder {
    pub fn new() -> GraphBuilder {
        GraphBuilder::default()
    }

    pub fn node(&mut self, currency: Currency, location: &str) -> NodeId {
        let key = NodeKey { currency, location: location.to_string() };
        if let Some(&id) = self.node_index.get(&key) {
            return id;
        }
        let id = self.nodes.len() as NodeId;
        self.nodes.push(key.clone());
        self.node_index.insert(key, id);
        id
    }

    pub fn operator(&mut self, operator: Operator) -> usize {
        self.operators.push(operator);
        self.operators.len() - 1
    }

    pub fn account(&mut self, name: String, available: Money) -> usize {
        self.accounts.push(Account { name, available });
        self.accounts.len() - 1
    }

    pub fn edge(&mut self, spec: EdgeSpec) {
        self.node(spec.from.currency, &spec.from.location);
        self.node(spec.to.currency, &spec.to.location);
        self.edges.push(spec);
    }

    pub fn edge_count(&self) -> usize {
        self.edges.len()
    }

    /// Compiles the snapshot.
    pub fn build(self) -> Result<Graph, GraphError> {
        if self.nodes.len() >= u32::MAX as usize / 2 || self.edges.len() >= u32::MAX as usize / 2 {
            return Err(GraphError::TooLarge(format!("{} nodes, {} edges", self.nodes.len(), self.edges.len())));
        }
        let mut compiled = Vec::with_capacity(self.edges.len());
        for spec in &self.edges {
            compiled.push(compile_edge(spec, &self.node_index, &self.operators, &self.accounts)?);
        }
        // Forward CSR: edges sorted by source node (stable, so builder order breaks ties).
        let mut order: Vec<usize> = (0..compiled.len()).collect();
        order.sort_by_key(|&index| compiled[index].from);
        let edges: Vec<Edge> = order.iter().map(|&index| compiled[index]).collect();
        let specs: Vec<EdgeSpec> = order.iter().map(|&index| self.edges[index].clone()).collect();
        let offsets = csr_offsets(self.nodes.len(), edges.iter().map(|edge| edge.from));
        // Reverse CSR: edge ids sorted by target node.
        let mut reverse: Vec<EdgeId> = (0..edges.len() as EdgeId).collect();
        reverse.sort_by_key(|&id| edges[id as usize].to);
        let reverse_offsets = csr_offsets(self.nodes.len(), reverse.iter().map(|&id| edges[id as usize].to));
        let account_available: Vec<i64> = self.accounts.iter().map(|account| account.available.minor_units()).collect();
        check_accounts_once_per_route(&edges, &specs, &offsets, &self.accounts, self.nodes.len())?;
        Ok(Graph {
            nodes: self.nodes,
            node_index: self.node_index,
            operators: self.operators,
            accounts: self.accounts,
            account_available,
            edges,
            specs,
            offsets,
            reverse,
            reverse_offsets,
        })
    }
}

/// The search checks each leg against its accounts on its own, so no route may draw on one account
/// twice: for every account shared by several edges, none of them may be reachable after another.
fn check_accounts_once_per_route(
    edges: &[Edge],
    specs: &[EdgeSpec],
    offsets: &[u32],
    accounts: &[Account],
    nodes: usize,
) -> Result<(), GraphError> {
    let mut users: HashMap<u32, Vec<usize>> = HashMap::new();
    for (index, edge) in edges.iter().enumerate() {
        for account in [edge.send_account, edge.receive_account] {
            if account != NO_ACCOUNT {
                users.entry(account).or_default().push(index);
            }
        }
    }
    let describe = |index: usize| format!("{} → {}", specs[index].from, specs[index].to);
    for (account, sharing) in users.into_iter().filter(|(_, sharing)| sharing.len() > 1) {
        for &first in &sharing {
            // Everything reachable once `first` has been taken (its head, and onwards).
            let mut seen = vec![false; nodes];
            let mut stack = vec![edges[first].to];
            while let Some(node) = stack.pop() {
                if std::mem::replace(&mut seen[node as usize], true) {
                    continue;
                }
                for next in offsets[node as usize]..offsets[node as usize + 1] {
                    if sharing.contains(&(next as usize)) {
                        return Err(GraphError::SharedAccountOnPath {
                            account: accounts[account as usize].name.clone(),
                            first: describe(first),
                            second: describe(next as usize),
                        });
                    }
                    stack.push(edges[next as usize].to);
                }
            }
        }
    }
    Ok(())
}

fn csr_offsets(nodes: usize, sorted_keys: impl Iterator<Item = NodeId>) -> Vec<u32> {
    let mut offsets = vec![0_u32; nodes + 1];
    for key in sorted_keys {
        offsets[key as usize + 1] += 1;
    }
    for index in 0..nodes {
        offsets[index + 1] += offsets[index];
    }
    offsets
}

fn compile_edge(
    spec: &EdgeSpec,
    node_index: &HashMap<NodeKey, NodeId>,
    operators: &[Operator],
    accounts: &[Account],
) -> Result<Edge, GraphError> {
    let fail = |message: String| GraphError::Edge { from: spec.from.to_string(), to: spec.to.to_string(), message };
    if spec.operator >= operators.len() {
        return Err(fail(format!("operator {} does not exist", spec.operator)));
    }
    if spec.fee.currency() != spec.from.currency {
        return Err(fail(format!("the fee is in {}, the leg sends {}", spec.fee.currency(), spec.from.currency)));
    }
    let rate = match &spec.conversion {
        Some((rate, rounding)) => {
            if rate.base() != spec.from.currency || rate.quote() != spec.to.currency {
                return Err(fail(format!("the rate converts {}/{}", rate.base(), rate.quote())));
            }
            Some(
                CompiledRate::compile(rate, *rounding)
                    .ok_or_else(|| fail("the rate does not fit integer arithmetic".into()))?,
            )
        }
        None if spec.from.currency != spec.to.currency => {
            return Err(fail("the leg changes currency without a rate".into()));
        }
        None => None,
    };
    let account = |index: Option<usize>, currency: Currency, what: &str| -> Result<u32, GraphError> {
        match index {
            None => Ok(NO_ACCOUNT),
            Some(index) => match accounts.get(index) {
                Some(account) if account.available.currency() == currency => Ok(index as u32),
                Some(account) => {
                    Err(fail(format!("{what} account {} is in {}", account.name, account.available.currency())))
                }
                None => Err(fail(format!("{what} account {index} does not exist"))),
            },
        }
    };
    let probability = spec.success_probability;
    if probability <= Decimal::ZERO || probability > Decimal::ONE {
        return Err(fail(format!("success probability {probability} is not in (0, 1]")));
    }
    // −ln(p) in millionths, computed once per snapshot in decimal.
    let risk = probability
        .checked_ln()
        .and_then(|log| (-log * Decimal::from(RISK_SCALE)).round().try_into().ok())
        .ok_or_else(|| fail("success probability has no logarithm".into()))?;
    Ok(Edge {
        from: node_index[&spec.from],
        to: node_index[&spec.to],
        operator: spec.operator as u32,
        leg: CompiledLeg { fee: CompiledFee::compile(&spec.fee), rate },
        send_minimum: spec.send_minimum.map(|m| m.minor_units()).unwrap_or(1),
        send_maximum: spec.send_maximum.map(|m| m.minor_units()).unwrap_or(i64::MAX),
        send_account: account(spec.send_account, spec.from.currency, "send")?,
        receive_account: account(spec.receive_account, spec.to.currency, "receive")?,
        latency_ms: spec.latency_ms,
        risk,
    })
}

/// An immutable routing graph.
#[derive(Debug, Clone)]
pub struct Graph {
    nodes: Vec<NodeKey>,
    node_index: HashMap<NodeKey, NodeId>,
    operators: Vec<Operator>,
    accounts: Vec<Account>,
    account_available: Vec<i64>,
    edges: Vec<Edge>,
    specs: Vec<EdgeSpec>,
    offsets: Vec<u32>,
    reverse: Vec<EdgeId>,
    reverse_offsets: Vec<u32>,
}

impl Graph {
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn edge_count(&self) -> usize {
        self.edges.len()
    }

    pub fn node_key(&self, node: NodeId) -> &NodeKey {
        &self.nodes[node as usize]
    }

    pub fn find_node(&self, currency: Currency, location: &str) -> Option<NodeId> {
        self.node_index.get(&NodeKey { currency, location: location.to_string() }).copied()
    }

    pub fn edge(&self, edge: EdgeId) -> &Edge {
        &self.edges[edge as usize]
    }

    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    /// The decimal definition of an edge.
    pub fn spec(&self, edge: EdgeId) -> &EdgeSpec {
        &self.specs[edge as usize]
    }

    pub fn operators(&self) -> &[Operator] {
        &self.operators
    }

    pub fn operator(&self, index: u32) -> &Operator {
        &self.operators[index as usize]
    }

    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    /// What each account holds in this snapshot, in minor units, indexed like [`Graph::accounts`].
    pub fn account_available(&self) -> &[i64] {
        &self.account_available
    }

    /// Edges leaving `node`, as a range of edge ids.
    #[inline]
    pub fn out_edges(&self, node: NodeId) -> std::ops::Range<EdgeId> {
        self.offsets[node as usize]..self.offsets[node as usize + 1]
    }

    /// Edges entering `node`.
    #[inline]
    pub fn in_edges(&self, node: NodeId) -> &[EdgeId] {
        let start = self.reverse_offsets[node as usize] as usize;
        let end = self.reverse_offsets[node as usize + 1] as usize;
        &self.reverse[start..end]
    }

    /// Every currency that appears on a node.
    pub fn currencies(&self) -> Vec<Currency> {
        let mut currencies: Vec<Currency> = self.nodes.iter().map(|node| node.currency).collect();
        currencies.sort();
        currencies.dedup();
        currencies
    }

    /// The snapshot as a petgraph graph (node weights are "CUR@location", edge weights are edge ids),
    /// for DOT output and for baselines.
    pub fn to_petgraph(&self) -> petgraph::graph::DiGraph<String, EdgeId> {
        let mut graph = petgraph::graph::DiGraph::with_capacity(self.nodes.len(), self.edges.len());
        for node in &self.nodes {
            graph.add_node(node.to_string());
        }
        for (id, edge) in self.edges.iter().enumerate() {
            graph.add_edge(
                petgraph::graph::NodeIndex::new(edge.from as usize),
                petgraph::graph::NodeIndex::new(edge.to as usize),
                id as EdgeId,
            );
        }
        graph
    }
}
