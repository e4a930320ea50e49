//! The write probe behind `/readyz`: a node whose database answers reads but cannot take writes
//! (disk full, a read-only replica after failover, a connection wedged in a failed transaction)
//! must report not ready, so load balancers stop sending it submits it would refuse.

use super::{Durability, Error, Store};
use crate::model::EpochMillis;

impl Store {
    /// Rewrites this node's row in `write_probe` through the same write path background work
    /// uses (on SQLite: the one write connection, healed first if a failed commit left it
    /// stuck). `Full` or `Unavailable` when the database cannot take writes.
    pub async fn probe_write(&self, now: EpochMillis) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO write_probe (node, probed_at) VALUES ($1, $2) \
             ON CONFLICT (node) DO UPDATE SET probed_at = excluded.probed_at",
        )
        .bind(self.probe_node)
        .bind(now)
        .execute(&mut *self.writer(Durability::Relaxed).await?)
        .await?;
        Ok(())
    }
}
