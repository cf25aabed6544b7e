//! Railyard's actor runtime on ractor and tokio.
//!
//! ```text
//! root
//! ├── routing            owns live rail state, publishes routing snapshots (watch channel)
//! ├── rails:card         supervisor: restarts with backoff, gives up after RESTARTS_MAX
//! │   └── rail actor     one per connector: probes, outcome statistics, reports to routing
//! ├── rails:instant
//! ├── rails:cbdc
//! └── sagas              coordinator: drives due sagas through the engine
//! ```
//!
//! ractor's mailboxes are unbounded; every queue here that traffic can fill has a named bound
//! enforced by the sender (`RAIL_MAILBOX_MAX`, the intake's `INTAKE_QUEUE_MAX`).

pub mod bench;
pub mod change;
pub mod fx;
pub mod rail;
pub mod routing;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use railyard_config::{RailKind, TreasuryConfig};
use railyard_connector::Registry;
use railyard_fx::FxBook;
use railyard_saga::driver::{Driver, DriverOptions};
use railyard_saga::{Engine, OutcomeObserver};
use tokio::sync::watch;

use crate::rail::{RailHandle, RailMsg, RailSupervisor, RailSupervisorArgs, RailSupervisorMsg};
use crate::routing::{RoutingActor, RoutingArgs, RoutingMsg, Snapshot, SnapshotRouting, build_snapshot};

/// Forwards the saga's leg outcomes to the rail actors (bounded; dropped when a mailbox is full).
pub struct RailObserver {
    handles: BTreeMap<String, RailHandle>,
}

impl OutcomeObserver for RailObserver {
    fn leg_outcome(&self, rail: &str, success: bool, elapsed: Duration) {
        if let Some(handle) = self.handles.get(rail) {
            handle.send(RailMsg::Outcome { success, elapsed });
        }
    }
}

/// How long a stopping coordinator waits for running sagas to finish their pass.
pub const COORDINATOR_STOP_GRACE: Duration = Duration::from_secs(2);

pub enum CoordinatorMsg {
    /// Tells how many sagas are running now.
    Running(ractor::RpcReplyPort<usize>),
}

pub struct CoordinatorState {
    driver: Driver,
}

/// Owns the saga driver (railyard_saga::driver): up to its bound of sagas run at once, each on its
/// own task, started when the intake commits them or when a scan finds them due. Linked to the
/// root; when it stops, no new saga starts and the running ones finish their pass.
pub struct SagaCoordinator;

impl Actor for SagaCoordinator {
    type Msg = CoordinatorMsg;
    type State = CoordinatorState;
    type Arguments = Driver;

    async fn pre_start(
        &self,
        _myself: ActorRef<CoordinatorMsg>,
        driver: Driver,
    ) -> Result<CoordinatorState, ActorProcessingErr> {
        Ok(CoordinatorState { driver })
    }

    async fn handle(
        &self,
        _myself: ActorRef<CoordinatorMsg>,
        message: CoordinatorMsg,
        state: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CoordinatorMsg::Running(reply) => {
                let _ = reply.send(state.driver.running());
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<CoordinatorMsg>,
        state: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        // Sagas still running after the grace are durable and resume on the next start.
        state.driver.stop_within(COORDINATOR_STOP_GRACE).await;
        Ok(())
    }
}

/// The root supervisor. Routing, the rail supervisors and the saga coordinator are linked to it.
/// A routing or supervisor failure is not survivable in process (the snapshot or a whole kind of
/// rail would be gone): the root stops, and `railyard serve` exits non-zero for its own
/// supervisor (systemd, Kubernetes) to restart it; every saga resumes from the database.
pub struct Root;

impl Actor for Root {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<()>, _args: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        event: SupervisionEvent,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(_, _) | SupervisionEvent::ActorTerminated(_, _, _) = event {
            myself.stop(Some("a routing, rail supervisor or saga coordinator actor stopped".into()));
        }
        Ok(())
    }
}

/// A running actor system.
pub struct Runtime {
    pub root: ActorRef<()>,
    pub routing: ActorRef<RoutingMsg>,
    pub supervisors: BTreeMap<RailKind, ActorRef<RailSupervisorMsg>>,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub rails: BTreeMap<String, RailHandle>,
    root_handle: tokio::task::JoinHandle<()>,
}

/// How often each rail actor probes its rail. Four probes per 250 ms budget would be wasteful;
/// one every 100 ms keeps an outage's detection plus rebuild well inside 250 ms.
pub const PROBE_EVERY: Duration = Duration::from_millis(100);

/// How a [`Runtime`] starts.
#[derive(Clone)]
pub struct RuntimeOptions {
    /// How often each rail actor probes its rail.
    pub probe_every: Duration,
    /// Where routing records treasury changes (see [`change`]); `None` keeps them in memory.
    pub store: Option<railyard_store::Store>,
    /// Rails whose kill switch is engaged from the start.
    pub killed: BTreeSet<String>,
}

impl Default for RuntimeOptions {
    fn default() -> RuntimeOptions {
        RuntimeOptions { probe_every: PROBE_EVERY, store: None, killed: BTreeSet::new() }
    }
}

impl Runtime {
    pub async fn start(
        config: Arc<TreasuryConfig>,
        fx: Arc<FxBook>,
        registry: Registry,
        options: RuntimeOptions,
    ) -> Result<Runtime, String> {
        let RuntimeOptions { probe_every, store, killed } = options;
        let initial = build_snapshot(config.clone(), fx.clone(), &Default::default(), &killed, 0)?;
        let (publish, snapshots) = watch::channel(Arc::new(initial));
        let handles = rail::handles(&registry);
        let (root, root_handle) = Actor::spawn(None, Root, ()).await.map_err(|error| error.to_string())?;
        let routing_args = RoutingArgs { config: config.clone(), fx: fx.clone(), publish, store, killed };
        let (routing, _) = Actor::spawn_linked(None, RoutingActor, routing_args, root.get_cell())
            .await
            .map_err(|error| error.to_string())?;
        let mut supervisors = BTreeMap::new();
        for kind in RailKind::ALL {
            let rails: Vec<_> = config
                .rails
                .iter()
                .filter(|rail| rail.kind == kind)
                .filter_map(|rail| {
                    Some((registry.get(rail.id.as_str())?.clone(), handles.get(rail.id.as_str())?.clone()))
                })
                .collect();
            if rails.is_empty() {
                continue;
            }
            let supervisor_args = RailSupervisorArgs { rails, routing: routing.clone(), probe_every };
            let (supervisor, _) = Actor::spawn_linked(None, RailSupervisor, supervisor_args, root.get_cell())
                .await
                .map_err(|error| error.to_string())?;
            supervisors.insert(kind, supervisor);
        }
        Ok(Runtime { root, routing, supervisors, snapshots, rails: handles, root_handle })
    }

    /// Starts the FX actor, linked to the root.
    pub async fn start_fx(&self, config: Arc<TreasuryConfig>, every: Duration) -> Result<(), String> {
        let args = fx::FxArgs { config, routing: self.routing.clone(), every };
        Actor::spawn_linked(None, fx::FxActor, args, self.root.get_cell()).await.map_err(|error| error.to_string())?;
        Ok(())
    }

    pub fn routing_source(&self) -> Arc<SnapshotRouting> {
        Arc::new(SnapshotRouting::new(self.snapshots.clone()))
    }

    /// Sends every probe's result to `observer` (monitoring); only the first call takes effect.
    pub fn set_probe_observer(&self, observer: rail::ProbeObserver) -> bool {
        self.rails.values().next().is_some_and(|handle| handle.set_probe_observer(observer))
    }

    pub fn observer(&self) -> Arc<RailObserver> {
        Arc::new(RailObserver { handles: self.rails.clone() })
    }

    /// Starts the saga coordinator, linked to the root, with a driver that runs up to
    /// `options.concurrent_max` sagas at once and scans for due sagas every `options.scan_every`.
    /// Returns the driver too, for the intake to kick new payouts into.
    pub async fn start_coordinator(
        &self,
        engine: Arc<Engine>,
        options: DriverOptions,
    ) -> Result<(ActorRef<CoordinatorMsg>, Driver), String> {
        let driver = Driver::start(engine, options);
        let (coordinator, _) = Actor::spawn_linked(None, SagaCoordinator, driver.clone(), self.root.get_cell())
            .await
            .map_err(|error| error.to_string())?;
        Ok((coordinator, driver))
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    /// Stops every actor and waits for the root to finish.
    pub async fn stop(self) {
        self.root.stop(Some("shutdown".into()));
        let _ = self.root_handle.await;
    }
}
