//! Notification rows: intake inserts, claims, outcomes, reads, and lease recovery.
//!
//! Every write that moves a claimed notification is a compare-and-set on its `claim` token, so a
//! stale worker (its lease expired and the row was claimed again) can never overwrite a newer outcome.

use std::collections::HashMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use sqlx::Connection as _;

use super::{Backend, Durability, Error, Store, values_placeholders};
use crate::model::{
    Channel, EpochMillis, Lane, NewNotification, Notification, NotificationId, State, TemplateRef,
};

/// Rows per multi-row statement: one statement per row costs ~25 µs more than batching
/// (STYLE.md), and 500 × 15 binds stays far below both databases' parameter limits.
const STATEMENT_ROWS: usize = 500;

const INSERT_COLUMNS: &str = "customer_id, idempotency_key, recipient, lane, payload, state, \
                              created_at, updated_at, due_at, send_at, expires_at, channel, \
                              last_error, template_id, template_version";
const INSERT_COLUMN_COUNT: usize = 15;

pub(super) const SELECT_COLUMNS: &str = "id, customer_id, idempotency_key, recipient, lane, payload, state, \
                              attempts, last_error, created_at, updated_at, send_at, expires_at, \
                              due_at, delivered_at, channel, template_id, template_version";

/// What became of one submitted notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored now under this id.
    New(NotificationId),
    /// The key was already accepted with the same content: the original id, nothing new stored.
    Duplicate(NotificationId),
    /// The key was already accepted with different content (`ALREADY_EXISTS`).
    Conflict(NotificationId),
}

/// A notification claimed for one delivery attempt: the fields a sink needs, plus the claim token
/// its outcome must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: NotificationId,
    pub claim: i64,
    /// Attempts started, this one included.
    pub attempts: u32,
    pub customer_id: String,
    pub recipient: String,
    pub lane: Lane,
    pub channel: Channel,
    pub payload: Vec<u8>,
    pub created_at: EpochMillis,
    pub expires_at: Option<EpochMillis>,
    /// Rendered at send time with `payload` as the variables, when set.
    pub template: Option<TemplateRef>,
}

/// The result of one delivery attempt, to be recorded against its claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub id: NotificationId,
    pub claim: i64,
    pub kind: OutcomeKind,
}

/// Where an attempt leaves the notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutcomeKind {
    Delivered,
    /// Try again at `due_at`.
    Retry {
        due_at: EpochMillis,
        error: String,
    },
    /// Permanently failed.
    Failed {
        error: String,
    },
    /// Its `expires_at` passed before it could be sent; never sent.
    Expired,
}

impl Store {
    /// Inserts a batch of new notifications in one transaction (group commit), deduplicating on
    /// `(customer_id, idempotency_key)`. Results come back in input order. A key repeated inside
    /// the batch is treated like one repeated across calls.
    pub async fn insert_notifications(
        &self,
        items: &[NewNotification],
        now: EpochMillis,
    ) -> Result<Vec<Inserted>, Error> {
        let mut first_of_key: HashMap<(&str, &str), usize> = HashMap::with_capacity(items.len());
        let mut unique = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let key = (item.customer_id.as_str(), item.idempotency_key.as_str());
            first_of_key.entry(key).or_insert_with(|| {
                unique.push(i);
                i
            });
        }

        let mut conn = self.writer(Durability::Durable).await?;
        let mut tx = conn.begin().await?;
        let mut new_ids: HashMap<(String, String), i64> = HashMap::with_capacity(unique.len());
        for chunk in unique.chunks(STATEMENT_ROWS) {
            let sql = format!(
                "INSERT INTO notifications ({INSERT_COLUMNS}) VALUES {} \
                 ON CONFLICT (customer_id, idempotency_key) DO NOTHING \
                 RETURNING id, customer_id, idempotency_key",
                values_placeholders(self.backend, chunk.len(), INSERT_COLUMN_COUNT)
            );
            let mut query = sqlx::query(&sql);
            for &i in chunk {
                let n = &items[i];
                // An opted-out recipient's notification is stored, with the reason, and never
                // claimed: only pending and retrying rows are.
                let state = match n.suppressed {
                    Some(_) => State::Suppressed,
                    None => State::Pending,
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
                    .bind(n.template.as_ref().map(|t| t.version));
            }
            for row in query.fetch_all(&mut *tx).await? {
                new_ids.insert((row.try_get(1)?, row.try_get(2)?), row.try_get(0)?);
            }
        }

        let mut results: Vec<Option<Inserted>> = vec![None; items.len()];
        for &i in &unique {
            let n = &items[i];
            let key = (n.customer_id.clone(), n.idempotency_key.clone());
            results[i] = Some(match new_ids.get(&key) {
                Some(&id) => Inserted::New(NotificationId(id)),
                None => compare_with_stored(&mut tx, n).await?,
            });
        }
        tx.commit().await?;

        Ok(items
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
            .collect())
    }

    /// Claims up to `limit` of one customer's due notifications on one channel in one lane,
    /// oldest due first, leasing them until `lease_until`. Each claim bumps the row's claim token
    /// and attempt count.
    pub async fn claim(
        &self,
        customer_id: &str,
        channel: Channel,
        lane: Lane,
        limit: usize,
        now: EpochMillis,
        lease_until: EpochMillis,
    ) -> Result<Vec<Claimed>, Error> {
        // On PostgreSQL several nodes may claim at once: skip rows another transaction holds.
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE notifications \
             SET state = {in_flight}, claim = claim + 1, attempts = attempts + 1, \
                 lease_until = $1, updated_at = $2 \
             WHERE id IN (SELECT id FROM notifications \
                          WHERE customer_id = $3 AND lane = $4 AND state IN (1, 4) AND due_at <= $2 \
                            AND channel = $6 \
                          ORDER BY due_at LIMIT $5 {lock}) \
             RETURNING id, claim, attempts, recipient, lane, payload, created_at, expires_at, due_at, \
                       template_id, template_version, channel",
            in_flight = State::InFlight.code(),
        );
        let rows = sqlx::query(&sql)
            .bind(lease_until)
            .bind(now)
            .bind(customer_id)
            .bind(lane.code())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(channel.code())
            .fetch_all(&mut *self.writer(Durability::Relaxed).await?)
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let due_at: i64 = row.try_get(8)?;
            claimed.push((
                due_at,
                Claimed {
                    id: NotificationId(row.try_get(0)?),
                    claim: row.try_get(1)?,
                    attempts: u32::try_from(row.try_get::<i64, _>(2)?).unwrap_or(u32::MAX),
                    customer_id: customer_id.to_owned(),
                    recipient: row.try_get(3)?,
                    lane: Lane::from_code(row.try_get(4)?),
                    channel: stored_channel(row.try_get(11)?)?,
                    payload: row.try_get(5)?,
                    created_at: row.try_get(6)?,
                    expires_at: row.try_get(7)?,
                    template: template_ref(row.try_get(9)?, row.try_get(10)?),
                },
            ));
        }
        // RETURNING order is unspecified; deliver oldest due first.
        claimed.sort_by_key(|(due_at, c)| (*due_at, c.id));
        Ok(claimed.into_iter().map(|(_, c)| c).collect())
    }

    /// Records a batch of attempt outcomes in one transaction. Each applies only if the row is
    /// still in flight under the same claim; the number actually applied is returned.
    pub async fn record_outcomes(
        &self,
        outcomes: &[Outcome],
        now: EpochMillis,
    ) -> Result<u64, Error> {
        let (delivered, others): (Vec<&Outcome>, Vec<&Outcome>) = outcomes
            .iter()
            .partition(|o| o.kind == OutcomeKind::Delivered);
        let delivered: Vec<(NotificationId, i64)> =
            delivered.iter().map(|o| (o.id, o.claim)).collect();
        let mut conn = self.writer(Durability::Relaxed).await?;
        let mut tx = conn.begin().await?;
        let set_delivered = format!(
            "state = {}, delivered_at = {now}, updated_at = {now}, lease_until = NULL, last_error = NULL",
            State::Delivered.code()
        );
        let mut applied = update_held(&mut tx, self.backend, &delivered, &set_delivered).await?;
        for outcome in others {
            let (state, due_at, error) = match &outcome.kind {
                OutcomeKind::Retry { due_at, error } => {
                    (State::Retrying, Some(*due_at), error.as_str())
                }
                OutcomeKind::Failed { error } => (State::Failed, None, error.as_str()),
                OutcomeKind::Expired => (State::Expired, None, "expired before it could be sent"),
                OutcomeKind::Delivered => continue,
            };
            let sql = format!(
                "UPDATE notifications \
                 SET state = $1, due_at = COALESCE($2, due_at), last_error = $3, lease_until = NULL, \
                     updated_at = $4 \
                 WHERE id = $5 AND claim = $6 AND state = {in_flight}",
                in_flight = State::InFlight.code(),
            );
            applied += sqlx::query(&sql)
                .bind(state.code())
                .bind(due_at)
                .bind(error)
                .bind(now)
                .bind(outcome.id.0)
                .bind(outcome.claim)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// Returns claims whose lease ended at or before `lease_ended_by` to pending, due at `now`:
    /// the crash-recovery path. Returns how many were released.
    pub async fn release_leases(
        &self,
        lease_ended_by: EpochMillis,
        now: EpochMillis,
    ) -> Result<u64, Error> {
        let sql = format!(
            "UPDATE notifications SET state = {pending}, due_at = $1, lease_until = NULL, updated_at = $1 \
             WHERE state = {in_flight} AND lease_until <= $2",
            pending = State::Pending.code(),
            in_flight = State::InFlight.code(),
        );
        let result = sqlx::query(&sql)
            .bind(now)
            .bind(lease_ended_by)
            .execute(&mut *self.writer(Durability::Relaxed).await?)
            .await?;
        Ok(result.rows_affected())
    }

    /// Hands claimed-but-unsent notifications back: pending again, due now, attempt not counted.
    /// Only claims still held (same token, still in flight) are released.
    pub async fn release_claims(
        &self,
        claims: &[(NotificationId, i64)],
        now: EpochMillis,
    ) -> Result<u64, Error> {
        let mut conn = self.writer(Durability::Relaxed).await?;
        let mut tx = conn.begin().await?;
        let set_pending = format!(
            "state = {}, attempts = attempts - 1, due_at = {now}, lease_until = NULL, updated_at = {now}",
            State::Pending.code()
        );
        let released = update_held(&mut tx, self.backend, claims, &set_pending).await?;
        tx.commit().await?;
        Ok(released)
    }

    /// Notifications waiting (pending or retrying) for one customer, per lane:
    /// `(transactional, bulk)`.
    pub async fn backlog(&self, customer_id: &str) -> Result<(u64, u64), Error> {
        let rows = sqlx::query(
            "SELECT lane, COUNT(*) FROM notifications \
             WHERE customer_id = $1 AND state IN (1, 4) GROUP BY lane",
        )
        .bind(customer_id)
        .fetch_all(&self.read)
        .await?;
        let mut backlog = (0, 0);
        for row in rows {
            let count = u64::try_from(row.try_get::<i64, _>(1)?).unwrap_or(0);
            match Lane::from_code(row.try_get(0)?) {
                Lane::Transactional => backlog.0 = count,
                Lane::Bulk => backlog.1 = count,
            }
        }
        Ok(backlog)
    }

    /// Every customer's backlog (pending or retrying) per lane, as `(customer, transactional,
    /// bulk)`, in one query: for `/metrics` and the dashboard, which show every customer.
    pub async fn backlog_all(&self) -> Result<Vec<(String, u64, u64)>, Error> {
        let rows = sqlx::query(
            "SELECT customer_id, lane, COUNT(*) FROM notifications \
             WHERE state IN (1, 4) GROUP BY customer_id, lane ORDER BY customer_id",
        )
        .fetch_all(&self.read)
        .await?;
        let mut all: Vec<(String, u64, u64)> = Vec::new();
        for row in rows {
            let customer: String = row.try_get(0)?;
            let count = u64::try_from(row.try_get::<i64, _>(2)?).unwrap_or(0);
            if all.last().is_none_or(|(last, _, _)| *last != customer) {
                all.push((customer, 0, 0));
            }
            if let Some(entry) = all.last_mut() {
                match Lane::from_code(row.try_get(1)?) {
                    Lane::Transactional => entry.1 = count,
                    Lane::Bulk => entry.2 = count,
                }
            }
        }
        Ok(all)
    }

    /// Ids of the unpaused customers that have at least one notification due by `now`.
    pub async fn customers_with_due_work(&self, now: EpochMillis) -> Result<Vec<String>, Error> {
        let ready = |lane: Lane| {
            format!(
                "EXISTS (SELECT 1 FROM notifications n WHERE n.customer_id = c.id AND n.lane = {} \
                 AND n.state IN (1, 4) AND n.due_at <= $1)",
                lane.code()
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
             WHERE id = $2 AND state IN ({pending}, {retrying})",
            cancelled = State::Cancelled.code(),
            pending = State::Pending.code(),
            retrying = State::Retrying.code(),
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

/// Applies `set` (an SQL `SET` list without parameters) to every row still in flight under one
/// of `claims` — the compare-and-set on the claim token — in multi-row statements.
async fn update_held(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    claims: &[(NotificationId, i64)],
    set: &str,
) -> Result<u64, Error> {
    let mut updated = 0;
    for chunk in claims.chunks(STATEMENT_ROWS) {
        let sql = format!(
            "UPDATE notifications SET {set} \
             FROM (VALUES {values}) AS held \
             WHERE notifications.id = held.column1 AND notifications.claim = held.column2 \
               AND notifications.state = {in_flight}",
            values = values_placeholders(backend, chunk.len(), 2),
            in_flight = State::InFlight.code(),
        );
        let mut query = sqlx::query(&sql);
        for (id, claim) in chunk {
            query = query.bind(id.0).bind(*claim);
        }
        updated += query.execute(&mut **tx).await?.rows_affected();
    }
    Ok(updated)
}

/// For a key that was already stored: is the new request the same delivery (duplicate) or a
/// different one under a reused key (conflict)?
async fn compare_with_stored(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    item: &NewNotification,
) -> Result<Inserted, Error> {
    let row = sqlx::query(
        "SELECT id, recipient, lane, payload FROM notifications \
         WHERE customer_id = $1 AND idempotency_key = $2",
    )
    .bind(item.customer_id.as_str())
    .bind(item.idempotency_key.as_str())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| Error::Corrupt("conflicting idempotency key vanished".into()))?;
    let id = NotificationId(row.try_get(0)?);
    let recipient: String = row.try_get(1)?;
    let payload: Vec<u8> = row.try_get(3)?;
    Ok(
        if item.same_content(&recipient, Lane::from_code(row.try_get(2)?), &payload) {
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

pub(super) fn notification_from_row(row: &AnyRow) -> Result<Notification, Error> {
    let state: i64 = row.try_get("state")?;
    Ok(Notification {
        id: NotificationId(row.try_get("id")?),
        customer_id: row.try_get("customer_id")?,
        idempotency_key: row.try_get("idempotency_key")?,
        recipient: row.try_get("recipient")?,
        lane: Lane::from_code(row.try_get("lane")?),
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
fn template_ref(id: Option<String>, version: Option<i64>) -> Option<TemplateRef> {
    Some(TemplateRef {
        id: id?,
        version: version?,
    })
}

/// Reads a stored `channel` column. An unknown value is refused rather than guessed: sending it
/// down the wrong channel would deliver to the wrong kind of recipient.
fn stored_channel(code: i64) -> Result<Channel, Error> {
    Channel::from_code(code).ok_or_else(|| Error::Corrupt(format!("unknown channel {code}")))
}
