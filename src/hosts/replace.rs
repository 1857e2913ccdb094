//! Low-level file replacement: a staged temporary file renamed into place, and the in-place
//! rewrite used when renaming is impossible (bind mounts). Knows nothing about hosts files.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes temporary file names unique within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Whether a failure to stage or rename calls for rewriting the file in place: EBUSY and EXDEV
/// are what rename(2) returns onto a bind-mounted file; EPERM/EACCES come from a directory we
/// may not write (or a sticky one) while the file itself may be writable, and from chown.
pub(super) fn falls_back(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::ResourceBusy | ErrorKind::CrossesDevices | ErrorKind::PermissionDenied
    )
}

/// Why [`write_in_place`] failed.
#[derive(Debug)]
pub(super) struct InPlaceFailure {
    /// Whether the file may have been changed (the failure came after opening it).
    pub(super) partial: bool,
    /// The cause.
    pub(super) source: io::Error,
}

/// Overwrites `path` in place (same inode, so owner, mode and bind mounts are kept), then
/// truncates and syncs. Writing before truncating means a crash never leaves an empty file.
pub(super) fn write_in_place(path: &Path, text: &str) -> Result<(), InPlaceFailure> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|source| InPlaceFailure {
            partial: false,
            source,
        })?;
    let partial = |source| InPlaceFailure {
        partial: true,
        source,
    };
    file.write_all(text.as_bytes()).map_err(partial)?;
    file.set_len(text.len() as u64).map_err(partial)?;
    file.sync_all().map_err(partial)
}

/// A temporary file next to its destination, deleted on drop unless renamed.
pub(super) struct Staged {
    path: PathBuf,
    file: fs::File,
    renamed: bool,
}

impl Staged {
    /// Creates the temporary file beside `dest` with `mode`, writes `bytes` and syncs them.
    pub(super) fn create(dest: &Path, bytes: &[u8], mode: u32) -> io::Result<Self> {
        let dir = dest.parent().unwrap_or(Path::new("/"));
        let name = dest
            .file_name()
            .map_or("hosts".into(), |n| n.to_string_lossy());
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{name}.czctl-{}-{n}.tmp", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let mut staged = Self {
            path,
            file,
            renamed: false,
        };
        staged.file.write_all(bytes)?;
        // Set explicitly: the umask applies to the mode given at creation.
        staged.file.set_permissions(Permissions::from_mode(mode))?;
        staged.file.sync_all()?;
        Ok(staged)
    }

    /// Gives the temporary file `meta`'s owner and group, when they differ from ours.
    pub(super) fn copy_owner(&self, meta: &fs::Metadata) -> io::Result<()> {
        let ours = self.file.metadata()?;
        if (ours.uid(), ours.gid()) == (meta.uid(), meta.gid()) {
            return Ok(());
        }
        std::os::unix::fs::fchown(&self.file, Some(meta.uid()), Some(meta.gid()))?;
        // chown may clear set-id bits; put the mode back.
        self.file
            .set_permissions(Permissions::from_mode(meta.mode() & 0o7777))
    }

    /// Renames the temporary file onto `dest` and syncs the directory (best effort).
    pub(super) fn rename_onto(mut self, dest: &Path) -> io::Result<()> {
        fs::rename(&self.path, dest)?;
        self.renamed = true;
        if let Some(dir) = dest.parent() {
            // Durability of the rename itself; failing here loses nothing already written.
            let _ = fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.renamed {
            // Best effort: a leftover temp file is harmless and named after czctl.
            let _ = fs::remove_file(&self.path);
        }
    }
}
