//! Preference rows: which recipients refuse which channel and lane, and a version per recipient
//! that every change bumps (what keeps the caches in front of this table from going stale).

use std::collections::{HashMap, HashSet};

use sqlx::Acquire as _;
use sqlx::Row;

use super::{Durability, Error, Store};
use crate::model::{Channel, EpochMillis, Lane, Preference, RecipientPreferences};

/// Recipients looked up per statement.
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
        let rows = sqlx::query(&lookup_sql(1))
            .bind(customer_id)
            .bind(recipient)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(collect(rows)?.remove(recipient).unwrap_or_default())
    }

    /// Every customer with at least one preference row.
    pub async fn customers_with_preferences(&self) -> Result<HashSet<String>, Error> {
        let rows = sqlx::query("SELECT DISTINCT customer_id FROM preferences")
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
    }

    /// The preference sets of `recipients` of one customer, each with its version (recipients
    /// who never set anything get an empty set, version 0). One statement per chunk: a
    /// consistent snapshot of each recipient.
    pub async fn recipient_preferences(
        &self,
        customer_id: &str,
        recipients: &[&str],
    ) -> Result<HashMap<String, RecipientPreferences>, Error> {
        let mut found = HashMap::with_capacity(recipients.len());
        for chunk in recipients.chunks(LOOKUP_CHUNK) {
            let sql = lookup_sql(chunk.len());
            let mut query = sqlx::query(&sql).bind(customer_id);
            for recipient in chunk {
                query = query.bind(*recipient);
            }
            found.extend(collect(query.fetch_all(&self.read).await?)?);
        }
        for recipient in recipients {
            found.entry((*recipient).to_owned()).or_default();
        }
        Ok(found)
    }
}

/// Selects version and rows of `n` recipients (`$2`..`$n+1`) of customer `$1`.
fn lookup_sql(n: usize) -> String {
    let placeholders: Vec<String> = (0..n).map(|i| format!("${}", i + 2)).collect();
    format!(
        "SELECT v.recipient, v.version, p.channel, p.lane, p.opted_out, p.updated_at \
         FROM preference_versions v LEFT JOIN preferences p \
           ON p.customer_id = v.customer_id AND p.recipient = v.recipient \
         WHERE v.customer_id = $1 AND v.recipient IN ({})",
        placeholders.join(", ")
    )
}

/// Groups lookup rows by recipient.
fn collect(rows: Vec<sqlx::any::AnyRow>) -> Result<HashMap<String, RecipientPreferences>, Error> {
    let mut found: HashMap<String, RecipientPreferences> = HashMap::new();
    for row in rows {
        let recipient: String = row.try_get(0)?;
        let set = found.entry(recipient).or_default();
        set.version = row.try_get(1)?;
        let Some(channel) = row.try_get::<Option<i64>, _>(2)? else {
            continue;
        };
        let channel = Channel::from_code(channel)
            .ok_or_else(|| Error::Corrupt(format!("unknown channel {channel}")))?;
        set.preferences.push(Preference {
            channel,
            lane: match row.try_get::<i64, _>(3)? {
                0 => None,
                code => Some(Lane::from_code(code)),
            },
            opted_out: row.try_get::<i64, _>(4)? != 0,
            updated_at: row.try_get(5)?,
        });
    }
    Ok(found)
}

/// Every lane is stored as 0.
fn lane_code(lane: Option<Lane>) -> i64 {
    lane.map_or(0, Lane::code)
}
