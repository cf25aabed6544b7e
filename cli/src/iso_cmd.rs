//! `railyard iso20022 validate|parse`: a tool for integrators who speak ISO 20022.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use railyard_rail_instant::iso20022::{self, Message};
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum IsoCommand {
    /// Validate a message against the ISO 20022 schemas (RTP envelope or base ISO document) and
    /// print every error with its line. Needs xmllint (Debian package libxml2-utils).
    Validate {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print what Railyard understood of a message: type, ids, amount and currency, status and
    /// reason code.
    Parse {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn read(file: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

pub fn run(command: IsoCommand) -> anyhow::Result<ExitCode> {
    match command {
        IsoCommand::Validate { file, json } => {
            let bytes = read(&file)?;
            let validation = iso20022::validate(&bytes).with_context(|| format!("{}", file.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&validation)?);
            } else if validation.valid {
                println!("{}: valid against {}", file.display(), validation.schema);
            } else {
                println!("{}: {} error(s) against {}", file.display(), validation.errors.len(), validation.schema);
                for error in &validation.errors {
                    println!("  {error}");
                }
            }
            Ok(if validation.valid { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        IsoCommand::Parse { file, json } => {
            let bytes = read(&file)?;
            let parsed = iso20022::parse(&bytes).with_context(|| format!("{}", file.display()))?;
            let summary = summary(&parsed);
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                // The full reading is in --json; the text view shows the flat fields.
                for (key, value) in summary.as_object().into_iter().flatten().filter(|(key, _)| *key != "message") {
                    let text = match value {
                        Value::String(text) => text.clone(),
                        Value::Null => "-".into(),
                        other => other.to_string(),
                    };
                    println!("{key:<22} {text}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The flat view integrators ask for; `message` holds everything that was read.
fn summary(parsed: &iso20022::Parsed) -> Value {
    let (ids, amount, status, reason) = match &parsed.message {
        Message::CreditTransfer(message) => (Some(&message.ids), Some(message.amount), None, None),
        Message::InstitutionTransfer(message) => (Some(&message.ids), Some(message.amount), None, None),
        Message::StatusReport(message) => {
            (Some(&message.original), Some(message.amount), Some(message.status.clone()), message.reason.clone())
        }
        Message::StatusRequest(message) => (Some(&message.original), Some(message.amount), None, None),
        Message::CancellationRequest(message) => {
            (Some(&message.original), Some(message.amount), None, Some(message.reason.clone()))
        }
        Message::SystemEvent(message) => (
            None,
            None,
            message.availability().map(|available| if available { "AVAILABLE" } else { "UNAVAILABLE" }.to_string()),
            Some(message.code.clone()),
        ),
    };
    json!({
        "message_type": parsed.message_type,
        "profile": parsed.profile,
        "message_id": message_id(&parsed.message),
        "instruction_id": ids.map(|ids| ids.instruction_id.clone()),
        "end_to_end_id": ids.map(|ids| ids.end_to_end_id.clone()),
        "transaction_id": ids.map(|ids| ids.transaction_id.clone()),
        "uetr": ids.map(|ids| ids.uetr.clone()).filter(|uetr| !uetr.is_empty()),
        "amount": amount.map(|amount| amount.amount_text()),
        "currency": amount.map(|amount| amount.currency().code()),
        "status": status,
        "reason_code": reason,
        "message": parsed,
    })
}

fn message_id(message: &Message) -> Option<String> {
    match message {
        Message::CreditTransfer(message) => Some(message.ids.message_id.clone()),
        Message::InstitutionTransfer(message) => Some(message.ids.message_id.clone()),
        Message::StatusReport(message) => Some(message.message_id.clone()),
        Message::StatusRequest(message) => Some(message.message_id.clone()),
        Message::CancellationRequest(message) => Some(message.assignment_id.clone()),
        Message::SystemEvent(_) => None,
    }
}
