//! From TOML text to a validated [`TreasuryConfig`], reporting every problem with its position.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::path::PathBuf;

use chrono::NaiveDate;
use railyard_core::{Country, Currency, Decimal, FeeSchedule, Money, RoundingMode, Sign};
use toml::de::{DeTable, DeValue};

use crate::hours::{self, Days, OperatingHours, WeeklyHours, Window};
use crate::model::*;
use crate::reader::{self, ConfigErrors, Context, Section, Value};

/// Parses and validates a configuration. `file` names the source in messages.
pub fn parse(text: &str, file: &str) -> Result<TreasuryConfig, ConfigErrors> {
    let mut ctx = Context::new(text);
    let (document, syntax_errors) = DeTable::parse_recoverable(text);
    for error in &syntax_errors {
        let span = error.span().unwrap_or(0..0);
        let message = error.message().lines().next().unwrap_or("invalid TOML").to_string();
        ctx.error(span, format!("TOML syntax: {message}"));
    }
    if !syntax_errors.is_empty() {
        // The recovered tree is partial: checking it would report sections "missing" that are only
        // unreadable. Fix the syntax first.
        return Err(ctx.into_errors(file));
    }
    let config = read_document(&mut ctx, document.get_ref(), document.span());
    ctx.finish(file)?;
    config.ok_or_else(|| ConfigErrors {
        file: file.to_string(),
        diagnostics: vec![reader::Diagnostic { line: 1, column: 1, message: "configuration could not be read".into() }],
    })
}

const TOP_KEYS: &[&str] = &["fx", "routing", "rails", "fx_providers", "liquidity", "tenants", "corridors", "risk"];

fn read_document(ctx: &mut Context<'_>, table: &DeTable<'_>, span: Range<usize>) -> Option<TreasuryConfig> {
    let top = Section::new(table, span, "the configuration".into(), TOP_KEYS);
    top.check_keys(ctx);

    let fx = top.get("fx").map(|value| read_fx(ctx, value)).unwrap_or_default();
    let routing = top.required(ctx, "routing").and_then(|value| read_routing(ctx, value));
    let rail_entries: Vec<(RailConfig, Range<usize>)> = array_of_tables(ctx, &top, "rails", true)
        .into_iter()
        .enumerate()
        .filter_map(|(index, value)| read_rail(ctx, value, index).map(|rail| (rail, value.span())))
        .collect();
    let rails: Vec<RailConfig> = rail_entries.iter().map(|(rail, _)| rail.clone()).collect();
    // Ids of every [[rails]] entry, valid or not: a reference to a rail that has its own errors is
    // not reported again as a reference to an unknown rail.
    let declared_rails = declared_ids(&top, "rails");
    let fx_providers: Vec<FxProviderConfig> = array_of_tables(ctx, &top, "fx_providers", false)
        .into_iter()
        .enumerate()
        .filter_map(|(index, value)| read_fx_provider(ctx, value, index))
        .collect();
    let liquidity: Vec<(LiquidityConfig, Range<usize>)> = array_of_tables(ctx, &top, "liquidity", false)
        .into_iter()
        .enumerate()
        .filter_map(|(index, value)| read_liquidity(ctx, value, index, &rails, &declared_rails))
        .collect();
    let tenants: Vec<TenantConfig> = array_of_tables(ctx, &top, "tenants", false)
        .into_iter()
        .enumerate()
        .filter_map(|(index, value)| read_tenant(ctx, value, index))
        .collect();
    let corridors: Vec<CorridorRule> = array_of_tables(ctx, &top, "corridors", false)
        .into_iter()
        .enumerate()
        .filter_map(|(index, value)| read_corridor(ctx, value, index, &rails, &declared_rails))
        .collect();

    let risk = top.get("risk").map(|value| read_risk(ctx, value));

    check_unique_ids(ctx, &top, "rails");
    check_unique_ids(ctx, &top, "fx_providers");
    check_unique_ids(ctx, &top, "tenants");
    check_liquidity_coverage(ctx, &rail_entries, &liquidity);
    check_keys_unique(ctx, &top);

    if ctx.has_errors() {
        return None;
    }
    Some(TreasuryConfig {
        fx,
        routing: routing?,
        rails,
        fx_providers,
        liquidity: liquidity.into_iter().map(|(account, _)| account).collect(),
        tenants,
        corridors,
        risk: risk.flatten(),
    })
}

fn array_of_tables<'t, 'i>(
    ctx: &mut Context<'_>,
    top: &Section<'t, 'i>,
    key: &str,
    required: bool,
) -> Vec<&'t Value<'i>> {
    let value = if required { top.required(ctx, key) } else { top.get(key) };
    let Some(value) = value else {
        return Vec::new();
    };
    let Some(items) = reader::array(ctx, value, &format!("`{key}` (written [[{key}]])")) else {
        return Vec::new();
    };
    if required && items.is_empty() {
        ctx.error(value.span(), format!("at least one [[{key}]] entry is required"));
    }
    items.iter().collect()
}

fn read_fx(ctx: &mut Context<'_>, value: &Value<'_>) -> FxSettings {
    let Some(section) = Section::of(ctx, value, "[fx]".into(), &["rates_file"]) else {
        return FxSettings::default();
    };
    section.check_keys(ctx);
    let rates_file = section.optional_string(ctx, "rates_file").map(|(path, _)| PathBuf::from(path));
    FxSettings { rates_file }
}

const ROUTING_KEYS: &[&str] =
    &["reference_currency", "cost_weight", "latency_weight_per_second", "risk_weight", "max_hops", "max_total_fee_bps"];

/// Hop limits above this are refused: every hop adds a rail call, a fee and a failure point, and the
/// search's label count grows with it.
pub const MAX_HOPS_LIMIT: i64 = 8;

fn read_routing(ctx: &mut Context<'_>, value: &Value<'_>) -> Option<RoutingSettings> {
    let section = Section::of(ctx, value, "[routing]".into(), ROUTING_KEYS)?;
    section.check_keys(ctx);
    let reference_currency = section
        .string(ctx, "reference_currency")
        .and_then(|(code, span)| reader::currency(ctx, code, span, &section.describe("reference_currency")));
    let weight = |ctx: &mut Context<'_>, key: &str| -> Option<Decimal> {
        let value = section.required(ctx, key)?;
        let number = reader::decimal(ctx, value, &section.describe(key))?;
        if number < Decimal::ZERO {
            ctx.error(value.span(), format!("{} must not be negative", section.describe(key)));
            return None;
        }
        Some(number)
    };
    let cost_weight = weight(ctx, "cost_weight");
    let latency_weight_per_second = weight(ctx, "latency_weight_per_second");
    let risk_weight = weight(ctx, "risk_weight");
    let max_hops = section
        .required(ctx, "max_hops")
        .and_then(|value| reader::integer(ctx, value, &section.describe("max_hops"), 1..=MAX_HOPS_LIMIT));
    let max_total_fee_bps = match section.get("max_total_fee_bps") {
        Some(value) => {
            let bps = reader::decimal(ctx, value, &section.describe("max_total_fee_bps"));
            if let Some(bps) = bps
                && (bps <= Decimal::ZERO || bps > Decimal::from(10_000))
            {
                ctx.error(value.span(), "`max_total_fee_bps` must be greater than 0 and at most 10000");
            }
            Some(bps)
        }
        None => None,
    };
    Some(RoutingSettings {
        reference_currency: reference_currency?,
        cost_weight: cost_weight?,
        latency_weight_per_second: latency_weight_per_second?,
        risk_weight: risk_weight?,
        max_hops: u32::try_from(max_hops?).ok()?,
        max_total_fee_bps: max_total_fee_bps.unwrap_or(None),
    })
}

const RAIL_KEYS: &[&str] = &[
    "id",
    "name",
    "kind",
    "currencies",
    "countries",
    "fees",
    "limits",
    "fx",
    "hours",
    "settlement",
    "latency_ms_prior",
    "availability_prior",
    "timeout_ms",
    "endpoint",
    "sandbox_faults",
];

fn identifier(ctx: &mut Context<'_>, section: &Section<'_, '_>) -> Option<Identifier> {
    let (text, span) = section.string(ctx, "id")?;
    match Identifier::new(text) {
        Ok(id) => Some(id),
        Err(message) => {
            ctx.error(span, format!("{}: {message}", section.describe("id")));
            None
        }
    }
}

fn entry_name(table: &DeTable<'_>, kind: &str, index: usize) -> String {
    match table.get("id").map(|value| value.get_ref()) {
        Some(DeValue::String(id)) => format!("[[{kind}]] {id:?}"),
        _ => format!("[[{kind}]] #{}", index + 1),
    }
}

fn read_rail(ctx: &mut Context<'_>, value: &Value<'_>, index: usize) -> Option<RailConfig> {
    let name = match value.get_ref() {
        DeValue::Table(table) => entry_name(table, "rails", index),
        _ => format!("[[rails]] #{}", index + 1),
    };
    let section = Section::of(ctx, value, name, RAIL_KEYS)?;
    section.check_keys(ctx);
    let id = identifier(ctx, &section);
    let display_name = section.optional_string(ctx, "name").map(|(text, _)| text.to_string());
    let kind = section.string(ctx, "kind").and_then(|(text, span)| {
        let kind = RailKind::parse(text);
        if kind.is_none() {
            ctx.error(
                span,
                format!("{}: unknown rail kind {text:?}; expected card, instant or cbdc", section.describe("kind")),
            );
        }
        kind
    });

    let currencies = read_currency_list(ctx, &section, "currencies");
    if let (Some(list), Some(value)) = (&currencies, section.get("currencies"))
        && list.is_empty()
    {
        ctx.error(value.span(), format!("{} serves no currency: list at least one in `currencies`", section.name));
    }
    let countries = read_country_list(ctx, &section);
    let served: Vec<Currency> = currencies.clone().unwrap_or_default();

    let fees =
        section.required(ctx, "fees").and_then(|value| read_fees(ctx, value, &section, &served)).unwrap_or_default();
    if currencies.is_some()
        && let Some(value) = section.get("fees")
    {
        for currency in &served {
            if !fees.contains_key(currency) && !ctx_has_fee_key(value, *currency) {
                ctx.error(
                    value.span(),
                    format!("{} serves {currency} but has no fee schedule [rails.fees.{currency}]", section.name),
                );
            }
        }
    }
    let limits = section.get("limits").and_then(|value| read_limits(ctx, value, &section, &served)).unwrap_or_default();
    let fx = section.get("fx").and_then(|value| read_rail_fx(ctx, value, &section, &served));
    let hours = section.required(ctx, "hours").and_then(|value| read_hours(ctx, value, &section));
    let settlement = match section.get("settlement") {
        Some(value) => read_settlement(ctx, value, &section),
        None => Some(Settlement { model: SettlementModel::Gross, delay_hours: 0, window_minutes: 0 }),
    };
    let latency_ms_prior = section
        .required(ctx, "latency_ms_prior")
        .and_then(|value| reader::integer(ctx, value, &section.describe("latency_ms_prior"), 1..=86_400_000));
    let availability_prior = section
        .required(ctx, "availability_prior")
        .and_then(|value| probability(ctx, value, &section, "availability_prior"));
    let timeout_ms = match section.get("timeout_ms") {
        Some(value) => reader::integer(ctx, value, &section.describe("timeout_ms"), 1..=600_000).map(Some),
        None => Some(None),
    };
    let endpoint = section.optional_string(ctx, "endpoint").and_then(|(text, span)| {
        if text.starts_with("http://") || text.starts_with("https://") {
            Some(text.to_string())
        } else {
            ctx.error(span, format!("{} must be an http:// or https:// URL", section.describe("endpoint")));
            None
        }
    });
    if section.get("endpoint").is_some() && endpoint.is_none() {
        return None;
    }
    // A JSON fault plan for this rail's sandbox (checked when the sandbox is built).
    let sandbox_faults = section.optional_string(ctx, "sandbox_faults").map(|(path, _)| PathBuf::from(path));

    let id = id?;
    let kind = kind?;
    Some(RailConfig {
        name: display_name.unwrap_or_else(|| id.to_string()),
        id,
        kind,
        currencies: currencies?,
        countries: countries?,
        fees,
        limits,
        fx,
        hours: hours?,
        settlement: settlement?,
        latency_ms_prior: u32::try_from(latency_ms_prior?).ok()?,
        availability_prior: availability_prior?,
        timeout_ms: timeout_ms?.map(|ms| ms as u32).unwrap_or_else(|| kind.default_timeout_ms()),
        endpoint,
        sandbox_faults,
        origin: ctx.origin(&section.span()),
    })
}

/// Whether the `fees` table has a key for `currency`, even one whose schedule had errors (those are
/// already reported; a second "missing" message would mislead).
fn ctx_has_fee_key(value: &Value<'_>, currency: Currency) -> bool {
    matches!(value.get_ref(), DeValue::Table(table) if table.get(currency.code()).is_some())
}

fn probability(ctx: &mut Context<'_>, value: &Value<'_>, section: &Section<'_, '_>, key: &str) -> Option<Decimal> {
    let number = reader::decimal(ctx, value, &section.describe(key))?;
    if number <= Decimal::ZERO || number > Decimal::ONE {
        ctx.error(
            value.span(),
            format!("{} is a probability: greater than 0 and at most 1, got {number}", section.describe(key)),
        );
        return None;
    }
    Some(number)
}

fn read_currency_list(ctx: &mut Context<'_>, section: &Section<'_, '_>, key: &str) -> Option<Vec<Currency>> {
    let value = section.required(ctx, key)?;
    let what = section.describe(key);
    let mut currencies = Vec::new();
    let mut ok = reader::array(ctx, value, &what).is_some();
    for (code, span) in reader::strings(ctx, value, &what) {
        match reader::currency(ctx, code, span.clone(), &what) {
            Some(currency) if currencies.contains(&currency) => {
                ctx.error(span, format!("{what} lists {currency} twice"));
            }
            Some(currency) => currencies.push(currency),
            None => ok = false,
        }
    }
    ok.then_some(currencies)
}

fn read_country_list(ctx: &mut Context<'_>, section: &Section<'_, '_>) -> Option<Vec<Country>> {
    let value = section.required(ctx, "countries")?;
    let what = section.describe("countries");
    let mut countries = Vec::new();
    let mut ok = true;
    for (code, span) in reader::strings(ctx, value, &what) {
        match Country::from_code(code) {
            Ok(country) if countries.contains(&country) => ctx.error(span, format!("{what} lists {country} twice")),
            Ok(country) => countries.push(country),
            Err(error) => {
                ctx.error(span, format!("{what}: {error}"));
                ok = false;
            }
        }
    }
    if ok && countries.is_empty() {
        ctx.error(value.span(), format!("{} serves no country: list at least one in `countries`", section.name));
        ok = false;
    }
    ok.then_some(countries)
}

/// Reads a table keyed by currency code; each entry is handed to `read_entry`.
fn per_currency<T>(
    ctx: &mut Context<'_>,
    value: &Value<'_>,
    section: &Section<'_, '_>,
    key: &str,
    served: &[Currency],
    mut read_entry: impl FnMut(&mut Context<'_>, &Value<'_>, Currency, String) -> Option<T>,
) -> Option<BTreeMap<Currency, T>> {
    let table = match value.get_ref() {
        DeValue::Table(table) => table,
        other => {
            ctx.error(
                value.span(),
                format!("{} must be a table keyed by currency, found {}", section.describe(key), other.type_str()),
            );
            return None;
        }
    };
    let mut entries = BTreeMap::new();
    for (code, entry) in table.iter() {
        let what = match section.name.strip_prefix('[').and_then(|name| name.strip_suffix(']')) {
            // A plain table such as [risk] or [risk.limits]: its sub-tables are [risk.limits.USD].
            Some(table) if !table.starts_with('[') => format!("[{table}.{key}.{}]", code.get_ref()),
            _ => format!("[rails.{key}.{}] of {}", code.get_ref(), section.name),
        };
        let Some(currency) = reader::currency(ctx, code.get_ref(), code.span(), &what) else {
            continue;
        };
        if !served.is_empty() && !served.contains(&currency) {
            ctx.error(
                code.span(),
                format!("{what}: the rail does not serve {currency} (add it to `currencies` or remove this table)"),
            );
            continue;
        }
        if let Some(parsed) = read_entry(ctx, entry, currency, what) {
            entries.insert(currency, parsed);
        }
    }
    Some(entries)
}

fn read_fees(
    ctx: &mut Context<'_>,
    value: &Value<'_>,
    section: &Section<'_, '_>,
    served: &[Currency],
) -> Option<BTreeMap<Currency, FeeSchedule>> {
    per_currency(ctx, value, section, "fees", served, |ctx, entry, currency, what| {
        let fees = Section::of(ctx, entry, what, &["fixed", "bps", "min", "max"])?;
        fees.check_keys(ctx);
        let amount = |ctx: &mut Context<'_>, key: &str, required: bool| -> Option<Option<Money>> {
            let value = if required { fees.required(ctx, key)? } else { fees.get(key).map(Some).unwrap_or(None)? };
            let money = reader::money(ctx, value, &fees.describe(key), currency, Sign::Any)?;
            if money.is_negative() {
                ctx.error(
                    value.span(),
                    format!(
                        "{} must not be negative (a negative fee is a rebate; configure it as 0)",
                        fees.describe(key)
                    ),
                );
                return None;
            }
            Some(Some(money))
        };
        let fixed = match fees.get("fixed") {
            Some(_) => amount(ctx, "fixed", true).flatten(),
            None => Some(Money::zero(currency)),
        };
        let minimum = if fees.get("min").is_some() {
            amount(ctx, "min", false).map(Some).unwrap_or(Some(None))
        } else {
            Some(None)
        };
        let maximum = if fees.get("max").is_some() {
            amount(ctx, "max", false).map(Some).unwrap_or(Some(None))
        } else {
            Some(None)
        };
        let bps_value = fees.get("bps");
        let bps = match bps_value {
            Some(value) => reader::decimal(ctx, value, &fees.describe("bps")),
            None => Some(Decimal::ZERO),
        };
        let (fixed, bps) = (fixed?, bps?);
        let minimum = minimum.flatten();
        let maximum = maximum.flatten();
        match FeeSchedule::new(fixed, bps, minimum, maximum) {
            Ok(schedule) => Some(schedule),
            Err(error) => {
                let span = match &error {
                    railyard_core::FeeError::BasisPointsRange { .. }
                    | railyard_core::FeeError::BasisPointsPrecision { .. } => {
                        bps_value.map(|value| value.span()).unwrap_or(fees.span())
                    }
                    railyard_core::FeeError::MinimumAboveMaximum { .. } => {
                        fees.get("min").map(|value| value.span()).unwrap_or(fees.span())
                    }
                    railyard_core::FeeError::NegativeFixed => {
                        fees.get("fixed").map(|value| value.span()).unwrap_or(fees.span())
                    }
                    _ => fees.span(),
                };
                ctx.error(span, format!("{}: {error}", fees.name));
                None
            }
        }
    })
}

fn read_limits(
    ctx: &mut Context<'_>,
    value: &Value<'_>,
    section: &Section<'_, '_>,
    served: &[Currency],
) -> Option<BTreeMap<Currency, PaymentLimits>> {
    per_currency(ctx, value, section, "limits", served, |ctx, entry, currency, what| {
        let limits = Section::of(ctx, entry, what, &["min", "max", "daily_cap"])?;
        limits.check_keys(ctx);
        let minimum = match limits.get("min") {
            Some(value) => reader::money(ctx, value, &limits.describe("min"), currency, Sign::Positive),
            None => Some(Money::from_minor(1, currency)),
        };
        let maximum_value = limits.required(ctx, "max");
        let maximum = maximum_value
            .and_then(|value| reader::money(ctx, value, &limits.describe("max"), currency, Sign::Positive));
        let daily_value = limits.get("daily_cap");
        let daily_cap = match daily_value {
            Some(value) => reader::money(ctx, value, &limits.describe("daily_cap"), currency, Sign::Positive).map(Some),
            None => Some(None),
        };
        let (minimum, maximum, daily_cap) = (minimum?, maximum?, daily_cap?);
        if minimum.minor_units() > maximum.minor_units() {
            let span = maximum_value.map(|value| value.span()).unwrap_or(limits.span());
            ctx.error(span, format!("{}: `max` {maximum} is below `min` {minimum}", limits.name));
            return None;
        }
        if let (Some(cap), Some(value)) = (daily_cap, daily_value)
            && cap.minor_units() < maximum.minor_units()
        {
            ctx.error(
                value.span(),
                format!("{}: `daily_cap` {cap} is below the per-payment `max` {maximum}", limits.name),
            );
            return None;
        }
        Some(PaymentLimits { minimum, maximum, daily_cap })
    })
}

fn read_rail_fx(
    ctx: &mut Context<'_>,
    value: &Value<'_>,
    section: &Section<'_, '_>,
    served: &[Currency],
) -> Option<RailFx> {
    let fx = Section::of(ctx, value, format!("[rails.fx] of {}", section.name), &["spread_bps", "rounding", "pairs"])?;
    fx.check_keys(ctx);
    let spread_bps = fx.required(ctx, "spread_bps").and_then(|value| spread(ctx, value, &fx.describe("spread_bps")));
    let rounding =
        fx.string(ctx, "rounding").and_then(|(text, span)| rounding_mode(ctx, text, span, &fx.describe("rounding")));
    let mut pairs = Vec::new();
    if let Some(value) = fx.required(ctx, "pairs") {
        for (text, span) in reader::strings(ctx, value, &fx.describe("pairs")) {
            match CurrencyPair::parse(text) {
                Ok(pair) if !served.is_empty() && !served.contains(&pair.quote) => ctx.error(
                    span,
                    format!("{}: {pair} delivers {} but the rail does not serve it", fx.describe("pairs"), pair.quote),
                ),
                Ok(pair) if !served.is_empty() && !served.contains(&pair.base) => ctx.error(
                    span,
                    format!(
                        "{}: {pair} takes {} but the rail does not serve it (its fee is charged in {})",
                        fx.describe("pairs"),
                        pair.base,
                        pair.base
                    ),
                ),
                Ok(pair) if pairs.contains(&pair) => {
                    ctx.error(span, format!("{} lists {pair} twice", fx.describe("pairs")))
                }
                Ok(pair) => pairs.push(pair),
                Err(message) => ctx.error(span, format!("{}: {message}", fx.describe("pairs"))),
            }
        }
    }
    Some(RailFx { spread_bps: spread_bps?, rounding: rounding?, pairs })
}

fn spread(ctx: &mut Context<'_>, value: &Value<'_>, what: &str) -> Option<Decimal> {
    let bps = reader::decimal(ctx, value, what)?;
    if bps < Decimal::ZERO || bps >= Decimal::from(10_000) {
        ctx.error(value.span(), format!("{what} must be at least 0 and below 10000 basis points, got {bps}"));
        return None;
    }
    if bps.normalize().scale() > FeeSchedule::BPS_SCALE_MAX {
        ctx.error(value.span(), format!("{what} has at most {} decimal places, got {bps}", FeeSchedule::BPS_SCALE_MAX));
        return None;
    }
    Some(bps)
}

fn rounding_mode(ctx: &mut Context<'_>, text: &str, span: Range<usize>, what: &str) -> Option<RoundingMode> {
    match text.parse::<RoundingMode>() {
        Ok(mode) => Some(mode),
        Err(message) => {
            ctx.error(span, format!("{what}: {message}"));
            None
        }
    }
}

fn read_hours(ctx: &mut Context<'_>, value: &Value<'_>, section: &Section<'_, '_>) -> Option<OperatingHours> {
    if let DeValue::String(text) = value.get_ref() {
        if text == "24/7" {
            return Some(OperatingHours::AlwaysOpen);
        }
        ctx.error(
            value.span(),
            format!("{} is \"24/7\" or a table with timezone and windows", section.describe("hours")),
        );
        return None;
    }
    let hours = Section::of(
        ctx,
        value,
        format!("[rails.hours] of {}", section.name),
        &["timezone", "windows", "cutoff", "holidays"],
    )?;
    hours.check_keys(ctx);
    let timezone = hours.string(ctx, "timezone").and_then(|(text, span)| match text.parse::<chrono_tz::Tz>() {
        Ok(zone) => Some(zone),
        Err(_) => {
            ctx.error(
                span,
                format!(
                    "{}: unknown time zone {text:?}; use an IANA name such as \"Europe/Berlin\"",
                    hours.describe("timezone")
                ),
            );
            None
        }
    });
    let mut windows: Vec<(Window, Range<usize>)> = Vec::new();
    let mut windows_ok = true;
    if let Some(value) = hours.required(ctx, "windows")
        && let Some(items) = reader::array(ctx, value, &hours.describe("windows"))
    {
        if items.is_empty() {
            ctx.error(value.span(), format!("{} needs at least one window (or write hours = \"24/7\")", hours.name));
            windows_ok = false;
        }
        for (index, item) in items.iter().enumerate() {
            match read_window(ctx, item, &hours, index) {
                Some(window) => windows.push((window, item.span())),
                None => windows_ok = false,
            }
        }
    }
    // Two windows that share a day must not overlap on it.
    for (later_index, (later, later_span)) in windows.iter().enumerate() {
        for (earlier_index, (earlier, _)) in windows.iter().enumerate().take(later_index) {
            if later.days.intersects(earlier.days)
                && later.open_minute < earlier.close_minute
                && earlier.open_minute < later.close_minute
            {
                let day = later
                    .days
                    .iter()
                    .find(|day| earlier.days.contains(*day))
                    .map(|day| day.to_string())
                    .unwrap_or_default();
                ctx.error(
                    later_span.clone(),
                    format!(
                        "overlapping hours in {}: window {} ({}-{}) overlaps window {} ({}-{}) on {day}",
                        hours.name,
                        later_index + 1,
                        hours::clock(later.open_minute),
                        hours::clock(later.close_minute),
                        earlier_index + 1,
                        hours::clock(earlier.open_minute),
                        hours::clock(earlier.close_minute),
                    ),
                );
                windows_ok = false;
            }
        }
    }
    let cutoff = match hours.optional_string(ctx, "cutoff") {
        Some((text, span)) => match hours::parse_clock(text) {
            Ok(minute) => Some(Some(minute)),
            Err(message) => {
                ctx.error(span, format!("{}: {message}", hours.describe("cutoff")));
                None
            }
        },
        None => Some(None),
    };
    let mut holidays = BTreeSet::new();
    if let Some(value) = hours.get("holidays") {
        for (text, span) in reader::strings(ctx, value, &hours.describe("holidays")) {
            match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
                Ok(date) => {
                    holidays.insert(date);
                }
                Err(_) => {
                    ctx.error(span, format!("{}: {text:?} is not a date; write YYYY-MM-DD", hours.describe("holidays")))
                }
            }
        }
    }
    if !windows_ok {
        return None;
    }
    Some(OperatingHours::Weekly(WeeklyHours {
        timezone: timezone?,
        windows: windows.into_iter().map(|(window, _)| window).collect(),
        cutoff_minute: cutoff?,
        holidays,
    }))
}

fn read_window(ctx: &mut Context<'_>, value: &Value<'_>, hours: &Section<'_, '_>, index: usize) -> Option<Window> {
    let window =
        Section::of(ctx, value, format!("window {} of {}", index + 1, hours.name), &["days", "open", "close"])?;
    window.check_keys(ctx);
    let days = window.string(ctx, "days").and_then(|(text, span)| match Days::parse(text) {
        Ok(days) => Some(days),
        Err(message) => {
            ctx.error(span, format!("{}: {message}", window.describe("days")));
            None
        }
    });
    let mut clock = |key: &str| {
        window.string(ctx, key).and_then(|(text, span)| match hours::parse_clock(text) {
            Ok(minute) => Some((minute, span)),
            Err(message) => {
                ctx.error(span, format!("{}: {message}", window.describe(key)));
                None
            }
        })
    };
    let open = clock("open");
    let close = clock("close");
    let ((open_minute, _), (close_minute, close_span)) = (open?, close?);
    if close_minute <= open_minute {
        ctx.error(
            close_span,
            format!(
                "{}: closes at {} before it opens at {}; split a window that crosses midnight into two",
                window.name,
                hours::clock(close_minute),
                hours::clock(open_minute)
            ),
        );
        return None;
    }
    Some(Window { days: days?, open_minute, close_minute })
}

fn read_settlement(ctx: &mut Context<'_>, value: &Value<'_>, section: &Section<'_, '_>) -> Option<Settlement> {
    let settlement = Section::of(
        ctx,
        value,
        format!("[rails.settlement] of {}", section.name),
        &["model", "delay_hours", "window_minutes"],
    )?;
    settlement.check_keys(ctx);
    let model = settlement.string(ctx, "model").and_then(|(text, span)| match text {
        "gross" => Some(SettlementModel::Gross),
        "net" => Some(SettlementModel::Net),
        _ => {
            ctx.error(span, format!("{}: expected \"gross\" or \"net\", got {text:?}", settlement.describe("model")));
            None
        }
    });
    let delay_hours = match settlement.get("delay_hours") {
        Some(value) => reader::integer(ctx, value, &settlement.describe("delay_hours"), 0..=24 * 14),
        None => Some(0),
    };
    let window_value = settlement.get("window_minutes");
    let window_minutes = match window_value {
        Some(value) => reader::integer(ctx, value, &settlement.describe("window_minutes"), 1..=24 * 60 * 7),
        None => Some(0),
    };
    let model = model?;
    if model == SettlementModel::Net && window_value.is_none() {
        ctx.error(settlement.span(), format!("{}: net settlement needs `window_minutes`", settlement.name));
        return None;
    }
    Some(Settlement { model, delay_hours: delay_hours? as u32, window_minutes: window_minutes? as u32 })
}

const FX_PROVIDER_KEYS: &[&str] = &[
    "id",
    "name",
    "pairs",
    "spread_bps",
    "pair_spreads",
    "fixed_rates",
    "quote_ttl_seconds",
    "rounding",
    "latency_ms",
    "availability",
];

/// A quote may stay locked at most this long; longer locks are free options for the counterparty.
pub const QUOTE_TTL_SECONDS_MAX: i64 = 3_600;

fn read_fx_provider(ctx: &mut Context<'_>, value: &Value<'_>, index: usize) -> Option<FxProviderConfig> {
    let name = match value.get_ref() {
        DeValue::Table(table) => entry_name(table, "fx_providers", index),
        _ => format!("[[fx_providers]] #{}", index + 1),
    };
    let section = Section::of(ctx, value, name, FX_PROVIDER_KEYS)?;
    section.check_keys(ctx);
    let id = identifier(ctx, &section);
    let display_name = section.optional_string(ctx, "name").map(|(text, _)| text.to_string());
    let mut pairs: Vec<CurrencyPair> = Vec::new();
    let mut pairs_ok = true;
    if let Some(value) = section.required(ctx, "pairs") {
        let what = section.describe("pairs");
        for (text, span) in reader::strings(ctx, value, &what) {
            match CurrencyPair::parse(text) {
                Ok(pair) if pairs.contains(&pair) || pairs.contains(&pair.reversed()) => {
                    ctx.error(span, format!("{what} lists {pair} twice (a pair is quoted both ways)"));
                }
                Ok(pair) => pairs.push(pair),
                Err(message) => {
                    ctx.error(span, format!("{what}: {message}"));
                    pairs_ok = false;
                }
            }
        }
        if pairs.is_empty() && pairs_ok {
            ctx.error(value.span(), format!("{} quotes no pair", section.name));
            pairs_ok = false;
        }
    } else {
        pairs_ok = false;
    }
    let spread_bps =
        section.required(ctx, "spread_bps").and_then(|value| spread(ctx, value, &section.describe("spread_bps")));
    let mut pair_spreads = BTreeMap::new();
    if let Some(value) = section.get("pair_spreads") {
        match value.get_ref() {
            DeValue::Table(table) => {
                for (key, entry) in table.iter() {
                    let what = format!("`pair_spreads.\"{}\"` in {}", key.get_ref(), section.name);
                    match CurrencyPair::parse(key.get_ref()) {
                        Ok(pair) if !pairs.contains(&pair) && !pairs.contains(&pair.reversed()) => {
                            ctx.error(key.span(), format!("{what}: {pair} is not in `pairs`"));
                        }
                        Ok(pair) => {
                            if let Some(bps) = spread(ctx, entry, &what) {
                                pair_spreads.insert(pair, bps);
                            }
                        }
                        Err(message) => ctx.error(key.span(), format!("{what}: {message}")),
                    }
                }
            }
            other => ctx.error(
                value.span(),
                format!(
                    "{} must be a table such as {{ \"USD/BRL\" = \"60\" }}, found {}",
                    section.describe("pair_spreads"),
                    other.type_str()
                ),
            ),
        }
    }
    let mut fixed_rates = BTreeMap::new();
    if let Some(value) = section.get("fixed_rates") {
        match value.get_ref() {
            DeValue::Table(table) => {
                for (key, entry) in table.iter() {
                    let what = format!("`fixed_rates.\"{}\"` in {}", key.get_ref(), section.name);
                    match CurrencyPair::parse(key.get_ref()) {
                        Ok(pair) if !pairs.contains(&pair) && !pairs.contains(&pair.reversed()) => {
                            ctx.error(key.span(), format!("{what}: {pair} is not in `pairs`"));
                        }
                        Ok(pair) if fixed_rates.contains_key(&pair.reversed()) => {
                            ctx.error(key.span(), format!("{what}: {} already has a fixed rate", pair.reversed()));
                        }
                        Ok(pair) => match reader::decimal(ctx, entry, &what) {
                            Some(rate) if rate > Decimal::ZERO => {
                                fixed_rates.insert(pair, rate);
                            }
                            Some(_) => ctx.error(entry.span(), format!("{what} must be greater than zero")),
                            None => {}
                        },
                        Err(message) => ctx.error(key.span(), format!("{what}: {message}")),
                    }
                }
            }
            other => ctx.error(
                value.span(),
                format!(
                    "{} must be a table such as {{ \"USD/BRL\" = \"5.41\" }}, found {}",
                    section.describe("fixed_rates"),
                    other.type_str()
                ),
            ),
        }
    }
    let quote_ttl_seconds = section.required(ctx, "quote_ttl_seconds").and_then(|value| {
        reader::integer(ctx, value, &section.describe("quote_ttl_seconds"), 1..=QUOTE_TTL_SECONDS_MAX)
    });
    let rounding = section
        .string(ctx, "rounding")
        .and_then(|(text, span)| rounding_mode(ctx, text, span, &section.describe("rounding")));
    let latency_ms = match section.get("latency_ms") {
        Some(value) => reader::integer(ctx, value, &section.describe("latency_ms"), 0..=3_600_000),
        None => Some(50),
    };
    let availability = match section.get("availability") {
        Some(value) => probability(ctx, value, &section, "availability"),
        None => Some(Decimal::new(999, 3)),
    };
    let id = id?;
    if !pairs_ok {
        return None;
    }
    Some(FxProviderConfig {
        name: display_name.unwrap_or_else(|| id.to_string()),
        id,
        pairs,
        spread_bps: spread_bps?,
        pair_spreads,
        fixed_rates,
        quote_ttl_seconds: quote_ttl_seconds? as u32,
        rounding: rounding?,
        latency_ms: latency_ms? as u32,
        availability: availability?,
        origin: ctx.origin(&section.span()),
    })
}

fn declared_ids(top: &Section<'_, '_>, key: &str) -> Vec<String> {
    let Some(DeValue::Array(items)) = top.get(key).map(|value| value.get_ref()) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| item.get_ref().get("id").and_then(|id| id.get_ref().as_str()).map(str::to_string))
        .collect()
}

/// Resolves a rail reference. `None` without a message when the rail exists but is itself invalid.
fn rail_reference<'r>(
    ctx: &mut Context<'_>,
    text: &str,
    span: Range<usize>,
    what: &str,
    rails: &'r [RailConfig],
    declared: &[String],
) -> Option<&'r RailConfig> {
    if let Some(rail) = rails.iter().find(|rail| rail.id.as_str() == text) {
        return Some(rail);
    }
    if !declared.iter().any(|id| id == text) {
        ctx.error(span, format!("{what}: no rail has id {text:?} (known: {})", declared.join(", ")));
    }
    None
}

fn read_liquidity(
    ctx: &mut Context<'_>,
    value: &Value<'_>,
    index: usize,
    rails: &[RailConfig],
    declared: &[String],
) -> Option<(LiquidityConfig, Range<usize>)> {
    let section = Section::of(
        ctx,
        value,
        format!("[[liquidity]] #{}", index + 1),
        &["rail", "currency", "prefunded", "low_water", "high_water"],
    )?;
    section.check_keys(ctx);
    let rail = section
        .string(ctx, "rail")
        .and_then(|(text, span)| rail_reference(ctx, text, span, &section.describe("rail"), rails, declared));
    let currency = section.string(ctx, "currency").and_then(|(code, span)| {
        let currency = reader::currency(ctx, code, span.clone(), &section.describe("currency"))?;
        if let Some(rail) = rail
            && !rail.serves(currency)
        {
            ctx.error(span, format!("{}: rail {} does not serve {currency}", section.describe("currency"), rail.id));
            return None;
        }
        Some(currency)
    });
    let (rail, currency) = (rail?, currency?);
    let amount = |ctx: &mut Context<'_>, key: &str, required: bool| -> Option<Option<Money>> {
        let value = if required { section.required(ctx, key)? } else { section.get(key).map(Some).unwrap_or(None)? };
        reader::money(ctx, value, &section.describe(key), currency, Sign::NonNegative).map(Some)
    };
    let prefunded = amount(ctx, "prefunded", true).flatten();
    let low_water = amount(ctx, "low_water", true).flatten();
    let high_water = if section.get("high_water").is_some() { amount(ctx, "high_water", false) } else { Some(None) };
    let (prefunded, low_water, high_water) = (prefunded?, low_water?, high_water?);
    if let Some(high) = high_water
        && high.minor_units() <= low_water.minor_units()
    {
        let span = section.get("high_water").map(|value| value.span()).unwrap_or(section.span());
        ctx.error(span, format!("{}: `high_water` {high} must be above `low_water` {low_water}", section.name));
        return None;
    }
    Some((LiquidityConfig { rail: rail.id.clone(), currency, prefunded, low_water, high_water }, section.span()))
}

fn check_liquidity_coverage(
    ctx: &mut Context<'_>,
    rails: &[(RailConfig, Range<usize>)],
    liquidity: &[(LiquidityConfig, Range<usize>)],
) {
    let mut seen: HashMap<(String, Currency), ()> = HashMap::new();
    for (account, span) in liquidity {
        if seen.insert((account.rail.to_string(), account.currency), ()).is_some() {
            ctx.error(
                span.clone(),
                format!("liquidity for rail {} in {} is configured twice", account.rail, account.currency),
            );
        }
    }
    for (rail, span) in rails {
        for currency in &rail.currencies {
            if !seen.contains_key(&(rail.id.to_string(), *currency)) {
                ctx.error(
                    span.clone(),
                    format!(
                        "rail {} serves {currency} but has no [[liquidity]] entry for it (its prefunded account)",
                        rail.id
                    ),
                );
            }
        }
    }
}

const TENANT_KEYS: &[&str] = &["id", "name", "webhook_url", "keys"];

fn read_tenant(ctx: &mut Context<'_>, value: &Value<'_>, index: usize) -> Option<TenantConfig> {
    let name = match value.get_ref() {
        DeValue::Table(table) => entry_name(table, "tenants", index),
        _ => format!("[[tenants]] #{}", index + 1),
    };
    let section = Section::of(ctx, value, name, TENANT_KEYS)?;
    section.check_keys(ctx);
    let id = identifier(ctx, &section);
    let display_name = section.optional_string(ctx, "name").map(|(text, _)| text.to_string());
    let webhook_url = section.optional_string(ctx, "webhook_url").and_then(|(text, span)| {
        if text.starts_with("http://") || text.starts_with("https://") {
            Some(text.to_string())
        } else {
            ctx.error(span, format!("{} must be an http:// or https:// URL", section.describe("webhook_url")));
            None
        }
    });
    let mut keys = Vec::new();
    if let Some(value) = section.required(ctx, "keys")
        && let Some(items) = reader::array(ctx, value, &section.describe("keys"))
    {
        for (index, item) in items.iter().enumerate() {
            let Some(key) =
                Section::of(ctx, item, format!("key {} of {}", index + 1, section.name), &["id", "sha256", "scopes"])
            else {
                continue;
            };
            key.check_keys(ctx);
            let key_id = identifier(ctx, &key);
            let sha256 = key.string(ctx, "sha256").and_then(|(text, span)| match decode_sha256(text) {
                Some(digest) => Some(digest),
                None => {
                    ctx.error(
                        span,
                        format!(
                            "{}: expected 64 lower-case hex digits (the SHA-256 of the key)",
                            key.describe("sha256")
                        ),
                    );
                    None
                }
            });
            let mut scopes = Vec::new();
            if let Some(value) = key.required(ctx, "scopes") {
                for (text, span) in reader::strings(ctx, value, &key.describe("scopes")) {
                    match Scope::parse(text) {
                        Some(scope) if !scopes.contains(&scope) => scopes.push(scope),
                        Some(scope) => {
                            ctx.error(span, format!("{} lists {} twice", key.describe("scopes"), scope.name()))
                        }
                        None => ctx.error(
                            span,
                            format!(
                                "{}: unknown scope {text:?}; expected psp, treasury, admin or approver",
                                key.describe("scopes")
                            ),
                        ),
                    }
                }
                if scopes.is_empty() {
                    ctx.error(value.span(), format!("{} grants no scope", key.name));
                }
            }
            if let (Some(id), Some(sha256)) = (key_id, sha256) {
                keys.push(ApiKeyConfig { id, sha256, scopes });
            }
        }
    }
    Some(TenantConfig { name: display_name.unwrap_or_default(), id: id?, webhook_url, keys })
}

fn decode_sha256(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut digest = [0_u8; 32];
    for (index, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(digest)
}

fn check_keys_unique(ctx: &mut Context<'_>, top: &Section<'_, '_>) {
    // Two keys with one hash would make authentication ambiguous; two key ids would make audit ambiguous.
    let Some(DeValue::Array(tenants)) = top.get("tenants").map(|value| value.get_ref()) else {
        return;
    };
    let mut ids: HashMap<String, ()> = HashMap::new();
    let mut hashes: HashMap<String, ()> = HashMap::new();
    for tenant in tenants.iter() {
        let Some(DeValue::Array(keys)) = tenant.get_ref().get("keys").map(|value| value.get_ref()) else {
            continue;
        };
        for key in keys.iter() {
            if let Some(id) = key.get_ref().get("id")
                && let Some(text) = id.get_ref().as_str()
                && ids.insert(text.to_string(), ()).is_some()
            {
                ctx.error(id.span(), format!("API key id {text:?} is used twice"));
            }
            if let Some(hash) = key.get_ref().get("sha256")
                && let Some(text) = hash.get_ref().as_str()
                && hashes.insert(text.to_string(), ()).is_some()
            {
                ctx.error(hash.span(), "two API keys have the same sha256: each key must be unique");
            }
        }
    }
}

fn check_unique_ids(ctx: &mut Context<'_>, top: &Section<'_, '_>, key: &str) {
    let Some(DeValue::Array(items)) = top.get(key).map(|value| value.get_ref()) else {
        return;
    };
    let mut seen: HashSet<String> = HashSet::new();
    for item in items.iter() {
        if let Some(id) = item.get_ref().get("id")
            && let Some(text) = id.get_ref().as_str()
            && !seen.insert(text.to_string())
        {
            ctx.error(id.span(), format!("[[{key}]] id {text:?} is used twice"));
        }
    }
}

fn read_corridor(
    ctx: &mut Context<'_>,
    value: &Value<'_>,
    index: usize,
    rails: &[RailConfig],
    declared: &[String],
) -> Option<CorridorRule> {
    let section = Section::of(
        ctx,
        value,
        format!("[[corridors]] #{}", index + 1),
        &["from", "to", "country", "action", "rails", "reason"],
    )?;
    section.check_keys(ctx);
    let currency_match = |ctx: &mut Context<'_>, key: &str| -> Option<CurrencyMatch> {
        let (text, span) = section.string(ctx, key)?;
        if text == "*" {
            return Some(CurrencyMatch::Any);
        }
        reader::currency(ctx, text, span, &section.describe(key)).map(CurrencyMatch::Only)
    };
    let source = currency_match(ctx, "from");
    let destination = currency_match(ctx, "to");
    let country = match section.optional_string(ctx, "country") {
        Some((text, span)) => match Country::from_code(text) {
            Ok(country) => Some(Some(country)),
            Err(error) => {
                ctx.error(span, format!("{}: {error}", section.describe("country")));
                None
            }
        },
        None => Some(None),
    };
    let action = section.string(ctx, "action").and_then(|(text, span)| match text {
        "deny" => {
            if section.get("rails").is_some() {
                ctx.error(span, format!("{}: a deny rule takes no `rails`", section.name));
                return None;
            }
            Some(CorridorAction::Deny)
        }
        "restrict" => {
            let value = section.required(ctx, "rails")?;
            let mut allowed = Vec::new();
            let what = section.describe("rails");
            let listed = reader::strings(ctx, value, &what);
            if listed.is_empty() {
                ctx.error(value.span(), format!("{}: a restrict rule needs at least one rail", section.name));
                return None;
            }
            for (id, span) in listed {
                if let Some(rail) = rail_reference(ctx, id, span, &what, rails, declared) {
                    allowed.push(rail.id.clone());
                }
            }
            if allowed.is_empty() {
                return None;
            }
            Some(CorridorAction::RestrictRails(allowed))
        }
        _ => {
            ctx.error(span, format!("{}: expected \"deny\" or \"restrict\", got {text:?}", section.describe("action")));
            None
        }
    });
    let reason = section.string(ctx, "reason").map(|(text, _)| text.to_string());
    Some(CorridorRule {
        source: source?,
        destination: destination?,
        country: country?,
        action: action?,
        reason: reason?,
        origin: ctx.origin(&section.span()),
    })
}

const RISK_KEYS: &[&str] = &[
    "sanctions_list",
    "screening_threshold",
    "screening_watch",
    "approval_score",
    "block_score",
    "approval_amount",
    "approval_expiry_minutes",
    "high_risk_countries",
    "scores",
    "limits",
];
const RISK_SCORE_KEYS: &[&str] =
    &["new_beneficiary", "unusual_amount", "beneficiary_velocity", "high_risk_corridor", "screening_near"];
const RISK_LIMIT_KEYS: &[&str] = &[
    "psp_payouts_per_hour",
    "corridor_payouts_per_hour",
    "beneficiary_payouts_per_day",
    "history_min",
    "unusual_amount_multiple",
    "psp_daily_amount",
    "corridor_daily_amount",
];

/// Scores are points out of this.
pub const RISK_SCORE_MAX: i64 = 100;

fn read_risk(ctx: &mut Context<'_>, value: &Value<'_>) -> Option<RiskConfig> {
    let section = Section::of(ctx, value, "[risk]".into(), RISK_KEYS)?;
    section.check_keys(ctx);
    let sanctions_list = section.string(ctx, "sanctions_list").map(|(path, _)| PathBuf::from(path));
    let similarity = |ctx: &mut Context<'_>, key: &str| -> Option<Decimal> {
        let value = section.required(ctx, key)?;
        let number = reader::decimal(ctx, value, &section.describe(key))?;
        if number <= Decimal::ZERO || number > Decimal::ONE {
            ctx.error(value.span(), format!("{} must be a similarity above 0 and at most 1", section.describe(key)));
            return None;
        }
        Some(number)
    };
    let screening_threshold = similarity(ctx, "screening_threshold");
    let screening_watch = similarity(ctx, "screening_watch");
    if let (Some(threshold), Some(watch)) = (screening_threshold, screening_watch)
        && watch > threshold
    {
        let span = section.get("screening_watch").map(|value| value.span()).unwrap_or(section.span());
        ctx.error(span, format!("`screening_watch` {watch} must not be above `screening_threshold` {threshold}"));
    }
    let points = |ctx: &mut Context<'_>, section: &Section<'_, '_>, key: &str| -> Option<u32> {
        let value = section.required(ctx, key)?;
        reader::integer(ctx, value, &section.describe(key), 0..=RISK_SCORE_MAX).and_then(|n| u32::try_from(n).ok())
    };
    let approval_score = points(ctx, &section, "approval_score");
    let block_score = points(ctx, &section, "block_score");
    if let (Some(approval), Some(block)) = (approval_score, block_score)
        && approval >= block
    {
        let span = section.get("block_score").map(|value| value.span()).unwrap_or(section.span());
        ctx.error(span, format!("`block_score` {block} must be above `approval_score` {approval}"));
    }
    let amounts = |ctx: &mut Context<'_>, section: &Section<'_, '_>, key: &str| -> Option<BTreeMap<Currency, Money>> {
        let Some(value) = section.get(key) else {
            return Some(BTreeMap::new());
        };
        per_currency(ctx, value, section, key, &[], |ctx, entry, currency, what| {
            reader::money(ctx, entry, &what, currency, Sign::Positive)
        })
    };
    let approval_amount = amounts(ctx, &section, "approval_amount");
    let approval_expiry_minutes = section.required(ctx, "approval_expiry_minutes").and_then(|value| {
        reader::integer(ctx, value, &section.describe("approval_expiry_minutes"), 1..=43_200)
            .and_then(|n| u32::try_from(n).ok())
    });
    let mut high_risk_countries = Vec::new();
    if let Some(value) = section.get("high_risk_countries") {
        let what = section.describe("high_risk_countries");
        for (code, span) in reader::strings(ctx, value, &what) {
            match Country::from_code(code) {
                Ok(country) if high_risk_countries.contains(&country) => {
                    ctx.error(span, format!("{what} lists {country} twice"))
                }
                Ok(country) => high_risk_countries.push(country),
                Err(error) => ctx.error(span, format!("{what}: {error}")),
            }
        }
    }
    let scores = section.required(ctx, "scores").and_then(|value| {
        let scores = Section::of(ctx, value, "[risk.scores]".into(), RISK_SCORE_KEYS)?;
        scores.check_keys(ctx);
        Some(RiskScores {
            new_beneficiary: points(ctx, &scores, "new_beneficiary")?,
            unusual_amount: points(ctx, &scores, "unusual_amount")?,
            beneficiary_velocity: points(ctx, &scores, "beneficiary_velocity")?,
            high_risk_corridor: points(ctx, &scores, "high_risk_corridor")?,
            screening_near: points(ctx, &scores, "screening_near")?,
        })
    });
    let limits = section.required(ctx, "limits").and_then(|value| {
        let limits = Section::of(ctx, value, "[risk.limits]".into(), RISK_LIMIT_KEYS)?;
        limits.check_keys(ctx);
        let count = |ctx: &mut Context<'_>, key: &str| -> Option<u64> {
            let value = limits.required(ctx, key)?;
            reader::integer(ctx, value, &limits.describe(key), 1..=i64::from(u32::MAX))
                .and_then(|n| u64::try_from(n).ok())
        };
        let psp_payouts_per_hour = count(ctx, "psp_payouts_per_hour");
        let corridor_payouts_per_hour = count(ctx, "corridor_payouts_per_hour");
        let beneficiary_payouts_per_day = count(ctx, "beneficiary_payouts_per_day");
        let history_min = count(ctx, "history_min");
        let unusual_amount_multiple = limits.required(ctx, "unusual_amount_multiple").and_then(|value| {
            let multiple = reader::decimal(ctx, value, &limits.describe("unusual_amount_multiple"))?;
            if multiple <= Decimal::ONE {
                ctx.error(value.span(), format!("{} must be above 1", limits.describe("unusual_amount_multiple")));
                return None;
            }
            Some(multiple)
        });
        let psp_daily_amount = amounts(ctx, &limits, "psp_daily_amount");
        let corridor_daily_amount = amounts(ctx, &limits, "corridor_daily_amount");
        Some(RiskLimits {
            psp_payouts_per_hour: psp_payouts_per_hour?,
            corridor_payouts_per_hour: corridor_payouts_per_hour?,
            beneficiary_payouts_per_day: beneficiary_payouts_per_day?,
            history_min: history_min?,
            unusual_amount_multiple: unusual_amount_multiple?,
            psp_daily_amount: psp_daily_amount?,
            corridor_daily_amount: corridor_daily_amount?,
        })
    });
    Some(RiskConfig {
        sanctions_list: sanctions_list?,
        screening_threshold: screening_threshold?,
        screening_watch: screening_watch?,
        approval_score: approval_score?,
        block_score: block_score?,
        approval_amount: approval_amount?,
        approval_expiry_minutes: approval_expiry_minutes?,
        high_risk_countries,
        scores: scores?,
        limits: limits?,
    })
}
