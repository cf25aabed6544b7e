//! A sandbox rail's execution ledger: every execution it performed, by idempotency key.
//!
//! This is the ground truth the proof tests join against Railyard's own ledger to count duplicates
//! and losses, so it is deliberately dumb: it records what the rail did and refuses to record a
//! second execution for a key. It also keeps what each key's final status is, how many messages
//! arrived for each key (so the conformance kit can tell that a refusal never reached the rail), and
//! the notifications the rail pushed.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{CancelOutcome, Execution, IdempotencyKey, Notification, NotificationEvent, ReasonCode, Rejection, Status};

/// Executions one sandbox rail keeps; beyond this it answers `rail_unavailable` rather than grow
/// without bound (about 300 bytes each: 300 MB at the limit).
pub const EXECUTIONS_MAX: usize = 1_000_000;
/// Notifications kept for polling; older ones are dropped (consumers reconcile by status anyway).
pub const NOTIFICATIONS_MAX: usize = 10_000;
/// Most notifications one poll returns.
pub const NOTIFICATION_BATCH_MAX: usize = 500;

/// One execution, as the rail recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    pub key: IdempotencyKey,
    pub execution: Execution,
    pub beneficiary_account: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Final {
    Executed(usize),
    Rejected(Rejection),
    Cancelled,
}

#[derive(Default)]
struct Inner {
    executions: Vec<ExecutionRecord>,
    finals: HashMap<IdempotencyKey, Final>,
    /// Keys the rail holds without a final status (accepted, settling).
    pending: HashMap<IdempotencyKey, DateTime<Utc>>,
    received: HashMap<IdempotencyKey, u32>,
    notifications: VecDeque<(DateTime<Utc>, Notification)>,
    next_sequence: u64,
}

/// Why an execution could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("key {0} already has a final status")]
    AlreadyFinal(IdempotencyKey),
    #[error("the sandbox ledger holds {EXECUTIONS_MAX} executions and takes no more")]
    Full,
}

/// The ledger of one sandbox rail.
#[derive(Default)]
pub struct ExecutionLedger {
    inner: Mutex<Inner>,
}

impl ExecutionLedger {
    pub fn new() -> ExecutionLedger {
        ExecutionLedger::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a message that reached the rail for `key`.
    pub fn received(&self, key: &IdempotencyKey) {
        *self.lock().received.entry(key.clone()).or_default() += 1;
    }

    /// How many messages reached the rail, all keys together.
    pub fn received_total(&self) -> u64 {
        self.lock().received.values().map(|count| u64::from(*count)).sum()
    }

    /// How many messages reached the rail for `key`.
    pub fn received_count(&self, key: &IdempotencyKey) -> u32 {
        self.lock().received.get(key).copied().unwrap_or(0)
    }

    /// The final status of `key`, `Pending` if held without one, `NotFound` if never accepted.
    pub fn status(&self, key: &IdempotencyKey) -> Status {
        let inner = self.lock();
        match inner.finals.get(key) {
            Some(Final::Executed(index)) => Status::Executed(inner.executions[*index].execution.clone()),
            Some(Final::Rejected(rejection)) => Status::Rejected(rejection.clone()),
            Some(Final::Cancelled) => {
                Status::Rejected(Rejection::by_rail(ReasonCode::Cancelled, "CNCL", "cancelled on request"))
            }
            None if inner.pending.contains_key(key) => Status::Pending,
            None => Status::NotFound,
        }
    }

    /// Marks `key` as held by the rail without a final status yet.
    pub fn hold(&self, key: &IdempotencyKey, now: DateTime<Utc>) {
        let mut inner = self.lock();
        if !inner.finals.contains_key(key) {
            inner.pending.insert(key.clone(), now);
        }
    }

    /// Keys held longer than `age`, oldest first, at most `max`.
    pub fn pending_older_than(&self, now: DateTime<Utc>, age: Duration, max: usize) -> Vec<IdempotencyKey> {
        let inner = self.lock();
        let mut keys: Vec<(DateTime<Utc>, IdempotencyKey)> = inner
            .pending
            .iter()
            .filter(|(_, since)| now.signed_duration_since(**since).to_std().is_ok_and(|held| held >= age))
            .map(|(key, since)| (*since, key.clone()))
            .collect();
        keys.sort();
        keys.into_iter().take(max).map(|(_, key)| key).collect()
    }

    /// Records an execution. Refuses a key that already has a final status: the caller checks
    /// [`ExecutionLedger::status`] first, so reaching this error is a bug in the rail.
    pub fn execute(&self, record: ExecutionRecord) -> Result<(), RecordError> {
        let mut inner = self.lock();
        if inner.finals.contains_key(&record.key) {
            return Err(RecordError::AlreadyFinal(record.key));
        }
        if inner.executions.len() >= EXECUTIONS_MAX {
            return Err(RecordError::Full);
        }
        let index = inner.executions.len();
        inner.pending.remove(&record.key);
        inner.finals.insert(record.key.clone(), Final::Executed(index));
        inner.executions.push(record);
        Ok(())
    }

    /// Records a definitive rejection.
    pub fn reject(&self, key: &IdempotencyKey, rejection: Rejection) -> Result<(), RecordError> {
        let mut inner = self.lock();
        if inner.finals.contains_key(key) {
            return Err(RecordError::AlreadyFinal(key.clone()));
        }
        inner.pending.remove(key);
        inner.finals.insert(key.clone(), Final::Rejected(rejection));
        Ok(())
    }

    /// Cancels `key` unless it executed. A key the rail never saw is cancelled too, so that a late
    /// arrival of the original message is refused: that is what makes a recall after a timeout safe.
    pub fn cancel(&self, key: &IdempotencyKey) -> CancelOutcome {
        let mut inner = self.lock();
        match inner.finals.get(key) {
            Some(Final::Executed(index)) => CancelOutcome::TooLate(inner.executions[*index].execution.clone()),
            Some(Final::Rejected(_)) | Some(Final::Cancelled) => CancelOutcome::Cancelled,
            None => {
                let known = inner.pending.remove(key).is_some() || inner.received.contains_key(key);
                inner.finals.insert(key.clone(), Final::Cancelled);
                if known { CancelOutcome::Cancelled } else { CancelOutcome::NotFound }
            }
        }
    }

    /// Every execution, in the order performed.
    pub fn executions(&self) -> Vec<ExecutionRecord> {
        self.lock().executions.clone()
    }

    /// Up to `max` executions from the `from`-th on, in the order they happened.
    pub fn executions_page(&self, from: usize, max: usize) -> Vec<ExecutionRecord> {
        self.lock().executions.iter().skip(from).take(max).cloned().collect()
    }

    /// How many executions `key` has (0 or 1 unless the rail is broken).
    pub fn execution_count(&self, key: &IdempotencyKey) -> usize {
        self.lock().executions.iter().filter(|record| &record.key == key).count()
    }

    pub fn len(&self) -> usize {
        self.lock().executions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Publishes a notification, visible from `now + delay`; `duplicate` publishes it twice with the
    /// same sequence number.
    pub fn notify(&self, event: NotificationEvent, now: DateTime<Utc>, delay: Duration, duplicate: bool) {
        let mut inner = self.lock();
        inner.next_sequence += 1;
        let notification = Notification { sequence: inner.next_sequence, event, sent_at: now };
        let visible = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero());
        let copies = if duplicate { 2 } else { 1 };
        for _ in 0..copies {
            if inner.notifications.len() >= NOTIFICATIONS_MAX {
                inner.notifications.pop_front();
            }
            inner.notifications.push_back((visible, notification.clone()));
        }
    }

    /// Notifications visible at `now` with a sequence above `after`, oldest first.
    pub fn notifications(&self, after: u64, max: usize, now: DateTime<Utc>) -> Vec<Notification> {
        let inner = self.lock();
        inner
            .notifications
            .iter()
            .filter(|(visible, notification)| *visible <= now && notification.sequence > after)
            .take(max.min(NOTIFICATION_BATCH_MAX))
            .map(|(_, notification)| notification.clone())
            .collect()
    }
}
