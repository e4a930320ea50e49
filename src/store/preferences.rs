//! Preference rows: which recipients refuse which channel and lane, and a version per recipient
//! that every change bumps (what keeps the caches in front of this table from going stale).

use std::collections::{HashMap, HashSet};

use sqlx::Acquire as _;
use sqlx::Row;

use super::{Backend, Durability, Error, Store, values_placeholders};
use crate::model::{Channel, EpochMillis, Lane, Preference, RecipientPreferences};

/// Recipients looked up per statement (two parameters each).
const LOOKUP_CHUNK: usize = 500;

impl Store {
    /// Sets one preference and returns the recipient's whole set as it is after the change,
    /// with its new version — read in the same transaction, so no later change can be in it.
    pub async fn set_preference(
        &self,
        customer_id: &str,
        recipient: &str,
        preference: &Preference,
        now: EpochMillis,
    ) -> Result<RecipientPreferences, Error> {
        let mut conn = self.writer(Durability::Durable).await?;
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO preferences (customer_id, recipient, channel, lane, opted_out, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (customer_id, recipient, channel, lane) DO UPDATE SET \
               opted_out = excluded.opted_out, updated_at = excluded.updated_at",
        )
        .bind(customer_id)
        .bind(recipient)
        .bind(preference.channel.code())
        .bind(lane_code(preference.lane))
        .bind(i64::from(preference.opted_out))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO preference_versions (customer_id, recipient, version) VALUES ($1, $2, 1) \
             ON CONFLICT (customer_id, recipient) DO UPDATE SET \
               version = preference_versions.version + 1",
        )
        .bind(customer_id)
        .bind(recipient)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(&lookup_sql(self.backend, 1))
            .bind(customer_id)
            .bind(recipient)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let key = (customer_id.to_owned(), recipient.to_owned());
        Ok(collect(rows)?.remove(&key).unwrap_or_default())
    }

    /// Every customer with at least one preference row.
    pub async fn customers_with_preferences(&self) -> Result<HashSet<String>, Error> {
        let rows = sqlx::query("SELECT DISTINCT customer_id FROM preferences")
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
    }

    /// The preference sets of `(customer, recipient)` pairs, each with its version (recipients
    /// who never set anything get an empty set, version 0). One statement per chunk, whatever
    /// the mix of customers: a consistent snapshot of each recipient.
    pub async fn recipient_preferences(
        &self,
        pairs: &[(&str, &str)],
    ) -> Result<HashMap<(String, String), RecipientPreferences>, Error> {
        let mut found = HashMap::with_capacity(pairs.len());
        for chunk in pairs.chunks(LOOKUP_CHUNK) {
            let sql = lookup_sql(self.backend, chunk.len());
            let mut query = sqlx::query(&sql);
            for (customer_id, recipient) in chunk {
                query = query.bind(*customer_id).bind(*recipient);
            }
            found.extend(collect(query.fetch_all(&self.read).await?)?);
        }
        for (customer_id, recipient) in pairs {
            found
                .entry(((*customer_id).to_owned(), (*recipient).to_owned()))
                .or_default();
        }
        Ok(found)
    }
}

/// Selects version and rows of `n` `(customer, recipient)` pairs.
fn lookup_sql(backend: Backend, n: usize) -> String {
    format!(
        "SELECT v.customer_id, v.recipient, v.version, p.channel, p.lane, p.opted_out, p.updated_at \
         FROM preference_versions v LEFT JOIN preferences p \
           ON p.customer_id = v.customer_id AND p.recipient = v.recipient \
         WHERE (v.customer_id, v.recipient) IN (VALUES {})",
        values_placeholders(backend, n, 2)
    )
}

/// Groups lookup rows by customer and recipient.
fn collect(
    rows: Vec<sqlx::any::AnyRow>,
) -> Result<HashMap<(String, String), RecipientPreferences>, Error> {
    let mut found: HashMap<(String, String), RecipientPreferences> = HashMap::new();
    for row in rows {
        let key: (String, String) = (row.try_get(0)?, row.try_get(1)?);
        let set = found.entry(key).or_default();
        set.version = row.try_get(2)?;
        let Some(channel) = row.try_get::<Option<i64>, _>(3)? else {
            continue;
        };
        let channel = Channel::from_code(channel)
            .ok_or_else(|| Error::Corrupt(format!("unknown channel {channel}")))?;
        set.preferences.push(Preference {
            channel,
            lane: match row.try_get::<i64, _>(4)? {
                0 => None,
                code => Some(super::notifications::stored_lane(code)?),
            },
            opted_out: row.try_get::<i64, _>(5)? != 0,
            updated_at: row.try_get(6)?,
        });
    }
    Ok(found)
}

/// Every lane is stored as 0.
fn lane_code(lane: Option<Lane>) -> i64 {
    lane.map_or(0, Lane::code)
}
