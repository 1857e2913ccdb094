//! The laptop end of the cluster tunnel: a pool of connections parked at the agent pod through
//! port-forward, each turned into a relay to the local target when the agent starts it, and
//! replaced at once. Failed opens are retried with backoff (100 ms doubling to 5 s), asking the
//! caller's resolver again which pod runs the agent, so a restarted agent is found again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt};
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use cztunnel::{
    read_line, relay, valid_token, write_line, Answer, Counters, Hello, RelayEnd, Signal,
};

use super::{Gauge, Tunnel, TunnelError, TunnelStats};
use crate::forward::transport::{Opened, PodIo, Transport, TransportError};

/// Finds the pod that runs the agent now (asked again after every failure).
pub type PodResolver = Arc<dyn Fn() -> BoxFuture<'static, anyhow::Result<String>> + Send + Sync>;

/// Parked connections kept by default.
pub const DEFAULT_POOL_SIZE: usize = 4;
/// How long the agent may keep refusing the hello before the tunnel gives up.
pub const DEFAULT_DENY_GRACE: Duration = Duration::from_secs(30);
/// Opening a port-forward and the hello exchange must finish within this.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Connecting to the local target must finish within this.
const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first retry delay; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A parked connection that dies sooner than this counts as a failed attempt (backoff).
const SHORT_LIVED: Duration = Duration::from_secs(1);
/// Missed keepalive intervals after which a parked connection is given up.
const SILENT_INTERVALS: u32 = 3;

/// The laptop end of a tunnel through the cluster (see [`crate::tunnel`]).
pub struct ClusterTunnel {
    transport: Arc<dyn Transport>,
    namespace: String,
    resolve: PodResolver,
    control_port: u16,
    token: String,
    pool_size: usize,
    deny_grace: Duration,
}

impl std::fmt::Debug for ClusterTunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTunnel")
            .field("namespace", &self.namespace)
            .field("control_port", &self.control_port)
            .field("pool_size", &self.pool_size)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl ClusterTunnel {
    /// A tunnel to the agent pod `resolve` names in `namespace`, presenting `token`, on the
    /// default control port with the default pool size.
    pub fn new(
        transport: Arc<dyn Transport>,
        namespace: impl Into<String>,
        resolve: PodResolver,
        token: impl Into<String>,
    ) -> Self {
        ClusterTunnel {
            transport,
            namespace: namespace.into(),
            resolve,
            control_port: cztunnel::agent::DEFAULT_CONTROL_PORT,
            token: token.into(),
            pool_size: DEFAULT_POOL_SIZE,
            deny_grace: DEFAULT_DENY_GRACE,
        }
    }

    /// The agent's control port.
    pub fn control_port(mut self, port: u16) -> Self {
        self.control_port = port;
        self
    }

    /// How many idle connections to keep parked.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// How long the agent may refuse every hello (with no hello accepted in between) before
    /// [`run`](Self::run) gives up with [`TunnelError::Denied`].
    pub fn deny_grace(mut self, grace: Duration) -> Self {
        self.deny_grace = grace;
        self
    }

    /// Serves until `stop` is cancelled (then `Ok`), the agent keeps refusing the token, or
    /// port-forwarding is forbidden. Everything it opened is closed when it returns or when
    /// this future is dropped.
    pub async fn run(
        self,
        local: SocketAddr,
        stop: CancellationToken,
        stats: Arc<TunnelStats>,
    ) -> Result<(), TunnelError> {
        if !valid_token(&self.token) {
            return Err(TunnelError::Config(
                "the tunnel token must be 1 to 256 printable ASCII characters without spaces"
                    .into(),
            ));
        }
        if self.pool_size == 0 {
            return Err(TunnelError::Config(
                "the tunnel pool size must be at least 1".into(),
            ));
        }
        let stop = stop.child_token();
        let _closes_everything = stop.clone().drop_guard();
        let pool_size = self.pool_size;
        let shared = Arc::new(Shared {
            config: self,
            local,
            stats,
            stop: stop.clone(),
            pod: tokio::sync::Mutex::new(None),
            denied_since: Mutex::new(None),
            fatal: Mutex::new(None),
            healthy: AtomicBool::new(true),
        });
        let mut slots = JoinSet::new();
        for _ in 0..pool_size {
            slots.spawn(slot(shared.clone()));
        }
        stop.cancelled().await;
        while slots.join_next().await.is_some() {}
        let fatal = shared
            .fatal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Tunnel for ClusterTunnel {
    fn kind(&self) -> &'static str {
        "cluster"
    }

    fn run(
        self: Box<Self>,
        local: SocketAddr,
        stop: CancellationToken,
        stats: Arc<TunnelStats>,
    ) -> BoxFuture<'static, Result<(), TunnelError>> {
        (*self).run(local, stop, stats).boxed()
    }
}

/// A connection to the agent as the laptop holds it.
type Conn = BufReader<Box<dyn PodIo>>;

/// What the pool's tasks share.
struct Shared {
    config: ClusterTunnel,
    local: SocketAddr,
    stats: Arc<TunnelStats>,
    /// Cancelled on stop, on a fatal error, or when `run` is dropped.
    stop: CancellationToken,
    /// The agent pod last resolved; cleared when a connection to it fails.
    pod: tokio::sync::Mutex<Option<String>>,
    /// Since when every hello was denied.
    denied_since: Mutex<Option<Instant>>,
    /// Why the tunnel gave up.
    fatal: Mutex<Option<TunnelError>>,
    /// Whether the last attempt worked (to log a failure streak once).
    healthy: AtomicBool,
}

/// Why a connection could not be parked.
enum Failure {
    /// The agent refused the hello.
    Denied(String),
    /// Port-forwarding is forbidden.
    Forbidden(String),
    /// Anything else; retried.
    Other(String),
}

impl Shared {
    /// The agent pod, resolved if not known.
    async fn pod(&self) -> anyhow::Result<String> {
        let mut cached = self.pod.lock().await;
        if let Some(pod) = cached.as_ref() {
            return Ok(pod.clone());
        }
        let pod = (self.config.resolve)().await?;
        *cached = Some(pod.clone());
        Ok(pod)
    }

    /// Forgets `pod` (if it is still the one cached), so the next attempt resolves again.
    async fn forget(&self, pod: &str) {
        let mut cached = self.pod.lock().await;
        if cached.as_deref() == Some(pod) {
            *cached = None;
        }
    }

    fn give_up(&self, error: TunnelError) {
        warn!("{error}");
        self.stats.record_error(error.to_string());
        *self.fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
        self.stop.cancel();
    }

    fn parked_one(&self) {
        *self.denied_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if !self.healthy.swap(true, Ordering::Relaxed) {
            info!(namespace = %self.config.namespace, "tunnel to the agent connected again");
        }
    }

    fn failed(&self, message: String) {
        if self.healthy.swap(false, Ordering::Relaxed) {
            warn!("tunnel: {message}; retrying");
        } else {
            debug!("tunnel: {message}; retrying");
        }
        self.stats.record_error(message);
    }

    /// Records a denial; true when denials have lasted longer than the grace period.
    fn denied_too_long(&self) -> bool {
        let mut since = self.denied_since.lock().unwrap_or_else(|e| e.into_inner());
        let since = since.get_or_insert_with(Instant::now);
        since.elapsed() >= self.config.deny_grace
    }

    /// Sleeps `delay`; false when stopped meanwhile.
    async fn pause(&self, delay: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = self.stop.cancelled() => false,
        }
    }
}

/// Retry delays: 100 ms doubling to 5 s.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff { next: BACKOFF_MIN }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }
}

/// One place in the pool: park a connection, wait for its start, hand it to a session task,
/// park the next one.
async fn slot(shared: Arc<Shared>) {
    let mut backoff = Backoff::new();
    while !shared.stop.is_cancelled() {
        let attempt = tokio::select! {
            attempt = tokio::time::timeout(OPEN_TIMEOUT, open(&shared)) => attempt,
            _ = shared.stop.cancelled() => return,
        };
        let (mut conn, keepalive, pod) = match attempt {
            Ok(Ok(parked)) => parked,
            Ok(Err((Failure::Forbidden(message), _))) => {
                shared.give_up(TunnelError::Forbidden(message));
                return;
            }
            Ok(Err((Failure::Denied(reason), pod))) => {
                if let Some(pod) = pod {
                    shared.forget(&pod).await;
                }
                if shared.denied_too_long() {
                    shared.give_up(TunnelError::Denied(reason));
                    return;
                }
                shared.failed(format!("the agent refused the connection: {reason}"));
                if !shared.pause(backoff.next_delay()).await {
                    return;
                }
                continue;
            }
            Ok(Err((Failure::Other(message), pod))) => {
                if let Some(pod) = pod {
                    shared.forget(&pod).await;
                }
                shared.failed(message);
                if !shared.pause(backoff.next_delay()).await {
                    return;
                }
                continue;
            }
            Err(_) => {
                shared.failed(format!(
                    "opening a connection to the agent took longer than {OPEN_TIMEOUT:?}"
                ));
                // The cached pod may be unreachable; ask again.
                *shared.pod.lock().await = None;
                if !shared.pause(backoff.next_delay()).await {
                    return;
                }
                continue;
            }
        };
        shared.parked_one();
        let parked_at = Instant::now();
        let waited = {
            let _parked = Gauge::up(&shared.stats.parked);
            tokio::select! {
                waited = wait_for_start(&mut conn, keepalive) => waited,
                _ = shared.stop.cancelled() => return,
            }
        };
        match waited {
            Ok(()) => {
                backoff.reset();
                tokio::spawn(session(conn, shared.clone()));
            }
            Err(reason) => {
                shared.failed(format!("a parked connection to pod {pod} ended: {reason}"));
                shared.forget(&pod).await;
                if parked_at.elapsed() < SHORT_LIVED {
                    if !shared.pause(backoff.next_delay()).await {
                        return;
                    }
                } else {
                    backoff.reset();
                }
            }
        }
    }
}

/// Resolves the agent pod, opens a port-forward to its control port and says hello.
async fn open(shared: &Shared) -> Result<(Conn, Duration, String), (Failure, Option<String>)> {
    let config = &shared.config;
    let pod = shared.pod().await.map_err(|e| {
        (
            Failure::Other(format!("finding the tunnel agent pod: {e:#}")),
            None,
        )
    })?;
    let failed = |failure: Failure| (failure, Some(pod.clone()));
    let where_ = format!("{}/{}:{}", config.namespace, pod, config.control_port);
    let Opened { stream, failure } = config
        .transport
        .open(&config.namespace, &pod, config.control_port)
        .await
        .map_err(|e| match e {
            e @ TransportError::Refused { .. } if e.is_forbidden() => {
                failed(Failure::Forbidden(e.to_string()))
            }
            e => failed(Failure::Other(format!("port-forward to {where_}: {e}"))),
        })?;
    let mut conn = BufReader::new(stream);
    if let Err(e) = write_line(&mut conn, &Hello::new(config.token.as_str()).line()).await {
        return Err(failed(Failure::Other(format!(
            "sending the hello to {where_}: {e}"
        ))));
    }
    let line = match read_line(&mut conn).await {
        Ok(Some(line)) => line,
        Ok(None) | Err(_) => {
            // A refused port reports on the error channel around the time the stream ends.
            let reason = match tokio::time::timeout(Duration::from_millis(200), failure).await {
                Ok(Some(text)) => text,
                _ => "the connection closed before the agent answered".to_string(),
            };
            return Err(failed(Failure::Other(format!("{where_}: {reason}"))));
        }
    };
    match Answer::parse(&line) {
        Ok(Answer::Accepted { keepalive }) => Ok((conn, keepalive, pod)),
        Ok(Answer::Denied { reason }) => Err(failed(Failure::Denied(reason))),
        Err(e) => Err(failed(Failure::Other(format!("{where_}: {e}")))),
    }
}

/// Answers pings until the agent sends the start signal (`Ok`) or the connection dies.
async fn wait_for_start(conn: &mut Conn, keepalive: Duration) -> Result<(), String> {
    let silence = keepalive * SILENT_INTERVALS;
    loop {
        match tokio::time::timeout(silence, Signal::read(conn)).await {
            Err(_) => return Err(format!("the agent was silent for {silence:?}")),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err("closed by the agent".into())
            }
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(Ok(Signal::Ping))) => {
                if let Err(e) = Signal::Pong.write(conn).await {
                    return Err(format!("answering a keepalive: {e}"));
                }
            }
            Ok(Ok(Ok(Signal::Start))) => return Ok(()),
            Ok(Ok(Ok(other))) => return Err(format!("unexpected signal {other:?} from the agent")),
            Ok(Ok(Err(e))) => return Err(format!("from the agent: {e}")),
        }
    }
}

/// A started connection: reach the local target, tell the agent, relay.
async fn session(mut conn: Conn, shared: Arc<Shared>) {
    let stats = &shared.stats;
    stats.handled.fetch_add(1, Ordering::Relaxed);
    let local = shared.local;
    let target = tokio::select! {
        target = tokio::time::timeout(LOCAL_CONNECT_TIMEOUT, TcpStream::connect(local)) => target,
        _ = shared.stop.cancelled() => return,
    };
    let target = match target {
        Ok(Ok(target)) => target,
        failed => {
            let reason = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {LOCAL_CONNECT_TIMEOUT:?}"),
            };
            let message = format!("local target {local}: {reason}");
            warn!("{message}; closing the tunnel connection");
            stats.record_error(message);
            let _ = tokio::time::timeout(Duration::from_secs(5), Signal::Refused.write(&mut conn))
                .await;
            return;
        }
    };
    let _ = target.set_nodelay(true);
    if let Err(e) = Signal::Ready.write(&mut conn).await {
        stats.record_error(format!("the tunnel connection closed at its start: {e}"));
        return;
    }
    let _open = Gauge::up(&stats.open);
    let counters = Counters {
        from_tunnel: Some(&stats.bytes_down),
        into_tunnel: Some(&stats.bytes_up),
    };
    let end = tokio::select! {
        end = relay(target, conn, counters) => end,
        _ = shared.stop.cancelled() => return,
    };
    if let RelayEnd::Aborted(reason) = end {
        debug!(%reason, "a tunnelled connection was aborted");
        stats.record_error(format!("a tunnelled connection was aborted: {reason}"));
    }
}
