//! Which process a session record names, and whether it is still that process.
//!
//! A pid alone does not name a process: pids are reused, mean something else in another PID
//! namespace, and `0` or `1` name no session at all (`kill(0, …)` signals the caller's own
//! process group). A record therefore carries the [`Identity`] of its process, taken when the
//! record is written: the start time (`/proc/PID/stat` field 22, clock ticks after boot), the
//! boot id, the PID namespace and the executable. [`judge`] compares it with what runs now:
//!
//! - [`Liveness::Running`]: same boot, same PID namespace, the pid runs, started at the same
//!   tick, same executable (a rebuilt one, `… (deleted)`, counts as the same).
//! - [`Liveness::Gone`]: the pid runs nothing (or a zombie), or the machine was restarted.
//! - [`Liveness::Reused`]: the pid now belongs to another process. Never signalled.
//! - [`Liveness::OtherNamespace`]: written in another PID namespace; its pid means nothing
//!   here, so whether it runs cannot be told: it counts as running, is never signalled and is
//!   never cleaned up by `session close --all`.
//! - [`Liveness::Unverified`]: the pid runs something, but the record has no identity (an older
//!   czctl, or `/proc` could not be read): it counts as running and is never signalled.
//!
//! Signals go through a pidfd ([`Verified`]) opened before the identity is checked, so they
//! reach exactly the verified process even if it exits and its pid is reused meanwhile
//! (`pidfd_open` needs Linux 5.3; older kernels fall back to `kill` after a fresh check).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What makes a process the one a record was written for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    /// When it started, in clock ticks after boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
    /// The boot it started in (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// Its PID namespace (`readlink /proc/PID/ns/pid`, e.g. `pid:[4026531836]`).
    pub pid_namespace: String,
    /// Its executable (`readlink /proc/PID/exe`), when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<PathBuf>,
}

/// Whether the process a record names still runs; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// Verified: it is the recorded process.
    Running,
    /// The process ended (its pid runs nothing, or the machine was restarted).
    Gone,
    /// The pid belongs to another process now.
    Reused {
        /// What differs, for messages.
        why: String,
    },
    /// Written in another PID namespace: cannot tell from here.
    OtherNamespace,
    /// The pid runs something that cannot be verified to be the recorded process.
    Unverified {
        /// Why not, for messages.
        why: String,
    },
}

impl Liveness {
    /// The process ended or is another one: the record is stale, what it left may be cleaned.
    pub fn is_stale(&self) -> bool {
        matches!(self, Liveness::Gone | Liveness::Reused { .. })
    }

    /// The text `session list` shows when it is not the record's own state.
    pub fn shown_state(&self) -> Option<super::record::SessionState> {
        match self {
            Liveness::OtherNamespace => Some(super::record::SessionState::Unknown),
            _ => None,
        }
    }

    /// Why the process is not (known to be) the recorded one, for messages; empty when it is.
    pub fn describe(&self, pid: u32) -> String {
        match self {
            Liveness::Running => String::new(),
            Liveness::Gone => format!("pid {pid} is gone"),
            Liveness::Reused { why } => why.clone(),
            Liveness::OtherNamespace => format!(
                "it was started in another PID namespace (pid {pid} there), so czctl cannot \
                 tell from here whether it still runs"
            ),
            Liveness::Unverified { why } => why.clone(),
        }
    }
}

/// Whether a process with this pid exists and has not exited (a zombie has: it only waits to
/// be reaped). Pid 0 and pids above `i32::MAX` are no process (passed to `kill` they would
/// name process groups). This knows nothing of identity: see [`judge`] for records.
pub fn is_alive(pid: u32) -> bool {
    let Some(pid) = signalable(pid) else {
        return false;
    };
    // Signal 0 only checks for existence and permission.
    let exists = match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    };
    // A zombie has ended; it only waits for its parent (for a detached session, whatever
    // adopted it) to reap it.
    exists && !is_zombie(pid.as_raw_nonzero().get())
}

/// Whether `/proc` says the process has exited but is not reaped yet (Linux; elsewhere false).
pub fn is_zombie(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    stat_fields(&stat).and_then(|mut f| f.next()) == Some("Z")
}

/// The pid as `kill(2)` takes it when it names one process: 1..=i32::MAX.
fn signalable(pid: u32) -> Option<rustix::process::Pid> {
    i32::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .and_then(rustix::process::Pid::from_raw)
}

/// The fields of `/proc/PID/stat` from the third (state) on: COMM may contain spaces and
/// parentheses, so they are read after the last ')'.
fn stat_fields(stat: &str) -> Option<std::str::SplitWhitespace<'_>> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace())
}

fn start_time_in(stat: &str) -> Option<u64> {
    // Field 22 (starttime); the fields after ')' start at field 3.
    stat_fields(stat)?.nth(22 - 3)?.parse().ok()
}

fn start_time(proc_dir: &str) -> Option<u64> {
    start_time_in(&std::fs::read_to_string(format!("{proc_dir}/stat")).ok()?)
}

fn boot_id() -> Option<&'static str> {
    static BOOT: OnceLock<Option<String>> = OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
    .as_deref()
}

fn link(path: String) -> Option<PathBuf> {
    std::fs::read_link(path).ok()
}

fn namespace_of(proc_dir: &str) -> Option<String> {
    link(format!("{proc_dir}/ns/pid")).map(|p| p.to_string_lossy().into_owned())
}

/// Our own PID namespace.
pub fn own_pid_namespace() -> Option<&'static str> {
    static NS: OnceLock<Option<String>> = OnceLock::new();
    NS.get_or_init(|| namespace_of("/proc/self")).as_deref()
}

/// Whether `/proc/PID` names processes of our PID namespace (it does not when `/proc` was
/// mounted for another one, e.g. after `unshare --pid` without `--mount-proc`).
fn proc_is_ours() -> bool {
    static OURS: OnceLock<bool> = OnceLock::new();
    *OURS.get_or_init(|| {
        link("/proc/self".into())
            .is_some_and(|p| p.to_string_lossy() == std::process::id().to_string())
    })
}

/// An executable path without the ` (deleted)` the kernel appends once the file was replaced
/// (a rebuild or an upgrade while the process runs).
fn undeleted(exe: &Path) -> PathBuf {
    let text = exe.to_string_lossy();
    PathBuf::from(text.strip_suffix(" (deleted)").unwrap_or(&text).to_string())
}

/// Whether `pid` runs a czctl executable (one whose file name starts with `czctl`): `None`
/// when that cannot be read (another user's process, no `/proc`, the pid is gone).
pub fn runs_czctl(pid: u32) -> Option<bool> {
    if !proc_is_ours() || signalable(pid).is_none() {
        return None;
    }
    let exe = undeleted(&link(format!("/proc/{pid}/exe"))?);
    Some(
        exe.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("czctl")),
    )
}

impl Identity {
    /// This process's identity, or `None` where `/proc` cannot tell it.
    pub fn current() -> Option<Identity> {
        static CURRENT: OnceLock<Option<Identity>> = OnceLock::new();
        CURRENT
            .get_or_init(|| {
                Some(Identity {
                    start_time: start_time("/proc/self")?,
                    boot_id: boot_id()?.to_string(),
                    pid_namespace: own_pid_namespace()?.to_string(),
                    exe: link("/proc/self/exe".into()),
                })
            })
            .clone()
    }

    /// The identity of the running process `pid` (ours, or a child just started), or `None`
    /// where it cannot be read.
    pub fn of(pid: u32) -> Option<Identity> {
        if pid == std::process::id() {
            return Identity::current();
        }
        if !proc_is_ours() || signalable(pid).is_none() {
            return None;
        }
        let dir = format!("/proc/{pid}");
        Some(Identity {
            start_time: start_time(&dir)?,
            boot_id: boot_id()?.to_string(),
            pid_namespace: namespace_of(&dir)?,
            exe: link(format!("{dir}/exe")),
        })
    }

    /// Whether `pid` is still the process this identity was taken of.
    pub fn matches(&self, pid: u32) -> Liveness {
        if boot_id().is_some_and(|b| b != self.boot_id) {
            return Liveness::Gone;
        }
        match own_pid_namespace() {
            Some(ns) if ns != self.pid_namespace => return Liveness::OtherNamespace,
            Some(_) => {}
            None => {
                return unverified_or_gone(pid, "czctl cannot read its own PID namespace");
            }
        }
        if !is_alive(pid) {
            return Liveness::Gone;
        }
        if !proc_is_ours() {
            return Liveness::Unverified {
                why: format!(
                    "/proc does not show this PID namespace, so pid {pid} cannot be verified"
                ),
            };
        }
        let dir = format!("/proc/{pid}");
        match start_time(&dir) {
            None if !is_alive(pid) => return Liveness::Gone,
            None => {
                return Liveness::Unverified {
                    why: format!("cannot read /proc/{pid}/stat"),
                }
            }
            Some(t) if t != self.start_time => {
                return Liveness::Reused {
                    why: format!(
                        "pid {pid} now belongs to another process ({}started after the session)",
                        exe_note(pid)
                    ),
                }
            }
            Some(_) => {}
        }
        if let (Some(recorded), Some(now)) = (&self.exe, link(format!("{dir}/exe"))) {
            if undeleted(recorded) != undeleted(&now) {
                return Liveness::Reused {
                    why: format!(
                        "pid {pid} now runs {}, not {}",
                        now.display(),
                        recorded.display()
                    ),
                };
            }
        }
        Liveness::Running
    }
}

fn exe_note(pid: u32) -> String {
    link(format!("/proc/{pid}/exe"))
        .map(|e| format!("{}, ", e.display()))
        .unwrap_or_default()
}

fn unverified_or_gone(pid: u32, why: &str) -> Liveness {
    if is_alive(pid) {
        Liveness::Unverified {
            why: format!("{why}, so pid {pid} cannot be verified"),
        }
    } else {
        Liveness::Gone
    }
}

/// Whether the process a record names (`pid`, and the identity taken when it was written,
/// if any) still runs. A record without identity is [`Liveness::Unverified`] while its pid
/// runs anything: it is never signalled, and stale only once the pid is gone.
pub fn judge(pid: u32, identity: Option<&Identity>) -> Liveness {
    match identity {
        Some(identity) => identity.matches(pid),
        None => unverified_or_gone(
            pid,
            "its record has no process identity (written by an older czctl)",
        ),
    }
}

/// Whether the owner of a hosts block (the session id and pid of its begin marker) may still
/// run; `false` means the block is stale and may be removed. The session's record in
/// `state_dir` decides when there is one with that pid (see [`judge`]: a reused pid is stale,
/// another PID namespace is not). Without one, the pid decides: 0 is no process, a pid that
/// runs something other than czctl is stale, a pid whose executable cannot be read counts as
/// running.
pub fn block_owner_alive(state_dir: &Path, session: &str, pid: u32) -> bool {
    block_owner_alive_by(state_dir, session, pid, is_alive)
}

/// [`block_owner_alive`], with `is_alive` saying whether a pid without a record runs.
pub fn block_owner_alive_by(
    state_dir: &Path,
    session: &str,
    pid: u32,
    is_alive: impl Fn(u32) -> bool,
) -> bool {
    if let Some(record) = super::record::load(state_dir, session) {
        if record.pid == pid {
            return !record.liveness().is_stale();
        }
    }
    pid != 0 && is_alive(pid) && runs_czctl(pid) != Some(false)
}

/// A process verified to be the one an [`Identity`] was taken of, held open (as a pidfd where
/// the kernel has them) so signals reach it and nothing else.
#[derive(Debug)]
pub struct Verified {
    pid: u32,
    identity: Identity,
    pidfd: Option<OwnedFd>,
}

impl Verified {
    /// Opens `pid` if it is the process `identity` describes; otherwise says what it is.
    pub fn open(pid: u32, identity: &Identity) -> Result<Verified, Liveness> {
        let Some(raw) = signalable(pid) else {
            return Err(Liveness::Gone);
        };
        // The pidfd first: if the identity then matches, the pidfd is that process.
        let pidfd = pidfd_open(raw);
        match identity.matches(pid) {
            Liveness::Running => {}
            other => return Err(other),
        }
        let verified = Verified {
            pid,
            identity: identity.clone(),
            pidfd,
        };
        if verified.exited() {
            return Err(Liveness::Gone);
        }
        Ok(verified)
    }

    /// The pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` to the process (nothing once it ended, or for a number that names no
    /// signal).
    pub fn signal(&self, signal: i32) {
        let Some(signal) = rustix::process::Signal::from_named_raw(signal) else {
            return;
        };
        // Failures are ignored: the process may have ended meanwhile.
        match &self.pidfd {
            Some(fd) => {
                let _ = rustix::process::pidfd_send_signal(fd, signal);
            }
            None => {
                if let (Liveness::Running, Some(pid)) =
                    (self.identity.matches(self.pid), signalable(self.pid))
                {
                    let _ = rustix::process::kill_process(pid, signal);
                }
            }
        }
    }

    /// Whether the process has exited.
    pub fn exited(&self) -> bool {
        match &self.pidfd {
            Some(fd) => {
                use rustix::event::{poll, PollFd, PollFlags, Timespec};
                let mut fds = [PollFd::new(fd, PollFlags::IN)];
                // A pidfd polls readable once its process has exited; an error counts as exited.
                match poll(&mut fds, Some(&Timespec::default())) {
                    Ok(0) => false,
                    Ok(_) => !fds[0].revents().is_empty(),
                    Err(_) => true,
                }
            }
            None => self.identity.matches(self.pid) != Liveness::Running,
        }
    }

    /// Waits up to `timeout` for the process to exit; whether it did.
    pub async fn wait_gone(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.exited() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.exited()
    }
}

/// A pidfd for `pid`, or `None` (no such process, or a kernel without pidfds).
fn pidfd_open(pid: rustix::process::Pid) -> Option<OwnedFd> {
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_the_last_parenthesis() {
        let stat = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 \
                    1000 100";
        assert_eq!(start_time_in(stat), Some(123456));
        assert_eq!(start_time_in("garbage"), None);
    }

    #[test]
    fn liveness_of_pids() {
        assert!(is_alive(std::process::id()));
        assert!(
            !is_alive(0),
            "pid 0 is no process (kill(0) is our process group)"
        );
        assert!(!is_alive(u32::MAX));
        assert!(!is_alive(0x7fff_fff0));
    }

    #[test]
    fn our_identity_matches_us_and_nobody_else() {
        let Some(me) = Identity::current() else {
            return; // no /proc here
        };
        assert_eq!(me.matches(std::process::id()), Liveness::Running);
        assert_eq!(judge(std::process::id(), Some(&me)), Liveness::Running);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(
            matches!(me.matches(pid), Liveness::Reused { .. }),
            "{:?}",
            me.matches(pid)
        );
        let theirs = Identity::of(pid).unwrap();
        assert_eq!(theirs.matches(pid), Liveness::Running);
        assert!(matches!(judge(pid, None), Liveness::Unverified { .. }));
        assert_eq!(runs_czctl(pid), Some(false));
        let verified = Verified::open(pid, &theirs).unwrap();
        assert!(Verified::open(pid, &me).is_err());
        assert!(!verified.exited());
        verified.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !verified.exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(verified.exited());
        child.wait().unwrap();
        assert_eq!(theirs.matches(pid), Liveness::Gone);
        let mut other = me.clone();
        other.pid_namespace = "pid:[1]".into();
        assert_eq!(other.matches(pid), Liveness::OtherNamespace);
        other.boot_id = "another boot".into();
        assert_eq!(other.matches(std::process::id()), Liveness::Gone);
    }

    #[test]
    fn a_rebuilt_executable_is_the_same() {
        assert_eq!(
            undeleted(Path::new("/x/czctl (deleted)")),
            PathBuf::from("/x/czctl")
        );
    }
}
