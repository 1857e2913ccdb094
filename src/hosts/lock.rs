//! One writer at a time: every read-modify-write of the hosts file holds an exclusive `flock`
//! on the hosts file itself, in every czctl process (direct edits, the root helper, backups).
//!
//! # Why the file itself
//! The lock must be shared by every czctl that edits the same file, whoever it runs as and
//! whichever mount namespace it runs in. The file's inode is the one thing they all agree on:
//! `/etc/hosts` bind-mounted from one file into several mount namespaces (containers, the
//! tests) is one inode under one path in each; a hard-linked or symlinked hosts file is one
//! inode under several paths. A lock file named after the path (`/run/czctl/hosts.lock`,
//! `/etc/.hosts.lock`) would miss both, and could not be created beside a user's own
//! `--hosts-file` in a directory the user may not write. `flock` needs only read access, so
//! root, the helper and an unprivileged czctl reading for its backup all take the same lock.
//!
//! Replacing the file by rename gives the path a new inode: a waiter that got the lock on the
//! old one sees the path now names another file and starts over on the new one
//! ([`Locked::acquire`]), and the writer locks its new file *before* renaming it into place,
//! so it holds the lock on whatever the path names from start to end of its edit.
//!
//! # Limits
//! - Only czctl takes this lock; programs that write the file without it are handled by the
//!   checks in `file` and `inplace` (re-read, merge, never truncate unread bytes).
//! - Anyone who may read the file may also lock it and hold the lock: czctl waits at most
//!   [`LOCK_WAIT`] and then fails with [`LockFailure::Timeout`], naming the file.
//! - On file systems without `flock` (ENOLCK, EOPNOTSUPP) czctl goes on without the lock,
//!   keeping only the checks against foreign writers.

use std::fs::{self, File, FileType, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long czctl waits for another process to release the hosts file's lock. czctl itself
/// holds it for milliseconds; a longer hold means a stuck or hostile process.
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Why [`Locked::acquire`] failed.
#[derive(Debug)]
pub(super) enum LockFailure {
    /// Resolving, opening or inspecting the file failed.
    Io(io::Error),
    /// The path names something other than a regular file (its kind, for the message).
    NotRegular(&'static str),
    /// Another process held the lock for longer than the wait.
    Timeout(Duration),
}

/// What a non-regular file is, in words.
pub(super) fn kind(file_type: FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// The hosts file, open and locked (exclusively) until dropped.
#[derive(Debug)]
pub(super) struct Locked {
    file: File,
    target: PathBuf,
    meta: Metadata,
}

impl Locked {
    /// Resolves `path` (symlinks followed), refuses anything but a regular file without
    /// opening it (opening a device or FIFO can block or have effects), opens it read-only and
    /// takes the exclusive lock, waiting up to `wait`. Starts over when the path names another
    /// file once the lock is ours (it was replaced by rename while we waited).
    ///
    /// Blocks the calling thread while it waits (polling): async code calls it only through
    /// effects that run off the runtime's workers (`teleport::engine`'s `blocking`).
    pub(super) fn acquire(path: &Path, wait: Duration) -> Result<Locked, LockFailure> {
        let deadline = Instant::now() + wait;
        loop {
            let target = fs::canonicalize(path).map_err(LockFailure::Io)?;
            let named = fs::metadata(&target).map_err(LockFailure::Io)?;
            if !named.is_file() {
                return Err(LockFailure::NotRegular(kind(named.file_type())));
            }
            let file = open_regular(&target, OpenOptions::new().read(true))?;
            let meta = file.metadata().map_err(LockFailure::Io)?;
            lock_exclusive(&file, deadline, wait)?;
            let locked = Locked { file, target, meta };
            if locked.still_at_path() {
                return Ok(locked);
            }
        }
    }

    /// Takes over `file`, already locked by the caller, as the file now at `target`.
    pub(super) fn adopt(file: File, target: PathBuf) -> io::Result<Locked> {
        let meta = file.metadata()?;
        Ok(Locked { file, target, meta })
    }

    /// The locked file (read access at least).
    pub(super) fn file(&self) -> &File {
        &self.file
    }

    /// The file's path, symlinks resolved.
    pub(super) fn target(&self) -> &Path {
        &self.target
    }

    /// The file's metadata when it was locked (mode, owner, link count).
    pub(super) fn meta(&self) -> &Metadata {
        &self.meta
    }

    /// Whether the path still names the locked file (and not one renamed over it since).
    pub(super) fn still_at_path(&self) -> bool {
        fs::metadata(&self.target)
            .is_ok_and(|now| (now.dev(), now.ino()) == (self.meta.dev(), self.meta.ino()))
    }

    /// The open file (still locked until the lock is released or the file closed).
    pub(super) fn into_file(self) -> File {
        self.file
    }

    /// The whole content, as it is now.
    pub(super) fn read_all(&self) -> io::Result<Vec<u8>> {
        read_from(&self.file, 0)
    }
}

/// Opens the regular file `target` with `options` (never blocking on a FIFO, never becoming
/// its controlling terminal) and checks it still is a regular file.
pub(super) fn open_regular(target: &Path, options: &mut OpenOptions) -> Result<File, LockFailure> {
    let file = options
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(target)
        .map_err(LockFailure::Io)?;
    let meta = file.metadata().map_err(LockFailure::Io)?;
    if !meta.is_file() {
        return Err(LockFailure::NotRegular(kind(meta.file_type())));
    }
    Ok(file)
}

/// Takes `flock(LOCK_EX)` on `file`, polling until `deadline`. File systems without `flock`
/// are let through unlocked (see the module's limits).
fn lock_exclusive(file: &File, deadline: Instant, wait: Duration) -> Result<(), LockFailure> {
    let mut pause = Duration::from_millis(1);
    loop {
        match try_lock(file) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) if unsupported(&e) => return Ok(()),
            Err(e) => return Err(LockFailure::Io(e)),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(LockFailure::Timeout(wait));
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: whether the lock is now ours.
pub(super) fn try_lock(file: &File) -> io::Result<bool> {
    use rustix::{fs::FlockOperation, io::Errno};
    loop {
        match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(true),
            Err(Errno::INTR) => continue,
            Err(Errno::WOULDBLOCK) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether a `flock` error means the file system has no locks at all.
fn unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ENOLCK | libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL)
    )
}

/// The bytes of `file` from `offset` to its end (positional reads: the file offset is unused).
pub(super) fn read_from(file: &File, offset: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match file.read_at(&mut chunk, offset + out.len() as u64) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
