//! The saga driver: keeps up to [`DriverOptions::concurrent_max`] sagas running at once, each on
//! its own task, and starts the next one as soon as a slot frees.
//!
//! Work arrives two ways. The intake *kicks* a payout the moment its accept is committed, so a
//! saga starts without waiting for a scan; and every [`DriverOptions::scan_every`] the driver asks
//! the store for due sagas (after a restart, after an inquiry's backoff, a kick that found every
//! slot taken, another engine's lapsed lease). A payout already running here is never started
//! twice; across engines the saga's lease decides.
//!
//! Before, a pass of [`crate::Engine::resume_due`] ran up to 500 sagas and the next pass waited for
//! the slowest of them: one rail timing out held up every payout behind it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};

use crate::{Engine, EngineError};

/// Sagas running at once in one engine, by default (`railyard serve --sagas-running`). More lets
/// two groups of 256 be at different steps when that many payouts wait (on PostgreSQL ~+26 % end
/// to end at 512 with 512 clients; on SQLite no gain) and costs accept latency when the API and
/// settlement share the cores (the 202's p50 and p99 rose at 512). See BENCHMARKS.md.
pub const SAGAS_RUNNING_MAX: usize = 256;
/// The most `--sagas-running` accepts: each running saga holds a slot, its task and its share of
/// a group's memory, and as many again are kept for sagas taken over from a dead engine.
pub const SAGAS_RUNNING_CEILING: usize = 4_096;
/// Kicks waiting for the driver; a kick that does not fit is dropped (the scan finds the payout).
pub const KICKS_MAX: usize = 8_192;
/// Kicked groups formed and not yet past their submit transaction. A group's writer time is
/// mostly fixed (a dozen statements and a commit whatever its size), so while one group waits for
/// or holds the writer the payouts accepted meanwhile wait in the kick queue and go together as
/// the next group, instead of every intake group becoming a submit group of its own: at ~1,000
/// payouts/s that was groups of ~7 and a writer busy all the time.
pub const SUBMITS_FORMING_MAX: usize = 1;

#[derive(Debug, Clone)]
pub struct DriverOptions {
    pub concurrent_max: usize,
    pub scan_every: Duration,
    /// Run the sagas that arrive together as groups ([`Engine::run_group`]: the common steps of
    /// many payouts in one transaction) instead of one task each.
    pub grouped: bool,
    /// Where the sagas run: the runtime that settles, apart from the one that answers the API
    /// (`railyard serve` gives its settling threads a lower priority, so an accept is not queued
    /// behind a backlog's settling for the cores). `None`: the runtime that starts the driver.
    pub runtime: Option<tokio::runtime::Handle>,
}

impl Default for DriverOptions {
    fn default() -> DriverOptions {
        DriverOptions {
            concurrent_max: SAGAS_RUNNING_MAX,
            scan_every: Duration::from_millis(20),
            grouped: true,
            runtime: None,
        }
    }
}

struct Shared {
    engine: Arc<Engine>,
    /// Where the sagas, the scan and the heartbeat run ([`DriverOptions::runtime`]).
    runtime: tokio::runtime::Handle,
    grouped: bool,
    running: Mutex<HashSet<String>>,
    /// Payouts whose kick waits in the queue (at most [`KICKS_MAX`]). The scan leaves them to
    /// their kick: a payout the scan started while its kick waited was started a second time when
    /// the kick came, mostly after it had completed, for a claim and a read on the writer that
    /// found it at rest. With more payouts waiting than slots that was half of them again
    /// (10,496 such passes for 20,000 payouts at 512 clients and 256 slots) and a sixth of the
    /// throughput.
    queued: Mutex<HashSet<String>>,
    /// Saga passes started ([`Driver::started`]).
    started: std::sync::atomic::AtomicU64,
    /// Passes that ended while the scan's query ran (`None` between scans). The query may have
    /// read such a payout before its pass committed: due, and not running by the time the answer
    /// came, it would be started again to find it at rest (~50 of 20,000 payouts in a run).
    ended_in_scan: Mutex<Option<HashSet<String>>>,
    slots: Arc<Semaphore>,
    /// Slots of their own for sagas taken over from a dead engine, so they need not wait for the
    /// backlog to free ordinary slots (bounded: a dead engine ran at most this many).
    takeover_slots: Arc<Semaphore>,
    /// Turns for kicked groups until their submit commits ([`SUBMITS_FORMING_MAX`]).
    submit_turns: Arc<Semaphore>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn queued(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.queued.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `id`'s kick has left the queue.
    fn dequeued(&self, id: &str) {
        self.queued().remove(id);
    }

    /// The passes of `ids` are over.
    fn ended<'a>(&self, ids: impl IntoIterator<Item = &'a String>) {
        let mut ended = self.ended_in_scan.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(ended) = ended.as_mut() {
            ended.extend(ids.into_iter().cloned());
        }
    }

    fn count_started(&self, sagas: usize) {
        self.started.fetch_add(sagas as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts `id` on its own task unless it is running here already.
    fn start(self: &Arc<Self>, id: String, slot: tokio::sync::OwnedSemaphorePermit) {
        if !self.lock().insert(id.clone()) {
            return;
        }
        self.count_started(1);
        let shared = self.clone();
        self.runtime.spawn(async move {
            match shared.engine.run(&id).await {
                Ok(_) | Err(EngineError::Leased(_)) => {}
                // The engine stops as a crash would (tests only).
                Err(EngineError::Crashed(_)) => {}
                // One saga's trouble must not starve the others: log it; the scan retries it.
                Err(error) => tracing::error!(payout_id = %id, "saga pass failed: {error}"),
            }
            shared.ended([&id]);
            shared.lock().remove(&id);
            drop(slot);
        });
    }

    /// Starts `ids` as one group on its own task ([`Engine::run_group`]), each with its slot;
    /// those running here already are left out.
    fn start_group(
        self: &Arc<Self>,
        ids: Vec<String>,
        slots: Vec<tokio::sync::OwnedSemaphorePermit>,
        turn: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let ids: Vec<String> = {
            let mut running = self.lock();
            ids.into_iter().filter(|id| running.insert(id.clone())).collect()
        };
        if ids.is_empty() {
            return;
        }
        self.count_started(ids.len());
        let shared = self.clone();
        self.runtime.spawn(async move {
            for (id, result) in shared.engine.run_group_in_turn(&ids, turn).await {
                match result {
                    Ok(_) | Err(EngineError::Leased(_)) | Err(EngineError::Crashed(_)) => {}
                    Err(error) => tracing::error!(payout_id = %id, "saga pass failed: {error}"),
                }
            }
            shared.ended(&ids);
            let mut running = shared.lock();
            for id in &ids {
                running.remove(id);
            }
            drop(running);
            drop(slots);
        });
    }

    /// Starts sagas a dead engine left mid-flight into the takeover slots.
    async fn take_over(self: &Arc<Self>) {
        let free = self.takeover_slots.available_permits();
        if free == 0 {
            return;
        }
        let ids = match self.engine.taken_over_ids(i64::try_from(free).unwrap_or(i64::MAX)).await {
            Ok(ids) => ids,
            Err(error) => {
                tracing::warn!("looking for sagas to take over failed: {error}");
                return;
            }
        };
        for id in ids {
            let Ok(slot) = self.takeover_slots.clone().try_acquire_owned() else { return };
            self.start(id, slot);
        }
    }

    /// Starts due sagas into the free slots.
    async fn scan(self: &Arc<Self>) {
        let free = self.slots.available_permits();
        if free == 0 {
            return;
        }
        // Those running here come back from the query too. So do those whose kick is queued, and
        // the limit does not count them: they are the oldest due, their kicks start them in that
        // order, and with thousands queued (a burst past KICKS_MAX) a scan that read past them all
        // every period cost more than it found.
        let running = self.lock().len();
        *self.ended_in_scan.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(HashSet::new());
        let found = self.engine.due_ids(i64::try_from(free + running).unwrap_or(i64::MAX)).await;
        let ended =
            self.ended_in_scan.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take().unwrap_or_default();
        let ids = match found {
            Ok(ids) => ids,
            Err(error) => {
                tracing::warn!("looking for due sagas failed: {error}");
                return;
            }
        };
        let mut group = Vec::new();
        let mut slots = Vec::new();
        for id in ids {
            // A pass that ended meanwhile may have been read before it committed: a saga it left
            // due is found by the next scan.
            if self.lock().contains(&id) || self.queued().contains(&id) || ended.contains(&id) {
                continue;
            }
            let Ok(slot) = self.slots.clone().try_acquire_owned() else { break };
            if !self.grouped {
                self.start(id, slot);
                continue;
            }
            group.push(id);
            slots.push(slot);
            if group.len() == crate::group::GROUP_SAGAS_MAX {
                self.start_group(std::mem::take(&mut group), std::mem::take(&mut slots), None);
            }
        }
        if !group.is_empty() {
            self.start_group(group, slots, None);
        }
    }
}

/// A handle on the running driver.
#[derive(Clone)]
pub struct Driver {
    kicks: mpsc::Sender<String>,
    stop: Arc<watch::Sender<bool>>,
    shared: Arc<Shared>,
}

impl Driver {
    /// Starts the driver on [`DriverOptions::runtime`] (by default the current runtime).
    pub fn start(engine: Arc<Engine>, options: DriverOptions) -> Driver {
        let (kicks, mut kicked) = mpsc::channel::<String>(KICKS_MAX);
        let (stop, mut stopped) = watch::channel(false);
        let runtime = options.runtime.clone().unwrap_or_else(tokio::runtime::Handle::current);
        let shared = Arc::new(Shared {
            engine,
            runtime: runtime.clone(),
            grouped: options.grouped,
            running: Mutex::new(HashSet::new()),
            queued: Mutex::new(HashSet::new()),
            started: std::sync::atomic::AtomicU64::new(0),
            ended_in_scan: Mutex::new(None),
            slots: Arc::new(Semaphore::new(options.concurrent_max.max(1))),
            takeover_slots: Arc::new(Semaphore::new(options.concurrent_max.max(1))),
            submit_turns: Arc::new(Semaphore::new(SUBMITS_FORMING_MAX)),
        });
        let driver = Driver { kicks, stop: Arc::new(stop), shared: shared.clone() };
        // Alive while the driver runs: a dead engine's sagas are taken over within
        // ENGINE_ALIVE_FOR, not after their leases (see Engine::heartbeat).
        // With each beat, sagas a dead engine left mid-flight start on the takeover slots.
        let beating = shared.clone();
        let mut heartbeat_stopped = driver.stop.subscribe();
        runtime.spawn(async move {
            let mut beat = tokio::time::interval(crate::ENGINE_HEARTBEAT_EVERY / 2);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut announced_at: Option<tokio::time::Instant> = None;
            loop {
                tokio::select! {
                    _ = beat.tick() => {
                        if announced_at.is_none_or(|at| at.elapsed() >= crate::ENGINE_HEARTBEAT_EVERY) {
                            announced_at = Some(tokio::time::Instant::now());
                            if let Err(error) = beating.engine.heartbeat().await {
                                tracing::warn!("announcing the engine alive failed: {error}");
                            }
                        }
                        beating.take_over().await;
                    }
                    _ = heartbeat_stopped.changed() => break,
                }
            }
        });
        runtime.spawn(async move {
            let mut scan = tokio::time::interval(options.scan_every);
            scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // Wait for a free slot first: with none, kicks queue (and overflow to the scan).
                let slot = tokio::select! {
                    slot = shared.slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    _ = stopped.changed() => break,
                };
                tokio::select! {
                    kick = kicked.recv() => match kick {
                        Some(id) if shared.grouped => {
                            shared.dequeued(&id);
                            // The group forms once the one before it has committed its submit;
                            // whatever is kicked meanwhile joins it, as far as slots allow.
                            let turn = tokio::select! {
                                turn = shared.submit_turns.clone().acquire_owned() => match turn {
                                    Ok(turn) => turn,
                                    Err(_) => break,
                                },
                                _ = stopped.changed() => break,
                            };
                            let (mut group, mut slots) = (vec![id], vec![slot]);
                            while group.len() < crate::group::GROUP_SAGAS_MAX {
                                let Ok(slot) = shared.slots.clone().try_acquire_owned() else { break };
                                match kicked.try_recv() {
                                    Ok(id) => {
                                        shared.dequeued(&id);
                                        group.push(id);
                                        slots.push(slot);
                                    }
                                    Err(_) => break,
                                }
                            }
                            shared.start_group(group, slots, Some(turn));
                        }
                        Some(id) => {
                            shared.dequeued(&id);
                            shared.start(id, slot);
                        }
                        None => break,
                    },
                    _ = scan.tick() => {
                        drop(slot);
                        shared.scan().await;
                    }
                    _ = stopped.changed() => break,
                }
            }
        });
        driver
    }

    /// Asks for `id` to run now (its accept was just committed). Never waits: when the queue is
    /// full the kick is dropped and the next scan finds the payout.
    pub fn kick(&self, id: &str) {
        // Marked queued before it is sent, under the lock, so the driver cannot take the kick
        // before the mark and leave the mark behind.
        let mut queued = self.shared.queued();
        queued.insert(id.to_string());
        if self.kicks.try_send(id.to_string()).is_err() {
            queued.remove(id);
        }
    }

    /// The payouts `ids` are about to be committed and then kicked: the scan leaves them alone
    /// from now on, or it could start them between the commit and the kick (the journal's mover
    /// flushes in between; the direct intake, PostgreSQL's, kicks right after its commit and does
    /// not call this). Each is followed by [`Driver::kick`], or by [`Driver::forget_kicks`] when
    /// it was not committed after all.
    pub fn expect_kicks<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        self.shared.queued().extend(ids.into_iter().map(str::to_string));
    }

    /// Withdraws [`Driver::expect_kicks`] for `ids` that will not be kicked.
    pub fn forget_kicks<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut queued = self.shared.queued();
        for id in ids {
            queued.remove(id);
        }
    }

    /// Sagas running now.
    pub fn running(&self) -> usize {
        self.shared.lock().len()
    }

    /// Saga passes started since the driver started (a group's members each count), by kicks,
    /// scans and takeovers together.
    pub fn started(&self) -> u64 {
        self.shared.started.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops starting sagas and waits (up to `grace`) for the running ones to finish their pass.
    /// What is left is durable and resumes on the next start.
    pub async fn stop_within(&self, grace: Duration) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        while self.running() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if self.running() == 0 {
            // Every saga released its lease; withdraw the announcement so nothing waits on it.
            if let Err(error) = self.shared.engine.retire().await {
                tracing::warn!("withdrawing the engine's announcement failed: {error}");
            }
        }
    }

    /// [`Driver::stop_within`] with ten seconds' grace.
    pub async fn stop(&self) {
        self.stop_within(Duration::from_secs(10)).await;
    }
}
