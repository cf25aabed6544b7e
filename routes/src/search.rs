//! The label-setting search that finds the best route for one payment.
//!
//! A *label* is a partial route: the node it reached, the amount it holds there, its latency-and-risk
//! score `w`, and its hop count. Labels are expanded in order of `key`, a lower bound on the final
//! score of any route that extends them (up to rounding slack, see [`Search::slack`]).
//!
//! Send mode walks forward from the source with the amount sent; deliver mode walks the reverse edges
//! from the destination with the amount to deliver, each step finding the smallest send that delivers.
//!
//! Dominance. Because fees depend on the amount, the route that is best to a node may not be the best
//! prefix of the best route: a richer label may later hit a maximum or a liquidity limit that a poorer
//! one passes. A label A therefore discards a label B at the same node only when A is at least as good
//! in amount, `w` and hops, *and* A cannot be blocked where B passes: its amount equals B's, or (send
//! mode) it is at most the node's threshold below which no downstream maximum can be reached, or
//! (deliver mode) at least the threshold above which no upstream minimum can be missed. Thresholds are
//! computed per snapshot ([`Thresholds`]). With these rules the search is exact; if a node ever holds
//! more than [`LABELS_PER_NODE_MAX`] labels, the worst is dropped and the result says it is not proven
//! optimal.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::graph::{Edge, EdgeId, Graph, NO_ACCOUNT, NodeId};
use crate::transform::CompiledRate;

/// Labels kept per node. Each costs 64 bytes; the bound keeps a pathological graph from growing the
/// search without limit. Reaching it marks the result as not proven optimal.
pub const LABELS_PER_NODE_MAX: usize = 32;

/// Labels per search, all nodes together: bounds memory per solve (about 16 MB).
pub const LABELS_PER_SEARCH_MAX: usize = 256 * 1024;

/// The direction of a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Send exactly the amount; deliver what the route gives.
    Send,
    /// Deliver exactly the amount; send what the route needs.
    Deliver,
}

/// Why a leg could not carry a label.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Block {
    OperatorClosed { detail: String },
    BelowMinimum { amount: i64, minimum: i64 },
    AboveMaximum { amount: i64, maximum: i64 },
    DailyCap { amount: i64, remaining: i64 },
    Liquidity { amount: i64, available: i64 },
    FeeExceedsAmount { amount: i64 },
    Overflow,
}

/// Prices for one solve, in score units (10^-12 of the source currency's minor unit).
#[derive(Debug, Clone)]
pub struct Prices {
    /// Value of one minor unit of each currency of the graph (indexed by node currency index),
    /// times the cost weight.
    pub value: Vec<i128>,
    /// Score per millisecond of latency.
    pub latency_per_ms: i128,
    /// Score per millionth of risk (−ln p x 10^6).
    pub risk_per_unit: i128,
    /// Upper bound on what one leg's rounding can gain, in score units.
    pub slack_per_hop: i128,
}

/// What a search starts from and what it may use.
pub struct Start<'a> {
    pub mode: Mode,
    /// Where the search starts: the source (send) or the destination (deliver).
    pub node: NodeId,
    /// Where it must end.
    pub goal: NodeId,
    /// The amount at `node`.
    pub amount: i64,
    /// Score already accumulated (Yen's spur searches start mid-route).
    pub w: i128,
    pub hops: u32,
    pub max_hops: u32,
    /// The constant part of the key: `amount x value` of the fixed end (send: what is sent; deliver:
    /// what is delivered).
    pub anchor: i128,
    pub operator_ok: &'a [bool],
    pub accounts: &'a [i64],
    pub excluded_edges: &'a [EdgeId],
    pub excluded_nodes: &'a [NodeId],
    /// Record why each edge was blocked (slower; used to explain a missing route).
    pub explain: bool,
}

/// A route found by a search: edges in route order (source to destination) with what each carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub edges: Vec<EdgeId>,
    /// Per leg: (send, fee, receive), in route order.
    pub amounts: Vec<(i64, i64, i64)>,
    pub score: i128,
    /// False when a label bound was reached, so a better route may exist.
    pub exact: bool,
}

#[derive(Debug, Clone, Copy)]
struct Label {
    node: NodeId,
    amount: i64,
    w: i128,
    key: i128,
    hops: u32,
    parent: u32,
    edge: EdgeId,
    /// The fee and the amount on the other side of `edge` (deliver: the amount delivered).
    fee: i64,
    other: i64,
    alive: bool,
}

const NO_LABEL: u32 = u32::MAX;

/// Reusable buffers for searches on graphs of one size.
#[derive(Default)]
pub struct Search {
    labels: Vec<Label>,
    heap: BinaryHeap<(Reverse<i128>, u32)>,
    at_node: Vec<Vec<u32>>,
    stamp: Vec<u32>,
    generation: u32,
    /// Hops from each node to the goal (searching backwards from it), valid where `distance_stamp`
    /// equals `generation`.
    distance: Vec<u8>,
    distance_stamp: Vec<u32>,
    frontier: Vec<NodeId>,
    next_frontier: Vec<NodeId>,
    /// Per edge, the first reason it was blocked (only with `explain`).
    pub blocked: Vec<Option<Block>>,
}

/// Per-node thresholds that make dominance safe (see the module documentation).
#[derive(Debug, Clone)]
pub struct Thresholds {
    /// Send mode: an amount at most this cannot reach any downstream maximum or liquidity limit.
    pub send: Vec<i64>,
    /// Send mode: an amount at least this cannot miss any downstream minimum, nor be eaten by a fee.
    pub send_floor: Vec<i64>,
    /// Deliver mode: an amount at least this cannot miss any upstream minimum.
    pub deliver: Vec<i64>,
}

impl Thresholds {
    /// Bellman-Ford style passes, one per hop: the thresholds account for every path of up to
    /// `max_hops` legs, which is every path a route may take.
    pub fn compute(graph: &Graph, accounts: &[i64], max_hops: u32) -> Thresholds {
        let nodes = graph.node_count();
        let mut send = vec![i64::MAX; nodes];
        let mut send_floor = vec![0_i64; nodes];
        let mut deliver = vec![0_i64; nodes];
        for _ in 0..max_hops.max(1) {
            let previous_send = send.clone();
            let previous_floor = send_floor.clone();
            let previous_deliver = deliver.clone();
            for edge in graph.edges() {
                let (from, to) = (edge.from as usize, edge.to as usize);
                let mut cap = edge.send_maximum;
                if edge.send_account != NO_ACCOUNT {
                    cap = cap.min(accounts[edge.send_account as usize]);
                }
                let mut downstream = previous_send[to];
                if edge.receive_account != NO_ACCOUNT {
                    downstream = downstream.min(accounts[edge.receive_account as usize]);
                }
                cap = cap.min(scale_down(downstream, edge.leg.rate.as_ref()));
                send[from] = send[from].min(cap.max(0));
                // The smallest send that still delivers above the next node's floor (and at least one
                // minor unit, so that the fee never eats it all), and meets this leg's minimum.
                let floor = edge
                    .leg
                    .backward(previous_floor[to].max(0).saturating_add(1))
                    .map(|(send, _)| send)
                    .unwrap_or(i64::MAX);
                send_floor[from] = send_floor[from].max(floor.max(edge.send_minimum));
                let needed = edge.send_minimum.max(previous_deliver[from]);
                deliver[to] = deliver[to].max(scale_up(needed, edge.leg.rate.as_ref()));
            }
        }
        Thresholds { send, send_floor, deliver }
    }
}

/// Largest send whose conversion (without fees, which only reduce it) stays at most `limit`.
fn scale_down(limit: i64, rate: Option<&CompiledRate>) -> i64 {
    match rate {
        None => limit,
        Some(_) if limit == i64::MAX => i64::MAX,
        // apply() rounds at most one unit up, so keep one unit of margin.
        Some(rate) => {
            let value = (i128::from(limit.saturating_sub(1).max(0)) * rate.denominator) / rate.numerator;
            i64::try_from(value).unwrap_or(i64::MAX)
        }
    }
}

/// Smallest received amount whose send (at least received / rate) is at least `needed`.
fn scale_up(needed: i64, rate: Option<&CompiledRate>) -> i64 {
    match rate {
        None => needed,
        Some(rate) => {
            let value = (i128::from(needed) * rate.numerator) / rate.denominator + 2;
            i64::try_from(value).unwrap_or(i64::MAX)
        }
    }
}

impl Search {
    pub fn new() -> Search {
        Search::default()
    }

    fn reset(&mut self, graph: &Graph, explain: bool) {
        self.labels.clear();
        self.heap.clear();
        if self.stamp.len() != graph.node_count() {
            self.stamp = vec![0; graph.node_count()];
            self.distance_stamp = vec![0; graph.node_count()];
            self.distance = vec![0; graph.node_count()];
            self.at_node = vec![Vec::new(); graph.node_count()];
            self.generation = 0;
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamp.iter_mut().for_each(|stamp| *stamp = 0);
            self.distance_stamp.iter_mut().for_each(|stamp| *stamp = 0);
            self.generation = 1;
        }
        self.blocked.clear();
        if explain {
            self.blocked.resize(graph.edge_count(), None);
        }
    }

    /// Breadth-first search backwards from the goal over usable legs, at most `limit` hops: how many
    /// legs each node is from the goal. A label that cannot arrive within the hop limit is dropped.
    fn measure_distances(&mut self, graph: &Graph, start: &Start<'_>, limit: u32) {
        let send_mode = start.mode == Mode::Send;
        let generation = self.generation;
        self.frontier.clear();
        self.frontier.push(start.goal);
        self.distance_stamp[start.goal as usize] = generation;
        self.distance[start.goal as usize] = 0;
        for hops in 1..=limit.min(u32::from(u8::MAX)) {
            self.next_frontier.clear();
            for index in 0..self.frontier.len() {
                let node = self.frontier[index];
                let visit =
                    |edge: &Edge, distance_stamp: &mut Vec<u32>, distance: &mut Vec<u8>, next: &mut Vec<NodeId>| {
                        if !start.operator_ok[edge.operator as usize] {
                            return;
                        }
                        let tail = if send_mode { edge.from } else { edge.to };
                        if distance_stamp[tail as usize] != generation {
                            distance_stamp[tail as usize] = generation;
                            distance[tail as usize] = hops as u8;
                            next.push(tail);
                        }
                    };
                if send_mode {
                    for &edge in graph.in_edges(node) {
                        visit(graph.edge(edge), &mut self.distance_stamp, &mut self.distance, &mut self.next_frontier);
                    }
                } else {
                    for edge in graph.out_edges(node) {
                        visit(graph.edge(edge), &mut self.distance_stamp, &mut self.distance, &mut self.next_frontier);
                    }
                }
            }
            std::mem::swap(&mut self.frontier, &mut self.next_frontier);
            if self.frontier.is_empty() {
                break;
            }
        }
    }

    /// Hops from `node` to the goal, or `None` when it cannot reach it within the limit.
    #[inline]
    fn distance_to_goal(&self, node: NodeId) -> Option<u32> {
        (self.distance_stamp[node as usize] == self.generation).then(|| u32::from(self.distance[node as usize]))
    }

    fn labels_at(&mut self, node: NodeId) -> &mut Vec<u32> {
        let index = node as usize;
        if self.stamp[index] != self.generation {
            self.stamp[index] = self.generation;
            self.at_node[index].clear();
        }
        &mut self.at_node[index]
    }

    fn on_path(&self, mut label: u32, node: NodeId) -> bool {
        while label != NO_LABEL {
            let current = &self.labels[label as usize];
            if current.node == node {
                return true;
            }
            label = current.parent;
        }
        false
    }

    fn block(&mut self, edge: EdgeId, reason: Block) {
        if let Some(slot) = self.blocked.get_mut(edge as usize)
            && slot.is_none()
        {
            *slot = Some(reason);
        }
    }

    /// Runs one search. `currency_of` maps a node to the index of its currency in `prices.value`.
    pub fn run(
        &mut self,
        graph: &Graph,
        thresholds: &Thresholds,
        currency_of: &[u16],
        prices: &Prices,
        start: &Start<'_>,
    ) -> Option<Found> {
        self.reset(graph, start.explain);
        let send_mode = start.mode == Mode::Send;
        self.measure_distances(graph, start, start.max_hops.saturating_sub(start.hops));
        let key_of = |amount: i64, node: NodeId, w: i128| -> Option<i128> {
            let value = i128::from(amount).checked_mul(prices.value[currency_of[node as usize] as usize])?;
            let cost = if send_mode { start.anchor.checked_sub(value)? } else { value.checked_sub(start.anchor)? };
            cost.checked_add(w)
        };
        let first = Label {
            node: start.node,
            amount: start.amount,
            w: start.w,
            key: key_of(start.amount, start.node, start.w)?,
            hops: start.hops,
            parent: NO_LABEL,
            edge: 0,
            fee: 0,
            other: 0,
            alive: true,
        };
        self.labels.push(first);
        self.labels_at(start.node).push(0);
        self.heap.push((Reverse(first.key), 0));
        let mut best: Option<(i128, u32)> = None;
        let mut exact = true;
        let slack_rule = SlackRule { send_mode, max_hops: start.max_hops, per_hop: prices.slack_per_hop };

        while let Some((Reverse(key), index)) = self.heap.pop() {
            let label = self.labels[index as usize];
            if !label.alive {
                continue;
            }
            if let Some((best_score, _)) = best {
                let remaining = i128::from(start.max_hops.saturating_sub(label.hops));
                if key - prices.slack_per_hop * remaining > best_score {
                    break;
                }
            }
            if label.node == start.goal {
                if best.is_none_or(|(score, _)| key < score) {
                    best = Some((key, index));
                }
                continue;
            }
            if label.hops >= start.max_hops {
                continue;
            }
            // Send mode walks the contiguous out-edge range, deliver mode the in-edge list; the other is empty.
            let backward: &[EdgeId] = if send_mode { &[] } else { graph.in_edges(label.node) };
            let forward = if send_mode { graph.out_edges(label.node) } else { 0..0 };
            for edge_id in forward.chain(backward.iter().copied()) {
                let edge = graph.edge(edge_id);
                let next = if send_mode { edge.to } else { edge.from };
                if !start.operator_ok[edge.operator as usize] {
                    if start.explain {
                        self.block(edge_id, Block::OperatorClosed { detail: String::new() });
                    }
                    continue;
                }
                if start.excluded_edges.contains(&edge_id) || start.excluded_nodes.contains(&next) {
                    continue;
                }
                // A label that cannot reach the goal within the hop limit is of no use.
                match self.distance_to_goal(next) {
                    Some(distance) if label.hops + 1 + distance <= start.max_hops => {}
                    _ => continue,
                }
                let edge = *edge;
                let amounts = if send_mode {
                    self.step_forward(edge_id, &edge, label.amount, start)
                } else {
                    self.step_backward(edge_id, &edge, label.amount, start)
                };
                let Some((new_amount, fee)) = amounts else {
                    continue;
                };
                if self.on_path(index, next) {
                    continue;
                }
                let w = label.w
                    + i128::from(edge.latency_ms) * prices.latency_per_ms
                    + i128::from(edge.risk) * prices.risk_per_unit;
                let Some(new_key) = key_of(new_amount, next, w) else {
                    if start.explain {
                        self.block(edge_id, Block::Overflow);
                    }
                    continue;
                };
                let candidate = Label {
                    node: next,
                    amount: new_amount,
                    w,
                    key: new_key,
                    hops: label.hops + 1,
                    parent: index,
                    edge: edge_id,
                    fee,
                    other: label.amount,
                    alive: true,
                };
                let limits = if send_mode {
                    NodeLimits { ceiling: thresholds.send[next as usize], floor: thresholds.send_floor[next as usize] }
                } else {
                    NodeLimits { ceiling: i64::MAX, floor: thresholds.deliver[next as usize] }
                };
                match self.admit(candidate, limits, slack_rule) {
                    Admission::Dominated => {}
                    Admission::Refused => exact = false,
                    Admission::Admitted { evicted } => {
                        exact &= !evicted;
                        let new_index = (self.labels.len() - 1) as u32;
                        self.heap.push((Reverse(new_key), new_index));
                    }
                }
                if self.labels.len() >= LABELS_PER_SEARCH_MAX {
                    exact = false;
                    break;
                }
            }
            if self.labels.len() >= LABELS_PER_SEARCH_MAX {
                break;
            }
        }
        let (score, index) = best?;
        Some(self.extract(index, score, exact, send_mode))
    }

    /// Send mode: what a leg does with `send`, or why it cannot.
    fn step_forward(&mut self, edge_id: EdgeId, edge: &Edge, send: i64, start: &Start<'_>) -> Option<(i64, i64)> {
        let reason = if send < edge.send_minimum {
            Block::BelowMinimum { amount: send, minimum: edge.send_minimum }
        } else if send > edge.send_maximum {
            Block::AboveMaximum { amount: send, maximum: edge.send_maximum }
        } else if edge.send_account != NO_ACCOUNT && send > start.accounts[edge.send_account as usize] {
            Block::DailyCap { amount: send, remaining: start.accounts[edge.send_account as usize] }
        } else {
            match edge.leg.forward(send) {
                None => Block::FeeExceedsAmount { amount: send },
                Some((fee, receive)) => {
                    if edge.receive_account != NO_ACCOUNT && receive > start.accounts[edge.receive_account as usize] {
                        Block::Liquidity { amount: receive, available: start.accounts[edge.receive_account as usize] }
                    } else {
                        return Some((receive, fee));
                    }
                }
            }
        };
        if start.explain {
            self.block(edge_id, reason);
        }
        None
    }

    /// Deliver mode: the smallest send that makes a leg deliver exactly `receive`, or why it cannot.
    fn step_backward(&mut self, edge_id: EdgeId, edge: &Edge, receive: i64, start: &Start<'_>) -> Option<(i64, i64)> {
        let reason = if edge.receive_account != NO_ACCOUNT && receive > start.accounts[edge.receive_account as usize] {
            Block::Liquidity { amount: receive, available: start.accounts[edge.receive_account as usize] }
        } else {
            match edge.leg.backward(receive) {
                None => Block::Overflow,
                Some((send, fee)) => {
                    if send < edge.send_minimum {
                        Block::BelowMinimum { amount: send, minimum: edge.send_minimum }
                    } else if send > edge.send_maximum {
                        Block::AboveMaximum { amount: send, maximum: edge.send_maximum }
                    } else if edge.send_account != NO_ACCOUNT && send > start.accounts[edge.send_account as usize] {
                        Block::DailyCap { amount: send, remaining: start.accounts[edge.send_account as usize] }
                    } else {
                        return Some((send, fee));
                    }
                }
            }
        };
        if start.explain {
            self.block(edge_id, reason);
        }
        None
    }

    /// Adds `candidate` to its node unless a label there dominates it; removes the labels it dominates.
    ///
    /// Two rules, both exact (see the module documentation):
    /// 1. A holds at least as much (send) or needs at most as much (deliver), has no more latency and
    ///    risk `w` and no more hops, and cannot be blocked where B passes (thresholds).
    /// 2. Send mode: A holds no more than B, yet its key beats B's by more than the rounding slack
    ///    left: legs never pass on more value than they are given, so B's extra amount can only shrink
    ///    downstream. Deliver mode: A needs no more than B and beats B's key by the slack: upstream legs
    ///    only widen A's advantage. Either way A must be safe against minimums.
    fn admit(&mut self, candidate: Label, limits: NodeLimits, slack: SlackRule) -> Admission {
        let send_mode = slack.send_mode;
        let dominates = |a: &Label, b: &Label| -> bool {
            if a.hops > b.hops {
                return false;
            }
            let richer = if send_mode { a.amount >= b.amount } else { a.amount <= b.amount };
            // Send: A holds no more than B. Deliver: A needs no more than B. Same comparison.
            let poorer_or_equal = a.amount <= b.amount;
            // Rule 1.
            if richer && a.w <= b.w {
                let max_safe = a.amount == b.amount
                    || if send_mode { a.amount <= limits.ceiling } else { a.amount >= limits.floor };
                if max_safe {
                    return true;
                }
            }
            // Rule 2.
            let remaining = i128::from(slack.max_hops.saturating_sub(a.hops));
            let min_safe = a.amount == b.amount || a.amount >= limits.floor;
            poorer_or_equal && min_safe && a.key.saturating_add(slack.per_hop.saturating_mul(remaining)) <= b.key
        };
        let node = candidate.node;
        let mut residents = std::mem::take(self.labels_at(node));
        residents.retain(|&index| self.labels[index as usize].alive);
        if residents.iter().any(|&index| dominates(&self.labels[index as usize], &candidate)) {
            *self.labels_at(node) = residents;
            return Admission::Dominated;
        }
        residents.retain(|&index| {
            let resident = &mut self.labels[index as usize];
            if dominates(&candidate, resident) {
                resident.alive = false;
                false
            } else {
                true
            }
        });
        let mut evicted = false;
        if residents.len() >= LABELS_PER_NODE_MAX {
            // Drop the resident with the worst key; if the candidate is worse still, drop it instead.
            let worst = residents
                .iter()
                .enumerate()
                .max_by_key(|&(_, &index)| self.labels[index as usize].key)
                .map(|(position, &index)| (position, index));
            if let Some((position, index)) = worst {
                evicted = true;
                if self.labels[index as usize].key <= candidate.key {
                    *self.labels_at(node) = residents;
                    return Admission::Refused;
                }
                self.labels[index as usize].alive = false;
                residents.swap_remove(position);
            }
        }
        let new_index = self.labels.len() as u32;
        self.labels.push(candidate);
        residents.push(new_index);
        *self.labels_at(node) = residents;
        Admission::Admitted { evicted }
    }

    /// The route of the label at `index`, in route order.
    fn extract(&self, index: u32, score: i128, exact: bool, send_mode: bool) -> Found {
        let mut edges = Vec::new();
        let mut amounts = Vec::new();
        let mut current = index;
        while current != NO_LABEL {
            let label = &self.labels[current as usize];
            if label.parent == NO_LABEL {
                break;
            }
            edges.push(label.edge);
            // Send mode: the label holds what the leg delivered, `other` what it was sent.
            // Deliver mode: the label holds what the leg was sent, `other` what it delivered.
            if send_mode {
                amounts.push((label.other, label.fee, label.amount));
            } else {
                amounts.push((label.amount, label.fee, label.other));
            }
            current = label.parent;
        }
        if send_mode {
            edges.reverse();
            amounts.reverse();
        }
        Found { edges, amounts, score, exact }
    }
}

/// The thresholds of the node a candidate label arrives at.
#[derive(Clone, Copy)]
struct NodeLimits {
    /// Send mode: amounts at most this meet no maximum downstream.
    ceiling: i64,
    /// Amounts at least this meet no minimum (downstream in send mode, upstream in deliver mode).
    floor: i64,
}

/// What rule 2 of the dominance needs: the direction, the hop limit and the slack per hop.
#[derive(Clone, Copy)]
struct SlackRule {
    send_mode: bool,
    max_hops: u32,
    per_hop: i128,
}

enum Admission {
    Dominated,
    /// The node was full and the candidate was its worst label: the result is no longer proven optimal.
    Refused,
    Admitted {
        evicted: bool,
    },
}
