//! Seeded synthetic routing graphs for benchmarks and property tests.
//!
//! Nodes are currencies at numbered locations; about half the edges are FX conversions inside a
//! location (spreads 5–80 bps off ECB mids, so no arbitrage), the rest are rail legs between
//! locations, mostly in one currency, some converting in-network. Every rail leg has a fee schedule,
//! a per-payment maximum and its own prefunded account, so limits and liquidity bind for large
//! amounts. About 1% of nodes receive no edge at all, so some destinations are unreachable.

use std::collections::HashMap;

use railyard_config::{OperatingHours, RailKind, RoutingSettings};
use railyard_core::{Currency, Decimal, FeeSchedule, Money, Rate, RoundingMode};
use railyard_fx::RateHistory;
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::graph::{EdgeSpec, GraphBuilder, NodeKey, Operator, OperatorKind};
use crate::router::{RouteError, Router};

/// The shape of a synthetic graph.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub name: &'static str,
    pub currencies: usize,
    pub locations: usize,
    pub edges: usize,
    pub operators: usize,
    pub max_hops: u32,
}

/// ~1k nodes, 20k edges, multi-currency.
pub const SYNTHETIC_1K: Shape =
    Shape { name: "synthetic-1k", currencies: 25, locations: 40, edges: 20_000, operators: 120, max_hops: 4 };

/// ~20k nodes (30 ECB currencies × 680 locations), 100k edges: the scale of the Lightning Network graph LDK routes on.
pub const SYNTHETIC_20K: Shape =
    Shape { name: "synthetic-20k", currencies: 30, locations: 680, edges: 100_000, operators: 400, max_hops: 8 };

/// A generated router and what the benchmark needs to query it.
pub struct Synthetic {
    pub router: Router,
    pub currencies: Vec<Currency>,
    pub locations: Vec<String>,
    /// Nodes that no edge enters.
    pub unreachable: Vec<NodeKey>,
}

/// Builds a synthetic graph; the same `seed` gives the same graph.
pub fn generate(shape: Shape, seed: u64) -> Result<Synthetic, RouteError> {
    let mut random = ChaCha8Rng::seed_from_u64(seed);
    let rates = RateHistory::bundled_daily().latest();
    let mut currencies: Vec<Currency> = rates.currencies();
    currencies.truncate(shape.currencies);
    let eur = Currency::from_code("EUR").map_err(|error| RouteError::Invalid(error.to_string()))?;
    if !currencies.contains(&eur) {
        currencies.pop();
        currencies.push(eur);
    }
    let locations: Vec<String> = (0..shape.locations).map(|index| format!("n{index}")).collect();
    let mut builder = GraphBuilder::new();
    for index in 0..shape.operators {
        let kind = match index % 4 {
            0 => OperatorKind::FxProvider,
            1 => OperatorKind::Rail(RailKind::Card),
            2 => OperatorKind::Rail(RailKind::Instant),
            _ => OperatorKind::Rail(RailKind::Cbdc),
        };
        builder.operator(Operator {
            id: format!("op{index}"),
            kind,
            hours: OperatingHours::AlwaysOpen,
            available: true,
            countries: Vec::new(),
        });
    }
    let node_count = currencies.len() * locations.len();
    let island: Vec<bool> = (0..node_count).map(|_| random.random_range(0..100) == 0).collect();
    let key = |index: usize| NodeKey {
        currency: currencies[index % currencies.len()],
        location: locations[index / currencies.len()].clone(),
    };
    let mut per_eur = HashMap::new();
    for currency in &currencies {
        per_eur.insert(*currency, rates.per_eur(*currency).unwrap_or(Decimal::ONE));
    }
    let mid =
        |base: Currency, quote: Currency| -> Rate { rates.mid(base, quote).unwrap_or_else(|_| Rate::identity(base)) };
    // One EUR in minor units of each currency, to size fees and limits sensibly.
    let eur_minor = |currency: Currency| -> i64 {
        let value = per_eur[&currency] * Decimal::from(10_i64.pow(currency.exponent()));
        value.round().to_string().parse::<i64>().unwrap_or(1).max(1)
    };
    for node in 0..node_count {
        builder.node(key(node).currency, &key(node).location);
    }
    let mut attempts = 0;
    while builder.edge_count() < shape.edges && attempts < shape.edges * 4 {
        attempts += 1;
        let from = random.random_range(0..node_count);
        let from_key = key(from);
        let fx_edge = random.random_bool(0.5);
        let to = if fx_edge {
            let location = from / currencies.len();
            location * currencies.len() + random.random_range(0..currencies.len())
        } else {
            let location = random.random_range(0..locations.len());
            let currency = if random.random_bool(0.8) {
                from % currencies.len()
            } else {
                random.random_range(0..currencies.len())
            };
            location * currencies.len() + currency
        };
        if to == from || island[to] {
            continue;
        }
        let to_key = key(to);
        let (base, quote) = (from_key.currency, to_key.currency);
        let unit = eur_minor(base);
        let conversion = (base != quote).then(|| {
            let spread = Decimal::new(random.random_range(5..=80), 0);
            (mid(base, quote).with_spread(spread).unwrap_or_else(|_| mid(base, quote)), RoundingMode::HalfEven)
        });
        let operator = if fx_edge {
            4 * random.random_range(0..shape.operators / 4)
        } else {
            1 + 4 * random.random_range(0..shape.operators / 4) + random.random_range(0..3)
        };
        let (fee, maximum, account) = if fx_edge {
            (FeeSchedule::free(base), None, None)
        } else {
            let fixed = Money::from_minor(random.random_range(0..=unit), base);
            let bps = Decimal::new(random.random_range(0..=5_000), 2);
            let cap = Some(Money::from_minor(unit.saturating_mul(random.random_range(20..=400)), base));
            let fee =
                FeeSchedule::new(fixed, bps, None, cap).map_err(|error| RouteError::Invalid(error.to_string()))?;
            let maximum = Money::from_minor(unit.saturating_mul(random.random_range(10_000..=1_000_000)), base);
            let liquidity =
                Money::from_minor(eur_minor(quote).saturating_mul(random.random_range(50_000..=5_000_000)), quote);
            let account = builder.account(format!("{from_key}→{to_key}"), liquidity);
            (fee, Some(maximum), Some(account))
        };
        builder.edge(EdgeSpec {
            from: from_key,
            to: to_key,
            operator,
            fee,
            conversion,
            send_minimum: None,
            send_maximum: maximum,
            send_account: None,
            receive_account: account,
            latency_ms: if fx_edge { random.random_range(20..200) } else { random.random_range(300..20_000) },
            success_probability: Decimal::new(random.random_range(9_500..=9_999), 4),
        });
    }
    let unreachable = (0..node_count).filter(|&node| island[node]).map(key).collect();
    let graph = builder.build().map_err(|error| RouteError::Invalid(error.to_string()))?;
    let settings = RoutingSettings {
        reference_currency: eur,
        cost_weight: Decimal::ONE,
        latency_weight_per_second: Decimal::new(1, 2),
        risk_weight: Decimal::from(20),
        max_hops: shape.max_hops,
        max_total_fee_bps: None,
    };
    let router = Router::new(graph, &per_eur, settings, Vec::new())?;
    Ok(Synthetic { router, currencies, locations, unreachable })
}

/// A seeded random source for callers that draw queries.
pub fn random(seed: u64) -> impl Rng {
    ChaCha8Rng::seed_from_u64(seed)
}
