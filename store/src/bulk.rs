//! Statements over many rows at once, shaped so that SQLite's prepared-statement cache keeps them.
//!
//! sqlx caches each connection's prepared statements by their text (100 per connection). A
//! multi-row INSERT or an `IN (...)` list whose length follows the data is a new text almost every
//! time: prepared afresh (for a statement of hundreds of values that costs more than running it)
//! and pushing the hot single-row statements out of the cache. Here lengths come from a few fixed
//! shapes: inserts are cut into chunks of [`INSERT_SHAPES`] rows, and `IN` lists are padded to the
//! next of [`IN_SHAPES`] by repeating their last value (a repeated value changes nothing).

/// Row counts a multi-row INSERT is cut into, largest first.
pub const INSERT_SHAPES: [usize; 4] = [64, 16, 4, 1];
/// Values one statement binds at most. sqlx looks every parameter's name up in SQLite, which
/// walks the statement's list of names: binding n values costs n², and past a few hundred that
/// outweighs the statements saved.
pub const BINDS_MAX: usize = 256;
/// Lengths an `IN (...)` list is padded to.
pub const IN_SHAPES: [usize; 5] = [1, 4, 16, 64, 256];
/// The longest `IN` list one statement takes; longer lists are read in chunks of this.
pub const IN_MAX: usize = 256;

/// `$first, $first+1, ...` for `count` values.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|index| format!("${index}")).collect::<Vec<_>>().join(", ")
}

/// The rows of a `VALUES` list that an `UPDATE ... FROM` joins on, each value cast to its column's
/// type (PostgreSQL cannot infer a parameter's type there): `rows` rows of `types.len()` values,
/// numbered from `$first` on.
pub fn cast_rows(first: usize, rows: usize, types: &[&str]) -> String {
    (0..rows)
        .map(|row| {
            let at = first + row * types.len();
            let values: Vec<String> =
                types.iter().enumerate().map(|(column, kind)| format!("CAST(${} AS {kind})", at + column)).collect();
            format!("({})", values.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Splits `rows` of `columns` values each into consecutive chunks whose lengths are all in
/// [`INSERT_SHAPES`], none binding more than [`BINDS_MAX`] values (but at least one row).
pub fn insert_chunks<T>(rows: &[T], columns: usize) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let mut rest = rows;
    while !rest.is_empty() {
        let size = INSERT_SHAPES
            .iter()
            .copied()
            .find(|size| *size <= rest.len() && (size * columns <= BINDS_MAX || *size == 1))
            .unwrap_or(1);
        let (chunk, tail) = rest.split_at(size);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
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
    fn shapes_cover_every_length() {
        for columns in [1, 4, 13, 300] {
            for length in 0..300 {
                let rows: Vec<usize> = (0..length).collect();
                let chunks = insert_chunks(&rows, columns);
                assert!(chunks.iter().all(|chunk| INSERT_SHAPES.contains(&chunk.len())), "{length}");
                assert!(chunks.iter().all(|chunk| chunk.len() * columns <= BINDS_MAX || chunk.len() == 1));
                assert_eq!(chunks.concat(), rows, "{length}: in order, nothing lost");
            }
        }
        let values: Vec<&str> = vec!["a", "b", "c", "d", "e"];
        let list = padded(&values);
        assert_eq!(list.len(), 16);
        assert_eq!(&list[..5], &values[..]);
        assert!(list[5..].iter().all(|value| *value == "e"));
        assert!(padded::<str>(&[]).is_empty());
        assert_eq!(
            cast_rows(3, 2, &["TEXT", "BIGINT"]),
            "(CAST($3 AS TEXT), CAST($4 AS BIGINT)), (CAST($5 AS TEXT), CAST($6 AS BIGINT))"
        );
    }
}
