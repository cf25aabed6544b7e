//! Reading a spanned TOML tree while collecting every error with its position.
//!
//! serde stops at the first error, but a treasurer fixing a file wants all of them at once. So the
//! document is parsed into toml's spanned tree ([`DeTable`]) and walked by hand: each reader records
//! what is wrong at the byte span where it is wrong and carries on, returning `None` for a value it
//! could not read. Spans become line and column only when the report is printed.

use std::fmt;
use std::ops::Range;

use railyard_core::{Currency, Decimal, Money, Sign};
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    pub message: String,
}

/// Every problem found in one configuration file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub file: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, diagnostic) in self.diagnostics.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.file, diagnostic.line, diagnostic.column, diagnostic.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors against one source text.
pub(crate) struct Context<'s> {
    source: &'s str,
    errors: Vec<(Range<usize>, String)>,
}

impl<'s> Context<'s> {
    pub(crate) fn new(source: &'s str) -> Context<'s> {
        Context { source, errors: Vec::new() }
    }

    pub(crate) fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.errors.push((span, message.into()));
    }

    /// Line and column of a span's start, for items whose later checks happen after parsing.
    pub(crate) fn origin(&self, span: &Range<usize>) -> crate::model::Origin {
        let (line, column) = line_column(self.source, span.start);
        crate::model::Origin { line, column }
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    pub(crate) fn finish(self, file: &str) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            return Ok(());
        }
        Err(self.into_errors(file))
    }

    /// The recorded errors, sorted by position.
    pub(crate) fn into_errors(mut self, file: &str) -> ConfigErrors {
        self.errors.sort_by_key(|(span, _)| span.start);
        self.errors.dedup();
        let diagnostics = self
            .errors
            .iter()
            .map(|(span, message)| {
                let (line, column) = line_column(self.source, span.start);
                Diagnostic { line, column, message: message.clone() }
            })
            .collect();
        ConfigErrors { file: file.to_string(), diagnostics }
    }
}

/// 1-based line and character column of a byte offset.
pub(crate) fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|index| index + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// A table being read: remembers which keys were asked for so that the rest can be reported.
pub(crate) struct Section<'t, 'i> {
    table: &'t DeTable<'i>,
    span: Range<usize>,
    /// Where the table is, as a reader would say it: `[[rails]] "sepa-inst"`.
    pub(crate) name: String,
    known: &'static [&'static str],
}

impl<'t, 'i> Section<'t, 'i> {
    pub(crate) fn new(
        table: &'t DeTable<'i>,
        span: Range<usize>,
        name: String,
        known: &'static [&'static str],
    ) -> Self {
        Section { table, span, name, known }
    }

    /// Reads `value` as a table, or records that it is not one.
    pub(crate) fn of(
        ctx: &mut Context<'_>,
        value: &'t Value<'i>,
        name: String,
        known: &'static [&'static str],
    ) -> Option<Section<'t, 'i>> {
        match value.get_ref() {
            DeValue::Table(table) => Some(Section::new(table, value.span(), name, known)),
            other => {
                ctx.error(value.span(), format!("{name} must be a table, found {}", other.type_str()));
                None
            }
        }
    }

    pub(crate) fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// Reports keys this section does not know, naming the ones it does.
    pub(crate) fn check_keys(&self, ctx: &mut Context<'_>) {
        for (key, _) in self.table.iter() {
            if !self.known.contains(&key.get_ref().as_ref()) {
                ctx.error(
                    key.span(),
                    format!(
                        "unknown key `{}` in {}; expected one of: {}",
                        key.get_ref(),
                        self.name,
                        self.known.join(", ")
                    ),
                );
            }
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&'t Value<'i>> {
        debug_assert!(self.known.contains(&key), "{key} is read but not declared for {}", self.name);
        self.table.get(key)
    }

    pub(crate) fn required(&self, ctx: &mut Context<'_>, key: &str) -> Option<&'t Value<'i>> {
        let value = self.get(key);
        if value.is_none() {
            ctx.error(self.span(), format!("{} is missing required key `{key}`", self.name));
        }
        value
    }

    pub(crate) fn string(&self, ctx: &mut Context<'_>, key: &str) -> Option<(&'t str, Range<usize>)> {
        let value = self.required(ctx, key)?;
        string(ctx, value, &self.describe(key))
    }

    pub(crate) fn optional_string(&self, ctx: &mut Context<'_>, key: &str) -> Option<(&'t str, Range<usize>)> {
        let value = self.get(key)?;
        string(ctx, value, &self.describe(key))
    }

    pub(crate) fn describe(&self, key: &str) -> String {
        format!("`{key}` in {}", self.name)
    }
}

pub(crate) fn string<'t>(ctx: &mut Context<'_>, value: &'t Value<'_>, what: &str) -> Option<(&'t str, Range<usize>)> {
    match value.get_ref() {
        DeValue::String(text) => Some((text.as_ref(), value.span())),
        other => {
            ctx.error(value.span(), format!("{what} must be a string, found {}", other.type_str()));
            None
        }
    }
}

pub(crate) fn array<'t, 'i>(ctx: &mut Context<'_>, value: &'t Value<'i>, what: &str) -> Option<&'t DeArray<'i>> {
    match value.get_ref() {
        DeValue::Array(array) => Some(array),
        other => {
            ctx.error(value.span(), format!("{what} must be an array, found {}", other.type_str()));
            None
        }
    }
}

/// An integer within `range` (inclusive).
pub(crate) fn integer(
    ctx: &mut Context<'_>,
    value: &Value<'_>,
    what: &str,
    range: std::ops::RangeInclusive<i64>,
) -> Option<i64> {
    let parsed = match value.get_ref() {
        DeValue::Integer(number) => i64::from_str_radix(number.as_str(), number.radix()).ok(),
        other => {
            ctx.error(value.span(), format!("{what} must be an integer, found {}", other.type_str()));
            return None;
        }
    };
    match parsed {
        Some(number) if range.contains(&number) => Some(number),
        _ => {
            ctx.error(value.span(), format!("{what} must be between {} and {}", range.start(), range.end()));
            None
        }
    }
}

/// A decimal, written as a string ("0.25") or an integer (25). Floats are refused: they are inexact.
pub(crate) fn decimal(ctx: &mut Context<'_>, value: &Value<'_>, what: &str) -> Option<Decimal> {
    let text = match value.get_ref() {
        DeValue::String(text) => text.as_ref(),
        DeValue::Integer(number) if number.radix() == 10 => number.as_str(),
        DeValue::Float(number) => {
            ctx.error(
                value.span(),
                format!(
                    "{what} is a float ({}); write it as a string such as \"{}\" so that it stays exact",
                    number.as_str(),
                    number.as_str()
                ),
            );
            return None;
        }
        other => {
            ctx.error(
                value.span(),
                format!("{what} must be a decimal string such as \"0.25\", found {}", other.type_str()),
            );
            return None;
        }
    };
    let plain = !text.is_empty()
        && text.len() <= Money::TEXT_LENGTH_MAX
        && text.trim_start_matches('-').split('.').count() <= 2
        && text.trim_start_matches('-').chars().all(|c| c.is_ascii_digit() || c == '.')
        && !text.trim_start_matches('-').starts_with('.')
        && !text.ends_with('.');
    match text.parse::<Decimal>() {
        Ok(number) if plain => Some(number),
        _ => {
            ctx.error(value.span(), format!("{what} must be a plain decimal number such as \"0.25\", got {text:?}"));
            None
        }
    }
}

/// An amount of `currency` with `sign`, written as a string or an integer.
pub(crate) fn money(
    ctx: &mut Context<'_>,
    value: &Value<'_>,
    what: &str,
    currency: Currency,
    sign: Sign,
) -> Option<Money> {
    let text = match value.get_ref() {
        DeValue::String(text) => text.as_ref(),
        DeValue::Integer(number) if number.radix() == 10 => number.as_str(),
        DeValue::Float(number) => {
            ctx.error(
                value.span(),
                format!(
                    "{what} is a float ({}); write amounts as strings such as \"{}\"",
                    number.as_str(),
                    number.as_str()
                ),
            );
            return None;
        }
        other => {
            ctx.error(
                value.span(),
                format!("{what} must be an amount string such as \"10.00\", found {}", other.type_str()),
            );
            return None;
        }
    };
    match Money::parse(text, currency, sign) {
        Ok(amount) => Some(amount),
        Err(error) => {
            ctx.error(value.span(), format!("{what}: {error}"));
            None
        }
    }
}

pub(crate) fn currency(ctx: &mut Context<'_>, text: &str, span: Range<usize>, what: &str) -> Option<Currency> {
    match Currency::from_code(text) {
        Ok(currency) => Some(currency),
        Err(error) => {
            ctx.error(span, format!("{what}: {error}"));
            None
        }
    }
}

/// Every string of an array, each with its own span.
pub(crate) fn strings<'t>(ctx: &mut Context<'_>, value: &'t Value<'_>, what: &str) -> Vec<(&'t str, Range<usize>)> {
    let Some(items) = array(ctx, value, what) else {
        return Vec::new();
    };
    items.iter().filter_map(|item| string(ctx, item, &format!("each entry of {what}"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let source = "a = 1\nbé = 2\n";
        assert_eq!(line_column(source, 0), (1, 1));
        assert_eq!(line_column(source, 6), (2, 1));
        assert_eq!(line_column(source, 9), (2, 3)); // after the two-byte 'é'
        assert_eq!(line_column(source, 1_000), (3, 1));
    }
}
