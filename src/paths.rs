//! Where czctl keeps its files, and the checks that keep them its own.
//!
//! # Rules
//! - czctl's directories (the state directory, its `sessions` directory, the loopback address
//!   registry) must be *safe*: a real directory, not a symbolic link, belonging to this user
//!   or root (under sudo: also the invoking user, `SUDO_UID`), that no one else may write.
//!   A missing one is created with mode 0700 (whatever the umask); an unsafe one is never used:
//!   the run stops with exit code 6 naming the directory and the fix ([`ensure_private_dir`]).
//!   Their parents are created if missing but not checked: they are the user's choice.
//! - Files in them are opened with `O_NOFOLLOW` and must be regular files ([`open_nofollow`]);
//!   files czctl creates there get exact modes (0600, or 0644 for what others may read).
//! - An environment variable that is set but empty (`CZCTL_STATE_DIR=`) counts as unset, so
//!   state never lands in the current directory; so does an `XDG_*`, `HOME` or `TMPDIR` that
//!   is not an absolute path.
//!
//! The loopback crate does the same for the registry ([`loopback::dirs`]); this module is the
//! czctl side: the default places ([`state_dir`], [`registry_dir`]) and the error → exit code.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::exit::{Code, Fatal};

/// Why a directory of czctl's is not used: it could not be created, or someone else could
/// change what is in it. Its message names the directory, what is wrong and the fix.
pub type PathError = loopback::DirError;

impl From<PathError> for Fatal {
    fn from(err: PathError) -> Self {
        Fatal::new(Code::Local, err.to_string())
    }
}

/// The mode of a directory czctl creates for itself.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Creates `path` (mode 0700) if it is missing, then checks that it is safe: no symbolic link,
/// a directory of this user or root (or, under sudo, the invoking user), not writable by
/// group or others. Call it before creating or opening anything in a directory of czctl's.
pub fn ensure_private_dir(path: &Path) -> Result<(), PathError> {
    loopback::dirs::ensure_dir(path, PRIVATE_DIR_MODE, &loopback::dirs::trusted_owners())
}

/// Checks that `path` is safe without creating it; `Ok(false)` when it does not exist (for
/// readers: nothing to read).
pub fn check_private_dir(path: &Path) -> Result<bool, PathError> {
    loopback::dirs::check_dir(path, &loopback::dirs::trusted_owners())
}

/// [`ensure_private_dir`] for the state directory and its `sessions` directory; returns the
/// latter (what [`crate::session::record::dir`] names).
pub fn ensure_sessions_dir(state_dir: &Path) -> Result<PathBuf, PathError> {
    ensure_private_dir(state_dir)?;
    let sessions = crate::session::record::dir(state_dir);
    ensure_private_dir(&sessions)?;
    Ok(sessions)
}

/// Opens `path` with `options` without following a symbolic link (`O_NOFOLLOW`) or blocking
/// on a FIFO; anything but a regular file is refused. Give a mode with
/// `std::os::unix::fs::OpenOptionsExt::mode` when creating.
pub fn open_nofollow(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    loopback::dirs::open_nofollow(path, options)
}

/// The user czctl acts for: `SUDO_UID` under sudo (running as root), else the effective user.
pub fn invoking_uid() -> u32 {
    loopback::dirs::sudo_uid().unwrap_or_else(loopback::dirs::euid)
}

/// Whether a file or directory owned by `uid` is this run's own: the effective user's, or
/// under sudo the invoking user's.
pub fn is_ours(uid: u32) -> bool {
    uid == loopback::dirs::euid() || loopback::dirs::sudo_uid() == Some(uid)
}

/// `NAME (uid N)`.
pub fn describe_uid(uid: u32) -> String {
    loopback::dirs::describe_uid(uid)
}

/// czctl's per-user state directory: `CZCTL_STATE_DIR`, else `$XDG_STATE_HOME/czctl`, else
/// `~/.local/state/czctl` (`$HOME`, else the password database's home of the effective user),
/// else `czctl-state-UID` in `$TMPDIR` (or `/tmp`). Empty values count as unset; `XDG_*`,
/// `HOME` and `TMPDIR` only when absolute.
pub fn state_dir() -> PathBuf {
    state_dir_for(loopback::dirs::euid(), |name| std::env::var_os(name))
}

/// [`state_dir`] for user `uid` and the environment `env`.
pub fn state_dir_for(uid: u32, env: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let set = |name: &str| {
        env(name)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    };
    let absolute = |name: &str| set(name).filter(|path| path.is_absolute());
    if let Some(dir) = set("CZCTL_STATE_DIR") {
        return dir;
    }
    if let Some(dir) = absolute("XDG_STATE_HOME") {
        return dir.join("czctl");
    }
    let home = absolute("HOME").or_else(|| loopback::dirs::home_of(uid));
    if let Some(home) = home.filter(|home| home != Path::new("/")) {
        return home.join(".local").join("state").join("czctl");
    }
    absolute("TMPDIR")
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join(format!("czctl-state-{uid}"))
}

/// The loopback address registry of this user's runs: `CZCTL_REGISTRY_DIR` (when not empty),
/// else [`loopback::Registry::default_dir`]: `/run/czctl-loopback` for root (sudo included),
/// else `$XDG_RUNTIME_DIR/czctl-loopback`, else `czctl-loopback-UID` in `$TMPDIR` (or `/tmp`).
pub fn registry_dir() -> PathBuf {
    registry_dir_for(loopback::dirs::euid(), |name| std::env::var_os(name))
}

/// [`registry_dir`] for user `uid` and the environment `env`.
pub fn registry_dir_for(uid: u32, env: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    match env("CZCTL_REGISTRY_DIR").filter(|value| !value.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => loopback::alloc::default_dir_for(uid, env),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, OsString)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn state_dir_treats_empty_and_relative_variables_as_unset() {
        let at = |pairs: &[(&str, &str)]| state_dir_for(1000, env(pairs));
        assert_eq!(at(&[("CZCTL_STATE_DIR", "/s")]), Path::new("/s"));
        assert_eq!(
            at(&[
                ("CZCTL_STATE_DIR", ""),
                ("XDG_STATE_HOME", "/x"),
                ("HOME", "/h")
            ]),
            Path::new("/x/czctl")
        );
        assert_eq!(
            at(&[
                ("CZCTL_STATE_DIR", ""),
                ("XDG_STATE_HOME", ""),
                ("HOME", "/h")
            ]),
            Path::new("/h/.local/state/czctl")
        );
        assert_eq!(
            at(&[("XDG_STATE_HOME", "relative"), ("HOME", "/h")]),
            Path::new("/h/.local/state/czctl")
        );
        // No usable home (uid 1000 may be in the password database: only check the fallback
        // shape for a uid nobody has).
        assert_eq!(
            state_dir_for(4_000_000_000, env(&[("HOME", ""), ("TMPDIR", "/t")])),
            Path::new("/t/czctl-state-4000000000")
        );
        assert_eq!(
            state_dir_for(4_000_000_000, env(&[("HOME", "/"), ("TMPDIR", "")])),
            Path::new("/tmp/czctl-state-4000000000")
        );
    }

    #[test]
    fn registry_dir_treats_empty_as_unset() {
        assert_eq!(
            registry_dir_for(1000, env(&[("CZCTL_REGISTRY_DIR", "/r")])),
            Path::new("/r")
        );
        assert_eq!(
            registry_dir_for(1000, env(&[("CZCTL_REGISTRY_DIR", ""), ("TMPDIR", "/t")])),
            Path::new("/t/czctl-loopback-1000")
        );
        assert_eq!(
            registry_dir_for(0, env(&[("CZCTL_REGISTRY_DIR", ""), ("TMPDIR", "/t")])),
            Path::new("/run/czctl-loopback")
        );
    }
}
