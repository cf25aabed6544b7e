//! Statements over many rows at once, shaped so that they are few and SQLite's prepared-statement
//! cache keeps them.
//!
//! Every statement is a round trip to the database: on SQLite a hand-off to sqlx's worker thread
//! and back (100-300 µs on this 2-vCPU VM under load, where waking a thread is expensive), on
//! PostgreSQL a network round trip. Rows written in bulk therefore go as one JSON array in one
//! parameter ([`json_rows`], [`json_array`]): a group's rows of one table are one statement of one
//! fixed text whatever their count (a group of ~60 payouts used to write its ~140 ledger transfers
//! in twelve statements of at most 16 rows, each bound value looked up by name in SQLite, n² for n
//! values). sqlx caches each connection's prepared statements by their text (100 per connection);
//! an `IN (...)` list whose length follows the data would be a new text almost every time, so
//! lists are padded to the next of [`IN_SHAPES`] by repeating their last value (a repeated value
//! changes nothing).

use crate::Dialect;

/// Lengths an `IN (...)` list is padded to.
pub const IN_SHAPES: [usize; 5] = [1, 4, 16, 64, 256];
/// The longest `IN` list one statement takes; longer lists are read in chunks of this.
pub const IN_MAX: usize = 256;

/// `$first, $first+1, ...` for `count` values.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|index| format!("${index}")).collect::<Vec<_>>().join(", ")
}

/// A `SELECT` of the rows of the JSON array of arrays bound as parameter `$param`, one row per
/// element, its columns named `column1`, `column2`, ... (as a `VALUES` list names them) and cast
/// to `types` (PostgreSQL reads them as text first; SQLite takes JSON integers and strings as
/// they are). Bind the rows with [`json_array`]. Ends in `WHERE true`, which SQLite needs before an
/// `ON CONFLICT` clause of an `INSERT ... SELECT`.
pub fn json_rows(dialect: Dialect, param: usize, types: &[&str]) -> String {
    let columns: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(index, kind)| match dialect {
            Dialect::Sqlite => format!("j.value ->> {index} AS column{}", index + 1),
            Dialect::Postgres => format!("CAST(j.value ->> {index} AS {kind}) AS column{}", index + 1),
        })
        .collect();
    let source = match dialect {
        Dialect::Sqlite => format!("json_each(${param}) AS j"),
        Dialect::Postgres => format!("jsonb_array_elements(CAST(${param} AS JSONB)) AS j(value)"),
    };
    format!("SELECT {} FROM {source} WHERE true", columns.join(", "))
}

/// `column` as a filter of a statement that joins [`json_rows`] to a table by its key. SQLite
/// cannot tell how many rows `json_each` yields and may lead with an index on a filter column
/// (`lease_owner`, say), scanning hundreds of rows and reading the whole JSON again for each; a
/// unary `+` keeps the column out of its choice of index, so the join starts from the rows and
/// finds each by key. PostgreSQL plans it well as it is (and has no unary `+` for text).
pub fn unindexed(dialect: Dialect, column: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!("+{column}"),
        Dialect::Postgres => column.to_string(),
    }
}

/// The parameter [`json_rows`] reads: `rows` (tuples of integers, strings and options of them) as
/// one JSON array of arrays. JSON carries 64-bit integers exactly both ways here: serde writes
/// their digits, SQLite parses them as 64-bit integers, PostgreSQL casts the digits.
pub fn json_array<T: serde::Serialize>(rows: &[T]) -> Result<String, sqlx::Error> {
    serde_json::to_string(rows).map_err(|error| sqlx::Error::Encode(Box::new(error)))
}

/// `values` (at most [`IN_MAX`]) padded with its last value to the next length in [`IN_SHAPES`].
pub fn padded<'a, T: ?Sized>(values: &[&'a T]) -> Vec<&'a T> {
    let target = IN_SHAPES.iter().copied().find(|size| *size >= values.len()).unwrap_or(values.len());
    let mut padded = values.to_vec();
    if let Some(last) = values.last() {
        padded.resize(target, *last);
    }
    padded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rows_name_and_cast_their_columns() {
        assert_eq!(
            json_rows(Dialect::Sqlite, 2, &["TEXT", "BIGINT"]),
            "SELECT j.value ->> 0 AS column1, j.value ->> 1 AS column2 FROM json_each($2) AS j WHERE true"
        );
        assert_eq!(
            json_rows(Dialect::Postgres, 1, &["TEXT", "BIGINT"]),
            "SELECT CAST(j.value ->> 0 AS TEXT) AS column1, CAST(j.value ->> 1 AS BIGINT) AS column2 \
             FROM jsonb_array_elements(CAST($1 AS JSONB)) AS j(value) WHERE true"
        );
        let rows = [("a\"b", i64::MAX, None::<&str>), ("é", i64::MIN, Some("x"))];
        assert_eq!(
            json_array(&rows).expect("encodes"),
            r#"[["a\"b",9223372036854775807,null],["é",-9223372036854775808,"x"]]"#
        );
    }

    #[test]
    fn in_lists_are_padded_to_a_shape() {
        let values: Vec<&str> = vec!["a", "b", "c", "d", "e"];
        let list = padded(&values);
        assert_eq!(list.len(), 16);
        assert_eq!(&list[..5], &values[..]);
        assert!(list[5..].iter().all(|value| *value == "e"));
        assert!(padded::<str>(&[]).is_empty());
    }
}
