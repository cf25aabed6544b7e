//! Building a router from the treasury configuration, the FX book and the rails' live state.
//!
//! Nodes: every currency at `ledger` (Railyard's own books, where FX providers convert) and at
//! `beneficiary` (delivered). Edges:
//! - each FX provider's conversion, `CUR@ledger → CUR2@ledger`, free of fees (the spread is the price);
//! - each rail's delivery in a currency it serves, `CUR@ledger → CUR@beneficiary`, with the rail's fee
//!   schedule and per-payment limits in that currency, its daily cap and its prefunded account;
//! - each rail's in-network conversion (card network FX, CBDC payment-versus-payment),
//!   `CUR@ledger → CUR2@beneficiary`, fee and limits in the currency it takes, at the mid rate minus
//!   the rail's spread, paid out of its prefunded account in the delivered currency.

use std::collections::{BTreeMap, HashMap};

use railyard_config::{RailConfig, TreasuryConfig};
use railyard_core::{Currency, Decimal, FeeSchedule, Money};
use railyard_fx::FxBook;

use crate::graph::{EdgeSpec, GraphBuilder, NodeKey, Operator, OperatorKind};
use crate::router::{BENEFICIARY, LEDGER, RouteError, Router};

/// What a rail's actor last reported; anything absent falls back to the configuration's priors.
#[derive(Debug, Clone, Default)]
pub struct RailState {
    /// False during an outage or while the kill switch is on.
    pub available: Option<bool>,
    pub latency_ms: Option<u32>,
    pub success_probability: Option<Decimal>,
    /// Prefunded balance available now, per currency.
    pub liquidity: BTreeMap<Currency, Money>,
    /// Sent today, per currency, counted against the daily cap.
    pub daily_used: BTreeMap<Currency, Money>,
    /// Set by anomaly detection while the rail misbehaves: its success probability is multiplied
    /// by this factor (in (0, 1]), so routing treats it as that much riskier until it recovers.
    pub deweight: Option<Decimal>,
}

/// Live state of every rail, by rail id.
pub type LiveState = HashMap<String, RailState>;

/// Builds the routing snapshot.
pub fn build_router(config: &TreasuryConfig, fx: &FxBook, live: &LiveState) -> Result<Router, RouteError> {
    let mut builder = GraphBuilder::new();
    let node = |currency: Currency, location: &str| NodeKey { currency, location: location.to_string() };
    let invalid = |message: String| RouteError::Invalid(message);

    let mut provider_operators = HashMap::new();
    for provider in &config.fx_providers {
        let index = builder.operator(Operator {
            id: provider.id.to_string(),
            kind: OperatorKind::FxProvider,
            hours: railyard_config::OperatingHours::AlwaysOpen,
            available: true,
            countries: Vec::new(),
        });
        provider_operators.insert(provider.id.to_string(), index);
    }
    for conversion in fx.conversions() {
        builder.edge(EdgeSpec {
            from: node(conversion.base, LEDGER),
            to: node(conversion.quote, LEDGER),
            operator: provider_operators[conversion.provider.as_str()],
            fee: FeeSchedule::free(conversion.base),
            conversion: Some((conversion.rate, conversion.rounding)),
            send_minimum: None,
            send_maximum: None,
            send_account: None,
            receive_account: None,
            latency_ms: conversion.latency_ms,
            success_probability: conversion.availability,
        });
    }

    for rail in &config.rails {
        let state = live.get(rail.id.as_str()).cloned().unwrap_or_default();
        let operator = builder.operator(Operator {
            id: rail.id.to_string(),
            kind: OperatorKind::Rail(rail.kind),
            hours: rail.hours.clone(),
            available: state.available.unwrap_or(true),
            countries: rail.countries.clone(),
        });
        let mut liquidity_accounts = HashMap::new();
        let mut cap_accounts = HashMap::new();
        for &currency in &rail.currencies {
            let configured = config.liquidity_for(rail.id.as_str(), currency).map(|account| account.prefunded);
            let available = state.liquidity.get(&currency).copied().or(configured).unwrap_or(Money::zero(currency));
            liquidity_accounts
                .insert(currency, builder.account(format!("{} {currency} prefunded", rail.id), available));
            if let Some(cap) = rail.limits.get(&currency).and_then(|limits| limits.daily_cap) {
                let used = state.daily_used.get(&currency).copied().unwrap_or(Money::zero(currency));
                let remaining = cap.checked_sub(used).map_err(|error| invalid(error.to_string()))?;
                cap_accounts.insert(
                    currency,
                    builder.account(
                        format!("{} {currency} daily cap", rail.id),
                        remaining.max(Money::zero(currency)).map_err(|e| invalid(e.to_string()))?,
                    ),
                );
            }
        }
        let latency_ms = state.latency_ms.unwrap_or(rail.latency_ms_prior);
        let success = rail_success(rail, &state);
        let leg = |from: Currency, to: Currency, conversion| EdgeSpec {
            from: node(from, LEDGER),
            to: node(to, BENEFICIARY),
            operator,
            fee: rail.fees.get(&from).copied().unwrap_or(FeeSchedule::free(from)),
            conversion,
            send_minimum: rail.limits.get(&from).map(|limits| limits.minimum),
            send_maximum: rail.limits.get(&from).map(|limits| limits.maximum),
            send_account: cap_accounts.get(&from).copied(),
            receive_account: liquidity_accounts.get(&to).copied(),
            latency_ms,
            success_probability: success,
        };
        for &currency in &rail.currencies {
            builder.edge(leg(currency, currency, None));
        }
        if let Some(network_fx) = &rail.fx {
            for pair in &network_fx.pairs {
                let mid = fx
                    .reference()
                    .mid(pair.base, pair.quote)
                    .map_err(|error| invalid(format!("rail {} converts {pair} in-network: {error}", rail.id)))?;
                let rate = mid.with_spread(network_fx.spread_bps).map_err(|error| invalid(error.to_string()))?;
                builder.edge(leg(pair.base, pair.quote, Some((rate, network_fx.rounding))));
            }
        }
    }
    let graph = builder.build().map_err(|error| invalid(error.to_string()))?;
    let mut per_eur = HashMap::new();
    for currency in graph.currencies().into_iter().chain([config.routing.reference_currency]) {
        if let Some(value) = fx.reference().per_eur(currency) {
            per_eur.insert(currency, value);
        }
    }
    // Currencies the ECB does not publish are valued through a provider's fixed rate.
    for conversion in fx.conversions() {
        if !per_eur.contains_key(&conversion.quote)
            && let Some(base) = per_eur.get(&conversion.base).copied()
        {
            per_eur.insert(conversion.quote, base * conversion.mid.value());
        }
    }
    Router::new(graph, &per_eur, config.routing.clone(), config.corridors.clone())
}

fn rail_success(rail: &RailConfig, state: &RailState) -> Decimal {
    let base = state.success_probability.unwrap_or(rail.availability_prior);
    match state.deweight {
        // Never zero: a de-weighted rail stays a (costly) fallback rather than vanishing.
        Some(factor) if factor > Decimal::ZERO && factor < Decimal::ONE => {
            (base * factor).round_dp(12).max(Decimal::new(1, 6))
        }
        _ => base,
    }
}
