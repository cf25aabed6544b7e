//! The routing actor: owns the live state of every rail and publishes immutable routing snapshots.
//!
//! Design choice: solves never talk to this actor. It publishes each new snapshot into a
//! `tokio::sync::watch` channel; a solve clones the current `Arc<Snapshot>` (a pointer copy) and
//! routes on it in parallel with every other solve, while the actor builds the next one. An
//! availability change rebuilds at once (an outage leaves routing within one build, well under
//! 250 ms); latency and success-rate drift is batched and rebuilt on the next tick.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use railyard_config::TreasuryConfig;
use railyard_core::Decimal;
use railyard_fx::{FxBook, ReferenceRates};
use railyard_store::Store;

use crate::change::{ChangeError, ChangeErrorKind, TreasuryChange};
use railyard_routes::{LiveState, RailState, Router};
use tokio::sync::watch;

/// Audit entries kept in memory (the store keeps them durably once the API writes them).
pub const AUDIT_MAX: usize = 1_000;
/// How often batched health drift is folded into a new snapshot.
pub const REBUILD_TICK: Duration = Duration::from_millis(100);
/// How often routing reads every rail's prefunded position from the ledger (when it has a store):
/// a rail that has paid out most of its liquidity stops being offered amounts it cannot carry,
/// before a payout finds out by failing to reserve it.
pub const LIQUIDITY_REFRESH: Duration = Duration::from_millis(500);

/// An amount per currency for each rail, by rail id.
pub type PerRail =
    std::collections::HashMap<String, std::collections::BTreeMap<railyard_core::Currency, railyard_core::Money>>;

/// One published routing snapshot.
pub struct Snapshot {
    pub version: u64,
    pub router: Arc<Router>,
    pub live: LiveState,
    pub config: Arc<TreasuryConfig>,
    pub fx: Arc<FxBook>,
    /// Rails an operator took out of routing.
    pub killed: BTreeSet<String>,
    pub built_at: DateTime<Utc>,
    pub build_time: Duration,
}

/// What a rail actor reports.
#[derive(Debug, Clone, PartialEq)]
pub struct RailReport {
    pub rail: String,
    pub available: bool,
    pub latency_ms: Option<u32>,
    pub success_probability: Option<Decimal>,
    pub detail: String,
}

/// A change an operator made, kept for audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub change: String,
}

pub enum RoutingMsg {
    Report(RailReport),
    /// Take a rail out of routing (`engaged`), or put it back.
    KillSwitch {
        rail: String,
        engaged: bool,
        by: String,
    },
    /// A treasury change (rail costs, spreads, limits, weights), applied to the configuration in
    /// force. Validated by building the FX book and a router with it; recorded in the store with
    /// its audit entry (when the actor has a store) before it is published.
    Apply {
        change: TreasuryChange,
        by: String,
        reply: RpcReplyPort<Result<AppliedChange, ChangeError>>,
    },
    /// New reference rates: the FX book is rebuilt from them and the providers in force.
    SetRates {
        rates: ReferenceRates,
    },
    /// Anomaly detection de-weights a rail (`factor` in (0, 1] scales its success probability) or
    /// restores it (`None`).
    Deweight {
        rail: String,
        factor: Option<Decimal>,
        by: String,
        reason: String,
    },
    Tick,
    /// What each rail can still pay out now, per currency (its nostro account's available
    /// balance: prefunded, less paid out, less reserved for legs in flight).
    Liquidity {
        positions: PerRail,
        /// What each rail has been given to send today (UTC), per currency
        /// (`railyard_store::usage`): counted against its daily cap.
        daily_used: PerRail,
    },
    Audit {
        reply: RpcReplyPort<Vec<AuditEntry>>,
    },
}

pub struct RoutingArgs {
    pub config: Arc<TreasuryConfig>,
    pub fx: Arc<FxBook>,
    pub publish: watch::Sender<Arc<Snapshot>>,
    /// Where treasury changes are recorded; without one they apply in memory only.
    pub store: Option<Store>,
    /// Rails whose kill switch is engaged from the start (restored from the store).
    pub killed: BTreeSet<String>,
}

/// A treasury change routing accepted: the snapshot it is in, and what it replaced.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedChange {
    pub version: u64,
    pub before: serde_json::Value,
    pub after: serde_json::Value,
}

pub struct RoutingState {
    config: Arc<TreasuryConfig>,
    fx: Arc<FxBook>,
    live: LiveState,
    killed: BTreeSet<String>,
    dirty: bool,
    version: u64,
    publish: watch::Sender<Arc<Snapshot>>,
    audit: VecDeque<AuditEntry>,
    store: Option<Store>,
}

pub struct RoutingActor;

/// Builds a snapshot: the configuration with live state applied, killed rails unavailable.
pub fn build_snapshot(
    config: Arc<TreasuryConfig>,
    fx: Arc<FxBook>,
    live: &LiveState,
    killed: &BTreeSet<String>,
    version: u64,
) -> Result<Snapshot, String> {
    let started = Instant::now();
    let mut effective = live.clone();
    for rail in killed {
        effective.entry(rail.clone()).or_default().available = Some(false);
    }
    let router = railyard_routes::build_router(&config, &fx, &effective).map_err(|error| error.to_string())?;
    Ok(Snapshot {
        version,
        router: Arc::new(router),
        live: effective,
        config,
        fx,
        killed: killed.clone(),
        built_at: Utc::now(),
        build_time: started.elapsed(),
    })
}

impl RoutingState {
    fn rebuild(&mut self) -> Result<(), String> {
        self.version += 1;
        let snapshot = build_snapshot(self.config.clone(), self.fx.clone(), &self.live, &self.killed, self.version)?;
        self.publish.send_replace(Arc::new(snapshot));
        self.dirty = false;
        Ok(())
    }

    /// Applies a treasury change: validate, build, record durably, publish. A change that cannot be
    /// built or recorded changes nothing; a refusal is itself audited.
    async fn apply(&mut self, change: &TreasuryChange, by: &str) -> Result<AppliedChange, ChangeError> {
        let mut next = (*self.config).clone();
        let built = change.apply(&mut next).and_then(|applied| {
            let next = Arc::new(next);
            let fx = if change.touches_fx_book() {
                let book = FxBook::build(&next.fx_providers, self.fx.reference().clone())
                    .map_err(|error| ChangeError::invalid(change.field(), error.to_string()))?;
                Arc::new(book)
            } else {
                self.fx.clone()
            };
            let snapshot = build_snapshot(next.clone(), fx.clone(), &self.live, &self.killed, self.version + 1)
                .map_err(|error| ChangeError::invalid(change.field(), error))?;
            Ok((applied, next, fx, snapshot))
        });
        let (applied, next, fx, snapshot) = match built {
            Ok(built) => built,
            Err(error) => {
                if let Some(store) = &self.store
                    && error.kind == ChangeErrorKind::Invalid
                {
                    let detail = format!("{}: {error}", change.key());
                    if let Err(failure) = store.audit(by, &format!("{}.refused", change.action()), &detail).await {
                        tracing::warn!("a refused treasury change was not audited: {failure}");
                    }
                }
                return Err(error);
            }
        };
        let detail = change.describe(&applied);
        if let Some(store) = &self.store {
            let value = change.stored_value().to_string();
            railyard_store::settings::record(store, by, change.action(), &detail, &change.key(), Some(&value))
                .await
                .map_err(|error| ChangeError::unavailable(format!("the change was not recorded: {error}")))?;
        }
        self.version = snapshot.version;
        self.config = next;
        self.fx = fx;
        self.publish.send_replace(Arc::new(snapshot));
        self.audit(by, detail);
        Ok(AppliedChange { version: self.version, before: applied.before, after: applied.after })
    }

    fn audit(&mut self, actor: &str, change: String) {
        if self.audit.len() >= AUDIT_MAX {
            self.audit.pop_front();
        }
        self.audit.push_back(AuditEntry { at: Utc::now(), actor: actor.into(), change });
    }
}

impl Actor for RoutingActor {
    type Msg = RoutingMsg;
    type State = RoutingState;
    type Arguments = RoutingArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RoutingMsg>,
        args: RoutingArgs,
    ) -> Result<RoutingState, ActorProcessingErr> {
        myself.send_interval(REBUILD_TICK, || RoutingMsg::Tick);
        if let Some(store) = args.store.clone() {
            // Read on a task of its own: the actor never waits on the database for this.
            let routing = myself.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(LIQUIDITY_REFRESH);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    let positions = match rail_positions(&store).await {
                        Ok(positions) => positions,
                        Err(error) => {
                            tracing::warn!("routing: reading rail liquidity failed: {error}");
                            continue;
                        }
                    };
                    let today = railyard_store::usage::day_of(Utc::now());
                    let daily_used: PerRail = match railyard_store::usage::on_day(store.pool(), today).await {
                        Ok(used) => used.into_iter().collect(),
                        Err(error) => {
                            tracing::warn!("routing: reading rail daily use failed: {error}");
                            continue;
                        }
                    };
                    if routing.send_message(RoutingMsg::Liquidity { positions, daily_used }).is_err() {
                        break;
                    }
                }
            });
        }
        let version = args.publish.borrow().version;
        // The first snapshot (published by `Runtime::start`) already leaves out the killed rails.
        Ok(RoutingState {
            config: args.config,
            fx: args.fx,
            live: LiveState::new(),
            killed: args.killed,
            dirty: false,
            version,
            publish: args.publish,
            audit: VecDeque::new(),
            store: args.store,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RoutingMsg>,
        message: RoutingMsg,
        state: &mut RoutingState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RoutingMsg::Report(report) => {
                let entry: &mut RailState = state.live.entry(report.rail.clone()).or_default();
                let availability_changed = entry.available != Some(report.available);
                entry.available = Some(report.available);
                if report.latency_ms.is_some() {
                    entry.latency_ms = report.latency_ms;
                }
                if report.success_probability.is_some() {
                    entry.success_probability = report.success_probability;
                }
                if availability_changed {
                    // An outage (or a recovery) must reach routing now, not on the next tick.
                    state.rebuild()?;
                } else {
                    state.dirty = true;
                }
            }
            RoutingMsg::KillSwitch { rail, engaged, by } => {
                let changed = if engaged { state.killed.insert(rail.clone()) } else { state.killed.remove(&rail) };
                if changed {
                    state
                        .audit(&by, format!("kill switch {} for {rail}", if engaged { "engaged" } else { "released" }));
                    state.rebuild()?;
                }
            }
            RoutingMsg::Apply { change, by, reply } => {
                let answer = state.apply(&change, &by).await;
                let _ = reply.send(answer);
            }
            RoutingMsg::SetRates { rates } => match FxBook::build(&state.config.fx_providers, rates) {
                Ok(book) => {
                    state.fx = Arc::new(book);
                    state.rebuild()?;
                }
                Err(error) => tracing::warn!("FX rates refused, the previous book stays: {error}"),
            },
            RoutingMsg::Deweight { rail, factor, by, reason } => {
                let entry: &mut RailState = state.live.entry(rail.clone()).or_default();
                if entry.deweight != factor {
                    entry.deweight = factor;
                    let change = match factor {
                        Some(factor) => format!("{rail} de-weighted (success probability x {factor}): {reason}"),
                        None => format!("{rail} weight restored: {reason}"),
                    };
                    state.audit(&by, change);
                    state.rebuild()?;
                }
            }
            RoutingMsg::Liquidity { positions, mut daily_used } => {
                for (rail, liquidity) in positions {
                    let entry: &mut RailState = state.live.entry(rail).or_default();
                    if entry.liquidity != liquidity {
                        entry.liquidity = liquidity;
                        state.dirty = true;
                    }
                }
                // A rail missing from `daily_used` has sent nothing today (the day may just have
                // changed): its count goes back to zero.
                for (rail, entry) in state.live.iter_mut() {
                    let used = daily_used.remove(rail).unwrap_or_default();
                    if entry.daily_used != used {
                        entry.daily_used = used;
                        state.dirty = true;
                    }
                }
                for (rail, used) in daily_used {
                    state.live.entry(rail).or_default().daily_used = used;
                    state.dirty = true;
                }
            }
            RoutingMsg::Tick => {
                if state.dirty {
                    state.rebuild()?;
                }
            }
            RoutingMsg::Audit { reply } => {
                let _ = reply.send(state.audit.iter().cloned().collect());
            }
        }
        Ok(())
    }
}

/// The engine's view of routing: the latest published snapshot.
pub struct SnapshotRouting {
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
}

impl SnapshotRouting {
    pub fn new(snapshots: watch::Receiver<Arc<Snapshot>>) -> SnapshotRouting {
        SnapshotRouting { snapshots }
    }
}

impl railyard_saga::RoutingSource for SnapshotRouting {
    fn daily_cap(&self, rail: &str, currency: railyard_core::Currency) -> Option<railyard_core::Money> {
        self.snapshots.borrow().config.rail(rail)?.limits.get(&currency)?.daily_cap
    }

    fn rail_available(&self, rail: &str) -> bool {
        let snapshot = self.snapshots.borrow();
        !snapshot.killed.contains(rail) && snapshot.live.get(rail).and_then(|state| state.available) != Some(false)
    }

    fn router(&self) -> Result<Arc<Router>, String> {
        Ok(self.snapshots.borrow().router.clone())
    }
}

/// Every rail's available liquidity per currency, from its nostro accounts (`nostro:{rail}:{CCY}`).
async fn rail_positions(store: &Store) -> Result<PerRail, railyard_store::ledger::LedgerError> {
    let mut positions = PerRail::new();
    for balance in railyard_store::ledger::balances(store.pool()).await? {
        let Some((rail, _)) = balance.id.strip_prefix("nostro:").and_then(|rest| rest.rsplit_once(':')) else {
            continue;
        };
        positions.entry(rail.to_string()).or_default().insert(balance.currency, balance.available());
    }
    Ok(positions)
}
