//! SQLite's one write connection between two turns at the gate: where it is parked, and the
//! `synchronous` mode the last turn left it in (see [`WriteSlot`]).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use sqlx::{AnyConnection, AnyPool, Connection};

use super::Error;
use super::writer::Durability;

/// SQLite's one write connection, kept here between turns instead of in its pool, and the mode
/// the last turn left it in.
///
/// The gate already decides who uses the connection next, so a pool adds nothing but its
/// return path: sqlx pings a connection before it takes it back, in a task of its own, so every
/// turn's successor waited for a spawned task and a round trip to the connection's thread
/// before its first statement. Parked here, the connection is back before the turn passes on.
/// The pool stays behind it to open the connection (with its settings) at the first turn, or a
/// fresh one when a turn found it unusable (see `Store::writer`).
#[derive(Debug, Default)]
pub(super) struct WriteSlot {
    parked: Mutex<Option<AnyConnection>>,
    mode: LastMode,
}

impl WriteSlot {
    /// The parked connection, or a new one from `pool` if there is none (the first turn, or the
    /// last one closed an unusable connection and could not open another; once the store is
    /// closed, the pool refuses).
    pub(super) async fn take(&self, pool: &AnyPool) -> Result<AnyConnection, Error> {
        let parked = self.lock().take();
        match parked {
            Some(conn) => Ok(conn),
            None => Ok(pool.acquire().await?.detach()),
        }
    }

    /// Puts the connection back for the next turn.
    pub(super) fn park(&self, conn: AnyConnection) {
        *self.lock() = Some(conn);
    }

    /// Closes the parked connection. The caller holds the turn (see `Store::close`), so no
    /// write has it out.
    pub(super) async fn close(&self) {
        let parked = self.lock().take();
        if let Some(conn) = parked {
            let _ = conn.close().await;
        }
    }

    /// The mode the last turn left the connection in, if it finished cleanly.
    pub(super) fn mode(&self) -> &LastMode {
        &self.mode
    }

    fn lock(&self) -> MutexGuard<'_, Option<AnyConnection>> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `synchronous` mode SQLite's write connection was left in by the last write turn that
/// finished cleanly, or nothing. A turn that finds the connection already in its mode skips
/// setting it, and the health check that comes with it (see `sqlite_writer_ready` in
/// `writer.rs`): about half of all turns follow one of the same durability, and the pragma is
/// a round trip to the connection's thread while every other writer waits. A turn that does
/// not say it finished cleanly (`WriteConn::finished_cleanly`) leaves nothing known, so the
/// next one checks.
#[derive(Debug, Default)]
pub(super) struct LastMode(AtomicU8);

impl LastMode {
    /// Nothing is known: the next turn sets the mode and checks the connection.
    const UNKNOWN: u8 = 0;

    fn code(durability: Durability) -> u8 {
        match durability {
            Durability::Durable => 1,
            Durability::Relaxed => 2,
        }
    }

    pub(super) fn is(&self, durability: Durability) -> bool {
        self.0.load(Ordering::Acquire) == Self::code(durability)
    }

    pub(super) fn set(&self, durability: Durability) {
        self.0.store(Self::code(durability), Ordering::Release);
    }

    pub(super) fn forget(&self) {
        self.0.store(Self::UNKNOWN, Ordering::Release);
    }
}
