//! Every message we emit validates against the real schemas (RTP for USD, base ISO otherwise), and
//! every sample message from the schema publishers parses.
//!
//! Needs `xmllint` (Debian package libxml2-utils); `.ci/run` installs it. Without it these tests
//! fail with that instruction rather than pass.

use chrono::{DateTime, NaiveDate, Utc};
use railyard_core::{Currency, Money};
use railyard_rail_instant::iso20022::{
    self, CancellationRequest, CreditTransfer, Message, Party, Profile, StatusReport, StatusRequest, SystemEvent,
    TxState,
};

fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T10:15:30Z").unwrap().with_timezone(&Utc)
}

fn transfer(currency: &str, minor: i64) -> CreditTransfer {
    let date = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
    CreditTransfer {
        ids: iso20022::payment_ids("pay_0193a1b2c3d4:rail-1", date, "021000021"),
        created_at: at(),
        amount: Money::from_minor(minor, Currency::from_code(currency).unwrap()),
        settlement_date: date,
        debtor: Party {
            name: "Railyard House & Co <Treasury>".into(),
            account: "8800123456".into(),
            country: "US".into(),
        },
        debtor_agent: "021000021".into(),
        creditor: Party { name: "Ana Souza".into(), account: "4411223344".into(), country: "US".into() },
        creditor_agent: "026009593".into(),
        remittance: "Invoice 2026-118 \"net 30\"".into(),
    }
}

fn status_report(profile: Profile, transfer: &CreditTransfer, status: &str, reason: Option<&str>) -> StatusReport {
    StatusReport {
        message_id: iso20022::message_id('M', at(), "026009593", "status"),
        created_at: at(),
        original: transfer.ids.clone(),
        original_message_name: if profile == Profile::Rtp { "pacs.008.001.08" } else { "pacs.008.001.09" }.into(),
        original_created_at: at(),
        status: status.into(),
        reason: reason.map(str::to_string),
        additional_info: reason.map(|_| "amount above the participant limit".to_string()),
        amount: transfer.amount,
        settlement_date: transfer.settlement_date,
        from_agent: "026009593".into(),
        to_agent: "021000021".into(),
    }
}

fn assert_valid(xml: &str, what: &str) {
    let validation = iso20022::validate(xml.as_bytes()).unwrap_or_else(|error| panic!("{what}: {error}"));
    assert!(
        validation.valid,
        "{what} does not validate against {}:\n{}\n{xml}",
        validation.schema,
        validation.errors.join("\n")
    );
}

#[test]
fn emitted_messages_validate_in_both_profiles() {
    for (profile, currency, minor) in
        [(Profile::Rtp, "USD", 4_615_449), (Profile::Iso, "EUR", 125_000), (Profile::Iso, "JPY", 98_000)]
    {
        let transfer = transfer(currency, minor);
        let pacs008 = iso20022::emit_credit_transfer(profile, &transfer);
        assert_valid(&pacs008, &format!("{profile:?} pacs.008"));
        for (state, reason) in [(TxState::Settled, None), (TxState::Rejected, Some("AM02")), (TxState::Pending, None)] {
            let status = state.code(profile);
            let pacs002 = iso20022::emit_status_report(profile, &status_report(profile, &transfer, status, reason));
            assert_valid(&pacs002, &format!("{profile:?} pacs.002 {status}"));
        }
        let request = StatusRequest {
            message_id: iso20022::message_id('M', at(), "021000021", "inquiry"),
            created_at: at(),
            original: transfer.ids.clone(),
            original_message_name: "pacs.008.001.08".into(),
            original_created_at: at(),
            amount: transfer.amount,
            settlement_date: transfer.settlement_date,
            from_agent: "021000021".into(),
            to_agent: "026009593".into(),
        };
        let pacs028 = iso20022::emit_status_request(profile, &request);
        assert_valid(&pacs028, &format!("{profile:?} pacs.028"));
        let recall = CancellationRequest {
            assignment_id: iso20022::message_id('M', at(), "021000021", "recall"),
            created_at: at(),
            original: transfer.ids.clone(),
            original_message_name: "pacs.008.001.08".into(),
            amount: transfer.amount,
            settlement_date: transfer.settlement_date,
            assigner: "021000021".into(),
            reason: "DS24".into(),
            to_agent: "026009593".into(),
        };
        let camt056 = iso20022::emit_cancellation_request(profile, &recall);
        if profile == Profile::Rtp {
            assert_valid(&camt056, "RTP camt.056");
        }
        // Whatever we emit, we read back to the same values.
        match iso20022::parse(pacs008.as_bytes()).unwrap().message {
            Message::CreditTransfer(read) => {
                let mut expected = transfer.clone();
                if profile == Profile::Rtp {
                    // RTP's postal address needs a street we do not carry, so the country is not sent.
                    expected.debtor.country.clear();
                    expected.creditor.country.clear();
                }
                assert_eq!(read, expected);
            }
            other => panic!("pacs.008 read back as {other:?}"),
        }
        match iso20022::parse(camt056.as_bytes()).unwrap().message {
            Message::CancellationRequest(read) => assert_eq!(read, recall),
            other => panic!("camt.056 read back as {other:?}"),
        }
        match iso20022::parse(pacs028.as_bytes()).unwrap().message {
            Message::StatusRequest(read) => {
                let mut expected = request.clone();
                if profile == Profile::Rtp {
                    // RTP's pacs.028 names the original by instruction and transaction id only.
                    expected.original.end_to_end_id.clear();
                    expected.original.uetr.clear();
                }
                assert_eq!(read, expected);
            }
            other => panic!("pacs.028 read back as {other:?}"),
        }
    }
    let event =
        SystemEvent { code: "960".into(), parameters: vec!["Broadcast".into(), "UNAVAILABLE".into()], time: at() };
    let admi004 = iso20022::emit_system_event(&event, "990000001", "021000021");
    assert_valid(&admi004, "admi.004");
}

/// The debit notification the sandbox network publishes validates against ISO's camt.054.001.08,
/// with entries in two currencies, a currency with no bookings, and text that needs escaping.
#[test]
fn the_debit_notification_validates() {
    let eur = transfer("EUR", 125_000);
    let mut second = transfer("EUR", 7_50);
    second.ids = iso20022::payment_ids("pay_0193a1b2c3d5:rail-1", eur.settlement_date, "021000021");
    let jpy = transfer("JPY", 98_000);
    let notification = iso20022::DebitNotification {
        message_id: iso20022::message_id('N', at(), "990000001", "camt054"),
        created_at: at(),
        account_owner: "sepa-inst-settlement".into(),
        currencies: ["EUR", "JPY", "CHF"].iter().map(|code| Currency::from_code(code).unwrap()).collect(),
        bookings: [eur, second, jpy]
            .into_iter()
            .map(|transfer| iso20022::Booking { transfer, booked_at: at() })
            .collect(),
    };
    let xml = iso20022::emit_debit_notification(&notification);
    assert_valid(&xml, "camt.054");
    assert_eq!(xml.matches("<Ntfctn>").count(), 3, "{xml}");
    assert_eq!(xml.matches("<Ntry>").count(), 3, "{xml}");
    assert!(xml.contains("<Amt Ccy=\"EUR\">1250.00</Amt>"), "{xml}");
    assert!(xml.contains("<Amt Ccy=\"JPY\">98000</Amt>"), "{xml}");
    assert!(xml.contains(&format!("<UETR>{}</UETR>", notification.bookings[0].transfer.ids.uetr)), "{xml}");
}

#[test]
fn every_published_sample_parses() {
    let directory = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/rtp");
    let mut count = 0;
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "xml") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let parsed = iso20022::parse(&bytes);
        {
            let parsed = parsed.unwrap_or_else(|error| panic!("{name}: {error}"));
            assert_eq!(parsed.profile, Profile::Rtp);
            match (&parsed.message, name.as_str()) {
                (Message::CreditTransfer(transfer), "pacs008.xml") => {
                    assert_eq!(transfer.amount.to_string(), "46154.49 USD");
                    assert_eq!(transfer.ids.transaction_id, "20230713234567891T1BCXIA01868416991");
                }
                (Message::StatusReport(report), "pacs002.ACTC.xml") => assert_eq!(report.status, "ACTC"),
                (Message::InstitutionTransfer(transfer), "pacs009.xml") => {
                    assert!(transfer.amount.is_positive());
                    assert!(!transfer.debtor_agent.is_empty() && !transfer.creditor_agent.is_empty());
                }
                (Message::CancellationRequest(recall), "camt056.timeout.xml") => assert_eq!(recall.reason, "DS24"),
                (Message::SystemEvent(event), "admi004.960-AVAILABLE.xml") => {
                    assert_eq!(event.availability(), Some(true))
                }
                (Message::SystemEvent(event), "admi004.971-NORMAL.xml") => assert_eq!(event.code, "971"),
                (message, name) => panic!("{name} read as {message:?}"),
            }
        }
        count += 1;
    }
    assert_eq!(count, 6);
}

#[test]
fn malformed_and_foreign_messages_get_clear_errors() {
    let cases: [(&str, &str); 4] = [
        ("<Message xmlns=\"urn:tch\"><AppHdr>", "not closed"),
        ("<html><body/></html>", "not an ISO 20022 message"),
        ("", "no root element"),
        (
            "<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pacs.008.001.09\"><FIToFICstmrCdtTrf><GrpHdr/></FIToFICstmrCdtTrf></Document>",
            "missing",
        ),
    ];
    for (text, expected) in cases {
        let error = iso20022::parse(text.as_bytes()).unwrap_err().to_string();
        assert!(error.contains(expected), "{text:?} gave {error:?}");
    }
}
