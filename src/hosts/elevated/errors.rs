//! Why elevation or an edit through the helper failed, with what to do about it.

use std::io;
use std::path::PathBuf;

use super::SUDO_ENV;

/// What to do when elevation is impossible, for every [`ElevateError`].
fn advice() -> &'static str {
    "To let czctl edit it: run `sudo -v` first (czctl then uses sudo for the hosts-file edits \
     only), or run czctl itself with sudo (your kubeconfig is still read from your home), or \
     pass --hosts-file PATH to write the names to a file you can edit"
}

/// The rest of [`ElevateError::Missing`]'s message.
fn missing(command: &str, source: &io::Error) -> String {
    if source.kind() == io::ErrorKind::NotFound {
        format!(
            "`{command}` is not installed (or not on PATH), so czctl cannot ask for root to edit \
             it. Install sudo (or set {SUDO_ENV} to your elevation command, such as doas), run \
             czctl as root, or pass --hosts-file PATH to write the names to a file you can edit"
        )
    } else {
        format!(
            "the elevation command `{command}` cannot be started ({source}). {}",
            advice()
        )
    }
}

/// Why czctl could not get a root helper for the hosts file. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ElevateError {
    /// The elevation command could not be started (not installed, not on PATH).
    #[error(
        "cannot edit {}: permission denied, and {}",
        .file.display(),
        missing(.command, .source)
    )]
    Missing {
        /// The hosts file.
        file: PathBuf,
        /// The elevation command.
        command: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The elevation command ran but the helper never answered: wrong password, not in the
    /// sudoers file, no terminal to ask the password on.
    #[error(
        "cannot edit {}: permission denied, and `{command}` did not start czctl's hosts-file \
         helper ({status}; its own message, if any, is printed with this one). {}",
        .file.display(),
        advice()
    )]
    Failed {
        /// The hosts file.
        file: PathBuf,
        /// The elevation command.
        command: String,
        /// How it ended.
        status: String,
    },
    /// The helper runs, but not as root.
    #[error(
        "cannot edit {}: permission denied, and the helper started with `{command}` runs as \
         uid {uid}, not root. {}",
        .file.display(),
        advice()
    )]
    NotRoot {
        /// The hosts file.
        file: PathBuf,
        /// The elevation command.
        command: String,
        /// The helper's uid.
        uid: u32,
    },
    /// The helper answered something that is not a hello.
    #[error(
        "cannot edit {}: the hosts-file helper started with `{command}` did not answer as \
         expected: {detail}. {}",
        .file.display(),
        advice()
    )]
    Protocol {
        /// The hosts file.
        file: PathBuf,
        /// The elevation command.
        command: String,
        /// What went wrong.
        detail: String,
    },
}

/// Why an edit through the helper failed.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// The helper refused or failed the edit; its message says why (for example a
    /// [`HostsError`](crate::hosts::HostsError) as root).
    #[error("{message} (as root, through czctl's hosts-file helper)")]
    Refused {
        /// The helper's message.
        message: String,
    },
    /// The helper is gone or its pipe broke: no more edits are possible in this run.
    #[error(
        "lost czctl's hosts-file helper (pid {pid}) that edits {}: {reason}; czctl can no \
         longer edit the hosts file in this run (czctl session close --all cleans up later)",
        .file.display()
    )]
    Lost {
        /// The hosts file.
        file: PathBuf,
        /// The helper's pid.
        pid: u32,
        /// What happened.
        reason: String,
    },
}
