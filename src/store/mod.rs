//! The durable store: every notification and every state change is a row here (DESIGN.md promise 1).
//!
//! One `Store` speaks to either SQLite (the zero-config default, one node) or PostgreSQL (many nodes)
//! through sqlx's `Any` driver with portable SQL: `$N` placeholders, every id and timestamp a
//! `BIGINT`. Dialect-specific DDL lives only in `migrations/{sqlite,postgres}`; the one runtime
//! difference (row locking on claims) is chosen by [`Backend`].
//!
//! SQLite allows one writer at a time, so for SQLite all writes go through a pool of exactly one
//! connection: writers queue in sqlx's fair pool instead of sleeping in SQLite's busy handler.
//! Reads use a separate pool and never block writes (WAL mode).

mod customers;
mod notifications;
mod preferences;
mod retention;
mod templates;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Executor};

pub use notifications::{Claimed, Inserted, Outcome, OutcomeKind};

/// Why a store operation failed. `Unavailable` means "try again later" and is what callers see
/// when the database cannot be reached; nothing is acknowledged that was not stored.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported database URL {0:?}: it must start with sqlite:// or postgres://")]
    UnsupportedUrl(String),
    #[error("cannot create the SQLite directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is locked: another floodgate process is using this SQLite database (one node per SQLite file; use PostgreSQL for many)"
    )]
    Locked { path: PathBuf },
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        let unreachable = match &err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| is_unavailable_code(&code)),
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
/// BUSY/LOCKED (5, 6) once the busy timeout has run out.
fn is_unavailable_code(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "57P01" | "57P02" | "57P03" | "5" | "6")
}

/// How durable a write must be before its commit returns (see [`Store::writer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Survives power loss: anything a caller was told is stored.
    Durable,
    /// Survives a process crash; a power cut may undo it, which only causes a redelivery.
    Relaxed,
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
    /// Connections in the read pool (and, on PostgreSQL, the only pool).
    pub max_connections: u32,
    /// How long a query waits for a connection before the store reports `Unavailable`.
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Handle to the database; cheap to clone (pools are reference-counted).
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    /// Pool for writes: a single connection on SQLite, the shared pool on PostgreSQL.
    write: AnyPool,
    /// Pool for reads.
    read: AnyPool,
    /// Held (and locked) for as long as any clone of the store lives: the SQLite single-node guard.
    _lock: Option<std::sync::Arc<File>>,
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
        Ok(store)
    }

    async fn connect_sqlite(url: &str, path: &Path, options: &StoreOptions) -> Result<Self, Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let lock = lock_sqlite_file(path)?;
        let url = with_create_mode(url);
        let pool = |max| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(options.acquire_timeout)
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        // WAL: readers never block the writer. synchronous=FULL: a commit survives
                        // power loss, which is what "answers OK only after it is committed" means;
                        // group commit keeps the fsync cost per notification small.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        Ok(())
                    })
                })
                .connect(&url)
        };
        let write = pool(1).await?;
        let read = pool(options.max_connections.max(1)).await?;
        Ok(Self {
            backend: Backend::Sqlite,
            write,
            read,
            _lock: Some(std::sync::Arc::new(lock)),
        })
    }

    async fn connect_postgres(url: &str, options: &StoreOptions) -> Result<Self, Error> {
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(options.acquire_timeout)
            .connect(url)
            .await?;
        Ok(Self {
            backend: Backend::Postgres,
            write: pool.clone(),
            read: pool,
            _lock: None,
        })
    }

    async fn migrate(&self) -> Result<(), Error> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::migrate!("./migrations/sqlite")
                    .run(&self.write)
                    .await?
            }
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.write)
                    .await?
            }
        }
        Ok(())
    }

    /// The write connection, with SQLite's fsync policy set for what this write promises.
    ///
    /// Accepting a notification is promised durable, so intake commits with
    /// `synchronous = FULL`. Claims and outcomes are not: losing one to a power cut only means a
    /// redelivery (at least once). They commit with `NORMAL`, which in WAL mode is still atomic
    /// and ordered, and the next FULL commit syncs them too. This keeps hundreds of claim and
    /// outcome transactions a second from each paying an fsync on the one write connection.
    async fn writer(&self, durability: Durability) -> Result<PoolConnection<Any>, Error> {
        let mut conn = self.write.acquire().await?;
        if self.backend == Backend::Sqlite {
            let pragma = match durability {
                Durability::Durable => "PRAGMA synchronous = FULL",
                Durability::Relaxed => "PRAGMA synchronous = NORMAL",
            };
            conn.execute(pragma).await?;
        }
        Ok(conn)
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
        self.write.close().await;
        self.read.close().await;
    }
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
    fn placeholders_number_rows_in_order() {
        assert_eq!(
            values_placeholders(Backend::Postgres, 2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(values_placeholders(Backend::Sqlite, 2, 2), "(?, ?), (?, ?)");
    }

    #[test]
    fn outage_codes_are_unavailable() {
        for code in ["08006", "53300", "57P01", "5"] {
            assert!(is_unavailable_code(code), "{code}");
        }
        for code in ["23505", "42P01", "1"] {
            assert!(!is_unavailable_code(code), "{code}");
        }
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
