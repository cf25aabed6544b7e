//! Faults on demand for sandbox rails: latency, rejects, lost replies, outages, duplicate and late
//! callbacks, a slow rail. Deterministic under a seed.
//!
//! A sandbox rail calls [`Faults::draw`] once per message it receives and applies what comes back.
//! Every draw consumes the same number of random values whatever the outcome, so a given seed and a
//! given sequence of messages always produce the same faults. Tests that need one exact fault queue
//! it with [`Faults::force`]; forced faults are used before any random one.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Forced faults waiting to be used; more are refused so a runaway test cannot grow memory.
pub const FORCED_FAULTS_MAX: usize = 1_024;
/// Rates are per mille: 1000 means always.
pub const PERMILLE_MAX: u32 = 1_000;

/// Per-message latency: `base_ms + uniform(0..=jitter_ms)`, plus `tail_ms` with probability
/// `tail_permille`, all times `slow_percent / 100`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyPlan {
    pub base_ms: u64,
    pub jitter_ms: u64,
    pub tail_permille: u32,
    pub tail_ms: u64,
}

/// A rail-specific reject code drawn with a probability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectPlan {
    /// The rail's own code (`AM04`, `51`, `insufficient_balance`).
    pub code: String,
    pub permille: u32,
}

/// A time window in which the rail is down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutageWindow {
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// Everything a sandbox rail can be told to do wrong. The default does nothing wrong.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultPlan {
    pub seed: u64,
    pub latency: LatencyPlan,
    /// 100 is normal speed; 500 makes every latency five times longer.
    pub slow_percent: Option<u32>,
    pub rejects: Vec<RejectPlan>,
    /// The rail executes, then its reply is lost: the connector sees a timeout, the money moved.
    pub reply_lost_permille: u32,
    /// The request is lost before the rail sees it: the connector sees a timeout, nothing moved.
    pub request_lost_permille: u32,
    pub outages: Vec<OutageWindow>,
    /// A status callback is delivered twice.
    pub duplicate_callback_permille: u32,
    /// A status callback is delivered this late.
    pub late_callback_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{field}: {value} per mille is above {max}")]
    Permille { field: String, value: u32, max: u32 },
    #[error("reply_lost_permille + request_lost_permille + rejects add up to {total} per mille, above {max}")]
    Total { total: u32, max: u32 },
    #[error("outages[{index}]: from {from} is not before until {until}")]
    Window { index: usize, from: DateTime<Utc>, until: DateTime<Utc> },
    #[error("slow_percent must be between 1 and 100000, got {0}")]
    Slow(u32),
    #[error("rejects[{index}].code is empty")]
    EmptyCode { index: usize },
}

impl FaultPlan {
    /// Checks every field; a plan that fails here is never applied.
    pub fn validate(&self) -> Result<(), PlanError> {
        let mut checks: Vec<(String, u32)> = vec![
            ("reply_lost_permille".into(), self.reply_lost_permille),
            ("request_lost_permille".into(), self.request_lost_permille),
            ("duplicate_callback_permille".into(), self.duplicate_callback_permille),
            ("latency.tail_permille".into(), self.latency.tail_permille),
        ];
        for (index, reject) in self.rejects.iter().enumerate() {
            if reject.code.trim().is_empty() {
                return Err(PlanError::EmptyCode { index });
            }
            checks.push((format!("rejects[{index}].permille"), reject.permille));
        }
        for (field, value) in checks {
            if value > PERMILLE_MAX {
                return Err(PlanError::Permille { field, value, max: PERMILLE_MAX });
            }
        }
        let total = self.reply_lost_permille
            + self.request_lost_permille
            + self.rejects.iter().map(|reject| reject.permille).sum::<u32>();
        if total > PERMILLE_MAX {
            return Err(PlanError::Total { total, max: PERMILLE_MAX });
        }
        for (index, window) in self.outages.iter().enumerate() {
            if window.from >= window.until {
                return Err(PlanError::Window { index, from: window.from, until: window.until });
            }
        }
        if let Some(slow) = self.slow_percent
            && !(1..=100_000).contains(&slow)
        {
            return Err(PlanError::Slow(slow));
        }
        Ok(())
    }
}

/// One fault applied to one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// Reject with the rail's own code.
    Reject { code: String },
    /// Execute, then lose the reply.
    ReplyLost,
    /// Lose the request before the rail sees it.
    RequestLost,
    /// Hold the reply this long (a slow rail; longer than the connector's timeout gives an Unknown
    /// whose truth depends on whether the rail executed, which it does).
    Delay { ms: u64 },
}

/// What the rail should do with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draw {
    pub latency: Duration,
    pub fault: Option<Fault>,
    /// The rail is in an outage: refuse the message as unavailable.
    pub outage: bool,
}

/// How one status callback is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackDraw {
    pub duplicate_callback: bool,
    pub callback_delay: Duration,
}

struct State {
    plan: FaultPlan,
    random: ChaCha8Rng,
    forced: VecDeque<Fault>,
    /// Outage switched on at run time, independent of the windows.
    outage: bool,
}

/// A rail's fault state, shared by everything that handles its messages.
pub struct Faults {
    state: Mutex<State>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{FORCED_FAULTS_MAX} forced faults are already queued")]
pub struct QueueFull;

impl Faults {
    pub fn new(plan: FaultPlan) -> Result<Faults, PlanError> {
        plan.validate()?;
        let random = ChaCha8Rng::seed_from_u64(plan.seed);
        Ok(Faults { state: Mutex::new(State { plan, random, forced: VecDeque::new(), outage: false }) })
    }

    /// A rail that does nothing wrong.
    pub fn none() -> Faults {
        Faults::new(FaultPlan::default()).unwrap_or_else(|_| unreachable!("the default plan is valid"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the plan and reseeds; forced faults and the run-time outage switch stay.
    pub fn set_plan(&self, plan: FaultPlan) -> Result<(), PlanError> {
        plan.validate()?;
        let mut state = self.lock();
        state.random = ChaCha8Rng::seed_from_u64(plan.seed);
        state.plan = plan;
        Ok(())
    }

    pub fn plan(&self) -> FaultPlan {
        self.lock().plan.clone()
    }

    /// Queues a fault for the next message that can take one.
    pub fn force(&self, fault: Fault) -> Result<(), QueueFull> {
        let mut state = self.lock();
        if state.forced.len() >= FORCED_FAULTS_MAX {
            return Err(QueueFull);
        }
        state.forced.push_back(fault);
        Ok(())
    }

    /// Drops every forced fault not yet drawn.
    pub fn clear_forced(&self) {
        self.lock().forced.clear();
    }

    /// Switches a run-time outage on or off.
    pub fn set_outage(&self, outage: bool) {
        self.lock().outage = outage;
    }

    /// Whether the rail is down at `now` (run-time switch or a configured window).
    pub fn outage_at(&self, now: DateTime<Utc>) -> bool {
        let state = self.lock();
        state.outage || state.plan.outages.iter().any(|window| window.from <= now && now < window.until)
    }

    /// The plan's steady latency (`base_ms` at `slow_percent`), without jitter or tail and without
    /// consuming random draws: what a health probe waits, so a slow rail answers probes slowly
    /// too while the seeded sequence of submissions stays the same.
    pub fn steady_latency(&self) -> Duration {
        let state = self.lock();
        let slow = u64::from(state.plan.slow_percent.unwrap_or(100));
        Duration::from_millis(state.plan.latency.base_ms.saturating_mul(slow) / 100)
    }

    /// Draws the faults for one submitted message.
    pub fn draw(&self, now: DateTime<Utc>) -> Draw {
        let mut guard = self.lock();
        let state = &mut *guard;
        let outage = state.outage || state.plan.outages.iter().any(|window| window.from <= now && now < window.until);
        // Always consume the same random values, in the same order.
        let jitter_max = state.plan.latency.jitter_ms;
        let jitter = state.random.random_range(0..=jitter_max);
        let tail = state.random.random_range(0..PERMILLE_MAX);
        let pick = state.random.random_range(0..PERMILLE_MAX);
        let plan = &state.plan;
        let mut latency_ms = plan.latency.base_ms.saturating_add(jitter);
        if tail < plan.latency.tail_permille {
            latency_ms = latency_ms.saturating_add(plan.latency.tail_ms);
        }
        let slow = u64::from(plan.slow_percent.unwrap_or(100));
        latency_ms = latency_ms.saturating_mul(slow) / 100;
        let mut random_fault = None;
        let mut threshold = 0;
        for reject in &plan.rejects {
            threshold += reject.permille;
            if pick < threshold {
                random_fault = Some(Fault::Reject { code: reject.code.clone() });
                break;
            }
        }
        if random_fault.is_none() {
            threshold += plan.reply_lost_permille;
            if pick < threshold {
                random_fault = Some(Fault::ReplyLost);
            } else if pick < threshold + plan.request_lost_permille {
                random_fault = Some(Fault::RequestLost);
            }
        }
        let fault = if outage { None } else { state.forced.pop_front().or(random_fault) };
        Draw { latency: Duration::from_millis(latency_ms), fault, outage }
    }

    /// Draws how one status callback is delivered (twice? late?).
    pub fn draw_callback(&self) -> CallbackDraw {
        let mut guard = self.lock();
        let state = &mut *guard;
        let duplicate = state.random.random_range(0..PERMILLE_MAX);
        CallbackDraw {
            duplicate_callback: duplicate < state.plan.duplicate_callback_permille,
            callback_delay: Duration::from_millis(state.plan.late_callback_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> FaultPlan {
        FaultPlan {
            seed: 42,
            latency: LatencyPlan { base_ms: 5, jitter_ms: 20, tail_permille: 50, tail_ms: 500 },
            rejects: vec![RejectPlan { code: "AM04".into(), permille: 100 }],
            reply_lost_permille: 50,
            request_lost_permille: 50,
            duplicate_callback_permille: 100,
            ..FaultPlan::default()
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_faults() {
        let now = Utc::now();
        let first = Faults::new(plan()).unwrap();
        let second = Faults::new(plan()).unwrap();
        let a: Vec<Draw> = (0..500).map(|_| first.draw(now)).collect();
        let b: Vec<Draw> = (0..500).map(|_| second.draw(now)).collect();
        assert_eq!(a, b);
        let rejects = a.iter().filter(|draw| matches!(draw.fault, Some(Fault::Reject { .. }))).count();
        let lost = a.iter().filter(|draw| draw.fault == Some(Fault::ReplyLost)).count();
        // 10% and 5% of 500, give or take sampling noise.
        assert!((25..=80).contains(&rejects), "{rejects} rejects");
        assert!((8..=45).contains(&lost), "{lost} lost replies");
    }

    #[test]
    fn forced_faults_come_first_and_outages_refuse() {
        let faults = Faults::none();
        faults.force(Fault::RequestLost).unwrap();
        assert_eq!(faults.draw(Utc::now()).fault, Some(Fault::RequestLost));
        assert_eq!(faults.draw(Utc::now()).fault, None);
        faults.set_outage(true);
        assert!(faults.draw(Utc::now()).outage);
        faults.set_outage(false);
        assert!(!faults.draw(Utc::now()).outage);
    }

    #[test]
    fn bad_plans_are_refused_with_the_field() {
        let mut bad = plan();
        bad.reply_lost_permille = 2_000;
        assert_eq!(Faults::new(bad).err().unwrap().to_string(), "reply_lost_permille: 2000 per mille is above 1000");
        let mut bad = plan();
        bad.rejects[0].permille = 950;
        assert!(matches!(Faults::new(bad), Err(PlanError::Total { total: 1050, .. })));
    }
}
