//! Settlement sagas on SQLite and PostgreSQL against the sandbox rails: the happy path with FX,
//! idempotency, the crash-point matrix × rail outcome, and two engines sharing one database.

#[path = "../../store/tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use railyard_config::{RailKind, TreasuryConfig};
use railyard_connector::faults::Fault;
use railyard_connector::{Beneficiary, IdempotencyKey, Registry};
use railyard_core::{Country, Currency, Decimal, Money};
use railyard_fx::{FxBook, RateHistory};
use railyard_rails::{Rails, SandboxRail};
use railyard_risk::Decision;
use railyard_saga::authorise::{Approver, DecideError, Verdict};
use railyard_saga::{
    AmountMode, CrashPoint, Engine, EngineError, EngineSettings, Originator, Payout, PayoutRequest, Phase, State,
};
use railyard_store::{Dialect, Store, verify};
use sqlx::Executor;

fn c(code: &str) -> Currency {
    Currency::from_code(code).unwrap()
}

/// The demo configuration with only its instant rails, each with a 300 ms timeout, so that every
/// route is deterministic and a lost reply is noticed quickly.
fn config() -> Arc<TreasuryConfig> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/demo.toml");
    let mut config = railyard_config::load(std::path::Path::new(path)).unwrap();
    config.rails.retain(|rail| rail.kind == RailKind::Instant);
    for rail in &mut config.rails {
        rail.timeout_ms = 300;
    }
    Arc::new(config)
}

struct World {
    config: Arc<TreasuryConfig>,
    fx: Arc<FxBook>,
    rails: Rails,
    /// One set of vault keys for every engine of a test, as one deployment has.
    vault: Arc<railyard_store::vault::VaultKeys>,
}

impl World {
    fn new() -> World {
        World::with_config(config())
    }

    fn with_config(config: Arc<TreasuryConfig>) -> World {
        let rates = RateHistory::bundled_daily().latest();
        let fx = Arc::new(FxBook::build(&config.fx_providers, rates.clone()).unwrap());
        let rails = railyard_rails::build(&config, &rates).unwrap();
        World { config, fx, rails, vault: std::sync::Arc::new(railyard_store::vault::VaultKeys::generate()) }
    }

    fn engine(&self, store: &Store, owner: &str, crash: Option<railyard_saga::CrashHook>) -> Engine {
        let mut settings =
            EngineSettings::new("", Duration::from_secs(30), Duration::from_millis(1), 5, 3, Decimal::from(50));
        settings.owner = owner.into();
        settings.crash = crash;
        Engine::new(
            store.clone(),
            self.config.clone(),
            self.fx.clone(),
            registry(&self.rails),
            settings,
            self.vault.clone(),
        )
    }

    /// Every FX provider widens its spreads by `bps`: engines built after see the new prices.
    fn widen_spreads(&mut self, bps: i64) {
        let mut config = (*self.config).clone();
        for provider in &mut config.fx_providers {
            provider.spread_bps += Decimal::from(bps);
            for spread in provider.pair_spreads.values_mut() {
                *spread += Decimal::from(bps);
            }
        }
        self.fx = Arc::new(FxBook::build(&config.fx_providers, RateHistory::bundled_daily().latest()).unwrap());
        self.config = Arc::new(config);
    }

    fn sandbox(&self, rail: &str) -> SandboxRail {
        self.rails.sandboxes.iter().find(|(id, _)| id == rail).map(|(_, sandbox)| sandbox.clone()).unwrap()
    }

    /// Executions the rail performed for any key of this payout.
    fn executions(&self, rail: &str, payout: &str) -> usize {
        let connector = self.rails.registry.get(rail).unwrap();
        let keys: Vec<IdempotencyKey> = (0..4)
            .flat_map(|attempt| (0..4).map(move |leg| format!("{payout}:a{attempt}-leg{leg}")))
            .map(|key| connector.rail_key(&IdempotencyKey::new(key).unwrap()))
            .collect();
        self.sandbox(rail).sandbox().ledger.executions().iter().filter(|record| keys.contains(&record.key)).count()
    }
}

fn registry(rails: &Rails) -> Registry {
    rails.registry.clone()
}

fn eur_payout(amount_minor: i64) -> PayoutRequest {
    PayoutRequest {
        source: c("USD"),
        destination: c("EUR"),
        amount: Money::from_minor(amount_minor, c("USD")),
        mode: AmountMode::Send,
        beneficiary: Beneficiary {
            name: "Jonas Weber".into(),
            account: "DE89370400440532013000".into(),
            country: Country::from_code("DE").unwrap(),
        },
        remittance: "invoice 2026-118".into(),
        rail_kind: None,
        quote_id: None,
        originator: None,
        account_masked: None,
        submitted_by: None,
    }
}

async fn drive_to_rest(engine: &Engine, id: &str) -> State {
    for _ in 0..200 {
        match engine.run(id).await {
            Ok(state) if state.terminal() => return state,
            Ok(State::InDoubt) => {
                let payout = engine.payout(id).await.unwrap();
                if payout.reason.as_deref().is_some_and(|reason| reason.starts_with("escalated")) {
                    return State::InDoubt;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(_) => {}
            Err(error) => panic!("{error}"),
        }
    }
    engine.payout(id).await.unwrap().state
}

/// Drives `id` like [`drive_to_rest`] until the engine's crash hook fires. An in-doubt payout
/// waits out its inquiry backoff (1 ms here) and is inquired again, so that the crash points after
/// the in-doubt state are reached however fast the machine commits.
async fn run_until_crash(engine: &Engine, id: &str) -> Result<(), EngineError> {
    for _ in 0..200 {
        match engine.run(id).await {
            Err(EngineError::Crashed(_)) => return Ok(()),
            Err(error) => return Err(error),
            Ok(State::InDoubt) => {
                let payout = engine.payout(id).await?;
                if payout.reason.as_deref().is_some_and(|reason| reason.starts_with("escalated")) {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(_) => return Ok(()),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_currency_payout_settles_and_balances() {
    for db in common::databases().await {
        let world = World::new();
        let engine = world.engine(&db.store, "engine-a", None);
        engine.ensure_accounts().await.unwrap();
        engine.fund_psp("demo-psp", Money::from_minor(10_000_000, c("USD")), "wire-1").await.unwrap();
        let accepted = engine.accept("demo-psp", "order-1", &eur_payout(250_000)).await.unwrap();
        assert!(!accepted.replay);
        assert_eq!(drive_to_rest(&engine, &accepted.payout_id).await, State::Completed, "{}", db.name);
        let payout = engine.payout(&accepted.payout_id).await.unwrap();
        let route = payout.route.unwrap();
        assert_eq!(route.legs.last().unwrap().operator, "sepa-inst", "{}", db.name);
        assert!(route.legs.iter().any(|leg| leg.kind == "fx"));
        assert_eq!(world.executions("sepa-inst", &payout.id), 1);
        let psp = railyard_store::ledger::balance(db.store.pool(), "psp:demo-psp:USD").await.unwrap();
        assert_eq!(psp.available(), Money::from_minor(10_000_000 - 250_000, c("USD")));
        let report = verify::verify(&db.store).await.unwrap();
        assert!(report.ok(), "{}: {report:?}", db.name);
        // Same key, same request: the same payout, marked as a replay. Different request: conflict.
        let again = engine.accept("demo-psp", "order-1", &eur_payout(250_000)).await.unwrap();
        assert_eq!((again.payout_id.as_str(), again.replay), (accepted.payout_id.as_str(), true));
        assert!(matches!(
            engine.accept("demo-psp", "order-1", &eur_payout(250_001)).await,
            Err(EngineError::Conflict(_))
        ));
        // Not enough balance: fails cleanly, nothing sent.
        let big = engine.accept("demo-psp", "order-2", &eur_payout(9_900_000)).await.unwrap();
        assert_eq!(drive_to_rest(&engine, &big.payout_id).await, State::Failed);
        let failed = engine.payout(&big.payout_id).await.unwrap();
        let reason = failed.reason.unwrap();
        assert!(reason.contains("insufficient balance"), "{}: {reason}", db.name);
        assert_eq!(world.executions("sepa-inst", &big.payout_id), 0);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RailOutcome {
    Executed,
    Rejected,
    Unknown,
}

/// Attempts of one matrix case before its crash point counts as never reached.
const CASE_ATTEMPTS_MAX: usize = 3;

const POINTS: &[(&str, Phase)] = &[
    ("accept", Phase::BeforeCommit),
    ("accept", Phase::AfterCommit),
    ("accepted", Phase::BeforeCommit),
    ("accepted", Phase::AfterCommit),
    ("routed", Phase::BeforeCommit),
    ("routed", Phase::AfterCommit),
    ("reserved", Phase::BeforeCommit),
    ("reserved", Phase::AfterCommit),
    ("quoted", Phase::BeforeCommit),
    ("quoted", Phase::AfterCommit),
    ("rail_call", Phase::AfterRailCall),
    ("submitting", Phase::BeforeCommit),
    ("submitting", Phase::AfterCommit),
    ("in_doubt", Phase::BeforeCommit),
    ("in_doubt", Phase::AfterCommit),
];

/// A crash before and after the commit of every step, and between the rail's answer and its
/// persistence, for each rail outcome. After a restart: no duplicate execution, every payout
/// terminal or in doubt with a reason, the ledger balanced and its hash chain intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_point_matrix() {
    for db in common::databases().await {
        let world = World::new();
        world.engine(&db.store, "setup", None).ensure_accounts().await.unwrap();
        world
            .engine(&db.store, "setup", None)
            .fund_psp("demo-psp", Money::from_minor(1_000_000_000, c("USD")), "wire-1")
            .await
            .unwrap();
        let sepa = world.sandbox("sepa-inst").sandbox();
        let mut cases = 0;
        let mut crashed_at: Vec<(RailOutcome, &str, Phase)> = Vec::new();
        for outcome in [RailOutcome::Executed, RailOutcome::Rejected, RailOutcome::Unknown] {
            for (step, phase) in POINTS {
                // A case whose crash did not fire took another path (a sandbox task of an earlier
                // case, delayed on a busy machine, can draw one of this case's forced faults): run it
                // again with a fresh key. Every attempt is checked in full.
                for attempt in 0..CASE_ATTEMPTS_MAX {
                    let point = CrashPoint { step, phase: *phase };
                    let fired = Arc::new(AtomicBool::new(false));
                    let hook_fired = fired.clone();
                    let seen: Arc<Mutex<Vec<CrashPoint>>> = Arc::default();
                    let hook_seen = seen.clone();
                    let hook: railyard_saga::CrashHook = Arc::new(move |at: CrashPoint| {
                        hook_seen.lock().unwrap().push(at);
                        at == point && !hook_fired.swap(true, Ordering::SeqCst)
                    });
                    match outcome {
                        RailOutcome::Executed => {}
                        RailOutcome::Rejected => sepa.faults.force(Fault::Reject { code: "AC04".into() }).unwrap(),
                        // The payment executes, its reply is lost, and the recall is lost too.
                        RailOutcome::Unknown => {
                            sepa.faults.force(Fault::ReplyLost).unwrap();
                            sepa.faults.force(Fault::RequestLost).unwrap();
                        }
                    }
                    let key = format!("matrix-{outcome:?}-{step}-{phase:?}-{attempt}");
                    let request = eur_payout(10_000 + cases);
                    let crashing = world.engine(&db.store, "engine-crash", Some(hook));
                    let id = match crashing.accept("demo-psp", &key, &request).await {
                        Ok(accepted) => Some(accepted.payout_id),
                        Err(EngineError::Crashed(_)) => None,
                        Err(error) => panic!("{error}"),
                    };
                    if let Some(id) = &id {
                        run_until_crash(&crashing, id)
                            .await
                            .unwrap_or_else(|error| panic!("{}: {key}: {error}", db.name));
                    }
                    // Restart: a new engine, a new owner; the crashed one's lease is released by
                    // taking over (its lease is 30 s, so expire it the way a dead process would).
                    sqlx::query("UPDATE payouts SET lease_until = 0 WHERE lease_owner = 'engine-crash'")
                        .execute(db.store.pool())
                        .await
                        .unwrap();
                    let restarted = world.engine(&db.store, "engine-restarted", None);
                    // The PSP retries its request (it got no answer, or an answer it did not see).
                    let id = restarted.accept("demo-psp", &key, &request).await.unwrap().payout_id;
                    if id.is_empty() {
                        unreachable!();
                    }
                    let crashed = fired.load(Ordering::SeqCst);
                    if crashed {
                        crashed_at.push((outcome, step, *phase));
                    }
                    let state = drive_to_rest(&restarted, &id).await;
                    let payout = restarted.payout(&id).await.unwrap();
                    let executions = world.executions("sepa-inst", &id);
                    assert!(executions <= 1, "{}: {key}: {executions} executions", db.name);
                    match (outcome, state) {
                        (RailOutcome::Executed | RailOutcome::Unknown, State::Completed) => {
                            assert_eq!(executions, 1, "{}: {key}", db.name)
                        }
                        (RailOutcome::Rejected, State::Failed) => assert_eq!(executions, 0, "{}: {key}", db.name),
                        (_, State::InDoubt) => assert!(payout.reason.is_some(), "{}: {key}", db.name),
                        _ => panic!("{}: {key}: ended {state:?} ({:?})", db.name, payout.reason),
                    }
                    // Unused forced faults (a path that never reached the rail) must not leak into the next case.
                    drain(&sepa);
                    cases += 1;
                    if crashed {
                        break;
                    }
                    eprintln!("{}: {key}: no crash at {point:?}; points seen: {:?}", db.name, seen.lock().unwrap());
                }
            }
        }
        // Every crash point was reached on some path: the matrix tests what it says.
        for (step, phase) in POINTS {
            assert!(
                crashed_at.iter().any(|(_, s, p)| s == step && p == phase),
                "{}: never crashed at {step} {phase:?}",
                db.name
            );
        }
        for (step, phase) in POINTS.iter().filter(|(step, _)| *step != "in_doubt") {
            assert!(
                crashed_at.iter().any(|(o, s, p)| *o == RailOutcome::Executed && s == step && p == phase),
                "{}: the executed path never crashed at {step} {phase:?}",
                db.name
            );
        }
        let report = verify::verify(&db.store).await.unwrap();
        assert!(report.ok(), "{}: {report:?}", db.name);
        let states = railyard_saga::counts_by_state(&db.store).await.unwrap();
        assert_eq!(
            states.get("completed").copied().unwrap_or(0) + states.get("failed").copied().unwrap_or(0),
            cases,
            "{}: {states:?}",
            db.name
        );
    }
}

/// Empties the sandbox's forced-fault queue by drawing until a draw comes back clean.
fn drain(sandbox: &railyard_connector::sandbox::Sandbox) {
    for _ in 0..railyard_connector::faults::FORCED_FAULTS_MAX {
        if sandbox.faults.draw(chrono::Utc::now()).fault.is_none() {
            return;
        }
    }
}

/// Two engines share one database; one is killed mid-load (its task aborted, its leases left to
/// expire); the other finishes every saga with nothing lost or executed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_surviving_engine_finishes_a_dead_engines_sagas() {
    for db in common::databases().await {
        let world = Arc::new(World::new());
        let setup = world.engine(&db.store, "setup", None);
        setup.ensure_accounts().await.unwrap();
        setup.fund_psp("demo-psp", Money::from_minor(1_000_000_000, c("USD")), "wire-1").await.unwrap();
        let mut ids = Vec::new();
        for index in 0..30 {
            ids.push(
                setup.accept("demo-psp", &format!("load-{index}"), &eur_payout(5_000 + index)).await.unwrap().payout_id,
            );
        }
        let short_lease = |owner: &str| {
            let mut engine = world.engine(&db.store, owner, None);
            engine.set_lease(Duration::from_millis(300));
            engine
        };
        let doomed = Arc::new(short_lease("engine-doomed"));
        let survivor = Arc::new(short_lease("engine-survivor"));
        let doomed_task = {
            let doomed = doomed.clone();
            tokio::spawn(async move {
                loop {
                    let _ = doomed.resume_due().await;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        let survivor_task = {
            let survivor = survivor.clone();
            tokio::spawn(async move {
                for _ in 0..2_000 {
                    let _ = survivor.resume_due().await;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(60)).await;
        doomed_task.abort();
        let _ = doomed_task.await;
        let held = sqlx::query("SELECT COUNT(*) FROM payouts WHERE lease_owner = 'engine-doomed'")
            .fetch_one(db.store.pool())
            .await
            .unwrap();
        let states = railyard_saga::counts_by_state(&db.store).await.unwrap();
        eprintln!(
            "{}: at the kill: {states:?}, {} leased by the dead engine",
            db.name,
            sqlx::Row::get::<i64, _>(&held, 0)
        );
        // Wait for the survivor to finish everything (bounded).
        for _ in 0..500 {
            let states = railyard_saga::counts_by_state(&db.store).await.unwrap();
            let done = states.get("completed").copied().unwrap_or(0) + states.get("failed").copied().unwrap_or(0);
            if done == 30 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        survivor_task.abort();
        for id in &ids {
            let payout = survivor.payout(id).await.unwrap();
            assert_eq!(payout.state, State::Completed, "{}: {id}: {:?}", db.name, payout.reason);
            assert_eq!(world.executions("sepa-inst", id), 1, "{}: {id}", db.name);
        }
        let report = verify::verify(&db.store).await.unwrap();
        assert!(report.ok(), "{}: {report:?}", db.name);
    }
}

/// One hundred concurrent submissions with one idempotency key: one saga, one execution.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_hundred_concurrent_accepts_make_one_payout() {
    for db in common::databases().await {
        let world = World::new();
        let engine = Arc::new(world.engine(&db.store, "engine-a", None));
        engine.ensure_accounts().await.unwrap();
        engine.fund_psp("demo-psp", Money::from_minor(10_000_000, c("USD")), "wire-1").await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let engine = engine.clone();
            tasks.spawn(async move { engine.accept("demo-psp", "same-key", &eur_payout(12_345)).await.unwrap() });
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut fresh = 0;
        while let Some(accepted) = tasks.join_next().await {
            let accepted = accepted.unwrap();
            fresh += usize::from(!accepted.replay);
            ids.insert(accepted.payout_id);
        }
        assert_eq!((ids.len(), fresh), (1, 1), "{}", db.name);
        let id = ids.into_iter().next().unwrap();
        assert_eq!(drive_to_rest(&engine, &id).await, State::Completed);
        let count: i64 =
            sqlx::Row::get(&sqlx::query("SELECT COUNT(*) FROM payouts").fetch_one(db.store.pool()).await.unwrap(), 0);
        assert_eq!(count, 1, "{}", db.name);
        assert_eq!(world.executions("sepa-inst", &id), 1, "{}", db.name);
    }
}

/// FX quotes that expire before the rail leg: re-quoted within the slippage tolerance and paid;
/// re-quoted beyond it (the provider widened its spread meanwhile) and failed cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_quotes_are_requoted_within_tolerance_or_fail_cleanly() {
    for db in common::databases().await {
        let mut world = World::new();
        let mut config = (*world.config).clone();
        for provider in &mut config.fx_providers {
            provider.quote_ttl_seconds = 0;
        }
        world.config = Arc::new(config.clone());
        let engine = world.engine(&db.store, "engine-a", None);
        engine.ensure_accounts().await.unwrap();
        engine.fund_psp("demo-psp", Money::from_minor(10_000_000, c("USD")), "wire-1").await.unwrap();
        let accepted = engine.accept("demo-psp", "requote-ok", &eur_payout(40_000)).await.unwrap();
        assert_eq!(drive_to_rest(&engine, &accepted.payout_id).await, State::Completed, "{}", db.name);

        // Quote with today's spreads, stop after the quote is locked ...
        let stop: railyard_saga::CrashHook =
            Arc::new(|at: CrashPoint| at == CrashPoint { step: "reserved", phase: Phase::AfterCommit });
        let quoting = world.engine(&db.store, "engine-quote", Some(stop));
        let payout = quoting.accept("demo-psp", "requote-moved", &eur_payout(40_000)).await.unwrap().payout_id;
        assert!(matches!(quoting.run(&payout).await, Err(EngineError::Crashed(_))));
        sqlx::query("UPDATE payouts SET lease_until = 0").execute(db.store.pool()).await.unwrap();
        // ... then every provider widens its spread by 3%.
        world.widen_spreads(300);
        let later = world.engine(&db.store, "engine-later", None);
        assert_eq!(drive_to_rest(&later, &payout).await, State::Failed, "{}", db.name);
        let failed = later.payout(&payout).await.unwrap();
        assert!(failed.reason.as_deref().unwrap_or("").contains("tolerance"), "{}: {:?}", db.name, failed.reason);
        assert_eq!(world.executions("sepa-inst", &payout), 0);
        let psp = railyard_store::ledger::balance(db.store.pool(), "psp:demo-psp:USD").await.unwrap();
        assert_eq!(
            psp.available(),
            Money::from_minor(10_000_000 - 40_000, c("USD")),
            "{}: the reservation was released",
            db.name
        );
        assert!(verify::verify(&db.store).await.unwrap().ok());
    }
}

/// Group commit: concurrent accepts share transactions; each gets its own answer, replays included,
/// and each group's commit is reported (the monitor's intake commit histogram).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_answers_each_request() {
    for db in common::databases().await {
        let world = World::new();
        let engine = Arc::new(world.engine(&db.store, "engine-a", None));
        let commits = Arc::new(std::sync::Mutex::new(Vec::new()));
        let reported = commits.clone();
        let intake = railyard_saga::intake::Intake::start(engine.clone())
            .with_commit_observer(Arc::new(move |elapsed| reported.lock().unwrap().push(elapsed)));
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..200 {
            let intake = intake.clone();
            // Keys repeat every 100: the second use of each is a replay of the first.
            tasks.spawn(async move {
                intake
                    .accept("demo-psp", &format!("group-{}", index % 100), &eur_payout(7_000 + (index % 100) as i64))
                    .await
            });
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut replays = 0;
        while let Some(answer) = tasks.join_next().await {
            let accepted = answer.unwrap().unwrap();
            replays += usize::from(accepted.replay);
            ids.insert(accepted.payout_id);
        }
        assert_eq!((ids.len(), replays), (100, 100), "{}", db.name);
        // At least one group committed, none more than there were requests, each in reason.
        let commits = commits.lock().unwrap().clone();
        assert!((1..=200).contains(&commits.len()), "{}: {} commits", db.name, commits.len());
        assert!(commits.iter().all(|elapsed| *elapsed < Duration::from_secs(30)), "{}: {commits:?}", db.name);
        let wrong = intake.accept("demo-psp", "group-1", &eur_payout(1)).await;
        assert!(
            matches!(wrong, Err(railyard_saga::intake::IntakeError::Engine(EngineError::Conflict(_)))),
            "{}",
            db.name
        );
        let unknown = intake.accept("nobody", "k", &eur_payout(1)).await;
        assert!(
            matches!(unknown, Err(railyard_saga::intake::IntakeError::Engine(EngineError::Invalid(_)))),
            "{}",
            db.name
        );
    }
}

/// A stalled database: the intake journal keeps acknowledging until the bounded queue of groups
/// waiting to move into the database is full, then the intake's bounded queue fills and further
/// requests are refused at once (the API's 429 with Retry-After) instead of queueing without
/// bound; when the database frees up, everything acknowledged reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_intake_sheds_load_instead_of_growing() {
    let (db, _world, intake, held) = an_intake_on_a_stalled_database().await;
    // Most that can be answered while the database is stalled: the queue, the payouts waiting
    // for the mover or in its hands, and the intake's group waiting to join them.
    let total = railyard_saga::intake::INTAKE_QUEUE_MAX
        + railyard_saga::intake::MOVES_QUEUED_PAYOUTS_MAX
        + 2 * railyard_saga::intake::GROUP_MAX
        + 500;
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..total {
        let intake = intake.clone();
        tasks.spawn(async move {
            let started = std::time::Instant::now();
            let answer = intake.accept("demo-psp", &format!("flood-{index}"), &eur_payout(1_000 + index as i64)).await;
            (answer, started.elapsed())
        });
    }
    // Give the flood time to fill the queue, then let the database go.
    tokio::time::sleep(Duration::from_millis(500)).await;
    held.rollback().await.unwrap();
    let (mut accepted, mut shed) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            (Ok(_), _) => accepted += 1,
            (Err(railyard_saga::intake::IntakeError::Overloaded), took) => {
                shed += 1;
                assert!(took < Duration::from_millis(400), "a refusal took {took:?}");
            }
            (Err(error), _) => panic!("{error}"),
        }
    }
    assert!(shed >= 500, "only {shed} of {total} refused");
    assert!(accepted >= railyard_saga::intake::INTAKE_QUEUE_MAX, "{accepted} accepted");
    // Acknowledged means in the journal; the mover brings each into the database.
    let count = payouts_once_moved(&db.store, accepted).await;
    assert_eq!(count, accepted, "every accepted request is in the database, no refused one is");
}

/// An intake on a fresh SQLite database whose write lock another connection holds (until the
/// returned transaction ends).
async fn an_intake_on_a_stalled_database()
-> (common::TestDb, World, railyard_saga::intake::Intake, sqlx::Transaction<'static, sqlx::Any>) {
    let db = common::sqlite().await;
    let world = World::new();
    let engine = Arc::new(world.engine(&db.store, "engine-a", None));
    let intake = railyard_saga::intake::Intake::start(engine);
    let blocker = Store::open(&db.url, &railyard_store::StoreOptions::default()).await.unwrap();
    let held = blocker.begin().await.unwrap();
    (db, world, intake, held)
}

/// The payouts in the database once there are `expected` (or a minute has passed).
async fn payouts_once_moved(store: &Store, expected: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let count: i64 =
            sqlx::Row::get(&sqlx::query("SELECT COUNT(*) FROM payouts").fetch_one(store.pool()).await.unwrap(), 0);
        if count as usize >= expected || std::time::Instant::now() > deadline {
            return count as usize;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The mover's queue is bounded in payouts, not in groups: payouts arriving one at a time (each its
/// own group, as under a steady load) are acknowledged while the database is stalled, up to the
/// bound, instead of stalling the intake after a handful of groups; all reach the database once it
/// frees up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payouts_arriving_one_by_one_are_acknowledged_while_the_database_is_stalled() {
    let (db, _world, intake, held) = an_intake_on_a_stalled_database().await;
    // Ten times the old bound of 16 groups; far under the bound of payouts.
    let count = 160;
    assert!(count < railyard_saga::intake::MOVES_QUEUED_PAYOUTS_MAX);
    let started = std::time::Instant::now();
    for index in 0..count {
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            intake.accept("demo-psp", &format!("one-by-one-{index}"), &eur_payout(1_000 + index as i64)),
        )
        .await
        .unwrap_or_else(|_| panic!("accept {index} waited for the stalled database"));
        assert!(answer.is_ok(), "{index}: {answer:?}");
    }
    let took = started.elapsed();
    held.rollback().await.unwrap();
    assert_eq!(payouts_once_moved(&db.store, count).await, count, "acknowledged in {took:?}");
}

/// The intake journal: an engine that acknowledged payouts and died before moving them into the
/// database (the crash hook stops its mover before its commit) leaves them in the journal; they
/// read as `accepted` meanwhile, a retry under the same key replays the same payout, and the next
/// start moves each one into the database exactly once, with the time it was acknowledged, and
/// forgets it from the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_payouts_survive_in_the_journal_and_move_on_the_next_start() {
    let db = common::sqlite().await;
    let world = World::new();
    let crash: railyard_saga::CrashHook = Arc::new(|point: railyard_saga::CrashPoint| point.step == "move_intents");
    let dying = Arc::new(world.engine(&db.store, "engine-a", Some(crash)));
    let intake = railyard_saga::intake::Intake::start(dying.clone());
    let mut ids = Vec::new();
    for index in 0..20 {
        let accepted =
            intake.accept("demo-psp", &format!("journal-{index}"), &eur_payout(5_000 + index)).await.unwrap();
        assert!(!accepted.replay);
        ids.push(accepted.payout_id);
    }
    // Acknowledged, not in the database: read from the journal.
    let in_database: i64 =
        sqlx::Row::get(&sqlx::query("SELECT COUNT(*) FROM payouts").fetch_one(db.store.pool()).await.unwrap(), 0);
    assert_eq!(in_database, 0);
    let payout = dying.payout(&ids[3]).await.unwrap();
    assert_eq!((payout.state, payout.idempotency_key.as_str()), (State::Accepted, "journal-3"));
    assert_eq!(payout.request.amount, eur_payout(5_003).amount);
    let history = dying.history(&ids[3]).await.unwrap();
    assert_eq!(history.iter().map(|entry| entry.state).collect::<Vec<_>>(), vec![State::Accepted]);
    // Listed in their place, by id, a page at a time.
    let listed = dying.list("demo-psp", None, None, None, 100).await.unwrap();
    assert_eq!(listed.iter().map(|payout| payout.id.clone()).collect::<Vec<_>>(), ids);
    let page = dying.list("demo-psp", Some(State::Accepted), None, Some(&ids[4]), 3).await.unwrap();
    assert_eq!(page.iter().map(|payout| payout.id.as_str()).collect::<Vec<_>>(), vec![&ids[5], &ids[6], &ids[7]]);
    assert!(dying.list("demo-psp", Some(State::Routed), None, None, 100).await.unwrap().is_empty());
    assert!(dying.list("demo-psp-live", None, None, None, 100).await.unwrap().is_empty());
    let replay = intake.accept("demo-psp", "journal-3", &eur_payout(5_003)).await.unwrap();
    assert_eq!((replay.payout_id.as_str(), replay.replay), (ids[3].as_str(), true));
    let conflict = intake.accept("demo-psp", "journal-3", &eur_payout(1)).await;
    assert!(
        matches!(conflict, Err(railyard_saga::intake::IntakeError::Engine(EngineError::Conflict(id))) if id == ids[3])
    );

    let mut acknowledged = Vec::new();
    for id in &ids {
        acknowledged.push(dying.payout(id).await.unwrap().created_at);
    }
    tokio::time::sleep(Duration::from_millis(20)).await;

    // The next start (a new engine on the same files) moves them before accepting anything.
    let engine = Arc::new(world.engine(&db.store, "engine-b", None));
    let restarted = railyard_saga::intake::Intake::start(engine.clone());
    let again = restarted.accept("demo-psp", "journal-7", &eur_payout(5_007)).await.unwrap();
    assert_eq!((again.payout_id.as_str(), again.replay), (ids[7].as_str(), true));
    let fresh = restarted.accept("demo-psp", "journal-new", &eur_payout(6_000)).await.unwrap();
    assert!(!fresh.replay);
    let journal = railyard_store::journal::Journal::open(
        &db.store.journal_path().expect("a flushed SQLite store has a journal"),
        railyard_store::Durability::Full,
        &db.store,
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let moved: i64 = sqlx::Row::get(
            &sqlx::query("SELECT COUNT(*) FROM payouts WHERE idempotency_key LIKE 'journal-%'")
                .fetch_one(db.store.pool())
                .await
                .unwrap(),
            0,
        );
        // Forgotten once moved (the intake forgets after a quiet half second).
        if moved == 21 && journal.count().await.unwrap() == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{moved} of 21 moved, {} in the journal",
            journal.count().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for ((index, id), acknowledged_at) in ids.iter().enumerate().zip(&acknowledged) {
        let payout = engine.payout(id).await.unwrap();
        assert_eq!(payout.idempotency_key, format!("journal-{index}"));
        assert_eq!(payout.created_at, *acknowledged_at, "created when acknowledged, not when moved");
    }
    let keys: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) FROM idempotency WHERE key LIKE 'journal-%'")
            .fetch_one(db.store.pool())
            .await
            .unwrap(),
        0,
    );
    assert_eq!(keys, 21, "one idempotency record per key, none twice");
    assert!(verify::verify(&db.store).await.unwrap().ok());
}

/// An engine that announced itself alive and then died (kill -9: no clean stop) holds its sagas'
/// leases for 30 s, but another engine takes them over once the announcement lapses
/// (ENGINE_ALIVE_FOR, 1.5 s) and finishes them. An engine that never announced itself keeps relying
/// on its lease: nobody takes its saga early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_engines_sagas_are_taken_over_when_its_heartbeat_lapses() {
    for db in common::databases().await {
        let world = World::new();
        let setup = world.engine(&db.store, "setup", None);
        setup.ensure_accounts().await.unwrap();
        setup.fund_psp("demo-psp", Money::from_minor(1_000_000, c("USD")), "wire-1").await.unwrap();
        // Both die right after reserving, holding the lease (30 s).
        let die: railyard_saga::CrashHook =
            Arc::new(|at: CrashPoint| at == CrashPoint { step: "routed", phase: Phase::AfterCommit });
        let announced = world.engine(&db.store, "engine-announced", Some(die.clone()));
        let silent = world.engine(&db.store, "engine-silent", Some(die));
        announced.heartbeat().await.unwrap();
        let taken = announced.accept("demo-psp", "killed-1", &eur_payout(20_000)).await.unwrap().payout_id;
        let kept = silent.accept("demo-psp", "killed-2", &eur_payout(20_001)).await.unwrap().payout_id;
        assert!(matches!(announced.run(&taken).await, Err(EngineError::Crashed(_))));
        assert!(matches!(silent.run(&kept).await, Err(EngineError::Crashed(_))));
        // Its last announcement, just before it died. Taken before the write, so the lapse is at
        // least ENGINE_ALIVE_FOR after this instant however slowly the machine runs.
        let announced_at = std::time::Instant::now();
        announced.heartbeat().await.unwrap();

        let survivor = world.engine(&db.store, "engine-survivor", None);
        // At once: both leases are live, the announcement too.
        assert!(survivor.due_ids(10).await.unwrap().is_empty(), "{}", db.name);
        assert!(matches!(survivor.run(&taken).await, Err(EngineError::Leased(_))), "{}", db.name);
        let due = loop {
            let due = survivor.due_ids(10).await.unwrap();
            if !due.is_empty() {
                break due;
            }
            assert!(announced_at.elapsed() < Duration::from_secs(10), "{}: never taken over", db.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let waited = announced_at.elapsed();
        assert!(waited >= railyard_saga::ENGINE_ALIVE_FOR - Duration::from_millis(100), "{}: {waited:?}", db.name);
        assert_eq!(due, vec![taken.clone()], "{}: only the announced engine's saga is free", db.name);
        assert_eq!(drive_to_rest(&survivor, &taken).await, State::Completed, "{}", db.name);
        assert_eq!(world.executions("sepa-inst", &taken), 1);
        assert!(matches!(survivor.run(&kept).await, Err(EngineError::Leased(_))), "{}", db.name);
        // A clean stop withdraws the announcement: nothing of a retired engine waits.
        survivor.heartbeat().await.unwrap();
        survivor.retire().await.unwrap();
        let retired: i64 = sqlx::Row::get(
            &sqlx::query("SELECT alive_until FROM engines WHERE owner = 'engine-survivor'")
                .fetch_one(db.store.pool())
                .await
                .unwrap(),
            0,
        );
        assert_eq!(retired, 0, "{}", db.name);
    }
}

/// Cancellation before any rail leg voids the reservation and ends `cancelled`; after, it is too late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_the_rail_only() {
    for db in common::databases().await {
        let world = World::new();
        let setup = world.engine(&db.store, "setup", None);
        setup.ensure_accounts().await.unwrap();
        setup.fund_psp("demo-psp", Money::from_minor(1_000_000, c("USD")), "wire-1").await.unwrap();
        // Stop right after the reservation is committed.
        let stop: railyard_saga::CrashHook =
            Arc::new(|at: CrashPoint| at == CrashPoint { step: "routed", phase: Phase::AfterCommit });
        let engine = world.engine(&db.store, "engine-a", Some(stop));
        let id = engine.accept("demo-psp", "cancel-1", &eur_payout(50_000)).await.unwrap().payout_id;
        assert!(matches!(engine.run(&id).await, Err(EngineError::Crashed(_))));
        sqlx::query("UPDATE payouts SET lease_until = 0").execute(db.store.pool()).await.unwrap();
        let other = world.engine(&db.store, "engine-b", None);
        assert!(matches!(other.cancel("northwind-remit", &id).await, Err(EngineError::NotFound(_))), "{}", db.name);
        let cancelled = other.cancel("demo-psp", &id).await.unwrap();
        assert_eq!(cancelled.state, State::Cancelled, "{}", db.name);
        let psp = railyard_store::ledger::balance(db.store.pool(), "psp:demo-psp:USD").await.unwrap();
        assert_eq!(psp.available(), Money::from_minor(1_000_000, c("USD")), "{}: reservation released", db.name);
        assert_eq!(world.executions("sepa-inst", &id), 0);
        // A completed payout cannot be cancelled.
        let done = other.accept("demo-psp", "cancel-2", &eur_payout(10_000)).await.unwrap().payout_id;
        assert_eq!(drive_to_rest(&other, &done).await, State::Completed);
        assert!(matches!(other.cancel("demo-psp", &done).await, Err(EngineError::TooLate(_))), "{}", db.name);
        assert!(verify::verify(&db.store).await.unwrap().ok(), "{}", db.name);
    }
}

async fn drive_to_hold(engine: &Engine, id: &str) -> Payout {
    for _ in 0..50 {
        let state = engine.run(id).await.unwrap();
        if state.terminal() || matches!(state, State::Screening | State::AwaitingApproval) {
            break;
        }
    }
    engine.payout(id).await.unwrap()
}

fn named(name: &str, account: &str) -> PayoutRequest {
    let mut request = eur_payout(25_000);
    request.beneficiary.name = name.into();
    request.beneficiary.account = account.into();
    request
}

fn house_approver() -> Approver {
    Approver { tenant: "house".into(), key: "house/risk-approver".into(), all_tenants: true }
}

/// Screening: a clear name goes through; a near match of a listed name (or of the originator) is
/// held before any money moves, then cleared (a screening override, audited) or rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screening_holds_near_matches_before_money_moves() {
    for db in common::databases().await {
        let world = World::new();
        let engine = world.engine(&db.store, "engine-a", None);
        engine.ensure_accounts().await.unwrap();
        engine.fund_psp("demo-psp", Money::from_minor(10_000_000, c("USD")), "wire-1").await.unwrap();
        let balance = || async {
            railyard_store::ledger::balance(db.store.pool(), "psp:demo-psp:USD").await.unwrap().available()
        };

        let clear =
            engine.accept("demo-psp", "clear-1", &named("Jonas Weber", "DE89370400440532013000")).await.unwrap();
        assert_eq!(drive_to_rest(&engine, &clear.payout_id).await, State::Completed, "{}", db.name);
        let risk = engine.payout(&clear.payout_id).await.unwrap().risk.unwrap();
        assert_eq!(risk.decision, Decision::Approve, "{}: {risk:?}", db.name);
        assert!(risk.reasons.iter().any(|reason| reason.rule == "new_beneficiary"), "{risk:?}");

        // "Viktor Zarubenko" is listed as "Viktor Aleksandrovich Zarubenko".
        let before = balance().await;
        let near = engine
            .accept("demo-psp", "near-1", &named("VIKTOR ZARUBENKO", "FR7630006000011234567890189"))
            .await
            .unwrap();
        let held = drive_to_hold(&engine, &near.payout_id).await;
        assert_eq!(held.state, State::Screening, "{}: {:?}", db.name, held.reason);
        let risk = held.risk.clone().unwrap();
        assert_eq!(risk.decision, Decision::Review);
        let hit = &risk.screening[0].hits[0];
        assert_eq!(hit.entry, "Viktor Aleksandrovich Zarubenko");
        assert_eq!(hit.program, "SYN-EURO");
        assert!(held.reason.as_deref().unwrap().contains("matches listed"), "{:?}", held.reason);
        assert!(held.reservation.is_none(), "nothing is reserved while held");
        assert_eq!(balance().await, before);
        assert_eq!(world.executions("sepa-inst", &held.id), 0);

        // An originator is screened too.
        let mut request = named("Jonas Weber", "DE89370400440532013000");
        request.originator = Some(Originator { name: "Rashid Al Qadumi".into(), country: None });
        let originator = engine.accept("demo-psp", "near-2", &request).await.unwrap();
        let held_originator = drive_to_hold(&engine, &originator.payout_id).await;
        assert_eq!(held_originator.state, State::Screening, "{}", db.name);
        assert_eq!(held_originator.risk.unwrap().screening[1].party, "originator");

        // Cleared by an approver: an audited screening override, then routed and paid.
        let cleared = engine
            .decide(&near.payout_id, &house_approver(), Verdict::Approve, "same name, different person")
            .await
            .unwrap();
        assert_eq!(cleared.state, State::Accepted);
        assert_eq!(cleared.decided_by.as_deref(), Some("house/risk-approver"));
        assert_eq!(drive_to_rest(&engine, &near.payout_id).await, State::Completed, "{}", db.name);
        assert_eq!(world.executions("sepa-inst", &near.payout_id), 1);
        // Rejected: it fails with the approver's words, nothing was ever reserved.
        let rejected =
            engine.decide(&originator.payout_id, &house_approver(), Verdict::Reject, "confirmed match").await.unwrap();
        assert_eq!(rejected.state, State::Failed);
        assert!(rejected.reason.unwrap().contains("rejected by house/risk-approver: confirmed match"));
        assert!(matches!(
            engine.decide(&originator.payout_id, &house_approver(), Verdict::Approve, "").await,
            Err(DecideError::NotHeld { .. })
        ));

        let log = db.store.audit_log(100).await.unwrap();
        let actions: Vec<&str> = log.iter().map(|entry| entry.action.as_str()).collect();
        assert!(actions.contains(&"screening.override") && actions.contains(&"payout.reject"), "{actions:?}");
        assert!(verify::verify(&db.store).await.unwrap().ok(), "{}", db.name);
    }
}

/// Four eyes: a payout over the approval amount waits, unreserved, until a second key approves;
/// the key that submitted it cannot, nor can another tenant's approver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_approval_amount_needs_a_second_key() {
    for db in common::databases().await {
        let mut config = (*config()).clone();
        config.risk.as_mut().unwrap().approval_amount.insert(c("USD"), Money::from_minor(100_000, c("USD")));
        let world = World::with_config(Arc::new(config));
        let engine = world.engine(&db.store, "engine-a", None);
        engine.ensure_accounts().await.unwrap();
        engine.fund_psp("demo-psp", Money::from_minor(10_000_000, c("USD")), "wire-1").await.unwrap();
        let mut request = eur_payout(150_000);
        request.submitted_by = Some("demo-psp/ops-dual".into());
        let accepted = engine.accept("demo-psp", "big-1", &request).await.unwrap();
        let held = drive_to_hold(&engine, &accepted.payout_id).await;
        assert_eq!(held.state, State::AwaitingApproval, "{}: {:?}", db.name, held.reason);
        assert!(held.reason.as_deref().unwrap().contains("approval amount"), "{:?}", held.reason);
        assert!(held.reservation.is_none());
        // Running it again changes nothing: it waits for a person.
        assert_eq!(engine.run(&accepted.payout_id).await.unwrap(), State::AwaitingApproval);
        assert_eq!(world.executions("sepa-inst", &held.id), 0);

        let own = Approver { tenant: "demo-psp".into(), key: "demo-psp/ops-dual".into(), all_tenants: false };
        assert!(matches!(
            engine.decide(&held.id, &own, Verdict::Approve, "mine").await,
            Err(DecideError::OwnRequest(_))
        ));
        let stranger =
            Approver { tenant: "northwind-remit".into(), key: "northwind-remit/boss".into(), all_tenants: false };
        assert!(matches!(
            engine.decide(&held.id, &stranger, Verdict::Approve, "").await,
            Err(DecideError::NotFound(_))
        ));
        assert_eq!(engine.payout(&held.id).await.unwrap().state, State::AwaitingApproval);

        let second = Approver { tenant: "demo-psp".into(), key: "demo-psp/ops-second".into(), all_tenants: false };
        engine.decide(&held.id, &second, Verdict::Approve, "checked the invoice").await.unwrap();
        assert_eq!(drive_to_rest(&engine, &held.id).await, State::Completed, "{}", db.name);
        assert_eq!(world.executions("sepa-inst", &held.id), 1);
        let log = db.store.audit_log(10).await.unwrap();
        assert_eq!(log[0].action, "payout.approve");
        assert_eq!(log[0].actor, "demo-psp/ops-second");
    }
}

/// The beneficiary account is encrypted at rest: the payout stores a token, the rail still gets
/// the account, and the clear text is nowhere in the database (files included, on SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beneficiary_accounts_are_encrypted_at_rest() {
    const ACCOUNT: &str = "NL91ABNA0417164300";
    for db in common::databases().await {
        let world = World::new();
        let engine = world.engine(&db.store, "engine-a", None);
        engine.ensure_accounts().await.unwrap();
        engine.fund_psp("demo-psp", Money::from_minor(10_000_000, c("USD")), "wire-1").await.unwrap();
        let accepted = engine.accept("demo-psp", "vault-1", &named("Anna de Vries", ACCOUNT)).await.unwrap();
        assert_eq!(drive_to_rest(&engine, &accepted.payout_id).await, State::Completed, "{}", db.name);
        let payout = engine.payout(&accepted.payout_id).await.unwrap();
        assert!(payout.request.beneficiary.account.starts_with("ben_"), "{:?}", payout.request.beneficiary);
        assert_eq!(payout.request.account_masked.as_deref(), Some("••••••••••••••4300"));
        // Round trip: the rail was paid to the account itself.
        let record = world
            .sandbox("sepa-inst")
            .sandbox()
            .ledger
            .executions()
            .into_iter()
            .find(|record| record.beneficiary_account == ACCOUNT);
        assert!(record.is_some(), "{}: the rail never saw the account", db.name);
        // Replaying the request finds the same payout (the token is deterministic).
        let replay = engine.accept("demo-psp", "vault-1", &named("Anna de Vries", ACCOUNT)).await.unwrap();
        assert!(replay.replay && replay.payout_id == accepted.payout_id);
        let stored: Vec<String> = sqlx::query("SELECT request FROM payouts")
            .fetch_all(db.store.pool())
            .await
            .unwrap()
            .iter()
            .map(|row| sqlx::Row::try_get::<String, _>(row, 0).unwrap())
            .collect();
        assert!(stored.iter().all(|request| !request.contains(ACCOUNT)));
        if let Some(file) = db.file() {
            db.store.pool().execute("PRAGMA wal_checkpoint(FULL)").await.unwrap();
            for suffix in ["", "-wal"] {
                let bytes = std::fs::read(format!("{}{suffix}", file.display())).unwrap_or_default();
                assert!(
                    !bytes.windows(ACCOUNT.len()).any(|window| window == ACCOUNT.as_bytes()),
                    "the account is in clear in {}{suffix}",
                    file.display()
                );
            }
        }
    }
}

/// The audit log is a hash chain: an edited row, a removed row and a removed tail are each found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_the_audit_log_is_detected() {
    for db in common::databases().await {
        for index in 1..=5 {
            db.store.audit("house/treasury-desk", "treasury.fee", &format!("change {index}")).await.unwrap();
        }
        assert!(railyard_store::audit::verify(&db.store).await.unwrap().intact(), "{}", db.name);

        sqlx::query("UPDATE audit_chain SET detail = 'change 2 (nothing to see)' WHERE sequence = 2")
            .execute(db.store.pool())
            .await
            .unwrap();
        let report = railyard_store::audit::verify(&db.store).await.unwrap();
        assert_eq!(report.listed[0].sequence, 2, "{}: {report:?}", db.name);
        assert!(report.listed[0].problem.contains("edited"), "{report:?}");
        let store_report = verify::verify(&db.store).await.unwrap();
        assert_eq!(store_report.get("audit_chain").unwrap().violations, 1, "{}", db.name);

        sqlx::query("UPDATE audit_chain SET detail = 'change 2' WHERE sequence = 2")
            .execute(db.store.pool())
            .await
            .unwrap();
        sqlx::query("DELETE FROM audit_chain WHERE sequence = 4").execute(db.store.pool()).await.unwrap();
        let report = railyard_store::audit::verify(&db.store).await.unwrap();
        assert!(
            report.listed.iter().any(|problem| problem.sequence == 5 && problem.problem.contains("missing")),
            "{report:?}"
        );

        sqlx::query("DELETE FROM audit_chain WHERE sequence >= 4").execute(db.store.pool()).await.unwrap();
        let report = railyard_store::audit::verify(&db.store).await.unwrap();
        assert!(report.listed.iter().any(|problem| problem.problem.contains("head says 5")), "{}: {report:?}", db.name);
    }
}

/// The counters the risk rules read, as the engine keeps them: payouts per PSP per hour, amount
/// per PSP per day, payouts per beneficiary per day and the PSP's history (mean amount) each feed
/// the rule they are for, one committed payout after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn risk_counters_feed_velocity_history_and_daily_limits() {
    let mut config = (*config()).clone();
    let risk = config.risk.as_mut().unwrap();
    risk.approval_score = 1_000;
    risk.block_score = 1_000;
    risk.limits.psp_payouts_per_hour = 4;
    risk.limits.beneficiary_payouts_per_day = 2;
    risk.limits.history_min = 2;
    risk.limits.unusual_amount_multiple = Decimal::from(5);
    risk.limits.psp_daily_amount.insert(c("USD"), Money::from_minor(100_000, c("USD")));
    let config = Arc::new(config);
    for db in common::databases().await {
        let world = World::with_config(config.clone());
        let engine = world.engine(&db.store, "engine-a", None);
        engine.ensure_accounts().await.unwrap();
        engine.fund_psp("demo-psp", Money::from_minor(10_000_000, c("USD")), "wire-1").await.unwrap();
        let mut rules = Vec::new();
        let same = "DE89370400440532013000";
        for (index, (amount, account)) in
            [(10_000, same), (10_000, same), (10_000, same), (60_000, "FR1420041010050500013M02606"), (15_000, same)]
                .into_iter()
                .enumerate()
        {
            let mut request = eur_payout(amount);
            request.beneficiary.account = account.into();
            let id = engine.accept("demo-psp", &format!("risk-{index}"), &request).await.unwrap().payout_id;
            let state = drive_to_rest(&engine, &id).await;
            let payout = engine.payout(&id).await.unwrap();
            let risk = payout.risk.unwrap();
            rules.push((state, risk.reasons.iter().map(|reason| reason.rule.clone()).collect::<Vec<_>>()));
        }
        let has = |index: usize, rule: &str| rules[index].1.iter().any(|found| found == rule);
        assert!(has(0, "new_beneficiary") && !has(1, "new_beneficiary"), "{}: {rules:?}", db.name);
        // Two payouts to the account today already: the third is a velocity reason.
        assert!(!has(1, "beneficiary_velocity") && has(2, "beneficiary_velocity"), "{}: {rules:?}", db.name);
        // Three payouts of 100.00 make the mean: 600.00 is at least five times it.
        assert!(!has(2, "unusual_amount") && has(3, "unusual_amount"), "{}: {rules:?}", db.name);
        assert!(rules[..4].iter().all(|(state, _)| *state == State::Completed), "{}: {rules:?}", db.name);
        // The fifth: four payouts in the hour (limit 4), and 900.00 today plus 150.00 is over 1,000.00.
        assert_eq!(rules[4].0, State::Failed, "{}: {rules:?}", db.name);
        assert!(has(4, "psp_velocity_limit") && has(4, "psp_daily_amount_limit"), "{}: {rules:?}", db.name);
        assert!(!has(3, "psp_velocity_limit") && !has(3, "psp_daily_amount_limit"), "{}: {rules:?}", db.name);
    }
}

/// A payout's trail with everything that names it or its run replaced: its events (state and
/// detail, in order), its ledger entries (kind, accounts, amount, in order), its webhooks, where it
/// ended and why, and its risk rules.
async fn trail(store: &Store, payout: &Payout) -> Vec<String> {
    let normal = |text: &str| {
        let text = text.replace(&payout.id, "P").replace(&payout.tenant, "T");
        if let Some(at) = text.find("FX rates locked until") {
            return text[..at + "FX rates locked until".len()].to_string();
        }
        match text.find(" executed on ") {
            Some(at) => text[..text[at..].find(':').map_or(text.len(), |colon| at + colon)].to_string(),
            None => text,
        }
    };
    let mut trail = Vec::new();
    for event in railyard_saga::payout_events(store, &payout.id).await.unwrap() {
        trail.push(format!("event {}: {}", event.state.as_str(), normal(&event.detail)));
    }
    let transfers = sqlx::query(
        "SELECT id, kind, debit_account, credit_account, amount, currency, pending_id FROM transfers \
         WHERE payout_id = $1 ORDER BY sequence",
    )
    .bind(&payout.id)
    .fetch_all(store.pool())
    .await
    .unwrap();
    for row in transfers {
        // A payout's transfers are found by the prefix of their ids (migration 16 dropped the
        // index on `payout_id`): every one must carry it.
        let id: String = sqlx::Row::get(&row, 0);
        assert!(id.starts_with(&format!("{}:", payout.id)), "transfer {id} of payout {}", payout.id);
        let text: Vec<String> = (0..7)
            .map(|column| {
                sqlx::Row::try_get::<String, _>(&row, column)
                    .or_else(|_| sqlx::Row::try_get::<i64, _>(&row, column).map(|value| value.to_string()))
                    .unwrap_or_default()
            })
            .collect();
        trail.push(format!("ledger {}", normal(&text.join(" "))));
    }
    let outbox = sqlx::query("SELECT event, body FROM outbox WHERE payout_id = $1 ORDER BY event")
        .bind(&payout.id)
        .fetch_all(store.pool())
        .await
        .unwrap();
    for row in outbox {
        let body: serde_json::Value = serde_json::from_str(&sqlx::Row::get::<String, _>(&row, 1)).unwrap();
        trail.push(format!(
            "webhook {}: {}",
            sqlx::Row::get::<String, _>(&row, 0),
            normal(body["detail"].as_str().unwrap())
        ));
    }
    let stored = sqlx::query("SELECT lease_owner, reservation FROM payouts WHERE id = $1")
        .bind(&payout.id)
        .fetch_one(store.pool())
        .await
        .unwrap();
    let lease: Option<String> = sqlx::Row::get(&stored, 0);
    let reservation: Option<String> = sqlx::Row::get(&stored, 1);
    trail.push(format!(
        "payout {} leg {} attempt {} reason {:?} reservation {:?} leased {}",
        payout.state.as_str(),
        payout.leg,
        payout.attempt,
        payout.reason.as_deref().map(normal),
        reservation.as_deref().map(normal),
        lease.is_some()
    ));
    if let Some(risk) = &payout.risk {
        let rules: Vec<&str> = risk.reasons.iter().map(|reason| reason.rule.as_str()).collect();
        trail.push(format!("risk {:?} {rules:?}", risk.decision));
    }
    trail
}

/// `count` payouts of demo-psp, USD to EUR, keyed `{prefix}-{index}`, 100.00 EUR and up.
async fn accept_eur_payouts(engine: &Engine, prefix: &str, count: i64) -> Vec<String> {
    let mut ids = Vec::new();
    for index in 0..count {
        let accepted = engine.accept("demo-psp", &format!("{prefix}-{index}"), &eur_payout(10_000 + index)).await;
        ids.push(accepted.unwrap().payout_id);
    }
    ids
}

/// A hook that never crashes, only records where the engine went.
fn recording_hook() -> (Arc<Mutex<Vec<CrashPoint>>>, railyard_saga::CrashHook) {
    let seen: Arc<Mutex<Vec<CrashPoint>>> = Arc::default();
    let record = seen.clone();
    let hook: railyard_saga::CrashHook = Arc::new(move |at: CrashPoint| {
        record.lock().unwrap().push(at);
        false
    });
    (seen, hook)
}

/// Both of a group's steps committed (among the points `seen` by a [`recording_hook`]).
fn assert_grouped(seen: &Mutex<Vec<CrashPoint>>, name: &str) {
    let points = seen.lock().unwrap().clone();
    for step in ["group_submit", "group_complete"] {
        assert!(points.contains(&CrashPoint { step, phase: Phase::AfterCommit }), "{name}: {points:?}");
    }
}

/// The group went back to book first after writing its rows (PostgreSQL's order, when a member
/// did not book), among the points `seen` by a [`recording_hook`].
fn rebooked(seen: &Mutex<Vec<CrashPoint>>) -> bool {
    seen.lock().unwrap().contains(&CrashPoint { step: "group_submit_rebook", phase: Phase::BeforeCommit })
}

fn group_requests() -> Vec<PayoutRequest> {
    let mut requests = Vec::new();
    // USD → EUR through an FX provider and SEPA Instant, three beneficiaries, one twice.
    for (amount, account) in [
        (12_345, "DE89370400440532013000"),
        (20_000, "FR1420041010050500013M02606"),
        (7_500, "DE89370400440532013000"),
        (31_000, "NL91ABNA0417164300"),
    ] {
        let mut request = eur_payout(amount);
        request.beneficiary.account = account.into();
        requests.push(request);
    }
    // Over the approval amount (USD 100,000.00): held for a second person.
    requests.push(eur_payout(10_000_000));
    // More than the PSP holds (below the approval amount): fails for want of balance.
    requests.push(eur_payout(9_500_000));
    // A same-currency payout.
    let mut euro = eur_payout(5_000);
    euro.source = c("EUR");
    euro.amount = Money::from_minor(5_000, c("EUR"));
    requests.push(euro);
    // No rail serves a Brazilian beneficiary in euros: fails for want of a route (in the group too).
    let mut nowhere = eur_payout(4_000);
    nowhere.beneficiary.country = Country::from_code("BR").unwrap();
    requests.push(nowhere);
    requests
}

/// The same payouts, run one by one by one PSP and as one group by another, leave the same trail
/// each: the same events in the same order, the same ledger entries, the same webhooks, the same
/// end, held and short-of-balance ones included (they leave the group and run alone), and one without a
/// route (failed inside the group).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_leaves_the_trail_single_runs_leave() {
    for db in common::databases().await {
        let world = World::new();
        let (seen, hook) = recording_hook();
        let engine = world.engine(&db.store, "engine-a", Some(hook));
        engine.ensure_accounts().await.unwrap();
        for tenant in ["demo-psp", "northwind-remit"] {
            engine.fund_psp(tenant, Money::from_minor(9_000_000, c("USD")), &format!("wire-{tenant}")).await.unwrap();
            engine
                .fund_psp(tenant, Money::from_minor(1_000_000, c("EUR")), &format!("wire-eur-{tenant}"))
                .await
                .unwrap();
        }
        let requests = group_requests();
        let mut alone = Vec::new();
        for (index, request) in requests.iter().enumerate() {
            let id = engine.accept("demo-psp", &format!("alone-{index}"), request).await.unwrap().payout_id;
            drive_to_hold(&engine, &id).await;
            alone.push(engine.payout(&id).await.unwrap());
        }
        let mut ids = Vec::new();
        for (index, request) in requests.iter().enumerate() {
            ids.push(engine.accept("northwind-remit", &format!("grouped-{index}"), request).await.unwrap().payout_id);
        }
        seen.lock().unwrap().clear();
        let results = engine.run_group(&ids).await;
        assert_eq!(results.len(), ids.len(), "{}: {results:?}", db.name);
        // The common ones went through the group's two commits, not one by one. On PostgreSQL
        // the group wrote its rows first and, the member short of balance not booking, went back
        // and booked first; SQLite books first always.
        assert_grouped(&seen, db.name);
        assert_eq!(rebooked(&seen), db.store.dialect() == Dialect::Postgres, "{}", db.name);
        assert!(results.iter().all(|(_, result)| result.is_ok()), "{}: {results:?}", db.name);
        for (index, (single, id)) in alone.iter().zip(&ids).enumerate() {
            let grouped = engine.payout(id).await.unwrap();
            let (expected, found) = (trail(&db.store, single).await, trail(&db.store, &grouped).await);
            assert_eq!(found, expected, "{}: payout {index}", db.name);
            // The same trail from fewer rows: a completed member's accept, its step to the rail
            // and its completion are a row each, however many states each passed.
            if grouped.state == State::Completed {
                let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM saga_events WHERE payout_id = $1")
                    .bind(id)
                    .fetch_one(db.store.pool())
                    .await
                    .unwrap();
                let states = railyard_saga::payout_events(&db.store, id).await.unwrap().len();
                assert_eq!(rows, 3, "{}: payout {index} has {states} states in {rows} rows", db.name);
                assert!(states >= 8, "{}: payout {index} has {states} states", db.name);
            }
        }
        let states: Vec<State> = alone.iter().map(|payout| payout.state).collect();
        assert_eq!(
            states,
            [
                State::Completed,
                State::Completed,
                State::Completed,
                State::Completed,
                State::AwaitingApproval,
                State::Failed,
                State::Completed,
                State::Failed
            ],
            "{}",
            db.name
        );
        for id in &ids {
            assert!(world.executions("sepa-inst", id) <= 1);
        }
        let report = verify::verify(&db.store).await.unwrap();
        assert!(report.ok(), "{}: {report:?}", db.name);
    }
}

/// A crash at every point of a group's pass (before and after its first commit, between a rail's
/// answer and its record, before and after the completion's commit): after a restart the ordinary
/// engine finishes every payout, each executed exactly once, and the ledger verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_crashed_anywhere_is_finished_by_a_restart() {
    const GROUP_POINTS: &[(&str, Phase)] = &[
        ("group_submit", Phase::BeforeCommit),
        ("group_submit", Phase::AfterCommit),
        ("rail_call", Phase::AfterRailCall),
        ("group_complete", Phase::BeforeCommit),
        ("group_complete", Phase::AfterCommit),
    ];
    for db in common::databases().await {
        let world = World::new();
        let setup = world.engine(&db.store, "setup", None);
        setup.ensure_accounts().await.unwrap();
        setup.fund_psp("demo-psp", Money::from_minor(100_000_000, c("USD")), "wire-1").await.unwrap();
        for (case, (step, phase)) in GROUP_POINTS.iter().enumerate() {
            let point = CrashPoint { step, phase: *phase };
            let fired = Arc::new(AtomicBool::new(false));
            let hook_fired = fired.clone();
            let hook: railyard_saga::CrashHook =
                Arc::new(move |at: CrashPoint| at == point && !hook_fired.swap(true, Ordering::SeqCst));
            let crashing = world.engine(&db.store, "engine-crash", Some(hook));
            let mut ids = Vec::new();
            for index in 0..5 {
                let request = eur_payout(10_000 + (case * 10 + index) as i64);
                ids.push(
                    crashing
                        .accept("demo-psp", &format!("group-crash-{case}-{index}"), &request)
                        .await
                        .unwrap()
                        .payout_id,
                );
            }
            let results = crashing.run_group(&ids).await;
            assert!(fired.load(Ordering::SeqCst), "{}: never crashed at {step} {phase:?}", db.name);
            assert!(
                results.iter().any(|(_, result)| matches!(result, Err(EngineError::Crashed(_)))),
                "{}: {step} {phase:?}: {results:?}",
                db.name
            );
            // Restart: the crashed engine's leases expire, a new engine finishes the payouts.
            sqlx::query("UPDATE payouts SET lease_until = 0 WHERE lease_owner = 'engine-crash'")
                .execute(db.store.pool())
                .await
                .unwrap();
            let restarted = world.engine(&db.store, "engine-restarted", None);
            for id in &ids {
                let state = drive_to_rest(&restarted, id).await;
                assert_eq!(state, State::Completed, "{}: {step} {phase:?}: {id}", db.name);
                assert_eq!(world.executions("sepa-inst", id), 1, "{}: {step} {phase:?}: {id}", db.name);
            }
        }
        let report = verify::verify(&db.store).await.unwrap();
        assert!(report.ok(), "{}: {report:?}", db.name);
    }
}

/// On PostgreSQL a group writes its members' rows before it books their money; when one does not
/// book (here it asks for more than its PSP holds) the transaction goes back to before those rows
/// and books first. A crash just after going back leaves nothing of the attempt: no payout moved,
/// no event written, and a restart finishes every payout, the short one failed for want of
/// balance, the others completed and executed once. SQLite books first always and never goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_crashed_after_going_back_to_book_first_is_finished_by_a_restart() {
    let point = CrashPoint { step: "group_submit_rebook", phase: Phase::BeforeCommit };
    for db in common::databases().await {
        let world = World::new();
        let setup = world.engine(&db.store, "setup", None);
        setup.ensure_accounts().await.unwrap();
        setup.fund_psp("demo-psp", Money::from_minor(1_000_000, c("USD")), "wire-1").await.unwrap();
        let fired = Arc::new(AtomicBool::new(false));
        let hook_fired = fired.clone();
        let hook: railyard_saga::CrashHook =
            Arc::new(move |at: CrashPoint| at == point && !hook_fired.swap(true, Ordering::SeqCst));
        let crashing = world.engine(&db.store, "engine-crash", Some(hook));
        let amounts = [10_000, 20_000, 2_000_000, 30_000];
        let mut ids = Vec::new();
        for (index, minor) in amounts.iter().enumerate() {
            let request = eur_payout(*minor);
            ids.push(crashing.accept("demo-psp", &format!("rebook-{index}"), &request).await.unwrap().payout_id);
        }
        let mut before = Vec::new();
        for id in &ids {
            before.push(format!("{:?}", crashing.history(id).await.unwrap()));
        }
        let results = crashing.run_group(&ids).await;
        let postgres = db.store.dialect() == Dialect::Postgres;
        assert_eq!(fired.load(Ordering::SeqCst), postgres, "{}: {results:?}", db.name);
        if postgres {
            assert!(
                results.iter().all(|(_, result)| matches!(result, Err(EngineError::Crashed(_)))),
                "{}: {results:?}",
                db.name
            );
            for (id, before) in ids.iter().zip(&before) {
                assert_eq!(crashing.payout(id).await.unwrap().state, State::Accepted, "{}: {id}", db.name);
                assert_eq!(&format!("{:?}", crashing.history(id).await.unwrap()), before, "{}: {id}", db.name);
                assert_eq!(world.executions("sepa-inst", id), 0, "{}: {id}", db.name);
            }
        }
        // Restart: the crashed engine's leases expire, a new engine finishes the payouts.
        sqlx::query("UPDATE payouts SET lease_until = 0 WHERE lease_owner = 'engine-crash'")
            .execute(db.store.pool())
            .await
            .unwrap();
        let restarted = world.engine(&db.store, "engine-restarted", None);
        for (id, minor) in ids.iter().zip(amounts) {
            let state = drive_to_rest(&restarted, id).await;
            let (expected, executions) = if minor == 2_000_000 { (State::Failed, 0) } else { (State::Completed, 1) };
            assert_eq!(state, expected, "{}: {id} ({minor})", db.name);
            assert_eq!(world.executions("sepa-inst", id), executions, "{}: {id}", db.name);
        }
        let report = verify::verify(&db.store).await.unwrap();
        assert!(report.ok(), "{}: {report:?}", db.name);
    }
}

/// Rail answers other than executed leave the group where they come back and go on alone: a
/// definitive reject fails its payout (nothing executed), a lost reply is asked about and
/// completes; the others complete together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rail_answers_other_than_executed_go_on_alone() {
    for db in common::databases().await {
        let world = World::new();
        let engine = world.engine(&db.store, "engine-a", None);
        engine.ensure_accounts().await.unwrap();
        engine.fund_psp("demo-psp", Money::from_minor(100_000_000, c("USD")), "wire-1").await.unwrap();
        let sepa = world.sandbox("sepa-inst").sandbox();
        sepa.faults.force(Fault::Reject { code: "AC04".into() }).unwrap();
        sepa.faults.force(Fault::ReplyLost).unwrap();
        let ids = accept_eur_payouts(&engine, "mixed", 6).await;
        let results = engine.run_group(&ids).await;
        assert!(results.iter().all(|(_, result)| result.is_ok()), "{}: {results:?}", db.name);
        let mut states = Vec::new();
        for id in &ids {
            states.push(drive_to_rest(&engine, id).await);
        }
        let failed: Vec<&String> =
            ids.iter().zip(&states).filter(|(_, state)| **state == State::Failed).map(|(id, _)| id).collect();
        assert_eq!(failed.len(), 1, "{}: {states:?}", db.name);
        let reason = engine.payout(failed[0]).await.unwrap().reason.unwrap();
        assert!(reason.contains("rejected"), "{}: {reason}", db.name);
        assert_eq!(world.executions("sepa-inst", failed[0]), 0);
        assert_eq!(states.iter().filter(|state| **state == State::Completed).count(), 5, "{}: {states:?}", db.name);
        for (id, state) in ids.iter().zip(&states) {
            if *state == State::Completed {
                assert_eq!(world.executions("sepa-inst", id), 1, "{}", db.name);
            }
        }
        drain(&sepa);
        let report = verify::verify(&db.store).await.unwrap();
        assert!(report.ok(), "{}: {report:?}", db.name);
    }
}

/// A payout refused by its rail for a reason another rail might not have (insufficient funds at
/// the network) re-routes; with nowhere left it fails, and routing's explanation says why each rail
/// was out: the one that refused it before, those that cannot credit its kind of account. Neither
/// is called an outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_says_why_each_rail_was_out() {
    for db in common::databases().await {
        // Every rail of the demo, card networks too.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/demo.toml");
        let mut config = railyard_config::load(std::path::Path::new(path)).unwrap();
        for rail in &mut config.rails {
            rail.timeout_ms = 300;
        }
        let world = World::with_config(Arc::new(config));
        let engine = world.engine(&db.store, "engine-a", None);
        engine.ensure_accounts().await.unwrap();
        engine.fund_psp("demo-psp", Money::from_minor(10_000_000, c("EUR")), "wire-eur").await.unwrap();
        world.sandbox("sepa-inst").sandbox().faults.force(Fault::Reject { code: "AM04".into() }).unwrap();
        let request = PayoutRequest {
            source: c("EUR"),
            amount: Money::from_minor(10_000, c("EUR")),
            rail_kind: Some(RailKind::Instant),
            ..eur_payout(0)
        };
        let id = engine.accept("demo-psp", "refused-once", &request).await.unwrap().payout_id;
        assert_eq!(drive_to_rest(&engine, &id).await, State::Failed, "{}", db.name);
        let reason = engine.payout(&id).await.unwrap().reason.unwrap();
        assert!(reason.contains("sepa-inst EUR@ledger → EUR@beneficiary: refused this payout before"), "{reason}");
        assert!(
            reason.lines().any(|line| line.trim_start().starts_with("visa-direct ")
                && line.ends_with(": a card rail: cannot credit the beneficiary's instant account")),
            "{reason}"
        );
        assert!(!reason.contains("outage"), "{}: {reason}", db.name);
        assert_eq!(world.executions("sepa-inst", &id), 0, "{}", db.name);
        let report = verify::verify(&db.store).await.unwrap();
        assert!(report.ok(), "{}: {report:?}", db.name);
    }
}

/// A leg whose answer did not come in time is recalled. When the rail cancels it (RJCT DS24: the
/// payment never reached it), nothing executed and the rail is not at fault: the payout tries again
/// under a new attempt's key and may use the same rail, here the only one for its corridor. The
/// attempts stay bounded: a rail that loses every request fails the payout, having paid nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leg_cancelled_on_our_recall_tries_the_same_rail_again() {
    for db in common::databases().await {
        let world = World::new();
        let engine = world.engine(&db.store, "engine-a", None);
        engine.ensure_accounts().await.unwrap();
        engine.fund_psp("demo-psp", Money::from_minor(10_000_000, c("EUR")), "wire-eur").await.unwrap();
        let sepa = world.sandbox("sepa-inst").sandbox();
        let request = PayoutRequest { source: c("EUR"), amount: Money::from_minor(10_000, c("EUR")), ..eur_payout(0) };

        sepa.faults.force(Fault::RequestLost).unwrap();
        let id = engine.accept("demo-psp", "recalled-once", &request).await.unwrap().payout_id;
        let state = drive_to_rest(&engine, &id).await;
        let payout = engine.payout(&id).await.unwrap();
        assert_eq!(state, State::Completed, "{}: {:?}", db.name, payout.reason);
        assert_eq!(payout.attempt, 1, "{}", db.name);
        assert_eq!(payout.route.as_ref().unwrap().legs[0].operator, "sepa-inst", "{}", db.name);
        assert_eq!(world.executions("sepa-inst", &id), 1, "{}", db.name);
        let trail = trail(&db.store, &payout).await;
        assert!(
            trail
                .iter()
                .any(|line| line.contains("rejected by sepa-inst: cancelled (DS24)") && line.ends_with("; re-routing")),
            "{}: {trail:#?}",
            db.name
        );

        // Each attempt cancelled the same way, without the timeout: a lost request would spend
        // the next forced fault on its recall.
        for _ in 0..3 {
            sepa.faults.force(Fault::Reject { code: "DS24".into() }).unwrap();
        }
        let id = engine.accept("demo-psp", "recalled-always", &request).await.unwrap().payout_id;
        assert_eq!(drive_to_rest(&engine, &id).await, State::Failed, "{}", db.name);
        let payout = engine.payout(&id).await.unwrap();
        assert_eq!(payout.attempt, 2, "{}", db.name);
        assert!(payout.reason.as_deref().unwrap().contains("cancelled (DS24)"), "{}: {:?}", db.name, payout.reason);
        assert_eq!(world.executions("sepa-inst", &id), 0, "{}", db.name);
        drain(&sepa);
        let report = verify::verify(&db.store).await.unwrap();
        assert!(report.ok(), "{}: {report:?}", db.name);
    }
}

/// A payout that follows a quote and is routed again (its rail cancelled a leg on our recall)
/// keeps the quote's price within the slippage tolerance: when prices have moved past it since,
/// it fails saying so and pays nothing, while a payout without a quote goes on at today's price.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_routed_payout_keeps_its_quotes_price_or_fails() {
    for db in common::databases().await {
        let mut world = World::new();
        let setup = world.engine(&db.store, "setup", None);
        setup.ensure_accounts().await.unwrap();
        setup.fund_psp("demo-psp", Money::from_minor(10_000_000, c("USD")), "wire-1").await.unwrap();
        let sepa = world.sandbox("sepa-inst").sandbox();
        let quote = setup.quote("demo-psp", &eur_payout(40_000), None).await.unwrap();
        let mut quoted = eur_payout(40_000);
        quoted.quote_id = Some(quote.id.clone());
        let mut ids = Vec::new();
        for (key, request) in [("quoted", quoted), ("unquoted", eur_payout(40_000))] {
            // Stop right after the cancelled leg's commit: the payout is back at `accepted`.
            let fired = Arc::new(AtomicBool::new(false));
            let stop: railyard_saga::CrashHook = Arc::new(move |at: CrashPoint| {
                at == CrashPoint { step: "submitting", phase: Phase::AfterCommit }
                    && !fired.swap(true, Ordering::SeqCst)
            });
            let engine = world.engine(&db.store, "engine-reject", Some(stop));
            sepa.faults.force(Fault::Reject { code: "DS24".into() }).unwrap();
            let id = engine.accept("demo-psp", key, &request).await.unwrap().payout_id;
            assert!(matches!(engine.run(&id).await, Err(EngineError::Crashed(_))), "{}", db.name);
            let payout = engine.payout(&id).await.unwrap();
            assert_eq!((payout.state, payout.attempt), (State::Accepted, 1), "{}: {:?}", db.name, payout.reason);
            ids.push(id);
        }
        sqlx::query("UPDATE payouts SET lease_until = 0").execute(db.store.pool()).await.unwrap();
        // Then every provider widens its spread by 3 % (the tolerance is 50 bps).
        world.widen_spreads(300);
        let later = world.engine(&db.store, "engine-later", None);

        assert_eq!(drive_to_rest(&later, &ids[0]).await, State::Failed, "{}", db.name);
        let reason = later.payout(&ids[0]).await.unwrap().reason.unwrap();
        assert!(reason.contains(&format!("no route keeps quote {}'s price", quote.id)), "{}: {reason}", db.name);
        assert_eq!(world.executions("sepa-inst", &ids[0]), 0, "{}", db.name);

        assert_eq!(drive_to_rest(&later, &ids[1]).await, State::Completed, "{}", db.name);
        let completed = later.payout(&ids[1]).await.unwrap();
        let first = quote.route.receive.minor_units();
        let now = completed.route.unwrap().receive.minor_units();
        assert!(now < first * 99 / 100, "{}: today's price ({now}) is the wider one ({first} quoted)", db.name);
        assert_eq!(world.executions("sepa-inst", &ids[1]), 1, "{}", db.name);
        // The failed payout's reservation went back; the completed one's was taken.
        let psp = railyard_store::ledger::balance(db.store.pool(), "psp:demo-psp:USD").await.unwrap();
        assert_eq!(psp.available(), Money::from_minor(10_000_000 - 40_000, c("USD")), "{}", db.name);
        drain(&sepa);
        let report = verify::verify(&db.store).await.unwrap();
        assert!(report.ok(), "{}: {report:?}", db.name);
    }
}

/// A group leases what it can: a payout another live engine holds is left to that engine
/// (answered `Leased`, untouched), the others go through the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_leaves_a_payout_another_engine_holds() {
    for db in common::databases().await {
        let world = World::new();
        let (seen, hook) = recording_hook();
        let engine = world.engine(&db.store, "engine-a", Some(hook));
        let other = world.engine(&db.store, "engine-b", None);
        engine.ensure_accounts().await.unwrap();
        engine.fund_psp("demo-psp", Money::from_minor(100_000_000, c("USD")), "wire-1").await.unwrap();
        let ids = accept_eur_payouts(&engine, "held", 4).await;
        // engine-b is alive and holds the third payout's lease.
        other.heartbeat().await.unwrap();
        sqlx::query("UPDATE payouts SET lease_owner = 'engine-b', lease_until = $1 WHERE id = $2")
            .bind(i64::MAX / 2)
            .bind(&ids[2])
            .execute(db.store.pool())
            .await
            .unwrap();
        let results = engine.run_group(&ids).await;
        for (id, result) in &results {
            if *id == ids[2] {
                assert!(matches!(result, Err(EngineError::Leased(_))), "{}: {result:?}", db.name);
            } else {
                assert!(matches!(result, Ok(State::Completed)), "{}: {id} {result:?}", db.name);
            }
        }
        assert_eq!(results.len(), ids.len(), "{}: {results:?}", db.name);
        // The others went through the group's commits, not one by one.
        assert_grouped(&seen, db.name);
        let held = engine.payout(&ids[2]).await.unwrap();
        assert_eq!(held.state, State::Accepted, "{}", db.name);
        assert_eq!(world.executions("sepa-inst", &ids[2]), 0, "{}", db.name);
        let report = verify::verify(&db.store).await.unwrap();
        assert!(report.ok(), "{}: {report:?}", db.name);
    }
}

/// A group plans the payouts the intake has just moved from the copies it kept of them, and a copy
/// gone stale is harmless: a payout cancelled after its copy was kept is left out by the group's
/// claim (never sent, still cancelled) while the others go through the group; a pass alone drops
/// its payout's copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_leaves_a_payout_its_kept_copy_no_longer_describes() {
    for db in common::databases().await {
        let world = World::new();
        let (seen, hook) = recording_hook();
        let engine = world.engine(&db.store, "engine-fresh", Some(hook));
        engine.ensure_accounts().await.unwrap();
        engine.fund_psp("demo-psp", Money::from_minor(100_000_000, c("USD")), "wire-1").await.unwrap();
        let ids = accept_eur_payouts(&engine, "kept", 3).await;
        let mut copies = Vec::new();
        for id in &ids {
            copies.push(engine.payout(id).await.unwrap());
        }
        engine.remember_fresh(copies);
        assert_eq!(engine.fresh_count(), 3, "{}", db.name);
        // The second is cancelled after its copy was kept: the copy still says `accepted`.
        engine.cancel("demo-psp", &ids[1]).await.unwrap();
        let results = engine.run_group(&ids).await;
        assert_eq!(results.len(), ids.len(), "{}: {results:?}", db.name);
        for (id, result) in &results {
            if *id == ids[1] {
                assert!(!matches!(result, Ok(State::Completed)), "{}: {result:?}", db.name);
            } else {
                assert!(matches!(result, Ok(State::Completed)), "{}: {id} {result:?}", db.name);
            }
        }
        assert_grouped(&seen, db.name);
        assert_eq!(engine.fresh_count(), 0, "{}", db.name);
        assert_eq!(engine.payout(&ids[1]).await.unwrap().state, State::Cancelled, "{}", db.name);
        assert_eq!(world.executions("sepa-inst", &ids[1]), 0, "{}", db.name);

        // At the bound the copies kept so far are forgotten, not the new ones refused: copies no
        // pass takes cannot end the keeping.
        let stray = engine.payout(&ids[0]).await.unwrap();
        engine.remember_fresh(
            (0..railyard_saga::FRESH_PAYOUTS_MAX).map(|index| Payout { id: format!("stray-{index}"), ..stray.clone() }),
        );
        assert_eq!(engine.fresh_count(), railyard_saga::FRESH_PAYOUTS_MAX, "{}", db.name);
        engine.remember_fresh([Payout { id: "one-more".into(), ..stray.clone() }]);
        assert_eq!(engine.fresh_count(), 1, "{}", db.name);
        engine.run_group(&["one-more".to_string()]).await;
        assert_eq!(engine.fresh_count(), 0, "{}", db.name);

        // Alone, a pass reads its payout under its claim and drops the copy.
        let alone = accept_eur_payouts(&engine, "kept-alone", 1).await;
        engine.remember_fresh([engine.payout(&alone[0]).await.unwrap()]);
        assert_eq!(engine.run(&alone[0]).await.unwrap(), State::Completed, "{}", db.name);
        assert_eq!(engine.fresh_count(), 0, "{}", db.name);
        let report = verify::verify(&db.store).await.unwrap();
        assert!(report.ok(), "{}: {report:?}", db.name);
    }
}

/// A rail's daily cap holds in the reservation's transaction, alone and in groups, whatever
/// routing believed: a leg that would pass it is not sent (the payout re-routes, here to no other
/// rail, and fails saying why); a definitive reject gives its share back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rails_daily_cap_holds_when_legs_are_reserved() {
    for db in common::databases().await {
        let eur = |minor: i64| Money::from_minor(minor, c("EUR"));
        let mut config = (*config()).clone();
        let sepa = config.rails.iter_mut().find(|rail| rail.id.as_str() == "sepa-inst").unwrap();
        let limits = sepa.limits.get_mut(&c("EUR")).unwrap();
        limits.maximum = eur(80_000);
        limits.daily_cap = Some(eur(100_000));
        let world = World::with_config(Arc::new(config));
        let (seen, hook) = recording_hook();
        let engine = world.engine(&db.store, "engine-cap", Some(hook));
        engine.ensure_accounts().await.unwrap();
        engine.fund_psp("demo-psp", eur(10_000_000), "wire-eur").await.unwrap();
        let request = |minor: i64| PayoutRequest {
            source: c("EUR"),
            amount: eur(minor),
            remittance: format!("cap {minor}"),
            ..eur_payout(0)
        };
        let used = || async {
            let today = railyard_store::usage::day_of(chrono::Utc::now());
            let on_day = railyard_store::usage::on_day(db.store.pool(), today).await.unwrap();
            on_day.get("sepa-inst").and_then(|used| used.get(&c("EUR")).copied()).unwrap_or(eur(0))
        };

        // Rejected by the rail: the share it took goes back.
        world.sandbox("sepa-inst").sandbox().faults.force(Fault::Reject { code: "AC04".into() }).unwrap();
        let rejected = engine.accept("demo-psp", "cap-rejected", &request(30_000)).await.unwrap().payout_id;
        assert_eq!(drive_to_rest(&engine, &rejected).await, State::Failed, "{}", db.name);
        assert_eq!(used().await, eur(0), "{}", db.name);

        // Three of 300.00 in one group: 900.00 of the 1,000.00, booked in the group's first order.
        let mut ids = Vec::new();
        for index in 0..3 {
            ids.push(engine.accept("demo-psp", &format!("cap-a{index}"), &request(30_000)).await.unwrap().payout_id);
        }
        seen.lock().unwrap().clear();
        let results = engine.run_group(&ids).await;
        assert!(results.iter().all(|(_, state)| matches!(state, Ok(State::Completed))), "{}: {results:?}", db.name);
        assert_eq!(used().await, eur(90_000), "{}", db.name);
        assert!(!rebooked(&seen), "{}", db.name);

        // Two of 100.00: together they would pass the cap, so they run alone; the first fits
        // exactly, the second is never sent.
        let mut ids = Vec::new();
        for index in 0..2 {
            ids.push(engine.accept("demo-psp", &format!("cap-b{index}"), &request(10_000)).await.unwrap().payout_id);
        }
        seen.lock().unwrap().clear();
        let results = engine.run_group(&ids).await;
        // On PostgreSQL the group wrote its rows, found the cap passed and went back to decide first.
        assert_eq!(rebooked(&seen), db.store.dialect() == Dialect::Postgres, "{}", db.name);
        let mut states: Vec<State> = results.iter().map(|(_, state)| *state.as_ref().unwrap()).collect();
        states.sort_by_key(|state| state.as_str());
        assert_eq!(states, [State::Completed, State::Failed], "{}: {results:?}", db.name);
        let (failed, _) = results.iter().find(|(_, state)| matches!(state, Ok(State::Failed))).unwrap();
        let payout = engine.payout(failed).await.unwrap();
        let history = engine.history(failed).await.unwrap();
        assert!(
            history.iter().any(|entry| entry.detail.contains("would pass its daily cap of 1000.00 EUR")),
            "{}: {:?} {history:?}",
            db.name,
            payout.reason
        );
        assert_eq!(world.executions("sepa-inst", failed), 0, "{}", db.name);
        assert_eq!(used().await, eur(100_000), "{}", db.name);
        let report = verify::verify(&db.store).await.unwrap();
        assert!(report.ok(), "{}: {report:?}", db.name);
    }
}

/// What a batch of accepts leaves: per request its answer, and the stored rows that say who got
/// which payout and who met each account first.
async fn accept_outcome(
    store: &Store,
    answers: &[Result<railyard_saga::Accepted, EngineError>],
) -> (Vec<String>, Vec<(String, String, String)>) {
    // Payout ids differ between runs: name each by the position of the request that created it.
    let mut names: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for (index, answer) in answers.iter().enumerate() {
        if let Ok(accepted) = answer
            && !accepted.replay
        {
            names.insert(accepted.payout_id.clone(), format!("#{index}"));
        }
    }
    // Payouts from before the batch are all "earlier"; their ids differ between runs too.
    let name = |id: &str| names.get(id).cloned().unwrap_or_else(|| "earlier".into());
    let shown = answers
        .iter()
        .map(|answer| match answer {
            Ok(accepted) => format!("{} replay={}", name(&accepted.payout_id), accepted.replay),
            Err(EngineError::Conflict(id)) => format!("conflict with {}", name(id)),
            // A quote's id differs between runs.
            Err(EngineError::Invalid(reason)) => format!("invalid: {}", reason.split(" quo_").next().unwrap_or("")),
            Err(other) => format!("error: {other}"),
        })
        .collect();
    let mut rows = Vec::new();
    for row in sqlx::query("SELECT id, idempotency_key, state FROM payouts").fetch_all(store.pool()).await.unwrap() {
        let id: String = sqlx::Row::get(&row, 0);
        rows.push((format!("payout {}", name(&id)), sqlx::Row::get(&row, 1), sqlx::Row::get(&row, 2)));
    }
    for row in sqlx::query("SELECT key, resource_id FROM idempotency").fetch_all(store.pool()).await.unwrap() {
        let id: String = sqlx::Row::get(&row, 1);
        rows.push((format!("key {}", sqlx::Row::get::<String, _>(&row, 0)), name(&id), String::new()));
    }
    for row in sqlx::query("SELECT masked, first_payout FROM vault").fetch_all(store.pool()).await.unwrap() {
        let first: String = sqlx::Row::get(&row, 1);
        rows.push(("vault".into(), sqlx::Row::get(&row, 0), name(&first)));
    }
    let with_events: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT payout_id FROM saga_events").fetch_all(store.pool()).await.unwrap();
    for id in with_events {
        for event in railyard_saga::payout_events(store, &id).await.unwrap() {
            // A quote's id differs between runs.
            let detail =
                if event.detail.starts_with("route from quote ") { "route from quote".into() } else { event.detail };
            rows.push((format!("event {}", name(&id)), event.state.as_str().to_string(), detail));
        }
    }
    rows.sort();
    (shown, rows)
}

/// The intake's batch writes its requests together; its answers and rows are the ones accepting
/// them one by one in the same order gives: new keys, a key repeated in the batch (same request:
/// the first's payout; another request: a conflict), keys used before the batch, an account met
/// twice, a request from a quote in the middle, an unknown tenant and an account too long for the
/// vault (refused before its key is claimed, so the key stays free), and a request from a quote it
/// does not match (refused after its key was claimed and its account sealed: both undone, so the
/// key stays free and the account unsealed here too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_accepts_answers_as_accepting_one_by_one() {
    for db in common::databases().await {
        let other = common::sqlite().await;
        let world = World::new();
        let mut outcomes = Vec::new();
        for (store, batched) in [(&db.store, true), (&other.store, false)] {
            let engine = world.engine(store, "engine-a", None);
            engine.ensure_accounts().await.unwrap();
            let before_same = engine.accept("demo-psp", "used-same", &eur_payout(5_000)).await.unwrap();
            engine.accept("demo-psp", "used-other", &eur_payout(5_001)).await.unwrap();
            let quote = engine.quote("demo-psp", &eur_payout(7_000), None).await.unwrap();
            let mut from_quote = eur_payout(7_000);
            from_quote.quote_id = Some(quote.id.clone());
            let mut long_account = eur_payout(8_000);
            long_account.beneficiary.account = "D".repeat(railyard_store::vault::ACCOUNT_BYTES_MAX + 1);
            let mut new_account = eur_payout(9_000);
            new_account.beneficiary.account = "NL91ABNA0417164300".into();
            let mut off_quote = eur_payout(7_500);
            off_quote.quote_id = Some(quote.id.clone());
            off_quote.beneficiary.account = "FR7630006000011234567890189".into();
            let batch: Vec<(String, String, PayoutRequest)> = [
                ("demo-psp", "a", eur_payout(1_000)),
                ("demo-psp", "b", new_account.clone()),
                ("demo-psp", "a", eur_payout(1_000)),
                ("demo-psp", "a", eur_payout(1_001)),
                ("demo-psp", "used-same", eur_payout(5_000)),
                ("demo-psp", "used-other", eur_payout(5_002)),
                ("demo-psp", "q", from_quote),
                ("demo-psp", "c", new_account),
                ("nobody", "d", eur_payout(1_000)),
                ("demo-psp", "long", long_account),
                ("demo-psp", "q", eur_payout(7_000)),
                ("demo-psp", "long", eur_payout(8_000)),
                ("demo-psp", "off", off_quote),
                ("demo-psp", "off", eur_payout(7_500)),
            ]
            .into_iter()
            .map(|(tenant, key, request)| (tenant.to_string(), key.to_string(), request))
            .collect();
            let answers = if batched {
                engine.accept_batch(&batch).await.unwrap()
            } else {
                let mut answers = Vec::new();
                for (tenant, key, request) in &batch {
                    answers.push(engine.accept(tenant, key, request).await);
                }
                answers
            };
            assert!(
                matches!(&answers[4], Ok(accepted) if accepted.replay && accepted.payout_id == before_same.payout_id),
                "{}: {:?}",
                db.name,
                answers[4]
            );
            outcomes.push(accept_outcome(store, &answers).await);
        }
        let (batched, one_by_one) = (&outcomes[0], &outcomes[1]);
        assert_eq!(batched.0, one_by_one.0, "{}: answers", db.name);
        let expected = [
            "#0 replay=false",
            "#1 replay=false",
            "#0 replay=true",
            "conflict with #0",
            "earlier replay=true",
            "conflict with earlier",
            "#6 replay=false",
            "#7 replay=false",
            "invalid: tenant",
            "invalid: beneficiary.account",
            "conflict with #6",
            "#11 replay=false",
            "invalid: the payout does not match quote",
            "#13 replay=false",
        ];
        assert_eq!(batched.0.len(), expected.len(), "{}: answers", db.name);
        for (shown, expected) in batched.0.iter().zip(expected) {
            assert!(shown.starts_with(expected), "{}: {shown} where {expected} was expected", db.name);
        }
        // Rows: ids and times differ between the two runs, nothing else.
        assert_eq!(batched.1, one_by_one.1, "{}: stored rows", db.name);
    }
}

/// The treasury's liquidity moves come back as one net figure per rail and currency, on both
/// databases: top-ups and sweeps of one rail netted (a net sweep says so), a rail whose moves
/// cancel out left out, another rail kept apart.
#[tokio::test]
async fn liquidity_moves_net_per_rail_and_currency() {
    for db in common::databases().await {
        let world = World::new();
        let engine = world.engine(&db.store, "setup", None);
        engine.ensure_accounts().await.unwrap();
        let eur = |minor| Money::from_minor(minor, c("EUR"));
        let gbp = |minor| Money::from_minor(minor, c("GBP"));
        engine.move_rail_liquidity("sepa-inst", eur(50_000), false, "t-1", "test").await.unwrap();
        engine.move_rail_liquidity("sepa-inst", eur(20_000), true, "s-1", "test").await.unwrap();
        engine.move_rail_liquidity("sepa-inst", eur(5_000), false, "t-2", "test").await.unwrap();
        engine.move_rail_liquidity("fps-uk", gbp(100_000), true, "s-2", "test").await.unwrap();
        let mut moves = engine.liquidity_moves().await.unwrap();
        moves.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            moves,
            [("fps-uk".to_string(), gbp(100_000), true), ("sepa-inst".to_string(), eur(35_000), false)],
            "{}",
            db.name
        );
        engine.move_rail_liquidity("sepa-inst", eur(35_000), true, "s-3", "test").await.unwrap();
        let moves = engine.liquidity_moves().await.unwrap();
        assert_eq!(moves, [("fps-uk".to_string(), gbp(100_000), true)], "{}: sepa-inst nets to nothing", db.name);
    }
}
