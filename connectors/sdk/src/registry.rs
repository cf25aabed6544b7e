//! The set of connectors a Railyard process runs, by rail id.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::Connector;

/// Connectors by rail id. Registration is the only step an integrator adds to wire a rail in.
#[derive(Default, Clone)]
pub struct Registry {
    connectors: BTreeMap<String, Arc<dyn Connector>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("a connector for rail {0:?} is already registered")]
    Duplicate(String),
    #[error("connector for rail {rail:?} declares no {what}")]
    Incomplete { rail: String, what: &'static str },
    #[error("connector for rail {rail:?} has no limit or fee schedule for {currency}")]
    MissingCurrency { rail: String, currency: String },
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a connector under its capabilities' rail id, after checking that its capabilities are
    /// complete: at least one currency, and a limit and a fee schedule for every debited currency.
    pub fn register(&mut self, connector: Arc<dyn Connector>) -> Result<(), RegistryError> {
        let capabilities = connector.capabilities();
        let rail = capabilities.rail.clone();
        if capabilities.currencies.is_empty() {
            return Err(RegistryError::Incomplete { rail, what: "currency" });
        }
        if capabilities.payout_currencies.is_empty() {
            return Err(RegistryError::Incomplete { rail, what: "payout currency" });
        }
        for currency in &capabilities.currencies {
            let limited = capabilities.limits.iter().any(|limit| limit.maximum.currency() == *currency);
            if !limited || capabilities.fee_for(*currency).is_none() {
                return Err(RegistryError::MissingCurrency { rail, currency: currency.code().to_string() });
            }
        }
        if self.connectors.contains_key(&rail) {
            return Err(RegistryError::Duplicate(rail));
        }
        self.connectors.insert(rail, connector);
        Ok(())
    }

    pub fn get(&self, rail: &str) -> Option<&Arc<dyn Connector>> {
        self.connectors.get(rail)
    }

    pub fn rails(&self) -> impl Iterator<Item = &str> {
        self.connectors.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.connectors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.connectors.is_empty()
    }
}
