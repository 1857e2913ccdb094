//! SPDY/3.1 as Kubernetes speaks it for `pods/portforward`, shared by czctl (client) and
//! kubesim (server), the way mirrord's two sides share one protocol crate.
//!
//! # Layout
//! - [`dictionary`]: the zlib dictionary of SPDY/3 header blocks.
//! - [`headers`]: header blocks, compressed as one zlib stream per direction.
//! - [`frame`]: the frames and their tokio-util codec.
//! - [`conn`]: a multiplexed connection over any byte stream: a reader task, a writer task and
//!   [`Stream`]s that are `AsyncRead + AsyncWrite` with half-close (FIN) and reset (RST).
//! - [`ws`]: a byte stream over binary WebSocket messages (`SPDY/3.1+portforward.k8s.io`
//!   tunnels SPDY inside a WebSocket).
//! - [`portforward`]: the names Kubernetes puts on the wire for port forwarding.
//!
//! # Data flow
//! ```text
//! Stream::poll_write ──DATA──▶ bounded queue ──▶ writer task (encode, batch, flush) ──▶ io
//! io ──▶ reader task (decode) ──DATA──▶ per-stream queue (capped) ──▶ Stream::poll_read
//!                             ──PING──▶ echoed    ──RST/GOAWAY/EOF──▶ streams fail, woken
//! ```
//!
//! # Flow control
//! Kubernetes' peers (moby/spdystream in the API server, kubelet and client-go) never send
//! WINDOW_UPDATE and ignore the ones they get, so the wire carries no per-stream backpressure.
//! Memory is bounded here instead: each stream queues at most
//! [`Config::stream_queue_bytes`] of received data; when a stream's queue is full the reader
//! waits for its reader (backpressure on the whole connection, as spdystream does), and if
//! that stream drains nothing for [`Config::stall_timeout`] it is reset so the other streams of
//! the connection move again. Outbound frames share one bounded queue
//! ([`Config::write_queue_frames`]).

pub mod conn;
pub mod dictionary;
pub mod frame;
pub mod headers;
pub mod portforward;
mod stream;
pub mod ws;

pub use conn::{Config, Connection, Incoming, Role};
pub use frame::Frame;
pub use headers::Headers;
pub use stream::Stream;

/// Why bytes could not be read or written as frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The transport failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A control frame of another SPDY version.
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    /// A control frame shorter than its fixed fields.
    #[error("truncated {0} frame")]
    Truncated(&'static str),
    /// A stream frame for stream 0.
    #[error("frame for stream 0")]
    ZeroStream,
    /// A header block that does not decompress.
    #[error("header block compression: {0}")]
    Compression(String),
    /// A header block that decompresses to nonsense.
    #[error("malformed header block: {0}")]
    BadHeaderBlock(&'static str),
    /// A header block over [`headers::MAX_BLOCK`].
    #[error("header block too large")]
    HeadersTooLarge,
    /// A payload over 24 bits.
    #[error("frame payload of {0} bytes exceeds 16 MiB")]
    TooLarge(usize),
    /// [`Frame::Unknown`] cannot be sent.
    #[error("cannot encode control frame type {0}")]
    Unencodable(u16),
}
