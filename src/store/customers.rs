//! Customer rows: where and how fast to deliver for each customer system.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Durability, Error, Store};
use crate::model::{ChannelSettings, Customer, EpochMillis, PreviousSecret, StartTier};

const COLUMNS: &str = "id, webhook_url, signing_secret, max_rate_per_sec, paused, start_tier, \
     channels, previous_signing_secret, previous_secret_until";

impl Store {
    /// Creates the customer or replaces its settings (keeping its creation time).
    pub async fn upsert_customer(
        &self,
        customer: &Customer,
        now: EpochMillis,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO customers \
               (id, webhook_url, signing_secret, max_rate_per_sec, paused, start_tier, channels, \
                previous_signing_secret, previous_secret_until, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $7, $8, $9, $10, $6, $6) \
             ON CONFLICT (id) DO UPDATE SET webhook_url = excluded.webhook_url, \
               signing_secret = excluded.signing_secret, \
               max_rate_per_sec = excluded.max_rate_per_sec, paused = excluded.paused, \
               start_tier = excluded.start_tier, channels = excluded.channels, \
               previous_signing_secret = excluded.previous_signing_secret, \
               previous_secret_until = excluded.previous_secret_until, \
               updated_at = excluded.updated_at",
        )
        .bind(customer.id.as_str())
        .bind(customer.webhook_url.as_str())
        .bind(customer.signing_secret.as_str())
        .bind(i64::from(customer.max_rate_per_sec))
        .bind(i64::from(customer.paused))
        .bind(now)
        .bind(customer.start_tier.map(StartTier::code))
        .bind(channels_column(&customer.channels)?)
        .bind(customer.previous_secret.as_ref().map(|p| p.secret.as_str()))
        .bind(customer.previous_secret.as_ref().map(|p| p.until))
        .execute(&mut *self.writer(Durability::Durable).await?)
        .await?;
        Ok(())
    }

    /// One customer by id.
    pub async fn get_customer(&self, id: &str) -> Result<Option<Customer>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM customers WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(customer_from_row).transpose()
    }

    /// Every customer, ordered by id.
    pub async fn list_customers(&self) -> Result<Vec<Customer>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM customers ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(&self.read).await?;
        rows.iter().map(customer_from_row).collect()
    }
}

fn customer_from_row(row: &AnyRow) -> Result<Customer, Error> {
    let rate: i64 = row.try_get("max_rate_per_sec")?;
    Ok(Customer {
        id: row.try_get("id")?,
        webhook_url: row.try_get("webhook_url")?,
        signing_secret: row.try_get("signing_secret")?,
        previous_secret: match (
            row.try_get::<Option<String>, _>("previous_signing_secret")?,
            row.try_get::<Option<i64>, _>("previous_secret_until")?,
        ) {
            (Some(secret), Some(until)) => Some(PreviousSecret { secret, until }),
            _ => None,
        },
        max_rate_per_sec: u32::try_from(rate)
            .map_err(|_| Error::Corrupt(format!("max_rate_per_sec {rate} out of range")))?,
        paused: row.try_get::<i64, _>("paused")? != 0,
        start_tier: row
            .try_get::<Option<i64>, _>("start_tier")?
            .and_then(StartTier::from_code),
        channels: match row.try_get::<Option<String>, _>("channels")? {
            Some(json) if !json.is_empty() => serde_json::from_str(&json)
                .map_err(|e| Error::Corrupt(format!("customer channels: {e}")))?,
            _ => ChannelSettings::default(),
        },
    })
}

/// The `channels` column: NULL for a webhook-only customer.
fn channels_column(channels: &ChannelSettings) -> Result<Option<String>, Error> {
    if *channels == ChannelSettings::default() {
        return Ok(None);
    }
    serde_json::to_string(channels)
        .map(Some)
        .map_err(|e| Error::Corrupt(format!("customer channels: {e}")))
}
