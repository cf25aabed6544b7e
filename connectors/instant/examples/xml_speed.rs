//! How long reading and writing one ISO 20022 message takes: the RTP samples (pacs.008, pacs.002)
//! read into their messages, a pacs.008 written from what was read, against quick-xml's own event
//! loop over the same bytes (the least any reader of it can take), in the same run.
//!
//! `cargo run --release -p railyard-rail-instant --example xml_speed`

use std::hint::black_box;
use std::time::Instant;

use railyard_rail_instant::iso20022::{self, Message};

const ROUNDS: u32 = 20_000;

fn micros_each(mut work: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..ROUNDS {
        work();
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS)
}

/// quick-xml's namespace-resolving reader over `bytes`, events counted and dropped.
fn events_only(bytes: &[u8]) -> usize {
    let mut reader = quick_xml::reader::NsReader::from_reader(bytes);
    let mut events = 0;
    while let Ok((_, event)) = reader.read_resolved_event() {
        if matches!(event, quick_xml::events::Event::Eof) {
            break;
        }
        events += 1;
    }
    events
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples").join("rtp");
    for name in ["pacs008.xml", "pacs002.ACTC.xml"] {
        let bytes = std::fs::read(samples.join(name))?;
        let read = micros_each(|| {
            black_box(iso20022::parse(black_box(&bytes)).map(|parsed| parsed.message_type.len()).unwrap_or(0));
        });
        let baseline = micros_each(|| {
            black_box(events_only(black_box(&bytes)));
        });
        println!("{name:18} {:5} bytes  read {read:6.2} µs   quick-xml events alone {baseline:6.2} µs", bytes.len());
        let parsed = iso20022::parse(&bytes)?;
        if let Message::CreditTransfer(transfer) = &parsed.message {
            let write = micros_each(|| {
                black_box(iso20022::emit_credit_transfer(parsed.profile, black_box(transfer)).len());
            });
            println!("{name:18} written again          {write:6.2} µs");
        }
    }
    Ok(())
}
