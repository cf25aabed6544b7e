//! The conformance kit against the instant sandbox rail: in process and over HTTP on loopback, in
//! the RTP (USD) and ISO (EUR) profiles. Also checks that what the rail answers validates.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use railyard_config::RailKind;
use railyard_connector::faults::FaultPlan;
use railyard_connector::kit::{self, KitRail};
use railyard_connector::sandbox::{HttpControl, SandboxControl};
use railyard_connector::transport::{self, Method, RailService, Reply, Server, Transport};
use railyard_connector::{Beneficiary, Capabilities, Connector, IdempotencyKey, Leg, Limit, ReasonCode};
use railyard_core::{Country, Currency, Decimal, FeeSchedule, Money};
use railyard_rail_instant::connector::{InstantConnector, InstantSettings};
use railyard_rail_instant::iso20022::{self, Party};
use railyard_rail_instant::rail::{InstantRail, InstantRailConfig};

fn currency(code: &str) -> Currency {
    Currency::from_code(code).unwrap()
}

fn rail_config(code: &str) -> InstantRailConfig {
    let c = currency(code);
    InstantRailConfig {
        rail: format!("instant-{}", code.to_lowercase()),
        network_member: "990000001".into(),
        currencies: vec![c],
        maximum: vec![Money::from_minor(10_000_000, c)],
        prefunded: vec![Money::from_minor(1_000_000_000, c)],
        timeout: Duration::from_secs(5),
        faults: FaultPlan::default(),
    }
}

fn settings(code: &str) -> InstantSettings {
    let c = currency(code);
    InstantSettings {
        capabilities: Capabilities {
            rail: format!("instant-{}", code.to_lowercase()),
            kind: RailKind::Instant,
            currencies: vec![c],
            payout_currencies: vec![c],
            countries: Vec::new(),
            limits: vec![Limit { minimum: Money::from_minor(1, c), maximum: Money::from_minor(10_000_000, c) }],
            fees: vec![
                FeeSchedule::new(Money::from_minor(5, c), Decimal::new(5, 1), None, Some(Money::from_minor(500, c)))
                    .unwrap(),
            ],
            supports_cancel: true,
            timeout: Duration::from_millis(400),
        },
        member_id: "021000021".into(),
        creditor_agent: "026009593".into(),
        debtor: Party { name: "Railyard House".into(), account: "8800123456".into(), country: "US".into() },
    }
}

struct InstantKit {
    code: &'static str,
    connector: Arc<InstantConnector>,
    control: Box<dyn SandboxControl>,
    _server: Option<Server>,
}

impl InstantKit {
    fn in_process(code: &'static str) -> (InstantKit, Arc<InstantRail>) {
        let rail = Arc::new(InstantRail::new(rail_config(code)).unwrap());
        let service: Arc<dyn RailService> = rail.clone();
        let connector = Arc::new(InstantConnector::new(settings(code), Transport::in_process(service)));
        (InstantKit { code, connector, control: Box::new(rail.sandbox.clone()), _server: None }, rail)
    }

    async fn loopback(code: &'static str) -> InstantKit {
        let rail = Arc::new(InstantRail::new(rail_config(code)).unwrap());
        let server = transport::spawn_server(rail, "127.0.0.1:0").await.unwrap();
        let address = server.address.to_string();
        let connector = Arc::new(InstantConnector::new(settings(code), Transport::http(&address)));
        InstantKit { code, connector, control: Box::new(HttpControl::new(&address)), _server: Some(server) }
    }
}

impl KitRail for InstantKit {
    fn connector(&self) -> Arc<dyn Connector> {
        self.connector.clone()
    }
    fn control(&self) -> &dyn SandboxControl {
        self.control.as_ref()
    }
    fn valid_leg(&self, key: IdempotencyKey) -> Leg {
        let iban = self.code == "EUR";
        Leg {
            key,
            amount: Money::from_minor(125_000, currency(self.code)),
            payout_currency: currency(self.code),
            beneficiary: Beneficiary {
                name: "Ana Souza".into(),
                account: if iban { "DE89370400440532013000".into() } else { "4411223344".into() },
                country: Country::from_code(if iban { "DE" } else { "US" }).unwrap(),
            },
            remittance: "Invoice 118".into(),
            instructed_at: Utc::now(),
        }
    }
    fn reason_samples(&self) -> Vec<(String, ReasonCode)> {
        [
            ("AM04", ReasonCode::InsufficientFunds),
            ("AC03", ReasonCode::InvalidAccount),
            ("AC04", ReasonCode::AccountClosed),
            ("AC06", ReasonCode::Regulatory),
            ("AG01", ReasonCode::DoNotHonour),
            ("AM02", ReasonCode::LimitExceeded),
            ("TM01", ReasonCode::Timeout),
            ("9910", ReasonCode::RailUnavailable),
            ("DUPL", ReasonCode::Duplicate),
        ]
        .into_iter()
        .map(|(code, common)| (code.to_string(), common))
        .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_in_process_rtp_usd() {
    let (rail, _) = InstantKit::in_process("USD");
    let report = kit::run(&rail).await;
    println!("{report}");
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_in_process_iso_eur() {
    let (rail, _) = InstantKit::in_process("EUR");
    kit::run(&rail).await.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_loopback_rtp_usd() {
    let rail = InstantKit::loopback("USD").await;
    let report = kit::run(&rail).await;
    println!("{report}");
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_loopback_iso_eur() {
    let rail = InstantKit::loopback("EUR").await;
    kit::run(&rail).await.assert_passed();
}

/// The rail's own answers (pacs.002 settled, rejected with an ISO code and with an RTP proprietary
/// code) and its broadcasts validate against the schemas too.
#[tokio::test]
async fn rail_answers_validate() {
    for code in ["USD", "EUR"] {
        let (kit_rail, rail) = InstantKit::in_process(code);
        let settings = settings(code);
        for (account, forced) in [("4411223344", None), ("4411220003", None), ("4411223344", Some("9910"))] {
            if let Some(forced) = forced {
                rail.sandbox.faults.force(railyard_connector::faults::Fault::Reject { code: forced.into() }).unwrap();
            }
            let mut leg = kit_rail.valid_leg(
                IdempotencyKey::new(format!("answers-{code}-{account}-{forced:?}").replace(['(', ')', '"'], ""))
                    .unwrap(),
            );
            leg.beneficiary.account = account.into();
            let quote = settings.capabilities.quote_from_schedule(&leg).unwrap();
            let transfer = iso20022::CreditTransfer {
                ids: iso20022::payment_ids(leg.key.as_str(), leg.instructed_at.date_naive(), &settings.member_id),
                created_at: leg.instructed_at,
                amount: quote.receive,
                settlement_date: leg.instructed_at.date_naive(),
                debtor: settings.debtor.clone(),
                debtor_agent: settings.member_id.clone(),
                creditor: Party { name: "Ana Souza".into(), account: account.into(), country: "US".into() },
                creditor_agent: settings.creditor_agent.clone(),
                remittance: String::new(),
            };
            let profile = iso20022::Profile::for_currency(currency(code));
            let xml = iso20022::emit_credit_transfer(profile, &transfer);
            let Reply::Answer { status, body, .. } = rail.call(Method::Post, "/pacs.008", xml.into_bytes()).await
            else {
                panic!("no answer");
            };
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            let validation = iso20022::validate(&body).unwrap();
            assert!(
                validation.valid,
                "{code} {account} {forced:?}: {:?}\n{}",
                validation.errors,
                String::from_utf8_lossy(&body)
            );
        }
        let Reply::Answer { body, .. } = rail.call(Method::Get, "/admi.004", Vec::new()).await else { panic!() };
        assert!(iso20022::validate(&body).unwrap().valid);
    }
}
