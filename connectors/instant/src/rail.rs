//! The instant-payment network itself: it reads ISO 20022 messages, settles or rejects, keeps its
//! execution ledger and the house's prefunded settlement balances, and misbehaves on demand.
//!
//! Paths: `POST /pacs.008` (answer: pacs.002), `POST /pacs.028` (answer: pacs.002 for the
//! original, or 404 when the rail never received it), `POST /camt.056` (answer: pacs.002 for the
//! original: RJCT DS24 when the recall cancelled it, settled when it came too late), `GET /admi.004`
//! (the current availability broadcast), plus the sandbox control paths.
//!
//! Sandbox conventions for creditor accounts: an account ending in `0003` is invalid (AC03), in
//! `0004` closed (AC04), in `0006` blocked (AC06); an IBAN must pass its mod-97 check (AC03).
//!
//! Fees: RTP and SEPA Instant bill participants per transaction outside the payment messages, so
//! the rail's ledger records the settled amount with a zero fee; the connector reports the
//! published fee in its execution.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use railyard_connector::faults::{Fault, FaultPlan};
use railyard_connector::ledger::ExecutionRecord;
use railyard_connector::sandbox::Sandbox;
use railyard_connector::transport::{Method, RailService, Reply, split_target};
use railyard_connector::{Execution, IdempotencyKey, NotificationEvent, ReasonCode, Rejection, Status};
use railyard_core::{Currency, Money};

use crate::iso20022::{self, CreditTransfer, Message, PaymentIds, Profile, StatusReport, SystemEvent, TxState};
use crate::reasons;

/// How the network is set up.
#[derive(Debug, Clone)]
pub struct InstantRailConfig {
    pub rail: String,
    /// The network's own member id (the `From` of its broadcasts).
    pub network_member: String,
    pub currencies: Vec<Currency>,
    /// Per-payment maximum, per currency, on the settled amount (AM02 above it).
    pub maximum: Vec<Money>,
    /// The house's prefunded settlement balance, per currency (AM04 when short).
    pub prefunded: Vec<Money>,
    /// How long the network waits for the creditor agent before rejecting with TM01.
    pub timeout: Duration,
    pub faults: FaultPlan,
}

struct Original {
    transfer: CreditTransfer,
    profile: Profile,
    received_at: DateTime<Utc>,
}

#[derive(Default)]
struct Books {
    balances: HashMap<Currency, i64>,
    /// Transaction id → rail key (UETR), for RTP status requests that name only the transaction id.
    by_transaction: HashMap<String, IdempotencyKey>,
    originals: HashMap<IdempotencyKey, Original>,
}

/// The sandbox network.
pub struct InstantRail {
    config: InstantRailConfig,
    pub sandbox: Arc<Sandbox>,
    books: Mutex<Books>,
    /// Serialises the check-then-record steps of a payment so a key can never execute twice.
    gate: tokio::sync::Mutex<()>,
}

/// Most originals remembered for status requests; beyond it the rail answers 503 rather than grow.
pub const ORIGINALS_MAX: usize = 1_000_000;

impl InstantRail {
    pub fn new(config: InstantRailConfig) -> Result<InstantRail, String> {
        let sandbox = Sandbox::new(config.rail.clone(), config.faults.clone()).map_err(|error| error.to_string())?;
        let balances = config.prefunded.iter().map(|money| (money.currency(), money.minor_units())).collect();
        Ok(InstantRail {
            config,
            sandbox: Arc::new(sandbox),
            books: Mutex::new(Books { balances, ..Books::default() }),
            gate: tokio::sync::Mutex::new(()),
        })
    }

    pub fn config(&self) -> &InstantRailConfig {
        &self.config
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The house's settlement balance in `currency`.
    pub fn balance(&self, currency: Currency) -> Money {
        Money::from_minor(self.books().balances.get(&currency).copied().unwrap_or(0), currency)
    }

    /// A transfer between the house's bank and its settlement account at this network arrived:
    /// `amount` credited (a top-up) or, with `withdraw`, debited (a sweep, refused beyond the
    /// balance).
    pub fn move_house_funds(&self, amount: Money, withdraw: bool) -> Result<Money, String> {
        let currency = amount.currency();
        if !self.config.currencies.contains(&currency) {
            return Err(format!("{} does not settle {currency}", self.config.rail));
        }
        let mut books = self.books();
        let balance = books.balances.entry(currency).or_insert(0);
        let moved = if withdraw {
            balance.checked_sub(amount.minor_units()).filter(|left| *left >= 0)
        } else {
            balance.checked_add(amount.minor_units())
        };
        let Some(moved) = moved else {
            return Err(format!(
                "the settlement balance of {} cannot move by {amount}",
                Money::from_minor(*balance, currency)
            ));
        };
        *balance = moved;
        Ok(Money::from_minor(moved, currency))
    }

    fn report(&self, original: &CreditTransfer, profile: Profile, state: TxState, reason: Option<&str>) -> String {
        let now = Utc::now();
        let report = StatusReport {
            message_id: iso20022::message_id(
                'M',
                now,
                &original.creditor_agent,
                &format!("{}:{now}", original.ids.uetr),
            ),
            created_at: now,
            original: original.ids.clone(),
            original_message_name: iso20022_version(profile).into(),
            original_created_at: original.created_at,
            status: state.code(profile).into(),
            reason: reason.map(str::to_string),
            additional_info: reason.map(|code| reasons::meaning(code).to_string()),
            amount: original.amount,
            settlement_date: original.settlement_date,
            from_agent: original.creditor_agent.clone(),
            to_agent: original.debtor_agent.clone(),
        };
        iso20022::emit_status_report(profile, &report)
    }

    /// The pacs.002 for what the ledger knows of a key.
    fn report_status(&self, original: &CreditTransfer, profile: Profile, status: &Status) -> String {
        match status {
            Status::Executed(_) => self.report(original, profile, TxState::Settled, None),
            Status::Rejected(rejection) => {
                // A recall's cancellation is reported with the recall's own reason.
                let code = if rejection.code == ReasonCode::Cancelled { "DS24" } else { rejection.rail_code.as_str() };
                self.report(original, profile, TxState::Rejected, Some(code))
            }
            Status::Pending | Status::NotFound | Status::Unknown(_) => {
                self.report(original, profile, TxState::Pending, None)
            }
        }
    }

    fn reject(&self, key: &IdempotencyKey, transfer: &CreditTransfer, profile: Profile, code: &str) -> Reply {
        let rejection = Rejection::by_rail(reasons::map(code), code, reasons::meaning(code));
        let _ = self.sandbox.ledger.reject(key, rejection.clone());
        self.notify(key, Status::Rejected(rejection));
        Reply::xml(200, self.report(transfer, profile, TxState::Rejected, Some(code)))
    }

    fn notify(&self, key: &IdempotencyKey, status: Status) {
        let draw = self.sandbox.faults.draw_callback();
        self.sandbox.ledger.notify(
            NotificationEvent::Status { key: key.clone(), status },
            Utc::now(),
            draw.callback_delay,
            draw.duplicate_callback,
        );
    }

    /// The first reason this network refuses a transfer, if any (checked before settlement).
    fn refusal(&self, transfer: &CreditTransfer) -> Option<&'static str> {
        let amount = transfer.amount;
        if !self.config.currencies.contains(&amount.currency()) {
            return Some("AM12");
        }
        if let Some(maximum) = self.config.maximum.iter().find(|maximum| maximum.currency() == amount.currency())
            && amount.minor_units() > maximum.minor_units()
        {
            return Some("AM02");
        }
        let account = transfer.creditor.account.as_str();
        if account.is_empty() {
            return Some("AC03");
        }
        if account.ends_with("0003") || (looks_like_iban(account) && !iban_is_valid(account)) {
            return Some("AC03");
        }
        if account.ends_with("0004") {
            return Some("AC04");
        }
        if account.ends_with("0006") {
            return Some("AC06");
        }
        if self.books().balances.get(&amount.currency()).copied().unwrap_or(0) < amount.minor_units() {
            return Some("AM04");
        }
        None
    }

    async fn credit_transfer(&self, profile: Profile, transfer: CreditTransfer) -> Reply {
        let now = Utc::now();
        let draw = self.sandbox.faults.draw(now);
        if draw.fault == Some(Fault::RequestLost) {
            return Reply::Lost;
        }
        let Ok(key) = IdempotencyKey::new(transfer.ids.uetr.clone()) else {
            return Reply::text(400, "pacs.008: the UETR is missing or malformed");
        };
        self.sandbox.ledger.received(&key);
        if !draw.latency.is_zero() {
            tokio::time::sleep(draw.latency).await;
        }
        let guard = self.gate.lock().await;
        {
            let mut books = self.books();
            if books.originals.len() >= ORIGINALS_MAX && !books.originals.contains_key(&key) {
                return Reply::text(503, "the sandbox remembers no more payments");
            }
            books.by_transaction.insert(transfer.ids.transaction_id.clone(), key.clone());
            books.originals.entry(key.clone()).or_insert_with(|| Original {
                transfer: transfer.clone(),
                profile,
                received_at: now,
            });
        }
        // A key the rail already decided, or is still deciding, gets that answer: never a second run.
        match self.sandbox.ledger.status(&key) {
            Status::NotFound => {}
            status => return Reply::xml(200, self.report_status(&transfer, profile, &status)),
        }
        if draw.outage {
            return self.reject(&key, &transfer, profile, "9910");
        }
        if let Some(Fault::Reject { code }) = &draw.fault {
            return self.reject(&key, &transfer, profile, code);
        }
        if let Some(code) = self.refusal(&transfer) {
            return self.reject(&key, &transfer, profile, code);
        }
        if let Some(Fault::Delay { ms }) = draw.fault {
            // The creditor side is slow: hold the payment, answer later (or time it out).
            self.sandbox.ledger.hold(&key, now);
            drop(guard);
            let delay = Duration::from_millis(ms);
            tokio::time::sleep(delay.min(self.config.timeout)).await;
            let _guard = self.gate.lock().await;
            if !matches!(self.sandbox.ledger.status(&key), Status::Pending) {
                // Recalled (camt.056) while held.
                let status = self.sandbox.ledger.status(&key);
                return Reply::xml(200, self.report_status(&transfer, profile, &status));
            }
            if delay > self.config.timeout {
                return self.reject(&key, &transfer, profile, "TM01");
            }
            return self.settle(&key, &transfer, profile, false);
        }
        self.settle(&key, &transfer, profile, draw.fault == Some(Fault::ReplyLost))
    }

    /// Settles: debits the prefunded balance, records the execution, answers (or loses the answer).
    fn settle(&self, key: &IdempotencyKey, transfer: &CreditTransfer, profile: Profile, lose_reply: bool) -> Reply {
        let amount = transfer.amount;
        {
            let mut books = self.books();
            let balance = books.balances.entry(amount.currency()).or_insert(0);
            if *balance < amount.minor_units() {
                drop(books);
                return self.reject(key, transfer, profile, "AM04");
            }
            *balance -= amount.minor_units();
        }
        let execution = Execution {
            reference: transfer.ids.transaction_id.clone(),
            send: amount,
            fee: Money::zero(amount.currency()),
            receive: amount,
            rate: None,
            executed_at: Utc::now(),
        };
        let record = ExecutionRecord {
            key: key.clone(),
            execution: execution.clone(),
            beneficiary_account: transfer.creditor.account.clone(),
        };
        if let Err(error) = self.sandbox.ledger.execute(record) {
            // Undo the debit: nothing executed.
            *self.books().balances.entry(amount.currency()).or_insert(0) += amount.minor_units();
            return Reply::text(503, &error.to_string());
        }
        self.notify(key, Status::Executed(execution));
        if lose_reply {
            return Reply::Lost;
        }
        Reply::xml(200, self.report(transfer, profile, TxState::Settled, None))
    }

    /// The camt.054 debit notification for the house's settlement account: every credit transfer
    /// the network settled on `date` (UTC), in the order it settled them.
    pub fn debit_notification(&self, date: NaiveDate) -> String {
        let executions = self.sandbox.ledger.executions();
        let bookings: Vec<iso20022::Booking> = {
            let books = self.books();
            executions
                .iter()
                .filter(|record| record.execution.executed_at.date_naive() == date)
                .filter_map(|record| {
                    let original = books.originals.get(&record.key)?;
                    Some(iso20022::Booking {
                        transfer: original.transfer.clone(),
                        booked_at: record.execution.executed_at,
                    })
                })
                .collect()
        };
        let now = Utc::now();
        let message = iso20022::DebitNotification {
            message_id: iso20022::message_id('N', now, &self.config.network_member, &format!("camt054:{date}:{now}")),
            created_at: now,
            account_owner: format!("{}-settlement", self.config.rail),
            currencies: self.config.currencies.clone(),
            bookings,
        };
        iso20022::emit_debit_notification(&message)
    }

    fn find(&self, ids: &PaymentIds) -> Option<(IdempotencyKey, CreditTransfer, Profile)> {
        let books = self.books();
        let key = IdempotencyKey::new(ids.uetr.clone())
            .ok()
            .filter(|key| books.originals.contains_key(key))
            .or_else(|| books.by_transaction.get(&ids.transaction_id).cloned())?;
        let original = books.originals.get(&key)?;
        Some((key, original.transfer.clone(), original.profile))
    }

    fn status_request(&self, request: iso20022::StatusRequest) -> Reply {
        if self.sandbox.faults.outage_at(Utc::now()) {
            return Reply::text(503, "rail unavailable");
        }
        match self.find(&request.original) {
            None => Reply::text(404, "original transaction not received"),
            Some((key, original, profile)) => {
                let status = self.sandbox.ledger.status(&key);
                Reply::xml(200, self.report_status(&original, profile, &status))
            }
        }
    }

    async fn cancellation(&self, profile: Profile, recall: iso20022::CancellationRequest) -> Reply {
        // A recall crosses the same network as a payment and can be lost the same way.
        let draw = self.sandbox.faults.draw(Utc::now());
        if matches!(draw.fault, Some(Fault::RequestLost | Fault::ReplyLost)) {
            return Reply::Lost;
        }
        let _guard = self.gate.lock().await;
        let (key, original, original_profile) = match self.find(&recall.original) {
            Some(found) => found,
            None => {
                // Never received: remember the cancellation so a late pacs.008 cannot execute.
                let Ok(key) = IdempotencyKey::new(recall.original.uetr.clone()) else {
                    return Reply::text(400, "camt.056: the original UETR is missing or malformed");
                };
                let _ = self.sandbox.ledger.cancel(&key);
                let transfer = CreditTransfer {
                    ids: recall.original.clone(),
                    created_at: recall.created_at,
                    amount: recall.amount,
                    settlement_date: recall.settlement_date,
                    debtor: iso20022::Party { name: String::new(), account: String::new(), country: String::new() },
                    debtor_agent: recall.assigner.clone(),
                    creditor: iso20022::Party { name: String::new(), account: String::new(), country: String::new() },
                    creditor_agent: recall.to_agent.clone(),
                    remittance: String::new(),
                };
                let mut books = self.books();
                books.by_transaction.insert(recall.original.transaction_id.clone(), key.clone());
                books.originals.insert(key, Original { transfer: transfer.clone(), profile, received_at: Utc::now() });
                return Reply::xml(200, self.report(&transfer, profile, TxState::Rejected, Some("DS24")));
            }
        };
        let _ = self.sandbox.ledger.cancel(&key);
        let status = self.sandbox.ledger.status(&key);
        Reply::xml(200, self.report_status(&original, original_profile, &status))
    }

    fn availability(&self) -> Reply {
        let now = Utc::now();
        let available = !self.sandbox.faults.outage_at(now);
        let event = SystemEvent {
            code: "960".into(),
            parameters: vec![
                format!("{}BROADCAST", now.format("%Y%m%d%H%M%S")),
                "Broadcast".into(),
                if available { "AVAILABLE" } else { "UNAVAILABLE" }.into(),
            ],
            time: now,
        };
        Reply::xml(200, iso20022::emit_system_event(&event, &self.config.network_member, &self.config.network_member))
    }

    /// When each original was received, for reconciliation reports.
    pub fn received_at(&self, key: &IdempotencyKey) -> Option<DateTime<Utc>> {
        self.books().originals.get(key).map(|original| original.received_at)
    }
}

fn iso20022_version(profile: Profile) -> &'static str {
    match profile {
        Profile::Rtp => "pacs.008.001.08",
        Profile::Iso => "pacs.008.001.09",
    }
}

#[async_trait]
impl RailService for InstantRail {
    async fn call(&self, method: Method, target: &str, body: Vec<u8>) -> Reply {
        if let Some(reply) = self.sandbox.control(method, target, &body) {
            return reply;
        }
        let (path, query) = split_target(target);
        match (method, path) {
            (Method::Get, "/camt.054") => {
                let date = query.iter().find(|(name, _)| *name == "date").map(|(_, value)| *value);
                match date.map(|value| NaiveDate::parse_from_str(value, "%Y-%m-%d")) {
                    Some(Ok(date)) => Reply::xml(200, self.debit_notification(date)),
                    _ => Reply::text(400, "date: expected YYYY-MM-DD"),
                }
            }
            (Method::Get, "/admi.004") => {
                let delay = self.sandbox.faults.steady_latency();
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                self.availability()
            }
            (Method::Post, "/pacs.008" | "/pacs.028" | "/camt.056") => {
                let parsed = match iso20022::parse(&body) {
                    Ok(parsed) => parsed,
                    Err(error) => return Reply::text(400, &error.to_string()),
                };
                match (path, parsed.message) {
                    ("/pacs.008", Message::CreditTransfer(transfer)) => {
                        self.credit_transfer(parsed.profile, transfer).await
                    }
                    ("/pacs.028", Message::StatusRequest(request)) => self.status_request(request),
                    ("/camt.056", Message::CancellationRequest(recall)) => {
                        self.cancellation(parsed.profile, recall).await
                    }
                    (path, _) => {
                        Reply::text(400, &format!("{path} takes a {} message, got {}", &path[1..], parsed.message_type))
                    }
                }
            }
            _ => Reply::text(404, &format!("no such path: {target}")),
        }
    }
}

fn looks_like_iban(account: &str) -> bool {
    account.len() >= 15
        && account.chars().take(2).all(|character| character.is_ascii_uppercase())
        && account.chars().skip(2).take(2).all(|character| character.is_ascii_digit())
}

/// ISO 13616 check: move the first four characters to the end, letters to numbers, mod 97 == 1.
pub fn iban_is_valid(iban: &str) -> bool {
    let compact: String = iban.chars().filter(|character| !character.is_whitespace()).collect();
    if compact.len() < 15 || compact.len() > 34 || !compact.chars().all(|character| character.is_ascii_alphanumeric()) {
        return false;
    }
    let rearranged = format!("{}{}", &compact[4..], &compact[..4]);
    let mut remainder: u32 = 0;
    for character in rearranged.chars() {
        let value = match character.to_digit(36) {
            Some(value) => value,
            None => return false,
        };
        remainder = if value >= 10 { (remainder * 100 + value) % 97 } else { (remainder * 10 + value) % 97 };
    }
    remainder == 1
}

#[cfg(test)]
mod tests {
    use super::iban_is_valid;

    #[test]
    fn iban_check() {
        assert!(iban_is_valid("DE89370400440532013000"));
        assert!(iban_is_valid("GB29NWBK60161331926819"));
        assert!(!iban_is_valid("DE89370400440532013001"));
        assert!(!iban_is_valid("DE89"));
    }
}
