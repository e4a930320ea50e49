//! Opening a store: the pools of each database, the single-node lock on SQLite, migrations.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::Executor;
use sqlx::any::{AnyPoolOptions, install_default_drivers};

use super::gate::WriteGate;
use super::wal::checkpoint_loop;
use super::{Backend, Error, SQLITE_BUSY_TIMEOUT, Store, StoreOptions};

/// PostgreSQL intake writer tasks (see [`Store::intake_writers`]), each holding one caller
/// connection while it commits a batch.
const POSTGRES_INTAKE_WRITERS: u32 = 4;
/// PostgreSQL connections for writes callers wait on: intake's group-commit and express
/// writers (as many of each), and two for API writes.
const POSTGRES_CALLER_WRITERS: u32 = 2 * POSTGRES_INTAKE_WRITERS + 2;
/// PostgreSQL outcome writer tasks (see [`Store::outcome_writers`]), each holding one background
/// connection while it writes a batch.
const POSTGRES_OUTCOME_WRITERS: u32 = 2;
/// PostgreSQL connections for background writes: the outcome writers, plus one each for the
/// claimer, the sweep and retention (each holds at most one at a time).
const POSTGRES_BACKGROUND_WRITERS: u32 = POSTGRES_OUTCOME_WRITERS + 3;

impl Store {
    /// The runtime for the tasks that hold the database's write connection while they work:
    /// intake's writers, the outcome writers, the claimer and the checkpointer. On SQLite every
    /// other writer waits for the one holding the connection, and a holder waiting to be polled
    /// holds it all the same. On the runtime that runs the deliveries, those tasks queued behind
    /// thousands of HTTP sends: in a backlog's drain a unary Submit's p99 was 185–520 ms, with
    /// the holders on a runtime of their own 47–90 ms (BENCHMARKS.md, "Thirteenth pass"). The
    /// server gives them one ([`StoreOptions::writers_runtime`]).
    pub fn writers_runtime(&self) -> &tokio::runtime::Handle {
        &self.writers_runtime
    }

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
            store.writers_runtime.spawn(checkpoint_loop(Self {
                _lock: None,
                ..store.clone()
            }));
        }
        tracing::info!(backend = ?store.backend, "store ready");
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
        super::wal_appends::register()?;
        let write_url = write_connection_url(&url);
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
                        // Statement journals (a multi-row statement inside a transaction that may
                        // abort writes one) stay in memory: on disk they were a tenth of the
                        // writer's time. Intake's INSERT avoids them altogether (`OR FAIL`).
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
                .connect(if autocheckpoint { &url } else { &write_url })
        };
        let write = pool(1, false).await?;
        let read = pool(options.max_connections.max(1), true).await?;
        Ok(Self {
            backend: Backend::Sqlite,
            caller_writes: write.clone(),
            background_writes: write,
            read,
            gate: Some(Arc::new(WriteGate::default())),
            last_mode: Arc::default(),
            _lock: Some(Arc::new(lock)),
            probe_node: probe_node(),
            sealer: options.sealer.clone(),
            writers_runtime: writers_runtime(options),
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
            last_mode: Arc::default(),
            _lock: None,
            probe_node: probe_node(),
            sealer: options.sealer.clone(),
            writers_runtime: writers_runtime(options),
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

    /// Whether this store serves one node only. A SQLite file is locked by this process (see
    /// `lock_sqlite_file`), so no other node can hold its claims, leases or buckets; a
    /// PostgreSQL database may be shared by many nodes, which then take part in a cluster.
    pub fn is_single_node(&self) -> bool {
        self.backend == Backend::Sqlite
    }

    /// How many group-commit writer tasks make good use of this store's caller writes (intake
    /// starts as many express writers beside them, for small calls). SQLite commits one
    /// transaction at a time, but a second writer gathers the next batch and reads its opt-outs
    /// while the first commits, so the two steps overlap; PostgreSQL commits
    /// `POSTGRES_INTAKE_WRITERS` at once.
    pub fn intake_writers(&self) -> usize {
        match self.backend {
            Backend::Sqlite => 2,
            Backend::Postgres => POSTGRES_INTAKE_WRITERS as usize,
        }
    }

    /// How many outcome batches may be written at once. On SQLite one: there is one write
    /// connection, and one larger batch costs less than two small ones. On PostgreSQL several:
    /// each outcome is an update that touches every index of its row (the state it changes is
    /// indexed), so a batch takes tens of milliseconds of the server's time, and a single writer
    /// held deliveries to what one backend could update (measured: 88 ms per ~750-row batch,
    /// deliveries capped near 7,500/s while intake ran ahead).
    pub fn outcome_writers(&self) -> usize {
        match self.backend {
            Backend::Sqlite => 1,
            Backend::Postgres => POSTGRES_OUTCOME_WRITERS as usize,
        }
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

/// [`StoreOptions::writers_runtime`], or the runtime connecting.
fn writers_runtime(options: &StoreOptions) -> tokio::runtime::Handle {
    options
        .writers_runtime
        .clone()
        .unwrap_or_else(tokio::runtime::Handle::current)
}

/// A random positive id for this process's `write_probe` row.
fn probe_node() -> i64 {
    (rand::random::<u64>() >> 1) as i64
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

/// The write connection's URL (`url` already has a query, see [`with_create_mode`]): through
/// the VFS that gathers its WAL appends (see `wal_appends`), unless the URL names a VFS of its
/// own. Then every connection uses that one: connections of one database must agree on how
/// they lock it, and `wal_appends` only knows the default VFS's way.
fn write_connection_url(url: &str) -> String {
    if url.contains("vfs=") {
        url.to_owned()
    } else {
        format!("{url}&vfs={}", super::wal_appends::NAME)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_map_to_paths() {
        assert_eq!(
            sqlite_path("sqlite://data/f.db?mode=rwc"),
            Some(PathBuf::from("data/f.db"))
        );
        assert_eq!(sqlite_path("sqlite:f.db"), Some(PathBuf::from("f.db")));
        assert_eq!(sqlite_path("postgres://localhost/test"), None);
        assert_eq!(with_create_mode("sqlite://f.db"), "sqlite://f.db?mode=rwc");
    }

    #[test]
    fn the_write_connection_gathers_wal_appends_unless_the_url_names_a_vfs() {
        assert_eq!(
            write_connection_url("sqlite://f.db?mode=rwc"),
            "sqlite://f.db?mode=rwc&vfs=floodgate-wal"
        );
        assert_eq!(
            write_connection_url("sqlite://f.db?vfs=unix-excl&mode=rwc"),
            "sqlite://f.db?vfs=unix-excl&mode=rwc"
        );
        assert_eq!(
            with_create_mode("sqlite://f.db?mode=ro"),
            "sqlite://f.db?mode=ro"
        );
    }
}
