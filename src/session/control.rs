//! The control socket of a session: a Unix socket (mode 0600, peer uid checked) that answers
//! one JSON request per connection: `{"request":"status"}` or `{"request":"close"}`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::status::Status;

/// A request to a session.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "request", rename_all = "lowercase")]
pub enum Request {
    /// The forwarding table with statistics.
    Status,
    /// End the session.
    Close,
}

/// A session's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "response", rename_all = "lowercase")]
pub enum Response {
    /// The status.
    Status(Status),
    /// The session is shutting down.
    Closing,
    /// The request could not be served.
    Error {
        /// Why.
        message: String,
    },
}

/// Why a session could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing answers at the socket (the session is gone).
    #[error("session socket {path} does not answer: {source}")]
    Unreachable {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The session answered something unreadable.
    #[error("session socket {path} answered garbage: {detail}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
}

/// Produces the current status on demand.
pub type StatusFn = Arc<dyn Fn() -> Status + Send + Sync>;

/// Binds the socket (replacing a stale one) and serves it until `stop`.
pub fn serve(
    path: &Path,
    status: StatusFn,
    close_tx: mpsc::Sender<()>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let uid = rustix::process::geteuid().as_raw();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        warn!(error = %e, "control socket accept failed");
                        continue;
                    }
                },
            };
            if stream.peer_cred().ok().map(|c| c.uid()) != Some(uid) {
                warn!("control socket: refused a peer with another uid");
                continue;
            }
            let status = status.clone();
            let close_tx = close_tx.clone();
            tokio::spawn(async move {
                let _ = answer(stream, status, close_tx).await;
            });
        }
    });
    Ok(())
}

async fn answer(
    stream: UnixStream,
    status: StatusFn,
    close_tx: mpsc::Sender<()>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(line.trim()) {
        Ok(Request::Status) => Response::Status(status()),
        Ok(Request::Close) => {
            let _ = close_tx.send(()).await;
            Response::Closing
        }
        Err(e) => Response::Error {
            message: format!("bad request: {e}"),
        },
    };
    // Our own enums always serialize.
    let mut text = serde_json::to_vec(&response).expect("response serializes");
    text.push(b'\n');
    write.write_all(&text).await?;
    write.shutdown().await
}

/// Sends one request to the session at `path`.
pub async fn request(path: &Path, request: Request) -> Result<Response, ControlError> {
    let unreachable = |source| ControlError::Unreachable {
        path: path.to_path_buf(),
        source,
    };
    let stream = UnixStream::connect(path).await.map_err(unreachable)?;
    let (read, mut write) = stream.into_split();
    // Our own enum always serializes.
    let mut text = serde_json::to_vec(&request).expect("request serializes");
    text.push(b'\n');
    write.write_all(&text).await.map_err(unreachable)?;
    let mut line = String::new();
    BufReader::new(read)
        .read_line(&mut line)
        .await
        .map_err(unreachable)?;
    serde_json::from_str(line.trim()).map_err(|e| ControlError::Protocol {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn status_and_close_round_trip() {
        let path =
            std::env::temp_dir().join(format!("czctl-control-test-{}.sock", std::process::id()));
        let (close_tx, mut close_rx) = mpsc::channel(1);
        let stop = CancellationToken::new();
        let status: StatusFn = Arc::new(Status::default);
        serve(&path, status, close_tx, stop.clone()).unwrap();
        assert_eq!(
            request(&path, Request::Status).await.unwrap(),
            Response::Status(Status::default())
        );
        assert_eq!(
            request(&path, Request::Close).await.unwrap(),
            Response::Closing
        );
        assert!(close_rx.recv().await.is_some());
        stop.cancel();
        let _ = std::fs::remove_file(&path);
        assert!(matches!(
            request(&path, Request::Status).await,
            Err(ControlError::Unreachable { .. })
        ));
    }
}
