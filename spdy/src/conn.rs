//! A multiplexed SPDY connection over any byte stream.
//!
//! [`Connection::new`] splits the transport into a reader task and a writer task. The writer
//! owns the transport's write half and the header compressor: frames reach it through one
//! bounded queue (SYN_STREAM, SYN_REPLY, DATA, in order) and one unbounded control queue
//! (RST_STREAM, PING replies, GOAWAY; taken first). The reader owns the read half and the
//! decompressor and feeds each stream's queue. The connection ends when every
//! [`Connection`] handle and [`Stream`] is dropped (GOAWAY, then the transport is shut), when
//! [`Connection::close`] is called, or when the transport fails.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::{Encoder, FramedRead};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::frame::{status, Codec, Frame};
use crate::headers::Headers;
use crate::stream::{Push, Stream, StreamShared};

/// Which end of the connection this is: clients open odd stream ids and pings, servers even.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that made the upgrade request.
    Client,
    /// The side that answered it.
    Server,
}

/// Limits and timers of a connection.
#[derive(Debug, Clone)]
pub struct Config {
    /// Received bytes one stream may hold before the reader waits for it.
    pub stream_queue_bytes: usize,
    /// How long the reader waits for a full stream to drain anything before resetting it.
    pub stall_timeout: Duration,
    /// Frames waiting for the writer (the outbound backpressure of all streams together).
    pub write_queue_frames: usize,
    /// Largest DATA payload this side sends.
    pub max_data_frame: usize,
    /// Send a PING this often; the connection is declared dead after two intervals without
    /// any frame from the peer.
    pub keepalive: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            stream_queue_bytes: 512 * 1024,
            stall_timeout: Duration::from_secs(5),
            write_queue_frames: 256,
            max_data_frame: 64 * 1024,
            keepalive: None,
        }
    }
}

/// Bytes the writer gathers from ready frames before one write to the transport.
const WRITE_BATCH: usize = 256 * 1024;
/// Peer-opened streams waiting for [`Incoming::accept`].
const ACCEPT_QUEUE: usize = 1024;

/// What the writer task is asked to do besides writing queued frames.
pub(crate) enum Control {
    Frame(Frame),
    /// Send GOAWAY, flush, shut the transport down.
    Shutdown,
}

/// State shared by handles, streams and the two tasks.
pub(crate) struct Shared {
    pub(crate) config: Config,
    role: Role,
    streams: Mutex<HashMap<u32, Arc<StreamShared>>>,
    next_id: tokio::sync::Mutex<u32>,
    pub(crate) data_tx: mpsc::Sender<Frame>,
    control_tx: mpsc::UnboundedSender<Control>,
    closed: CancellationToken,
    reason: Mutex<Option<String>>,
    going_away: AtomicBool,
    stalled: AtomicBool,
    last_peer_stream: AtomicU32,
    /// PINGs sent since the last frame from the peer.
    unanswered: AtomicU32,
}

/// Keeps the connection open while any handle or stream exists.
pub(crate) struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.shared.control_tx.send(Control::Shutdown);
    }
}

/// A handle to a connection; clones share it.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    owner: Arc<Owner>,
}

/// Streams the peer opens, to accept (servers) or ignore (dropping refuses them).
pub struct Incoming {
    rx: mpsc::Receiver<Stream>,
}

impl Incoming {
    /// The next stream the peer opened; `None` once the connection has ended.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.rx.recv().await
    }
}

impl Connection {
    /// Starts a connection over `io`. Must be called inside a Tokio runtime.
    pub fn new<T>(io: T, role: Role, config: Config) -> (Connection, Incoming)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (data_tx, data_rx) = mpsc::channel(config.write_queue_frames.max(1));
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (accept_tx, accept_rx) = mpsc::channel(ACCEPT_QUEUE);
        let keepalive = config.keepalive;
        let shared = Arc::new(Shared {
            config,
            role,
            streams: Mutex::new(HashMap::new()),
            next_id: tokio::sync::Mutex::new(if role == Role::Client { 1 } else { 2 }),
            data_tx,
            control_tx,
            closed: CancellationToken::new(),
            reason: Mutex::new(None),
            going_away: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            last_peer_stream: AtomicU32::new(0),
            unanswered: AtomicU32::new(0),
        });
        let owner = Arc::new(Owner {
            shared: shared.clone(),
        });
        let (read, write) = tokio::io::split(io);
        tokio::spawn(write_loop(write, data_rx, control_rx, shared.clone()));
        let reader = Reader {
            shared: shared.clone(),
            owner: Arc::downgrade(&owner),
            accept_tx,
        };
        tokio::spawn(reader.run(FramedRead::new(read, Codec::default())));
        if let Some(every) = keepalive {
            tokio::spawn(keepalive_loop(shared.clone(), every));
        }
        (Connection { shared, owner }, Incoming { rx: accept_rx })
    }

    /// Opens a stream with `headers`; `fin` if this side will send nothing on it. Does not wait
    /// for the peer's reply ([`Stream::wait_reply`]).
    pub async fn open(&self, headers: Headers, fin: bool) -> io::Result<Stream> {
        let mut next = self.shared.next_id.lock().await;
        if self.shared.is_closed() {
            return Err(self.shared.closed_error());
        }
        if self.is_going_away() || *next > 0x7fff_ffff {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the connection takes no new streams (GOAWAY)",
            ));
        }
        let id = *next;
        *next += 2;
        let stream = StreamShared::new(id, fin, false, false);
        self.shared.lock_streams().insert(id, stream.clone());
        let syn = Frame::SynStream {
            stream: id,
            associated: 0,
            priority: 0,
            fin,
            unidirectional: false,
            headers: headers.clone(),
        };
        let handle = Stream::new(stream, self.shared.clone(), self.owner.clone(), headers);
        self.shared
            .data_tx
            .send(syn)
            .await
            .map_err(|_| self.shared.closed_error())?;
        Ok(handle)
    }

    /// Streams open now.
    pub fn active_streams(&self) -> usize {
        self.shared.lock_streams().len()
    }

    /// The reader is waiting for a stream whose queue is full (other streams are held up).
    pub fn is_stalled(&self) -> bool {
        self.shared.stalled.load(Ordering::Relaxed)
    }

    /// The peer sent GOAWAY (or this side did): no new streams.
    pub fn is_going_away(&self) -> bool {
        self.shared.going_away.load(Ordering::Relaxed)
    }

    /// The connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Resolves when the connection has ended.
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<String> {
        self.shared.reason()
    }

    /// Sends GOAWAY and shuts the transport down; open streams fail.
    pub fn close(&self) {
        self.shared.going_away.store(true, Ordering::Relaxed);
        let _ = self.shared.control_tx.send(Control::Shutdown);
    }
}

impl Shared {
    fn lock_streams(&self) -> MutexGuard<'_, HashMap<u32, Arc<StreamShared>>> {
        // Only inserts and removes under the lock: a poisoned map is still consistent.
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn remove(&self, id: u32) {
        self.lock_streams().remove(&id);
    }

    fn get(&self, id: u32) -> Option<Arc<StreamShared>> {
        self.lock_streams().get(&id).cloned()
    }

    pub(crate) fn send_control(&self, frame: Frame) {
        // A closed writer means the connection is gone and the frame has no one to reach.
        let _ = self.control_tx.send(Control::Frame(frame));
    }

    /// Queues RST_STREAM behind the stream's own queued DATA (so a FIN sent just before is
    /// not overtaken), without blocking: when the queue is full it is sent by a task.
    pub(crate) fn send_reset(&self, stream: u32, status: u32) {
        let frame = Frame::RstStream { stream, status };
        match self.data_tx.try_send(frame) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(frame)) => {
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        let data_tx = self.data_tx.clone();
                        runtime.spawn(async move {
                            let _ = data_tx.send(frame).await;
                        });
                    }
                    Err(_) => self.send_control(frame),
                }
            }
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn closed_error(&self) -> io::Error {
        let reason = self
            .reason()
            .unwrap_or_else(|| "the connection is closed".to_string());
        io::Error::new(io::ErrorKind::ConnectionAborted, reason)
    }

    /// Ends the connection: records why, fails every unfinished stream.
    fn close_with(&self, reason: String) {
        {
            let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                debug!(%reason, "spdy: connection ended");
                *slot = Some(reason.clone());
            }
        }
        self.going_away.store(true, Ordering::Relaxed);
        self.closed.cancel();
        let streams: Vec<_> = self.lock_streams().drain().map(|(_, s)| s).collect();
        for stream in streams {
            stream.connection_lost(&reason);
        }
    }
}

/// The reader task's state.
struct Reader {
    shared: Arc<Shared>,
    /// To hand accepted streams a keep-alive reference while the connection has owners.
    owner: std::sync::Weak<Owner>,
    accept_tx: mpsc::Sender<Stream>,
}

impl Reader {
    async fn run<R: AsyncRead + Unpin>(self, mut frames: FramedRead<R, Codec>) {
        let reason = loop {
            let next = tokio::select! {
                next = frames.next() => next,
                _ = self.shared.closed.cancelled() => break "closed by this side".to_string(),
            };
            let frame = match next {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => break format!("reading from the peer failed: {e}"),
                None => break "the peer closed the connection".to_string(),
            };
            self.shared.unanswered.store(0, Ordering::Relaxed);
            self.handle(frame).await;
        };
        self.shared.close_with(reason);
    }

    async fn handle(&self, frame: Frame) {
        match frame {
            Frame::Data { stream, fin, data } => {
                let Some(target) = self.shared.get(stream) else {
                    return;
                };
                if !data.is_empty() {
                    self.deliver(&target, &data).await;
                }
                if fin && target.remote_finished() {
                    self.shared.remove(stream);
                }
            }
            Frame::SynStream {
                stream,
                fin,
                headers,
                ..
            } => self.accept(stream, fin, headers).await,
            Frame::SynReply { stream, fin, .. } | Frame::Headers { stream, fin, .. } => {
                if let Some(target) = self.shared.get(stream) {
                    target.replied();
                    if fin && target.remote_finished() {
                        self.shared.remove(stream);
                    }
                }
            }
            Frame::RstStream { stream, status } => {
                if let Some(target) = self.shared.get(stream) {
                    target.reset(format!("the peer reset the stream (status {status})"));
                    self.shared.remove(stream);
                }
            }
            Frame::Ping(id) => {
                let ours = (id % 2 == 1) == (self.shared.role == Role::Client);
                if !ours {
                    self.shared.send_control(Frame::Ping(id));
                }
            }
            Frame::GoAway { last_good, status } => {
                debug!(last_good, status, "spdy: the peer sent GOAWAY");
                self.shared.going_away.store(true, Ordering::Relaxed);
            }
            Frame::Settings(_) | Frame::WindowUpdate { .. } | Frame::Unknown { .. } => {}
        }
    }

    /// Queues `data` for `target`, waiting while its queue is full; resets it if it drains
    /// nothing for the stall timeout.
    async fn deliver(&self, target: &StreamShared, data: &bytes::Bytes) {
        let cap = self.shared.config.stream_queue_bytes;
        loop {
            let space = target.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            match target.push(data, cap) {
                Push::Queued | Push::Discarded => return,
                Push::Full => {}
            }
            self.shared.stalled.store(true, Ordering::Relaxed);
            let waited = tokio::time::timeout(self.shared.config.stall_timeout, space).await;
            self.shared.stalled.store(false, Ordering::Relaxed);
            if waited.is_err() {
                let secs = self.shared.config.stall_timeout.as_secs_f32();
                warn!(
                    stream = target.id,
                    "spdy: the reader of a stream took nothing for {secs:.0} s with {cap} bytes \
                     queued; resetting it so the connection's other streams can move"
                );
                if target.reset(format!("the reader took nothing for {secs:.0} s")) {
                    self.shared.send_control(Frame::RstStream {
                        stream: target.id,
                        status: status::CANCEL,
                    });
                }
                self.shared.remove(target.id);
                return;
            }
        }
    }

    /// Registers a stream the peer opened and hands it to [`Incoming`].
    async fn accept(&self, id: u32, fin: bool, headers: Headers) {
        let peer_parity = if self.shared.role == Role::Client {
            0
        } else {
            1
        };
        let last = self.shared.last_peer_stream.load(Ordering::Relaxed);
        let refuse = |status| {
            self.shared
                .send_control(Frame::RstStream { stream: id, status })
        };
        if id % 2 != peer_parity || id <= last {
            return refuse(status::PROTOCOL_ERROR);
        }
        self.shared.last_peer_stream.store(id, Ordering::Relaxed);
        let Some(owner) = self.owner.upgrade() else {
            return refuse(status::REFUSED_STREAM);
        };
        if self.shared.is_closed() || self.shared.going_away.load(Ordering::Relaxed) {
            return refuse(status::REFUSED_STREAM);
        }
        let shared_stream = StreamShared::new(id, false, fin, true);
        self.shared.lock_streams().insert(id, shared_stream.clone());
        let stream = Stream::new(shared_stream, self.shared.clone(), owner, headers);
        // A dropped Incoming refuses: the stream's Drop resets it.
        let _ = self.accept_tx.send(stream).await;
    }
}

/// The writer task: frames in order, control frames first, batched into few writes.
async fn write_loop<W: AsyncWrite>(
    io: W,
    mut data_rx: mpsc::Receiver<Frame>,
    mut control_rx: mpsc::UnboundedReceiver<Control>,
    shared: Arc<Shared>,
) {
    tokio::pin!(io);
    let mut codec = Codec::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let result: Result<(), crate::FrameError> = async {
        loop {
            let first = tokio::select! {
                biased;
                control = control_rx.recv() => control,
                frame = data_rx.recv() => frame.map(Control::Frame),
                _ = shared.closed.cancelled() => return Ok(()),
            };
            let mut next = first;
            let mut shutdown = false;
            while let Some(item) = next.take() {
                match item {
                    Control::Frame(frame) => codec.encode(frame, &mut buf)?,
                    Control::Shutdown => {
                        let last_good = shared.last_peer_stream.load(Ordering::Relaxed);
                        codec.encode(
                            Frame::GoAway {
                                last_good,
                                status: 0,
                            },
                            &mut buf,
                        )?;
                        shutdown = true;
                        break;
                    }
                }
                if buf.len() < WRITE_BATCH {
                    next = control_rx
                        .try_recv()
                        .ok()
                        .or_else(|| data_rx.try_recv().ok().map(Control::Frame));
                }
            }
            io.write_all(&buf).await?;
            io.flush().await?;
            buf.clear();
            if shutdown {
                // Best effort: the peer may already be gone.
                let _ = io.shutdown().await;
                return Ok(());
            }
        }
    }
    .await;
    let reason = match result {
        Ok(()) => "closed by this side".to_string(),
        Err(e) => format!("writing to the peer failed: {e}"),
    };
    shared.close_with(reason);
}

/// Sends PINGs; ends the connection when the peer has sent nothing for two intervals.
async fn keepalive_loop(shared: Arc<Shared>, every: Duration) {
    let mut id: u32 = if shared.role == Role::Client { 1 } else { 2 };
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shared.closed.cancelled() => return,
        }
        if shared.unanswered.fetch_add(1, Ordering::Relaxed) >= 2 {
            let secs = (every * 2).as_secs();
            shared.close_with(format!("no answer to PING for {secs} s"));
            return;
        }
        shared.send_control(Frame::Ping(id));
        id = id.wrapping_add(2) & 0x7fff_ffff;
    }
}

#[cfg(test)]
mod tests;
