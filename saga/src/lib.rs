//! The settlement saga: a payout, persisted step by step, from acceptance to the ledger.
//!
//! ```text
//! accepted → routed → reserved → quoted → (per rail leg: submitting → leg done | in_doubt) → completed
//!                                   ↘ definitive reject: void, re-route (attempt + 1) or failed
//! ```
//!
//! Every step is one database transaction that moves the saga from the state it read to the next
//! one, together with the ledger entries of that step, and only while this engine holds the saga's
//! lease. A crash anywhere leaves the saga in a state some engine resumes from.
//!
//! The rail call is the one step that cannot be inside a transaction. Its intent is committed first
//! (`submitting`, with the leg's liquidity reserved); the call carries the key
//! `{payout}:a{attempt}-leg{index}`; its result is committed after. A saga found in `submitting`
//! after a crash asks the rail (status inquiry) before anything else: executed → carry on;
//! rejected → compensate; not found → submit again under the same key (the rail never saw it);
//! anything else → `in_doubt`. An `in_doubt` saga is asked again on a bounded schedule and escalated
//! after [`EngineSettings::inquiries_max`]; its reservation is never voided while the outcome is
//! unknown, and it is never resent blindly.

pub mod authorise;
pub mod bench;
pub mod driver;
pub mod group;
pub mod intake;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use railyard_config::TreasuryConfig;
use railyard_connector::{Beneficiary, Execution, IdempotencyKey, Leg, Outcome, Registry, Rejection, Status};
use railyard_core::{Currency, Decimal, Money, RoundingMode};
use railyard_fx::FxBook;
use railyard_routes::{LiveState, RouteRequest, Router};
use railyard_store::idempotency::{self, Claim};
use railyard_store::ledger::{self, AccountSpec, LedgerError, Normal, TransferSpec};
use railyard_store::vault::VaultKeys;
use railyard_store::{StepTransaction, Store, bulk, now_micros, usage};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

/// Whether the amount is what the PSP sends or what the beneficiary must receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmountMode {
    Send,
    Deliver,
}

/// What a PSP asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutRequest {
    pub source: Currency,
    pub destination: Currency,
    pub amount: Money,
    pub mode: AmountMode,
    pub beneficiary: Beneficiary,
    #[serde(default)]
    pub remittance: String,
    /// The kind of rail the beneficiary's account can receive on (an IBAN on instant rails, a
    /// card token on card networks, a wallet on CBDC platforms); `None` lets routing choose any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rail_kind: Option<railyard_config::RailKind>,
    /// A quote (from [`Engine::quote`]) whose route and locked rates this payout follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote_id: Option<String>,
    /// Who the money comes from, when the PSP pays out for a customer (screened like the beneficiary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub originator: Option<Originator>,
    /// The beneficiary account's masked form (set when the account is put in the vault; the stored
    /// `beneficiary.account` is then the vault token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_masked: Option<String>,
    /// The API key that submitted the payout (not part of the request's fingerprint; stored in its
    /// own column): it may not approve the payout.
    #[serde(skip)]
    pub submitted_by: Option<String>,
}

/// The party paying, as the PSP names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Originator {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<railyard_core::Country>,
}

/// A quote a PSP can pay out against until it expires.
#[derive(Debug, Clone, Serialize)]
pub struct StoredQuote {
    pub id: String,
    pub route: StoredRoute,
    pub expires_at: DateTime<Utc>,
}

impl PayoutRequest {
    /// A stable hash of the request, for idempotency (same key, same payload → replay).
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&serde_json::to_string(self).unwrap_or_default())
    }
}

/// The fingerprint of a request from its JSON ([`PayoutRequest::fingerprint`]).
fn fingerprint_of(json: &str) -> String {
    hex::encode(Sha256::digest(json.as_bytes()))
}

/// One leg of the route a saga follows, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLeg {
    pub operator: String,
    /// "rail" or "fx".
    pub kind: String,
    pub from: Currency,
    pub to: Currency,
    pub send: Money,
    pub receive: Money,
    pub fee: Money,
    pub rate: Option<Decimal>,
    /// What the rail reported when the leg executed.
    pub execution: Option<Execution>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRoute {
    pub legs: Vec<StoredLeg>,
    pub send: Money,
    pub receive: Money,
    /// When the FX rates of this route stop being honoured.
    pub quotes_expire_at: Option<DateTime<Utc>>,
    /// Rails that definitively rejected an earlier attempt; routing avoids them.
    pub excluded_rails: Vec<String>,
}

/// Where a saga stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Accepted,
    Routed,
    Reserved,
    Quoted,
    Submitting,
    InDoubt,
    Completed,
    Failed,
    /// Cancelled by the PSP before any rail leg was sent.
    Cancelled,
    /// Held after a sanctions-screening match until an approver clears (overrides) or rejects it.
    Screening,
    /// Waiting for a second person (risk score or amount over the configured tier).
    AwaitingApproval,
    /// A rail leg ran but the rest could not: the PSP was refunded and what the executed legs paid
    /// is booked for return.
    Returned,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Accepted => "accepted",
            State::Routed => "routed",
            State::Reserved => "reserved",
            State::Quoted => "quoted",
            State::Submitting => "submitting",
            State::InDoubt => "in_doubt",
            State::Completed => "completed",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::Screening => "screening",
            State::AwaitingApproval => "awaiting_approval",
            State::Returned => "returned",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        Some(match text {
            "accepted" => State::Accepted,
            "routed" => State::Routed,
            "reserved" => State::Reserved,
            "quoted" => State::Quoted,
            "submitting" => State::Submitting,
            "in_doubt" => State::InDoubt,
            "completed" => State::Completed,
            "cancelled" => State::Cancelled,
            "screening" => State::Screening,
            "awaiting_approval" => State::AwaitingApproval,
            "returned" => State::Returned,
            "failed" => State::Failed,
            _ => return None,
        })
    }

    pub fn terminal(self) -> bool {
        matches!(self, State::Completed | State::Failed | State::Cancelled | State::Returned)
    }
}

/// Where a test may crash the engine. Compiled in only with the `crash-hooks` feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashPoint {
    /// The state the step moves out of (`accepted`, `routed`, ...), or `rail_call` for the gap
    /// between a rail call's answer and its persistence.
    pub step: &'static str,
    pub phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    BeforeCommit,
    AfterCommit,
    AfterRailCall,
}

#[cfg(feature = "crash-hooks")]
pub type CrashHook = Arc<dyn Fn(CrashPoint) -> bool + Send + Sync>;

/// The engine's knobs. No `Default`: each caller says what it wants.
#[derive(Clone)]
pub struct EngineSettings {
    /// This engine's name in leases.
    pub owner: String,
    /// How long a lease lasts without being renewed; another engine may take the saga after it.
    pub lease: Duration,
    /// Wait before the first status inquiry of an in-doubt leg; doubled each time.
    pub inquiry_backoff: Duration,
    /// Inquiries before an in-doubt saga is escalated (it is still asked, less often).
    pub inquiries_max: u32,
    /// Routes tried after definitive rejects before the payout fails.
    pub route_attempts_max: u32,
    /// How far a re-quote after an expired FX quote may move the price (basis points).
    pub slippage_bps: Decimal,
    #[cfg(feature = "crash-hooks")]
    pub crash: Option<CrashHook>,
    /// Test hook for the deterministic simulation: [`Engine::run_group`] waits for every rail
    /// answer of a group before completing any and takes them, and the payouts that go on alone,
    /// in the group's order, so a seeded run replays exactly. (Production completes answers as
    /// they come and runs the others concurrently.)
    #[cfg(feature = "crash-hooks")]
    pub ordered_groups: bool,
}

impl EngineSettings {
    /// Settings without any test hook (the only way to build them outside tests, so a binary never
    /// carries a crash hook even when a workspace build unifies the `crash-hooks` feature in).
    pub fn new(
        owner: impl Into<String>,
        lease: Duration,
        inquiry_backoff: Duration,
        inquiries_max: u32,
        route_attempts_max: u32,
        slippage_bps: Decimal,
    ) -> EngineSettings {
        EngineSettings {
            owner: owner.into(),
            lease,
            inquiry_backoff,
            inquiries_max,
            route_attempts_max,
            slippage_bps,
            #[cfg(feature = "crash-hooks")]
            crash: None,
            #[cfg(feature = "crash-hooks")]
            ordered_groups: false,
        }
    }
}

/// The upper bound on the inquiry backoff.
pub const INQUIRY_BACKOFF_MAX: Duration = Duration::from_secs(3_600);
/// A fresh quote taken after an expired one is honoured at least this long, so a provider with a
/// very short quote lifetime cannot make a saga re-quote forever.
pub const REQUOTE_GRACE: Duration = Duration::from_secs(5);
/// Sagas one `resume_due` pass drives at the same time.
pub const SAGAS_CONCURRENT_MAX: usize = 64;
/// How long an engine's announcement that it is alive lasts ([`Engine::heartbeat`]): the longest
/// a dead engine's sagas wait for another engine.
pub const ENGINE_ALIVE_FOR: Duration = Duration::from_millis(1_500);
/// How often the saga driver renews the announcement (four times per [`ENGINE_ALIVE_FOR`], so a
/// late one or two do not let another engine take over).
pub const ENGINE_HEARTBEAT_EVERY: Duration = Duration::from_millis(375);

/// SQL: the lease's holder announced itself alive ([`Engine::heartbeat`]) and the announcement
/// has lapsed; `$now` is the parameter holding the current time.
macro_rules! lease_holder_gone {
    ($now:literal) => {
        concat!(
            " OR EXISTS (SELECT 1 FROM engines e WHERE e.owner = payouts.lease_owner AND e.alive_until < ",
            $now,
            ")"
        )
    };
}
/// Sagas one `resume_due` call takes on.
pub const RESUME_BATCH_MAX: i64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("crashed at {0:?} (test hook)")]
    Crashed(CrashPoint),
    #[error("payout {0} not found")]
    NotFound(String),
    #[error("too late to cancel: {0}")]
    TooLate(String),
    #[error("payout {0} is leased by another engine")]
    Leased(String),
    #[error("idempotency key reused with a different request (first used for payout {0})")]
    Conflict(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("stored saga unreadable: {0}")]
    Corrupt(String),
    /// A write the store did not commit (its transaction failed); nothing of it is stored.
    #[error("the store did not commit: {0}")]
    Unavailable(String),
}

/// A request of an intake batch made ready before the writer is taken: `None` for one from a
/// quote.
pub(crate) type Prepared = Option<Plain>;

/// A payout row [`Engine::accept_run`] writes: id, tenant, idempotency key, request, submitted by,
/// accepted at.
type PayoutRow<'a> = (&'a str, &'a str, &'a str, &'a str, Option<&'a str>, i64);

/// A request of a run of [`Engine::accept_run`]: where its answer goes, whose it is, and when
/// it was acknowledged if before (an intent moved from the intake journal).
struct Run<'a> {
    index: usize,
    tenant: &'a str,
    key: &'a str,
    plain: &'a Plain,
    accepted_at: Option<i64>,
}

/// A request without a quote, ready to write.
pub(crate) struct Plain {
    pub(crate) payout_id: String,
    /// The request as stored (the account tokenised), as JSON.
    pub(crate) json: String,
    /// Its fingerprint for the idempotency record ([`PayoutRequest::fingerprint`]).
    pub(crate) hash: String,
    pub(crate) sealed: railyard_store::vault::Sealed,
    pub(crate) submitted_by: Option<String>,
}

/// The answer to an accepted payout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accepted {
    pub payout_id: String,
    /// True when the idempotency key had been used with this request before.
    pub replay: bool,
}

/// A saga as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Payout {
    pub id: String,
    pub tenant: String,
    pub idempotency_key: String,
    pub request: PayoutRequest,
    pub state: State,
    pub attempt: i64,
    pub leg: i64,
    pub route: Option<StoredRoute>,
    pub reservation: Option<String>,
    pub reason: Option<String>,
    pub inquiries: i64,
    pub next_action_at: i64,
    pub created_at: i64,
    /// Screening and risk scoring, once assessed.
    pub risk: Option<railyard_risk::Assessment>,
    /// The approver key that cleared or rejected a held payout.
    pub decided_by: Option<String>,
}

pub struct Engine {
    store: Store,
    /// Where the engine reads the time (leases, retries, quote expiry, holds).
    clock: Arc<dyn Clock>,
    config: Arc<TreasuryConfig>,
    registry: Registry,
    settings: EngineSettings,
    routing: Arc<dyn RoutingSource>,
    observer: Option<Arc<dyn OutcomeObserver>>,
    vault: Arc<VaultKeys>,
    /// The sanctions list of `config.risk`, or why it could not be loaded (screening then holds
    /// every payout for review: it fails closed).
    sanctions: Result<Arc<railyard_risk::SanctionsList>, String>,
    /// The risk counters' scopes whose day-old buckets a group removed in the current minute.
    pruned: std::sync::Mutex<group::Pruned>,
    /// The intake journal, once the intake has opened it ([`intake`]): payouts acknowledged and
    /// not yet moved into the database are read from it.
    journal: std::sync::OnceLock<railyard_store::journal::Journal>,
    /// Payouts the intake's mover has just written, as it wrote them, until their first pass
    /// takes them (at most [`FRESH_PAYOUTS_MAX`]; see [`Engine::remember_fresh`]).
    fresh: std::sync::Mutex<std::collections::HashMap<String, Payout>>,
}

/// Payouts kept in memory between the intake's move and their first pass: as many as kicks can
/// wait ([`driver::KICKS_MAX`]), ~1 KB each. Past it, a group reads them back from the database.
pub const FRESH_PAYOUTS_MAX: usize = driver::KICKS_MAX;

/// Where the engine reads the time. Production uses [`SystemClock`]; the deterministic simulation
/// moves a [`ManualClock`] by hand, so leases, retry waits and quote expiry follow its steps.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;

    fn now_micros(&self) -> i64 {
        self.now().timestamp_micros()
    }
}

/// The operating system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to.
pub struct ManualClock {
    now: std::sync::Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock { now: std::sync::Mutex::new(start) }
    }

    /// Moves the clock forward by `by` (a clock jump when `by` is large).
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *now += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Where the engine gets a routing snapshot: built from the configuration on demand, or the
/// routing actor's latest live snapshot.
pub trait RoutingSource: Send + Sync {
    /// The router over every rail (a request names the rails it avoids: `RouteRequest::avoid`).
    fn router(&self) -> Result<Arc<Router>, String>;

    /// Whether `rail` may take a new leg now (not down, not switched off). Asked right before a
    /// leg is sent, so a payout routed before an outage does not send into it.
    fn rail_available(&self, rail: &str) -> bool {
        let _ = rail;
        true
    }

    /// `rail`'s daily cap in `currency` as in force now (a treasury change applies at once), if it
    /// has one. The engine holds each leg to it when it reserves the leg's liquidity.
    fn daily_cap(&self, rail: &str, currency: Currency) -> Option<Money>;
}

/// Builds a router from a fixed configuration and FX book, with no live rail state.
pub struct StaticRouting {
    config: Arc<TreasuryConfig>,
    fx: Arc<FxBook>,
    /// The router with every rail in: configuration and book never change, so it is built once
    /// (a build is milliseconds of Decimal work; a solve is microseconds).
    full: std::sync::OnceLock<Arc<Router>>,
}

impl StaticRouting {
    pub fn new(config: Arc<TreasuryConfig>, fx: Arc<FxBook>) -> StaticRouting {
        StaticRouting { config, fx, full: std::sync::OnceLock::new() }
    }
}

impl RoutingSource for StaticRouting {
    fn router(&self) -> Result<Arc<Router>, String> {
        if let Some(router) = self.full.get() {
            return Ok(router.clone());
        }
        let router = Arc::new(
            railyard_routes::build_router(&self.config, &self.fx, &LiveState::new())
                .map_err(|error| error.to_string())?,
        );
        Ok(self.full.get_or_init(|| router).clone())
    }

    fn daily_cap(&self, rail: &str, currency: Currency) -> Option<Money> {
        self.config.rail(rail)?.limits.get(&currency)?.daily_cap
    }
}

/// Told of every rail leg's outcome.
pub trait OutcomeObserver: Send + Sync {
    /// `success`: executed (true) or definitively rejected by the rail (false); unknown outcomes are
    /// not reported until resolved.
    fn leg_outcome(&self, rail: &str, success: bool, elapsed: Duration);

    /// A payout's state changed (told after the change is committed). Monitoring counts these.
    fn payout_moved(&self, _moved: &PayoutMoved<'_>) {}
}

/// Entries [`Engine::history`] returns at most.
pub const HISTORY_MAX: i64 = 200;
/// How long a cancellation waits for a payout just acknowledged to move from the intake journal
/// into the database before it answers "retry".
pub const JOURNAL_MOVE_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// One state a payout entered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    pub state: State,
    pub at: DateTime<Utc>,
    pub detail: String,
}

/// A payout's stored events, oldest first, at most [`HISTORY_MAX`]: every state it entered, when,
/// and why. A row may hold several states: a grouped step packs the states it passes into one row,
/// its last state and detail, the ones before it in `earlier` (migration 0015); they are expanded
/// here, each at the row's time plus its place in the row, as they were written.
pub async fn payout_events(store: &Store, id: &str) -> Result<Vec<HistoryEntry>, EngineError> {
    let rows =
        sqlx::query("SELECT state, at, detail, earlier FROM saga_events WHERE payout_id = $1 ORDER BY at LIMIT $2")
            .bind(id)
            .bind(HISTORY_MAX)
            .fetch_all(store.pool())
            .await?;
    let limit = usize::try_from(HISTORY_MAX).unwrap_or(usize::MAX);
    let mut entries = Vec::with_capacity(rows.len());
    for row in &rows {
        let at: i64 = row.try_get(1)?;
        let earlier: Vec<(String, String)> = match row.try_get::<Option<String>, _>(3)? {
            Some(packed) => {
                serde_json::from_str(&packed).map_err(|error| corrupt(format!("packed events: {error}")))?
            }
            None => Vec::new(),
        };
        let last = (row.try_get::<String, _>(0)?, row.try_get::<String, _>(2)?);
        for (place, (state, detail)) in (0_i64..).zip(earlier.into_iter().chain([last])) {
            let at =
                at.checked_add(place).and_then(DateTime::from_timestamp_micros).ok_or_else(|| corrupt("event time"))?;
            let state = State::parse(&state).ok_or_else(|| corrupt("unknown state"))?;
            entries.push(HistoryEntry { state, at, detail });
        }
        if entries.len() >= limit {
            break;
        }
    }
    entries.truncate(limit);
    Ok(entries)
}

/// A committed state change of one payout.
pub struct PayoutMoved<'a> {
    pub payout: &'a Payout,
    pub from: State,
    pub to: State,
    /// The route after the change, if it has one.
    pub route: Option<&'a StoredRoute>,
    pub detail: &'a str,
}

fn account_id(kind: &str, owner: &str, currency: Currency) -> String {
    if owner.is_empty() { format!("{kind}:{}", currency.code()) } else { format!("{kind}:{owner}:{}", currency.code()) }
}

pub fn psp_account(tenant: &str, currency: Currency) -> String {
    account_id("psp", tenant, currency)
}

pub fn nostro_account(rail: &str, currency: Currency) -> String {
    account_id("nostro", rail, currency)
}

pub(crate) fn clearing_account(currency: Currency) -> String {
    account_id("clearing", "", currency)
}

pub(crate) fn fx_account(provider: &str, currency: Currency) -> String {
    account_id("fx", provider, currency)
}

/// Money the house paid out on a rail for a payout that was then returned: held at the hop until
/// treasury brings it back.
pub fn returns_account(currency: Currency) -> String {
    account_id("returns", "", currency)
}

fn funding_account(currency: Currency) -> String {
    account_id("funding", "", currency)
}

/// Books money a PSP sent the house (its prefunding, once per `reference`) into its balance in
/// `store`: what [`Engine::fund_psp`] does, for a process without an engine on the database (a
/// bench preparing the store a server runs on).
pub async fn fund_psp(store: &Store, tenant: &str, amount: Money, reference: &str) -> Result<(), EngineError> {
    let mut tx = store.begin().await?;
    let spec = TransferSpec {
        id: format!("topup:{tenant}:{reference}"),
        debit: funding_account(amount.currency()),
        credit: psp_account(tenant, amount.currency()),
        amount,
        pending: false,
        payout_id: None,
        note: format!("top-up {reference}"),
    };
    ledger::transfer(&mut tx, &spec).await?;
    tx.commit().await?;
    Ok(())
}

/// The columns [`payout_from_row`] reads.
pub(crate) const PAYOUT_COLUMNS: &str = "id, tenant, idempotency_key, request, state, attempt, leg, route, reservation, reason, \
     inquiries, next_action_at, created_at, submitted_by, risk, decided_by";

/// A payout from a row of [`PAYOUT_COLUMNS`].
pub(crate) fn payout_from_row(row: &sqlx::any::AnyRow) -> Result<Payout, EngineError> {
    let route: Option<String> = row.try_get("route")?;
    let risk: Option<String> = row.try_get("risk")?;
    let mut request: PayoutRequest = serde_json::from_str(&row.try_get::<String, _>("request")?).map_err(corrupt)?;
    request.submitted_by = row.try_get("submitted_by")?;
    Ok(Payout {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        idempotency_key: row.try_get("idempotency_key")?,
        request,
        state: State::parse(&row.try_get::<String, _>("state")?).ok_or_else(|| corrupt("unknown state"))?,
        attempt: row.try_get("attempt")?,
        leg: row.try_get("leg")?,
        route: route.map(|text| serde_json::from_str(&text)).transpose().map_err(corrupt)?,
        reservation: row.try_get("reservation")?,
        reason: row.try_get("reason")?,
        inquiries: row.try_get("inquiries")?,
        next_action_at: row.try_get("next_action_at")?,
        created_at: row.try_get("created_at")?,
        risk: risk.map(|text| serde_json::from_str(&text)).transpose().map_err(corrupt)?,
        decided_by: row.try_get("decided_by")?,
    })
}

fn corrupt(error: impl std::fmt::Display) -> EngineError {
    EngineError::Corrupt(error.to_string())
}

impl Engine {
    /// `vault`: the keys beneficiary accounts are encrypted under. The sanctions list of the
    /// configuration's `[risk]` section is loaded here; see [`Engine::screening_ready`].
    pub fn new(
        store: Store,
        config: Arc<TreasuryConfig>,
        fx: Arc<FxBook>,
        registry: Registry,
        settings: EngineSettings,
        vault: Arc<VaultKeys>,
    ) -> Engine {
        let routing = Arc::new(StaticRouting::new(config.clone(), fx));
        let sanctions = match &config.risk {
            None => Ok(Arc::new(railyard_risk::SanctionsList::default())),
            Some(risk) => railyard_risk::SanctionsList::load(&risk.sanctions_list)
                .map(Arc::new)
                .map_err(|error| error.to_string()),
        };
        Engine {
            store,
            clock: Arc::new(SystemClock),
            config,
            registry,
            settings,
            routing,
            observer: None,
            vault,
            sanctions,
            pruned: std::sync::Mutex::default(),
            journal: std::sync::OnceLock::new(),
            fresh: std::sync::Mutex::default(),
        }
    }

    /// Keeps `payouts`, each as it was just committed at `accepted` (the intake's mover calls
    /// this before it kicks them), for their first pass: a group then plans them without reading
    /// them back, a read that on SQLite hands every row over from the driver's thread. A copy gone
    /// stale meanwhile does no harm: the group's claim reads each row's state, risk, route and
    /// lease under the transaction's lock and leaves out any payout no longer at the start, and
    /// nothing else a plan uses changes after the accept. A pass alone drops the copy.
    ///
    /// At [`FRESH_PAYOUTS_MAX`] every copy kept so far is forgotten first: a copy whose first pass
    /// never took it (a kick for a saga already running, an engine stopping) would otherwise stay,
    /// and enough of them would end the keeping for good. A forgotten copy costs only a read.
    pub fn remember_fresh(&self, payouts: impl IntoIterator<Item = Payout>) {
        let mut fresh = self.fresh.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for payout in payouts {
            if fresh.len() >= FRESH_PAYOUTS_MAX {
                fresh.clear();
            }
            fresh.insert(payout.id.clone(), payout);
        }
    }

    /// Takes the kept copies of `ids` (those there are).
    pub(crate) fn take_fresh(&self, ids: &[String]) -> std::collections::HashMap<String, Payout> {
        let mut fresh = self.fresh.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if fresh.is_empty() {
            return std::collections::HashMap::new();
        }
        ids.iter().filter_map(|id| fresh.remove(id).map(|payout| (id.clone(), payout))).collect()
    }

    /// Payouts kept for their first pass now ([`Engine::remember_fresh`]).
    pub fn fresh_count(&self) -> usize {
        self.fresh.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    /// Reads the time from `clock` instead of the system's (the deterministic simulation).
    pub fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    /// Whether screening can run: the configured sanctions list loaded, or why not.
    pub fn screening_ready(&self) -> Result<usize, String> {
        self.sanctions.as_ref().map(|list| list.len()).map_err(Clone::clone)
    }

    /// The configuration the engine was built with.
    pub fn config(&self) -> &Arc<TreasuryConfig> {
        &self.config
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn set_lease(&mut self, lease: Duration) {
        self.settings.lease = lease;
    }

    #[cfg(feature = "crash-hooks")]
    pub(crate) fn crash(&self, step: &'static str, phase: Phase) -> Result<(), EngineError> {
        let point = CrashPoint { step, phase };
        match &self.settings.crash {
            Some(hook) if hook(point) => Err(EngineError::Crashed(point)),
            _ => Ok(()),
        }
    }

    #[cfg(not(feature = "crash-hooks"))]
    pub(crate) fn crash(&self, _step: &'static str, _phase: Phase) -> Result<(), EngineError> {
        Ok(())
    }

    /// See [`EngineSettings::ordered_groups`].
    pub(crate) fn ordered_groups(&self) -> bool {
        #[cfg(feature = "crash-hooks")]
        return self.settings.ordered_groups;
        #[cfg(not(feature = "crash-hooks"))]
        false
    }

    /// Opens every account the configuration implies, and funds each rail's nostro account with its
    /// configured prefunded liquidity once (the funding transfer's id makes it happen at most once).
    pub async fn ensure_accounts(&self) -> Result<(), EngineError> {
        let mut currencies: Vec<Currency> = Vec::new();
        for rail in &self.config.rails {
            currencies.extend(rail.currencies.iter().copied());
        }
        for provider in &self.config.fx_providers {
            currencies.extend(provider.pairs.iter().flat_map(|pair| [pair.base, pair.quote]));
        }
        currencies.sort_by_key(|currency| currency.code());
        currencies.dedup();
        let mut tx = self.store.begin().await?;
        for currency in &currencies {
            let mut specs = vec![
                (funding_account(*currency), "funding", Normal::Debit, false),
                (clearing_account(*currency), "clearing", Normal::Credit, false),
                (returns_account(*currency), "returns", Normal::Debit, false),
            ];
            for tenant in &self.config.tenants {
                specs.push((psp_account(tenant.id.as_str(), *currency), "psp", Normal::Credit, true));
            }
            for provider in &self.config.fx_providers {
                specs.push((fx_account(provider.id.as_str(), *currency), "fx_position", Normal::Debit, false));
            }
            for (id, kind, normal, no_overdraft) in specs {
                let spec = AccountSpec { id, kind: kind.into(), currency: *currency, normal, no_overdraft };
                ledger::open_account(&mut tx, &spec).await?;
            }
        }
        for rail in &self.config.rails {
            for currency in &rail.currencies {
                let id = nostro_account(rail.id.as_str(), *currency);
                let spec = AccountSpec {
                    id: id.clone(),
                    kind: "nostro".into(),
                    currency: *currency,
                    normal: Normal::Debit,
                    no_overdraft: true,
                };
                ledger::open_account(&mut tx, &spec).await?;
                if let Some(liquidity) = self.config.liquidity_for(rail.id.as_str(), *currency)
                    && liquidity.prefunded.is_positive()
                {
                    let funding = TransferSpec {
                        id: format!("init:{id}"),
                        debit: id.clone(),
                        credit: funding_account(*currency),
                        amount: liquidity.prefunded,
                        pending: false,
                        payout_id: None,
                        note: "opening prefunded liquidity".into(),
                    };
                    match ledger::transfer(&mut tx, &funding).await {
                        Ok(_) | Err(LedgerError::Duplicate(_)) => {}
                        Err(error) => return Err(error.into()),
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Moves liquidity between the house's bank and a rail's prefunded account, once per
    /// `reference`: a top-up (`withdraw` false) or a sweep back to the bank (`withdraw` true,
    /// refused with [`LedgerError::Overdraft`] beyond what is available).
    /// `by` is recorded in the audit log in the same transaction.
    pub async fn move_rail_liquidity(
        &self,
        rail: &str,
        amount: Money,
        withdraw: bool,
        reference: &str,
        by: &str,
    ) -> Result<(), EngineError> {
        let currency = amount.currency();
        let nostro = nostro_account(rail, currency);
        let (debit, credit, kind) = if withdraw {
            (funding_account(currency), nostro, "sweep")
        } else {
            (nostro, funding_account(currency), "top-up")
        };
        let mut tx = self.store.begin().await?;
        let spec = TransferSpec {
            id: format!("liquidity:{rail}:{reference}"),
            debit,
            credit,
            amount,
            pending: false,
            payout_id: None,
            note: format!("{kind} {reference}"),
        };
        ledger::transfer(&mut tx, &spec).await?;
        railyard_store::audit::append(
            &mut tx,
            by,
            if withdraw { "liquidity.sweep" } else { "liquidity.top_up" },
            &format!("{rail}: {amount} (reference {reference})"),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The net of every liquidity move [`Engine::move_rail_liquidity`] booked, per configured rail
    /// and currency: (rail, amount, `withdraw`), one entry for each that moved at all. A sandbox
    /// network that runs in this process starts from the configuration; moving this on it at start
    /// gives it the funds the treasury moved before the restart, as a real network's books would
    /// still hold them. (A net sweep is never more than the configured prefunding: the ledger
    /// refused every sweep beyond what was available.) One row per account pair, whatever the
    /// history; the moves are found by their id's range, which both databases read from the key.
    pub async fn liquidity_moves(&self) -> Result<Vec<(String, Money, bool)>, EngineError> {
        let mut nostros: BTreeMap<String, &str> = BTreeMap::new();
        for rail in &self.config.rails {
            for currency in &rail.currencies {
                nostros.insert(nostro_account(rail.id.as_str(), *currency), rail.id.as_str());
            }
        }
        // `;` follows `:`: every id `liquidity:...` and nothing else.
        let rows = sqlx::query(
            "SELECT debit_account, credit_account, currency, CAST(SUM(amount) AS BIGINT) FROM transfers \
             WHERE id >= 'liquidity:' AND id < 'liquidity;' AND kind = 'posted' \
             GROUP BY debit_account, credit_account, currency",
        )
        .fetch_all(self.store.pool())
        .await?;
        // Minor units in per (rail, currency): top-ups debit the rail's nostro, sweeps credit it.
        let mut net: BTreeMap<(&str, Currency), i64> = BTreeMap::new();
        for row in rows {
            let debit: String = row.try_get(0)?;
            let credit: String = row.try_get(1)?;
            let code: String = row.try_get(2)?;
            let currency =
                Currency::from_code(&code).map_err(|error| corrupt(format!("liquidity move in {code}: {error}")))?;
            let total: i64 = row.try_get(3)?;
            let (rail, signed) = match (nostros.get(&debit), nostros.get(&credit)) {
                (Some(rail), _) => (*rail, total),
                (None, Some(rail)) => (*rail, total.checked_neg().ok_or_else(|| corrupt("liquidity total overflows"))?),
                (None, None) => continue,
            };
            let entry = net.entry((rail, currency)).or_default();
            *entry = entry.checked_add(signed).ok_or_else(|| corrupt("liquidity total overflows"))?;
        }
        Ok(net
            .into_iter()
            .filter(|(_, minor)| *minor != 0)
            .map(|((rail, currency), minor)| {
                (rail.to_string(), Money::from_minor(minor.saturating_abs(), currency), minor < 0)
            })
            .collect())
    }

    /// Credits a PSP's balance (a top-up received outside Railyard), once per `reference`.
    pub async fn fund_psp(&self, tenant: &str, amount: Money, reference: &str) -> Result<(), EngineError> {
        fund_psp(&self.store, tenant, amount, reference).await
    }

    /// Accepts a payout: the intent and the idempotency key are committed together before this
    /// returns, so an acknowledged payout survives any crash.
    pub async fn accept(&self, tenant: &str, key: &str, request: &PayoutRequest) -> Result<Accepted, EngineError> {
        self.validate(tenant, request)?;
        let mut tx = self.store.begin_urgent().await?;
        let accepted = self.accept_in(&mut tx, tenant, key, request).await?;
        self.crash("accept", Phase::BeforeCommit)?;
        tx.commit().await?;
        self.store.sync().await?;
        tracing::info!(payout_id = %accepted.payout_id, tenant, replay = accepted.replay, "accepted");
        self.crash("accept", Phase::AfterCommit)?;
        Ok(accepted)
    }

    /// Accepts many payouts in one transaction (group commit): one disk flush for the batch. Each
    /// gets its own answer; a request that is invalid or conflicts does not stop the others.
    pub async fn accept_batch(
        &self,
        batch: &[(String, String, PayoutRequest)],
    ) -> Result<Vec<Result<Accepted, EngineError>>, EngineError> {
        // What needs no database is worked out first: the one writer waits on nothing but SQL.
        let mut answers: Vec<Option<Result<Accepted, EngineError>>> = (0..batch.len()).map(|_| None).collect();
        let mut prepared: Vec<Option<Prepared>> = Vec::with_capacity(batch.len());
        for (index, (tenant, _, request)) in batch.iter().enumerate() {
            prepared.push(match self.prepare(tenant, request) {
                Ok(prepared) => Some(prepared),
                Err(error) => {
                    answers[index] = Some(Err(error));
                    None
                }
            });
        }
        // Through the steps' connection (ahead of queued saga steps: PSPs are waiting for these
        // answers), then flushed with everything before it: one writer.
        let mut tx = self.store.begin_urgent().await?;
        // Requests without a quote are written together, a run at a time; one with a quote reads
        // its quote and goes alone, after the run before it, so the batch keeps its order.
        let mut run: Vec<Run<'_>> = Vec::with_capacity(batch.len());
        for (index, prepared) in prepared.iter().enumerate() {
            // Refused already (answered above).
            let Some(prepared) = prepared else { continue };
            if let Some(plain) = prepared {
                let (tenant, key, _) = &batch[index];
                run.push(Run { index, tenant, key, plain, accepted_at: None });
                continue;
            }
            self.accept_run(&mut tx, &run, &mut answers).await?;
            run.clear();
            let (tenant, key, request) = &batch[index];
            // `accept_in` claims the key and seals the account before it reads the quote: a
            // request it refuses (the quote expired, is another tenant's, or does not match) must
            // leave nothing behind, as it does alone, where the refusal rolls back the whole
            // transaction. Otherwise its key would stay claimed for a payout that does not exist,
            // and the PSP's retry would be answered with that payout's id.
            sqlx::query("SAVEPOINT quoted").execute(&mut *tx).await?;
            let answer = self.accept_in(&mut tx, tenant, key, request).await;
            let answer = match answer {
                // The transaction is unusable after a database error: nothing of the batch is kept.
                Err(EngineError::Database(error)) => return Err(EngineError::Database(error)),
                Err(refused) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT quoted").execute(&mut *tx).await?;
                    sqlx::query("RELEASE SAVEPOINT quoted").execute(&mut *tx).await?;
                    Err(refused)
                }
                Ok(accepted) => {
                    sqlx::query("RELEASE SAVEPOINT quoted").execute(&mut *tx).await?;
                    Ok(accepted)
                }
            };
            answers[index] = Some(answer);
        }
        self.accept_run(&mut tx, &run, &mut answers).await?;
        self.crash("accept_batch", Phase::BeforeCommit)?;
        tx.commit().await?;
        self.store.sync().await?;
        // Committed and flushed, and no PSP told: each will send its request again.
        self.crash("accept_batch", Phase::AfterCommit)?;
        let answers: Vec<Result<Accepted, EngineError>> = answers
            .into_iter()
            .map(|answer| answer.unwrap_or_else(|| Err(corrupt("a request of the batch was not answered"))))
            .collect();
        for accepted in answers.iter().flatten() {
            tracing::info!(payout_id = %accepted.payout_id, replay = accepted.replay, "accepted");
        }
        Ok(answers)
    }

    /// A request of a batch checked and made ready to write: `None` for one from a quote (which
    /// reads its quote inside the transaction, [`Engine::accept_in`]).
    pub(crate) fn prepare(&self, tenant: &str, request: &PayoutRequest) -> Result<Prepared, EngineError> {
        self.validate(tenant, request)?;
        if request.quote_id.is_some() {
            return Ok(None);
        }
        let sealed = self
            .vault
            .seal_account(tenant, &request.beneficiary.account)
            .map_err(|error| EngineError::Invalid(format!("beneficiary.account: {error}")))?;
        let mut stored = request.clone();
        stored.beneficiary.account = sealed.token.clone();
        stored.account_masked = Some(sealed.masked.clone());
        // The request as stored, and its fingerprint (serialised once for both).
        let json = serde_json::to_string(&stored).map_err(corrupt)?;
        let hash = fingerprint_of(&json);
        Ok(Some(Plain {
            payout_id: format!("pay_{}", uuid::Uuid::now_v7().simple()),
            json,
            hash,
            sealed,
            submitted_by: stored.submitted_by,
        }))
    }

    /// Accepts the requests `run` of `batch` (valid, none from a quote, prepared) in a few
    /// multi-row statements, with the answers [`Engine::accept_in`] would give them one after
    /// another. An error is the database's: the transaction is then unusable.
    async fn accept_run(
        &self,
        tx: &mut StepTransaction,
        run: &[Run<'_>],
        answers: &mut [Option<Result<Accepted, EngineError>>],
    ) -> Result<(), EngineError> {
        if run.is_empty() {
            return Ok(());
        }
        let claims: Vec<idempotency::ClaimRequest<'_>> = run
            .iter()
            .map(|item| idempotency::ClaimRequest {
                tenant: item.tenant,
                key: item.key,
                request_hash: &item.plain.hash,
                resource_id: &item.plain.payout_id,
            })
            .collect();
        let claims = idempotency::claim_many(tx, &claims).await?;
        let mut fresh = Vec::with_capacity(run.len());
        for (item, claim) in run.iter().zip(claims) {
            answers[item.index] = Some(match claim {
                Claim::New => {
                    fresh.push(item);
                    continue;
                }
                Claim::Replay(record) | Claim::InProgress(record) => {
                    Ok(Accepted { payout_id: record.resource_id, replay: true })
                }
                Claim::Conflict(record) => Err(EngineError::Conflict(record.resource_id)),
            });
        }
        let accounts: Vec<(&railyard_store::vault::Sealed, &str)> =
            fresh.iter().map(|item| (&item.plain.sealed, item.plain.payout_id.as_str())).collect();
        railyard_store::vault::insert_sealed(tx, &accounts).await.map_err(|error| match error {
            railyard_store::vault::VaultError::Database(error) => EngineError::Database(error),
            other => corrupt(format!("beneficiary.account passed validation but: {other}")),
        })?;
        let now = self.clock.now_micros();
        let rows: Vec<PayoutRow<'_>> = fresh
            .iter()
            .map(|item| {
                (
                    item.plain.payout_id.as_str(),
                    item.tenant,
                    item.key,
                    item.plain.json.as_str(),
                    item.plain.submitted_by.as_deref(),
                    item.accepted_at.unwrap_or(now),
                )
            })
            .collect();
        bulk::execute(
            tx,
            "INSERT INTO payouts (id, tenant, idempotency_key, request, state, route, next_action_at, created_at, updated_at, submitted_by) \
             SELECT v.column1, v.column2, v.column3, v.column4, 'accepted', NULL, v.column6, v.column6, $2, v.column5 FROM ({rows}) AS v",
            &["TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "BIGINT"],
            &rows,
            &[now.into()],
        )
        .await?;
        let events: Vec<group::EventRow> =
            fresh.iter().map(|item| (item.plain.payout_id.clone(), State::Accepted, "accepted".to_string())).collect();
        group::insert_events(tx, &events, now_micros()).await?;
        for item in fresh {
            answers[item.index] = Some(Ok(Accepted { payout_id: item.plain.payout_id.clone(), replay: false }));
        }
        Ok(())
    }

    fn validate(&self, tenant: &str, request: &PayoutRequest) -> Result<(), EngineError> {
        if self.config.tenants.iter().all(|known| known.id.as_str() != tenant) {
            return Err(EngineError::Invalid(format!("tenant {tenant:?} is not configured")));
        }
        // Before any key is claimed: a request refused later would leave its key pointing nowhere.
        if request.beneficiary.account.len() > railyard_store::vault::ACCOUNT_BYTES_MAX {
            return Err(EngineError::Invalid(format!(
                "beneficiary.account: {}",
                railyard_store::vault::VaultError::TooLong
            )));
        }
        let expected = match request.mode {
            AmountMode::Send => request.source,
            AmountMode::Deliver => request.destination,
        };
        if request.amount.currency() != expected || !request.amount.is_positive() {
            return Err(EngineError::Invalid(format!(
                "amount must be a positive {expected} amount in {} mode",
                if request.mode == AmountMode::Send { "send" } else { "deliver" }
            )));
        }
        Ok(())
    }

    async fn accept_in(
        &self,
        tx: &mut StepTransaction,
        tenant: &str,
        key: &str,
        request: &PayoutRequest,
    ) -> Result<Accepted, EngineError> {
        let payout_id = format!("pay_{}", uuid::Uuid::now_v7().simple());
        // The account goes into the vault; the payout keeps its token (deterministic, so a retry
        // fingerprints the same).
        let account = request.beneficiary.account.clone();
        let mut request = request.clone();
        request.beneficiary.account = self.vault.token(tenant, &account);
        request.account_masked = Some(railyard_store::vault::mask(&account));
        let request = &request;
        match idempotency::claim(tx, tenant, key, &request.fingerprint(), &payout_id).await? {
            Claim::New => {}
            Claim::Replay(record) | Claim::InProgress(record) => {
                return Ok(Accepted { payout_id: record.resource_id, replay: true });
            }
            Claim::Conflict(record) => return Err(EngineError::Conflict(record.resource_id)),
        }
        railyard_store::vault::tokenise(tx, &self.vault, tenant, &account, &payout_id).await.map_err(|error| {
            match error {
                railyard_store::vault::VaultError::Database(error) => EngineError::Database(error),
                other => EngineError::Invalid(format!("beneficiary.account: {other}")),
            }
        })?;
        let now = self.clock.now_micros();
        // A payout against a quote starts routed, on the quote's route and locked rates.
        let quoted = match &request.quote_id {
            None => None,
            Some(quote_id) => Some(self.quoted_route(tx, tenant, quote_id, request).await?),
        };
        let (state, route) = match &quoted {
            Some(route) => (State::Routed, Some(serde_json::to_string(route).map_err(corrupt)?)),
            None => (State::Accepted, None),
        };
        sqlx::query(
            "INSERT INTO payouts (id, tenant, idempotency_key, request, state, route, next_action_at, created_at, updated_at, submitted_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7, $8)",
        )
        .bind(&payout_id)
        .bind(tenant)
        .bind(key)
        .bind(serde_json::to_string(request).map_err(corrupt)?)
        .bind(state.as_str())
        .bind(route)
        .bind(now)
        .bind(request.submitted_by.as_deref())
        .execute(&mut **tx)
        .await?;
        event(tx, &payout_id, State::Accepted, "accepted").await?;
        if let Some(quote_id) = &request.quote_id {
            event(tx, &payout_id, State::Routed, &format!("route from quote {quote_id}")).await?;
        }
        Ok(Accepted { payout_id, replay: false })
    }

    /// The route of a quote the tenant may still pay against, checked against the request.
    async fn quoted_route(
        &self,
        tx: &mut StepTransaction,
        tenant: &str,
        quote_id: &str,
        request: &PayoutRequest,
    ) -> Result<StoredRoute, EngineError> {
        let row = sqlx::query("SELECT tenant, route, expires_at FROM quotes WHERE id = $1")
            .bind(quote_id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| EngineError::Invalid(format!("quote {quote_id} does not exist")))?;
        let owner: String = row.try_get(0)?;
        if owner != tenant {
            return Err(EngineError::Invalid(format!("quote {quote_id} does not exist")));
        }
        let expires_at: i64 = row.try_get(2)?;
        if expires_at <= self.clock.now_micros() {
            return Err(EngineError::Invalid(format!("quote {quote_id} has expired; ask for a new one")));
        }
        let route: StoredRoute = serde_json::from_str(&row.try_get::<String, _>(1)?).map_err(corrupt)?;
        let matches = route.send.currency() == request.source
            && route.receive.currency() == request.destination
            && match request.mode {
                AmountMode::Send => route.send == request.amount,
                AmountMode::Deliver => route.receive == request.amount,
            };
        if !matches {
            return Err(EngineError::Invalid(format!("the payout does not match quote {quote_id}")));
        }
        Ok(route)
    }

    /// Prices a payout and keeps the quote: a payout with its `quote_id` follows this route at
    /// these rates until `expires_at`.
    /// `country`: the beneficiary's country when known (routing then honours rail coverage).
    pub async fn quote(
        &self,
        tenant: &str,
        request: &PayoutRequest,
        country: Option<railyard_core::Country>,
    ) -> Result<StoredQuote, EngineError> {
        self.validate(tenant, request)?;
        let mut route = self
            .find_route_in(request, &[], country)
            .map_err(|reason| EngineError::Invalid(format!("no route: {reason}")))?;
        let ttl = self.config.fx_providers.iter().map(|provider| provider.quote_ttl_seconds).min().unwrap_or(30);
        let expires_at = self.clock.now() + chrono::Duration::seconds(i64::from(ttl.max(1)));
        route.quotes_expire_at = Some(expires_at);
        let id = format!("quo_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(
            "INSERT INTO quotes (id, tenant, request, route, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(tenant)
        .bind(serde_json::to_string(request).map_err(corrupt)?)
        .bind(serde_json::to_string(&route).map_err(corrupt)?)
        .bind(expires_at.timestamp_micros())
        .bind(self.clock.now_micros())
        .execute(self.store.pool())
        .await?;
        Ok(StoredQuote { id, route, expires_at })
    }

    /// A tenant's payouts after `cursor` (a payout id; ids sort by creation time), oldest first,
    /// optionally only in `state` and created after `created_after` (microseconds since the epoch).
    pub async fn list(
        &self,
        tenant: &str,
        state: Option<State>,
        created_after: Option<i64>,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Payout>, EngineError> {
        // Payouts acknowledged from the intake journal and not moved yet are `accepted` here too,
        // in their place by id. The journal is read first: one forgotten since was moved before,
        // so the database's read below finds it.
        let waiting = match self.journal.get() {
            Some(journal) if state.is_none_or(|state| state == State::Accepted) => {
                journal.of_tenant(tenant, cursor.unwrap_or(""), created_after.unwrap_or(i64::MIN), limit).await?
            }
            _ => Vec::new(),
        };
        let rows = sqlx::query(
            "SELECT id FROM payouts WHERE tenant = $1 AND ($2 = '' OR state = $2) AND created_at > $3 AND id > $4 \
             ORDER BY id LIMIT $5",
        )
        .bind(tenant)
        .bind(state.map(State::as_str).unwrap_or(""))
        .bind(created_after.unwrap_or(i64::MIN))
        .bind(cursor.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.store.pool())
        .await?;
        let mut payouts = Vec::with_capacity(rows.len());
        for row in rows {
            payouts.push(self.payout(&row.try_get::<String, _>(0)?).await?);
        }
        if !waiting.is_empty() {
            let listed: std::collections::HashSet<String> = payouts.iter().map(|payout| payout.id.clone()).collect();
            for intent in waiting {
                if listed.contains(&intent.payout_id) {
                    continue;
                }
                // Moved since the read above (or before, and not forgotten): the database's row is
                // the payout, listed if it passes the same filter.
                let moved =
                    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {PAYOUT_COLUMNS} FROM payouts WHERE id = $1")))
                        .bind(&intent.payout_id)
                        .fetch_optional(self.store.pool())
                        .await?;
                match moved {
                    Some(row) => {
                        let payout = payout_from_row(&row)?;
                        if state.is_none_or(|state| state == payout.state) {
                            payouts.push(payout);
                        }
                    }
                    None => payouts.push(intake::intent_payout(intent)?),
                }
            }
            payouts.sort_by(|left, right| left.id.cmp(&right.id));
            payouts.truncate(usize::try_from(limit).unwrap_or(0));
        }
        Ok(payouts)
    }

    /// Cancels a payout for `tenant` if no rail leg has been sent yet: its reservation is voided
    /// and it ends `cancelled`. Once a leg is with a rail the answer is [`EngineError::TooLate`].
    pub async fn cancel(&self, tenant: &str, id: &str) -> Result<Payout, EngineError> {
        let payout = self.payout(id).await?;
        if payout.tenant == tenant {
            // Its lease and reservation live in the database.
            self.moved_from_journal(id).await?;
        }
        if payout.tenant != tenant {
            return Err(EngineError::NotFound(id.into()));
        }
        let cancellable = |state: State| {
            matches!(
                state,
                State::Accepted
                    | State::Routed
                    | State::Reserved
                    | State::Quoted
                    | State::Screening
                    | State::AwaitingApproval
            )
        };
        if !cancellable(payout.state)
            || payout.route.as_ref().is_some_and(|route| route.legs.iter().any(|leg| leg.execution.is_some()))
        {
            return Err(EngineError::TooLate(format!("payout {id} is {}", payout.state.as_str())));
        }
        if !self.claim(id).await? {
            return Err(EngineError::Leased(id.into()));
        }
        // Read again under the lease: the saga may have moved since.
        let payout = self.payout(id).await?;
        let result = if cancellable(payout.state) {
            let mut tx = self.store.begin_urgent().await?;
            if let Some(reservation) = &payout.reservation {
                match ledger::void_pending(&mut tx, &format!("{reservation}:void"), reservation).await {
                    Ok(_) | Err(LedgerError::AlreadyResolved(_)) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            outbox(&mut tx, &payout, "payout.cancelled", "cancelled by the PSP").await?;
            let changes = Changes { reason: Some("cancelled by the PSP".into()), ..Changes::default() };
            self.commit(tx, &payout, payout.state, State::Cancelled, changes, "cancelled by the PSP").await
        } else {
            Err(EngineError::TooLate(format!("payout {id} is {}", payout.state.as_str())))
        };
        self.release(id).await?;
        result?;
        // The cancellation is durable before the PSP is answered.
        self.store.sync().await?;
        self.payout(id).await
    }

    pub async fn payout(&self, id: &str) -> Result<Payout, EngineError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {PAYOUT_COLUMNS} FROM payouts WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.store.pool())
            .await?;
        match row {
            Some(row) => payout_from_row(&row),
            None => self.journal_payout(id).await?.ok_or_else(|| EngineError::NotFound(id.into())),
        }
    }

    /// A payout acknowledged and still in the intake journal: `accepted`, as the database will
    /// hold it once moved.
    async fn journal_payout(&self, id: &str) -> Result<Option<Payout>, EngineError> {
        let Some(journal) = self.journal.get() else { return Ok(None) };
        let Some(intent) = journal.by_payout(id).await? else { return Ok(None) };
        Ok(Some(intake::intent_payout(intent)?))
    }

    /// Waits until `id`, acknowledged from the intake journal, is in the database (the intake
    /// moves it within milliseconds), at most [`JOURNAL_MOVE_WAIT_MAX`].
    async fn moved_from_journal(&self, id: &str) -> Result<(), EngineError> {
        let Some(journal) = self.journal.get() else { return Ok(()) };
        let deadline = tokio::time::Instant::now() + JOURNAL_MOVE_WAIT_MAX;
        loop {
            let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM payouts WHERE id = $1")
                .bind(id)
                .fetch_optional(self.store.pool())
                .await?;
            if found.is_some() || journal.by_payout(id).await?.is_none() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::Unavailable(format!("payout {id} is still being accepted; retry shortly")));
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// The payout's history: every state it entered, when, and why, oldest first (at most
    /// [`HISTORY_MAX`] entries: a saga has a bounded number of steps, but inquiries add some).
    /// A payout acknowledged but not yet moved from the intake journal has one entry, `accepted`.
    pub async fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, EngineError> {
        let entries = payout_events(&self.store, id).await?;
        if entries.is_empty()
            && let Some(payout) = self.journal_payout(id).await?
        {
            let at = DateTime::from_timestamp_micros(payout.created_at).ok_or_else(|| corrupt("event time"))?;
            return Ok(vec![HistoryEntry { state: State::Accepted, at, detail: "accepted".into() }]);
        }
        Ok(entries)
    }

    pub(crate) fn lease_until(&self) -> i64 {
        self.clock.now_micros() + i64::try_from(self.settings.lease.as_micros()).unwrap_or(i64::MAX / 2)
    }

    /// Takes the saga's lease if it is free, expired, already ours, or held by an engine whose
    /// liveness has lapsed (see [`Engine::heartbeat`]).
    async fn claim(&self, id: &str) -> Result<bool, EngineError> {
        let now = self.clock.now_micros();
        let result = sqlx::query(concat!(
            "UPDATE payouts SET lease_owner = $1, lease_until = $2 WHERE id = $3 \
             AND state NOT IN ('completed', 'failed', 'cancelled', 'returned') \
             AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $4",
            lease_holder_gone!("$4"),
            ")"
        ))
        .bind(&self.settings.owner)
        .bind(self.lease_until())
        .bind(id)
        .bind(now)
        .execute(&mut *self.store.step_connection().await?)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Announces this engine alive until [`ENGINE_ALIVE_FOR`] from now (the saga driver calls it
    /// every [`ENGINE_HEARTBEAT_EVERY`]). Once announced, the engine's leases are only as good as
    /// its announcements: when they lapse (kill -9, a hung process) any other engine takes its
    /// sagas at once instead of waiting out each lease. A false alarm (an engine alive but too slow
    /// to announce) is safe: its next step's commit finds the lease gone and keeps nothing, and a
    /// rail call both engines made carries the same idempotency key. Also forgets engines gone
    /// for a day that hold no lease.
    pub async fn heartbeat(&self) -> Result<(), EngineError> {
        let now = self.clock.now_micros();
        let until = now + i64::try_from(ENGINE_ALIVE_FOR.as_micros()).unwrap_or(i64::MAX / 4);
        let mut tx = self.store.begin_urgent().await?;
        sqlx::query(
            "INSERT INTO engines (owner, started_at, alive_until) VALUES ($1, $2, $3) \
             ON CONFLICT (owner) DO UPDATE SET alive_until = excluded.alive_until",
        )
        .bind(&self.settings.owner)
        .bind(now)
        .bind(until)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM engines WHERE alive_until < $1 \
             AND NOT EXISTS (SELECT 1 FROM payouts p WHERE p.lease_owner = engines.owner)",
        )
        .bind(now - 86_400_000_000)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Withdraws this engine's announcement (a clean stop): whatever leases it still holds are
    /// free at once.
    pub async fn retire(&self) -> Result<(), EngineError> {
        sqlx::query("UPDATE engines SET alive_until = 0 WHERE owner = $1")
            .bind(&self.settings.owner)
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    /// Releases the saga's lease (it stays where it is; another engine may take it at once).
    async fn release(&self, id: &str) -> Result<(), EngineError> {
        sqlx::query("UPDATE payouts SET lease_owner = NULL, lease_until = 0 WHERE id = $1 AND lease_owner = $2")
            .bind(id)
            .bind(&self.settings.owner)
            .execute(&mut *self.store.step_connection().await?)
            .await?;
        Ok(())
    }

    /// Runs every saga that is due (non-terminal and past its next action time) and not leased by a
    /// live engine. Returns how many were run.
    pub async fn resume_due(&self) -> Result<usize, EngineError> {
        let ids = self.due_ids(RESUME_BATCH_MAX).await?;
        // Sagas run concurrently (a slow rail must not hold up the others), at most
        // SAGAS_CONCURRENT_MAX at a time.
        let crashed: std::sync::Mutex<Option<EngineError>> = std::sync::Mutex::new(None);
        let count = std::sync::atomic::AtomicUsize::new(0);
        futures_util::stream::iter(ids)
            .for_each_concurrent(SAGAS_CONCURRENT_MAX, |id| {
                let crashed = &crashed;
                let count = &count;
                async move {
                    if crashed.lock().map(|slot| slot.is_some()).unwrap_or(true) {
                        return;
                    }
                    match self.run(&id).await {
                        Ok(_) | Err(EngineError::Leased(_)) => {
                            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        // A crash hook stops the whole engine, as a crash would.
                        Err(error @ EngineError::Crashed(_)) => {
                            if let Ok(mut slot) = crashed.lock() {
                                *slot = Some(error);
                            }
                        }
                        // One saga's trouble must not starve the others: log it, retry it next pass.
                        Err(error) => tracing::error!(payout_id = %id, "saga pass failed: {error}"),
                    }
                }
            })
            .await;
        if let Some(error) = crashed.into_inner().ok().flatten() {
            return Err(error);
        }
        Ok(count.into_inner())
    }

    /// Up to `limit` sagas that are due (non-terminal, past their next action time) and not leased
    /// by a live engine: first those a dead engine (or a lapsed lease) left mid-flight, which may
    /// hold reservations or wait on a rail; then the longest waiting. Without the first query a
    /// restarted server would reach the sagas it took over only after the whole backlog.
    pub async fn due_ids(&self, limit: i64) -> Result<Vec<String>, EngineError> {
        let now = self.clock.now_micros();
        let mut ids = self.taken_over_ids(limit).await?;
        let rest = limit - i64::try_from(ids.len()).unwrap_or(limit);
        if rest <= 0 {
            return Ok(ids);
        }
        // One row, the ids joined: the driver scans every few milliseconds and most of what it
        // finds is already running here; a row each would cost a hand-off each from SQLite's
        // worker thread (payout ids never hold a space).
        let row = sqlx::query(concat!(
            "SELECT string_agg(id, ' ' ORDER BY next_action_at) FROM (SELECT id, next_action_at FROM payouts \
             WHERE state NOT IN ('completed', 'failed', 'cancelled', 'returned') AND next_action_at <= $1 \
             AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until < $1",
            lease_holder_gone!("$1"),
            ") ORDER BY next_action_at LIMIT $3) AS due"
        ))
        .bind(now)
        .bind(&self.settings.owner)
        .bind(limit)
        .fetch_one(self.store.pool())
        .await?;
        let joined: Option<String> = row.try_get(0)?;
        for id in joined.as_deref().unwrap_or_default().split(' ').filter(|id| !id.is_empty()) {
            if ids.len() as i64 >= limit {
                break;
            }
            if !ids.iter().any(|taken| taken == id) {
                ids.push(id.to_string());
            }
        }
        Ok(ids)
    }

    /// Up to `limit` due sagas another engine left mid-flight: its lease lapsed, or it announced
    /// itself alive and the announcement lapsed (kill -9). Cheap: only held sagas are read
    /// (index `payouts_leased`).
    pub async fn taken_over_ids(&self, limit: i64) -> Result<Vec<String>, EngineError> {
        let rows = sqlx::query(concat!(
            "SELECT id FROM payouts WHERE lease_owner IS NOT NULL AND lease_owner <> $2 \
             AND state NOT IN ('completed', 'failed', 'cancelled', 'returned') AND next_action_at <= $1 \
             AND (lease_until < $1",
            lease_holder_gone!("$1"),
            ") LIMIT $3"
        ))
        .bind(self.clock.now_micros())
        .bind(&self.settings.owner)
        .bind(limit)
        .fetch_all(self.store.pool())
        .await?;
        Ok(rows.iter().map(|row| row.try_get::<String, _>(0)).collect::<Result<_, _>>()?)
    }

    /// Drives one saga as far as it can go now: to a terminal state, or to `in_doubt` waiting for
    /// its next inquiry. Returns the state it stopped in.
    pub async fn run(&self, id: &str) -> Result<State, EngineError> {
        use tracing::Instrument;
        // Alone, the pass reads the payout under its claim: a copy kept for a group goes.
        self.fresh.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(id);
        let span = tracing::info_span!("payout", payout_id = %id, engine = %self.settings.owner);
        self.run_claimed(id).instrument(span).await
    }

    /// Resolves an `in_doubt` leg from evidence found outside the rail's answers (a settlement
    /// file, a statement, a block log): executed → the leg is posted and the saga carries on;
    /// not executed → the leg's liquidity is voided and the saga re-routes or fails, as after a
    /// definitive reject. The evidence is kept in the saga's history. Only the leg the saga is in
    /// doubt about, and only while its liquidity is still pending, is touched.
    ///
    /// With `drive_on` the saga carries on at once (this engine's connectors send its next legs);
    /// without, it is left due for whichever engine runs the rails (`railyard reconcile` run beside
    /// `railyard serve`).
    pub async fn resolve_in_doubt(
        &self,
        id: &str,
        leg_key: &str,
        evidence: &Evidence,
        drive_on: bool,
    ) -> Result<Resolution, EngineError> {
        use tracing::Instrument;
        let span = tracing::info_span!("payout", payout_id = %id, engine = %self.settings.owner);
        async {
            if !self.claim(id).await? {
                let payout = self.payout(id).await?;
                if payout.state.terminal() {
                    return Ok(Resolution::NotInDoubt { state: payout.state });
                }
                return Err(EngineError::Leased(id.into()));
            }
            let result = self.resolve_claimed(id, leg_key, evidence).await;
            let result = match result {
                // Carry the saga on at once (post the payout, or re-route).
                Ok(Resolution::Resolved { .. }) if drive_on => match self.drive(id).await {
                    Ok(state) => Ok(Resolution::Resolved { state }),
                    Err(error) => Err(error),
                },
                other => other,
            };
            if !matches!(result, Err(EngineError::Crashed(_))) {
                self.release(id).await?;
                self.store.sync().await?;
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn resolve_claimed(&self, id: &str, leg_key: &str, evidence: &Evidence) -> Result<Resolution, EngineError> {
        let payout = self.payout(id).await?;
        if payout.state != State::InDoubt {
            return Ok(Resolution::NotInDoubt { state: payout.state });
        }
        let route = payout.route.clone().ok_or_else(|| corrupt("in doubt without a route"))?;
        let index = usize::try_from(payout.leg).map_err(corrupt)?;
        let current = self.leg_key(&payout, index);
        if current != leg_key || index >= route.legs.len() {
            return Ok(Resolution::OtherLeg { current });
        }
        // A leg held for a return was definitively rejected: its liquidity is no longer pending
        // and no evidence about it changes that.
        let pending: Option<i64> = sqlx::query_scalar(
            "SELECT COUNT(*) FROM transfers t WHERE t.id = $1 AND t.kind = 'pending'              AND NOT EXISTS (SELECT 1 FROM transfers r WHERE r.pending_id = t.id)",
        )
        .bind(&current)
        .fetch_optional(self.store.pool())
        .await?;
        if pending.unwrap_or(0) != 1 {
            return Ok(Resolution::NotPending);
        }
        let leg = &route.legs[index];
        let (outcome, provenance) = match evidence {
            Evidence::Executed { reference, delivered, executed_at, source } => {
                let execution = Execution {
                    reference: reference.clone(),
                    send: leg.send,
                    fee: leg.fee,
                    receive: delivered.unwrap_or(leg.receive),
                    rate: leg.rate,
                    executed_at: *executed_at,
                };
                (LegOutcome::Executed(execution), format!(" (by reconciliation: {source})"))
            }
            Evidence::NotExecuted { source, detail } => {
                let rejection = Rejection::by_rail(
                    railyard_connector::ReasonCode::Timeout,
                    "",
                    format!("not executed, by reconciliation: {detail}"),
                );
                (LegOutcome::Rejected(rejection), format!(" ({source})"))
            }
        };
        self.apply_outcome_from(&payout, &route, index, outcome, &provenance).await?;
        Ok(Resolution::Resolved { state: self.payout(id).await?.state })
    }

    async fn run_claimed(&self, id: &str) -> Result<State, EngineError> {
        if !self.claim(id).await? {
            let payout = self.payout(id).await?;
            if payout.state.terminal() {
                return Ok(payout.state);
            }
            return Err(EngineError::Leased(id.into()));
        }
        let result = self.drive(id).await;
        if !matches!(result, Err(EngineError::Crashed(_))) {
            self.release(id).await?;
            // The pass is over: what it did is durable before anyone is told.
            self.store.sync().await?;
        }
        result
    }

    async fn drive(&self, id: &str) -> Result<State, EngineError> {
        // Each pass moves one step; a saga has a bounded number of steps per route attempt.
        let steps_max =
            16 * (self.settings.route_attempts_max as usize + 1) + 4 * self.settings.inquiries_max as usize + 16;
        for _ in 0..steps_max {
            let payout = self.payout(id).await?;
            if let Some(resting) = self.step(payout).await? {
                return Ok(resting);
            }
        }
        Ok(self.payout(id).await?.state)
    }

    /// Moves `payout` one step, or returns the state it rests in.
    async fn step(&self, payout: Payout) -> Result<Option<State>, EngineError> {
        match payout.state {
            State::Completed | State::Failed | State::Cancelled | State::Returned => return Ok(Some(payout.state)),
            State::InDoubt if payout.next_action_at > self.clock.now_micros() => return Ok(Some(State::InDoubt)),
            // Held for a person: nothing to do until the hold expires.
            State::Screening | State::AwaitingApproval if payout.next_action_at > self.clock.now_micros() => {
                return Ok(Some(payout.state));
            }
            State::Screening | State::AwaitingApproval => self.expire_hold(&payout).await?,
            // Screening and scoring come before any money is reserved.
            State::Accepted | State::Routed if payout.risk.is_none() => self.assess(&payout).await?,
            State::Accepted => self.route(&payout).await?,
            State::Routed => self.reserve(&payout).await?,
            State::Reserved => self.lock_quotes(&payout).await?,
            State::Quoted => self.next_leg(&payout).await?,
            State::Submitting => self.resolve_submission(&payout).await?,
            State::InDoubt => self.inquire(&payout).await?,
        }
        Ok(None)
    }

    /// Commits a step: moves `payout` from `from` to `to` with `changes`, only if it is still in
    /// `from` and still ours; the caller's ledger entries ride in the same transaction.
    async fn commit(
        &self,
        mut tx: StepTransaction,
        payout: &Payout,
        from: State,
        to: State,
        changes: Changes,
        detail: &str,
    ) -> Result<(), EngineError> {
        let route = match &changes.route {
            Some(route) => Some(serde_json::to_string(route).map_err(corrupt)?),
            None => payout.route.as_ref().map(serde_json::to_string).transpose().map_err(corrupt)?,
        };
        let result = sqlx::query(
            "UPDATE payouts SET state = $1, attempt = $2, leg = $3, route = $4, reservation = $5, reason = $6, \
             inquiries = $7, next_action_at = $8, in_doubt_since = $9, lease_until = $10, updated_at = $11, \
             risk = COALESCE($15, risk) WHERE id = $12 AND state = $13 AND lease_owner = $14",
        )
        .bind(to.as_str())
        .bind(changes.attempt.unwrap_or(payout.attempt))
        .bind(changes.leg.unwrap_or(payout.leg))
        .bind(route)
        .bind(if changes.drop_reservation {
            None
        } else {
            changes.reservation.clone().or_else(|| payout.reservation.clone())
        })
        .bind(changes.reason.clone())
        .bind(changes.inquiries.unwrap_or(0))
        .bind(changes.next_action_at.unwrap_or_else(|| self.clock.now_micros()))
        .bind(if to == State::InDoubt {
            Some(changes.in_doubt_since.unwrap_or_else(|| self.clock.now_micros()))
        } else {
            None
        })
        .bind(self.lease_until())
        .bind(self.clock.now_micros())
        .bind(&payout.id)
        .bind(from.as_str())
        .bind(&self.settings.owner)
        .bind(changes.risk.as_deref())
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() != 1 {
            // Another engine moved it, or our lease lapsed: nothing of this step is kept.
            return Err(EngineError::Leased(payout.id.clone()));
        }
        event(&mut tx, &payout.id, to, detail).await?;
        if to == State::InDoubt && from != State::InDoubt {
            outbox(&mut tx, payout, "payout.in_doubt", detail).await?;
        }
        self.crash(from.as_str(), Phase::BeforeCommit)?;
        tx.commit().await?;
        if let Some(observer) = &self.observer {
            let route = changes.route.as_ref().or(payout.route.as_ref());
            observer.payout_moved(&PayoutMoved { payout, from, to, route, detail });
        }
        match to {
            State::InDoubt | State::Failed | State::Returned => {
                tracing::warn!(from = from.as_str(), to = to.as_str(), "{detail}")
            }
            _ => tracing::info!(from = from.as_str(), to = to.as_str(), "{detail}"),
        }
        self.crash(from.as_str(), Phase::AfterCommit)?;
        Ok(())
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Replaces where routes come from (the routing actor's live snapshots, in `railyard serve`).
    pub fn set_routing(&mut self, routing: Arc<dyn RoutingSource>) {
        self.routing = routing;
    }

    /// Receives every rail leg's outcome (the rail actors' success rates and latency).
    pub fn set_observer(&mut self, observer: Arc<dyn OutcomeObserver>) {
        self.observer = Some(observer);
    }

    pub(crate) fn find_route(&self, request: &PayoutRequest, excluded: &[String]) -> Result<StoredRoute, String> {
        self.find_route_in(request, excluded, Some(request.beneficiary.country))
    }

    fn find_route_in(
        &self,
        request: &PayoutRequest,
        excluded: &[String],
        country: Option<railyard_core::Country>,
    ) -> Result<StoredRoute, String> {
        // Out of the search, each with the reason routing's explanation gives: rails that refused
        // this payout before, and those that cannot credit this beneficiary's kind of account.
        let mut avoid: Vec<(String, String)> =
            excluded.iter().map(|rail| (rail.clone(), "refused this payout before".to_string())).collect();
        if let Some(kind) = request.rail_kind {
            avoid.extend(self.config.rails.iter().filter(|rail| rail.kind != kind).map(|rail| {
                (
                    rail.id.to_string(),
                    format!("a {} rail: cannot credit the beneficiary's {} account", rail.kind.name(), kind.name()),
                )
            }));
        }
        let router = self.routing.router()?;
        let mode = match request.mode {
            AmountMode::Send => railyard_routes::Mode::Send,
            AmountMode::Deliver => railyard_routes::Mode::Deliver,
        };
        let mut route_request =
            RouteRequest::payout(request.source, request.destination, request.amount, mode, self.clock.now());
        route_request.country = country;
        route_request.avoid = avoid;
        let set = router.route(&route_request).map_err(|error| error.to_string())?;
        let best = set.routes.into_iter().next().ok_or("no route")?;
        let ttl = self.config.fx_providers.iter().map(|provider| provider.quote_ttl_seconds).min().unwrap_or(30);
        let converts = best.legs.iter().any(|leg| leg.kind == "fx" || leg.rate.is_some());
        Ok(StoredRoute {
            legs: best
                .legs
                .iter()
                .map(|leg| StoredLeg {
                    operator: leg.rail.clone(),
                    kind: leg.kind.to_string(),
                    from: leg.from,
                    to: leg.to,
                    send: leg.send,
                    receive: leg.receive,
                    fee: leg.fee,
                    rate: leg.rate,
                    execution: None,
                })
                .collect(),
            send: best.send,
            receive: best.receive,
            quotes_expire_at: converts.then(|| self.clock.now() + chrono::Duration::seconds(i64::from(ttl))),
            excluded_rails: excluded.to_vec(),
        })
    }

    async fn route(&self, payout: &Payout) -> Result<(), EngineError> {
        let excluded = payout.route.as_ref().map(|route| route.excluded_rails.clone()).unwrap_or_default();
        // Route first, then take the write lock: solving must not hold up other writers.
        let found = self.find_route(&payout.request, &excluded);
        let mut tx = self.store.begin_step().await?;
        match found {
            Ok(route) => {
                if let Some(reason) = self.moved_from_quote(&mut tx, payout, &route).await? {
                    return self.fail(tx, payout, State::Accepted, reason).await;
                }
                let detail = format!(
                    "route via {}",
                    route.legs.iter().map(|leg| leg.operator.as_str()).collect::<Vec<_>>().join(" → ")
                );
                self.commit(
                    tx,
                    payout,
                    State::Accepted,
                    State::Routed,
                    Changes { route: Some(route), ..Changes::default() },
                    &detail,
                )
                .await
            }
            Err(reason) => {
                let reason = format!("no route: {reason}");
                self.fail(tx, payout, State::Accepted, reason).await
            }
        }
    }

    /// A payout that follows a quote starts on the quote's route; routed again (a rail refused a
    /// leg before any executed), it keeps the quote's price within the slippage tolerance, as a
    /// re-quote does, whatever the attempt, or this says why not. The quote's row is kept after
    /// it expires, so the comparison is with what the PSP was quoted.
    async fn moved_from_quote(
        &self,
        tx: &mut StepTransaction,
        payout: &Payout,
        fresh: &StoredRoute,
    ) -> Result<Option<String>, EngineError> {
        let Some(quote_id) = &payout.request.quote_id else { return Ok(None) };
        let row =
            sqlx::query("SELECT route FROM quotes WHERE id = $1").bind(quote_id).fetch_optional(&mut **tx).await?;
        let quoted: StoredRoute = match row {
            Some(row) => serde_json::from_str(&row.try_get::<String, _>(0)?).map_err(corrupt)?,
            // Quotes are kept; were one removed, the route the payout last had is the next best.
            None => match &payout.route {
                Some(route) => route.clone(),
                None => return Ok(None),
            },
        };
        if self.within_tolerance(payout.request.mode, &quoted, fresh, true) {
            return Ok(None);
        }
        Ok(Some(format!(
            "no route keeps quote {quote_id}'s price: the best now (send {} for {}) is beyond the {} bps tolerance from the quote's send {} for {}",
            fresh.send, fresh.receive, self.settings.slippage_bps, quoted.send, quoted.receive
        )))
    }

    /// Whether `fresh` prices the payout within the slippage tolerance of `before`: in send mode the
    /// beneficiary gets no less than the tolerance below; in deliver mode it costs no more than
    /// `before` (or the tolerance above, with `widen_cost`, where the reservation is taken anew).
    fn within_tolerance(&self, mode: AmountMode, before: &StoredRoute, fresh: &StoredRoute, widen_cost: bool) -> bool {
        let tolerance = self.settings.slippage_bps / Decimal::from(10_000);
        match mode {
            AmountMode::Send => {
                let floor = before.receive.to_decimal() * (Decimal::ONE - tolerance);
                fresh.receive.currency() == before.receive.currency() && fresh.receive.to_decimal() >= floor
            }
            AmountMode::Deliver if widen_cost => {
                let ceiling = before.send.to_decimal() * (Decimal::ONE + tolerance);
                fresh.send.currency() == before.send.currency() && fresh.send.to_decimal() <= ceiling
            }
            AmountMode::Deliver => {
                fresh.send.currency() == before.send.currency() && fresh.send.minor_units() <= before.send.minor_units()
            }
        }
    }

    /// Fails the saga, voiding its reservation if it holds one.
    async fn fail(&self, tx: StepTransaction, payout: &Payout, from: State, reason: String) -> Result<(), EngineError> {
        self.fail_as(tx, payout, from, State::Failed, reason, Changes::default()).await
    }

    /// Ends a payout unpaid (`Failed` or `Returned`): the PSP's reservation is voided.
    /// `changes` carries what else the step records (its reason is the failure's).
    pub(crate) async fn fail_as(
        &self,
        mut tx: StepTransaction,
        payout: &Payout,
        from: State,
        to: State,
        reason: String,
        changes: Changes,
    ) -> Result<(), EngineError> {
        if let Some(reservation) = &payout.reservation {
            match ledger::void_pending(&mut tx, &format!("{reservation}:void"), reservation).await {
                Ok(_) | Err(LedgerError::AlreadyResolved(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let event = if to == State::Returned { "payout.returned" } else { "payout.failed" };
        outbox(&mut tx, payout, event, &reason).await?;
        let changes = Changes { reason: Some(reason.clone()), ..changes };
        self.commit(tx, payout, from, to, changes, &reason).await
    }

    async fn reserve(&self, payout: &Payout) -> Result<(), EngineError> {
        let route = payout.route.as_ref().ok_or_else(|| corrupt("routed without a route"))?;
        let reservation = format!("{}:a{}:reserve", payout.id, payout.attempt);
        let mut tx = self.store.begin_step().await?;
        let spec = TransferSpec {
            id: reservation.clone(),
            debit: psp_account(&payout.tenant, route.send.currency()),
            credit: clearing_account(route.send.currency()),
            amount: route.send,
            pending: true,
            payout_id: Some(payout.id.clone()),
            note: "reserve the payout amount".into(),
        };
        match ledger::transfer(&mut tx, &spec).await {
            Ok(_) => {
                let changes = Changes { reservation: Some(reservation), ..Changes::default() };
                self.commit(tx, payout, State::Routed, State::Reserved, changes, &format!("reserved {}", route.send))
                    .await
            }
            Err(LedgerError::Overdraft(_) | LedgerError::UnknownAccount(_)) => {
                drop(tx);
                let tx = self.store.begin_step().await?;
                self.fail(tx, payout, State::Routed, format!("insufficient balance for {}", route.send)).await
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn lock_quotes(&self, payout: &Payout) -> Result<(), EngineError> {
        let route = payout.route.as_ref().ok_or_else(|| corrupt("reserved without a route"))?;
        let tx = self.store.begin_step().await?;
        let detail = match route.quotes_expire_at {
            Some(expiry) => format!("FX rates locked until {expiry}"),
            None => "no conversion".into(),
        };
        self.commit(tx, payout, State::Reserved, State::Quoted, Changes::default(), &detail).await
    }

    /// The next leg: an FX leg is checked against its quote's expiry and passed (it posts at
    /// completion); a rail leg is submitted; after the last leg the payout completes.
    async fn next_leg(&self, payout: &Payout) -> Result<(), EngineError> {
        let route = payout.route.clone().ok_or_else(|| corrupt("quoted without a route"))?;
        let index = usize::try_from(payout.leg).map_err(corrupt)?;
        let Some(leg) = route.legs.get(index) else {
            return self.complete(payout, &route).await;
        };
        if leg.kind != "rail" {
            let expired = route.quotes_expire_at.is_some_and(|expiry| self.clock.now() >= expiry);
            let rail_executed = route.legs.iter().any(|leg| leg.execution.is_some());
            if expired && !rail_executed {
                return self.requote(payout, &route).await;
            }
            let tx = self.store.begin_step().await?;
            let changes = Changes { leg: Some(payout.leg + 1), ..Changes::default() };
            return self
                .commit(
                    tx,
                    payout,
                    State::Quoted,
                    State::Quoted,
                    changes,
                    &format!("leg {index}: {} conversion", leg.operator),
                )
                .await;
        }
        if !self.routing.rail_available(&leg.operator) {
            // The rail went down (or was switched off) after this payout was routed: nothing is
            // sent; route again around it.
            let rejection = Rejection::before_send(
                railyard_connector::ReasonCode::RailUnavailable,
                format!("{} became unavailable after routing", leg.operator),
            );
            return self.rejected(payout, &route, index, State::Quoted, rejection, false).await;
        }
        // Commit the intent, with the leg's liquidity reserved at the rail, before calling it.
        let mut tx = self.store.begin_step().await?;
        let liquidity = TransferSpec {
            id: self.leg_key(payout, index),
            debit: clearing_account(leg.send.currency()),
            credit: nostro_account(&leg.operator, leg.send.currency()),
            amount: leg.send,
            pending: true,
            payout_id: Some(payout.id.clone()),
            note: format!("liquidity for leg {index} on {}", leg.operator),
        };
        match ledger::transfer(&mut tx, &liquidity).await {
            Ok(_) => {}
            Err(LedgerError::Overdraft(_) | LedgerError::UnknownAccount(_)) => {
                drop(tx);
                let rejection = Rejection::by_rail(
                    railyard_connector::ReasonCode::InsufficientFunds,
                    "",
                    format!("not enough prefunded liquidity at {} for {}", leg.operator, leg.send),
                );
                return self.rejected(payout, &route, index, State::Quoted, rejection, false).await;
            }
            Err(error) => return Err(error.into()),
        }
        let cap = self.routing.daily_cap(&leg.operator, leg.send.currency());
        let today = usage::day_of(self.clock.now());
        if !usage::take(&mut tx, &leg.operator, leg.send, cap, today).await? {
            drop(tx);
            let rejection = Rejection::before_send(
                railyard_connector::ReasonCode::LimitExceeded,
                format!(
                    "{} would pass its daily cap of {} today with {}",
                    leg.operator,
                    cap.map_or_else(String::new, |cap| cap.to_string()),
                    leg.send
                ),
            );
            return self.rejected(payout, &route, index, State::Quoted, rejection, false).await;
        }
        self.commit(
            tx,
            payout,
            State::Quoted,
            State::Submitting,
            Changes::default(),
            &format!("submitting leg {index} to {}", leg.operator),
        )
        .await?;
        let payout = self.payout(&payout.id).await?;
        let started = std::time::Instant::now();
        let outcome = self.submit(&payout, &route, index).await?;
        if let Some(observer) = &self.observer {
            match &outcome {
                LegOutcome::Executed(_) => observer.leg_outcome(&leg.operator, true, started.elapsed()),
                LegOutcome::Rejected(rejection) if !rejection.before_send => {
                    observer.leg_outcome(&leg.operator, false, started.elapsed())
                }
                _ => {}
            }
        }
        self.crash("rail_call", Phase::AfterRailCall)?;
        self.apply_outcome(&payout, &route, index, outcome).await
    }

    pub(crate) fn leg_key(&self, payout: &Payout, index: usize) -> String {
        format!("{}:a{}-leg{index}", payout.id, payout.attempt)
    }

    async fn connector_leg(&self, payout: &Payout, route: &StoredRoute, index: usize) -> Result<Leg, EngineError> {
        let last_rail = route.legs.iter().rposition(|leg| leg.kind == "rail") == Some(index);
        // The account leaves the vault only here, for the rail that pays it.
        let account = match last_rail {
            true => Some(self.reveal_account(&payout.request.beneficiary.account).await?),
            false => None,
        };
        self.leg_for(payout, route, index, account)
    }

    /// The connector's leg for `route.legs[index]`; `account` is the beneficiary's account in
    /// clear for the rail that pays the beneficiary (`None` for an intermediate leg, which pays the
    /// house's own account at the next hop).
    pub(crate) fn leg_for(
        &self,
        payout: &Payout,
        route: &StoredRoute,
        index: usize,
        account: Option<String>,
    ) -> Result<Leg, EngineError> {
        let leg = &route.legs[index];
        let key = IdempotencyKey::new(self.leg_key(payout, index)).map_err(corrupt)?;
        let beneficiary = match account {
            Some(account) => Beneficiary { account, ..payout.request.beneficiary.clone() },
            None => Beneficiary {
                name: "Railyard House".into(),
                account: format!("house-{}", leg.to.code().to_lowercase()),
                country: payout.request.beneficiary.country,
            },
        };
        Ok(Leg {
            key,
            amount: leg.send,
            payout_currency: leg.to,
            beneficiary,
            remittance: payout.request.remittance.clone(),
            instructed_at: DateTime::from_timestamp_micros(payout.created_at).unwrap_or_else(Utc::now),
        })
    }

    async fn submit(&self, payout: &Payout, route: &StoredRoute, index: usize) -> Result<LegOutcome, EngineError> {
        // Nothing reaches a rail on the strength of a step that is not yet durable: were it lost,
        // the saga could route again and pay on another rail.
        self.store.sync().await?;
        let Ok(leg) = self.connector_leg(payout, route, index).await else {
            return Ok(LegOutcome::Unknown("cannot build the leg".into()));
        };
        Ok(match self.spawn_submit(route, index, leg) {
            Ok(call) => leg_outcome(call.await),
            Err(refused) => refused,
        })
    }

    /// Sends `leg` to its rail on a task of its own (a panic in the connector is an Unknown
    /// outcome for this leg, resolved by status inquiry, never a lost or repeated payout; and the
    /// call goes on whether or not anyone is polling for its answer).
    pub(crate) fn spawn_submit(
        &self,
        route: &StoredRoute,
        index: usize,
        leg: Leg,
    ) -> Result<tokio::task::JoinHandle<Outcome>, LegOutcome> {
        let Some(connector) = self.registry.get(&route.legs[index].operator) else {
            return Err(LegOutcome::Rejected(Rejection::before_send(
                railyard_connector::ReasonCode::RailUnavailable,
                format!("no connector for {}", route.legs[index].operator),
            )));
        };
        let connector = connector.clone();
        Ok(tokio::spawn(async move { connector.submit(&leg).await }))
    }

    async fn inquiry(&self, payout: &Payout, route: &StoredRoute, index: usize) -> LegOutcome {
        let Ok(leg) = self.connector_leg(payout, route, index).await else {
            return LegOutcome::Unknown("cannot build the leg".into());
        };
        let Some(connector) = self.registry.get(&route.legs[index].operator) else {
            return LegOutcome::Unknown(format!("no connector for {}", route.legs[index].operator));
        };
        match connector.status(&leg).await {
            Status::Executed(execution) => LegOutcome::Executed(execution),
            Status::Rejected(rejection) => LegOutcome::Rejected(rejection),
            Status::NotFound => LegOutcome::NotFound,
            Status::Pending => LegOutcome::Unknown("the rail is still processing".into()),
            Status::Unknown(unknown) => LegOutcome::Unknown(format!("status inquiry failed: {}", unknown.detail)),
        }
    }

    /// After a crash between the intent and the result: ask the rail first.
    async fn resolve_submission(&self, payout: &Payout) -> Result<(), EngineError> {
        let route = payout.route.clone().ok_or_else(|| corrupt("submitting without a route"))?;
        let index = usize::try_from(payout.leg).map_err(corrupt)?;
        let outcome = match self.inquiry(payout, &route, index).await {
            // The rail never saw it: sending now, under the same key, is the first send.
            LegOutcome::NotFound => self.submit(payout, &route, index).await?,
            other => other,
        };
        self.crash("rail_call", Phase::AfterRailCall)?;
        self.apply_outcome(payout, &route, index, outcome).await
    }

    async fn inquire(&self, payout: &Payout) -> Result<(), EngineError> {
        let route = payout.route.clone().ok_or_else(|| corrupt("in doubt without a route"))?;
        let index = usize::try_from(payout.leg).map_err(corrupt)?;
        let outcome = match self.inquiry(payout, &route, index).await {
            LegOutcome::NotFound => self.submit(payout, &route, index).await?,
            other => other,
        };
        self.apply_outcome(payout, &route, index, outcome).await
    }

    pub(crate) async fn apply_outcome(
        &self,
        payout: &Payout,
        route: &StoredRoute,
        index: usize,
        outcome: LegOutcome,
    ) -> Result<(), EngineError> {
        self.apply_outcome_from(payout, route, index, outcome, "").await
    }

    /// Applies a leg's outcome; `provenance` (how it was learned, when not from the rail's own
    /// answer) is kept in the saga's history.
    async fn apply_outcome_from(
        &self,
        payout: &Payout,
        route: &StoredRoute,
        index: usize,
        outcome: LegOutcome,
        provenance: &str,
    ) -> Result<(), EngineError> {
        let from = payout.state;
        match outcome {
            LegOutcome::Executed(execution) => {
                let mut tx = self.store.begin_step().await?;
                match ledger::post_pending(
                    &mut tx,
                    &format!("{}:post", self.leg_key(payout, index)),
                    &self.leg_key(payout, index),
                    None,
                )
                .await
                {
                    Ok(_) | Err(LedgerError::AlreadyResolved(_)) => {}
                    Err(error) => return Err(error.into()),
                }
                let mut route = route.clone();
                let detail = format!(
                    "leg {index} executed on {}: {}{provenance}",
                    route.legs[index].operator, execution.reference
                );
                route.legs[index].execution = Some(execution);
                let changes = Changes { route: Some(route), leg: Some(payout.leg + 1), ..Changes::default() };
                self.commit(tx, payout, from, State::Quoted, changes, &detail).await
            }
            LegOutcome::Rejected(mut rejection) => {
                rejection.detail.push_str(provenance);
                self.rejected(payout, route, index, from, rejection, true).await
            }
            LegOutcome::NotFound | LegOutcome::Unknown(_) => {
                let reason = match &outcome {
                    LegOutcome::Unknown(detail) => {
                        format!("leg {index} on {}: outcome unknown ({detail})", route.legs[index].operator)
                    }
                    _ => format!("leg {index} on {}: not found after resubmission", route.legs[index].operator),
                };
                let inquiries = if from == State::InDoubt { payout.inquiries + 1 } else { 0 };
                let exponent = u32::try_from(inquiries.min(20)).unwrap_or(20);
                let wait = self
                    .settings
                    .inquiry_backoff
                    .saturating_mul(2_u32.saturating_pow(exponent))
                    .min(INQUIRY_BACKOFF_MAX);
                let escalated = inquiries >= i64::from(self.settings.inquiries_max);
                let reason = if escalated {
                    format!("escalated for reconciliation after {inquiries} inquiries: {reason}")
                } else {
                    reason
                };
                let tx = self.store.begin_step().await?;
                let changes = Changes {
                    reason: Some(reason.clone()),
                    inquiries: Some(inquiries),
                    next_action_at: Some(
                        self.clock.now_micros() + i64::try_from(wait.as_micros()).unwrap_or(i64::MAX / 4),
                    ),
                    in_doubt_since: None,
                    ..Changes::default()
                };
                self.commit(tx, payout, from, State::InDoubt, changes, &reason).await
            }
        }
    }

    /// A definitive reject: release the leg's liquidity; re-route if nothing executed yet and
    /// attempts remain, else void the reservation and fail.
    async fn rejected(
        &self,
        payout: &Payout,
        route: &StoredRoute,
        index: usize,
        from: State,
        rejection: Rejection,
        liquidity_reserved: bool,
    ) -> Result<(), EngineError> {
        let mut tx = self.store.begin_step().await?;
        if liquidity_reserved {
            let key = self.leg_key(payout, index);
            match ledger::void_pending(&mut tx, &format!("{key}:void"), &key).await {
                // The leg's share of the rail's daily cap goes back with its liquidity.
                Ok(_) => {
                    let leg = &route.legs[index];
                    usage::give_back(&mut tx, &leg.operator, leg.send, usage::day_of(self.clock.now())).await?;
                }
                Err(LedgerError::AlreadyResolved(_)) | Err(LedgerError::PendingNotFound(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let operator = &route.legs[index].operator;
        let detail = format!(
            "leg {index} rejected by {operator}: {} ({}) {}",
            rejection.code, rejection.rail_code, rejection.detail
        );
        let nothing_executed = route.legs.iter().all(|leg| leg.execution.is_none());
        let attempts_left = payout.attempt + 1 < i64::from(self.settings.route_attempts_max);
        if nothing_executed && attempts_left && rejection.code.another_route_may_succeed() {
            if let Some(reservation) = &payout.reservation {
                match ledger::void_pending(&mut tx, &format!("{reservation}:void"), reservation).await {
                    Ok(_) | Err(LedgerError::AlreadyResolved(_)) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            let mut next = route.clone();
            if !rejection.code.same_rail_may_succeed() {
                next.excluded_rails.push(operator.clone());
            }
            let changes = Changes {
                route: Some(next),
                attempt: Some(payout.attempt + 1),
                leg: Some(0),
                drop_reservation: true,
                ..Changes::default()
            };
            return self.commit(tx, payout, from, State::Accepted, changes, &format!("{detail}; re-routing")).await;
        }
        if !nothing_executed {
            // An earlier leg moved money to the house's account at this hop: carry the remainder
            // on from there by another route, or return the payout.
            if attempts_left && rejection.code.another_route_may_succeed() {
                let mut excluded = route.excluded_rails.clone();
                if !rejection.code.same_rail_may_succeed() {
                    excluded.push(operator.clone());
                }
                if let Some(rest) = self.remainder_route(payout, route, index, &excluded) {
                    let detail = format!(
                        "{detail}; re-routing the remaining {} via {}",
                        route.legs[index].send,
                        rest.legs[index..].iter().map(|leg| leg.operator.as_str()).collect::<Vec<_>>().join(" → ")
                    );
                    let changes = Changes {
                        route: Some(rest),
                        attempt: Some(payout.attempt + 1),
                        leg: Some(payout.leg),
                        ..Changes::default()
                    };
                    return self.commit(tx, payout, from, State::Quoted, changes, &detail).await;
                }
            }
            return self.return_payout(tx, payout, route, from, detail).await;
        }
        self.fail(tx, payout, from, detail).await
    }

    /// After leg `index` was rejected with earlier legs executed: a route for the rest, from the
    /// currency and amount that leg was to send, avoiding `excluded`. The executed legs are kept;
    /// a deliver-mode payout still delivers its amount exactly, from no more than is at the hop.
    fn remainder_route(
        &self,
        payout: &Payout,
        route: &StoredRoute,
        index: usize,
        excluded: &[String],
    ) -> Option<StoredRoute> {
        let at_hop = route.legs[index].send;
        let mut request = payout.request.clone();
        request.source = at_hop.currency();
        if request.mode == AmountMode::Send {
            request.amount = at_hop;
        }
        let rest = self.find_route(&request, excluded).ok()?;
        if rest.send.currency() != at_hop.currency() || rest.send.minor_units() > at_hop.minor_units() {
            return None;
        }
        let mut next = route.clone();
        next.legs.truncate(index);
        next.legs.extend(rest.legs);
        next.receive = rest.receive;
        next.quotes_expire_at = rest.quotes_expire_at;
        next.excluded_rails = excluded.to_vec();
        Some(next)
    }

    /// A payout that cannot go on after money moved: the PSP gets its reservation back, and what
    /// the executed rail legs paid out (now the house's, at the hop) is booked as a return
    /// receivable per currency, for treasury to bring back. The payout fails saying so.
    async fn return_payout(
        &self,
        mut tx: StepTransaction,
        payout: &Payout,
        route: &StoredRoute,
        from: State,
        detail: String,
    ) -> Result<(), EngineError> {
        let mut held: BTreeMap<&'static str, (Currency, i64)> = BTreeMap::new();
        for leg in route.legs.iter().filter(|leg| leg.kind == "rail" && leg.execution.is_some()) {
            let entry = held.entry(leg.send.currency().code()).or_insert((leg.send.currency(), 0));
            entry.1 = entry.1.checked_add(leg.send.minor_units()).ok_or_else(|| corrupt("return amount overflows"))?;
        }
        let mut booked = Vec::new();
        for (code, (currency, minor)) in held {
            let amount = Money::from_minor(minor, currency);
            let spec = TransferSpec {
                id: format!("{}:a{}:return-{code}", payout.id, payout.attempt),
                debit: returns_account(currency),
                credit: clearing_account(currency),
                amount,
                pending: false,
                payout_id: Some(payout.id.clone()),
                note: "funds held at a hop after a rejected leg, to be returned".into(),
            };
            match ledger::transfer(&mut tx, &spec).await {
                Ok(_) | Err(LedgerError::Duplicate(_)) => {}
                Err(error) => return Err(error.into()),
            }
            booked.push(amount.to_string());
        }
        let reason = format!(
            "{detail}; no other route for the remainder: returned to the PSP, {} held at the hop booked for return",
            booked.join(" + ")
        );
        self.fail_as(tx, payout, from, State::Returned, reason, Changes::default()).await
    }

    /// The locked FX rates expired before any rail leg ran: price again; keep the new route only
    /// if it moved less than the slippage tolerance.
    async fn requote(&self, payout: &Payout, route: &StoredRoute) -> Result<(), EngineError> {
        let tx = self.store.begin_step().await?;
        let fresh = match self.find_route(&payout.request, &route.excluded_rails) {
            Ok(fresh) => fresh,
            Err(reason) => {
                return self
                    .fail(tx, payout, State::Quoted, format!("FX quote expired and re-routing failed: {reason}"))
                    .await;
            }
        };
        // Delivering exactly: the new cost must fit in what was reserved.
        if !self.within_tolerance(payout.request.mode, route, &fresh, false) {
            let reason = format!(
                "FX quote expired; the new price (send {} for {}) moved beyond the {} bps tolerance from send {} for {}",
                fresh.send, fresh.receive, self.settings.slippage_bps, route.send, route.receive
            );
            return self.fail(tx, payout, State::Quoted, reason).await;
        }
        let mut fresh = fresh;
        // The reservation stays: send mode sends the same amount; deliver mode sends no more.
        fresh.send = route.send;
        // The quote just taken is used now; give it at least the grace to reach the rail.
        let graced = self.clock.now() + chrono::Duration::from_std(REQUOTE_GRACE).unwrap_or_default();
        fresh.quotes_expire_at = fresh.quotes_expire_at.map(|expiry| expiry.max(graced));
        let changes = Changes { route: Some(fresh), leg: Some(0), ..Changes::default() };
        self.commit(tx, payout, State::Quoted, State::Quoted, changes, "FX quote expired: re-quoted within tolerance")
            .await
    }

    /// Every leg done: post the reservation, the conversions, and queue the webhook.
    async fn complete(&self, payout: &Payout, route: &StoredRoute) -> Result<(), EngineError> {
        let mut tx = self.store.begin_step().await?;
        let reservation = payout.reservation.clone().ok_or_else(|| corrupt("completing without a reservation"))?;
        match ledger::post_pending(&mut tx, &format!("{reservation}:post"), &reservation, Some(route.send)).await {
            Ok(_) | Err(LedgerError::AlreadyResolved(_)) => {}
            Err(error) => return Err(error.into()),
        }
        for (index, leg) in route.legs.iter().enumerate() {
            if leg.kind == "rail" && leg.from == leg.to {
                continue;
            }
            // A conversion (by an FX provider, or in-network by the rail): give `from`, take `to`.
            if leg.kind == "rail" {
                // The rail converted in-network: its liquidity entry already took `send` in `from`
                // out of the rail's nostro; the beneficiary's side is the rail's.
                continue;
            }
            let provider = &leg.operator;
            let received = leg.receive;
            let sent = leg.send;
            for (suffix, debit, credit, amount) in [
                ("give", clearing_account(leg.from), fx_account(provider, leg.from), sent),
                ("take", fx_account(provider, leg.to), clearing_account(leg.to), received),
            ] {
                let spec = TransferSpec {
                    id: format!("{}:a{}-leg{index}:fx-{suffix}", payout.id, payout.attempt),
                    debit,
                    credit,
                    amount,
                    pending: false,
                    payout_id: Some(payout.id.clone()),
                    note: format!("conversion by {provider}"),
                };
                match ledger::transfer(&mut tx, &spec).await {
                    Ok(_) | Err(LedgerError::Duplicate(_)) => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
        let delivered = route
            .legs
            .iter()
            .rev()
            .find_map(|leg| leg.execution.as_ref().map(|execution| execution.receive))
            .unwrap_or(route.receive);
        outbox(&mut tx, payout, "payout.completed", &format!("delivered {delivered}")).await?;
        let changes = Changes::default();
        self.commit(tx, payout, State::Quoted, State::Completed, changes, &format!("completed: delivered {delivered}"))
            .await
    }
}

/// What a reconciliation learned about a rail leg from outside the rail's own answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Evidence {
    /// A report shows the leg executed.
    Executed {
        reference: String,
        /// What reached the beneficiary, when the report says.
        delivered: Option<Money>,
        executed_at: DateTime<Utc>,
        /// Where it was seen: file and line or entry.
        source: String,
    },
    /// A definitive report shows it did not: a reject, or absence from a complete report.
    NotExecuted { source: String, detail: String },
}

/// What [`Engine::resolve_in_doubt`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "resolution", rename_all = "snake_case")]
pub enum Resolution {
    /// The leg was resolved; the saga ran on to `state`.
    Resolved { state: State },
    /// The saga is not in doubt (it was resolved already, or never was).
    NotInDoubt { state: State },
    /// The saga is in doubt about another leg (`current`), not the one the evidence names.
    OtherLeg { current: String },
    /// The leg's liquidity is no longer pending (a leg held for a return).
    NotPending,
}

/// A rail leg's outcome as the saga sees it.
#[derive(Debug)]
pub(crate) enum LegOutcome {
    Executed(Execution),
    Rejected(Rejection),
    NotFound,
    Unknown(String),
}

/// A rail call's answer as the saga sees it.
pub(crate) fn leg_outcome(answer: Result<Outcome, tokio::task::JoinError>) -> LegOutcome {
    match answer {
        Ok(Outcome::Executed(execution)) => LegOutcome::Executed(execution),
        Ok(Outcome::Rejected(rejection)) => LegOutcome::Rejected(rejection),
        Ok(Outcome::Unknown(unknown)) => LegOutcome::Unknown(format!("{:?}: {}", unknown.cause, unknown.detail)),
        Err(error) => LegOutcome::Unknown(format!("the connector failed: {error}")),
    }
}

/// Fields a step changes; `None` keeps the stored value (reason and inquiries reset unless given).
#[derive(Default)]
pub(crate) struct Changes {
    route: Option<StoredRoute>,
    attempt: Option<i64>,
    leg: Option<i64>,
    reservation: Option<String>,
    /// The reservation was voided (re-route): forget it.
    drop_reservation: bool,
    reason: Option<String>,
    inquiries: Option<i64>,
    next_action_at: Option<i64>,
    in_doubt_since: Option<i64>,
    /// The risk assessment (JSON), recorded once by the assessing step.
    risk: Option<String>,
}

async fn event(tx: &mut StepTransaction, id: &str, state: State, detail: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO saga_events (payout_id, at, state, detail) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(now_micros())
        .bind(state.as_str())
        .bind(detail)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn outbox(tx: &mut StepTransaction, payout: &Payout, name: &str, detail: &str) -> Result<(), EngineError> {
    let status = name.strip_prefix("payout.").unwrap_or(name);
    let body = serde_json::json!({
        "event": name,
        "payout_id": payout.id,
        "status": status,
        "detail": detail,
        "occurred_at": Utc::now().to_rfc3339(),
    });
    railyard_store::outbox::queue(&mut **tx, &payout.id, name, &body.to_string(), &payout.tenant).await?;
    Ok(())
}

/// Counts of sagas by state, for monitoring and `verify`.
pub async fn counts_by_state(store: &Store) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let rows = sqlx::query("SELECT state, COUNT(*) FROM payouts GROUP BY state").fetch_all(store.pool()).await?;
    rows.iter().map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?))).collect()
}

/// Rounds a decimal amount to `currency` toward zero (for reports).
pub fn money(value: Decimal, currency: Currency) -> Option<Money> {
    Money::from_decimal(value, currency, RoundingMode::TowardZero).ok()
}
