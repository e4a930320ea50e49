//! The dispatch side of the notification rows: claims, outcomes, hand-backs and lease recovery.
//!
//! Every statement here serves many customers at once, so the store's cost per notification is
//! a small constant however many customer systems there are:
//! - [`Store::claim_many`] fills every asking actor's window in one statement: for each
//!   (customer, channel, lane) it takes up to the asked number of due rows, oldest due first;
//! - [`Store::record_outcomes`] moves a batch of finished attempts in one statement, whatever
//!   their outcomes.
//!
//! Statements are built for a power-of-two number of entries (see [`chunk_sizes`]), so each
//! database prepares at most a handful of shapes and reuses them; `now` and every value are
//! bound, never formatted into the SQL.
//!
//! Every write that moves a claimed notification is a compare-and-set on its `claim` token, so a
//! stale worker (its lease expired and the row was claimed again) can never overwrite a newer
//! outcome.

use super::claimed_row::{CLAIMED_COLUMNS, ClaimedRow, read_back_sql};
use super::states::{LEASED, WAITING};
use super::{Backend, Durability, Error, Store, chunk_sizes};
use crate::model::{
    Channel, ClaimToken, Claimed, EpochMillis, Lane, NotificationId, Outcome, OutcomeKind, State,
};

/// The most entries one claim or outcome statement carries. Claims: each entry is an index
/// probe; 256 of them keep one statement (and so one turn at SQLite's write connection) to a few
/// milliseconds.
const MAX_CHUNK: usize = 256;

/// One actor's ask: up to `limit` due notifications of one customer, on one channel, in one lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    pub customer_id: String,
    pub channel: Channel,
    pub lane: Lane,
    pub limit: usize,
}

impl Store {
    /// Claims, for every request, up to its limit of that customer's due notifications on that
    /// channel and lane, oldest due first, leasing them until `lease_until`. Each claim bumps the
    /// row's claim token and attempt count. Returns the claimed notifications of each request,
    /// in request order, each list oldest due first. On PostgreSQL, rows another node holds are
    /// skipped.
    pub async fn claim_many(
        &self,
        requests: &[ClaimRequest],
        now: EpochMillis,
        lease_until: EpochMillis,
    ) -> Result<Vec<Vec<Claimed>>, Error> {
        crate::failpoints::check(crate::failpoints::point::STORE_CLAIM)?;
        let mut claimed = match self.backend {
            Backend::Postgres => self.claim_returning(requests, now, lease_until).await?,
            Backend::Sqlite => self.claim_then_read(requests, now, lease_until).await?,
        };
        // Row order is unspecified: oldest due first within each request.
        claimed.sort_by_key(|(request, due_at, n)| (*request, *due_at, n.id));
        let mut per_request: Vec<Vec<Claimed>> = vec![Vec::new(); requests.len()];
        for (request, _, notification) in claimed {
            per_request[request].push(notification);
        }
        Ok(per_request)
    }

    /// PostgreSQL: each statement leases its rows and returns them (`RETURNING`), streamed on
    /// the connection as they come.
    async fn claim_returning(
        &self,
        requests: &[ClaimRequest],
        now: EpochMillis,
        lease_until: EpochMillis,
    ) -> Result<Vec<(usize, EpochMillis, Claimed)>, Error> {
        let mut claimed = Vec::new();
        let mut conn = self.writer(Durability::Relaxed).await?;
        let mut first = 0;
        for size in chunk_sizes(requests.len(), MAX_CHUNK) {
            if first > 0 {
                conn = self.let_express_through(conn).await?;
            }
            let sql = claim_sql(size);
            let mut query = sqlx::query(&sql).bind(lease_until).bind(now);
            for request in &requests[first..first + size] {
                query = query
                    .bind(request.customer_id.as_str())
                    .bind(request.channel.code())
                    .bind(request.lane.code())
                    .bind(limit(request));
            }
            let rows = query.fetch_all(&mut *conn).await?;
            let rows = rows.iter().map(ClaimedRow::from_any);
            assign(&requests[first..first + size], first, rows, &mut claimed)?;
            first += size;
        }
        conn.finished_cleanly();
        Ok(claimed)
    }

    /// SQLite: on the write connection, each statement's rows are picked as one row of ids and
    /// leased by id; after the turn, the leased rows are read on a read connection.
    ///
    /// sqlx's SQLite driver hands every returned row from the connection's thread to the task
    /// through a channel of 50, so an `UPDATE … RETURNING` of a drain's thousands of rows made
    /// thread and task wait for each other dozens of times per statement, each time for a core,
    /// while the one write connection was held and every caller waited (turns of 60–150 ms in a
    /// drain). The ids come back as one row instead, and the rows' contents cross on a reader,
    /// beside the next writer, also as one row ([`read_back_sql`]). Nothing else can change a leased row before it is read: on SQLite
    /// this node is the only claimer, a cancel refuses a notification in flight, and the lease
    /// outlives the read.
    async fn claim_then_read(
        &self,
        requests: &[ClaimRequest],
        now: EpochMillis,
        lease_until: EpochMillis,
    ) -> Result<Vec<(usize, EpochMillis, Claimed)>, Error> {
        let mut leased = Vec::new();
        let mut conn = self.writer(Durability::Relaxed).await?;
        let mut first = 0;
        for size in chunk_sizes(requests.len(), MAX_CHUNK) {
            if first > 0 {
                conn = self.let_express_through(conn).await?;
            }
            let sql = pick_sql(size);
            let mut pick = sqlx::query_scalar::<_, Option<String>>(&sql);
            for request in &requests[first..first + size] {
                pick = pick
                    .bind(request.customer_id.as_str())
                    .bind(request.channel.code())
                    .bind(request.lane.code())
                    .bind(now)
                    .bind(limit(request));
            }
            // The one writer holds the turn, so nothing changes these rows before the lease.
            let Some(picked) = pick.fetch_one(&mut *conn).await? else {
                first += size;
                continue;
            };
            let ids = picked
                .split(',')
                .map(str::parse::<i64>)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| Error::Corrupt("a claim picked a non-numeric id".into()))?;
            // A drain's statement picks thousands of rows; they are leased a bounded slice per
            // statement, so an express commit waits for one slice, not all of them.
            for (n, slice) in ids.chunks(MAX_CHUNK).enumerate() {
                if n > 0 {
                    conn = self.let_express_through(conn).await?;
                }
                sqlx::query(&lease_by_id_sql())
                    .bind(lease_until)
                    .bind(now)
                    .bind(json_ids(slice))
                    .execute(&mut *conn)
                    .await?;
            }
            leased.push((first, size, format!("[{picked}]")));
            first += size;
        }
        conn.finished_cleanly();
        drop(conn);
        // Should a read fail, the leased rows wait out their lease and are claimed again, as
        // when a node stops after claiming: delayed, not lost.
        let mut claimed = Vec::new();
        for (first, size, ids) in leased {
            let rows: String = sqlx::query_scalar(&read_back_sql())
                .bind(ids)
                .fetch_one(&self.read)
                .await?;
            let rows = ClaimedRow::from_json(&rows)?.into_iter().map(Ok);
            assign(&requests[first..first + size], first, rows, &mut claimed)?;
        }
        Ok(claimed)
    }

    /// Records a batch of attempt outcomes. Each applies only if the row is still in flight under
    /// the same claim; the number actually applied is returned.
    pub async fn record_outcomes(
        &self,
        outcomes: &[Outcome],
        now: EpochMillis,
    ) -> Result<u64, Error> {
        crate::failpoints::check(crate::failpoints::point::STORE_OUTCOME)?;
        let mut conn = self.writer(Durability::Relaxed).await?;
        let mut applied = 0;
        let mut first = 0;
        for size in chunk_sizes(outcomes.len(), MAX_CHUNK) {
            if first > 0 {
                conn = self.let_express_through(conn).await?;
            }
            let sql = outcome_sql(self.backend, size);
            let mut query = sqlx::query(&sql).bind(now);
            if self.backend == Backend::Sqlite {
                query = query.bind(now);
            }
            for outcome in &outcomes[first..first + size] {
                let (state, due_at, error) = outcome_columns(&outcome.kind);
                query = query
                    .bind(outcome.id.0)
                    .bind(outcome.claim.0)
                    .bind(state.code())
                    .bind(due_at)
                    .bind(error);
            }
            applied += query.execute(&mut *conn).await?.rows_affected();
            first += size;
        }
        conn.finished_cleanly();
        Ok(applied)
    }

    /// Hands claimed-but-unsent notifications back: pending again, due now, attempt not counted.
    /// Only claims still held (same token, still in flight) are released.
    pub async fn release_claims(
        &self,
        claims: &[(NotificationId, ClaimToken)],
        now: EpochMillis,
    ) -> Result<u64, Error> {
        let mut conn = self.writer(Durability::Relaxed).await?;
        let mut released = 0;
        let mut first = 0;
        for size in chunk_sizes(claims.len(), MAX_CHUNK) {
            if first > 0 {
                conn = self.let_express_through(conn).await?;
            }
            let sql = format!(
                "UPDATE notifications SET state = {pending}, attempts = attempts - 1, \
                   due_at = {now}, lease_until = NULL, updated_at = {now} \
                 FROM (VALUES {values}) AS held \
                 WHERE notifications.id = held.column1 AND notifications.claim = held.column2 \
                   AND notifications.state = {in_flight}",
                pending = State::Pending.code(),
                in_flight = LEASED.code(),
                now = param(self.backend, 1, "BIGINT"),
                values = rows(self.backend, 2, size, &["BIGINT", "BIGINT"]),
            );
            let mut query = sqlx::query(&sql).bind(now);
            if self.backend == Backend::Sqlite {
                query = query.bind(now);
            }
            for (id, claim) in &claims[first..first + size] {
                query = query.bind(id.0).bind(claim.0);
            }
            released += query.execute(&mut *conn).await?.rows_affected();
            first += size;
        }
        Ok(released)
    }

    /// Returns claims whose lease ended at or before `lease_ended_by` to pending, due at `now`:
    /// the crash-recovery path. Returns how many were released.
    pub async fn release_leases(
        &self,
        lease_ended_by: EpochMillis,
        now: EpochMillis,
    ) -> Result<u64, Error> {
        crate::failpoints::check(crate::failpoints::point::STORE_LEASE_SWEEP)?;
        let sql = format!(
            "UPDATE notifications SET state = {pending}, due_at = $1, lease_until = NULL, updated_at = $1 \
             WHERE state = {in_flight} AND lease_until <= $2",
            pending = State::Pending.code(),
            in_flight = LEASED.code(),
        );
        let result = sqlx::query(&sql)
            .bind(now)
            .bind(lease_ended_by)
            .execute(&mut *self.writer(Durability::Relaxed).await?)
            .await?;
        Ok(result.rows_affected())
    }
}

/// PostgreSQL's claim statement for `entries` requests. Parameters: `lease_until`, `now`, then
/// per entry customer id, channel, lane and limit.
///
/// Each entry's rows are taken in a LATERAL subquery (an index range scan each), skipping rows
/// locked by another node's claim. (SQLite has no LATERAL; there a UNION ALL of one limited
/// subquery per entry does the same, see [`pick_sql`], and one writer needs no locking.)
fn claim_sql(entries: usize) -> String {
    let in_flight = LEASED.code();
    format!(
        "UPDATE notifications AS n \
         SET state = {in_flight}, claim = n.claim + 1, attempts = n.attempts + 1, \
             lease_until = $1, updated_at = $2 \
         FROM (SELECT p.id FROM (VALUES {wanted}) AS w(customer_id, channel, lane, n) \
               CROSS JOIN LATERAL (SELECT x.id FROM notifications x \
                    WHERE x.customer_id = w.customer_id AND x.channel = w.channel \
                      AND x.lane = w.lane AND x.state IN ({waiting}) AND x.due_at <= $2 \
                    ORDER BY x.due_at LIMIT w.n FOR UPDATE SKIP LOCKED) p) AS picked \
         WHERE n.id = picked.id \
         RETURNING {returning}",
        wanted = rows(
            Backend::Postgres,
            3,
            entries,
            &["TEXT", "BIGINT", "BIGINT", "BIGINT"]
        ),
        waiting = WAITING.codes(),
        returning = CLAIMED_COLUMNS
            .split(", ")
            .map(|c| format!("n.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// SQLite: the ids of the rows `entries` requests would claim, as one comma-separated row
/// (NULL when there are none). Parameters per entry: customer id, channel, lane, `now`, limit.
fn pick_sql(entries: usize) -> String {
    let arm = format!(
        "SELECT id FROM (SELECT id FROM notifications \
         WHERE customer_id = ? AND channel = ? AND lane = ? AND state IN ({waiting}) \
           AND due_at <= ? ORDER BY due_at LIMIT ?)",
        waiting = WAITING.codes()
    );
    format!(
        "SELECT group_concat(id) FROM ({arms})",
        arms = vec![arm; entries].join(" UNION ALL ")
    )
}

/// SQLite: leases the rows whose ids are given as a JSON array. Parameters: `lease_until`,
/// `now`, the ids.
fn lease_by_id_sql() -> String {
    format!(
        "UPDATE notifications \
         SET state = {in_flight}, claim = claim + 1, attempts = attempts + 1, \
             lease_until = ?, updated_at = ? \
         WHERE id IN (SELECT value FROM json_each(?)) AND state IN ({waiting})",
        in_flight = LEASED.code(),
        waiting = WAITING.codes()
    )
}

/// `ids` as a JSON array, for `json_each`.
fn json_ids(ids: &[i64]) -> String {
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!("[{}]", list.join(","))
}

/// A request's limit as SQL binds it.
fn limit(request: &ClaimRequest) -> i64 {
    i64::try_from(request.limit).unwrap_or(i64::MAX)
}

/// Adds each claimed row to `claimed` under the index of the request it answers: its position
/// in `chunk` (the requests of its statement) plus `first`.
fn assign(
    chunk: &[ClaimRequest],
    first: usize,
    rows: impl Iterator<Item = Result<ClaimedRow, Error>>,
    claimed: &mut Vec<(usize, EpochMillis, Claimed)>,
) -> Result<(), Error> {
    for row in rows {
        let (key, due_at, notification) = row?.into_claimed()?;
        let Some(at) = chunk.iter().position(|r| {
            (r.customer_id.as_str(), r.channel, r.lane)
                == (key.0.as_str(), key.1, notification.lane)
        }) else {
            return Err(Error::Corrupt("a claim returned an unasked-for row".into()));
        };
        claimed.push((first + at, due_at, notification));
    }
    Ok(())
}

/// The outcome statement for `entries` outcomes. Parameters: `now` (SQLite: twice), then per
/// outcome id, claim token, new state, `due_at` (retries only) and `last_error`.
fn outcome_sql(backend: Backend, entries: usize) -> String {
    format!(
        "UPDATE notifications \
         SET state = o.column3, due_at = COALESCE(o.column4, notifications.due_at), \
             last_error = o.column5, lease_until = NULL, updated_at = {now}, \
             delivered_at = CASE WHEN o.column3 = {delivered} THEN {now} ELSE notifications.delivered_at END \
         FROM (VALUES {values}) AS o \
         WHERE notifications.id = o.column1 AND notifications.claim = o.column2 \
           AND notifications.state = {in_flight}",
        now = param(backend, 1, "BIGINT"),
        delivered = State::Delivered.code(),
        in_flight = LEASED.code(),
        values = rows(
            backend,
            2,
            entries,
            &["BIGINT", "BIGINT", "BIGINT", "BIGINT", "TEXT"]
        ),
    )
}

/// The new state, `due_at` and `last_error` of an outcome.
fn outcome_columns(kind: &OutcomeKind) -> (State, Option<EpochMillis>, Option<&str>) {
    match kind {
        OutcomeKind::Delivered => (State::Delivered, None, None),
        OutcomeKind::Retry { due_at, error } => (State::Retrying, Some(*due_at), Some(error)),
        OutcomeKind::Failed { error } => (State::Failed, None, Some(error)),
        OutcomeKind::Expired => (
            State::Expired,
            None,
            Some("expired before it could be sent"),
        ),
    }
}

/// Parameter number `n`, typed on PostgreSQL (a VALUES list has no column types to infer them
/// from). SQLite's parameters are all anonymous `?`, bound in the order they appear (so a value
/// used twice is bound twice): sqlx-sqlite looks numbered ones up by name, linearly, which is
/// quadratic in a long list, and it cannot mix numbered and anonymous ones.
fn param(backend: Backend, n: usize, pg_type: &str) -> String {
    match backend {
        Backend::Postgres => format!("${n}::{pg_type}"),
        Backend::Sqlite => "?".to_owned(),
    }
}

/// `(…), (…)` for `entries` rows of one parameter per column type in `types`, numbered from
/// `first` (see [`param`]).
fn rows(backend: Backend, first: usize, entries: usize, types: &[&str]) -> String {
    let columns = types.len();
    let mut sql = String::with_capacity(entries * columns * 12);
    for entry in 0..entries {
        if entry > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for (column, pg_type) in types.iter().enumerate() {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&param(backend, first + entry * columns + column, pg_type));
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_number_their_parameters() {
        assert_eq!(
            rows(Backend::Postgres, 2, 2, &["BIGINT", "TEXT"]),
            "($2::BIGINT, $3::TEXT), ($4::BIGINT, $5::TEXT)"
        );
        assert_eq!(
            rows(Backend::Sqlite, 2, 2, &["BIGINT", "TEXT"]),
            "(?, ?), (?, ?)"
        );
        let sqlite = pick_sql(3);
        assert_eq!(sqlite.matches("UNION ALL").count(), 2);
        assert_eq!(sqlite.matches('?').count(), 15);
        let postgres = claim_sql(3);
        assert!(postgres.contains("$14::BIGINT") && !postgres.contains("$15"));
    }
}
