//! The actor runtime against the demo configuration's sandbox rails: an outage leaves routing
//! within 250 ms and recovery brings the rail back; a fee change flips a corridor's best route
//! without a restart; a crashed rail actor is restarted while payouts keep settling exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use railyard_actors::Runtime;
use railyard_actors::rail::{RailMsg, RailSupervisorMsg};
use railyard_actors::routing::RoutingMsg;
use railyard_config::{RailKind, TreasuryConfig};
use railyard_core::{Country, Currency, Decimal, FeeSchedule, Money};
use railyard_fx::{FxBook, RateHistory};
use railyard_routes::{Mode, RouteRequest};

fn c(code: &str) -> Currency {
    Currency::from_code(code).unwrap()
}

fn demo() -> TreasuryConfig {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/demo.toml");
    let mut config = railyard_config::load(std::path::Path::new(path)).unwrap();
    for rail in &mut config.rails {
        rail.timeout_ms = 300;
    }
    config
}

async fn start(config: TreasuryConfig) -> (Runtime, railyard_rails::Rails, Arc<FxBook>) {
    let rates = RateHistory::bundled_daily().latest();
    let fx = Arc::new(FxBook::build(&config.fx_providers, rates.clone()).unwrap());
    let rails = railyard_rails::build(&config, &rates).unwrap();
    let runtime = Runtime::start(Arc::new(config), fx.clone(), rails.registry.clone(), railyard_actors::PROBE_EVERY)
        .await
        .unwrap();
    (runtime, rails, fx)
}

fn available(runtime: &Runtime, rail: &str) -> Option<bool> {
    runtime.snapshot().live.get(rail).and_then(|state| state.available)
}

async fn wait_for(runtime: &Runtime, rail: &str, wanted: bool, limit: Duration) -> Duration {
    let started = Instant::now();
    while available(runtime, rail) != Some(wanted) {
        assert!(started.elapsed() < limit, "{rail} not {wanted} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed()
}

fn best_rails(runtime: &Runtime, from: &str, to: &str, amount_minor: i64, country: &str) -> Vec<String> {
    let snapshot = runtime.snapshot();
    let mut request =
        RouteRequest::payout(c(from), c(to), Money::from_minor(amount_minor, c(from)), Mode::Send, chrono::Utc::now());
    request.country = Some(Country::from_code(country).unwrap());
    match snapshot.router.route(&request) {
        Ok(set) => set.routes[0].legs.iter().map(|leg| leg.rail.clone()).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_leaves_routing_within_250ms_and_recovery_brings_it_back() {
    let (runtime, rails, _) = start(demo()).await;
    wait_for(&runtime, "sepa-inst", true, Duration::from_secs(5)).await;
    assert!(best_rails(&runtime, "EUR", "EUR", 50_000, "DE").contains(&"sepa-inst".to_string()));
    let sandbox = rails.sandboxes.iter().find(|(id, _)| id == "sepa-inst").unwrap().1.sandbox();
    sandbox.set_outage(true);
    let took = wait_for(&runtime, "sepa-inst", false, Duration::from_millis(1_000)).await;
    assert!(took <= Duration::from_millis(250), "outage reached routing after {took:?}");
    let rails_used = best_rails(&runtime, "EUR", "EUR", 50_000, "DE");
    assert!(!rails_used.contains(&"sepa-inst".to_string()), "{rails_used:?}");
    sandbox.set_outage(false);
    // Half-open: it comes back after consecutive healthy probes, not the first one.
    let back = wait_for(&runtime, "sepa-inst", true, Duration::from_secs(2)).await;
    assert!(back >= railyard_actors::PROBE_EVERY, "came back after {back:?}, before a second probe");
    runtime.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fee_change_flips_the_best_route_without_restart() {
    let config = demo();
    let (runtime, _rails, _) = start(config.clone()).await;
    let before = best_rails(&runtime, "USD", "BRL", 250_000, "BR");
    assert!(!before.is_empty());
    let winner = before.iter().find(|rail| config.rail(rail).is_some()).unwrap().clone();
    let mut changed = config.clone();
    let rail = changed.rails.iter_mut().find(|rail| rail.id.as_str() == winner).unwrap();
    for (currency, fee) in rail.fees.iter_mut() {
        *fee = FeeSchedule::new(
            Money::from_minor(50_000 * 10_i64.pow(currency.exponent()) / 100, *currency),
            Decimal::ZERO,
            None,
            None,
        )
        .unwrap();
    }
    let version = ractor::call!(runtime.routing, |reply| RoutingMsg::SetConfig {
        config: Box::new(changed),
        by: "treasury@test".into(),
        change: "fees raised".into(),
        reply
    })
    .unwrap()
    .unwrap();
    assert!(version > 0);
    let after = best_rails(&runtime, "USD", "BRL", 250_000, "BR");
    assert!(!after.contains(&winner), "{winner} still wins after its fee went to 500: {after:?}");
    let audit = ractor::call!(runtime.routing, |reply| RoutingMsg::Audit { reply }).unwrap();
    assert!(audit.iter().any(|entry| entry.actor == "treasury@test"), "{audit:?}");
    runtime.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_rail_actor_is_restarted() {
    let mut config = demo();
    config.rails.retain(|rail| rail.kind == RailKind::Instant);
    let (runtime, _rails, _) = start(config).await;
    wait_for(&runtime, "sepa-inst", true, Duration::from_secs(5)).await;
    assert!(runtime.rails["sepa-inst"].send(RailMsg::Crash));
    let supervisor = runtime.supervisors[&RailKind::Instant].clone();
    let started = Instant::now();
    loop {
        let restarts = ractor::call!(supervisor, |reply| RailSupervisorMsg::Restarts { reply }).unwrap();
        if restarts["sepa-inst"] == 1 && runtime.rails["sepa-inst"].send(RailMsg::Probe) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "not restarted: {restarts:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    runtime.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fx_actor_publishes_a_fresh_book_to_routing() {
    let config = demo();
    let (runtime, _rails, fx) = start(config.clone()).await;
    runtime.start_fx(Arc::new(config), Duration::from_secs(60)).await.unwrap();
    let started = Instant::now();
    while Arc::ptr_eq(&runtime.snapshot().fx, &fx) {
        assert!(started.elapsed() < Duration::from_secs(2), "routing still uses the first FX book");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    runtime.stop().await;
}
