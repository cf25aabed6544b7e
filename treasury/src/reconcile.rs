//! Reconciliation: every report line matched to the ledger's rail legs by reference, amount,
//! currency and date; what the ledger holds that a complete report lacks; and in-doubt legs resolved
//! from the evidence.
//!
//! A rail leg is the pending transfer `{payout}:a{attempt}-leg{index}` that moved the leg's amount
//! from clearing to the rail's nostro account when it was submitted; it is posted when the leg
//! executed and voided when it did not. A line names a leg by any of: the leg key (the card and
//! CBDC rails' key), its UETR or end-to-end id (the instant rail's, derived from the key), or the
//! rail's own reference recorded at execution; in a reference field or in free text.
//!
//! Evidence resolves an in-doubt leg only when it is unambiguous: a booked or settled line with the
//! right amount and currency (executed), a reject (not executed), or absence from a report that is
//! complete for the leg's rail over a span that ends at least [`Settings::absence_grace`] after the
//! leg was submitted (not executed). Anything else is reported, never acted on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use railyard_config::RailKind;
use railyard_core::{Currency, Money};
use railyard_rail_instant::iso20022;
use railyard_saga::{Engine, EngineError, Evidence, Resolution, StoredRoute};
use railyard_store::Store;
use serde::Serialize;
use sqlx::Row;

use crate::reports::{Line, LineStatus, Report, ReportKind};

/// Most ledger legs one run compares (the legs submitted in the reports' span).
pub const LEGS_MAX: usize = 2_000_000;

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A leg submitted less than this before a complete report's end may still execute after it:
    /// its absence proves nothing yet.
    pub absence_grace: Duration,
    /// How far before a leg's submission a line may be dated (time zones, value dates).
    pub days_before: i64,
    /// How far after (settlement cycles, weekends, T+1 files).
    pub days_after: i64,
    /// The rail every complete report given is about, when the files do not say (a bank statement
    /// of a rail's settlement account). Without it, a card settlement file or a block log is about
    /// the one rail of its kind in the configuration.
    pub rail: Option<String>,
    /// The configured rails and their kinds.
    pub rails: Vec<(String, RailKind)>,
    /// Apply the evidence to in-doubt sagas (otherwise only report what would be resolved).
    pub resolve: bool,
    /// Carry resolved sagas on at once in this process (see [`Engine::resolve_in_doubt`]).
    pub drive_on: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            absence_grace: Duration::from_secs(600),
            days_before: 1,
            days_after: 7,
            rail: None,
            rails: Vec::new(),
            resolve: true,
            drive_on: false,
        }
    }
}

/// Where a leg stands in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LegState {
    Pending,
    Posted,
    Voided,
}

/// A rail leg as the ledger and the saga hold it.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerLeg {
    pub key: String,
    pub payout_id: String,
    pub rail: String,
    /// What the leg sent (the pending transfer's amount).
    pub amount: Money,
    pub state: LegState,
    pub submitted_at: DateTime<Utc>,
    /// What the route expected to deliver, and what the rail said it delivered.
    pub receive: Option<Money>,
    pub delivered: Option<Money>,
    pub fee: Option<Money>,
    pub executed_at: Option<DateTime<Utc>>,
    pub execution_reference: Option<String>,
    pub saga_state: String,
    /// The saga is in doubt about exactly this leg.
    pub in_doubt: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Matched {
    pub file: String,
    pub locator: String,
    pub payout_id: String,
    pub leg_key: String,
    pub rail: String,
    pub amount: Money,
    pub reference: String,
    pub ledger: LegState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnmatchedLine {
    pub file: String,
    pub locator: String,
    pub references: Vec<String>,
    pub amount: Money,
    pub date: NaiveDate,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnmatchedLeg {
    pub payout_id: String,
    pub leg_key: String,
    pub rail: String,
    pub amount: Money,
    pub ledger: LegState,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    pub file: String,
    pub locator: String,
    pub payout_id: String,
    pub leg_key: String,
    pub expected: String,
    pub found: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResolutionRecord {
    pub payout_id: String,
    pub leg_key: String,
    pub evidence: Evidence,
    /// What the engine did; absent when the run only reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Resolution>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileSummary {
    pub file: String,
    pub kind: ReportKind,
    pub lines: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The rail this file is complete for, and over which span.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete_for: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    pub notes: Vec<String>,
}

/// Counts, for a glance and for exit codes.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub lines: usize,
    pub matched: usize,
    pub unmatched_report: usize,
    pub unmatched_ledger: usize,
    pub mismatches: usize,
    pub resolved: usize,
}

/// What a run found and did.
#[derive(Debug, Clone, Serialize)]
pub struct Reconciliation {
    pub files: Vec<FileSummary>,
    pub matched: Vec<Matched>,
    pub unmatched_report: Vec<UnmatchedLine>,
    pub unmatched_ledger: Vec<UnmatchedLeg>,
    pub mismatches: Vec<Mismatch>,
    pub resolutions: Vec<ResolutionRecord>,
    pub summary: Summary,
}

impl Reconciliation {
    /// Everything agrees: no unmatched line or leg and no mismatch.
    pub fn clean(&self) -> bool {
        self.unmatched_report.is_empty() && self.unmatched_ledger.is_empty() && self.mismatches.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("the ledger holds more than {LEGS_MAX} rail legs in the reports' span; reconcile fewer days at a time")]
    TooManyLegs,
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// Loads the rail legs submitted between `from` and `until`.
pub async fn ledger_legs(
    store: &Store,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<LedgerLeg>, ReconcileError> {
    let rows = sqlx::query(
        "SELECT t.id, t.payout_id, t.credit_account, t.amount, t.currency, t.created_at, \
         (SELECT r.kind FROM transfers r WHERE r.pending_id = t.id) AS resolution, \
         p.state, p.attempt, p.leg, p.route \
         FROM transfers t JOIN payouts p ON p.id = t.payout_id \
         WHERE t.kind = 'pending' AND t.credit_account LIKE 'nostro:%' AND t.created_at >= $1 AND t.created_at < $2 \
         ORDER BY t.sequence LIMIT $3",
    )
    .bind(from.timestamp_micros())
    .bind(until.timestamp_micros())
    .bind(i64::try_from(LEGS_MAX + 1).unwrap_or(i64::MAX))
    .fetch_all(store.pool())
    .await?;
    if rows.len() > LEGS_MAX {
        return Err(ReconcileError::TooManyLegs);
    }
    let mut legs = Vec::with_capacity(rows.len());
    let mut routes: HashMap<String, Option<StoredRoute>> = HashMap::new();
    for row in rows {
        let key: String = row.try_get("id")?;
        let Some((_, attempt, index)) = parse_leg_key(&key) else { continue };
        let payout_id: String = row.try_get("payout_id")?;
        let account: String = row.try_get("credit_account")?;
        let rail = account.split(':').nth(1).unwrap_or_default().to_string();
        let currency = Currency::from_code(&row.try_get::<String, _>("currency")?)
            .map_err(|error| ReconcileError::Corrupt(error.to_string()))?;
        let amount = Money::from_minor(row.try_get("amount")?, currency);
        let state = match row.try_get::<Option<String>, _>("resolution")?.as_deref() {
            None => LegState::Pending,
            Some("post_pending") => LegState::Posted,
            Some(_) => LegState::Voided,
        };
        let saga_state: String = row.try_get("state")?;
        let saga_attempt: i64 = row.try_get("attempt")?;
        let saga_leg: i64 = row.try_get("leg")?;
        let route = match routes.get(&payout_id) {
            Some(route) => route.clone(),
            None => {
                let text: Option<String> = row.try_get("route")?;
                let route: Option<StoredRoute> = text.and_then(|text| serde_json::from_str(&text).ok());
                routes.insert(payout_id.clone(), route.clone());
                route
            }
        };
        // The stored route is the current attempt's; an earlier attempt's legs keep only the ledger.
        let stored = route.as_ref().filter(|_| saga_attempt == attempt).and_then(|route| route.legs.get(index));
        let submitted_at = DateTime::from_timestamp_micros(row.try_get("created_at")?).unwrap_or_default();
        legs.push(LedgerLeg {
            in_doubt: saga_state == "in_doubt" && saga_attempt == attempt && saga_leg == index as i64,
            key,
            payout_id,
            rail,
            amount,
            state,
            submitted_at,
            receive: stored.map(|leg| leg.receive),
            delivered: stored.and_then(|leg| leg.execution.as_ref()).map(|execution| execution.receive),
            fee: stored.map(|leg| leg.fee),
            executed_at: stored.and_then(|leg| leg.execution.as_ref()).map(|execution| execution.executed_at),
            execution_reference: stored
                .and_then(|leg| leg.execution.as_ref())
                .map(|execution| execution.reference.clone()),
            saga_state,
        });
    }
    Ok(legs)
}

/// `{payout}:a{attempt}-leg{index}` → its parts.
fn parse_leg_key(key: &str) -> Option<(&str, i64, usize)> {
    let (payout, tail) = key.rsplit_once(":a")?;
    let (attempt, index) = tail.split_once("-leg")?;
    Some((payout, attempt.parse().ok()?, index.parse().ok()?))
}

/// Every reference a leg may be reported under.
fn leg_references(leg: &LedgerLeg) -> Vec<String> {
    let mut references = vec![leg.key.clone(), iso20022::uetr_for(&leg.key)];
    // The end-to-end id depends on the key alone (not on the date or member in the other ids).
    references.push(iso20022::payment_ids(&leg.key, leg.submitted_at.date_naive(), "").end_to_end_id);
    references.extend(leg.execution_reference.clone());
    references
}

/// Words of free text that could be references.
fn tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split(|character: char| {
        character.is_whitespace() || matches!(character, ',' | ';' | '/' | '(' | ')' | '"' | '\'')
    })
    .filter(|token| token.len() >= 8)
}

/// Compares reports with the ledger over the span the reports cover, and (with
/// [`Settings::resolve`]) resolves in-doubt legs from the evidence.
pub async fn reconcile(
    store: &Store,
    engine: Option<&Engine>,
    reports: &[Report],
    settings: &Settings,
) -> Result<Reconciliation, ReconcileError> {
    // The span: every line's date and every coverage, widened by the date window.
    let mut dates: Vec<NaiveDate> =
        reports.iter().flat_map(|report| report.lines.iter().map(|line| line.date)).collect();
    for report in reports {
        if let Some(coverage) = report.coverage {
            dates.push(coverage.from.date_naive());
            dates.push(coverage.until.date_naive());
        }
    }
    let legs = match (dates.iter().min(), dates.iter().max()) {
        (Some(first), Some(last)) => {
            let from = (*first - chrono::Duration::days(settings.days_after + 1))
                .and_hms_opt(0, 0, 0)
                .unwrap_or_default()
                .and_utc();
            let until = (*last + chrono::Duration::days(settings.days_before + 2))
                .and_hms_opt(0, 0, 0)
                .unwrap_or_default()
                .and_utc();
            ledger_legs(store, from, until).await?
        }
        _ => Vec::new(),
    };
    let mut index: HashMap<String, usize> = HashMap::new();
    for (position, leg) in legs.iter().enumerate() {
        for reference in leg_references(leg) {
            index.entry(reference).or_insert(position);
        }
    }
    let mut run = Reconciliation {
        files: Vec::new(),
        matched: Vec::new(),
        unmatched_report: Vec::new(),
        unmatched_ledger: Vec::new(),
        mismatches: Vec::new(),
        resolutions: Vec::new(),
        summary: Summary::default(),
    };
    // Per leg: the evidence found (the first decisive line wins; contradictions are mismatches).
    let mut evidence: BTreeMap<usize, Evidence> = BTreeMap::new();
    // Per report: the legs it showed.
    let mut seen: Vec<HashSet<usize>> = vec![HashSet::new(); reports.len()];
    for (report_index, report) in reports.iter().enumerate() {
        for line in &report.lines {
            run.summary.lines += 1;
            let found = line
                .references
                .iter()
                .map(String::as_str)
                .chain(tokens(&line.text))
                .find_map(|reference| index.get(reference).map(|position| (*position, reference.to_string())));
            let Some((position, reference)) = found else {
                run.unmatched_report.push(UnmatchedLine {
                    file: report.file.clone(),
                    locator: line.locator.clone(),
                    references: line.references.clone(),
                    amount: line.amount,
                    date: line.date,
                    reason: unmatched_reason(line),
                });
                continue;
            };
            let leg = &legs[position];
            seen[report_index].insert(position);
            match compare(leg, line, settings) {
                Err((expected, found, reason)) => run.mismatches.push(Mismatch {
                    file: report.file.clone(),
                    locator: line.locator.clone(),
                    payout_id: leg.payout_id.clone(),
                    leg_key: leg.key.clone(),
                    expected,
                    found,
                    reason,
                }),
                Ok(note) => {
                    let source = format!("{} {}", report.file, line.locator);
                    let decided = match (&line.status, leg.state) {
                        (LineStatus::Executed, LegState::Pending) if leg.in_doubt => Some(Evidence::Executed {
                            reference: line.servicer_reference.clone().unwrap_or_else(|| reference.clone()),
                            delivered: (Some(line.amount) != Some(leg.amount)).then_some(line.amount),
                            executed_at: line
                                .at
                                .unwrap_or_else(|| line.date.and_hms_opt(12, 0, 0).unwrap_or_default().and_utc()),
                            source,
                        }),
                        (LineStatus::Rejected { reason }, LegState::Pending) if leg.in_doubt => {
                            Some(Evidence::NotExecuted { source, detail: format!("the rail rejected it: {reason}") })
                        }
                        _ => None,
                    };
                    let contradiction = match (&line.status, leg.state) {
                        (LineStatus::Executed, LegState::Voided) => {
                            Some("the report shows it executed; the ledger voided it (a return is due)")
                        }
                        (LineStatus::Rejected { .. }, LegState::Posted) => {
                            Some("the report shows it rejected; the ledger posted it")
                        }
                        _ => None,
                    };
                    if let Some(reason) = contradiction {
                        run.mismatches.push(Mismatch {
                            file: report.file.clone(),
                            locator: line.locator.clone(),
                            payout_id: leg.payout_id.clone(),
                            leg_key: leg.key.clone(),
                            expected: format!("{:?}", leg.state).to_lowercase(),
                            found: status_word(&line.status).into(),
                            reason: reason.into(),
                        });
                        continue;
                    }
                    if let Some(found) = decided {
                        match evidence.get(&position) {
                            Some(earlier) if !same_outcome(earlier, &found) => {
                                run.mismatches.push(Mismatch {
                                    file: report.file.clone(),
                                    locator: line.locator.clone(),
                                    payout_id: leg.payout_id.clone(),
                                    leg_key: leg.key.clone(),
                                    expected: format!("{earlier:?}"),
                                    found: status_word(&line.status).into(),
                                    reason: "reports disagree about this leg; it stays in doubt".into(),
                                });
                                evidence.remove(&position);
                                continue;
                            }
                            Some(_) => {}
                            None => {
                                evidence.insert(position, found);
                            }
                        }
                    }
                    let note = match (&line.status, note) {
                        (LineStatus::Pending, _) => Some("the report shows it pending: no evidence either way".into()),
                        (LineStatus::Reversed, _) => Some("a reversal: the payment came back".into()),
                        (_, note) => note,
                    };
                    run.matched.push(Matched {
                        file: report.file.clone(),
                        locator: line.locator.clone(),
                        payout_id: leg.payout_id.clone(),
                        leg_key: leg.key.clone(),
                        rail: leg.rail.clone(),
                        amount: line.amount,
                        reference,
                        ledger: leg.state,
                        note,
                    });
                }
            }
        }
    }
    // Complete reports: what the ledger holds on their rail and span that they do not show.
    for (report_index, report) in reports.iter().enumerate() {
        let rail = complete_rail(report, settings, &legs, &seen[report_index]);
        let mut summary = FileSummary {
            file: report.file.clone(),
            kind: report.kind,
            lines: report.lines.len(),
            account: report.account.clone(),
            complete_for: None,
            from: None,
            until: None,
            notes: report.notes.clone(),
        };
        if let (Some(rail), Some(coverage)) = (rail, report.coverage) {
            summary.complete_for = Some(rail.clone());
            summary.from = Some(coverage.from);
            summary.until = Some(coverage.until);
            let grace = chrono::Duration::from_std(settings.absence_grace).unwrap_or_default();
            for (position, leg) in legs.iter().enumerate() {
                if leg.rail != rail || seen[report_index].contains(&position) {
                    continue;
                }
                match leg.state {
                    LegState::Posted => {
                        let at = leg.executed_at.unwrap_or(leg.submitted_at);
                        if at >= coverage.from && at < coverage.until {
                            run.unmatched_ledger.push(UnmatchedLeg {
                                payout_id: leg.payout_id.clone(),
                                leg_key: leg.key.clone(),
                                rail: leg.rail.clone(),
                                amount: leg.amount,
                                ledger: leg.state,
                                reason: format!(
                                    "posted as executed at {at}, but {} (complete for {rail} from {} until {}) does not show it",
                                    report.file, coverage.from, coverage.until
                                ),
                            });
                        }
                    }
                    LegState::Pending
                        if leg.in_doubt
                            && leg.submitted_at >= coverage.from
                            && leg.submitted_at + grace <= coverage.until
                            && !evidence.contains_key(&position) =>
                    {
                        evidence.insert(
                            position,
                            Evidence::NotExecuted {
                                source: format!("absent from {}", report.file),
                                detail: format!(
                                    "{} is complete for {rail} until {} and does not show the leg submitted at {}",
                                    report.file, coverage.until, leg.submitted_at
                                ),
                            },
                        );
                    }
                    _ => {}
                }
            }
        }
        run.files.push(summary);
    }
    for (position, found) in evidence {
        let leg = &legs[position];
        let mut record = ResolutionRecord {
            payout_id: leg.payout_id.clone(),
            leg_key: leg.key.clone(),
            evidence: found,
            result: None,
            error: None,
        };
        if settings.resolve
            && let Some(engine) = engine
        {
            match engine.resolve_in_doubt(&leg.payout_id, &leg.key, &record.evidence, settings.drive_on).await {
                Ok(result) => {
                    if matches!(result, Resolution::Resolved { .. }) {
                        run.summary.resolved += 1;
                    }
                    record.result = Some(result);
                }
                Err(EngineError::Leased(_)) => {
                    record.error = Some("another engine holds the saga's lease; run again".into());
                }
                Err(error) => record.error = Some(error.to_string()),
            }
        }
        run.resolutions.push(record);
    }
    run.summary.matched = run.matched.len();
    run.summary.unmatched_report = run.unmatched_report.len();
    run.summary.unmatched_ledger = run.unmatched_ledger.len();
    run.summary.mismatches = run.mismatches.len();
    Ok(run)
}

fn status_word(status: &LineStatus) -> &'static str {
    match status {
        LineStatus::Executed => "executed",
        LineStatus::Rejected { .. } => "rejected",
        LineStatus::Pending => "pending",
        LineStatus::Reversed => "reversed",
    }
}

fn same_outcome(first: &Evidence, second: &Evidence) -> bool {
    matches!(
        (first, second),
        (Evidence::Executed { .. }, Evidence::Executed { .. })
            | (Evidence::NotExecuted { .. }, Evidence::NotExecuted { .. })
    )
}

fn unmatched_reason(line: &Line) -> String {
    let credit = matches!(line.direction, Some(crate::reports::Direction::Credit));
    match (line.references.is_empty(), credit) {
        (true, true) => "an incoming credit with no reference: not a payout (a top-up or a return?)".into(),
        (true, false) => "no reference on the line, and none of Railyard's in its text".into(),
        (false, true) => format!(
            "an incoming credit whose references ({}) match no rail leg: not a payout (a top-up or a return?)",
            line.references.join(", ")
        ),
        (false, false) => format!("no rail leg has any of the references {}", line.references.join(", ")),
    }
}

/// Checks a line against the leg it names: currency, amount, date. `Ok` may carry a note.
fn compare(leg: &LedgerLeg, line: &Line, settings: &Settings) -> Result<Option<String>, (String, String, String)> {
    let mut acceptable: Vec<Money> = vec![leg.amount];
    acceptable.extend(leg.receive);
    acceptable.extend(leg.delivered);
    if let Some(fee) = leg.fee
        && fee.currency() == leg.amount.currency()
        && let Some(net) = leg.amount.minor_units().checked_sub(fee.minor_units())
    {
        // What reached the beneficiary after the rail's fee, in the same currency.
        acceptable.push(Money::from_minor(net, leg.amount.currency()));
    }
    let expected = || acceptable.iter().map(Money::to_string).collect::<Vec<_>>().join(" or ");
    if !acceptable.iter().any(|money| money.currency() == line.amount.currency()) {
        return Err((
            expected(),
            line.amount.to_string(),
            format!("currency {} differs from the leg's", line.amount.currency()),
        ));
    }
    if !acceptable.contains(&line.amount) {
        return Err((expected(), line.amount.to_string(), "amount differs".into()));
    }
    let submitted = leg.submitted_at.date_naive();
    let days = (line.date - submitted).num_days();
    if days < -settings.days_before || days > settings.days_after {
        return Err((
            format!(
                "dated {} to {}",
                submitted - chrono::Duration::days(settings.days_before),
                submitted + chrono::Duration::days(settings.days_after)
            ),
            line.date.to_string(),
            format!("dated {days} days from the leg's submission on {submitted}"),
        ));
    }
    Ok(None)
}

/// The rail a complete report is about: given, or the one rail of the file's kind in the
/// configuration, or (for rail reports) the one rail its lines matched.
fn complete_rail(report: &Report, settings: &Settings, legs: &[LedgerLeg], seen: &HashSet<usize>) -> Option<String> {
    report.coverage?;
    if let Some(rail) = &settings.rail {
        return Some(rail.clone());
    }
    let kind = match report.kind {
        ReportKind::CardSettlement => RailKind::Card,
        ReportKind::BlockLog => RailKind::Cbdc,
        // A bank statement is complete for an account; which rail that is, only the operator says.
        _ => return None,
    };
    let configured: Vec<&String> =
        settings.rails.iter().filter(|(_, rail_kind)| *rail_kind == kind).map(|(id, _)| id).collect();
    if configured.len() == 1 {
        return Some(configured[0].clone());
    }
    let matched: HashSet<&str> = seen.iter().map(|position| legs[*position].rail.as_str()).collect();
    (matched.len() == 1).then(|| matched.into_iter().next().unwrap_or_default().to_string())
}
