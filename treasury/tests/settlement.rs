//! Settlement windows of a net rail on SQLite and PostgreSQL: a window collects payouts from two
//! PSPs, closes (opening the next), nets, and settles with balanced postings that restore the
//! rail's prefunded account; the report comes as JSON and CSV.

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
use railyard_treasury::settlement::{self, WindowState};

fn c(code: &str) -> Currency {
    Currency::from_code(code).unwrap()
}

fn money(text: &str) -> Money {
    Money::parse(text, c("USD"), Sign::Any).unwrap()
}

fn request(amount: &str) -> PayoutRequest {
    PayoutRequest {
        source: c("USD"),
        destination: c("USD"),
        amount: money(amount),
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
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_collects_nets_and_settles() {
    for db in common::databases().await {
        // The demo's instant rails: rtp-us settles net in 60-minute windows, sepa-inst gross.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/demo.toml");
        let mut config = railyard_config::load(Path::new(path)).unwrap();
        config.rails.retain(|rail| rail.kind == RailKind::Instant);
        let config: Arc<TreasuryConfig> = Arc::new(config);
        let rates = RateHistory::bundled_daily().latest();
        let fx = Arc::new(FxBook::build(&config.fx_providers, rates.clone()).unwrap());
        let rails = railyard_rails::build(&config, &rates).unwrap();
        let settings =
            EngineSettings::new("engine", Duration::from_secs(30), Duration::from_millis(50), 3, 3, Decimal::from(50));
        let engine = Engine::new(
            db.store.clone(),
            config.clone(),
            fx,
            rails.registry.clone(),
            settings,
            std::sync::Arc::new(railyard_store::vault::VaultKeys::generate()),
        );
        engine.ensure_accounts().await.unwrap();
        for tenant in ["demo-psp", "northwind-remit"] {
            engine.fund_psp(tenant, money("100000.00"), "wire-1").await.unwrap();
        }
        assert!(settlement::net_rails(&config).iter().any(|rail| rail.id.as_str() == "rtp-us"));
        assert!(matches!(
            settlement::close(&db.store, &config, "sepa-inst", "house/treasury").await,
            Err(settlement::SettlementError::NotNet(_))
        ));
        settlement::ensure_open(&db.store, &config).await.unwrap();
        let nostro = "nostro:rtp-us:USD";
        let opening = railyard_store::ledger::balance(db.store.pool(), nostro).await.unwrap().posted();

        let pay = |tenant: &'static str, key: &'static str, amount: &'static str| {
            let engine = &engine;
            async move {
                let accepted = engine.accept(tenant, key, &request(amount)).await.unwrap();
                assert_eq!(engine.run(&accepted.payout_id).await.unwrap(), State::Completed);
            }
        };
        pay("demo-psp", "a-1", "1000.00").await;
        pay("demo-psp", "a-2", "250.50").await;
        pay("northwind-remit", "b-1", "400.00").await;

        let closed = settlement::close(&db.store, &config, "rtp-us", "house/treasury").await.unwrap();
        assert_eq!((closed.number, closed.state), (1, WindowState::Closed), "{}", db.name);
        // A payout after the close belongs to the next window.
        pay("northwind-remit", "b-2", "99.00").await;
        let windows = settlement::windows(&db.store, Some("rtp-us")).await.unwrap();
        let open = windows.iter().find(|window| window.state == WindowState::Open).unwrap();
        assert_eq!(open.number, 2);
        assert_eq!(open.from_sequence, closed.to_sequence.unwrap());

        let spent = railyard_store::ledger::balance(db.store.pool(), nostro).await.unwrap().posted();
        let report = settlement::settle(&db.store, &closed.id, "house/treasury").await.unwrap();
        assert_eq!(report.payouts, 3, "{}: {report:?}", db.name);
        // A send-mode payout's rail leg carries the whole amount (the rail's fee comes out of what
        // the beneficiary receives).
        let net = report.positions.iter().find(|position| position.currency == c("USD")).unwrap().net;
        let demo = report.by_tenant.iter().find(|total| total.tenant == "demo-psp").unwrap();
        let northwind = report.by_tenant.iter().find(|total| total.tenant == "northwind-remit").unwrap();
        assert_eq!((demo.payouts, northwind.payouts), (2, 1));
        assert_eq!((demo.amount, northwind.amount), (money("1250.50"), money("400.00")));
        assert_eq!(demo.amount.checked_add(northwind.amount).unwrap(), net);
        assert_eq!(report.postings.len(), 1);
        assert_eq!(report.postings[0].amount, net);

        // The settlement restored the prefunded account by the window's net; the next window's
        // payout is still owed.
        let after = railyard_store::ledger::balance(db.store.pool(), nostro).await.unwrap().posted();
        assert_eq!(after, spent.checked_add(net).unwrap(), "{}", db.name);
        assert!(after.minor_units() < opening.minor_units());
        assert_eq!(settlement::window(&db.store, &closed.id).await.unwrap().state, WindowState::Settled);

        // Settling again changes nothing and returns the same report.
        assert_eq!(settlement::settle(&db.store, &closed.id, "house/treasury").await.unwrap(), report);
        assert_eq!(railyard_store::ledger::balance(db.store.pool(), nostro).await.unwrap().posted(), after);
        // The close and the one settlement are in the audit log, by whom, with what they did.
        let audit = railyard_store::audit::log(&db.store, 50).await.unwrap();
        let of = |action: &str| audit.iter().filter(|entry| entry.action == action).collect::<Vec<_>>();
        let (closes, settles) = (of("settlement.close"), of("settlement.settle"));
        assert_eq!((closes.len(), settles.len()), (1, 1), "{}: {audit:?}", db.name);
        assert_eq!(closes[0].actor, "house/treasury");
        assert!(
            closes[0].detail.starts_with("rtp-us:w1: journal entries")
                && closes[0].detail.ends_with("rtp-us:w2 opened")
        );
        assert_eq!(settles[0].detail, format!("rtp-us:w1: 3 payouts, net {net}"));
        assert!(railyard_store::audit::verify(&db.store).await.unwrap().intact());
        // An open window does not settle.
        assert!(matches!(
            settlement::settle(&db.store, &open.id, "house/treasury").await,
            Err(settlement::SettlementError::WrongState { .. })
        ));

        let csv = settlement::report_csv(&report);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "window,rail,line,tenant,currency,payouts,amount");
        assert!(
            lines.contains(&format!("rtp-us:w1,rtp-us,psp,demo-psp,USD,2,{}", demo.amount.amount_text()).as_str()),
            "{csv}"
        );
        assert!(lines.contains(&format!("rtp-us:w1,rtp-us,net,,USD,3,{}", net.amount_text()).as_str()), "{csv}");

        let verify = railyard_store::verify::verify(&db.store).await.unwrap();
        assert!(verify.ok(), "{}: {verify:?}", db.name);
    }
}
