//! The card network: token vault, BIN table, network FX, fees, approvals and declines, T+1
//! settlement file.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use railyard_connector::faults::{Fault, FaultPlan};
use railyard_connector::ledger::ExecutionRecord;
use railyard_connector::sandbox::Sandbox;
use railyard_connector::transport::{Method, RailService, Reply, split_target};
use railyard_connector::{Execution, IdempotencyKey, NotificationEvent, Rejection, Status};
use railyard_core::{Country, Currency, Decimal, FeeSchedule, Money, Rate, RoundingMode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::card::{self, CardInfo};
use crate::{decline_meaning, map_decline};

/// Cards the vault holds; beyond it tokenisation answers 503.
pub const TOKENS_MAX: usize = 1_000_000;

#[derive(Debug, Clone)]
pub struct CardRailConfig {
    pub rail: String,
    /// Currencies the house is debited in.
    pub currencies: Vec<Currency>,
    /// Interchange (bps) plus scheme fee (fixed), per debited currency.
    pub fees: Vec<FeeSchedule>,
    /// Per-payout maximum, per debited currency (61 above it).
    pub maximum: Vec<Money>,
    /// Most the house may have paid out and not yet settled, per debited currency (51 above it).
    pub exposure_cap: Vec<Money>,
    /// Network rates: debited currency → card currency, markup included.
    pub rates: Vec<Rate>,
    /// How a converted amount is rounded to the target currency's minor unit (the treasury's
    /// configured mode for this rail's FX).
    pub conversion_rounding: RoundingMode,
    pub faults: FaultPlan,
}

impl CardRailConfig {
    /// Network rates from ECB reference mids with `markup_bps` taken off (the network's FX margin).
    pub fn rates_from_ecb(
        reference: &railyard_fx::ReferenceRates,
        sources: &[Currency],
        markup_bps: Decimal,
    ) -> Vec<Rate> {
        let mut rates = Vec::new();
        for source in sources {
            for bin in card::BINS {
                let Ok(target) = Currency::from_code(bin.currency) else { continue };
                if rates.iter().any(|rate: &Rate| rate.base() == *source && rate.quote() == target) {
                    continue;
                }
                if let Ok(mid) = reference.mid(*source, target)
                    && let Ok(rate) = if *source == target { Ok(mid) } else { mid.with_spread(markup_bps) }
                {
                    rates.push(rate);
                }
            }
        }
        rates
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRequest {
    pub pan: String,
    pub expiry: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuoteRequest {
    pub amount: Money,
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteAnswer {
    pub send: Money,
    pub fee: Money,
    pub receive: Money,
    pub rate: Decimal,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PayoutRequest {
    pub key: IdempotencyKey,
    pub token: String,
    pub amount: Money,
    pub payout_currency: Currency,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum PayoutAnswer {
    Approved { approval_code: String, execution: Execution },
    Declined { code: String, message: String },
    Pending,
}

#[derive(Default)]
struct Vault {
    cards: HashMap<String, CardInfo>,
}

pub struct CardRail {
    config: CardRailConfig,
    pub sandbox: Arc<Sandbox>,
    vault: Mutex<Vault>,
    /// The exposure caps as the house's collateral moved them since start (minor units per
    /// debited currency; see [`CardRail::move_house_funds`]).
    caps: Mutex<HashMap<Currency, i64>>,
    gate: tokio::sync::Mutex<()>,
}

/// Why a quote could not be given, as a decline code.
struct Decline(&'static str);

impl CardRail {
    pub fn new(config: CardRailConfig) -> Result<CardRail, String> {
        let sandbox = Sandbox::new(config.rail.clone(), config.faults.clone()).map_err(|error| error.to_string())?;
        Ok(CardRail {
            sandbox: Arc::new(sandbox),
            vault: Mutex::new(Vault::default()),
            caps: Mutex::new(config.exposure_cap.iter().map(|cap| (cap.currency(), cap.minor_units())).collect()),
            config,
            gate: tokio::sync::Mutex::new(()),
        })
    }

    fn caps(&self) -> std::sync::MutexGuard<'_, HashMap<Currency, i64>> {
        self.caps.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most the house may have paid out and not yet settled in `currency`, if capped.
    pub fn exposure_cap(&self, currency: Currency) -> Option<Money> {
        self.caps().get(&currency).map(|cap| Money::from_minor(*cap, currency))
    }

    /// A transfer between the house's bank and its collateral at this network arrived: the
    /// exposure cap in `amount`'s currency rises by it (a top-up) or, with `withdraw`, falls by it
    /// (a sweep, refused below zero). A currency without a cap stays uncapped.
    pub fn move_house_funds(&self, amount: Money, withdraw: bool) -> Result<Option<Money>, String> {
        let currency = amount.currency();
        if !self.config.currencies.contains(&currency) {
            return Err(format!("{} does not debit {currency}", self.config.rail));
        }
        let mut caps = self.caps();
        let Some(cap) = caps.get_mut(&currency) else { return Ok(None) };
        let moved = if withdraw {
            cap.checked_sub(amount.minor_units()).filter(|left| *left >= 0)
        } else {
            cap.checked_add(amount.minor_units())
        };
        let Some(moved) = moved else {
            return Err(format!("the exposure cap of {} cannot move by {amount}", Money::from_minor(*cap, currency)));
        };
        *cap = moved;
        Ok(Some(Money::from_minor(moved, currency)))
    }

    fn vault(&self) -> std::sync::MutexGuard<'_, Vault> {
        self.vault.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tokenises a PAN (Luhn, BIN, expiry checked).
    pub fn tokenise(&self, pan: &str, expiry: &str) -> Result<CardInfo, String> {
        if !card::luhn_valid(pan) {
            return Err("pan: not 12 to 19 digits with a valid Luhn check digit".into());
        }
        let bin = card::bin_for(pan).ok_or("pan: BIN not issued in the sandbox")?;
        let valid_expiry = expiry.len() == 5
            && expiry.as_bytes()[2] == b'/'
            && expiry[..2].parse::<u32>().is_ok_and(|month| (1..=12).contains(&month))
            && expiry[3..].parse::<u32>().is_ok();
        if !valid_expiry {
            return Err("expiry: expected MM/YY".into());
        }
        let info = CardInfo {
            token: card::token_for(pan),
            scheme: bin.scheme.into(),
            country: Country::from_code(bin.country).map_err(|error| error.to_string())?,
            currency: Currency::from_code(bin.currency).map_err(|error| error.to_string())?,
            last4: pan[pan.len() - 4..].to_string(),
            expiry: expiry.into(),
        };
        let mut vault = self.vault();
        if vault.cards.len() >= TOKENS_MAX && !vault.cards.contains_key(&info.token) {
            return Err("the vault is full".into());
        }
        vault.cards.insert(info.token.clone(), info.clone());
        Ok(info)
    }

    fn expired(expiry: &str, now: DateTime<Utc>) -> bool {
        let (Ok(month), Ok(year)) = (expiry[..2].parse::<u32>(), expiry[3..].parse::<i32>()) else { return true };
        // A card is valid through the last day of its expiry month.
        let first_after = if month == 12 {
            NaiveDate::from_ymd_opt(2000 + year + 1, 1, 1)
        } else {
            NaiveDate::from_ymd_opt(2000 + year, month + 1, 1)
        };
        first_after.is_none_or(|first| now.date_naive() >= first)
    }

    fn price(&self, amount: Money, token: &str) -> Result<(QuoteAnswer, CardInfo), Decline> {
        let info = self.vault().cards.get(token).cloned().ok_or(Decline("14"))?;
        let source = amount.currency();
        if !self.config.currencies.contains(&source) {
            return Err(Decline("57"));
        }
        if !amount.is_positive() {
            return Err(Decline("13"));
        }
        let fee = match self.config.fees.iter().find(|fee| fee.currency() == source) {
            Some(schedule) => schedule.fee_for(amount).map_err(|_| Decline("13"))?,
            None => Money::zero(source),
        };
        let net = amount.checked_sub(fee).map_err(|_| Decline("13"))?;
        let rate = self
            .config
            .rates
            .iter()
            .find(|rate| rate.base() == source && rate.quote() == info.currency)
            .copied()
            .or_else(|| (source == info.currency).then(|| Rate::identity(source)))
            .ok_or(Decline("57"))?;
        let receive = rate.convert(net, self.config.conversion_rounding).map_err(|_| Decline("13"))?;
        if !receive.is_positive() {
            return Err(Decline("13"));
        }
        Ok((QuoteAnswer { send: amount, fee, receive, rate: rate.value() }, info))
    }

    /// Unsettled payouts (executed today, UTC) in `currency`: the network settles at T+1.
    fn exposure(&self, currency: Currency, now: DateTime<Utc>) -> i64 {
        self.sandbox
            .ledger
            .executions()
            .iter()
            .filter(|record| {
                record.execution.send.currency() == currency
                    && record.execution.executed_at.date_naive() == now.date_naive()
            })
            .map(|record| record.execution.send.minor_units())
            .sum()
    }

    fn answer(status: &Status) -> Reply {
        match status {
            Status::Executed(execution) => Reply::json(
                200,
                &PayoutAnswer::Approved {
                    approval_code: execution.reference.split('/').next().unwrap_or_default().to_string(),
                    execution: execution.clone(),
                },
            ),
            Status::Rejected(rejection) => Reply::json(
                200,
                &PayoutAnswer::Declined { code: rejection.rail_code.clone(), message: rejection.detail.clone() },
            ),
            Status::Pending | Status::Unknown(_) => Reply::json(202, &PayoutAnswer::Pending),
            Status::NotFound => Reply::text(404, "no payout with this key"),
        }
    }

    fn decline(&self, key: &IdempotencyKey, code: &str) -> Reply {
        let rejection = Rejection::by_rail(map_decline(code), code, decline_meaning(code));
        let _ = self.sandbox.ledger.reject(key, rejection.clone());
        self.notify(key, Status::Rejected(rejection.clone()));
        Self::answer(&Status::Rejected(rejection))
    }

    fn notify(&self, key: &IdempotencyKey, status: Status) {
        let draw = self.sandbox.faults.draw_callback();
        self.sandbox.ledger.notify(
            NotificationEvent::Status { key: key.clone(), status },
            Utc::now(),
            draw.callback_delay,
            draw.duplicate_callback,
        );
    }

    async fn payout(&self, request: PayoutRequest) -> Reply {
        let now = Utc::now();
        let draw = self.sandbox.faults.draw(now);
        if draw.fault == Some(Fault::RequestLost) {
            return Reply::Lost;
        }
        let key = request.key.clone();
        self.sandbox.ledger.received(&key);
        if !draw.latency.is_zero() {
            tokio::time::sleep(draw.latency).await;
        }
        let guard = self.gate.lock().await;
        match self.sandbox.ledger.status(&key) {
            Status::NotFound => {}
            status => return Self::answer(&status),
        }
        if draw.outage {
            return self.decline(&key, "91");
        }
        if let Some(Fault::Reject { code }) = &draw.fault {
            return self.decline(&key, code);
        }
        let (quote, info) = match self.price(request.amount, &request.token) {
            Ok(priced) => priced,
            Err(Decline(code)) => return self.decline(&key, code),
        };
        if info.currency != request.payout_currency {
            return self.decline(&key, "57");
        }
        if Self::expired(&info.expiry, now) {
            return self.decline(&key, "54");
        }
        let source = request.amount.currency();
        if let Some(maximum) = self.config.maximum.iter().find(|maximum| maximum.currency() == source)
            && request.amount.minor_units() > maximum.minor_units()
        {
            return self.decline(&key, "61");
        }
        if let Some(cap) = self.caps().get(&source).copied()
            && self.exposure(source, now).saturating_add(request.amount.minor_units()) > cap
        {
            return self.decline(&key, "51");
        }
        if let Some(Fault::Delay { ms }) = draw.fault {
            // The issuer is slow; card networks have no recall, so the payout completes late.
            self.sandbox.ledger.hold(&key, now);
            drop(guard);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let _guard = self.gate.lock().await;
            if !matches!(self.sandbox.ledger.status(&key), Status::Pending) {
                return Self::answer(&self.sandbox.ledger.status(&key));
            }
            return self.approve(&key, &quote, &info, false);
        }
        self.approve(&key, &quote, &info, draw.fault == Some(Fault::ReplyLost))
    }

    fn approve(&self, key: &IdempotencyKey, quote: &QuoteAnswer, info: &CardInfo, lose_reply: bool) -> Reply {
        let digest = hex::encode_upper(Sha256::digest(format!("approval:{key}").as_bytes()));
        let approval_code = digest[..6].to_string();
        let trace = &digest[6..18];
        let execution = Execution {
            reference: format!("{approval_code}/{trace}"),
            send: quote.send,
            fee: quote.fee,
            receive: quote.receive,
            rate: Some(quote.rate),
            executed_at: Utc::now(),
        };
        let record = ExecutionRecord {
            key: key.clone(),
            execution: execution.clone(),
            beneficiary_account: format!("{}:{}", info.token, info.last4),
        };
        if let Err(error) = self.sandbox.ledger.execute(record) {
            return Reply::text(503, &error.to_string());
        }
        self.notify(key, Status::Executed(execution.clone()));
        if lose_reply {
            return Reply::Lost;
        }
        Self::answer(&Status::Executed(execution))
    }

    /// The settlement file for `date`: every payout executed the day before, as CSV, with a total
    /// line per debited currency.
    pub fn settlement_file(&self, date: NaiveDate) -> String {
        let Some(day) = date.pred_opt() else { return String::new() };
        let mut text = String::from(
            "settlement_date,rail_key,reference,debited,debited_currency,fee,credited,card_currency,rate,executed_at\n",
        );
        let mut totals: Vec<(Currency, i64, i64, usize)> = Vec::new();
        for record in self.sandbox.ledger.executions() {
            let execution = &record.execution;
            if execution.executed_at.date_naive() != day {
                continue;
            }
            text.push_str(&format!(
                "{date},{},{},{},{},{},{},{},{},{}\n",
                record.key,
                execution.reference,
                execution.send.amount_text(),
                execution.send.currency(),
                execution.fee.amount_text(),
                execution.receive.amount_text(),
                execution.receive.currency(),
                execution.rate.map(|rate| rate.to_string()).unwrap_or_default(),
                execution.executed_at.to_rfc3339(),
            ));
            let currency = execution.send.currency();
            match totals.iter_mut().find(|(total_currency, ..)| *total_currency == currency) {
                Some(total) => {
                    total.1 += execution.send.minor_units();
                    total.2 += execution.fee.minor_units();
                    total.3 += 1;
                }
                None => totals.push((currency, execution.send.minor_units(), execution.fee.minor_units(), 1)),
            }
        }
        for (currency, debited, fees, count) in totals {
            text.push_str(&format!(
                "total,{date},{count} payouts,{},{currency},{},,,,\n",
                Money::from_minor(debited, currency).amount_text(),
                Money::from_minor(fees, currency).amount_text(),
            ));
        }
        text
    }
}

#[async_trait]
impl RailService for CardRail {
    async fn call(&self, method: Method, target: &str, body: Vec<u8>) -> Reply {
        if let Some(reply) = self.sandbox.control(method, target, &body) {
            return reply;
        }
        let (path, query) = split_target(target);
        match (method, path) {
            (Method::Get, "/health") => {
                let delay = self.sandbox.faults.steady_latency();
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let available = !self.sandbox.faults.outage_at(Utc::now());
                Reply::json(200, &serde_json::json!({ "available": available }))
            }
            (Method::Post, "/tokens") => match serde_json::from_slice::<TokenRequest>(&body) {
                Ok(request) => match self.tokenise(&request.pan, &request.expiry) {
                    Ok(info) => Reply::json(200, &info),
                    Err(error) => Reply::text(422, &error),
                },
                Err(error) => Reply::text(400, &format!("token request: {error}")),
            },
            (Method::Post, "/quote") => match serde_json::from_slice::<QuoteRequest>(&body) {
                Ok(request) => match self.price(request.amount, &request.token) {
                    Ok((quote, _)) => Reply::json(200, &quote),
                    Err(Decline(code)) => Reply::json(
                        422,
                        &PayoutAnswer::Declined { code: code.into(), message: decline_meaning(code).into() },
                    ),
                },
                Err(error) => Reply::text(400, &format!("quote request: {error}")),
            },
            (Method::Post, "/payouts") => match serde_json::from_slice::<PayoutRequest>(&body) {
                Ok(request) => self.payout(request).await,
                Err(error) => Reply::text(400, &format!("payout request: {error}")),
            },
            (Method::Get, "/settlement") => {
                let date = query.iter().find(|(name, _)| *name == "date").map(|(_, value)| *value);
                match date.map(|value| NaiveDate::parse_from_str(value, "%Y-%m-%d")) {
                    Some(Ok(date)) => Reply::Answer {
                        status: 200,
                        content_type: "text/csv",
                        body: self.settlement_file(date).into_bytes(),
                    },
                    _ => Reply::text(400, "date: expected YYYY-MM-DD"),
                }
            }
            (Method::Get, path) if path.starts_with("/payouts/") => {
                match IdempotencyKey::new(&path["/payouts/".len()..]) {
                    Ok(key) => {
                        if self.sandbox.faults.outage_at(Utc::now()) {
                            return Reply::text(503, "network unavailable");
                        }
                        Self::answer(&self.sandbox.ledger.status(&key))
                    }
                    Err(error) => Reply::text(400, &format!("key: {error}")),
                }
            }
            _ => Reply::text(404, &format!("no such path: {target}")),
        }
    }
}
