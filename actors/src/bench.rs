//! Actor overhead (`railyard bench actors`): messages through a ractor actor behind our bounded
//! mailbox (the sender counts what is waiting and refuses past the bound, as `RailHandle::send`
//! does) against a raw bounded tokio channel and task doing the same work, in the same run.
//!
//! Two figures each: one-way messages (the sender does not wait for the handler) and round trips
//! (a request and its answer, as `ractor::call!` and a oneshot reply).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// The mailbox bound in the benchmark (the rail actors' bound, `RAIL_MAILBOX_MAX`).
pub const MAILBOX_MAX: usize = crate::rail::RAIL_MAILBOX_MAX;

#[derive(Debug, Clone, Serialize)]
pub struct OverheadReport {
    pub messages: usize,
    pub round_trips: usize,
    pub actor_one_way_ns: f64,
    pub channel_one_way_ns: f64,
    /// Actor ÷ channel, per one-way message.
    pub ratio_one_way: f64,
    pub actor_round_trip_ns: f64,
    pub channel_round_trip_ns: f64,
    /// Actor ÷ channel, per round trip.
    pub ratio_round_trip: f64,
}

enum Msg {
    Add(u64),
    Sum(RpcReplyPort<u64>),
    Echo(u64, RpcReplyPort<u64>),
}

struct Summer;

struct SummerState {
    sum: u64,
    depth: Arc<AtomicUsize>,
}

impl Actor for Summer {
    type Msg = Msg;
    type State = SummerState;
    type Arguments = Arc<AtomicUsize>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Msg>,
        depth: Arc<AtomicUsize>,
    ) -> Result<SummerState, ActorProcessingErr> {
        Ok(SummerState { sum: 0, depth })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Msg>,
        message: Msg,
        state: &mut SummerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            Msg::Add(value) => {
                state.sum = state.sum.wrapping_add(value);
                state.depth.fetch_sub(1, Ordering::AcqRel);
            }
            Msg::Sum(reply) => {
                let _ = reply.send(state.sum);
            }
            Msg::Echo(value, reply) => {
                let _ = reply.send(value);
            }
        }
        Ok(())
    }
}

/// Runs both paths with `messages` one-way messages and `round_trips` round trips each.
pub async fn run(messages: usize, round_trips: usize) -> Result<OverheadReport, String> {
    let expected: u64 = (0..messages as u64).fold(0, u64::wrapping_add);

    // Our path: a ractor actor, the sender keeping the bound.
    let depth = Arc::new(AtomicUsize::new(0));
    let (actor, handle) = Actor::spawn(None, Summer, depth.clone()).await.map_err(|error| error.to_string())?;
    let started = Instant::now();
    for value in 0..messages as u64 {
        // A full mailbox makes the sender wait here (the API would shed instead).
        while depth.fetch_add(1, Ordering::AcqRel) >= MAILBOX_MAX {
            depth.fetch_sub(1, Ordering::AcqRel);
            tokio::task::yield_now().await;
        }
        actor.send_message(Msg::Add(value)).map_err(|error| error.to_string())?;
    }
    let sum = ractor::call!(actor, Msg::Sum).map_err(|error| error.to_string())?;
    let actor_one_way = started.elapsed();
    if sum != expected {
        return Err(format!("the actor summed {sum}, expected {expected}"));
    }
    let started = Instant::now();
    for value in 0..round_trips as u64 {
        let echoed = ractor::call!(actor, Msg::Echo, value).map_err(|error| error.to_string())?;
        if echoed != value {
            return Err(format!("the actor echoed {echoed} for {value}"));
        }
    }
    let actor_round_trip = started.elapsed();
    actor.stop(None);
    let _ = handle.await;

    // Baseline: a bounded tokio channel and one task.
    let (sender, mut receiver) = mpsc::channel::<u64>(MAILBOX_MAX);
    let consumer = tokio::spawn(async move {
        let mut sum = 0_u64;
        while let Some(value) = receiver.recv().await {
            sum = sum.wrapping_add(value);
        }
        sum
    });
    let started = Instant::now();
    for value in 0..messages as u64 {
        sender.send(value).await.map_err(|error| error.to_string())?;
    }
    drop(sender);
    let sum = consumer.await.map_err(|error| error.to_string())?;
    let channel_one_way = started.elapsed();
    if sum != expected {
        return Err(format!("the channel task summed {sum}, expected {expected}"));
    }
    let (requests, mut inbox) = mpsc::channel::<(u64, oneshot::Sender<u64>)>(MAILBOX_MAX);
    let echo = tokio::spawn(async move {
        while let Some((value, reply)) = inbox.recv().await {
            let _ = reply.send(value);
        }
    });
    let started = Instant::now();
    for value in 0..round_trips as u64 {
        let (reply, answer) = oneshot::channel();
        requests.send((value, reply)).await.map_err(|error| error.to_string())?;
        let echoed = answer.await.map_err(|error| error.to_string())?;
        if echoed != value {
            return Err(format!("the channel task echoed {echoed} for {value}"));
        }
    }
    let channel_round_trip = started.elapsed();
    drop(requests);
    let _ = echo.await;

    let per = |elapsed: std::time::Duration, count: usize| elapsed.as_nanos() as f64 / count.max(1) as f64;
    let round = |value: f64| (value * 10.0).round() / 10.0;
    let (actor_one_way_ns, channel_one_way_ns) = (per(actor_one_way, messages), per(channel_one_way, messages));
    let (actor_round_trip_ns, channel_round_trip_ns) =
        (per(actor_round_trip, round_trips), per(channel_round_trip, round_trips));
    Ok(OverheadReport {
        messages,
        round_trips,
        actor_one_way_ns: round(actor_one_way_ns),
        channel_one_way_ns: round(channel_one_way_ns),
        ratio_one_way: (actor_one_way_ns / channel_one_way_ns.max(0.001) * 100.0).round() / 100.0,
        actor_round_trip_ns: round(actor_round_trip_ns),
        channel_round_trip_ns: round(channel_round_trip_ns),
        ratio_round_trip: (actor_round_trip_ns / channel_round_trip_ns.max(0.001) * 100.0).round() / 100.0,
    })
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_paths_deliver_every_message() {
        let report = super::run(5_000, 200).await.unwrap();
        assert_eq!((report.messages, report.round_trips), (5_000, 200));
        assert!(report.actor_one_way_ns > 0.0 && report.channel_one_way_ns > 0.0, "{report:?}");
    }
}

/// `railyard bench outage`: how long after a rail goes down routing stops using it.
#[derive(Debug, Clone, Serialize)]
pub struct OutageReport {
    pub rail: String,
    pub trials: usize,
    pub probe_every_ms: u64,
    /// Outage switched on → a published routing snapshot without the rail (its router built
    /// with the rail unavailable): probe over the connector's transport, rail actor, routing
    /// actor, rebuild, publish.
    pub ours_p50_ms: f64,
    pub ours_p99_ms: f64,
    pub ours_max_ms: f64,
    /// Baseline, same run, same trials: a bare task that reads the sandbox's outage switch
    /// directly at the same period and publishes on a watch channel (no transport, no actors,
    /// no rebuild): the least a detector polling at this period can take.
    pub baseline_p50_ms: f64,
    pub baseline_p99_ms: f64,
    pub baseline_max_ms: f64,
    /// ours ÷ baseline at p50.
    pub ratio_p50: f64,
    /// The target for ours at its worst.
    pub target_ms: u64,
}

/// Wait before an outage trial may start again after the rail recovered.
const OUTAGE_SETTLE: std::time::Duration = std::time::Duration::from_millis(50);
/// Longest a trial waits for either detector.
const OUTAGE_TRIAL_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `trials` outages of `rail` (its sandbox is `sandbox`) against the actor runtime started on
/// `config`, `fx` and `registry`, each at a different phase of the probe schedule.
pub async fn outage(
    config: Arc<railyard_config::TreasuryConfig>,
    fx: Arc<railyard_fx::FxBook>,
    registry: railyard_connector::Registry,
    sandbox: Arc<railyard_connector::sandbox::Sandbox>,
    rail: &str,
    trials: usize,
) -> Result<OutageReport, String> {
    use std::time::Duration;
    let probe_every = crate::PROBE_EVERY;
    let runtime = crate::Runtime::start(config, fx, registry, crate::RuntimeOptions::default()).await?;
    let ours_down = |runtime: &crate::Runtime| runtime.snapshot().live.get(rail).and_then(|state| state.available);
    // The baseline poller.
    let (publish, watched) = tokio::sync::watch::channel(false);
    let polled = sandbox.clone();
    let poller = tokio::spawn(async move {
        let mut tick = tokio::time::interval(probe_every);
        loop {
            tick.tick().await;
            let down = polled.faults.outage_at(chrono::Utc::now());
            publish.send_if_modified(|was| std::mem::replace(was, down) != down);
        }
    });
    let result = async {
        until("the rail available", || ours_down(&runtime) == Some(true)).await?;
        let (mut ours, mut baseline) = (Vec::with_capacity(trials), Vec::with_capacity(trials));
        for trial in 0..trials {
            // Each trial starts at another phase of both schedules.
            let phase = probe_every.mul_f64((trial % 20) as f64 / 20.0);
            tokio::time::sleep(OUTAGE_SETTLE + phase).await;
            let started = Instant::now();
            sandbox.set_outage(true);
            let (mut ours_at, mut baseline_at) = (None, None);
            until("the outage", || {
                if ours_at.is_none() && ours_down(&runtime) == Some(false) {
                    ours_at = Some(started.elapsed());
                }
                if baseline_at.is_none() && *watched.borrow() {
                    baseline_at = Some(started.elapsed());
                }
                ours_at.is_some() && baseline_at.is_some()
            })
            .await?;
            ours.extend(ours_at);
            baseline.extend(baseline_at);
            sandbox.set_outage(false);
            until("the recovery", || ours_down(&runtime) == Some(true) && !*watched.borrow()).await?;
        }
        Ok::<_, String>((ours, baseline))
    }
    .await;
    poller.abort();
    runtime.stop().await;
    let (mut ours, mut baseline) = result?;
    ours.sort();
    baseline.sort();
    let at = |sorted: &[Duration], per_mille: usize| -> f64 {
        let index = (sorted.len().saturating_sub(1) * per_mille).div_ceil(1000).min(sorted.len().saturating_sub(1));
        // Tenths of a millisecond: the polling loop's resolution is one millisecond.
        sorted.get(index).map_or(0.0, |value| (value.as_secs_f64() * 1e4).round() / 10.0)
    };
    let ours_p50_ms = at(&ours, 500);
    let baseline_p50_ms = at(&baseline, 500);
    Ok(OutageReport {
        rail: rail.to_string(),
        trials,
        probe_every_ms: u64::try_from(probe_every.as_millis()).unwrap_or(u64::MAX),
        ours_p50_ms,
        ours_p99_ms: at(&ours, 990),
        ours_max_ms: at(&ours, 1000),
        baseline_p50_ms,
        baseline_p99_ms: at(&baseline, 990),
        baseline_max_ms: at(&baseline, 1000),
        ratio_p50: if baseline_p50_ms > 0.0 { (ours_p50_ms / baseline_p50_ms * 100.0).round() / 100.0 } else { 0.0 },
        target_ms: 250,
    })
}

/// Polls `done` every millisecond (the timer's resolution) for at most [`OUTAGE_TRIAL_MAX`].
async fn until(what: &str, mut done: impl FnMut() -> bool) -> Result<(), String> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > OUTAGE_TRIAL_MAX {
            return Err(format!("{what} not seen within {OUTAGE_TRIAL_MAX:?}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    Ok(())
}
