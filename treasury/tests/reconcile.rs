//! Reconciliation against the sandbox rails on SQLite and PostgreSQL: the real bank samples are
//! read and reported, and in-doubt payouts are resolved by a card settlement file and an instant
//! network's camt.054 that show the payment executed, and by a CBDC block log that shows it did not.

#[path = "../../store/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use railyard_config::{RailKind, TreasuryConfig};
use railyard_connector::faults::Fault;
use railyard_connector::{Beneficiary, IdempotencyKey};
use railyard_core::{Country, Currency, Decimal, Money};
use railyard_fx::{FxBook, RateHistory};
use railyard_rails::{Rails, SandboxRail};
use railyard_saga::{AmountMode, Engine, EngineSettings, Evidence, PayoutRequest, Resolution, State};
use railyard_store::{Store, verify};
use railyard_treasury::reconcile::{self, Settings};
use railyard_treasury::reports::{self, Direction, LineStatus, ReportKind};

fn c(code: &str) -> Currency {
    Currency::from_code(code).unwrap()
}

/// Real bank samples (camt.053, camt.054), copied with their licence into the repository.
const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/iso20022");

fn sample(name: &str) -> reports::Report {
    let directory = Path::new(SAMPLES);
    let entry = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.file_name().unwrap().to_str().unwrap().starts_with(name))
        .unwrap_or_else(|| panic!("no sample {name} in {SAMPLES}"));
    reports::read_file(&entry).unwrap()
}

/// The demo configuration with one card network, one instant network and the CBDC platform; short timeouts so a lost
/// reply is noticed quickly.
fn config() -> Arc<TreasuryConfig> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/demo.toml");
    let mut config = railyard_config::load(Path::new(path)).unwrap();
    config.rails.retain(|rail| {
        rail.id.as_str() == "visa-direct" || rail.id.as_str() == "sepa-inst" || rail.kind == RailKind::Cbdc
    });
    for rail in &mut config.rails {
        rail.timeout_ms = 300;
    }
    Arc::new(config)
}

struct World {
    config: Arc<TreasuryConfig>,
    fx: Arc<FxBook>,
    rails: Rails,
    vault: Arc<railyard_store::vault::VaultKeys>,
}

impl World {
    fn new() -> World {
        let config = config();
        let rates = RateHistory::bundled_daily().latest();
        let fx = Arc::new(FxBook::build(&config.fx_providers, rates.clone()).unwrap());
        let rails = railyard_rails::build(&config, &rates).unwrap();
        World { config, fx, rails, vault: std::sync::Arc::new(railyard_store::vault::VaultKeys::generate()) }
    }

    fn engine(&self, store: &Store) -> Engine {
        // Two inquiries, then escalation: an outage keeps the payout in doubt.
        let settings =
            EngineSettings::new("engine", Duration::from_secs(30), Duration::from_millis(250), 2, 3, Decimal::from(50));
        Engine::new(
            store.clone(),
            self.config.clone(),
            self.fx.clone(),
            self.rails.registry.clone(),
            settings,
            self.vault.clone(),
        )
    }

    /// The same rails, with the card network reached over loopback HTTP as a rail at an
    /// `endpoint` (a `railyard sandbox card --listen` process) is: its connector and its
    /// reconciliation feed both go over the network. Returns the served card network too.
    async fn with_remote_card() -> (World, SandboxRail) {
        let local = World::new();
        let card = local.sandbox("visa-direct");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let service = card.service();
        tokio::spawn(async move {
            let _ = railyard_connector::transport::serve(service, listener, std::future::pending()).await;
        });
        let mut config = (*local.config).clone();
        let rail = config.rails.iter_mut().find(|rail| rail.id.as_str() == "visa-direct").unwrap();
        rail.endpoint = Some(format!("http://{address}"));
        let config = Arc::new(config);
        let rails = railyard_rails::build(&config, &RateHistory::bundled_daily().latest()).unwrap();
        assert!(rails.sandboxes.iter().all(|(id, _)| id != "visa-direct"), "visa-direct is remote");
        (World { config, fx: local.fx.clone(), rails, vault: local.vault.clone() }, card)
    }

    fn sandbox(&self, rail: &str) -> SandboxRail {
        self.rails.sandboxes.iter().find(|(id, _)| id == rail).map(|(_, sandbox)| sandbox.clone()).unwrap()
    }

    fn settings(&self) -> Settings {
        Settings {
            absence_grace: Duration::ZERO,
            rails: self.config.rails.iter().map(|rail| (rail.id.to_string(), rail.kind)).collect(),
            drive_on: true,
            ..Settings::default()
        }
    }
}

fn payout(currency: &str, amount_minor: i64, account: &str, country: &str) -> PayoutRequest {
    PayoutRequest {
        source: c(currency),
        destination: c(currency),
        amount: Money::from_minor(amount_minor, c(currency)),
        mode: AmountMode::Send,
        beneficiary: Beneficiary {
            name: "Lee Chan".into(),
            account: account.into(),
            country: Country::from_code(country).unwrap(),
        },
        remittance: "invoice 8812".into(),
        rail_kind: None,
        quote_id: None,
        originator: None,
        account_masked: None,
        submitted_by: None,
    }
}

/// Runs a saga until it rests: terminal, or in doubt and escalated.
async fn drive_to_rest(engine: &Engine, id: &str) -> State {
    for _ in 0..200 {
        match engine.run(id).await.unwrap() {
            state if state.terminal() => return state,
            State::InDoubt => {
                let payout = engine.payout(id).await.unwrap();
                if payout.reason.as_deref().is_some_and(|reason| reason.starts_with("escalated")) {
                    return State::InDoubt;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => {}
        }
    }
    engine.payout(id).await.unwrap().state
}

/// Runs the scheduled reconciliation of `railyard serve` (every 20 ms, over the in-process rails'
/// reports) until the payout is terminal or 5 s have passed; returns its state.
async fn scheduled_reconciliation(world: &World, store: &Store, engine: &Arc<Engine>, id: &str) -> State {
    let feeds = railyard_treasury::schedule::feeds(&world.config, &world.rails);
    let task = tokio::spawn(railyard_treasury::schedule::run(
        store.clone(),
        engine.clone(),
        feeds,
        Duration::from_millis(20),
        world.settings(),
    ));
    let mut state = State::InDoubt;
    for _ in 0..250 {
        state = engine.payout(id).await.unwrap().state;
        if state.terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    state
}

async fn history(store: &Store, id: &str) -> Vec<String> {
    railyard_saga::payout_events(store, id).await.unwrap().into_iter().map(|event| event.detail).collect()
}

#[test]
fn the_real_bank_samples_parse_with_their_quirks() {
    let statement = sample("camt.053");
    assert_eq!(statement.kind, ReportKind::BankStatement);
    assert_eq!(statement.account.as_deref(), Some("CH2909000000250094239"));
    assert_eq!(statement.lines.len(), 5);
    assert!(statement.lines.iter().all(|line| line.status == LineStatus::Executed));
    let total: i64 = statement.lines.iter().map(|line| line.amount.minor_units()).sum();
    assert_eq!(total, 450 + 7_770 + 150_000 + 153_700 + 169_222);
    // The second entry is a debit whose transaction says credit: the entry's indicator is kept.
    assert_eq!(statement.lines[1].direction, Some(Direction::Debit));
    assert!(
        statement.notes.iter().any(|note| note.contains("Ntry 2") && note.contains("contradicts")),
        "{:?}",
        statement.notes
    );
    // The statement covers 2020-06-24 (its FrToDt), whatever its booking dates say.
    let coverage = statement.coverage.unwrap();
    assert_eq!(coverage.from.to_rfc3339(), "2020-06-24T00:00:00+00:00");
    assert_eq!(coverage.until.to_rfc3339(), "2020-06-25T00:00:00+00:00");

    let debit = sample("200519_camt.054-Debit");
    assert_eq!(debit.kind, ReportKind::BankNotification);
    assert_eq!(debit.lines.len(), 1);
    let line = &debit.lines[0];
    assert_eq!(line.amount, Money::from_minor(91_300, c("CHF")));
    assert_eq!(line.direction, Some(Direction::Debit));
    assert_eq!(line.date.to_string(), "2019-04-25");
    assert!(line.references.contains(&"20190424001255000100006".to_string()), "{:?}", line.references);
    assert!(line.text.contains("SENDER REFERENZ: 30003101"));
    let credit = sample("200519_camt.054-Credit");
    assert_eq!(credit.lines[0].amount, Money::from_minor(150_000, c("CHF")));
    assert_eq!(credit.lines[0].direction, Some(Direction::Credit));

    // Malformed input is refused naming the place.
    let error = reports::read("bad.xml", b"<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:camt.054.001.04\"><BkToCstmrDbtCdtNtfctn><Ntfctn><Ntry><Amt>1.00</Amt></Ntry></Ntfctn></BkToCstmrDbtCdtNtfctn></Document>").unwrap_err();
    assert!(error.to_string().contains("Ntfctn 1 / Ntry 1 / Amt") && error.to_string().contains("Ccy"), "{error}");
    let error = reports::read("notes.txt", b"hello").unwrap_err();
    assert!(error.to_string().contains("not a report"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_lines_without_railyard_references_are_reported_unmatched_with_reasons() {
    for db in common::databases().await {
        let world = World::new();
        world.engine(&db.store).ensure_accounts().await.unwrap();
        let reports = vec![sample("camt.053"), sample("200519_camt.054-Debit"), sample("200519_camt.054-Credit")];
        let run = reconcile::reconcile(&db.store, None, &reports, &world.settings()).await.unwrap();
        assert_eq!(run.summary.lines, 7);
        assert_eq!(run.summary.matched, 0);
        assert_eq!(run.unmatched_report.len(), 7, "{}", db.name);
        let debit = run.unmatched_report.iter().find(|line| line.file.contains("Debit")).unwrap();
        assert!(debit.reason.contains("20190424001255000100006"), "{}", debit.reason);
        let credit = run.unmatched_report.iter().find(|line| line.file.contains("Credit")).unwrap();
        assert!(credit.reason.contains("incoming credit"), "{}", credit.reason);
        assert!(!run.clean());
        // A bank statement is complete for an account; without --rail no rail is assumed.
        assert!(run.files.iter().all(|file| file.complete_for.is_none()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_doubt_payouts_are_resolved_from_the_evidence() {
    for db in common::databases().await {
        let world = World::new();
        let engine = world.engine(&db.store);
        engine.ensure_accounts().await.unwrap();
        engine.fund_psp("demo-psp", Money::from_minor(100_000_000, c("USD")), "wire-usd").await.unwrap();
        engine.fund_psp("demo-psp", Money::from_minor(100_000_000, c("HKD")), "wire-hkd").await.unwrap();

        // 1. A card payout executes, its reply is lost, and the network goes down: in doubt.
        let SandboxRail::Card(card) = world.sandbox("visa-direct") else { panic!("visa-direct is a card rail") };
        let token =
            card.tokenise(&railyard_rail_card::card::with_check_digit("411111123456789"), "12/30").unwrap().token;
        card.sandbox.faults.force(Fault::ReplyLost).unwrap();
        let executed = engine.accept("demo-psp", "card-1", &payout("USD", 25_000, &token, "US")).await.unwrap();
        let run_until_submitted = engine.run(&executed.payout_id).await.unwrap();
        assert_eq!(run_until_submitted, State::InDoubt, "{}", db.name);
        card.sandbox.faults.set_outage(true);
        assert_eq!(drive_to_rest(&engine, &executed.payout_id).await, State::InDoubt, "{}", db.name);
        let leg = format!("{}:a0-leg0", executed.payout_id);

        // 2. A CBDC payout whose request is lost, with the platform down: in doubt, never executed.
        let SandboxRail::Cbdc(cbdc) = world.sandbox("mbridge") else { panic!("mbridge is a CBDC rail") };
        cbdc.open_wallet("lee-hkd", c("HKD")).unwrap();
        cbdc.sandbox.faults.force(Fault::RequestLost).unwrap();
        let lost = engine.accept("demo-psp", "cbdc-1", &payout("HKD", 40_000, "lee-hkd", "HK")).await.unwrap();
        let _ = engine.run(&lost.payout_id).await.unwrap();
        cbdc.sandbox.faults.set_outage(true);
        assert_eq!(drive_to_rest(&engine, &lost.payout_id).await, State::InDoubt, "{}", db.name);
        let lost_leg = format!("{}:a0-leg0", lost.payout_id);
        // Something happens on the platform after the lost request: the log runs past it.
        cbdc.open_wallet("later-hkd", c("HKD")).unwrap();

        // The reports, as the rails publish them.
        let tomorrow = chrono::Utc::now().date_naive().succ_opt().unwrap();
        let settlement = reports::read("visa-settlement.csv", card.settlement_file(tomorrow).as_bytes()).unwrap();
        assert_eq!(settlement.kind, ReportKind::CardSettlement);
        let blocks = serde_json::to_string(cbdc.blocks().as_slice()).unwrap();
        let log = reports::read("mbridge-blocks.json", blocks.as_bytes()).unwrap();
        assert_eq!(log.kind, ReportKind::BlockLog);
        assert!(log.coverage.is_some());

        // Report only first: nothing changes.
        let mut dry = world.settings();
        dry.resolve = false;
        let preview =
            reconcile::reconcile(&db.store, Some(&engine), &[settlement.clone(), log.clone()], &dry).await.unwrap();
        assert_eq!(preview.resolutions.len(), 2, "{}: {:?}", db.name, preview.resolutions);
        assert!(preview.resolutions.iter().all(|record| record.result.is_none()));
        assert_eq!(engine.payout(&executed.payout_id).await.unwrap().state, State::InDoubt);

        let run = reconcile::reconcile(&db.store, Some(&engine), &[settlement, log], &world.settings()).await.unwrap();
        assert_eq!(run.summary.resolved, 2, "{}: {:#?}", db.name, run.resolutions);
        assert!(run.mismatches.is_empty(), "{}: {:?}", db.name, run.mismatches);
        assert!(run.unmatched_ledger.is_empty(), "{}: {:?}", db.name, run.unmatched_ledger);
        let card_resolution = run.resolutions.iter().find(|record| record.leg_key == leg).unwrap();
        assert!(matches!(card_resolution.evidence, Evidence::Executed { .. }));
        assert_eq!(card_resolution.result, Some(Resolution::Resolved { state: State::Completed }));
        let cbdc_resolution = run.resolutions.iter().find(|record| record.leg_key == lost_leg).unwrap();
        assert!(matches!(cbdc_resolution.evidence, Evidence::NotExecuted { .. }));

        // The card payout completed, posted once; its history names the evidence.
        assert_eq!(engine.payout(&executed.payout_id).await.unwrap().state, State::Completed);
        let events = history(&db.store, &executed.payout_id).await;
        assert!(
            events.iter().any(|event| event.contains("by reconciliation: visa-settlement.csv line 2")),
            "{events:?}"
        );
        let key = IdempotencyKey::new(leg.clone()).unwrap();
        assert_eq!(card.sandbox.ledger.executions().iter().filter(|record| record.key == key).count(), 1);

        // The CBDC leg was voided, never executed; with the platform down there is no other
        // route, so the payout failed and the PSP got its money back.
        let failed = engine.payout(&lost.payout_id).await.unwrap();
        assert_eq!(failed.state, State::Failed, "{}: {:?}", db.name, failed.reason);
        let events = history(&db.store, &lost.payout_id).await;
        assert!(events.iter().any(|event| event.contains("absent from mbridge-blocks.json")), "{events:?}");
        let psp = railyard_store::ledger::balance(db.store.pool(), "psp:demo-psp:HKD").await.unwrap();
        assert_eq!(psp.available(), Money::from_minor(100_000_000, c("HKD")));
        let key = IdempotencyKey::new(lost_leg.clone()).unwrap();
        assert_eq!(cbdc.sandbox.ledger.executions().iter().filter(|record| record.key == key).count(), 0);

        // Running it again changes nothing: the legs are no longer in doubt.
        let settlement = reports::read("visa-settlement.csv", card.settlement_file(tomorrow).as_bytes()).unwrap();
        let again = reconcile::reconcile(&db.store, Some(&engine), &[settlement], &world.settings()).await.unwrap();
        assert_eq!(again.summary.resolved, 0);
        assert_eq!(again.summary.matched, 1);
        assert!(again.clean(), "{}: {again:?}", db.name);

        let report = verify::verify(&db.store).await.unwrap();
        assert!(report.ok(), "{}: {report:?}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_with_the_wrong_amount_is_a_mismatch_and_resolves_nothing() {
    for db in common::databases().await {
        let world = World::new();
        let engine = world.engine(&db.store);
        engine.ensure_accounts().await.unwrap();
        engine.fund_psp("demo-psp", Money::from_minor(100_000_000, c("USD")), "wire-usd").await.unwrap();
        let SandboxRail::Card(card) = world.sandbox("visa-direct") else { panic!("visa-direct is a card rail") };
        let token =
            card.tokenise(&railyard_rail_card::card::with_check_digit("411111123456789"), "12/30").unwrap().token;
        card.sandbox.faults.force(Fault::ReplyLost).unwrap();
        let accepted = engine.accept("demo-psp", "card-2", &payout("USD", 25_000, &token, "US")).await.unwrap();
        let _ = engine.run(&accepted.payout_id).await.unwrap();
        card.sandbox.faults.set_outage(true);
        assert_eq!(drive_to_rest(&engine, &accepted.payout_id).await, State::InDoubt);
        let tomorrow = chrono::Utc::now().date_naive().succ_opt().unwrap();
        // The file altered by hand: the amount no longer agrees (nor does the total, so fix it too).
        let text = card.settlement_file(tomorrow).replace("250.00", "205.00");
        let settlement = reports::read("altered.csv", text.as_bytes()).unwrap();
        let run = reconcile::reconcile(&db.store, Some(&engine), &[settlement], &world.settings()).await.unwrap();
        assert_eq!(run.mismatches.len(), 1, "{}: {run:?}", db.name);
        assert_eq!(run.mismatches[0].reason, "amount differs");
        assert_eq!(run.mismatches[0].found, "205.00 USD");
        assert!(run.resolutions.is_empty());
        assert_eq!(engine.payout(&accepted.payout_id).await.unwrap().state, State::InDoubt);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_run_resolves_escalated_payouts_from_the_rails_reports() {
    for db in common::databases().await {
        let world = World::new();
        let engine = Arc::new(world.engine(&db.store));
        engine.ensure_accounts().await.unwrap();
        engine.fund_psp("demo-psp", Money::from_minor(100_000_000, c("USD")), "wire-usd").await.unwrap();
        let SandboxRail::Card(card) = world.sandbox("visa-direct") else { panic!("visa-direct is a card rail") };
        let token =
            card.tokenise(&railyard_rail_card::card::with_check_digit("411111123456789"), "12/30").unwrap().token;
        card.sandbox.faults.force(Fault::ReplyLost).unwrap();
        let accepted = engine.accept("demo-psp", "card-3", &payout("USD", 12_345, &token, "US")).await.unwrap();
        let _ = engine.run(&accepted.payout_id).await.unwrap();
        card.sandbox.faults.set_outage(true);
        assert_eq!(drive_to_rest(&engine, &accepted.payout_id).await, State::InDoubt);
        assert_eq!(railyard_treasury::schedule::escalated_in_doubt(&db.store, 2).await.unwrap(), 1);
        let state = scheduled_reconciliation(&world, &db.store, &engine, &accepted.payout_id).await;
        assert_eq!(state, State::Completed, "{}", db.name);
        let events = history(&db.store, &accepted.payout_id).await;
        assert!(events.iter().any(|event| event.contains("by reconciliation: visa-direct-settlement-")), "{events:?}");
    }
}

/// The same, with the card network in another process (reached at its `endpoint`): the
/// scheduled run fetches its settlement file over HTTP and resolves the payout from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_run_reads_a_remote_rails_reports_over_http() {
    for db in common::databases().await {
        let (world, card) = World::with_remote_card().await;
        let SandboxRail::Card(card) = card else { panic!("visa-direct is a card rail") };
        let engine = Arc::new(world.engine(&db.store));
        engine.ensure_accounts().await.unwrap();
        engine.fund_psp("demo-psp", Money::from_minor(100_000_000, c("USD")), "wire-usd").await.unwrap();
        let token =
            card.tokenise(&railyard_rail_card::card::with_check_digit("411111123456789"), "12/30").unwrap().token;
        card.sandbox.faults.force(Fault::ReplyLost).unwrap();
        let accepted = engine.accept("demo-psp", "card-remote", &payout("USD", 12_345, &token, "US")).await.unwrap();
        let _ = engine.run(&accepted.payout_id).await.unwrap();
        card.sandbox.faults.set_outage(true);
        assert_eq!(drive_to_rest(&engine, &accepted.payout_id).await, State::InDoubt, "{}", db.name);
        let state = scheduled_reconciliation(&world, &db.store, &engine, &accepted.payout_id).await;
        assert_eq!(state, State::Completed, "{}", db.name);
        let events = history(&db.store, &accepted.payout_id).await;
        assert!(events.iter().any(|event| event.contains("by reconciliation: visa-direct-settlement-")), "{events:?}");
        assert_eq!(card.sandbox.ledger.executions().len(), 1, "{}: executed once", db.name);
        assert!(verify::verify(&db.store).await.unwrap().ok(), "{}", db.name);
    }
}

/// An instant payout whose pacs.002 was lost (and the recall after it, and the network's status
/// callback is late) while the network then went down: status inquiries
/// cannot reach it, so it is escalated in doubt; the network's camt.054 debit notification books
/// it, and reconciliation posts it (completed, executed once). The same notification proves
/// nothing about a payment it does not list: notifications are never complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instant_payout_is_resolved_by_the_networks_camt054() {
    for db in common::databases().await {
        let world = World::new();
        let engine = Arc::new(world.engine(&db.store));
        engine.ensure_accounts().await.unwrap();
        engine.fund_psp("demo-psp", Money::from_minor(100_000_000, c("EUR")), "wire-eur").await.unwrap();
        let SandboxRail::Instant(instant) = world.sandbox("sepa-inst") else { panic!("sepa-inst is instant") };
        // The pacs.002 is lost, so is the camt.056 recall the connector sends when it does not
        // come, and the network's own status callback comes too late to matter.
        let mut plan = instant.sandbox.faults.plan();
        plan.late_callback_ms = 3_600_000;
        instant.sandbox.faults.set_plan(plan).unwrap();
        instant.sandbox.faults.force(Fault::ReplyLost).unwrap();
        instant.sandbox.faults.force(Fault::RequestLost).unwrap();
        let accepted =
            engine.accept("demo-psp", "inst-1", &payout("EUR", 43_210, "DE89370400440532013000", "DE")).await.unwrap();
        let first = engine.run(&accepted.payout_id).await.unwrap();
        assert_eq!(first, State::InDoubt, "{}: {:?}", db.name, history(&db.store, &accepted.payout_id).await);
        instant.sandbox.faults.set_outage(true);
        assert_eq!(drive_to_rest(&engine, &accepted.payout_id).await, State::InDoubt, "{}", db.name);

        let today = chrono::Utc::now().date_naive();
        let xml = instant.debit_notification(today);
        let notification = reports::read("sepa-inst-camt054.xml", xml.as_bytes()).unwrap();
        assert!(notification.coverage.is_none(), "a notification is never complete");
        assert_eq!(notification.lines.len(), 1, "{}: {notification:?}", db.name);
        // What the rail carried: the amount less the 0.20 EUR sepa-inst fee.
        assert_eq!(notification.lines[0].amount, Money::from_minor(43_190, c("EUR")));
        assert_eq!(notification.lines[0].direction, Some(Direction::Debit));

        // Through the scheduled run, as `railyard serve` does it.
        let state = scheduled_reconciliation(&world, &db.store, &engine, &accepted.payout_id).await;
        assert_eq!(state, State::Completed, "{}", db.name);
        let events = history(&db.store, &accepted.payout_id).await;
        assert!(events.iter().any(|event| event.contains("by reconciliation: sepa-inst-camt054-")), "{events:?}");
        // Executed once (the network keys it by the leg's UETR; this is its only payment).
        assert_eq!(instant.sandbox.ledger.executions().len(), 1, "{}", db.name);

        // Matched once more, resolving nothing, and the ledger verifies.
        let again = reconcile::reconcile(
            &db.store,
            Some(&engine),
            &[reports::read("again.xml", instant.debit_notification(today).as_bytes()).unwrap()],
            &world.settings(),
        )
        .await
        .unwrap();
        assert_eq!((again.summary.matched, again.summary.resolved), (1, 0), "{}: {again:?}", db.name);
        assert!(verify::verify(&db.store).await.unwrap().ok(), "{}", db.name);
    }
}

/// What the scheduled run reads: a report per rail kind through the rails' own report endpoints,
/// the CBDC block log paged from genesis (more blocks than one page holds) with its chain verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feeds_read_every_rail_kind_through_its_endpoints() {
    let world = World::new();
    let SandboxRail::Cbdc(cbdc) = world.sandbox("mbridge") else { panic!("mbridge is a CBDC rail") };
    let page = railyard_cbdc::rail::BLOCK_PAGE_MAX;
    for index in 0..page + 5 {
        cbdc.open_wallet(&format!("wallet-{index}"), c("HKD")).unwrap();
    }
    let blocks = cbdc.blocks().len();
    assert!(blocks > page, "{blocks} blocks");
    let mut names = Vec::new();
    for feed in railyard_treasury::schedule::feeds(&world.config, &world.rails) {
        for report in feed().await {
            names.push(report.file.clone());
            if report.file.ends_with("-blocks.json") {
                assert!(report.coverage.is_some(), "a block log from genesis is complete");
                let verified = format!("{blocks} blocks verified from genesis");
                assert!(report.notes.iter().any(|note| note.starts_with(&verified)), "{:?}", report.notes);
            }
        }
    }
    let today = chrono::Utc::now().date_naive();
    for expected in [
        format!("visa-direct-settlement-{today}.csv"),
        format!("sepa-inst-camt054-{today}.xml"),
        "mbridge-blocks.json".into(),
    ] {
        assert!(names.contains(&expected), "{expected} not in {names:?}");
    }
}
