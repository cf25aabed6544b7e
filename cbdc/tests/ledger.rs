//! The token ledger: issuer roles, transfers, tamper detection, and payment versus payment under
//! every interleaving of both parties' moves and the clock.

use chrono::{DateTime, Duration, Utc};
use railyard_cbdc::ledger::{EscrowState, LedgerError, Operation, SwapLeg, TamperError, TokenLedger, hashlock_of};
use railyard_core::{Currency, Money};

fn c(code: &str) -> Currency {
    Currency::from_code(code).unwrap()
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z").unwrap().with_timezone(&Utc)
}

fn usd(minor: i64) -> Money {
    Money::from_minor(minor, c("USD"))
}

fn eur(minor: i64) -> Money {
    Money::from_minor(minor, c("EUR"))
}

/// Alice holds 1,000.00 USD tokens, Bob 900.00 EUR tokens; each token has its issuer.
fn ledger() -> TokenLedger {
    let mut ledger = TokenLedger::new();
    let open = |wallet: &str, currency: &str| Operation::OpenWallet { wallet: wallet.into(), currency: c(currency) };
    ledger
        .commit(
            vec![
                open("fed", "USD"),
                open("ecb", "EUR"),
                open("alice-usd", "USD"),
                open("alice-eur", "EUR"),
                open("bob-usd", "USD"),
                open("bob-eur", "EUR"),
                Operation::SetIssuer { currency: c("USD"), wallet: "fed".into() },
                Operation::SetIssuer { currency: c("EUR"), wallet: "ecb".into() },
                Operation::Mint { issuer: "fed".into(), to: "alice-usd".into(), amount: usd(100_000) },
                Operation::Mint { issuer: "ecb".into(), to: "bob-eur".into(), amount: eur(90_000) },
            ],
            t0(),
        )
        .unwrap();
    ledger
}

#[test]
fn only_the_issuer_mints_and_burns() {
    let mut ledger = ledger();
    let before = ledger.blocks().len();
    let refused =
        ledger.apply(Operation::Mint { issuer: "alice-usd".into(), to: "alice-usd".into(), amount: usd(1) }, t0());
    assert!(matches!(refused, Err(LedgerError::NotIssuer { .. })));
    let refused = ledger.apply(Operation::Mint { issuer: "ecb".into(), to: "alice-usd".into(), amount: usd(1) }, t0());
    assert!(matches!(refused, Err(LedgerError::NotIssuer { .. })));
    assert_eq!(ledger.blocks().len(), before, "a refused operation writes no block");
    ledger.apply(Operation::Burn { issuer: "fed".into(), from: "alice-usd".into(), amount: usd(5_000) }, t0()).unwrap();
    assert_eq!(ledger.supply(c("USD")), 95_000);
    // An issuer cannot be replaced by another wallet.
    let refused = ledger.apply(Operation::SetIssuer { currency: c("USD"), wallet: "alice-usd".into() }, t0());
    assert!(refused.is_err());
}

#[test]
fn transfers_are_final_with_a_receipt_and_refusals_change_nothing() {
    let mut ledger = ledger();
    let receipt = ledger
        .apply(
            Operation::Transfer {
                from: "alice-usd".into(),
                to: "bob-usd".into(),
                amount: usd(2_500),
                memo: "rent".into(),
            },
            t0(),
        )
        .unwrap();
    assert_eq!(receipt.height, 1);
    assert_eq!(receipt.block_hash, ledger.blocks()[1].hash);
    assert_eq!(ledger.balance("bob-usd"), Some(usd(2_500)));
    for (operation, expected) in [
        (
            Operation::Transfer {
                from: "alice-usd".into(),
                to: "bob-usd".into(),
                amount: usd(1_000_000),
                memo: String::new(),
            },
            "has 975.00 USD",
        ),
        (
            Operation::Transfer { from: "alice-usd".into(), to: "bob-eur".into(), amount: usd(1), memo: String::new() },
            "holds EUR",
        ),
        (
            Operation::Transfer { from: "alice-usd".into(), to: "nobody".into(), amount: usd(1), memo: String::new() },
            "does not exist",
        ),
        (
            Operation::Transfer { from: "alice-usd".into(), to: "bob-usd".into(), amount: usd(0), memo: String::new() },
            "greater than zero",
        ),
    ] {
        let error = ledger.apply(operation, t0()).unwrap_err().to_string();
        assert!(error.contains(expected), "{error}");
    }
    ledger.apply(Operation::Freeze { issuer: "fed".into(), wallet: "bob-usd".into(), frozen: true }, t0()).unwrap();
    let frozen = ledger.apply(
        Operation::Transfer { from: "bob-usd".into(), to: "alice-usd".into(), amount: usd(1), memo: String::new() },
        t0(),
    );
    assert!(matches!(frozen, Err(LedgerError::Frozen(_))));
    assert_eq!(ledger.balance("alice-usd"), Some(usd(97_500)));
    ledger.verify().unwrap();
}

#[test]
fn tampering_with_the_log_or_the_balances_is_detected() {
    let mut base = ledger();
    for amount in [100, 200, 300] {
        base.apply(
            Operation::Transfer {
                from: "alice-usd".into(),
                to: "bob-usd".into(),
                amount: usd(amount),
                memo: String::new(),
            },
            t0(),
        )
        .unwrap();
    }
    base.verify().unwrap();

    let mut altered = base.clone();
    if let Operation::Transfer { amount, .. } = &mut altered.blocks_mut_for_tamper_test()[2].operations[0] {
        *amount = usd(1);
    }
    assert_eq!(altered.verify(), Err(TamperError::Hash { height: 2 }));

    let mut rehashed = base.clone();
    {
        let blocks = rehashed.blocks_mut_for_tamper_test();
        blocks[2].hash = "f".repeat(64);
    }
    assert!(matches!(rehashed.verify(), Err(TamperError::Hash { height: 2 })));

    let mut dropped = base.clone();
    dropped.blocks_mut_for_tamper_test().remove(1);
    assert!(matches!(dropped.verify(), Err(TamperError::Height { .. } | TamperError::Link { .. })));

    let mut balance = base.clone();
    balance.set_balance_for_tamper_test("bob-usd", 1_000_000);
    assert!(matches!(balance.verify(), Err(TamperError::State(_))));
}

/// One party's or the clock's move in a swap of 500.00 USD (Alice → Bob) for 450.00 EUR
/// (Bob → Alice). Alice's lock expires later than Bob's, as the initiator's must.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    AliceLocks,
    BobLocks,
    AliceReveals,
    BobClaimsWithSeenSecret,
    ClockPastBobExpiry,
    ClockPastAliceExpiry,
    AliceRefunds,
    BobRefunds,
}

fn leg(id: &str, counter_from: &str, counter_to: &str) -> SwapLeg {
    SwapLeg { id: id.into(), counter_from: counter_from.into(), counter_to: counter_to.into() }
}

const SECRET: &str = "correct horse battery staple";

fn play(moves: &[Move]) -> TokenLedger {
    let mut ledger = ledger();
    let mut now = t0() + Duration::seconds(1);
    let bob_expiry = t0() + Duration::minutes(10);
    let alice_expiry = t0() + Duration::minutes(20);
    let hashlock = hashlock_of(SECRET);
    let mut secret_seen = false;
    for step in moves {
        // Every move may be refused by the ledger (wrong time, wrong state): a refusal changes nothing.
        let _ = match step {
            Move::AliceLocks => ledger.apply(
                Operation::Lock {
                    escrow: "a".into(),
                    from: "alice-usd".into(),
                    to: "bob-usd".into(),
                    amount: usd(50_000),
                    hashlock: hashlock.clone(),
                    expires_at: alice_expiry,
                    swap: Some(leg("swap-1", "bob-eur", "alice-eur")),
                },
                now,
            ),
            Move::BobLocks => ledger.apply(
                Operation::Lock {
                    escrow: "b".into(),
                    from: "bob-eur".into(),
                    to: "alice-eur".into(),
                    amount: eur(45_000),
                    hashlock: hashlock.clone(),
                    expires_at: bob_expiry,
                    swap: Some(leg("swap-1", "alice-usd", "bob-usd")),
                },
                now,
            ),
            Move::AliceReveals => {
                let result = ledger.apply(Operation::Claim { escrow: "b".into(), secret: SECRET.into() }, now);
                secret_seen = true;
                result
            }
            Move::BobClaimsWithSeenSecret if secret_seen => {
                ledger.apply(Operation::Claim { escrow: "a".into(), secret: SECRET.into() }, now)
            }
            Move::BobClaimsWithSeenSecret => Err(LedgerError::WrongSecret("a".into())),
            Move::ClockPastBobExpiry => {
                now = now.max(bob_expiry + Duration::seconds(1));
                Ok(railyard_cbdc::ledger::Receipt { height: 0, block_hash: String::new(), at: now })
            }
            Move::ClockPastAliceExpiry => {
                now = now.max(alice_expiry + Duration::seconds(1));
                Ok(railyard_cbdc::ledger::Receipt { height: 0, block_hash: String::new(), at: now })
            }
            Move::AliceRefunds => ledger.apply(Operation::Refund { escrow: "a".into() }, now),
            Move::BobRefunds => ledger.apply(Operation::Refund { escrow: "b".into() }, now),
        };
    }
    // Afterwards both parties eventually reclaim whatever is still locked.
    let end = alice_expiry + Duration::hours(1);
    for escrow in ["a", "b"] {
        let _ = ledger.apply(Operation::Refund { escrow: escrow.into() }, end);
    }
    ledger
}

fn permutations(items: &[Move]) -> Vec<Vec<Move>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for index in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(index);
        for mut tail in permutations(&rest) {
            tail.insert(0, first);
            all.push(tail);
        }
    }
    all
}

#[test]
fn a_swap_settles_both_legs_or_neither_under_every_interleaving() {
    let everything = [
        Move::AliceLocks,
        Move::BobLocks,
        Move::AliceReveals,
        Move::BobClaimsWithSeenSecret,
        Move::ClockPastBobExpiry,
        Move::ClockPastAliceExpiry,
        Move::AliceRefunds,
        Move::BobRefunds,
    ];
    // Every subset of moves (a party that walks away simply never makes its remaining moves), in
    // every order.
    let mut runs = 0;
    let mut settled = 0;
    for mask in 0_u32..(1 << everything.len()) {
        let chosen: Vec<Move> = everything
            .iter()
            .enumerate()
            .filter(|(index, _)| mask & (1 << index) != 0)
            .map(|(_, step)| *step)
            .collect();
        for order in permutations(&chosen) {
            let ledger = play(&order);
            runs += 1;
            let alice_got_eur = ledger.balance("alice-eur") == Some(eur(45_000));
            let bob_got_usd = ledger.balance("bob-usd") == Some(usd(50_000));
            assert_eq!(alice_got_eur, bob_got_usd, "one leg settled without the other: {order:?}");
            if alice_got_eur {
                settled += 1;
                assert_eq!(ledger.balance("alice-usd"), Some(usd(50_000)), "{order:?}");
                assert_eq!(ledger.balance("bob-eur"), Some(eur(45_000)), "{order:?}");
            } else {
                assert_eq!(ledger.balance("alice-usd"), Some(usd(100_000)), "neither: Alice made whole: {order:?}");
                assert_eq!(ledger.balance("bob-eur"), Some(eur(90_000)), "neither: Bob made whole: {order:?}");
            }
            for escrow in ["a", "b"] {
                if let Some(entry) = ledger.escrow(escrow) {
                    assert_ne!(entry.state, EscrowState::Locked, "{escrow} still locked: {order:?}");
                }
            }
            assert_eq!(ledger.supply(c("USD")), 100_000);
            assert_eq!(ledger.supply(c("EUR")), 90_000);
            ledger.verify().unwrap();
        }
    }
    // Sanity: the exploration covered both outcomes many times.
    assert!(runs > 100_000, "{runs}");
    assert!(settled > 1_000 && settled < runs, "{settled} of {runs}");
}

#[test]
fn a_leg_cannot_be_claimed_alone_or_after_expiry_or_with_a_wrong_secret() {
    let mut ledger = ledger();
    let now = t0() + Duration::seconds(1);
    ledger
        .apply(
            Operation::Lock {
                escrow: "b".into(),
                from: "bob-eur".into(),
                to: "alice-eur".into(),
                amount: eur(45_000),
                hashlock: hashlock_of(SECRET),
                expires_at: t0() + Duration::minutes(10),
                swap: Some(leg("s", "alice-usd", "bob-usd")),
            },
            now,
        )
        .unwrap();
    let alone = ledger.apply(Operation::Claim { escrow: "b".into(), secret: SECRET.into() }, now);
    assert_eq!(alone, Err(LedgerError::SwapIncomplete("s".into())));
    // A counterpart that does not mirror the first leg is refused.
    let wrong = ledger.apply(
        Operation::Lock {
            escrow: "a".into(),
            from: "alice-usd".into(),
            to: "bob-usd".into(),
            amount: usd(50_000),
            hashlock: hashlock_of("another secret"),
            expires_at: t0() + Duration::minutes(20),
            swap: Some(leg("s", "bob-eur", "alice-eur")),
        },
        now,
    );
    assert_eq!(wrong, Err(LedgerError::BadSwap));
    let early = ledger.apply(Operation::Refund { escrow: "b".into() }, now);
    assert!(matches!(early, Err(LedgerError::NotExpired { .. })));
    ledger.apply(Operation::Refund { escrow: "b".into() }, t0() + Duration::minutes(11)).unwrap();
    assert_eq!(ledger.balance("bob-eur"), Some(eur(90_000)));
}
