//! Directories only this user (or root) controls, and opens that never follow a symlink.
//!
//! A directory is *safe* when it is a real directory (not a symbolic link), belongs to one of
//! the [trusted owners](trusted_owners) and nobody else may write it (no group or other write
//! bit). Nobody else can then plant, replace or redirect a file in it, so what czctl creates
//! there stays its own. [`ensure_dir`] creates a missing directory with an exact mode (whatever
//! the umask) and checks an existing one; its parents are created if missing but not checked
//! (they are the caller's choice, e.g. the sticky `/tmp`).
//!
//! Files in a safe directory are opened with `O_NOFOLLOW` ([`open_nofollow`]) and must be
//! regular files, so even a leftover link or FIFO cannot redirect or block a write.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a directory is not used.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// It could not be created or inspected.
    #[error("cannot create or inspect {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// It exists but someone else could change what is in it.
    #[error(
        "{path} is not a safe place for czctl's files: {reason}; czctl only uses a directory \
         that is no symbolic link, belongs to you or root and that no one else may write: \
         remove it so that czctl creates it anew, or fix it (chown, chmod go-w)"
    )]
    Unsafe {
        /// The directory.
        path: PathBuf,
        /// What is wrong, e.g. "it is a symbolic link" or "it is writable by others (mode 0777)".
        reason: String,
    },
}

impl DirError {
    /// The directory the error is about.
    pub fn path(&self) -> &Path {
        match self {
            DirError::Io { path, .. } | DirError::Unsafe { path, .. } => path,
        }
    }
}

impl From<DirError> for io::Error {
    fn from(err: DirError) -> io::Error {
        let kind = match &err {
            DirError::Io { source, .. } => source.kind(),
            DirError::Unsafe { .. } => io::ErrorKind::PermissionDenied,
        };
        io::Error::new(kind, err)
    }
}

/// This process's effective user id.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The user who ran czctl under sudo: `SUDO_UID`, when running as root and it names a user
/// other than root. `None` otherwise (a plain run, or root's own).
pub fn sudo_uid() -> Option<u32> {
    if euid() != 0 {
        return None;
    }
    let uid: u32 = std::env::var("SUDO_UID").ok()?.trim().parse().ok()?;
    (uid != 0).then_some(uid)
}

/// Whose directories and files count as this run's own: the effective user, root, and under
/// sudo (running as root with `SUDO_UID`) the invoking user too, who could do anything as root
/// anyway.
pub fn trusted_owners() -> Vec<u32> {
    let mut owners = vec![euid(), 0];
    owners.extend(sudo_uid());
    owners.dedup();
    owners
}

/// `uid N (NAME)`, or `uid N` when it has no name.
pub fn describe_uid(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// The login name of `uid`, from the password database.
pub fn user_name(uid: u32) -> Option<String> {
    Some(user(uid)?.name)
}

/// The password database entry of `uid` (getpwuid_r, through nix: thread-safe).
fn user(uid: u32) -> Option<nix::unistd::User> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
}

/// The home directory of `uid`, from the password database.
pub fn home_of(uid: u32) -> Option<PathBuf> {
    let dir = user(uid)?.dir;
    dir.is_absolute().then_some(dir)
}

/// Creates `path` with exactly `mode` (e.g. 0o700) if it is missing, creating missing parents
/// with the default mode; then checks that it is safe (see the [module documentation](self))
/// for `trusted` owners.
pub fn ensure_dir(path: &Path, mode: u32, trusted: &[u32]) -> Result<(), DirError> {
    let fail = |source| DirError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.as_os_str().is_empty() {
        return Err(fail(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the directory name is empty",
        )));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(fail)?;
    }
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {
            // The umask may have taken bits away: set them exactly, through a descriptor of
            // the directory just made (never through a link put there since).
            let dir = open_dir(path).map_err(fail)?;
            dir.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(fail)?;
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail(e)),
    }
    check_dir(path, trusted).map(|_| ())
}

/// Checks that `path` is safe for `trusted` owners; `Ok(false)` when it does not exist.
pub fn check_dir(path: &Path, trusted: &[u32]) -> Result<bool, DirError> {
    let unsafe_dir = |reason: String| DirError::Unsafe {
        path: path.to_path_buf(),
        reason,
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(DirError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(path)
            .map(|t| format!(" to {}", t.display()))
            .unwrap_or_default();
        return Err(unsafe_dir(format!("it is a symbolic link{target}")));
    }
    if !kind.is_dir() {
        return Err(unsafe_dir("it is not a directory".into()));
    }
    if !trusted.contains(&meta.uid()) {
        return Err(unsafe_dir(format!(
            "it belongs to {}, not to you ({})",
            describe_uid(meta.uid()),
            describe_uid(euid())
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "its group and everyone",
            (true, false) => "its group",
            _ => "everyone",
        };
        return Err(unsafe_dir(format!("{who} may write it (mode {mode:04o})")));
    }
    Ok(true)
}

fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
}

/// Opens `path` with `options`, never following a symbolic link in its last component and
/// never blocking on a FIFO; anything but a regular file is refused (`InvalidInput`).
pub fn open_nofollow(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    let file = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} is a symbolic link, which czctl does not follow",
                        path.display()
                    ),
                )
            } else {
                e
            }
        })?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    // O_NONBLOCK only mattered for the open (a FIFO); clear it for regular I/O.
    if let Ok(flags) = rustix::fs::fcntl_getfl(&file) {
        let _ = rustix::fs::fcntl_setfl(&file, flags - rustix::fs::OFlags::NONBLOCK);
    }
    Ok(file)
}

/// Creates or opens the regular file `path` for writing without following a link; a file
/// created here gets exactly `mode` (whatever the umask), an existing one keeps its mode.
/// Nothing is truncated.
pub fn open_or_create(path: &Path, mode: u32) -> io::Result<File> {
    match open_nofollow(
        path,
        OpenOptions::new().write(true).create_new(true).mode(mode),
    ) {
        Ok(file) => {
            file.set_permissions(fs::Permissions::from_mode(mode))?;
            Ok(file)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            open_nofollow(path, OpenOptions::new().write(true))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("loopback-dirs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn creates_with_the_exact_mode_whatever_the_umask() {
        let dir = scratch("create");
        // Tests run in threads, but a wider mask only narrows what others create, and it is
        // restored.
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
        let shared = dir.join("a/b/shared");
        let made = ensure_dir(&shared, 0o755, &trusted_owners());
        rustix::process::umask(old);
        made.unwrap();
        assert_eq!(mode(&shared), 0o755);
        ensure_dir(&dir.join("private"), 0o700, &trusted_owners()).unwrap();
        assert_eq!(mode(&dir.join("private")), 0o700);
        // Existing and fine: left as it is.
        ensure_dir(&shared, 0o700, &trusted_owners()).unwrap();
        assert_eq!(mode(&shared), 0o755);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_files_foreign_and_writable_directories_are_refused() {
        let dir = scratch("refuse");
        let target = dir.join("target");
        fs::create_dir(&target).unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = ensure_dir(&link, 0o700, &trusted_owners()).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(
            err.to_string().contains(&link.display().to_string()),
            "{err}"
        );

        let file = dir.join("file");
        fs::write(&file, "x").unwrap();
        let err = ensure_dir(&file, 0o700, &trusted_owners()).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");

        fs::set_permissions(&target, fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_dir(&target, 0o700, &trusted_owners()).unwrap_err();
        assert!(
            err.to_string()
                .contains("everyone may write it (mode 0777)"),
            "{err}"
        );
        fs::set_permissions(&target, fs::Permissions::from_mode(0o770)).unwrap();
        let err = check_dir(&target, &trusted_owners()).unwrap_err();
        assert!(err.to_string().contains("its group may write it"), "{err}");

        fs::set_permissions(&target, fs::Permissions::from_mode(0o700)).unwrap();
        let err = check_dir(&target, &[u32::MAX - 1]).unwrap_err();
        assert!(err.to_string().contains("belongs to"), "{err}");
        assert!(check_dir(&target, &trusted_owners()).unwrap());
        assert!(!check_dir(&dir.join("missing"), &trusted_owners()).unwrap());
        assert!(ensure_dir(Path::new(""), 0o700, &trusted_owners()).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn open_nofollow_refuses_links_and_fifos() {
        let dir = scratch("open");
        let file = dir.join("file");
        let made = open_or_create(&file, 0o600).unwrap();
        drop(made);
        assert_eq!(mode(&file), 0o600);
        open_or_create(&file, 0o644).unwrap();
        assert_eq!(mode(&file), 0o600, "an existing file keeps its mode");
        let link = dir.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let err = open_or_create(&link, 0o600).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let fifo = dir.join("fifo");
        use rustix::fs::{mknodat, FileType, Mode, CWD};
        mknodat(CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o600), 0).expect("mkfifo");
        // Would block forever without O_NONBLOCK (no reader).
        let err = open_nofollow(&fifo, OpenOptions::new().read(true)).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
