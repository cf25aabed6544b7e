//! The example connector passes the conformance kit; a connector that cuts corners does not.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use railyard_connector::kit::{self, KitRail};
use railyard_connector::sandbox::SandboxControl;
use railyard_connector::transport::Transport;
use railyard_connector::{
    Beneficiary, Capabilities, Connector, Health, IdempotencyKey, Leg, Outcome, ReasonCode, Status,
};
use railyard_connector_example::{BookTransferBank, BookTransferConnector};
use railyard_core::{Country, Currency, Money};

struct Kit {
    connector: Arc<dyn Connector>,
    bank: Arc<BookTransferBank>,
}

impl KitRail for Kit {
    fn connector(&self) -> Arc<dyn Connector> {
        self.connector.clone()
    }
    fn control(&self) -> &dyn SandboxControl {
        &self.bank.sandbox
    }
    fn valid_leg(&self, key: IdempotencyKey) -> Leg {
        Leg {
            key,
            amount: Money::from_minor(10_000, Currency::from_code("EUR").unwrap()),
            payout_currency: Currency::from_code("EUR").unwrap(),
            beneficiary: Beneficiary {
                name: "Jo".into(),
                account: "NL-1234".into(),
                country: Country::from_code("NL").unwrap(),
            },
            remittance: String::new(),
            instructed_at: Utc::now(),
        }
    }
    fn reason_samples(&self) -> Vec<(String, ReasonCode)> {
        vec![("NSF".into(), ReasonCode::InsufficientFunds), ("ACCOUNT_CLOSED".into(), ReasonCode::AccountClosed)]
    }
}

fn bank() -> Arc<BookTransferBank> {
    Arc::new(BookTransferBank::new("book-eur", Currency::from_code("EUR").unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_connector_passes_the_kit() {
    let bank = bank();
    let connector = Arc::new(BookTransferConnector::new(bank.capabilities(), Transport::in_process(bank.clone())));
    let report = kit::run(&Kit { connector, bank }).await;
    println!("{report}");
    report.assert_passed();
}

/// Sends without checking limits or currencies and, on Unknown, blindly sends again under a new
/// key: the mistakes the kit exists to catch.
struct CornerCutter {
    inner: BookTransferConnector,
    capabilities: Capabilities,
}

#[async_trait]
impl Connector for CornerCutter {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }
    async fn submit(&self, leg: &Leg) -> Outcome {
        let first = self.inner.submit(leg).await;
        match first {
            Outcome::Unknown(_) => {
                // Blind resend under a fresh key.
                let mut again = leg.clone();
                again.key = IdempotencyKey::new(format!("{}-retry", leg.key)).unwrap();
                self.inner.submit(&again).await
            }
            other => other,
        }
    }
    async fn status(&self, leg: &Leg) -> Status {
        self.inner.status(leg).await
    }
    async fn health(&self) -> Health {
        self.inner.health().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kit_fails_a_connector_that_resends_blindly() {
    let bank = bank();
    let capabilities = bank.capabilities();
    // The inner connector believes the rail takes anything: no limits, every currency.
    let mut unchecked = capabilities.clone();
    unchecked.limits.clear();
    unchecked.currencies = Currency::all();
    let inner = BookTransferConnector::new(unchecked, Transport::in_process(bank.clone()));
    let connector = Arc::new(CornerCutter { inner, capabilities });
    let report = kit::run(&Kit { connector, bank }).await;
    assert!(!report.passed());
    let failed: Vec<&str> =
        report.checks.iter().filter(|check| !check.failures.is_empty()).map(|check| check.name).collect();
    assert!(failed.contains(&"status_after_lost_request_finds_nothing"), "{report}");
    assert!(failed.contains(&"over_limit_refused_before_sending"), "{report}");
    assert!(failed.contains(&"unsupported_currency_refused_before_sending"), "{report}");
}
