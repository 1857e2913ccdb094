//! Listeners: bound synchronously (so an address can be tested and claimed in one step), then
//! served by one accept task each until cancelled. [`Binder`] is what the teleport engine binds
//! and serves through: it binds itself, and asks a privileged binder (the root helper, when one
//! runs) for the ports this user may not bind.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::conn;
use super::target::Target;
use super::transport::Transport;

/// Connections the kernel queues for a listener before accept (std's bind asks for 128: when
/// thousands of clients connect at once, each dropped SYN costs its client a 1 s retransmit).
/// Linux caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 4096;

/// Binds `addr:port` (non-blocking, ready for the runtime).
pub fn bind(addr: Ipv4Addr, port: u16) -> std::io::Result<StdListener> {
    let listener = StdListener::bind(SocketAddr::from((addr, port)))?;
    // Listening again on a listening socket only changes its backlog.
    rustix::net::listen(&listener, BACKLOG)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Binds `addr:port` for a user who may not: the root helper, which binds and hands the
/// listener over. A blocking round trip.
pub type Privileged = Arc<dyn Fn(Ipv4Addr, u16) -> std::io::Result<StdListener> + Send + Sync>;

/// Binds listeners (falling back to a [`Privileged`] binder for ports below 1024) and serves
/// them over one transport.
pub struct Binder {
    transport: Arc<dyn Transport>,
    privileged: Option<Privileged>,
}

impl Binder {
    /// Serves over `transport`; `privileged` binds the ports this user may not, if given.
    pub fn new(transport: Arc<dyn Transport>, privileged: Option<Privileged>) -> Binder {
        Binder {
            transport,
            privileged,
        }
    }

    /// [`bind`]; when this user may not bind the port (below
    /// `net.ipv4.ip_unprivileged_port_start`, usually 1024) and a privileged binder is given,
    /// that one binds it; otherwise the permission error is returned. Blocks (briefly, or for
    /// a round trip to the root helper): call it from a blocking thread.
    pub fn bind(&self, addr: Ipv4Addr, port: u16) -> std::io::Result<StdListener> {
        match bind(addr, port) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => match &self.privileged {
                Some(privileged) if port < 1024 => {
                    let listener = privileged(addr, port)?;
                    listener.set_nonblocking(true)?;
                    Ok(listener)
                }
                _ => Err(e),
            },
            other => other,
        }
    }

    /// [`serve`] over this binder's transport.
    pub fn serve(
        &self,
        listener: StdListener,
        target: Arc<Target>,
        stop: CancellationToken,
    ) -> std::io::Result<()> {
        serve(listener, target, self.transport.clone(), stop)
    }
}

/// Serves a bound listener until `stop` is cancelled; each connection gets its own task.
pub fn serve(
    listener: StdListener,
    target: Arc<Target>,
    transport: Arc<dyn Transport>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    let listener = TcpListener::from_std(listener)?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = conn::serve(stream, target.clone(), port, transport.clone());
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = conn => {}
                            _ = stop.cancelled() => {}
                        }
                    });
                }
                Err(e) => {
                    warn!(service = %target.service, error = %e, "accept failed");
                    // Out of file descriptors and similar: don't spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(())
}
