//! Reading what the rails and banks say happened: every file becomes a [`Report`] of [`Line`]s,
//! each with the references it carries, an amount, a date and a status.
//!
//! Formats read:
//! - ISO 20022 bank-to-customer statements and notifications: camt.053 (statement), camt.054
//!   (debit/credit notification), camt.052 (intraday report), any version from 001.02;
//! - ISO 20022 pacs.002 status reports (both instant-rail profiles);
//! - the card network's T+1 settlement file (CSV);
//! - the CBDC platform's block log (JSON, as `/blocks` pages it).
//!
//! Real files have quirks; the ones tolerated here are named in [`Report::notes`] when met:
//! a transaction's credit/debit indicator contradicting its entry's (the entry's wins), batch
//! bookings whose transaction amounts do not add up to the entry, `NOTPROVIDED` references,
//! a status written bare (`<Sts>BOOK</Sts>`, up to version 001.06) or coded (`<Sts><Cd>`), booking
//! dates given as a date-time, reversals (`RvslInd`).

use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use railyard_cbdc::ledger::{Block, Operation, verify_blocks};
use railyard_connector::IdempotencyKey;
use railyard_core::{Currency, Money, Sign};
use railyard_rail_instant::iso20022::{self, Message, TxState, parse_time};
use railyard_rail_instant::xml::{self, Element, Limits};
use serde::Serialize;

/// Largest report file read.
pub const REPORT_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most lines one report may hold.
pub const REPORT_LINES_MAX: usize = 1_000_000;

/// What kind of file a report came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    /// camt.053: an account statement for a period; complete for its account and period.
    BankStatement,
    /// camt.054 or camt.052: notifications of single bookings; never complete.
    BankNotification,
    /// pacs.002: a rail's status report about one payment.
    StatusReport,
    /// The card network's settlement file: every authorisation executed on one day.
    CardSettlement,
    /// The CBDC platform's block log: every transfer, final once in a block.
    BlockLog,
}

/// What a line says happened to a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LineStatus {
    /// Booked, settled, final.
    Executed,
    /// Definitively not executed (a reject), with the report's reason.
    Rejected { reason: String },
    /// Not final yet (pending booking, payment in process): evidence of nothing.
    Pending,
    /// A reversal of an earlier booking (the payment came back).
    Reversed,
}

/// Debit or credit of the reported account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Debit,
    Credit,
}

/// One line of a report: a booking, a transaction detail, a status, a settled authorisation,
/// a transfer in a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    /// Where in the file: `line 4`, `Stmt 1 / Ntry 3 / TxDtls 2`, `block 17 / operation 1`.
    pub locator: String,
    /// Every reference the line carries, most specific first (payment keys, UETR, end-to-end id,
    /// transaction id, the servicer's reference, entry reference).
    pub references: Vec<String>,
    pub amount: Money,
    pub direction: Option<Direction>,
    #[serde(flatten)]
    pub status: LineStatus,
    /// Booking (or settlement) date.
    pub date: NaiveDate,
    /// The exact time, when the report gives one.
    pub at: Option<DateTime<Utc>>,
    /// The rail's or bank's own reference for the booking.
    pub servicer_reference: Option<String>,
    /// Free text (additional entry information, remittance); references are also looked for in it.
    pub text: String,
}

/// Up to when a report is complete: every execution on its rail or account in `[from, until)`
/// is in it, so a payment absent from it did not execute in that span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Coverage {
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// A file read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub file: String,
    pub kind: ReportKind,
    /// The account the report is about (IBAN or other id), when it names one.
    pub account: Option<String>,
    pub coverage: Option<Coverage>,
    pub lines: Vec<Line>,
    /// Quirks met and tolerated, and totals checked.
    pub notes: Vec<String>,
}

/// Why a file could not be read; nothing of it is used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("{file}: {reason}")]
    Io { file: String, reason: String },
    #[error("{file}: larger than {REPORT_BYTES_MAX} bytes")]
    TooLarge { file: String },
    #[error("{file}: more than {REPORT_LINES_MAX} lines")]
    TooManyLines { file: String },
    #[error("{file}: not a report Railyard reads ({reason})")]
    UnknownFormat { file: String, reason: String },
    #[error("{file}: {at}: {reason}")]
    Invalid { file: String, at: String, reason: String },
}

/// Reads a file from disk.
pub fn read_file(path: &Path) -> Result<Report, ReportError> {
    let file = path.display().to_string();
    let metadata =
        std::fs::metadata(path).map_err(|error| ReportError::Io { file: file.clone(), reason: error.to_string() })?;
    if metadata.len() > REPORT_BYTES_MAX as u64 {
        return Err(ReportError::TooLarge { file });
    }
    let bytes =
        std::fs::read(path).map_err(|error| ReportError::Io { file: file.clone(), reason: error.to_string() })?;
    read(&file, &bytes)
}

/// Reads a report from its bytes; `file` names it in lines and errors.
pub fn read(file: &str, bytes: &[u8]) -> Result<Report, ReportError> {
    if bytes.len() > REPORT_BYTES_MAX {
        return Err(ReportError::TooLarge { file: file.into() });
    }
    let text = std::str::from_utf8(bytes).map_err(|error| ReportError::UnknownFormat {
        file: file.into(),
        reason: format!("not UTF-8 text: {error}"),
    })?;
    let start = text.trim_start_matches('\u{feff}').trim_start();
    if start.starts_with('<') {
        read_xml(file, bytes)
    } else if start.starts_with('[') || start.starts_with('{') {
        read_block_log(file, start)
    } else if start.starts_with("settlement_date,") {
        read_card_settlement(file, start)
    } else {
        let first = start.lines().next().unwrap_or("").chars().take(60).collect::<String>();
        Err(ReportError::UnknownFormat {
            file: file.into(),
            reason: format!(
                "expected ISO 20022 XML, a CBDC block log (JSON) or a card settlement file (CSV); starts {first:?}"
            ),
        })
    }
}

fn invalid(file: &str, at: impl Into<String>, reason: impl Into<String>) -> ReportError {
    ReportError::Invalid { file: file.into(), at: at.into(), reason: reason.into() }
}

// ---------------------------------------------------------------------------------------------
// ISO 20022.

const ISO_PREFIX: &str = "urn:iso:std:iso:20022:tech:xsd:";

fn read_xml(file: &str, bytes: &[u8]) -> Result<Report, ReportError> {
    let xml = xml::parse_within(bytes, Limits::STATEMENT)
        .map_err(|error| ReportError::UnknownFormat { file: file.into(), reason: error.to_string() })?;
    let root = xml.root();
    let message_type = root.namespace().strip_prefix(ISO_PREFIX).unwrap_or("").to_string();
    if message_type.starts_with("camt.053")
        || message_type.starts_with("camt.054")
        || message_type.starts_with("camt.052")
    {
        return read_camt(file, root, &message_type);
    }
    // A status report (bare or in the RTP envelope) goes through the instant rail's reader.
    match iso20022::parse(bytes) {
        Ok(parsed) => match parsed.message {
            Message::StatusReport(report) => {
                let state = TxState::from_code(&report.status, parsed.profile);
                let status = match state {
                    Some(TxState::Settled) => LineStatus::Executed,
                    Some(TxState::Rejected) => LineStatus::Rejected {
                        reason: [report.reason.clone(), report.additional_info.clone()]
                            .into_iter()
                            .flatten()
                            .collect::<Vec<_>>()
                            .join(": "),
                    },
                    Some(TxState::Pending) => LineStatus::Pending,
                    None => return Err(invalid(file, "TxSts", format!("unknown status {:?}", report.status))),
                };
                let original = &report.original;
                let references =
                    [&original.uetr, &original.end_to_end_id, &original.transaction_id, &original.instruction_id]
                        .into_iter()
                        .filter(|reference| !reference.is_empty() && *reference != "NOTPROVIDED")
                        .cloned()
                        .collect();
                Ok(Report {
                    file: file.into(),
                    kind: ReportKind::StatusReport,
                    account: None,
                    coverage: None,
                    lines: vec![Line {
                        locator: format!("{} {}", parsed.message_type, report.message_id),
                        references,
                        amount: report.amount,
                        direction: Some(Direction::Debit),
                        status,
                        date: report.settlement_date,
                        at: Some(report.created_at),
                        servicer_reference: Some(original.transaction_id.clone()),
                        text: report.additional_info.unwrap_or_default(),
                    }],
                    notes: Vec::new(),
                })
            }
            _ => Err(ReportError::UnknownFormat {
                file: file.into(),
                reason: format!(
                    "{} is a message, not a report (read camt.052/053/054 and pacs.002)",
                    parsed.message_type
                ),
            }),
        },
        Err(error) => Err(ReportError::UnknownFormat { file: file.into(), reason: error.to_string() }),
    }
}

/// Texts at `path` under `element`, ignoring the placeholder `NOTPROVIDED`.
fn reference_at(element: Element<'_>, path: &str) -> Option<String> {
    element.text_at(path).filter(|text| !text.eq_ignore_ascii_case("NOTPROVIDED")).map(str::to_string)
}

fn camt_amount(file: &str, at: &str, element: Element<'_>) -> Result<Money, ReportError> {
    let code = element.attribute("Ccy").ok_or_else(|| invalid(file, at, "amount without a Ccy attribute"))?;
    let currency = Currency::from_code(code).map_err(|error| invalid(file, at, error.to_string()))?;
    Money::parse(element.text().trim(), currency, Sign::Any).map_err(|error| invalid(file, at, error.to_string()))
}

fn camt_date(element: Option<Element<'_>>) -> Option<(NaiveDate, Option<DateTime<Utc>>)> {
    let element = element?;
    if let Some(text) = element.text_at("Dt") {
        return NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().map(|date| (date, None));
    }
    let text = element.text_at("DtTm")?;
    let at = parse_time(text)?;
    Some((at.date_naive(), Some(at)))
}

fn direction(text: Option<&str>) -> Option<Direction> {
    match text {
        Some("DBIT") => Some(Direction::Debit),
        Some("CRDT") => Some(Direction::Credit),
        _ => None,
    }
}

fn read_camt(file: &str, root: Element<'_>, message_type: &str) -> Result<Report, ReportError> {
    let document = root.first_child().ok_or_else(|| invalid(file, "Document", "empty document"))?;
    let (kind, container) = match document.name() {
        "BkToCstmrStmt" => (ReportKind::BankStatement, "Stmt"),
        "BkToCstmrDbtCdtNtfctn" => (ReportKind::BankNotification, "Ntfctn"),
        "BkToCstmrAcctRpt" => (ReportKind::BankNotification, "Rpt"),
        other => return Err(invalid(file, "Document", format!("unexpected <{other}> in {message_type}"))),
    };
    let mut report =
        Report { file: file.into(), kind, account: None, coverage: None, lines: Vec::new(), notes: Vec::new() };
    for (statement_index, statement) in document.children().filter(|child| child.name() == container).enumerate() {
        let statement_at = format!("{container} {}", statement_index + 1);
        let account =
            statement.text_at("Acct/Id/IBAN").or_else(|| statement.text_at("Acct/Id/Othr/Id")).map(str::to_string);
        if report.account.is_none() {
            report.account = account;
        }
        if kind == ReportKind::BankStatement {
            let from = statement.text_at("FrToDt/FrDtTm").and_then(parse_time);
            let until = statement.text_at("FrToDt/ToDtTm").and_then(parse_time);
            if let (Some(from), Some(until)) = (from, until) {
                // ToDtTm is inclusive to the second (23:59:59): the span ends a second later.
                let until = until + chrono::Duration::seconds(1);
                report.coverage = Some(match report.coverage {
                    Some(coverage) => Coverage { from: coverage.from.min(from), until: coverage.until.max(until) },
                    None => Coverage { from, until },
                });
            }
        }
        for (entry_index, entry) in statement.children().filter(|child| child.name() == "Ntry").enumerate() {
            let entry_at = format!("{statement_at} / Ntry {}", entry_index + 1);
            read_entry(file, &entry_at, entry, &mut report)?;
            if report.lines.len() > REPORT_LINES_MAX {
                return Err(ReportError::TooManyLines { file: file.into() });
            }
        }
    }
    Ok(report)
}

fn read_entry(file: &str, at: &str, entry: Element<'_>, report: &mut Report) -> Result<(), ReportError> {
    let amount_element = entry.child("Amt").ok_or_else(|| invalid(file, at, "entry without Amt"))?;
    let amount = camt_amount(file, &format!("{at} / Amt"), amount_element)?;
    let entry_direction = direction(entry.text_at("CdtDbtInd"));
    let reversal = entry.text_at("RvslInd").is_some_and(|text| text.eq_ignore_ascii_case("true"));
    // Up to 001.06 the status is bare text; from 001.07 it is coded.
    let status_code = entry.text_at("Sts/Cd").or_else(|| entry.text_at("Sts")).unwrap_or("BOOK");
    let status = match (status_code, reversal) {
        (_, true) => LineStatus::Reversed,
        ("BOOK", _) => LineStatus::Executed,
        ("PDNG" | "INFO" | "FUTR", _) => LineStatus::Pending,
        (other, _) => return Err(invalid(file, format!("{at} / Sts"), format!("unknown entry status {other:?}"))),
    };
    let (date, time) = camt_date(entry.child("BookgDt"))
        .or_else(|| camt_date(entry.child("ValDt")))
        .ok_or_else(|| invalid(file, at, "entry without a booking or value date"))?;
    let servicer = reference_at(entry, "AcctSvcrRef");
    let entry_text = entry.text_at("AddtlNtryInf").unwrap_or("").to_string();
    let mut entry_references: Vec<String> = Vec::new();
    entry_references.extend(reference_at(entry, "NtryRef"));
    let mut details: Vec<Element<'_>> = Vec::new();
    for entry_details in entry.children().filter(|child| child.name() == "NtryDtls") {
        details.extend(entry_details.children().filter(|child| child.name() == "TxDtls"));
    }
    let transaction = |detail: Element<'_>| -> Vec<String> {
        [
            "Refs/UETR",
            "Refs/EndToEndId",
            "Refs/TxId",
            "Refs/InstrId",
            "Refs/PmtInfId",
            "Refs/MsgId",
            "Refs/AcctSvcrRef",
            "RmtInf/Strd/CdtrRefInf/Ref",
        ]
        .iter()
        .filter_map(|path| reference_at(detail, path))
        .collect()
    };
    let remittance = |detail: Element<'_>| -> String {
        let mut texts = Vec::new();
        for unstructured in detail.path("RmtInf").into_iter().flat_map(|info| info.children()) {
            if unstructured.name() == "Ustrd" && !unstructured.text().trim().is_empty() {
                texts.push(unstructured.text().trim().to_string());
            }
        }
        texts.extend(detail.text_at("AddtlTxInf").map(str::to_string));
        texts.join(" ")
    };
    let join = |first: &str, second: &str| -> String {
        [first, second].iter().filter(|text| !text.is_empty()).cloned().collect::<Vec<_>>().join(" ")
    };
    let amounts: Vec<Option<Money>> = details
        .iter()
        .enumerate()
        .map(|(index, detail)| {
            detail
                .child("Amt")
                .or_else(|| detail.path("AmtDtls/TxAmt/Amt"))
                .map(|element| camt_amount(file, &format!("{at} / TxDtls {}", index + 1), element))
                .transpose()
        })
        .collect::<Result<_, _>>()?;
    for (index, detail) in details.iter().enumerate() {
        let detail_direction = direction(detail.text_at("CdtDbtInd"));
        if detail_direction.is_some() && entry_direction.is_some() && detail_direction != entry_direction {
            report.notes.push(format!(
                "{at} / TxDtls {}: its credit/debit indicator contradicts the entry's; the entry's is used",
                index + 1
            ));
        }
    }
    if details.len() > 1 && amounts.iter().all(Option::is_some) {
        // A batch booking: one line per transaction.
        let sum = amounts.iter().flatten().try_fold(0_i64, |sum, money| sum.checked_add(money.minor_units()));
        if sum != Some(amount.minor_units()) {
            report.notes.push(format!("{at}: the transactions do not add up to the entry's {amount}"));
        }
        for (index, (&detail, detail_amount)) in details.iter().zip(&amounts).enumerate() {
            let Some(detail_amount) = detail_amount else { continue };
            let mut references = transaction(detail);
            references.extend(entry_references.iter().cloned());
            report.lines.push(Line {
                locator: format!("{at} / TxDtls {}", index + 1),
                references,
                amount: *detail_amount,
                direction: entry_direction,
                status: status.clone(),
                date,
                at: time,
                servicer_reference: reference_at(detail, "Refs/AcctSvcrRef").or_else(|| servicer.clone()),
                text: join(&remittance(detail), &entry_text),
            });
        }
        return Ok(());
    }
    // One transaction (or a batch without amounts per transaction): the entry is the line.
    let mut references: Vec<String> = details.iter().flat_map(|&detail| transaction(detail)).collect();
    references.extend(entry_references);
    let texts: Vec<String> = details.iter().map(|&detail| remittance(detail)).collect();
    if let Some(Some(detail_amount)) = amounts.first()
        && details.len() == 1
        && *detail_amount != amount
    {
        report
            .notes
            .push(format!("{at}: the transaction says {detail_amount}, the entry {amount}; the entry's is used"));
    }
    report.lines.push(Line {
        locator: at.to_string(),
        references,
        amount,
        direction: entry_direction,
        status,
        date,
        at: time,
        servicer_reference: servicer,
        text: join(&texts.join(" "), &entry_text),
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The card network's settlement file.

const CARD_HEADER: &str =
    "settlement_date,rail_key,reference,debited,debited_currency,fee,credited,card_currency,rate,executed_at";

fn read_card_settlement(file: &str, text: &str) -> Result<Report, ReportError> {
    let mut lines = text.lines().enumerate();
    let (_, header) = lines.next().unwrap_or((0, ""));
    if header.trim_end() != CARD_HEADER {
        return Err(invalid(file, "line 1", format!("expected the header {CARD_HEADER:?}")));
    }
    let mut report = Report {
        file: file.into(),
        kind: ReportKind::CardSettlement,
        account: None,
        coverage: None,
        lines: Vec::new(),
        notes: Vec::new(),
    };
    let mut settlement_date: Option<NaiveDate> = None;
    // Per currency: (sum of debited, sum of fees, count) of the lines, checked against the totals.
    let mut sums: Vec<(Currency, i64, i64, usize)> = Vec::new();
    let mut totals: Vec<(Currency, i64, i64, usize, String)> = Vec::new();
    for (index, raw) in lines {
        let at = format!("line {}", index + 1);
        let raw = raw.trim_end_matches('\r');
        if raw.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = raw.split(',').collect();
        if fields.len() != 10 {
            return Err(invalid(file, &at, format!("{} fields, expected 10", fields.len())));
        }
        let money = |text: &str, code: &str, column: &str| -> Result<Money, ReportError> {
            let currency =
                Currency::from_code(code).map_err(|error| invalid(file, &at, format!("{column}: {error}")))?;
            Money::parse(text, currency, Sign::Any).map_err(|error| invalid(file, &at, format!("{column}: {error}")))
        };
        let date_of = |text: &str| -> Result<NaiveDate, ReportError> {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map_err(|error| invalid(file, &at, format!("date {text:?}: {error}")))
        };
        if fields[0] == "total" {
            let count: usize = fields[2]
                .strip_suffix(" payouts")
                .and_then(|count| count.parse().ok())
                .ok_or_else(|| invalid(file, &at, format!("total count {:?}", fields[2])))?;
            let debited = money(fields[3], fields[4], "debited")?;
            let fees = money(fields[5], fields[4], "fee")?;
            totals.push((debited.currency(), debited.minor_units(), fees.minor_units(), count, at.clone()));
            continue;
        }
        let date = date_of(fields[0])?;
        match settlement_date {
            None => settlement_date = Some(date),
            Some(first) if first != date => {
                return Err(invalid(file, &at, format!("settlement date {date} in a file for {first}")));
            }
            Some(_) => {}
        }
        let key = IdempotencyKey::new(fields[1]).map_err(|error| invalid(file, &at, format!("rail_key: {error}")))?;
        let debited = money(fields[3], fields[4], "debited")?;
        let fee = money(fields[5], fields[4], "fee")?;
        let credited = money(fields[6], fields[7], "credited")?;
        let executed_at =
            parse_time(fields[9]).ok_or_else(|| invalid(file, &at, format!("executed_at {:?}", fields[9])))?;
        match sums.iter_mut().find(|(currency, ..)| *currency == debited.currency()) {
            Some(sum) => {
                sum.1 += debited.minor_units();
                sum.2 += fee.minor_units();
                sum.3 += 1;
            }
            None => sums.push((debited.currency(), debited.minor_units(), fee.minor_units(), 1)),
        }
        report.lines.push(Line {
            locator: at,
            references: vec![key.to_string(), fields[2].to_string()],
            amount: debited,
            direction: Some(Direction::Debit),
            status: LineStatus::Executed,
            date,
            at: Some(executed_at),
            servicer_reference: Some(fields[2].to_string()),
            text: format!("credited {credited}"),
        });
        if report.lines.len() > REPORT_LINES_MAX {
            return Err(ReportError::TooManyLines { file: file.into() });
        }
    }
    for (currency, debited, fees, count, at) in &totals {
        let sum = sums.iter().find(|(sum_currency, ..)| sum_currency == currency);
        if sum.map(|(_, d, f, c)| (*d, *f, *c)) != Some((*debited, *fees, *count)) {
            return Err(invalid(file, at, format!("the {currency} total does not match the lines above it")));
        }
    }
    if let Some(missing) = sums.iter().find(|(currency, ..)| !totals.iter().any(|total| total.0 == *currency)) {
        report.notes.push(format!("no total line for {}", missing.0));
    }
    // The file for day D lists every authorisation executed on D-1 (T+1).
    if let Some(date) = settlement_date.or_else(|| file_date(file))
        && let Some(day) = date.pred_opt()
    {
        let from = day.and_hms_opt(0, 0, 0).map(|naive| naive.and_utc());
        let until = date.and_hms_opt(0, 0, 0).map(|naive| naive.and_utc());
        if let (Some(from), Some(until)) = (from, until) {
            report.coverage = Some(Coverage { from, until });
        }
    }
    Ok(report)
}

/// An empty settlement file names its day only in its name (`...YYYY-MM-DD...`).
fn file_date(file: &str) -> Option<NaiveDate> {
    let name = Path::new(file).file_name()?.to_str()?;
    (0..name.len().saturating_sub(9))
        .find_map(|start| name.get(start..start + 10).and_then(|text| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()))
}

// ---------------------------------------------------------------------------------------------
// The CBDC block log.

fn read_block_log(file: &str, text: &str) -> Result<Report, ReportError> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Log {
        Blocks(Vec<Block>),
        Wrapped { blocks: Vec<Block> },
    }
    let blocks = match serde_json::from_str::<Log>(text) {
        Ok(Log::Blocks(blocks)) | Ok(Log::Wrapped { blocks }) => blocks,
        Err(error) => {
            return Err(ReportError::UnknownFormat {
                file: file.into(),
                reason: format!("not a CBDC block log: {error}"),
            });
        }
    };
    // A log that does not verify is no evidence at all.
    verify_blocks(&blocks).map_err(|error| invalid(file, "blocks", format!("the log does not verify: {error}")))?;
    let mut report = Report {
        file: file.into(),
        kind: ReportKind::BlockLog,
        account: None,
        coverage: None,
        lines: Vec::new(),
        notes: Vec::new(),
    };
    for block in &blocks {
        for (index, operation) in block.operations.iter().enumerate() {
            let Operation::Transfer { from, to, amount, memo } = operation else { continue };
            // Fees and the house's side of a swap carry `fee {key}` / `pvp {key}`; the transfer
            // that pays the beneficiary starts with the key.
            let Some(first) = memo.split_whitespace().next() else { continue };
            if matches!(first, "fee" | "pvp") || IdempotencyKey::new(first).is_err() {
                continue;
            }
            report.lines.push(Line {
                locator: format!("block {} / operation {}", block.height, index + 1),
                references: vec![first.to_string()],
                amount: *amount,
                direction: Some(Direction::Credit),
                status: LineStatus::Executed,
                date: block.at.date_naive(),
                at: Some(block.at),
                servicer_reference: Some(format!("{}:{}", block.height, &block.hash[..16.min(block.hash.len())])),
                text: format!("{from} → {to}: {memo}"),
            });
            if report.lines.len() > REPORT_LINES_MAX {
                return Err(ReportError::TooManyLines { file: file.into() });
            }
        }
    }
    // A log read from genesis is complete up to its last block.
    if let (Some(first), Some(last)) = (blocks.first(), blocks.last())
        && first.height == 0
    {
        report.coverage = Some(Coverage { from: first.at, until: last.at });
        report.notes.push(format!("{} blocks verified from genesis to height {}", blocks.len(), last.height));
    } else if !blocks.is_empty() {
        report.notes.push("the log does not start at genesis: it proves executions, not their absence".into());
    }
    Ok(report)
}
