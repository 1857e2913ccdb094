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
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::fdpass::Lines;
use super::helper::{Reply, Request};

/// The environment variable naming the elevation command (default `sudo`); split on
/// whitespace, so `sudo -n` or `doas` work too.
pub const SUDO_ENV: &str = "CZCTL_SUDO";

/// The environment variable that hands a running helper's socket to a detached child:
/// `FD,HELPER_PID`.
pub const INHERIT_ENV: &str = "CZCTL_HOSTS_HELPER";

/// How long czctl waits for the helper to finish its cleanup when czctl closes its stdin.
const EXIT_WAIT: Duration = Duration::from_secs(5);

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
    /// [`HostsError`](super::HostsError) as root).
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

/// The elevation command: `CZCTL_SUDO` split on whitespace, else `sudo`.
fn elevation_command() -> Vec<String> {
    let words: Vec<String> = std::env::var(SUDO_ENV)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if words.is_empty() {
        vec!["sudo".into()]
    } else {
        words
    }
}

impl Elevated {
    /// Starts `sudo -- CZCTL hosts-helper --file FILE --state-dir DIR` (sudo prompts on the
    /// terminal if it needs a password) and checks with `hello` that the helper runs as root.
    /// sudo's and the helper's messages go to `log`, else to czctl's stderr.
    pub fn start(
        file: &Path,
        state_dir: &Path,
        log: Option<std::fs::File>,
    ) -> Result<Elevated, ElevateError> {
        let file = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
        let state_dir = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        let words = elevation_command();
        let command = words.join(" ");
        let exe = std::env::current_exe().map_err(|e| ElevateError::Protocol {
            file: file.clone(),
            command: command.clone(),
            detail: format!("cannot find the czctl executable to run as the helper: {e}"),
        })?;
        let mut cmd = Command::new(&words[0]);
        cmd.args(&words[1..]);
        if Path::new(&words[0]).file_name() == Some("sudo".as_ref()) {
            let shown = file.display().to_string().replace('%', "%%");
            cmd.arg("-p").arg(format!(
                "[sudo] czctl needs root only to edit {shown} (and to listen on ports below \
                 1024); password for %p: "
            ));
        }
        cmd.arg("--")
            .arg(exe)
            .arg("hosts-helper")
            .arg("--file")
            .arg(&file)
            .arg("--state-dir")
            .arg(&state_dir)
            .stderr(log.map_or_else(Stdio::inherit, Stdio::from));
        let missing = |source| ElevateError::Missing {
            file: file.clone(),
            command: command.clone(),
            source,
        };
        let (ours, theirs) = UnixStream::pair().map_err(missing)?;
        let theirs_too = theirs.try_clone().map_err(missing)?;
        cmd.stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::from(OwnedFd::from(theirs_too)));
        let spawned = cmd.spawn();
        // Only the helper keeps its end: our copies go with the Command.
        drop(cmd);
        let child = spawned.map_err(missing)?;
        let mut elevated = Elevated {
            file,
            state_dir,
            helper_pid: 0,
            channel: Mutex::new(Channel {
                sock: Some(ours),
                lines: Lines::default(),
                child: Some(child),
            }),
        };
        elevated.hello(&command)?;
        Ok(elevated)
    }

    /// Adopts the helper a `--detach` parent handed over through [`INHERIT_ENV`], if any.
    /// Only the first call in a process adopts.
    pub fn inherited(file: &Path, state_dir: &Path) -> Option<Result<Elevated, ElevateError>> {
        static TAKEN: AtomicBool = AtomicBool::new(false);
        let value = std::env::var(INHERIT_ENV).ok()?;
        if TAKEN.swap(true, Ordering::SeqCst) {
            return None;
        }
        let protocol = |detail: String| ElevateError::Protocol {
            file: file.to_path_buf(),
            command: format!("{INHERIT_ENV}={value}"),
            detail,
        };
        let fd: i32 = match value.split(',').next().map(str::parse) {
            Some(Ok(fd)) if fd > 2 => fd,
            _ => return Some(Err(protocol("malformed value".into()))),
        };
        // SAFETY: F_GETFD/F_SETFD only inspect and set the descriptor's flags.
        let open = unsafe {
            libc::fcntl(fd, libc::F_GETFD) >= 0
                && libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) >= 0
        };
        if !open {
            return Some(Err(protocol(format!("descriptor {fd} is not open"))));
        }
        // SAFETY: the descriptor is open (checked above), was opened for us by the parent,
        // and nothing else in this process owns it (adopted once, guarded by TAKEN).
        let sock = unsafe { UnixStream::from_raw_fd(fd) };
        let mut elevated = Elevated {
            file: file.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            helper_pid: 0,
            channel: Mutex::new(Channel {
                sock: Some(sock),
                lines: Lines::default(),
                child: None,
            }),
        };
        Some(
            elevated
                .hello("the helper of the foreground czctl")
                .map(|()| elevated),
        )
    }

    /// Hands the helper's socket to the child `cmd` will start (see [`INHERIT_ENV`]); keep the
    /// returned guard until the child is spawned, then drop it.
    pub fn hand_over(self, cmd: &mut Command) -> HandOver {
        let mut this = self;
        let helper_pid = this.helper_pid;
        let channel = this.channel.get_mut().unwrap_or_else(|e| e.into_inner());
        let sock = channel.sock.take();
        let child = channel.child.take();
        if let Some(fd) = sock.as_ref().map(AsRawFd::as_raw_fd) {
            cmd.env(INHERIT_ENV, format!("{fd},{helper_pid}"));
            // SAFETY: fcntl(F_SETFD) is async-signal-safe; it clears close-on-exec on the
            // child's copy of this one descriptor only.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        HandOver {
            _sock: sock,
            _child: child,
        }
    }

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

    fn hello(&mut self, command: &str) -> Result<(), ElevateError> {
        let protocol = |detail: String| ElevateError::Protocol {
            file: self.file.clone(),
            command: command.to_string(),
            detail,
        };
        let reply = match self.exchange(&Request::Hello) {
            Ok(reply) => reply,
            Err(Exchange::Closed(_)) => {
                let status = self.wait_exit(Duration::from_secs(2));
                return Err(ElevateError::Failed {
                    file: self.file.clone(),
                    command: command.to_string(),
                    status,
                });
            }
            Err(Exchange::Broken(detail)) => return Err(protocol(detail)),
        };
        if !reply.ok {
            return Err(protocol(reply.error.unwrap_or_default()));
        }
        match (reply.uid, reply.pid) {
            (Some(0), Some(pid)) => {
                self.helper_pid = pid;
                Ok(())
            }
            (Some(uid), Some(_)) => Err(ElevateError::NotRoot {
                file: self.file.clone(),
                command: command.to_string(),
                uid,
            }),
            _ => Err(protocol("no uid and pid in its hello".into())),
        }
    }

    /// Closes the helper's stdin and waits (briefly) for the process we started to end.
    fn wait_exit(&mut self, timeout: Duration) -> String {
        let channel = self.channel.get_mut().unwrap_or_else(|e| e.into_inner());
        channel.sock = None;
        let Some(child) = channel.child.as_mut() else {
            return "the helper's pipe closed".into();
        };
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.to_string(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => return "it closed its output but is still running".into(),
                Err(e) => return e.to_string(),
            }
        }
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
