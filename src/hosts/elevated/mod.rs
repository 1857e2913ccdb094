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
//! Every call blocks on a round trip to the helper, so async code makes them on a blocking
//! thread. A request other than the first `hello` (which waits for sudo's password prompt)
//! gets [`REPLY_WAIT`] for its answer; a helper that does not answer in time is given up (its
//! socket closed, so it cleans up and exits) and the error names the request it did not
//! answer. [`Elevated::close`] ends the helper and waits for it at teardown; dropping an
//! `Elevated` never waits: it only closes the socket, which ends the helper just the same.
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

/// How long czctl waits for the helper's answer to a request (its `hello` aside): longer than
/// the helper may wait for the hosts file's lock (10 s), so a slow edit is still answered.
pub const REPLY_WAIT: Duration = Duration::from_secs(30);

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
    /// The read and write timeout now set on `sock`.
    timeout: Option<Duration>,
    /// How long a request other than `hello` waits for its answer ([`REPLY_WAIT`]).
    reply_wait: Duration,
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
        let Channel {
            sock: held,
            lines,
            timeout,
            reply_wait,
            ..
        } = channel;
        let Some(sock) = held.as_mut() else {
            return Err(Exchange::Closed("its socket is closed".into()));
        };
        lines.drop_fds();
        // The first hello waits for sudo, which may be asking for a password.
        let wait = (!matches!(request, Request::Hello)).then_some(*reply_wait);
        if *timeout != wait {
            sock.set_read_timeout(wait)
                .and_then(|()| sock.set_write_timeout(wait))
                .map_err(|e| {
                    Exchange::Closed(format!("cannot set a timeout on its socket: {e}"))
                })?;
            *timeout = wait;
        }
        let timed_out = |e: &io::Error| {
            matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            )
        };
        let mut line = serde_json::to_string(request).expect("a request serializes");
        line.push('\n');
        let result = match sock.write_all(line.as_bytes()) {
            Err(e) if timed_out(&e) => Err(Exchange::Closed(gave_up("take", request, *reply_wait))),
            Err(e) => Err(Exchange::Closed(format!("cannot write to it: {e}"))),
            Ok(()) => match lines.read_line(sock.as_fd()) {
                Ok(Some(answer)) => serde_json::from_str(&answer).map_err(|e| {
                    Exchange::Broken(format!("unreadable answer {:?}: {e}", answer.trim()))
                }),
                Ok(None) => Err(Exchange::Closed("it exited".into())),
                Err(e) if timed_out(&e) => {
                    Err(Exchange::Closed(gave_up("answer", request, *reply_wait)))
                }
                Err(e) => Err(Exchange::Closed(format!("cannot read from it: {e}"))),
            },
        };
        if result.is_err() {
            // Out of step with the helper (a late answer would be taken for the next one):
            // close the socket, which also makes the helper clean up and exit.
            *held = None;
        }
        result
    }
}

/// Why the helper was given up: it did not `take` or `answer` `request` within `waited`.
fn gave_up(verb: &str, request: &Request, waited: Duration) -> String {
    let what = match request {
        Request::Hello => "its hello".to_string(),
        Request::RemoveStale => "the removal of stale hosts blocks".into(),
        Request::BackupOnce { .. } => "the backup of the hosts file".into(),
        Request::Update { entries, .. } => {
            format!(
                "the update of czctl's hosts block ({} addresses)",
                entries.len()
            )
        }
        Request::Remove { .. } => "the removal of czctl's hosts block".into(),
        Request::Bind { addr, port } => format!("binding {addr}:{port}"),
    };
    format!(
        "it did not {verb} {what} within {waited:?} (stuck, or waiting for the hosts file's \
         lock); czctl closed its end"
    )
}

/// Why one exchange with the helper failed.
enum Exchange {
    /// The helper is gone (EOF, broken pipe).
    Closed(String),
    /// It answered something that is not a reply.
    Broken(String),
}

impl Elevated {
    /// Ends the helper: closes its stdin (it removes any block it was not asked to remove,
    /// then exits) and waits up to a few seconds for the process czctl started to end. Blocks:
    /// call it from a blocking thread (teardown does). Later requests fail with
    /// [`HelperError::Lost`].
    pub fn close(&self) {
        let status = self.wait_exit(EXIT_WAIT);
        tracing::debug!(pid = self.helper_pid, %status, "root helper closed");
    }
}

impl Drop for Elevated {
    /// The last resort when [`Elevated::close`] was not called: never waits. Closing the
    /// socket ends the helper as `close` does (the helper then cleans up on its own; killing
    /// it instead would stop that cleanup). An elevation process still running is reaped by
    /// a thread of its own, so it does not linger as a zombie.
    fn drop(&mut self) {
        let channel = self.channel.get_mut().unwrap_or_else(|e| e.into_inner());
        channel.sock = None;
        let Some(mut child) = channel.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let _ = std::thread::Builder::new()
                .name("czctl-helper-reaper".into())
                .spawn(move || child.wait());
        }
    }
}

#[cfg(test)]
mod tests;

/// The parent's copy of a handed-over helper's socket, and the elevation process (not
/// waited for: the helper lives on with the child).
pub struct HandOver {
    _sock: Option<UnixStream>,
    _child: Option<Child>,
}
