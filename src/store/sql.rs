//! Building statements: batches split into a few reusable shapes, and their placeholders.

use serde::de::DeserializeOwned;

use super::{Backend, Error};

/// Splits `n` rows into statements of at most `max` rows, each a power of two: the few
/// statement shapes the databases then prepare once and reuse, however batch sizes vary.
pub(super) fn chunk_sizes(n: usize, max: usize) -> Vec<usize> {
    let max = max.next_power_of_two();
    let mut sizes = vec![max; n / max];
    let rest = n % max;
    sizes.extend(
        (0..usize::BITS)
            .rev()
            .map(|bit| 1 << bit)
            .filter(|size| rest & size != 0),
    );
    sizes
}

/// Builds `(.., ..), (.., ..)` for `rows` rows of `columns` values: the whole parameter list of
/// a multi-row statement (sqlx's `Any` driver has no portable placeholder helper).
///
/// PostgreSQL gets numbered `$N`. SQLite gets anonymous `?`: sqlx-sqlite looks every numbered
/// parameter up by name, linearly, which made a 500-row insert quadratic (71% of CPU in
/// `sqlite3_bind_parameter_name`); anonymous ones bind in order.
pub(super) fn values_placeholders(backend: Backend, rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for col in 0..columns {
            if col > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Postgres => {
                    sql.push('$');
                    sql.push_str(&(1 + row * columns + col).to_string());
                }
                Backend::Sqlite => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql
}

/// SQLite: `select`'s rows as one row, a JSON array of `row` (an expression over its columns).
///
/// sqlx's SQLite driver hands each row from the connection's thread to the task through a
/// channel of 50, and a statement's read snapshot stays open until its last row is taken. Under
/// load the task waits for a core each time. In a drain, a claim's read-back of 1,300 rows held
/// its snapshot 35 ms on average (up to 130 ms), the sweep's 500 customer ids 72–104 ms (up
/// to 1.5 s); and the WAL restart, which must wait for every reader on old frames, waited for them
/// while holding the write connection. As one row, a snapshot lasts only as long as SQLite takes
/// to read the rows.
pub(super) fn one_json_row(select: &str, row: &str) -> String {
    format!("SELECT json_group_array({row}) FROM ({select})")
}

/// Decodes the JSON array a [`one_json_row`] statement answered with; `what` names its rows in
/// the error (a row that does not decode is corruption).
pub(super) fn from_json_row<T: DeserializeOwned>(json: &str, what: &str) -> Result<T, Error> {
    serde_json::from_str(json)
        .map_err(|err| Error::Corrupt(format!("{what} did not read back: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_into_power_of_two_chunks() {
        assert_eq!(chunk_sizes(0, 256), Vec::<usize>::new());
        assert_eq!(chunk_sizes(1, 256), [1]);
        assert_eq!(chunk_sizes(7, 256), [4, 2, 1]);
        assert_eq!(chunk_sizes(600, 256), [256, 256, 64, 16, 8]);
        for n in 0..2000 {
            let sizes = chunk_sizes(n, 256);
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert!(sizes.iter().all(|s| s.is_power_of_two() && *s <= 256));
        }
    }

    #[test]
    fn placeholders_number_rows_in_order() {
        assert_eq!(
            values_placeholders(Backend::Postgres, 2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(values_placeholders(Backend::Sqlite, 2, 2), "(?, ?), (?, ?)");
    }
}
