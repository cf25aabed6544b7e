//! The conformance kit against the CBDC rail, in process and over loopback; and a cross-token
//! payout settled payment-versus-payment in one block.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use railyard_cbdc::connector::CbdcConnector;
use railyard_cbdc::rail::{CbdcRail, CbdcRailConfig, lp_wallet};
use railyard_config::RailKind;
use railyard_connector::faults::FaultPlan;
use railyard_connector::kit::{self, KitRail};
use railyard_connector::sandbox::{HttpControl, SandboxControl};
use railyard_connector::transport::{self, RailService, Server, Transport};
use railyard_connector::{Beneficiary, Capabilities, Connector, IdempotencyKey, Leg, Limit, Outcome, ReasonCode};
use railyard_core::{Country, Currency, Decimal, FeeSchedule, Money, Rate, RoundingMode};

fn c(code: &str) -> Currency {
    Currency::from_code(code).unwrap()
}

fn config() -> CbdcRailConfig {
    let tokens = [c("USD"), c("CNY"), c("HKD")];
    CbdcRailConfig {
        rail: "mbridge".into(),
        currencies: tokens.to_vec(),
        house_balances: tokens.iter().map(|token| Money::from_minor(1_000_000_000, *token)).collect(),
        liquidity: tokens.iter().map(|token| Money::from_minor(1_000_000_000, *token)).collect(),
        pvp_rates: vec![
            Rate::new(c("USD"), c("CNY"), Decimal::new(7_152, 3)).unwrap(),
            Rate::new(c("USD"), c("HKD"), Decimal::new(7_8012, 4)).unwrap(),
        ],
        fees: tokens
            .iter()
            .map(|token| FeeSchedule::new(Money::from_minor(10, *token), Decimal::ZERO, None, None).unwrap())
            .collect(),
        maximum: tokens.iter().map(|token| Money::from_minor(100_000_000, *token)).collect(),
        conversion_rounding: RoundingMode::TowardZero,
        faults: FaultPlan::default(),
    }
}

fn capabilities() -> Capabilities {
    let tokens = vec![c("USD"), c("CNY"), c("HKD")];
    Capabilities {
        rail: "mbridge".into(),
        kind: RailKind::Cbdc,
        currencies: tokens.clone(),
        payout_currencies: tokens.clone(),
        countries: Vec::new(),
        limits: tokens
            .iter()
            .map(|token| Limit {
                minimum: Money::from_minor(100, *token),
                maximum: Money::from_minor(100_000_000, *token),
            })
            .collect(),
        fees: config().fees,
        supports_cancel: false,
        timeout: Duration::from_millis(400),
    }
}

struct CbdcKit {
    connector: Arc<CbdcConnector>,
    control: Box<dyn SandboxControl>,
    _server: Option<Server>,
}

impl CbdcKit {
    async fn start(loopback: bool) -> (CbdcKit, Arc<CbdcRail>) {
        let rail = Arc::new(CbdcRail::new(config()).unwrap());
        let (transport, control, server): (Transport, Box<dyn SandboxControl>, Option<Server>) = if loopback {
            let server = transport::spawn_server(rail.clone(), "127.0.0.1:0").await.unwrap();
            let address = server.address.to_string();
            (Transport::http(&address), Box::new(HttpControl::new(&address)), Some(server))
        } else {
            let service: Arc<dyn RailService> = rail.clone();
            (Transport::in_process(service), Box::new(rail.sandbox.clone()), None)
        };
        let connector = Arc::new(CbdcConnector::new(capabilities(), transport));
        connector.open_wallet("wei-cny", c("CNY")).await.unwrap();
        connector.open_wallet("ana-usd", c("USD")).await.unwrap();
        (CbdcKit { connector, control, _server: server }, rail)
    }
}

impl KitRail for CbdcKit {
    fn connector(&self) -> Arc<dyn Connector> {
        self.connector.clone()
    }
    fn control(&self) -> &dyn SandboxControl {
        self.control.as_ref()
    }
    fn valid_leg(&self, key: IdempotencyKey) -> Leg {
        Leg {
            key,
            amount: Money::from_minor(50_000, c("USD")),
            payout_currency: c("CNY"),
            beneficiary: Beneficiary {
                name: "Wei Zhang".into(),
                account: "wei-cny".into(),
                country: Country::from_code("CN").unwrap(),
            },
            remittance: "invoice 77".into(),
            instructed_at: Utc::now(),
        }
    }
    fn reason_samples(&self) -> Vec<(String, ReasonCode)> {
        [
            ("unknown_wallet", ReasonCode::InvalidAccount),
            ("frozen_wallet", ReasonCode::Regulatory),
            ("insufficient_balance", ReasonCode::InsufficientFunds),
            ("over_limit", ReasonCode::LimitExceeded),
            ("ledger_halted", ReasonCode::RailUnavailable),
        ]
        .into_iter()
        .map(|(code, common)| (code.to_string(), common))
        .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_in_process() {
    let (kit_rail, rail) = CbdcKit::start(false).await;
    let report = kit::run(&kit_rail).await;
    println!("{report}");
    report.assert_passed();
    rail.verify().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_loopback() {
    let (kit_rail, rail) = CbdcKit::start(true).await;
    kit::run(&kit_rail).await.assert_passed();
    rail.verify().unwrap();
}

#[tokio::test]
async fn cross_token_payout_settles_both_legs_in_one_block_or_neither() {
    let (kit_rail, rail) = CbdcKit::start(false).await;
    let lp_usd = rail.balance(&lp_wallet(c("USD"))).unwrap();
    let lp_cny = rail.balance(&lp_wallet(c("CNY"))).unwrap();
    let blocks = rail.block_count();
    let leg = kit_rail.valid_leg(IdempotencyKey::new("pvp-1").unwrap());
    let Outcome::Executed(execution) = kit_rail.connector.submit(&leg).await else { panic!() };
    // 500.00 USD less a 0.10 USD fee, at 7.152: 3575.28 CNY (toward zero).
    assert_eq!(execution.receive, Money::from_minor(357_528, c("CNY")));
    assert_eq!(rail.block_count(), blocks + 1, "both legs and the fee in one block");
    assert_eq!(rail.balance("wei-cny").unwrap(), execution.receive);
    assert_eq!(rail.balance(&lp_wallet(c("USD"))).unwrap().minor_units() - lp_usd.minor_units(), 49_990);
    assert_eq!(lp_cny.minor_units() - rail.balance(&lp_wallet(c("CNY"))).unwrap().minor_units(), 357_528);
    // A frozen beneficiary: the block is refused whole, the LP and the house keep everything.
    rail.freeze("wei-cny", true).unwrap();
    let house_before = rail.balance("house-usd").unwrap();
    let frozen = kit_rail.valid_leg(IdempotencyKey::new("pvp-2").unwrap());
    match kit_rail.connector.submit(&frozen).await {
        Outcome::Rejected(rejection) => assert_eq!(rejection.code, ReasonCode::Regulatory),
        other => panic!("{other:?}"),
    }
    assert_eq!(rail.balance("house-usd").unwrap(), house_before);
    assert_eq!(rail.block_count(), blocks + 2, "only the freeze added a block");
    rail.verify().unwrap();
}
