//! Background sessions (the default for teleports and intercepts): run the session as a child
//! in its own session, relay what it prints while it starts, and return once it reports ready,
//! or fail with its own error text and exit code when it fails, is interrupted or times out.
//! [`parent`]: the child's side: a start gives up when the command waiting for it is gone.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::exit::{Code, Fatal};
use crate::hosts::HostsEditor;
use crate::session::record;
use crate::session::runtime::READY_MARKER;

/// The environment variable that tells the child its session id (and that it is detached).
pub const SESSION_ENV: &str = "CZCTL_DETACHED_SESSION";

pub mod parent;

pub use parent::{ParentWatch, PARENT_ENV};

/// The session id when this process is a background session's child (its parent set
/// [`SESSION_ENV`]).
pub fn child_session() -> Option<String> {
    std::env::var(SESSION_ENV).ok()
}

/// A background session to start.
#[derive(Debug, Clone)]
pub struct Background {
    /// Its session id.
    pub session: String,
    /// czctl's state directory (the session log lives there).
    pub state_dir: PathBuf,
    /// The hosts file it edits, when it edits one (a root helper is started here if needed).
    pub hosts_file: Option<PathBuf>,
    /// The child's arguments (after the executable).
    pub args: Vec<OsString>,
    /// How long it may take to get ready.
    pub timeout: Duration,
}

/// In a background session whose start failed: when the command that started it is gone (it
/// was killed), nobody will read the session's log, so it is removed here rather than left for
/// `session close --all` (which cannot remove it while this process still holds it).
pub fn drop_unread_log() {
    let Ok(session) = std::env::var(SESSION_ENV) else {
        return;
    };
    if !record::valid_id(&session) || ParentWatch::start().gone().is_none() {
        return;
    }
    record::remove_log(&crate::paths::state_dir(), &session);
}

/// The arguments this process was started with, for a child that repeats the command.
pub fn own_args() -> Vec<OsString> {
    std::env::args_os().skip(1).collect()
}

/// Starts the child; `started` runs right after the spawn with the child's pid (to write the
/// session's record while the caller still holds the session lock). Returns once the child
/// is ready.
///
/// When the hosts file needs root, the root helper is started here, where sudo can ask for the
/// password on the terminal, and its socket is handed to the child (which has no terminal).
pub async fn start(
    bg: &Background,
    started: impl FnOnce(u32) -> Result<(), Fatal>,
) -> Result<u32, Fatal> {
    let local =
        |what: &str, e: &dyn std::fmt::Display| Fatal::new(Code::Local, format!("{what}: {e}"));
    let exe = std::env::current_exe().map_err(|e| local("cannot find the czctl executable", &e))?;
    let log_path = record::log_path(&bg.state_dir, &bg.session);
    crate::paths::ensure_sessions_dir(&bg.state_dir)
        .map_err(|e| Fatal::new(Code::Local, e.to_string()))?;
    let log = {
        use std::os::unix::fs::OpenOptionsExt;
        crate::paths::open_nofollow(
            &log_path,
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600),
        )
        .map_err(|e| local(&format!("cannot open {}", log_path.display()), &e))?
    };
    // Held (flock) by this start and, through the inherited descriptor, by the session and its
    // helper: `close --all` removes only logs nobody holds. `_keep` holds it here until the
    // child's log has been read.
    crate::session::logs::hold(&log);
    let _keep = log
        .try_clone()
        .map_err(|e| local(&format!("cannot open {}", log_path.display()), &e))?;
    // The root helper, if one is needed, logs to the session log: it outlives this process
    // and must not hold on to its stderr (a pipe a script may be waiting on).
    let helper_log = log
        .try_clone()
        .map_err(|e| local(&format!("cannot open {}", log_path.display()), &e))?;
    let editor = match bg
        .hosts_file
        .as_deref()
        .map(|f| HostsEditor::open(f, &bg.state_dir, Some(helper_log)))
    {
        None => None,
        Some(Ok(editor)) => Some(editor),
        Some(Err(e)) => {
            let said = log_tail(&log_path);
            let _ = std::fs::remove_file(&log_path);
            return Err(Fatal::new(Code::Local, format!("{e}{said}")));
        }
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(&bg.args)
        .env(SESSION_ENV, &bg.session)
        .env(PARENT_ENV, std::process::id().to_string())
        // Names a descriptor of this process if anything: set again below when handed over.
        .env_remove(crate::hosts::elevated::INHERIT_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    // The child gets its own session so the terminal's Ctrl-C and hangup do not reach it.
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // work is allowed: it makes one setsid system call (rustix issues it directly, without
    // locks or allocation). It cannot fail there: a fresh child leads no process group.
    unsafe {
        cmd.pre_exec(|| {
            let _ = rustix::process::setsid();
            Ok(())
        });
    }
    let handed = match editor {
        Some(HostsEditor::Elevated(helper)) => {
            eprintln!(
                "czctl: {} is edited by a helper running as root (pid {}, started with sudo); \
                 everything else runs as you",
                helper.file().display(),
                helper.helper_pid()
            );
            Some(helper.hand_over(&mut cmd))
        }
        Some(HostsEditor::Direct(_)) | None => None,
    };
    let spawned = tokio::process::Command::from(cmd).spawn();
    drop(handed);
    let mut child = spawned.map_err(|e| local("cannot start the background session", &e))?;
    let pid = child.id().expect("a child that was just spawned has a pid");
    if let Err(e) = started(pid) {
        terminate(pid);
        let _ = child.wait().await;
        let _ = std::fs::remove_file(&log_path);
        return Err(e);
    }
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let relay = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with(READY_MARKER) {
                return true;
            }
            eprintln!("{line}");
        }
        false
    };
    let waited = tokio::time::timeout(bg.timeout, relay).await;
    if let Ok(true) = waited {
        eprintln!(
            "czctl: session {} runs in the background (pid {pid}, log {}); end it with: czctl session close {}",
            bg.session,
            log_path.display(),
            bg.session
        );
        return Ok(pid);
    }
    let timed_out = waited.is_err();
    if timed_out {
        // It stops and cleans up on SIGTERM.
        terminate(pid);
        if tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| local("cannot wait for the background session", &e))?;
    let said = log_tail(&log_path);
    let _ = std::fs::remove_file(&log_path);
    if timed_out {
        return Err(Fatal::new(
            Code::Failure,
            format!(
                "session {} was not ready after {}s and was stopped (raise --timeout to wait longer){said}",
                bg.session,
                bg.timeout.as_secs()
            ),
        ));
    }
    let code = match status.code() {
        Some(2) => Code::Usage,
        Some(3) => Code::Config,
        Some(4) => Code::Forbidden,
        Some(5) => Code::NotFound,
        Some(6) => Code::Local,
        Some(7) => Code::Conflict,
        _ => Code::Failure,
    };
    // The child's own last words are the error; say only that it came from the background.
    let message = if said.is_empty() {
        format!(
            "the background session {} ended before it was ready ({status}) without saying why",
            bg.session
        )
    } else {
        format!(
            "the background session {} failed before it was ready ({status}):{said}",
            bg.session
        )
    };
    Err(Fatal::new(code, message))
}

/// Sends SIGTERM to the background session: our own child, spawned and not reaped yet, so its
/// pid still names it.
fn terminate(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// The last lines of a log, each on its own line after a newline (empty if there are none).
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(20)..];
    tail.iter().map(|l| format!("\n{l}")).collect()
}
