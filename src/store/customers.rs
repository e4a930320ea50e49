//! Customer rows: where and how fast to deliver for each customer system. Their secrets (the
//! signing secret, the previous one during a rotation, and the provider settings in `channels`)
//! are sealed on the way in and opened on the way out ([`crate::secrets_at_rest`]).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Durability, Error, Store};
use crate::model::{ChannelSettings, Customer, EpochMillis, PreviousSecret, StartTier};
use crate::secrets_at_rest::{Opened, is_sealed};

/// The columns holding secrets; a sealed value is bound to its column and customer.
const SIGNING_SECRET: &str = "signing_secret";
const PREVIOUS_SECRET: &str = "previous_signing_secret";
const CHANNELS: &str = "channels";

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
        .bind(self.seal(&customer.signing_secret, SIGNING_SECRET, &customer.id))
        .bind(i64::from(customer.max_rate_per_sec))
        .bind(i64::from(customer.paused))
        .bind(now)
        .bind(customer.start_tier.map(StartTier::code))
        .bind(
            channels_column(&customer.channels)?
                .map(|json| self.seal(&json, CHANNELS, &customer.id)),
        )
        .bind(
            customer
                .previous_secret
                .as_ref()
                .map(|p| self.seal(&p.secret, PREVIOUS_SECRET, &customer.id)),
        )
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
        row.as_ref()
            .map(|row| self.customer_from_row(row))
            .transpose()
    }

    /// Every customer, ordered by id.
    pub async fn list_customers(&self) -> Result<Vec<Customer>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM customers ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(&self.read).await?;
        rows.iter().map(|row| self.customer_from_row(row)).collect()
    }

    /// Seals every customer secret that is in plain text (stored before sealing) or sealed with
    /// the previous key, with the current key. A row changed meanwhile (another node's upsert,
    /// which sealed it anyway) is left alone. Nothing to do without a sealer.
    pub(super) async fn reseal_customers(&self) -> Result<(), Error> {
        if self.sealer.is_none() {
            return Ok(());
        }
        let rows = sqlx::query(
            "SELECT id, signing_secret, previous_signing_secret, channels, updated_at \
             FROM customers",
        )
        .fetch_all(&self.read)
        .await?;
        let mut resealed = 0;
        for row in rows {
            let id: String = row.try_get(0)?;
            let signing = self.open(&row.try_get::<String, _>(1)?, SIGNING_SECRET, &id)?;
            let previous = row
                .try_get::<Option<String>, _>(2)?
                .map(|stored| self.open(&stored, PREVIOUS_SECRET, &id))
                .transpose()?;
            let channels = row
                .try_get::<Option<String>, _>(3)?
                .filter(|stored| !stored.is_empty())
                .map(|stored| self.open(&stored, CHANNELS, &id))
                .transpose()?;
            let stale = [Some(&signing), previous.as_ref(), channels.as_ref()]
                .into_iter()
                .flatten()
                .any(|opened| opened.stale);
            if !stale {
                continue;
            }
            let seal = |opened: Option<Opened>, column| {
                opened.map(|opened| self.seal(&opened.value, column, &id))
            };
            resealed += sqlx::query(
                "UPDATE customers SET signing_secret = $2, previous_signing_secret = $3, \
                 channels = $4 WHERE id = $1 AND updated_at = $5",
            )
            .bind(id.as_str())
            .bind(self.seal(&signing.value, SIGNING_SECRET, &id))
            .bind(seal(previous, PREVIOUS_SECRET))
            .bind(seal(channels, CHANNELS))
            .bind(row.try_get::<i64, _>(4)?)
            .execute(&mut *self.writer(Durability::Durable).await?)
            .await?
            .rows_affected();
        }
        if resealed > 0 {
            tracing::info!(
                customers = resealed,
                "sealed customer secrets with the current secrets key"
            );
        }
        Ok(())
    }

    /// `value` as stored in `column` of customer `id`: sealed when the store has a sealer.
    fn seal(&self, value: &str, column: &str, id: &str) -> String {
        match &self.sealer {
            Some(sealer) => sealer.seal(value, &place(column, id)),
            None => value.to_owned(),
        }
    }

    /// A value stored in `column` of customer `id`, opened.
    fn open(&self, stored: &str, column: &str, id: &str) -> Result<Opened, Error> {
        match &self.sealer {
            Some(sealer) => Ok(sealer.open(stored, &place(column, id))?),
            None if is_sealed(stored) => Err(Error::Corrupt(format!(
                "customer {id:?}: {column} is sealed, and this store has no secrets key"
            ))),
            None => Ok(Opened {
                value: stored.to_owned(),
                stale: false,
            }),
        }
    }

    fn customer_from_row(&self, row: &AnyRow) -> Result<Customer, Error> {
        let id: String = row.try_get("id")?;
        let rate: i64 = row.try_get("max_rate_per_sec")?;
        let signing: String = row.try_get("signing_secret")?;
        Ok(Customer {
            webhook_url: row.try_get("webhook_url")?,
            signing_secret: self.open(&signing, SIGNING_SECRET, &id)?.value,
            previous_secret: match (
                row.try_get::<Option<String>, _>("previous_signing_secret")?,
                row.try_get::<Option<i64>, _>("previous_secret_until")?,
            ) {
                (Some(secret), Some(until)) => Some(PreviousSecret {
                    secret: self.open(&secret, PREVIOUS_SECRET, &id)?.value,
                    until,
                }),
                _ => None,
            },
            max_rate_per_sec: u32::try_from(rate)
                .map_err(|_| Error::Corrupt(format!("max_rate_per_sec {rate} out of range")))?,
            paused: row.try_get::<i64, _>("paused")? != 0,
            start_tier: row
                .try_get::<Option<i64>, _>("start_tier")?
                .and_then(StartTier::from_code),
            channels: match row.try_get::<Option<String>, _>("channels")? {
                Some(stored) if !stored.is_empty() => {
                    let json = self.open(&stored, CHANNELS, &id)?.value;
                    serde_json::from_str(&json)
                        .map_err(|e| Error::Corrupt(format!("customer channels: {e}")))?
                }
                _ => ChannelSettings::default(),
            },
            id,
        })
    }
}

/// What a sealed value is bound to: its column and its customer.
fn place(column: &str, id: &str) -> String {
    format!("customers.{column}/{id}")
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
