//! The hosts file on disk: read, atomic replace with an in-place fallback, backups.
//!
//! No policy lives here: the caller decides when to back up, update and clean up, and logs
//! what these functions return.

use std::fs;
use std::io::{self, ErrorKind};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::block::{self, BlockId, Entry, FoundBlock};
use super::lock::{LockFailure, Locked, LOCK_WAIT};
use super::replace::{falls_back, Staged};
use super::{inplace, orphans};

/// How often an edit starts over when another program replaces the file by rename while
/// czctl edits it.
const MAX_ATTEMPTS: usize = 5;

/// How often a replace by rename is redone when other programs change the file between
/// czctl's last look and its rename.
const MAX_ROUNDS: usize = 50;

/// Why reading or writing the hosts file failed. Only [`HostsError::Contended`] is worth
/// retrying as is; the others need a change by the user first.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    /// The hosts file (or the directory holding it) could not be read: missing, permission
    /// denied, or an I/O error. Nothing was changed.
    #[error("cannot read hosts file {}: {source}; {}", .path.display(), hint(.source))]
    Read {
        /// The hosts file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The hosts file is not UTF-8 text; czctl does not edit it, so nothing was changed.
    #[error(
        "hosts file {} is not UTF-8 text, so czctl left it unchanged; remove the non-UTF-8 \
         bytes or pass --hosts-file PATH",
        .path.display()
    )]
    NotUtf8 {
        /// The hosts file.
        path: PathBuf,
    },
    /// Writing the new text to a temporary file or renaming it over the hosts file failed, for
    /// a reason where rewriting in place would not help. The hosts file is unchanged.
    #[error("cannot replace hosts file {}: {source}; {}", .path.display(), hint(.source))]
    Replace {
        /// The hosts file (after resolving symlinks).
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Rewriting the hosts file in place (the fallback for bind mounts) failed. When `partial`
    /// is set the file may hold a mix of old and new text and should be restored from the backup.
    #[error(
        "cannot rewrite hosts file {} in place: {source}; {}{}",
        .path.display(),
        hint(.source),
        if *.partial { "; it may be partly written: restore it from czctl's backup" } else { "" }
    )]
    InPlace {
        /// The hosts file (after resolving symlinks).
        path: PathBuf,
        /// Whether the failure came after the file was opened for writing.
        partial: bool,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Saving the backup copy in czctl's state directory failed; the hosts file is unchanged.
    #[error(
        "cannot save a backup of the hosts file to {}: {source}; make sure czctl's state \
         directory is writable by this user",
        .path.display()
    )]
    Backup {
        /// The backup file that could not be written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The path names a directory, device, FIFO or socket: czctl only edits regular files, so
    /// nothing was opened or changed.
    #[error(
        "refusing {} as the hosts file: it is {kind}, not a regular file; pass --hosts-file \
         with the path of a regular file",
        .path.display()
    )]
    NotRegular {
        /// The path given.
        path: PathBuf,
        /// What it is instead ("a character device", ...).
        kind: &'static str,
    },
    /// Another process held the hosts file's lock (czctl takes it for each edit) for longer
    /// than czctl waits. Nothing was changed.
    #[error(
        "hosts file {} stayed locked by another process for {}s (czctl locks it while it \
         edits it); find the holder with `lslocks` or `fuser {}`, then retry",
        .path.display(),
        .waited.as_secs(),
        .path.display()
    )]
    Locked {
        /// The hosts file.
        path: PathBuf,
        /// How long czctl waited.
        waited: std::time::Duration,
    },
    /// Another program changed the hosts file between czctl's read and its write, every time.
    /// The hosts file was not written by czctl; retrying later may succeed.
    #[error(
        "hosts file {} kept changing while czctl was updating it ({attempts} attempts); \
         another program is rewriting it, so stop that program or retry",
        .path.display()
    )]
    Contended {
        /// The hosts file.
        path: PathBuf,
        /// How many times czctl tried.
        attempts: usize,
    },
}

/// What to do next, from the kind of I/O error.
fn hint(err: &io::Error) -> &'static str {
    match err.kind() {
        ErrorKind::PermissionDenied => "run with sudo or pass --hosts-file PATH",
        ErrorKind::NotFound => "create the file or pass --hosts-file PATH",
        ErrorKind::ReadOnlyFilesystem => "it is on a read-only file system: pass --hosts-file PATH",
        ErrorKind::StorageFull => "free some disk space and retry",
        _ => "check the file and retry, or pass --hosts-file PATH",
    }
}

/// How [`HostsFile::write`] put the new text in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMethod {
    /// A temporary file in the same directory was renamed over the file (atomic).
    Renamed,
    /// The file was rewritten in place and synced, because renaming over it is impossible
    /// (a bind mount, as in containers and WSL) or would lose its owner.
    InPlace,
}

/// The result of an edit ([`HostsFile::update`], [`HostsFile::remove`], ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The file already had the wanted content, so it was not written.
    Unchanged,
    /// The file was written with the given method.
    Written(WriteMethod),
}

/// What [`HostsFile::remove_stale`] found, for the caller to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleCleanup {
    /// Blocks removed because their owner process is gone.
    pub removed: Vec<FoundBlock>,
    /// Begin markers without a matching end marker, left alone for a person to fix.
    pub unterminated: Vec<FoundBlock>,
    /// Whether the file was written.
    pub outcome: Outcome,
}

/// A hosts file; every operation re-reads it, so nothing about its content is cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsFile {
    path: PathBuf,
}

/// How a commit under the lock ended.
enum Committed {
    /// Written with this method.
    Done(WriteMethod),
    /// The merged text needed no change after all.
    Unchanged,
    /// The path names another file now (replaced by rename): read and lock it again.
    Replaced,
}

/// How [`HostsFile::rename_round`] ended.
enum Renamed {
    Done,
    Unchanged,
    Replaced,
    /// Renaming is impossible (bind mount) or would lose the owner: rewrite in place.
    FallBack,
}

/// The change an edit applies, to a text that may have grown by foreign appends.
type Apply<'a> = dyn FnMut(&[u8]) -> Result<Vec<u8>, HostsError> + 'a;

impl HostsFile {
    /// A handle on the file at `path` (usually `/etc/hosts`); nothing is read yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The path given to [`HostsFile::new`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the whole file as text (under the lock, so never half-way through czctl's write).
    pub fn read(&self) -> Result<String, HostsError> {
        let locked = self.lock()?;
        let bytes = locked.read_all().map_err(|e| self.read_error(e))?;
        self.text(bytes)
    }

    /// Replaces the file's content with `new_text` (see [`HostsFile::update`] for how).
    pub fn write(&self, new_text: &str) -> Result<Outcome, HostsError> {
        self.edit(|_| (new_text.to_string(), ()))
            .map(|(outcome, ())| outcome)
    }

    /// Copies the file, byte for byte and with its permission bits, to
    /// `hosts-SESSION.backup` in `state_dir` (created if needed) unless that backup already
    /// exists, and returns the backup's path. Call it before the session's first write so the
    /// backup holds the original. The session's clean end removes it
    /// ([`crate::session::record::remove_backup`]); a crashed session's stays for repairs.
    pub fn backup_once(&self, state_dir: &Path, id: &BlockId) -> Result<PathBuf, HostsError> {
        let dest = state_dir.join(format!("hosts-{}.backup", id.session()));
        if fs::symlink_metadata(&dest).is_ok() {
            return Ok(dest);
        }
        let locked = self.lock()?;
        let bytes = locked.read_all().map_err(|e| self.read_error(e))?;
        let mode = locked.meta().mode() & 0o777;
        let backup_error = |source| HostsError::Backup {
            path: dest.clone(),
            source,
        };
        fs::create_dir_all(state_dir).map_err(backup_error)?;
        let temp = Staged::create(&dest, &bytes, mode).map_err(backup_error)?;
        temp.rename_onto(&dest).map_err(backup_error)?;
        Ok(dest)
    }

    /// Puts `id`'s block with `entries` into the file (see [`block::splice`]); re-reads the file
    /// first and skips the write when nothing would change.
    ///
    /// The whole read-change-write holds the file's lock (see `lock`), so czctl processes edit
    /// one at a time. The file is replaced atomically (temporary file, then rename, keeping mode
    /// and owner) unless renaming is refused (bind mounts), would lose the owner, or would
    /// break hard links; then it is rewritten in place without truncating what others append
    /// (see `inplace`). Either way, lines other programs add meanwhile are merged in.
    pub fn update(&self, id: &BlockId, entries: &[Entry]) -> Result<Outcome, HostsError> {
        self.edit(|text| (block::splice(text, id, Some(entries)), ()))
            .map(|(outcome, ())| outcome)
    }

    /// Takes `id`'s block out of the file; a missing block is not an error.
    pub fn remove(&self, id: &BlockId) -> Result<Outcome, HostsError> {
        self.edit(|text| (block::splice(text, id, None), ()))
            .map(|(outcome, ())| outcome)
    }

    /// Removes every block whose owner `is_alive(session, pid)` reports gone (see
    /// [`block::remove_stale`]) and reports them, with any unterminated blocks.
    pub fn remove_stale(
        &self,
        is_alive: impl Fn(&str, u32) -> bool,
    ) -> Result<StaleCleanup, HostsError> {
        let (outcome, (removed, unterminated)) = self.edit(|text| {
            let (new_text, removed) = block::remove_stale(text, &is_alive);
            let unterminated = block::parse_blocks(text)
                .into_iter()
                .filter(|b| !b.terminated());
            (new_text, (removed, unterminated.collect()))
        })?;
        Ok(StaleCleanup {
            removed,
            unterminated,
            outcome,
        })
    }

    /// Lock, read, change, write. Starts over (a few times) when another program replaces the
    /// file by rename while czctl edits it.
    fn edit<T>(&self, change: impl Fn(&str) -> (String, T)) -> Result<(Outcome, T), HostsError> {
        for _ in 0..MAX_ATTEMPTS {
            let locked = self.lock()?;
            orphans::carry_over(locked.target()).map_err(|e| self.read_error(e))?;
            let before = locked.read_all().map_err(|e| self.read_error(e))?;
            let (after, extra) = change(&self.text(before.clone())?);
            if after.as_bytes() == before {
                return Ok((Outcome::Unchanged, extra));
            }
            let mut last = extra;
            let committed = {
                let mut apply = |bytes: &[u8]| {
                    let text = std::str::from_utf8(bytes).map_err(|_| self.not_utf8())?;
                    let (after, extra) = change(text);
                    last = extra;
                    Ok(after.into_bytes())
                };
                self.commit(locked, before, &mut apply)?
            };
            match committed {
                Committed::Done(method) => return Ok((Outcome::Written(method), last)),
                Committed::Unchanged => return Ok((Outcome::Unchanged, last)),
                Committed::Replaced => continue,
            }
        }
        Err(HostsError::Contended {
            path: self.path.clone(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Writes `apply(base)` to the locked file whose content was `base`: by rename when it can,
    /// else in place (and always in place for a file with hard links, to keep them).
    fn commit(
        &self,
        mut locked: Locked,
        mut base: Vec<u8>,
        apply: &mut Apply<'_>,
    ) -> Result<Committed, HostsError> {
        if locked.meta().nlink() <= 1 {
            match self.rename_round(&mut locked, &mut base, apply)? {
                Renamed::Done => return Ok(Committed::Done(WriteMethod::Renamed)),
                Renamed::Unchanged => return Ok(Committed::Unchanged),
                Renamed::Replaced => return Ok(Committed::Replaced),
                Renamed::FallBack => {}
            }
        }
        let target = locked.target().to_path_buf();
        let in_place = |partial, source| HostsError::InPlace {
            path: target.clone(),
            partial,
            source,
        };
        match inplace::rewrite(locked.file(), locked.target(), base, apply) {
            Ok(_rounds) if !locked.still_at_path() => Ok(Committed::Replaced),
            Ok(_rounds) => Ok(Committed::Done(WriteMethod::InPlace)),
            Err(inplace::Failure::Io { partial, source }) => Err(in_place(partial, source)),
            Err(inplace::Failure::Apply(e)) => Err(e),
            Err(inplace::Failure::Replaced) => Ok(Committed::Replaced),
            Err(inplace::Failure::Contended(attempts)) => Err(HostsError::Contended {
                path: self.path.clone(),
                attempts,
            }),
        }
    }

    /// Replaces the locked file by a renamed temporary file holding `apply(base)`:
    /// - the temporary file is locked before the rename, so the lock never lapses;
    /// - the old file is read again just before the rename: lines appended meanwhile are added
    ///   to the temporary file (and looked for again); any other change starts the round over;
    /// - the replaced file stays open (`orphans`): what was written to it after that last look
    ///   is appended to the new file right after the rename, and again by this process's next
    ///   edit of the file within a few seconds (a program that opened the file before the
    ///   rename may write a little later).
    ///
    /// What is left: a write into the replaced file that comes later than that, or when this
    /// process makes no further edit (it crashed); and a foreign change that is not an append
    /// made between the last look and the rename. Inherent to replacing by rename.
    fn rename_round(
        &self,
        locked: &mut Locked,
        base: &mut Vec<u8>,
        apply: &mut Apply<'_>,
    ) -> Result<Renamed, HostsError> {
        for _ in 0..MAX_ROUNDS {
            let mut text = apply(base)?;
            if text == *base {
                return Ok(Renamed::Unchanged);
            }
            let target = locked.target().to_path_buf();
            let replace_error = |source| HostsError::Replace {
                path: target.clone(),
                source,
            };
            let meta = locked.meta().clone();
            let staged = match Staged::create(&target, &text, meta.mode() & 0o7777) {
                Ok(staged) => match staged.copy_owner(&meta).and_then(|()| staged.lock()) {
                    Ok(()) => staged,
                    Err(e) if falls_back(&e) => return Ok(Renamed::FallBack),
                    Err(e) => return Err(replace_error(e)),
                },
                Err(e) if falls_back(&e) => return Ok(Renamed::FallBack),
                Err(e) => return Err(replace_error(e)),
            };
            let mut now = locked.read_all().map_err(|e| self.read_error(e))?;
            while now != *base && now.starts_with(base) && text.ends_with(b"\n") {
                // Lines appended meanwhile: add them to the staged file and look again (no
                // recomputing, no new fsync: the file is synced once in place).
                let more = &now[base.len()..];
                staged.extend(text.len(), more).map_err(replace_error)?;
                text.extend_from_slice(more);
                *base = now;
                now = locked.read_all().map_err(|e| self.read_error(e))?;
            }
            if now != *base {
                *base = now;
                continue;
            }
            if !locked.still_at_path() {
                return Ok(Renamed::Replaced);
            }
            let file = match staged.rename_onto(&target) {
                Ok(file) => file,
                Err(e) if falls_back(&e) => return Ok(Renamed::FallBack),
                Err(e) => return Err(replace_error(e)),
            };
            // It was synced when staged, but not what was added since (best effort: it is in
            // place already).
            let _ = file.sync_data();
            let new = Locked::adopt(file, target.clone()).map_err(|e| self.read_error(e))?;
            // Releases the old file's lock (its waiters find it replaced and wait on ours) but
            // keeps it open: whatever was written to it after our last look (`base`) is
            // appended to the new file now, and again by the next edit (`orphans`).
            let old = std::mem::replace(locked, new);
            orphans::keep(&target, old.into_file(), base.len() as u64);
            orphans::carry_over(&target).map_err(|e| self.read_error(e))?;
            return Ok(Renamed::Done);
        }
        Err(HostsError::Contended {
            path: self.path.clone(),
            attempts: MAX_ROUNDS,
        })
    }

    /// Resolves, checks and locks the file (see `lock`).
    fn lock(&self) -> Result<Locked, HostsError> {
        Locked::acquire(&self.path, LOCK_WAIT).map_err(|e| match e {
            LockFailure::Io(source) => self.read_error(source),
            LockFailure::NotRegular(kind) => HostsError::NotRegular {
                path: self.path.clone(),
                kind,
            },
            LockFailure::Timeout(waited) => HostsError::Locked {
                path: self.path.clone(),
                waited,
            },
        })
    }

    fn text(&self, bytes: Vec<u8>) -> Result<String, HostsError> {
        String::from_utf8(bytes).map_err(|_| self.not_utf8())
    }

    fn not_utf8(&self) -> HostsError {
        HostsError::NotUtf8 {
            path: self.path.clone(),
        }
    }

    fn read_error(&self, source: io::Error) -> HostsError {
        HostsError::Read {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
