//! Why a store operation failed, sorted into what a caller can do about it: wait for the
//! database to come back ([`Error::Unavailable`]), free space ([`Error::Full`]), or report a bug.

use std::path::PathBuf;

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
    #[error(transparent)]
    WalAppends(#[from] super::wal_appends::RegisterError),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
