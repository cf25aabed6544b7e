//! FX providers' rates and quotes.
//!
//! An [`FxBook`] holds, for every provider and every pair it quotes (in both directions), the mid rate
//! (the reference rate crossed through EUR, or the provider's own fixed rate) and the rate after the
//! provider's spread. Building a book refuses pairs without a rate and sets of rates with an
//! arbitrage cycle. Quotes are computed from a book: directly when the provider quotes the pair, or
//! triangulated through a currency the provider quotes against both.

use chrono::{DateTime, Duration, Utc};
use railyard_config::{FxProviderConfig, Identifier};
use railyard_core::{Currency, Decimal, Money, Rate, RoundingMode};
use serde::Serialize;

use crate::ecb::ReferenceRates;
use crate::{FxError, arbitrage};

/// One direction of one provider's pair.
#[derive(Debug, Clone, Serialize)]
pub struct Conversion {
    pub provider: Identifier,
    #[serde(skip)]
    pub provider_index: usize,
    pub base: Currency,
    pub quote: Currency,
    /// The reference mid, or the provider's fixed rate.
    pub mid: Rate,
    /// The rate the customer gets: `mid` minus the spread.
    pub rate: Rate,
    pub spread_bps: Decimal,
    pub rounding: RoundingMode,
    pub quote_ttl_seconds: u32,
    pub latency_ms: u32,
    pub availability: Decimal,
    /// Whether `mid` is the provider's own rate rather than the reference.
    pub fixed: bool,
}

/// Whether an amount is what the payer sends or what the beneficiary receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AmountSide {
    Send,
    Deliver,
}

/// What a quote is asked for.
#[derive(Debug, Clone, Copy)]
pub struct QuoteRequest {
    pub base: Currency,
    pub quote: Currency,
    /// In `base` when sending, in `quote` when delivering.
    pub amount: Money,
    pub side: AmountSide,
}

/// A locked FX quote: the rate holds for these amounts until `expires_at`.
#[derive(Debug, Clone, Serialize)]
pub struct Quote {
    pub id: String,
    pub provider: Identifier,
    pub base: Currency,
    pub quote: Currency,
    /// The currencies the conversion passes through, `[base, quote]` when direct.
    pub path: Vec<Currency>,
    pub mid_rate: Decimal,
    pub rate: Decimal,
    pub inverse_rate: Decimal,
    pub send: Money,
    pub receive: Money,
    /// What the spread cost, in `quote`: the mid conversion of `send` minus `receive`.
    pub spread_paid: Money,
    pub rounding: RoundingMode,
    pub rates_date: chrono::NaiveDate,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Quote {
    /// Whether the quote may still be used at `now` (it expires at `expires_at`, exclusive).
    pub fn is_valid_at(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at
    }
}

/// Every provider's conversions against one set of reference rates.
#[derive(Debug, Clone)]
pub struct FxBook {
    reference: ReferenceRates,
    conversions: Vec<Conversion>,
}

impl FxBook {
    /// Builds the book, refusing pairs without a rate and arbitrage cycles.
    pub fn build(providers: &[FxProviderConfig], reference: ReferenceRates) -> Result<FxBook, FxError> {
        let mut conversions = Vec::new();
        for (provider_index, provider) in providers.iter().enumerate() {
            for pair in &provider.pairs {
                for (base, quote) in [(pair.base, pair.quote), (pair.quote, pair.base)] {
                    let (mid, fixed) = provider_mid(provider, &reference, base, quote)?;
                    let spread_bps = provider.spread_for(base, quote);
                    conversions.push(Conversion {
                        provider: provider.id.clone(),
                        provider_index,
                        base,
                        quote,
                        mid,
                        rate: mid.with_spread(spread_bps)?,
                        spread_bps,
                        rounding: provider.rounding,
                        quote_ttl_seconds: provider.quote_ttl_seconds,
                        latency_ms: provider.latency_ms,
                        availability: provider.availability,
                        fixed,
                    });
                }
            }
        }
        arbitrage::check(&conversions, &reference)?;
        Ok(FxBook { reference, conversions })
    }

    pub fn reference(&self) -> &ReferenceRates {
        &self.reference
    }

    pub fn conversions(&self) -> &[Conversion] {
        &self.conversions
    }

    pub fn conversion(&self, provider: &str, base: Currency, quote: Currency) -> Option<&Conversion> {
        self.conversions.iter().find(|c| c.provider.as_str() == provider && c.base == base && c.quote == quote)
    }

    /// Every way the providers can quote the request, best first (most received when sending, least
    /// sent when delivering; ties by provider id). Each provider offers its direct pair and its
    /// triangulations through one intermediate currency.
    pub fn quote(&self, request: &QuoteRequest, now: DateTime<Utc>) -> Result<Vec<Quote>, FxError> {
        let expected = match request.side {
            AmountSide::Send => request.base,
            AmountSide::Deliver => request.quote,
        };
        if request.amount.currency() != expected {
            return Err(FxError::AmountCurrency { expected, found: request.amount.currency() });
        }
        if !request.amount.is_positive() {
            return Err(FxError::AmountNotPositive);
        }
        if request.base == request.quote {
            return Err(FxError::SameCurrency { currency: request.base });
        }
        let mut quotes = Vec::new();
        for direct in self.conversions.iter().filter(|c| c.base == request.base && c.quote == request.quote) {
            quotes.push(self.make_quote(request, &[direct], now)?);
        }
        for first in self.conversions.iter().filter(|c| c.base == request.base && c.quote != request.quote) {
            let second = self.conversions.iter().find(|c| {
                c.provider_index == first.provider_index && c.base == first.quote && c.quote == request.quote
            });
            let direct_exists = self.conversions.iter().any(|c| {
                c.provider_index == first.provider_index && c.base == request.base && c.quote == request.quote
            });
            if let Some(second) = second
                && !direct_exists
            {
                quotes.push(self.make_quote(request, &[first, second], now)?);
            }
        }
        if quotes.is_empty() {
            return Err(FxError::NoProvider { base: request.base, quote: request.quote });
        }
        quotes.sort_by(|a, b| {
            let better = match request.side {
                AmountSide::Send => b.receive.minor_units().cmp(&a.receive.minor_units()),
                AmountSide::Deliver => a.send.minor_units().cmp(&b.send.minor_units()),
            };
            better.then_with(|| a.path.len().cmp(&b.path.len())).then_with(|| a.provider.cmp(&b.provider))
        });
        Ok(quotes)
    }

    fn make_quote(&self, request: &QuoteRequest, legs: &[&Conversion], now: DateTime<Utc>) -> Result<Quote, FxError> {
        let first = legs[0];
        // One combined rate per quote: the provider converts once, however it sources the pair.
        let (mid, rate) = match legs {
            [only] => (only.mid, only.rate),
            [a, b] => (a.mid.cross(&b.mid)?, combine(&a.rate, &b.rate)?),
            _ => return Err(FxError::Internal("a quote has one or two legs".into())),
        };
        let (send, receive) = match request.side {
            AmountSide::Send => (request.amount, rate.convert(request.amount, first.rounding)?),
            AmountSide::Deliver => (rate.convert_inverse(request.amount, first.rounding)?, request.amount),
        };
        let at_mid = mid.convert(send, RoundingMode::HalfEven)?;
        let spread_paid = at_mid.checked_sub(receive)?;
        let ttl = legs.iter().map(|leg| leg.quote_ttl_seconds).min().unwrap_or(first.quote_ttl_seconds);
        let mut path: Vec<Currency> = legs.iter().map(|leg| leg.base).collect();
        path.push(request.quote);
        Ok(Quote {
            id: new_quote_id(),
            provider: first.provider.clone(),
            base: request.base,
            quote: request.quote,
            path,
            mid_rate: mid.value(),
            rate: rate.value(),
            inverse_rate: rate.inverse()?.value(),
            send,
            receive,
            spread_paid,
            rounding: first.rounding,
            rates_date: self.reference.date(),
            created_at: now,
            expires_at: now + Duration::seconds(i64::from(ttl)),
        })
    }
}

/// `a` then `b` as one rate, rounded towards zero (the customer never gets more than both legs give).
fn combine(a: &Rate, b: &Rate) -> Result<Rate, FxError> {
    let value = a.value().checked_mul(b.value()).ok_or(FxError::Internal("rate overflow".into()))?;
    let value = value
        .round_sf_with_strategy(Rate::SIGNIFICANT_DIGITS, rust_decimal::RoundingStrategy::ToZero)
        .ok_or(FxError::Internal("rate overflow".into()))?;
    Ok(Rate::new(a.base(), b.quote(), value)?)
}

fn provider_mid(
    provider: &FxProviderConfig,
    reference: &ReferenceRates,
    base: Currency,
    quote: Currency,
) -> Result<(Rate, bool), FxError> {
    let pair = railyard_config::CurrencyPair { base, quote };
    if let Some(value) = provider.fixed_rates.get(&pair) {
        return Ok((Rate::new(base, quote, *value)?, true));
    }
    if let Some(value) = provider.fixed_rates.get(&pair.reversed()) {
        return Ok((Rate::new(quote, base, *value)?.inverse()?, true));
    }
    match reference.mid(base, quote) {
        Ok(mid) => Ok((mid, false)),
        Err(FxError::NoRate { currency, date }) => Err(FxError::MissingPairRate {
            provider: provider.id.to_string(),
            pair: format!("{base}/{quote}"),
            currency,
            date,
            origin: provider.origin.to_string(),
        }),
        Err(other) => Err(other),
    }
}

/// A quote id: `quo_` and a time-ordered UUID (v7), so ids sort by creation.
pub fn new_quote_id() -> String {
    format!("quo_{}", uuid::Uuid::now_v7().simple())
}
