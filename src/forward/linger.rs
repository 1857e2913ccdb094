//! Half-close emulation for a stream that cannot tell the pod about an EOF (the WebSocket v4
//! port-forward): `shutdown` is not passed on, it arms a silence timer instead, and once the
//! pod has sent nothing for that long a read returns EOF. The relay above can then propagate
//! EOFs the same way for every transport.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A stream whose `shutdown` flushes and arms a linger instead of closing the write side:
/// after it, a read returns EOF when the peer has been silent for `linger`; every byte read
/// restarts the timer. EOFs and errors of the stream itself come through unchanged.
pub struct Linger<S> {
    inner: S,
    linger: Duration,
    /// Armed by `shutdown`: when the silence ends the stream.
    timer: Option<Pin<Box<Sleep>>>,
    /// The timer fired: reads return EOF from now on.
    expired: bool,
    /// The task waiting in `poll_read`, woken when `shutdown` arms the timer (it may wait in
    /// another task than the one shutting down, after `tokio::io::split`).
    reader: Option<Waker>,
}

impl<S> Linger<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, linger: Duration) -> Self {
        Linger {
            inner,
            linger,
            timer: None,
            expired: false,
            reader: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Linger<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.expired {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        if let Poll::Ready(result) = Pin::new(&mut this.inner).poll_read(cx, buf) {
            if let Some(timer) = &mut this.timer {
                if buf.filled().len() > before {
                    timer.as_mut().reset(Instant::now() + this.linger);
                }
            }
            return Poll::Ready(result);
        }
        match &mut this.timer {
            Some(timer) => {
                ready!(timer.as_mut().poll(cx));
                this.expired = true;
                Poll::Ready(Ok(()))
            }
            None => {
                match &mut this.reader {
                    Some(waker) => waker.clone_from(cx.waker()),
                    None => this.reader = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Linger<S> {
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
        let this = &mut *self;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        if this.timer.is_none() {
            this.timer = Some(Box::pin(tokio::time::sleep(this.linger)));
            if let Some(reader) = this.reader.take() {
                reader.wake();
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::transport::LINGER;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};
    use tokio::time::timeout;

    /// Far longer than any linger here: a read still waiting after it is a hang.
    const HANG: Duration = Duration::from_secs(600);

    #[tokio::test(start_paused = true)]
    async fn silence_after_shutdown_reads_as_eof_and_bytes_restart_the_timer() {
        let (near, mut pod) = duplex(1024);
        let mut stream = Linger::new(near, LINGER);
        let mut buf = [0u8; 16];

        // Before shutdown, silence is only silence.
        assert!(timeout(LINGER * 3, stream.read(&mut buf)).await.is_err());

        stream.write_all(b"request").await.unwrap();
        stream.shutdown().await.unwrap();
        let start = Instant::now();
        let pod_side = tokio::spawn(async move {
            let mut got = [0u8; 7];
            pod.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"request");
            for byte in [b"a", b"b", b"c"] {
                tokio::time::sleep(LINGER - Duration::from_secs(1)).await;
                pod.write_all(byte).await.unwrap();
            }
            // The shutdown never reached the pod: no EOF, however long it waits.
            let mut more = [0u8; 1];
            let read = timeout(HANG, pod.read(&mut more)).await;
            (read.is_err(), pod)
        });

        let mut answer = Vec::new();
        let n = timeout(HANG, stream.read_to_end(&mut answer))
            .await
            .expect("EOF after the linger")
            .unwrap();
        assert_eq!((n, answer.as_slice()), (3, b"abc".as_slice()));
        let last_byte = (LINGER - Duration::from_secs(1)) * 3;
        let waited = start.elapsed();
        assert!(
            waited >= last_byte + LINGER && waited < last_byte + LINGER * 2,
            "EOF after {waited:?}, the last byte came at {last_byte:?}"
        );
        // EOF stays.
        assert_eq!(stream.read(&mut buf).await.unwrap(), 0);
        let (pod_saw_no_eof, _pod) = pod_side.await.unwrap();
        assert!(pod_saw_no_eof, "the pod must not see an EOF");
    }

    #[tokio::test(start_paused = true)]
    async fn the_streams_own_eof_comes_through_at_once() {
        let (near, pod) = duplex(1024);
        let mut stream = Linger::new(near, LINGER);
        stream.shutdown().await.unwrap();
        drop(pod);
        let start = Instant::now();
        let mut buf = [0u8; 16];
        assert_eq!(stream.read(&mut buf).await.unwrap(), 0);
        assert!(start.elapsed() < LINGER, "{:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_waiting_in_another_task_is_woken_by_the_shutdown() {
        let (near, _pod) = duplex(1024);
        let (mut rx, mut tx) = tokio::io::split(Linger::new(near, LINGER));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            rx.read(&mut buf).await
        });
        // Let the reader park before the shutdown.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!reader.is_finished());
        tx.shutdown().await.unwrap();
        // Nothing but the shutdown can wake the reader so that it starts the timer.
        let read = timeout(HANG, reader).await.expect("the reader got EOF");
        assert_eq!(read.unwrap().unwrap(), 0);
    }
}
