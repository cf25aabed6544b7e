//! Payment authorisation: what decides whether a payout may move money.
//!
//! [`sanctions`] screens names against a list; [`assess`] turns the screening and the facts the
//! store knows about a payout ([`Facts`]: the tenant's history, velocity, the beneficiary) into an
//! [`Assessment`]: a decision with every reason that contributed, kept with the payout so that an
//! operator, the PSP and an auditor read the same explanation.
//!
//! Precedence of decisions: a hard limit or a score at `block_score` blocks; otherwise a screening
//! hit holds the payout for review; otherwise a score at `approval_score` or an amount at the
//! currency's `approval_amount` waits for a second person; otherwise it is approved.

pub mod bench;
pub mod sanctions;

use chrono::{DateTime, Utc};
use railyard_config::RiskConfig;
use railyard_core::{Country, Decimal, Money};
use serde::{Deserialize, Serialize};

pub use sanctions::{Hit, SanctionsList};

/// What happens to the payout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Proceeds to routing.
    Approve,
    /// A name matched the sanctions list: held until an approver clears (overrides) or rejects it.
    Review,
    /// Waits for a second person with the approver scope.
    RequireApproval,
    /// Refused.
    Block,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Review => "review",
            Decision::RequireApproval => "require_approval",
            Decision::Block => "block",
        }
    }
}

/// One rule that contributed, with its points and the facts behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub rule: String,
    pub points: u32,
    pub detail: String,
}

/// The screening of one party.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Screening {
    /// `beneficiary` or `originator`.
    pub party: String,
    pub name: String,
    /// Listed names it resembles at or above the watch level, best first.
    pub hits: Vec<Hit>,
}

/// The stored outcome of screening and scoring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    pub decision: Decision,
    /// Sum of the rules' points, capped at 100.
    pub score: u32,
    pub reasons: Vec<Reason>,
    pub screening: Vec<Screening>,
    pub assessed_at: DateTime<Utc>,
    /// When a held payout fails if nobody decides.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Assessment {
    /// The one-line explanation shown as the payout's reason.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self.reasons.iter().map(|reason| reason.detail.clone()).collect();
        if parts.is_empty() {
            parts.push("no rule applied".into());
        }
        format!("{} (score {}): {}", self.decision.as_str(), self.score, parts.join("; "))
    }
}

/// What the store knows about a payout and its tenant when it is assessed. Counts and sums exclude
/// the payout itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The payout's amount (what is sent, or what must be delivered).
    pub amount: Money,
    pub destination_country: Country,
    /// The tenant's earlier payouts in the amount's currency: how many and their total (minor units).
    pub history_count: u64,
    pub history_sum: i128,
    pub psp_last_hour: u64,
    /// The tenant's payouts in the amount's currency over the last day, minor units.
    pub psp_amount_today: i128,
    pub corridor_last_hour: u64,
    pub corridor_amount_today: i128,
    /// Payouts by this tenant to this beneficiary account over the last day.
    pub beneficiary_today: u64,
    /// The tenant has never paid this beneficiary account before.
    pub new_beneficiary: bool,
}

/// Screens the parties of a payout: (party, name) pairs.
pub fn screen(list: &SanctionsList, config: &RiskConfig, parties: &[(&str, &str)]) -> Vec<Screening> {
    let floor = to_f64(config.screening_watch);
    parties
        .iter()
        .map(|(party, name)| Screening {
            party: party.to_string(),
            name: name.to_string(),
            hits: list.screen(name, floor),
        })
        .collect()
}

fn to_f64(value: Decimal) -> f64 {
    // Similarities are compared as floats inside the matcher only; thresholds have three decimals.
    value.to_string().parse().unwrap_or(1.0)
}

/// Applies the rules of `config` to a screened payout.
pub fn assess(config: &RiskConfig, screening: Vec<Screening>, facts: &Facts, now: DateTime<Utc>) -> Assessment {
    let currency = facts.amount.currency();
    let mut reasons = Vec::new();
    let mut blocked = false;
    let mut review = false;
    let amount = i128::from(facts.amount.minor_units());
    let show = |minor: i128| Money::from_minor(i64::try_from(minor).unwrap_or(i64::MAX), currency).to_string();

    // Hard limits first: any one blocks.
    let limits = &config.limits;
    if facts.psp_last_hour >= limits.psp_payouts_per_hour {
        blocked = true;
        reasons.push(Reason {
            rule: "psp_velocity_limit".into(),
            points: 0,
            detail: format!(
                "the PSP made {} payouts in the last hour (limit {})",
                facts.psp_last_hour, limits.psp_payouts_per_hour
            ),
        });
    }
    if facts.corridor_last_hour >= limits.corridor_payouts_per_hour {
        blocked = true;
        reasons.push(Reason {
            rule: "corridor_velocity_limit".into(),
            points: 0,
            detail: format!(
                "the corridor carried {} payouts in the last hour (limit {})",
                facts.corridor_last_hour, limits.corridor_payouts_per_hour
            ),
        });
    }
    if let Some(limit) = limits.psp_daily_amount.get(&currency)
        && facts.psp_amount_today.saturating_add(amount) > i128::from(limit.minor_units())
    {
        blocked = true;
        reasons.push(Reason {
            rule: "psp_daily_amount_limit".into(),
            points: 0,
            detail: format!(
                "{} paid today plus {} is over the PSP's daily limit {limit}",
                show(facts.psp_amount_today),
                facts.amount
            ),
        });
    }
    if let Some(limit) = limits.corridor_daily_amount.get(&currency)
        && facts.corridor_amount_today.saturating_add(amount) > i128::from(limit.minor_units())
    {
        blocked = true;
        reasons.push(Reason {
            rule: "corridor_daily_amount_limit".into(),
            points: 0,
            detail: format!(
                "{} carried today plus {} is over the corridor's daily limit {limit}",
                show(facts.corridor_amount_today),
                facts.amount
            ),
        });
    }

    // Screening: a hit at the threshold holds the payout; a near one adds points.
    let scores = &config.scores;
    for party in &screening {
        let Some(best) = party.hits.first() else { continue };
        if best.score >= config.screening_threshold {
            review = true;
            reasons.push(Reason {
                rule: "sanctions_match".into(),
                points: 0,
                detail: format!(
                    "{} {:?} matches listed {:?} ({}{}, similarity {})",
                    party.party,
                    party.name,
                    best.matched,
                    best.program,
                    best.country.as_ref().map(|country| format!(", {country}")).unwrap_or_default(),
                    best.score
                ),
            });
        } else {
            reasons.push(Reason {
                rule: "sanctions_near".into(),
                points: scores.screening_near,
                detail: format!(
                    "{} {:?} resembles listed {:?} (similarity {}, below {})",
                    party.party, party.name, best.matched, best.score, config.screening_threshold
                ),
            });
        }
    }

    // Scored rules.
    if facts.new_beneficiary {
        reasons.push(Reason {
            rule: "new_beneficiary".into(),
            points: scores.new_beneficiary,
            detail: "first payout to this beneficiary account".into(),
        });
    }
    if facts.history_count >= limits.history_min && facts.history_count > 0 {
        let mean = facts.history_sum / i128::from(facts.history_count);
        let threshold =
            Decimal::from_i128_with_scale(mean, 0).checked_mul(limits.unusual_amount_multiple).unwrap_or(Decimal::MAX);
        if Decimal::from_i128_with_scale(amount, 0) >= threshold {
            reasons.push(Reason {
                rule: "unusual_amount".into(),
                points: scores.unusual_amount,
                detail: format!(
                    "{} is at least {}x the PSP's mean {} over {} payouts",
                    facts.amount,
                    limits.unusual_amount_multiple,
                    show(mean),
                    facts.history_count
                ),
            });
        }
    }
    if facts.beneficiary_today >= limits.beneficiary_payouts_per_day {
        reasons.push(Reason {
            rule: "beneficiary_velocity".into(),
            points: scores.beneficiary_velocity,
            detail: format!(
                "{} payouts to this beneficiary in the last day (at most {} expected)",
                facts.beneficiary_today, limits.beneficiary_payouts_per_day
            ),
        });
    }
    if config.high_risk_countries.contains(&facts.destination_country) {
        reasons.push(Reason {
            rule: "high_risk_corridor".into(),
            points: scores.high_risk_corridor,
            detail: format!("destination country {} is listed as high risk", facts.destination_country),
        });
    }
    let score = reasons.iter().map(|reason| reason.points).sum::<u32>().min(100);
    let over_amount =
        config.approval_amount.get(&currency).filter(|threshold| facts.amount.minor_units() >= threshold.minor_units());
    if let Some(threshold) = over_amount {
        reasons.push(Reason {
            rule: "approval_amount".into(),
            points: 0,
            detail: format!("{} is at or above the approval amount {threshold}", facts.amount),
        });
    }
    let decision = if blocked || score >= config.block_score {
        Decision::Block
    } else if review {
        Decision::Review
    } else if score >= config.approval_score || over_amount.is_some() {
        Decision::RequireApproval
    } else {
        Decision::Approve
    };
    let expires_at = matches!(decision, Decision::Review | Decision::RequireApproval)
        .then(|| now + chrono::Duration::minutes(i64::from(config.approval_expiry_minutes)));
    Assessment { decision, score, reasons, screening, assessed_at: now, expires_at }
}

/// The assessment of a payout when no `[risk]` section is configured: approved, and saying why.
pub fn unconfigured(now: DateTime<Utc>) -> Assessment {
    Assessment {
        decision: Decision::Approve,
        score: 0,
        reasons: vec![Reason {
            rule: "unconfigured".into(),
            points: 0,
            detail: "no [risk] section is configured: not screened".into(),
        }],
        screening: Vec::new(),
        assessed_at: now,
        expires_at: None,
    }
}
