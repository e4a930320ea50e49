//! SQLite's WAL appends gathered into a few large writes per commit, for the write connection.
//!
//! SQLite appends each page of a commit to the WAL with two `pwrite` calls, a 24-byte frame
//! header and the page, and each call goes through the kernel's write path for every page
//! cache page it touches (a 4,096-byte page straddles two, since frames are 4,120 bytes). With
//! 1,000 customer systems a notification dirties two or three index pages, so that was five to
//! six system calls and about ten page-cache operations per notification on the write
//! connection, a tenth of the whole process's CPU.
//!
//! This module registers a VFS, [`NAME`], that the write connection opens its database with.
//! It is SQLite's default VFS with one difference: appends to a `-wal` file are collected in a
//! 64 KiB buffer and written when it is full or the commit is complete. Every other file, and
//! every other operation, is the default VFS's own.
//!
//! # Why nothing is lost
//!
//! A WAL frame counts only once the shared WAL index says so, and SQLite writes the index
//! after the frames of a commit. Before that, nobody can tell whether the frames are in the
//! file, in this buffer, or were never written: a crash in between is an uncommitted
//! transaction, the same as without the buffer. So the buffer must reach the file before
//! anything could look at it:
//!
//! - **before the commit is published**: SQLite writes the commit frame last, and its header
//!   carries the database size (nonzero only in a commit frame). When that header arrives
//!   everything before it is written out; its page, which comes next, is written out right
//!   after it. Only then does SQLite update the index. Checksums rewritten after a commit
//!   (`walRewriteChecksums`) are headers too, each read back (and so written out) before the
//!   next, the last being the commit frame's;
//! - **before any read** of the buffered range, and before `xSync`, `xTruncate`, `xFileSize`,
//!   `xFileControl`, `xFetch` and `xClose`: the same connection reading its own frames back,
//!   or making them durable (`synchronous = FULL`), finds them in the file;
//! - **before a write that is not an append** (a page rewritten in place during a large
//!   transaction, a WAL restart at offset 0): the file then takes writes in SQLite's order.
//!
//! A failed write is reported by the call that made it (the flush's caller), as the default
//! VFS would report its own; SQLite then rolls the transaction back.
//!
//! Besides the file format, this relies on one habit of SQLite's WAL writer (`walWriteOneFrame`
//! in SQLite 3.46): a frame header is written by a call of its own, before its page. The tests
//! fail if that ever changes (a commit would stay buffered past its publication).
//!
//! Readers, the checkpointer and other processes open the database with the default VFS:
//! they only read frames the index has published, which are always in the file.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_int, c_void};
use std::sync::OnceLock;

use libsqlite3_sys as ffi;

/// The VFS's name, for the write connection's URL (`vfs=`).
pub(super) const NAME: &str = "floodgate-wal";
const C_NAME: &CStr = c"floodgate-wal";

/// A WAL frame header's size: page number, then the database size after a commit (nonzero
/// only in a commit's last frame), then salts and checksums.
const FRAME_HEADER: usize = 24;

/// The buffer's size, allocated once per WAL file: a full buffer is written out even in the
/// middle of a commit. The default VFS is built to write a page at a time (64 KiB at most) and
/// cuts a write over 128 KiB short, so this is also the most one write may hand it; a larger
/// buffer would not save a system call.
const BUFFER: usize = 64 << 10;

/// Registers the VFS once per process. Only the connections that name it use it.
pub(super) fn register() -> Result<(), RegisterError> {
    let registered = DEFAULT.get_or_init(|| {
        // SAFETY: `sqlite3_vfs_find` and `sqlite3_vfs_register` are thread-safe; the VFS built
        // here is leaked, so it outlives every connection that uses it.
        unsafe {
            let default = ffi::sqlite3_vfs_find(std::ptr::null());
            if default.is_null() {
                return Err(RegisterError(ffi::SQLITE_ERROR));
            }
            let mut vfs = *default;
            vfs.zName = C_NAME.as_ptr();
            vfs.pNext = std::ptr::null_mut();
            vfs.szOsFile = c_int::try_from(std::mem::size_of::<WalFile>())
                .ok()
                .and_then(|ours| ours.checked_add((*default).szOsFile))
                .ok_or(RegisterError(ffi::SQLITE_ERROR))?;
            vfs.xOpen = Some(open);
            let vfs = Box::leak(Box::new(vfs));
            match ffi::sqlite3_vfs_register(vfs, 0) {
                ffi::SQLITE_OK => Ok(VfsPtr(default)),
                code => Err(RegisterError(code)),
            }
        }
    });
    registered.as_ref().map(|_| ()).map_err(|refused| *refused)
}

/// SQLite refused to register the VFS (its result code).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("SQLite could not register the {NAME} VFS (result code {0})")]
pub struct RegisterError(c_int);

/// The default VFS, whose files this one opens, once [`register`] has registered this one.
static DEFAULT: OnceLock<Result<VfsPtr, RegisterError>> = OnceLock::new();

/// A pointer to a VFS that SQLite keeps for the life of the process.
struct VfsPtr(*mut ffi::sqlite3_vfs);
// SAFETY: SQLite's VFS objects are immutable once registered and meant to be shared by threads.
unsafe impl Send for VfsPtr {}
// SAFETY: as above.
unsafe impl Sync for VfsPtr {}

/// A `-wal` file: SQLite's `sqlite3_file` header and what this module keeps, followed in the
/// same allocation (this VFS's `szOsFile` is the sum of both) by the default VFS's file.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    /// The default VFS's file, right after this struct.
    inner: *mut ffi::sqlite3_file,
    /// Appends not yet written, boxed so SQLite's raw allocation only holds a pointer.
    pending: *mut Pending,
}

/// Bytes appended since the last write, starting at `offset` in the file.
struct Pending {
    offset: i64,
    bytes: Vec<u8>,
    /// The last append was a commit frame's header: its page comes next, then the commit is
    /// complete and is written out.
    commit_page_next: bool,
}

impl Pending {
    fn end(&self) -> i64 {
        self.offset + self.bytes.len() as i64
    }
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

/// Opens a file with the default VFS; a `-wal` file gets this module's methods around it.
unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let Some(Ok(VfsPtr(default))) = DEFAULT.get() else {
        return ffi::SQLITE_ERROR;
    };
    // SAFETY: SQLite gives `file` `szOsFile` bytes, this struct's size plus the default VFS's.
    unsafe {
        let Some(open_default) = (**default).xOpen else {
            return ffi::SQLITE_ERROR;
        };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            // Not a WAL: the default VFS's file, at the start of the allocation, as it is.
            return open_default(*default, name, file, flags, out_flags);
        }
        let wal = file.cast::<WalFile>();
        let inner = wal.add(1).cast::<ffi::sqlite3_file>();
        (*wal).base.pMethods = std::ptr::null();
        let code = open_default(*default, name, inner, flags, out_flags);
        if code != ffi::SQLITE_OK {
            return code;
        }
        (*wal).inner = inner;
        (*wal).pending = Box::into_raw(Box::new(Pending {
            offset: 0,
            bytes: Vec::with_capacity(BUFFER),
            commit_page_next: false,
        }));
        (*wal).base.pMethods = &WAL_METHODS;
        ffi::SQLITE_OK
    }
}

/// This file's state and the default VFS's file, from the pointer SQLite passes.
///
/// # Safety
/// `file` must be a file [`open`] gave this module's methods.
unsafe fn parts<'a>(file: *mut ffi::sqlite3_file) -> (&'a mut Pending, *mut ffi::sqlite3_file) {
    // SAFETY: per the contract, `file` is a `WalFile` whose fields `open` set.
    unsafe {
        let wal = file.cast::<WalFile>();
        (&mut *(*wal).pending, (*wal).inner)
    }
}

/// The default VFS's method `$m` of `inner`, or `SQLITE_ERROR` returned if it has none. Use it
/// inside an `unsafe` block, on a file the default VFS opened.
macro_rules! inner_method {
    ($inner:expr, $m:ident) => {
        match (*(*$inner).pMethods).$m {
            Some(method) => method,
            None => return ffi::SQLITE_ERROR,
        }
    };
}

/// Writes out whatever is buffered.
///
/// # Safety
/// `inner` must be the default VFS's open file.
unsafe fn flush(pending: &mut Pending, inner: *mut ffi::sqlite3_file) -> c_int {
    if pending.bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    // At most `BUFFER` bytes (see `write`), so the length fits.
    let amount = pending.bytes.len() as c_int;
    // SAFETY: the buffer holds `amount` initialised bytes; `inner` is open.
    let code = unsafe {
        let write = inner_method!(inner, xWrite);
        write(inner, pending.bytes.as_ptr().cast(), amount, pending.offset)
    };
    pending.bytes.clear();
    code
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite calls this only on files `open` set up, with `amount` readable bytes.
    unsafe {
        let (pending, inner) = parts(file);
        let Ok(len) = usize::try_from(amount) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        let bytes = std::slice::from_raw_parts(data.cast::<u8>(), len);
        let appends = (pending.bytes.is_empty() || offset == pending.end()) && len <= BUFFER;
        if !appends || pending.bytes.len() + len > BUFFER {
            let code = flush(pending, inner);
            if code != ffi::SQLITE_OK {
                return code;
            }
        }
        if !appends {
            // Rewrites (and writes too large to gather) go straight to the file, in SQLite's
            // order.
            let write = inner_method!(inner, xWrite);
            return write(inner, data, amount, offset);
        }
        if pending.bytes.is_empty() {
            pending.offset = offset;
        }
        pending.bytes.extend_from_slice(bytes);
        let commit_header = len == FRAME_HEADER && bytes[4..8] != [0; 4];
        if commit_header || std::mem::take(&mut pending.commit_page_next) {
            pending.commit_page_next = commit_header;
            return flush(pending, inner);
        }
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    data: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite calls this only on files `open` set up.
    unsafe {
        let (pending, inner) = parts(file);
        if !pending.bytes.is_empty() && offset + i64::from(amount) > pending.offset {
            let code = flush(pending, inner);
            if code != ffi::SQLITE_OK {
                return code;
            }
        }
        inner_method!(inner, xRead)(inner, data, amount, offset)
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls this once, last, on files `open` set up.
    unsafe {
        let (pending, inner) = parts(file);
        let flushed = flush(pending, inner);
        drop(Box::from_raw((*file.cast::<WalFile>()).pending));
        let closed = inner_method!(inner, xClose)(inner);
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

/// Defines a method that writes out the buffer, then forwards the call to the default VFS.
macro_rules! flush_then {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file, $($arg: $ty),*) -> c_int {
            // SAFETY: SQLite calls this only on files `open` set up.
            unsafe {
                let (pending, inner) = parts(file);
                let code = flush(pending, inner);
                if code != ffi::SQLITE_OK {
                    return code;
                }
                inner_method!(inner, $method)(inner, $($arg),*)
            }
        }
    };
}

/// Defines a method that forwards the call to the default VFS as it is.
macro_rules! forward {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty, $fallback:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file, $($arg: $ty),*) -> $ret {
            // SAFETY: SQLite calls this only on files `open` set up.
            unsafe {
                let (_, inner) = parts(file);
                match (*(*inner).pMethods).$method {
                    Some(method) => method(inner, $($arg),*),
                    None => $fallback,
                }
            }
        }
    };
}

flush_then!(truncate, xTruncate, (size: i64));
flush_then!(sync, xSync, (flags: c_int));
flush_then!(file_size, xFileSize, (size: *mut i64));
flush_then!(file_control, xFileControl, (op: c_int, arg: *mut c_void));
flush_then!(fetch, xFetch, (offset: i64, amount: c_int, pages: *mut *mut c_void));
forward!(lock, xLock, (level: c_int) -> c_int, ffi::SQLITE_ERROR);
forward!(unlock, xUnlock, (level: c_int) -> c_int, ffi::SQLITE_ERROR);
forward!(check_reserved_lock, xCheckReservedLock, (out: *mut c_int) -> c_int, ffi::SQLITE_ERROR);
forward!(sector_size, xSectorSize, () -> c_int, 4096);
forward!(device_characteristics, xDeviceCharacteristics, () -> c_int, 0);
forward!(shm_map, xShmMap, (region: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) -> c_int, ffi::SQLITE_IOERR);
forward!(shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int) -> c_int, ffi::SQLITE_IOERR);
forward!(shm_barrier, xShmBarrier, () -> (), ());
forward!(shm_unmap, xShmUnmap, (delete: c_int) -> c_int, ffi::SQLITE_OK);
forward!(unfetch, xUnfetch, (offset: i64, page: *mut c_void) -> c_int, ffi::SQLITE_OK);

#[cfg(test)]
mod tests;
