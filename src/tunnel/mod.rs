//! Reverse tunnels: connections that arrive in the cluster are handed to a server on the
//! developer's laptop.
//!
//! The [`cluster`] tunnel goes through the cluster itself: an agent pod runs `czctl-agent`
//! (the [`cztunnel`] crate, image `ghcr.io/czctl/czctl-agent:VERSION`), which listens on a
//! control port and a data port. The laptop opens connections to the control port through the
//! pod port-forward API (a [`Transport`](crate::forward::transport::Transport)), so only the
//! cluster's own authentication guards it, and keeps a few of them parked at the agent. A
//! client (the intercept router, NGINX) that connects to the data port is spliced to a parked
//! connection, and the laptop connects it to its local target.
//!
//! ```text
//!  NGINX ──TCP──▶ agent :7001 (data) ◀──splice──▶ parked connection ◀── agent :7000 (control)
//!                                                        ▲
//!  laptop: local server ◀──TCP── ClusterTunnel ──port-forward (kube API)──┘
//! ```
//!
//! The wire protocol (hello and answer lines, one-byte signals, frames) is documented and
//! implemented in [`cztunnel`]; both ends use its types, so they cannot drift apart. This
//! module holds what needs czctl: the port-forward transport and ngrok.
//!
//! Other tunnel kinds (ngrok) implement the same small [`Tunnel`] trait.
//!
//! - [`cluster`]: the laptop end over port-forward, with its pool and reconnects.
//! - [`ngrok`]: an ngrok endpoint instead of the agent.
//! - [`token`]: per-session tokens.

pub mod cluster;
pub mod ngrok;
pub mod token;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// A way to bring connections from elsewhere to a local target.
pub trait Tunnel: Send + 'static {
    /// A short name of the kind, for status output (`cluster`, `ngrok`).
    fn kind(&self) -> &'static str;

    /// Serves until `stop` is cancelled (then `Ok`), or until the tunnel cannot work at all
    /// (then the reason). Every connection that arrives is connected to `local`; counters and
    /// the last error go to `stats`.
    fn run(
        self: Box<Self>,
        local: SocketAddr,
        stop: CancellationToken,
        stats: Arc<TunnelStats>,
    ) -> BoxFuture<'static, Result<(), TunnelError>>;
}

/// Why a tunnel stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The agent kept refusing the hello (wrong token or another protocol version).
    #[error("the tunnel agent refused the connection: {0}")]
    Denied(String),
    /// The caller may not open port-forwards to the agent pod.
    #[error("port-forward to the tunnel agent is forbidden: {0}")]
    Forbidden(String),
    /// The tunnel was configured wrongly (for example an unusable token).
    #[error("{0}")]
    Config(String),
}

/// Counters of one tunnel, shared with whoever shows them. "Down" is cluster → laptop (the
/// requests), "up" is laptop → cluster (the answers).
#[derive(Debug, Default)]
pub struct TunnelStats {
    /// Connections handed to the laptop so far.
    pub handled: AtomicU64,
    /// Connections being relayed now.
    pub open: AtomicU64,
    /// Idle connections waiting at the other end now.
    pub parked: AtomicU64,
    /// Bytes from the cluster to the local target.
    pub bytes_down: AtomicU64,
    /// Bytes from the local target to the cluster.
    pub bytes_up: AtomicU64,
    /// Failures so far: connections the local target refused, tunnel connections that could
    /// not be opened or broke.
    pub errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A copy of [`TunnelStats`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TunnelSnapshot {
    /// Connections handed to the laptop so far.
    pub handled: u64,
    /// Connections being relayed now.
    pub open: u64,
    /// Idle connections waiting at the other end now.
    pub parked: u64,
    /// Bytes from the cluster to the local target.
    pub bytes_down: u64,
    /// Bytes from the local target to the cluster.
    pub bytes_up: u64,
    /// Failures so far.
    pub errors: u64,
    /// The latest failure.
    pub last_error: Option<String>,
}

impl TunnelStats {
    /// Records a failure: counts it and keeps its message.
    pub fn record_error(&self, message: impl Into<String>) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.into());
    }

    /// The latest failure.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// All counters now.
    pub fn snapshot(&self) -> TunnelSnapshot {
        TunnelSnapshot {
            handled: self.handled.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed),
            parked: self.parked.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            last_error: self.last_error(),
        }
    }
}

/// Keeps an `AtomicU64` incremented while alive.
pub(crate) struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    pub(crate) fn up(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Gauge(counter)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
