//! Every rail of the demo configuration builds, registers and executes a payout in its sandbox.

use chrono::Utc;
use railyard_connector::{Beneficiary, IdempotencyKey, Leg, Outcome};
use railyard_core::{Country, Money};
use railyard_fx::RateHistory;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_demo_rail_executes_a_payout() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/demo.toml");
    let config = railyard_config::load(std::path::Path::new(path)).unwrap();
    let rails = railyard_rails::build(&config, &RateHistory::bundled_daily().latest()).unwrap();
    assert_eq!(rails.registry.len(), config.rails.len());
    for rail in &config.rails {
        let connector = rails.registry.get(rail.id.as_str()).unwrap();
        let currency = rail.currencies[0];
        let country = rail.countries.first().copied().unwrap_or(Country::from_code("US").unwrap());
        let minimum = rail.limits.get(&currency).map(|limits| limits.minimum.minor_units()).unwrap_or(1);
        let maximum = rail.limits.get(&currency).map(|limits| limits.maximum.minor_units()).unwrap_or(i64::MAX);
        let amount = Money::from_minor((1_000 * 10_i64.pow(currency.exponent())).max(minimum).min(maximum), currency);
        let account = match rail.kind {
            railyard_config::RailKind::Instant => "4411223344".to_string(),
            railyard_config::RailKind::Card => {
                // Tokenise a sandbox card billed in this currency where the BIN table has one.
                let Some(bin) = railyard_rail_card::card::BINS.iter().find(|bin| bin.currency == currency.code())
                else {
                    continue;
                };
                let pan = railyard_rail_card::card::with_check_digit(&format!("{}123456789", bin.prefix));
                let (_, sandbox) = rails.sandboxes.iter().find(|(id, _)| id == rail.id.as_str()).unwrap();
                let railyard_rails::SandboxRail::Card(card) = sandbox else { panic!() };
                card.tokenise(&pan, "12/30").unwrap().token
            }
            railyard_config::RailKind::Cbdc => {
                let (_, sandbox) = rails.sandboxes.iter().find(|(id, _)| id == rail.id.as_str()).unwrap();
                let railyard_rails::SandboxRail::Cbdc(cbdc) = sandbox else { panic!() };
                cbdc.open_wallet("beneficiary-1", currency).unwrap();
                "beneficiary-1".to_string()
            }
        };
        let leg = Leg {
            key: IdempotencyKey::new(format!("demo-{}", rail.id)).unwrap(),
            amount,
            payout_currency: currency,
            beneficiary: Beneficiary { name: "Demo Payee".into(), account, country },
            remittance: "demo".into(),
            instructed_at: Utc::now(),
        };
        match connector.submit(&leg).await {
            Outcome::Executed(execution) => assert_eq!(execution.send, amount, "{}", rail.id),
            other => panic!("{}: {other:?}", rail.id),
        }
        assert!(connector.health().await.available, "{}", rail.id);
    }
}

/// A rail's `sandbox_faults` (a JSON plan beside the configuration) shapes its in-process sandbox;
/// a bad plan is refused naming the file and the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_fault_plan_applies() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let demo = std::fs::read_to_string(format!("{root}/config/demo.toml")).unwrap();
    let directory = std::env::temp_dir().join(format!("railyard_faults_{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    std::fs::write(directory.join("sepa.json"), r#"{"seed": 1, "rejects": [{"code": "AM04", "permille": 1000}]}"#)
        .unwrap();
    let config = demo.replacen("id = \"sepa-inst\"\n", "id = \"sepa-inst\"\nsandbox_faults = \"sepa.json\"\n", 1);
    std::fs::write(directory.join("treasury.toml"), &config).unwrap();
    let loaded = railyard_config::load(&directory.join("treasury.toml")).unwrap();
    let rails = railyard_rails::build(&loaded, &RateHistory::bundled_daily().latest()).unwrap();
    let leg = Leg {
        key: IdempotencyKey::new("faulted-1").unwrap(),
        amount: Money::from_minor(10_000, railyard_core::Currency::from_code("EUR").unwrap()),
        payout_currency: railyard_core::Currency::from_code("EUR").unwrap(),
        beneficiary: Beneficiary {
            name: "Jonas".into(),
            account: "DE89370400440532013000".into(),
            country: Country::from_code("DE").unwrap(),
        },
        remittance: String::new(),
        instructed_at: Utc::now(),
    };
    match rails.registry.get("sepa-inst").unwrap().submit(&leg).await {
        Outcome::Rejected(rejection) => assert_eq!(rejection.rail_code, "AM04"),
        other => panic!("{other:?}"),
    }
    std::fs::write(directory.join("sepa.json"), "{\"seed\": 1,\n \"reply_lost_permille\": 5000}").unwrap();
    let error = railyard_rails::build(&loaded, &RateHistory::bundled_daily().latest()).err().unwrap().to_string();
    assert!(error.contains("sepa.json") && error.contains("5000"), "{error}");
    let _ = std::fs::remove_dir_all(&directory);
}

/// A treasury top-up or sweep reaches the sandbox network's own books: an instant network's
/// settlement balance (a payout beyond it is refused AM04 until the top-up), a card network's
/// exposure cap, a CBDC platform's house wallet; a sweep beyond what the network holds is refused
/// and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn house_funds_moves_reach_every_kind_of_sandbox_network() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/demo.toml");
    let config = railyard_config::load(std::path::Path::new(path)).unwrap();
    let rails = railyard_rails::build(&config, &RateHistory::bundled_daily().latest()).unwrap();
    let sandbox = |id: &str| rails.sandboxes.iter().find(|(rail, _)| rail == id).unwrap().1.clone();
    let money = |minor: i64, code: &str| Money::from_minor(minor, railyard_core::Currency::from_code(code).unwrap());

    // sepa-inst holds 2,500,000.00 EUR: sweep all but 50,000.00, then a 60,000.00 payout is short.
    let sepa = sandbox("sepa-inst");
    assert_eq!(sepa.move_house_funds(money(245_000_000, "EUR"), true).unwrap(), Some(money(5_000_000, "EUR")));
    assert!(sepa.move_house_funds(money(5_000_001, "EUR"), true).is_err());
    assert_eq!(sepa.move_house_funds(money(0, "EUR"), false).unwrap(), Some(money(5_000_000, "EUR")));
    let connector = rails.registry.get("sepa-inst").unwrap();
    let leg = |key: &str| Leg {
        key: IdempotencyKey::new(key.to_string()).unwrap(),
        amount: money(6_000_000, "EUR"),
        payout_currency: money(0, "EUR").currency(),
        beneficiary: Beneficiary {
            name: "Demo Payee".into(),
            account: "4411223344".into(),
            country: Country::from_code("DE").unwrap(),
        },
        remittance: "top-up".into(),
        instructed_at: Utc::now(),
    };
    match connector.submit(&leg("short-1")).await {
        Outcome::Rejected(rejection) => assert!(format!("{rejection:?}").contains("AM04"), "{rejection:?}"),
        other => panic!("a payout beyond the settlement balance: {other:?}"),
    }
    assert_eq!(sepa.move_house_funds(money(2_000_000, "EUR"), false).unwrap(), Some(money(7_000_000, "EUR")));
    match connector.submit(&leg("funded-1")).await {
        Outcome::Executed(execution) => assert_eq!(execution.send, money(6_000_000, "EUR")),
        other => panic!("a payout after the top-up: {other:?}"),
    }
    // The payout drew on the topped-up balance (less whatever fee the network keeps on its side).
    let left = sepa.move_house_funds(money(0, "EUR"), false).unwrap().unwrap();
    assert!(left.minor_units() < 1_100_000, "{left}");

    // visa-direct's USD exposure cap (1,000,000.00) rises and falls with the collateral.
    let visa = sandbox("visa-direct");
    assert_eq!(visa.move_house_funds(money(50_000, "USD"), false).unwrap(), Some(money(100_050_000, "USD")));
    assert!(visa.move_house_funds(money(100_050_001, "USD"), true).is_err());
    assert_eq!(visa.move_house_funds(money(50_000, "USD"), true).unwrap(), Some(money(100_000_000, "USD")));

    // mbridge mints into and burns from the house's HKD wallet (20,000,000.00).
    let mbridge = sandbox("mbridge");
    assert_eq!(mbridge.move_house_funds(money(100, "HKD"), false).unwrap(), Some(money(2_000_000_100, "HKD")));
    assert!(mbridge.move_house_funds(money(2_000_000_101, "HKD"), true).is_err());
    assert_eq!(mbridge.move_house_funds(money(100, "HKD"), true).unwrap(), Some(money(2_000_000_000, "HKD")));
    // A currency the network does not carry is refused.
    assert!(sepa.move_house_funds(money(100, "USD"), false).is_err());
}
