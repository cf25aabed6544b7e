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
    /// - `GET /sandbox/executions?from=N&max=M`: the execution ledger, a page of at most
    ///   [`EXECUTIONS_PAGE_MAX`] from the N-th execution on (a short page is the last).
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
            (Method::Get, "/sandbox/executions") => {
                let number = |name: &str| parameter(name).and_then(|value| value.parse::<usize>().ok());
                let max = number("max").unwrap_or(EXECUTIONS_PAGE_MAX).min(EXECUTIONS_PAGE_MAX);
                Reply::json(200, &self.ledger.executions_page(number("from").unwrap_or(0), max))
            }
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
        let mut all: Vec<ExecutionRecord> = Vec::new();
        loop {
            let target = format!("/sandbox/executions?from={}&max={EXECUTIONS_PAGE_MAX}", all.len());
            let body = self.call(Method::Get, &target, Vec::new()).await?;
            let page: Vec<ExecutionRecord> = serde_json::from_slice(&body).map_err(|error| error.to_string())?;
            let last = page.len() < EXECUTIONS_PAGE_MAX;
            all.extend(page);
            if last {
                return Ok(all);
            }
        }
    }
}

/// Executions one `GET /sandbox/executions` page carries at most (a record is a few hundred bytes
/// of JSON: a page stays well inside the transport's reply limit).
pub const EXECUTIONS_PAGE_MAX: usize = 5_000;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{RailService, serve};

    /// Only the control surface, over real HTTP.
    struct ControlOnly(Arc<Sandbox>);

    #[async_trait::async_trait]
    impl RailService for ControlOnly {
        async fn call(&self, method: Method, target: &str, body: Vec<u8>) -> Reply {
            self.0.control(method, target, &body).unwrap_or_else(|| Reply::text(404, "not found"))
        }
    }

    /// An execution ledger longer than one page comes back whole, in order, page by page.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_execution_ledger_is_read_in_pages() {
        let sandbox = Arc::new(Sandbox::new("paged", FaultPlan::default()).unwrap());
        let eur = railyard_core::Currency::from_code("EUR").unwrap();
        let total = EXECUTIONS_PAGE_MAX * 2 + 17;
        for index in 0..total {
            let money = railyard_core::Money::from_minor(100, eur);
            sandbox
                .ledger
                .execute(ExecutionRecord {
                    key: IdempotencyKey::new(format!("key-{index}")).unwrap(),
                    execution: crate::Execution {
                        reference: format!("ref-{index}"),
                        send: money,
                        fee: railyard_core::Money::from_minor(0, eur),
                        receive: money,
                        rate: None,
                        executed_at: Utc::now(),
                    },
                    beneficiary_account: "DE89370400440532013000".into(),
                })
                .unwrap();
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(serve(Arc::new(ControlOnly(sandbox.clone())), listener, std::future::pending()));
        let read = HttpControl::new(&format!("http://{address}")).executions().await.unwrap();
        assert_eq!(read.len(), total);
        assert!(read.iter().enumerate().all(|(index, record)| record.execution.reference == format!("ref-{index}")));
        assert_eq!(read, sandbox.ledger.executions());
    }
}
