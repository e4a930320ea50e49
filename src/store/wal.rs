//! SQLite's WAL checkpointer: copies the write-ahead log back into the database file off the
//! commit path (see [`checkpoint_loop`]).

use std::time::Duration;

use sqlx::Executor;

use super::writer::Durability;
use super::{Error, SQLITE_BUSY_TIMEOUT, Store};

/// How often the SQLite checkpointer copies the WAL back into the database file. A passive
/// checkpoint copies each page once, in its newest version, however many commits rewrote it
/// since the last one, and the hot pages of the notifications table's indexes are rewritten by
/// many commits a second. Every 250 ms, the checkpointer copied 3.3–3.4 KiB per delivered
/// notification and took 3.3 CPU-µs of it; every second, 1.3–1.4 KiB and 1.7–1.9 µs; every two
/// seconds copied less again (0.9 KiB) for no less CPU (BENCHMARKS.md, "Twentieth pass"). The
/// restart step is unaffected: it comes after a second passive pass either way.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// WAL frames (pages) after which the checkpointer starts the WAL over (see [`checkpoint_loop`]):
/// 65,536 pages are 256 MiB at SQLite's default page size, one to three seconds of writes at full
/// speed. A restart holds the write connection for what the WAL gained since the last passive
/// pass, whatever the threshold (about 20 ms at the median and up to 60 ms beside saturated
/// intake and deliveries: two syncs and the copy), so the threshold sets how often the
/// connection is held that long, and a unary Submit that arrives meanwhile waits for it. At
/// 4,096 pages that was every checkpoint round. At 16,384 there were 43 restarts in a 27 s run,
/// and all 17 unary Submits that waited 15 ms or more for the connection had waited for one. At
/// 65,536 there are a third as many: delivered/s 7.3% higher on average and the unary Submit's
/// p99 lower in six of eight alternating pairs (BENCHMARKS.md, "Sixteenth pass"). Larger
/// thresholds had made the tail worse while readers could hold old frames for hundreds of
/// milliseconds; since reads answer in one row ("Fifteenth pass"), a restart no longer waits for
/// them.
const WAL_RESTART_FRAMES: i64 = 65_536;

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
    let mut restarted = None;
    loop {
        tick.tick().await;
        if closed(&store) {
            return;
        }
        restarted = match checkpoint(&store, restarted).await {
            Ok(restarted) => restarted,
            Err(err) => {
                if closed(&store) {
                    return;
                }
                tracing::warn!(error = %err, "WAL checkpoint failed; retrying");
                None
            }
        };
    }
}

/// Whether the store was closed, so the loop ends instead of warning that its round failed. The
/// write pool counts too: a round that finds it closed fails at the restart step, and at every
/// shutdown that printed a warning about a closed pool.
fn closed(store: &Store) -> bool {
    store.read.is_closed() || store.caller_writes.is_closed()
}

/// One round of [`checkpoint_loop`]. `restarted_last_round` is the WAL's size in frames as the
/// last round's restart found it, if that round restarted the WAL; returns the same for the
/// next round (see [`restart_due`]).
async fn checkpoint(
    store: &Store,
    restarted_last_round: Option<i64>,
) -> Result<Option<i64>, Error> {
    // (busy, frames in the WAL, frames copied into the database)
    let (_, frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&store.read)
        .await?;
    if !restart_due(frames, restarted_last_round) {
        return Ok(None);
    }
    // The restart holds the write connection while it copies what the WAL gained since the
    // last passive checkpoint and syncs the database file. A second passive pass first, still
    // off the commit path, leaves it only what arrives meanwhile: background turns holding the
    // connection 20-40 ms (mostly restarts) fell from 41-47 to 15-27 per 20 s run
    // (BENCHMARKS.md, fourth pass).
    sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .execute(&store.read)
        .await?;
    // A restart waits for readers still on old WAL frames, holding the writer's turn
    // meanwhile: give up after 50 ms (it answers busy) and try again next round.
    let mut conn = store.writer(Durability::Relaxed).await?;
    let started = std::time::Instant::now();
    conn.execute("PRAGMA busy_timeout = 50").await?;
    let restart: Result<(i64, i64, i64), _> = sqlx::query_as("PRAGMA wal_checkpoint(RESTART)")
        .fetch_one(&mut *conn)
        .await;
    conn.execute(SQLITE_BUSY_TIMEOUT).await?;
    let (busy, frames, _) = restart?;
    let held_ms = started.elapsed().as_millis() as u64;
    tracing::debug!(frames, held_ms, gave_up = busy != 0, "WAL restart");
    Ok((busy == 0).then_some(frames))
}

/// Whether a round whose first passive pass counted `frames` in the WAL restarts it.
///
/// Not in the round right after a restart when the pass answers with the very size that restart
/// found. Measured in a drain (BENCHMARKS.md, "Fourteenth pass"): the round after a restart saw
/// exactly that count again in both passive passes, on read connections, while the restart it
/// then ran found a new WAL of 1,400–5,200 frames on the write connection. A third of the
/// restarts (47 of 159 in three drains) were such ones, and each held the write connection as
/// long as a real one (36–240 ms in a drain) while unary Submits waited. That count is skipped
/// once only: should it still be there a round later, the WAL is restarted then.
fn restart_due(frames: i64, restarted_last_round: Option<i64>) -> bool {
    frames >= WAL_RESTART_FRAMES && restarted_last_round != Some(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_wal_is_restarted_unless_the_count_is_the_last_restarts() {
        let full = WAL_RESTART_FRAMES + 3_000;
        assert!(restart_due(full, None));
        assert!(!restart_due(WAL_RESTART_FRAMES - 1, None));
        // The round after a restart, the same count again: skipped.
        assert!(!restart_due(full, Some(full)));
        // A different count after a restart is a WAL that filled again.
        assert!(restart_due(full + 1, Some(full)));
    }
}
