//! Real-time monitoring for `railyard serve`: what the saga, the rail actors and the API report
//! is folded, once per tick, into
//!
//! - Prometheus metrics (`metrics` with the Prometheus exporter's recorder, no push gateway and no
//!   listener of its own: the API serves [`Monitor::render_metrics`] at `/metrics`);
//! - the dashboard's state ([`Monitor::status`]: one JSON document per tick, which the API streams
//!   as server-sent events);
//! - anomaly detection ([`anomaly`]): adaptive bands on each rail's probe latency and reject rate
//!   and each corridor's volume. An anomaly raises an alert (dashboard, audit log, webhook
//!   `anomaly.raised` to the treasury tenant) and, unless the deployment chose alerts only,
//!   de-weights the rail in routing until it recovers (`RoutingMsg::Deweight`, audited both ways).
//!
//! Reporting never blocks the reporter: events go through a bounded channel ([`EVENTS_MAX`]) and
//! are counted as dropped when it is full.

pub mod anomaly;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anomaly::{Change, Detector, Series, Side};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use ractor::ActorRef;
use railyard_actors::rail::RailHandle;
use railyard_actors::routing::{RoutingMsg, Snapshot};
use railyard_config::TreasuryConfig;
use railyard_core::Decimal;
use railyard_saga::intake::Intake;
use railyard_saga::{OutcomeObserver, PayoutMoved, State};
use railyard_store::Store;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

/// Events waiting for the monitor; beyond this they are dropped and counted.
pub const EVENTS_MAX: usize = 65_536;
/// Points of history kept for the dashboard's charts (five minutes at one per second).
pub const HISTORY_POINTS_MAX: usize = 300;
/// Latency samples kept per point and per rail for percentiles.
pub const SAMPLES_PER_POINT_MAX: usize = 512;
/// Recent leg latencies kept per rail for its p50/p99.
pub const RAIL_SAMPLES_MAX: usize = 1_024;
/// Routed payouts remembered per corridor for route shares.
pub const ROUTE_SHARE_WINDOW: usize = 500;
/// Alerts kept (active and cleared), oldest dropped first.
pub const ALERTS_MAX: usize = 100;
/// In-doubt payouts listed on the dashboard.
pub const IN_DOUBT_SHOWN_MAX: i64 = 20;
/// Legs a tick needs before its reject rate is a sample.
pub const REJECT_RATE_LEGS_MIN: u32 = 5;
/// Ticks without a leg after which a rail's reject-rate anomaly is cleared on trial (its weight
/// restored): with traffic routed away, only traffic can tell whether it recovered.
pub const REJECT_TRIAL_AFTER_TICKS: u32 = 60;

/// How the monitor samples and what it does about anomalies.
#[derive(Debug, Clone)]
pub struct Settings {
    pub tick: Duration,
    pub latency: Detector,
    pub reject_rate: Detector,
    pub volume: Detector,
    /// Success-probability factor applied to a misbehaving rail in routing; `None`: alert only.
    pub deweight: Option<Decimal>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            tick: Duration::from_secs(1),
            latency: Detector::LATENCY,
            reject_rate: Detector::REJECT_RATE,
            volume: Detector::VOLUME,
            deweight: Some(Decimal::new(5, 1)),
        }
    }
}

enum Event {
    Accepted(Duration),
    IntakeCommit(Duration),
    Shed,
    Leg { rail: String, success: bool, elapsed: Duration },
    Probe { rail: String, available: bool, elapsed: Duration },
    Moved { corridor: String, from: State, to: State, rails: String, age: Duration },
}

/// The handle the API and the runtime report to.
#[derive(Clone)]
pub struct Monitor {
    events: mpsc::Sender<Event>,
    dropped: Arc<AtomicU64>,
    status: watch::Receiver<Arc<String>>,
    prometheus: PrometheusHandle,
}

impl Monitor {
    fn send(&self, event: Event) {
        if self.events.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A payout was accepted (durable) after `elapsed`.
    pub fn accepted(&self, elapsed: Duration) {
        self.send(Event::Accepted(elapsed));
    }

    /// The intake committed a group of payouts durably in `elapsed` (its flush included).
    pub fn intake_committed(&self, elapsed: Duration) {
        self.send(Event::IntakeCommit(elapsed));
    }

    /// A request was shed (429/503) for lack of room.
    pub fn shed(&self) {
        self.send(Event::Shed);
    }

    /// The observer to give the saga engine, wrapping the one it had (the rail actors').
    pub fn observer(&self, inner: Option<Arc<dyn OutcomeObserver>>) -> Arc<dyn OutcomeObserver> {
        Arc::new(Observer { monitor: self.clone(), inner })
    }

    /// The probe observer to give the runtime.
    pub fn probe_observer(&self) -> railyard_actors::rail::ProbeObserver {
        let monitor = self.clone();
        Arc::new(move |rail: &str, available: bool, elapsed: Duration| {
            monitor.send(Event::Probe { rail: rail.into(), available, elapsed })
        })
    }

    /// The dashboard state, replaced every tick (JSON text).
    pub fn status(&self) -> watch::Receiver<Arc<String>> {
        self.status.clone()
    }

    /// Every metric in the Prometheus text exposition format.
    pub fn render_metrics(&self) -> String {
        self.prometheus.render()
    }
}

struct Observer {
    monitor: Monitor,
    inner: Option<Arc<dyn OutcomeObserver>>,
}

impl OutcomeObserver for Observer {
    fn leg_outcome(&self, rail: &str, success: bool, elapsed: Duration) {
        if let Some(inner) = &self.inner {
            inner.leg_outcome(rail, success, elapsed);
        }
        self.monitor.send(Event::Leg { rail: rail.into(), success, elapsed });
    }

    fn payout_moved(&self, moved: &PayoutMoved<'_>) {
        if let Some(inner) = &self.inner {
            inner.payout_moved(moved);
        }
        let request = &moved.payout.request;
        let corridor = format!("{}-{}", request.source.code(), request.destination.code());
        let rails = moved
            .route
            .map(|route| {
                route.legs.iter().filter(|leg| leg.kind == "rail").map(|leg| leg.operator.as_str()).collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .join(" > ");
        let age_micros = railyard_store::now_micros().saturating_sub(moved.payout.created_at).max(0);
        let age = Duration::from_micros(u64::try_from(age_micros).unwrap_or(0));
        self.monitor.send(Event::Moved { corridor, from: moved.from, to: moved.to, rails, age });
    }
}

/// What the monitor reads besides its events.
pub struct Sources {
    pub store: Store,
    pub config: Arc<TreasuryConfig>,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub routing: ActorRef<RoutingMsg>,
    pub rails: BTreeMap<String, RailHandle>,
    pub intake: Option<Intake>,
}

/// The monitor's task, not started yet: [`create`] hands out the [`Monitor`] first so the saga
/// engine and the runtime can be given its observers before the sources the task reads exist.
pub struct Starter {
    settings: Settings,
    recorder: PrometheusRecorder,
    receiver: mpsc::Receiver<Event>,
    publish: watch::Sender<Arc<String>>,
    dropped: Arc<AtomicU64>,
}

impl Starter {
    /// Starts the monitor task on the current runtime.
    pub fn start(self, sources: Sources) -> tokio::task::JoinHandle<()> {
        let state = Aggregate::new(sources, self.settings, self.dropped);
        tokio::spawn(run(state, self.recorder, self.receiver, self.publish))
    }
}

/// A monitor and its task, to be started with [`Starter::start`].
pub fn create(settings: Settings) -> Result<(Monitor, Starter), String> {
    // Finer between 5 and 25 ms, where an accept's p99 sits against its 10 ms target.
    let seconds =
        [0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
        .map_err(|error| error.to_string())?
        .build_recorder();
    let prometheus = recorder.handle();
    let (events, receiver) = mpsc::channel(EVENTS_MAX);
    let (publish, status) = watch::channel(Arc::new(String::from("{}")));
    let dropped = Arc::new(AtomicU64::new(0));
    let monitor = Monitor { events, dropped: dropped.clone(), status, prometheus };
    Ok((monitor, Starter { settings, recorder, receiver, publish, dropped }))
}

#[derive(Default)]
struct Point {
    at: i64,
    accepted: u64,
    completed: u64,
    failed: u64,
    accept_ms: Vec<u32>,
    completion_ms: Vec<u32>,
}

struct RailStats {
    recent_ms: VecDeque<u32>,
    tick_legs: u32,
    tick_rejects: u32,
    tick_probe_ms: Vec<u32>,
    quiet_ticks: u32,
    last_probe_ms: Option<u32>,
    legs: u64,
    rejects: u64,
    latency: Series,
    reject_rate: Series,
    deweighted: bool,
}

impl RailStats {
    fn new() -> RailStats {
        RailStats {
            recent_ms: VecDeque::new(),
            tick_legs: 0,
            tick_rejects: 0,
            tick_probe_ms: Vec::new(),
            quiet_ticks: 0,
            last_probe_ms: None,
            legs: 0,
            rejects: 0,
            latency: Series::new(Side::Above),
            reject_rate: Series::new(Side::Above),
            deweighted: false,
        }
    }
}

struct CorridorStats {
    tick_count: u32,
    total: u64,
    volume: Series,
    routes: VecDeque<String>,
}

#[derive(Debug, Clone)]
struct Alert {
    id: String,
    kind: &'static str,
    subject: String,
    message: String,
    raised_at: chrono::DateTime<chrono::Utc>,
    cleared_at: Option<chrono::DateTime<chrono::Utc>>,
    action: Option<String>,
}

struct Aggregate {
    sources: Sources,
    settings: Settings,
    dropped: Arc<AtomicU64>,
    points: VecDeque<Point>,
    current: Point,
    rails: BTreeMap<String, RailStats>,
    corridors: BTreeMap<String, CorridorStats>,
    alerts: VecDeque<Alert>,
    alert_sequence: u64,
    shed: u64,
    totals: BTreeMap<&'static str, u64>,
    treasury_tenant: Option<String>,
    slow_reads: Option<(Instant, Value, Value, Value)>,
    anomalies: BTreeMap<&'static str, u64>,
    pending: Vec<Metric>,
}

/// A metric set during a tick, recorded once the tick's awaits are over (the recorder is installed
/// only around synchronous code).
enum Metric {
    Gauge(&'static str, Vec<metrics::Label>, f64),
    Counter(&'static str, Vec<metrics::Label>, u64),
}

fn label(key: &'static str, value: impl Into<String>) -> metrics::Label {
    metrics::Label::new(key, value.into())
}

fn record(metrics: Vec<Metric>) {
    for metric in metrics {
        match metric {
            Metric::Gauge(name, labels, value) => metrics::gauge!(name, labels).set(value),
            Metric::Counter(name, labels, value) => metrics::counter!(name, labels).absolute(value),
        }
    }
}

fn decimal_f64(value: impl ToString) -> f64 {
    value.to_string().parse::<f64>().unwrap_or(0.0)
}

fn percentile(samples: &mut [u32], quantile: f64) -> Option<u32> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    // Nearest rank.
    let rank = ((quantile * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    Some(samples[rank - 1])
}

fn millis(elapsed: Duration) -> u32 {
    u32::try_from(elapsed.as_millis()).unwrap_or(u32::MAX)
}

fn push_bounded<T>(samples: &mut Vec<T>, value: T) {
    if samples.len() < SAMPLES_PER_POINT_MAX {
        samples.push(value);
    }
}

impl Aggregate {
    fn new(sources: Sources, settings: Settings, dropped: Arc<AtomicU64>) -> Aggregate {
        let rails = sources.config.rails.iter().map(|rail| (rail.id.to_string(), RailStats::new())).collect();
        let treasury_tenant = railyard_treasury::liquidity::treasury_tenant(&sources.config);
        Aggregate {
            sources,
            settings,
            dropped,
            points: VecDeque::new(),
            current: Point { at: chrono::Utc::now().timestamp_millis(), ..Point::default() },
            rails,
            corridors: BTreeMap::new(),
            alerts: VecDeque::new(),
            alert_sequence: 0,
            shed: 0,
            totals: BTreeMap::new(),
            treasury_tenant,
            slow_reads: None,
            anomalies: BTreeMap::new(),
            pending: Vec::new(),
        }
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Accepted(elapsed) => {
                self.current.accepted += 1;
                *self.totals.entry("accepted").or_default() += 1;
                push_bounded(&mut self.current.accept_ms, millis(elapsed));
                metrics::histogram!("railyard_accept_latency_seconds").record(elapsed.as_secs_f64());
            }
            Event::IntakeCommit(elapsed) => {
                metrics::histogram!("railyard_intake_commit_seconds").record(elapsed.as_secs_f64());
            }
            Event::Shed => {
                self.shed += 1;
                metrics::counter!("railyard_requests_shed_total").increment(1);
            }
            Event::Leg { rail, success, elapsed } => {
                metrics::counter!("railyard_rail_legs_total", "rail" => rail.clone(), "outcome" => if success { "executed" } else { "rejected" }).increment(1);
                metrics::histogram!("railyard_rail_leg_latency_seconds", "rail" => rail.clone())
                    .record(elapsed.as_secs_f64());
                let stats = self.rails.entry(rail).or_insert_with(RailStats::new);
                stats.tick_legs += 1;
                stats.legs += 1;
                if !success {
                    stats.tick_rejects += 1;
                    stats.rejects += 1;
                }
                if stats.recent_ms.len() >= RAIL_SAMPLES_MAX {
                    stats.recent_ms.pop_front();
                }
                stats.recent_ms.push_back(millis(elapsed));
            }
            Event::Probe { rail, available, elapsed } => {
                let stats = self.rails.entry(rail).or_insert_with(RailStats::new);
                // An unavailable answer is an outage, which routing already handles; its timing
                // (often a timeout) would teach the latency baseline nothing useful.
                if available {
                    push_bounded(&mut stats.tick_probe_ms, millis(elapsed));
                    stats.last_probe_ms = Some(millis(elapsed));
                }
            }
            Event::Moved { corridor, from, to, rails, age } => {
                let status = to.as_str();
                metrics::counter!("railyard_payouts_total", "status" => status, "corridor" => corridor.clone())
                    .increment(1);
                let corridor_stats = self.corridors.entry(corridor.clone()).or_insert_with(|| CorridorStats {
                    tick_count: 0,
                    total: 0,
                    volume: Series::new(Side::Both),
                    routes: VecDeque::new(),
                });
                if from == State::Accepted {
                    corridor_stats.tick_count += 1;
                    corridor_stats.total += 1;
                }
                if to == State::Routed && !rails.is_empty() {
                    if corridor_stats.routes.len() >= ROUTE_SHARE_WINDOW {
                        corridor_stats.routes.pop_front();
                    }
                    corridor_stats.routes.push_back(rails.clone());
                    metrics::counter!("railyard_routes_total", "corridor" => corridor, "rails" => rails).increment(1);
                }
                match to {
                    State::Completed => {
                        self.current.completed += 1;
                        push_bounded(&mut self.current.completion_ms, millis(age));
                        metrics::histogram!("railyard_completion_latency_seconds").record(age.as_secs_f64());
                    }
                    State::Failed | State::Returned | State::Cancelled => self.current.failed += 1,
                    _ => {}
                }
                // Accepted is counted when the intake acknowledges, not on re-entry to the state.
                if to != State::Accepted {
                    *self.totals.entry(status).or_default() += 1;
                }
            }
        }
    }

    fn raise(&mut self, kind: &'static str, subject: &str, message: String) -> String {
        self.alert_sequence += 1;
        let id = format!("anm_{}_{}", chrono::Utc::now().timestamp_millis(), self.alert_sequence);
        if self.alerts.len() >= ALERTS_MAX {
            self.alerts.pop_front();
        }
        self.alerts.push_back(Alert {
            id: id.clone(),
            kind,
            subject: subject.into(),
            message,
            raised_at: chrono::Utc::now(),
            cleared_at: None,
            action: None,
        });
        let count = self.anomalies.entry(kind).or_default();
        *count += 1;
        self.pending.push(Metric::Counter("railyard_anomalies_total", vec![label("kind", kind)], *count));
        id
    }

    fn clear(&mut self, kind: &str, subject: &str) -> Option<Alert> {
        let alert = self
            .alerts
            .iter_mut()
            .rev()
            .find(|alert| alert.kind == kind && alert.subject == subject && alert.cleared_at.is_none())?;
        alert.cleared_at = Some(chrono::Utc::now());
        Some(alert.clone())
    }

    fn rail_anomalous(&self, rail: &str) -> bool {
        self.rails.get(rail).is_some_and(|stats| stats.latency.anomalous() || stats.reject_rate.anomalous())
    }

    /// Records the alert durably and tells the treasury; never fails the tick (a write error is
    /// logged and the alert still shows).
    async fn announce(&self, event: &str, alert: &Alert) {
        let detail = format!("{} {}: {}", alert.kind, alert.subject, alert.message);
        if let Err(error) = self.sources.store.audit("monitor", event, &detail).await {
            tracing::warn!(%error, "anomaly not written to the audit log");
        }
        let Some(tenant) = &self.treasury_tenant else { return };
        let body = json!({
            "event": event,
            "alert_id": alert.id,
            "kind": alert.kind,
            "subject": alert.subject,
            "message": alert.message,
            "action": alert.action,
            "occurred_at": chrono::Utc::now().to_rfc3339(),
        });
        let written =
            railyard_store::outbox::queue(self.sources.store.pool(), &alert.id, event, &body.to_string(), tenant).await;
        if let Err(error) = written {
            tracing::warn!(%error, "anomaly webhook not queued");
        }
    }

    async fn set_weight(&mut self, rail: &str, deweight: bool, reason: String) -> Option<String> {
        let factor = self.settings.deweight?;
        let stats = self.rails.get_mut(rail)?;
        if stats.deweighted == deweight {
            return None;
        }
        stats.deweighted = deweight;
        let factor = deweight.then_some(factor);
        let action = match factor {
            Some(factor) => format!("de-weighted in routing (success probability x {factor})"),
            None => "weight restored in routing".to_string(),
        };
        let detail = format!("{rail}: {action}: {reason}");
        if let Err(error) = self.sources.store.audit("monitor", "rail.weight", &detail).await {
            tracing::warn!(%error, "rail weight change not written to the audit log");
        }
        let message = RoutingMsg::Deweight { rail: rail.into(), factor, by: "monitor".into(), reason };
        if self.sources.routing.send_message(message).is_err() {
            tracing::warn!(rail, "routing actor gone: weight not changed");
        }
        tracing::warn!(rail, "{action}");
        Some(action)
    }

    async fn detect(&mut self) {
        let settings = self.settings.clone();
        let rails: Vec<String> = self.rails.keys().cloned().collect();
        for rail in rails {
            let mut changes = Vec::new();
            {
                let Some(stats) = self.rails.get_mut(&rail) else { continue };
                if let Some(median) = percentile(&mut stats.tick_probe_ms, 0.5) {
                    let change = stats.latency.observe(f64::from(median), &settings.latency);
                    changes.push(("latency", change, "ms"));
                }
                if stats.tick_legs >= REJECT_RATE_LEGS_MIN {
                    stats.quiet_ticks = 0;
                    let rate = f64::from(stats.tick_rejects) / f64::from(stats.tick_legs);
                    changes.push(("reject_rate", stats.reject_rate.observe(rate, &settings.reject_rate), ""));
                } else if stats.tick_legs == 0 {
                    stats.quiet_ticks = stats.quiet_ticks.saturating_add(1);
                    if stats.reject_rate.anomalous() && stats.quiet_ticks >= REJECT_TRIAL_AFTER_TICKS {
                        stats.reject_rate = Series::new(Side::Above);
                        changes.push(("reject_rate", Change::Cleared { value: 0.0, mean: 0.0 }, "trial"));
                    }
                }
                stats.tick_probe_ms.clear();
                stats.tick_legs = 0;
                stats.tick_rejects = 0;
            }
            for (kind, change, unit) in changes {
                match change {
                    Change::None => {}
                    Change::Raised { value, mean, high, .. } => {
                        let message = if kind == "latency" {
                            format!("probe latency {value:.0} {unit}, usual {mean:.0} {unit} (band up to {high:.0})")
                        } else {
                            format!(
                                "reject rate {:.0}%, usual {:.0}% (band up to {:.0}%)",
                                value * 100.0,
                                mean * 100.0,
                                high * 100.0
                            )
                        };
                        tracing::warn!(rail, kind, "anomaly: {message}");
                        self.raise(kind, &rail, message.clone());
                        let action = self.set_weight(&rail, true, format!("{kind} anomaly: {message}")).await;
                        if let Some(alert) = self.alerts.back_mut() {
                            alert.action = action;
                        }
                        if let Some(alert) = self.alerts.back().cloned() {
                            self.announce("anomaly.raised", &alert).await;
                        }
                    }
                    Change::Cleared { value, .. } => {
                        let reason = if unit == "trial" {
                            format!("no traffic for {REJECT_TRIAL_AFTER_TICKS} ticks: weight restored on trial")
                        } else if kind == "latency" {
                            format!("probe latency back to {value:.0} ms")
                        } else {
                            format!("reject rate back to {:.0}%", value * 100.0)
                        };
                        if let Some(mut alert) = self.clear(kind, &rail) {
                            if !self.rail_anomalous(&rail) {
                                alert.action = self.set_weight(&rail, false, reason.clone()).await;
                            }
                            alert.message = format!("{}; cleared: {reason}", alert.message);
                            self.announce("anomaly.cleared", &alert).await;
                        }
                    }
                }
            }
        }
        let corridors: Vec<String> = self.corridors.keys().cloned().collect();
        for corridor in corridors {
            let Some(stats) = self.corridors.get_mut(&corridor) else { continue };
            let count = f64::from(stats.tick_count);
            stats.tick_count = 0;
            match stats.volume.observe(count, &settings.volume) {
                Change::None => {}
                Change::Raised { value, mean, .. } => {
                    let message = format!("{value:.0} payouts per tick, usual {mean:.1}");
                    self.raise("volume", &corridor, message);
                    if let Some(alert) = self.alerts.back().cloned() {
                        self.announce("anomaly.raised", &alert).await;
                    }
                }
                Change::Cleared { value, .. } => {
                    if let Some(alert) = self.clear("volume", &corridor) {
                        let mut alert = alert;
                        alert.message = format!("{}; cleared at {value:.0} per tick", alert.message);
                        self.announce("anomaly.cleared", &alert).await;
                    }
                }
            }
        }
    }

    /// Liquidity, alerts and in-doubt payouts from the store, at most once a second.
    async fn store_reads(&mut self) -> (Value, Value, Value) {
        if let Some((at, liquidity, alerts, in_doubt)) = &self.slow_reads
            && at.elapsed() < Duration::from_secs(1)
        {
            return (liquidity.clone(), alerts.clone(), in_doubt.clone());
        }
        let store = &self.sources.store;
        let liquidity = match railyard_treasury::liquidity::positions(store, &self.sources.config).await {
            Ok(positions) => {
                for position in &positions {
                    self.pending.push(Metric::Gauge(
                        "railyard_liquidity_available",
                        vec![label("rail", position.rail.clone()), label("currency", position.currency.code())],
                        decimal_f64(position.available.amount_text()),
                    ));
                }
                json!(
                    positions
                        .iter()
                        .map(|position| json!({
                            "rail": position.rail,
                            "currency": position.currency.code(),
                            "available": position.available.amount_text(),
                            "reserved": position.reserved.amount_text(),
                            "low_water": position.low_water.map(|mark| mark.amount_text()),
                            "high_water": position.high_water.map(|mark| mark.amount_text()),
                            "level": position.level,
                        }))
                        .collect::<Vec<_>>()
                )
            }
            Err(error) => json!({ "error": error.to_string() }),
        };
        let alerts = match railyard_treasury::liquidity::open_alerts(store).await {
            Ok(alerts) => json!(alerts
                .iter()
                .map(|alert| json!({
                    "id": alert.id,
                    "kind": "liquidity",
                    "subject": format!("{} {}", alert.rail, alert.currency.code()),
                    "message": format!("available {} crossed {} ({:?})", alert.available.amount_text(), alert.threshold.amount_text(), alert.level).to_lowercase(),
                    "raised_at": alert.raised_at.to_rfc3339(),
                    "active": true,
                }))
                .collect::<Vec<_>>()),
            Err(error) => json!({ "error": error.to_string() }),
        };
        let in_doubt = match in_doubt(store).await {
            Ok((count, items)) => {
                self.pending.push(Metric::Gauge("railyard_in_doubt_payouts", Vec::new(), count as f64));
                json!({ "count": count, "items": items })
            }
            Err(error) => json!({ "error": error.to_string() }),
        };
        self.slow_reads = Some((Instant::now(), liquidity.clone(), alerts.clone(), in_doubt.clone()));
        (liquidity, alerts, in_doubt)
    }

    async fn tick(&mut self) -> String {
        let mut point = std::mem::replace(
            &mut self.current,
            Point { at: chrono::Utc::now().timestamp_millis(), ..Point::default() },
        );
        self.detect().await;
        let snapshot = self.sources.snapshots.borrow().clone();
        let (liquidity, liquidity_alerts, in_doubt) = self.store_reads().await;

        let mut rails = Vec::new();
        for rail in &snapshot.config.rails {
            let id = rail.id.as_str();
            let live = snapshot.live.get(id).cloned().unwrap_or_default();
            let killed = snapshot.killed.contains(id);
            let stats = self.rails.get(id);
            let mut recent: Vec<u32> = stats.map(|stats| stats.recent_ms.iter().copied().collect()).unwrap_or_default();
            let p50 = percentile(&mut recent, 0.5);
            let p99 = percentile(&mut recent, 0.99);
            let available = live.available.map(|up| up && !killed);
            let cost: BTreeMap<&str, Value> = rail
                .fees
                .iter()
                .map(|(currency, fee)| {
                    (currency.code(), json!({ "fixed": fee.fixed().amount_text(), "bps": fee.bps().to_string() }))
                })
                .collect();
            let rail_label = || vec![label("rail", id)];
            let mut metrics = vec![
                Metric::Gauge("railyard_rail_available", rail_label(), if available == Some(true) { 1.0 } else { 0.0 }),
                Metric::Gauge("railyard_rail_killed", rail_label(), if killed { 1.0 } else { 0.0 }),
                Metric::Gauge(
                    "railyard_rail_deweighted",
                    rail_label(),
                    if live.deweight.is_some() { 1.0 } else { 0.0 },
                ),
            ];
            if let Some(p50) = p50 {
                metrics.push(Metric::Gauge("railyard_rail_latency_p50_seconds", rail_label(), f64::from(p50) / 1e3));
            }
            if let Some(p99) = p99 {
                metrics.push(Metric::Gauge("railyard_rail_latency_p99_seconds", rail_label(), f64::from(p99) / 1e3));
            }
            if let Some(probe) = stats.and_then(|stats| stats.last_probe_ms) {
                metrics.push(Metric::Gauge(
                    "railyard_rail_probe_latency_seconds",
                    rail_label(),
                    f64::from(probe) / 1e3,
                ));
            }
            if let Some(probability) = live.success_probability {
                metrics.push(Metric::Gauge("railyard_rail_success_rate", rail_label(), decimal_f64(probability)));
            }
            for (currency, fee) in &rail.fees {
                let labels = || vec![label("rail", id), label("currency", currency.code())];
                metrics.push(Metric::Gauge(
                    "railyard_rail_fee_fixed",
                    labels(),
                    decimal_f64(fee.fixed().amount_text()),
                ));
                metrics.push(Metric::Gauge("railyard_rail_fee_bps", labels(), decimal_f64(fee.bps())));
            }
            if let Some(handle) = self.sources.rails.get(id) {
                metrics.push(Metric::Gauge(
                    "railyard_mailbox_depth",
                    vec![label("mailbox", format!("rail:{id}"))],
                    handle.depth() as f64,
                ));
            }
            self.pending.extend(metrics);
            rails.push(json!({
                "id": id,
                "kind": rail.kind.to_string(),
                "currencies": rail.currencies.iter().map(|currency| currency.code()).collect::<Vec<_>>(),
                "available": available,
                "killed": killed,
                "deweight": live.deweight.map(|factor| factor.to_string()),
                "anomalous": self.rail_anomalous(id),
                "latency_p50_ms": p50,
                "latency_p99_ms": p99,
                "latency_ewma_ms": live.latency_ms,
                "probe_ms": stats.and_then(|stats| stats.last_probe_ms),
                "success_rate": live.success_probability.map(|probability| probability.round_dp(4).to_string()),
                "legs": stats.map_or(0, |stats| stats.legs),
                "rejects": stats.map_or(0, |stats| stats.rejects),
                "cost": cost,
                "liquidity": liquidity.as_array().map(|positions| positions.iter().filter(|position| position["rail"] == id).cloned().collect::<Vec<_>>()),
            }));
        }

        let accept_p99 = percentile(&mut point.accept_ms, 0.99);
        let completion_p50 = percentile(&mut point.completion_ms, 0.5);
        let completion_p99 = percentile(&mut point.completion_ms, 0.99);
        if self.points.len() >= HISTORY_POINTS_MAX {
            self.points.pop_front();
        }
        // Percentiles are taken once; the samples are not kept in history.
        point.accept_ms = accept_p99.into_iter().collect();
        point.completion_ms = completion_p50.into_iter().chain(completion_p99).collect();
        self.points.push_back(point);

        let route_share: Vec<Value> = self
            .corridors
            .iter()
            .filter(|(_, stats)| !stats.routes.is_empty())
            .map(|(corridor, stats)| {
                let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
                for route in &stats.routes {
                    *counts.entry(route.as_str()).or_default() += 1;
                }
                let mut routes: Vec<(&str, u64)> = counts.into_iter().collect();
                routes.sort_by_key(|route| std::cmp::Reverse(route.1));
                json!({
                    "corridor": corridor,
                    "payouts": stats.total,
                    "routes": routes.iter().map(|(rails, count)| json!({ "rails": rails, "count": count })).collect::<Vec<_>>(),
                })
            })
            .collect();

        let mut alerts: Vec<Value> = self
            .alerts
            .iter()
            .rev()
            .map(|alert| {
                json!({
                    "id": alert.id,
                    "kind": alert.kind,
                    "subject": alert.subject,
                    "message": alert.message,
                    "action": alert.action,
                    "raised_at": alert.raised_at.to_rfc3339(),
                    "cleared_at": alert.cleared_at.map(|at| at.to_rfc3339()),
                    "active": alert.cleared_at.is_none(),
                })
            })
            .collect();
        if let Some(liquidity_alerts) = liquidity_alerts.as_array() {
            alerts.extend(liquidity_alerts.iter().cloned());
        }

        let dropped = self.dropped.load(Ordering::Relaxed);
        let intake_depth = self.sources.intake.as_ref().map_or(0, Intake::depth);
        let quote_age = (chrono::Utc::now().date_naive() - snapshot.fx.reference().date()).num_seconds().max(0);
        let snapshot_age = (chrono::Utc::now() - snapshot.built_at).num_milliseconds().max(0) as f64 / 1e3;
        self.pending.extend([
            Metric::Gauge("railyard_mailbox_depth", vec![label("mailbox", "intake")], intake_depth as f64),
            Metric::Gauge("railyard_monitor_events_dropped", Vec::new(), dropped as f64),
            Metric::Gauge("railyard_routing_snapshot_version", Vec::new(), snapshot.version as f64),
            Metric::Gauge("railyard_routing_snapshot_age_seconds", Vec::new(), snapshot_age),
            Metric::Gauge("railyard_fx_reference_age_seconds", Vec::new(), quote_age as f64),
        ]);
        let series = |pick: &dyn Fn(&Point) -> Value| -> Vec<Value> { self.points.iter().map(pick).collect() };
        json!({
            "at": chrono::Utc::now().to_rfc3339(),
            "tick_ms": u64::try_from(self.settings.tick.as_millis()).unwrap_or(u64::MAX),
            "snapshot_version": snapshot.version,
            "deweight": self.settings.deweight.map(|factor| factor.to_string()),
            "rails": rails,
            "series": {
                "at": series(&|point| json!(point.at)),
                "accepted": series(&|point| json!(point.accepted)),
                "completed": series(&|point| json!(point.completed)),
                "failed": series(&|point| json!(point.failed)),
                "accept_p99_ms": series(&|point| json!(point.accept_ms.first())),
                "completion_p50_ms": series(&|point| json!(point.completion_ms.first())),
                "completion_p99_ms": series(&|point| json!(point.completion_ms.get(1))),
            },
            "totals": self.totals,
            "shed": self.shed,
            "dropped_events": dropped,
            "intake_depth": intake_depth,
            "route_share": route_share,
            "alerts": alerts,
            "in_doubt": in_doubt,
        })
        .to_string()
    }
}

async fn in_doubt(store: &Store) -> Result<(i64, Vec<Value>), sqlx::Error> {
    use sqlx::Row;
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM payouts WHERE state = 'in_doubt'")
        .fetch_one(store.pool())
        .await?
        .try_get(0)?;
    let rows = sqlx::query(
        "SELECT id, tenant, reason, in_doubt_since FROM payouts WHERE state = 'in_doubt' \
         ORDER BY in_doubt_since LIMIT $1",
    )
    .bind(IN_DOUBT_SHOWN_MAX)
    .fetch_all(store.pool())
    .await?;
    let mut items = Vec::new();
    for row in &rows {
        let since: Option<i64> = row.try_get(3)?;
        items.push(json!({
            "id": row.try_get::<String, _>(0)?,
            "tenant": row.try_get::<String, _>(1)?,
            "reason": row.try_get::<Option<String>, _>(2)?,
            "since": since.and_then(chrono::DateTime::from_timestamp_micros).map(|at| at.to_rfc3339()),
        }));
    }
    Ok((count, items))
}

async fn run(
    mut state: Aggregate,
    recorder: PrometheusRecorder,
    mut events: mpsc::Receiver<Event>,
    publish: watch::Sender<Arc<String>>,
) {
    let mut ticker = tokio::time::interval(state.settings.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let handle = recorder.handle();
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return };
                metrics::with_local_recorder(&recorder, || state.apply(event));
            }
            _ = ticker.tick() => {
                let status = state.tick().await;
                let pending = std::mem::take(&mut state.pending);
                metrics::with_local_recorder(&recorder, || record(pending));
                handle.run_upkeep();
                publish.send_replace(Arc::new(status));
            }
        }
    }
}
