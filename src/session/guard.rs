//! The start-up guard: until a session's own signal handling takes over, SIGINT and SIGTERM
//! end czctl at once, and a start that gets no answer (an API server that hangs, an exec
//! credential plugin that never returns) ends after its timeout — instead of waiting for
//! whatever blocks.
//!
//! It runs as its own task, so it fires even while the starting task is stuck in a blocking
//! call (kube runs exec credential plugins synchronously).

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::exit::{Code, Fatal};

/// Armed until dropped.
pub struct StartGuard {
    _disarm: DropGuard,
}

/// Arms the guard: on SIGINT/SIGTERM, or when `timeout` passes, `on_abort` undoes what the
/// start did so far and czctl exits (130/143 for the signals, 3 for the timeout) saying what
/// it was doing (`what`, e.g. "connecting to the cluster").
pub fn arm(
    what: impl Into<String>,
    timeout: Duration,
    on_abort: impl FnOnce() + Send + 'static,
) -> Result<StartGuard, Fatal> {
    let signal_error =
        |e: std::io::Error| Fatal::new(Code::Local, format!("cannot handle signals: {e}"));
    let mut term = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut int = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let token = CancellationToken::new();
    let disarmed = token.clone();
    let what = what.into();
    tokio::spawn(async move {
        let (code, why) = tokio::select! {
            () = disarmed.cancelled() => return,
            _ = term.recv() => (128 + libc::SIGTERM, format!("stopped (SIGTERM) while {what}")),
            _ = int.recv() => (128 + libc::SIGINT, format!("interrupted while {what}")),
            () = tokio::time::sleep(timeout) => (
                Code::Config as i32,
                format!(
                    "no answer within {}s while {what}: an API server that does not answer, or an \
                     exec credential plugin of the kubeconfig that does not return (try: kubectl \
                     get namespaces); raise --timeout to wait longer",
                    timeout.as_secs()
                ),
            ),
        };
        on_abort();
        // What this process started and still waits for (an exec credential plugin) would
        // otherwise hold the caller's output open after czctl has gone.
        stop_own_children();
        // Once more, for a plugin that was being started during the first look.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        stop_own_children();
        eprintln!("czctl: {why}");
        std::process::exit(code);
    });
    Ok(StartGuard {
        _disarm: token.drop_guard(),
    })
}

/// Sends SIGTERM to this process's own children (processes whose parent is this process).
fn stop_own_children() {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `PID (COMM) STATE PPID ...`; COMM may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(me) {
            // A child of this very process: until we reap it, its pid names nothing else.
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
    }
}
