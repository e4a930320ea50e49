//! The write connection: who may write next, and how durable each write must be.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor};

use super::gate::{Priority, Turn};
use super::last_mode::LastMode;
use super::{Backend, Error, Store};

/// How durable a write must be before its commit returns (see [`Store::writer`]), which also
/// says who is waiting for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    /// Survives power loss: anything a caller was told is stored. A caller waits for it, so it
    /// goes first.
    Durable,
    /// Survives a process crash; a power cut may undo it, which only causes a redelivery.
    /// Background work (claims, outcomes, recovery, retention).
    Relaxed,
}

impl Durability {
    fn priority(self) -> Priority {
        match self {
            Durability::Durable => Priority::Caller,
            Durability::Relaxed => Priority::Background,
        }
    }
}

/// A write connection, held for one transaction (and, on SQLite, the turn at the gate with it).
/// Dropping it hands both on.
pub(crate) struct WriteConn {
    /// Taken only when the turn ends (see the `Drop` impl).
    conn: Option<PoolConnection<Any>>,
    /// Dropped after `conn`: the next writer finds the connection back.
    _turn: Option<Turn>,
    /// Where the connection goes back to its pool (see the `Drop` impl).
    writers_runtime: tokio::runtime::Handle,
    /// For the slow-write warning: the class, how long it waited for its turn, when it got it.
    class: Priority,
    /// What the connection's `synchronous` mode was set for.
    durability: Durability,
    waited: Duration,
    since: std::time::Instant,
    /// SQLite: where to record the mode this turn leaves the connection in.
    last_mode: Option<Arc<LastMode>>,
    /// Set by [`WriteConn::finished_cleanly`].
    clean: bool,
}

impl WriteConn {
    /// Says this turn's writes are all committed (or were statements of their own) and
    /// succeeded: the connection is outside any transaction, in the mode it was given, so the
    /// next turn of the same durability may use it without setting the mode again. Call it
    /// only on success, after the last statement; a turn that does not call it (any error
    /// path) makes the next one check the connection.
    pub(super) fn finished_cleanly(&mut self) {
        self.clean = true;
    }
}

/// A write that waited for, or held, the write connection this long is logged: every caller
/// behind it waited as long, so it is what an SRE looks for when Submit latency has a tail.
const SLOW_WRITE: Duration = Duration::from_millis(250);

/// Writes that waited for or held the connection this long are logged at debug level, to find
/// what makes up a latency tail.
const NOTABLE_WRITE: Duration = Duration::from_millis(10);

impl Drop for WriteConn {
    fn drop(&mut self) {
        if let Some(last_mode) = &self.last_mode {
            match self.clean {
                true => last_mode.set(self.durability),
                false => last_mode.forget(),
            }
        }
        let held = self.since.elapsed();
        let longest = held.max(self.waited);
        let (class, waited_ms, held_ms) = (
            self.class,
            self.waited.as_millis() as u64,
            held.as_millis() as u64,
        );
        if longest >= SLOW_WRITE {
            tracing::warn!(
                ?class,
                waited_ms,
                held_ms,
                "slow write: a transaction waited for or held the database's write connection long"
            );
        } else if longest >= NOTABLE_WRITE {
            tracing::debug!(?class, waited_ms, held_ms, "write turn");
        }
        // sqlx puts a connection back in its pool in a task it spawns on the current runtime.
        // A turn that ends on another runtime (the server keeps its writers on the writers'
        // runtime, but a library caller or a test need not) would leave the connection waiting
        // there, behind thousands of delivery tasks on the main one, and the next writer with
        // it, however short the turn was; so the task goes to the writers' runtime.
        let _writers = self.writers_runtime.enter();
        drop(self.conn.take());
        drop(self._turn.take());
    }
}

/// The connection is only taken out of a [`WriteConn`] as it is dropped.
const TAKEN_AT_DROP: &str = "a write connection is taken only when its turn ends";

impl Deref for WriteConn {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        self.conn.as_deref().expect(TAKEN_AT_DROP)
    }
}

impl DerefMut for WriteConn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.conn.as_deref_mut().expect(TAKEN_AT_DROP)
    }
}

impl Store {
    /// A write connection for one transaction, in the class `durability` says (see the module
    /// docs), with SQLite's fsync policy set for what the write promises.
    ///
    /// Accepting a notification is promised durable, so intake commits with
    /// `synchronous = FULL`. Claims and outcomes are not: losing one to a power cut only means a
    /// redelivery (at least once). They commit with `NORMAL`, which in WAL mode is still atomic
    /// and ordered, and the next FULL commit syncs them too. This keeps hundreds of claim and
    /// outcome transactions a second from each paying an fsync on the one write connection.
    pub(super) async fn writer(&self, durability: Durability) -> Result<WriteConn, Error> {
        self.writer_in(durability.priority(), durability).await
    }

    /// [`Store::writer`] in the gate's class `class` rather than the one `durability` implies:
    /// an express commit is durable, but its turn comes before group commits'.
    pub(super) async fn writer_in(
        &self,
        class: Priority,
        durability: Durability,
    ) -> Result<WriteConn, Error> {
        let asked = std::time::Instant::now();
        let turn = match &self.gate {
            Some(gate) => Some(gate.turn(class).await),
            None => None,
        };
        self.write_conn(turn, class, durability, asked).await
    }

    /// Whether an express commit is waiting for SQLite's write connection (never on PostgreSQL,
    /// where express commits have connections of their own).
    pub(super) fn express_waiting(&self) -> bool {
        self.gate
            .as_ref()
            .is_some_and(|gate| gate.express_waiting())
    }

    /// Between two statements of a background batch: if an express commit waits for SQLite's
    /// write connection, lets it go first and then takes the connection back, ahead of every
    /// other waiter (see [`super::gate::WriteGate::lend_to_express`]). So a unary Submit waits
    /// for one statement of a big claim or outcome batch, not the whole of it. Only for
    /// statements that are transactions of their own: the lent connection must not be inside
    /// one.
    pub(super) async fn let_express_through(
        &self,
        mut conn: WriteConn,
    ) -> Result<WriteConn, Error> {
        let Some(gate) = &self.gate else {
            return Ok(conn);
        };
        if !gate.express_waiting() {
            return Ok(conn);
        }
        let Some(turn) = conn._turn.take() else {
            return Ok(conn);
        };
        let (class, durability) = (conn.class, conn.durability);
        // The express commit needs the connection itself too; it is between two statements
        // that are transactions of their own, so outside any transaction.
        conn.finished_cleanly();
        drop(conn);
        let asked = std::time::Instant::now();
        let turn = gate.lend_to_express(turn, class).await;
        self.write_conn(Some(turn), class, durability, asked).await
    }

    /// The write connection, once `turn` (if there is a gate) is held.
    async fn write_conn(
        &self,
        turn: Option<Turn>,
        class: Priority,
        durability: Durability,
        asked: std::time::Instant,
    ) -> Result<WriteConn, Error> {
        let pool = match durability {
            Durability::Durable => &self.caller_writes,
            Durability::Relaxed => &self.background_writes,
        };
        let mut conn = pool.acquire().await?;
        let last_mode = match self.backend {
            Backend::Sqlite => {
                conn = sqlite_writer_ready(pool, conn, durability, &self.last_mode).await?;
                Some(self.last_mode.clone())
            }
            Backend::Postgres => None,
        };
        Ok(WriteConn {
            conn: Some(conn),
            _turn: turn,
            writers_runtime: self.writers_runtime.clone(),
            class,
            durability,
            waited: asked.elapsed(),
            since: std::time::Instant::now(),
            last_mode,
            clean: false,
        })
    }
}

/// Sets the write connection's `synchronous` mode for this write, unless the last turn left it
/// in that mode and finished cleanly (see [`LastMode`]). Setting it doubles as the
/// connection's health check: after a failed commit (a full disk, an I/O error) SQLite can
/// leave the connection inside the failed transaction, where the pragma is refused. Then the
/// transaction is rolled back; if even that fails, the connection is dropped for a fresh one —
/// so writes resume by themselves once the cause is gone, without a restart.
///
/// If the pool replaces the connection on its own (its lifetime ran out), the new one starts
/// at `FULL`: a skipped pragma can then only make a background write more durable than it
/// needs to be, never a caller's write less.
async fn sqlite_writer_ready(
    pool: &AnyPool,
    mut conn: PoolConnection<Any>,
    durability: Durability,
    last_mode: &LastMode,
) -> Result<PoolConnection<Any>, Error> {
    if last_mode.is(durability) {
        return Ok(conn);
    }
    let pragma = match durability {
        Durability::Durable => "PRAGMA synchronous = FULL",
        Durability::Relaxed => "PRAGMA synchronous = NORMAL",
    };
    if conn.execute(pragma).await.is_ok() {
        return Ok(conn);
    }
    if conn.execute("ROLLBACK").await.is_ok() && conn.execute(pragma).await.is_ok() {
        tracing::warn!(
            "the SQLite write connection was left inside a failed transaction; rolled it back"
        );
        return Ok(conn);
    }
    tracing::warn!("the SQLite write connection is unusable; opening a new one");
    let _ = conn.close().await;
    let mut conn = pool.acquire().await?;
    conn.execute(pragma).await?;
    Ok(conn)
}

#[cfg(test)]
mod tests;
