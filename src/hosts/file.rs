//! The hosts file on disk: read, atomic replace with an in-place fallback, backups.
//!
//! No policy lives here: the caller decides when to back up, update and clean up, and logs
//! what these functions return.

use std::fs;
use std::io::{self, ErrorKind};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::block::{self, BlockId, Entry, FoundBlock};
use super::replace::{falls_back, write_in_place, Staged};

/// How often an edit is retried when another program changes the file between czctl's read
/// and its write.
const MAX_ATTEMPTS: usize = 5;

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

/// Result of one write attempt that checks the file still has the text the edit started from.
enum Commit {
    Done(WriteMethod),
    Changed,
}

impl HostsFile {
    /// A handle on the file at `path` (usually `/etc/hosts`); nothing is read yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The path given to [`HostsFile::new`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the whole file as text.
    pub fn read(&self) -> Result<String, HostsError> {
        let bytes = fs::read(&self.path).map_err(|source| self.read_error(source))?;
        String::from_utf8(bytes).map_err(|_| HostsError::NotUtf8 {
            path: self.path.clone(),
        })
    }

    /// Replaces the file's content with `new_text`: atomically through a temporary file and a
    /// rename that keeps the mode (and the owner, which needs root when it is not ours), or in
    /// place with fsync when the rename is refused (bind mounts) or the owner cannot be kept.
    /// A symlink is followed and its target written.
    pub fn write(&self, new_text: &str) -> Result<WriteMethod, HostsError> {
        match self.commit(new_text, None)? {
            Commit::Done(method) => Ok(method),
            // Without an expected text `commit` never reports a change; map it anyway.
            Commit::Changed => Err(HostsError::Contended {
                path: self.path.clone(),
                attempts: 1,
            }),
        }
    }

    /// Copies the file, byte for byte, to `hosts-SESSION.backup` in `state_dir` (created if
    /// needed) unless that backup already exists, and returns the backup's path. Call it
    /// before the session's first write so the backup holds the original.
    pub fn backup_once(&self, state_dir: &Path, id: &BlockId) -> Result<PathBuf, HostsError> {
        let dest = state_dir.join(format!("hosts-{}.backup", id.session()));
        if fs::symlink_metadata(&dest).is_ok() {
            return Ok(dest);
        }
        let bytes = fs::read(&self.path).map_err(|source| self.read_error(source))?;
        let backup_error = |source| HostsError::Backup {
            path: dest.clone(),
            source,
        };
        fs::create_dir_all(state_dir).map_err(backup_error)?;
        let temp = Staged::create(&dest, &bytes, 0o644).map_err(backup_error)?;
        temp.rename_onto(&dest).map_err(backup_error)?;
        Ok(dest)
    }

    /// Puts `id`'s block with `entries` into the file (see [`block::splice`]); re-reads the file
    /// first and skips the write when nothing would change.
    pub fn update(&self, id: &BlockId, entries: &[Entry]) -> Result<Outcome, HostsError> {
        self.edit(|text| (block::splice(text, id, Some(entries)), ()))
            .map(|(outcome, ())| outcome)
    }

    /// Takes `id`'s block out of the file; a missing block is not an error.
    pub fn remove(&self, id: &BlockId) -> Result<Outcome, HostsError> {
        self.edit(|text| (block::splice(text, id, None), ()))
            .map(|(outcome, ())| outcome)
    }

    /// Removes every block whose owner pid `is_alive` reports dead (see
    /// [`block::remove_stale`]) and reports them, with any unterminated blocks.
    pub fn remove_stale(&self, is_alive: impl Fn(u32) -> bool) -> Result<StaleCleanup, HostsError> {
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

    /// Read, change, write; retried when the file changes between the read and the write.
    fn edit<T>(&self, change: impl Fn(&str) -> (String, T)) -> Result<(Outcome, T), HostsError> {
        for _ in 0..MAX_ATTEMPTS {
            let before = self.read()?;
            let (after, extra) = change(&before);
            if after == before {
                return Ok((Outcome::Unchanged, extra));
            }
            if let Commit::Done(method) = self.commit(&after, Some(&before))? {
                return Ok((Outcome::Written(method), extra));
            }
        }
        Err(HostsError::Contended {
            path: self.path.clone(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Writes `text`, first checking (as late as possible) that the file still holds `expected`.
    fn commit(&self, text: &str, expected: Option<&str>) -> Result<Commit, HostsError> {
        let target = fs::canonicalize(&self.path).map_err(|source| self.read_error(source))?;
        let meta = fs::metadata(&target).map_err(|source| self.read_error(source))?;
        let replace_error = |source| HostsError::Replace {
            path: target.clone(),
            source,
        };
        let staged = match Staged::create(&target, text.as_bytes(), meta.mode() & 0o7777) {
            Ok(staged) => match staged.copy_owner(&meta) {
                Ok(()) => Some(staged),
                Err(e) if falls_back(&e) => None,
                Err(e) => return Err(replace_error(e)),
            },
            Err(e) if falls_back(&e) => None,
            Err(e) => return Err(replace_error(e)),
        };
        if let Some(expected) = expected {
            if self.read()? != expected {
                return Ok(Commit::Changed);
            }
        }
        if let Some(staged) = staged {
            match staged.rename_onto(&target) {
                Ok(()) => return Ok(Commit::Done(WriteMethod::Renamed)),
                Err(e) if falls_back(&e) => {}
                Err(e) => return Err(replace_error(e)),
            }
        }
        write_in_place(&target, text).map_err(|f| HostsError::InPlace {
            path: target.clone(),
            partial: f.partial,
            source: f.source,
        })?;
        Ok(Commit::Done(WriteMethod::InPlace))
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
