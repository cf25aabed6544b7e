//! The validated treasury configuration.
//!
//! Every value here has passed the checks in `parse.rs`: currencies have exponents, amounts are in the
//! right currency and scale, references between sections resolve. Other crates read these types and
//! never re-validate them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use railyard_core::{Country, Currency, Decimal, FeeSchedule, Money, RoundingMode};
use serde::Serialize;

use crate::hours::OperatingHours;

/// Where an item was written, for messages about it that are found after parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Origin {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// The whole treasury configuration.
#[derive(Debug, Clone)]
pub struct TreasuryConfig {
    pub fx: FxSettings,
    pub routing: RoutingSettings,
    pub rails: Vec<RailConfig>,
    pub fx_providers: Vec<FxProviderConfig>,
    pub liquidity: Vec<LiquidityConfig>,
    pub tenants: Vec<TenantConfig>,
    pub corridors: Vec<CorridorRule>,
    /// Screening, scoring and approval rules; `None` when the file has no `[risk]` section (every
    /// payout is then approved without screening, and says so in its assessment).
    pub risk: Option<RiskConfig>,
}

impl TreasuryConfig {
    pub fn rail(&self, id: &str) -> Option<&RailConfig> {
        self.rails.iter().find(|rail| rail.id.as_str() == id)
    }

    pub fn fx_provider(&self, id: &str) -> Option<&FxProviderConfig> {
        self.fx_providers.iter().find(|provider| provider.id.as_str() == id)
    }

    pub fn liquidity_for(&self, rail: &str, currency: Currency) -> Option<&LiquidityConfig> {
        self.liquidity.iter().find(|account| account.rail.as_str() == rail && account.currency == currency)
    }

    /// Every currency a rail or FX provider mentions, sorted.
    pub fn currencies(&self) -> Vec<Currency> {
        let mut all: Vec<Currency> = self
            .rails
            .iter()
            .flat_map(|rail| rail.currencies.iter().copied())
            .chain(
                self.fx_providers
                    .iter()
                    .flat_map(|provider| provider.pairs.iter().flat_map(|pair| [pair.base, pair.quote])),
            )
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

/// Where reference rates come from.
#[derive(Debug, Clone, Default)]
pub struct FxSettings {
    /// An ECB CSV file (daily or historical, CSV or zip), resolved against the configuration file's
    /// folder. `None` means the ECB rates bundled with Railyard.
    pub rates_file: Option<PathBuf>,
}

/// The treasury's routing objective and hard limits.
#[derive(Debug, Clone, Serialize)]
pub struct RoutingSettings {
    /// The currency the latency and risk weights are expressed in.
    pub reference_currency: Currency,
    /// Multiplier on the money cost of a route (dimensionless).
    pub cost_weight: Decimal,
    /// Reference-currency units one second of expected latency is worth.
    pub latency_weight_per_second: Decimal,
    /// Reference-currency units one unit of risk (−ln of success probability) is worth.
    pub risk_weight: Decimal,
    pub max_hops: u32,
    /// Routes whose total cost exceeds this share of the amount are refused.
    pub max_total_fee_bps: Option<Decimal>,
}

/// A rail identifier: lower-case letters, digits and '-', 1 to 40 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Identifier(String);

impl Identifier {
    pub const LENGTH_MAX: usize = 40;

    pub fn new(text: &str) -> Result<Identifier, String> {
        let valid = !text.is_empty()
            && text.len() <= Identifier::LENGTH_MAX
            && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !text.starts_with('-');
        if valid {
            Ok(Identifier(text.to_string()))
        } else {
            Err(format!(
                "{text:?} is not a valid id; use 1 to {} lower-case letters, digits and '-'",
                Identifier::LENGTH_MAX
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The three kinds of rail Railyard speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RailKind {
    /// Push-to-card networks (Visa Direct, Mastercard Send).
    Card,
    /// Instant credit transfers speaking ISO 20022 (RTP, SEPA Instant).
    Instant,
    /// Central-bank digital currency or token networks.
    Cbdc,
}

impl RailKind {
    pub const ALL: [RailKind; 3] = [RailKind::Card, RailKind::Instant, RailKind::Cbdc];

    pub fn name(self) -> &'static str {
        match self {
            RailKind::Card => "card",
            RailKind::Instant => "instant",
            RailKind::Cbdc => "cbdc",
        }
    }

    pub fn parse(text: &str) -> Option<RailKind> {
        RailKind::ALL.into_iter().find(|kind| kind.name() == text)
    }

    /// How long Railyard waits for a rail's answer when the configuration does not say.
    pub fn default_timeout_ms(self) -> u32 {
        match self {
            RailKind::Card => 10_000,
            RailKind::Instant => 20_000,
            RailKind::Cbdc => 5_000,
        }
    }
}

impl fmt::Display for RailKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One rail connector instance.
#[derive(Debug, Clone)]
pub struct RailConfig {
    pub id: Identifier,
    pub name: String,
    pub kind: RailKind,
    pub currencies: Vec<Currency>,
    pub countries: Vec<Country>,
    /// One fee schedule per served currency, charged in that currency on the amount the leg carries.
    pub fees: BTreeMap<Currency, FeeSchedule>,
    /// Per-payment and daily limits per currency; a currency without an entry has none.
    pub limits: BTreeMap<Currency, PaymentLimits>,
    /// Conversion the network itself offers (card network FX, CBDC payment-versus-payment).
    pub fx: Option<RailFx>,
    pub hours: OperatingHours,
    pub settlement: Settlement,
    pub latency_ms_prior: u32,
    /// Probability that a submitted leg executes, before any observation; in (0, 1].
    pub availability_prior: Decimal,
    /// How long Railyard waits for the rail's answer before the outcome is Unknown.
    pub timeout_ms: u32,
    /// A rail running in another process (`railyard sandbox ... --listen`); `None` runs it in process.
    pub endpoint: Option<String>,
    /// A JSON fault plan (latency, rejects, lost replies, outages ...) for this rail's in-process
    /// sandbox, resolved against the configuration file's folder.
    pub sandbox_faults: Option<PathBuf>,
    pub origin: Origin,
}

impl RailConfig {
    pub fn serves(&self, currency: Currency) -> bool {
        self.currencies.contains(&currency)
    }
}

/// Per-payment bounds and a daily cap, in one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PaymentLimits {
    pub minimum: Money,
    pub maximum: Money,
    pub daily_cap: Option<Money>,
}

/// Conversions a rail performs in-network.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RailFx {
    pub spread_bps: Decimal,
    pub rounding: RoundingMode,
    /// (from, to): the rail takes `from` and delivers `to`.
    pub pairs: Vec<CurrencyPair>,
}

/// How a rail's payouts are settled with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Settlement {
    pub model: SettlementModel,
    /// Hours between execution and settlement (card networks: 24, T+1).
    pub delay_hours: u32,
    /// For net settlement, how long a window collects payouts.
    pub window_minutes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SettlementModel {
    Gross,
    Net,
}

/// An ordered pair of currencies, written "USD/BRL".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct CurrencyPair {
    pub base: Currency,
    pub quote: Currency,
}

impl CurrencyPair {
    pub fn parse(text: &str) -> Result<CurrencyPair, String> {
        let (base, quote) =
            text.split_once('/').ok_or_else(|| format!("{text:?} is not a currency pair; write it as \"USD/BRL\""))?;
        let base = Currency::from_code(base).map_err(|error| error.to_string())?;
        let quote = Currency::from_code(quote).map_err(|error| error.to_string())?;
        if base == quote {
            return Err(format!("{text:?} converts a currency to itself"));
        }
        Ok(CurrencyPair { base, quote })
    }

    pub fn reversed(self) -> CurrencyPair {
        CurrencyPair { base: self.quote, quote: self.base }
    }
}

impl fmt::Display for CurrencyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.quote)
    }
}

/// A foreign-exchange provider: quotes pairs (both directions) off reference rates with a spread.
#[derive(Debug, Clone)]
pub struct FxProviderConfig {
    pub id: Identifier,
    pub name: String,
    /// Pairs quoted in both directions.
    pub pairs: Vec<CurrencyPair>,
    /// Spread in basis points when `pair_spreads` has no entry for the pair (either direction).
    pub spread_bps: Decimal,
    pub pair_spreads: BTreeMap<CurrencyPair, Decimal>,
    /// The provider's own mid rates for some pairs (units of quote per unit of base), used instead of
    /// the reference rate; the reverse direction uses the inverse.
    pub fixed_rates: BTreeMap<CurrencyPair, Decimal>,
    pub quote_ttl_seconds: u32,
    pub rounding: RoundingMode,
    pub latency_ms: u32,
    pub availability: Decimal,
    pub origin: Origin,
}

impl FxProviderConfig {
    /// The spread that applies to converting `base` into `quote`.
    pub fn spread_for(&self, base: Currency, quote: Currency) -> Decimal {
        let pair = CurrencyPair { base, quote };
        self.pair_spreads
            .get(&pair)
            .or_else(|| self.pair_spreads.get(&pair.reversed()))
            .copied()
            .unwrap_or(self.spread_bps)
    }

    pub fn quotes(&self, base: Currency, quote: Currency) -> bool {
        let pair = CurrencyPair { base, quote };
        self.pairs.contains(&pair) || self.pairs.contains(&pair.reversed())
    }
}

/// A prefunded (nostro) account of a rail in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiquidityConfig {
    pub rail: Identifier,
    pub currency: Currency,
    pub prefunded: Money,
    pub low_water: Money,
    pub high_water: Option<Money>,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Quote and submit payouts, read its own.
    Psp,
    /// Change rail costs, spreads, limits, weights; read and top up liquidity.
    Treasury,
    /// Manage keys and tenants, operate kill switches.
    Admin,
    /// Approve or reject payouts held for a second person.
    Approver,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Psp, Scope::Treasury, Scope::Admin, Scope::Approver];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Psp => "psp",
            Scope::Treasury => "treasury",
            Scope::Admin => "admin",
            Scope::Approver => "approver",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.name() == text)
    }
}

/// A tenant: a PSP, or the house's own treasury and risk teams.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub id: Identifier,
    pub name: String,
    pub webhook_url: Option<String>,
    pub keys: Vec<ApiKeyConfig>,
}

/// An API key, known only by the SHA-256 of its text.
///
/// Keys are random tokens with at least 128 bits of entropy, so a fast hash is enough: slow hashes
/// protect low-entropy passwords, and would cost every API request tens of milliseconds.
#[derive(Debug, Clone)]
pub struct ApiKeyConfig {
    pub id: Identifier,
    pub sha256: [u8; 32],
    pub scopes: Vec<Scope>,
}

/// A currency in a corridor rule, or any currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CurrencyMatch {
    Any,
    Only(Currency),
}

impl CurrencyMatch {
    pub fn matches(self, currency: Currency) -> bool {
        match self {
            CurrencyMatch::Any => true,
            CurrencyMatch::Only(only) => only == currency,
        }
    }
}

/// What a corridor rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CorridorAction {
    /// No route is offered.
    Deny,
    /// Only the listed rails may deliver.
    RestrictRails(Vec<Identifier>),
}

/// A rule on a corridor (source currency → destination currency, optionally a destination country).
/// Any matching deny rule closes the corridor, wherever it is written; otherwise the first matching
/// restrict rule limits the rails that may deliver.
#[derive(Debug, Clone, Serialize)]
pub struct CorridorRule {
    pub source: CurrencyMatch,
    pub destination: CurrencyMatch,
    pub country: Option<Country>,
    pub action: CorridorAction,
    pub reason: String,
    pub origin: Origin,
}

/// `[risk]`: sanctions screening, the explainable risk score, limits and four-eyes approval.
///
/// Amount thresholds and limits are per currency of the payout's amount (the send amount, or the
/// amount to deliver for a deliver-exact payout); a currency without an entry has no such limit.
#[derive(Debug, Clone)]
pub struct RiskConfig {
    /// The sanctions list (CSV: name, aliases, country, program), resolved beside the file.
    pub sanctions_list: PathBuf,
    /// Name similarity (Jaro-Winkler, 0..1) at or above which a payout is held for review.
    pub screening_threshold: Decimal,
    /// Similarity at or above which (and below the threshold) a name adds `scores.screening_near`.
    pub screening_watch: Decimal,
    /// Scores at or above wait for a second person.
    pub approval_score: u32,
    /// Scores at or above are refused.
    pub block_score: u32,
    /// Amounts at or above wait for a second person, per currency.
    pub approval_amount: BTreeMap<Currency, Money>,
    /// How long a held payout waits for a decision before it fails.
    pub approval_expiry_minutes: u32,
    /// Destination countries that add `scores.high_risk_corridor`.
    pub high_risk_countries: Vec<Country>,
    pub scores: RiskScores,
    pub limits: RiskLimits,
}

/// Points each rule adds to a payout's risk score (`[risk.scores]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiskScores {
    /// The tenant has never paid this beneficiary account before.
    pub new_beneficiary: u32,
    /// The amount is at least `unusual_amount_multiple` times the tenant's mean in its currency.
    pub unusual_amount: u32,
    /// More than `beneficiary_payouts_per_day` payouts to one beneficiary account in a day.
    pub beneficiary_velocity: u32,
    /// The destination country is listed in `high_risk_countries`.
    pub high_risk_corridor: u32,
    /// A name is similar to a sanctioned one (at or above `screening_watch`) but below the threshold.
    pub screening_near: u32,
}

/// Hard limits (`[risk.limits]`): a payout over one is blocked, naming the limit.
#[derive(Debug, Clone)]
pub struct RiskLimits {
    pub psp_payouts_per_hour: u64,
    pub corridor_payouts_per_hour: u64,
    pub beneficiary_payouts_per_day: u64,
    /// The tenant's history needs at least this many payouts before `unusual_amount` applies.
    pub history_min: u64,
    pub unusual_amount_multiple: Decimal,
    /// Per currency: most a tenant may pay out in a day.
    pub psp_daily_amount: BTreeMap<Currency, Money>,
    /// Per currency: most one corridor (source → destination currency) may carry in a day.
    pub corridor_daily_amount: BTreeMap<Currency, Money>,
}
