//! What every long-running command shares while it runs: session ids and timestamps, the stop
//! request (SIGINT, SIGTERM or a close on the control socket), and the ready handshake of a
//! background session with the command that started it (the other half is in `detach`).

use std::io::Write;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::exit::{Code, Fatal};

/// The line a detached child prints on stdout when its session is ready.
pub const READY_MARKER: &str = "czctl-session-ready";

/// What ends a session: SIGINT, SIGTERM, or a close request on the control socket.
pub struct Stop {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    close_rx: mpsc::Receiver<()>,
    /// Handed to the control socket: a `close` request sends on it.
    pub close_tx: mpsc::Sender<()>,
}

impl Stop {
    /// Takes over SIGINT and SIGTERM for this process.
    pub fn install() -> Result<Stop, Fatal> {
        let signal_error =
            |e: std::io::Error| Fatal::new(Code::Local, format!("cannot handle signals: {e}"));
        let (close_tx, close_rx) = mpsc::channel(1);
        Ok(Stop {
            term: signal(SignalKind::terminate()).map_err(signal_error)?,
            int: signal(SignalKind::interrupt()).map_err(signal_error)?,
            close_rx,
            close_tx,
        })
    }

    /// Waits for a stop request; returns the signal to pass on to a command.
    pub async fn requested(&mut self) -> i32 {
        tokio::select! {
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.int.recv() => libc::SIGINT,
            _ = self.close_rx.recv() => libc::SIGTERM,
        }
    }
}

/// Tells the parent of a detached run that the session is ready, then sends stdout to the
/// log (stderr) so later change lines do not hit a closed pipe. Should that fail, the session
/// goes on (it is ready) and says so in its log.
pub fn announce_detached(session: &str) {
    let mut out = std::io::stdout().lock();
    // The parent may have gone (a killed start): the session then goes on without it.
    let _ = writeln!(out, "{READY_MARKER} {session}");
    let _ = out.flush();
    // Stderr is the session log, open for the life of the process; the lock above keeps Rust's
    // stdout from writing while its descriptor is replaced.
    if let Err(e) = rustix::stdio::dup2_stdout(std::io::stderr()) {
        tracing::warn!(error = %e, "cannot send stdout to the session log; change lines may be lost");
    }
}

/// The current time as RFC 3339 UTC, second precision.
pub fn now_rfc3339() -> String {
    format!("{:.0}", jiff::Timestamp::now())
}

/// A short random teleport session id such as `tp-k3x9q2`.
pub fn session_id() -> String {
    new_id("tp")
}

/// A short random id with a prefix: `PREFIX-k3x9q2` (six of 32 letters and digits, chosen
/// not to be confused: no `l`, `o`, `0`, `1`).
pub fn new_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut bytes = [0u8; 6];
    // Ids only need to differ between sessions of one machine; a failing system source falls
    // back to the clock and pid (a record with the same id is then refused, not overwritten).
    if getrandom::fill(&mut bytes).is_err() {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32);
        bytes.copy_from_slice(&seed.to_le_bytes()[..6]);
    }
    let mut id = format!("{prefix}-");
    id.extend(
        bytes
            .iter()
            .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char),
    );
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_short_safe_and_differ() {
        let id = session_id();
        assert!(id.starts_with("tp-") && id.len() == 9, "{id}");
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        let ids: std::collections::BTreeSet<String> = (0..100).map(|_| new_id("ic")).collect();
        assert_eq!(ids.len(), 100, "ids repeat: {ids:?}");
    }

    #[test]
    fn timestamps_have_second_precision() {
        let now = now_rfc3339();
        assert_eq!(now.len(), "2026-11-23T09:00:00Z".len(), "{now}");
        assert!(now.ends_with('Z'), "{now}");
    }
}
