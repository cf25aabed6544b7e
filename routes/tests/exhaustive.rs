//! The search against an exhaustive one on small random graphs.
//!
//! Each case builds a random graph (currencies with exponents 0 to 3, fees with minimums and caps,
//! conversions with spreads, per-payment minimums and maximums, prefunded accounts shared by several
//! legs) and a random request, then enumerates every simple path within the hop limit and evaluates
//! each with the same rules. The search must find the same optimum score (and cost, when the optimum
//! is unique), every route it returns must pass every limit, and split parts must add up exactly.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use railyard_config::{OperatingHours, RailKind, RoutingSettings};
use railyard_core::{Currency, Decimal, FeeSchedule, Money, Rate, RoundingMode};
use railyard_routes::{
    EdgeId, EdgeSpec, GraphBuilder, Mode, NodeId, NodeKey, Operator, OperatorKind, RouteError, RouteRequest, Router,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CURRENCIES: [(&str, &str); 5] =
    [("EUR", "1"), ("USD", "1.1172"), ("JPY", "175.68"), ("KWD", "0.3421"), ("GBP", "0.8338")];
const LOCATIONS: [&str; 3] = ["ledger", "hub", "beneficiary"];

fn c(code: &str) -> Currency {
    Currency::from_code(code).unwrap()
}

struct Case {
    router: Router,
    request: RouteRequest,
}

fn random_case(seed: u64) -> Case {
    let mut random = ChaCha8Rng::seed_from_u64(seed);
    let per_eur: HashMap<Currency, Decimal> =
        CURRENCIES.iter().map(|(code, value)| (c(code), value.parse().unwrap())).collect();
    let currencies: Vec<Currency> =
        CURRENCIES.iter().take(random.random_range(2..=5)).map(|(code, _)| c(code)).collect();
    let mid = |base: Currency, quote: Currency| Rate::new(base, quote, per_eur[&quote] / per_eur[&base]).unwrap();
    let mut builder = GraphBuilder::new();
    for index in 0..4 {
        let kind = if index == 0 { OperatorKind::FxProvider } else { OperatorKind::Rail(RailKind::Instant) };
        builder.operator(Operator {
            id: format!("op{index}"),
            kind,
            hours: OperatingHours::AlwaysOpen,
            available: true,
            countries: vec![],
        });
    }
    // A few shared prefunded accounts per currency, some of them small.
    let mut accounts: HashMap<Currency, Vec<usize>> = HashMap::new();
    for &currency in &currencies {
        for _ in 0..2 {
            let units = 10_i64.pow(currency.exponent()) * random.random_range(50..50_000);
            accounts
                .entry(currency)
                .or_default()
                .push(builder.account(format!("{currency}"), Money::from_minor(units, currency)));
        }
    }
    let edge_count = random.random_range(4..16);
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    for _ in 0..edge_count {
        let from_location = random.random_range(0..2);
        let to_location = random.random_range(from_location..3);
        let base = currencies[random.random_range(0..currencies.len())];
        let mut quote = currencies[random.random_range(0..currencies.len())];
        if from_location == to_location && quote == base {
            quote = currencies[(currencies.iter().position(|x| *x == base).unwrap() + 1) % currencies.len()];
            if quote == base {
                continue;
            }
        }
        if from_location == 0 {
            starts.push(base);
        }
        if to_location == 2 {
            ends.push(quote);
        }
        let unit = 10_i64.pow(base.exponent());
        let fixed = Money::from_minor(random.random_range(0..=unit * 3), base);
        let bps = Decimal::new(random.random_range(0..=20_000), 2);
        let minimum = random.random_bool(0.3).then(|| Money::from_minor(random.random_range(1..=unit * 2), base));
        let maximum =
            random.random_bool(0.4).then(|| Money::from_minor(random.random_range(unit * 3..=unit * 40), base));
        let fee = FeeSchedule::new(
            fixed,
            bps,
            minimum,
            maximum.filter(|m| minimum.is_none_or(|n| n.minor_units() <= m.minor_units())),
        )
        .unwrap();
        let conversion = (base != quote).then(|| {
            let spread = Decimal::new(random.random_range(0..=150), 0);
            let mode = RoundingMode::ALL[random.random_range(0..RoundingMode::ALL.len())];
            (mid(base, quote).with_spread(spread).unwrap(), mode)
        });
        let send_minimum = random.random_bool(0.3).then(|| Money::from_minor(random.random_range(1..=unit * 50), base));
        let send_maximum =
            random.random_bool(0.5).then(|| Money::from_minor(random.random_range(unit * 20..=unit * 20_000), base));
        // Legs into the beneficiary may share a prefunded account (no route takes two of them); other
        // legs get their own, as the graph builder requires.
        let receive_account = random.random_bool(0.6).then(|| {
            if to_location == 2 {
                accounts[&quote][random.random_range(0..2)]
            } else {
                let units = 10_i64.pow(quote.exponent()) * random.random_range(50..50_000);
                builder.account(format!("{quote} own"), Money::from_minor(units, quote))
            }
        });
        builder.edge(EdgeSpec {
            from: NodeKey { currency: base, location: LOCATIONS[from_location].into() },
            to: NodeKey { currency: quote, location: LOCATIONS[to_location].into() },
            operator: random.random_range(0..4),
            fee,
            conversion,
            send_minimum,
            send_maximum,
            send_account: None,
            receive_account,
            latency_ms: random.random_range(10..5_000),
            success_probability: Decimal::new(random.random_range(900..=1_000), 3),
        });
    }
    let graph = builder.build().unwrap();
    let settings = RoutingSettings {
        reference_currency: c("EUR"),
        cost_weight: Decimal::ONE,
        latency_weight_per_second: Decimal::new(random.random_range(0..=50), 2),
        risk_weight: Decimal::from(random.random_range(0..=50)),
        max_hops: random.random_range(1..=4),
        max_total_fee_bps: None,
    };
    let router = Router::new(graph, &per_eur, settings, vec![]).unwrap();
    // Mostly currencies some leg takes from the ledger and some leg delivers, so that routes exist.
    let pick = |random: &mut ChaCha8Rng, preferred: &[Currency]| {
        if !preferred.is_empty() && random.random_bool(0.85) {
            preferred[random.random_range(0..preferred.len())]
        } else {
            currencies[random.random_range(0..currencies.len())]
        }
    };
    let source = pick(&mut random, &starts);
    let destination = pick(&mut random, &ends);
    let mode = if random.random_bool(0.5) { Mode::Send } else { Mode::Deliver };
    let amount_currency = if mode == Mode::Send { source } else { destination };
    let amount = Money::from_minor(
        10_i64.pow(amount_currency.exponent()) * random.random_range(1..20_000) + random.random_range(0..100),
        amount_currency,
    );
    let at: DateTime<Utc> = "2026-11-24T10:00:00Z".parse().unwrap();
    Case { router, request: RouteRequest::payout(source, destination, amount, mode, at) }
}

/// Every simple path from the request's source to its destination within the hop limit.
fn all_paths(router: &Router, request: &RouteRequest) -> Vec<Vec<EdgeId>> {
    let graph = router.graph();
    let (Some(source), Some(goal)) =
        (graph.find_node(request.source, "ledger"), graph.find_node(request.destination, "beneficiary"))
    else {
        return vec![];
    };
    let mut paths = Vec::new();
    let mut stack: Vec<(NodeId, Vec<EdgeId>, Vec<NodeId>)> = vec![(source, vec![], vec![source])];
    while let Some((node, path, visited)) = stack.pop() {
        if node == goal && !path.is_empty() {
            paths.push(path);
            continue;
        }
        if path.len() as u32 >= router.settings().max_hops {
            continue;
        }
        for edge in graph.out_edges(node) {
            let next = graph.edge(edge).to;
            if visited.contains(&next) {
                continue;
            }
            let mut path = path.clone();
            path.push(edge);
            let mut visited = visited.clone();
            visited.push(next);
            stack.push((next, path, visited));
        }
    }
    paths
}

fn check(seed: u64) -> Result<(), TestCaseError> {
    let Case { router, request } = random_case(seed);
    let mut best: Option<(i128, Vec<EdgeId>)> = None;
    let mut optimal_paths = 0;
    for path in all_paths(&router, &request) {
        if let Ok(evaluation) = router.evaluate(&request, &path) {
            match &best {
                Some((score, _)) if evaluation.score > *score => {}
                Some((score, _)) if evaluation.score == *score => optimal_paths += 1,
                _ => {
                    best = Some((evaluation.score, path));
                    optimal_paths = 1;
                }
            }
        }
    }
    match (router.route(&request), best) {
        (Ok(set), Some((score, path))) => {
            let route = &set.routes[0];
            prop_assert!(set.exact, "seed {seed}: the search gave up exactness on a tiny graph");
            prop_assert_eq!(
                route.score_units,
                score,
                "seed {}: search {:?} against exhaustive {:?}",
                seed,
                route.legs.iter().map(|l| l.edge).collect::<Vec<_>>(),
                path
            );
            let edges: Vec<EdgeId> = route.legs.iter().map(|leg| leg.edge).collect();
            let evaluation = router.evaluate(&request, &edges);
            prop_assert!(evaluation.is_ok(), "seed {seed}: the returned route breaks a limit: {evaluation:?}");
            if optimal_paths == 1 {
                prop_assert_eq!(edges, path, "seed {}: a unique optimum must be found", seed);
            }
        }
        (Err(RouteError::NoRoute { .. } | RouteError::Unreachable(_)), None) => {
            // Nothing carries the whole amount: a split may, and its parts must add up exactly.
            if let Ok(split) = router.split(&request) {
                let fixed = if request.mode == Mode::Send { split.send } else { split.receive };
                prop_assert_eq!(fixed, request.amount, "seed {}: split parts do not add up", seed);
                for part in &split.parts {
                    prop_assert!(part.legs.iter().all(|leg| leg.send.is_positive() && leg.receive.is_positive()));
                }
            }
        }
        (Ok(set), None) => prop_assert!(
            false,
            "seed {seed}: the search found {:?} where the exhaustive search found nothing",
            set.routes[0].legs
        ),
        (Err(error), Some((_, path))) => {
            prop_assert!(false, "seed {seed}: the search failed ({error}) but {path:?} works")
        }
        (Err(error), None) => prop_assert!(false, "seed {seed}: unexpected error {error}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn search_matches_exhaustive(seed in any::<u64>()) {
        check(seed)?;
    }
}
