//! What every sandbox rail shares: its fault state, its execution ledger, and a control surface
//! (`/sandbox/...`) that tests and operators use to inject faults and read the ground truth, in
//! process or over HTTP.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::faults::{Fault, FaultPlan, Faults};
use crate::ledger::{ExecutionLedger, ExecutionRecord, NOTIFICATION_BATCH_MAX};
use crate::transport::{Method, Reply, Transport, TransportError, split_target};
use crate::{IdempotencyKey, NotificationEvent};

/// A sandbox rail's shared state.
pub struct Sandbox {
    pub rail: String,
    pub faults: Faults,
    pub ledger: ExecutionLedger,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OutageSwitch {
    outage: bool,
}

/// Counts for one key, as the control surface reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCounts {
    pub received: u32,
    pub executions: usize,
}

impl Sandbox {
    pub fn new(rail: impl Into<String>, plan: FaultPlan) -> Result<Sandbox, crate::faults::PlanError> {
        Ok(Sandbox { rail: rail.into(), faults: Faults::new(plan)?, ledger: ExecutionLedger::new() })
    }

    /// Switches a run-time outage and broadcasts the change as a notification.
    pub fn set_outage(&self, outage: bool) {
        let was = self.faults.outage_at(Utc::now());
        self.faults.set_outage(outage);
        if was != outage {
            let detail = if outage { "rail unavailable" } else { "rail available" };
            self.ledger.notify(
                NotificationEvent::Availability { available: !outage, detail: detail.into() },
                Utc::now(),
                Duration::ZERO,
                false,
            );
        }
    }

    /// Answers the control and notification paths every sandbox serves; `None` for anything else.
    ///
    /// - `POST /sandbox/faults` a [`FaultPlan`] (JSON): replaces the plan.
    /// - `POST /sandbox/force` a [`Fault`]: queues it for the next message.
    /// - `POST /sandbox/outage` `{"outage": true}`.
    /// - `GET /sandbox/executions`: the execution ledger.
    /// - `GET /sandbox/key?key=K`: [`KeyCounts`] for one key.
    /// - `GET /notifications?after=N&max=M`: notifications after sequence N.
    pub fn control(&self, method: Method, target: &str, body: &[u8]) -> Option<Reply> {
        let (path, query) = split_target(target);
        let parameter = |name: &str| query.iter().find(|(key, _)| *key == name).map(|(_, value)| *value);
        let reply = match (method, path) {
            (Method::Post, "/sandbox/faults") => match serde_json::from_slice::<FaultPlan>(body) {
                Ok(plan) => match self.faults.set_plan(plan) {
                    Ok(()) => Reply::json(200, &self.faults.plan()),
                    Err(error) => Reply::text(400, &error.to_string()),
                },
                Err(error) => Reply::text(400, &format!("fault plan: {error}")),
            },
            (Method::Post, "/sandbox/force") => match serde_json::from_slice::<Fault>(body) {
                Ok(fault) => match self.faults.force(fault) {
                    Ok(()) => Reply::text(200, "queued"),
                    Err(error) => Reply::text(429, &error.to_string()),
                },
                Err(error) => Reply::text(400, &format!("fault: {error}")),
            },
            (Method::Post, "/sandbox/outage") => match serde_json::from_slice::<OutageSwitch>(body) {
                Ok(switch) => {
                    self.set_outage(switch.outage);
                    Reply::json(200, &switch)
                }
                Err(error) => Reply::text(400, &format!("outage: {error}")),
            },
            (Method::Get, "/sandbox/executions") => Reply::json(200, &self.ledger.executions()),
            (Method::Get, "/sandbox/key") => match parameter("key").map(IdempotencyKey::new) {
                Some(Ok(key)) => Reply::json(
                    200,
                    &KeyCounts {
                        received: self.ledger.received_count(&key),
                        executions: self.ledger.execution_count(&key),
                    },
                ),
                Some(Err(error)) => Reply::text(400, &format!("key: {error}")),
                None => Reply::text(400, "key: missing"),
            },
            (Method::Get, "/notifications") => {
                let after = parameter("after").and_then(|value| value.parse().ok()).unwrap_or(0);
                let max = parameter("max").and_then(|value| value.parse().ok()).unwrap_or(NOTIFICATION_BATCH_MAX);
                Reply::json(200, &self.ledger.notifications(after, max, Utc::now()))
            }
            _ => return None,
        };
        Some(reply)
    }
}

/// The control surface as the conformance kit and the proof tests use it.
#[async_trait]
pub trait SandboxControl: Send + Sync {
    async fn force(&self, fault: Fault) -> Result<(), String>;
    async fn set_outage(&self, outage: bool) -> Result<(), String>;
    async fn set_plan(&self, plan: FaultPlan) -> Result<(), String>;
    async fn counts(&self, key: &IdempotencyKey) -> Result<KeyCounts, String>;
    async fn executions(&self) -> Result<Vec<ExecutionRecord>, String>;
}

#[async_trait]
impl SandboxControl for Arc<Sandbox> {
    async fn force(&self, fault: Fault) -> Result<(), String> {
        self.faults.force(fault).map_err(|error| error.to_string())
    }
    async fn set_outage(&self, outage: bool) -> Result<(), String> {
        Sandbox::set_outage(self, outage);
        Ok(())
    }
    async fn set_plan(&self, plan: FaultPlan) -> Result<(), String> {
        self.faults.set_plan(plan).map_err(|error| error.to_string())
    }
    async fn counts(&self, key: &IdempotencyKey) -> Result<KeyCounts, String> {
        Ok(KeyCounts { received: self.ledger.received_count(key), executions: self.ledger.execution_count(key) })
    }
    async fn executions(&self) -> Result<Vec<ExecutionRecord>, String> {
        Ok(self.ledger.executions())
    }
}

/// The control surface of a sandbox rail served over HTTP.
pub struct HttpControl {
    transport: Transport,
}

/// How long a control call may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

impl HttpControl {
    pub fn new(address: &str) -> HttpControl {
        HttpControl { transport: Transport::http(address) }
    }

    async fn call(&self, method: Method, target: &str, body: Vec<u8>) -> Result<Vec<u8>, String> {
        let answer = self
            .transport
            .exchange(method, target, body, CONTROL_TIMEOUT)
            .await
            .map_err(|error: TransportError| error.to_string())?;
        if answer.status != 200 {
            return Err(format!("{target}: {} {}", answer.status, String::from_utf8_lossy(&answer.body)));
        }
        Ok(answer.body)
    }

    async fn post(&self, target: &str, value: &impl Serialize) -> Result<(), String> {
        let body = serde_json::to_vec(value).map_err(|error| error.to_string())?;
        self.call(Method::Post, target, body).await.map(|_| ())
    }
}

#[async_trait]
impl SandboxControl for HttpControl {
    async fn force(&self, fault: Fault) -> Result<(), String> {
        self.post("/sandbox/force", &fault).await
    }
    async fn set_outage(&self, outage: bool) -> Result<(), String> {
        self.post("/sandbox/outage", &OutageSwitch { outage }).await
    }
    async fn set_plan(&self, plan: FaultPlan) -> Result<(), String> {
        self.post("/sandbox/faults", &plan).await
    }
    async fn counts(&self, key: &IdempotencyKey) -> Result<KeyCounts, String> {
        let body = self.call(Method::Get, &format!("/sandbox/key?key={key}"), Vec::new()).await?;
        serde_json::from_slice(&body).map_err(|error| error.to_string())
    }
    async fn executions(&self) -> Result<Vec<ExecutionRecord>, String> {
        let body = self.call(Method::Get, "/sandbox/executions", Vec::new()).await?;
        serde_json::from_slice(&body).map_err(|error| error.to_string())
    }
}

/// Fetches notifications from any sandbox rail over `transport`.
pub async fn poll_notifications(
    transport: &Transport,
    after: u64,
    max: usize,
    timeout: Duration,
) -> Result<Vec<crate::Notification>, crate::Unknown> {
    let target = format!("/notifications?after={after}&max={max}");
    let answer = transport
        .exchange(Method::Get, &target, Vec::new(), timeout)
        .await
        .map_err(|error| crate::Unknown::new(crate::UnknownCause::Transport, error.to_string()))?;
    serde_json::from_slice(&answer.body)
        .map_err(|error| crate::Unknown::new(crate::UnknownCause::Unreadable, error.to_string()))
}
