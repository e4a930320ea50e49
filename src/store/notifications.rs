//! Notification rows: intake's inserts, reads and cancels (claims and outcomes are in
//! [`super::claims`]).

use std::collections::HashMap;

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{AnyConnection, Row};

use sqlx::Connection as _;

use super::gate::Priority;
use super::states::WAITING;
use super::{Durability, Error, Store, chunk_sizes, values_placeholders};
use crate::model::{
    Channel, ClaimToken, EpochMillis, Inserted, Lane, NewNotification, Notification,
    NotificationId, State, TemplateRef,
};

/// Rows per multi-row insert, at most: one statement per row costs ~25 µs more than batching,
/// and 256 × 18 binds stays far below both databases' parameter limits.
const STATEMENT_ROWS: usize = 256;

const INSERT_COLUMNS: &str = "customer_id, idempotency_key, recipient, lane, payload, state, \
                              created_at, updated_at, due_at, send_at, expires_at, channel, \
                              last_error, template_id, template_version, claim, attempts, \
                              lease_until";
const INSERT_COLUMN_COUNT: usize = 18;

pub(super) const SELECT_COLUMNS: &str = "id, customer_id, idempotency_key, recipient, lane, payload, state, \
                              attempts, last_error, created_at, updated_at, send_at, expires_at, \
                              due_at, delivered_at, channel, template_id, template_version";

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

    /// Notifications waiting (pending or retrying) for one customer, per lane:
    /// `(transactional, bulk)`.
    ///
    /// One pass over the customer's entries of the ready index, counted per lane with `FILTER`:
    /// a `GROUP BY lane` would sort every waiting row (the index leads with the channel, not the
    /// lane), which at a million waiting costs seconds and megabytes of sorter memory.
    pub async fn backlog(&self, customer_id: &str) -> Result<(u64, u64), Error> {
        let sql = format!(
            "SELECT {} FROM notifications WHERE customer_id = $1 AND state IN ({})",
            lane_counts(),
            WAITING.codes()
        );
        let row = sqlx::query(&sql)
            .bind(customer_id)
            .fetch_one(&self.read)
            .await?;
        Ok((count(row.try_get(0)?), count(row.try_get(1)?)))
    }

    /// How many notifications `customer_id` has waiting, counting no further than `cap`: what a
    /// quota needs to know ("is it at the limit?") at a cost bounded by the limit, however large
    /// the backlog.
    pub async fn backlog_up_to(&self, customer_id: &str, cap: u64) -> Result<u64, Error> {
        let sql = format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM notifications \
             WHERE customer_id = $1 AND state IN ({}) LIMIT $2) AS waiting",
            WAITING.codes()
        );
        let row = sqlx::query(&sql)
            .bind(customer_id)
            .bind(i64::try_from(cap).unwrap_or(i64::MAX))
            .fetch_one(&self.read)
            .await?;
        Ok(count(row.try_get(0)?))
    }

    /// Every customer's backlog (pending or retrying) per lane, as `(customer, transactional,
    /// bulk)`, in one query: for `/metrics` and the dashboard, which show every customer. Grouped
    /// by customer only, which the ready index delivers in order, so nothing is sorted.
    pub async fn backlog_all(&self) -> Result<Vec<(String, u64, u64)>, Error> {
        let sql = format!(
            "SELECT customer_id, {} FROM notifications WHERE state IN ({}) \
             GROUP BY customer_id ORDER BY customer_id",
            lane_counts(),
            WAITING.codes()
        );
        let rows = sqlx::query(&sql).fetch_all(&self.read).await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0)?,
                    count(row.try_get(1)?),
                    count(row.try_get(2)?),
                ))
            })
            .collect()
    }

    /// Ids of the unpaused customers that have at least one notification due by `now`.
    pub async fn customers_with_due_work(&self, now: EpochMillis) -> Result<Vec<String>, Error> {
        // Naming every channel lets the ready index (customer, channel, lane, due_at) seek
        // straight to each channel's due rows; without it the lane cannot be used and a customer
        // with a large backlog in one lane is scanned whole, every sweep, to look for the other.
        let channels = Channel::ALL.map(|c| c.code().to_string()).join(", ");
        let ready = |lane: Lane| {
            format!(
                "EXISTS (SELECT 1 FROM notifications n WHERE n.customer_id = c.id \
                 AND n.channel IN ({channels}) AND n.lane = {lane} \
                 AND n.state IN ({waiting}) AND n.due_at <= $1)",
                lane = lane.code(),
                waiting = WAITING.codes()
            )
        };
        let sql = format!(
            "SELECT c.id FROM customers c WHERE c.paused = 0 AND ({} OR {})",
            ready(Lane::Transactional),
            ready(Lane::Bulk)
        );
        let rows = sqlx::query(&sql).bind(now).fetch_all(&self.read).await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Cancels a notification that is not in flight yet (pending or retrying): it ends
    /// CANCELLED and is never claimed. Returns whether it was cancelled; the compare on the
    /// state makes a concurrent claim and cancel agree on who won.
    pub async fn cancel_notification(
        &self,
        id: NotificationId,
        now: EpochMillis,
    ) -> Result<bool, Error> {
        let sql = format!(
            "UPDATE notifications SET state = {cancelled}, last_error = 'cancelled by the caller', \
               lease_until = NULL, updated_at = $1 \
             WHERE id = $2 AND state IN ({waiting})",
            cancelled = State::Cancelled.code(),
            waiting = WAITING.codes(),
        );
        let result = sqlx::query(&sql)
            .bind(now)
            .bind(id.0)
            .execute(&mut *self.writer(Durability::Durable).await?)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    /// One notification by id.
    pub async fn get_notification(
        &self,
        id: NotificationId,
    ) -> Result<Option<Notification>, Error> {
        let sql = format!("SELECT {SELECT_COLUMNS} FROM notifications WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id.0)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(notification_from_row).transpose()
    }

    /// One recipient's notifications created since `since`, newest first, with ids below
    /// `before` (cursor paging).
    pub async fn list_inbox(
        &self,
        customer_id: &str,
        recipient: &str,
        since: EpochMillis,
        before: Option<NotificationId>,
        limit: usize,
    ) -> Result<Vec<Notification>, Error> {
        let sql = format!(
            "SELECT {SELECT_COLUMNS} FROM notifications \
             WHERE customer_id = $1 AND recipient = $2 AND id < $3 AND created_at >= $5 \
             ORDER BY id DESC LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(customer_id)
            .bind(recipient)
            .bind(before.map_or(i64::MAX, |id| id.0))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(since)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(notification_from_row).collect()
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
    /// [`STATEMENT_ROWS`], and records in `results` what became of each of them (the repeats of
    /// a key are left to the caller). Atomic only inside a transaction when it takes more than
    /// one statement (more than one key).
    async fn insert(
        &self,
        conn: &mut AnyConnection,
        unique: &[usize],
        results: &mut [Option<Inserted>],
    ) -> Result<(), Error> {
        let mut new_ids: HashMap<(String, String), i64> = HashMap::with_capacity(unique.len());
        let mut first = 0;
        for size in chunk_sizes(unique.len(), STATEMENT_ROWS) {
            let chunk = &unique[first..first + size];
            first += size;
            let sql = insert_sql(self.backend, chunk.len());
            let query = self.bind(sqlx::query(&sql), chunk);
            for row in query.fetch_all(&mut *conn).await? {
                new_ids.insert((row.try_get(1)?, row.try_get(2)?), row.try_get(0)?);
            }
        }

        for &i in unique {
            let n = &self.items[i];
            let key = (n.customer_id.to_string(), n.idempotency_key.clone());
            results[i] = Some(match new_ids.get(&key) {
                Some(&id) => Inserted::New(NotificationId(id)),
                None => compare_with_stored(conn, n).await?,
            });
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

/// A multi-row `INSERT … ON CONFLICT DO NOTHING RETURNING` for `rows` new notifications.
fn insert_sql(backend: super::Backend, rows: usize) -> String {
    // SQLite: OR FAIL instead of the default ABORT for the other constraints (NOT NULL), so a
    // multi-row INSERT inside the commit's transaction needs no statement journal (a copy of
    // every page before the statement first changes it, to undo just this statement). A failed
    // statement rolls back the whole transaction anyway.
    let or_fail = match backend {
        super::Backend::Sqlite => " OR FAIL",
        super::Backend::Postgres => "",
    };
    format!(
        "INSERT{or_fail} INTO notifications ({INSERT_COLUMNS}) VALUES {} \
         ON CONFLICT (customer_id, idempotency_key) DO NOTHING \
         RETURNING id, customer_id, idempotency_key",
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

/// Two counts of the rows a query selects, transactional then bulk: `COUNT(*) FILTER` reads
/// them in one pass without grouping (and so without sorting) by lane.
fn lane_counts() -> String {
    format!(
        "COUNT(*) FILTER (WHERE lane = {}), COUNT(*) FILTER (WHERE lane = {})",
        Lane::Transactional.code(),
        Lane::Bulk.code()
    )
}

/// A `COUNT(*)` as an unsigned count.
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
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

pub(super) fn notification_from_row(row: &AnyRow) -> Result<Notification, Error> {
    let state: i64 = row.try_get("state")?;
    Ok(Notification {
        id: NotificationId(row.try_get("id")?),
        customer_id: row.try_get("customer_id")?,
        idempotency_key: row.try_get("idempotency_key")?,
        recipient: row.try_get("recipient")?,
        lane: stored_lane(row.try_get("lane")?)?,
        payload: row.try_get("payload")?,
        state: State::from_code(state)
            .ok_or_else(|| Error::Corrupt(format!("unknown state {state}")))?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        send_at: row.try_get("send_at")?,
        expires_at: row.try_get("expires_at")?,
        due_at: row.try_get("due_at")?,
        delivered_at: row.try_get("delivered_at")?,
        channel: stored_channel(row.try_get("channel")?)?,
        template: template_ref(
            row.try_get("template_id")?,
            row.try_get("template_version")?,
        ),
    })
}

/// A stored template reference: both columns are set, or neither.
pub(super) fn template_ref(id: Option<String>, version: Option<i64>) -> Option<TemplateRef> {
    Some(TemplateRef {
        id: id?,
        version: version?,
    })
}

/// Reads a stored `channel` column. An unknown value is refused rather than guessed: sending it
/// down the wrong channel would deliver to the wrong kind of recipient.
pub(super) fn stored_channel(code: i64) -> Result<Channel, Error> {
    Channel::from_code(code).ok_or_else(|| Error::Corrupt(format!("unknown channel {code}")))
}

/// Reads a stored `lane` column. An unknown value is refused rather than guessed, like a channel.
pub(super) fn stored_lane(code: i64) -> Result<Lane, Error> {
    Lane::from_code(code).ok_or_else(|| Error::Corrupt(format!("unknown lane {code}")))
}
