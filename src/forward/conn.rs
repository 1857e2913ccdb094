//! One accepted connection: pick a pod, open a port-forward stream, copy both ways.
//!
//! Until the pod has sent its first byte, what the client sent is kept (up to
//! [`REPLAY_LIMIT`]); if the pod refuses the port or is gone, another ready pod is tried and
//! the bytes are replayed, so a redeploy is invisible to a client that speaks first (HTTP).
//! With no ready pod left, the client is closed at once.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::picker::pick;
use super::target::Target;
use super::transport::{Opened, Transport};

/// Client bytes kept for replay to another pod while the first pod has not answered.
pub const REPLAY_LIMIT: usize = 64 * 1024;
const CHUNK: usize = 32 * 1024;
/// After the client stops sending, how long the pod may stay silent before the connection is
/// closed (the WebSocket transport cannot tell the pod about the client's EOF).
pub const LINGER: Duration = Duration::from_secs(5);

/// How an attempt on one pod ended before the pod sent anything.
enum Attempt {
    /// The pod sent its first bytes: forwarding is committed to it.
    Answered(Vec<u8>),
    /// The pod side closed cleanly without data.
    Closed,
    /// The pod refused or is gone; another pod may be tried.
    Failed(String),
}

/// Serves one client connection that arrived on listen port `port` of `target`.
pub async fn serve(
    client: TcpStream,
    target: Arc<Target>,
    port: u16,
    transport: Arc<dyn Transport>,
) {
    let Some(port_name) = target.port_name(port) else {
        return;
    };
    target.stats.open.fetch_add(1, Ordering::Relaxed);
    target.stats.total.fetch_add(1, Ordering::Relaxed);
    serve_inner(client, &target, &port_name, transport.as_ref()).await;
    target.stats.open.fetch_sub(1, Ordering::Relaxed);
}

async fn serve_inner(
    client: TcpStream,
    target: &Target,
    port_name: &str,
    transport: &dyn Transport,
) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let mut replay = Vec::new();
    let mut client_eof = false;
    let mut tried = HashSet::new();
    loop {
        let backends = target.backends();
        let Some(choice) = pick(
            &backends,
            port_name,
            target.next_start(),
            &tried,
            target.pinned.as_deref(),
        ) else {
            let message = format!(
                "no ready pod for service {} port {port_name:?}",
                target.service
            );
            warn!(service = %target.service, port = port_name, "{message}; closing the connection");
            target.stats.set_error(message);
            return;
        };
        let opened = match transport
            .open(&target.service.namespace, &choice.pod, choice.port)
            .await
        {
            Ok(opened) => opened,
            Err(e) => {
                let message = format!("pod {} port {}: {e}", choice.pod, choice.port);
                warn!(service = %target.service, "port-forward refused: {message}");
                target.stats.set_error(message);
                if e.is_forbidden() {
                    return;
                }
                tried.insert(choice.pod);
                continue;
            }
        };
        let Opened { stream, failure } = opened;
        let (mut pod_rx, mut pod_tx) = tokio::io::split(stream);
        if !replay.is_empty() && pod_tx.write_all(&replay).await.is_err() {
            tried.insert(choice.pod);
            continue;
        }
        let attempt = first_answer(
            &mut client_rx,
            &mut pod_rx,
            &mut pod_tx,
            failure,
            &mut replay,
            &mut client_eof,
        )
        .await;
        match attempt {
            Attempt::Failed(reason) if replay.len() <= REPLAY_LIMIT => {
                info!(service = %target.service, pod = %choice.pod, %reason, "pod failed before answering; trying another");
                target.stats.set_error(reason);
                tried.insert(choice.pod);
            }
            Attempt::Failed(reason) => {
                warn!(service = %target.service, pod = %choice.pod, %reason, "pod failed after too much was sent to replay it");
                target.stats.set_error(reason);
                return;
            }
            Attempt::Closed => {
                let _ = client_tx.shutdown().await;
                return;
            }
            Attempt::Answered(first) => {
                target
                    .stats
                    .bytes_down
                    .fetch_add(first.len() as u64, Ordering::Relaxed);
                target
                    .stats
                    .bytes_up
                    .fetch_add(replay.len() as u64, Ordering::Relaxed);
                if client_tx.write_all(&first).await.is_err() {
                    return;
                }
                debug!(service = %target.service, pod = %choice.pod, "forwarding");
                target.stats.set_pod(&choice.pod);
                relay(client_rx, client_tx, pod_rx, pod_tx, client_eof, target).await;
                return;
            }
        }
    }
}

/// Relays until the pod answers, the pod fails, or the pod closes.
async fn first_answer<C, R, W>(
    client_rx: &mut C,
    pod_rx: &mut R,
    pod_tx: &mut W,
    failure: BoxFuture<'static, Option<String>>,
    replay: &mut Vec<u8>,
    client_eof: &mut bool,
) -> Attempt
where
    C: AsyncRead + Unpin,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut failure = failure.fuse();
    let mut failure_done = false;
    let mut buf = vec![0u8; CHUNK];
    let mut pod_buf = vec![0u8; CHUNK];
    loop {
        tokio::select! {
            read = client_rx.read(&mut buf), if !*client_eof => match read {
                Ok(0) | Err(_) => *client_eof = true,
                Ok(n) => {
                    if replay.len() <= REPLAY_LIMIT {
                        replay.extend_from_slice(&buf[..n]);
                    }
                    if pod_tx.write_all(&buf[..n]).await.is_err() {
                        return Attempt::Failed("the port-forward stream closed while sending".into());
                    }
                }
            },
            read = pod_rx.read(&mut pod_buf) => match read {
                Ok(n) if n > 0 => return Attempt::Answered(pod_buf[..n].to_vec()),
                _ => {
                    // The stream ended without data: a refusal reports on the error channel
                    // around the same time, so give it a moment before calling this a close.
                    if !failure_done {
                        if let Ok(Some(text)) = tokio::time::timeout(Duration::from_millis(200), &mut failure).await {
                            return Attempt::Failed(text);
                        }
                    }
                    return Attempt::Closed;
                }
            },
            text = &mut failure, if !failure_done => match text {
                Some(text) => return Attempt::Failed(text),
                None => failure_done = true,
            },
        }
    }
}

/// Copies both ways once the pod has answered. The WebSocket transport cannot half-close, so
/// the client's EOF is not passed on: the pod side is given [`LINGER`] of silence to finish
/// its answer, then the connection ends (it also ends when the pod closes or the client goes).
async fn relay<C, D, R, W>(
    mut client_rx: C,
    mut client_tx: D,
    mut pod_rx: R,
    mut pod_tx: W,
    client_eof: bool,
    target: &Target,
) where
    C: AsyncRead + Unpin,
    D: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut client_done = client_eof;
    let mut up = vec![0u8; CHUNK];
    let mut down = vec![0u8; CHUNK];
    loop {
        tokio::select! {
            read = client_rx.read(&mut up), if !client_done => match read {
                Ok(0) | Err(_) => client_done = true,
                Ok(n) => {
                    if pod_tx.write_all(&up[..n]).await.is_err() {
                        return;
                    }
                    target.stats.bytes_up.fetch_add(n as u64, Ordering::Relaxed);
                }
            },
            read = pod_rx.read(&mut down) => match read {
                Ok(0) | Err(_) => {
                    let _ = client_tx.shutdown().await;
                    return;
                }
                Ok(n) => {
                    if client_tx.write_all(&down[..n]).await.is_err() {
                        return;
                    }
                    target.stats.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
                }
            },
            _ = tokio::time::sleep(LINGER), if client_done => {
                let _ = client_tx.shutdown().await;
                return;
            }
        }
    }
}
