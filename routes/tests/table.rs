//! Hand-computed routing cases: fees with caps, JPY and KWD exponents, deliver mode, hours, liquidity,
//! daily caps, kill switch, corridor rules, the treasury's fee limit, and a refused arbitrage config.
//! Each expected figure is worked out in the comment beside it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use railyard_config::{Days, OperatingHours, RailKind, RoutingSettings, TreasuryConfig, WeeklyHours, Window};
use railyard_core::{Currency, Decimal, FeeSchedule, Money, Rate, RoundingMode, Sign};
use railyard_fx::{FxBook, RateHistory};
use railyard_routes::{
    EdgeSpec, GraphBuilder, LiveState, Mode, NodeKey, Operator, OperatorKind, RailState, RouteError, RouteRequest,
    Router, build_router,
};

fn c(code: &str) -> Currency {
    Currency::from_code(code).unwrap()
}

fn m(text: &str, code: &str) -> Money {
    Money::parse(text, c(code), Sign::Any).unwrap()
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn node(code: &str, location: &str) -> NodeKey {
    NodeKey { currency: c(code), location: location.into() }
}

fn settings() -> RoutingSettings {
    RoutingSettings {
        reference_currency: c("EUR"),
        cost_weight: Decimal::ONE,
        latency_weight_per_second: Decimal::ZERO,
        risk_weight: Decimal::ZERO,
        max_hops: 4,
        max_total_fee_bps: None,
    }
}

fn per_eur() -> HashMap<Currency, Decimal> {
    [("EUR", "1"), ("USD", "1.1172"), ("JPY", "175.68"), ("KWD", "0.3421")]
        .iter()
        .map(|(code, value)| (c(code), value.parse().unwrap()))
        .collect()
}

struct Leg {
    from: NodeKey,
    to: NodeKey,
    fee: FeeSchedule,
    rate: Option<(&'static str, RoundingMode)>,
    maximum: Option<Money>,
    liquidity: Option<Money>,
    hours: OperatingHours,
}

fn leg(from: NodeKey, to: NodeKey, fee: FeeSchedule) -> Leg {
    Leg { from, to, fee, rate: None, maximum: None, liquidity: None, hours: OperatingHours::AlwaysOpen }
}

fn router(legs: Vec<Leg>) -> Router {
    let mut builder = GraphBuilder::new();
    for (index, leg) in legs.into_iter().enumerate() {
        let operator = builder.operator(Operator {
            id: format!("rail{index}"),
            kind: OperatorKind::Rail(RailKind::Instant),
            hours: leg.hours,
            available: true,
            countries: vec![],
        });
        let account = leg.liquidity.map(|amount| builder.account(format!("rail{index}"), amount));
        let conversion = leg.rate.map(|(value, mode)| {
            (Rate::new(leg.from.currency, leg.to.currency, value.parse().unwrap()).unwrap(), mode)
        });
        builder.edge(EdgeSpec {
            from: leg.from,
            to: leg.to,
            operator,
            fee: leg.fee,
            conversion,
            send_minimum: None,
            send_maximum: leg.maximum,
            send_account: None,
            receive_account: account,
            latency_ms: 1_000,
            success_probability: Decimal::ONE,
        });
    }
    Router::new(builder.build().unwrap(), &per_eur(), settings(), vec![]).unwrap()
}

fn send(
    router: &Router,
    from: &str,
    to: &str,
    amount: &str,
    when: &str,
) -> Result<railyard_routes::RouteSet, RouteError> {
    router.route(&RouteRequest::payout(c(from), c(to), m(amount, from), Mode::Send, at(when)))
}

fn deliver(router: &Router, from: &str, to: &str, amount: &str) -> railyard_routes::RouteSet {
    router
        .route(&RouteRequest::payout(c(from), c(to), m(amount, to), Mode::Deliver, at("2026-11-24T10:00:00Z")))
        .unwrap()
}

const TUESDAY: &str = "2026-11-24T10:00:00Z";

#[test]
fn fee_with_cap() {
    let fees = FeeSchedule::new(m("0.25", "USD"), Decimal::from(15), None, Some(m("15.00", "USD"))).unwrap();
    let router = router(vec![leg(node("USD", "ledger"), node("USD", "beneficiary"), fees)]);
    // 0.25 + 1000.00 x 0.0015 = 1.75
    let route = &send(&router, "USD", "USD", "1000.00", TUESDAY).unwrap().routes[0];
    assert_eq!((route.legs[0].fee, route.receive), (m("1.75", "USD"), m("998.25", "USD")));
    // 0.25 + 20000.00 x 0.0015 = 30.25, capped at 15.00
    let route = &send(&router, "USD", "USD", "20000.00", TUESDAY).unwrap().routes[0];
    assert_eq!((route.legs[0].fee, route.receive), (m("15.00", "USD"), m("19985.00", "USD")));
    // 999.99 would leave 999.99 - (0.25 + ceil(1.499985)) = 998.24: 1000.00 is the least that delivers 998.25.
    let route = &deliver(&router, "USD", "USD", "998.25").routes[0];
    assert_eq!((route.send, route.legs[0].fee), (m("1000.00", "USD"), m("1.75", "USD")));
    // Cost at mid is the fee itself in one currency.
    assert_eq!(route.cost, m("1.75", "USD"));
}

#[test]
fn yen_has_no_minor_unit() {
    let rail = FeeSchedule::new(m("150", "JPY"), Decimal::ZERO, None, None).unwrap();
    let mut fx = leg(node("EUR", "ledger"), node("JPY", "ledger"), FeeSchedule::free(c("EUR")));
    fx.rate = Some(("175.68", RoundingMode::Floor));
    let router = router(vec![fx, leg(node("JPY", "ledger"), node("JPY", "beneficiary"), rail)]);
    // 12.34 x 175.68 = 2167.8912 → 2167 yen (floor) → minus 150 = 2017.
    let route = &send(&router, "EUR", "JPY", "12.34", TUESDAY).unwrap().routes[0];
    assert_eq!(route.legs[0].receive, m("2167", "JPY"));
    assert_eq!(route.receive, m("2017", "JPY"));
    // Delivering 2017 needs 2167 yen before the fee: 2167 / 175.68 = 12.33492... → 12.34 EUR (12.33 gives 2166).
    assert_eq!(deliver(&router, "EUR", "JPY", "2017").routes[0].send, m("12.34", "EUR"));
}

#[test]
fn kuwaiti_dinar_has_three_decimals() {
    let rail = FeeSchedule::new(m("0.500", "KWD"), Decimal::ZERO, None, None).unwrap();
    let mut fx = leg(node("USD", "ledger"), node("KWD", "ledger"), FeeSchedule::free(c("USD")));
    fx.rate = Some(("0.3068", RoundingMode::HalfEven));
    let router = router(vec![fx, leg(node("KWD", "ledger"), node("KWD", "beneficiary"), rail)]);
    // 1234.56 x 0.3068 = 378.763008 → 378.763 → minus 0.500 = 378.263.
    let route = &send(&router, "USD", "KWD", "1234.56", TUESDAY).unwrap().routes[0];
    assert_eq!(route.legs[0].receive, m("378.763", "KWD"));
    assert_eq!(route.receive, m("378.263", "KWD"));
}

#[test]
fn rail_closed_at_the_requested_time() {
    let fees = FeeSchedule::new(m("0.30", "EUR"), Decimal::ZERO, None, None).unwrap();
    let mut weekdays = leg(node("EUR", "ledger"), node("EUR", "beneficiary"), fees);
    weekdays.hours = OperatingHours::Weekly(WeeklyHours {
        timezone: "Europe/Zurich".parse().unwrap(),
        windows: vec![Window { days: Days::parse("mon-fri").unwrap(), open_minute: 6 * 60, close_minute: 18 * 60 }],
        cutoff_minute: None,
        holidays: Default::default(),
    });
    let router = router(vec![weekdays]);
    assert!(send(&router, "EUR", "EUR", "100.00", TUESDAY).is_ok());
    let error = send(&router, "EUR", "EUR", "100.00", "2026-11-28T10:00:00Z").unwrap_err();
    let RouteError::NoRoute { blocked, .. } = &error else { panic!("{error}") };
    assert!(blocked[0].reason.contains("closed: outside operating hours (Sat"), "{error}");
}

#[test]
fn liquidity_moves_the_payment_to_the_next_rail() {
    let cheap = FeeSchedule::new(m("0.10", "EUR"), Decimal::ZERO, None, None).unwrap();
    let dear = FeeSchedule::new(m("2.00", "EUR"), Decimal::ZERO, None, None).unwrap();
    let mut thin = leg(node("EUR", "ledger"), node("EUR", "beneficiary"), cheap);
    thin.liquidity = Some(m("500.00", "EUR"));
    let router = router(vec![thin, leg(node("EUR", "ledger"), node("EUR", "beneficiary"), dear)]);
    assert_eq!(send(&router, "EUR", "EUR", "400.00", TUESDAY).unwrap().routes[0].legs[0].rail, "rail0");
    // 600.00 - 0.10 = 599.90 would need more than the 500.00 rail0 holds.
    let set = router.route(&{
        let mut request = RouteRequest::payout(c("EUR"), c("EUR"), m("600.00", "EUR"), Mode::Send, at(TUESDAY));
        request.alternatives = 1;
        request
    });
    let set = set.unwrap();
    assert_eq!(set.routes[0].legs[0].rail, "rail1");
    assert_eq!(set.routes.len(), 1, "rail0 cannot carry it, so it is no alternative");
}

#[test]
fn split_shares_liquidity_between_parts() {
    let fees = FeeSchedule::new(m("1.00", "EUR"), Decimal::ZERO, None, None).unwrap();
    let mut first = leg(node("EUR", "ledger"), node("EUR", "beneficiary"), fees);
    first.maximum = Some(m("1000.00", "EUR"));
    first.liquidity = Some(m("1500.00", "EUR"));
    let mut second = leg(node("EUR", "ledger"), node("EUR", "beneficiary"), fees);
    second.maximum = Some(m("800.00", "EUR"));
    let router = router(vec![first, second]);
    // 2500 EUR: no route carries it whole. The widest route is rail0 (1000 per payment): it sends
    // 1000 and delivers 999, leaving 501 of its liquidity, so rail0 could carry only 502 more; rail1
    // then takes 800, and the remaining 700 fits rail1 in one payment. Three parts, and no route
    // carries more than 1000, so three is the fewest.
    let request = RouteRequest::payout(c("EUR"), c("EUR"), m("2500.00", "EUR"), Mode::Send, at(TUESDAY));
    assert!(matches!(router.route(&request), Err(RouteError::NoRoute { .. })));
    let split = router.split(&request).unwrap();
    assert_eq!(split.send, m("2500.00", "EUR"));
    let delivered_by_rail0: i64 =
        split.parts.iter().filter(|part| part.legs[0].rail == "rail0").map(|part| part.receive.minor_units()).sum();
    assert!(delivered_by_rail0 <= 150_000, "rail0 delivered {delivered_by_rail0} from 1500.00 of liquidity");
    assert!(split.parts.iter().all(|part| part.legs[0].send.minor_units() <= 100_000));
    assert_eq!(split.parts.len(), 3);
    assert!(split.minimal);
}

const DEMO: &str = include_str!("../../config/demo.toml");

fn demo(text: &str) -> TreasuryConfig {
    railyard_config::parse(text, "demo.toml").unwrap()
}

fn demo_router(config: &TreasuryConfig, live: &LiveState) -> Router {
    let fx = FxBook::build(&config.fx_providers, RateHistory::bundled_daily().latest()).unwrap();
    build_router(config, &fx, live).unwrap()
}

#[test]
fn kill_switch_and_daily_cap_take_a_rail_out() {
    let config = demo(DEMO);
    let request = RouteRequest::payout(c("EUR"), c("EUR"), m("1000.00", "EUR"), Mode::Send, at(TUESDAY));
    assert_eq!(demo_router(&config, &LiveState::new()).route(&request).unwrap().routes[0].legs[0].rail, "sepa-inst");
    let killed: LiveState =
        [("sepa-inst".to_string(), RailState { available: Some(false), ..Default::default() })].into();
    assert_ne!(demo_router(&config, &killed).route(&request).unwrap().routes[0].legs[0].rail, "sepa-inst");
    let mut used = RailState::default();
    used.daily_used.insert(c("EUR"), m("19999500.00", "EUR"));
    let capped: LiveState = [("sepa-inst".to_string(), used)].into();
    assert_ne!(demo_router(&config, &capped).route(&request).unwrap().routes[0].legs[0].rail, "sepa-inst");
}

#[test]
fn corridor_rules_restrict_and_deny_wins_wherever_it_is() {
    let text = DEMO.replacen("[[corridors]]", "[[corridors]]\nfrom = \"*\"\nto = \"EUR\"\naction = \"restrict\"\nrails = [\"visa-direct\"]\nreason = \"test\"\n\n[[corridors]]", 1);
    let router = demo_router(&demo(&text), &LiveState::new());
    let request = RouteRequest::payout(c("EUR"), c("EUR"), m("1000.00", "EUR"), Mode::Send, at(TUESDAY));
    assert_eq!(router.route(&request).unwrap().routes[0].legs[0].rail, "visa-direct");
    let mut korea = request.clone();
    korea.country = Some("KP".parse().unwrap());
    assert!(matches!(router.route(&korea), Err(RouteError::CorridorDenied { .. })));
}

#[test]
fn treasury_fee_limit() {
    let text = DEMO.replacen("max_total_fee_bps = \"500\"", "max_total_fee_bps = \"5\"", 1);
    let router = demo_router(&demo(&text), &LiveState::new());
    // USD→BRL costs about 0.5 %: far above a 0.05 % limit.
    let request = RouteRequest::payout(c("USD"), c("BRL"), m("2500.00", "USD"), Mode::Send, at(TUESDAY));
    assert!(matches!(router.route(&request), Err(RouteError::FeeLimit { .. })));
}

#[test]
fn arbitrage_configuration_is_refused_before_routing() {
    let text = DEMO.replacen(
        "pairs = [\"USD/HKD\"",
        "fixed_rates = { \"USD/BRL\" = \"6.0\" }\npairs = [\"USD/BRL\", \"USD/HKD\"",
        1,
    );
    let config = demo(&text);
    let error = FxBook::build(&config.fx_providers, RateHistory::bundled_daily().latest()).unwrap_err();
    assert!(error.to_string().contains("arbitrage cycle"), "{error}");
}

#[test]
fn alternatives_say_why_they_lost() {
    let router = demo_router(&demo(DEMO), &LiveState::new());
    let mut request = RouteRequest::payout(c("USD"), c("BRL"), m("2500.00", "USD"), Mode::Send, at(TUESDAY));
    request.alternatives = 3;
    let set = router.route(&request).unwrap();
    assert_eq!(set.routes.len(), 4);
    assert!(set.routes[0].why_not_best.is_none());
    for pair in set.routes.windows(2) {
        assert!(pair[0].score_units <= pair[1].score_units, "alternatives come in score order");
    }
    for route in &set.routes[1..] {
        assert!(route.why_not_best.as_deref().unwrap().starts_with("scores "), "{:?}", route.why_not_best);
    }
    let paths: Vec<Vec<u32>> = set.routes.iter().map(|r| r.legs.iter().map(|l| l.edge).collect()).collect();
    let mut unique = paths.clone();
    unique.dedup();
    assert_eq!(unique.len(), paths.len(), "alternatives are distinct routes");
}

#[test]
fn graph_refuses_an_account_one_route_could_draw_twice() {
    let mut builder = GraphBuilder::new();
    let operator = builder.operator(Operator {
        id: "r".into(),
        kind: OperatorKind::Rail(RailKind::Card),
        hours: OperatingHours::AlwaysOpen,
        available: true,
        countries: vec![],
    });
    let account = builder.account("shared".into(), m("100.00", "EUR"));
    for (from, to) in [(node("EUR", "a"), node("EUR", "b")), (node("EUR", "b"), node("EUR", "c"))] {
        builder.edge(EdgeSpec {
            from,
            to,
            operator,
            fee: FeeSchedule::free(c("EUR")),
            conversion: None,
            send_minimum: None,
            send_maximum: None,
            send_account: None,
            receive_account: Some(account),
            latency_ms: 1,
            success_probability: Decimal::ONE,
        });
    }
    assert!(builder.build().unwrap_err().to_string().contains("account shared is drawn on by"));
}
