//! ISO 20022 messages of an instant-payment rail: what we emit, what we read, and validation
//! against the real schemas.
//!
//! Two profiles. **RTP** (USD): every message is wrapped in The Clearing House's `Message` envelope
//! with a business application header (head.001.001.01) and uses the RTP versions (pacs.008.001.08,
//! pacs.002.001.10, pacs.028.001.03, camt.056.001.08, admi.004.001.02), validated against
//! `schemas/rtp/messages.xsd`. **ISO** (every other currency): a bare `Document` in the base ISO
//! versions pacs.008.001.09, pacs.002.001.11 and pacs.028.001.04, validated against
//! `schemas/iso/`. The base set has no camt.056 schema; in the ISO profile camt.056.001.08 is
//! emitted in the same shape as RTP's and is not validated locally.
//!
//! Identifiers. Railyard's idempotency key becomes the UETR (a UUID v4 derived from the key's
//! SHA-256) and the transaction id (`{YYYYMMDD}{member id}T1{16 hex of the key's digest}`, dated by
//! the day the payout was instructed), so every retry of a key carries the same ids and the rail
//! can refuse a second execution.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, NaiveDate, Utc};
use railyard_core::{Currency, Money, Sign};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::xml::{Element, Writer, XmlError, parse as parse_xml};

pub const TCH: &str = "urn:tch";
pub const HEAD: &str = "urn:iso:std:iso:20022:tech:xsd:head.001.001.01";
const PREFIX: &str = "urn:iso:std:iso:20022:tech:xsd:";

/// Which family of schemas a message follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    Rtp,
    Iso,
}

impl Profile {
    /// RTP carries USD only; everything else uses the base ISO messages.
    pub fn for_currency(currency: Currency) -> Profile {
        if currency.code() == "USD" { Profile::Rtp } else { Profile::Iso }
    }

    fn version(self, kind: Kind) -> &'static str {
        match (self, kind) {
            (Profile::Rtp, Kind::Pacs008) => "pacs.008.001.08",
            (Profile::Iso, Kind::Pacs008) => "pacs.008.001.09",
            (Profile::Rtp, Kind::Pacs002) => "pacs.002.001.10",
            (Profile::Iso, Kind::Pacs002) => "pacs.002.001.11",
            (Profile::Rtp, Kind::Pacs028) => "pacs.028.001.03",
            (Profile::Iso, Kind::Pacs028) => "pacs.028.001.04",
            (_, Kind::Camt056) => "camt.056.001.08",
            (_, Kind::Admi004) => "admi.004.001.02",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pacs008,
    Pacs002,
    Pacs028,
    Camt056,
    Admi004,
}

impl Kind {
    /// The element under RTP's `Message` that carries this kind.
    fn rtp_wrapper(self) -> &'static str {
        match self {
            Kind::Pacs008 => "CreditTransfer",
            Kind::Pacs002 => "MessageStatusReport",
            Kind::Pacs028 => "PaymentStatusRequest",
            Kind::Camt056 => "ReturnOfFunds",
            Kind::Admi004 => "SystemNotificationEvent",
        }
    }

    fn root(self) -> &'static str {
        match self {
            Kind::Pacs008 => "FIToFICstmrCdtTrf",
            Kind::Pacs002 => "FIToFIPmtStsRpt",
            Kind::Pacs028 => "FIToFIPmtStsReq",
            Kind::Camt056 => "FIToFIPmtCxlReq",
            Kind::Admi004 => "SysEvtNtfctn",
        }
    }
}

/// Where a payment stands, as a pacs.002 says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TxState {
    /// Settled: RTP says ACTC (an RTP payment settles when accepted), ISO says ACSC.
    Settled,
    /// Received, not final: RTP RCVD, ISO PDNG.
    Pending,
    /// RJCT in both.
    Rejected,
}

impl TxState {
    pub fn code(self, profile: Profile) -> &'static str {
        match (self, profile) {
            (TxState::Settled, Profile::Rtp) => "ACTC",
            (TxState::Settled, Profile::Iso) => "ACSC",
            (TxState::Pending, Profile::Rtp) => "RCVD",
            (TxState::Pending, Profile::Iso) => "PDNG",
            (TxState::Rejected, _) => "RJCT",
        }
    }

    /// Reads a TxSts code. ACCC, ACSP and ACWP count as pending in the ISO profile; ACTC is
    /// settled in RTP and only technically accepted (pending) in ISO.
    pub fn from_code(code: &str, profile: Profile) -> Option<TxState> {
        match (code, profile) {
            ("RJCT", _) => Some(TxState::Rejected),
            ("ACTC", Profile::Rtp) | ("ACSC", _) | ("ACCC", _) => Some(TxState::Settled),
            ("ACTC", Profile::Iso) | ("RCVD", _) | ("PDNG", _) | ("ACSP", _) | ("ACWP", _) => Some(TxState::Pending),
            _ => None,
        }
    }
}

/// A party: name, account and address country.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Party {
    pub name: String,
    pub account: String,
    pub country: String,
}

/// The ids that tie messages about one payment together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentIds {
    pub message_id: String,
    pub instruction_id: String,
    pub end_to_end_id: String,
    pub transaction_id: String,
    pub uetr: String,
}

/// pacs.008: a customer credit transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreditTransfer {
    pub ids: PaymentIds,
    pub created_at: DateTime<Utc>,
    pub amount: Money,
    pub settlement_date: NaiveDate,
    pub debtor: Party,
    pub debtor_agent: String,
    pub creditor: Party,
    pub creditor_agent: String,
    pub remittance: String,
}

/// pacs.009: a transfer between financial institutions (read, not emitted: payouts are customer
/// transfers, but a participant sees these on the same channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstitutionTransfer {
    pub ids: PaymentIds,
    pub created_at: DateTime<Utc>,
    pub amount: Money,
    pub settlement_date: NaiveDate,
    pub debtor_agent: String,
    pub creditor_agent: String,
}

/// pacs.002: the status of a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    pub message_id: String,
    pub created_at: DateTime<Utc>,
    pub original: PaymentIds,
    pub original_message_name: String,
    pub original_created_at: DateTime<Utc>,
    /// ACTC (accepted, technical), ACSC (settled), RJCT (rejected), PDNG (pending).
    pub status: String,
    pub reason: Option<String>,
    pub additional_info: Option<String>,
    pub amount: Money,
    pub settlement_date: NaiveDate,
    pub from_agent: String,
    pub to_agent: String,
}

/// pacs.028: a request for the status of an earlier payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusRequest {
    pub message_id: String,
    pub created_at: DateTime<Utc>,
    pub original: PaymentIds,
    pub original_message_name: String,
    pub original_created_at: DateTime<Utc>,
    pub amount: Money,
    pub settlement_date: NaiveDate,
    pub from_agent: String,
    pub to_agent: String,
}

/// camt.056: a request to cancel (recall) an earlier payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CancellationRequest {
    pub assignment_id: String,
    pub created_at: DateTime<Utc>,
    pub original: PaymentIds,
    pub original_message_name: String,
    pub amount: Money,
    pub settlement_date: NaiveDate,
    pub assigner: String,
    /// ISO cancellation reason; DS24 is "waiting time expired", the timeout recall.
    pub reason: String,
    pub to_agent: String,
}

/// admi.004: a system event broadcast (960 availability, 971 normal operations ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SystemEvent {
    pub code: String,
    pub parameters: Vec<String>,
    pub time: DateTime<Utc>,
}

impl SystemEvent {
    /// AVAILABLE / UNAVAILABLE when the broadcast says either.
    pub fn availability(&self) -> Option<bool> {
        self.parameters.iter().find_map(|parameter| match parameter.as_str() {
            "AVAILABLE" => Some(true),
            "UNAVAILABLE" => Some(false),
            _ => None,
        })
    }
}

/// Any message this module understands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "message", rename_all = "snake_case")]
pub enum Message {
    CreditTransfer(CreditTransfer),
    InstitutionTransfer(InstitutionTransfer),
    StatusReport(StatusReport),
    StatusRequest(StatusRequest),
    CancellationRequest(CancellationRequest),
    SystemEvent(SystemEvent),
}

/// The wire form of a message, with its profile and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Parsed {
    pub profile: Profile,
    /// For example `pacs.008.001.08`.
    pub message_type: String,
    #[serde(flatten)]
    pub message: Message,
}

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    Xml(#[from] XmlError),
    #[error("not an ISO 20022 message we read: root <{name}> in namespace {namespace:?}")]
    UnknownMessage { name: String, namespace: String },
    #[error("{message_type}: missing {path}")]
    Missing { message_type: String, path: String },
    #[error("{message_type}: {path}: {reason}")]
    Invalid { message_type: String, path: String, reason: String },
}

// ---------------------------------------------------------------------------------------------
// Identifiers.

/// A UUID v4-shaped UETR derived from `seed`: the same seed always gives the same UETR.
pub fn uetr_for(seed: &str) -> String {
    let digest = Sha256::digest(format!("uetr:{seed}").as_bytes());
    let mut bytes = [0_u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// An RTP-style id: `{YYYYMMDD}{member id}T1{tail}` cut to 35 characters (35 is ISO's Max35Text).
pub fn dated_id(date: NaiveDate, member: &str, tail: &str) -> String {
    let mut id = format!("{}{member}T1{tail}", date.format("%Y%m%d"));
    id.truncate(35);
    id
}

fn hash_tail(seed: &str, length: usize) -> String {
    let mut text = hex::encode_upper(Sha256::digest(seed.as_bytes()));
    text.truncate(length);
    text
}

/// The ids of a payment whose idempotency key is `key`, instructed on `date` by `member`.
pub fn payment_ids(key: &str, date: NaiveDate, member: &str) -> PaymentIds {
    let transaction_id = dated_id(date, member, &hash_tail(key, 16));
    PaymentIds {
        message_id: format!("M{}", dated_id(date, member, &hash_tail(&format!("msg:{key}"), 15))),
        instruction_id: transaction_id.clone(),
        end_to_end_id: hash_tail(&format!("e2e:{key}"), 32),
        transaction_id,
        uetr: uetr_for(key),
    }
}

/// A fresh message id for a message that is not the payment itself (status, recall, broadcast).
pub fn message_id(prefix: char, at: DateTime<Utc>, member: &str, seed: &str) -> String {
    let mut id = format!("{prefix}{}", dated_id(at.date_naive(), member, &hash_tail(seed, 15)));
    id.truncate(35);
    id
}

// ---------------------------------------------------------------------------------------------
// Emitting.

fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S").to_string()
}

fn amount_text(amount: Money) -> String {
    amount.amount_text()
}

struct Emitter {
    writer: Writer,
    prefix: &'static str,
    profile: Profile,
}

impl Emitter {
    /// Opens the envelope: RTP's `Message` with its header, or ISO's `Document`.
    fn start(profile: Profile, kind: Kind, from: &str, to: &str, at: DateTime<Utc>, business_id: &str) -> Emitter {
        let version = profile.version(kind);
        let namespace = format!("{PREFIX}{version}");
        let mut writer = Writer::new();
        match profile {
            Profile::Rtp => {
                writer.open("Message", &[("xmlns", TCH), ("xmlns:head", HEAD), ("xmlns:d", &namespace)]);
                writer.open("AppHdr", &[]);
                for (element, member) in [("head:Fr", from), ("head:To", to)] {
                    // The header names the participant connection: member id plus its "T1" suffix.
                    let participant = format!("{member}T1");
                    writer.open(element, &[]).open("head:FIId", &[]).open("head:FinInstnId", &[]);
                    writer.open("head:ClrSysMmbId", &[]).leaf("head:MmbId", &[], &participant);
                    writer.close().close().close().close();
                }
                let mut business = format!("B{}", &business_id[1.min(business_id.len())..]);
                business.truncate(35);
                writer.leaf("head:BizMsgIdr", &[], &business);
                writer.leaf("head:MsgDefIdr", &[], version);
                writer.leaf("head:CreDt", &[], &format!("{}Z", timestamp(at)));
                writer.close();
                writer.open(kind.rtp_wrapper(), &[]);
                writer.open(&format!("d:{}", kind.root()), &[]);
                Emitter { writer, prefix: "d:", profile }
            }
            Profile::Iso => {
                writer.open("Document", &[("xmlns", &namespace)]);
                writer.open(kind.root(), &[]);
                Emitter { writer, prefix: "", profile }
            }
        }
    }

    fn open(&mut self, name: &str) -> &mut Emitter {
        self.writer.open_in(self.prefix, name, &[]);
        self
    }

    fn close(&mut self) -> &mut Emitter {
        self.writer.close();
        self
    }

    fn leaf(&mut self, name: &str, text: &str) -> &mut Emitter {
        self.writer.leaf_in(self.prefix, name, &[], text);
        self
    }

    fn amount(&mut self, name: &str, amount: Money) -> &mut Emitter {
        self.writer.leaf_in(self.prefix, name, &[("Ccy", amount.currency().code())], &amount_text(amount));
        self
    }

    /// `<name><FinInstnId><ClrSysMmbId><MmbId>member</MmbId></ClrSysMmbId></FinInstnId></name>`.
    fn agent(&mut self, name: &str, member: &str) -> &mut Emitter {
        self.open(name).open("FinInstnId").open("ClrSysMmbId").leaf("MmbId", member).close().close().close()
    }

    fn party(&mut self, name: &str, party: &Party) -> &mut Emitter {
        self.open(name).leaf("Nm", &party.name);
        // RTP's postal address needs street, post code, town and subdivision, which a payout
        // does not carry; it is optional there, so only the ISO profile states the country.
        if self.profile == Profile::Iso && !party.country.is_empty() {
            self.open("PstlAdr").leaf("Ctry", &party.country).close();
        }
        self.close()
    }

    fn account(&mut self, name: &str, account: &str) -> &mut Emitter {
        self.open(name).open("Id").open("Othr").leaf("Id", account).close().close().close()
    }

    fn finish(self) -> String {
        self.writer.finish()
    }
}

/// Emits a pacs.008 credit transfer.
pub fn emit_credit_transfer(profile: Profile, message: &CreditTransfer) -> String {
    let ids = &message.ids;
    let mut out = Emitter::start(
        profile,
        Kind::Pacs008,
        &message.debtor_agent,
        &message.creditor_agent,
        message.created_at,
        &ids.message_id,
    );
    out.open("GrpHdr").leaf("MsgId", &ids.message_id).leaf("CreDtTm", &timestamp(message.created_at));
    out.leaf("NbOfTxs", "1");
    if profile == Profile::Rtp {
        out.amount("TtlIntrBkSttlmAmt", message.amount);
        out.leaf("IntrBkSttlmDt", &message.settlement_date.to_string());
        out.open("SttlmInf").leaf("SttlmMtd", "CLRG").open("ClrSys").leaf("Cd", "TCH").close().close();
    } else {
        out.open("SttlmInf").leaf("SttlmMtd", "CLRG").close();
    }
    out.close();
    out.open("CdtTrfTxInf");
    out.open("PmtId").leaf("InstrId", &ids.instruction_id).leaf("EndToEndId", &ids.end_to_end_id);
    out.leaf("TxId", &ids.transaction_id).leaf("UETR", &ids.uetr);
    if profile == Profile::Rtp {
        out.leaf("ClrSysRef", "001");
    }
    out.close();
    if profile == Profile::Rtp {
        out.open("PmtTpInf").open("SvcLvl").leaf("Cd", "SDVA").close();
        out.open("LclInstrm").leaf("Prtry", "STANDARD").close();
        out.open("CtgyPurp").leaf("Prtry", "CONSUMER").close().close();
    }
    out.amount("IntrBkSttlmAmt", message.amount);
    if profile == Profile::Iso {
        out.leaf("IntrBkSttlmDt", &message.settlement_date.to_string());
    }
    out.leaf("ChrgBr", "SLEV");
    out.agent("InstgAgt", &message.debtor_agent).agent("InstdAgt", &message.creditor_agent);
    out.party("Dbtr", &message.debtor).account("DbtrAcct", &message.debtor.account);
    out.agent("DbtrAgt", &message.debtor_agent).agent("CdtrAgt", &message.creditor_agent);
    out.party("Cdtr", &message.creditor).account("CdtrAcct", &message.creditor.account);
    if !message.remittance.is_empty() {
        let mut text = message.remittance.clone();
        text.truncate(140);
        out.open("RmtInf").leaf("Ustrd", &text).close();
    }
    out.close();
    out.finish()
}

/// Emits a pacs.002 status report.
/// One booking on the house's settlement account at the network: a credit transfer it settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    pub transfer: CreditTransfer,
    pub booked_at: DateTime<Utc>,
}

/// camt.054: the debit notification the network sends the house for the bookings on its
/// settlement account (one `Ntfctn` per currency). A notification lists bookings; it never claims
/// to be complete, so reconciliation reads it as evidence of execution, never of absence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebitNotification {
    pub message_id: String,
    pub created_at: DateTime<Utc>,
    /// The house's settlement account at the network.
    pub account_owner: String,
    /// Every currency of the account: each gets a `Ntfctn`, with no entries when nothing was booked.
    pub currencies: Vec<Currency>,
    pub bookings: Vec<Booking>,
}

/// The camt.054 version emitted (the ISO schema in schemas/iso).
pub const CAMT054_VERSION: &str = "camt.054.001.08";

/// Emits a [`DebitNotification`] as camt.054.001.08 (valid against the ISO schema).
pub fn emit_debit_notification(message: &DebitNotification) -> String {
    let mut by_currency: BTreeMap<Currency, Vec<&Booking>> =
        message.currencies.iter().map(|currency| (*currency, Vec::new())).collect();
    for booking in &message.bookings {
        by_currency.entry(booking.transfer.amount.currency()).or_default().push(booking);
    }
    let namespace = format!("{PREFIX}{CAMT054_VERSION}");
    let mut out = Writer::new();
    out.open("Document", &[("xmlns", &namespace)]).open("BkToCstmrDbtCdtNtfctn", &[]);
    out.open("GrpHdr", &[]).leaf("MsgId", &[], &message.message_id);
    out.leaf("CreDtTm", &[], &timestamp(message.created_at)).close();
    for (index, (currency, bookings)) in by_currency.iter().enumerate() {
        let mut id = format!("{}-{}", message.message_id, index + 1);
        id.truncate(35);
        out.open("Ntfctn", &[]).leaf("Id", &[], &id).leaf("CreDtTm", &[], &timestamp(message.created_at));
        out.open("Acct", &[]).open("Id", &[]).open("Othr", &[]).leaf("Id", &[], &message.account_owner);
        out.close().close().leaf("Ccy", &[], currency.code()).close();
        for booking in bookings {
            let transfer = &booking.transfer;
            let amount = amount_text(transfer.amount);
            out.open("Ntry", &[]).leaf("NtryRef", &[], &transfer.ids.transaction_id);
            out.leaf("Amt", &[("Ccy", currency.code())], &amount).leaf("CdtDbtInd", &[], "DBIT");
            out.open("Sts", &[]).leaf("Cd", &[], "BOOK").close();
            out.open("BookgDt", &[]).leaf("DtTm", &[], &timestamp(booking.booked_at)).close();
            out.open("ValDt", &[]).leaf("Dt", &[], &transfer.settlement_date.to_string()).close();
            out.leaf("AcctSvcrRef", &[], &transfer.ids.transaction_id);
            // Payments / issued credit transfers / instant domestic credit transfer.
            out.open("BkTxCd", &[]).open("Domn", &[]).leaf("Cd", &[], "PMNT");
            out.open("Fmly", &[]).leaf("Cd", &[], "ICDT").leaf("SubFmlyCd", &[], "DMCT").close().close().close();
            out.open("NtryDtls", &[]).open("TxDtls", &[]).open("Refs", &[]);
            out.leaf("MsgId", &[], &transfer.ids.message_id).leaf("AcctSvcrRef", &[], &transfer.ids.transaction_id);
            out.leaf("InstrId", &[], &transfer.ids.instruction_id);
            out.leaf("EndToEndId", &[], &transfer.ids.end_to_end_id).leaf("UETR", &[], &transfer.ids.uetr);
            out.leaf("TxId", &[], &transfer.ids.transaction_id).close();
            out.leaf("Amt", &[("Ccy", currency.code())], &amount).leaf("CdtDbtInd", &[], "DBIT");
            out.open("RltdPties", &[]).open("Cdtr", &[]).open("Pty", &[]).leaf("Nm", &[], &transfer.creditor.name);
            out.close().close().open("CdtrAcct", &[]).open("Id", &[]).open("Othr", &[]);
            out.leaf("Id", &[], &transfer.creditor.account).close().close().close().close();
            out.open("RltdAgts", &[]).open("CdtrAgt", &[]).open("FinInstnId", &[]).open("ClrSysMmbId", &[]);
            out.leaf("MmbId", &[], &transfer.creditor_agent).close().close().close().close();
            if !transfer.remittance.is_empty() {
                let mut text = transfer.remittance.clone();
                text.truncate(140);
                out.open("RmtInf", &[]).leaf("Ustrd", &[], &text).close();
            }
            out.close().close().close();
        }
        out.close();
    }
    out.close().close();
    out.finish()
}

pub fn emit_status_report(profile: Profile, message: &StatusReport) -> String {
    let mut out = Emitter::start(
        profile,
        Kind::Pacs002,
        &message.from_agent,
        &message.to_agent,
        message.created_at,
        &message.message_id,
    );
    out.open("GrpHdr").leaf("MsgId", &message.message_id).leaf("CreDtTm", &timestamp(message.created_at)).close();
    out.open("OrgnlGrpInfAndSts").leaf("OrgnlMsgId", &message.original.message_id);
    out.leaf("OrgnlMsgNmId", &message.original_message_name);
    out.leaf("OrgnlCreDtTm", &timestamp(message.original_created_at)).leaf("OrgnlNbOfTxs", "1").close();
    out.open("TxInfAndSts");
    out.leaf("OrgnlInstrId", &message.original.instruction_id);
    if profile == Profile::Iso {
        out.leaf("OrgnlEndToEndId", &message.original.end_to_end_id);
    }
    out.leaf("OrgnlTxId", &message.original.transaction_id);
    if profile == Profile::Iso {
        out.leaf("OrgnlUETR", &message.original.uetr);
    }
    out.leaf("TxSts", &message.status);
    if message.reason.is_some() || message.additional_info.is_some() {
        out.open("StsRsnInf");
        if let Some(reason) = &message.reason {
            let choice = if crate::reasons::is_proprietary(reason) { "Prtry" } else { "Cd" };
            out.open("Rsn").leaf(choice, reason).close();
        }
        if let Some(info) = &message.additional_info {
            let mut text = info.clone();
            text.truncate(105);
            out.leaf("AddtlInf", &text);
        }
        out.close();
    }
    out.leaf("AccptncDtTm", &timestamp(message.created_at));
    out.agent("InstgAgt", &message.from_agent).agent("InstdAgt", &message.to_agent);
    out.open("OrgnlTxRef").amount("IntrBkSttlmAmt", message.amount);
    out.leaf("IntrBkSttlmDt", &message.settlement_date.to_string()).close();
    out.close();
    out.finish()
}

/// Emits a pacs.028 status request.
pub fn emit_status_request(profile: Profile, message: &StatusRequest) -> String {
    let mut out = Emitter::start(
        profile,
        Kind::Pacs028,
        &message.from_agent,
        &message.to_agent,
        message.created_at,
        &message.message_id,
    );
    out.open("GrpHdr").leaf("MsgId", &message.message_id).leaf("CreDtTm", &timestamp(message.created_at));
    out.close();
    out.open("OrgnlGrpInf").leaf("OrgnlMsgId", &message.original.message_id);
    out.leaf("OrgnlMsgNmId", &message.original_message_name);
    out.leaf("OrgnlCreDtTm", &timestamp(message.original_created_at)).leaf("OrgnlNbOfTxs", "1").close();
    out.open("TxInf");
    if profile == Profile::Iso {
        out.leaf("StsReqId", &message.message_id);
    }
    out.leaf("OrgnlInstrId", &message.original.instruction_id);
    if profile == Profile::Iso {
        out.leaf("OrgnlEndToEndId", &message.original.end_to_end_id);
    }
    out.leaf("OrgnlTxId", &message.original.transaction_id);
    if profile == Profile::Iso {
        out.leaf("OrgnlUETR", &message.original.uetr);
    }
    out.leaf("AccptncDtTm", &timestamp(message.original_created_at));
    out.agent("InstgAgt", &message.from_agent).agent("InstdAgt", &message.to_agent);
    out.open("OrgnlTxRef").amount("IntrBkSttlmAmt", message.amount);
    out.leaf("IntrBkSttlmDt", &message.settlement_date.to_string()).close();
    out.close();
    out.finish()
}

/// Emits a camt.056 cancellation request.
pub fn emit_cancellation_request(profile: Profile, message: &CancellationRequest) -> String {
    let mut out = Emitter::start(
        profile,
        Kind::Camt056,
        &message.assigner,
        &message.to_agent,
        message.created_at,
        &message.assignment_id,
    );
    out.open("Assgnmt").leaf("Id", &message.assignment_id);
    out.open("Assgnr").agent("Agt", &message.assigner).close();
    out.open("Assgne").agent("Agt", &message.to_agent).close();
    out.leaf("CreDtTm", &timestamp(message.created_at)).close();
    out.open("Case").leaf("Id", &message.assignment_id);
    out.open("Cretr").agent("Agt", &message.assigner).close().close();
    out.open("Undrlyg");
    out.open("OrgnlGrpInfAndCxl").leaf("OrgnlMsgId", &message.original.message_id);
    out.leaf("OrgnlMsgNmId", &message.original_message_name).close();
    out.open("TxInf");
    out.leaf("OrgnlInstrId", &message.original.instruction_id);
    out.leaf("OrgnlEndToEndId", &message.original.end_to_end_id);
    out.leaf("OrgnlTxId", &message.original.transaction_id).leaf("OrgnlUETR", &message.original.uetr);
    if profile == Profile::Rtp {
        out.leaf("OrgnlClrSysRef", "001");
    }
    out.amount("OrgnlIntrBkSttlmAmt", message.amount);
    out.leaf("OrgnlIntrBkSttlmDt", &message.settlement_date.to_string());
    out.open("CxlRsnInf").open("Rsn").leaf("Cd", &message.reason).close().close();
    out.close().close();
    out.finish()
}

/// Emits an admi.004 system event broadcast (RTP envelope; the base set has no admi.004).
pub fn emit_system_event(message: &SystemEvent, from: &str, to: &str) -> String {
    let id = message_id('B', message.time, from, &format!("admi:{}:{}", message.code, message.time));
    let mut out = Emitter::start(Profile::Rtp, Kind::Admi004, from, to, message.time, &id);
    out.open("EvtInf").leaf("EvtCd", &message.code);
    for parameter in &message.parameters {
        out.leaf("EvtParam", parameter);
    }
    out.leaf("EvtTm", &timestamp(message.time)).close();
    out.finish()
}

// ---------------------------------------------------------------------------------------------
// Reading.

struct Reader<'a> {
    root: Element<'a>,
    message_type: String,
}

impl<'a> Reader<'a> {
    fn text(&self, path: &str) -> Result<&'a str, ParseError> {
        self.root
            .text_at(path)
            .ok_or_else(|| ParseError::Missing { message_type: self.message_type.clone(), path: path.into() })
    }

    fn optional(&self, path: &str) -> Option<String> {
        self.root.text_at(path).map(str::to_string)
    }

    fn invalid(&self, path: &str, reason: String) -> ParseError {
        ParseError::Invalid { message_type: self.message_type.clone(), path: path.into(), reason }
    }

    fn amount(&self, path: &str) -> Result<Money, ParseError> {
        let element = self
            .root
            .path(path)
            .ok_or_else(|| ParseError::Missing { message_type: self.message_type.clone(), path: path.into() })?;
        let code = element.attribute("Ccy").ok_or_else(|| self.invalid(path, "no Ccy attribute".into()))?;
        let currency = Currency::from_code(code).map_err(|error| self.invalid(path, error.to_string()))?;
        Money::parse(element.text().trim(), currency, Sign::Positive)
            .map_err(|error| self.invalid(path, error.to_string()))
    }

    fn date(&self, path: &str) -> Result<NaiveDate, ParseError> {
        let text = self.text(path)?;
        NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|error| self.invalid(path, error.to_string()))
    }

    fn time(&self, path: &str) -> Result<DateTime<Utc>, ParseError> {
        let text = self.text(path)?;
        parse_time(text).ok_or_else(|| self.invalid(path, format!("{text:?} is not an ISO date-time")))
    }

    fn member(&self, path: &str) -> String {
        self.optional(&format!("{path}/FinInstnId/ClrSysMmbId/MmbId"))
            .or_else(|| self.optional(&format!("{path}/FinInstnId/BICFI")))
            .unwrap_or_default()
    }
}

/// Reads an ISO date-time: RFC 3339, or without an offset (taken as UTC), as ISO 20022 messages write it.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    // The format is read once, not on every call (every status report and transfer has a time).
    static WITHOUT_OFFSET: std::sync::LazyLock<Vec<chrono::format::Item<'static>>> = std::sync::LazyLock::new(|| {
        chrono::format::StrftimeItems::new("%Y-%m-%dT%H:%M:%S%.f").parse().unwrap_or_default()
    });
    let mut parsed = chrono::format::Parsed::new();
    chrono::format::parse(&mut parsed, text.trim_end_matches('Z'), WITHOUT_OFFSET.iter()).ok()?;
    parsed.to_naive_datetime_with_offset(0).ok().map(|naive| naive.and_utc())
}

/// Reads a message: RTP envelope or bare ISO document.
pub fn parse(bytes: &[u8]) -> Result<Parsed, ParseError> {
    let xml = parse_xml(bytes)?;
    let root = xml.root();
    let (profile, document) = if root.name() == "Message" && root.namespace() == TCH {
        // The body is the element after AppHdr; its single child is the ISO message root.
        let body = root
            .children()
            .find(|child| child.name() != "AppHdr")
            .and_then(|wrapper| wrapper.first_child())
            .ok_or_else(|| ParseError::Missing { message_type: "Message".into(), path: "Message/<body>".into() })?;
        (Profile::Rtp, body)
    } else if root.name() == "Document" && root.namespace().starts_with(PREFIX) {
        let body = root
            .first_child()
            .ok_or_else(|| ParseError::Missing { message_type: "Document".into(), path: "Document/<body>".into() })?;
        (Profile::Iso, body)
    } else {
        return Err(ParseError::UnknownMessage { name: root.name().into(), namespace: root.namespace().into() });
    };
    let message_type = document.namespace().strip_prefix(PREFIX).unwrap_or(document.namespace()).to_string();
    let reader = Reader { root: document, message_type: message_type.clone() };
    let message = match (document.name(), message_type.get(..8)) {
        ("FIToFICstmrCdtTrf", Some("pacs.008")) => Message::CreditTransfer(read_credit_transfer(&reader)?),
        ("FICdtTrf", Some("pacs.009")) => Message::InstitutionTransfer(read_institution_transfer(&reader)?),
        ("FIToFIPmtStsRpt", Some("pacs.002")) => Message::StatusReport(read_status_report(&reader)?),
        ("FIToFIPmtStsReq", Some("pacs.028")) => Message::StatusRequest(read_status_request(&reader)?),
        ("FIToFIPmtCxlReq", Some("camt.056")) => Message::CancellationRequest(read_cancellation(&reader)?),
        ("SysEvtNtfctn", Some("admi.004")) => Message::SystemEvent(read_system_event(&reader)?),
        _ => {
            return Err(ParseError::UnknownMessage {
                name: document.name().into(),
                namespace: document.namespace().into(),
            });
        }
    };
    Ok(Parsed { profile, message_type, message })
}

fn read_party(reader: &Reader<'_>, party: &str, account: &str) -> Party {
    Party {
        name: reader.optional(&format!("{party}/Nm")).unwrap_or_default(),
        account: reader
            .optional(&format!("{account}/Id/Othr/Id"))
            .or_else(|| reader.optional(&format!("{account}/Id/IBAN")))
            .unwrap_or_default(),
        country: reader.optional(&format!("{party}/PstlAdr/Ctry")).unwrap_or_default(),
    }
}

fn read_credit_transfer(reader: &Reader<'_>) -> Result<CreditTransfer, ParseError> {
    let amount = reader.amount("CdtTrfTxInf/IntrBkSttlmAmt")?;
    let settlement_date = reader.date("CdtTrfTxInf/IntrBkSttlmDt").or_else(|_| reader.date("GrpHdr/IntrBkSttlmDt"))?;
    Ok(CreditTransfer {
        ids: PaymentIds {
            message_id: reader.text("GrpHdr/MsgId")?.to_string(),
            instruction_id: reader.optional("CdtTrfTxInf/PmtId/InstrId").unwrap_or_default(),
            end_to_end_id: reader.text("CdtTrfTxInf/PmtId/EndToEndId")?.to_string(),
            transaction_id: reader.optional("CdtTrfTxInf/PmtId/TxId").unwrap_or_default(),
            uetr: reader.optional("CdtTrfTxInf/PmtId/UETR").unwrap_or_default(),
        },
        created_at: reader.time("GrpHdr/CreDtTm")?,
        amount,
        settlement_date,
        debtor: read_party(reader, "CdtTrfTxInf/Dbtr", "CdtTrfTxInf/DbtrAcct"),
        debtor_agent: reader.member("CdtTrfTxInf/DbtrAgt"),
        creditor: read_party(reader, "CdtTrfTxInf/Cdtr", "CdtTrfTxInf/CdtrAcct"),
        creditor_agent: reader.member("CdtTrfTxInf/CdtrAgt"),
        remittance: reader
            .optional("CdtTrfTxInf/RmtInf/Ustrd")
            .or_else(|| reader.optional("CdtTrfTxInf/RltdRmtInf/RmtId"))
            .unwrap_or_default(),
    })
}

fn read_institution_transfer(reader: &Reader<'_>) -> Result<InstitutionTransfer, ParseError> {
    let amount = reader.amount("CdtTrfTxInf/IntrBkSttlmAmt")?;
    let settlement_date = reader.date("CdtTrfTxInf/IntrBkSttlmDt").or_else(|_| reader.date("GrpHdr/IntrBkSttlmDt"))?;
    Ok(InstitutionTransfer {
        ids: PaymentIds {
            message_id: reader.text("GrpHdr/MsgId")?.to_string(),
            instruction_id: reader.optional("CdtTrfTxInf/PmtId/InstrId").unwrap_or_default(),
            end_to_end_id: reader.text("CdtTrfTxInf/PmtId/EndToEndId")?.to_string(),
            transaction_id: reader.optional("CdtTrfTxInf/PmtId/TxId").unwrap_or_default(),
            uetr: reader.optional("CdtTrfTxInf/PmtId/UETR").unwrap_or_default(),
        },
        created_at: reader.time("GrpHdr/CreDtTm")?,
        amount,
        settlement_date,
        debtor_agent: reader.member("CdtTrfTxInf/Dbtr"),
        creditor_agent: reader.member("CdtTrfTxInf/Cdtr"),
    })
}

fn read_status_report(reader: &Reader<'_>) -> Result<StatusReport, ParseError> {
    Ok(StatusReport {
        message_id: reader.text("GrpHdr/MsgId")?.to_string(),
        created_at: reader.time("GrpHdr/CreDtTm")?,
        original: PaymentIds {
            message_id: reader.text("OrgnlGrpInfAndSts/OrgnlMsgId")?.to_string(),
            instruction_id: reader.optional("TxInfAndSts/OrgnlInstrId").unwrap_or_default(),
            end_to_end_id: reader.optional("TxInfAndSts/OrgnlEndToEndId").unwrap_or_default(),
            transaction_id: reader.optional("TxInfAndSts/OrgnlTxId").unwrap_or_default(),
            uetr: reader.optional("TxInfAndSts/OrgnlUETR").unwrap_or_default(),
        },
        original_message_name: reader.text("OrgnlGrpInfAndSts/OrgnlMsgNmId")?.to_string(),
        original_created_at: reader.time("OrgnlGrpInfAndSts/OrgnlCreDtTm").unwrap_or(DateTime::<Utc>::MIN_UTC),
        status: reader.text("TxInfAndSts/TxSts")?.to_string(),
        reason: reader
            .optional("TxInfAndSts/StsRsnInf/Rsn/Cd")
            .or_else(|| reader.optional("TxInfAndSts/StsRsnInf/Rsn/Prtry")),
        additional_info: reader.optional("TxInfAndSts/StsRsnInf/AddtlInf"),
        amount: reader.amount("TxInfAndSts/OrgnlTxRef/IntrBkSttlmAmt")?,
        settlement_date: reader.date("TxInfAndSts/OrgnlTxRef/IntrBkSttlmDt")?,
        from_agent: reader.member("TxInfAndSts/InstgAgt"),
        to_agent: reader.member("TxInfAndSts/InstdAgt"),
    })
}

fn read_status_request(reader: &Reader<'_>) -> Result<StatusRequest, ParseError> {
    Ok(StatusRequest {
        message_id: reader.text("GrpHdr/MsgId")?.to_string(),
        created_at: reader.time("GrpHdr/CreDtTm")?,
        original: PaymentIds {
            message_id: reader
                .optional("OrgnlGrpInf/OrgnlMsgId")
                .or_else(|| reader.optional("TxInf/OrgnlGrpInf/OrgnlMsgId"))
                .unwrap_or_default(),
            instruction_id: reader.optional("TxInf/OrgnlInstrId").unwrap_or_default(),
            end_to_end_id: reader.optional("TxInf/OrgnlEndToEndId").unwrap_or_default(),
            transaction_id: reader.optional("TxInf/OrgnlTxId").unwrap_or_default(),
            uetr: reader.optional("TxInf/OrgnlUETR").unwrap_or_default(),
        },
        original_message_name: reader
            .optional("OrgnlGrpInf/OrgnlMsgNmId")
            .or_else(|| reader.optional("TxInf/OrgnlGrpInf/OrgnlMsgNmId"))
            .unwrap_or_default(),
        original_created_at: reader
            .time("OrgnlGrpInf/OrgnlCreDtTm")
            .or_else(|_| reader.time("TxInf/AccptncDtTm"))
            .unwrap_or(DateTime::<Utc>::MIN_UTC),
        amount: reader.amount("TxInf/OrgnlTxRef/IntrBkSttlmAmt")?,
        settlement_date: reader.date("TxInf/OrgnlTxRef/IntrBkSttlmDt")?,
        from_agent: reader.member("TxInf/InstgAgt"),
        to_agent: reader.member("TxInf/InstdAgt"),
    })
}

fn read_cancellation(reader: &Reader<'_>) -> Result<CancellationRequest, ParseError> {
    Ok(CancellationRequest {
        assignment_id: reader.text("Assgnmt/Id")?.to_string(),
        created_at: reader.time("Assgnmt/CreDtTm")?,
        original: PaymentIds {
            message_id: reader.optional("Undrlyg/OrgnlGrpInfAndCxl/OrgnlMsgId").unwrap_or_default(),
            instruction_id: reader.optional("Undrlyg/TxInf/OrgnlInstrId").unwrap_or_default(),
            end_to_end_id: reader.optional("Undrlyg/TxInf/OrgnlEndToEndId").unwrap_or_default(),
            transaction_id: reader.optional("Undrlyg/TxInf/OrgnlTxId").unwrap_or_default(),
            uetr: reader.optional("Undrlyg/TxInf/OrgnlUETR").unwrap_or_default(),
        },
        original_message_name: reader.optional("Undrlyg/OrgnlGrpInfAndCxl/OrgnlMsgNmId").unwrap_or_default(),
        amount: reader.amount("Undrlyg/TxInf/OrgnlIntrBkSttlmAmt")?,
        settlement_date: reader.date("Undrlyg/TxInf/OrgnlIntrBkSttlmDt")?,
        assigner: reader.member("Assgnmt/Assgnr/Agt"),
        reason: reader
            .optional("Undrlyg/TxInf/CxlRsnInf/Rsn/Cd")
            .or_else(|| reader.optional("Undrlyg/TxInf/CxlRsnInf/Rsn/Prtry"))
            .unwrap_or_default(),
        to_agent: reader.member("Assgnmt/Assgne/Agt"),
    })
}

fn read_system_event(reader: &Reader<'_>) -> Result<SystemEvent, ParseError> {
    let mut parameters = Vec::new();
    if let Some(information) = reader.root.child("EvtInf") {
        for child in information.children() {
            if child.name() == "EvtParam" {
                parameters.push(child.text().trim().to_string());
            }
        }
    }
    Ok(SystemEvent { code: reader.text("EvtInf/EvtCd")?.to_string(), parameters, time: reader.time("EvtInf/EvtTm")? })
}

// ---------------------------------------------------------------------------------------------
// Validation against the schemas.

macro_rules! schemas {
    ($($path:literal),* $(,)?) => {
        /// Every schema file, by its path under `schemas/`, compiled into the binary so that
        /// validation works from any directory.
        pub const SCHEMAS: &[(&str, &str)] = &[$(($path, include_str!(concat!("../schemas/", $path)))),*];
    };
}

schemas!(
    "rtp/messages.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_acmt_022_001_02.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_admi_002_001_01.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_admi_004_001_02.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_admn_001_001_01.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_admn_002_001_01.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_admn_003_001_01.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_admn_004_001_01.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_admn_005_001_01.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_admn_006_001_01.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_camt_026_001_07.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_camt_028_001_09.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_camt_029_001_09.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_camt_035_001_05.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_camt_056_001_08.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_head_001_001_01.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_pacs_002_001_10.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_pacs_008_001_08.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_pacs_009_001_08.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_pacs_028_001_03.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_pain_013_001_07.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_pain_014_001_07.xsd",
    "rtp/messages_urn_iso_std_iso_20022_tech_xsd_remt_001_001_04.xsd",
    "rtp/messages_urn_iso_std_ma_20022_tech_xsd_admn_007_001_01.xsd",
    "rtp/messages_urn_iso_std_ma_20022_tech_xsd_admn_008_001_01.xsd",
    "rtp/xmldsig-core-schema.xsd",
    "iso/camt.054.001.08.xsd",
    "iso/pacs.002.001.11.xsd",
    "iso/pacs.004.001.10.xsd",
    "iso/pacs.008.001.09.xsd",
    "iso/pacs.028.001.04.xsd",
);

/// Why a message could not be validated at all (as opposed to failing validation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidateError {
    #[error(transparent)]
    Xml(#[from] XmlError),
    #[error(
        "no schema for root <{name}> in namespace {namespace:?}; known: RTP Message (urn:tch) and ISO Documents {known}"
    )]
    NoSchema { name: String, namespace: String, known: String },
    #[error("xmllint is not installed (Debian package libxml2-utils): {0}")]
    NoXmllint(String),
    #[error("cannot write the schemas to {path}: {reason}")]
    Cache { path: String, reason: String },
}

/// The result of validating one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Validation {
    pub schema: String,
    pub valid: bool,
    /// xmllint's messages, one per error, with the line number.
    pub errors: Vec<String>,
}

/// The schema file (under `schemas/`) that governs a message, chosen by its root namespace.
pub fn schema_for(bytes: &[u8]) -> Result<&'static str, ValidateError> {
    let xml = parse_xml(bytes)?;
    let root = xml.root();
    if root.name() == "Message" && root.namespace() == TCH {
        return Ok("rtp/messages.xsd");
    }
    let iso: BTreeMap<&str, &str> = SCHEMAS
        .iter()
        .filter_map(|(path, _)| {
            let file = path.strip_prefix("iso/")?;
            Some((file.strip_suffix(".xsd")?, *path))
        })
        .collect();
    if root.name() == "Document"
        && let Some(version) = root.namespace().strip_prefix(PREFIX)
        && let Some(path) = iso.get(version)
    {
        return Ok(path);
    }
    Err(ValidateError::NoSchema {
        name: root.name().into(),
        namespace: root.namespace().into(),
        known: iso.keys().copied().collect::<Vec<_>>().join(", "),
    })
}

/// Writes the bundled schemas to a directory under the system temp dir (once per content hash)
/// and returns it.
pub fn schema_directory() -> Result<PathBuf, ValidateError> {
    let mut hasher = Sha256::new();
    for (path, text) in SCHEMAS {
        hasher.update(path.as_bytes());
        hasher.update(text.as_bytes());
    }
    let tag = hex::encode(&hasher.finalize()[..6]);
    let directory = std::env::temp_dir().join(format!("railyard-iso20022-{tag}"));
    let marker = directory.join(".complete");
    if marker.exists() {
        return Ok(directory);
    }
    let cache = |path: &Path, error: std::io::Error| ValidateError::Cache {
        path: path.display().to_string(),
        reason: error.to_string(),
    };
    // Write into a private directory, then rename, so concurrent validators never see half a set.
    let staging = std::env::temp_dir().join(format!("railyard-iso20022-{tag}.{}", std::process::id()));
    for (path, text) in SCHEMAS {
        let target = staging.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|error| cache(parent, error))?;
        }
        std::fs::write(&target, text).map_err(|error| cache(&target, error))?;
    }
    std::fs::write(staging.join(".complete"), b"").map_err(|error| cache(&staging, error))?;
    if std::fs::rename(&staging, &directory).is_err() {
        // Another process won the race; its copy is identical.
        let _ = std::fs::remove_dir_all(&staging);
    }
    if marker.exists() { Ok(directory) } else { Err(cache(&directory, std::io::Error::other("incomplete schema set"))) }
}

/// Validates a message with `xmllint --schema` against the schema its root names.
pub fn validate(bytes: &[u8]) -> Result<Validation, ValidateError> {
    let schema = schema_for(bytes)?;
    let directory = schema_directory()?;
    let schema_path = directory.join(schema);
    let message_path =
        directory.join(format!("message-{}-{}.xml", std::process::id(), hash_tail(&format!("{bytes:?}"), 12)));
    std::fs::write(&message_path, bytes).map_err(|error| ValidateError::Cache {
        path: message_path.display().to_string(),
        reason: error.to_string(),
    })?;
    let output = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&schema_path)
        .arg(&message_path)
        .output()
        .map_err(|error| ValidateError::NoXmllint(error.to_string()));
    let _ = std::fs::remove_file(&message_path);
    let output = output?;
    let shown = message_path.display().to_string();
    let errors: Vec<String> = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| !line.ends_with(" validates") && !line.ends_with("fails to validate") && !line.trim().is_empty())
        .map(|line| line.replace(&shown, "message").to_string())
        .collect();
    Ok(Validation { schema: schema.to_string(), valid: output.status.success() && errors.is_empty(), errors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_with_or_without_an_offset() {
        let at = |text: &str| parse_time(text).map(|time| time.to_rfc3339());
        assert_eq!(at("2026-12-03T08:15:30+01:00").as_deref(), Some("2026-12-03T07:15:30+00:00"));
        assert_eq!(at("2026-12-03T08:15:30Z").as_deref(), Some("2026-12-03T08:15:30+00:00"));
        assert_eq!(at("2026-12-03T08:15:30").as_deref(), Some("2026-12-03T08:15:30+00:00"));
        assert_eq!(at("2026-12-03T08:15:30.250").as_deref(), Some("2026-12-03T08:15:30.250+00:00"));
        for bad in ["", "2026-12-03", "2026-13-03T08:15:30", "2026-12-03T08:15", "2026-12-03 08:15:30", "yesterday"] {
            assert_eq!(at(bad), None, "{bad:?}");
        }
    }
}
