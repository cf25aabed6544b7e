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
