//! Writing the exported environment to a file (`-f FILE`) without ever taking over a file that
//! is not czctl's.
//!
//! # Rules
//! - A missing file is created: mode 0600, owned by the user czctl runs as (under sudo: by
//!   the invoking user, `SUDO_UID`/`SUDO_GID`, who can then read it without sudo). It is never
//!   created over something that appeared in the meantime.
//! - An existing file is replaced only when it is czctl's own: a regular file owned by the
//!   invoking user (the effective user; under sudo also `SUDO_UID`) whose first line is czctl's
//!   mark, [`MARK`] (`env`, `sh` and `yaml` files start with it). A `json` file has no room for
//!   a comment, so an existing one is never recognised: replacing it takes `--overwrite`.
//! - Any other regular file, or a symbolic link to a regular file (or to nothing), is refused
//!   with exit code 6, naming the file, the reason and what `--overwrite` would do. With
//!   `--overwrite` a regular file is replaced if the user may write it and its owner can be
//!   kept (czctl runs as root, or as its owner); a link is replaced by a new file (never
//!   followed: its target stays as it is).
//! - Directories, devices, FIFOs and sockets, and links to them, are always refused, even with
//!   `--overwrite`.
//! - Whatever is replaced is replaced atomically (a temporary file beside it, then a rename),
//!   and the new file is always mode 0600 (the environment holds Secrets): it keeps the old
//!   file's owner and group, never its mode.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::Format;
use crate::exit::{Code, Fatal};
use crate::paths;

/// The start of the first line of every file czctl writes in a format with comments.
pub const MARK: &str = "# written by czctl";

/// The first line czctl writes in `format` (with `about`, e.g. `deployment demo/echo`), or
/// `None` for a format without comments (`json`).
pub fn mark_line(format: Format, about: &str) -> Option<String> {
    let about: String = about.chars().filter(|c| !c.is_control()).collect();
    match format {
        Format::Json => None,
        Format::Env | Format::Sh | Format::Yaml => Some(format!(
            "{MARK} ({about}); czctl replaces this file on the next export to it\n"
        )),
    }
}

/// Why the environment was not written to a file.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The path names something czctl never writes, even with `--overwrite`.
    #[error(
        "czctl will not write the environment to {}: {reason}; it only writes a regular file, \
         even with --overwrite: choose another file",
        path.display()
    )]
    Never {
        /// The file given.
        path: PathBuf,
        /// What it is ("it is a FIFO").
        reason: String,
    },
    /// The file exists and is not czctl's own.
    #[error(
        "czctl will not replace {}: {reason}; with --overwrite it {would}; or choose another file",
        path.display()
    )]
    NotOurs {
        /// The file given.
        path: PathBuf,
        /// Why it does not count as czctl's.
        reason: String,
        /// What `--overwrite` would do to it.
        would: String,
    },
    /// `--overwrite` was given but the file cannot be replaced as promised.
    #[error("czctl cannot replace {}: {reason}", path.display())]
    CannotOverwrite {
        /// The file given.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// Writing failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file given.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl From<WriteError> for Fatal {
    fn from(err: WriteError) -> Self {
        Fatal::new(Code::Local, err.to_string())
    }
}

/// What is at the path now, as far as writing goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    /// Nothing: create the file.
    Missing,
    /// A symbolic link (to a regular file or nothing), replaced by a new file.
    Link { dev: u64, ino: u64 },
    /// A regular file, replaced keeping its owner and group.
    File {
        dev: u64,
        ino: u64,
        uid: u32,
        gid: u32,
    },
}

/// What [`write_file`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Created the file.
    Created,
    /// Replaced czctl's own earlier file.
    Replaced,
    /// Replaced a file or link that was not czctl's (`--overwrite`); says what it was.
    Overwrote(String),
}

fn file_kind(kind: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else {
        "a regular file"
    }
}

/// Decides whether `path` may be written in `format` (see the [module documentation](self)),
/// without writing anything: every refusal happens here, before a teleport starts.
pub fn check(path: &Path, format: Format, overwrite: bool) -> Result<(), WriteError> {
    inspect(path, format, overwrite).map(|_| ())
}

fn inspect(
    path: &Path,
    format: Format,
    overwrite: bool,
) -> Result<(Found, Option<String>), WriteError> {
    let never = |reason: String| WriteError::Never {
        path: path.to_path_buf(),
        reason,
    };
    let io_err = |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.file_name().is_none() {
        return Err(never("it does not name a file".into()));
    }
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Found::Missing, None)),
        Err(e) => return Err(io_err(e)),
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(path).map_err(io_err)?;
        let shown = target.display().to_string();
        match fs::metadata(path) {
            Ok(to) if !to.is_file() => {
                return Err(never(format!(
                    "it is a symbolic link to {} ({shown})",
                    file_kind(to.file_type())
                )))
            }
            Ok(_) | Err(_) => {}
        }
        let found = Found::Link {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        if overwrite {
            return Ok((found, Some(format!("the symbolic link to {shown}"))));
        }
        return Err(WriteError::NotOurs {
            path: path.to_path_buf(),
            reason: format!("it is a symbolic link to {shown}, which czctl does not follow"),
            would: format!(
                "replaces the link itself with a new file (mode 0600); {shown} is left as it is"
            ),
        });
    }
    if !kind.is_file() {
        return Err(never(format!("it is {}", file_kind(kind))));
    }
    let found = Found::File {
        dev: meta.dev(),
        ino: meta.ino(),
        uid: meta.uid(),
        gid: meta.gid(),
    };
    let mode = meta.mode() & 0o7777;
    let owner = paths::describe_uid(meta.uid());
    let reason = if !paths::is_ours(meta.uid()) {
        Some(format!(
            "it belongs to {owner}, not to you ({})",
            paths::describe_uid(paths::invoking_uid())
        ))
    } else if format == Format::Json {
        Some(format!(
            "it exists, and czctl cannot tell a JSON file it wrote (JSON has no comment for \
             its mark {MARK:?})"
        ))
    } else if !has_mark(path, &meta).map_err(io_err)? {
        Some(format!(
            "czctl did not write it (its first line is not {MARK:?})"
        ))
    } else {
        None
    };
    let Some(reason) = reason else {
        return Ok((found, None));
    };
    if !overwrite {
        let mode_change = if mode == 0o600 {
            "mode 0600".to_string()
        } else {
            format!("mode 0600 instead of {mode:04o}")
        };
        return Err(WriteError::NotOurs {
            path: path.to_path_buf(),
            reason,
            would: format!(
                "replaces it with the environment, keeping its owner {owner} and group, with \
                 {mode_change}"
            ),
        });
    }
    let cannot = |reason: String| WriteError::CannotOverwrite {
        path: path.to_path_buf(),
        reason,
    };
    if !may_write(path) {
        return Err(cannot(format!(
            "you ({}) may not write it (owner {owner}, mode {mode:04o})",
            paths::describe_uid(loopback::dirs::euid())
        )));
    }
    let euid = loopback::dirs::euid();
    if euid != 0 && meta.uid() != euid {
        return Err(cannot(format!(
            "it belongs to {owner}, and only {owner} or root can replace it keeping its owner"
        )));
    }
    Ok((found, Some(format!("a file of {owner}, mode {mode:04o}"))))
}

/// Whether the regular file `path` starts with czctl's mark; read without following a link
/// and only if it is still the file `meta` describes.
fn has_mark(path: &Path, meta: &fs::Metadata) -> io::Result<bool> {
    let mut file = paths::open_nofollow(path, OpenOptions::new().read(true))?;
    let now = file.metadata()?;
    if (now.dev(), now.ino()) != (meta.dev(), meta.ino()) {
        return Ok(false);
    }
    let mut start = vec![0; MARK.len()];
    let mut read = 0;
    while read < start.len() {
        match file.read(&mut start[read..])? {
            0 => break,
            n => read += n,
        }
    }
    Ok(&start[..read] == MARK.as_bytes())
}

/// access(2) with the effective ids: may this process write `path`?
fn may_write(path: &Path) -> bool {
    use rustix::fs::{accessat, Access, AtFlags, CWD};
    accessat(CWD, path, Access::WRITE_OK, AtFlags::EACCESS).is_ok()
}

static TEMP_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Writes `mark` (the first line, if any) and `contents` to `path` following the rules of the
/// [module documentation](self): a new file, czctl's own earlier file, or (with `overwrite`)
/// a regular file or link that is not czctl's; mode 0600, atomically.
pub fn write_file(
    path: &Path,
    format: Format,
    mark: Option<&str>,
    contents: &[u8],
    overwrite: bool,
) -> Result<Written, WriteError> {
    let (found, what) = inspect(path, format, overwrite)?;
    let io_err = |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    };
    let name = path.file_name().expect("inspect checked the name");
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let (temp, mut file) = create_temp(dir, name).map_err(io_err)?;
    let written = (|| {
        // The umask may have taken bits away; set exactly 0600.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        give_owner(&file, &found)?;
        if let Some(mark) = mark {
            file.write_all(mark.as_bytes())?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        // What was checked must still be there: never replace something that appeared or was
        // swapped in meanwhile.
        let now = match fs::symlink_metadata(path) {
            Ok(meta) => Some((meta.dev(), meta.ino())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let expected = match &found {
            Found::Missing => None,
            Found::Link { dev, ino } | Found::File { dev, ino, .. } => Some((*dev, *ino)),
        };
        if now != expected {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "it changed while czctl was writing; try again",
            ));
        }
        match found {
            Found::Missing => rename_noreplace(&temp, path),
            _ => fs::rename(&temp, path),
        }
    })();
    if let Err(err) = written {
        let _ = fs::remove_file(&temp);
        return Err(io_err(err));
    }
    // Make the rename durable; a failure here does not undo a complete write.
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(match (found, what) {
        (Found::Missing, _) => Written::Created,
        (_, Some(what)) => Written::Overwrote(what),
        (_, None) => Written::Replaced,
    })
}

/// A new temporary file beside the target (never an existing one, never through a link).
pub(super) fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> io::Result<(PathBuf, File)> {
    loop {
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(
            ".{}.{}.tmp",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let temp = dir.join(temp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err),
        }
    }
}

/// Gives the new file the owner it should have: the replaced file's owner and group, or for a
/// new file under sudo the invoking user's.
fn give_owner(file: &File, found: &Found) -> io::Result<()> {
    let euid = loopback::dirs::euid();
    match found {
        Found::File { uid, gid, .. } => {
            let meta = file.metadata()?;
            if (meta.uid(), meta.gid()) == (*uid, *gid) {
                return Ok(());
            }
            match std::os::unix::fs::fchown(file, Some(*uid), Some(*gid)) {
                Ok(()) => Ok(()),
                // Our own file with a group we are not in: the group cannot be kept, which
                // with mode 0600 gives nobody anything.
                Err(e) if euid != 0 && *uid == euid => {
                    let _ = e;
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        Found::Missing | Found::Link { .. } => match loopback::dirs::sudo_uid() {
            Some(uid) => {
                let gid = std::env::var("SUDO_GID")
                    .ok()
                    .and_then(|g| g.trim().parse::<u32>().ok());
                std::os::unix::fs::fchown(file, Some(uid), gid)
            }
            None => Ok(()),
        },
    }
}

/// Renames `from` to `to` unless `to` exists (renameat2 RENAME_NOREPLACE; where the file
/// system lacks it, a hard link and an unlink, which also refuse an existing `to`).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    use rustix::io::Errno;
    use std::os::unix::ffi::OsStrExt;
    // Checked here: rustix reports a NUL byte as EINVAL, which would read as "no renameat2".
    if [from, to]
        .iter()
        .any(|p| p.as_os_str().as_bytes().contains(&0))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in the path",
        ));
    }
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::INVAL | Errno::NOSYS) => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        Err(Errno::EXIST) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a file appeared there while czctl was writing; try again",
        )),
        Err(e) => Err(e.into()),
    }
}
