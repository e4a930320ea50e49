//! The write connection's VFS against SQLite's own readers and its own crash recovery: every
//! committed row must be visible to a connection on the default VFS, and must be in the files a
//! process leaves behind when it dies (the OS keeps the page cache, not this module's buffer).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Executor, Row};

use super::*;

/// A connection to `path`, through this module's VFS or the default one.
async fn connect(path: &Path, ours: bool, synchronous: SqliteSynchronous) -> SqliteConnection {
    register().unwrap();
    let mut options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .unwrap()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        // Nothing is copied back into the database file: every committed row stays in the WAL.
        .pragma("wal_autocheckpoint", "0");
    if ours {
        options = options.vfs(NAME);
    }
    SqliteConnection::connect_with(&options).await.unwrap()
}

/// A table with a random-keyed index, so rows dirty pages all over the file, as intake does.
async fn schema(conn: &mut SqliteConnection) {
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT NOT NULL, v BLOB NOT NULL)")
        .await
        .unwrap();
    conn.execute("CREATE INDEX t_k ON t (k)").await.unwrap();
}

/// A fresh database in `dir` with the schema, and its writer on this module's VFS with
/// `synchronous = NORMAL` (no sync at commit, so only the VFS's own flushes put a commit in the
/// file).
async fn new_writer(dir: &Path) -> (PathBuf, SqliteConnection) {
    let db = dir.join("db");
    let mut writer = connect(&db, true, SqliteSynchronous::Normal).await;
    schema(&mut writer).await;
    (db, writer)
}

/// Opens, on the default VFS, a copy of `db` as a killed process would leave it (see
/// [`crash_copy`]), made in a new directory `name` of `dir`.
async fn recover(db: &Path, dir: &Path, name: &str) -> SqliteConnection {
    let into = dir.join(name);
    std::fs::create_dir(&into).unwrap();
    connect(&crash_copy(db, &into), false, SqliteSynchronous::Normal).await
}

/// Inserts `rows` rows with ids from `first`, in one transaction.
async fn insert(conn: &mut SqliteConnection, first: i64, rows: i64) {
    let mut tx = conn.begin().await.unwrap();
    for id in first..first + rows {
        sqlx::query("INSERT INTO t (id, k, v) VALUES (?, ?, zeroblob(300))")
            .bind(id)
            .bind(format!(
                "{:016x}",
                (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

/// Whether `conn`'s WAL file has this module's methods (the VFS was really used).
async fn gathers_appends(conn: &mut SqliteConnection) -> bool {
    let mut handle = conn.lock_handle().await.unwrap();
    let mut wal: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: the handle is locked for this call; the file control writes one pointer.
    let code = unsafe {
        ffi::sqlite3_file_control(
            handle.as_raw_handle().as_ptr(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_JOURNAL_POINTER,
            (&raw mut wal).cast(),
        )
    };
    assert_eq!(code, ffi::SQLITE_OK);
    // SAFETY: SQLite returned its open WAL file (or null before the WAL was opened).
    !wal.is_null() && unsafe { std::ptr::eq((*wal).pMethods, &WAL_METHODS) }
}

/// Rows of `t` that meet `condition` (SQL).
async fn rows_where(conn: &mut SqliteConnection, condition: &str) -> i64 {
    sqlx::query(&format!("SELECT count(*) FROM t WHERE {condition}"))
        .fetch_one(conn)
        .await
        .unwrap()
        .get(0)
}

/// Copies the database and its WAL as they are on disk now, without the shared-memory index,
/// so opening the copy runs SQLite's recovery: it reads the WAL frame by frame and keeps
/// transactions only up to the last whole commit whose checksums hold.
fn crash_copy(db: &Path, into: &Path) -> PathBuf {
    let copy = into.join("copy.db");
    std::fs::copy(db, &copy).unwrap();
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::copy(&wal, into.join("copy.db-wal")).unwrap();
    copy
}

async fn integrity(conn: &mut SqliteConnection) -> String {
    sqlx::query("PRAGMA integrity_check")
        .fetch_one(conn)
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn every_commit_is_visible_to_readers_on_the_default_vfs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    for synchronous in [SqliteSynchronous::Normal, SqliteSynchronous::Full] {
        let _ = std::fs::remove_file(&db);
        let mut writer = connect(&db, true, synchronous).await;
        schema(&mut writer).await;
        let mut reader = connect(&db, false, synchronous).await;
        assert!(gathers_appends(&mut writer).await);
        assert!(!gathers_appends(&mut reader).await);
        let mut total = 0;
        // One row, a group commit's size, and more than the buffer holds in one commit.
        for rows in [1, 100, 1, 3_000, 7] {
            insert(&mut writer, total, rows).await;
            total += rows;
            assert_eq!(
                rows_where(&mut reader, "true").await,
                total,
                "{synchronous:?}"
            );
        }
        assert_eq!(integrity(&mut reader).await, "ok");
        writer.close().await.unwrap();
        reader.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_crash_after_a_commit_keeps_every_committed_row() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut writer) = new_writer(dir.path()).await;
    let mut total = 0;
    for (round, rows) in [1, 250, 2, 4_000].into_iter().enumerate() {
        insert(&mut writer, total, rows).await;
        total += rows;
        // The writer stays open: the copy is what a killed process leaves on disk.
        let mut recovered = recover(&db, dir.path(), &format!("crash-{round}")).await;
        assert_eq!(
            rows_where(&mut recovered, "true").await,
            total,
            "after round {round}"
        );
        assert_eq!(integrity(&mut recovered).await, "ok");
        recovered.close().await.unwrap();
    }
}

#[tokio::test]
async fn pages_rewritten_inside_a_spilling_transaction_reach_the_file() {
    // A 20-page cache makes a large transaction spill frames to the WAL before its commit and
    // then write some of the same pages again (rewritten in place, their checksums redone at
    // the commit): the paths that are not plain appends.
    let dir = tempfile::tempdir().unwrap();
    let (db, mut writer) = new_writer(dir.path()).await;
    writer.execute("PRAGMA cache_size = 20").await.unwrap();
    insert(&mut writer, 0, 5_000).await;
    let mut tx = writer.begin().await.unwrap();
    tx.execute("UPDATE t SET v = zeroblob(310) WHERE id % 3 = 0")
        .await
        .unwrap();
    tx.execute("UPDATE t SET k = k || 'x' WHERE id % 5 = 0")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut reader = connect(&db, false, SqliteSynchronous::Normal).await;
    assert_eq!(rows_where(&mut reader, "length(v) = 310").await, 1_667);
    assert_eq!(integrity(&mut reader).await, "ok");
    let mut recovered = recover(&db, dir.path(), "crash").await;
    assert_eq!(rows_where(&mut recovered, "true").await, 5_000);
    assert_eq!(rows_where(&mut recovered, "k LIKE '%x'").await, 1_000);
    assert_eq!(integrity(&mut recovered).await, "ok");
}

#[tokio::test]
async fn an_uncommitted_transaction_is_not_in_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut writer) = new_writer(dir.path()).await;
    insert(&mut writer, 0, 10).await;
    let mut tx = writer.begin().await.unwrap();
    sqlx::query("INSERT INTO t (id, k, v) VALUES (100, 'open', zeroblob(10))")
        .execute(&mut *tx)
        .await
        .unwrap();
    let mut recovered = recover(&db, dir.path(), "crash").await;
    assert_eq!(rows_where(&mut recovered, "true").await, 10);
    tx.rollback().await.unwrap();
    insert(&mut writer, 10, 5).await;
    let mut reader = connect(&db, false, SqliteSynchronous::Normal).await;
    assert_eq!(rows_where(&mut reader, "true").await, 15);
}
