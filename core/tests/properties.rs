//! Property tests: parsing and formatting round-trip, minor units round-trip, and no input panics.

use proptest::prelude::*;
use railyard_core::{Currency, Decimal, FeeSchedule, Money, Rate, RoundingMode, Sign};

fn currency() -> impl Strategy<Value = Currency> {
    let all = Currency::all();
    (0..all.len()).prop_map(move |index| all[index])
}

fn mode() -> impl Strategy<Value = RoundingMode> {
    (0..RoundingMode::ALL.len()).prop_map(|index| RoundingMode::ALL[index])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn format_then_parse_is_identity(minor in any::<i64>(), currency in currency()) {
        let money = Money::from_minor(minor, currency);
        let text = money.amount_text();
        let fraction = text.split_once('.').map(|(_, f)| f.len() as u32).unwrap_or(0);
        prop_assert_eq!(fraction, currency.exponent());
        prop_assert_eq!(Money::parse(&text, currency, Sign::Any).unwrap(), money);
    }

    #[test]
    fn minor_units_round_trip_through_decimal(minor in any::<i64>(), currency in currency()) {
        let money = Money::from_minor(minor, currency);
        let back = Money::from_decimal_exact(money.to_decimal(), currency).unwrap();
        prop_assert_eq!(back, money);
    }

    #[test]
    fn json_round_trip(minor in any::<i64>(), currency in currency()) {
        let money = Money::from_minor(minor, currency);
        let json = serde_json::to_string(&money).unwrap();
        prop_assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), money);
    }

    #[test]
    fn parse_never_panics(text in "\\PC{0,60}", currency in currency()) {
        let _ = Money::parse(&text, currency, Sign::Positive);
    }

    #[test]
    fn parse_of_numbers_agrees_with_decimal(text in "-?[0-9]{1,20}(\\.[0-9]{1,4})?", currency in currency()) {
        match Money::parse(&text, currency, Sign::Any) {
            Ok(money) => prop_assert_eq!(money.to_decimal(), text.parse::<Decimal>().unwrap()),
            Err(error) => {
                let decimals = text.split_once('.').map(|(_, f)| f.len() as u32).unwrap_or(0);
                let too_many = decimals > currency.exponent();
                let message = error.to_string();
                prop_assert!(too_many || message.contains("too large"), "{}: {}", text, message);
            }
        }
    }

    #[test]
    fn arithmetic_never_panics(a in any::<i64>(), b in any::<i64>(), currency in currency()) {
        let (a, b) = (Money::from_minor(a, currency), Money::from_minor(b, currency));
        let _ = a.checked_add(b);
        let _ = a.checked_sub(b);
        let _ = a.checked_neg();
    }

    #[test]
    fn decimal_conversion_never_panics(mantissa in any::<i64>(), scale in 0_u32..28, currency in currency(), mode in mode()) {
        let value = Decimal::new(mantissa, scale);
        if let Ok(money) = Money::from_decimal(value, currency, mode) {
            let difference = (money.to_decimal() - value).abs();
            prop_assert!(difference < Money::from_minor(1, currency).to_decimal());
        }
    }

    #[test]
    fn conversion_and_inverse_agree(
        send in 1_i64..1_000_000_000_000,
        rate_mantissa in 1_i64..10_000_000_000,
        rate_scale in 0_u32..10,
        base in currency(),
        quote in currency(),
        mode in mode(),
    ) {
        let rate = Rate::new(base, quote, Decimal::new(rate_mantissa, rate_scale)).unwrap();
        if let Ok(received) = rate.convert(Money::from_minor(send, base), mode)
            && let Ok(needed) = rate.convert_inverse(received, mode)
        {
            prop_assert!(needed.minor_units() <= send);
            prop_assert!(rate.convert(needed, mode).unwrap().minor_units() >= received.minor_units());
        }
    }

    #[test]
    fn fees_never_panic_and_stay_in_bounds(
        send in any::<i64>(),
        fixed in 0_i64..1_000_000,
        bps_hundredths in 0_i64..999_999,
        currency in currency(),
    ) {
        let fees = FeeSchedule::new(Money::from_minor(fixed, currency), Decimal::new(bps_hundredths, 2), None, None).unwrap();
        if let Ok(fee) = fees.fee_for(Money::from_minor(send, currency))
            && send >= 0
        {
            prop_assert!(fee.minor_units() >= fixed);
        }
    }
}
