//! `czctl hosts-helper`: the only part of czctl that runs as root when czctl itself does not.
//!
//! An unprivileged czctl that may not write the hosts file starts this helper once through
//! `sudo` (see [`elevated`](super::elevated)) and sends it one JSON request per line on stdin;
//! the helper answers one JSON line per request on stdout:
//!
//! ```text
//! {"op":"hello"}                                          → {"ok":true,"uid":0,"pid":4711}
//! {"op":"remove_stale"}                                   → {"ok":true,"outcome":"unchanged","removed":[],"unterminated":[]}
//! {"op":"backup_once","session":"tp-x","pid":42}          → {"ok":true,"backup":"/home/u/.local/state/czctl/hosts-tp-x.backup"}
//! {"op":"update","session":"tp-x","pid":42,"entries":[{"addr":"127.1.0.1","names":["echo"]}]}
//!                                                         → {"ok":true,"outcome":"renamed"}
//! {"op":"remove","session":"tp-x","pid":42}               → {"ok":true,"outcome":"in_place"}
//! {"op":"bind","addr":"127.1.0.1","port":80}              → {"ok":true,"fd":true} + the listener
//! anything refused                                        → {"ok":false,"error":"...","errno":13}
//! ```
//!
//! stdin and stdout are one Unix socket, so `bind` can hand the listening socket it made over
//! with SCM_RIGHTS: on Linux an unprivileged czctl may not bind ports below 1024 itself.
//!
//! # What a compromised parent can do with it
//! Only what czctl itself does: edit czctl's own marked blocks in the one file named by
//! `--file` when the helper started, and bind TCP ports below 1024 on czctl's own loopback
//! addresses. Session ids and names are validated by [`BlockId`](super::BlockId) and [`Entry`](super::Entry) (nothing can
//! inject lines), addresses must be in czctl's loopback range (127.1.0.0–127.191.255.255, see
//! [`loopback::ranges`], so never 127.0.0.1 or a resolver's 127.0.0.53), and the file
//! must be a regular file readable by everyone (a hosts file), so the helper never edits or
//! copies a secret such as `/etc/shadow`. Backups go into the existing `--state-dir` and get
//! the owner of that directory.
//!
//! # Lifetime
//! The helper lives until its stdin closes: when czctl exits, crashes or is killed, the pipe
//! closes and the helper removes every block it wrote and was not asked to remove, then exits.
//! It ignores SIGINT, SIGHUP, SIGQUIT and SIGTERM so a Ctrl-C or a `pkill czctl` aimed at
//! czctl cannot kill it before czctl's own teardown has asked it to remove the block.

use std::io;
use std::os::fd::AsFd;
use std::path::Path;

/// `eprintln!` that never panics: the helper's stderr may be a closed terminal or pipe, and a
/// failed message must not stop the cleanup.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod backup;
mod checks;
mod protocol;
mod serve;

pub(crate) use protocol::{Reply, Request, WireEntry};
pub(crate) use serve::serve;

use checks::check_file;

/// Runs the helper on this process's stdin and stdout (the `hosts-helper` subcommand).
/// The argument that selects the helper: `czctl hosts-helper --file PATH --state-dir DIR`.
/// It is parsed before and outside the public command line, so it appears in no help text,
/// completion script or man page.
pub const ARG: &str = "hosts-helper";

/// Parses the helper's arguments (after [`ARG`]): exactly `--file PATH --state-dir DIR`.
pub fn parse_args(
    args: &[std::ffi::OsString],
) -> Result<(std::path::PathBuf, std::path::PathBuf), crate::exit::Fatal> {
    let usage = || {
        crate::exit::Fatal::new(
            crate::exit::Code::Usage,
            "usage: czctl hosts-helper --file PATH --state-dir DIR (started by czctl itself through sudo)",
        )
    };
    match args {
        [f, file, d, dir] if f == "--file" && d == "--state-dir" => Ok((file.into(), dir.into())),
        _ => Err(usage()),
    }
}

/// Runs the helper until its client goes away.
pub fn run(file: &Path, state_dir: &Path) -> Result<(), crate::exit::Fatal> {
    ignore_stop_signals();
    let file =
        check_file(file).map_err(|e| crate::exit::Fatal::new(crate::exit::Code::Local, e))?;
    let stdin = io::stdin().lock();
    let stdout = io::stdout();
    serve(
        &file,
        state_dir,
        stdin,
        stdout.as_fd(),
        &|session: &str, pid: u32| {
            crate::session::process::block_owner_alive(state_dir, session, pid)
        },
    );
    Ok(())
}

/// The helper must outlive a Ctrl-C or SIGTERM meant for czctl: it ends when its stdin closes.
fn ignore_stop_signals() {
    for signal in [libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGTERM] {
        // SAFETY: SIG_IGN installs no handler, so no code of ours can run inside a signal; the
        // old disposition that signal(3) returns is not used. (No safe wrapper exists: rustix
        // and nix expose signal dispositions only as unsafe functions.)
        unsafe {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
}
