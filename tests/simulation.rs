//! Deterministic simulation of the settlement saga: the engine, routing and the sandbox instant
//! rails run under a manual clock and one seeded random source, which decides every step: which
//! payout moves, when the clock moves (and jumps past quote expiry and leases), which rail goes
//! down, which message is lost (a request, a reply, a recall), delayed or rejected, how the FX
//! market moves (every provider's spread shifted, between a quote and its payout, a route and its
//! FX lock, or a refused leg and the next route), when the treasury switches a rail off and on
//! again, when the PSP cancels a payout or submits it again, when an approver clears or rejects a
//! payout held for review (some go to names on the sanctions list), and where the engine crashes
//! (any crash point; a new engine takes over the way a restarted process would). Three PSPs submit
//! payouts, each numbering its own Idempotency-Keys (so they share keys) and each funded on its
//! own; another PSP's cancel must not find a payout, and neither may another PSP's approver decide
//! one, nor the API key that submitted it (four eyes). Payouts send an amount or deliver one, some
//! against a quote the PSP took first and paid at once or later (after its expiry, the payout is
//! refused and nothing is written), alone or a few in one batch (`Engine::accept_batch`, the
//! intake's group commit without a journal), now and then with a request sent twice under one key
//! in the batch (the same one must come back as the same payout, a changed one as a conflict).
//! One request in three sent alone goes through the intake, the API's front door: on SQLite it is
//! acknowledged in the intake journal and moved into the database by the intake's mover, whose
//! move can crash; every restart starts a new intake, which moves what the journal still holds
//! (acknowledged and not moved, or moved and not yet forgotten) before anything else happens.
//! Sagas run alone (`Engine::run`) and in groups
//! (`Engine::run_group`, with its rail calls concurrent; the `ordered_groups` hook makes it take
//! their answers in the group's order). The engine takes no rail callbacks (it asks, by status
//! inquiry), so duplicate callbacks have nothing to reach.
//!
//! After every step the ledger invariants hold (`railyard verify`: balanced, no overdraft,
//! reservations resolved once, sequence and hash chain). Once faults stop, every saga must reach a
//! terminal state within a bound (liveness), and the rails' execution ledgers joined to ours show
//! no payout executed twice, none completed without an execution, and no execution that belongs to
//! no payout. The money adds up: a completed payout sent what was asked (send mode) or its rail
//! delivered exactly what was asked (deliver mode), one against a quote stayed within the slippage
//! tolerance of the quote's price, one to a sanctioned name was paid only after an approver cleared
//! it, each accepted payout belongs to the PSP that sent it, and each PSP's balance is what it was
//! funded less what the completed payouts sent, with nothing left reserved. Each payout queued one
//! final webhook, the one for the state it ended in. Each PSP's payout list, page by page, shows
//! its payouts once each and no other PSP's.
//!
//! Seeds run on SQLite (`deterministic_simulation`; `RAILYARD_SIM_SEEDS`, default 1,000) and on
//! PostgreSQL, each in a schema of its own (`deterministic_simulation_on_postgres`;
//! `RAILYARD_SIM_POSTGRES_SEEDS`, default 100). A failure names its seed and test, and
//! `RAILYARD_SEED=<seed>` replays exactly that one, printing every step (a seed takes the same
//! steps on either database).

// The store tests' database helpers: the test PostgreSQL's URL (`RAILYARD_TEST_POSTGRES_URL`).
#[path = "../store/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use railyard_config::{RailKind, TreasuryConfig};
use railyard_connector::IdempotencyKey;
use railyard_connector::faults::{Fault, FaultPlan, LatencyPlan, RejectPlan};
use railyard_connector::sandbox::Sandbox;
use railyard_core::{Country, Currency, Decimal, Money};
use railyard_fx::{FxBook, RateHistory};
use railyard_rails::Rails;
use railyard_routes::{LiveState, Router, build_router};
use railyard_saga::authorise::{Approver, DecideError, Verdict};
use railyard_saga::intake::{Intake, IntakeError};
use railyard_saga::{
    Accepted, AmountMode, Clock, CrashPoint, Engine, EngineError, EngineSettings, ManualClock, PayoutRequest,
    RoutingSource, State, StoredQuote,
};
use railyard_store::{Store, verify};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seeds per run on SQLite unless `RAILYARD_SIM_SEEDS` says otherwise.
const SEEDS_DEFAULT: u64 = 1_000;
/// Seeds per run on PostgreSQL unless `RAILYARD_SIM_POSTGRES_SEEDS` says otherwise.
const POSTGRES_SEEDS_DEFAULT: u64 = 100;
/// Payouts per seed, at most.
const PAYOUTS_MAX: usize = 6;
/// Random steps per seed before faults stop.
const STEPS: usize = 24;
/// Rounds after faults stop in which every saga must come to rest.
const LIVENESS_ROUNDS: usize = 40;
/// SEPA Instant's daily cap in the simulation: 15,000.00 EUR.
const SEPA_DAILY_CAP_MINOR: i64 = 1_500_000;
/// A rail's timeout in the simulation: short, so lost replies cost little real time.
const RAIL_TIMEOUT_MS: u32 = 40;
/// The engine's slippage tolerance in the simulation, in basis points.
const SLIPPAGE_BPS: i64 = 50;
/// How far a market move shifts every provider's spread from the configuration's, in basis points:
/// back to none, within the tolerance, or past it.
const SPREAD_SHIFTS_BPS: [i64; 6] = [0, 0, 15, 40, 80, 300];
/// Each PSP currency's funding at the start, in minor units.
const FUNDED_MINOR: i64 = 1_000_000_000;
/// The PSPs that submit payouts (tenants of the demo configuration), each funded on its own.
const PSPS: [&str; 3] = ["demo-psp", "northwind-remit", "southgate-pay"];
/// Names a beneficiary is sometimes given: aliases on the demo sanctions list (config/sanctions.csv).
const SANCTIONED_NAMES: [&str; 3] = ["Viktor Zarubenko", "Orlanda Castellanos", "Harun Kalemci"];

fn c(code: &str) -> Currency {
    Currency::from_code(code).unwrap()
}

/// The demo configuration's instant rails only, with short timeouts.
fn config() -> Arc<TreasuryConfig> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/demo.toml");
    let mut config = railyard_config::load(std::path::Path::new(path)).unwrap();
    config.rails.retain(|rail| rail.kind == RailKind::Instant);
    for rail in &mut config.rails {
        rail.timeout_ms = RAIL_TIMEOUT_MS;
        // A daily cap a few large payouts reach: legs over it are refused in the reservation (on
        // the only EUR rail, such a payout fails), alone or in a group, crashes included.
        if rail.id.as_str() == "sepa-inst"
            && let Some(limits) = rail.limits.get_mut(&c("EUR"))
        {
            let cap = Money::from_minor(SEPA_DAILY_CAP_MINOR, c("EUR"));
            limits.maximum = cap;
            limits.daily_cap = Some(cap);
        }
    }
    Arc::new(config)
}

/// A weekday morning, inside every rail's hours.
fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-02T09:00:00Z").unwrap().with_timezone(&Utc)
}

/// What the engine routes over: the configuration's FX providers with every spread shifted by a
/// step's market move, and the rails the treasury has switched off. The engine takes its routes and
/// rail availability from here, as `railyard serve`'s engine takes them from the routing actor.
struct Market {
    config: Arc<TreasuryConfig>,
    now: Mutex<(MarketState, Arc<Router>)>,
}

#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
struct MarketState {
    shift_bps: i64,
    switched_off: std::collections::BTreeSet<String>,
}

impl Market {
    fn new(config: Arc<TreasuryConfig>) -> Market {
        let state = MarketState::default();
        let router = Market::router_for(&config, &state);
        Market { config, now: Mutex::new((state, router)) }
    }

    /// The router for `state`. One per state for the whole run: every seed has the same
    /// configuration, and a build is milliseconds of Decimal work.
    fn router_for(config: &TreasuryConfig, state: &MarketState) -> Arc<Router> {
        static BUILT: Mutex<BTreeMap<MarketState, Arc<Router>>> = Mutex::new(BTreeMap::new());
        if let Some(router) = BUILT.lock().unwrap().get(state) {
            return router.clone();
        }
        let mut shifted = config.clone();
        for provider in &mut shifted.fx_providers {
            provider.spread_bps += Decimal::from(state.shift_bps);
            for spread in provider.pair_spreads.values_mut() {
                *spread += Decimal::from(state.shift_bps);
            }
        }
        let fx = FxBook::build(&shifted.fx_providers, RateHistory::bundled_daily().latest()).unwrap();
        let live: LiveState = state
            .switched_off
            .iter()
            .map(|rail| (rail.clone(), railyard_routes::RailState { available: Some(false), ..Default::default() }))
            .collect();
        let router = Arc::new(build_router(&shifted, &fx, &live).unwrap());
        BUILT.lock().unwrap().entry(state.clone()).or_insert(router).clone()
    }

    fn change(&self, change: impl FnOnce(&mut MarketState)) {
        let mut now = self.now.lock().unwrap();
        change(&mut now.0);
        now.1 = Market::router_for(&self.config, &now.0);
    }
}

impl RoutingSource for Market {
    fn router(&self) -> Result<Arc<Router>, String> {
        Ok(self.now.lock().unwrap().1.clone())
    }

    fn rail_available(&self, rail: &str) -> bool {
        !self.now.lock().unwrap().0.switched_off.contains(rail)
    }

    fn daily_cap(&self, rail: &str, currency: Currency) -> Option<Money> {
        self.config.rail(rail)?.limits.get(&currency)?.daily_cap
    }
}

/// A payout the simulated PSP submitted, as its own records keep it.
#[derive(Clone)]
struct Submitted {
    /// The PSP that submitted it.
    tenant: &'static str,
    /// Idempotency-Key.
    key: String,
    request: PayoutRequest,
    /// The quote the request names, as the PSP was given it.
    quote: Option<StoredQuote>,
    /// The payout id, once accepted.
    id: Option<String>,
    /// Why the engine refused it (only an expired quote may be refused).
    refused: Option<String>,
    /// Paid to a name on the sanctions list: held for review until an approver decides.
    sanctioned: bool,
}

/// The database a run's seeds use.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Database {
    Sqlite,
    Postgres,
}

/// Where one seed's database lives: its own SQLite file, or its own schema on PostgreSQL.
enum Place {
    File(std::path::PathBuf),
    Schema(String),
}

impl Place {
    /// The engine's crashes are simulated above the database, so commits need not reach the disk:
    /// SQLite on tmpfs where there is one, and asynchronous commits on PostgreSQL. SQLite keeps
    /// `synchronous=FULL`, the default, because only then does it have an intake journal (on
    /// tmpfs a flush costs nothing).
    async fn open(seed: u64, database: Database) -> (Store, Place) {
        let options =
            railyard_store::StoreOptions { durability: railyard_store::Durability::Normal, ..Default::default() };
        match database {
            Database::Sqlite => {
                let options = railyard_store::StoreOptions::default();
                let directory = ["/dev/shm"]
                    .iter()
                    .map(std::path::PathBuf::from)
                    .find(|path| path.is_dir())
                    .unwrap_or_else(std::env::temp_dir);
                let path = directory.join(format!("railyard_sim_{}_{seed}.db", std::process::id()));
                remove(&path);
                remove(&railyard_store::journal::Journal::path_for(&path));
                let store = Store::open(&format!("sqlite:{}", path.display()), &options).await.unwrap();
                (store, Place::File(path))
            }
            Database::Postgres => {
                let schema = format!("sim_{}_{seed}", std::process::id());
                postgres_admin(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))
                    .await
                    .unwrap();
                let base = common::postgres_url();
                let separator = if base.contains('?') { '&' } else { '?' };
                let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
                let store = Store::open(&url, &options).await.unwrap();
                (store, Place::Schema(schema))
            }
        }
    }

    async fn remove(&self) {
        match self {
            Place::File(path) => {
                remove(path);
                remove(&railyard_store::journal::Journal::path_for(path));
            }
            Place::Schema(schema) => {
                let _ = postgres_admin(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
            }
        }
    }
}

/// Runs `statements` on the test PostgreSQL over a connection of its own.
async fn postgres_admin(statements: &str) -> Result<(), String> {
    use sqlx::Executor;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&common::postgres_url()).await.map_err(|error| error.to_string())?;
    let result = pool.execute(sqlx::AssertSqlSafe(statements.to_string())).await.map_err(|error| error.to_string());
    pool.close().await;
    result.map(drop)
}

struct Sim {
    seed: u64,
    rng: ChaCha8Rng,
    config: Arc<TreasuryConfig>,
    fx: Arc<FxBook>,
    rails: Rails,
    vault: Arc<railyard_store::vault::VaultKeys>,
    store: Store,
    place: Place,
    clock: Arc<ManualClock>,
    /// Where the engine crashes.
    crashes: Crashes,
    engine: Arc<Engine>,
    /// The API's front door: each engine's own, started with it.
    intake: Intake,
    accepts: AcceptCounts,
    generation: u32,
    market: Arc<Market>,
    payouts: Vec<Submitted>,
    trace: Vec<String>,
    verbose: bool,
}

impl Sim {
    async fn new(seed: u64, verbose: bool, database: Database) -> Sim {
        let config = config();
        let rates = RateHistory::bundled_daily().latest();
        let fx = Arc::new(FxBook::build(&config.fx_providers, rates.clone()).unwrap());
        let rails = railyard_rails::build(&config, &rates).unwrap();
        let (store, place) = Place::open(seed, database).await;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let crash_rng = Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_c4a5)));
        let crash_permille = Arc::new(AtomicU32::new(rng.random_range(0..40)));
        // Each rail misbehaves in its own seeded way.
        for (_, sandbox) in &rails.sandboxes {
            let plan = FaultPlan {
                seed: rng.random(),
                latency: LatencyPlan { base_ms: 0, jitter_ms: rng.random_range(0..3), tail_permille: 0, tail_ms: 0 },
                rejects: vec![RejectPlan { code: "AC04".into(), permille: rng.random_range(0..120) }],
                reply_lost_permille: rng.random_range(0..150),
                request_lost_permille: rng.random_range(0..100),
                ..FaultPlan::default()
            };
            sandbox.sandbox().faults.set_plan(plan).unwrap();
        }
        let clock = Arc::new(ManualClock::new(start()));
        let vault = Arc::new(railyard_store::vault::VaultKeys::generate());
        let market = Arc::new(Market::new(config.clone()));
        let crashes = Crashes { permille: crash_permille, random: crash_rng, fired: Arc::default() };
        let engine = engine(&store, &config, &fx, &rails, &vault, &clock, &market, &crashes, 0);
        let intake = Intake::start(engine.clone());
        Sim {
            seed,
            rng,
            config,
            fx,
            rails,
            vault,
            store,
            place,
            clock,
            crashes,
            engine,
            intake,
            accepts: AcceptCounts::default(),
            generation: 0,
            market,
            payouts: Vec::new(),
            trace: Vec::new(),
            verbose,
        }
    }

    fn note(&mut self, line: String) {
        if self.verbose {
            eprintln!("seed {}: {line}", self.seed);
        }
        self.trace.push(line);
    }

    /// The engine crashed (or the process died): a new one takes over once the old leases lapse,
    /// with a new intake, which first moves into the database what the journal still holds
    /// (acknowledged and not moved, or moved and not yet forgotten). Should that move crash, the
    /// process restarts again.
    async fn restart(&mut self, why: &str) -> Result<(), String> {
        let mut why = why.to_string();
        for _ in 0..8 {
            // The crash that brought the old engine down (seen already).
            self.crashes.fired.lock().unwrap().take();
            self.generation += 1;
            self.clock.advance(Duration::from_secs(31));
            self.engine = engine(
                &self.store,
                &self.config,
                &self.fx,
                &self.rails,
                &self.vault,
                &self.clock,
                &self.market,
                &self.crashes,
                self.generation,
            );
            self.intake = Intake::start(self.engine.clone());
            self.note(format!("restart ({why}): engine sim-{}", self.generation));
            match self.intake_settled().await? {
                None => return Ok(()),
                Some(point) => {
                    self.accepts.intake_crashes += 1;
                    why = format!("crash at {point:?} moving from the intake journal");
                }
            }
        }
        Err(format!("restarting: crashed eight times in a row ({why})"))
    }

    /// Waits until what the intake acknowledged is in the database; or the crash point where its
    /// own work crashed (moving from the journal; accepting a batch where there is no journal).
    async fn intake_settled(&mut self) -> Result<Option<CrashPoint>, String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(point) = self.crashes.fired.lock().unwrap().take() {
                return Ok(Some(point));
            }
            if self.intake.settled_within(Duration::ZERO).await {
                return Ok(None);
            }
            if std::time::Instant::now() >= deadline {
                return Err("the intake did not move what it acknowledged within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn sandboxes(&self) -> Vec<(String, Arc<Sandbox>)> {
        self.rails.sandboxes.iter().map(|(id, sandbox)| (id.clone(), sandbox.sandbox())).collect()
    }

    /// Payout `index`'s request, sent alone: to the engine, or (one in three) through the intake
    /// as the API sends it (on SQLite into the intake journal, then moved into the database by the
    /// intake's mover; on PostgreSQL as a batch of one).
    async fn accept(&mut self, index: usize) -> Result<(), String> {
        let Submitted { tenant, key, request, .. } = self.payouts[index].clone();
        let through_intake = self.rng.random_range(0..3) == 0;
        for _ in 0..8 {
            if !through_intake {
                match self.engine.accept(tenant, &key, &request).await {
                    Err(EngineError::Crashed(point)) => {
                        self.restart(&format!("crash at {point:?} accepting {key}")).await?;
                        continue;
                    }
                    answer => return self.answered(index, answer).await,
                }
            }
            self.note(format!("{tenant} sends {key} through the intake"));
            self.accepts.through_intake += 1;
            let answer = self.intake.accept(tenant, &key, &request).await;
            if let Some(point) = self.intake_settled().await? {
                // A PSP that got no answer, or one whose payout is still in the journal: the
                // process restarts, and the PSP sends its request again.
                self.accepts.intake_crashes += 1;
                self.restart(&format!("crash at {point:?} accepting {key} through the intake")).await?;
                continue;
            }
            match answer {
                Ok(accepted) => return self.answered(index, Ok(accepted)).await,
                Err(IntakeError::Engine(EngineError::Crashed(point))) => {
                    self.restart(&format!("crash at {point:?} accepting {key} through the intake")).await?;
                }
                Err(IntakeError::Engine(error)) => return self.answered(index, Err(error)).await,
                Err(error) => return Err(format!("accept {key} through the intake: {error}")),
            }
        }
        Err(format!("accept {key}: crashed eight times in a row"))
    }

    /// Checks the engine's answer to payout `index`'s request, alone or in a batch, and keeps it.
    async fn answered(&mut self, index: usize, answer: Result<Accepted, EngineError>) -> Result<(), String> {
        let Submitted { tenant, key, quote, .. } = self.payouts[index].clone();
        match answer {
            Ok(accepted) => {
                let owner = self.engine.payout(&accepted.payout_id).await.map_err(|error| error.to_string())?.tenant;
                if owner != tenant {
                    return Err(format!("{tenant}'s {key} was answered with {owner}'s {}", accepted.payout_id));
                }
                if let Some(before) = &self.payouts[index].id
                    && *before != accepted.payout_id
                {
                    return Err(format!("{tenant}'s {key} was {before}, now answered as {}", accepted.payout_id));
                }
                self.note(format!("{tenant}: accepted {key} as {}", accepted.payout_id));
                self.payouts[index].id = Some(accepted.payout_id);
                Ok(())
            }
            // A quote paid after its expiry, and never accepted before: refused, and nothing
            // written (a payout accepted before it expired comes back as a replay).
            Err(EngineError::Invalid(reason))
                if quote.as_ref().is_some_and(|quote| quote.expires_at <= self.clock.now())
                    && reason.contains("has expired") =>
            {
                if let Some(id) = &self.payouts[index].id {
                    return Err(format!("accept {key}: accepted before as {id}, refused now: {reason}"));
                }
                self.expect_unclaimed(tenant, &key, &reason).await?;
                self.note(format!("refused {key}: {reason}"));
                self.payouts[index].refused = Some(reason);
                Ok(())
            }
            Err(error) => Err(format!("accept {key}: {error}")),
        }
    }

    /// A request refused for `reason` left its Idempotency-Key free, as if never sent.
    async fn expect_unclaimed(&self, tenant: &str, key: &str, reason: &str) -> Result<(), String> {
        let claimed: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency WHERE tenant = $1 AND key = $2")
            .bind(tenant)
            .bind(key)
            .fetch_one(self.store.pool())
            .await
            .map_err(|error| error.to_string())?;
        if claimed != 0 {
            return Err(format!("refused {key} ({reason}) but its key was claimed"));
        }
        Ok(())
    }

    /// Payouts `indices` accepted together, as the intake's group commit accepts them where it has
    /// no journal (`Engine::accept_batch`: PostgreSQL, SQLite unflushed), sometimes with a request
    /// sent twice under one key (again within the batch, or one accepted before): the same request
    /// must come back as the same payout, a different one as a conflict with it. A crash before or
    /// after the commit leaves every PSP without an answer: each sends its request again.
    async fn accept_together(&mut self, indices: &[usize]) -> Result<String, String> {
        let mut batch: Vec<(String, String, PayoutRequest)> = indices
            .iter()
            .map(|&index| {
                let payout = &self.payouts[index];
                (payout.tenant.to_string(), payout.key.clone(), payout.request.clone())
            })
            .collect();
        let mut again: Option<(usize, usize, bool)> = None;
        if self.rng.random_range(0..3) == 0 {
            let of = self.rng.random_range(0..self.payouts.len());
            let changed = self.rng.random_bool(0.5);
            let payout = &self.payouts[of];
            // After the original when it is in the batch (so the original is the one accepted).
            let after = indices.iter().position(|&index| index == of).map(|position| position + 1);
            if after.is_some() || payout.id.is_some() {
                let mut request = payout.request.clone();
                if changed {
                    request.remittance.push_str(" (changed)");
                }
                let position = self.rng.random_range(after.unwrap_or(0)..=batch.len());
                batch.insert(position, (payout.tenant.to_string(), payout.key.clone(), request));
                again = Some((position, of, changed));
                self.accepts.sent_again += 1;
            }
        }
        self.accepts.batches += 1;
        for _ in 0..8 {
            let mut answers = match self.engine.accept_batch(&batch).await {
                Ok(answers) => answers,
                Err(EngineError::Crashed(point)) => {
                    self.restart(&format!("crash at {point:?} accepting a batch of {}", batch.len())).await?;
                    continue;
                }
                Err(error) => return Err(format!("accept a batch of {}: {error}", batch.len())),
            };
            if answers.len() != batch.len() {
                return Err(format!("a batch of {} got {} answers", batch.len(), answers.len()));
            }
            let repeated = again.map(|(position, of, changed)| (answers.remove(position), of, changed));
            for (&index, answer) in indices.iter().zip(answers) {
                self.answered(index, answer).await?;
            }
            let mut described = format!("{} new payout(s) accepted together", indices.len());
            if let Some((answer, of, changed)) = repeated {
                let payout = &self.payouts[of];
                let expired = payout.refused.is_some();
                let fits = match (&answer, &payout.id) {
                    (Err(EngineError::Invalid(reason)), None) => expired && reason.contains("has expired"),
                    (Ok(accepted), Some(id)) => !changed && accepted.replay && accepted.payout_id == *id,
                    (Err(EngineError::Conflict(other)), Some(id)) => changed && other == id,
                    _ => false,
                };
                if !fits {
                    return Err(format!(
                        "{}'s {} sent again in a batch ({}) was answered {answer:?}; the payout is {:?}",
                        payout.tenant,
                        payout.key,
                        if changed { "changed" } else { "the same" },
                        payout.id
                    ));
                }
                if expired {
                    self.expect_unclaimed(payout.tenant, &payout.key, "an expired quote").await?;
                }
                described.push_str(&format!(
                    ", with {} sent again{}",
                    payout.key,
                    if changed { " changed" } else { "" }
                ));
            }
            return Ok(described);
        }
        Err(format!("accept a batch of {}: crashed eight times in a row", batch.len()))
    }

    async fn run(&mut self, id: &str) -> Result<(), String> {
        match self.engine.run(id).await {
            Ok(state) => {
                self.note(format!("run {id}: {}", state.as_str()));
                Ok(())
            }
            Err(EngineError::Crashed(point)) => {
                self.restart(&format!("crash at {point:?} running {id}")).await?;
                Ok(())
            }
            // The previous engine's lease is still live: only time frees it.
            Err(EngineError::Leased(_)) => {
                self.note(format!("run {id}: leased"));
                Ok(())
            }
            Err(error) => Err(format!("run {id}: {error}")),
        }
    }

    async fn run_group(&mut self, ids: &[String]) -> Result<(), String> {
        let mut crashed = None;
        for (id, result) in self.engine.run_group(ids).await {
            match result {
                Ok(state) => self.note(format!("group ran {id}: {}", state.as_str())),
                Err(EngineError::Crashed(point)) => {
                    crashed.get_or_insert(format!("crash at {point:?} running a group ({id})"));
                }
                Err(EngineError::Leased(_)) => self.note(format!("group ran {id}: leased")),
                Err(error) => return Err(format!("group run {id}: {error}")),
            }
        }
        if let Some(why) = crashed {
            self.restart(&why).await?;
        }
        Ok(())
    }

    async fn check_invariants(&mut self, after: &str) -> Result<(), String> {
        let report = verify::verify(&self.store).await.map_err(|error| error.to_string())?;
        if !report.ok() {
            return Err(format!("ledger invariants broken after {after}: {report:?}"));
        }
        Ok(())
    }

    /// One random step.
    async fn step(&mut self) -> Result<String, String> {
        let ids = self.open().await?;
        let action = self.rng.random_range(0..112);
        let sandboxes = self.sandboxes();
        let rail = self.rng.random_range(0..sandboxes.len());
        let (rail_id, sandbox) = &sandboxes[rail];
        let described = match action {
            0..=44 if !ids.is_empty() => {
                let id = ids[self.rng.random_range(0..ids.len())].clone();
                self.run(&id).await?;
                format!("run {id}")
            }
            45..=54 if !ids.is_empty() => {
                // Every open saga through `run_group`: those at the start together, the rest alone.
                self.run_group(&ids).await?;
                format!("run a group of {}", ids.len())
            }
            50..=59 if self.held().is_some() => {
                // The PSP pays a quote it took earlier: perhaps after the market moved, perhaps
                // after the quote expired.
                let index = self.held().unwrap_or_default();
                self.accept(index).await?;
                self.check_invariants(&format!("paying held quote of payout {index}")).await?;
                format!("pay the quote held for payout {index}")
            }
            0..=59 if self.payouts.len() < PAYOUTS_MAX => {
                // Payouts arrive alone or a few at once (which a group then takes together).
                let burst = self.rng.random_range(1..=3).min(PAYOUTS_MAX - self.payouts.len());
                if self.rng.random_bool(0.5) {
                    let mut together = Vec::with_capacity(burst);
                    for _ in 0..burst {
                        together.extend(self.submit_new(false).await?);
                    }
                    if together.is_empty() {
                        format!("{burst} new payout(s), each holding a quote")
                    } else {
                        let described = self.accept_together(&together).await?;
                        self.check_invariants("accepting payouts together").await?;
                        described
                    }
                } else {
                    for _ in 0..burst {
                        self.submit_new(true).await?;
                    }
                    format!("{burst} new payout(s)")
                }
            }
            0..=69 => {
                let by = Duration::from_millis(self.rng.random_range(0..5_000));
                self.clock.advance(by);
                format!("clock +{by:?}")
            }
            70..=74 => {
                // Past every FX quote's lifetime and every lease.
                let by = Duration::from_secs(self.rng.random_range(60..600));
                self.clock.advance(by);
                format!("clock jump +{by:?}")
            }
            75..=79 => {
                let down = self.rng.random_bool(0.5);
                sandbox.faults.set_outage(down);
                format!("{rail_id} {}", if down { "down" } else { "up" })
            }
            80..=83 => {
                let shift = SPREAD_SHIFTS_BPS[self.rng.random_range(0..SPREAD_SHIFTS_BPS.len())];
                self.market.change(|state| state.shift_bps = shift);
                format!("market: spreads {shift:+} bps from the configuration's")
            }
            84..=93 => {
                let fault = match self.rng.random_range(0..4) {
                    0 => Fault::ReplyLost,
                    1 => Fault::RequestLost,
                    2 => Fault::Reject { code: "AM04".into() },
                    // A slow creditor side that still answers in time. (Held past the timeout,
                    // the outcome would depend on which real-time timer fires first, and a seed
                    // would no longer replay exactly; lost replies cover the unanswered case.)
                    _ => Fault::Delay { ms: u64::from(RAIL_TIMEOUT_MS) / 8 },
                };
                let _ = sandbox.faults.force(fault.clone());
                format!("{rail_id} will {fault:?}")
            }
            100..=103 if !ids.is_empty() => {
                // The PSP cancels a payout, whatever it is doing: refused once a leg is with a rail.
                let id = ids[self.rng.random_range(0..ids.len())].clone();
                let owner = self.tenant_of(&id);
                // Now and then another PSP tries: it must not find the payout, let alone cancel it.
                let other = PSPS[self.rng.random_range(0..PSPS.len())];
                if other != owner && self.rng.random_bool(0.25) {
                    let before = self.engine.payout(&id).await.map_err(|error| error.to_string())?.state;
                    match self.engine.cancel(other, &id).await {
                        Err(EngineError::NotFound(_)) => {}
                        outcome => return Err(format!("{other} cancelling {owner}'s {id}: {outcome:?}")),
                    }
                    let after = self.engine.payout(&id).await.map_err(|error| error.to_string())?.state;
                    if after != before {
                        return Err(format!("{other} cancelling {owner}'s {id} moved it from {before:?} to {after:?}"));
                    }
                }
                match self.engine.cancel(owner, &id).await {
                    Ok(payout) => format!("cancel {id}: {}", payout.state.as_str()),
                    Err(EngineError::TooLate(why)) => format!("cancel {id}: too late ({why})"),
                    Err(EngineError::Leased(_)) => format!("cancel {id}: leased"),
                    Err(EngineError::Crashed(point)) => {
                        self.restart(&format!("crash at {point:?} cancelling {id}")).await?;
                        format!("cancel {id}: crashed")
                    }
                    Err(error) => return Err(format!("cancel {id}: {error}")),
                }
            }
            104..=107 => {
                // The treasury switches a rail off (or on again): routing leaves it out, and a
                // payout routed over it before is not sent into it.
                let rail_id = rail_id.clone();
                let mut off = false;
                self.market.change(|state| {
                    if !state.switched_off.remove(&rail_id) {
                        state.switched_off.insert(rail_id.clone());
                        off = true;
                    }
                });
                format!("treasury switches {rail_id} {}", if off { "off" } else { "on" })
            }
            108..=111 => {
                let held = self.held_for_decision().await?;
                if held.is_empty() {
                    "an approver finds nothing held".into()
                } else {
                    let id = held[self.rng.random_range(0..held.len())].clone();
                    self.decide(&id).await?
                }
            }
            _ => {
                self.restart("process killed").await?;
                "kill".into()
            }
        };
        Ok(described)
    }

    /// Faults stop; every saga must come to rest within [`LIVENESS_ROUNDS`].
    async fn settle_down(&mut self) -> Result<(), String> {
        self.crashes.permille.store(0, Ordering::SeqCst);
        self.market.change(|state| state.switched_off.clear());
        for (_, sandbox) in self.sandboxes() {
            sandbox.faults.set_outage(false);
            sandbox.faults.set_plan(FaultPlan::default()).unwrap();
            sandbox.faults.clear_forced();
        }
        self.note("faults stop".into());
        for round in 0..LIVENESS_ROUNDS {
            // Approvers keep deciding (a hold nobody decides expires after a day: the clock jumps
            // two days halfway).
            for id in self.held_for_decision().await? {
                let described = self.decide(&id).await?;
                self.note(format!("liveness round {round}: {described}"));
            }
            let mut resting = 0;
            let ids: Vec<String> = self.payouts.iter().filter_map(|payout| payout.id.clone()).collect();
            for id in &ids {
                if self.engine.payout(id).await.map_err(|error| error.to_string())?.state.terminal() {
                    resting += 1;
                    continue;
                }
                self.run(id).await?;
                self.check_invariants(&format!("liveness round {round}, {id}")).await?;
            }
            if resting == ids.len() {
                return Ok(());
            }
            self.clock.advance(Duration::from_secs(if round == LIVENESS_ROUNDS / 2 { 2 * 86_400 } else { 60 }));
        }
        let mut open = Vec::new();
        for id in self.payouts.iter().filter_map(|payout| payout.id.as_ref()) {
            let payout = self.engine.payout(id).await.map_err(|error| error.to_string())?;
            if !payout.state.terminal() {
                open.push(format!("{id} {} ({:?})", payout.state.as_str(), payout.reason));
            }
        }
        Err(format!("liveness: not at rest {LIVENESS_ROUNDS} rounds after faults stopped: {open:?}"))
    }

    /// The rails' execution ledgers joined to our payouts.
    async fn check_executions(&self) -> Result<(), String> {
        let mut owner: BTreeMap<String, String> = BTreeMap::new();
        for id in self.payouts.iter().filter_map(|payout| payout.id.as_ref()) {
            for (rail_id, _) in &self.rails.sandboxes {
                let connector = self.rails.registry.get(rail_id).unwrap();
                for attempt in 0..6 {
                    for leg in 0..4 {
                        let key = IdempotencyKey::new(format!("{id}:a{attempt}-leg{leg}")).unwrap();
                        owner.insert(connector.rail_key(&key).as_str().to_string(), id.clone());
                    }
                }
            }
        }
        let mut per_payout: BTreeMap<String, usize> = BTreeMap::new();
        // The daily cap from the rail's side: what SEPA Instant executed stays within its cap on
        // each simulated day the run touched.
        let days = railyard_store::usage::day_of(self.clock.now()) - railyard_store::usage::day_of(start()) + 1;
        let sepa_eur: i64 = self
            .sandboxes()
            .iter()
            .filter(|(rail_id, _)| rail_id == "sepa-inst")
            .flat_map(|(_, sandbox)| sandbox.ledger.executions())
            .map(|record| record.execution.send)
            .filter(|send| send.currency() == c("EUR"))
            .map(|send| send.minor_units())
            .sum();
        if sepa_eur > SEPA_DAILY_CAP_MINOR * days {
            return Err(format!(
                "sepa-inst executed {sepa_eur} EUR minor units over {days} days, past its daily cap of {SEPA_DAILY_CAP_MINOR}"
            ));
        }
        for (rail_id, sandbox) in self.sandboxes() {
            for record in sandbox.ledger.executions() {
                match owner.get(record.key.as_str()) {
                    Some(id) => *per_payout.entry(id.clone()).or_default() += 1,
                    None => return Err(format!("{rail_id} executed {} for no payout of ours", record.key.as_str())),
                }
            }
        }
        for id in self.payouts.iter().filter_map(|payout| payout.id.as_ref()) {
            let state = self.engine.payout(id).await.map_err(|error| error.to_string())?.state;
            let executed = per_payout.get(id).copied().unwrap_or(0);
            let expected = match state {
                State::Completed => 1,
                State::Failed | State::Cancelled => 0,
                // A return keeps what its executed legs paid.
                _ => executed,
            };
            if executed != expected {
                return Err(format!("{id} is {} but the rails executed it {executed} times", state.as_str()));
            }
        }
        Ok(())
    }

    /// A new payout: a source currency to EUR in Germany (USD and GBP need an FX conversion),
    /// sending an amount or delivering one; one in four against a quote the PSP takes first, paid
    /// at once or held to be paid in a later step. Accepted at once if `accept`, otherwise its index
    /// is returned, for a batch (unless it holds a quote).
    async fn submit_new(&mut self, accept: bool) -> Result<Option<usize>, String> {
        let index = self.payouts.len();
        let tenant = PSPS[self.rng.random_range(0..PSPS.len())];
        let source = ["USD", "EUR", "GBP"][self.rng.random_range(0..3)];
        let mode = if self.rng.random_range(0..4) == 0 { AmountMode::Deliver } else { AmountMode::Send };
        let currency = c(if mode == AmountMode::Deliver { "EUR" } else { source });
        // Log-uniform amounts from 0.10 to 10,000.
        let exponent = self.rng.random_range(2..=6_u32);
        let minor = self.rng.random_range(10_i64.pow(exponent - 1)..10_i64.pow(exponent));
        let sanctioned = self.rng.random_range(0..12) == 0;
        let name = if sanctioned {
            SANCTIONED_NAMES[self.rng.random_range(0..SANCTIONED_NAMES.len())].to_string()
        } else {
            format!("Beneficiary {} {index}", self.seed)
        };
        let mut request = PayoutRequest {
            source: c(source),
            destination: c("EUR"),
            amount: Money::from_minor(minor, currency),
            mode,
            beneficiary: railyard_connector::Beneficiary {
                name,
                account: "DE89370400440532013000".into(),
                country: Country::from_code("DE").unwrap(),
            },
            remittance: format!("sim {} {index}", self.seed),
            rail_kind: None,
            quote_id: None,
            originator: None,
            account_masked: None,
            // The API key that sent it: the one key that may not decide it if it is held.
            submitted_by: Some(submitter(tenant)),
        };
        let (mut quote, mut held) = (None, false);
        if self.rng.random_range(0..4) == 0 {
            match self.engine.quote(tenant, &request, Some(request.beneficiary.country)).await {
                Ok(quoted) => {
                    self.note(format!(
                        "quote for payout {index}: send {} for {}",
                        quoted.route.send, quoted.route.receive
                    ));
                    request.quote_id = Some(quoted.id.clone());
                    quote = Some(quoted);
                    held = self.rng.random_bool(0.5);
                }
                // No route for it now (an amount over a cap): the PSP pays without a quote.
                Err(EngineError::Invalid(reason)) => self.note(format!("no quote for payout {index}: {reason}")),
                Err(error) => return Err(format!("quote for payout {index}: {error}")),
            }
        }
        // Each PSP numbers its own requests, so PSPs use the same keys: a key is the PSP's alone.
        let number = self.payouts.iter().filter(|payout| payout.tenant == tenant).count();
        let key = format!("sim-{}-{number}", self.seed);
        self.payouts.push(Submitted { tenant, key, request, quote, id: None, refused: None, sanctioned });
        if held {
            return Ok(None);
        }
        if !accept {
            return Ok(Some(index));
        }
        self.accept(index).await?;
        self.check_invariants(&format!("accepting payout {index}")).await?;
        Ok(None)
    }

    /// A payout whose quote the PSP holds and has not paid yet.
    fn held(&self) -> Option<usize> {
        self.payouts.iter().position(|payout| payout.id.is_none() && payout.refused.is_none())
    }

    /// The PSP that submitted payout `id`.
    fn tenant_of(&self, id: &str) -> &'static str {
        self.payouts.iter().find(|payout| payout.id.as_deref() == Some(id)).map_or("", |payout| payout.tenant)
    }

    /// Payouts waiting for an approver's decision, in the order they were submitted.
    async fn held_for_decision(&self) -> Result<Vec<String>, String> {
        let mut held = Vec::new();
        for id in self.payouts.iter().filter_map(|payout| payout.id.as_ref()) {
            let state = self.engine.payout(id).await.map_err(|error| error.to_string())?.state;
            if matches!(state, State::Screening | State::AwaitingApproval) {
                held.push(id.clone());
            }
        }
        Ok(held)
    }

    /// A second person approves or rejects a held payout.
    async fn decide(&mut self, id: &str) -> Result<String, String> {
        // Now and then a key that may not decide it tries first: another PSP's approver (must not
        // find the payout) or the key that submitted it (four eyes: a second person decides).
        // Either way the payout stays as it was.
        let owner = self.tenant_of(id);
        let wrong = match self.rng.random_range(0..6) {
            0 => PSPS.iter().find(|tenant| **tenant != owner).map(|other| {
                (
                    Approver { tenant: other.to_string(), key: "sim-psp-approver".into(), all_tenants: false },
                    "another PSP",
                )
            }),
            1 => Some((Approver { tenant: owner.into(), key: submitter(owner), all_tenants: false }, "the submitter")),
            _ => None,
        };
        if let Some((approver, who)) = wrong {
            let verdict = if self.rng.random_bool(0.5) { Verdict::Approve } else { Verdict::Reject };
            let before = self.engine.payout(id).await.map_err(|error| error.to_string())?.state;
            let outcome = self.engine.decide(id, &approver, verdict, "not theirs to decide").await;
            let refused = matches!(
                (&outcome, who),
                (Err(DecideError::NotFound(_)), "another PSP") | (Err(DecideError::OwnRequest(_)), "the submitter")
            );
            if !refused {
                return Err(format!("{who} deciding {owner}'s {id} ({verdict:?}): {outcome:?}"));
            }
            let after = self.engine.payout(id).await.map_err(|error| error.to_string())?.state;
            if after != before {
                return Err(format!("{who} deciding {owner}'s {id} moved it from {before:?} to {after:?}"));
            }
            self.note(format!("{who} may not decide {id}: refused"));
        }
        // The payout's own PSP's approver, or the operator's (who decides for every PSP).
        let approver = match self.rng.random_bool(0.5) {
            true => Approver { tenant: self.tenant_of(id).into(), key: "sim-psp-approver".into(), all_tenants: false },
            false => Approver { tenant: "house".into(), key: "sim-operator".into(), all_tenants: true },
        };
        let verdict = if self.rng.random_bool(0.5) { Verdict::Approve } else { Verdict::Reject };
        let described = match self.engine.decide(id, &approver, verdict, "simulated review").await {
            Ok(payout) => format!("{verdict:?} {id}: {}", payout.state.as_str()),
            Err(DecideError::Expired(_) | DecideError::NotHeld { .. }) => format!("{verdict:?} {id}: no longer held"),
            Err(DecideError::Engine(EngineError::Leased(_))) => format!("{verdict:?} {id}: leased"),
            Err(DecideError::Engine(EngineError::Crashed(point))) => {
                self.restart(&format!("crash at {point:?} deciding {id}")).await?;
                format!("{verdict:?} {id}: crashed")
            }
            Err(error) => return Err(format!("decide {id}: {error}")),
        };
        Ok(described)
    }

    /// Payouts accepted and not yet terminal.
    async fn open(&self) -> Result<Vec<String>, String> {
        let mut open = Vec::new();
        for id in self.payouts.iter().filter_map(|payout| payout.id.as_ref()) {
            if !self.engine.payout(id).await.map_err(|error| error.to_string())?.state.terminal() {
                open.push(id.clone());
            }
        }
        Ok(open)
    }

    async fn play(&mut self) -> Result<(), String> {
        self.engine.ensure_accounts().await.map_err(|error| error.to_string())?;
        for tenant in PSPS {
            for currency in ["USD", "EUR", "GBP"] {
                let reference = format!("wire-{tenant}-{currency}");
                self.engine
                    .fund_psp(tenant, Money::from_minor(FUNDED_MINOR, c(currency)), &reference)
                    .await
                    .map_err(|error| error.to_string())?;
            }
        }
        for _ in 0..self.rng.random_range(1..=2) {
            self.submit_new(true).await?;
        }
        for step in 0..STEPS {
            let described = self.step().await?;
            self.note(format!("step {step}: {described}"));
            self.check_invariants(&format!("step {step} ({described})")).await?;
            // A duplicate submission after a crash must come back as the same payout.
            if self.rng.random_range(0..20) == 0 {
                let index = self.rng.random_range(0..self.payouts.len());
                let before = self.payouts[index].id.clone();
                self.accept(index).await?;
                if before.is_some() && before != self.payouts[index].id {
                    return Err(format!("resubmitting {} made a second payout", self.payouts[index].key));
                }
            }
        }
        self.settle_down().await?;
        self.check_executions().await?;
        self.check_money().await?;
        self.check_webhooks().await?;
        self.check_listing().await
    }

    /// Each PSP's payout list, read a page of two at a time, holds each of its accepted payouts
    /// once, in id order, in the state it is in, and no other PSP's; none is left `accepted`. On
    /// SQLite the list merges the intake journal's intents, which keep payouts moved and not yet
    /// forgotten: those must not appear twice.
    async fn check_listing(&self) -> Result<(), String> {
        const PAGE: i64 = 2;
        for tenant in PSPS {
            let mut expected: Vec<&str> = self
                .payouts
                .iter()
                .filter(|payout| payout.tenant == tenant)
                .filter_map(|payout| payout.id.as_deref())
                .collect();
            expected.sort_unstable();
            let mut listed: Vec<String> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = self
                    .engine
                    .list(tenant, None, None, cursor.as_deref(), PAGE)
                    .await
                    .map_err(|error| error.to_string())?;
                for payout in &page {
                    let now = self.engine.payout(&payout.id).await.map_err(|error| error.to_string())?;
                    if payout.tenant != tenant || now.state != payout.state {
                        return Err(format!(
                            "{tenant}'s list shows {} as {}'s, {}; it is {}'s, {}",
                            payout.id,
                            payout.tenant,
                            payout.state.as_str(),
                            now.tenant,
                            now.state.as_str()
                        ));
                    }
                    listed.push(payout.id.clone());
                }
                if page.len() < PAGE as usize {
                    break;
                }
                cursor = page.last().map(|payout| payout.id.clone());
            }
            if listed != expected {
                return Err(format!("{tenant}'s list is {listed:?}; its payouts are {expected:?}"));
            }
            let accepted = self
                .engine
                .list(tenant, Some(State::Accepted), None, None, 100)
                .await
                .map_err(|error| error.to_string())?;
            if !accepted.is_empty() {
                let ids: Vec<&str> = accepted.iter().map(|payout| payout.id.as_str()).collect();
                return Err(format!("{tenant}'s list shows payouts still accepted at rest: {ids:?}"));
            }
        }
        Ok(())
    }

    /// Each payout at rest has queued exactly one final webhook, the one for the state it is in,
    /// whatever crashed on the way.
    async fn check_webhooks(&self) -> Result<(), String> {
        for id in self.payouts.iter().filter_map(|payout| payout.id.as_ref()) {
            let state = self.engine.payout(id).await.map_err(|error| error.to_string())?.state;
            let events: Vec<String> = sqlx::query_scalar(
                "SELECT event FROM outbox WHERE payout_id = $1 AND event IN \
                 ('payout.completed', 'payout.failed', 'payout.cancelled', 'payout.returned') ORDER BY event",
            )
            .bind(id)
            .fetch_all(self.store.pool())
            .await
            .map_err(|error| error.to_string())?;
            if events != [format!("payout.{}", state.as_str())] {
                return Err(format!("{id} is {} and queued the final webhooks {events:?}", state.as_str()));
            }
        }
        Ok(())
    }

    /// What the completed payouts sent and delivered, against what was asked, what was quoted,
    /// and the PSP's balances.
    async fn check_money(&self) -> Result<(), String> {
        let tolerance = Decimal::from(SLIPPAGE_BPS) / Decimal::from(10_000);
        let mut sent: BTreeMap<(&'static str, &'static str), i64> = BTreeMap::new();
        for submitted in &self.payouts {
            let Some(id) = &submitted.id else { continue };
            let payout = self.engine.payout(id).await.map_err(|error| error.to_string())?;
            if payout.state != State::Completed {
                continue;
            }
            if submitted.sanctioned {
                let history = self.engine.history(id).await.map_err(|error| error.to_string())?;
                if !history.iter().any(|entry| entry.detail.starts_with("approved by")) {
                    return Err(format!(
                        "{id} paid {} with no approver's decision",
                        submitted.request.beneficiary.name
                    ));
                }
            }
            let route = payout.route.as_ref().ok_or_else(|| format!("{id} completed without a route"))?;
            let request = &submitted.request;
            match request.mode {
                AmountMode::Send if route.send != request.amount => {
                    return Err(format!("{id} sent {} for a request to send {}", route.send, request.amount));
                }
                AmountMode::Send => {}
                AmountMode::Deliver => {
                    let delivered = route
                        .legs
                        .iter()
                        .rev()
                        .find(|leg| leg.kind == "rail")
                        .and_then(|leg| leg.execution.as_ref())
                        .map(|execution| execution.receive);
                    if delivered != Some(request.amount) || route.receive != request.amount {
                        return Err(format!(
                            "{id}: the rail delivered {delivered:?} (route: {}) for a request to deliver {}",
                            route.receive, request.amount
                        ));
                    }
                }
            }
            if let Some(quote) = &submitted.quote {
                let kept = match request.mode {
                    AmountMode::Send => {
                        route.receive.to_decimal() >= quote.route.receive.to_decimal() * (Decimal::ONE - tolerance)
                    }
                    AmountMode::Deliver => {
                        route.send.to_decimal() <= quote.route.send.to_decimal() * (Decimal::ONE + tolerance)
                    }
                };
                if !kept {
                    return Err(format!(
                        "{id} completed at send {} for {}, beyond {SLIPPAGE_BPS} bps of its quote's send {} for {}",
                        route.send, route.receive, quote.route.send, quote.route.receive
                    ));
                }
            }
            let total = sent.entry((submitted.tenant, route.send.currency().code())).or_default();
            *total = total.checked_add(route.send.minor_units()).ok_or("the amounts sent overflow")?;
        }
        for (tenant, currency) in
            PSPS.iter().flat_map(|tenant| ["USD", "EUR", "GBP"].map(|currency| (*tenant, currency)))
        {
            let account = format!("psp:{tenant}:{currency}");
            let balance = railyard_store::ledger::balance(self.store.pool(), &account)
                .await
                .map_err(|error| error.to_string())?;
            let expected = FUNDED_MINOR - sent.get(&(tenant, currency)).copied().unwrap_or(0);
            if balance.available().minor_units() != expected
                || balance.debits_pending != 0
                || balance.credits_pending != 0
            {
                return Err(format!(
                    "{account}: available {} with {} / {} pending, expected {expected} minor units (funded {FUNDED_MINOR} less what completed payouts sent) and nothing pending",
                    balance.available(),
                    balance.debits_pending,
                    balance.credits_pending
                ));
            }
        }
        Ok(())
    }
}

/// Where the engine crashes: each crash point draws from one seeded source, at a seed's rate.
struct Crashes {
    /// Crash probability per crash point, per mille; 0 once faults stop.
    permille: Arc<AtomicU32>,
    random: Arc<Mutex<ChaCha8Rng>>,
    /// The last crash point that fired: the intake's tasks crash where the simulation cannot see
    /// an error (a move from the journal, or a batch it answers with "unavailable").
    fired: Arc<Mutex<Option<CrashPoint>>>,
}

#[allow(clippy::too_many_arguments)]
fn engine(
    store: &Store,
    config: &Arc<TreasuryConfig>,
    fx: &Arc<FxBook>,
    rails: &Rails,
    vault: &Arc<railyard_store::vault::VaultKeys>,
    clock: &Arc<ManualClock>,
    market: &Arc<Market>,
    crashes: &Crashes,
    generation: u32,
) -> Arc<Engine> {
    let mut settings =
        EngineSettings::new("", Duration::from_secs(30), Duration::from_millis(500), 3, 3, Decimal::from(SLIPPAGE_BPS));
    settings.owner = format!("sim-{generation}");
    settings.ordered_groups = true;
    let (permille, random, fired) = (crashes.permille.clone(), crashes.random.clone(), crashes.fired.clone());
    settings.crash = Some(Arc::new(move |point| {
        let permille = permille.load(Ordering::SeqCst);
        let crash = permille > 0 && random.lock().unwrap().random_range(0..1_000) < permille;
        if crash {
            *fired.lock().unwrap() = Some(point);
        }
        crash
    }));
    let mut engine =
        Engine::new(store.clone(), config.clone(), fx.clone(), rails.registry.clone(), settings, vault.clone());
    engine.set_clock(clock.clone());
    engine.set_routing(market.clone());
    Arc::new(engine)
}

/// The API key a PSP submits its payouts with in the simulation.
fn submitter(tenant: &str) -> String {
    format!("sim-submitter-{tenant}")
}

fn remove(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// How a seed's requests were accepted.
#[derive(Default, Clone, Copy)]
struct AcceptCounts {
    /// Requests sent through the intake (each try after a crash counted).
    through_intake: usize,
    /// Batches (`Engine::accept_batch`), and those with a request sent twice under one key.
    batches: usize,
    sent_again: usize,
    /// Crashes in the intake's own work: a move from the journal (or a batch on PostgreSQL).
    intake_crashes: usize,
}

impl std::ops::AddAssign for AcceptCounts {
    fn add_assign(&mut self, other: AcceptCounts) {
        self.through_intake += other.through_intake;
        self.batches += other.batches;
        self.sent_again += other.sent_again;
        self.intake_crashes += other.intake_crashes;
    }
}

/// What one seed ended with.
struct SeedResult {
    accepts: AcceptCounts,
    steps: usize,
    restarts: usize,
    states: Vec<&'static str>,
    /// Payouts a leg of which a daily cap refused.
    capped: usize,
    /// Payouts against a quote (accepted or refused), those refused for an expired quote, and
    /// those delivering an amount.
    quoted: usize,
    refused: usize,
    deliver: usize,
    /// Payouts to a sanctioned name, and those of them paid after an approver cleared them.
    sanctioned: usize,
    cleared_paid: usize,
}

/// Runs one seed on its own single-threaded runtime, so its steps interleave the same way every
/// time.
fn run_seed(seed: u64, verbose: bool, database: Database) -> Result<SeedResult, String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let mut sim = Sim::new(seed, verbose, database).await;
        let outcome = sim.play().await;
        let result = match outcome {
            Ok(()) => {
                let (mut states, mut capped) = (Vec::new(), 0);
                for id in sim.payouts.iter().filter_map(|payout| payout.id.as_ref()) {
                    states.push(sim.engine.payout(id).await.map_err(|error| error.to_string())?.state.as_str());
                    let history = sim.engine.history(id).await.map_err(|error| error.to_string())?;
                    capped += usize::from(history.iter().any(|entry| entry.detail.contains("daily cap")));
                }
                if std::env::var("RAILYARD_SIM_DIGEST").is_ok() {
                    let digest: Vec<&str> =
                        sim.trace.iter().map(|line| line.split("pay_").next().unwrap_or("")).collect();
                    eprintln!("digest {seed}: {} {}", sim.trace.len(), digest.join("|").len());
                }
                let quoted = sim.payouts.iter().filter(|payout| payout.quote.is_some()).count();
                let refused = sim.payouts.iter().filter(|payout| payout.refused.is_some()).count();
                let deliver = sim.payouts.iter().filter(|payout| payout.request.mode == AmountMode::Deliver).count();
                let (mut sanctioned, mut cleared_paid) = (0, 0);
                for payout in sim.payouts.iter().filter(|payout| payout.sanctioned) {
                    let Some(id) = &payout.id else { continue };
                    sanctioned += 1;
                    let state = sim.engine.payout(id).await.map_err(|error| error.to_string())?.state;
                    cleared_paid += usize::from(state == State::Completed);
                }
                Ok(SeedResult {
                    accepts: sim.accepts,
                    steps: sim.trace.len(),
                    restarts: sim.generation as usize,
                    states,
                    capped,
                    quoted,
                    refused,
                    deliver,
                    sanctioned,
                    cleared_paid,
                })
            }
            Err(failure) => {
                let tail: Vec<&str> = sim.trace.iter().rev().take(30).rev().map(String::as_str).collect();
                Err(format!("{failure}\nlast steps:\n  {}", tail.join("\n  ")))
            }
        };
        sim.store.pool().close().await;
        sim.place.remove().await;
        result
    })
}

/// Seeds 0..1,000 on SQLite (`RAILYARD_SIM_SEEDS` for another count).
#[test]
fn deterministic_simulation() {
    run_seeds(Database::Sqlite, "deterministic_simulation", "RAILYARD_SIM_SEEDS", SEEDS_DEFAULT);
}

/// Seeds 0..100 on PostgreSQL (`RAILYARD_SIM_POSTGRES_SEEDS` for another count), each in a schema
/// of its own: the same steps against PostgreSQL's locking and its statements. `SKIPPED` when
/// PostgreSQL is not reachable, a failure with `RAILYARD_REQUIRE_POSTGRES=1`.
#[test]
fn deterministic_simulation_on_postgres() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    if let Err(error) = runtime.block_on(postgres_admin("SELECT 1")) {
        let url = common::postgres_url();
        if std::env::var("RAILYARD_REQUIRE_POSTGRES").is_ok_and(|value| value == "1") {
            panic!("PostgreSQL is required (RAILYARD_REQUIRE_POSTGRES=1) but {url} is not reachable: {error}");
        }
        eprintln!("SKIPPED: PostgreSQL not reachable at {url}: {error}");
        return;
    }
    run_seeds(
        Database::Postgres,
        "deterministic_simulation_on_postgres",
        "RAILYARD_SIM_POSTGRES_SEEDS",
        POSTGRES_SEEDS_DEFAULT,
    );
}

/// Runs seeds on `database`: `RAILYARD_SEED` alone if set, else 0..`count` (`count_variable`, or
/// `count_default`).
fn run_seeds(database: Database, test: &str, count_variable: &str, count_default: u64) {
    let replay: Option<u64> = std::env::var("RAILYARD_SEED")
        .ok()
        .map(|seed| seed.parse().unwrap_or_else(|_| panic!("RAILYARD_SEED={seed:?} is not a number")));
    let seeds: Vec<u64> = match replay {
        Some(seed) => vec![seed],
        None => {
            let count = std::env::var(count_variable).ok().and_then(|count| count.parse().ok());
            (0..count.unwrap_or(count_default)).collect()
        }
    };
    let started = std::time::Instant::now();
    // Seeds run in parallel, one thread each at a time; each seed alone is deterministic.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Mutex<Vec<(u64, Result<SeedResult, String>)>> = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(2, usize::from).min(seeds.len()).max(1);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    let Some(seed) = seeds.get(index) else { break };
                    let result = run_seed(*seed, replay.is_some(), database);
                    let failed = result.is_err();
                    results.lock().unwrap().push((*seed, result));
                    if failed {
                        // Stop handing out seeds; the others finish theirs.
                        next.store(seeds.len(), Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(seed, _)| *seed);
    let (mut steps, mut restarts, mut capped) = (0, 0, 0);
    let (mut quoted, mut refused, mut deliver, mut sanctioned, mut cleared_paid) = (0, 0, 0, 0, 0);
    let mut states: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut accepts = AcceptCounts::default();
    for (seed, result) in &results {
        match result {
            Ok(result) => {
                accepts += result.accepts;
                steps += result.steps;
                restarts += result.restarts;
                capped += result.capped;
                quoted += result.quoted;
                refused += result.refused;
                deliver += result.deliver;
                sanctioned += result.sanctioned;
                cleared_paid += result.cleared_paid;
                for state in &result.states {
                    *states.entry(state).or_default() += 1;
                }
            }
            Err(failure) => panic!(
                "simulation seed {seed} failed on {database:?}: {failure}\nreplay exactly: RAILYARD_SEED={seed} cargo test -p railyard-system-tests --test simulation {test} -- --exact --nocapture"
            ),
        }
    }
    eprintln!(
        "simulation on {database:?}: {} seeds, {steps} steps, {restarts} engine restarts, final states {states:?}, {capped} payouts refused by a daily cap, {deliver} delivering an amount, {quoted} against a quote ({refused} refused: quote expired), {sanctioned} to a sanctioned name ({cleared_paid} paid once an approver cleared them), {} requests through the intake ({} crashes in its own work), {} batches ({} with a request sent twice), {:?} on {threads} threads",
        results.len(),
        accepts.through_intake,
        accepts.intake_crashes,
        accepts.batches,
        accepts.sent_again,
        started.elapsed()
    );
}
