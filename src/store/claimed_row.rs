//! A claimed row as the store reads it back, from either dialect: PostgreSQL returns the
//! claim's rows one by one (`RETURNING`), SQLite as one JSON array in a single row (see
//! [`read_back_sql`] for why).

use serde::{Deserialize, Deserializer};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::Error;
use super::notifications::{stored_channel, stored_lane, template_ref};
use super::sql::{from_json_row, one_json_row};
use super::states::LEASED;
use crate::model::{Channel, ClaimToken, Claimed, CustomerId, EpochMillis, NotificationId};

/// Rows a claim returns, in the order of [`ClaimedRow`]'s fields (shared by both dialects).
pub(super) const CLAIMED_COLUMNS: &str = "id, customer_id, channel, lane, claim, attempts, \
                                          recipient, payload, created_at, expires_at, due_at, \
                                          template_id, template_version";

/// One claimed row's columns, in [`CLAIMED_COLUMNS`] order. A JSON array of them (SQLite's
/// read-back) deserialises field by field in that order.
#[derive(Debug, Deserialize)]
pub(super) struct ClaimedRow {
    id: i64,
    customer_id: String,
    channel: i64,
    lane: i64,
    claim: i64,
    attempts: i64,
    recipient: String,
    /// JSON holds no bytes: SQLite's read-back sends the payload as `hex(payload)`.
    #[serde(deserialize_with = "from_hex")]
    payload: Vec<u8>,
    created_at: EpochMillis,
    expires_at: Option<EpochMillis>,
    due_at: EpochMillis,
    template_id: Option<String>,
    template_version: Option<i64>,
}

/// Whose a claimed notification is (customer, channel), when it was due, and the notification.
pub(super) type Assigned = ((String, Channel), EpochMillis, Claimed);

impl ClaimedRow {
    /// A row a statement returned with [`CLAIMED_COLUMNS`] as its columns.
    pub(super) fn from_any(row: &AnyRow) -> Result<Self, Error> {
        Ok(Self {
            id: row.try_get(0)?,
            customer_id: row.try_get(1)?,
            channel: row.try_get(2)?,
            lane: row.try_get(3)?,
            claim: row.try_get(4)?,
            attempts: row.try_get(5)?,
            recipient: row.try_get(6)?,
            payload: row.try_get(7)?,
            created_at: row.try_get(8)?,
            expires_at: row.try_get(9)?,
            due_at: row.try_get(10)?,
            template_id: row.try_get(11)?,
            template_version: row.try_get(12)?,
        })
    }

    /// The rows of SQLite's read-back: the one JSON array [`read_back_sql`] answers with.
    pub(super) fn from_json(json: &str) -> Result<Vec<Self>, Error> {
        from_json_row(json, "a claim's rows")
    }

    /// The notification, checked: a channel or lane this build does not know is corruption.
    pub(super) fn into_claimed(self) -> Result<Assigned, Error> {
        let channel = stored_channel(self.channel)?;
        let notification = Claimed {
            id: NotificationId(self.id),
            claim: ClaimToken(self.claim),
            attempts: u32::try_from(self.attempts).unwrap_or(u32::MAX),
            customer_id: CustomerId::from_stored(self.customer_id.clone()),
            recipient: self.recipient,
            lane: stored_lane(self.lane)?,
            channel,
            payload: self.payload,
            created_at: self.created_at,
            expires_at: self.expires_at,
            template: template_ref(self.template_id, self.template_version),
        };
        Ok(((self.customer_id, channel), self.due_at, notification))
    }
}

/// SQLite: the leased rows whose ids are given as a JSON array, as one row holding a JSON array
/// of [`ClaimedRow`]s, so the read snapshot is not held open while the rows cross to the task
/// (see [`one_json_row`]).
pub(super) fn read_back_sql() -> String {
    let select = format!(
        "SELECT {CLAIMED_COLUMNS} FROM notifications \
         WHERE id IN (SELECT value FROM json_each(?)) AND state = {in_flight}",
        in_flight = LEASED.code()
    );
    let row = format!(
        "json_array({})",
        CLAIMED_COLUMNS.replace("payload", "hex(payload)")
    );
    one_json_row(&select, &row)
}

/// Decodes the payload's hex digits (SQLite's `hex()`: two per byte).
fn from_hex<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    let text = <&str>::deserialize(deserializer)?;
    let digit = |b: u8| char::from(b).to_digit(16);
    text.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [high, low] => Some((digit(*high)? << 4 | digit(*low)?) as u8),
            _ => None,
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| serde::de::Error::custom("a payload that is not hex"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_row_reads_back_with_its_bytes() {
        let json = r#"[[7, "acme", 1, 1, 3, 2, "u1", "00FF7B22", 100, null, 150, "t", 4]]"#;
        let rows = ClaimedRow::from_json(json).unwrap();
        let ((customer, _), due_at, claimed) =
            rows.into_iter().next().unwrap().into_claimed().unwrap();
        assert_eq!(customer, "acme");
        assert_eq!(due_at, 150);
        assert_eq!(claimed.payload, vec![0x00, 0xff, 0x7b, 0x22]);
        assert_eq!((claimed.id.0, claimed.claim.0, claimed.attempts), (7, 3, 2));
        assert_eq!(claimed.template.map(|t| t.version), Some(4));
    }

    #[test]
    fn a_payload_that_is_not_hex_is_corruption() {
        for payload in ["0", "0G", "ABC"] {
            let json = format!(
                r#"[[7, "acme", 1, 1, 3, 2, "u1", "{payload}", 100, null, 150, null, null]]"#
            );
            assert!(
                matches!(ClaimedRow::from_json(&json), Err(Error::Corrupt(_))),
                "{payload}"
            );
        }
    }
}
