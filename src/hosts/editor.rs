//! Who edits the hosts file: czctl itself when it may write the file, else a root helper
//! started once through sudo ([`Elevated`]). Teleports and `session close` use
//! [`HostsEditor`] and never care which. Every method blocks (file locks, the helper's round
//! trips): async callers run them on a blocking thread. The helper also binds the listeners
//! this user may not bind itself (ports below 1024 on Linux); that is the listeners' business
//! ([`crate::forward::listener::Binder`]), which reaches it through [`HostsEditor::helper`].

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::block::{BlockId, Entry};
use super::elevated::{ElevateError, Elevated, HelperError};
use super::file::{HostsError, HostsFile, Outcome, StaleCleanup};
use super::helper::{Request, WireEntry};

/// Why a hosts-file edit failed.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// Editing the file directly failed.
    #[error(transparent)]
    File(#[from] HostsError),
    /// Editing it through the root helper failed.
    #[error(transparent)]
    Helper(#[from] HelperError),
}

/// Why czctl cannot edit the hosts file at all; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file cannot be opened for writing, and elevating would not help (missing file,
    /// read-only file system, or czctl already runs as root).
    #[error("{0}")]
    Unwritable(String),
    /// Elevating through sudo failed.
    #[error(transparent)]
    Elevate(#[from] ElevateError),
}

/// The hosts file's editor: direct, or through the root helper.
#[derive(Debug)]
pub enum HostsEditor {
    /// czctl may write the file itself.
    Direct(HostsFile),
    /// A root helper edits it.
    Elevated(Elevated),
}

/// Whether czctl runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Why `path` is refused as a hosts file when it exists and is no regular file (a device, FIFO,
/// directory or socket): opening one can block (a FIFO) or have effects (a device), and
/// replacing it would destroy it. `None` when it is a regular file or does not exist.
pub fn not_regular(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    (!meta.is_file()).then(|| {
        format!(
            "refusing {} as the hosts file: it is {}, not a regular file; pass --hosts-file \
             PATH with the path of a regular file",
            path.display(),
            super::lock::kind(meta.file_type())
        )
    })
}

impl HostsEditor {
    /// Chooses how to edit `path`: directly when it can be opened for writing; when that is
    /// refused and czctl is not root, through a helper started with sudo (which may ask for a
    /// password on the terminal; its messages and the helper's go to `log`, else to stderr).
    /// Fails, having changed nothing, when neither works.
    pub fn open(
        path: &Path,
        state_dir: &Path,
        log: Option<std::fs::File>,
    ) -> Result<HostsEditor, OpenError> {
        let shown = path.display();
        if let Some(refusal) = not_regular(path) {
            return Err(OpenError::Unwritable(refusal));
        }
        let opened = std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path);
        let error = match opened {
            Ok(file) if file.metadata().is_ok_and(|m| m.is_file()) => {
                return Ok(HostsEditor::Direct(HostsFile::new(path)))
            }
            Ok(file) => {
                let kind = file
                    .metadata()
                    .map_or("not a regular file", |m| super::lock::kind(m.file_type()));
                return Err(OpenError::Unwritable(format!(
                    "refusing {shown} as the hosts file: it is {kind}, not a regular file"
                )));
            }
            Err(e) => e,
        };
        match error.kind() {
            std::io::ErrorKind::PermissionDenied if !is_root() => Ok(HostsEditor::Elevated(
                Elevated::start(path, state_dir, log)?,
            )),
            std::io::ErrorKind::PermissionDenied => Err(OpenError::Unwritable(format!(
                "cannot edit {shown}: permission denied even as root; it may be immutable \
                 (lsattr {shown}; chattr -i {shown}) or on a read-only mount; pass --hosts-file \
                 PATH to write the names elsewhere"
            ))),
            std::io::ErrorKind::NotFound => Err(OpenError::Unwritable(format!(
                "cannot open {shown}: it does not exist; create it or pass --hosts-file PATH"
            ))),
            _ => Err(OpenError::Unwritable(format!(
                "cannot open {shown}: {error}; pass --hosts-file PATH to write the names elsewhere"
            ))),
        }
    }

    /// The hosts file.
    pub fn path(&self) -> &Path {
        match self {
            HostsEditor::Direct(file) => file.path(),
            HostsEditor::Elevated(helper) => helper.file(),
        }
    }

    /// The root helper's pid, when edits go through one.
    pub fn helper_pid(&self) -> Option<u32> {
        match self {
            HostsEditor::Direct(_) => None,
            HostsEditor::Elevated(helper) => Some(helper.helper_pid()),
        }
    }

    /// The root helper, when edits go through one (it also binds ports below 1024).
    pub fn helper(&self) -> Option<&Elevated> {
        match self {
            HostsEditor::Direct(_) => None,
            HostsEditor::Elevated(helper) => Some(helper),
        }
    }

    /// Ends the root helper, if any, and waits (at most a few seconds) for it to exit:
    /// [`Elevated::close`]. Blocks: call it from a blocking thread. Later edits fail.
    pub fn close(&self) {
        if let HostsEditor::Elevated(helper) = self {
            helper.close();
        }
    }

    /// [`HostsFile::remove_stale`], judging owners by their session records in `state_dir`
    /// and their processes ([`crate::session::process::block_owner_alive`]; as root in the
    /// helper, with the state directory it was started with).
    pub fn remove_stale(&self, state_dir: &Path) -> Result<StaleCleanup, EditError> {
        match self {
            HostsEditor::Direct(file) => Ok(file.remove_stale(|session, pid| {
                crate::session::process::block_owner_alive(state_dir, session, pid)
            })?),
            HostsEditor::Elevated(helper) => {
                Ok(helper.request(&Request::RemoveStale)?.into_cleanup())
            }
        }
    }

    /// [`HostsFile::backup_once`]. With a root helper czctl still makes the copy itself when
    /// it can read the file (a hosts file is readable by everyone), so root never writes into
    /// the user's state directory; only when it cannot does the helper, which was started with
    /// the same state directory, make it.
    pub fn backup_once(&self, state_dir: &Path, id: &BlockId) -> Result<PathBuf, EditError> {
        let helper = match self {
            HostsEditor::Direct(file) => return Ok(file.backup_once(state_dir, id)?),
            HostsEditor::Elevated(helper) => helper,
        };
        match HostsFile::new(helper.file()).backup_once(state_dir, id) {
            Err(HostsError::Read { source, .. })
                if source.kind() == io::ErrorKind::PermissionDenied => {}
            done => return Ok(done?),
        }
        let state = std::path::absolute(state_dir).unwrap_or(state_dir.to_path_buf());
        if state != helper.state_dir() {
            return Err(HelperError::Refused {
                message: format!(
                    "the helper backs up into {}, not {}; this is a czctl bug",
                    helper.state_dir().display(),
                    state_dir.display()
                ),
            }
            .into());
        }
        std::fs::create_dir_all(state_dir).map_err(|source| HostsError::Backup {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let reply = helper.request(&Request::BackupOnce {
            session: id.session().to_string(),
            pid: id.pid(),
        })?;
        Ok(reply.backup.unwrap_or_default())
    }

    /// [`HostsFile::update`].
    pub fn update(&self, id: &BlockId, entries: &[Entry]) -> Result<Outcome, EditError> {
        match self {
            HostsEditor::Direct(file) => Ok(file.update(id, entries)?),
            HostsEditor::Elevated(helper) => {
                let reply = helper.request(&Request::Update {
                    session: id.session().to_string(),
                    pid: id.pid(),
                    entries: entries.iter().map(WireEntry::from).collect(),
                })?;
                Ok(reply.outcome.map_or(Outcome::Unchanged, Into::into))
            }
        }
    }

    /// [`HostsFile::remove`].
    pub fn remove(&self, id: &BlockId) -> Result<Outcome, EditError> {
        match self {
            HostsEditor::Direct(file) => Ok(file.remove(id)?),
            HostsEditor::Elevated(helper) => {
                let reply = helper.request(&Request::Remove {
                    session: id.session().to_string(),
                    pid: id.pid(),
                })?;
                Ok(reply.outcome.map_or(Outcome::Unchanged, Into::into))
            }
        }
    }
}
