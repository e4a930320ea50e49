//! The `synchronous` mode SQLite's one write connection was left in by the last write turn
//! (see [`LastMode`]).

use std::sync::atomic::{AtomicU8, Ordering};

use super::writer::Durability;

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
