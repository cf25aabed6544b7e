//! The token ledger: wallets, an issuer per token, transfers with finality receipts, hash-time-locked
//! escrow, and a hash-chained block log.
//!
//! Every state change is one block: the block carries its operations, the hash of the previous
//! block, and its own hash over both. [`TokenLedger::verify`] recomputes the chain and replays the
//! operations from genesis, so altering, dropping or reordering any block, or any balance, is
//! detected and located.
//!
//! Escrows lock tokens under a SHA-256 hashlock until an expiry. Two escrows locked under the same
//! swap id form a payment-versus-payment swap: revealing the secret settles both in one block, and
//! only while both are locked and unexpired; a leg cannot be claimed alone, and each refunds to its
//! owner after its own expiry. So a swap settles both legs or neither, whoever walks away and when.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use railyard_core::{Currency, Money};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Blocks kept in memory; beyond it the ledger refuses new operations (a sandbox, not an archive).
pub const BLOCKS_MAX: usize = 2_000_000;
/// Longest wallet id.
pub const WALLET_ID_LENGTH_MAX: usize = 64;

/// One state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    OpenWallet {
        wallet: String,
        currency: Currency,
    },
    SetIssuer {
        currency: Currency,
        wallet: String,
    },
    Mint {
        issuer: String,
        to: String,
        amount: Money,
    },
    Burn {
        issuer: String,
        from: String,
        amount: Money,
    },
    Transfer {
        from: String,
        to: String,
        amount: Money,
        memo: String,
    },
    Freeze {
        issuer: String,
        wallet: String,
        frozen: bool,
    },
    /// Locks tokens under a hashlock. With `swap`, the escrow is one leg of a payment-versus-payment
    /// swap: the second lock with the same swap id must mirror the first (same hashlock, parties
    /// swapped), and neither leg can be claimed until both are locked.
    Lock {
        escrow: String,
        from: String,
        to: String,
        amount: Money,
        hashlock: String,
        expires_at: DateTime<Utc>,
        swap: Option<SwapLeg>,
    },
    Claim {
        escrow: String,
        secret: String,
    },
    Refund {
        escrow: String,
    },
}

/// Marks an escrow as one leg of a swap and names the other leg's wallets, so that nobody but the
/// agreed counterparty can lock the second leg.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapLeg {
    pub id: String,
    /// The wallet the other leg pays from.
    pub counter_from: String,
    /// The wallet the other leg pays to.
    pub counter_to: String,
}

/// A block of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub height: u64,
    pub previous_hash: String,
    pub at: DateTime<Utc>,
    pub operations: Vec<Operation>,
    pub hash: String,
}

impl Block {
    fn compute_hash(height: u64, previous_hash: &str, at: DateTime<Utc>, operations: &[Operation]) -> String {
        let mut hasher = Sha256::new();
        hasher.update(height.to_be_bytes());
        hasher.update(previous_hash.as_bytes());
        hasher.update(at.to_rfc3339().as_bytes());
        // serde_json of these plain types is deterministic (fields in declaration order).
        hasher.update(serde_json::to_vec(operations).unwrap_or_default());
        hex::encode(hasher.finalize())
    }
}

/// Proof that an operation is final: the block that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub height: u64,
    pub block_hash: String,
    pub at: DateTime<Utc>,
}

impl Receipt {
    /// A short reference: height and the first 16 hex digits of the block hash.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.height, &self.block_hash[..16.min(self.block_hash.len())])
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscrowState {
    Locked,
    Claimed,
    Refunded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escrow {
    pub id: String,
    pub from: String,
    pub to: String,
    pub amount: Money,
    pub hashlock: String,
    pub expires_at: DateTime<Utc>,
    pub state: EscrowState,
    pub swap: Option<SwapLeg>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wallet {
    pub id: String,
    pub currency: Currency,
    pub balance: i64,
    pub frozen: bool,
}

/// Why an operation was refused. Nothing changes when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("wallet {0:?} does not exist")]
    NoWallet(String),
    #[error("wallet {0:?} already exists")]
    WalletExists(String),
    #[error("wallet id must be 1 to {WALLET_ID_LENGTH_MAX} characters of A-Z a-z 0-9 - _ . :")]
    WalletId,
    #[error("wallet {wallet:?} holds {held}, not {wanted}")]
    Currency { wallet: String, held: Currency, wanted: Currency },
    #[error("wallet {wallet:?} has {balance}, needs {needed}")]
    InsufficientBalance { wallet: String, balance: Money, needed: Money },
    #[error("wallet {0:?} is frozen")]
    Frozen(String),
    #[error("{wallet:?} is not the issuer of {currency}")]
    NotIssuer { wallet: String, currency: Currency },
    #[error("amount must be greater than zero")]
    NotPositive,
    #[error("amount overflows")]
    Overflow,
    #[error("escrow {0:?} does not exist")]
    NoEscrow(String),
    #[error("escrow {0:?} already exists")]
    EscrowExists(String),
    #[error("escrow {escrow:?} is {state:?}")]
    EscrowState { escrow: String, state: EscrowState },
    #[error("escrow {escrow:?} expired at {expires_at}")]
    Expired { escrow: String, expires_at: DateTime<Utc> },
    #[error("escrow {escrow:?} does not expire until {expires_at}")]
    NotExpired { escrow: String, expires_at: DateTime<Utc> },
    #[error("the secret does not match the hashlock of {0:?}")]
    WrongSecret(String),
    #[error("swap {0:?} does not exist")]
    NoSwap(String),
    #[error("swap {0:?} has only one leg locked")]
    SwapIncomplete(String),
    #[error("escrows of a swap must share a hashlock and pay each other")]
    BadSwap,
    #[error("the expiry must be in the future")]
    ExpiryPast,
    #[error("the log holds {BLOCKS_MAX} blocks and takes no more")]
    Full,
}

/// Where [`TokenLedger::verify`] found the log altered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TamperError {
    #[error("block {height}: its hash does not match its contents")]
    Hash { height: u64 },
    #[error("block {height}: previous_hash does not match block {}", height - 1)]
    Link { height: u64 },
    #[error("block {height}: height out of sequence")]
    Height { height: u64 },
    #[error("block {height}: operation {index} does not replay: {reason}")]
    Replay { height: u64, index: usize, reason: String },
    #[error("the balances do not match the log: {0}")]
    State(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    wallets: BTreeMap<String, Wallet>,
    issuers: HashMap<Currency, String>,
    escrows: BTreeMap<String, Escrow>,
    /// Swap id → its legs (one until the counterpart locks, then two).
    swaps: BTreeMap<String, Vec<String>>,
}

/// The token ledger.
#[derive(Debug, Clone, Default)]
pub struct TokenLedger {
    state: State,
    blocks: Vec<Block>,
}

/// Checks a run of blocks read from outside (an exported log, a page of `/blocks`): consecutive
/// heights, each block linked to the one before, each hash matching its contents. A run that starts
/// at height 0 must start from the genesis link. Balances are not replayed (a page may start
/// mid-log); [`TokenLedger::verify`] does that for the whole ledger.
pub fn verify_blocks(blocks: &[Block]) -> Result<(), TamperError> {
    let mut previous: Option<&Block> = None;
    for block in blocks {
        match previous {
            None if block.height == 0 && block.previous_hash != "0".repeat(64) => {
                return Err(TamperError::Link { height: 0 });
            }
            None => {}
            Some(before) if block.height != before.height + 1 => {
                return Err(TamperError::Height { height: block.height });
            }
            Some(before) if block.previous_hash != before.hash => {
                return Err(TamperError::Link { height: block.height });
            }
            Some(_) => {}
        }
        if Block::compute_hash(block.height, &block.previous_hash, block.at, &block.operations) != block.hash {
            return Err(TamperError::Hash { height: block.height });
        }
        previous = Some(block);
    }
    Ok(())
}

pub fn hashlock_of(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn valid_wallet_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= WALLET_ID_LENGTH_MAX
        && id.chars().all(|character| character.is_ascii_alphanumeric() || matches!(character, '-' | '_' | '.' | ':'))
}

impl State {
    fn wallet(&self, id: &str) -> Result<&Wallet, LedgerError> {
        self.wallets.get(id).ok_or_else(|| LedgerError::NoWallet(id.into()))
    }

    fn debit(&mut self, id: &str, amount: Money, allow_frozen: bool) -> Result<(), LedgerError> {
        let wallet = self.wallets.get_mut(id).ok_or_else(|| LedgerError::NoWallet(id.into()))?;
        if wallet.currency != amount.currency() {
            return Err(LedgerError::Currency { wallet: id.into(), held: wallet.currency, wanted: amount.currency() });
        }
        if wallet.frozen && !allow_frozen {
            return Err(LedgerError::Frozen(id.into()));
        }
        if wallet.balance < amount.minor_units() {
            return Err(LedgerError::InsufficientBalance {
                wallet: id.into(),
                balance: Money::from_minor(wallet.balance, wallet.currency),
                needed: amount,
            });
        }
        wallet.balance -= amount.minor_units();
        Ok(())
    }

    fn credit(&mut self, id: &str, amount: Money) -> Result<(), LedgerError> {
        let wallet = self.wallets.get_mut(id).ok_or_else(|| LedgerError::NoWallet(id.into()))?;
        if wallet.currency != amount.currency() {
            return Err(LedgerError::Currency { wallet: id.into(), held: wallet.currency, wanted: amount.currency() });
        }
        if wallet.frozen {
            return Err(LedgerError::Frozen(id.into()));
        }
        wallet.balance = wallet.balance.checked_add(amount.minor_units()).ok_or(LedgerError::Overflow)?;
        Ok(())
    }

    fn issuer_check(&self, issuer: &str, currency: Currency) -> Result<(), LedgerError> {
        if self.issuers.get(&currency).map(String::as_str) != Some(issuer) {
            return Err(LedgerError::NotIssuer { wallet: issuer.into(), currency });
        }
        Ok(())
    }

    fn settle(&mut self, escrow: &str) -> Result<(), LedgerError> {
        let (to, amount) = {
            let entry = self.escrows.get(escrow).ok_or_else(|| LedgerError::NoEscrow(escrow.into()))?;
            (entry.to.clone(), entry.amount)
        };
        self.credit(&to, amount)?;
        if let Some(entry) = self.escrows.get_mut(escrow) {
            entry.state = EscrowState::Claimed;
        }
        Ok(())
    }

    /// Applies one operation at `at`; on error the state may be partly changed, so callers apply to
    /// a copy and keep it only on success.
    fn apply(&mut self, operation: &Operation, at: DateTime<Utc>) -> Result<(), LedgerError> {
        match operation {
            Operation::OpenWallet { wallet, currency } => {
                if !valid_wallet_id(wallet) {
                    return Err(LedgerError::WalletId);
                }
                if self.wallets.contains_key(wallet) {
                    return Err(LedgerError::WalletExists(wallet.clone()));
                }
                self.wallets.insert(
                    wallet.clone(),
                    Wallet { id: wallet.clone(), currency: *currency, balance: 0, frozen: false },
                );
            }
            Operation::SetIssuer { currency, wallet } => {
                let held = self.wallet(wallet)?.currency;
                if held != *currency {
                    return Err(LedgerError::Currency { wallet: wallet.clone(), held, wanted: *currency });
                }
                if let Some(current) = self.issuers.get(currency)
                    && current != wallet
                {
                    return Err(LedgerError::NotIssuer { wallet: wallet.clone(), currency: *currency });
                }
                self.issuers.insert(*currency, wallet.clone());
            }
            Operation::Mint { issuer, to, amount } => {
                positive(*amount)?;
                self.issuer_check(issuer, amount.currency())?;
                self.credit(to, *amount)?;
            }
            Operation::Burn { issuer, from, amount } => {
                positive(*amount)?;
                self.issuer_check(issuer, amount.currency())?;
                self.debit(from, *amount, true)?;
            }
            Operation::Transfer { from, to, amount, .. } => {
                positive(*amount)?;
                self.wallet(to)?;
                self.debit(from, *amount, false)?;
                self.credit(to, *amount)?;
            }
            Operation::Freeze { issuer, wallet, frozen } => {
                let currency = self.wallet(wallet)?.currency;
                self.issuer_check(issuer, currency)?;
                if let Some(entry) = self.wallets.get_mut(wallet) {
                    entry.frozen = *frozen;
                }
            }
            Operation::Lock { escrow, from, to, amount, hashlock, expires_at, swap } => {
                positive(*amount)?;
                if self.escrows.contains_key(escrow) {
                    return Err(LedgerError::EscrowExists(escrow.clone()));
                }
                if *expires_at <= at {
                    return Err(LedgerError::ExpiryPast);
                }
                let target = self.wallet(to)?.currency;
                if target != amount.currency() {
                    return Err(LedgerError::Currency { wallet: to.clone(), held: target, wanted: amount.currency() });
                }
                if let Some(leg) = swap {
                    match self.swaps.get(&leg.id).map(Vec::as_slice) {
                        None => {}
                        Some([first]) => {
                            let counterpart =
                                self.escrows.get(first).ok_or_else(|| LedgerError::NoEscrow(first.clone()))?;
                            let mirrors = counterpart.swap.as_ref().is_some_and(|other| {
                                other.counter_from == *from
                                    && other.counter_to == *to
                                    && leg.counter_from == counterpart.from
                                    && leg.counter_to == counterpart.to
                            });
                            if !mirrors || counterpart.hashlock != *hashlock || counterpart.state != EscrowState::Locked
                            {
                                return Err(LedgerError::BadSwap);
                            }
                        }
                        Some(_) => return Err(LedgerError::BadSwap),
                    }
                }
                self.debit(from, *amount, false)?;
                self.escrows.insert(
                    escrow.clone(),
                    Escrow {
                        id: escrow.clone(),
                        from: from.clone(),
                        to: to.clone(),
                        amount: *amount,
                        hashlock: hashlock.clone(),
                        expires_at: *expires_at,
                        state: EscrowState::Locked,
                        swap: swap.clone(),
                    },
                );
                if let Some(leg) = swap {
                    self.swaps.entry(leg.id.clone()).or_default().push(escrow.clone());
                }
            }
            Operation::Claim { escrow, secret } => {
                let entry = self.escrows.get(escrow).ok_or_else(|| LedgerError::NoEscrow(escrow.clone()))?.clone();
                // Claiming one escrow of a swap claims both, atomically, or nothing.
                let members: Vec<String> = match &entry.swap {
                    Some(leg) => {
                        let legs =
                            self.swaps.get(&leg.id).cloned().ok_or_else(|| LedgerError::NoSwap(leg.id.clone()))?;
                        if legs.len() != 2 {
                            return Err(LedgerError::SwapIncomplete(leg.id.clone()));
                        }
                        legs
                    }
                    None => vec![escrow.clone()],
                };
                for member in &members {
                    let item = self.escrows.get(member).ok_or_else(|| LedgerError::NoEscrow(member.clone()))?;
                    if item.state != EscrowState::Locked {
                        return Err(LedgerError::EscrowState { escrow: member.clone(), state: item.state.clone() });
                    }
                    if at >= item.expires_at {
                        return Err(LedgerError::Expired { escrow: member.clone(), expires_at: item.expires_at });
                    }
                    if hashlock_of(secret) != item.hashlock {
                        return Err(LedgerError::WrongSecret(member.clone()));
                    }
                }
                for member in &members {
                    self.settle(member)?;
                }
            }
            Operation::Refund { escrow } => {
                let entry = self.escrows.get(escrow).ok_or_else(|| LedgerError::NoEscrow(escrow.clone()))?.clone();
                if entry.state != EscrowState::Locked {
                    return Err(LedgerError::EscrowState { escrow: escrow.clone(), state: entry.state });
                }
                if at < entry.expires_at {
                    return Err(LedgerError::NotExpired { escrow: escrow.clone(), expires_at: entry.expires_at });
                }
                // A refund goes back even to a frozen wallet: the tokens were the owner's.
                let wallet =
                    self.wallets.get_mut(&entry.from).ok_or_else(|| LedgerError::NoWallet(entry.from.clone()))?;
                wallet.balance = wallet.balance.checked_add(entry.amount.minor_units()).ok_or(LedgerError::Overflow)?;
                if let Some(item) = self.escrows.get_mut(escrow) {
                    item.state = EscrowState::Refunded;
                }
            }
        }
        Ok(())
    }
}

fn positive(amount: Money) -> Result<(), LedgerError> {
    if amount.is_positive() { Ok(()) } else { Err(LedgerError::NotPositive) }
}

impl TokenLedger {
    pub fn new() -> TokenLedger {
        TokenLedger::default()
    }

    /// Applies `operations` atomically as one block at `at`: all of them, or none.
    pub fn commit(&mut self, operations: Vec<Operation>, at: DateTime<Utc>) -> Result<Receipt, LedgerError> {
        if self.blocks.len() >= BLOCKS_MAX {
            return Err(LedgerError::Full);
        }
        let mut next = self.state.clone();
        for operation in &operations {
            next.apply(operation, at)?;
        }
        let height = self.blocks.len() as u64;
        let previous_hash = self.blocks.last().map(|block| block.hash.clone()).unwrap_or_else(|| "0".repeat(64));
        let hash = Block::compute_hash(height, &previous_hash, at, &operations);
        self.blocks.push(Block { height, previous_hash, at, operations, hash: hash.clone() });
        self.state = next;
        Ok(Receipt { height, block_hash: hash, at })
    }

    pub fn apply(&mut self, operation: Operation, at: DateTime<Utc>) -> Result<Receipt, LedgerError> {
        self.commit(vec![operation], at)
    }

    pub fn wallet(&self, id: &str) -> Option<&Wallet> {
        self.state.wallets.get(id)
    }

    pub fn balance(&self, id: &str) -> Option<Money> {
        self.wallet(id).map(|wallet| Money::from_minor(wallet.balance, wallet.currency))
    }

    pub fn escrow(&self, id: &str) -> Option<&Escrow> {
        self.state.escrows.get(id)
    }

    /// Tokens of `currency` in existence: wallets plus locked escrows.
    pub fn supply(&self, currency: Currency) -> i64 {
        let held: i64 =
            self.state.wallets.values().filter(|wallet| wallet.currency == currency).map(|wallet| wallet.balance).sum();
        let locked: i64 = self
            .state
            .escrows
            .values()
            .filter(|escrow| escrow.state == EscrowState::Locked && escrow.amount.currency() == currency)
            .map(|escrow| escrow.amount.minor_units())
            .sum();
        held + locked
    }

    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// Tests only: the log, mutable, to show that tampering is caught.
    pub fn blocks_mut_for_tamper_test(&mut self) -> &mut Vec<Block> {
        &mut self.blocks
    }

    /// Tests only: a balance changed behind the log's back.
    pub fn set_balance_for_tamper_test(&mut self, wallet: &str, balance: i64) {
        if let Some(entry) = self.state.wallets.get_mut(wallet) {
            entry.balance = balance;
        }
    }

    /// Recomputes every hash and link and replays every operation from genesis; the replayed state
    /// must equal the current one.
    pub fn verify(&self) -> Result<(), TamperError> {
        let mut previous = "0".repeat(64);
        let mut replay = State::default();
        for (index, block) in self.blocks.iter().enumerate() {
            if block.height != index as u64 {
                return Err(TamperError::Height { height: block.height });
            }
            if block.previous_hash != previous {
                return Err(TamperError::Link { height: block.height });
            }
            if Block::compute_hash(block.height, &block.previous_hash, block.at, &block.operations) != block.hash {
                return Err(TamperError::Hash { height: block.height });
            }
            for (position, operation) in block.operations.iter().enumerate() {
                replay.apply(operation, block.at).map_err(|error| TamperError::Replay {
                    height: block.height,
                    index: position,
                    reason: error.to_string(),
                })?;
            }
            previous = block.hash.clone();
        }
        if replay != self.state {
            let differing = self
                .state
                .wallets
                .values()
                .find(|wallet| replay.wallets.get(&wallet.id) != Some(wallet))
                .map(|wallet| format!("wallet {:?}", wallet.id))
                .unwrap_or_else(|| "escrows or issuers".into());
            return Err(TamperError::State(differing));
        }
        Ok(())
    }
}
