//! The pod side of a relayed connection: counts bytes into the target's statistics as they
//! pass (so `bytes_up`/`bytes_down` are exact and live), and remembers an EOF or a shutdown
//! that happened before the relay started.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::target::Stats;

/// A pod stream whose reads add to `bytes_down` and whose writes add to `bytes_up`.
///
/// Once its read side has ended it stays ended without asking the stream again, and a second
/// shutdown is a no-op: phase 1 may already have seen the pod's EOF or passed on the client's,
/// and the relay must then neither wait for nor send another one.
pub struct Counted<'a, S> {
    inner: S,
    stats: &'a Stats,
    read_eof: bool,
    shut: bool,
}

impl<'a, S> Counted<'a, S> {
    /// Counts into `stats`; `read_eof`/`shut` carry what already happened to `inner`.
    pub fn new(inner: S, stats: &'a Stats, read_eof: bool, shut: bool) -> Self {
        Counted {
            inner,
            stats,
            read_eof,
            shut,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.read_eof {
            return Poll::Ready(Ok(()));
        }
        let (before, room) = (buf.filled().len(), buf.remaining());
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        if n == 0 && room > 0 {
            this.read_eof = true;
        }
        this.stats.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.stats.bytes_up.fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.shut {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.shut = true;
        }
        Poll::Ready(Ok(()))
    }
}
