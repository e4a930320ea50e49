//! The sets of states SQL statements filter on, kept in one place because they must match the
//! predicates of the partial indexes in `migrations/` word for word: SQLite uses a partial index
//! only for a query whose `WHERE` contains the index's own predicate term, so a statement whose
//! set drifts from its index's silently scans the whole table instead.

use std::sync::OnceLock;

use crate::model::State;

/// A set of states as SQL sees it, e.g. `state IN (1, 4)`.
pub(super) struct StateSet {
    states: &'static [State],
    codes: OnceLock<String>,
}

impl StateSet {
    const fn new(states: &'static [State]) -> Self {
        Self {
            states,
            codes: OnceLock::new(),
        }
    }

    /// The states' stored values as an `IN` list, `1, 4`, formatted once.
    pub(super) fn codes(&self) -> &str {
        self.codes.get_or_init(|| {
            self.states
                .iter()
                .map(|state| state.code().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
    }
}

/// Waiting to be sent (pending or retrying): what a claim may take, and what a backlog counts.
/// The predicate of the `notifications_ready` index.
pub(super) static WAITING: StateSet = StateSet::new(&[State::Pending, State::Retrying]);

/// The states a notification never leaves: delivered, failed, suppressed, expired, cancelled.
/// The predicate of the `notifications_finished` index, which retention walks.
pub(super) static FINISHED: StateSet = StateSet::new(&[
    State::Delivered,
    State::Failed,
    State::Suppressed,
    State::Expired,
    State::Cancelled,
]);

/// Claimed by a worker, under a lease: the one state the `notifications_leases` index covers
/// (`state = 2`), which lease recovery and hand-backs filter on.
pub(super) const LEASED: State = State::InFlight;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;

    /// Every partial index on `notifications` after all migrations of one dialect ran, by name:
    /// its predicate (the text after `WHERE`).
    fn partial_indexes(dialect: &str) -> BTreeMap<String, String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dialect);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("the migrations directory")
            .map(|entry| entry.expect("a migration file").path())
            .collect();
        files.sort();
        let mut indexes = BTreeMap::new();
        for file in files {
            let sql = std::fs::read_to_string(&file).expect("a readable migration");
            let code: String = sql
                .lines()
                .map(|line| line.split("--").next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" ");
            for statement in code.split(';') {
                let words: Vec<&str> = statement.split_whitespace().collect();
                match words.as_slice() {
                    ["DROP", "INDEX", "IF", "EXISTS", name, ..] | ["DROP", "INDEX", name, ..] => {
                        indexes.remove(*name);
                    }
                    ["CREATE", "INDEX", name, "ON", "notifications", ..] => {
                        let statement = words.join(" ");
                        if let Some((_, predicate)) = statement.split_once(" WHERE ") {
                            indexes.insert(name.to_string(), predicate.to_owned());
                        }
                    }
                    _ => {}
                }
            }
        }
        indexes
    }

    #[test]
    fn state_sets_match_the_partial_indexes_of_every_migration() {
        let expected = BTreeMap::from([
            (
                "notifications_finished".to_owned(),
                format!("state IN ({})", FINISHED.codes()),
            ),
            (
                "notifications_leases".to_owned(),
                format!("state = {}", LEASED.code()),
            ),
            (
                "notifications_ready".to_owned(),
                format!("state IN ({})", WAITING.codes()),
            ),
        ]);
        for dialect in ["sqlite", "postgres"] {
            assert_eq!(partial_indexes(dialect), expected, "{dialect}");
        }
    }

    #[test]
    fn codes_are_formatted_as_an_in_list() {
        assert_eq!(WAITING.codes(), "1, 4");
        assert_eq!(FINISHED.codes(), "3, 5, 6, 7, 8");
    }
}
