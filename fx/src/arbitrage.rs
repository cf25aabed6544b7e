//! Refusing rate sets with an arbitrage cycle: a loop of conversions whose product exceeds 1.
//!
//! Method: give every currency its EUR value per unit (from the reference rates, or derived through
//! the providers' fixed rates for currencies the ECB does not publish). A conversion's *efficiency* is
//! the EUR value out per EUR value in; around any cycle the EUR values telescope away, so the product
//! of efficiencies equals the product of the rates. Efficiencies stay near 1, so their natural logs
//! are small decimals, and a Bellman-Ford search for a positive-weight cycle over those logs cannot
//! overflow. `rust_decimal`'s `ln` keeps the whole check free of floating point.

use std::collections::BTreeMap;

use railyard_core::{Currency, Decimal};
use rust_decimal::MathematicalOps;

use crate::FxError;
use crate::book::Conversion;
use crate::ecb::ReferenceRates;

/// A cycle must gain more than this (as a log, about 1e-9 relative) to count: derived rates are
/// rounded to 12 significant digits, so a cycle of unspread reference rates can drift by ~1e-11.
const GAIN_TOLERANCE: Decimal = Decimal::from_parts(1, 0, 0, false, 9);

/// One step of a reported cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleStep {
    pub provider: String,
    pub base: Currency,
    pub quote: Currency,
    pub rate: Decimal,
}

pub(crate) fn check(conversions: &[Conversion], reference: &ReferenceRates) -> Result<(), FxError> {
    let values = eur_values(conversions, reference);
    let mut currencies: Vec<Currency> = values.keys().copied().collect();
    currencies.sort();
    let index = |currency: Currency| currencies.binary_search(&currency).ok();
    // (from, to, log efficiency, conversion index)
    let mut edges: Vec<(usize, usize, Decimal, usize)> = Vec::new();
    for (position, conversion) in conversions.iter().enumerate() {
        let (Some(from), Some(to)) = (index(conversion.base), index(conversion.quote)) else {
            continue;
        };
        let efficiency = conversion.rate.value() * values[&conversion.base] / values[&conversion.quote];
        let Some(log) = efficiency.checked_ln() else {
            continue;
        };
        edges.push((from, to, log, position));
    }
    let count = currencies.len();
    let mut best = vec![Decimal::ZERO; count];
    let mut predecessor: Vec<Option<usize>> = vec![None; count];
    let mut last_improved = None;
    for _ in 0..count {
        last_improved = None;
        for (edge_index, &(from, to, log, _)) in edges.iter().enumerate() {
            let candidate = best[from] + log;
            if candidate > best[to] + GAIN_TOLERANCE {
                best[to] = candidate;
                predecessor[to] = Some(edge_index);
                last_improved = Some(to);
            }
        }
        if last_improved.is_none() {
            return Ok(());
        }
    }
    let Some(mut vertex) = last_improved else {
        return Ok(());
    };
    // Walking back `count` steps from a vertex improved in the last round lands inside the cycle.
    for _ in 0..count {
        let Some(edge) = predecessor[vertex] else {
            return Ok(());
        };
        vertex = edges[edge].0;
    }
    let start = vertex;
    let mut cycle = Vec::new();
    while let Some(edge) = predecessor[vertex] {
        let (from, _, _, position) = edges[edge];
        cycle.push(position);
        vertex = from;
        if vertex == start || cycle.len() > count {
            break;
        }
    }
    cycle.reverse();
    let steps: Vec<CycleStep> = cycle
        .iter()
        .map(|&position| {
            let conversion = &conversions[position];
            CycleStep {
                provider: conversion.provider.to_string(),
                base: conversion.base,
                quote: conversion.quote,
                rate: conversion.rate.value(),
            }
        })
        .collect();
    let product =
        steps.iter().fold(Decimal::ONE, |product, step| product.checked_mul(step.rate).unwrap_or(Decimal::MAX));
    Err(FxError::Arbitrage { steps, product })
}

/// EUR value of one unit of each currency that appears in a conversion.
fn eur_values(conversions: &[Conversion], reference: &ReferenceRates) -> BTreeMap<Currency, Decimal> {
    let mut values: BTreeMap<Currency, Decimal> = BTreeMap::new();
    for conversion in conversions {
        for currency in [conversion.base, conversion.quote] {
            if let Some(per_eur) = reference.per_eur(currency) {
                values.insert(currency, Decimal::ONE / per_eur);
            }
        }
    }
    // Currencies without a reference rate take their value through fixed-rate conversions.
    loop {
        let mut added = false;
        for conversion in conversions {
            if let (Some(value), false) =
                (values.get(&conversion.base).copied(), values.contains_key(&conversion.quote))
            {
                values.insert(conversion.quote, value / conversion.mid.value());
                added = true;
            }
        }
        if !added {
            return values;
        }
    }
}
