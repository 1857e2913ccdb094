//! Copying between a plain byte stream and a started tunnel connection that carries
//! [`Frame`]s, on either end (the client on the agent, the local target on the laptop).

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::frame::{Frame, FrameCodec, FrameError};

/// Payload bytes read from the plain side per frame (frames may carry up to
/// [`MAX_FRAME`](crate::MAX_FRAME)).
const CHUNK: usize = 32 * 1024;

/// Byte counters for a relay: bytes written to the plain side and read from it.
#[derive(Debug, Clone, Copy)]
pub struct Counters<'a> {
    /// Bytes that came out of the tunnel and were written to the plain side.
    pub from_tunnel: Option<&'a AtomicU64>,
    /// Bytes read from the plain side and sent into the tunnel.
    pub into_tunnel: Option<&'a AtomicU64>,
}

impl Counters<'_> {
    /// No counting.
    pub const NONE: Counters<'static> = Counters {
        from_tunnel: None,
        into_tunnel: None,
    };
}

fn add(counter: Option<&AtomicU64>, n: usize) {
    if let Some(counter) = counter {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// How a relay ended.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both directions ended with an orderly EOF.
    Clean,
    /// The tunnel broke (closed without an end frame, a read error, a malformed frame) or the
    /// plain side failed while reading; both sides are dropped.
    Aborted(String),
}

/// Copies between `plain` and `tunnel`, a connection that carries frames.
///
/// Each direction ends on its own: plain EOF → an end frame is sent; an end frame → the plain
/// side is shut down for writing. So half-closes pass through even where the transport cannot
/// half-close. If the plain side stops accepting bytes, the rest of that direction is read and
/// discarded so the other direction can still finish. Bytes `tunnel` already buffered (a
/// `BufReader` that read the start signal) are frames like the rest.
pub async fn relay<P, T>(plain: P, tunnel: T, counters: Counters<'_>) -> RelayEnd
where
    P: AsyncRead + AsyncWrite,
    T: AsyncRead + AsyncWrite,
{
    let (mut plain_rx, mut plain_tx) = tokio::io::split(plain);
    let (tunnel_rx, tunnel_tx) = tokio::io::split(tunnel);
    let mut frames_out = FramedWrite::new(tunnel_tx, FrameCodec);
    let mut frames_in = FramedRead::new(tunnel_rx, FrameCodec);
    let up = async {
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            // The previous chunk's allocation is reused once the encoder has copied it.
            buf.reserve(CHUNK);
            let n = match (&mut plain_rx).take(CHUNK as u64).read_buf(&mut buf).await {
                Ok(n) => n,
                Err(e) => return Err(format!("reading the plain side: {e}")),
            };
            let frame = if n == 0 {
                Frame::End
            } else {
                Frame::Data(buf.split().freeze())
            };
            if let Err(e) = frames_out.send(frame).await {
                return Err(format!("writing to the tunnel: {e}"));
            }
            if n == 0 {
                return Ok(());
            }
            add(counters.into_tunnel, n);
        }
    };
    let down = async {
        let mut plain_open = true;
        loop {
            match frames_in.next().await {
                None => return Err("the tunnel closed without an end frame".to_string()),
                Some(Err(FrameError::Io(e))) => {
                    return Err(format!("reading from the tunnel: {e}"))
                }
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(Frame::End)) => {
                    if plain_open {
                        let _ = plain_tx.shutdown().await;
                    }
                    return Ok(());
                }
                Some(Ok(Frame::Data(data))) => {
                    if plain_open {
                        if plain_tx.write_all(&data).await.is_ok() {
                            add(counters.from_tunnel, data.len());
                        } else {
                            plain_open = false;
                        }
                    }
                }
            }
        }
    };
    match tokio::try_join!(up, down) {
        Ok(_) => RelayEnd::Clean,
        Err(reason) => RelayEnd::Aborted(reason),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::BufReader;

    use super::*;

    /// Both relay ends over in-memory pipes: bytes arrive exactly and half-closes pass.
    #[tokio::test]
    async fn relay_passes_bytes_and_half_closes() {
        let (tunnel_a, tunnel_b) = tokio::io::duplex(1024);
        let (plain_a, mut client) = tokio::io::duplex(1024);
        let (plain_b, mut server) = tokio::io::duplex(1024);
        let a = tokio::spawn(relay(plain_a, BufReader::new(tunnel_a), Counters::NONE));
        let up = AtomicU64::new(0);
        let down = AtomicU64::new(0);
        let b = async {
            relay(
                plain_b,
                BufReader::new(tunnel_b),
                Counters {
                    from_tunnel: Some(&down),
                    into_tunnel: Some(&up),
                },
            )
            .await
        };
        let request: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let response: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let client_side = async {
            client.write_all(&request).await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        };
        let server_side = async {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            server.write_all(&response).await.unwrap();
            server.shutdown().await.unwrap();
            got
        };
        let (end_b, got_response, got_request) = tokio::join!(b, client_side, server_side);
        assert_eq!(end_b, RelayEnd::Clean);
        assert_eq!(a.await.unwrap(), RelayEnd::Clean);
        assert!(got_request == request, "request bytes differ");
        assert!(got_response == response, "response bytes differ");
        assert_eq!(down.load(Ordering::Relaxed), request.len() as u64);
        assert_eq!(up.load(Ordering::Relaxed), response.len() as u64);
    }

    #[tokio::test]
    async fn relay_aborts_when_the_tunnel_breaks() {
        let (tunnel_a, tunnel_b) = tokio::io::duplex(1024);
        let (plain, _client) = tokio::io::duplex(1024);
        drop(tunnel_b);
        let end = relay(plain, tunnel_a, Counters::NONE).await;
        assert_eq!(
            end,
            RelayEnd::Aborted("the tunnel closed without an end frame".into())
        );
    }

    #[tokio::test]
    async fn relay_aborts_on_an_oversized_frame() {
        let (tunnel_a, mut peer) = tokio::io::duplex(1024);
        let (plain, _client) = tokio::io::duplex(1024);
        let relayed = tokio::spawn(relay(plain, tunnel_a, Counters::NONE));
        peer.write_all(&(1u32 << 20).to_be_bytes()).await.unwrap();
        assert_eq!(
            relayed.await.unwrap(),
            RelayEnd::Aborted("frame of 1048576 bytes exceeds 65536".into())
        );
    }

    /// An end frame from the peer shuts the plain side down for writing while the other
    /// direction goes on.
    #[tokio::test]
    async fn an_end_frame_half_closes_the_plain_side() {
        let (tunnel_a, peer) = tokio::io::duplex(1024);
        let (plain, mut client) = tokio::io::duplex(1024);
        let relayed = tokio::spawn(relay(plain, tunnel_a, Counters::NONE));
        let (peer_rx, peer_tx) = tokio::io::split(peer);
        let mut peer_out = FramedWrite::new(peer_tx, FrameCodec);
        let mut peer_in = FramedRead::new(peer_rx, FrameCodec);
        peer_out
            .send(Frame::Data(bytes::Bytes::from_static(b"answer")))
            .await
            .unwrap();
        peer_out.send(Frame::End).await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"answer", "the client sees EOF after the data");
        // The client may still send; its EOF becomes the peer's end frame.
        client.write_all(b"late").await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(
            peer_in.next().await.unwrap().unwrap(),
            Frame::Data(bytes::Bytes::from_static(b"late"))
        );
        assert_eq!(peer_in.next().await.unwrap().unwrap(), Frame::End);
        assert_eq!(relayed.await.unwrap(), RelayEnd::Clean);
    }
}
