//! Group commit for accepting payouts: concurrent requests share one transaction and one disk
//! flush, so durability does not cap throughput.
//!
//! Requests wait in a bounded queue ([`INTAKE_QUEUE_MAX`]); a full queue is refused at once
//! ([`IntakeError::Overloaded`], which the API answers with 429 and Retry-After) instead of
//! growing memory. One writer task takes whatever is queued, up to [`GROUP_MAX`], commits it in one
//! transaction, and answers each request only after the commit returned.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::driver::Driver;
use crate::{Accepted, Engine, EngineError, PayoutRequest};

/// Requests waiting for the writer. At ~1 KB each, 4 MB at most.
pub const INTAKE_QUEUE_MAX: usize = 4_096;
/// Most requests in one transaction: enough to amortise a flush, small enough that the first
/// request of a group does not wait long for the last.
pub const GROUP_MAX: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("the intake queue is full; retry later")]
    Overloaded,
    #[error("the intake writer stopped")]
    Stopped,

    #[error(transparent)]
    Engine(#[from] EngineError),
}

struct Request {
    tenant: String,
    key: String,
    payout: PayoutRequest,
    reply: oneshot::Sender<Result<Accepted, EngineError>>,
}

/// The front door for payouts.
#[derive(Clone)]
pub struct Intake {
    sender: mpsc::Sender<Request>,
    driver: Arc<std::sync::OnceLock<Driver>>,
}

impl Intake {
    /// Starts the writer task on the current runtime, with the default queue bound.
    pub fn start(engine: Arc<Engine>) -> Intake {
        Intake::start_with(engine, INTAKE_QUEUE_MAX)
    }

    /// Starts the writer task with a queue of `queue_max` requests (at least one).
    pub fn start_with(engine: Arc<Engine>, queue_max: usize) -> Intake {
        let (sender, mut receiver) = mpsc::channel::<Request>(queue_max.max(1));
        let driver: Arc<std::sync::OnceLock<Driver>> = Arc::default();
        let kicks = driver.clone();
        tokio::spawn(async move {
            let mut group: Vec<Request> = Vec::with_capacity(GROUP_MAX);
            while let Some(first) = receiver.recv().await {
                group.push(first);
                while group.len() < GROUP_MAX {
                    match receiver.try_recv() {
                        Ok(next) => group.push(next),
                        Err(_) => break,
                    }
                }
                let batch: Vec<(String, String, PayoutRequest)> = group
                    .iter()
                    .map(|request| (request.tenant.clone(), request.key.clone(), request.payout.clone()))
                    .collect();
                match engine.accept_batch(&batch).await {
                    Ok(answers) => {
                        if let Some(driver) = kicks.get() {
                            for accepted in answers.iter().flatten().filter(|accepted| !accepted.replay) {
                                driver.kick(&accepted.payout_id);
                            }
                        }
                        for (request, answer) in group.drain(..).zip(answers) {
                            let _ = request.reply.send(answer);
                        }
                    }
                    Err(error) => {
                        let text = error.to_string();
                        for request in group.drain(..) {
                            // Nothing of the group is acknowledged; a retry under the same
                            // Idempotency-Key is answered whether or not the group was kept.
                            let _ = request.reply.send(Err(EngineError::Unavailable(text.clone())));
                        }
                    }
                }
            }
        });
        Intake { sender, driver }
    }

    /// Hands each newly accepted payout to `driver` as soon as its group is committed.
    pub fn with_driver(self, driver: Driver) -> Intake {
        let _ = self.driver.set(driver);
        self
    }

    /// Requests waiting for the writer now.
    pub fn depth(&self) -> usize {
        self.sender.max_capacity().saturating_sub(self.sender.capacity())
    }

    /// Accepts a payout durably: returns once its group is committed.
    pub async fn accept(&self, tenant: &str, key: &str, payout: &PayoutRequest) -> Result<Accepted, IntakeError> {
        let (reply, answer) = oneshot::channel();
        let request = Request { tenant: tenant.into(), key: key.into(), payout: payout.clone(), reply };
        self.sender.try_send(request).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => IntakeError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => IntakeError::Stopped,
        })?;
        Ok(answer.await.map_err(|_| IntakeError::Stopped)??)
    }
}
