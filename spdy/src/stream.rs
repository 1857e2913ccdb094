//! One SPDY stream: its shared state (filled by the connection's reader task) and the
//! [`Stream`] handle, an `AsyncRead + AsyncWrite` with half-close and reset.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio_util::sync::PollSender;

use crate::conn::{Owner, Shared};
use crate::frame::{status, Frame};
use crate::headers::Headers;

/// State of one stream shared by its handle and the reader task.
pub(crate) struct StreamShared {
    pub(crate) id: u32,
    state: Mutex<State>,
    /// Signalled when the handle takes data out of the queue (the reader waits on it when the
    /// queue is full).
    pub(crate) space: Notify,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Bytes>,
    queued: usize,
    remote_fin: bool,
    local_fin: bool,
    replied: bool,
    reset: Option<String>,
    read_waker: Option<Waker>,
    reply_waker: Option<Waker>,
}

/// What happened to received data.
pub(crate) enum Push {
    /// Queued for the handle.
    Queued,
    /// The queue is at its cap: wait for [`StreamShared::space`].
    Full,
    /// The stream was reset: dropped.
    Discarded,
}

impl StreamShared {
    pub(crate) fn new(id: u32, local_fin: bool, remote_fin: bool, replied: bool) -> Arc<Self> {
        Arc::new(StreamShared {
            id,
            state: Mutex::new(State {
                local_fin,
                remote_fin,
                replied,
                ..State::default()
            }),
            space: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section only moves plain values: a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues received bytes unless `cap` bytes are already waiting.
    pub(crate) fn push(&self, data: &Bytes, cap: usize) -> Push {
        let mut state = self.lock();
        if state.reset.is_some() || state.remote_fin {
            return Push::Discarded;
        }
        if state.queued >= cap {
            return Push::Full;
        }
        state.queued += data.len();
        state.queue.push_back(data.clone());
        wake(&mut state.read_waker);
        Push::Queued
    }

    /// The peer sent FIN; returns whether both sides are now finished.
    pub(crate) fn remote_finished(&self) -> bool {
        let mut state = self.lock();
        state.remote_fin = true;
        wake(&mut state.read_waker);
        state.local_fin
    }

    /// The peer accepted the stream.
    pub(crate) fn replied(&self) {
        let mut state = self.lock();
        state.replied = true;
        wake(&mut state.reply_waker);
    }

    /// Ends the stream abnormally: writes fail with `reason`. What the peer sent before is
    /// still read, as with spdystream (the kubelet sends its error text and then resets the
    /// error stream); then reads fail with `reason`, or end (EOF) if the peer had finished.
    /// Returns false if it had already ended (reset, or finished both ways).
    pub(crate) fn reset(&self, reason: String) -> bool {
        let mut state = self.lock();
        if state.reset.is_some() || (state.local_fin && state.remote_fin && state.queue.is_empty())
        {
            return false;
        }
        state.reset = Some(reason);
        wake(&mut state.read_waker);
        wake(&mut state.reply_waker);
        drop(state);
        self.space.notify_waiters();
        true
    }

    /// The connection ended: writes fail, and reads once what the peer finished is read.
    pub(crate) fn connection_lost(&self, reason: &str) {
        self.reset(format!("connection lost: {reason}"));
    }
}

fn wake(waker: &mut Option<Waker>) {
    if let Some(waker) = waker.take() {
        waker.wake();
    }
}

/// One stream of a [`Connection`](crate::Connection): bytes in both directions, `shutdown`
/// sends FIN (the peer reads EOF, this side can still read), dropping an unfinished stream
/// resets it (RST_STREAM CANCEL).
pub struct Stream {
    shared: Arc<StreamShared>,
    conn: Arc<Shared>,
    _owner: Arc<Owner>,
    tx: PollSender<Frame>,
    headers: Headers,
    current: Bytes,
}

impl Stream {
    pub(crate) fn new(
        shared: Arc<StreamShared>,
        conn: Arc<Shared>,
        owner: Arc<Owner>,
        headers: Headers,
    ) -> Self {
        let tx = PollSender::new(conn.data_tx.clone());
        Stream {
            shared,
            conn,
            _owner: owner,
            tx,
            headers,
            current: Bytes::new(),
        }
    }

    /// The stream id.
    pub fn id(&self) -> u32 {
        self.shared.id
    }

    /// The headers it was opened with.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Accepts a stream the peer opened (SYN_REPLY); `fin` if this side will send nothing.
    pub async fn reply(&mut self, headers: Headers, fin: bool) -> io::Result<()> {
        let frame = Frame::SynReply {
            stream: self.id(),
            fin,
            headers,
        };
        self.conn
            .data_tx
            .send(frame)
            .await
            .map_err(|_| self.conn.closed_error())?;
        let mut state = self.shared.lock();
        state.replied = true;
        state.local_fin |= fin;
        Ok(())
    }

    /// Waits until the peer accepts a stream this side opened.
    pub async fn wait_reply(&self) -> io::Result<()> {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if let Some(reason) = &state.reset {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    reason.clone(),
                )));
            }
            if state.replied {
                return Poll::Ready(Ok(()));
            }
            if self.conn.is_closed() {
                return Poll::Ready(Err(self.conn.closed_error()));
            }
            state.reply_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Resets the stream with `status` (see [`crate::frame::status`]).
    pub fn reset(&self, status: u32, reason: &str) {
        if self.shared.reset(reason.to_string()) {
            self.conn.send_reset(self.id(), status);
        }
        self.conn.remove(self.id());
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.current.is_empty() {
            let mut state = self.shared.lock();
            match state.queue.pop_front() {
                Some(chunk) => {
                    state.queued -= chunk.len();
                    drop(state);
                    self.shared.space.notify_waiters();
                    self.current = chunk;
                }
                None => {
                    if state.remote_fin {
                        return Poll::Ready(Ok(()));
                    }
                    if let Some(reason) = &state.reset {
                        let err = io::Error::new(io::ErrorKind::ConnectionReset, reason.clone());
                        return Poll::Ready(Err(err));
                    }
                    state.read_waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
        let n = buf.remaining().min(self.current.len());
        buf.put_slice(&self.current[..n]);
        self.current.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl Stream {
    /// Fails writes on a reset or half-closed stream.
    fn check_writable(&self) -> io::Result<()> {
        let state = self.shared.lock();
        if let Some(reason) = &state.reset {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                reason.clone(),
            ));
        }
        if state.local_fin {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after the stream was half-closed",
            ));
        }
        Ok(())
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, frame: Frame) -> Poll<io::Result<()>> {
        if ready!(self.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(self.conn.closed_error()));
        }
        if self.tx.send_item(frame).is_err() {
            return Poll::Ready(Err(self.conn.closed_error()));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_writable()?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(self.conn.config.max_data_frame);
        if ready!(self.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(self.conn.closed_error()));
        }
        let frame = Frame::Data {
            stream: self.id(),
            fin: false,
            data: Bytes::copy_from_slice(&buf[..n]),
        };
        if self.tx.send_item(frame).is_err() {
            return Poll::Ready(Err(self.conn.closed_error()));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The writer task flushes every batch it writes.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.shared.lock().local_fin {
            return Poll::Ready(Ok(()));
        }
        self.check_writable()?;
        let fin = Frame::Data {
            stream: self.id(),
            fin: true,
            data: Bytes::new(),
        };
        ready!(self.poll_send(cx, fin))?;
        let done = {
            let mut state = self.shared.lock();
            state.local_fin = true;
            state.remote_fin
        };
        if done {
            self.conn.remove(self.id());
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let finished = {
            let state = self.shared.lock();
            state.local_fin && state.remote_fin
        };
        if !finished {
            self.reset(status::CANCEL, "the stream was closed");
        }
        self.conn.remove(self.id());
    }
}
