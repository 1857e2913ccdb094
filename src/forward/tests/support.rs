//! The in-memory transport, the pods it reaches and small helpers.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::cluster::model::{Backend, ObjectKey};
use crate::forward::conn::serve;
use crate::forward::linger::Linger;
use crate::forward::target::Target;
use crate::forward::transport::{Opened, Transport, TransportError};

/// Generous bound for anything that should happen "soon": turns a hang into a failure.
pub const PATIENCE: Duration = Duration::from_secs(60);
/// The same for the 64 MiB transfer (debug builds, two loaded cores).
pub const LONG: Duration = Duration::from_secs(600);
const LISTEN_PORT: u16 = 8080;
/// Capacity of each in-memory pipe to a pod.
const PIPE: usize = 64 * 1024;

/// A pod: runs on the far end of its stream, may report a failure like the kubelet does.
pub type Pod =
    Arc<dyn Fn(DuplexStream, oneshot::Sender<String>) -> BoxFuture<'static, ()> + Send + Sync>;

fn pod<F, Fut>(f: F) -> Pod
where
    F: Fn(DuplexStream, oneshot::Sender<String>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |stream, failure| f(stream, failure).boxed())
}

/// Opens in-memory streams to named pods; unknown pods are refused like deleted ones (404).
#[derive(Clone)]
pub struct MemTransport {
    pods: Arc<HashMap<String, Pod>>,
    opened: Arc<Mutex<Vec<String>>>,
    linger: Option<Duration>,
}

impl MemTransport {
    pub fn new<const N: usize>(pods: [(&str, Pod); N]) -> Self {
        MemTransport {
            pods: Arc::new(pods.map(|(name, pod)| (name.to_string(), pod)).into()),
            opened: Arc::default(),
            linger: None,
        }
    }

    /// Streams that cannot half-close, like the WebSocket transport's.
    pub fn lingering(mut self, linger: Duration) -> Self {
        self.linger = Some(linger);
        self
    }

    /// The pods opened so far, in order.
    pub fn opened(&self) -> Vec<String> {
        self.opened.lock().unwrap().clone()
    }
}

impl Transport for MemTransport {
    fn open(
        &self,
        _namespace: &str,
        pod: &str,
        _port: u16,
    ) -> BoxFuture<'static, Result<Opened, TransportError>> {
        self.opened.lock().unwrap().push(pod.to_string());
        let Some(run) = self.pods.get(pod).cloned() else {
            let message = format!("pods \"{pod}\" not found");
            return futures_util::future::ready(Err(TransportError::Refused {
                code: 404,
                message,
            }))
            .boxed();
        };
        let (near, far) = tokio::io::duplex(PIPE);
        let (failure_tx, failure_rx) = oneshot::channel();
        tokio::spawn(run(far, failure_tx));
        let stream: Box<dyn crate::forward::transport::PodIo> = match self.linger {
            Some(linger) => Box::new(Linger::new(near, linger)),
            None => Box::new(near),
        };
        let failure = async move { failure_rx.await.ok() }.boxed();
        futures_util::future::ready(Ok(Opened { stream, failure })).boxed()
    }
}

/// A target `dev/web` whose ready backends are `pods`.
pub fn web_target(pods: &[&str]) -> Arc<Target> {
    let backends = pods
        .iter()
        .map(|pod| Backend {
            pod: pod.to_string(),
            ready: true,
            hostname: None,
            ports: BTreeMap::from([("http".to_string(), 80)]),
        })
        .collect();
    let ports = BTreeMap::from([(LISTEN_PORT, "http".to_string())]);
    Arc::new(Target::new(
        Arc::new(ObjectKey::new("dev", "web")),
        None,
        ports,
        backends,
    ))
}

/// A client over loopback TCP whose accepted end is served by [`serve`] in its own task.
pub async fn connect(
    target: &Arc<Target>,
    transport: &MemTransport,
) -> (TcpStream, JoinHandle<()>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    let transport: Arc<dyn Transport> = Arc::new(transport.clone());
    let task = tokio::spawn(serve(accepted, target.clone(), LISTEN_PORT, transport));
    (client, task)
}

/// Reads to EOF (or fails the test after [`PATIENCE`]).
pub async fn read_to_end(client: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    timeout(PATIENCE, client.read_to_end(&mut got))
        .await
        .expect("EOF in time")
        .expect("reading");
    got
}

/// Waits until `condition` holds (or fails the test after [`PATIENCE`]).
pub async fn wait_for(condition: impl Fn() -> bool) {
    timeout(PATIENCE, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("condition in time");
}

/// The test pattern: the bytes at `offset..offset + buf.len()` of an endless stream.
pub fn fill(buf: &mut [u8], offset: u64) {
    for (i, byte) in buf.iter_mut().enumerate() {
        let k = offset + i as u64;
        *byte = (k.wrapping_mul(0x9E37_79B9) >> 11) as u8 ^ (k >> 20) as u8;
    }
}

/// Echoes while reading (full duplex), then passes the EOF back.
pub fn echo() -> Pod {
    pod(|stream, _failure| async move {
        let (mut rx, mut tx) = tokio::io::split(stream);
        let _ = tokio::io::copy(&mut rx, &mut tx).await;
        let _ = tx.shutdown().await;
    })
}

/// Reads (and drops) everything, never answers, never closes.
pub fn silent() -> Pod {
    pod(|mut stream, _failure| async move {
        let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
        std::future::pending::<()>().await;
    })
}

/// Sends `greeting`, reads to EOF, answers how much it read, closes.
pub fn read_all_then_report(greeting: &'static [u8]) -> Pod {
    pod(move |mut stream, _failure| async move {
        stream.write_all(greeting).await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        let answer = format!("read {} bytes", got.len());
        stream.write_all(answer.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
    })
}

/// Reads to EOF, sends it all back, closes.
pub fn read_all_then_echo() -> Pod {
    pod(|mut stream, _failure| async move {
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        stream.write_all(&got).await.unwrap();
        stream.shutdown().await.unwrap();
    })
}

/// Reads to EOF, sends `n` bytes, closes.
pub fn read_all_then_send(n: usize) -> Pod {
    pod(move |mut stream, _failure| async move {
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        stream.write_all(&vec![3u8; n]).await.unwrap();
        stream.shutdown().await.unwrap();
    })
}

/// Sends `banner`, closes its sending side, then reads to EOF and reports what it heard.
pub fn half_close_then_listen(banner: &'static [u8], heard: mpsc::UnboundedSender<Vec<u8>>) -> Pod {
    pod(move |mut stream, _failure| {
        let heard = heard.clone();
        async move {
            stream.write_all(banner).await.unwrap();
            stream.shutdown().await.unwrap();
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.unwrap();
            let _ = heard.send(got);
        }
    })
}

/// Reads `limit` bytes (or to EOF), reports them, then refuses like a kubelet whose pod port is
/// closed: an error report, then the stream ends.
pub fn refuse_after_reading(limit: Option<usize>, read: mpsc::UnboundedSender<Vec<u8>>) -> Pod {
    pod(move |mut stream, failure| {
        let read = read.clone();
        async move {
            let mut got = Vec::new();
            match limit {
                Some(limit) => {
                    got.resize(limit, 0);
                    stream.read_exact(&mut got).await.unwrap();
                }
                None => {
                    stream.read_to_end(&mut got).await.unwrap();
                }
            }
            let _ = read.send(got);
            let _ = failure.send("connect: connection refused".into());
        }
    })
}

/// Reads one line, answers one line, then waits for an EOF that a lingering transport never
/// passes on.
pub fn answer_line_and_wait() -> Pod {
    pod(|stream, _failure| async move {
        let mut stream = BufReader::new(stream);
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        stream.get_mut().write_all(b"answer\n").await.unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    })
}
