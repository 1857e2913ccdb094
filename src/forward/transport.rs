//! The port-forward transport: one small interface, so the WebSocket v4 transport of kube-rs
//! can be joined by a multiplexed SPDY one without touching the forwarding logic.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::linger::Linger;

/// A byte stream to a pod port.
pub trait PodIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PodIo for T {}

/// An opened stream and the error report of the pod side.
pub struct Opened {
    /// Bytes to and from the pod port.
    pub stream: Box<dyn PodIo>,
    /// Resolves with the kubelet's error text if forwarding fails (for example the port is
    /// refused), or with `None` when the stream ends without one.
    pub failure: BoxFuture<'static, Option<String>>,
}

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The API server refused: the pod is gone (404) or the right is missing (403).
    #[error("{message}")]
    Refused {
        /// HTTP status code.
        code: u16,
        /// The server's message.
        message: String,
    },
    /// The API server could not be reached (connection refused, TLS, timeout): no pod can be
    /// until it is back, so trying another one is pointless. The text says so
    /// ("cannot reach the API server at URL: connection refused").
    #[error("{0}")]
    Unreachable(String),
    /// Anything else (protocol, the upgraded connection).
    #[error("{0}")]
    Other(String),
}

impl TransportError {
    /// The caller lacks the `create pods/portforward` right: retrying other pods won't help.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, TransportError::Refused { code: 403, .. })
    }

    /// The same request would fail for any pod: the right is missing or the API server is
    /// out of reach.
    pub fn fails_every_pod(&self) -> bool {
        self.is_forbidden() || matches!(self, TransportError::Unreachable(_))
    }
}

/// Opens streams to pod ports.
pub trait Transport: Send + Sync + 'static {
    /// A stream to `port` of `pod` in `namespace`.
    fn open(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> BoxFuture<'static, Result<Opened, TransportError>>;

    /// The protocol the latest stream went over, for logs and `status` (none until one has).
    fn protocol(&self) -> Option<String> {
        None
    }
}

/// After a client's EOF, how long a pod reached over [`KubeWebSocket`] may stay silent before
/// its stream reads as ended. The WebSocket v4 protocol cannot half-close: closing our side of
/// kube-rs's stream closes the whole WebSocket and drops whatever the pod still sends, so the
/// client's EOF is not passed on, and a pod waiting for it would keep the connection open
/// forever. Instead the pod gets this long to finish its answer; every byte from it restarts
/// the timer.
pub const LINGER: Duration = Duration::from_secs(5);

/// kube-rs's pod port-forward over WebSocket (`v4.channel.k8s.io`): one upgrade per stream.
/// It cannot half-close: its streams are wrapped in [`Linger`], whose `shutdown` is not passed
/// on but ends the stream after [`LINGER`] of silence from the pod.
pub struct KubeWebSocket {
    client: Client,
}

impl KubeWebSocket {
    /// A transport using `client`.
    pub fn new(client: Client) -> Self {
        KubeWebSocket { client }
    }
}

impl Transport for KubeWebSocket {
    fn open(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> BoxFuture<'static, Result<Opened, TransportError>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = pod.to_string();
        async move {
            let mut forwarder = api.portforward(&pod, &[port]).await.map_err(|e| match e {
                kube::Error::Api(status) => TransportError::Refused {
                    code: status.code,
                    message: status.message.clone(),
                },
                e @ (kube::Error::HyperError(_) | kube::Error::Service(_)) => {
                    TransportError::Unreachable(crate::exit::describe(&e))
                }
                other => TransportError::Other(other.to_string()),
            })?;
            let stream = forwarder
                .take_stream(port)
                .ok_or_else(|| TransportError::Other("port-forward returned no stream".into()))?;
            let failure = forwarder.take_error(port);
            tokio::spawn(async move {
                if let Err(e) = forwarder.join().await {
                    debug!(pod, port, error = %e, "port-forward ended");
                }
            });
            let failure = match failure {
                Some(f) => f.boxed(),
                None => futures_util::future::ready(None).boxed(),
            };
            Ok(Opened {
                stream: Box::new(Linger::new(stream, LINGER)),
                failure,
            })
        }
        .boxed()
    }
}
