//! The conformance kit against the card sandbox network, in process and over loopback; plus the
//! network's own behaviour: network FX, declines by card, the T+1 settlement file.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use railyard_config::RailKind;
use railyard_connector::faults::FaultPlan;
use railyard_connector::kit::{self, KitRail};
use railyard_connector::sandbox::{HttpControl, SandboxControl};
use railyard_connector::transport::{self, RailService, Server, Transport};
use railyard_connector::{Beneficiary, Capabilities, Connector, IdempotencyKey, Leg, Limit, Outcome, ReasonCode};
use railyard_core::{Country, Currency, Decimal, FeeSchedule, Money, RoundingMode};
use railyard_fx::RateHistory;
use railyard_rail_card::card;
use railyard_rail_card::connector::CardConnector;
use railyard_rail_card::rail::{CardRail, CardRailConfig};

fn c(code: &str) -> Currency {
    Currency::from_code(code).unwrap()
}

fn rail_config() -> CardRailConfig {
    let sources = vec![c("USD"), c("EUR")];
    CardRailConfig {
        rail: "card-sandbox".into(),
        currencies: sources.clone(),
        fees: vec![
            FeeSchedule::new(Money::from_minor(25, c("USD")), Decimal::new(150, 0), None, None).unwrap(),
            FeeSchedule::new(Money::from_minor(25, c("EUR")), Decimal::new(150, 0), None, None).unwrap(),
        ],
        maximum: vec![Money::from_minor(5_000_000, c("USD")), Money::from_minor(5_000_000, c("EUR"))],
        exposure_cap: vec![Money::from_minor(500_000_000, c("USD")), Money::from_minor(500_000_000, c("EUR"))],
        rates: CardRailConfig::rates_from_ecb(&RateHistory::bundled_daily().latest(), &sources, Decimal::new(20, 0)),
        conversion_rounding: RoundingMode::TowardZero,
        faults: FaultPlan::default(),
    }
}

fn capabilities() -> Capabilities {
    let payout: Vec<Currency> = card::BINS.iter().map(|bin| c(bin.currency)).collect();
    Capabilities {
        rail: "card-sandbox".into(),
        kind: RailKind::Card,
        currencies: vec![c("USD"), c("EUR")],
        payout_currencies: payout,
        countries: Vec::new(),
        limits: vec![
            Limit { minimum: Money::from_minor(100, c("USD")), maximum: Money::from_minor(5_000_000, c("USD")) },
            Limit { minimum: Money::from_minor(100, c("EUR")), maximum: Money::from_minor(5_000_000, c("EUR")) },
        ],
        fees: rail_config().fees,
        supports_cancel: false,
        timeout: Duration::from_millis(400),
    }
}

struct CardKit {
    connector: Arc<CardConnector>,
    control: Box<dyn SandboxControl>,
    token: String,
    _server: Option<Server>,
}

impl CardKit {
    async fn start(loopback: bool) -> (CardKit, Arc<CardRail>) {
        let rail = Arc::new(CardRail::new(rail_config()).unwrap());
        let (transport, control, server): (Transport, Box<dyn SandboxControl>, Option<Server>) = if loopback {
            let server = transport::spawn_server(rail.clone(), "127.0.0.1:0").await.unwrap();
            let address = server.address.to_string();
            (Transport::http(&address), Box::new(HttpControl::new(&address)), Some(server))
        } else {
            let service: Arc<dyn RailService> = rail.clone();
            (Transport::in_process(service), Box::new(rail.sandbox.clone()), None)
        };
        let connector = Arc::new(CardConnector::new(capabilities(), transport));
        // A Brazilian Visa card: the network converts USD to BRL.
        let pan = card::with_check_digit("400076123456789");
        let token = connector.tokenise(&pan, "12/30").await.unwrap().token;
        (CardKit { connector, control, token, _server: server }, rail)
    }
}

impl KitRail for CardKit {
    fn connector(&self) -> Arc<dyn Connector> {
        self.connector.clone()
    }
    fn control(&self) -> &dyn SandboxControl {
        self.control.as_ref()
    }
    fn valid_leg(&self, key: IdempotencyKey) -> Leg {
        Leg {
            key,
            amount: Money::from_minor(25_000, c("USD")),
            payout_currency: c("BRL"),
            beneficiary: Beneficiary {
                name: "Ana Souza".into(),
                account: self.token.clone(),
                country: Country::from_code("BR").unwrap(),
            },
            remittance: "payout".into(),
            instructed_at: Utc::now(),
        }
    }
    fn reason_samples(&self) -> Vec<(String, ReasonCode)> {
        [
            ("05", ReasonCode::DoNotHonour),
            ("14", ReasonCode::InvalidAccount),
            ("51", ReasonCode::InsufficientFunds),
            ("54", ReasonCode::AccountClosed),
            ("59", ReasonCode::SuspectedFraud),
            ("61", ReasonCode::LimitExceeded),
            ("62", ReasonCode::Regulatory),
            ("91", ReasonCode::RailUnavailable),
        ]
        .into_iter()
        .map(|(code, common)| (code.to_string(), common))
        .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_in_process() {
    let (kit_rail, _) = CardKit::start(false).await;
    let report = kit::run(&kit_rail).await;
    println!("{report}");
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_loopback() {
    let (kit_rail, _) = CardKit::start(true).await;
    kit::run(&kit_rail).await.assert_passed();
}

#[tokio::test]
async fn network_fx_fees_declines_and_settlement_file() {
    let (kit_rail, rail) = CardKit::start(false).await;
    let leg = kit_rail.valid_leg(IdempotencyKey::new("settle-1").unwrap());
    let quote = kit_rail.connector.quote(&leg).await.unwrap();
    // Interchange 1.50% + 0.25 USD scheme fee on 250.00 USD, rounded up: 4.00 USD.
    assert_eq!(quote.fee, Money::from_minor(400, c("USD")));
    assert_eq!(quote.receive.currency(), c("BRL"));
    let Outcome::Executed(execution) = kit_rail.connector.submit(&leg).await else { panic!() };
    assert_eq!(execution.receive, quote.receive);
    // An expired card is declined with 54, a bad PAN never leaves the process.
    let expired = kit_rail.connector.tokenise(&card::with_check_digit("411111123456789"), "01/20").await.unwrap();
    let mut old = kit_rail.valid_leg(IdempotencyKey::new("expired-1").unwrap());
    old.beneficiary.account = expired.token;
    old.payout_currency = c("USD");
    match kit_rail.connector.submit(&old).await {
        Outcome::Rejected(rejection) => {
            assert_eq!((rejection.rail_code.as_str(), rejection.code), ("54", ReasonCode::AccountClosed))
        }
        other => panic!("{other:?}"),
    }
    assert!(kit_rail.connector.tokenise("4111111111111112", "12/30").await.is_err());
    // Settlement is T+1: today's payout appears in tomorrow's file, with a total line.
    let tomorrow = Utc::now().date_naive().succ_opt().unwrap();
    let file = rail.settlement_file(tomorrow);
    let lines: Vec<&str> = file.lines().collect();
    assert_eq!(lines.len(), 3, "{file}");
    assert!(lines[1].contains(&execution.reference) && lines[1].contains("250.00,USD,4.00"), "{file}");
    assert!(lines[2].starts_with(&format!("total,{tomorrow},1 payouts,250.00,USD,4.00")), "{file}");
    assert_eq!(rail.settlement_file(Utc::now().date_naive()).lines().count(), 1);
}
