//! Starting the helper through sudo, adopting a handed-over one, and handing it over.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{
    Channel, ElevateError, Elevated, Exchange, HandOver, INHERIT_ENV, REPLY_WAIT, SUDO_ENV,
};
use crate::hosts::fdpass::Lines;
use crate::hosts::helper::Request;

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
                timeout: None,
                reply_wait: REPLY_WAIT,
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
        // SAFETY: fcntl(F_GETFD) takes any number and only reads that descriptor's flags (EBADF
        // when none is open). Ownership: czctl sets INHERIT_ENV only for the child it hands
        // the descriptor to (`hand_over`) and removes it from the other children it starts, so
        // `fd` (open: F_GETFD succeeded; above stdio) came through exec and no object in this
        // process opened it; only this call adopts it (TAKEN).
        let sock =
            unsafe { (libc::fcntl(fd, libc::F_GETFD) >= 0).then(|| OwnedFd::from_raw_fd(fd)) };
        let Some(sock) =
            sock.filter(|sock| rustix::io::fcntl_setfd(sock, rustix::io::FdFlags::CLOEXEC).is_ok())
        else {
            return Some(Err(protocol(format!("descriptor {fd} is not open"))));
        };
        let sock = UnixStream::from(sock);
        let mut elevated = Elevated {
            file: file.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            helper_pid: 0,
            channel: Mutex::new(Channel {
                sock: Some(sock),
                lines: Lines::default(),
                child: None,
                timeout: None,
                reply_wait: REPLY_WAIT,
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
            // SAFETY: the closure runs in the forked child before exec, where only
            // async-signal-safe work is allowed: one fcntl system call (rustix issues it
            // directly; its error converts without allocating). It clears close-on-exec on the
            // child's copy of `sock` only, which is open: HandOver keeps `sock` open until the
            // child is spawned.
            unsafe {
                cmd.pre_exec(move || {
                    let fd = BorrowedFd::borrow_raw(fd);
                    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())
                        .map_err(io::Error::from)
                });
            }
        }
        HandOver {
            _sock: sock,
            _child: child,
        }
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
    /// Blocks: only for blocking threads.
    pub(super) fn wait_exit(&self, timeout: Duration) -> String {
        let mut channel = self.channel.lock().unwrap_or_else(|e| e.into_inner());
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
}
