//! Files only floodgate's own user may read: the data directory (0700), the SQLite database with
//! its `-wal` and `-shm` files, the admin token and the secrets key (0600). They hold signing secrets, provider
//! keys and tokens, so the process umask (often 022, world-readable) must not decide.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Owner-only directory mode.
pub const DIR_MODE: u32 = 0o700;
/// Owner-only file mode.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) owner-only. A directory that already exists keeps its mode:
/// it may be shared with other things (see [`tighten_dir`] for the data directory).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Creates `dir` if missing and makes it owner-only: for floodgate's own data directory.
pub fn tighten_dir(dir: &Path) -> io::Result<()> {
    create_dir(dir)?;
    std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
}

/// Makes an existing file owner-only; a missing one is fine.
pub fn tighten_file(path: &Path) -> io::Result<()> {
    match std::fs::set_permissions(path, Permissions::from_mode(FILE_MODE)) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Opens `path` for writing (created owner-only, truncated) and makes it owner-only even if it
/// already existed with a looser mode.
pub fn create_file(path: &Path) -> io::Result<std::fs::File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// What [`read_or_create`] found in a file.
#[derive(Debug)]
pub struct Saved {
    /// The file's content, trimmed.
    pub content: String,
    /// True when the file was missing (or empty) and has just been written.
    pub created: bool,
}

/// The content of the file at `path`, made owner-only; or, when it is missing or empty, `make()`
/// written there owner-only (its directory created owner-only too). Generated tokens and keys
/// are kept this way, so a first start locks itself and later starts find the same value.
pub fn read_or_create(path: &Path, make: impl FnOnce() -> String) -> io::Result<Saved> {
    match std::fs::read_to_string(path) {
        Ok(content) if !content.trim().is_empty() => {
            tighten_file(path)?;
            return Ok(Saved {
                content: content.trim().to_owned(),
                created: false,
            });
        }
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_dir(dir)?;
    }
    let content = make();
    let mut file = create_file(path)?;
    writeln!(file, "{content}")?;
    Ok(Saved {
        content,
        created: true,
    })
}

/// Prepares a SQLite database at `db` before it is opened: the file is created owner-only when
/// missing (SQLite gives its `-wal` and `-shm` files the database file's mode), and the database
/// and its companions from an older start are made owner-only.
pub fn prepare_sqlite(db: &Path) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(db)?;
    for path in sqlite_files(db) {
        tighten_file(&path)?;
    }
    Ok(())
}

/// The database file and the companions SQLite keeps beside it.
pub fn sqlite_files(db: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [db.to_owned(), with("-wal"), with("-shm")]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_and_directories_become_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, Permissions::from_mode(0o755)).unwrap();
        tighten_dir(&data).unwrap();
        assert_eq!(mode(&data), DIR_MODE);

        let db = data.join("floodgate.db");
        let wal = data.join("floodgate.db-wal");
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, Permissions::from_mode(0o644)).unwrap();
        prepare_sqlite(&db).unwrap();
        assert_eq!(mode(&db), FILE_MODE);
        assert_eq!(mode(&wal), FILE_MODE);

        let token = data.join("admin-token");
        std::fs::write(&token, b"old").unwrap();
        std::fs::set_permissions(&token, Permissions::from_mode(0o644)).unwrap();
        create_file(&token).unwrap();
        assert_eq!(mode(&token), FILE_MODE);

        let nested = tmp.path().join("a/b");
        create_dir(&nested).unwrap();
        assert_eq!(mode(&nested), DIR_MODE);
    }
}
