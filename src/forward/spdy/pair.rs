//! One forwarded connection on a pooled SPDY connection: its error and data streams.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use spdy::portforward::{stream_headers, TYPE_DATA, TYPE_ERROR};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::forward::transport::Opened;

/// After a data stream is gone, how long its error stream may still bring the server's text.
const ERROR_GRACE: Duration = Duration::from_secs(5);

/// Opens the error and data streams of one forwarded connection. The error stream is
/// half-closed at once and read by a task of its own, which keeps it until the server ends it
/// (so it is never reset under a live data stream).
///
/// The data stream is used without waiting for its SYN_REPLY: the client's first bytes follow
/// the SYN_STREAMs at once, saving a round trip to the API server per connection. Servers
/// built on moby/spdystream (the kubelet, and the API server's tunnel) reply to a stream in the
/// same ordered handler that then takes its data, and kubesim queues data before its reply; a
/// refused stream is reset, which phase 1 of the connection treats like any refusal (another
/// pod, with the kept bytes replayed).
pub(super) async fn open_pair(
    conn: &spdy::Connection,
    port: u16,
    request: u64,
) -> std::io::Result<Opened> {
    let mut error = conn
        .open(stream_headers(TYPE_ERROR, port, request), false)
        .await?;
    error.shutdown().await?;
    let data = conn
        .open(stream_headers(TYPE_DATA, port, request), false)
        .await?;
    let (text_tx, text_rx) = oneshot::channel();
    let data_gone = CancellationToken::new();
    let stream = Paired {
        data,
        _gone: data_gone.clone().drop_guard(),
    };
    tokio::spawn(async move {
        let mut text = Vec::new();
        tokio::select! {
            // The kubelet writes its text and then resets the stream: what came before a reset
            // (or a lost connection) is the text; none means the data stream reports the end.
            _ = error.read_to_end(&mut text) => {}
            // A server that never ends the error stream must not keep it (and its connection)
            // forever: once the data stream is gone, a last error text gets a moment.
            _ = async {
                data_gone.cancelled().await;
                tokio::time::sleep(ERROR_GRACE).await;
            } => {}
        }
        let text = String::from_utf8_lossy(&text).into_owned();
        let _ = text_tx.send((!text.is_empty()).then_some(text));
    });
    Ok(Opened {
        stream: Box::new(stream),
        failure: async move { text_rx.await.ok().flatten() }.boxed(),
    })
}

/// The data stream of a pair; dropping it tells the error stream's reader.
struct Paired {
    data: spdy::Stream,
    _gone: DropGuard,
}

impl AsyncRead for Paired {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.data).poll_read(cx, buf)
    }
}

impl AsyncWrite for Paired {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.data).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.data).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.data).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that takes both streams and never ends the error stream.
    async fn pair_on_a_silent_server() -> (Opened, spdy::Stream, [spdy::Connection; 2]) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (client, _refused) = spdy::Connection::new(a, spdy::Role::Client, Default::default());
        let (server, mut incoming) =
            spdy::Connection::new(b, spdy::Role::Server, Default::default());
        let opened = open_pair(&client, 80, 0).await.unwrap();
        let mut error = incoming.accept().await.unwrap();
        error.reply(vec![], false).await.unwrap();
        let mut data = incoming.accept().await.unwrap();
        data.reply(vec![], false).await.unwrap();
        assert_eq!(
            spdy::headers::get(error.headers(), "streamtype"),
            Some("error")
        );
        drop(data);
        // Both connections stay up while the test holds them: only a reset can end the stream.
        (opened, error, [client, server])
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_stream_the_server_never_ends_is_let_go_after_the_data_stream() {
        let (opened, mut server_error, _connections) = pair_on_a_silent_server().await;
        let Opened { stream, failure } = opened;
        drop(stream);
        // After the grace the client lets the error stream go (a reset): the failure resolves
        // without text and the server's writes on it fail.
        let reported = tokio::time::timeout(ERROR_GRACE * 2, failure).await;
        assert_eq!(reported, Ok(None), "the error stream was kept");
        let mut rejected = false;
        for _ in 0..100 {
            if server_error.write_all(b"too late").await.is_err() {
                rejected = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(rejected, "the error stream was never reset");
    }

    #[tokio::test]
    async fn the_servers_error_text_is_the_failure() {
        let (opened, mut server_error, _connections) = pair_on_a_silent_server().await;
        server_error
            .write_all(b"error forwarding port 80")
            .await
            .unwrap();
        server_error.shutdown().await.unwrap();
        assert_eq!(
            opened.failure.await.as_deref(),
            Some("error forwarding port 80")
        );
    }
}
