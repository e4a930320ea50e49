//! SQLite's WAL checkpointer: copies the write-ahead log back into the database file off the
//! commit path (see [`checkpoint_loop`]).

use std::time::Duration;

use sqlx::Executor;

use super::gate::Priority;
use super::writer::Durability;
use super::{Error, SQLITE_BUSY_TIMEOUT, Store};

/// How often the SQLite checkpointer copies the WAL back into the database file. A passive
/// checkpoint copies each page once, in its newest version, however many commits rewrote it
/// since the last one, and the hot pages of the notifications table's indexes are rewritten by
/// many commits a second. Every 250 ms, the checkpointer copied 3.3–3.4 KiB per delivered
/// notification and took 3.3 CPU-µs of it; every second, 1.3–1.4 KiB and 1.7–1.9 µs; every two
/// seconds copied less again (0.9 KiB) for no less CPU (BENCHMARKS.md, "Twentieth pass"). The
/// restart step is unaffected: it comes after passes of its own either way.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// WAL frames (pages) after which the checkpointer starts the WAL over (see [`checkpoint_loop`]):
/// 65,536 pages are 256 MiB at SQLite's default page size, one to three seconds of writes at full
/// speed. It was chosen while a restart still held the write connection for what the WAL
/// gained since the last passive pass, whatever the threshold (about 20 ms at the median and up
/// to 60 ms beside saturated intake and deliveries), so the threshold set how often every
/// writer waited that long. At 4,096 pages that was every checkpoint round. At 16,384 there were
/// 43 restarts in a 27 s run, and all 17 unary Submits that waited 15 ms or more for the
/// connection had waited for one. At 65,536 there are a third as many: delivered/s 7.3% higher
/// on average and the unary Submit's p99 lower in six of eight alternating pairs (BENCHMARKS.md,
/// "Sixteenth pass"). Since [`start_over`] holds back only group commits and background writes
/// (for a passive pass or two), the threshold now sets how often those wait, and the WAL's
/// size on disk.
const WAL_RESTART_FRAMES: i64 = 65_536;

/// Checkpoints SQLite's WAL every [`CHECKPOINT_INTERVAL`], until the store is closed:
///
/// 1. A PASSIVE checkpoint on a read connection copies what the WAL holds into the database
///    file. It never waits for (or blocks) the writer, so the copying is off the commit path.
/// 2. Under steady writes a passive checkpoint never quite finishes (commits append frames while
///    it copies), and SQLite only starts the WAL over from the beginning after a complete one: the
///    file grew by gigabytes, and every commit's fsync got slower with it. So once the WAL holds
///    [`WAL_RESTART_FRAMES`], the round goes on to start it over (see [`start_over`]).
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
    let (frames, _) = passive(store).await?;
    if !restart_due(frames, restarted_last_round) {
        return Ok(None);
    }
    start_over(store).await
}

/// Copies the rest of the WAL into the database file and starts the WAL over; returns the
/// frames it held, if it was started over. Three passive passes first, so that the restart
/// itself, which holds the write connection, finds almost nothing left to do:
///
/// 1. A second pass copies what arrived during the first, with every writer going (background
///    turns holding the connection 20-40 ms, mostly restarts, fell from 41-47 to 15-27 per 20 s
///    run with it: BENCHMARKS.md, fourth pass).
/// 2. What arrived meanwhile is still thousands of pages at full speed. When the restart copied
///    and synced them, it held every writer, unary Submits too, for 16-55 ms. So a third pass
///    copies them with group commits and background writes held back at the write gate, and
///    express commits still going.
/// 3. A passive pass syncs the database file only when nothing was committed while it copied,
///    which under steady writes is never: the pages the passes copied waited in the kernel's
///    cache for the restart's sync, which took up to 57 ms. The fourth pass has only what the
///    express commits wrote during the third to copy, so it nearly always ends in that sync,
///    with express commits still free to go.
///
/// Then the restart copies what the express commits wrote meanwhile, and held the write
/// connection 0-1 ms in a saturated run (BENCHMARKS.md, "Twenty-first pass").
async fn start_over(store: &Store) -> Result<Option<i64>, Error> {
    passive(store).await?;
    let held_back = std::time::Instant::now();
    let express_only = store.gate.as_ref().map(|gate| gate.express_only());
    if let Some(gate) = &store.gate {
        // The write under way ends before the pass starts, so its pages are copied too.
        drop(gate.turn(Priority::Express).await);
    }
    passive(store).await?;
    let synced = std::time::Instant::now();
    passive(store).await?;
    let synced_ms = synced.elapsed().as_millis() as u64;
    let restarted = restart(store).await;
    drop(express_only);
    let held_back_ms = held_back.elapsed().as_millis() as u64;
    let Restart {
        frames,
        tries,
        held,
    } = restarted?;
    let held_ms = held.as_millis() as u64;
    tracing::debug!(
        frames,
        held_back_ms,
        synced_ms,
        tries,
        held_ms,
        "WAL restart"
    );
    Ok(frames)
}

/// A PASSIVE checkpoint on a read connection; returns the frames the WAL holds and how many of
/// them are copied into the database file.
async fn passive(store: &Store) -> Result<(i64, i64), Error> {
    // (busy, frames in the WAL, frames copied into the database)
    let (_, frames, copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&store.read)
        .await?;
    Ok((frames, copied))
}

/// What [`restart`] did.
#[derive(Debug)]
struct Restart {
    /// The frames the WAL held when it was started over; none if readers kept it busy.
    frames: Option<i64>,
    /// How many tries it took.
    tries: u32,
    /// How long the last try held the write connection.
    held: Duration,
}

/// How many times [`restart`] tries before it gives up until the next round.
const RESTART_TRIES: u32 = 50;

/// How long [`restart`] waits between two tries, off the write connection.
const RESTART_RETRY: Duration = Duration::from_millis(1);

/// Starts the WAL over, once the passes before it copied almost all of it: returns the frames
/// the WAL held, or none if readers kept it busy.
///
/// A restart must wait until no reader still uses the WAL's frames. With a busy timeout,
/// SQLite waits for them holding the write connection, and sleeps 1, 2, 5, 10, 15 ms... between
/// looks, although the readers (one-row reads) are done within a millisecond. So each try here
/// gives up at once when a reader is there, and the next one comes a millisecond later, off the
/// write connection, with express commits free to write in between. (In the saturated runs
/// measured, every restart succeeded at its first try: its holds of 25-57 ms had been the
/// database file's sync, which the fourth pass of [`start_over`] now does.)
async fn restart(store: &Store) -> Result<Restart, Error> {
    let mut held = Duration::ZERO;
    for tries in 1..=RESTART_TRIES {
        let mut conn = store
            .writer_in(Priority::Express, Durability::Relaxed)
            .await?;
        let started = std::time::Instant::now();
        conn.execute("PRAGMA busy_timeout = 0").await?;
        let restart: Result<(i64, i64, i64), _> = sqlx::query_as("PRAGMA wal_checkpoint(RESTART)")
            .fetch_one(&mut *conn)
            .await;
        conn.execute(SQLITE_BUSY_TIMEOUT).await?;
        held = started.elapsed();
        let (busy, frames, _) = restart?;
        if busy == 0 {
            return Ok(Restart {
                frames: Some(frames),
                tries,
                held,
            });
        }
        drop(conn);
        tokio::time::sleep(RESTART_RETRY).await;
    }
    Ok(Restart {
        frames: None,
        tries: RESTART_TRIES,
        held,
    })
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
    use crate::model::{NewNotification, now_millis};
    use crate::store::Commit;
    use crate::store::test_support::{notification, sqlite_store};
    use sqlx::Acquire;

    /// Stores `count` notifications keyed `{prefix}-{n}` in one group commit.
    async fn insert(store: &Store, prefix: &str, count: usize) {
        let items: Vec<NewNotification> = (0..count)
            .map(|n| NewNotification {
                recipient: format!("user-{n}"),
                payload: vec![b'x'; 200],
                ..notification(&format!("{prefix}-{n}"))
            })
            .collect();
        store
            .insert_notifications(Commit::Group, &items, &[], now_millis(), 0)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_restart_gives_up_on_an_old_reader_and_starts_the_wal_over_once_it_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        insert(&store, "before", 50).await;
        // A reader whose snapshot predates the next commit keeps its WAL frames in use.
        let mut reader = store.read.acquire().await.unwrap();
        let mut snapshot = reader.begin().await.unwrap();
        let _: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
            .fetch_one(&mut *snapshot)
            .await
            .unwrap();
        insert(&store, "after", 50).await;
        let (frames, copied) = passive(&store).await.unwrap();
        assert!(
            copied < frames,
            "the reader holds back the copy: {copied} of {frames}"
        );

        let gave_up = restart(&store).await.unwrap();
        assert_eq!((gave_up.frames, gave_up.tries), (None, RESTART_TRIES));
        // Each try lowered the write connection's busy timeout and put it back.
        let mut conn = store.writer(Durability::Relaxed).await.unwrap();
        let timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(timeout, 5000);
        drop(conn);

        snapshot.rollback().await.unwrap();
        drop(reader);
        let restarted = restart(&store).await.unwrap();
        assert_eq!((restarted.frames, restarted.tries), (Some(frames), 1));
        // The WAL starts over: the next commit writes from its beginning.
        insert(&store, "later", 1).await;
        let (frames_now, _) = passive(&store).await.unwrap();
        assert!(
            frames_now < frames,
            "{frames_now} frames after the restart, {frames} before"
        );
    }

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
