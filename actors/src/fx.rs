//! The FX actor: reloads reference rates on a schedule and hands them to routing when they change.
//! Routing builds the FX book from them and the providers in force; a rate set that fails to build
//! (an arbitrage cycle) is refused there and the previous book stays.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use railyard_config::TreasuryConfig;
use railyard_fx::RateHistory;

use crate::routing::RoutingMsg;

/// How often the rates file is read again.
pub const FX_REFRESH: Duration = Duration::from_secs(60);

pub enum FxMsg {
    Refresh,
}

pub struct FxArgs {
    pub config: Arc<TreasuryConfig>,
    pub routing: ActorRef<RoutingMsg>,
    pub every: Duration,
}

pub struct FxState {
    config: Arc<TreasuryConfig>,
    routing: ActorRef<RoutingMsg>,
    /// The ECB date of the book in force.
    date: Option<chrono::NaiveDate>,
}

pub struct FxActor;

impl Actor for FxActor {
    type Msg = FxMsg;
    type State = FxState;
    type Arguments = FxArgs;

    async fn pre_start(&self, myself: ActorRef<FxMsg>, args: FxArgs) -> Result<FxState, ActorProcessingErr> {
        myself.send_interval(args.every, || FxMsg::Refresh);
        let _ = myself.send_message(FxMsg::Refresh);
        Ok(FxState { config: args.config, routing: args.routing, date: None })
    }

    async fn handle(
        &self,
        _myself: ActorRef<FxMsg>,
        message: FxMsg,
        state: &mut FxState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            FxMsg::Refresh => {
                let history = match &state.config.fx.rates_file {
                    Some(path) => match RateHistory::load(path) {
                        Ok(history) => history,
                        Err(error) => {
                            tracing::warn!("FX rates not refreshed from {}: {error}", path.display());
                            return Ok(());
                        }
                    },
                    None => RateHistory::bundled_daily(),
                };
                let rates = history.latest();
                if state.date == Some(rates.date()) {
                    return Ok(());
                }
                // Routing builds the book from these rates and the providers (and spreads) in
                // force, so a treasury spread change and a rate refresh cannot undo each other.
                state.date = Some(rates.date());
                tracing::info!(date = %rates.date(), "FX reference rates refreshed");
                let _ = state.routing.send_message(RoutingMsg::SetRates { rates });
            }
        }
        Ok(())
    }
}
