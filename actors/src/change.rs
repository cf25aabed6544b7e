//! Treasury changes made at run time: rail fees, limits, routing weights, FX spreads.
//!
//! Each change names one setting (its [`TreasuryChange::key`]), is validated before it touches
//! anything, and is applied by the routing actor to the configuration in force, one change at a
//! time, so two operators changing different settings at once cannot overwrite each other. The
//! routing actor keeps the newest value of each setting in the store (`treasury_settings`), in the
//! same transaction as its audit entry; `railyard serve` lays the stored settings over the
//! configuration file when it starts, so a change outlives restarts.
//!
//! Stored values have the shape of the API bodies (amounts and basis points as decimal strings).

use std::fmt;

use railyard_config::{CurrencyPair, PaymentLimits, TreasuryConfig};
use railyard_core::{Currency, Decimal, FeeSchedule, Money, Sign};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One setting changed to a new value.
#[derive(Debug, Clone, PartialEq)]
pub enum TreasuryChange {
    /// A rail's fee schedule in one currency.
    Fee { rail: String, currency: Currency, fee: FeeSchedule },
    /// A rail's per-payment bounds and daily cap in one currency.
    Limits { rail: String, currency: Currency, limits: PaymentLimits },
    /// The routing objective's weights.
    Weights { cost: Decimal, latency_per_second: Decimal, risk: Decimal },
    /// An FX provider's spread: its default (`pair` absent) or one pair's (both directions).
    ProviderSpread { provider: String, pair: Option<CurrencyPair>, spread_bps: Decimal },
    /// The spread of the conversions a rail performs in-network.
    RailFxSpread { rail: String, spread_bps: Decimal },
}

/// Why a change was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeError {
    pub kind: ChangeErrorKind,
    /// The request field at fault.
    pub field: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeErrorKind {
    /// The rail or provider does not exist.
    NotFound,
    /// A value is malformed or out of range, or routing cannot be built with it.
    Invalid,
    /// The store could not record the change.
    Unavailable,
}

impl ChangeError {
    pub fn invalid(field: &str, reason: impl Into<String>) -> ChangeError {
        ChangeError { kind: ChangeErrorKind::Invalid, field: field.into(), reason: reason.into() }
    }

    fn not_found(field: &str, reason: impl Into<String>) -> ChangeError {
        ChangeError { kind: ChangeErrorKind::NotFound, field: field.into(), reason: reason.into() }
    }

    pub fn unavailable(reason: impl Into<String>) -> ChangeError {
        ChangeError { kind: ChangeErrorKind::Unavailable, field: String::new(), reason: reason.into() }
    }
}

impl fmt::Display for ChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// The fields of a fee schedule as the API and the store write them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeeFields {
    pub fixed: String,
    pub bps: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFields {
    pub min: String,
    pub max: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_cap: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsFields {
    pub cost_weight: String,
    pub latency_weight_per_second: String,
    pub risk_weight: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpreadFields {
    pub spread_bps: String,
    /// "EUR/USD": one pair's spread (both directions); absent: the provider's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair: Option<String>,
}

/// What a change replaced and what it put in place, for the audit log and the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub before: Value,
    pub after: Value,
}

fn currency(code: &str) -> Result<Currency, ChangeError> {
    Currency::from_code(code).map_err(|error| ChangeError::invalid("currency", error.to_string()))
}

fn decimal(field: &str, text: &str) -> Result<Decimal, ChangeError> {
    text.trim().parse().map_err(|_| ChangeError::invalid(field, format!("{text:?} is not a decimal number")))
}

/// A spread in basis points: at least 0, below 10,000, at most two decimal places.
fn spread(field: &str, text: &str) -> Result<Decimal, ChangeError> {
    let bps = decimal(field, text)?;
    if bps < Decimal::ZERO || bps >= FeeSchedule::BPS_LIMIT {
        return Err(ChangeError::invalid(field, format!("must be at least 0 and below 10000 basis points, got {bps}")));
    }
    if bps.normalize().scale() > FeeSchedule::BPS_SCALE_MAX {
        return Err(ChangeError::invalid(
            field,
            format!("has at most {} decimal places, got {bps}", FeeSchedule::BPS_SCALE_MAX),
        ));
    }
    Ok(bps)
}

/// A fee schedule as the API shows it.
pub fn fee_json(fee: &FeeSchedule) -> Value {
    json!({
        "fixed": fee.fixed().amount_text(),
        "bps": fee.bps().to_string(),
        "min": fee.minimum().map(|money| money.amount_text()),
        "max": fee.maximum().map(|money| money.amount_text()),
    })
}

fn limits_json(limits: &PaymentLimits) -> Value {
    json!({
        "min": limits.minimum.amount_text(),
        "max": limits.maximum.amount_text(),
        "daily_cap": limits.daily_cap.map(|cap| cap.amount_text()),
    })
}

fn weights_json(routing: &railyard_config::RoutingSettings) -> Value {
    json!({
        "cost_weight": routing.cost_weight.to_string(),
        "latency_weight_per_second": routing.latency_weight_per_second.to_string(),
        "risk_weight": routing.risk_weight.to_string(),
    })
}

/// The rail of a configuration being edited, if it exists and carries `currency`.
fn rail_carrying<'c>(
    config: &'c mut TreasuryConfig,
    rail: &str,
    currency: Currency,
) -> Result<&'c mut railyard_config::RailConfig, ChangeError> {
    let target = rail_mut(config, rail)?;
    if !target.currencies.contains(&currency) {
        return Err(ChangeError::invalid("currency", format!("{rail} does not carry {currency}")));
    }
    Ok(target)
}

fn rail_mut<'c>(
    config: &'c mut TreasuryConfig,
    rail: &str,
) -> Result<&'c mut railyard_config::RailConfig, ChangeError> {
    config
        .rails
        .iter_mut()
        .find(|candidate| candidate.id.as_str() == rail)
        .ok_or_else(|| ChangeError::not_found("rail", format!("no rail {rail}")))
}

impl TreasuryChange {
    pub fn fee(rail: &str, currency_code: &str, fields: &FeeFields) -> Result<TreasuryChange, ChangeError> {
        let currency = currency(currency_code)?;
        let money = |field: &str, text: &str| {
            Money::parse(text, currency, Sign::NonNegative)
                .map_err(|error| ChangeError::invalid(field, error.to_string()))
        };
        let fixed = money("fixed", &fields.fixed)?;
        let bps = decimal("bps", &fields.bps)?;
        let minimum = fields.min.as_deref().map(|text| money("min", text)).transpose()?;
        let maximum = fields.max.as_deref().map(|text| money("max", text)).transpose()?;
        let fee = FeeSchedule::new(fixed, bps, minimum, maximum).map_err(|error| {
            let field = match error {
                railyard_core::FeeError::MinimumAboveMaximum { .. } | railyard_core::FeeError::NegativeMinimum => "min",
                railyard_core::FeeError::NegativeFixed => "fixed",
                _ => "bps",
            };
            ChangeError::invalid(field, error.to_string())
        })?;
        Ok(TreasuryChange::Fee { rail: rail.into(), currency, fee })
    }

    pub fn limits(rail: &str, currency_code: &str, fields: &LimitsFields) -> Result<TreasuryChange, ChangeError> {
        let currency = currency(currency_code)?;
        let money = |field: &str, text: &str| {
            Money::parse(text, currency, Sign::Positive).map_err(|error| ChangeError::invalid(field, error.to_string()))
        };
        let minimum = money("min", &fields.min)?;
        let maximum = money("max", &fields.max)?;
        let daily_cap = fields.daily_cap.as_deref().map(|text| money("daily_cap", text)).transpose()?;
        if minimum.minor_units() > maximum.minor_units() {
            return Err(ChangeError::invalid("min", format!("{minimum} is above the maximum {maximum}")));
        }
        if let Some(cap) = daily_cap
            && cap.minor_units() < maximum.minor_units()
        {
            return Err(ChangeError::invalid("daily_cap", format!("{cap} is below the per-payment maximum {maximum}")));
        }
        Ok(TreasuryChange::Limits {
            rail: rail.into(),
            currency,
            limits: PaymentLimits { minimum, maximum, daily_cap },
        })
    }

    pub fn weights(fields: &WeightsFields) -> Result<TreasuryChange, ChangeError> {
        let weight = |field: &str, text: &str| -> Result<Decimal, ChangeError> {
            let value = decimal(field, text)?;
            if value < Decimal::ZERO {
                return Err(ChangeError::invalid(field, "must not be negative"));
            }
            Ok(value)
        };
        Ok(TreasuryChange::Weights {
            cost: weight("cost_weight", &fields.cost_weight)?,
            latency_per_second: weight("latency_weight_per_second", &fields.latency_weight_per_second)?,
            risk: weight("risk_weight", &fields.risk_weight)?,
        })
    }

    pub fn provider_spread(provider: &str, fields: &SpreadFields) -> Result<TreasuryChange, ChangeError> {
        let spread_bps = spread("spread_bps", &fields.spread_bps)?;
        let pair =
            fields.pair.as_deref().map(CurrencyPair::parse).transpose().map_err(|e| ChangeError::invalid("pair", e))?;
        Ok(TreasuryChange::ProviderSpread { provider: provider.into(), pair, spread_bps })
    }

    pub fn rail_fx_spread(rail: &str, fields: &SpreadFields) -> Result<TreasuryChange, ChangeError> {
        if fields.pair.is_some() {
            return Err(ChangeError::invalid("pair", "a rail's in-network conversions share one spread"));
        }
        Ok(TreasuryChange::RailFxSpread { rail: rail.into(), spread_bps: spread("spread_bps", &fields.spread_bps)? })
    }

    /// The setting this change names: one stored row per key, the newest value wins.
    pub fn key(&self) -> String {
        match self {
            TreasuryChange::Fee { rail, currency, .. } => format!("fee/{rail}/{currency}"),
            TreasuryChange::Limits { rail, currency, .. } => format!("limits/{rail}/{currency}"),
            TreasuryChange::Weights { .. } => "weights".into(),
            TreasuryChange::ProviderSpread { provider, pair: None, .. } => format!("fx_spread/{provider}"),
            TreasuryChange::ProviderSpread { provider, pair: Some(pair), .. } => {
                // One key per pair whichever way it was written: the codes in alphabetical order.
                let (first, second) = if pair.base.code() <= pair.quote.code() {
                    (pair.base, pair.quote)
                } else {
                    (pair.quote, pair.base)
                };
                format!("fx_spread/{provider}/{first}/{second}")
            }
            TreasuryChange::RailFxSpread { rail, .. } => format!("rail_fx_spread/{rail}"),
        }
    }

    /// The audit log's action name.
    pub fn action(&self) -> &'static str {
        match self {
            TreasuryChange::Fee { .. } => "treasury.fee",
            TreasuryChange::Limits { .. } => "treasury.limits",
            TreasuryChange::Weights { .. } => "treasury.weights",
            TreasuryChange::ProviderSpread { .. } | TreasuryChange::RailFxSpread { .. } => "treasury.fx_spread",
        }
    }

    /// The request field a refusal by routing (it cannot build with the change) is put on.
    pub fn field(&self) -> &'static str {
        match self {
            TreasuryChange::Fee { .. } => "fees",
            TreasuryChange::Limits { .. } => "limits",
            TreasuryChange::Weights { .. } => "weights",
            TreasuryChange::ProviderSpread { .. } | TreasuryChange::RailFxSpread { .. } => "spread_bps",
        }
    }

    /// Whether the FX book must be rebuilt: provider spreads are part of it.
    pub fn touches_fx_book(&self) -> bool {
        matches!(self, TreasuryChange::ProviderSpread { .. })
    }

    /// A line for the audit log: the setting, before and after.
    pub fn describe(&self, applied: &Applied) -> String {
        format!("{}: {} -> {}", self.key(), applied.before, applied.after)
    }

    /// The stored value: the API body that makes this change.
    pub fn stored_value(&self) -> Value {
        let text = |money: Option<Money>| money.map(|money| money.amount_text());
        let value = match self {
            TreasuryChange::Fee { fee, .. } => serde_json::to_value(FeeFields {
                fixed: fee.fixed().amount_text(),
                bps: fee.bps().to_string(),
                min: text(fee.minimum()),
                max: text(fee.maximum()),
            }),
            TreasuryChange::Limits { limits, .. } => serde_json::to_value(LimitsFields {
                min: limits.minimum.amount_text(),
                max: limits.maximum.amount_text(),
                daily_cap: text(limits.daily_cap),
            }),
            TreasuryChange::Weights { cost, latency_per_second, risk } => serde_json::to_value(WeightsFields {
                cost_weight: cost.to_string(),
                latency_weight_per_second: latency_per_second.to_string(),
                risk_weight: risk.to_string(),
            }),
            TreasuryChange::ProviderSpread { pair, spread_bps, .. } => serde_json::to_value(SpreadFields {
                spread_bps: spread_bps.to_string(),
                pair: pair.map(|pair| pair.to_string()),
            }),
            TreasuryChange::RailFxSpread { spread_bps, .. } => {
                serde_json::to_value(SpreadFields { spread_bps: spread_bps.to_string(), pair: None })
            }
        };
        value.unwrap_or(Value::Null)
    }

    /// Reads a stored setting back (see [`TreasuryChange::key`] and [`TreasuryChange::stored_value`]).
    pub fn from_stored(key: &str, value: &str) -> Result<TreasuryChange, ChangeError> {
        fn fields<T: for<'de> Deserialize<'de>>(value: &str) -> Result<T, ChangeError> {
            serde_json::from_str(value).map_err(|error| ChangeError::invalid("value", error.to_string()))
        }
        let parts: Vec<&str> = key.split('/').collect();
        match parts.as_slice() {
            ["fee", rail, currency] => TreasuryChange::fee(rail, currency, &fields(value)?),
            ["limits", rail, currency] => TreasuryChange::limits(rail, currency, &fields(value)?),
            ["weights"] => TreasuryChange::weights(&fields(value)?),
            ["fx_spread", provider] | ["fx_spread", provider, _, _] => {
                TreasuryChange::provider_spread(provider, &fields(value)?)
            }
            ["rail_fx_spread", rail] => TreasuryChange::rail_fx_spread(rail, &fields(value)?),
            _ => Err(ChangeError::invalid("key", format!("{key:?} names no treasury setting"))),
        }
    }

    /// Applies the change to `config`. On an error `config` is unchanged.
    pub fn apply(&self, config: &mut TreasuryConfig) -> Result<Applied, ChangeError> {
        match self {
            TreasuryChange::Fee { rail, currency, fee } => {
                let target = rail_carrying(config, rail, *currency)?;
                let before = target.fees.get(currency).map(fee_json).unwrap_or(Value::Null);
                target.fees.insert(*currency, *fee);
                Ok(Applied { before, after: fee_json(fee) })
            }
            TreasuryChange::Limits { rail, currency, limits } => {
                let target = rail_carrying(config, rail, *currency)?;
                let before = target.limits.get(currency).map(limits_json).unwrap_or(Value::Null);
                target.limits.insert(*currency, *limits);
                Ok(Applied { before, after: limits_json(limits) })
            }
            TreasuryChange::Weights { cost, latency_per_second, risk } => {
                let before = weights_json(&config.routing);
                config.routing.cost_weight = *cost;
                config.routing.latency_weight_per_second = *latency_per_second;
                config.routing.risk_weight = *risk;
                Ok(Applied { before, after: weights_json(&config.routing) })
            }
            TreasuryChange::ProviderSpread { provider, pair, spread_bps } => {
                let Some(target) = config.fx_providers.iter_mut().find(|candidate| candidate.id.as_str() == provider)
                else {
                    return Err(ChangeError::not_found("provider", format!("no FX provider {provider}")));
                };
                match pair {
                    None => {
                        let before = json!({ "spread_bps": target.spread_bps.to_string() });
                        target.spread_bps = *spread_bps;
                        Ok(Applied { before, after: json!({ "spread_bps": spread_bps.to_string() }) })
                    }
                    Some(pair) => {
                        let Some(declared) =
                            target.pairs.iter().copied().find(|quoted| *quoted == *pair || *quoted == pair.reversed())
                        else {
                            return Err(ChangeError::invalid("pair", format!("{provider} does not quote {pair}")));
                        };
                        let before = json!({ "pair": declared.to_string(), "spread_bps": target.spread_for(declared.base, declared.quote).to_string() });
                        // One entry per pair, in the orientation the provider declares.
                        target.pair_spreads.remove(&declared.reversed());
                        target.pair_spreads.insert(declared, *spread_bps);
                        Ok(Applied {
                            before,
                            after: json!({ "pair": declared.to_string(), "spread_bps": spread_bps.to_string() }),
                        })
                    }
                }
            }
            TreasuryChange::RailFxSpread { rail, spread_bps } => {
                let target = rail_mut(config, rail)?;
                let Some(fx) = target.fx.as_mut() else {
                    return Err(ChangeError::invalid("spread_bps", format!("{rail} performs no conversions")));
                };
                let before = json!({ "spread_bps": fx.spread_bps.to_string() });
                fx.spread_bps = *spread_bps;
                Ok(Applied { before, after: json!({ "spread_bps": spread_bps.to_string() }) })
            }
        }
    }
}

/// Lays stored settings over a configuration read from its file, oldest first. Each is kept only
/// if `check` accepts the configuration with it (serve builds FX and routing from it); a setting
/// that no longer applies (its rail was removed from the file, say) is skipped and named in the
/// returned warnings, never fatal: the file is still a valid configuration.
pub fn restore(
    config: &mut TreasuryConfig,
    settings: &[(String, String)],
    check: impl Fn(&TreasuryConfig) -> Result<(), String>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    for (key, value) in settings {
        if key.starts_with(KILL_SWITCH_PREFIX) {
            continue;
        }
        let applied = TreasuryChange::from_stored(key, value).and_then(|change| {
            let mut next = config.clone();
            change.apply(&mut next)?;
            check(&next).map_err(|reason| ChangeError::invalid(change.field(), reason))?;
            *config = next;
            Ok(())
        });
        if let Err(error) = applied {
            warnings.push(format!("stored treasury setting {key} not applied: {error}"));
        }
    }
    warnings
}

/// Stored kill switches: `kill_switch/{rail}`, present while engaged.
pub const KILL_SWITCH_PREFIX: &str = "kill_switch/";

/// The rails whose kill switch is stored as engaged.
pub fn restored_kill_switches(config: &TreasuryConfig, settings: &[(String, String)]) -> Vec<String> {
    settings
        .iter()
        .filter_map(|(key, _)| key.strip_prefix(KILL_SWITCH_PREFIX))
        .filter(|rail| config.rail(rail).is_some())
        .map(str::to_string)
        .collect()
}
