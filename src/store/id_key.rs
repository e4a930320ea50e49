//! The one row holding the notification id key ([`crate::public_id`]): every node sharing the
//! database must encode ids alike, so the key lives beside the rows it disguises.

use sqlx::Row;

use super::{Durability, Error, Store};

impl Store {
    /// The stored notification id key; `fresh` becomes it when no node has stored one yet
    /// (when several start at once, the first insert wins and all read that one).
    pub async fn notification_id_key(&self, fresh: &str) -> Result<String, Error> {
        let mut conn = self.writer(Durability::Durable).await?;
        sqlx::query(
            "INSERT INTO notification_id_key (slot, secret) VALUES (1, $1) \
             ON CONFLICT (slot) DO NOTHING",
        )
        .bind(fresh)
        .execute(&mut *conn)
        .await?;
        let row = sqlx::query("SELECT secret FROM notification_id_key WHERE slot = 1")
            .fetch_one(&mut *conn)
            .await?;
        Ok(row.try_get(0)?)
    }
}
