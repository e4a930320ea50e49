//! SQLite's WAL checkpointer: copies the write-ahead log back into the database file off the
//! commit path (see [`checkpoint_loop`]).

use std::time::Duration;

use sqlx::Executor;

use super::writer::Durability;
use super::{Error, SQLITE_BUSY_TIMEOUT, Store};

/// How often the SQLite checkpointer copies the WAL back into the database file. Often enough
/// that little is left for the restart step, rarely enough to cost nothing when idle.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// WAL frames (pages) after which the checkpointer starts the WAL over (see [`checkpoint_loop`]):
/// 16,384 pages are 64 MiB at SQLite's default page size, about a second of writes at full speed.
/// A restart holds the write connection for what the WAL gained since the last passive pass,
/// whatever the threshold (16-20 ms at the median under saturated intake and delivery), so the
/// threshold sets how often the connection is held that long: with 4,096 pages it was every
/// checkpoint round (four times a second, 6% of the time), and delivered/s was 7% lower on
/// average over six alternating pairs (BENCHMARKS.md, "Seventh pass").
const WAL_RESTART_FRAMES: i64 = 16_384;

/// Checkpoints SQLite's WAL every [`CHECKPOINT_INTERVAL`], until the store is closed, in two
/// steps:
///
/// 1. A PASSIVE checkpoint on a read connection copies what the WAL holds into the database
///    file. It never waits for (or blocks) the writer, so the copying is off the commit path.
/// 2. Under steady writes a passive checkpoint never quite finishes (commits append frames while
///    it copies), and SQLite only starts the WAL over from the beginning after a complete one: the
///    file grew by gigabytes, and every commit's fsync got slower with it. So once the WAL holds
///    [`WAL_RESTART_FRAMES`], a second passive pass copies what arrived during the first, and
///    then a RESTART checkpoint runs in a background turn at the write connection, where no
///    commit can interleave. It copies only the frames the passes had not, and the next commit
///    writes the WAL from its start again.
pub(super) async fn checkpoint_loop(store: Store) {
    let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if closed(&store) {
            return;
        }
        if let Err(err) = checkpoint(&store).await {
            if closed(&store) {
                return;
            }
            tracing::warn!(error = %err, "WAL checkpoint failed; retrying");
        }
    }
}

/// Whether the store was closed, so the loop ends instead of warning that its round failed. The
/// write pool counts too: a round that finds it closed fails at the restart step, and at every
/// shutdown that printed a warning about a closed pool.
fn closed(store: &Store) -> bool {
    store.read.is_closed() || store.caller_writes.is_closed()
}

/// One round of [`checkpoint_loop`].
async fn checkpoint(store: &Store) -> Result<(), Error> {
    // (busy, frames in the WAL, frames copied into the database)
    let (_, frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&store.read)
        .await?;
    if frames >= WAL_RESTART_FRAMES {
        // The restart holds the write connection while it copies what the WAL gained since the
        // last passive checkpoint and syncs the database file. A second passive pass first,
        // still off the commit path, leaves it only what arrives meanwhile: background turns
        // holding the connection 20-40 ms (mostly restarts) fell from 41-47 to 15-27 per 20 s
        // run (BENCHMARKS.md, fourth pass).
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&store.read)
            .await?;
        // A restart waits for readers still on old WAL frames, holding the writer's turn
        // meanwhile: give up after 50 ms (it answers busy) and try again next round.
        let mut conn = store.writer(Durability::Relaxed).await?;
        conn.execute("PRAGMA busy_timeout = 50").await?;
        let restarted = conn.execute("PRAGMA wal_checkpoint(RESTART)").await;
        conn.execute(SQLITE_BUSY_TIMEOUT).await?;
        restarted?;
    }
    Ok(())
}
