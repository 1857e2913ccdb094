//! Phase 2 of a connection: the pod is chosen, bytes are copied both ways until both sides have
//! ended.
//!
//! `tokio::io::copy_bidirectional_with_sizes` drives each direction on its own (a pod that does
//! not read never stops the other direction), with one bounded buffer per direction, so a slow
//! reader holds back its writer through TCP (and port-forward) flow control instead of
//! memory. An EOF is passed on as `shutdown`: the client's EOF becomes a FIN to the pod (the
//! WebSocket transport emulates it, see [`super::transport::LINGER`]), the pod's a FIN to the
//! client, while the other direction keeps flowing.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::{debug, warn};

use super::attempt::Failure;
use super::counting::Counted;
use super::target::Target;
use super::transport::PodIo;

/// Buffer of the client → pod direction; [`DOWN_BUF`] is the other one.
///
/// Memory decides: `copy_bidirectional` allocates both buffers up front and keeps them for the
/// life of the connection, idle or not (pooled keep-alive connections mostly are), so 10,000
/// connections hold 10,000 × (8 + 8) KiB = 160 MiB of them; 16 KiB each way would be 320 MiB,
/// 64 KiB 1.25 GiB. Throughput does not need more: relaying a loopback client to an in-memory
/// echo (full duplex, release build, 2 busy cores) moved 700–950 MiB/s each way with 8 KiB
/// buffers and no measurably more with 16–64 KiB (only 4 KiB was clearly slower), far above
/// what a port-forward stream through the API server carries; kube-rs also cuts what goes to
/// the pod into WebSocket messages of at most 4 KiB. 8 KiB is tokio's and std's copy default.
pub const UP_BUF: usize = 8 * 1024;
/// Buffer of the pod → client direction (see [`UP_BUF`]).
pub const DOWN_BUF: usize = 8 * 1024;

/// Everything phase 1 hands over.
pub struct Committed {
    /// The stream to the chosen pod.
    pub pod: Box<dyn PodIo>,
    /// The transport's error report for it.
    pub failure: Failure,
    /// Bytes the pod sent in phase 1, not yet passed to the client (counted when they are).
    pub answer: Vec<u8>,
    /// Bytes the client sent in phase 1, not yet passed to the pod (counted when they are).
    pub unsent: Vec<u8>,
    /// The pod's read side has already ended.
    pub pod_eof: bool,
    /// The client's EOF has already been passed on (the pod stream is shut down).
    pub pod_shut: bool,
}

/// Copies between `client` and the committed pod until both directions have ended or one
/// fails. Errors from the transport's error channel are recorded on the way.
pub async fn relay<C>(client: C, committed: Committed, target: &Target)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let Committed {
        pod,
        mut failure,
        answer,
        unsent,
        pod_eof,
        pod_shut,
    } = committed;
    let mut client = Prefixed::new(unsent, client);
    let mut pod = Counted::new(Prefixed::new(answer, pod), &target.stats, pod_eof, pod_shut);
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut pod, UP_BUF, DOWN_BUF);
    tokio::pin!(copy);
    let result = loop {
        tokio::select! {
            result = &mut copy => break result,
            // A fused future stays pending once it has finished: this arm then never fires again.
            Some(text) = &mut failure => {
                warn!(service = %target.service, "port-forward failed: {text}");
                target.stats.set_error(text);
            }
        }
    };
    match result {
        Ok((up, down)) => debug!(service = %target.service, up, down, "connection closed"),
        Err(e) => debug!(service = %target.service, error = %e, "connection ended"),
    }
}

/// A stream whose reads first return `prefix`, then the stream's own bytes; writes go straight
/// through. Hands bytes that phase 1 holds to phase 2's copy without a blocking write.
struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            // An empty buffer may still hold phase 1's allocation: free it now.
            prefix: if prefix.is_empty() {
                Vec::new()
            } else {
                prefix
            },
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.pos);
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
