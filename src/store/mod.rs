//! The durable store: every notification and every state change is a row here (the first promise in docs/architecture.md).
//!
//! One `Store` speaks to either SQLite (the zero-config default, one node) or PostgreSQL (many nodes)
//! through sqlx's `Any` driver with portable SQL: `$N` placeholders, every id and timestamp a
//! `BIGINT`. Dialect-specific DDL lives only in `migrations/{sqlite,postgres}`; the one runtime
//! difference (row locking on claims) is chosen by [`Backend`].
//!
//! Writes come in two classes: those a caller waits on (intake's group commit, API writes) and
//! background ones (claims, outcomes, lease recovery, retention). Callers must never wait behind
//! deliveries:
//! - SQLite allows one writer at a time, so all writes share one connection, and the
//!   [`gate`] gives callers the next turn (they wait behind at most one background transaction).
//!   SQLite's automatic WAL checkpoint would run inside whichever commit crosses the threshold,
//!   stalling that caller for tens of milliseconds; it is off, and a background task checkpoints
//!   from a read connection instead, beside the writer rather than in front of it.
//! - PostgreSQL gives each class its own pool, so a burst of claims never holds the connections
//!   intake needs; background writes commit without waiting for the WAL flush.
//!
//! Reads use a separate pool and never block writes (WAL mode on SQLite).

mod checkpoints;
mod claims;
mod cluster;
mod customers;
mod gate;
mod id_key;
mod notifications;
mod preferences;
mod probe;
mod retention;
mod templates;
mod tokens;

use std::fs::File;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor};

use gate::{Priority, Turn, WriteGate};

pub use checkpoints::CheckpointRow;
pub use claims::ClaimRequest;
pub use cluster::{HeldBucket, LeaseRow, NodeRow, Takeover};
pub use notifications::{Claimed, Inserted, Outcome, OutcomeKind};

/// Why a store operation failed. `Unavailable` means "try again later" and is what callers see
/// when the database cannot be reached; nothing is acknowledged that was not stored.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The disk (or the database's quota) is full; writes resume once space is freed.
    #[error("database storage is full: {0}")]
    Full(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Sealed(#[from] crate::secrets_at_rest::SealError),
    #[error("unsupported database URL {0:?}: it must start with sqlite:// or postgres://")]
    UnsupportedUrl(String),
    #[error("cannot create the SQLite directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the SQLite database {path} owner-only: {source}")]
    Permissions {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is locked: another floodgate process is using this SQLite database (one node per SQLite file; use PostgreSQL for many)"
    )]
    Locked { path: PathBuf },
}

impl From<crate::failpoints::Injected> for Error {
    /// An injected fault looks like the database going away, the fault it stands for.
    fn from(err: crate::failpoints::Injected) -> Self {
        Error::Unavailable(sqlx::Error::Io(std::io::Error::other(err.to_string())))
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err
            && db
                .code()
                .is_some_and(|code| is_full_code(&code, is_sqlite(db.as_ref())))
        {
            return Error::Full(err);
        }
        let unreachable = match &err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            // The conversation on the wire broke, not the query: e.g. a link cut while a new
            // connection asks for TLS (`sslmode=prefer`, the default) reads as "unexpected
            // response from SSLRequest". A new connection may well succeed.
            sqlx::Error::Protocol(_) => true,
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|code| is_unavailable_code(&code, is_sqlite(db.as_ref()))),
            _ => false,
        };
        if unreachable {
            Error::Unavailable(err)
        } else {
            Error::Database(err)
        }
    }
}

/// Database error codes that mean "cannot serve you now", not "your query is wrong":
/// PostgreSQL connection exceptions (08…), insufficient resources (53…, e.g. too many
/// connections), operator intervention (57P01–57P03: shutdown, cannot connect now), and SQLite's
/// BUSY/LOCKED (5, 6) once the busy timeout has run out, and its I/O errors (10, with any
/// extended code: the low byte is the primary code).
fn is_unavailable_code(code: &str, sqlite: bool) -> bool {
    if sqlite {
        return matches!(sqlite_primary_code(code), Some(5 | 6 | 10));
    }
    code.starts_with("08") || code.starts_with("53") || matches!(code, "57P01" | "57P02" | "57P03")
}

/// Codes that mean the storage is full: PostgreSQL's disk_full (53100) and SQLite's FULL (13).
fn is_full_code(code: &str, sqlite: bool) -> bool {
    match sqlite {
        true => sqlite_primary_code(code) == Some(13),
        false => code == "53100",
    }
}

/// SQLite's primary result code out of a numeric (possibly extended) code.
fn sqlite_primary_code(code: &str) -> Option<i64> {
    code.parse::<i64>().ok().map(|code| code & 0xff)
}

/// Whether a database error came from SQLite (the `Any` driver passes the native error on).
fn is_sqlite(err: &dyn sqlx::error::DatabaseError) -> bool {
    err.try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .is_some()
}

/// How durable a write must be before its commit returns (see [`Store::writer`]), which also
/// says who is waiting for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
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

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
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
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            sealer: None,
        }
    }
}

/// PostgreSQL connections for writes callers wait on: intake's writers (4) plus API writes.
const POSTGRES_CALLER_WRITERS: u32 = 6;
/// PostgreSQL connections for background writes: the claimer, the outcome writer, the sweep and
/// retention each hold at most one at a time.
const POSTGRES_BACKGROUND_WRITERS: u32 = 4;
/// How often the SQLite checkpointer copies the WAL back into the database file. Often enough
/// that little is left for the restart step, rarely enough to cost nothing when idle.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// WAL frames (pages) after which the checkpointer starts the WAL over (see [`checkpoint_loop`]):
/// 4,096 pages are 16 MiB at SQLite's default page size, a fraction of a second of writes at full
/// speed, so the restart's own copying stays a few milliseconds.
const WAL_RESTART_FRAMES: i64 = 4096;

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
    /// Held (and locked) for as long as any clone of the store lives: the SQLite single-node guard.
    _lock: Option<Arc<File>>,
    /// This process's row in `write_probe` (random: nodes need no configured identity).
    probe_node: i64,
    /// Seals customers' secrets (see [`StoreOptions::sealer`]).
    sealer: Option<Arc<crate::secrets_at_rest::Sealer>>,
}

/// A write connection, held for one transaction (and, on SQLite, the turn at the gate with it).
/// Dropping it hands both on.
pub(crate) struct WriteConn {
    conn: PoolConnection<Any>,
    /// Dropped after `conn` (fields drop in order): the next writer finds the connection back.
    _turn: Option<Turn>,
    /// For the slow-write warning: the class, how long it waited for its turn, when it got it.
    durability: Durability,
    waited: Duration,
    since: std::time::Instant,
}

/// A write that waited for, or held, the write connection this long is logged: every caller
/// behind it waited as long, so it is what an SRE looks for when Submit latency has a tail.
const SLOW_WRITE: Duration = Duration::from_millis(250);

/// Writes that waited for or held the connection this long are logged at debug level, to find
/// what makes up a latency tail.
const NOTABLE_WRITE: Duration = Duration::from_millis(10);

impl Drop for WriteConn {
    fn drop(&mut self) {
        let held = self.since.elapsed();
        let longest = held.max(self.waited);
        let (class, waited_ms, held_ms) = (
            self.durability.priority(),
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
    }
}

impl Deref for WriteConn {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl DerefMut for WriteConn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

impl Store {
    /// Connects, takes the single-node lock on SQLite, and runs the migrations.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, Error> {
        install_default_drivers();
        let store = if let Some(path) = sqlite_path(url) {
            Self::connect_sqlite(url, &path, options).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::connect_postgres(url, options).await?
        } else {
            return Err(Error::UnsupportedUrl(url.to_owned()));
        };
        store.migrate().await?;
        // Before anything reads a customer: plain-text secrets from before sealing, and those a
        // rotated key sealed, are sealed with the current key (and a key that opens nothing here
        // stops the start with a clear error rather than failing deliveries later).
        store.reseal_customers().await?;
        if store.backend == Backend::Sqlite {
            // Without the single-node lock: a closed store must free the file at once, not
            // when the checkpointer next wakes up.
            tokio::spawn(checkpoint_loop(Self {
                _lock: None,
                ..store.clone()
            }));
        }
        Ok(store)
    }

    async fn connect_sqlite(url: &str, path: &Path, options: &StoreOptions) -> Result<Self, Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::private_files::create_dir(dir).map_err(|source| Error::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let lock = lock_sqlite_file(path)?;
        // It holds secrets: owner-only, whatever the umask says.
        crate::private_files::prepare_sqlite(path).map_err(|source| Error::Permissions {
            path: path.to_owned(),
            source,
        })?;
        let url = with_create_mode(url);
        let pool = |max, autocheckpoint: bool| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(options.acquire_timeout)
                // A local file does not drop connections; the writer's pragma on every acquire
                // is its check (see `writer`).
                .test_before_acquire(false)
                .after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        // WAL: readers never block the writer. synchronous=FULL: a commit survives
                        // power loss, which is what "answers OK only after it is committed" means;
                        // group commit keeps the fsync cost per notification small.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute(SQLITE_BUSY_TIMEOUT).await?;
                        // Statement journals (every multi-row INSERT inside a transaction writes
                        // one) stay in memory: on disk they were a tenth of the writer's time.
                        conn.execute("PRAGMA temp_store = MEMORY").await?;
                        if !autocheckpoint {
                            // The write connection: the checkpointer does its checkpoints, off
                            // the commit path, and a 16 MiB page cache keeps the hot index pages
                            // of the notifications table resident (measured: ~12% less CPU per
                            // inserted row than the 2 MiB default).
                            conn.execute("PRAGMA wal_autocheckpoint = 0").await?;
                            conn.execute("PRAGMA cache_size = -16384").await?;
                        }
                        Ok(())
                    })
                })
                .connect(&url)
        };
        let write = pool(1, false).await?;
        let read = pool(options.max_connections.max(1), true).await?;
        Ok(Self {
            backend: Backend::Sqlite,
            caller_writes: write.clone(),
            background_writes: write,
            read,
            gate: Some(Arc::new(WriteGate::default())),
            _lock: Some(Arc::new(lock)),
            probe_node: probe_node(),
            sealer: options.sealer.clone(),
        })
    }

    async fn connect_postgres(url: &str, options: &StoreOptions) -> Result<Self, Error> {
        let pool = |max| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(options.acquire_timeout)
        };
        let caller_writes = pool(POSTGRES_CALLER_WRITERS).connect(url).await?;
        let background_writes = pool(POSTGRES_BACKGROUND_WRITERS)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    // A lost claim or outcome only means a redelivery (at least once), so these
                    // commits need not wait for the WAL to reach the disk.
                    conn.execute("SET synchronous_commit = off").await?;
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        let read = pool(options.max_connections.max(2)).connect(url).await?;
        Ok(Self {
            backend: Backend::Postgres,
            caller_writes,
            background_writes,
            read,
            gate: None,
            _lock: None,
            probe_node: probe_node(),
            sealer: options.sealer.clone(),
        })
    }

    async fn migrate(&self) -> Result<(), Error> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::migrate!("./migrations/sqlite")
                    .run(&self.caller_writes)
                    .await?
            }
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.caller_writes)
                    .await?
            }
        }
        Ok(())
    }

    /// A write connection for one transaction, in the class `durability` says (see the module
    /// docs), with SQLite's fsync policy set for what the write promises.
    ///
    /// Accepting a notification is promised durable, so intake commits with
    /// `synchronous = FULL`. Claims and outcomes are not: losing one to a power cut only means a
    /// redelivery (at least once). They commit with `NORMAL`, which in WAL mode is still atomic
    /// and ordered, and the next FULL commit syncs them too. This keeps hundreds of claim and
    /// outcome transactions a second from each paying an fsync on the one write connection.
    async fn writer(&self, durability: Durability) -> Result<WriteConn, Error> {
        let asked = std::time::Instant::now();
        let turn = match &self.gate {
            Some(gate) => Some(gate.turn(durability.priority()).await),
            None => None,
        };
        let pool = match durability {
            Durability::Durable => &self.caller_writes,
            Durability::Relaxed => &self.background_writes,
        };
        let mut conn = pool.acquire().await?;
        if self.backend == Backend::Sqlite {
            conn = sqlite_writer_ready(pool, conn, durability).await?;
        }
        Ok(WriteConn {
            conn,
            _turn: turn,
            durability,
            waited: asked.elapsed(),
            since: std::time::Instant::now(),
        })
    }

    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    /// Waits for queries in progress and closes every connection.
    pub async fn close(&self) {
        self.caller_writes.close().await;
        self.background_writes.close().await;
        self.read.close().await;
    }
}

/// A random positive id for this process's `write_probe` row.
fn probe_node() -> i64 {
    (rand::random::<u64>() >> 1) as i64
}

/// Sets the write connection's `synchronous` mode for this write. This doubles as its health
/// check: after a failed commit (a full disk, an I/O error) SQLite can leave the connection
/// inside the failed transaction, where the pragma is refused. Then the transaction is rolled
/// back; if even that fails, the connection is dropped for a fresh one — so writes resume by
/// themselves once the cause is gone, without a restart.
async fn sqlite_writer_ready(
    pool: &AnyPool,
    mut conn: PoolConnection<Any>,
    durability: Durability,
) -> Result<PoolConnection<Any>, Error> {
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

/// Checkpoints SQLite's WAL every [`CHECKPOINT_INTERVAL`], until the store is closed, in two
/// steps:
///
/// 1. A PASSIVE checkpoint on a read connection copies what the WAL holds into the database
///    file. It never waits for (or blocks) the writer, so the copying is off the commit path.
/// 2. Under steady writes a passive checkpoint never quite finishes (commits append frames while
///    it copies), and SQLite only starts the WAL over from the beginning after a complete one: the
///    file grew by gigabytes, and every commit's fsync got slower with it. So once the WAL holds
///    [`WAL_RESTART_FRAMES`], a RESTART checkpoint runs in a background turn at the write
///    connection, where no commit can interleave. It copies only the frames step 1 had not, and
///    the next commit writes the WAL from its start again.
async fn checkpoint_loop(store: Store) {
    let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if store.read.is_closed() {
            return;
        }
        if let Err(err) = checkpoint(&store).await {
            if store.read.is_closed() {
                return;
            }
            tracing::warn!(error = %err, "WAL checkpoint failed; retrying");
        }
    }
}

/// One round of [`checkpoint_loop`].
async fn checkpoint(store: &Store) -> Result<(), Error> {
    // (busy, frames in the WAL, frames copied into the database)
    let (_, frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&store.read)
        .await?;
    if frames >= WAL_RESTART_FRAMES {
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

/// The file path of a SQLite URL (`sqlite://path`, `sqlite:path`), or `None` for other databases.
/// In-memory databases have no path and are not supported: floodgate's promise is durability.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    Some(PathBuf::from(path))
}

/// Adds `mode=rwc` (create the file if missing) unless the URL chose a mode itself.
fn with_create_mode(url: &str) -> String {
    if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// Takes an exclusive lock beside the database file so two processes never share one SQLite
/// database: with the lock held, every claim left `in_flight` at start-up is provably stale.
fn lock_sqlite_file(db: &Path) -> Result<File, Error> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    let file = File::create(&path).map_err(|_| Error::Locked { path: path.clone() })?;
    file.try_lock().map_err(|_| Error::Locked { path })?;
    Ok(file)
}

/// Splits `n` rows into statements of at most `max` rows, each a power of two: the few
/// statement shapes the databases then prepare once and reuse, however batch sizes vary.
fn chunk_sizes(n: usize, max: usize) -> Vec<usize> {
    let max = max.next_power_of_two();
    let mut sizes = vec![max; n / max];
    let rest = n % max;
    sizes.extend(
        (0..usize::BITS)
            .rev()
            .map(|bit| 1 << bit)
            .filter(|size| rest & size != 0),
    );
    sizes
}

/// Builds `(.., ..), (.., ..)` for `rows` rows of `columns` values: the whole parameter list of
/// a multi-row statement (sqlx's `Any` driver has no portable placeholder helper).
///
/// PostgreSQL gets numbered `$N`. SQLite gets anonymous `?`: sqlx-sqlite looks every numbered
/// parameter up by name, linearly, which made a 500-row insert quadratic (71% of CPU in
/// `sqlite3_bind_parameter_name`); anonymous ones bind in order.
fn values_placeholders(backend: Backend, rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for col in 0..columns {
            if col > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Postgres => {
                    sql.push('$');
                    sql.push_str(&(1 + row * columns + col).to_string());
                }
                Backend::Sqlite => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_into_power_of_two_chunks() {
        assert_eq!(chunk_sizes(0, 256), Vec::<usize>::new());
        assert_eq!(chunk_sizes(1, 256), [1]);
        assert_eq!(chunk_sizes(7, 256), [4, 2, 1]);
        assert_eq!(chunk_sizes(600, 256), [256, 256, 64, 16, 8]);
        for n in 0..2000 {
            let sizes = chunk_sizes(n, 256);
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert!(sizes.iter().all(|s| s.is_power_of_two() && *s <= 256));
        }
    }

    #[test]
    fn placeholders_number_rows_in_order() {
        assert_eq!(
            values_placeholders(Backend::Postgres, 2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(values_placeholders(Backend::Sqlite, 2, 2), "(?, ?), (?, ?)");
    }

    #[test]
    fn outage_codes_are_unavailable() {
        for code in ["08006", "53300", "57P01"] {
            assert!(is_unavailable_code(code, false), "{code}");
        }
        for code in ["5", "6", "10", "778"] {
            assert!(is_unavailable_code(code, true), "{code}");
        }
        for code in ["23505", "42P01", "1", "10"] {
            assert!(!is_unavailable_code(code, false), "{code}");
        }
        assert!(!is_unavailable_code("1", true));
        assert!(is_full_code("13", true) && is_full_code("53100", false));
        assert!(!is_full_code("13", false) && !is_full_code("53100", true));
    }

    #[test]
    fn a_broken_wire_conversation_is_unavailable() {
        let broken = sqlx::Error::Protocol("unexpected response from SSLRequest: 0x00".into());
        assert!(matches!(Error::from(broken), Error::Unavailable(_)));
        assert!(matches!(
            Error::from(sqlx::Error::RowNotFound),
            Error::Database(_)
        ));
    }

    #[test]
    fn sqlite_urls_map_to_paths() {
        assert_eq!(
            sqlite_path("sqlite://data/f.db?mode=rwc"),
            Some(PathBuf::from("data/f.db"))
        );
        assert_eq!(sqlite_path("sqlite:f.db"), Some(PathBuf::from("f.db")));
        assert_eq!(sqlite_path("postgres://localhost/test"), None);
        assert_eq!(with_create_mode("sqlite://f.db"), "sqlite://f.db?mode=rwc");
        assert_eq!(
            with_create_mode("sqlite://f.db?mode=ro"),
            "sqlite://f.db?mode=ro"
        );
    }
}
