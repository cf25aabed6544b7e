//! The CBDC rail: payouts from the house's wallets on the token ledger.
//!
//! A same-token payout is one transfer (plus the platform fee to the operator) in one block. A
//! cross-token payout is payment versus payment against the platform's liquidity provider: the
//! house pays the LP in the source token and the LP pays the beneficiary in the target token, in
//! the same block, so both legs settle or neither does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use railyard_connector::faults::{Fault, FaultPlan};
use railyard_connector::ledger::ExecutionRecord;
use railyard_connector::sandbox::Sandbox;
use railyard_connector::transport::{Method, RailService, Reply, split_target};
use railyard_connector::{Execution, IdempotencyKey, NotificationEvent, Rejection, Status};
use railyard_core::{Currency, Decimal, FeeSchedule, Money, Rate, RoundingMode};
use serde::{Deserialize, Serialize};

use crate::ledger::{LedgerError, Operation, TokenLedger};
use crate::{map_refusal, refusal_meaning};

/// Largest page of blocks one `GET /blocks` returns.
pub const BLOCK_PAGE_MAX: usize = 1_000;

#[derive(Debug, Clone)]
pub struct CbdcRailConfig {
    pub rail: String,
    pub currencies: Vec<Currency>,
    /// Tokens minted into the house's wallet (`house-{code}`) at start.
    pub house_balances: Vec<Money>,
    /// Tokens minted into the liquidity provider's wallet (`lp-{code}`) at start.
    pub liquidity: Vec<Money>,
    /// Payment-versus-payment rates offered by the liquidity provider.
    pub pvp_rates: Vec<Rate>,
    /// How a converted amount is rounded to the target currency's minor unit (the treasury's
    /// configured mode for this rail's FX).
    pub conversion_rounding: RoundingMode,
    pub fees: Vec<FeeSchedule>,
    pub maximum: Vec<Money>,
    pub faults: FaultPlan,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferRequest {
    pub key: IdempotencyKey,
    pub amount: Money,
    pub payout_currency: Currency,
    pub to_wallet: String,
    pub memo: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuoteRequest {
    pub amount: Money,
    pub payout_currency: Currency,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteAnswer {
    pub send: Money,
    pub fee: Money,
    pub receive: Money,
    pub rate: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum TransferAnswer {
    Final { execution: Execution, height: u64, block_hash: String },
    Refused { code: String, message: String },
    Pending,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenWallet {
    pub wallet: String,
    pub currency: Currency,
}

/// The memo of the transfer that pays the beneficiary: the payment's key, then the payer's text,
/// so that the block log alone shows which payment a transfer settled (reconciliation reads it).
pub fn payment_memo(key: &IdempotencyKey, remittance: &str) -> String {
    if remittance.is_empty() { key.to_string() } else { format!("{key} {remittance}") }
}

pub fn house_wallet(currency: Currency) -> String {
    format!("house-{}", currency.code().to_lowercase())
}

pub fn lp_wallet(currency: Currency) -> String {
    format!("lp-{}", currency.code().to_lowercase())
}

fn issuer_wallet(currency: Currency) -> String {
    format!("issuer-{}", currency.code().to_lowercase())
}

fn operator_wallet(currency: Currency) -> String {
    format!("operator-{}", currency.code().to_lowercase())
}

pub struct CbdcRail {
    config: CbdcRailConfig,
    pub sandbox: Arc<Sandbox>,
    ledger: Mutex<TokenLedger>,
    /// Block height of each executed key, for status answers.
    heights: Mutex<HashMap<IdempotencyKey, (u64, String)>>,
    gate: tokio::sync::Mutex<()>,
}

struct Refusal(&'static str, String);

impl CbdcRail {
    /// Opens the issuer, house, LP and operator wallets of every token and mints the opening
    /// balances, each as a block of the log.
    pub fn new(config: CbdcRailConfig) -> Result<CbdcRail, String> {
        let sandbox = Sandbox::new(config.rail.clone(), config.faults.clone()).map_err(|error| error.to_string())?;
        let mut ledger = TokenLedger::new();
        let now = Utc::now();
        for currency in &config.currencies {
            let mut operations = Vec::new();
            for wallet in
                [issuer_wallet(*currency), house_wallet(*currency), lp_wallet(*currency), operator_wallet(*currency)]
            {
                operations.push(Operation::OpenWallet { wallet, currency: *currency });
            }
            operations.push(Operation::SetIssuer { currency: *currency, wallet: issuer_wallet(*currency) });
            for (balances, wallet) in
                [(&config.house_balances, house_wallet(*currency)), (&config.liquidity, lp_wallet(*currency))]
            {
                if let Some(amount) =
                    balances.iter().find(|amount| amount.currency() == *currency && amount.is_positive())
                {
                    operations.push(Operation::Mint { issuer: issuer_wallet(*currency), to: wallet, amount: *amount });
                }
            }
            ledger.commit(operations, now).map_err(|error| error.to_string())?;
        }
        Ok(CbdcRail {
            config,
            sandbox: Arc::new(sandbox),
            ledger: Mutex::new(ledger),
            heights: Mutex::new(HashMap::new()),
            gate: tokio::sync::Mutex::new(()),
        })
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, TokenLedger> {
        self.ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens a beneficiary wallet (sandbox onboarding).
    pub fn open_wallet(&self, wallet: &str, currency: Currency) -> Result<(), LedgerError> {
        self.ledger().apply(Operation::OpenWallet { wallet: wallet.into(), currency }, Utc::now()).map(|_| ())
    }

    /// Freezes or unfreezes a wallet as its token's issuer.
    pub fn freeze(&self, wallet: &str, frozen: bool) -> Result<(), LedgerError> {
        let mut ledger = self.ledger();
        let currency = ledger.wallet(wallet).map(|entry| entry.currency).ok_or(LedgerError::NoWallet(wallet.into()))?;
        ledger
            .apply(Operation::Freeze { issuer: issuer_wallet(currency), wallet: wallet.into(), frozen }, Utc::now())
            .map(|_| ())
    }

    pub fn balance(&self, wallet: &str) -> Option<Money> {
        self.ledger().balance(wallet)
    }

    /// The house converted bank money into tokens (a top-up: the issuer mints `amount` into the
    /// house's wallet) or, with `withdraw`, tokens back into bank money (a sweep: the issuer burns
    /// them, refused beyond the wallet's balance). Returns the house wallet's new balance.
    pub fn move_house_funds(&self, amount: Money, withdraw: bool) -> Result<Money, LedgerError> {
        let currency = amount.currency();
        let (issuer, house) = (issuer_wallet(currency), house_wallet(currency));
        let operation = if withdraw {
            Operation::Burn { issuer, from: house.clone(), amount }
        } else {
            Operation::Mint { issuer, to: house.clone(), amount }
        };
        let mut ledger = self.ledger();
        ledger.apply(operation, Utc::now())?;
        ledger.balance(&house).ok_or(LedgerError::NoWallet(house))
    }

    pub fn verify(&self) -> Result<(), crate::ledger::TamperError> {
        self.ledger().verify()
    }

    /// The whole block log (what `/blocks` pages through).
    pub fn blocks(&self) -> Vec<crate::ledger::Block> {
        self.ledger().blocks().to_vec()
    }

    pub fn block_count(&self) -> usize {
        self.ledger().blocks().len()
    }

    fn price(&self, amount: Money, payout: Currency) -> Result<(QuoteAnswer, Option<Rate>), Refusal> {
        let source = amount.currency();
        if !self.config.currencies.contains(&source) || !self.config.currencies.contains(&payout) {
            return Err(Refusal("currency_mismatch", format!("{source} or {payout} is not a token here")));
        }
        let fee = match self.config.fees.iter().find(|fee| fee.currency() == source) {
            Some(schedule) => schedule.fee_for(amount).map_err(|error| Refusal("rejected", error.to_string()))?,
            None => Money::zero(source),
        };
        let net = amount.checked_sub(fee).map_err(|error| Refusal("rejected", error.to_string()))?;
        if !net.is_positive() {
            return Err(Refusal("rejected", format!("the fee {fee} leaves nothing of {amount}")));
        }
        if source == payout {
            return Ok((QuoteAnswer { send: amount, fee, receive: net, rate: None }, None));
        }
        let rate = self
            .config
            .pvp_rates
            .iter()
            .find(|rate| rate.base() == source && rate.quote() == payout)
            .copied()
            .ok_or_else(|| Refusal("no_pvp_pair", format!("no PvP pair {source}/{payout}")))?;
        let receive = rate
            .convert(net, self.config.conversion_rounding)
            .map_err(|error| Refusal("rejected", error.to_string()))?;
        Ok((QuoteAnswer { send: amount, fee, receive, rate: Some(rate.value()) }, Some(rate)))
    }

    fn answer(&self, key: &IdempotencyKey, status: &Status) -> Reply {
        match status {
            Status::Executed(execution) => {
                let (height, block_hash) =
                    self.heights.lock().map(|heights| heights.get(key).cloned()).ok().flatten().unwrap_or_default();
                Reply::json(200, &TransferAnswer::Final { execution: execution.clone(), height, block_hash })
            }
            Status::Rejected(rejection) => Reply::json(
                200,
                &TransferAnswer::Refused { code: rejection.rail_code.clone(), message: rejection.detail.clone() },
            ),
            Status::Pending | Status::Unknown(_) => Reply::json(202, &TransferAnswer::Pending),
            Status::NotFound => Reply::text(404, "no transfer with this key"),
        }
    }

    fn refuse(&self, key: &IdempotencyKey, code: &str, detail: String) -> Reply {
        let detail = if detail.is_empty() { refusal_meaning(code).to_string() } else { detail };
        let rejection = Rejection::by_rail(map_refusal(code), code, detail);
        let _ = self.sandbox.ledger.reject(key, rejection.clone());
        self.notify(key, Status::Rejected(rejection.clone()));
        self.answer(key, &Status::Rejected(rejection))
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

    async fn transfer(&self, request: TransferRequest) -> Reply {
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
            status => return self.answer(&key, &status),
        }
        if draw.outage {
            return self.refuse(&key, "ledger_halted", String::new());
        }
        if let Some(Fault::Reject { code }) = &draw.fault {
            return self.refuse(&key, code, String::new());
        }
        if let Some(maximum) =
            self.config.maximum.iter().find(|maximum| maximum.currency() == request.amount.currency())
            && request.amount.minor_units() > maximum.minor_units()
        {
            return self.refuse(&key, "over_limit", String::new());
        }
        if let Some(Fault::Delay { ms }) = draw.fault {
            self.sandbox.ledger.hold(&key, now);
            drop(guard);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let _guard = self.gate.lock().await;
            if !matches!(self.sandbox.ledger.status(&key), Status::Pending) {
                return self.answer(&key, &self.sandbox.ledger.status(&key));
            }
            return self.settle(&key, &request, false);
        }
        self.settle(&key, &request, draw.fault == Some(Fault::ReplyLost))
    }

    fn settle(&self, key: &IdempotencyKey, request: &TransferRequest, lose_reply: bool) -> Reply {
        let (quote, rate) = match self.price(request.amount, request.payout_currency) {
            Ok(priced) => priced,
            Err(Refusal(code, detail)) => return self.refuse(key, code, detail),
        };
        let source = request.amount.currency();
        let house = house_wallet(source);
        let mut operations = Vec::new();
        if quote.fee.is_positive() {
            operations.push(Operation::Transfer {
                from: house.clone(),
                to: operator_wallet(source),
                amount: quote.fee,
                memo: format!("fee {key}"),
            });
        }
        let net = Money::from_minor(quote.send.minor_units() - quote.fee.minor_units(), source);
        match rate {
            None => operations.push(Operation::Transfer {
                from: house,
                to: request.to_wallet.clone(),
                amount: net,
                memo: payment_memo(key, &request.memo),
            }),
            Some(_) => {
                // Payment versus payment: both legs in this one block.
                operations.push(Operation::Transfer {
                    from: house,
                    to: lp_wallet(source),
                    amount: net,
                    memo: format!("pvp {key}"),
                });
                operations.push(Operation::Transfer {
                    from: lp_wallet(request.payout_currency),
                    to: request.to_wallet.clone(),
                    amount: quote.receive,
                    memo: payment_memo(key, &request.memo),
                });
            }
        }
        let committed = self.ledger().commit(operations, Utc::now());
        let receipt = match committed {
            Ok(receipt) => receipt,
            Err(error) => {
                let code = match &error {
                    LedgerError::NoWallet(wallet) if *wallet == request.to_wallet => "unknown_wallet",
                    LedgerError::Frozen(_) => "frozen_wallet",
                    LedgerError::Currency { .. } => "currency_mismatch",
                    LedgerError::InsufficientBalance { wallet, .. } if wallet.starts_with("lp-") => "lp_liquidity",
                    LedgerError::InsufficientBalance { .. } => "insufficient_balance",
                    LedgerError::Full => "ledger_halted",
                    _ => "rejected",
                };
                return self.refuse(key, code, error.to_string());
            }
        };
        let execution = Execution {
            reference: receipt.reference(),
            send: quote.send,
            fee: quote.fee,
            receive: quote.receive,
            rate: quote.rate,
            executed_at: receipt.at,
        };
        let record = ExecutionRecord {
            key: key.clone(),
            execution: execution.clone(),
            beneficiary_account: request.to_wallet.clone(),
        };
        if let Err(error) = self.sandbox.ledger.execute(record) {
            // The tokens moved; the sandbox's own bookkeeping refusing is a bug worth shouting about.
            return Reply::text(500, &format!("executed in block {} but not recorded: {error}", receipt.height));
        }
        if let Ok(mut heights) = self.heights.lock() {
            heights.insert(key.clone(), (receipt.height, receipt.block_hash.clone()));
        }
        self.notify(key, Status::Executed(execution.clone()));
        if lose_reply {
            return Reply::Lost;
        }
        self.answer(key, &Status::Executed(execution))
    }
}

#[async_trait]
impl RailService for CbdcRail {
    async fn call(&self, method: Method, target: &str, body: Vec<u8>) -> Reply {
        if let Some(reply) = self.sandbox.control(method, target, &body) {
            return reply;
        }
        let (path, query) = split_target(target);
        let parameter =
            |name: &str| query.iter().find(|(key, _)| *key == name).and_then(|(_, value)| value.parse::<usize>().ok());
        match (method, path) {
            (Method::Get, "/health") => {
                let delay = self.sandbox.faults.steady_latency();
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let available = !self.sandbox.faults.outage_at(Utc::now());
                Reply::json(200, &serde_json::json!({ "available": available, "height": self.block_count() }))
            }
            (Method::Post, "/wallets") => match serde_json::from_slice::<OpenWallet>(&body) {
                Ok(request) => match self.open_wallet(&request.wallet, request.currency) {
                    Ok(()) => Reply::json(200, &request),
                    Err(error) => Reply::text(422, &error.to_string()),
                },
                Err(error) => Reply::text(400, &format!("wallet: {error}")),
            },
            (Method::Post, "/quote") => match serde_json::from_slice::<QuoteRequest>(&body) {
                Ok(request) => match self.price(request.amount, request.payout_currency) {
                    Ok((quote, _)) => Reply::json(200, &quote),
                    Err(Refusal(code, message)) => {
                        Reply::json(422, &TransferAnswer::Refused { code: code.into(), message })
                    }
                },
                Err(error) => Reply::text(400, &format!("quote: {error}")),
            },
            (Method::Post, "/transfers") => match serde_json::from_slice::<TransferRequest>(&body) {
                Ok(request) => self.transfer(request).await,
                Err(error) => Reply::text(400, &format!("transfer: {error}")),
            },
            (Method::Get, "/blocks") => {
                let from = parameter("from").unwrap_or(0);
                let max = parameter("max").unwrap_or(BLOCK_PAGE_MAX).min(BLOCK_PAGE_MAX);
                let ledger = self.ledger();
                let page: Vec<_> = ledger.blocks().iter().skip(from).take(max).cloned().collect();
                Reply::json(200, &page)
            }
            (Method::Get, "/verify") => match self.verify() {
                Ok(()) => Reply::json(200, &serde_json::json!({ "valid": true, "blocks": self.block_count() })),
                Err(error) => Reply::json(200, &serde_json::json!({ "valid": false, "error": error.to_string() })),
            },
            (Method::Get, path) if path.starts_with("/transfers/") => {
                match IdempotencyKey::new(&path["/transfers/".len()..]) {
                    Ok(key) => {
                        if self.sandbox.faults.outage_at(Utc::now()) {
                            return Reply::text(503, "platform halted");
                        }
                        self.answer(&key, &self.sandbox.ledger.status(&key))
                    }
                    Err(error) => Reply::text(400, &format!("key: {error}")),
                }
            }
            _ => Reply::text(404, &format!("no such path: {target}")),
        }
    }
}
