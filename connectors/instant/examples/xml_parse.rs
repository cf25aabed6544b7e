//! Times reading the ISO 20022 messages a payout exchanges with the instant rail.
use railyard_rail_instant::iso20022::{self, CreditTransfer, Party, Profile, StatusReport};

fn main() {
    let at = chrono::Utc::now();
    let date = at.date_naive();
    let party =
        |name: &str| Party { name: name.into(), account: "DE89370400440532013000".into(), country: "DE".into() };
    let amount = railyard_core::Money::from_minor(123_456, railyard_core::Currency::from_code("EUR").unwrap());
    let transfer = CreditTransfer {
        ids: iso20022::payment_ids("payout-0123456789:leg0", date, "MEMBERAAXXX"),
        created_at: at,
        amount,
        settlement_date: date,
        debtor: party("Railyard Ltd"),
        debtor_agent: "MEMBERAAXXX".into(),
        creditor: party("Beneficiary GmbH"),
        creditor_agent: "BANKBBXXX".into(),
        remittance: "invoice 42".into(),
    };
    let report = StatusReport {
        message_id: "M1".into(),
        created_at: at,
        original: transfer.ids.clone(),
        original_message_name: "pacs.008.001.08".into(),
        original_created_at: at,
        status: "ACSC".into(),
        reason: None,
        additional_info: None,
        amount,
        settlement_date: date,
        from_agent: "RAILXXX".into(),
        to_agent: "MEMBERAAXXX".into(),
    };
    for profile in [Profile::Rtp, Profile::Iso] {
        let documents = [
            ("pacs.008", iso20022::emit_credit_transfer(profile, &transfer)),
            ("pacs.002", iso20022::emit_status_report(profile, &report)),
        ];
        for (name, document) in &documents {
            let rounds = 20_000;
            let started = std::time::Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(iso20022::parse(std::hint::black_box(document.as_bytes())).unwrap());
            }
            let parse = started.elapsed().as_secs_f64() * 1e6 / rounds as f64;
            let started = std::time::Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(
                    railyard_rail_instant::xml::parse(std::hint::black_box(document.as_bytes())).unwrap(),
                );
            }
            let tree = started.elapsed().as_secs_f64() * 1e6 / rounds as f64;
            println!("{profile:?} {name}: {} bytes, parse {parse:.2} µs, of it the tree {tree:.2} µs", document.len());
        }
    }
}
