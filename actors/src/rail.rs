//! One actor per rail connector: probes the rail, folds leg outcomes into latency and success
//! figures, and reports availability to the routing actor. A supervisor per rail kind restarts a
//! failed rail actor with backoff and gives up after [`RESTARTS_MAX`], marking the rail unavailable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use railyard_connector::Connector;
use railyard_core::Decimal;

use crate::routing::{RailReport, RoutingMsg};

/// Restarts of one rail actor before the supervisor gives up and marks the rail unavailable.
pub const RESTARTS_MAX: u32 = 5;
/// First restart delay; doubled on each further restart.
pub const RESTART_BACKOFF: Duration = Duration::from_millis(50);
/// Messages waiting in one rail actor's mailbox; beyond it outcome reports are dropped (they are
/// statistics; the saga keeps the truth) rather than grow memory.
pub const RAIL_MAILBOX_MAX: usize = 1_024;
/// Consecutive healthy probes before a rail that was down is reported available again
/// (half-open: one good probe is not enough to send it traffic).
pub const RECOVERY_PROBES: u32 = 2;

pub enum RailMsg {
    Probe,
    Outcome {
        success: bool,
        elapsed: Duration,
    },
    /// Test and chaos only: fail the actor as a connector panic would.
    Crash,
}

/// Told of every probe: rail, whether it answered available, and how long it took.
pub type ProbeObserver = Arc<dyn Fn(&str, bool, Duration) + Send + Sync>;

/// Where probe results go once monitoring is attached (set at most once, shared by every rail).
pub type ProbeSink = Arc<std::sync::OnceLock<ProbeObserver>>;

/// A rail actor's address with its mailbox bound.
#[derive(Clone)]
pub struct RailHandle {
    pub rail: String,
    actor: Arc<std::sync::Mutex<Option<ActorRef<RailMsg>>>>,
    depth: Arc<AtomicUsize>,
    probes: ProbeSink,
}

impl RailHandle {
    fn new(rail: &str, probes: ProbeSink) -> RailHandle {
        RailHandle { rail: rail.into(), actor: Arc::default(), depth: Arc::new(AtomicUsize::new(0)), probes }
    }

    /// Attaches the probe observer every rail shares; false if one was attached already.
    pub fn set_probe_observer(&self, observer: ProbeObserver) -> bool {
        self.probes.set(observer).is_ok()
    }

    /// Messages waiting in the rail actor's mailbox now.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }

    fn set(&self, actor: Option<ActorRef<RailMsg>>) {
        if let Ok(mut slot) = self.actor.lock() {
            *slot = actor;
        }
    }

    /// Sends unless the mailbox is at its bound; returns whether it was sent.
    pub fn send(&self, message: RailMsg) -> bool {
        let Some(actor) = self.actor.lock().ok().and_then(|slot| slot.clone()) else { return false };
        if self.depth.fetch_add(1, Ordering::AcqRel) >= RAIL_MAILBOX_MAX {
            self.depth.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        if actor.send_message(message).is_err() {
            self.depth.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }
}

pub struct RailArgs {
    pub connector: Arc<dyn Connector>,
    pub routing: ActorRef<RoutingMsg>,
    pub probe_every: Duration,
    pub depth: Arc<AtomicUsize>,
    pub probes: ProbeSink,
}

pub struct RailState {
    connector: Arc<dyn Connector>,
    routing: ActorRef<RoutingMsg>,
    depth: Arc<AtomicUsize>,
    probes: ProbeSink,
    /// Exponentially weighted moving average of leg latency, milliseconds, weight 1/8.
    latency_ewma_ms: Option<u64>,
    /// Successes and definitive rail rejects over the last window of outcomes.
    outcomes: std::collections::VecDeque<bool>,
    reported_available: Option<bool>,
    healthy_probes: u32,
}

/// Outcomes kept for the success rate.
pub const OUTCOME_WINDOW: usize = 200;

pub struct RailActor;

impl RailState {
    fn success_probability(&self) -> Option<Decimal> {
        if self.outcomes.len() < 20 {
            return None;
        }
        let successes = self.outcomes.iter().filter(|outcome| **outcome).count();
        // Laplace smoothing keeps a short streak from claiming certainty either way.
        Some(Decimal::from(successes + 1) / Decimal::from(self.outcomes.len() + 2))
    }

    fn report(&mut self, available: bool, detail: String) {
        self.reported_available = Some(available);
        let report = RailReport {
            rail: self.connector.capabilities().rail.clone(),
            available,
            latency_ms: self.latency_ewma_ms.map(|value| u32::try_from(value).unwrap_or(u32::MAX)),
            success_probability: self.success_probability(),
            detail,
        };
        let _ = self.routing.send_message(RoutingMsg::Report(report));
    }
}

impl Actor for RailActor {
    type Msg = RailMsg;
    type State = RailState;
    type Arguments = RailArgs;

    async fn pre_start(&self, myself: ActorRef<RailMsg>, args: RailArgs) -> Result<RailState, ActorProcessingErr> {
        // Probes bypass the mailbox bound: they are the rail's heartbeat.
        myself.send_interval(args.probe_every, || RailMsg::Probe);
        let _ = myself.send_message(RailMsg::Probe);
        Ok(RailState {
            connector: args.connector,
            routing: args.routing,
            depth: args.depth,
            probes: args.probes,
            latency_ewma_ms: None,
            outcomes: std::collections::VecDeque::new(),
            reported_available: None,
            healthy_probes: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RailMsg>,
        message: RailMsg,
        state: &mut RailState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RailMsg::Probe => {
                let started = std::time::Instant::now();
                let health = state.connector.health().await;
                if let Some(observer) = state.probes.get() {
                    let rail = &state.connector.capabilities().rail;
                    observer(rail, health.available, started.elapsed());
                }
                if health.available {
                    state.healthy_probes = state.healthy_probes.saturating_add(1);
                    let recovering = state.reported_available == Some(false);
                    if !recovering || state.healthy_probes >= RECOVERY_PROBES {
                        state.report(true, health.detail);
                    }
                } else {
                    state.healthy_probes = 0;
                    state.report(false, health.detail);
                }
            }
            RailMsg::Outcome { success, elapsed } => {
                state.depth.fetch_sub(1, Ordering::AcqRel);
                let sample = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
                state.latency_ewma_ms = Some(match state.latency_ewma_ms {
                    None => sample,
                    Some(average) => average - average / 8 + sample / 8,
                });
                if state.outcomes.len() >= OUTCOME_WINDOW {
                    state.outcomes.pop_front();
                }
                state.outcomes.push_back(success);
            }
            RailMsg::Crash => {
                state.depth.fetch_sub(1, Ordering::AcqRel);
                return Err("rail actor crashed on request".into());
            }
        }
        Ok(())
    }
}

pub struct RailSupervisorArgs {
    pub rails: Vec<(Arc<dyn Connector>, RailHandle)>,
    pub routing: ActorRef<RoutingMsg>,
    pub probe_every: Duration,
}

pub struct SupervisedRail {
    connector: Arc<dyn Connector>,
    handle: RailHandle,
    cell: Option<ActorCell>,
    restarts: u32,
}

pub struct RailSupervisorState {
    rails: BTreeMap<String, SupervisedRail>,
    routing: ActorRef<RoutingMsg>,
    probe_every: Duration,
}

pub enum RailSupervisorMsg {
    Restart(String),
    Restarts { reply: ractor::RpcReplyPort<BTreeMap<String, u32>> },
}

/// Supervises the rail actors of one kind.
pub struct RailSupervisor;

async fn spawn_rail(
    supervisor: &ActorCell,
    rail: &mut SupervisedRail,
    routing: &ActorRef<RoutingMsg>,
    probe_every: Duration,
) -> Result<(), ActorProcessingErr> {
    let args = RailArgs {
        connector: rail.connector.clone(),
        routing: routing.clone(),
        probe_every,
        depth: rail.handle.depth.clone(),
        probes: rail.handle.probes.clone(),
    };
    rail.handle.depth.store(0, Ordering::Release);
    let (actor, _) = Actor::spawn_linked(None, RailActor, args, supervisor.clone()).await?;
    rail.cell = Some(actor.get_cell());
    rail.handle.set(Some(actor));
    Ok(())
}

impl Actor for RailSupervisor {
    type Msg = RailSupervisorMsg;
    type State = RailSupervisorState;
    type Arguments = RailSupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RailSupervisorMsg>,
        args: RailSupervisorArgs,
    ) -> Result<RailSupervisorState, ActorProcessingErr> {
        let mut rails = BTreeMap::new();
        for (connector, handle) in args.rails {
            let mut rail = SupervisedRail { connector, handle, cell: None, restarts: 0 };
            spawn_rail(&myself.get_cell(), &mut rail, &args.routing, args.probe_every).await?;
            rails.insert(rail.handle.rail.clone(), rail);
        }
        Ok(RailSupervisorState { rails, routing: args.routing, probe_every: args.probe_every })
    }

    async fn handle(
        &self,
        myself: ActorRef<RailSupervisorMsg>,
        message: RailSupervisorMsg,
        state: &mut RailSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RailSupervisorMsg::Restart(rail) => {
                let routing = state.routing.clone();
                let probe_every = state.probe_every;
                if let Some(entry) = state.rails.get_mut(&rail) {
                    spawn_rail(&myself.get_cell(), entry, &routing, probe_every).await?;
                }
            }
            RailSupervisorMsg::Restarts { reply } => {
                let _ = reply.send(state.rails.iter().map(|(rail, entry)| (rail.clone(), entry.restarts)).collect());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RailSupervisorMsg>,
        event: SupervisionEvent,
        state: &mut RailSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let failed = match &event {
            SupervisionEvent::ActorFailed(cell, _) => Some(cell.get_id()),
            SupervisionEvent::ActorTerminated(cell, _, _) => Some(cell.get_id()),
            _ => None,
        };
        let Some(id) = failed else { return Ok(()) };
        let Some((rail, entry)) =
            state.rails.iter_mut().find(|(_, entry)| entry.cell.as_ref().is_some_and(|cell| cell.get_id() == id))
        else {
            return Ok(());
        };
        entry.cell = None;
        entry.handle.set(None);
        if entry.restarts >= RESTARTS_MAX {
            // Give up: the rail stays out of routing until an operator intervenes.
            let report = RailReport {
                rail: rail.clone(),
                available: false,
                latency_ms: None,
                success_probability: None,
                detail: format!("rail actor failed {} times; not restarted", entry.restarts + 1),
            };
            let _ = state.routing.send_message(RoutingMsg::Report(report));
            return Ok(());
        }
        let delay = RESTART_BACKOFF.saturating_mul(2_u32.saturating_pow(entry.restarts));
        entry.restarts += 1;
        let rail = rail.clone();
        myself.send_after(delay, move || RailSupervisorMsg::Restart(rail));
        Ok(())
    }
}

/// Rails of the registry, grouped by kind, each with a handle the engine's observer uses.
pub fn handles(registry: &railyard_connector::Registry) -> BTreeMap<String, RailHandle> {
    let probes = ProbeSink::default();
    registry.rails().map(|rail| (rail.to_string(), RailHandle::new(rail, probes.clone()))).collect()
}
