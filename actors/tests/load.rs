//! Under load: an outage on a rail stops new legs on it within 250 ms and every payout that
//! touched it ends terminal or in doubt with a reason; recovery brings traffic back. A crashed rail
//! actor is restarted and no payout is lost or duplicated.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use railyard_actors::Runtime;
use railyard_actors::rail::{RailMsg, RailSupervisorMsg};
use railyard_config::{RailKind, TreasuryConfig};
use railyard_connector::{Beneficiary, IdempotencyKey};
use railyard_core::{Country, Currency, Decimal, Money};
use railyard_fx::{FxBook, RateHistory};
use railyard_saga::intake::Intake;
use railyard_saga::{AmountMode, Engine, EngineSettings, PayoutRequest, State};
use railyard_store::{Store, StoreOptions};

fn c(code: &str) -> Currency {
    Currency::from_code(code).unwrap()
}

fn config() -> TreasuryConfig {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/demo.toml");
    let mut config = railyard_config::load(std::path::Path::new(path)).unwrap();
    config.rails.retain(|rail| rail.kind == RailKind::Instant);
    for rail in &mut config.rails {
        rail.timeout_ms = 300;
    }
    config
}

fn payout(index: usize) -> PayoutRequest {
    PayoutRequest {
        source: c("EUR"),
        destination: c("EUR"),
        amount: Money::from_minor(10_000 + index as i64, c("EUR")),
        mode: AmountMode::Send,
        beneficiary: Beneficiary {
            name: "Jonas Weber".into(),
            account: "DE89370400440532013000".into(),
            country: Country::from_code("DE").unwrap(),
        },
        remittance: String::new(),
        rail_kind: None,
        quote_id: None,
        originator: None,
        account_masked: None,
        submitted_by: None,
    }
}

struct System {
    runtime: Runtime,
    rails: railyard_rails::Rails,
    engine: Arc<Engine>,
    intake: Intake,
    driver: railyard_saga::driver::Driver,
    path: std::path::PathBuf,
}

async fn system(name: &str) -> System {
    system_with(name, railyard_saga::driver::SAGAS_RUNNING_MAX).await
}

/// A system whose driver runs up to `sagas_running` sagas at once.
async fn system_with(name: &str, sagas_running: usize) -> System {
    let options = railyard_saga::driver::DriverOptions {
        concurrent_max: sagas_running,
        scan_every: Duration::from_millis(10),
        ..railyard_saga::driver::DriverOptions::default()
    };
    system_driven(name, options).await
}

/// A system whose saga driver runs with `options`.
async fn system_driven(name: &str, options: railyard_saga::driver::DriverOptions) -> System {
    let config = Arc::new(config());
    let rates = RateHistory::bundled_daily().latest();
    let fx = Arc::new(FxBook::build(&config.fx_providers, rates.clone()).unwrap());
    let rails = railyard_rails::build(&config, &rates).unwrap();
    let runtime = Runtime::start(config.clone(), fx.clone(), rails.registry.clone(), Default::default()).await.unwrap();
    let path = std::env::temp_dir().join(format!("railyard_load_{name}_{}.db", std::process::id()));
    let store = Store::open(&format!("sqlite:{}", path.display()), &StoreOptions::default()).await.unwrap();
    let settings =
        EngineSettings::new("load", Duration::from_secs(30), Duration::from_millis(5), 5, 3, Decimal::from(50));
    let mut engine = Engine::new(
        store,
        config.clone(),
        fx,
        rails.registry.clone(),
        settings,
        std::sync::Arc::new(railyard_store::vault::VaultKeys::generate()),
    );
    engine.set_routing(runtime.routing_source());
    engine.set_observer(runtime.observer());
    engine.ensure_accounts().await.unwrap();
    engine.fund_psp("demo-psp", Money::from_minor(1_000_000_000, c("EUR")), "wire").await.unwrap();
    let engine = Arc::new(engine);
    let (_, driver) = runtime.start_coordinator(engine.clone(), options).await.unwrap();
    let intake = Intake::start(engine.clone()).with_driver(driver.clone());
    System { runtime, rails, engine, intake, driver, path }
}

impl System {
    fn sepa(&self) -> Arc<railyard_connector::sandbox::Sandbox> {
        self.rails.sandboxes.iter().find(|(id, _)| id == "sepa-inst").unwrap().1.sandbox()
    }

    /// Submits a payout every 4 ms until `stop`; returns the ids.
    fn load(&self, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<String>> {
        let intake = self.intake.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut index = 0;
            while !stop.load(Ordering::Acquire) {
                let accepted = intake.accept("demo-psp", &format!("load-{index}"), &payout(index)).await.unwrap();
                ids.push(accepted.payout_id);
                index += 1;
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
            ids
        })
    }

    async fn settle(&self, ids: &[String]) {
        let started = Instant::now();
        loop {
            let mut open = 0;
            for id in ids {
                let payout = self.engine.payout(id).await.unwrap();
                let resting = payout.state.terminal() || (payout.state == State::InDoubt && payout.reason.is_some());
                open += usize::from(!resting);
            }
            if open == 0 {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "{open} payouts still moving");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn executions_of(&self, id: &str) -> usize {
        let connector = self.rails.registry.get("sepa-inst").unwrap();
        let keys: Vec<IdempotencyKey> = (0..3)
            .map(|attempt| connector.rail_key(&IdempotencyKey::new(format!("{id}:a{attempt}-leg0")).unwrap()))
            .collect();
        self.sepa().ledger.executions().iter().filter(|record| keys.contains(&record.key)).count()
    }

    async fn finish(self) {
        let report = railyard_store::verify::verify(self.engine.store()).await.unwrap();
        assert!(report.ok(), "{report:?}");
        self.runtime.stop().await;
        for suffix in ["", "-wal", "-shm", "-intake", "-intake-wal", "-intake-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_under_load_stops_new_legs_and_recovers() {
    let system = system("outage").await;
    let sepa = system.sepa();
    let stop = Arc::new(AtomicBool::new(false));
    let load = system.load(stop.clone());
    tokio::time::sleep(Duration::from_millis(400)).await;
    sepa.set_outage(true);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let received_at_cutoff = sepa.ledger.received_total();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received_during = sepa.ledger.received_total() - received_at_cutoff;
    sepa.set_outage(false);
    let executions_before_recovery = sepa.ledger.len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Release);
    let ids = load.await.unwrap();
    system.settle(&ids).await;
    // Status inquiries may still reach the rail; new legs (credit transfers) may not.
    assert_eq!(received_during, 0, "{received_during} messages reached the rail more than 250 ms into its outage");
    assert!(sepa.ledger.len() > executions_before_recovery, "traffic did not come back after recovery");
    let failed = AtomicUsize::new(0);
    for id in &ids {
        assert!(system.executions_of(id) <= 1, "{id} executed twice");
        let payout = system.engine.payout(id).await.unwrap();
        if payout.state == State::Failed {
            failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    assert!(failed.load(Ordering::Relaxed) > 0, "no payout met the outage");
    system.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_rail_actor_under_load_loses_and_duplicates_nothing() {
    let system = system("crash").await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = system.load(stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(system.runtime.rails["sepa-inst"].send(RailMsg::Crash));
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Release);
    let ids = load.await.unwrap();
    system.settle(&ids).await;
    for id in &ids {
        let payout = system.engine.payout(id).await.unwrap();
        assert_eq!(payout.state, State::Completed, "{id}: {:?}", payout.reason);
        assert_eq!(system.executions_of(id), 1, "{id}");
    }
    let supervisor = system.runtime.supervisors[&RailKind::Instant].clone();
    let restarts = ractor::call!(supervisor, |reply| RailSupervisorMsg::Restarts { reply }).unwrap();
    assert_eq!(restarts["sepa-inst"], 1);
    system.finish().await;
}

/// `railyard serve --sagas-running N`: with every leg waiting at the rail, a burst of payouts
/// piles up against the bound and the driver never has more than N sagas in flight, yet every
/// payout settles, each executed once (the rest wait on disk and are kicked or scanned in turn).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_driver_runs_no_more_sagas_at_once_than_it_may() {
    const SAGAS_RUNNING: usize = 3;
    let system = system_with("bounded", SAGAS_RUNNING).await;
    let plan = railyard_connector::faults::FaultPlan {
        latency: railyard_connector::faults::LatencyPlan { base_ms: 30, ..Default::default() },
        ..Default::default()
    };
    system.sepa().faults.set_plan(plan).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let driver = system.driver.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut most = 0;
            while !done.load(Ordering::Acquire) {
                most = most.max(driver.running());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            most
        })
    };
    let mut ids = Vec::new();
    for index in 0..24 {
        let accepted = system.intake.accept("demo-psp", &format!("bounded-{index}"), &payout(index)).await.unwrap();
        ids.push(accepted.payout_id);
    }
    system.settle(&ids).await;
    done.store(true, Ordering::Release);
    let most = sampler.await.unwrap();
    assert!(most <= SAGAS_RUNNING, "{most} sagas ran at once, more than {SAGAS_RUNNING}");
    assert!(most > 1, "the burst never ran more than {most} saga at once: the bound was not reached");
    for id in &ids {
        assert_eq!(system.engine.payout(id).await.unwrap().state, State::Completed, "{id}");
        assert_eq!(system.executions_of(id), 1, "{id}");
    }
    system.finish().await;
}

/// With more payouts waiting than the driver may run, most wait in its kick queue while it scans
/// for due sagas: the scan leaves those to their kicks. Before, it started them too, and each one's
/// kick, coming after the saga had completed, started it a second time for a claim and a read that
/// found it at rest: half the passes again at 512 clients and 256 slots, a sixth of the throughput.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payout_waiting_for_its_kick_is_not_started_again_by_the_scan() {
    let options = railyard_saga::driver::DriverOptions {
        concurrent_max: 4,
        // Scans due at nearly every free slot: the kick and the scan race for each one.
        scan_every: Duration::from_millis(1),
        ..railyard_saga::driver::DriverOptions::default()
    };
    let system = system_driven("kicked", options).await;
    let plan = railyard_connector::faults::FaultPlan {
        latency: railyard_connector::faults::LatencyPlan { base_ms: 5, ..Default::default() },
        ..Default::default()
    };
    system.sepa().faults.set_plan(plan).unwrap();
    let mut accepts = tokio::task::JoinSet::new();
    for index in 0..64 {
        let intake = system.intake.clone();
        accepts.spawn(async move {
            intake.accept("demo-psp", &format!("kicked-{index}"), &payout(index)).await.unwrap().payout_id
        });
    }
    let ids: Vec<String> = accepts.join_all().await;
    system.settle(&ids).await;
    for id in &ids {
        assert_eq!(system.engine.payout(id).await.unwrap().state, State::Completed, "{id}");
        assert_eq!(system.executions_of(id), 1, "{id}");
    }
    assert_eq!(system.driver.started(), ids.len() as u64, "saga passes started for {} payouts", ids.len());
    system.finish().await;
}
