//! The actor runtime against the demo configuration's sandbox rails: an outage leaves routing
//! within 250 ms and recovery brings the rail back; a fee change flips a corridor's best route
//! without a restart; a crashed rail actor is restarted while payouts keep settling exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use railyard_actors::change::{ChangeErrorKind, FeeFields, SpreadFields, TreasuryChange};
use railyard_actors::rail::{RailMsg, RailSupervisorMsg};
use railyard_actors::routing::RoutingMsg;
use railyard_actors::{Runtime, RuntimeOptions};
use railyard_config::{RailKind, TreasuryConfig};
use railyard_core::{Country, Currency, Decimal, Money};
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
    let runtime =
        Runtime::start(Arc::new(config), fx.clone(), rails.registry.clone(), Default::default()).await.unwrap();
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
    let rail = config.rail(&winner).unwrap();
    for currency in rail.fees.keys() {
        let fields = FeeFields { fixed: "500".into(), bps: "0".into(), min: None, max: None };
        let change = TreasuryChange::fee(&winner, currency.code(), &fields).unwrap();
        let applied =
            ractor::call!(runtime.routing, |reply| RoutingMsg::Apply { change, by: "treasury@test".into(), reply })
                .unwrap()
                .unwrap();
        assert!(applied.version > 0);
        assert_eq!(
            applied.after["fixed"],
            Money::parse("500", *currency, railyard_core::Sign::Positive).unwrap().amount_text()
        );
    }
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

/// The rate a provider's conversion quotes in the routing snapshot.
fn rate(runtime: &Runtime, provider: &str, base: &str, quote: &str) -> Decimal {
    runtime.snapshot().fx.conversion(provider, c(base), c(quote)).unwrap().rate.value()
}

/// A spread change reaches the FX book routing uses, survives a rate refresh, is recorded in the
/// store with its audit entry, and is laid over the file configuration again by `restore`; a
/// spread that is out of range or names a pair the provider does not quote changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spread_change_is_applied_recorded_and_restored() {
    let path = std::env::temp_dir().join(format!("railyard_spread_{}.db", std::process::id()));
    let db = format!("sqlite:{}", path.display());
    let store = railyard_store::Store::open(&db, &Default::default()).await.unwrap();
    let config = demo();
    let rates = RateHistory::bundled_daily().latest();
    let fx = Arc::new(FxBook::build(&config.fx_providers, rates.clone()).unwrap());
    let rails = railyard_rails::build(&config, &rates).unwrap();
    let options = RuntimeOptions { store: Some(store.clone()), ..Default::default() };
    let runtime = Runtime::start(Arc::new(config.clone()), fx, rails.registry.clone(), options).await.unwrap();

    let before = rate(&runtime, "atlas-fx", "EUR", "BRL");
    let widen = SpreadFields { spread_bps: "300".into(), pair: Some("BRL/EUR".into()) };
    let change = TreasuryChange::provider_spread("atlas-fx", &widen).unwrap();
    let applied =
        ractor::call!(runtime.routing, |reply| RoutingMsg::Apply { change, by: "house/treasury".into(), reply })
            .unwrap()
            .unwrap();
    assert_eq!(applied.before["spread_bps"], "60", "{applied:?}");
    assert_eq!(applied.after["pair"], "EUR/BRL", "stored in the provider's orientation: {applied:?}");
    let widened = rate(&runtime, "atlas-fx", "EUR", "BRL");
    assert!(widened < before, "a wider spread gives fewer BRL per EUR: {before} -> {widened}");
    // Both directions move; other pairs do not.
    assert!(rate(&runtime, "atlas-fx", "BRL", "EUR") < fx_before_reverse(&rates));
    assert_eq!(
        rate(&runtime, "atlas-fx", "EUR", "USD"),
        FxBook::build(&config.fx_providers, rates.clone())
            .unwrap()
            .conversion("atlas-fx", c("EUR"), c("USD"))
            .unwrap()
            .rate
            .value()
    );
    // A rate refresh rebuilds the book with the spread in force, not the file's.
    let _ = runtime.routing.send_message(RoutingMsg::SetRates { rates: rates.clone() });
    let version = runtime.snapshot().version;
    let started = Instant::now();
    while runtime.snapshot().version == version {
        assert!(started.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(rate(&runtime, "atlas-fx", "EUR", "BRL"), widened);

    // Refusals: nothing changes, nothing is stored.
    let out_of_range = SpreadFields { spread_bps: "10000".into(), pair: None };
    assert_eq!(TreasuryChange::provider_spread("atlas-fx", &out_of_range).unwrap_err().field, "spread_bps");
    let not_quoted = TreasuryChange::provider_spread(
        "atlas-fx",
        &SpreadFields { spread_bps: "5".into(), pair: Some("HKD/THB".into()) },
    )
    .unwrap();
    let refused = ractor::call!(runtime.routing, |reply| RoutingMsg::Apply {
        change: not_quoted,
        by: "house/treasury".into(),
        reply
    })
    .unwrap()
    .unwrap_err();
    assert_eq!((refused.kind, refused.field.as_str()), (ChangeErrorKind::Invalid, "pair"), "{refused:?}");
    let unknown =
        TreasuryChange::provider_spread("nobody-fx", &SpreadFields { spread_bps: "5".into(), pair: None }).unwrap();
    let refused = ractor::call!(runtime.routing, |reply| RoutingMsg::Apply {
        change: unknown,
        by: "house/treasury".into(),
        reply
    })
    .unwrap()
    .unwrap_err();
    assert_eq!(refused.kind, ChangeErrorKind::NotFound);
    assert_eq!(rate(&runtime, "atlas-fx", "EUR", "BRL"), widened);
    runtime.stop().await;

    // Stored: one setting, audited in the same chain.
    let settings = railyard_store::settings::list(&store).await.unwrap();
    assert_eq!(settings.len(), 1, "{settings:?}");
    assert_eq!(settings[0].key, "fx_spread/atlas-fx/BRL/EUR");
    assert_eq!(settings[0].changed_by, "house/treasury");
    let log = store.audit_log(10).await.unwrap();
    let actions: Vec<&str> = log.iter().map(|entry| entry.action.as_str()).collect();
    assert!(actions.contains(&"treasury.fx_spread"), "{actions:?}");
    assert!(actions.contains(&"treasury.fx_spread.refused"), "{actions:?}");

    // Restored over the file's configuration.
    let mut restored = demo();
    let rows: Vec<(String, String)> = settings.iter().map(|s| (s.key.clone(), s.value.clone())).collect();
    let warnings = railyard_actors::change::restore(&mut restored, &rows, |_| Ok(()));
    assert!(warnings.is_empty(), "{warnings:?}");
    let provider = restored.fx_provider("atlas-fx").unwrap();
    assert_eq!(provider.spread_for(c("BRL"), c("EUR")), Decimal::from(300));
    // A stored setting for a rail the file no longer has is skipped with a warning.
    let stale = vec![("fee/gone-rail/EUR".to_string(), r#"{"fixed":"1","bps":"0"}"#.to_string())];
    let warnings = railyard_actors::change::restore(&mut restored, &stale, |_| Ok(()));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("gone-rail"), "{warnings:?}");
    store.pool().close().await;
    for suffix in ["", "-wal", "-shm", "-intake", "-intake-wal", "-intake-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

fn fx_before_reverse(rates: &railyard_fx::ReferenceRates) -> Decimal {
    FxBook::build(&demo().fx_providers, rates.clone())
        .unwrap()
        .conversion("atlas-fx", c("BRL"), c("EUR"))
        .unwrap()
        .rate
        .value()
}

/// An engine over a fresh SQLite ledger (accounts opened and funded from the configuration) and the
/// runtime reading that ledger.
struct Ledgered {
    path: std::path::PathBuf,
    config: Arc<TreasuryConfig>,
    engine: railyard_saga::Engine,
    runtime: Runtime,
}

impl Ledgered {
    async fn start(config: TreasuryConfig, name: &str) -> Ledgered {
        let path = std::env::temp_dir().join(format!("railyard_{name}_{}.db", std::process::id()));
        for suffix in ["", "-wal", "-shm", "-intake", "-intake-wal", "-intake-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let db = format!("sqlite:{}", path.display());
        let store = railyard_store::Store::open(&db, &Default::default()).await.unwrap();
        let config = Arc::new(config);
        let rates = RateHistory::bundled_daily().latest();
        let fx = Arc::new(FxBook::build(&config.fx_providers, rates.clone()).unwrap());
        let rails = railyard_rails::build(&config, &rates).unwrap();
        let engine = railyard_saga::Engine::new(
            store.clone(),
            config.clone(),
            fx.clone(),
            rails.registry.clone(),
            railyard_saga::EngineSettings::new(
                name,
                Duration::from_secs(30),
                Duration::from_millis(100),
                3,
                3,
                Decimal::from(50),
            ),
            Arc::new(railyard_store::vault::VaultKeys::generate()),
        );
        engine.ensure_accounts().await.unwrap();
        let options = RuntimeOptions { store: Some(store.clone()), ..Default::default() };
        let runtime = Runtime::start(config.clone(), fx, rails.registry.clone(), options).await.unwrap();
        Ledgered { path, config, engine, runtime }
    }

    async fn stop(self) {
        self.runtime.stop().await;
        for suffix in ["", "-wal", "-shm", "-intake", "-intake-wal", "-intake-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}

/// Routing follows the rails' liquidity in the ledger: once most of SEPA Instant's prefunded EUR
/// has been swept out, a payout larger than what is left is no longer routed to it (within a
/// refresh or two, before any payout has to fail reserving it), while a small one still is; a
/// top-up brings the large one back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_follows_the_rails_liquidity() {
    let ledger = Ledgered::start(demo(), "liquidity").await;
    let (config, engine, runtime) = (ledger.config.clone(), &ledger.engine, &ledger.runtime);
    wait_for(runtime, "sepa-inst", true, Duration::from_secs(5)).await;
    let eur = |minor: i64| Money::from_minor(minor, c("EUR"));
    let prefunded = config.liquidity_for("sepa-inst", c("EUR")).unwrap().prefunded;
    // 50,000.00 EUR: within the prefunded amount.
    assert!(best_rails(runtime, "EUR", "EUR", 5_000_000, "DE").contains(&"sepa-inst".to_string()));

    // Sweep all but 1,000.00 EUR out of the rail.
    let keep = eur(100_000);
    let sweep = prefunded.checked_sub(keep).unwrap();
    engine.move_rail_liquidity("sepa-inst", sweep, true, "sweep-1", "house/treasury").await.unwrap();
    let started = Instant::now();
    while runtime.snapshot().live.get("sepa-inst").and_then(|state| state.liquidity.get(&c("EUR")).copied())
        != Some(keep)
    {
        assert!(started.elapsed() < Duration::from_secs(3), "routing never saw the sweep");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The snapshot with it follows within a rebuild tick.
    tokio::time::sleep(railyard_actors::routing::REBUILD_TICK * 2).await;
    let large = best_rails(runtime, "EUR", "EUR", 5_000_000, "DE");
    assert!(
        !large.contains(&"sepa-inst".to_string()),
        "50,000.00 EUR still routed to sepa-inst with 1,000.00 left: {large:?}"
    );
    let small = best_rails(runtime, "EUR", "EUR", 50_000, "DE");
    assert!(small.contains(&"sepa-inst".to_string()), "500.00 EUR fits in what is left: {small:?}");

    // A top-up, and the large payout goes back to it.
    engine.move_rail_liquidity("sepa-inst", sweep, false, "top-up-1", "house/treasury").await.unwrap();
    let started = Instant::now();
    while !best_rails(runtime, "EUR", "EUR", 5_000_000, "DE").contains(&"sepa-inst".to_string()) {
        assert!(started.elapsed() < Duration::from_secs(3), "routing never saw the top-up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ledger.stop().await;
}

/// Routing counts what each rail has been given today against its daily cap: after 600.00 EUR has
/// gone out on SEPA Instant under a 1,000.00 EUR cap, a 500.00 EUR payout is routed elsewhere while
/// a 300.00 EUR one still fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_counts_the_days_use_against_a_rails_daily_cap() {
    let eur = |minor: i64| Money::from_minor(minor, c("EUR"));
    let mut config = demo();
    let sepa = config.rails.iter_mut().find(|rail| rail.id.as_str() == "sepa-inst").unwrap();
    let limits = sepa.limits.get_mut(&c("EUR")).unwrap();
    limits.maximum = eur(80_000);
    limits.daily_cap = Some(eur(100_000));
    let ledger = Ledgered::start(config, "daily_cap").await;
    let (engine, runtime) = (&ledger.engine, &ledger.runtime);
    wait_for(runtime, "sepa-inst", true, Duration::from_secs(5)).await;
    tokio::time::sleep(railyard_actors::routing::REBUILD_TICK * 2).await;
    assert!(best_rails(runtime, "EUR", "EUR", 50_000, "DE").contains(&"sepa-inst".to_string()));

    let request = railyard_saga::PayoutRequest {
        source: c("EUR"),
        destination: c("EUR"),
        amount: eur(60_000),
        mode: railyard_saga::AmountMode::Send,
        beneficiary: railyard_connector::Beneficiary {
            name: "Jonas Weber".into(),
            account: "DE89370400440532013000".into(),
            country: Country::from_code("DE").unwrap(),
        },
        remittance: "invoice 2026-118".into(),
        rail_kind: None,
        quote_id: None,
        originator: None,
        account_masked: None,
        submitted_by: None,
    };
    engine.fund_psp("demo-psp", eur(1_000_000), "fund-1").await.unwrap();
    let accepted = engine.accept("demo-psp", "cap-1", &request).await.unwrap();
    let mut state = engine.run(&accepted.payout_id).await.unwrap();
    for _ in 0..50 {
        if state.terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        state = engine.run(&accepted.payout_id).await.unwrap();
    }
    let payout = engine.payout(&accepted.payout_id).await.unwrap();
    assert_eq!(state, railyard_saga::State::Completed, "{:?}", payout.reason);

    let started = Instant::now();
    while runtime.snapshot().live.get("sepa-inst").and_then(|state| state.daily_used.get(&c("EUR")).copied())
        != Some(eur(60_000))
    {
        assert!(started.elapsed() < Duration::from_secs(3), "routing never counted the 600.00 EUR sent on sepa-inst");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(railyard_actors::routing::REBUILD_TICK * 2).await;
    let over = best_rails(runtime, "EUR", "EUR", 50_000, "DE");
    assert!(!over.contains(&"sepa-inst".to_string()), "500.00 EUR routed past the 400.00 EUR left today: {over:?}");
    let under = best_rails(runtime, "EUR", "EUR", 30_000, "DE");
    assert!(under.contains(&"sepa-inst".to_string()), "300.00 EUR fits in today's cap: {under:?}");
    ledger.stop().await;
}
