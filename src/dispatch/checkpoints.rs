//! The checkpoint writer: collects each actor's latest controller checkpoint and writes them in
//! batches, so thousands of actors cost one statement every few seconds.
//!
//! Actors offer a checkpoint at most every [`EVERY`] while they run and once when they stop; only
//! the latest per actor is kept until the next write. A checkpoint lost to a crash costs only
//! the learning since the one before.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::controller::Checkpoint;
use super::messages::ActorKey;
use crate::model::now_millis;
use crate::store::{CheckpointRow, Store};

/// How often a running actor offers its checkpoint, and how often they are written.
pub(super) const EVERY: Duration = Duration::from_secs(5);

/// Checkpoints waiting to be written; shared by every actor of the node. Actors only offer (in
/// memory); the node's task writes them to its store.
#[derive(Debug, Default)]
pub(super) struct CheckpointWriter {
    pending: Mutex<HashMap<ActorKey, Checkpoint>>,
}

impl CheckpointWriter {
    /// Keeps `checkpoint` as the latest of its actor, for the next write.
    pub(super) fn offer(&self, key: ActorKey, checkpoint: Checkpoint) {
        self.lock().insert(key, checkpoint);
    }

    /// Writes every waiting checkpoint to `store` now.
    pub(super) async fn flush(&self, store: &Store) {
        let batch: Vec<CheckpointRow> = self
            .lock()
            .drain()
            .filter_map(|((customer_id, channel), checkpoint)| {
                let state = serde_json::to_string(&checkpoint).ok()?;
                Some(CheckpointRow {
                    customer_id,
                    channel,
                    state,
                })
            })
            .collect();
        if batch.is_empty() {
            return;
        }
        if let Err(err) = store.save_checkpoints(&batch, now_millis()).await {
            tracing::warn!(error = %err, checkpoints = batch.len(), "could not save controller checkpoints; actors resume from older ones");
        }
    }

    /// Writes to `store` every [`EVERY`] until `stop`.
    pub(super) async fn run(&self, store: &Store, stop: CancellationToken) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => self.flush(store).await,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ActorKey, Checkpoint>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Parses a stored checkpoint; a row from an incompatible version is skipped with a warning.
pub(super) fn parse(customer_id: &str, state: &str) -> Option<Checkpoint> {
    match serde_json::from_str(state) {
        Ok(checkpoint) => Some(checkpoint),
        Err(err) => {
            tracing::warn!(customer_id, error = %err, "ignoring an unreadable controller checkpoint");
            None
        }
    }
}
