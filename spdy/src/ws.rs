//! A byte stream over binary WebSocket messages, for SPDY tunnelled in a WebSocket
//! (`SPDY/3.1+portforward.k8s.io`): every write becomes one binary message, reads take the
//! payloads of binary messages in order. Text, ping and pong messages are skipped
//! (tungstenite answers pings itself); a close message or the end of the socket reads as EOF.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Bytes over a WebSocket `S` (for example `tokio_tungstenite::WebSocketStream`).
pub struct WsBytes<S> {
    socket: S,
    current: Bytes,
    eof: bool,
}

impl<S> WsBytes<S> {
    /// Wraps an upgraded WebSocket.
    pub fn new(socket: S) -> Self {
        WsBytes {
            socket,
            current: Bytes::new(),
            eof: false,
        }
    }
}

fn to_io(err: WsError) -> io::Error {
    match err {
        WsError::Io(err) => err,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "the WebSocket is closed")
        }
        other => io::Error::other(other),
    }
}

impl<S> AsyncRead for WsBytes<S>
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.current.is_empty() {
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.socket).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.current = data,
                Some(Ok(Message::Close(_))) | None => self.eof = true,
                Some(Ok(_)) => {}
                Some(Err(err)) => return Poll::Ready(Err(to_io(err))),
            }
        }
        let n = buf.remaining().min(self.current.len());
        buf.put_slice(&self.current[..n]);
        self.current.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S> AsyncWrite for WsBytes<S>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.socket).poll_ready(cx)).map_err(to_io)?;
        let message = Message::Binary(Bytes::copy_from_slice(buf));
        Pin::new(&mut self.socket)
            .start_send(message)
            .map_err(to_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx).map_err(to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_close(cx).map_err(to_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::sync::PollSender;

    /// An in-memory "socket": messages written land in a channel, messages read come from one.
    struct Pipe {
        rx: tokio::sync::mpsc::Receiver<Result<Message, WsError>>,
        tx: PollSender<Message>,
    }

    impl Stream for Pipe {
        type Item = Result<Message, WsError>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.rx.poll_recv(cx)
        }
    }

    impl Sink<Message> for Pipe {
        type Error = WsError;
        fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Pin::new(&mut self.tx)
                .poll_ready(cx)
                .map_err(|_| WsError::ConnectionClosed)
        }
        fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
            Pin::new(&mut self.tx)
                .start_send(item)
                .map_err(|_| WsError::ConnectionClosed)
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Pin::new(&mut self.tx)
                .poll_close(cx)
                .map_err(|_| WsError::ConnectionClosed)
        }
    }

    #[tokio::test]
    async fn messages_become_bytes_and_back() {
        let (in_tx, in_rx) = tokio::sync::mpsc::channel(8);
        let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(8);
        let mut bytes = WsBytes::new(Pipe {
            rx: in_rx,
            tx: PollSender::new(out_tx),
        });
        for message in [
            Message::Binary(Bytes::from_static(b"he")),
            Message::Ping(Bytes::new()),
            Message::Text("ignored".into()),
            Message::Binary(Bytes::from_static(b"llo")),
            Message::Close(None),
        ] {
            in_tx.send(Ok(message)).await.unwrap();
        }
        let mut read = String::new();
        bytes.read_to_string(&mut read).await.unwrap();
        assert_eq!(read, "hello");
        bytes.write_all(b"spdy").await.unwrap();
        bytes.flush().await.unwrap();
        assert_eq!(
            out_rx.recv().await,
            Some(Message::Binary(Bytes::from_static(b"spdy")))
        );
    }
}
