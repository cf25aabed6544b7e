//! `railyard sandbox instant --listen` in its own process: the conformance kit passes against it
//! across a real process and network boundary, with the demo configuration's SEPA Instant rail.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use chrono::Utc;
use railyard_connector::kit::{self, KitRail};
use railyard_connector::sandbox::{HttpControl, SandboxControl};
use railyard_connector::transport::Transport;
use railyard_connector::{Beneficiary, Connector, IdempotencyKey, Leg, ReasonCode};
use railyard_core::{Country, Currency, Money};

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct SepaKit {
    connector: Arc<dyn Connector>,
    control: HttpControl,
}

impl KitRail for SepaKit {
    fn connector(&self) -> Arc<dyn Connector> {
        self.connector.clone()
    }
    fn control(&self) -> &dyn SandboxControl {
        &self.control
    }
    fn valid_leg(&self, key: IdempotencyKey) -> Leg {
        let eur = Currency::from_code("EUR").unwrap();
        Leg {
            key,
            amount: Money::from_minor(250_000, eur),
            payout_currency: eur,
            beneficiary: Beneficiary {
                name: "Jonas Weber".into(),
                account: "DE89370400440532013000".into(),
                country: Country::from_code("DE").unwrap(),
            },
            remittance: "Rechnung 4711".into(),
            instructed_at: Utc::now(),
        }
    }
    fn reason_samples(&self) -> Vec<(String, ReasonCode)> {
        vec![("AC04".into(), ReasonCode::AccountClosed), ("AM04".into(), ReasonCode::InsufficientFunds)]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_against_a_sandbox_process() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut child = Command::new(env!("CARGO_BIN_EXE_railyard"))
        .args(["sandbox", "instant", "--listen", "127.0.0.1:0", "--rail", "sepa-inst", "--config", "config/demo.toml"])
        .current_dir(root)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _process = Process(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let address = line.trim().rsplit("http://").next().unwrap().to_string();
    assert!(line.contains("sepa-inst listening on"), "{line}");

    let config = railyard_config::load(&std::path::Path::new(root).join("config/demo.toml")).unwrap();
    let mut rail = config.rail("sepa-inst").unwrap().clone();
    // A shorter timeout keeps the slow-rail check quick; the sandbox process keeps its own.
    rail.timeout_ms = 1_000;
    let connector = railyard_rails::connector(&rail, Transport::http(&address));
    let report = kit::run(&SepaKit { connector, control: HttpControl::new(&address) }).await;
    println!("{report}");
    report.assert_passed();

    // The network publishes the day's camt.054 debit notification for the house's account,
    // listing what the conformance run executed; reconciliation reads it.
    let today = chrono::Utc::now().date_naive();
    let response = reqwest::get(format!("http://{address}/camt.054?date={today}")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let xml = response.text().await.unwrap();
    assert!(xml.contains("BkToCstmrDbtCdtNtfctn"), "{xml}");
    let notification = railyard_treasury::reports::read("sepa-inst-camt054.xml", xml.as_bytes()).unwrap();
    assert!(!notification.lines.is_empty(), "the conformance run executed payments: {xml}");
    let bad = reqwest::get(format!("http://{address}/camt.054?date=yesterday")).await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    // A treasury top-up or sweep reaches the network in its process (what `POST
    // /v1/treasury/rails/{rail}/liquidity` sends to a rail's `endpoint`): its settlement balance
    // follows; a sweep beyond it is refused with the reason, and the balance stays.
    let eur = Currency::from_code("EUR").unwrap();
    let endpoint = format!("http://{address}");
    let topped = railyard_rails::move_remote_house_funds(&endpoint, Money::from_minor(100_000, eur), false)
        .await
        .unwrap()
        .expect("an instant network keeps a settlement balance");
    let swept = railyard_rails::move_remote_house_funds(&endpoint, Money::from_minor(40_000, eur), true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(swept.checked_add(Money::from_minor(40_000, eur)).unwrap(), topped);
    let beyond = Money::from_minor(topped.minor_units() + 1, eur);
    let refused = railyard_rails::move_remote_house_funds(&endpoint, beyond, true).await.unwrap_err();
    assert!(refused.contains("409"), "{refused}");
    let again =
        railyard_rails::move_remote_house_funds(&endpoint, Money::from_minor(1, eur), false).await.unwrap().unwrap();
    assert_eq!(again, swept.checked_add(Money::from_minor(1, eur)).unwrap(), "the refused sweep moved nothing");
    let bad = reqwest::Client::new()
        .post(format!("{endpoint}{}", railyard_rails::HOUSE_FUNDS_PATH))
        .body(r#"{"amount":"1.00","currency":"EUR","direction":"sideways"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    assert!(bad.text().await.unwrap().contains("direction"));
}
