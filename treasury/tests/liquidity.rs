//! Liquidity positions, alerts at both water marks (with their webhooks queued to the treasury
//! tenant), and rebalancing suggestions, on SQLite and PostgreSQL.

#[path = "../../store/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use railyard_config::{RailKind, TreasuryConfig};
use railyard_connector::Beneficiary;
use railyard_core::{Country, Currency, Decimal, Money, Sign};
use railyard_fx::{FxBook, RateHistory};
use railyard_saga::{AmountMode, Engine, EngineSettings, PayoutRequest, State};
use railyard_store::ledger::LedgerError;
use railyard_treasury::liquidity::{self, Level};

fn c(code: &str) -> Currency {
    Currency::from_code(code).unwrap()
}

fn money(text: &str, code: &str) -> Money {
    Money::parse(text, c(code), Sign::Any).unwrap()
}

/// The demo's instant rails, with marks close to the opening balances: rtp-us (3,000,000.00 USD)
/// goes low after 2,000.00 USD; sepa-inst (2,500,000.00 EUR) starts above a 2,000,000.00 EUR
/// high-water mark.
fn config() -> Arc<TreasuryConfig> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/demo.toml");
    let mut config = railyard_config::load(Path::new(path)).unwrap();
    config.rails.retain(|rail| rail.kind == RailKind::Instant);
    for account in &mut config.liquidity {
        if account.rail.as_str() == "rtp-us" {
            account.low_water = money("2999000.00", "USD");
            account.high_water = None;
        }
        if account.rail.as_str() == "sepa-inst" {
            account.high_water = Some(money("2000000.00", "EUR"));
        }
    }
    Arc::new(config)
}

fn engine(store: &railyard_store::Store, config: &Arc<TreasuryConfig>, fx: &Arc<FxBook>) -> Engine {
    let rates = RateHistory::bundled_daily().latest();
    let rails = railyard_rails::build(config, &rates).unwrap();
    let settings =
        EngineSettings::new("engine", Duration::from_secs(30), Duration::from_millis(50), 3, 3, Decimal::from(50));
    Engine::new(
        store.clone(),
        config.clone(),
        fx.clone(),
        rails.registry.clone(),
        settings,
        std::sync::Arc::new(railyard_store::vault::VaultKeys::generate()),
    )
}

async fn outbox_events(store: &railyard_store::Store) -> Vec<(String, String)> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT event, tenant FROM outbox WHERE event LIKE 'liquidity.%' ORDER BY created_at")
            .fetch_all(store.pool())
            .await
            .unwrap();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_at_both_marks_and_clear() {
    for db in common::databases().await {
        let config = config();
        let fx = Arc::new(FxBook::build(&config.fx_providers, RateHistory::bundled_daily().latest()).unwrap());
        let engine = engine(&db.store, &config, &fx);
        engine.ensure_accounts().await.unwrap();
        engine.fund_psp("demo-psp", money("100000.00", "USD"), "wire-1").await.unwrap();

        let positions = liquidity::positions(&db.store, &config).await.unwrap();
        let rtp = positions.iter().find(|position| position.rail == "rtp-us").unwrap();
        assert_eq!((rtp.available, rtp.level), (money("3000000.00", "USD"), Level::Normal));
        let sepa = positions.iter().find(|position| position.rail == "sepa-inst").unwrap();
        assert_eq!(sepa.level, Level::High);

        // The first check raises the high-water alert, once.
        let changes = liquidity::check(&db.store, &config).await.unwrap();
        assert_eq!(changes.len(), 1, "{}: {changes:?}", db.name);
        assert_eq!((changes[0].0.rail.as_str(), changes[0].1), ("sepa-inst", "liquidity.high"));
        assert!(liquidity::check(&db.store, &config).await.unwrap().is_empty());

        // A payout of 2,500.00 USD over rtp-us takes it below its low-water mark.
        let request = PayoutRequest {
            source: c("USD"),
            destination: c("USD"),
            amount: money("2500.00", "USD"),
            mode: AmountMode::Send,
            beneficiary: Beneficiary {
                name: "Maria Lopez".into(),
                account: "021000021-1234567890".into(),
                country: Country::from_code("US").unwrap(),
            },
            remittance: "payroll".into(),
            rail_kind: None,
            quote_id: None,
            originator: None,
            account_masked: None,
            submitted_by: None,
        };
        let accepted = engine.accept("demo-psp", "us-1", &request).await.unwrap();
        assert_eq!(engine.run(&accepted.payout_id).await.unwrap(), State::Completed, "{}", db.name);
        let changes = liquidity::check(&db.store, &config).await.unwrap();
        assert_eq!(changes.len(), 1, "{}: {changes:?}", db.name);
        assert_eq!((changes[0].0.rail.as_str(), changes[0].1), ("rtp-us", "liquidity.low"));
        assert_eq!(changes[0].0.threshold, money("2999000.00", "USD"));
        let open = liquidity::open_alerts(&db.store).await.unwrap();
        assert_eq!(open.len(), 2);

        // The suggestion: top rtp-us up (no other rail holds USD).
        let plan = liquidity::rebalance(
            &db.store,
            &config,
            &fx,
            Duration::from_secs(24 * 3600),
            Duration::from_secs(24 * 3600),
        )
        .await
        .unwrap();
        let rtp = plan.positions.iter().find(|projection| projection.position.rail == "rtp-us").unwrap();
        // 2,500.00 USD went out in the last 24 hours: as much is expected in the next 24.
        assert_eq!(rtp.projected_outflow.minor_units(), rtp.outflow_per_hour.minor_units() * 24);
        assert!(rtp.projected_outflow.minor_units() >= 250_000);
        assert!(rtp.shortfall.is_positive());
        // No other rail here holds USD: the cheapest conversion from a rail with money to spare.
        let suggestion = plan.suggestions.iter().find(|suggestion| suggestion.to_rail == "rtp-us").unwrap();
        assert_eq!(suggestion.receive, rtp.shortfall);
        assert_eq!(suggestion.action, "transfer", "{suggestion:?}");
        assert!(suggestion.fx_provider.is_some() && suggestion.fx_cost.is_positive(), "{suggestion:?}");
        assert_ne!(suggestion.send.currency(), c("USD"));
        // Whatever the plan proposes is covered, for every rail in need.
        for projection in plan.positions.iter().filter(|projection| projection.shortfall.is_positive()) {
            let received: i64 = plan
                .suggestions
                .iter()
                .filter(|suggestion| suggestion.to_rail == projection.position.rail)
                .map(|suggestion| suggestion.receive.minor_units())
                .sum();
            assert!(received >= projection.shortfall.minor_units(), "{}: {projection:?}", db.name);
        }

        // Treasury acts: top rtp-us up, sweep sepa-inst's idle money back; both alerts clear.
        engine
            .move_rail_liquidity("rtp-us", money("10000.00", "USD"), false, "wire-rtp-1", "treasury-test")
            .await
            .unwrap();
        engine
            .move_rail_liquidity("sepa-inst", money("600000.00", "EUR"), true, "sweep-sepa-1", "treasury-test")
            .await
            .unwrap();
        // The same reference again changes nothing; a sweep beyond the balance is refused.
        assert!(
            engine
                .move_rail_liquidity("rtp-us", money("10000.00", "USD"), false, "wire-rtp-1", "treasury-test")
                .await
                .is_err()
        );
        assert!(matches!(
            engine
                .move_rail_liquidity("sepa-inst", money("99000000.00", "EUR"), true, "sweep-sepa-2", "treasury-test")
                .await,
            Err(railyard_saga::EngineError::Ledger(LedgerError::Overdraft(_)))
        ));
        let changes = liquidity::check(&db.store, &config).await.unwrap();
        assert_eq!(changes.len(), 2, "{}: {changes:?}", db.name);
        assert!(changes.iter().all(|(alert, event)| *event == "liquidity.normal" && alert.cleared_at.is_some()));
        assert!(liquidity::open_alerts(&db.store).await.unwrap().is_empty());

        // Every change was queued as a webhook to the treasury tenant.
        let events = outbox_events(&db.store).await;
        let names: Vec<&str> = events.iter().map(|(event, _)| event.as_str()).collect();
        assert_eq!(names, ["liquidity.high", "liquidity.low", "liquidity.normal", "liquidity.normal"], "{}", db.name);
        assert!(events.iter().all(|(_, tenant)| tenant == "house"));
        let report = railyard_store::verify::verify(&db.store).await.unwrap();
        assert!(report.ok(), "{}: {report:?}", db.name);
    }
}
