//! FX providers against the demo configuration and the bundled ECB rates: quotes computed by hand,
//! triangulation, deliver-mode inverses, dated rates, and refused rate sets.

use chrono::{DateTime, NaiveDate, Utc};
use railyard_config::TreasuryConfig;
use railyard_core::{Currency, Money, Sign};
use railyard_fx::{AmountSide, FxBook, FxError, QuoteRequest, RateHistory};
use rust_decimal_macros::dec;

const DEMO: &str = include_str!("../../config/demo.toml");

fn demo() -> TreasuryConfig {
    railyard_config::parse(DEMO, "demo.toml").unwrap()
}

fn c(code: &str) -> Currency {
    Currency::from_code(code).unwrap()
}

fn money(text: &str, code: &str) -> Money {
    Money::parse(text, c(code), Sign::Positive).unwrap()
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-02T10:00:00Z").unwrap().with_timezone(&Utc)
}

fn book() -> FxBook {
    FxBook::build(&demo().fx_providers, RateHistory::bundled_daily().latest()).unwrap()
}

#[test]
fn direct_quote_matches_hand_computation() {
    // mid = 6.0692 / 1.1172 = 5.43250984604 (12 significant digits); atlas-fx keeps 55 bps on USD/BRL:
    // rate = 5.43250984604 x 0.9945, truncated to 12 digits = 5.40263104188.
    let request =
        QuoteRequest { base: c("USD"), quote: c("BRL"), amount: money("1000", "USD"), side: AmountSide::Send };
    let quotes = book().quote(&request, now()).unwrap();
    let best = &quotes[0];
    assert_eq!(best.provider.as_str(), "atlas-fx");
    assert_eq!(best.path, vec![c("USD"), c("BRL")]);
    assert_eq!(best.mid_rate, dec!(5.43250984604));
    assert_eq!(best.rate, dec!(5.40263104188));
    assert_eq!(best.receive, money("5402.63", "BRL"));
    assert_eq!(best.spread_paid, money("29.88", "BRL"));
    assert_eq!((best.expires_at - best.created_at).num_seconds(), 30);
    assert!(best.is_valid_at(now()));
    assert!(!best.is_valid_at(best.expires_at));
    assert!(best.id.starts_with("quo_"));
}

#[test]
fn deliver_quote_sends_the_least_that_delivers() {
    let request =
        QuoteRequest { base: c("USD"), quote: c("BRL"), amount: money("5000", "BRL"), side: AmountSide::Deliver };
    let best = &book().quote(&request, now()).unwrap()[0];
    // 925.47 USD converts to 4999.97 BRL; 925.48 USD to 5000.03 BRL.
    assert_eq!(best.send, money("925.48", "USD"));
    assert_eq!(best.receive, money("5000", "BRL"));
}

#[test]
fn triangulation_when_no_direct_pair() {
    // harbour-fx quotes EUR/HKD, HKD/THB, EUR/USD and USD/THB but not EUR/THB.
    let request =
        QuoteRequest { base: c("EUR"), quote: c("THB"), amount: money("1000", "EUR"), side: AmountSide::Send };
    let quotes = book().quote(&request, now()).unwrap();
    let paths: Vec<Vec<&str>> = quotes.iter().map(|q| q.path.iter().map(|c| c.code()).collect()).collect();
    assert!(paths.contains(&vec!["EUR", "HKD", "THB"]), "{paths:?}");
    assert!(paths.contains(&vec!["EUR", "USD", "THB"]), "{paths:?}");
    for quote in &quotes {
        assert!(quote.rate < quote.mid_rate, "spreads are kept on both legs");
        assert!(quote.spread_paid.is_positive());
    }
    assert!(quotes.windows(2).all(|pair| pair[0].receive.minor_units() >= pair[1].receive.minor_units()));
}

#[test]
fn dated_rates() {
    let history = RateHistory::bundled_history();
    let day = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
    let book = FxBook::build(&demo().fx_providers, history.as_of(day).unwrap()).unwrap();
    assert_eq!(book.reference().per_eur(c("USD")), Some(dec!(1.0813)));
    let request =
        QuoteRequest { base: c("USD"), quote: c("BRL"), amount: money("1000", "USD"), side: AmountSide::Send };
    let best = &book.quote(&request, now()).unwrap()[0];
    assert_eq!(best.rates_date, day);
    assert!(best.mid_rate > dec!(4.9) && best.mid_rate < dec!(5.0), "{}", best.mid_rate);
}

#[test]
fn arbitrage_cycle_is_refused_and_reported() {
    // harbour-fx buys BRL far above the market: USD→BRL at harbour, BRL→USD at atlas makes money.
    let text = DEMO.replacen(
        "pairs = [\"USD/HKD\"",
        "fixed_rates = { \"USD/BRL\" = \"6.0\" }\npairs = [\"USD/BRL\", \"USD/HKD\"",
        1,
    );
    let config = railyard_config::parse(&text, "arbitrage.toml").unwrap();
    let error = FxBook::build(&config.fx_providers, RateHistory::bundled_daily().latest()).unwrap_err();
    let FxError::Arbitrage { steps, product } = &error else { panic!("{error}") };
    assert!(*product > dec!(1), "{error}");
    assert!(steps.iter().any(|step| step.provider == "harbour-fx" && step.base == c("USD") && step.quote == c("BRL")));
    assert!(steps.iter().any(|step| step.provider == "atlas-fx"));
    assert_eq!(steps.first().map(|s| s.base), steps.last().map(|s| s.quote), "the steps close a loop");
    assert!(error.to_string().contains("arbitrage cycle"), "{error}");
}

#[test]
fn pairs_without_rates_are_refused() {
    let text = DEMO.replacen("pairs = [\"USD/HKD\"", "pairs = [\"USD/RUB\", \"USD/HKD\"", 1);
    let config = railyard_config::parse(&text, "rub.toml").unwrap();
    let error = FxBook::build(&config.fx_providers, RateHistory::bundled_daily().latest()).unwrap_err();
    assert!(matches!(error, FxError::MissingPairRate { ref currency, .. } if currency.code() == "RUB"), "{error}");
}

#[test]
fn bad_requests() {
    let book = book();
    let wrong = QuoteRequest { base: c("USD"), quote: c("BRL"), amount: money("10", "EUR"), side: AmountSide::Send };
    assert!(matches!(book.quote(&wrong, now()), Err(FxError::AmountCurrency { .. })));
    let unknown = QuoteRequest { base: c("USD"), quote: c("ZAR"), amount: money("10", "USD"), side: AmountSide::Send };
    assert!(matches!(book.quote(&unknown, now()), Err(FxError::NoProvider { .. })));
    let same = QuoteRequest { base: c("USD"), quote: c("USD"), amount: money("10", "USD"), side: AmountSide::Send };
    assert!(matches!(book.quote(&same, now()), Err(FxError::SameCurrency { .. })));
}
