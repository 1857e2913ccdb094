//! Phase 1 of a connection on one pod: until the pod answers, pass the client's bytes (and its
//! EOF) on while keeping them for a replay, without ever waiting on one direction to serve
//! another.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, Fuse, FutureExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conn::REPLAY_LIMIT;

/// Largest read from the client in phase 1, into a buffer on the stack: the kept bytes grow
/// only by what arrived, so the thousands of connections that wait here idle hold nothing.
const CLIENT_CHUNK: usize = 1024;
/// Buffer for the pod's first bytes (the rest follows in phase 2).
const ANSWER_CHUNK: usize = 1024;

/// The transport's error report for a stream.
pub type Failure = Fuse<BoxFuture<'static, Option<String>>>;

/// What the client sent in phase 1, kept across attempts.
#[derive(Default)]
pub struct Kept {
    /// The bytes (at most [`REPLAY_LIMIT`]).
    pub bytes: Vec<u8>,
    /// The client half-closed after them.
    pub eof: bool,
}

/// Why phase 1 on one pod ended.
pub enum Ended {
    /// The pod sent its first `n` bytes (in the answer buffer).
    Answered(usize),
    /// [`REPLAY_LIMIT`] bytes are kept: commit to this pod without an answer.
    Full,
    /// The pod's stream ended without data.
    PodEof,
    /// Reading, writing or shutting down the pod stream failed.
    PodError(io::Error),
    /// The transport reported why forwarding failed (for example the port is refused).
    Refused(String),
    /// Reading the client failed.
    ClientGone(io::Error),
}

/// Progress of phase 1 on one pod.
#[derive(Default)]
pub struct Attempt {
    /// Kept bytes written to this pod.
    pub written: usize,
    /// Bytes were written since the last flush.
    unflushed: bool,
    /// The client's EOF was passed on.
    pub shut: bool,
}

impl Attempt {
    /// Drives every direction that can move, never waiting on one to serve the other: the
    /// transport's error report, the pod's first bytes, kept bytes to the pod (then a flush,
    /// then the client's EOF), and the client while the kept bytes are below the limit.
    pub fn poll<C, P>(
        &mut self,
        cx: &mut Context<'_>,
        client: &mut C,
        pod: &mut P,
        failure: &mut Failure,
        kept: &mut Kept,
        answer: &mut Vec<u8>,
    ) -> Poll<Ended>
    where
        C: AsyncRead + Unpin,
        P: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            let mut progressed = false;
            if let Poll::Ready(Some(reason)) = failure.poll_unpin(cx) {
                return Poll::Ready(Ended::Refused(reason));
            }
            answer.resize(ANSWER_CHUNK, 0);
            let mut buf = ReadBuf::new(answer);
            match Pin::new(&mut *pod).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    let n = buf.filled().len();
                    return Poll::Ready(if n > 0 {
                        Ended::Answered(n)
                    } else {
                        Ended::PodEof
                    });
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Ended::PodError(e)),
                Poll::Pending => {}
            }
            let step = if self.written < kept.bytes.len() {
                Pin::new(&mut *pod)
                    .poll_write(cx, &kept.bytes[self.written..])
                    .map_ok(|n| {
                        self.written += n;
                        self.unflushed = true;
                        n
                    })
            } else if self.unflushed {
                Pin::new(&mut *pod).poll_flush(cx).map_ok(|()| {
                    self.unflushed = false;
                    1
                })
            } else if kept.eof && !self.shut {
                Pin::new(&mut *pod).poll_shutdown(cx).map_ok(|()| {
                    self.shut = true;
                    1
                })
            } else {
                Poll::Pending
            };
            match step {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Ended::PodError(io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(_)) => progressed = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Ended::PodError(e)),
                Poll::Pending => {}
            }
            if !kept.eof {
                let len = kept.bytes.len();
                if len >= REPLAY_LIMIT {
                    return Poll::Ready(Ended::Full);
                }
                let mut chunk = [0u8; CLIENT_CHUNK];
                let room = CLIENT_CHUNK.min(REPLAY_LIMIT - len);
                let mut buf = ReadBuf::new(&mut chunk[..room]);
                let read = Pin::new(&mut *client).poll_read(cx, &mut buf);
                let n = buf.filled().len();
                kept.bytes.extend_from_slice(&chunk[..n]);
                match read {
                    Poll::Ready(Ok(())) => {
                        kept.eof = n == 0;
                        progressed = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Ended::ClientGone(e)),
                    Poll::Pending => {}
                }
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    }
}
