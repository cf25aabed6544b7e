//! The router: one immutable snapshot (graph, valuation, thresholds, treasury settings) and the
//! per-payment operations on it — best route and alternatives, explanation of a missing route, and
//! multi-path split.
//!
//! Score. Every route is scored in its source currency, in units of 10^-12 of the source minor unit:
//! `cost_weight x (sent - value of delivered at mid) + latency_weight x seconds + risk_weight x
//! (−ln success)`. Money cost telescopes over the legs (each leg's loss at mid), latency and risk add
//! per leg, so the score of a route is the sum of its legs' scores: the search is exact for it. Two
//! places round: each currency's mid value per minor unit is rounded to an integer number of score
//! units (relative error below 10^-9 for any pair of ECB currencies), and −ln p is kept in
//! millionths. Routes whose scores differ by less than that are ranked by those rounded values.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use railyard_config::{Availability, CorridorAction, CorridorRule, RoutingSettings};
use railyard_core::{Country, Currency, Decimal, Money, RoundingMode};
use serde::Serialize;

use crate::graph::{EdgeId, Graph, NO_ACCOUNT, NodeId, OperatorKind};
use crate::search::{Block, Found, Mode, Prices, Search, Start, Thresholds};

/// Where payouts start and end in graphs built from the treasury configuration.
pub const LEDGER: &str = "ledger";
pub const BENEFICIARY: &str = "beneficiary";

/// Score units per minor unit of the source currency.
const SCORE_PER_MINOR: i64 = 1_000_000_000_000;

/// Amounts above this many minor units are refused: above it, `amount x rate` no longer fits
/// rust_decimal's 28 digits exactly and the decimal recomputation could not confirm the search.
pub const AMOUNT_MAX_MINOR: i64 = railyard_core::Rate::EXACT_AMOUNT_MAX_MINOR;

/// Alternatives returned at most per request: each costs up to `max_hops` extra searches.
pub const ALTERNATIVES_MAX: usize = 10;

/// Parts a payment may be split into at most.
pub const SPLIT_PARTS_MAX: usize = 8;

/// A request for a route.
#[derive(Debug, Clone)]
pub struct RouteRequest {
    pub source: Currency,
    pub destination: Currency,
    /// In `source` when sending, in `destination` when delivering.
    pub amount: Money,
    pub mode: Mode,
    pub at: DateTime<Utc>,
    pub country: Option<Country>,
    pub alternatives: usize,
    pub source_location: String,
    pub destination_location: String,
    /// Rails this request must not use, each with the reason an explanation gives for it (one
    /// that cannot credit the beneficiary's kind of account, one that refused this payout before).
    pub avoid: Vec<(String, String)>,
}

impl RouteRequest {
    /// A request between the ledger and a beneficiary, as the API and the CLI make it.
    pub fn payout(
        source: Currency,
        destination: Currency,
        amount: Money,
        mode: Mode,
        at: DateTime<Utc>,
    ) -> RouteRequest {
        RouteRequest {
            source,
            destination,
            amount,
            mode,
            at,
            country: None,
            alternatives: 0,
            source_location: LEDGER.to_string(),
            destination_location: BENEFICIARY.to_string(),
            avoid: Vec::new(),
        }
    }
}

/// One leg of a route, as shown to treasurers and PSPs.
#[derive(Debug, Clone, Serialize)]
pub struct Leg {
    /// The rail or FX provider that operates the leg.
    pub rail: String,
    /// "rail" or "fx".
    pub kind: &'static str,
    pub from: Currency,
    pub to: Currency,
    pub from_node: String,
    pub to_node: String,
    pub send: Money,
    pub receive: Money,
    /// In `from`.
    pub fee: Money,
    /// Units of `to` per unit of `from`, when the leg converts.
    pub rate: Option<Decimal>,
    pub latency_ms: u32,
    pub success_probability: Decimal,
    #[serde(skip)]
    pub edge: EdgeId,
}

/// A complete route.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    pub legs: Vec<Leg>,
    pub send: Money,
    pub receive: Money,
    /// What the route costs at mid, in the source currency: sent minus the mid value of delivered.
    pub cost: Money,
    pub latency_ms: u64,
    pub success_probability: Decimal,
    /// The objective, in source-currency units (lower is better).
    pub score: Decimal,
    /// For alternatives: why this route lost to the best one.
    pub why_not_best: Option<String>,
    #[serde(skip)]
    pub score_units: i128,
}

/// The answer to a route request.
#[derive(Debug, Clone, Serialize)]
pub struct RouteSet {
    pub routes: Vec<Route>,
    /// False when a search bound was reached and a better route may exist.
    pub exact: bool,
}

/// A leg that could not be used, and why.
#[derive(Debug, Clone, Serialize)]
pub struct BlockedLeg {
    pub rail: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RouteError {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("corridor {source_currency} → {destination} is closed: {reason}")]
    CorridorDenied { source_currency: Currency, destination: Currency, reason: String },
    #[error("no route from {from} to {to}{}", describe_blocked(.blocked))]
    NoRoute { from: String, to: String, blocked: Vec<BlockedLeg> },
    #[error("no route: {0}")]
    Unreachable(String),
    #[error("no split of at most {SPLIT_PARTS_MAX} parts carries {amount}: {reason}")]
    SplitLimit { amount: Money, reason: String },
    #[error("the route's total cost {cost} is above the treasury's limit of {limit_bps} bps")]
    FeeLimit { cost: Money, limit_bps: Decimal },
    #[error("recomputing the route in decimals gave {decimal}, the search gave {search} (leg {leg}): refusing it")]
    Recompute { leg: usize, search: String, decimal: String },
}

fn describe_blocked(blocked: &[BlockedLeg]) -> String {
    if blocked.is_empty() {
        return String::new();
    }
    let lines: Vec<String> =
        blocked.iter().map(|b| format!("\n  {} {} → {}: {}", b.rail, b.from, b.to, b.reason)).collect();
    format!(":{}", lines.join(""))
}

/// A payment split over several routes.
#[derive(Debug, Clone, Serialize)]
pub struct Split {
    pub parts: Vec<Route>,
    pub send: Money,
    pub receive: Money,
    /// True when no split into fewer parts can exist (the count meets a capacity lower bound).
    pub minimal: bool,
}

/// The immutable routing snapshot.
#[derive(Debug, Clone)]
pub struct Router {
    graph: Graph,
    thresholds: Thresholds,
    settings: RoutingSettings,
    corridors: Vec<CorridorRule>,
    currencies: Vec<Currency>,
    currency_of: Vec<u16>,
    per_eur: Vec<Decimal>,
    /// Prices for each possible source currency, indexed like `currencies`.
    prices: Vec<Prices>,
}

/// The result of walking a given path with a given amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathEvaluation {
    /// Per leg: (send, fee, receive).
    pub amounts: Vec<(i64, i64, i64)>,
    pub score: i128,
}

impl Router {
    /// Builds a snapshot. `per_eur` gives units of each currency per EUR (mid), for every currency
    /// that appears in the graph and for the reference currency.
    pub fn new(
        graph: Graph,
        per_eur: &HashMap<Currency, Decimal>,
        settings: RoutingSettings,
        corridors: Vec<CorridorRule>,
    ) -> Result<Router, RouteError> {
        let mut currencies = graph.currencies();
        if !currencies.contains(&settings.reference_currency) {
            currencies.push(settings.reference_currency);
        }
        let mut values = Vec::with_capacity(currencies.len());
        for currency in &currencies {
            let value = per_eur
                .get(currency)
                .copied()
                .or_else(|| (currency.code() == "EUR").then_some(Decimal::ONE))
                .filter(|value| *value > Decimal::ZERO)
                .ok_or_else(|| RouteError::Invalid(format!("no mid rate for {currency}, which the graph uses")))?;
            values.push(value);
        }
        let currency_of = (0..graph.node_count())
            .map(|node| {
                currencies.iter().position(|c| *c == graph.node_key(node as NodeId).currency).unwrap_or(0) as u16
            })
            .collect();
        let reference = currencies.iter().position(|c| *c == settings.reference_currency).unwrap_or(0);
        let prices = (0..currencies.len())
            .map(|source| prices_for(source, reference, &currencies, &values, &settings))
            .collect::<Result<Vec<_>, _>>()?;
        let thresholds = Thresholds::compute(&graph, graph.account_available(), settings.max_hops);
        Ok(Router { graph, thresholds, settings, corridors, currencies, currency_of, per_eur: values, prices })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn settings(&self) -> &RoutingSettings {
        &self.settings
    }

    fn currency_index(&self, currency: Currency) -> Option<usize> {
        self.currencies.iter().position(|c| *c == currency)
    }

    /// The mid rate between two currencies of the snapshot (units of `quote` per unit of `base`).
    pub fn mid(&self, base: Currency, quote: Currency) -> Option<Decimal> {
        let base = self.per_eur[self.currency_index(base)?];
        let quote = self.per_eur[self.currency_index(quote)?];
        quote.checked_div(base)
    }

    /// Which operators may carry this payment, and for those that may not, why.
    pub fn operators_for(&self, request: &RouteRequest) -> Result<(Vec<bool>, Vec<Option<String>>), RouteError> {
        let matches = |rule: &&CorridorRule| {
            rule.source.matches(request.source)
                && rule.destination.matches(request.destination)
                && rule.country.is_none_or(|country| request.country == Some(country))
        };
        // A matching deny rule always wins, wherever it is in the file: adding a restrict rule must
        // never switch a sanctions rule off. Otherwise the first matching restrict rule applies.
        if let Some(rule) = self.corridors.iter().filter(matches).find(|rule| rule.action == CorridorAction::Deny) {
            return Err(RouteError::CorridorDenied {
                source_currency: request.source,
                destination: request.destination,
                reason: rule.reason.clone(),
            });
        }
        let rule =
            self.corridors.iter().filter(matches).find(|rule| matches!(rule.action, CorridorAction::RestrictRails(_)));
        let allowed_rails: Option<&[railyard_config::Identifier]> = match rule.map(|rule| &rule.action) {
            Some(CorridorAction::RestrictRails(rails)) => Some(rails),
            _ => None,
        };
        let mut ok = Vec::with_capacity(self.graph.operators().len());
        let mut why = Vec::with_capacity(self.graph.operators().len());
        for operator in self.graph.operators() {
            let reason = if let Some((_, why)) = request.avoid.iter().find(|(rail, _)| *rail == operator.id) {
                Some(why.clone())
            } else if !operator.available {
                Some("unavailable (outage or kill switch)".to_string())
            } else if let Availability::Closed { reason } = operator.hours.availability(request.at) {
                Some(format!("closed: {reason}"))
            } else if matches!(operator.kind, OperatorKind::Rail(_))
                && let Some(country) = request.country
                && !operator.countries.is_empty()
                && !operator.countries.contains(&country)
            {
                Some(format!("does not serve {country}"))
            } else if matches!(operator.kind, OperatorKind::Rail(_))
                && let Some(rails) = allowed_rails
                && !rails.iter().any(|rail| rail.as_str() == operator.id)
            {
                Some(format!("not allowed on this corridor: {}", rule.map(|r| r.reason.as_str()).unwrap_or("")))
            } else {
                None
            };
            ok.push(reason.is_none());
            why.push(reason);
        }
        Ok((ok, why))
    }

    fn endpoints(&self, request: &RouteRequest) -> Result<(NodeId, NodeId), RouteError> {
        let source = self.graph.find_node(request.source, &request.source_location).ok_or_else(|| {
            RouteError::Unreachable(format!(
                "no rail or FX provider takes {} at {}",
                request.source, request.source_location
            ))
        })?;
        let goal = self.graph.find_node(request.destination, &request.destination_location).ok_or_else(|| {
            RouteError::Unreachable(format!(
                "nothing delivers {} to {}",
                request.destination, request.destination_location
            ))
        })?;
        Ok((source, goal))
    }

    fn check_request(&self, request: &RouteRequest) -> Result<(), RouteError> {
        let expected = match request.mode {
            Mode::Send => request.source,
            Mode::Deliver => request.destination,
        };
        if request.amount.currency() != expected {
            return Err(RouteError::Invalid(format!(
                "the amount must be in {expected} when it is what is {}",
                if request.mode == Mode::Send { "sent" } else { "delivered" }
            )));
        }
        if !request.amount.is_positive() {
            return Err(RouteError::Invalid("the amount must be greater than zero".into()));
        }
        if request.amount.minor_units() > AMOUNT_MAX_MINOR {
            return Err(RouteError::Invalid(format!("the amount is above {AMOUNT_MAX_MINOR} minor units")));
        }
        if request.alternatives > ALTERNATIVES_MAX {
            return Err(RouteError::Invalid(format!("at most {ALTERNATIVES_MAX} alternatives")));
        }
        Ok(())
    }

    /// The best route and up to `request.alternatives` others, each recomputed in decimals.
    pub fn route(&self, request: &RouteRequest) -> Result<RouteSet, RouteError> {
        SEARCH.with(|search| self.route_with(&mut search.borrow_mut(), request, self.graph.account_available()))
    }

    fn route_with(
        &self,
        search: &mut Search,
        request: &RouteRequest,
        accounts: &[i64],
    ) -> Result<RouteSet, RouteError> {
        self.check_request(request)?;
        let (source, goal) = self.endpoints(request)?;
        let (operator_ok, operator_why) = self.operators_for(request)?;
        let context = self.context(request, source, goal, &operator_ok, accounts)?;
        let Some(best) =
            self.search_from(search, &context, context.start_node, request.amount.minor_units(), 0, 0, &[], &[], false)
        else {
            return Err(self.explain(search, &context, request, &operator_why));
        };
        let mut exact = best.exact;
        let mut found = vec![best];
        if request.alternatives > 0 {
            let others = self.alternatives(search, &context, &found[0], request.alternatives);
            exact &= others.iter().all(|other| other.exact);
            found.extend(others);
        }
        let mut routes = Vec::with_capacity(found.len());
        for path in &found {
            routes.push(self.describe(request, path)?);
        }
        let best_route = routes[0].clone();
        self.check_fee_limit(request, &best_route)?;
        for route in routes.iter_mut().skip(1) {
            route.why_not_best = Some(why_not_best(&best_route, route));
        }
        Ok(RouteSet { routes, exact })
    }

    fn check_fee_limit(&self, request: &RouteRequest, route: &Route) -> Result<(), RouteError> {
        let Some(limit_bps) = self.settings.max_total_fee_bps else {
            return Ok(());
        };
        let limit = route.send.to_decimal() * limit_bps / Decimal::from(10_000);
        if route.cost.to_decimal() > limit {
            let _ = request;
            return Err(RouteError::FeeLimit { cost: route.cost, limit_bps });
        }
        Ok(())
    }

    fn context<'a>(
        &'a self,
        request: &RouteRequest,
        source: NodeId,
        goal: NodeId,
        operator_ok: &'a [bool],
        accounts: &'a [i64],
    ) -> Result<Context<'a>, RouteError> {
        let source_index = self
            .currency_index(request.source)
            .ok_or_else(|| RouteError::Invalid(format!("{} is not in the graph", request.source)))?;
        let mut prices = self.prices[source_index].clone();
        let amount = i128::from(request.amount.minor_units());
        let (start_node, goal_node) = match request.mode {
            Mode::Send => (source, goal),
            Mode::Deliver => (goal, source),
        };
        let anchor = amount * prices.value[self.currency_of[start_node as usize] as usize];
        // Derived rates carry 12 significant digits, so a leg may also gain up to 10^-11 of the amount.
        prices.slack_per_hop += anchor / 100_000_000_000 + 1;
        Ok(Context { mode: request.mode, start_node, goal_node, anchor, prices, operator_ok, accounts })
    }

    #[allow(clippy::too_many_arguments)]
    fn search_from(
        &self,
        search: &mut Search,
        context: &Context<'_>,
        node: NodeId,
        amount: i64,
        w: i128,
        hops: u32,
        excluded_edges: &[EdgeId],
        excluded_nodes: &[NodeId],
        explain: bool,
    ) -> Option<Found> {
        let start = Start {
            mode: context.mode,
            node,
            goal: context.goal_node,
            amount,
            w,
            hops,
            max_hops: self.settings.max_hops,
            anchor: context.anchor,
            operator_ok: context.operator_ok,
            accounts: context.accounts,
            excluded_edges,
            excluded_nodes,
            explain,
        };
        search.run(&self.graph, &self.thresholds, &self.currency_of, &context.prices, &start)
    }

    fn explain(
        &self,
        search: &mut Search,
        context: &Context<'_>,
        request: &RouteRequest,
        operator_why: &[Option<String>],
    ) -> RouteError {
        let _ =
            self.search_from(search, context, context.start_node, request.amount.minor_units(), 0, 0, &[], &[], true);
        let relevant = self.within_reach(context);
        let mut blocked = Vec::new();
        for (id, reason) in search.blocked.iter().enumerate() {
            let Some(reason) = reason else {
                continue;
            };
            let edge = self.graph.edge(id as EdgeId);
            let head = if context.mode == Mode::Send { edge.to } else { edge.from };
            if !relevant[head as usize] {
                continue;
            }
            let operator = self.graph.operator(edge.operator);
            let spec = self.graph.spec(id as EdgeId);
            let text = match reason {
                Block::OperatorClosed { .. } => {
                    operator_why[edge.operator as usize].clone().unwrap_or_else(|| "unavailable".into())
                }
                Block::BelowMinimum { amount, minimum } => format!(
                    "{} is below the minimum {}",
                    Money::from_minor(*amount, spec.from.currency),
                    Money::from_minor(*minimum, spec.from.currency)
                ),
                Block::AboveMaximum { amount, maximum } => format!(
                    "{} is above the per-payment maximum {}",
                    Money::from_minor(*amount, spec.from.currency),
                    Money::from_minor(*maximum, spec.from.currency)
                ),
                Block::DailyCap { amount, remaining } => format!(
                    "{} is above what the daily cap leaves ({})",
                    Money::from_minor(*amount, spec.from.currency),
                    Money::from_minor(*remaining, spec.from.currency)
                ),
                Block::Liquidity { amount, available } => format!(
                    "needs {} of liquidity, {} is available",
                    Money::from_minor(*amount, spec.to.currency),
                    Money::from_minor(*available, spec.to.currency)
                ),
                Block::FeeExceedsAmount { amount } => {
                    format!("the fee on {} leaves nothing to forward", Money::from_minor(*amount, spec.from.currency))
                }
                Block::Overflow => "the amounts overflow".into(),
            };
            blocked.push(BlockedLeg {
                rail: operator.id.clone(),
                from: spec.from.to_string(),
                to: spec.to.to_string(),
                reason: text,
            });
        }
        if blocked.is_empty() {
            return RouteError::Unreachable(format!(
                "no path of at most {} legs joins {}@{} to {}@{}",
                self.settings.max_hops,
                request.source,
                request.source_location,
                request.destination,
                request.destination_location
            ));
        }
        RouteError::NoRoute {
            from: format!("{}@{}", request.source, request.source_location),
            to: format!("{}@{}", request.destination, request.destination_location),
            blocked,
        }
    }

    /// Nodes from which the goal can be reached in the search direction within the hop limit: only legs
    /// into those nodes are worth explaining.
    fn within_reach(&self, context: &Context<'_>) -> Vec<bool> {
        let mut reach = vec![false; self.graph.node_count()];
        reach[context.goal_node as usize] = true;
        let mut frontier = vec![context.goal_node];
        for _ in 0..self.settings.max_hops {
            let mut next = Vec::new();
            for node in frontier {
                let tails: Vec<NodeId> = match context.mode {
                    Mode::Send => self.graph.in_edges(node).iter().map(|&edge| self.graph.edge(edge).from).collect(),
                    Mode::Deliver => self.graph.out_edges(node).map(|edge| self.graph.edge(edge).to).collect(),
                };
                for tail in tails {
                    if !reach[tail as usize] {
                        reach[tail as usize] = true;
                        next.push(tail);
                    }
                }
            }
            frontier = next;
        }
        reach
    }

    /// Yen's k-shortest simple paths, with the label search as the spur search.
    fn alternatives(&self, search: &mut Search, context: &Context<'_>, best: &Found, count: usize) -> Vec<Found> {
        let mut accepted: Vec<Found> = vec![best.clone()];
        let mut candidates: Vec<Found> = Vec::new();
        while accepted.len() <= count {
            let previous = accepted[accepted.len() - 1].clone();
            let order = search_order(&previous.edges, context.mode);
            for spur in 0..order.len() {
                let root = &order[..spur];
                let (spur_node, amount) = self.position_after(context, root, &previous);
                let w: i128 = root.iter().map(|&edge| self.edge_w(context, edge)).sum();
                let mut excluded_edges: Vec<EdgeId> = Vec::new();
                for path in accepted.iter().chain(candidates.iter()) {
                    let path_order = search_order(&path.edges, context.mode);
                    if path_order.len() > spur && path_order[..spur] == *root {
                        excluded_edges.push(path_order[spur]);
                    }
                }
                let excluded_nodes: Vec<NodeId> = root.iter().map(|&edge| self.search_tail(context, edge)).collect();
                let Some(spur_path) = self.search_from(
                    search,
                    context,
                    spur_node,
                    amount,
                    w,
                    spur as u32,
                    &excluded_edges,
                    &excluded_nodes,
                    false,
                ) else {
                    continue;
                };
                let mut full_order: Vec<EdgeId> = root.to_vec();
                full_order.extend(search_order(&spur_path.edges, context.mode));
                let edges = route_order(&full_order, context.mode);
                if accepted.iter().chain(candidates.iter()).any(|path| path.edges == edges) {
                    continue;
                }
                if let Ok(evaluation) = self.evaluate_path(
                    &edges,
                    context.mode,
                    if context.mode == Mode::Send {
                        previous.amounts[0].0
                    } else {
                        previous.amounts[previous.amounts.len() - 1].2
                    },
                    context,
                ) {
                    candidates.push(Found {
                        edges,
                        amounts: evaluation.amounts,
                        score: evaluation.score,
                        exact: spur_path.exact,
                    });
                }
            }
            if candidates.is_empty() {
                break;
            }
            let position = candidates
                .iter()
                .enumerate()
                .min_by(|(_, a), (_, b)| a.score.cmp(&b.score).then_with(|| a.edges.len().cmp(&b.edges.len())))
                .map(|(position, _)| position)
                .unwrap_or(0);
            accepted.push(candidates.swap_remove(position));
        }
        accepted.remove(0);
        accepted.truncate(count);
        accepted
    }

    /// The node where a spur search starts after `root` (in search order), and the amount there.
    fn position_after(&self, context: &Context<'_>, root: &[EdgeId], path: &Found) -> (NodeId, i64) {
        match root.last() {
            None => {
                let amount = match context.mode {
                    Mode::Send => path.amounts[0].0,
                    Mode::Deliver => path.amounts[path.amounts.len() - 1].2,
                };
                (context.start_node, amount)
            }
            Some(&edge) => {
                let position = path.edges.iter().position(|&e| e == edge).unwrap_or(0);
                let (send, _, receive) = path.amounts[position];
                match context.mode {
                    Mode::Send => (self.graph.edge(edge).to, receive),
                    Mode::Deliver => (self.graph.edge(edge).from, send),
                }
            }
        }
    }

    /// The node an edge leaves from, in search order.
    fn search_tail(&self, context: &Context<'_>, edge: EdgeId) -> NodeId {
        match context.mode {
            Mode::Send => self.graph.edge(edge).from,
            Mode::Deliver => self.graph.edge(edge).to,
        }
    }

    fn edge_w(&self, context: &Context<'_>, edge: EdgeId) -> i128 {
        let edge = self.graph.edge(edge);
        i128::from(edge.latency_ms) * context.prices.latency_per_ms
            + i128::from(edge.risk) * context.prices.risk_per_unit
    }

    /// Walks `edges` (route order) with `amount` (sent in send mode, delivered in deliver mode),
    /// checking every limit, hours and liquidity; accounts used twice are charged for both legs.
    fn evaluate_path(
        &self,
        edges: &[EdgeId],
        mode: Mode,
        amount: i64,
        context: &Context<'_>,
    ) -> Result<PathEvaluation, (usize, Block)> {
        let mut used: HashMap<u32, i64> = HashMap::new();
        let mut amounts = vec![(0_i64, 0_i64, 0_i64); edges.len()];
        let available = |account: u32, used: &HashMap<u32, i64>| -> i64 {
            context.accounts[account as usize] - used.get(&account).copied().unwrap_or(0)
        };
        let check =
            |position: usize, send: i64, receive: i64, used: &mut HashMap<u32, i64>| -> Result<(), (usize, Block)> {
                let edge = self.graph.edge(edges[position]);
                if !context.operator_ok[edge.operator as usize] {
                    return Err((position, Block::OperatorClosed { detail: String::new() }));
                }
                if send < edge.send_minimum {
                    return Err((position, Block::BelowMinimum { amount: send, minimum: edge.send_minimum }));
                }
                if send > edge.send_maximum {
                    return Err((position, Block::AboveMaximum { amount: send, maximum: edge.send_maximum }));
                }
                if edge.send_account != NO_ACCOUNT {
                    let remaining = available(edge.send_account, used);
                    if send > remaining {
                        return Err((position, Block::DailyCap { amount: send, remaining }));
                    }
                    *used.entry(edge.send_account).or_default() += send;
                }
                if edge.receive_account != NO_ACCOUNT {
                    let remaining = available(edge.receive_account, used);
                    if receive > remaining {
                        return Err((position, Block::Liquidity { amount: receive, available: remaining }));
                    }
                    *used.entry(edge.receive_account).or_default() += receive;
                }
                Ok(())
            };
        match mode {
            Mode::Send => {
                let mut carried = amount;
                for (position, &edge_id) in edges.iter().enumerate() {
                    let edge = self.graph.edge(edge_id);
                    let (fee, receive) =
                        edge.leg.forward(carried).ok_or((position, Block::FeeExceedsAmount { amount: carried }))?;
                    check(position, carried, receive, &mut used)?;
                    amounts[position] = (carried, fee, receive);
                    carried = receive;
                }
            }
            Mode::Deliver => {
                let mut needed = amount;
                for (position, &edge_id) in edges.iter().enumerate().rev() {
                    let edge = self.graph.edge(edge_id);
                    let (send, fee) = edge.leg.backward(needed).ok_or((position, Block::Overflow))?;
                    check(position, send, needed, &mut used)?;
                    amounts[position] = (send, fee, needed);
                    needed = send;
                }
            }
        }
        let w: i128 = edges.iter().map(|&edge| self.edge_w(context, edge)).sum();
        let first = &self.graph.edge(edges[0]);
        let last = &self.graph.edge(edges[edges.len() - 1]);
        let sent_value =
            i128::from(amounts[0].0) * context.prices.value[self.currency_of[first.from as usize] as usize];
        let delivered_value =
            i128::from(amounts[edges.len() - 1].2) * context.prices.value[self.currency_of[last.to as usize] as usize];
        Ok(PathEvaluation { amounts, score: sent_value - delivered_value + w })
    }

    /// Evaluates a path for a request (used by tests that compare the search with an exhaustive one).
    pub fn evaluate(&self, request: &RouteRequest, edges: &[EdgeId]) -> Result<PathEvaluation, RouteError> {
        self.check_request(request)?;
        let (source, goal) = self.endpoints(request)?;
        let (operator_ok, _) = self.operators_for(request)?;
        let context = self.context(request, source, goal, &operator_ok, self.graph.account_available())?;
        if edges.is_empty()
            || self.graph.edge(edges[0]).from != source
            || self.graph.edge(edges[edges.len() - 1]).to != goal
        {
            return Err(RouteError::Invalid("the path does not join the request's endpoints".into()));
        }
        self.evaluate_path(edges, request.mode, request.amount.minor_units(), &context)
            .map_err(|(leg, block)| RouteError::Invalid(format!("leg {leg} is blocked: {block:?}")))
    }

    /// Turns a found path into a [`Route`], recomputing every leg with the decimal implementation.
    fn describe(&self, request: &RouteRequest, found: &Found) -> Result<Route, RouteError> {
        let recomputed = self.recompute(request.mode, &found.edges, &found.amounts)?;
        let mut legs = Vec::with_capacity(found.edges.len());
        let mut latency_ms: u64 = 0;
        let mut success = Decimal::ONE;
        for (position, &edge_id) in found.edges.iter().enumerate() {
            let spec = self.graph.spec(edge_id);
            let edge = self.graph.edge(edge_id);
            let operator = self.graph.operator(edge.operator);
            let (send, fee, receive) = recomputed[position];
            latency_ms += u64::from(spec.latency_ms);
            success = success.checked_mul(spec.success_probability).unwrap_or(Decimal::ZERO);
            legs.push(Leg {
                rail: operator.id.clone(),
                kind: match operator.kind {
                    OperatorKind::Rail(_) => "rail",
                    OperatorKind::FxProvider => "fx",
                },
                from: spec.from.currency,
                to: spec.to.currency,
                from_node: spec.from.to_string(),
                to_node: spec.to.to_string(),
                send,
                receive,
                fee,
                rate: spec.conversion.as_ref().map(|(rate, _)| rate.value()),
                latency_ms: spec.latency_ms,
                success_probability: spec.success_probability,
                edge: edge_id,
            });
        }
        let send = legs[0].send;
        let receive = legs[legs.len() - 1].receive;
        let mid = self.mid(receive.currency(), send.currency()).unwrap_or(Decimal::ONE);
        let receive_at_mid = Money::from_decimal(receive.to_decimal() * mid, send.currency(), RoundingMode::HalfEven)
            .map_err(|error| RouteError::Invalid(error.to_string()))?;
        let cost = send.checked_sub(receive_at_mid).map_err(|error| RouteError::Invalid(error.to_string()))?;
        Ok(Route {
            legs,
            send,
            receive,
            cost,
            latency_ms,
            success_probability: success.round_dp(6),
            score: score_decimal(found.score, send.currency()),
            why_not_best: None,
            score_units: found.score,
        })
    }

    /// Recomputes a path's legs with `railyard_core` (FeeSchedule, Rate) and checks they agree with
    /// the integer search.
    fn recompute(
        &self,
        mode: Mode,
        edges: &[EdgeId],
        amounts: &[(i64, i64, i64)],
    ) -> Result<Vec<(Money, Money, Money)>, RouteError> {
        let mismatch = |leg: usize, search: String, decimal: String| RouteError::Recompute { leg, search, decimal };
        let mut legs = vec![None; edges.len()];
        let leg_forward = |position: usize, send: Money| -> Result<(Money, Money, Money), RouteError> {
            let spec = self.graph.spec(edges[position]);
            let decimal_error = |error: String| mismatch(position, format!("{:?}", amounts[position]), error);
            let fee = spec.fee.fee_for(send).map_err(|e| decimal_error(e.to_string()))?;
            let net = send.checked_sub(fee).map_err(|e| decimal_error(e.to_string()))?;
            let receive = match &spec.conversion {
                Some((rate, rounding)) => rate.convert(net, *rounding).map_err(|e| decimal_error(e.to_string()))?,
                None => net,
            };
            Ok((send, fee, receive))
        };
        let leg_backward = |position: usize, receive: Money| -> Result<(Money, Money, Money), RouteError> {
            let spec = self.graph.spec(edges[position]);
            let decimal_error = |error: String| mismatch(position, format!("{:?}", amounts[position]), error);
            let net = match &spec.conversion {
                Some((rate, rounding)) => {
                    rate.convert_inverse(receive, *rounding).map_err(|e| decimal_error(e.to_string()))?
                }
                None => receive,
            };
            let send = spec.fee.gross_for_net(net).map_err(|e| decimal_error(e.to_string()))?;
            let fee = send.checked_sub(net).map_err(|e| decimal_error(e.to_string()))?;
            Ok((send, fee, receive))
        };
        match mode {
            Mode::Send => {
                let mut carried = Money::from_minor(amounts[0].0, self.graph.spec(edges[0]).from.currency);
                for (position, slot) in legs.iter_mut().enumerate() {
                    let leg = leg_forward(position, carried)?;
                    carried = leg.2;
                    *slot = Some(leg);
                }
            }
            Mode::Deliver => {
                let last = edges.len() - 1;
                let mut needed = Money::from_minor(amounts[last].2, self.graph.spec(edges[last]).to.currency);
                for position in (0..edges.len()).rev() {
                    let leg = leg_backward(position, needed)?;
                    needed = leg.0;
                    legs[position] = Some(leg);
                }
            }
        }
        let legs: Vec<(Money, Money, Money)> = legs.into_iter().flatten().collect();
        for (position, (decimal, search)) in legs.iter().zip(amounts).enumerate() {
            let decimal_minor = (decimal.0.minor_units(), decimal.1.minor_units(), decimal.2.minor_units());
            if decimal_minor != *search {
                debug_assert!(false, "decimal recomputation disagrees: {decimal_minor:?} against {search:?}");
                return Err(mismatch(position, format!("{search:?}"), format!("{decimal_minor:?}")));
            }
        }
        Ok(legs)
    }

    /// Splits a payment that no single route can carry over several routes that together carry it,
    /// sharing daily caps and liquidity between the parts.
    pub fn split(&self, request: &RouteRequest) -> Result<Split, RouteError> {
        SEARCH.with(|search| self.split_with(&mut search.borrow_mut(), request))
    }

    fn split_with(&self, search: &mut Search, request: &RouteRequest) -> Result<Split, RouteError> {
        self.check_request(request)?;
        let (source, goal) = self.endpoints(request)?;
        let (operator_ok, operator_why) = self.operators_for(request)?;
        let mut accounts = self.graph.account_available().to_vec();
        let mut remaining = request.amount.minor_units();
        let mut parts: Vec<Route> = Vec::new();
        let mut first_capacity: Option<i64> = None;
        let total = request.amount.minor_units();
        while remaining > 0 {
            if parts.len() == SPLIT_PARTS_MAX {
                return Err(RouteError::SplitLimit {
                    amount: request.amount,
                    reason: format!(
                        "{} parts carry {} and leave {}",
                        parts.len(),
                        Money::from_minor(total - remaining, request.amount.currency()),
                        Money::from_minor(remaining, request.amount.currency())
                    ),
                });
            }
            let mut part_request = request.clone();
            part_request.alternatives = 0;
            part_request.amount = Money::from_minor(remaining, request.amount.currency());
            let context = self.context(&part_request, source, goal, &operator_ok, &accounts)?;
            if let Some(found) =
                self.search_from(search, &context, context.start_node, remaining, 0, 0, &[], &[], false)
            {
                parts.push(self.describe(&part_request, &found)?);
                take(&self.graph, &found, &mut accounts);
                break;
            }
            // No single route carries the rest: take the widest path and as much as it carries.
            let Some(widest) = self.widest_path(&context) else {
                if parts.is_empty() {
                    return Err(self.explain(search, &context, &part_request, &operator_why));
                }
                return Err(RouteError::SplitLimit {
                    amount: request.amount,
                    reason: format!(
                        "after {} part(s), {} is left and no route has capacity for any of it",
                        parts.len(),
                        Money::from_minor(remaining, request.amount.currency())
                    ),
                });
            };
            let capacity = self.capacity(&widest, request.mode, remaining, &context);
            if capacity == 0 {
                return Err(self.explain(search, &context, &part_request, &operator_why));
            }
            first_capacity.get_or_insert(capacity);
            // The best route for exactly that amount is at least as good as the widest path.
            part_request.amount = Money::from_minor(capacity, request.amount.currency());
            let found = self
                .search_from(search, &context, context.start_node, capacity, 0, 0, &[], &[], false)
                .or_else(|| {
                    let evaluation = self.evaluate_path(&widest, request.mode, capacity, &context).ok()?;
                    Some(Found {
                        edges: widest.clone(),
                        amounts: evaluation.amounts,
                        score: evaluation.score,
                        exact: false,
                    })
                })
                .ok_or_else(|| RouteError::Invalid("the widest path stopped carrying its capacity".into()))?;
            parts.push(self.describe(&part_request, &found)?);
            take(&self.graph, &found, &mut accounts);
            remaining -= capacity;
        }
        let send = sum(parts.iter().map(|part| part.send))?;
        let receive = sum(parts.iter().map(|part| part.receive))?;
        let fixed = if request.mode == Mode::Send { send } else { receive };
        if fixed != request.amount {
            return Err(RouteError::Invalid(format!("the parts add up to {fixed}, not {}", request.amount)));
        }
        let minimal = match first_capacity {
            None => true,
            // No route carries more than the widest capacity found first, so fewer parts cannot work.
            Some(capacity) => parts.len() as i64 <= (total + capacity - 1) / capacity,
        };
        Ok(Split { parts, send, receive, minimal })
    }

    /// The path whose tightest leg, valued at mid, is widest (at most `max_hops` legs), ignoring the
    /// objective: a per-hop dynamic programme over the edges.
    fn widest_path(&self, context: &Context<'_>) -> Option<Vec<EdgeId>> {
        let nodes = self.graph.node_count();
        let value = |node: NodeId| context.prices.value[self.currency_of[node as usize] as usize].max(1);
        let mut width = vec![i128::MIN; nodes];
        let mut slot = vec![u32::MAX; nodes];
        let mut via: Vec<Vec<(NodeId, EdgeId)>> = Vec::new();
        width[context.start_node as usize] = i128::MAX;
        // Layer by layer, relaxing only the legs out of nodes the previous layer widened.
        let mut frontier = vec![context.start_node];
        for _ in 0..self.settings.max_hops {
            let mut improved: Vec<(NodeId, EdgeId, i128)> = Vec::new();
            for &tail in &frontier {
                let legs: Vec<EdgeId> = match context.mode {
                    Mode::Send => self.graph.out_edges(tail).collect(),
                    Mode::Deliver => self.graph.in_edges(tail).to_vec(),
                };
                for id in legs {
                    let edge = self.graph.edge(id);
                    if !context.operator_ok[edge.operator as usize] {
                        continue;
                    }
                    let head = if context.mode == Mode::Send { edge.to } else { edge.from };
                    let mut send_cap = edge.send_maximum;
                    if edge.send_account != NO_ACCOUNT {
                        send_cap = send_cap.min(context.accounts[edge.send_account as usize]);
                    }
                    let mut capacity = i128::from(send_cap).saturating_mul(value(edge.from));
                    if edge.receive_account != NO_ACCOUNT {
                        capacity =
                            capacity.min(i128::from(context.accounts[edge.receive_account as usize]) * value(edge.to));
                    }
                    let candidate = width[tail as usize].min(capacity);
                    if candidate > 0 && candidate > width[head as usize] {
                        improved.push((head, id, candidate));
                    }
                }
            }
            // Apply after the layer so that each layer adds exactly one leg; keep the widest candidate
            // per node (`slot` indexes into `step`).
            let mut step: Vec<(NodeId, EdgeId, i128)> = Vec::with_capacity(improved.len());
            for (head, id, candidate) in improved {
                match slot[head as usize] {
                    u32::MAX => {
                        slot[head as usize] = step.len() as u32;
                        step.push((head, id, candidate));
                    }
                    position if candidate > step[position as usize].2 => {
                        step[position as usize] = (head, id, candidate)
                    }
                    _ => {}
                }
            }
            frontier.clear();
            for &(head, _, candidate) in &step {
                slot[head as usize] = u32::MAX;
                width[head as usize] = width[head as usize].max(candidate);
                frontier.push(head);
            }
            let mut layer: Vec<(NodeId, EdgeId)> = step.into_iter().map(|(head, id, _)| (head, id)).collect();
            layer.sort_unstable_by_key(|&(head, _)| head);
            via.push(layer);
            if frontier.is_empty() {
                break;
            }
        }
        if width[context.goal_node as usize] <= 0 {
            return None;
        }
        // Walk back through the layers: the last layer that improved a node says how it was reached.
        let mut path = Vec::new();
        let mut node = context.goal_node;
        let mut layer = via.len();
        while node != context.start_node && layer > 0 {
            layer -= 1;
            if let Ok(position) = via[layer].binary_search_by_key(&node, |&(head, _)| head) {
                let edge = via[layer][position].1;
                path.push(edge);
                node = match context.mode {
                    Mode::Send => self.graph.edge(edge).from,
                    Mode::Deliver => self.graph.edge(edge).to,
                };
            }
        }
        if node != context.start_node || path.is_empty() {
            return None;
        }
        // `path` was collected from the goal back to the start: put it in search order first.
        path.reverse();
        Some(route_order(&path, context.mode))
    }

    /// The largest amount (at most `limit`) the path carries, found by bisection: carrying less never
    /// breaks a maximum, and the smallest feasible amount is found first.
    fn capacity(&self, path: &[EdgeId], mode: Mode, limit: i64, context: &Context<'_>) -> i64 {
        let carries = |amount: i64| self.evaluate_path(path, mode, amount, context).is_ok();
        if carries(limit) {
            return limit;
        }
        // Find some amount that works, starting from small ones (minimums), then bisect upwards.
        let mut low = 0;
        let mut probe = 1;
        while probe < limit {
            if carries(probe) {
                low = probe;
                break;
            }
            probe = probe.saturating_mul(4);
        }
        if low == 0 {
            return 0;
        }
        let mut high = limit;
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if carries(middle) {
                low = middle;
            } else {
                high = middle;
            }
        }
        low
    }
}

impl Router {
    /// The graph in Graphviz DOT, with `highlight` (edge ids) drawn bold red.
    pub fn to_dot(&self, highlight: &[EdgeId]) -> String {
        let mut dot = String::from("digraph railyard {\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n");
        for node in 0..self.graph.node_count() {
            let key = self.graph.node_key(node as NodeId);
            dot.push_str(&format!("  n{node} [label=\"{key}\"];\n"));
        }
        for (id, edge) in self.graph.edges().iter().enumerate() {
            let operator = self.graph.operator(edge.operator);
            let spec = self.graph.spec(id as EdgeId);
            let mut label = operator.id.clone();
            if let Some((rate, _)) = &spec.conversion {
                label.push_str(&format!("\\n@ {}", rate.value()));
            }
            if !spec.fee.fixed().is_zero() || !spec.fee.bps().is_zero() {
                label.push_str(&format!("\\nfee {} + {} bps", spec.fee.fixed(), spec.fee.bps()));
            }
            let style = if highlight.contains(&(id as EdgeId)) {
                ", color=red, penwidth=3, fontcolor=red"
            } else if !operator.available {
                ", color=gray, style=dashed"
            } else {
                ""
            };
            dot.push_str(&format!("  n{} -> n{} [label=\"{label}\"{style}];\n", edge.from, edge.to));
        }
        dot.push_str("}\n");
        dot
    }
}

thread_local! {
    static SEARCH: std::cell::RefCell<Search> = std::cell::RefCell::new(Search::new());
}

/// What stays fixed during one request's searches.
struct Context<'a> {
    mode: Mode,
    start_node: NodeId,
    goal_node: NodeId,
    anchor: i128,
    prices: Prices,
    operator_ok: &'a [bool],
    accounts: &'a [i64],
}

fn search_order(edges: &[EdgeId], mode: Mode) -> Vec<EdgeId> {
    match mode {
        Mode::Send => edges.to_vec(),
        Mode::Deliver => edges.iter().rev().copied().collect(),
    }
}

fn route_order(edges: &[EdgeId], mode: Mode) -> Vec<EdgeId> {
    search_order(edges, mode)
}

fn take(graph: &Graph, found: &Found, accounts: &mut [i64]) {
    for (&edge_id, &(send, _, receive)) in found.edges.iter().zip(&found.amounts) {
        let edge = graph.edge(edge_id);
        if edge.send_account != NO_ACCOUNT {
            accounts[edge.send_account as usize] -= send;
        }
        if edge.receive_account != NO_ACCOUNT {
            accounts[edge.receive_account as usize] -= receive;
        }
    }
}

fn sum(amounts: impl Iterator<Item = Money>) -> Result<Money, RouteError> {
    let mut total: Option<Money> = None;
    for amount in amounts {
        total = Some(match total {
            None => amount,
            Some(total) => total.checked_add(amount).map_err(|error| RouteError::Invalid(error.to_string()))?,
        });
    }
    total.ok_or_else(|| RouteError::Invalid("no parts".into()))
}

fn score_decimal(score: i128, currency: Currency) -> Decimal {
    // score units → minor units (keeping four decimals) → major units.
    let minor = Decimal::from_i128_with_scale(score / (SCORE_PER_MINOR as i128 / 10_000), 4);
    (minor / Decimal::from(10_i64.pow(currency.exponent()))).round_dp(currency.exponent() + 4).normalize()
}

fn prices_for(
    source: usize,
    reference: usize,
    currencies: &[Currency],
    per_eur: &[Decimal],
    settings: &RoutingSettings,
) -> Result<Prices, RouteError> {
    let overflow = || RouteError::Invalid("routing weights are too large".into());
    let source_currency = currencies[source];
    let to_integer = |value: Decimal| -> Result<i128, RouteError> {
        value.round().mantissa().checked_div(10_i128.pow(value.round().scale())).ok_or_else(overflow)
    };
    let scale = Decimal::from(SCORE_PER_MINOR);
    let mut value = Vec::with_capacity(currencies.len());
    let mut unit_max: i128 = 0;
    for (index, currency) in currencies.iter().enumerate() {
        // Source minor units per minor unit of `currency`, at mid.
        let exponent_shift = i64::from(source_currency.exponent()) - i64::from(currency.exponent());
        let ratio = per_eur[source].checked_div(per_eur[index]).ok_or_else(overflow)?;
        let ratio = shift_decimal(ratio, exponent_shift).ok_or_else(overflow)?;
        let unit = to_integer(ratio.checked_mul(scale).ok_or_else(overflow)?)?;
        unit_max = unit_max.max(unit);
        value.push(to_integer(
            ratio.checked_mul(scale).and_then(|v| v.checked_mul(settings.cost_weight)).ok_or_else(overflow)?,
        )?);
    }
    // Reference-currency units → source minor units.
    let reference_to_source = per_eur[source].checked_div(per_eur[reference]).ok_or_else(overflow)?;
    let reference_to_source =
        shift_decimal(reference_to_source, i64::from(source_currency.exponent())).ok_or_else(overflow)?;
    let latency_per_ms =
        to_integer(settings.latency_weight_per_second / Decimal::from(1_000) * reference_to_source * scale)?;
    let risk_per_unit =
        to_integer(settings.risk_weight / Decimal::from(crate::graph::RISK_SCALE) * reference_to_source * scale)?;
    let weight_ceiling = settings.cost_weight.ceil().max(Decimal::ONE);
    let slack_per_hop = unit_max * to_integer(weight_ceiling)? + 1;
    Ok(Prices { value, latency_per_ms, risk_per_unit, slack_per_hop })
}

fn shift_decimal(value: Decimal, exponent: i64) -> Option<Decimal> {
    let factor = Decimal::from(10_i64.checked_pow(u32::try_from(exponent.unsigned_abs()).ok()?)?);
    if exponent >= 0 { value.checked_mul(factor) } else { value.checked_div(factor) }
}

/// Why `other` lost to `best`, in the treasurer's terms.
fn why_not_best(best: &Route, other: &Route) -> String {
    let mut reasons = Vec::new();
    let currency = best.send.currency();
    let cost_difference = other.cost.minor_units() - best.cost.minor_units();
    if cost_difference > 0 {
        reasons.push(format!("costs {} more", Money::from_minor(cost_difference, currency)));
    } else if cost_difference < 0 {
        reasons.push(format!("costs {} less", Money::from_minor(-cost_difference, currency)));
    }
    let latency_difference = other.latency_ms as i64 - best.latency_ms as i64;
    let duration =
        |ms: i64| if ms < 1_000 { format!("{ms} ms") } else { format!("{} s", Decimal::new(ms, 3).round_dp(1)) };
    if latency_difference > 0 {
        reasons.push(format!("{} slower", duration(latency_difference)));
    } else if latency_difference < 0 {
        reasons.push(format!("{} faster", duration(-latency_difference)));
    }
    let percent = |p: Decimal| (p * Decimal::from(100)).round_dp(2);
    if other.success_probability < best.success_probability {
        reasons.push(format!(
            "less likely to succeed ({}% against {}%)",
            percent(other.success_probability),
            percent(best.success_probability)
        ));
    } else if other.success_probability > best.success_probability {
        reasons.push(format!(
            "more likely to succeed ({}% against {}%), not enough to make up for the rest",
            percent(other.success_probability),
            percent(best.success_probability)
        ));
    }
    let score_difference = score_decimal(other.score_units - best.score_units, currency);
    format!(
        "scores {score_difference} {currency} worse: {}",
        if reasons.is_empty() { "equal on every count but rounding".into() } else { reasons.join(", ") }
    )
}

/// The JSON shape of a route that the CLI and the API share: amounts as strings, currencies as codes.
pub fn route_json(route: &Route) -> serde_json::Value {
    let legs: Vec<serde_json::Value> = route
        .legs
        .iter()
        .map(|leg| {
            serde_json::json!({
                "rail": leg.rail,
                "kind": leg.kind,
                "from": leg.from,
                "to": leg.to,
                "send": leg.send.amount_text(),
                "receive": leg.receive.amount_text(),
                "fee": leg.fee.amount_text(),
                "rate": leg.rate.map(|rate| rate.to_string()),
                "latency_ms": leg.latency_ms,
                "success_probability": leg.success_probability.to_string(),
            })
        })
        .collect();
    serde_json::json!({
        "legs": legs,
        "send": route.send.amount_text(),
        "receive": route.receive.amount_text(),
        "send_currency": route.send.currency(),
        "receive_currency": route.receive.currency(),
        "cost": route.cost.amount_text(),
        "latency_ms": route.latency_ms,
        "success_probability": route.success_probability.to_string(),
        "score": route.score.to_string(),
        "why_not_best": route.why_not_best,
    })
}
