//! `--detach`: run the same command as a background child in its own session, relay its
//! ready table, and return once it reports ready (or fail with its exit code and log).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::exit::{Code, Fatal};
use crate::hosts::HostsEditor;
use crate::session::record;
use crate::teleport::READY_MARKER;

/// The environment variable that tells the child its session id (and that it is detached).
pub const SESSION_ENV: &str = "CZCTL_DETACHED_SESSION";

/// Starts the child with the same arguments minus `--detach`; returns when it is ready.
///
/// When the hosts file needs root, the root helper is started here, where sudo can ask for the
/// password on the terminal, and its socket is handed to the child (which has no terminal).
pub fn run(session: &str, state_dir: &Path, hosts_file: Option<&Path>) -> Result<(), Fatal> {
    let local =
        |what: &str, e: &dyn std::fmt::Display| Fatal::new(Code::Local, format!("{what}: {e}"));
    let exe = std::env::current_exe().map_err(|e| local("cannot find the czctl executable", &e))?;
    let args: Vec<_> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--detach")
        .collect();
    let log_path = record::log_path(state_dir, session);
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| local("cannot create the state directory", &e))?;
    }
    let log = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(|e| local(&format!("cannot open {}", log_path.display()), &e))?
    };
    // The root helper, if one is needed, logs to the session log: it outlives this process
    // and must not hold on to its stderr (a pipe a script may be waiting on).
    let helper_log = log
        .try_clone()
        .map_err(|e| local(&format!("cannot open {}", log_path.display()), &e))?;
    let editor = match hosts_file.map(|f| HostsEditor::open(f, state_dir, Some(helper_log))) {
        None => None,
        Some(Ok(editor)) => Some(editor),
        Some(Err(e)) => {
            let said = std::fs::read_to_string(&log_path).unwrap_or_default();
            let _ = std::fs::remove_file(&log_path);
            let said = if said.trim().is_empty() {
                String::new()
            } else {
                format!("\n{}", said.trim_end())
            };
            return Err(Fatal::new(Code::Local, format!("{e}{said}")));
        }
    };
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env(SESSION_ENV, session)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it puts the child in its own session so the
    // terminal's Ctrl-C and hangup do not reach it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let handed = match editor {
        Some(HostsEditor::Elevated(helper)) => {
            eprintln!(
                "czctl: {} is edited by a helper running as root (pid {}, started with sudo); \
                 everything else runs as you",
                hosts_file
                    .map(Path::display)
                    .expect("an editor implies a hosts file"),
                helper.helper_pid()
            );
            Some(helper.hand_over(&mut cmd))
        }
        Some(HostsEditor::Direct(_)) | None => None,
    };
    let spawned = cmd.spawn();
    drop(handed);
    let mut child = spawned.map_err(|e| local("cannot start the background session", &e))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut err = std::io::stderr().lock();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if line.starts_with(READY_MARKER) {
            let _ = writeln!(
                err,
                "czctl: session {session} runs in the background (pid {}, log {}); end it with: czctl session close {session}",
                child.id(),
                log_path.display()
            );
            println!("{session}");
            return Ok(());
        }
        let _ = writeln!(err, "{line}");
    }
    let status = child
        .wait()
        .map_err(|e| local("cannot wait for the background session", &e))?;
    let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_file(&log_path);
    let tail: Vec<&str> = log_text.lines().rev().take(20).collect();
    let reason = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    let code = match status.code() {
        Some(3) => Code::Config,
        Some(4) => Code::Forbidden,
        Some(5) => Code::NotFound,
        Some(6) => Code::Local,
        Some(7) => Code::Conflict,
        Some(2) => Code::Usage,
        _ => Code::Failure,
    };
    Err(Fatal::new(
        code,
        format!("the background session failed before it was ready ({status}):\n{reason}"),
    ))
}
