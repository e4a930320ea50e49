//! Intake's inserts: new notifications stored in group commits and express commits,
//! deduplicated on `(customer_id, idempotency_key)`, with the ids the new rows got.

use std::collections::HashMap;

use sqlx::any::AnyArguments;
use sqlx::{AnyConnection, Row};

use sqlx::Connection as _;

use super::gate::Priority;
use super::notifications::stored_lane;
use super::{Durability, Error, Store, chunk_sizes, values_placeholders};
use crate::model::{ClaimToken, EpochMillis, Inserted, NewNotification, NotificationId, State};

/// Rows per multi-row insert, at most: one statement per row costs ~25 µs more than batching,
/// and 256 × 18 binds stays far below both databases' parameter limits.
const STATEMENT_ROWS: usize = 256;

const INSERT_COLUMNS: &str = "customer_id, idempotency_key, recipient, lane, payload, state, \
                              created_at, updated_at, due_at, send_at, expires_at, channel, \
                              last_error, template_id, template_version, claim, attempts, \
                              lease_until";
const INSERT_COLUMN_COUNT: usize = 18;

/// Whose commit an insert is (see [`Store::insert_notifications`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// A group commit: many callers' notifications, however many.
    Group,
    /// A few notifications whose callers wait on nothing else (unary Submits). On SQLite its
    /// turn at the write connection comes before group commits and background writes, so it
    /// waits for at most the transaction under way, not for a big batch.
    Express,
}

impl Commit {
    fn priority(self) -> Priority {
        match self {
            Commit::Group => Priority::Caller,
            Commit::Express => Priority::Express,
        }
    }
}

/// What [`Store::insert_calls`] stored: the results of the calls it committed, and why the
/// rest was not stored, if it was not.
#[derive(Debug)]
pub(crate) struct Stored {
    /// One result per item of the committed calls, which are the first `results.len()` items.
    pub results: Vec<Inserted>,
    /// Why the items after those were not stored (all of them, or none of a call).
    pub failed: Option<Error>,
}

impl Store {
    /// Inserts a batch of new notifications atomically, deduplicating on
    /// `(customer_id, idempotency_key)`. Results come back in input order. A key repeated inside
    /// the batch is treated like one repeated across calls. `commit` says whose commit it is,
    /// which on SQLite decides its place in the queue for the write connection.
    ///
    /// Items marked in `handoff` are stored already claimed (in flight, claim token 1, leased
    /// until `lease_until`): intake hands them straight to their actor, which skips a claim's
    /// round trip, and if this process dies first their lease brings them back. `handoff` is
    /// either empty (none) or one flag per item.
    pub async fn insert_notifications(
        &self,
        commit: Commit,
        items: &[NewNotification],
        handoff: &[bool],
        now: EpochMillis,
        lease_until: EpochMillis,
    ) -> Result<Vec<Inserted>, Error> {
        let stored = self
            .insert_calls(commit, items, &[items.len()], handoff, now, lease_until)
            .await;
        match stored.failed {
            Some(err) => Err(err),
            None => Ok(stored.results),
        }
    }

    /// [`Store::insert_notifications`] for the calls of a group commit: `calls` says how many of
    /// `items` each caller sent, in order. Each call is stored whole or not at all.
    ///
    /// On SQLite a group commit may be cut between two calls: when an express commit is waiting
    /// for the write connection, the calls inserted so far are committed, the connection is lent
    /// to the express commit, and the rest goes on in a new transaction. A unary Submit then
    /// waits for one call's insert instead of a whole group commit of a few hundred rows. So a
    /// failure can leave the first calls stored and the rest not; [`Stored`] says which.
    ///
    /// A commit of one key (a unary Submit that no other call shared a commit with) is its
    /// `INSERT` alone, atomic by itself: no `BEGIN` and `COMMIT` around it. Each of those is a
    /// round trip to the database (on SQLite a hop to its worker thread), and on a busy machine
    /// every round trip waits to be scheduled. With more keys the transaction stays: they take
    /// several statements, and if one key was stored before, the read that compares it must not
    /// come after the others are committed (a failed read would then answer "nothing stored").
    pub(crate) async fn insert_calls(
        &self,
        commit: Commit,
        items: &[NewNotification],
        calls: &[usize],
        handoff: &[bool],
        now: EpochMillis,
        lease_until: EpochMillis,
    ) -> Stored {
        let mut first_of_key: HashMap<(&str, &str), usize> = HashMap::with_capacity(items.len());
        let mut unique = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let key = (item.customer_id.as_str(), item.idempotency_key.as_str());
            first_of_key.entry(key).or_insert_with(|| {
                unique.push(i);
                i
            });
        }
        let rows = NewRows {
            backend: self.backend,
            items,
            handoff,
            now,
            lease_until,
        };
        // Where the commit may be cut: after each call of a group commit on SQLite. An express
        // commit is never cut (it is what the others make way for), and on PostgreSQL nothing
        // waits for a group commit: there the calls share statements of up to 256 rows.
        let ends: Vec<usize> = match (commit, &self.gate) {
            (Commit::Group, Some(_)) => calls
                .iter()
                .scan(0, |end, &count| {
                    *end += count;
                    Some(*end)
                })
                .collect(),
            _ => vec![items.len()],
        };

        let mut results = vec![None; items.len()];
        let mut committed = 0;
        let written = self
            .write_calls(commit, &rows, &unique, &ends, &mut results, &mut committed)
            .await;
        let results = items[..committed]
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let key = (item.customer_id.as_str(), item.idempotency_key.as_str());
                let first = first_of_key[&key];
                let first_result = results[first].unwrap_or(Inserted::Conflict(NotificationId(0)));
                if first == i {
                    first_result
                } else {
                    repeat_of(item, &items[first], first_result)
                }
            })
            .collect();
        Stored {
            results,
            failed: written.err(),
        }
    }

    /// The writes of [`Store::insert_calls`]: the unique keys (`unique`) of the items up to
    /// each of `ends` in turn, committed at the last end and at any end where an express commit
    /// is waiting. Fills `results` for the first occurrences of the keys it stored, and moves
    /// `committed` to the end of what is committed.
    async fn write_calls(
        &self,
        commit: Commit,
        rows: &NewRows<'_>,
        unique: &[usize],
        ends: &[usize],
        results: &mut [Option<Inserted>],
        committed: &mut usize,
    ) -> Result<(), Error> {
        crate::failpoints::check(crate::failpoints::point::STORE_INSERT)?;
        let mut conn = self
            .writer_in(commit.priority(), Durability::Durable)
            .await?;
        if unique.len() == 1 {
            // Nothing can fail between writing the row and committing it: the point fires
            // before the statement, which fails it the same way (nothing is stored).
            crate::failpoints::check(crate::failpoints::point::STORE_INSERT_COMMIT)?;
            rows.insert(&mut conn, unique, results).await?;
            *committed = rows.items.len();
            conn.finished_cleanly();
            return Ok(());
        }
        let (mut ends, mut keys) = (ends.iter().copied().peekable(), unique);
        while let Some(mut end) = ends.next() {
            let mut tx = conn.begin().await?;
            loop {
                let call = keys.partition_point(|&i| i < end);
                rows.insert(&mut tx, &keys[..call], results).await?;
                keys = &keys[call..];
                match ends.peek() {
                    Some(&next) if !self.express_waiting() => end = next,
                    _ => break,
                }
                ends.next();
            }
            crate::failpoints::check(crate::failpoints::point::STORE_INSERT_COMMIT)?;
            tx.commit().await?;
            *committed = end;
            if ends.peek().is_some() {
                conn = self.let_express_through(conn).await?;
            }
        }
        conn.finished_cleanly();
        Ok(())
    }
}

/// One call's new rows, as [`Store::insert_notifications`] writes them.
struct NewRows<'a> {
    backend: super::Backend,
    items: &'a [NewNotification],
    handoff: &'a [bool],
    now: EpochMillis,
    lease_until: EpochMillis,
}

impl NewRows<'_> {
    /// Inserts the items at the indexes `unique` (each key once), in statements of at most
    /// [`STATEMENT_ROWS`], and records in `results` what became of each of them: the id of a new
    /// row, or for a key stored before, how the request compares with it (the repeats of a key
    /// inside the call are left to the caller). Atomic only inside a transaction when it takes
    /// more than one statement (more than one key).
    async fn insert(
        &self,
        conn: &mut AnyConnection,
        unique: &[usize],
        results: &mut [Option<Inserted>],
    ) -> Result<(), Error> {
        // The new ids by key, where they are not known by position (PostgreSQL, and SQLite
        // when some keys were stored before).
        let mut new_ids: HashMap<(String, String), i64> = HashMap::new();
        let mut first = 0;
        for size in chunk_sizes(unique.len(), STATEMENT_ROWS) {
            let chunk = &unique[first..first + size];
            first += size;
            let sql = insert_sql(self.backend, chunk.len());
            let query = self.bind(sqlx::query(&sql), chunk);
            match self.backend {
                super::Backend::Postgres => {
                    for row in query.fetch_all(&mut *conn).await? {
                        new_ids.insert((row.try_get(1)?, row.try_get(2)?), row.try_get(0)?);
                    }
                }
                super::Backend::Sqlite => {
                    // Two statements, one row: `fetch_one` would stop at the INSERT's result.
                    let rows = query.fetch_all(&mut *conn).await?;
                    let row = rows.last().ok_or(sqlx::Error::RowNotFound)?;
                    let answer = (row.try_get(0)?, row.try_get(1)?);
                    self.sqlite_new_ids(conn, chunk, answer, results, &mut new_ids)
                        .await?;
                }
            }
        }

        for &i in unique {
            if results[i].is_some() {
                continue; // a new row whose id SQLite's answer gave by position
            }
            let n = &self.items[i];
            let key = (n.customer_id.to_string(), n.idempotency_key.clone());
            results[i] = Some(match new_ids.get(&key) {
                Some(&id) => Inserted::New(NotificationId(id)),
                None => compare_with_stored(conn, n).await?,
            });
        }
        Ok(())
    }

    /// The ids SQLite gave the new rows of one [`insert_sql`] statement over `chunk`, from the
    /// `last_insert_rowid()` and `changes()` it answered with.
    ///
    /// SQLite gives a new row of a table without `AUTOINCREMENT` the largest rowid in the table
    /// plus one (it picks at random only once the largest possible rowid is taken, which ids
    /// given one by one never reach), and a row skipped as a repeated key takes none. So the
    /// `inserted` new rows hold the ids up to `last`, in the order of the VALUES list, and no
    /// row stored before has one of them. When every row was new, they are `chunk` in order,
    /// and go straight into `results`; otherwise the new rows are read back by that id range,
    /// which only those rows are in, into `new_ids`.
    async fn sqlite_new_ids(
        &self,
        conn: &mut AnyConnection,
        chunk: &[usize],
        (last, inserted): (i64, i64),
        results: &mut [Option<Inserted>],
        new_ids: &mut HashMap<(String, String), i64>,
    ) -> Result<(), Error> {
        let first = last - inserted + 1;
        if usize::try_from(inserted).is_ok_and(|n| n == chunk.len()) {
            for (&i, id) in chunk.iter().zip(first..) {
                results[i] = Some(Inserted::New(NotificationId(id)));
            }
        } else if inserted > 0 {
            let rows = sqlx::query(
                "SELECT id, customer_id, idempotency_key FROM notifications WHERE id >= $1",
            )
            .bind(first)
            .fetch_all(conn)
            .await?;
            for row in rows {
                new_ids.insert((row.try_get(1)?, row.try_get(2)?), row.try_get(0)?);
            }
        }
        Ok(())
    }

    /// Binds the values of the items at `chunk` to an [`insert_sql`] statement for as many rows.
    fn bind<'q>(
        &'q self,
        mut query: sqlx::query::Query<'q, sqlx::Any, AnyArguments<'q>>,
        chunk: &[usize],
    ) -> sqlx::query::Query<'q, sqlx::Any, AnyArguments<'q>> {
        let now = self.now;
        for &i in chunk {
            let n = &self.items[i];
            let handed = self.handoff.get(i).copied().unwrap_or(false);
            // An opted-out recipient's notification is stored, with the reason, and never
            // claimed: only pending and retrying rows are.
            let (state, claim, lease) = match (&n.suppressed, handed) {
                (Some(_), _) => (State::Suppressed, 0, None),
                (None, true) => (State::InFlight, ClaimToken::FIRST.0, Some(self.lease_until)),
                (None, false) => (State::Pending, 0, None),
            };
            query = query
                .bind(n.customer_id.as_str())
                .bind(n.idempotency_key.as_str())
                .bind(n.recipient.as_str())
                .bind(n.lane.code())
                .bind(n.payload.as_slice())
                .bind(state.code())
                .bind(now)
                .bind(now)
                .bind(n.send_at.map_or(now, |at| at.max(now)))
                .bind(n.send_at)
                .bind(n.expires_at)
                .bind(n.channel.code())
                .bind(n.suppressed.as_deref())
                .bind(n.template.as_ref().map(|t| t.id.as_str()))
                .bind(n.template.as_ref().map(|t| t.version))
                .bind(claim)
                .bind(claim)
                .bind(lease);
        }
        query
    }
}

/// A multi-row `INSERT … ON CONFLICT DO NOTHING` for `rows` new notifications, followed by what
/// tells the new rows' ids: on PostgreSQL `RETURNING` them, on SQLite a second statement in the
/// same call reading `last_insert_rowid()` and `changes()` (see [`NewRows::sqlite_new_ids`]).
///
/// Not `RETURNING` on SQLite: sqlx's SQLite driver runs each connection on a thread of its own
/// and passes rows to the waiting task through a channel of 50. A group commit's few hundred
/// returned rows made the thread and the task wait for each other several times per statement,
/// each time for a core, while holding the one write connection. One row back costs nothing.
fn insert_sql(backend: super::Backend, rows: usize) -> String {
    // SQLite: OR FAIL instead of the default ABORT for the other constraints (NOT NULL), so a
    // multi-row INSERT inside the commit's transaction needs no statement journal (a copy of
    // every page before the statement first changes it, to undo just this statement). A failed
    // statement rolls back the whole transaction anyway.
    let (or_fail, new_ids) = match backend {
        super::Backend::Sqlite => (" OR FAIL", "; SELECT last_insert_rowid(), changes()"),
        super::Backend::Postgres => ("", " RETURNING id, customer_id, idempotency_key"),
    };
    format!(
        "INSERT{or_fail} INTO notifications ({INSERT_COLUMNS}) VALUES {} \
         ON CONFLICT (customer_id, idempotency_key) DO NOTHING{new_ids}",
        values_placeholders(backend, rows, INSERT_COLUMN_COUNT)
    )
}

/// For a key that was already stored: is the new request the same delivery (duplicate) or a
/// different one under a reused key (conflict)?
async fn compare_with_stored(
    conn: &mut AnyConnection,
    item: &NewNotification,
) -> Result<Inserted, Error> {
    let row = sqlx::query(
        "SELECT id, recipient, lane, payload FROM notifications \
         WHERE customer_id = $1 AND idempotency_key = $2",
    )
    .bind(item.customer_id.as_str())
    .bind(item.idempotency_key.as_str())
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| Error::Corrupt("conflicting idempotency key vanished".into()))?;
    let id = NotificationId(row.try_get(0)?);
    let recipient: String = row.try_get(1)?;
    let payload: Vec<u8> = row.try_get(3)?;
    Ok(
        if item.same_content(&recipient, stored_lane(row.try_get(2)?)?, &payload) {
            Inserted::Duplicate(id)
        } else {
            Inserted::Conflict(id)
        },
    )
}

/// The result for a key repeated inside one batch, given the result of its first occurrence.
fn repeat_of(item: &NewNotification, first: &NewNotification, first_result: Inserted) -> Inserted {
    let id = match first_result {
        Inserted::New(id) | Inserted::Duplicate(id) | Inserted::Conflict(id) => id,
    };
    let same = item.same_content(&first.recipient, first.lane, &first.payload);
    match first_result {
        Inserted::New(_) | Inserted::Duplicate(_) if same => Inserted::Duplicate(id),
        _ => Inserted::Conflict(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Lane, now_millis};
    use crate::store::test_support::{notification, sqlite_store};

    fn item(key: &str, payload: &str) -> NewNotification {
        NewNotification {
            lane: Lane::Bulk,
            payload: payload.as_bytes().to_vec(),
            ..notification(key)
        }
    }

    async fn insert(store: &Store, items: &[NewNotification]) -> Vec<Inserted> {
        store
            .insert_notifications(Commit::Group, items, &[], now_millis(), 0)
            .await
            .unwrap()
    }

    /// The key of the row stored under `id`.
    async fn key_of(store: &Store, id: NotificationId) -> String {
        let stored = store.get_notification(id).await.unwrap();
        stored.map(|n| n.idempotency_key).unwrap_or_default()
    }

    /// Checks that every `New` result names the row its item was stored in.
    async fn assert_new_ids_hold_their_items(
        store: &Store,
        items: &[NewNotification],
        results: &[Inserted],
    ) {
        for (item, result) in items.iter().zip(results) {
            if let Inserted::New(id) = result {
                assert_eq!(key_of(store, *id).await, item.idempotency_key, "{id:?}");
            }
        }
    }

    /// 300 new keys take two statements: each one's ids are read from its own answer.
    #[tokio::test]
    async fn every_new_row_is_answered_with_the_id_it_was_stored_under() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        insert(&store, &[item("before", "{}")]).await;
        let items: Vec<_> = (0..300).map(|i| item(&format!("k{i}"), "{}")).collect();
        let results = insert(&store, &items).await;
        assert_eq!(results.len(), 300);
        assert!(results.iter().all(|r| matches!(r, Inserted::New(_))));
        assert_new_ids_hold_their_items(&store, &items, &results).await;
    }

    /// Keys stored before, between new ones, leave gaps in the statement's answer: the new
    /// rows' ids are read back, and the old keys are compared with what they hold.
    #[tokio::test]
    async fn keys_stored_before_are_told_apart_from_the_new_ones_beside_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let old = insert(&store, &[item("old-1", "{}"), item("old-2", "{}")]).await;
        let items = [
            item("new-1", "{}"),
            item("old-1", "{}"),
            item("new-2", "{}"),
            item("old-2", r#"{"other":1}"#),
            item("new-3", "{}"),
            item("new-1", "{}"),
        ];
        let results = insert(&store, &items).await;
        let (Inserted::New(old_1), Inserted::New(old_2)) = (old[0], old[1]) else {
            panic!("{old:?}");
        };
        let Inserted::New(new_1) = results[0] else {
            panic!("{results:?}");
        };
        assert!(matches!(results[2], Inserted::New(_)), "{results:?}");
        assert!(matches!(results[4], Inserted::New(_)), "{results:?}");
        assert_eq!(results[1], Inserted::Duplicate(old_1));
        assert_eq!(results[3], Inserted::Conflict(old_2));
        assert_eq!(results[5], Inserted::Duplicate(new_1));
        assert_new_ids_hold_their_items(&store, &items, &results).await;
    }
}
