//! The conformance kit: the checks every connector passes against its own rail, offline.
//!
//! A connector crate implements [`KitRail`] for its sandbox (in process, or served on loopback) and
//! calls `kit::run(&rail).await.assert_passed()` from a test; `connectors/example/tests` shows it.
//!
//! The checks, each of which fails with a sentence saying what went wrong:
//! capabilities are complete; a quote matches the execution; the same key twice executes once (in
//! sequence and concurrently); after a lost reply the status finds the execution; after a lost
//! request the status says not found and a resubmission executes once; over-limit and
//! unsupported-currency legs are refused before anything reaches the rail; every rail reason code
//! maps to its common code; the timeout is honoured; the health probe reflects an outage and an
//! outage rejects without executing; cancellation behaves as declared.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use railyard_core::{Currency, Money};

use crate::faults::Fault;
use crate::sandbox::SandboxControl;
use crate::{CancelOutcome, Connector, IdempotencyKey, Leg, Outcome, ReasonCode, Registry, Status, UnknownCause};

/// Scheduling slack allowed on top of a connector's timeout before the kit calls it not honoured.
pub const TIMEOUT_SLACK: Duration = Duration::from_millis(750);
/// How long the kit waits for a delayed execution to become visible through `status`.
pub const SETTLE_WAIT_MAX: Duration = Duration::from_secs(10);

/// A connector under test, with its sandbox.
#[async_trait]
pub trait KitRail: Send + Sync {
    fn connector(&self) -> Arc<dyn Connector>;
    fn control(&self) -> &dyn SandboxControl;
    /// A leg the rail executes when nothing is wrong, under `key`.
    fn valid_leg(&self, key: IdempotencyKey) -> Leg;
    /// Rail reason codes the sandbox can reject with, and the common code each must map to.
    fn reason_samples(&self) -> Vec<(String, ReasonCode)>;
}

/// One check's result.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub failures: Vec<String>,
}

/// Every check's result.
#[derive(Debug, Clone)]
pub struct KitReport {
    pub rail: String,
    pub checks: Vec<Check>,
}

impl KitReport {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|check| check.failures.is_empty())
    }

    /// Panics with every failure when a check failed (for use in tests).
    pub fn assert_passed(&self) {
        if !self.passed() {
            let mut text = format!("conformance kit failed for rail {}:\n", self.rail);
            for check in &self.checks {
                for failure in &check.failures {
                    text.push_str(&format!("  {}: {failure}\n", check.name));
                }
            }
            panic!("{text}");
        }
    }
}

impl std::fmt::Display for KitReport {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for check in &self.checks {
            let verdict = if check.failures.is_empty() { "pass" } else { "FAIL" };
            writeln!(formatter, "{verdict} {}", check.name)?;
            for failure in &check.failures {
                writeln!(formatter, "     {failure}")?;
            }
        }
        Ok(())
    }
}

struct Kit<'a> {
    rail: &'a dyn KitRail,
    connector: Arc<dyn Connector>,
    run: String,
    serial: AtomicU64,
}

impl Kit<'_> {
    fn key(&self, label: &str) -> IdempotencyKey {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        IdempotencyKey::new(format!("kit-{}-{label}-{serial}", self.run)).unwrap_or_else(|error| {
            unreachable!("kit keys are built from safe characters: {error}");
        })
    }

    async fn executions(&self, key: &IdempotencyKey, failures: &mut Vec<String>) -> Option<usize> {
        match self.rail.control().counts(&self.connector.rail_key(key)).await {
            Ok(counts) => Some(counts.executions),
            Err(error) => {
                failures.push(format!("cannot read the rail's execution ledger: {error}"));
                None
            }
        }
    }

    async fn force(&self, fault: Fault, failures: &mut Vec<String>) -> bool {
        match self.rail.control().force(fault.clone()).await {
            Ok(()) => true,
            Err(error) => {
                failures.push(format!("cannot force {fault:?}: {error}"));
                false
            }
        }
    }

    /// Polls status until it is final (not Pending or Unknown) or the wait runs out.
    async fn settled_status(&self, leg: &Leg) -> Status {
        let started = Instant::now();
        loop {
            let status = self.connector.status(leg).await;
            if !matches!(status, Status::Pending | Status::Unknown(_)) || started.elapsed() > SETTLE_WAIT_MAX {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs every check against `rail`.
pub async fn run(rail: &dyn KitRail) -> KitReport {
    let connector = rail.connector();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0);
    let kit = Kit { rail, connector: Arc::clone(&connector), run: format!("{nanos:x}"), serial: AtomicU64::new(0) };
    // Start from a known state: no outage.
    let _ = rail.control().set_outage(false).await;
    let checks = vec![
        check("capabilities_are_complete", capabilities_are_complete(&kit)).await,
        check("quote_matches_execution", quote_matches_execution(&kit)).await,
        check("same_key_twice_executes_once", same_key_twice_executes_once(&kit)).await,
        check("concurrent_same_key_executes_once", concurrent_same_key_executes_once(&kit)).await,
        check("status_after_lost_reply_finds_execution", status_after_lost_reply(&kit)).await,
        check("status_after_lost_request_finds_nothing", status_after_lost_request(&kit)).await,
        check("unknown_key_is_not_found", unknown_key_is_not_found(&kit)).await,
        check("over_limit_refused_before_sending", over_limit_refused(&kit)).await,
        check("unsupported_currency_refused_before_sending", unsupported_currency_refused(&kit)).await,
        check("reason_codes_are_mapped", reason_codes_are_mapped(&kit)).await,
        check("timeout_is_honoured", timeout_is_honoured(&kit)).await,
        check("health_reflects_outage", health_reflects_outage(&kit)).await,
        check("cancel_behaves_as_declared", cancel_behaves_as_declared(&kit)).await,
    ];
    let _ = rail.control().set_outage(false).await;
    KitReport { rail: connector.capabilities().rail.clone(), checks }
}

async fn check(name: &'static str, body: impl std::future::Future<Output = Vec<String>>) -> Check {
    Check { name, failures: body.await }
}

async fn capabilities_are_complete(kit: &Kit<'_>) -> Vec<String> {
    let mut failures = Vec::new();
    let mut registry = Registry::new();
    if let Err(error) = registry.register(Arc::clone(&kit.connector)) {
        failures.push(error.to_string());
    }
    let capabilities = kit.connector.capabilities();
    if capabilities.timeout.is_zero() {
        failures.push("capabilities.timeout is zero".into());
    }
    let leg = kit.rail.valid_leg(kit.key("capabilities"));
    if let Some(refusal) = capabilities.refuse(&leg) {
        failures.push(format!("the kit's valid leg is refused by the capabilities: {}", refusal.detail));
    }
    failures
}

async fn quote_matches_execution(kit: &Kit<'_>) -> Vec<String> {
    let mut failures = Vec::new();
    let leg = kit.rail.valid_leg(kit.key("quote"));
    let quote = match kit.connector.quote(&leg).await {
        Ok(quote) => quote,
        Err(rejection) => return vec![format!("valid leg not quoted: {} {}", rejection.code, rejection.detail)],
    };
    match kit.connector.submit(&leg).await {
        Outcome::Executed(execution) => {
            if (execution.send, execution.fee, execution.receive) != (quote.send, quote.fee, quote.receive) {
                failures.push(format!(
                    "quote said send {} fee {} receive {}, execution says send {} fee {} receive {}",
                    quote.send, quote.fee, quote.receive, execution.send, execution.fee, execution.receive
                ));
            }
            if execution.reference.is_empty() {
                failures.push("execution has an empty rail reference".into());
            }
        }
        other => failures.push(format!("valid leg not executed: {other:?}")),
    }
    failures
}

async fn same_key_twice_executes_once(kit: &Kit<'_>) -> Vec<String> {
    let mut failures = Vec::new();
    let leg = kit.rail.valid_leg(kit.key("twice"));
    let first = kit.connector.submit(&leg).await;
    let second = kit.connector.submit(&leg).await;
    match (&first, &second) {
        (Outcome::Executed(a), Outcome::Executed(b)) if a.reference == b.reference => {}
        _ => failures.push(format!("expected the same execution twice, got {first:?} then {second:?}")),
    }
    if let Some(count) = kit.executions(&leg.key, &mut failures).await
        && count != 1
    {
        failures.push(format!("the rail executed the key {count} times"));
    }
    failures
}

async fn concurrent_same_key_executes_once(kit: &Kit<'_>) -> Vec<String> {
    let mut failures = Vec::new();
    let leg = kit.rail.valid_leg(kit.key("concurrent"));
    let attempts = 8;
    let outcomes = futures_join(kit, &leg, attempts).await;
    let executed: Vec<&str> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Outcome::Executed(execution) => Some(execution.reference.as_str()),
            _ => None,
        })
        .collect();
    if outcomes.iter().any(|outcome| matches!(outcome, Outcome::Rejected(_))) {
        failures.push(format!("a concurrent duplicate was rejected instead of answered: {outcomes:?}"));
    }
    if executed.is_empty() || executed.iter().any(|reference| *reference != executed[0]) {
        failures.push(format!("concurrent submissions disagree: {outcomes:?}"));
    }
    if let Some(count) = kit.executions(&leg.key, &mut failures).await
        && count != 1
    {
        failures.push(format!("{attempts} concurrent submissions executed {count} times"));
    }
    failures
}

async fn futures_join(kit: &Kit<'_>, leg: &Leg, attempts: usize) -> Vec<Outcome> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..attempts {
        let connector = Arc::clone(&kit.connector);
        let leg = leg.clone();
        tasks.spawn(async move { connector.submit(&leg).await });
    }
    let mut outcomes = Vec::with_capacity(attempts);
    while let Some(result) = tasks.join_next().await {
        if let Ok(outcome) = result {
            outcomes.push(outcome);
        }
    }
    outcomes
}

async fn status_after_lost_reply(kit: &Kit<'_>) -> Vec<String> {
    let mut failures = Vec::new();
    let leg = kit.rail.valid_leg(kit.key("reply-lost"));
    if !kit.force(Fault::ReplyLost, &mut failures).await {
        return failures;
    }
    // The rail executed and its reply was lost: the connector either says Unknown or has already
    // learned the truth (a recall answered "too late"); it must never say Rejected.
    match kit.connector.submit(&leg).await {
        Outcome::Unknown(_) | Outcome::Executed(_) => {}
        other => failures.push(format!("a lost reply must give Unknown (or the execution), got {other:?}")),
    }
    let reference = match kit.settled_status(&leg).await {
        Status::Executed(execution) => Some(execution.reference),
        other => {
            failures.push(format!("the rail executed but status says {other:?}"));
            None
        }
    };
    match kit.connector.submit(&leg).await {
        Outcome::Executed(execution) if Some(&execution.reference) == reference.as_ref() => {}
        other => failures.push(format!("resubmitting the key must answer the same execution, got {other:?}")),
    }
    if let Some(count) = kit.executions(&leg.key, &mut failures).await
        && count != 1
    {
        failures.push(format!("the rail executed the key {count} times"));
    }
    failures
}

async fn status_after_lost_request(kit: &Kit<'_>) -> Vec<String> {
    let mut failures = Vec::new();
    let leg = kit.rail.valid_leg(kit.key("request-lost"));
    if !kit.force(Fault::RequestLost, &mut failures).await {
        return failures;
    }
    // The request never reached the rail: Unknown, or a definitive cancellation if the connector
    // recalled the payment; never Executed.
    let outcome = kit.connector.submit(&leg).await;
    let recalled = match &outcome {
        Outcome::Unknown(_) => false,
        Outcome::Rejected(rejection) if rejection.code == ReasonCode::Cancelled => true,
        other => {
            failures.push(format!("a lost request must give Unknown (or a recall's cancellation), got {other:?}"));
            false
        }
    };
    let status = kit.connector.status(&leg).await;
    let cancelled = match &status {
        Status::NotFound if !recalled => false,
        Status::Rejected(rejection) if rejection.code == ReasonCode::Cancelled => true,
        other => {
            failures.push(format!("the rail never saw the request but status says {other:?}"));
            recalled
        }
    };
    if let Some(count) = kit.executions(&leg.key, &mut failures).await
        && count != 0
    {
        failures.push(format!("a lost request executed {count} times"));
    }
    let again = kit.connector.submit(&leg).await;
    let expected = usize::from(!cancelled);
    match (&again, cancelled) {
        (Outcome::Executed(_), false) => {}
        (Outcome::Rejected(rejection), true) if rejection.code == ReasonCode::Cancelled => {}
        _ => failures.push(format!(
            "resubmitting after {} must {}, got {again:?}",
            status.name(),
            if cancelled { "stay cancelled" } else { "execute" }
        )),
    }
    if let Some(count) = kit.executions(&leg.key, &mut failures).await
        && count != expected
    {
        failures.push(format!("after resubmission the rail executed the key {count} times, expected {expected}"));
    }
    failures
}

async fn unknown_key_is_not_found(kit: &Kit<'_>) -> Vec<String> {
    let leg = kit.rail.valid_leg(kit.key("never-sent"));
    match kit.connector.status(&leg).await {
        Status::NotFound => Vec::new(),
        other => vec![format!("a key never sent must be not_found, got {other:?}")],
    }
}

async fn expect_refused_before_sending(kit: &Kit<'_>, leg: &Leg, expected: ReasonCode) -> Vec<String> {
    let mut failures = Vec::new();
    match kit.connector.submit(leg).await {
        Outcome::Rejected(rejection) if rejection.code == expected && rejection.before_send => {}
        other => failures.push(format!("expected a before-send {expected} refusal, got {other:?}")),
    }
    match kit.rail.control().counts(&kit.connector.rail_key(&leg.key)).await {
        Ok(counts) if counts.received == 0 && counts.executions == 0 => {}
        Ok(counts) => failures.push(format!(
            "the refusal reached the rail: {} message(s), {} execution(s)",
            counts.received, counts.executions
        )),
        Err(error) => failures.push(format!("cannot read the rail's counts: {error}")),
    }
    failures
}

async fn over_limit_refused(kit: &Kit<'_>) -> Vec<String> {
    let mut leg = kit.rail.valid_leg(kit.key("over-limit"));
    let capabilities = kit.connector.capabilities();
    let Some(limit) = capabilities.limits.iter().find(|limit| limit.maximum.currency() == leg.amount.currency()) else {
        return vec![format!("no limit declared for {}", leg.amount.currency())];
    };
    let Some(over) = limit.maximum.minor_units().checked_add(1) else {
        return vec!["the declared maximum is i64::MAX".into()];
    };
    leg.amount = Money::from_minor(over, leg.amount.currency());
    expect_refused_before_sending(kit, &leg, ReasonCode::LimitExceeded).await
}

async fn unsupported_currency_refused(kit: &Kit<'_>) -> Vec<String> {
    let mut leg = kit.rail.valid_leg(kit.key("currency"));
    let capabilities = kit.connector.capabilities();
    let Some(other) = Currency::all().into_iter().find(|currency| !capabilities.currencies.contains(currency)) else {
        return Vec::new();
    };
    leg.amount = Money::from_minor(leg.amount.minor_units(), other);
    expect_refused_before_sending(kit, &leg, ReasonCode::UnsupportedCurrency).await
}

async fn reason_codes_are_mapped(kit: &Kit<'_>) -> Vec<String> {
    let mut failures = Vec::new();
    let samples = kit.rail.reason_samples();
    if samples.is_empty() {
        failures.push("the rail declares no reason codes to check".into());
    }
    for (rail_code, expected) in samples {
        let leg = kit.rail.valid_leg(kit.key("reason"));
        if !kit.force(Fault::Reject { code: rail_code.clone() }, &mut failures).await {
            continue;
        }
        match kit.connector.submit(&leg).await {
            Outcome::Rejected(rejection) if rejection.code == expected && rejection.rail_code == rail_code => {}
            other => failures.push(format!("rail code {rail_code} must map to {expected}, got {other:?}")),
        }
        match kit.connector.status(&leg).await {
            Status::Rejected(rejection) if rejection.code == expected => {}
            other => failures.push(format!("after rejecting with {rail_code} status says {other:?}")),
        }
        if let Some(count) = kit.executions(&leg.key, &mut failures).await
            && count != 0
        {
            failures.push(format!("a rejected key executed {count} times"));
        }
    }
    failures
}

async fn timeout_is_honoured(kit: &Kit<'_>) -> Vec<String> {
    let mut failures = Vec::new();
    let timeout = kit.connector.capabilities().timeout;
    let leg = kit.rail.valid_leg(kit.key("slow"));
    let delay_ms = u64::try_from((timeout * 2).as_millis()).unwrap_or(u64::MAX);
    if !kit.force(Fault::Delay { ms: delay_ms }, &mut failures).await {
        return failures;
    }
    let started = Instant::now();
    let outcome = kit.connector.submit(&leg).await;
    let elapsed = started.elapsed();
    if elapsed > timeout + TIMEOUT_SLACK {
        failures.push(format!("submit took {elapsed:?} with a timeout of {timeout:?}"));
    }
    // Whatever the connector answered must agree with what the rail finally did.
    let status = kit.settled_status(&leg).await;
    let count = kit.executions(&leg.key, &mut failures).await;
    match (&outcome, &status) {
        (Outcome::Unknown(unknown), Status::Executed(_) | Status::Rejected(_))
            if matches!(unknown.cause, UnknownCause::Timeout | UnknownCause::Pending) => {}
        (Outcome::Executed(a), Status::Executed(b)) if a.reference == b.reference => {}
        (Outcome::Rejected(a), Status::Rejected(b)) if a.code == b.code => {}
        _ => {
            failures.push(format!("a rail slower than the timeout: submit said {outcome:?}, the rail says {status:?}"))
        }
    }
    let expected = usize::from(matches!(status, Status::Executed(_)));
    if let Some(count) = count
        && count != expected
    {
        failures.push(format!("status says {} but the rail executed the key {count} times", status.name()));
    }
    failures
}

async fn health_reflects_outage(kit: &Kit<'_>) -> Vec<String> {
    let mut failures = Vec::new();
    if !kit.connector.health().await.available {
        failures.push("the rail is up but health says unavailable".into());
    }
    if let Err(error) = kit.rail.control().set_outage(true).await {
        return vec![format!("cannot start an outage: {error}")];
    }
    let health = kit.connector.health().await;
    if health.available {
        failures.push("the rail is in an outage but health says available".into());
    }
    let leg = kit.rail.valid_leg(kit.key("outage"));
    match kit.connector.submit(&leg).await {
        Outcome::Rejected(rejection) if rejection.code == ReasonCode::RailUnavailable => {}
        other => {
            failures.push(format!("a submission during an outage must be rejected as rail_unavailable, got {other:?}"))
        }
    }
    if let Some(count) = kit.executions(&leg.key, &mut failures).await
        && count != 0
    {
        failures.push(format!("the rail executed during its outage ({count})"));
    }
    if let Err(error) = kit.rail.control().set_outage(false).await {
        failures.push(format!("cannot end the outage: {error}"));
    }
    if !kit.connector.health().await.available {
        failures.push("the outage ended but health still says unavailable".into());
    }
    failures
}

async fn cancel_behaves_as_declared(kit: &Kit<'_>) -> Vec<String> {
    let mut failures = Vec::new();
    let supports = kit.connector.capabilities().supports_cancel;
    let executed = kit.rail.valid_leg(kit.key("cancel-executed"));
    let outcome = kit.connector.submit(&executed).await;
    if !matches!(outcome, Outcome::Executed(_)) {
        return vec![format!("valid leg not executed: {outcome:?}")];
    }
    let answer = kit.connector.cancel(&executed).await;
    match (supports, &answer) {
        (true, CancelOutcome::TooLate(_)) | (false, CancelOutcome::Unsupported) => {}
        _ => failures.push(format!("cancelling an executed key (supports_cancel {supports}) answered {answer:?}")),
    }
    if supports {
        // Cancelling first must stop a later arrival of the same key from executing.
        let unsent = kit.rail.valid_leg(kit.key("cancel-first"));
        match kit.connector.cancel(&unsent).await {
            CancelOutcome::NotFound | CancelOutcome::Cancelled => {}
            other => failures.push(format!("cancelling an unsent key answered {other:?}")),
        }
        match kit.connector.submit(&unsent).await {
            Outcome::Rejected(rejection) if rejection.code == ReasonCode::Cancelled => {}
            other => failures.push(format!("a cancelled key must be rejected as cancelled, got {other:?}")),
        }
        if let Some(count) = kit.executions(&unsent.key, &mut failures).await
            && count != 0
        {
            failures.push(format!("a cancelled key executed {count} times"));
        }
    }
    failures
}
