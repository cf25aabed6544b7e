//! `railyard bench route`: our solver against plain petgraph Dijkstra on the same frozen graph.
//!
//! Method. A graph is built once (its build time is reported separately), a fixed-seed set of
//! (source, destination, amount) queries is drawn — including destinations no edge reaches — and each
//! query is solved by [`Router::route`] (search, path extraction and decimal recomputation: what a
//! payment gets) and by `petgraph::algo::dijkstra` with each edge's cost frozen at a nominal amount (one
//! thousand euros' worth), which is what a router that ignores amount-dependent fees and limits would
//! do. Both run in the same process, alternating, so that machine noise hits both alike. Queries whose
//! amount no single route can carry are also split ([`Router::split`]), and that time is reported.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use petgraph::graph::NodeIndex;
use railyard_core::{Currency, Decimal, Money, RoundingMode};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::graph::{EdgeId, NodeKey};
use crate::router::{RouteError, RouteRequest, Router};
use crate::search::Mode;
use crate::synthetic::{self, SYNTHETIC_1K, SYNTHETIC_20K, Shape, Synthetic};

/// The graphs the benchmark knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchGraph {
    Demo,
    Synthetic1k,
    Synthetic20k,
}

impl BenchGraph {
    pub fn parse(name: &str) -> Option<BenchGraph> {
        match name {
            "demo" => Some(BenchGraph::Demo),
            "synthetic-1k" => Some(BenchGraph::Synthetic1k),
            "synthetic-20k" => Some(BenchGraph::Synthetic20k),
            _ => None,
        }
    }
}

/// What the benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub graph: String,
    pub nodes: usize,
    pub edges: usize,
    pub queries: usize,
    pub reachable: usize,
    pub solver_p50_us: f64,
    pub solver_p99_us: f64,
    pub baseline_p50_us: f64,
    pub baseline_p99_us: f64,
    pub ratio_p50: f64,
    pub split_queries: usize,
    pub split_p50_us: f64,
    pub build_ms: f64,
    pub seed: u64,
}

struct Query {
    source: NodeKey,
    destination: NodeKey,
    amount: i64,
}

/// Runs the benchmark on a graph with `queries` queries drawn from `seed`.
pub fn run(
    graph: BenchGraph,
    demo: Option<(Router, Duration)>,
    queries: usize,
    seed: u64,
) -> Result<BenchReport, RouteError> {
    let (name, router, build, currencies, locations, unreachable) = match graph {
        BenchGraph::Demo => {
            // The caller builds the demo router from the configuration and times that build.
            let (router, build) =
                demo.ok_or_else(|| RouteError::Invalid("the demo benchmark needs the demo router".into()))?;
            let currencies = router.graph().currencies();
            ("demo".to_string(), router, build, currencies, Vec::new(), Vec::new())
        }
        BenchGraph::Synthetic1k | BenchGraph::Synthetic20k => {
            let shape: Shape = if graph == BenchGraph::Synthetic1k { SYNTHETIC_1K } else { SYNTHETIC_20K };
            let started = Instant::now();
            let synthetic = synthetic::generate(shape, seed)?;
            let build = started.elapsed();
            let Synthetic { router, currencies, locations, unreachable } = synthetic;
            (shape.name.to_string(), router, build, currencies, locations, unreachable)
        }
    };
    let mut random = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let at: DateTime<Utc> =
        DateTime::parse_from_rfc3339("2026-11-04T12:00:00Z").map(|t| t.with_timezone(&Utc)).unwrap_or_default();
    let query_set: Vec<Query> = (0..queries)
        .map(|index| {
            let source_currency = currencies[random.random_range(0..currencies.len())];
            let (source, destination) = if locations.is_empty() {
                let destination_currency = currencies[random.random_range(0..currencies.len())];
                (
                    NodeKey { currency: source_currency, location: crate::LEDGER.into() },
                    NodeKey { currency: destination_currency, location: crate::BENEFICIARY.into() },
                )
            } else {
                let source = NodeKey {
                    currency: source_currency,
                    location: locations[random.random_range(0..locations.len())].clone(),
                };
                let destination = if index % 10 == 0 && !unreachable.is_empty() {
                    unreachable[random.random_range(0..unreachable.len())].clone()
                } else {
                    NodeKey {
                        currency: currencies[random.random_range(0..currencies.len())],
                        location: locations[random.random_range(0..locations.len())].clone(),
                    }
                };
                (source, destination)
            };
            // Log-uniform between 10 and 10^6 euros' worth: a decade, then a three-digit mantissa.
            let decade = random.random_range(1_u32..6);
            let euros = Decimal::from(random.random_range(100_i64..1_000)) * Decimal::from(10_i64.pow(decade))
                / Decimal::from(100);
            let per_eur = router.mid(eur(), source.currency).unwrap_or(Decimal::ONE);
            let amount = euros * per_eur;
            let minor = Money::from_decimal(amount, source.currency, RoundingMode::HalfEven)
                .map(|m| m.minor_units())
                .unwrap_or(1)
                .max(1);
            Query { source, destination, amount: minor }
        })
        .collect();

    let baseline = Baseline::new(&router);
    let mut solver_times = Vec::with_capacity(queries);
    let mut baseline_times = Vec::with_capacity(queries);
    let mut split_times = Vec::new();
    let mut reachable = 0;
    for query in &query_set {
        let request = RouteRequest {
            source: query.source.currency,
            destination: query.destination.currency,
            amount: Money::from_minor(query.amount, query.source.currency),
            mode: Mode::Send,
            at,
            country: None,
            alternatives: 0,
            source_location: query.source.location.clone(),
            destination_location: query.destination.location.clone(),
            avoid: Vec::new(),
        };
        let clock = Instant::now();
        let result = router.route(&request);
        solver_times.push(clock.elapsed());
        let clock = Instant::now();
        let _ = std::hint::black_box(baseline.solve(&router, &query.source, &query.destination));
        baseline_times.push(clock.elapsed());
        match result {
            Ok(_) => reachable += 1,
            Err(RouteError::NoRoute { .. }) if !unreachable.contains(&query.destination) => {
                let clock = Instant::now();
                let split = router.split(&request);
                if split.is_ok() {
                    split_times.push(clock.elapsed());
                }
            }
            Err(_) => {}
        }
    }
    let solver_p50 = percentile(&mut solver_times, 50);
    let baseline_p50 = percentile(&mut baseline_times, 50);
    Ok(BenchReport {
        graph: name,
        nodes: router.graph().node_count(),
        edges: router.graph().edge_count(),
        queries,
        reachable,
        solver_p50_us: micros(solver_p50),
        solver_p99_us: micros(percentile(&mut solver_times, 99)),
        baseline_p50_us: micros(baseline_p50),
        baseline_p99_us: micros(percentile(&mut baseline_times, 99)),
        ratio_p50: round2(micros(solver_p50) / micros(baseline_p50).max(0.001)),
        split_queries: split_times.len(),
        split_p50_us: if split_times.is_empty() { 0.0 } else { micros(percentile(&mut split_times, 50)) },
        build_ms: round2(build.as_secs_f64() * 1_000.0),
        seed,
    })
}

fn eur() -> Currency {
    Currency::from_code("EUR").unwrap_or_else(|_| unreachable!("EUR is an ISO currency"))
}

fn percentile(times: &mut [Duration], percent: usize) -> Duration {
    if times.is_empty() {
        return Duration::ZERO;
    }
    times.sort();
    times[((times.len() - 1) * percent) / 100]
}

fn micros(duration: Duration) -> f64 {
    round2(duration.as_secs_f64() * 1_000_000.0)
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// The same topology as a petgraph graph with every edge's cost frozen at a nominal amount.
struct Baseline {
    graph: petgraph::graph::DiGraph<String, u64>,
}

impl Baseline {
    fn new(router: &Router) -> Baseline {
        let frozen =
            router.graph().to_petgraph().map(|_, name| name.clone(), |_, &edge: &EdgeId| frozen_cost(router, edge));
        Baseline { graph: frozen }
    }

    fn solve(&self, router: &Router, source: &NodeKey, destination: &NodeKey) -> Option<u64> {
        let from = router.graph().find_node(source.currency, &source.location)?;
        let to = router.graph().find_node(destination.currency, &destination.location)?;
        let (from, to) = (NodeIndex::new(from as usize), NodeIndex::new(to as usize));
        let costs = petgraph::algo::dijkstra(&self.graph, from, Some(to), |edge| *edge.weight());
        costs.get(&to).copied()
    }
}

/// An edge's cost when it carries one thousand euros' worth: fee and spread at mid, in euro cents,
/// plus latency (ms) and risk (millionths), all as one unsigned number.
fn frozen_cost(router: &Router, edge_id: EdgeId) -> u64 {
    let edge = router.graph().edge(edge_id);
    let spec = router.graph().spec(edge_id);
    let per_eur = router.mid(eur(), spec.from.currency).unwrap_or(Decimal::ONE);
    let nominal = Money::from_decimal(Decimal::from(1_000) * per_eur, spec.from.currency, RoundingMode::HalfEven)
        .map(|m| m.minor_units())
        .unwrap_or(100_000);
    let loss = edge.leg.forward(nominal).map(|(fee, _)| fee).unwrap_or(nominal);
    loss.unsigned_abs() + u64::from(edge.latency_ms) + edge.risk.unsigned_abs()
}
