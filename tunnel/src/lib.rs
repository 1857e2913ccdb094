//! czctl's reverse tunnel: the wire protocol both ends speak, and the in-cluster end (the
//! agent, run by the `czctl-agent` binary of this crate).
//!
//! Connections that arrive in the cluster are handed to a server on the developer's laptop.
//! An agent pod listens on a control port and a data port. The laptop (czctl's
//! `tunnel::cluster`) opens connections to the control port through the pod port-forward API,
//! so only the cluster's own authentication guards it, and keeps a few of them parked at the
//! agent. A client (the intercept router, NGINX) that connects to the data port is spliced to a
//! parked connection, and the laptop connects it to its local target.
//!
//! ```text
//!  NGINX ──TCP──▶ agent :7001 (data) ◀──splice──▶ parked connection ◀── agent :7000 (control)
//!                                                        ▲
//!  laptop: local server ◀──TCP── czctl ──port-forward (kube API)──┘
//! ```
//!
//! This crate holds no Kubernetes client, no CLI framework and no TLS, so the agent image is
//! one small static binary. czctl depends on it for the same types on the laptop's side.
//!
//! # Wire protocol (version 1), on each control connection
//!
//! 1. Hello, laptop → agent, one line ([`Hello`]): `CZTUN/1 TOKEN\n` (at most 512 bytes, sent
//!    within 10 s). A token is 1 to 256 printable ASCII characters without spaces.
//! 2. Answer, agent → laptop, one line ([`Answer`]):
//!    - `OK KEEPALIVE_MS\n`: accepted; the connection is now *parked*. It is in the agent's
//!      line before the answer is sent, so parked connections are claimed in the order their
//!      `OK`s were sent.
//!    - `DENIED REASON\n`, then the agent closes: wrong token (compared in constant time),
//!      another protocol version (the reason names the one the agent speaks), or a malformed
//!      hello. The agent logs the reason and the peer, never the token.
//! 3. Parked, one byte at a time ([`Signal`]):
//!    - agent → laptop `P` (ping) every KEEPALIVE_MS; the laptop answers `p` (pong). The agent
//!      drops a parked connection whose previous ping is still unanswered when the next is due;
//!      the laptop drops one that has been silent for three intervals, and opens another.
//!    - agent → laptop `S` (start): a client connected to the data port. The agent now waits
//!      (up to 10 s, skipping pongs still in flight) for one byte from the laptop:
//!      - `R` (ready): the laptop connected to its local target; frames follow both ways.
//!      - `X` (refused): the local target refused; both sides close, and the agent closes the
//!        client (NGINX answers 502).
//!      - EOF, an error or silence: the parked connection was dead; the agent tries the next.
//! 4. Frames, both ways after `R` ([`FrameCodec`]): a 4-byte big-endian length, then that many
//!    bytes (at most 65536). A zero length ends that direction (the receiver shuts down writing
//!    to its plain side), so half-closes pass even though the WebSocket port-forward cannot
//!    half-close. The connection ends when both directions have ended; closing it without an
//!    end frame aborts.
//!
//! The agent reads nothing from a client before the laptop said `R`, so a dead parked
//! connection never loses request bytes. A client that finds nothing parked waits up to the
//! park timeout (5 s by default) for one, then is closed.
//!
//! # Modules
//!
//! - [`message`]: the hello and answer lines, the one-byte signals, the token rules.
//! - [`frame`]: the frame codec (a [`tokio_util::codec`] `Decoder`/`Encoder`).
//! - [`relay`](mod@relay): copying between a plain stream and a framed tunnel connection.
//! - [`agent`]: the in-cluster end: listeners, the line of parked connections, splicing.

pub mod agent;
pub mod frame;
pub mod message;
pub mod relay;

pub use frame::{Frame, FrameCodec, FrameError, MAX_FRAME};
pub use message::{
    read_line, tokens_match, valid_token, write_line, Answer, Denial, Hello, ProtocolError, Signal,
    MAX_LINE, VERSION,
};
pub use relay::{relay, Counters, RelayEnd};
