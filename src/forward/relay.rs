//! Phase 2 of a connection: the pod is chosen, bytes are copied both ways until both sides have
//! ended.
//!
//! Each direction is pumped on its own (a pod that does not read never stops the other
//! direction), with one bounded buffer per direction, so a slow reader holds back its writer
//! through TCP (and port-forward) flow control instead of memory. An EOF is passed on as `shutdown`: the client's EOF becomes a FIN to the pod (the
//! WebSocket transport emulates it, see [`super::transport::LINGER`]), the pod's a FIN to the
//! client, while the other direction keeps flowing.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tracing::{debug, warn};

use super::attempt::Failure;
use super::counting::Counted;
use super::target::Target;
use super::transport::PodIo;

/// Read size of a quiet direction: the buffer lives inline in the connection's task, so an
/// idle or chatty connection owns no heap buffer (10,000 connections × 2 directions × 1 KiB).
pub const SMALL: usize = 1024;
/// Read size once a direction carries bulk data (a read filled [`SMALL`]): allocated while the
/// bulk lasts, freed when reads come back small again. Large reads mean few, large SPDY frames.
pub const BULK: usize = 64 * 1024;
/// Reads of at most [`SMALL`] in a row after which the bulk buffer is given back.
const THIN_READS: u32 = 8;

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
    let copy = copy_both(&mut client, &mut pod);
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

/// Copies both ways, each direction on its own (a side that does not read never stops the other
/// direction), until both have ended; an EOF is passed on as `shutdown`. The first error ends
/// both. Returns the bytes moved up and down.
async fn copy_both<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (a_rx, a_tx) = tokio::io::split(a);
    let (b_rx, b_tx) = tokio::io::split(b);
    tokio::try_join!(pump(a_rx, b_tx), pump(b_rx, a_tx))
}

/// One direction: read, write all of it, repeat; shut the writer down at EOF. The read buffer
/// grows from [`SMALL`] (inline) to [`BULK`] (heap) while reads fill it, and shrinks back when
/// the traffic thins, so memory follows what the connection is doing.
async fn pump<R, W>(mut from: R, mut to: W) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut small = [0u8; SMALL];
    let mut bulk: Vec<u8> = Vec::new();
    // Small reads in a row while the bulk buffer is held.
    let mut thin = 0;
    let mut total = 0u64;
    loop {
        let buf: &mut [u8] = if bulk.is_empty() {
            &mut small
        } else {
            &mut bulk
        };
        let n = from.read(buf).await?;
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        total += n as u64;
        if bulk.is_empty() {
            if n == SMALL {
                bulk = vec![0; BULK];
                thin = 0;
            }
        } else if n <= SMALL {
            thin += 1;
            if thin == THIN_READS {
                bulk = Vec::new();
            }
        } else {
            thin = 0;
        }
    }
    to.shutdown().await?;
    Ok(total)
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
