//! Statements over many rows at once, shaped so that they are few and the prepared-statement
//! caches keep them.
//!
//! Every statement is a round trip to the database: on SQLite a hand-off to sqlx's worker thread
//! and back (100-300 µs on this 2-vCPU VM under load, where waking a thread is expensive), on
//! PostgreSQL a network round trip. So a group's rows of one table go in one statement
//! ([`execute`], [`fetch_all`]) whose text depends only on the statement and a size class, never
//! on the data:
//!
//! - **PostgreSQL** reads the rows from one parameter, a JSON array of arrays
//!   (`jsonb_array_elements`): one statement of one text whatever the count.
//! - **SQLite** binds every value (`VALUES (?, ?), (?, ?) ...`), the row count padded with rows of
//!   NULLs to the next of [`ROW_SHAPES`] and the padding filtered out by the statement itself; at
//!   most [`ROWS_MAX`] rows a statement. SQLite's JSON functions re-read a row's JSON for every
//!   column taken from it (`value ->> n`): for the ledger's 13-column transfers that cost ~12 µs a
//!   row against ~5 µs bound (`cargo run --release -p railyard-store --example bulk_rows`).
//!   The parameters are anonymous (`?`): sqlx looks a named one up by walking the statement's
//!   names, n² for n values.
//!
//! sqlx caches each connection's prepared statements by their text (100 per connection); an
//! `IN (...)` list whose length follows the data would be a new text almost every time, so lists
//! are padded to the next of [`IN_SHAPES`] by repeating their last value (a repeated value changes
//! nothing).

use serde::Serialize;
use sqlx::AnyConnection;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AssertSqlSafe};

use crate::Dialect;

/// Lengths an `IN (...)` list is padded to.
pub const IN_SHAPES: [usize; 5] = [1, 4, 16, 64, 256];
/// The longest `IN` list one statement takes; longer lists are read in chunks of this.
pub const IN_MAX: usize = 256;
/// Row counts an SQLite bulk statement is padded to (with rows of NULLs it filters out).
pub const ROW_SHAPES: [usize; 5] = [1, 4, 16, 64, 256];
/// Most rows one SQLite bulk statement binds: 256 rows of the widest table (13 columns) are 3,328
/// values, far below SQLite's limit of 32,766 per statement; more rows go in more statements.
pub const ROWS_MAX: usize = 256;

/// `$first, $first+1, ...` for `count` values.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|index| format!("${index}")).collect::<Vec<_>>().join(", ")
}

/// A parameter of a bulk statement besides its rows (`$2`, `$3`, ... in the template).
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Int(i64),
    Text(&'a str),
}

impl From<i64> for Param<'_> {
    fn from(value: i64) -> Self {
        Param::Int(value)
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(value: &'a str) -> Self {
        Param::Text(value)
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(value: &'a String) -> Self {
        Param::Text(value)
    }
}

/// Runs `template` over `rows` and returns the rows it affected.
///
/// `template` names the rows' source `{rows}`: a `SELECT` of columns `column1`, `column2`, ...
/// (as a `VALUES` list names them), typed as `types` says (PostgreSQL casts to them). Its other
/// parameters are `$2`, `$3`, ... bound from `params` in order. `rows` are tuples of integers,
/// strings and options of them ([`Row`]), `types.len()` values each; a row's first value must not
/// be NULL (SQLite's padding rows are told apart by it). The template must not hold a `$` outside
/// its parameters.
pub async fn execute<T: Row>(
    connection: &mut AnyConnection,
    template: &str,
    types: &[&str],
    rows: &[T],
    params: &[Param<'_>],
) -> Result<u64, sqlx::Error> {
    let mut affected = 0;
    for query in queries(crate::dialect_of(connection), template, types, rows, params)? {
        affected += query.execute(&mut *connection).await?.rows_affected();
    }
    Ok(affected)
}

/// [`execute`] for a template that returns rows (`RETURNING`): every row it returned.
pub async fn fetch_all<T: Row>(
    connection: &mut AnyConnection,
    template: &str,
    types: &[&str],
    rows: &[T],
    params: &[Param<'_>],
) -> Result<Vec<AnyRow>, sqlx::Error> {
    let mut returned = Vec::new();
    for query in queries(crate::dialect_of(connection), template, types, rows, params)? {
        returned.extend(query.fetch_all(&mut *connection).await?);
    }
    Ok(returned)
}

type AnyQuery = sqlx::query::Query<'static, Any, AnyArguments>;

/// The statements that run `template` over `rows` (none for no rows), their values bound.
fn queries<T: Row>(
    dialect: Dialect,
    template: &str,
    types: &[&str],
    rows: &[T],
    params: &[Param<'_>],
) -> Result<Vec<AnyQuery>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let width = types.len();
    if T::WIDTH != width {
        return Err(encode_error(format!("bulk rows have {} values, the statement {width}", T::WIDTH)));
    }
    match dialect {
        Dialect::Postgres => {
            let text = template.replace("{rows}", &postgres_rows(types));
            let query = sqlx::query(AssertSqlSafe(text)).bind(json_array(rows)?);
            Ok(vec![bind_params(query, params)])
        }
        Dialect::Sqlite => {
            let mut cells = Vec::with_capacity(width * rows.len());
            for row in rows {
                let first = cells.len();
                row.cells(&mut cells);
                if cells[first] == Cell::Null {
                    return Err(encode_error("a bulk row's first value is NULL"));
                }
            }
            let mut queries = Vec::new();
            let mut cells = cells.into_iter();
            for chunk in rows.chunks(ROWS_MAX) {
                let shape = ROW_SHAPES.iter().copied().find(|shape| *shape >= chunk.len()).unwrap_or(ROWS_MAX);
                let source = sqlite_rows(width, shape);
                let text = renumber(&template.replace("{rows}", &source), shape * width);
                let mut query = sqlx::query(AssertSqlSafe(text));
                for cell in cells.by_ref().take(chunk.len() * width) {
                    query = match cell {
                        Cell::Int(value) => query.bind(value),
                        Cell::Text(value) => query.bind(value),
                        Cell::Null => query.bind(None::<String>),
                    };
                }
                for _ in 0..(shape - chunk.len()) * width {
                    query = query.bind(None::<String>);
                }
                queries.push(bind_params(query, params));
            }
            Ok(queries)
        }
    }
}

fn bind_params(mut query: AnyQuery, params: &[Param<'_>]) -> AnyQuery {
    for param in params {
        query = match *param {
            Param::Int(value) => query.bind(value),
            Param::Text(value) => query.bind(value.to_string()),
        };
    }
    query
}

/// PostgreSQL's source of rows: the JSON array bound as `$1`, one row per element.
fn postgres_rows(types: &[&str]) -> String {
    let columns: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(index, kind)| format!("CAST(j.value ->> {index} AS {kind}) AS column{}", index + 1))
        .collect();
    format!("SELECT {} FROM jsonb_array_elements(CAST($1 AS JSONB)) AS j(value) WHERE true", columns.join(", "))
}

/// SQLite's source of `shape` rows of `width` bound values; padding rows (first value NULL) are
/// left out. The `WHERE` also lets an `INSERT ... SELECT` take an `ON CONFLICT` clause.
fn sqlite_rows(width: usize, shape: usize) -> String {
    let columns: Vec<String> = (1..=width).map(|index| format!("column{index}")).collect();
    let row = format!("({})", vec!["?"; width].join(", "));
    format!("SELECT {} FROM (VALUES {}) WHERE column1 IS NOT NULL", columns.join(", "), vec![row; shape].join(", "))
}

/// The template's `$n` (n ≥ 2, the parameters after the rows) renumbered for SQLite, where the
/// rows' `values` anonymous parameters come first: sqlx binds the anonymous ones in order and a
/// named `$m` to the m-th value, so `$n` becomes `$(values + n - 1)`.
fn renumber(text: &str, values: usize) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
        match rest[at + 1..at + 1 + digits].parse::<usize>() {
            Ok(number) if number >= 2 => out.push_str(&format!("${}", values + number - 1)),
            _ => out.push_str(&rest[at..at + 1 + digits]),
        }
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
    out
}

/// `rows` (tuples of integers, strings and options of them) as one JSON array of arrays. JSON
/// carries 64-bit integers exactly both ways here: serde writes their digits, PostgreSQL casts
/// them.
fn json_array<T: Serialize>(rows: &[T]) -> Result<String, sqlx::Error> {
    serde_json::to_string(rows).map_err(encode_error)
}

fn encode_error(error: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Encode(error.to_string().into())
}

/// `column` as a filter of a statement that joins bulk rows to a table by its key. SQLite may
/// lead such a join with an index on a filter column (`lease_owner`, say), scanning hundreds of
/// rows and reading every bulk row again for each; a unary `+` keeps the column out of its choice
/// of index, so the join starts from the rows and finds each by key. PostgreSQL plans it well as
/// it is (and has no unary `+` for text).
pub fn unindexed(dialect: Dialect, column: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!("+{column}"),
        Dialect::Postgres => column.to_string(),
    }
}

/// A membership test against the first column of the bulk rows named `rows` (a `WITH` of
/// `{rows}`), to follow a column: `id IN (SELECT ...)` on SQLite, `id = ANY (ARRAY(SELECT ...))`
/// on PostgreSQL, whose planner would scan the whole table for two `IN (SELECT ...)` joined by
/// `OR` but takes an index for each array.
pub fn in_rows(dialect: Dialect, rows: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!("IN (SELECT column1 FROM {rows})"),
        Dialect::Postgres => format!("= ANY (ARRAY(SELECT column1 FROM {rows}))"),
    }
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

/// One value of a row, as SQLite binds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Int(i64),
    Text(String),
    Null,
}

/// A value a bulk row may hold: an integer, a string, or an option of one (NULL). There is no
/// float: money is never one.
pub trait Value {
    fn cell(&self) -> Cell;
}

impl Value for i64 {
    fn cell(&self) -> Cell {
        Cell::Int(*self)
    }
}

impl Value for str {
    fn cell(&self) -> Cell {
        Cell::Text(self.to_string())
    }
}

impl Value for String {
    fn cell(&self) -> Cell {
        Cell::Text(self.clone())
    }
}

impl<T: Value> Value for Option<T> {
    fn cell(&self) -> Cell {
        self.as_ref().map_or(Cell::Null, Value::cell)
    }
}

impl<T: Value + ?Sized> Value for &T {
    fn cell(&self) -> Cell {
        (**self).cell()
    }
}

/// A row of a bulk statement: a tuple of [`Value`]s (serialised as a JSON array for PostgreSQL).
pub trait Row: Serialize {
    /// How many values the row has.
    const WIDTH: usize;
    fn cells(&self, out: &mut Vec<Cell>);
}

macro_rules! tuple_rows {
    ($($width:literal => ($($name:ident $index:tt),+);)+) => {$(
        impl<$($name: Value + Serialize),+> Row for ($($name,)+) {
            const WIDTH: usize = $width;
            fn cells(&self, out: &mut Vec<Cell>) {
                $(out.push(self.$index.cell());)+
            }
        }
    )+};
}

tuple_rows! {
    1 => (A 0);
    2 => (A 0, B 1);
    3 => (A 0, B 1, C 2);
    4 => (A 0, B 1, C 2, D 3);
    5 => (A 0, B 1, C 2, D 3, E 4);
    6 => (A 0, B 1, C 2, D 3, E 4, F 5);
    7 => (A 0, B 1, C 2, D 3, E 4, F 5, G 6);
    8 => (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
    13 => (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_read_from_json_on_postgres_and_bound_on_sqlite() {
        assert_eq!(
            postgres_rows(&["TEXT", "BIGINT"]),
            "SELECT CAST(j.value ->> 0 AS TEXT) AS column1, CAST(j.value ->> 1 AS BIGINT) AS column2 \
             FROM jsonb_array_elements(CAST($1 AS JSONB)) AS j(value) WHERE true"
        );
        assert_eq!(
            sqlite_rows(2, 4),
            "SELECT column1, column2 FROM (VALUES (?, ?), (?, ?), (?, ?), (?, ?)) WHERE column1 IS NOT NULL"
        );
        let rows = [("a\"b", i64::MAX, None::<&str>), ("é", i64::MIN, Some("x"))];
        assert_eq!(
            json_array(&rows).expect("encodes"),
            r#"[["a\"b",9223372036854775807,null],["é",-9223372036854775808,"x"]]"#
        );
    }

    #[test]
    fn parameters_after_the_rows_are_renumbered_for_sqlite() {
        assert_eq!(renumber("a = $2 AND b = $3 AND c = $12", 8), "a = $9 AND b = $10 AND c = $19");
        // `$1` belongs to the rows on PostgreSQL and is left alone; a bare `$` too.
        assert_eq!(renumber("$1 $ x$", 8), "$1 $ x$");
    }

    #[test]
    fn rows_become_cells() {
        let mut cells = Vec::new();
        let text = "b".to_string();
        (7_i64, "a", None::<i64>, Some(&text), &&"c").cells(&mut cells);
        assert_eq!(
            cells,
            vec![Cell::Int(7), Cell::Text("a".into()), Cell::Null, Cell::Text("b".into()), Cell::Text("c".into())]
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
