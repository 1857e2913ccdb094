//! Hosts-file edits through `czctl hosts-helper` run as root: started once with `sudo` (or the
//! command in `CZCTL_SUDO`), spoken to over one Unix socket that is its stdin and stdout (see
//! [`helper`](super::helper)). The helper also binds ports below 1024 for czctl's listeners.
//!
//! Everything else (the Kubernetes client and its exec credential plugins, listeners, state)
//! stays in the unprivileged czctl. sudo asks for the password on the terminal itself. When
//! czctl exits or is killed the helper's stdin closes and it removes what it wrote.
//!
//! `--detach` starts the helper in the foreground process (which has the terminal for the
//! password) and hands its socket to the background child ([`Elevated::hand_over`],
//! [`Elevated::inherited`]).
//!
//! An administrator who wants no password prompt can allow exactly this command, for example
//! (`czctl` as `readlink -f` names it, since czctl runs its own executable):
//! ```text
//! alice ALL=(root) NOPASSWD: /usr/local/bin/czctl hosts-helper --file /etc/hosts --state-dir *
//! ```

use std::io::{self, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;
use std::time::Duration;

use super::fdpass::Lines;
use super::helper::{Reply, Request};

mod errors;
mod spawn;

pub use errors::{ElevateError, HelperError};

/// The environment variable naming the elevation command (default `sudo`); split on
/// whitespace, so `sudo -n` or `doas` work too.
pub const SUDO_ENV: &str = "CZCTL_SUDO";

/// The environment variable that hands a running helper's socket to a detached child:
/// `FD,HELPER_PID`.
pub const INHERIT_ENV: &str = "CZCTL_HOSTS_HELPER";

/// How long czctl waits for the helper to finish its cleanup when czctl closes its stdin.
const EXIT_WAIT: Duration = Duration::from_secs(5);

/// A running root helper.
pub struct Elevated {
    file: PathBuf,
    state_dir: PathBuf,
    helper_pid: u32,
    channel: Mutex<Channel>,
}

struct Channel {
    /// Our end of the socket that is the helper's stdin and stdout; `None` once closed or
    /// handed over.
    sock: Option<UnixStream>,
    /// Replies read so far, and listeners that came with them.
    lines: Lines,
    /// The elevation process we started (sudo), to reap; `None` when inherited.
    child: Option<Child>,
}

impl std::fmt::Debug for Elevated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elevated")
            .field("file", &self.file)
            .field("helper_pid", &self.helper_pid)
            .finish()
    }
}

impl Elevated {
    /// Has the helper bind `addr:port` (a port below 1024, which this user may not bind) and
    /// returns the listener it hands over.
    pub fn bind(&self, addr: Ipv4Addr, port: u16) -> io::Result<TcpListener> {
        let mut channel = self.channel.lock().unwrap_or_else(|e| e.into_inner());
        let reply = Self::exchange_locked(&mut channel, &Request::Bind { addr, port }).map_err(
            |e| match e {
                Exchange::Closed(reason) | Exchange::Broken(reason) => io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    format!("lost czctl's root helper: {reason}"),
                ),
            },
        )?;
        if !reply.ok {
            return Err(match reply.errno {
                Some(errno) => io::Error::from_raw_os_error(errno),
                None => io::Error::other(reply.error.unwrap_or_default()),
            });
        }
        match channel.lines.take_fd() {
            Some(fd) => Ok(TcpListener::from(fd)),
            None => Err(io::Error::other(
                "czctl's root helper bound the port but no listener came with its answer",
            )),
        }
    }

    /// The helper's pid (as it reported it).
    pub fn helper_pid(&self) -> u32 {
        self.helper_pid
    }

    /// The hosts file the helper edits.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The state directory the helper writes backups to.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Sends `request` and returns the helper's successful reply.
    pub(crate) fn request(&self, request: &Request) -> Result<Reply, HelperError> {
        let lost = |reason: String| HelperError::Lost {
            file: self.file.clone(),
            pid: self.helper_pid,
            reason,
        };
        let reply = self.exchange(request).map_err(|e| match e {
            Exchange::Closed(reason) | Exchange::Broken(reason) => lost(reason),
        })?;
        if reply.ok {
            Ok(reply)
        } else {
            Err(HelperError::Refused {
                message: reply.error.unwrap_or_else(|| "no reason given".into()),
            })
        }
    }

    fn exchange(&self, request: &Request) -> Result<Reply, Exchange> {
        let mut channel = self.channel.lock().unwrap_or_else(|e| e.into_inner());
        let reply = Self::exchange_locked(&mut channel, request);
        // Only `bind` answers carry a listener; anything else that came along is closed.
        channel.lines.drop_fds();
        reply
    }

    fn exchange_locked(channel: &mut Channel, request: &Request) -> Result<Reply, Exchange> {
        let Channel { sock, lines, .. } = channel;
        let Some(sock) = sock.as_mut() else {
            return Err(Exchange::Closed("its socket is closed".into()));
        };
        lines.drop_fds();
        let mut line = serde_json::to_string(request).expect("a request serializes");
        line.push('\n');
        sock.write_all(line.as_bytes())
            .map_err(|e| Exchange::Closed(format!("cannot write to it: {e}")))?;
        let answer = match lines.read_line(sock.as_fd()) {
            Ok(Some(answer)) => answer,
            Ok(None) => return Err(Exchange::Closed("it exited".into())),
            Err(e) => return Err(Exchange::Closed(format!("cannot read from it: {e}"))),
        };
        serde_json::from_str(&answer)
            .map_err(|e| Exchange::Broken(format!("unreadable answer {:?}: {e}", answer.trim())))
    }
}

/// Why one exchange with the helper failed.
enum Exchange {
    /// The helper is gone (EOF, broken pipe).
    Closed(String),
    /// It answered something that is not a reply.
    Broken(String),
}

impl Drop for Elevated {
    fn drop(&mut self) {
        // Closing stdin ends the helper, which removes any block it was not asked to remove.
        let _ = self.wait_exit(EXIT_WAIT);
    }
}

/// The parent's copy of a handed-over helper's socket, and the elevation process (not
/// waited for: the helper lives on with the child).
pub struct HandOver {
    _sock: Option<UnixStream>,
    _child: Option<Child>,
}
