//! The durable store: every notification and every state change is a row here (the first promise in docs/architecture.md).
//!
//! One `Store` speaks to either SQLite (the zero-config default, one node) or PostgreSQL (many nodes)
//! through sqlx's `Any` driver with portable SQL: `$N` placeholders, every id and timestamp a
//! `BIGINT`. Dialect-specific DDL lives only in `migrations/{sqlite,postgres}`; the one runtime
//! difference (row locking on claims) is chosen by the store's backend, which it keeps to itself:
//! callers ask what they mean, such as [`Store::is_single_node`].
//!
//! Writes come in two classes: those a caller waits on (intake's group commit, API writes) and
//! background ones (claims, outcomes, lease recovery, retention). Callers must never wait behind
//! deliveries:
//! - SQLite allows one writer at a time, so all writes share one connection, and the
//!   `gate` gives callers the next turn (they wait behind at most one background transaction).
//!   SQLite's automatic WAL checkpoint would run inside whichever commit crosses the threshold,
//!   stalling that caller for tens of milliseconds; it is off, and a background task checkpoints
//!   from a read connection instead, beside the writer rather than in front of it.
//! - PostgreSQL gives each class its own pool, so a burst of claims never holds the connections
//!   intake needs; background writes commit without waiting for the WAL flush.
//!
//! Reads use a separate pool and never block writes (WAL mode on SQLite).

mod checkpoints;
mod claimed_row;
mod claims;
mod cluster;
mod connect;
mod customers;
mod error;
mod gate;
mod id_key;
mod insert;
mod last_mode;
mod notifications;
mod preferences;
mod probe;
mod retention;
mod sql;
mod states;
mod templates;
#[cfg(test)]
mod test_support;
mod tokens;
mod wal;
mod wal_appends;
mod writer;

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyPool;

use gate::WriteGate;
use sql::{chunk_sizes, values_placeholders};
use writer::Durability;

pub use checkpoints::CheckpointRow;
pub use claims::ClaimRequest;
pub use cluster::{HeldBucket, LeaseRow, NodeRow, Takeover};
pub use error::Error;
pub use insert::Commit;

/// Which database is behind the store. Private: callers ask what they mean instead
/// ([`Store::is_single_node`], [`Store::intake_writers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// One node; the file is locked for the life of the process.
    Sqlite,
    /// Many nodes share the database; claims use `FOR UPDATE SKIP LOCKED`.
    Postgres,
}

/// Connection settings that are not part of the URL.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections in the read pool.
    pub max_connections: u32,
    /// How long a query waits for a connection before the store reports `Unavailable`.
    pub acquire_timeout: Duration,
    /// Seals customers' secrets before they are written (the server always has one). Without
    /// one (tests, tools) they are written in plain text, and a sealed one cannot be read.
    pub sealer: Option<Arc<crate::secrets_at_rest::Sealer>>,
    /// Where the tasks that hold the database's write connection run: intake's writers, the
    /// outcome writers, the claimer and the checkpointer (see [`Store::writers_runtime`]). `None`
    /// (tests, tools): the runtime that calls [`Store::connect`].
    pub writers_runtime: Option<tokio::runtime::Handle>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            sealer: None,
            writers_runtime: None,
        }
    }
}

/// How long a SQLite connection waits for a lock before answering busy.
const SQLITE_BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 5000";

/// Handle to the database; cheap to clone (pools are reference-counted).
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    /// Writes a caller waits on. SQLite: the one write connection (shared with `background`,
    /// taken in turns at the gate). PostgreSQL: a pool of their own.
    caller_writes: AnyPool,
    /// Claims, outcomes, recovery and retention.
    background_writes: AnyPool,
    /// Pool for reads.
    read: AnyPool,
    /// SQLite only: whose turn it is at the one write connection.
    gate: Option<Arc<WriteGate>>,
    /// SQLite only: the mode the write connection was left in (see [`last_mode::LastMode`]).
    last_mode: Arc<last_mode::LastMode>,
    /// Held (and locked) for as long as any clone of the store lives: the SQLite single-node guard.
    _lock: Option<Arc<File>>,
    /// This process's row in `write_probe` (random: nodes need no configured identity).
    probe_node: i64,
    /// Seals customers' secrets (see [`StoreOptions::sealer`]).
    sealer: Option<Arc<crate::secrets_at_rest::Sealer>>,
    /// See [`Store::writers_runtime`].
    writers_runtime: tokio::runtime::Handle,
}
