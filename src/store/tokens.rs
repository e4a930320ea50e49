//! Scoped token rows: a token's name, the hash of its secret, its customer systems, and when it
//! was created and last used. The secret itself is never stored.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Durability, Error, Store};
use crate::model::{EpochMillis, TokenRecord};

const COLUMNS: &str = "name, token_hash, customer_ids, created_at, last_used_at";

impl Store {
    /// Stores a new token; `false` (and nothing written) when its name is taken.
    pub async fn insert_scoped_token(&self, token: &TokenRecord) -> Result<bool, Error> {
        let customers = serde_json::to_string(&token.customer_ids)
            .map_err(|err| Error::Corrupt(format!("cannot encode customer ids: {err}")))?;
        let inserted = sqlx::query(
            "INSERT INTO scoped_tokens (name, token_hash, customer_ids, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
        )
        .bind(token.name.as_str())
        .bind(token.hash.as_str())
        .bind(customers)
        .bind(token.created_at)
        .execute(&mut *self.writer(Durability::Durable).await?)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Every token, ordered by name.
    pub async fn scoped_tokens(&self) -> Result<Vec<TokenRecord>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM scoped_tokens ORDER BY name");
        let rows = sqlx::query(&sql).fetch_all(&self.read).await?;
        rows.iter().map(token_from_row).collect()
    }

    /// Deletes a token and returns it as it was; `None` when there is no such token.
    pub async fn delete_scoped_token(&self, name: &str) -> Result<Option<TokenRecord>, Error> {
        let sql = format!("DELETE FROM scoped_tokens WHERE name = $1 RETURNING {COLUMNS}");
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&mut *self.writer(Durability::Durable).await?)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    /// Records that the token with `hash` was used at `at`, unless a later use is already
    /// recorded (another node may have written one). A revoked token's row is gone: no-op.
    pub async fn touch_scoped_token(&self, hash: &str, at: EpochMillis) -> Result<(), Error> {
        sqlx::query(
            "UPDATE scoped_tokens SET last_used_at = $2 \
             WHERE token_hash = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
        )
        .bind(hash)
        .bind(at)
        .execute(&mut *self.writer(Durability::Relaxed).await?)
        .await?;
        Ok(())
    }
}

fn token_from_row(row: &AnyRow) -> Result<TokenRecord, Error> {
    let customers: String = row.try_get("customer_ids")?;
    Ok(TokenRecord {
        name: row.try_get("name")?,
        hash: row.try_get("token_hash")?,
        customer_ids: serde_json::from_str(&customers)
            .map_err(|err| Error::Corrupt(format!("scoped token customer ids: {err}")))?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}
