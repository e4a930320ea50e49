//! Notification rows: reads and cancels (intake's inserts are in [`super::insert`], claims and
//! outcomes in [`super::claims`]).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::sql::{from_json_row, one_json_row};
use super::states::WAITING;
use super::{Backend, Durability, Error, Store};
use crate::model::{Channel, EpochMillis, Lane, Notification, NotificationId, State, TemplateRef};

pub(super) const SELECT_COLUMNS: &str = "id, customer_id, idempotency_key, recipient, lane, payload, state, \
                              attempts, last_error, created_at, updated_at, send_at, expires_at, \
                              due_at, delivered_at, channel, template_id, template_version";

impl Store {
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
        match self.backend {
            Backend::Postgres => {
                let rows = sqlx::query(&sql).bind(now).fetch_all(&self.read).await?;
                rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
            }
            // As one row, so its read snapshot is short (see `one_json_row`).
            Backend::Sqlite => {
                let ids: String = sqlx::query_scalar(&one_json_row(&sql, "id"))
                    .bind(now)
                    .fetch_one(&self.read)
                    .await?;
                from_json_row(&ids, "customer ids")
            }
        }
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
