//! The treasury configuration's rails, as sandbox networks and as registered connectors.
//!
//! Every rail in the configuration gets a sandbox of its kind (instant: ISO 20022; card: the card
//! network; cbdc: the token platform) seeded from the configuration: its currencies, limits, fees,
//! in-network FX (ECB mids with the configured spread and rounding) and the house's prefunded
//! liquidity. A rail with an `endpoint` is reached over HTTP (a `railyard sandbox ... --listen`
//! process); the others run in process. Either way the connector code is the same.

use std::sync::Arc;
use std::time::Duration;

use railyard_cbdc::connector::CbdcConnector;
use railyard_cbdc::rail::{CbdcRail, CbdcRailConfig};
use railyard_config::{RailConfig, RailKind, TreasuryConfig};
use railyard_connector::faults::FaultPlan;
use railyard_connector::sandbox::Sandbox;
use railyard_connector::transport::{Method, RailService, Reply, Transport};
use railyard_connector::{Capabilities, Connector, Limit, Registry, RegistryError};
use railyard_core::{Currency, Money, Rate};
use railyard_fx::ReferenceRates;
use railyard_rail_card::connector::CardConnector;
use railyard_rail_card::rail::{CardRail, CardRailConfig};
use railyard_rail_instant::connector::{InstantConnector, InstantSettings};
use railyard_rail_instant::iso20022::Party;
use railyard_rail_instant::rail::{InstantRail, InstantRailConfig};

/// The house's member id at instant networks, and the sandbox's single creditor agent.
pub const HOUSE_MEMBER_ID: &str = "021000021";
pub const CREDITOR_AGENT: &str = "026009593";
/// The sandbox CBDC platform's liquidity provider starts with this many major units per token.
pub const CBDC_LP_UNITS: i64 = 1_000_000_000;

/// A sandbox rail of any kind.
#[derive(Clone)]
pub enum SandboxRail {
    Instant(Arc<InstantRail>),
    Card(Arc<CardRail>),
    Cbdc(Arc<CbdcRail>),
}

impl SandboxRail {
    /// The network as served in process or over HTTP: its own paths, and
    /// [`HOUSE_FUNDS_PATH`] for the treasury's liquidity moves.
    pub fn service(&self) -> Arc<dyn RailService> {
        Arc::new(WithHouseFunds(self.clone()))
    }

    fn network(&self) -> Arc<dyn RailService> {
        match self {
            SandboxRail::Instant(rail) => rail.clone(),
            SandboxRail::Card(rail) => rail.clone(),
            SandboxRail::Cbdc(rail) => rail.clone(),
        }
    }

    pub fn sandbox(&self) -> Arc<Sandbox> {
        match self {
            SandboxRail::Instant(rail) => rail.sandbox.clone(),
            SandboxRail::Card(rail) => rail.sandbox.clone(),
            SandboxRail::Cbdc(rail) => rail.sandbox.clone(),
        }
    }

    /// A movement between the house's bank and its funds at this sandbox network arrived (what a
    /// treasury top-up or sweep books, `POST /v1/treasury/rails/{rail}/liquidity`): an instant
    /// network's settlement balance, a card network's exposure cap, a CBDC platform's house
    /// wallet. Returns what the network now holds for the house, where it keeps a figure.
    pub fn move_house_funds(&self, amount: Money, withdraw: bool) -> Result<Option<Money>, String> {
        match self {
            SandboxRail::Instant(rail) => rail.move_house_funds(amount, withdraw).map(Some),
            SandboxRail::Card(rail) => rail.move_house_funds(amount, withdraw),
            SandboxRail::Cbdc(rail) => {
                rail.move_house_funds(amount, withdraw).map(Some).map_err(|error| error.to_string())
            }
        }
    }

    pub fn kind(&self) -> RailKind {
        match self {
            SandboxRail::Instant(_) => RailKind::Instant,
            SandboxRail::Card(_) => RailKind::Card,
            SandboxRail::Cbdc(_) => RailKind::Cbdc,
        }
    }
}

/// `POST` a [`HouseFunds`] here: a sandbox network in another process (a rail's `endpoint`) is
/// told of a treasury top-up or sweep as an in-process one is ([`SandboxRail::move_house_funds`]).
/// Answers 200 with `{"holds": ...}` (what the network now holds for the house, or null), 409 with
/// the reason when the network cannot follow (a sweep beyond what it holds), 400 for a bad body.
pub const HOUSE_FUNDS_PATH: &str = "/sandbox/house-funds";

/// A movement between the house's bank and its funds at a sandbox network.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HouseFunds {
    /// A positive decimal string in `currency`.
    pub amount: String,
    pub currency: String,
    /// `top_up` or `sweep`.
    pub direction: String,
}

impl HouseFunds {
    pub fn new(amount: Money, withdraw: bool) -> HouseFunds {
        HouseFunds {
            amount: amount.amount_text(),
            currency: amount.currency().code().to_string(),
            direction: if withdraw { "sweep" } else { "top_up" }.to_string(),
        }
    }

    /// The amount and whether it leaves the network (a sweep), or what is wrong with the body.
    pub fn read(&self) -> Result<(Money, bool), String> {
        let currency = Currency::from_code(&self.currency).map_err(|error| format!("currency: {error}"))?;
        let amount = Money::parse(&self.amount, currency, railyard_core::Sign::Positive)
            .map_err(|error| format!("amount: {error}"))?;
        let withdraw = match self.direction.as_str() {
            "top_up" => false,
            "sweep" => true,
            other => return Err(format!("direction: {other:?} is neither \"top_up\" nor \"sweep\"")),
        };
        Ok((amount, withdraw))
    }
}

/// What the network holds for the house after a [`HOUSE_FUNDS_PATH`] move.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HouseFundsHeld {
    pub holds: Option<Money>,
}

/// A sandbox network with [`HOUSE_FUNDS_PATH`] besides its own paths.
struct WithHouseFunds(SandboxRail);

#[async_trait::async_trait]
impl RailService for WithHouseFunds {
    async fn call(&self, method: Method, target: &str, body: Vec<u8>) -> Reply {
        if method != Method::Post || target != HOUSE_FUNDS_PATH {
            return self.0.network().call(method, target, body).await;
        }
        let moved = match serde_json::from_slice::<HouseFunds>(&body) {
            Ok(funds) => funds.read(),
            Err(error) => Err(format!("house funds: {error}")),
        };
        match moved {
            Err(reason) => Reply::text(400, &reason),
            Ok((amount, withdraw)) => match self.0.move_house_funds(amount, withdraw) {
                Ok(holds) => Reply::json(200, &HouseFundsHeld { holds }),
                Err(reason) => Reply::text(409, &reason),
            },
        }
    }
}

/// Tells the sandbox network at `endpoint` of a treasury top-up or sweep ([`HOUSE_FUNDS_PATH`]):
/// what it now holds for the house, or why it did not follow.
pub async fn move_remote_house_funds(endpoint: &str, amount: Money, withdraw: bool) -> Result<Option<Money>, String> {
    const TIMEOUT: Duration = Duration::from_secs(10);
    let body = serde_json::to_vec(&HouseFunds::new(amount, withdraw)).map_err(|error| error.to_string())?;
    let answer = Transport::http(endpoint)
        .exchange(Method::Post, HOUSE_FUNDS_PATH, body, TIMEOUT)
        .await
        .map_err(|error| format!("{endpoint}: {error}"))?;
    if answer.status != 200 {
        return Err(format!("{endpoint}: {} {}", answer.status, String::from_utf8_lossy(&answer.body)));
    }
    let held: HouseFundsHeld = serde_json::from_slice(&answer.body).map_err(|error| format!("{endpoint}: {error}"))?;
    Ok(held.holds)
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("rail {rail}: {reason}")]
    Rail { rail: String, reason: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

fn prefunded(config: &TreasuryConfig, rail: &RailConfig) -> Vec<Money> {
    rail.currencies
        .iter()
        .filter_map(|currency| config.liquidity_for(rail.id.as_str(), *currency).map(|account| account.prefunded))
        .collect()
}

fn maxima(rail: &RailConfig) -> Vec<Money> {
    rail.limits.values().map(|limits| limits.maximum).collect()
}

/// In-network FX rates of a rail: ECB mids less the rail's spread, for its configured pairs.
fn network_rates(rail: &RailConfig, rates: &ReferenceRates) -> Result<Vec<Rate>, BuildError> {
    let Some(fx) = &rail.fx else { return Ok(Vec::new()) };
    let failed = |reason: String| BuildError::Rail { rail: rail.id.to_string(), reason };
    fx.pairs
        .iter()
        .map(|pair| {
            let mid = rates.mid(pair.base, pair.quote).map_err(|error| failed(error.to_string()))?;
            mid.with_spread(fx.spread_bps).map_err(|error| failed(error.to_string()))
        })
        .collect()
}

/// What a connector to `rail` declares.
pub fn capabilities(rail: &RailConfig) -> Capabilities {
    let mut payout_currencies: Vec<Currency> = rail.currencies.clone();
    if let Some(fx) = &rail.fx {
        for pair in &fx.pairs {
            if !payout_currencies.contains(&pair.quote) {
                payout_currencies.push(pair.quote);
            }
        }
    }
    Capabilities {
        rail: rail.id.to_string(),
        kind: rail.kind,
        currencies: rail.currencies.clone(),
        payout_currencies,
        countries: rail.countries.clone(),
        limits: rail.limits.values().map(|limits| Limit { minimum: limits.minimum, maximum: limits.maximum }).collect(),
        fees: rail.fees.values().copied().collect(),
        supports_cancel: rail.kind == RailKind::Instant,
        timeout: Duration::from_millis(u64::from(rail.timeout_ms)),
    }
}

/// The sandbox network for one configured rail.
pub fn sandbox(
    config: &TreasuryConfig,
    rail: &RailConfig,
    rates: &ReferenceRates,
    faults: FaultPlan,
) -> Result<SandboxRail, BuildError> {
    let failed = |reason: String| BuildError::Rail { rail: rail.id.to_string(), reason };
    Ok(match rail.kind {
        RailKind::Instant => SandboxRail::Instant(Arc::new(
            InstantRail::new(InstantRailConfig {
                rail: rail.id.to_string(),
                network_member: "990000001".into(),
                currencies: rail.currencies.clone(),
                maximum: maxima(rail),
                prefunded: prefunded(config, rail),
                // The network gives the creditor agent most of the connector's patience.
                timeout: Duration::from_millis(u64::from(rail.timeout_ms) * 3 / 4),
                faults,
            })
            .map_err(failed)?,
        )),
        RailKind::Card => SandboxRail::Card(Arc::new(
            CardRail::new(CardRailConfig {
                rail: rail.id.to_string(),
                currencies: rail.currencies.clone(),
                fees: rail.fees.values().copied().collect(),
                maximum: maxima(rail),
                exposure_cap: prefunded(config, rail),
                rates: network_rates(rail, rates)?,
                conversion_rounding: rail
                    .fx
                    .as_ref()
                    .map(|fx| fx.rounding)
                    .unwrap_or(railyard_core::RoundingMode::TowardZero),
                faults,
            })
            .map_err(failed)?,
        )),
        RailKind::Cbdc => SandboxRail::Cbdc(Arc::new(
            CbdcRail::new(CbdcRailConfig {
                rail: rail.id.to_string(),
                currencies: rail.currencies.clone(),
                house_balances: prefunded(config, rail),
                liquidity: rail
                    .currencies
                    .iter()
                    .map(|currency| {
                        let unit = 10_i64.pow(currency.exponent());
                        Money::from_minor(CBDC_LP_UNITS.saturating_mul(unit), *currency)
                    })
                    .collect(),
                pvp_rates: network_rates(rail, rates)?,
                fees: rail.fees.values().copied().collect(),
                maximum: maxima(rail),
                conversion_rounding: rail
                    .fx
                    .as_ref()
                    .map(|fx| fx.rounding)
                    .unwrap_or(railyard_core::RoundingMode::TowardZero),
                faults,
            })
            .map_err(failed)?,
        )),
    })
}

/// The connector for one configured rail over `transport`.
pub fn connector(rail: &RailConfig, transport: Transport) -> Arc<dyn Connector> {
    let capabilities = capabilities(rail);
    match rail.kind {
        RailKind::Instant => Arc::new(InstantConnector::new(
            InstantSettings {
                capabilities,
                member_id: HOUSE_MEMBER_ID.into(),
                creditor_agent: CREDITOR_AGENT.into(),
                debtor: Party { name: "Railyard House".into(), account: "8800000001".into(), country: "US".into() },
            },
            transport,
        )),
        RailKind::Card => Arc::new(CardConnector::new(capabilities, transport)),
        RailKind::Cbdc => Arc::new(CbdcConnector::new(capabilities, transport)),
    }
}

/// Every configured rail: sandboxes for those run in process, and a registry of connectors.
pub struct Rails {
    pub registry: Registry,
    /// (rail id, sandbox) for the rails this process runs itself.
    pub sandboxes: Vec<(String, SandboxRail)>,
}

/// The rail's configured sandbox fault plan, or none.
pub fn fault_plan(rail: &RailConfig) -> Result<FaultPlan, BuildError> {
    let Some(path) = &rail.sandbox_faults else { return Ok(FaultPlan::default()) };
    let failed = |reason: String| BuildError::Rail {
        rail: rail.id.to_string(),
        reason: format!("sandbox_faults {}: {reason}", path.display()),
    };
    let text = std::fs::read_to_string(path).map_err(|error| failed(error.to_string()))?;
    let plan: FaultPlan = serde_json::from_str(&text)
        .map_err(|error| failed(format!("line {}, column {}: {error}", error.line(), error.column())))?;
    plan.validate().map_err(|error| failed(error.to_string()))?;
    Ok(plan)
}

pub fn build(config: &TreasuryConfig, rates: &ReferenceRates) -> Result<Rails, BuildError> {
    let mut registry = Registry::new();
    let mut sandboxes = Vec::new();
    for rail in &config.rails {
        let transport = match &rail.endpoint {
            Some(endpoint) => Transport::http(endpoint),
            None => {
                let sandbox = sandbox(config, rail, rates, fault_plan(rail)?)?;
                let transport = Transport::in_process(sandbox.service());
                sandboxes.push((rail.id.to_string(), sandbox));
                transport
            }
        };
        registry.register(connector(rail, transport))?;
    }
    Ok(Rails { registry, sandboxes })
}
