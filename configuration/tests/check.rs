//! The demo configuration parses, and broken copies of it are reported at the right line with the
//! right reason. Each case edits the demo file the way a treasurer might get it wrong.

use railyard_config::{OperatingHours, RailKind, Scope, parse};

const DEMO: &str = include_str!("../../config/demo.toml");

fn line_of(text: &str, needle: &str) -> usize {
    let offset = text.find(needle).unwrap_or_else(|| panic!("{needle:?} not in the text"));
    text[..offset].matches('\n').count() + 1
}

/// Replaces the first `from` in the demo with `to`, parses, and expects an error on the line where
/// the replacement starts whose message contains `message`.
fn check(from: &str, to: &str, message: &str) {
    assert!(DEMO.contains(from), "{from:?} is not in the demo file");
    let broken = DEMO.replacen(from, to, 1);
    // The error belongs on the first line the edit changed.
    let unchanged = to.lines().zip(from.lines()).take_while(|(new, old)| new == old).count();
    let line = line_of(DEMO, from) + unchanged;
    let errors = parse(&broken, "demo.toml").expect_err("the broken file must be refused");
    let found = errors.diagnostics.iter().any(|d| d.line == line && d.message.contains(message));
    assert!(found, "want line {line} containing {message:?}; got:\n{errors}");
}

#[test]
fn demo_configuration_is_valid() {
    let config = parse(DEMO, "demo.toml").unwrap_or_else(|errors| panic!("{errors}"));
    assert!(config.currencies().len() >= 10);
    assert!(config.rails.len() >= 6);
    for kind in RailKind::ALL {
        assert!(config.rails.iter().any(|rail| rail.kind == kind), "no {kind} rail");
    }
    assert_eq!(config.fx_providers.len(), 2);
    for rail in &config.rails {
        for currency in &rail.currencies {
            assert!(config.liquidity_for(rail.id.as_str(), *currency).is_some());
            assert!(rail.fees.contains_key(currency));
        }
    }
    let sic = config.rail("sic-ch").unwrap();
    assert!(matches!(sic.hours, OperatingHours::Weekly(_)));
    let scopes: Vec<Scope> = config.tenants.iter().flat_map(|t| t.keys.iter().flat_map(|k| k.scopes.clone())).collect();
    for scope in Scope::ALL {
        assert!(scopes.contains(&scope), "no key with scope {scope:?}");
    }
}

#[test]
fn demo_keys_hash_to_the_documented_keys() {
    use sha2::{Digest, Sha256};
    let config = parse(DEMO, "demo.toml").unwrap();
    let hashes: Vec<[u8; 32]> = config.tenants.iter().flat_map(|t| t.keys.iter().map(|k| k.sha256)).collect();
    for key in ["rk_demo_psp", "rk_demo_treasury", "rk_demo_approver"] {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        assert!(hashes.contains(&digest), "{key} is not configured");
    }
}

#[test]
fn broken_copies_name_line_and_reason() {
    check("currencies = [\"EUR\"]", "currencies = [\"EUX\"]", "\"EUX\" is not an ISO 4217 currency code");
    check("currencies = [\"EUR\"]", "currencies = [\"XAU\"]", "XAU has no minor unit");
    check("currencies = [\"EUR\"]", "currencies = [\"HRK\"]", "HRK is superseded by EUR");
    check("currencies = [\"EUR\"]", "currencies = []", "serves no currency");
    check("fixed = \"0.20\"\nbps = \"0\"", "fixed = \"-0.20\"\nbps = \"0\"", "must not be negative");
    check("fixed = \"0.20\"\nbps = \"0\"", "fixed = \"0.205\"\nbps = \"0\"", "EUR allows 2 decimal place(s)");
    check("fixed = \"150\"", "fixed = \"150.5\"", "JPY allows 0 decimal place(s)");
    check("bps = \"0\"", "bps = 0.5", "is a float (0.5)");
    check(
        "windows = [{ days = \"mon-fri\", open = \"06:00\", close = \"18:00\" }]",
        "windows = [{ days = \"mon-fri\", open = \"06:00\", close = \"18:00\" }, { days = \"fri\", open = \"17:00\", close = \"20:00\" }]",
        "overlapping hours",
    );
    check(
        "open = \"08:30\", close = \"15:30\"",
        "open = \"08:30\", close = \"07:30\"",
        "closes at 07:30 before it opens at 08:30",
    );
    check("timezone = \"Asia/Tokyo\"", "timezone = \"Asia/Atlantis\"", "unknown time zone");
    check("kind = \"cbdc\"", "kind = \"wire\"", "unknown rail kind \"wire\"");
    check("max_hops = 4", "max_hops = 40", "between 1 and 8");
    check("quote_ttl_seconds = 30", "quote_ttl_seconds = 0", "between 1 and 3600");
    check("rounding = \"floor\"", "rounding = \"bankers\"", "unknown rounding mode");
    check("availability_prior = \"0.995\"", "availability_prior = \"1.5\"", "is a probability");
    check(
        "rail = \"sepa-inst\"\ncurrency = \"EUR\"",
        "rail = \"sepa-instant\"\ncurrency = \"EUR\"",
        "no rail has id \"sepa-instant\"",
    );
    check(
        "rail = \"rtp-us\"\ncurrency = \"USD\"",
        "rail = \"rtp-us\"\ncurrency = \"EUR\"",
        "rail rtp-us does not serve EUR",
    );
    check("scopes = [\"psp\"]", "scopes = [\"superuser\"]", "unknown scope \"superuser\"");
    check("id = \"fps-uk\"", "id = \"sepa-inst\"", "id \"sepa-inst\" is used twice");
    check(
        "[rails.limits.GBP]\nmax = \"1000000.00\"",
        "[rails.limits.GBP]\nmax = \"1000000.00\"\nmaximum = \"5\"",
        "unknown key `maximum`",
    );
    check("pairs = [\"USD/HKD\"", "pairs = [\"USD/USD\"", "converts a currency to itself");
    check(
        "max = \"10.00\"\n\n[rails.limits.BRL]",
        "min = \"0.20\"\nmax = \"0.10\"\n\n[rails.limits.BRL]",
        "is above the maximum",
    );
    check("block_score = 90 ", "block_score = 40 ", "`block_score` 40 must be above `approval_score` 50");
    check("screening_threshold = \"0.92\"", "screening_threshold = \"1.2\"", "similarity above 0 and at most 1");
    check(
        "USD = \"100000.00\"\nEUR = \"100000.00\"",
        "USD = \"100000.001\"\nEUR = \"100000.00\"",
        "[risk.approval_amount.USD]",
    );
    check("unusual_amount_multiple = \"20\"", "unusual_amount_multiple = \"1\"", "must be above 1");
    check("new_beneficiary = 10", "new_beneficiary = 101", "new_beneficiary");
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let broken = DEMO
        .replacen("currencies = [\"EUR\"]", "currencies = [\"EUX\"]", 1)
        .replacen("fixed = \"150\"", "fixed = \"150.5\"", 1)
        .replacen("max_hops = 4", "max_hops = 0", 1);
    let errors = parse(&broken, "demo.toml").unwrap_err();
    assert!(errors.diagnostics.len() >= 3, "{errors}");
    let lines: Vec<usize> = errors.diagnostics.iter().map(|d| d.line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "errors are reported in file order");
}

#[test]
fn syntax_errors_have_positions() {
    let errors = parse("[routing\nmax_hops = 4\n", "x.toml").unwrap_err();
    assert_eq!(errors.diagnostics[0].line, 1);
    assert!(errors.diagnostics[0].message.starts_with("TOML syntax"), "{errors}");
    let text = errors.to_string();
    assert!(text.starts_with("x.toml:1:"), "{text}");
}

#[test]
fn missing_sections_are_named() {
    let errors = parse("", "empty.toml").unwrap_err().to_string();
    assert!(errors.contains("missing required key `routing`"), "{errors}");
    assert!(errors.contains("missing required key `rails`"), "{errors}");
}
