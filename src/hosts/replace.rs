//! Low-level file replacement: a staged temporary file renamed into place (the in-place
//! rewrite used when renaming is impossible is `inplace`). Knows nothing about hosts files.

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

/// A temporary file next to its destination, deleted on drop unless renamed.
pub(super) struct Staged {
    temp: TempPath,
    file: fs::File,
}

/// The temporary file's name, removed on drop unless renamed.
struct TempPath {
    path: PathBuf,
    renamed: bool,
}

impl Staged {
    /// Creates the temporary file beside `dest` with `mode`, writes `bytes` and syncs them.
    /// It is open for reading too, so it can serve as the locked file once renamed.
    pub(super) fn create(dest: &Path, bytes: &[u8], mode: u32) -> io::Result<Self> {
        let dir = dest.parent().unwrap_or(Path::new("/"));
        let name = dest
            .file_name()
            .map_or("hosts".into(), |n| n.to_string_lossy());
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{name}.czctl-{}-{n}.tmp", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let mut staged = Self {
            temp: TempPath {
                path,
                renamed: false,
            },
            file,
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

    /// Appends `bytes` to the temporary file (after the `len` bytes it holds), unsynced: the
    /// caller syncs the file once it is in place.
    pub(super) fn extend(&self, len: usize, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(bytes, len as u64)
    }

    /// Takes the exclusive `flock` on the temporary file, so that it is locked from the
    /// moment a rename makes it the file others open (see `lock`). A file system without
    /// locks is let through.
    pub(super) fn lock(&self) -> io::Result<()> {
        match super::lock::try_lock(&self.file) {
            Ok(true) => Ok(()),
            Ok(false) => Err(io::Error::from(ErrorKind::WouldBlock)),
            Err(_) => Ok(()),
        }
    }

    /// Renames the temporary file onto `dest`, syncs the directory (best effort) and returns
    /// the file, now at `dest` (with any lock taken by [`Staged::lock`]).
    pub(super) fn rename_onto(mut self, dest: &Path) -> io::Result<fs::File> {
        fs::rename(&self.temp.path, dest)?;
        self.temp.renamed = true;
        if let Some(dir) = dest.parent() {
            // Durability of the rename itself; failing here loses nothing already written.
            let _ = fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(self.file)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.renamed {
            // Best effort: a leftover temp file is harmless and named after czctl.
            let _ = fs::remove_file(&self.path);
        }
    }
}
