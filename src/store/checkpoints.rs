//! Controller checkpoints: each customer actor's learned state, one row per customer and
//! channel, so a restarted node, a new owner after a handover, or an actor that stopped when
//! idle resumes at the learned limit instead of slow start. The state is opaque JSON here; the
//! controller defines it.

use sqlx::Row;

use super::notifications::stored_channel;
use super::{Durability, Error, Store, chunk_sizes, values_placeholders};
use crate::model::{Channel, EpochMillis};

/// Most checkpoints one statement writes.
const CHUNK: usize = 256;

/// One controller's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    pub customer_id: String,
    pub channel: Channel,
    /// The controller's state as JSON.
    pub state: String,
}

impl Store {
    /// Writes (or replaces) a batch of checkpoints.
    pub async fn save_checkpoints(
        &self,
        checkpoints: &[CheckpointRow],
        now: EpochMillis,
    ) -> Result<(), Error> {
        let mut conn = self.writer(Durability::Relaxed).await?;
        let mut first = 0;
        for size in chunk_sizes(checkpoints.len(), CHUNK) {
            let sql = format!(
                "INSERT INTO controller_checkpoints (customer_id, channel, state, saved_at) \
                 VALUES {} ON CONFLICT (customer_id, channel) DO UPDATE SET \
                   state = excluded.state, saved_at = excluded.saved_at",
                values_placeholders(self.backend, size, 4)
            );
            let mut query = sqlx::query(&sql);
            for row in &checkpoints[first..first + size] {
                query = query
                    .bind(row.customer_id.as_str())
                    .bind(row.channel.code())
                    .bind(row.state.as_str())
                    .bind(now);
            }
            query.execute(&mut *conn).await?;
            first += size;
        }
        Ok(())
    }

    /// Every checkpoint of one customer (one per channel it has run on).
    pub async fn load_checkpoints(&self, customer_id: &str) -> Result<Vec<CheckpointRow>, Error> {
        let rows =
            sqlx::query("SELECT channel, state FROM controller_checkpoints WHERE customer_id = $1")
                .bind(customer_id)
                .fetch_all(&self.read)
                .await?;
        rows.iter()
            .map(|row| {
                Ok(CheckpointRow {
                    customer_id: customer_id.to_owned(),
                    channel: stored_channel(row.try_get(0)?)?,
                    state: row.try_get(1)?,
                })
            })
            .collect()
    }
}
