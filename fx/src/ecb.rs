//! Reference rates from the European Central Bank's files.
//!
//! Two formats are read by one parser: the daily file (`Date, USD, JPY, ...` with spaces, a date like
//! `30 October 2026`, one row) and the historical file (`Date,USD,...`, ISO dates, newest first, `N/A`
//! where a currency had no rate). Both end each line with a comma. Columns whose code is not a payable
//! ISO 4217 currency (retired: CYP, EEK, TRL...; superseded: BGN, HRK) are kept out of the rates and
//! listed in [`RateHistory::skipped`] with the reason.
//!
//! Rates are quoted per 1 EUR and treated as mid rates.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::NaiveDate;
use railyard_core::{Currency, Decimal, Rate};
use serde::Serialize;

use crate::FxError;

/// A currency's last rate is used for at most this many days after it was published. Seven days cover
/// a weekend plus the ECB's longest holiday closure (Good Friday to Easter Monday); a currency whose
/// last rate is older (RUB since 2022, the pre-euro currencies) has no rate.
pub const STALE_DAYS_MAX: i64 = 7;

/// Files larger than this are refused before parsing (the full history is about 2 MB).
pub const FILE_SIZE_MAX_BYTES: usize = 64 * 1024 * 1024;

const BUNDLED_DAILY: &str = include_str!("../data/eurofxref.csv");
const BUNDLED_HISTORY_ZIP: &[u8] = include_bytes!("../data/eurofxref-hist.zip");

/// A column left out of the rates, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedColumn {
    pub code: String,
    pub reason: String,
}

/// Rates per 1 EUR for each publication date.
#[derive(Debug, Clone)]
pub struct RateHistory {
    currencies: Vec<Currency>,
    /// Ascending dates.
    dates: Vec<NaiveDate>,
    /// `values[date_index][currency_index]`, `None` where the file says N/A.
    values: Vec<Vec<Option<Decimal>>>,
    skipped: Vec<SkippedColumn>,
    source: String,
}

/// The mid rates that apply on one day: each currency's latest rate at or before that day, if it is
/// at most [`STALE_DAYS_MAX`] days old.
#[derive(Debug, Clone)]
pub struct ReferenceRates {
    date: NaiveDate,
    /// Units per 1 EUR, and the date each was published.
    per_eur: BTreeMap<Currency, (Decimal, NaiveDate)>,
    source: String,
}

impl RateHistory {
    /// The ECB daily file compiled into Railyard (30 October 2026).
    pub fn bundled_daily() -> RateHistory {
        // The bundled file is checked by a test; failing here would be a build defect.
        RateHistory::parse_csv(BUNDLED_DAILY, "bundled ECB daily rates (eurofxref.csv)")
            .unwrap_or_else(|error| panic!("bundled ECB daily file is invalid: {error}"))
    }

    /// The ECB history compiled into Railyard (1999-01-04 to 2026-10-30).
    pub fn bundled_history() -> RateHistory {
        RateHistory::parse_zip(BUNDLED_HISTORY_ZIP, "bundled ECB history (eurofxref-hist.zip)")
            .unwrap_or_else(|error| panic!("bundled ECB history is invalid: {error}"))
    }

    /// Reads a daily or historical file, plain CSV or zipped.
    pub fn load(path: &Path) -> Result<RateHistory, FxError> {
        let source = path.display().to_string();
        let bytes = std::fs::read(path)
            .map_err(|error| FxError::Source { file: source.clone(), message: error.to_string() })?;
        if bytes.len() > FILE_SIZE_MAX_BYTES {
            return Err(FxError::Source { file: source, message: format!("larger than {FILE_SIZE_MAX_BYTES} bytes") });
        }
        if bytes.starts_with(b"PK") {
            RateHistory::parse_zip(&bytes, &source)
        } else {
            let text = String::from_utf8(bytes)
                .map_err(|_| FxError::Source { file: source.clone(), message: "not UTF-8 text".into() })?;
            RateHistory::parse_csv(&text, &source)
        }
    }

    /// Reads the first CSV inside a ZIP archive.
    pub fn parse_zip(bytes: &[u8], source: &str) -> Result<RateHistory, FxError> {
        let entries = crate::zip::read_entries(bytes)
            .map_err(|error| FxError::Source { file: source.into(), message: error.to_string() })?;
        let entry = entries
            .into_iter()
            .find(|entry| entry.name.to_ascii_lowercase().ends_with(".csv"))
            .ok_or_else(|| FxError::Source { file: source.into(), message: "the archive holds no .csv file".into() })?;
        let text = String::from_utf8(entry.data)
            .map_err(|_| FxError::Source { file: source.into(), message: "CSV is not UTF-8".into() })?;
        RateHistory::parse_csv(&text, &format!("{source}:{}", entry.name))
    }

    /// Parses either CSV format.
    pub fn parse_csv(text: &str, source: &str) -> Result<RateHistory, FxError> {
        let error = |line: usize, message: String| FxError::Format { file: source.to_string(), line, message };
        let mut lines = text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty());
        let (_, header) = lines.next().ok_or_else(|| error(1, "the file is empty".into()))?;
        let mut columns = header.split(',').map(str::trim);
        if columns.next() != Some("Date") {
            return Err(error(1, "the header must start with \"Date\"".into()));
        }
        // For each column after Date: the index into `currencies`, or None when skipped. The ECB ends
        // every line with a comma; that empty last column holds no value.
        let mut currencies: Vec<Currency> = Vec::new();
        let mut skipped = Vec::new();
        let mut layout: Vec<Option<usize>> = Vec::new();
        for code in columns {
            if code.is_empty() {
                break;
            }
            match Currency::from_code(code) {
                Ok(currency) if currency.code() == "EUR" => {
                    return Err(error(1, "EUR cannot be quoted per EUR".into()));
                }
                Ok(currency) if currencies.contains(&currency) => {
                    return Err(error(1, format!("{code} appears twice in the header")));
                }
                Ok(currency) => {
                    layout.push(Some(currencies.len()));
                    currencies.push(currency);
                }
                Err(reason) => {
                    layout.push(None);
                    skipped.push(SkippedColumn { code: code.to_string(), reason: reason.to_string() });
                }
            }
        }
        let mut rows: BTreeMap<NaiveDate, Vec<Option<Decimal>>> = BTreeMap::new();
        for (index, line) in lines {
            let number = index + 1;
            let mut fields = line.split(',').map(str::trim);
            let date_text = fields.next().unwrap_or("");
            let date = NaiveDate::parse_from_str(date_text, "%Y-%m-%d")
                .or_else(|_| NaiveDate::parse_from_str(date_text, "%d %B %Y"))
                .map_err(|_| {
                    error(number, format!("{date_text:?} is not a date (expected 2026-10-30 or 30 October 2026)"))
                })?;
            let mut values = vec![None; currencies.len()];
            for (column, field) in fields.enumerate() {
                let slot = match layout.get(column) {
                    Some(slot) => *slot,
                    None if field.is_empty() => continue,
                    None => {
                        return Err(error(number, format!("more values than header columns ({})", layout.len() + 1)));
                    }
                };
                let Some(slot) = slot else {
                    continue;
                };
                if field == "N/A" || field.is_empty() {
                    continue;
                }
                let value: Decimal =
                    field.parse().ok().filter(|value: &Decimal| *value > Decimal::ZERO).ok_or_else(|| {
                        error(number, format!("{field:?} is not a positive rate for {}", currencies[slot]))
                    })?;
                values[slot] = Some(value);
            }
            if rows.insert(date, values).is_some() {
                return Err(error(number, format!("{date} appears twice")));
            }
        }
        if rows.is_empty() {
            return Err(error(2, "the file has no rates".into()));
        }
        let (dates, values) = rows.into_iter().unzip();
        Ok(RateHistory { currencies, dates, values, skipped, source: source.to_string() })
    }

    pub fn first_date(&self) -> NaiveDate {
        self.dates[0]
    }

    pub fn latest_date(&self) -> NaiveDate {
        self.dates[self.dates.len() - 1]
    }

    pub fn dates(&self) -> usize {
        self.dates.len()
    }

    pub fn currencies(&self) -> &[Currency] {
        &self.currencies
    }

    pub fn skipped(&self) -> &[SkippedColumn] {
        &self.skipped
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The reference rates that apply on `date`.
    pub fn as_of(&self, date: NaiveDate) -> Result<ReferenceRates, FxError> {
        let position = self.dates.partition_point(|published| *published <= date);
        if position == 0 {
            return Err(FxError::NoRatesOn { date, first: self.first_date() });
        }
        let mut per_eur = BTreeMap::new();
        for (slot, currency) in self.currencies.iter().enumerate() {
            // Walk back to the latest publication of this currency that is not stale.
            for index in (0..position).rev() {
                let published = self.dates[index];
                if (date - published).num_days() > STALE_DAYS_MAX {
                    break;
                }
                if let Some(value) = self.values[index][slot] {
                    per_eur.insert(*currency, (value, published));
                    break;
                }
            }
        }
        Ok(ReferenceRates { date, per_eur, source: self.source.clone() })
    }

    /// The reference rates of the latest publication.
    pub fn latest(&self) -> ReferenceRates {
        // `as_of` only fails before the first date.
        self.as_of(self.latest_date()).unwrap_or_else(|_| ReferenceRates {
            date: self.latest_date(),
            per_eur: BTreeMap::new(),
            source: self.source.clone(),
        })
    }
}

impl ReferenceRates {
    /// Rates from explicit values per 1 EUR (tests and synthetic graphs).
    pub fn from_values(
        date: NaiveDate,
        values: impl IntoIterator<Item = (Currency, Decimal)>,
        source: &str,
    ) -> ReferenceRates {
        let per_eur =
            values.into_iter().filter(|(currency, _)| currency.code() != "EUR").map(|(c, v)| (c, (v, date))).collect();
        ReferenceRates { date, per_eur, source: source.to_string() }
    }

    /// The day these rates apply to.
    pub fn date(&self) -> NaiveDate {
        self.date
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Units of `currency` per 1 EUR; 1 for EUR itself.
    pub fn per_eur(&self, currency: Currency) -> Option<Decimal> {
        if currency.code() == "EUR" {
            return Some(Decimal::ONE);
        }
        self.per_eur.get(&currency).map(|(value, _)| *value)
    }

    /// When `currency`'s rate was published (the requested day or up to a week before).
    pub fn published(&self, currency: Currency) -> Option<NaiveDate> {
        if currency.code() == "EUR" {
            return Some(self.date);
        }
        self.per_eur.get(&currency).map(|(_, date)| *date)
    }

    /// Every currency with a rate, EUR included.
    pub fn currencies(&self) -> Vec<Currency> {
        let mut all: Vec<Currency> = self.per_eur.keys().copied().collect();
        if let Ok(eur) = Currency::from_code("EUR") {
            all.push(eur);
        }
        all.sort();
        all
    }

    /// The mid rate base→quote, crossed through EUR with one rounding.
    pub fn mid(&self, base: Currency, quote: Currency) -> Result<Rate, FxError> {
        if base == quote {
            return Ok(Rate::identity(base));
        }
        let missing = |currency: Currency| FxError::NoRate { currency, date: self.date };
        let base_value = self.per_eur(base).ok_or_else(|| missing(base))?;
        let quote_value = self.per_eur(quote).ok_or_else(|| missing(quote))?;
        let eur = Currency::from_code("EUR").map_err(|error| FxError::Internal(error.to_string()))?;
        let eur_base = Rate::new(eur, base, base_value)?;
        let eur_quote = Rate::new(eur, quote, quote_value)?;
        Ok(Rate::cross_through(&eur_base, &eur_quote)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn c(code: &str) -> Currency {
        Currency::from_code(code).unwrap()
    }

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn daily_file() {
        let history = RateHistory::bundled_daily();
        assert_eq!(history.latest_date(), day("2026-10-30"));
        let rates = history.latest();
        assert_eq!(rates.per_eur(c("USD")), Some(dec!(1.1172)));
        assert_eq!(rates.per_eur(c("ZAR")), Some(dec!(18.6455)));
        assert_eq!(rates.mid(c("USD"), c("BRL")).unwrap().value(), dec!(5.43250984604));
        assert!(rates.currencies().len() >= 30);
    }

    #[test]
    fn historical_file_with_gaps_and_retired_currencies() {
        let history = RateHistory::bundled_history();
        assert_eq!(history.first_date(), day("1999-01-04"));
        assert_eq!(history.latest_date(), day("2026-10-30"));
        assert!(history.dates() > 7_000);
        let skipped: Vec<&str> = history.skipped().iter().map(|s| s.code.as_str()).collect();
        for retired in ["CYP", "EEK", "TRL", "ROL", "BGN", "HRK"] {
            assert!(skipped.contains(&retired), "{retired} should be skipped: {skipped:?}");
        }
        // A Saturday uses Friday's rates.
        let saturday = history.as_of(day("2024-03-02")).unwrap();
        let friday = history.as_of(day("2024-03-01")).unwrap();
        assert_eq!(saturday.per_eur(c("USD")), friday.per_eur(c("USD")));
        assert_eq!(saturday.published(c("USD")), Some(day("2024-03-01")));
        // RUB has been N/A since March 2022: stale, so no rate.
        assert!(history.as_of(day("2021-06-01")).unwrap().per_eur(c("RUB")).is_some());
        assert!(history.as_of(day("2024-03-01")).unwrap().per_eur(c("RUB")).is_none());
        assert!(matches!(history.as_of(day("1998-12-31")), Err(FxError::NoRatesOn { .. })));
        // The latest day of the history equals the daily file.
        let daily = RateHistory::bundled_daily().latest();
        let latest = history.latest();
        for currency in daily.currencies() {
            assert_eq!(daily.per_eur(currency), latest.per_eur(currency), "{currency}");
        }
    }

    #[test]
    fn malformed_files_name_the_line() {
        let check = |text: &str, want: &str| {
            let error = RateHistory::parse_csv(text, "t.csv").unwrap_err().to_string();
            assert!(error.contains(want), "{error}");
        };
        check("", "empty");
        check("When,USD\n", "must start with \"Date\"");
        check("Date,USD,\n2024-13-01,1.1,\n", "line 2");
        check("Date,USD,\n2024-01-01,-1,\n", "not a positive rate for USD");
        check("Date,USD,\n2024-01-01,1.1,2.2,\n", "more values than header columns");
        check("Date,USD,\n2024-01-01,1.1,\n2024-01-01,1.2,\n", "appears twice");
        check("Date,USD,\n", "no rates");
    }
}
