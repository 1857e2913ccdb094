//! Port-forwarding over SPDY, as kubectl and kubefwd do it: one upgraded connection per pod
//! carries every client connection as a pair of streams (error + data), so a new client
//! connection costs one round trip instead of a TLS handshake and an upgrade, and each side can
//! half-close its stream.
//!
//! Negotiation follows kubectl 1.32: SPDY inside a WebSocket, then the HTTP/1.1 SPDY upgrade,
//! then kube-rs's WebSocket v4 ([`KubeWebSocket`]) for servers that offer neither
//! (`CZCTL_PORTFORWARD` narrows the choice). Connections are pooled per pod: a connection takes
//! new streams while it has fewer than [`MAX_STREAMS`] and its reader is not held up by a slow
//! stream, otherwise another connection is opened; one without streams for [`IDLE`] is closed.

mod pair;
pub mod upgrade;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use kube::Client;

use tracing::{debug, info};

use super::transport::{KubeWebSocket, Opened, Transport, TransportError};
use pair::open_pair;
use upgrade::{Upgrade, UpgradeError};

/// Streams one connection carries before another is opened to the same pod (two per client
/// connection). Bounds what one slow reader can hold up and each connection's queued memory.
pub const MAX_STREAMS: usize = 1000;
/// A connection without streams this long is closed.
pub const IDLE: Duration = Duration::from_secs(30);
/// How long an upgrade may take.
const WAIT: Duration = Duration::from_secs(30);
/// PING interval on each connection (keeps idle NATs open, finds dead connections).
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Which port-forward protocols to try (`CZCTL_PORTFORWARD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preference {
    /// SPDY over WebSocket, then SPDY, then WebSocket v4.
    #[default]
    Auto,
    /// Only SPDY over WebSocket.
    SpdyWebSocket,
    /// Only the HTTP/1.1 SPDY upgrade.
    Spdy,
    /// Only kube-rs's WebSocket v4 (one upgrade per connection, no half-close).
    WebSocket,
}

impl FromStr for Preference {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "" | "auto" => Preference::Auto,
            "spdy-websocket" => Preference::SpdyWebSocket,
            "spdy" => Preference::Spdy,
            "websocket" => Preference::WebSocket,
            other => {
                return Err(format!(
                    "CZCTL_PORTFORWARD={other:?} is not a port-forward protocol; use auto, \
                     spdy-websocket, spdy or websocket"
                ))
            }
        })
    }
}

impl Preference {
    /// From `CZCTL_PORTFORWARD` (unset: auto).
    pub fn from_env() -> Result<Self, String> {
        std::env::var("CZCTL_PORTFORWARD")
            .unwrap_or_default()
            .parse()
    }

    fn upgrades(self) -> &'static [Upgrade] {
        match self {
            Preference::Auto => &[Upgrade::WebSocket, Upgrade::Http],
            Preference::SpdyWebSocket => &[Upgrade::WebSocket],
            Preference::Spdy => &[Upgrade::Http],
            Preference::WebSocket => &[],
        }
    }

    fn allows_websocket_v4(self) -> bool {
        matches!(self, Preference::Auto | Preference::WebSocket)
    }
}

/// The protocol in use, for logs and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A multiplexed SPDY connection, upgraded this way.
    Spdy(Upgrade),
    /// kube-rs's WebSocket v4, one upgrade per client connection.
    WebSocketV4,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Spdy(how) => how.fmt(f),
            Protocol::WebSocketV4 => f.write_str("WebSocket v4"),
        }
    }
}

/// The pod port-forward transport czctl uses.
pub struct PortForward {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    preference: Preference,
    websocket: KubeWebSocket,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The protocol of the latest successful connection.
    protocol: Option<Protocol>,
    /// SPDY was refused where WebSocket v4 then worked: skip SPDY from now on.
    spdy_unsupported: bool,
    pools: HashMap<(String, String), Arc<tokio::sync::Mutex<Vec<PodConn>>>>,
    reaper: bool,
}

/// One SPDY connection to a pod.
struct PodConn {
    conn: spdy::Connection,
    next_request: u64,
    idle_since: Option<Instant>,
}

impl PortForward {
    /// A transport for `client` trying the protocols `preference` allows.
    pub fn new(client: Client, preference: Preference) -> Self {
        PortForward {
            inner: Arc::new(Inner {
                websocket: KubeWebSocket::new(client.clone()),
                client,
                preference,
                state: Mutex::new(State::default()),
            }),
        }
    }
}

impl Transport for PortForward {
    fn open(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> BoxFuture<'static, Result<Opened, TransportError>> {
        let inner = self.inner.clone();
        let (namespace, pod) = (namespace.to_string(), pod.to_string());
        async move { inner.open(&namespace, &pod, port).await }.boxed()
    }

    fn protocol(&self) -> Option<String> {
        self.inner.lock().protocol.map(|p| p.to_string())
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain values only: a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note_protocol(&self, protocol: Protocol) {
        let mut state = self.lock();
        if state.protocol != Some(protocol) {
            info!(%protocol, "port-forward protocol");
            state.protocol = Some(protocol);
        }
    }

    async fn open(
        self: Arc<Self>,
        ns: &str,
        pod: &str,
        port: u16,
    ) -> Result<Opened, TransportError> {
        let spdy_off = self.preference.upgrades().is_empty() || self.lock().spdy_unsupported;
        if spdy_off {
            return self.open_websocket(ns, pod, port, false).await;
        }
        // A connection that dies between being picked and opening the streams is replaced once.
        for attempt in 0..2 {
            let (conn, request) = match self.clone().connection(ns, pod).await {
                Ok(picked) => picked,
                Err(UpgradeError::Refused { code, message }) => {
                    return Err(TransportError::Refused { code, message })
                }
                Err(e @ UpgradeError::Unsupported { .. })
                    if self.preference.allows_websocket_v4() =>
                {
                    debug!(error = %e, "SPDY port-forward refused; trying WebSocket v4");
                    return self.open_websocket(ns, pod, port, true).await;
                }
                Err(UpgradeError::Unreachable(e)) => return Err(TransportError::Unreachable(e)),
                Err(e) => return Err(TransportError::Other(e.to_string())),
            };
            match open_pair(&conn, port, request).await {
                Ok(opened) => return Ok(opened),
                Err(e) if attempt == 0 && (conn.is_closed() || conn.is_going_away()) => {
                    debug!(pod, error = %e, "port-forward connection ended; opening another");
                }
                Err(e) => return Err(TransportError::Other(e.to_string())),
            }
        }
        Err(TransportError::Other(
            "port-forward connections keep ending".into(),
        ))
    }

    async fn open_websocket(
        &self,
        ns: &str,
        pod: &str,
        port: u16,
        after_spdy: bool,
    ) -> Result<Opened, TransportError> {
        let opened = self.websocket.open(ns, pod, port).await?;
        if after_spdy {
            self.lock().spdy_unsupported = true;
        }
        self.note_protocol(Protocol::WebSocketV4);
        Ok(opened)
    }

    /// A connection to `pod` with room for a stream pair, and the pair's request id.
    async fn connection(
        self: Arc<Self>,
        ns: &str,
        pod: &str,
    ) -> Result<(spdy::Connection, u64), UpgradeError> {
        let pool = {
            let mut state = self.lock();
            if !state.reaper {
                state.reaper = true;
                tokio::spawn(reap(Arc::downgrade(&self)));
            }
            state
                .pools
                .entry((ns.to_string(), pod.to_string()))
                .or_default()
                .clone()
        };
        // Held while dialing: concurrent first connections to a pod share one upgrade.
        let mut conns = pool.lock().await;
        conns.retain(|c| !c.conn.is_closed() && !c.conn.is_going_away());
        let room =
            |c: &&mut PodConn| c.conn.active_streams() + 2 <= MAX_STREAMS && !c.conn.is_stalled();
        if let Some(c) = conns.iter_mut().find(|c| room(c)) {
            c.next_request += 1;
            c.idle_since = None;
            return Ok((c.conn.clone(), c.next_request));
        }
        let conn = self.dial(ns, pod).await?;
        conns.push(PodConn {
            conn: conn.clone(),
            next_request: 0,
            idle_since: None,
        });
        Ok((conn, 0))
    }

    /// Upgrades a new connection, trying the allowed upgrades in order (the one that worked
    /// last first).
    async fn dial(&self, ns: &str, pod: &str) -> Result<spdy::Connection, UpgradeError> {
        let mut order = self.preference.upgrades().to_vec();
        if let Some(Protocol::Spdy(last)) = self.lock().protocol {
            order.sort_by_key(|how| *how != last);
        }
        let mut refused = None;
        for how in order {
            let attempt = tokio::time::timeout(WAIT, upgrade::upgrade(&self.client, ns, pod, how));
            match attempt.await {
                Ok(Ok(io)) => {
                    let config = spdy::Config {
                        keepalive: Some(KEEPALIVE),
                        ..spdy::Config::default()
                    };
                    // Streams the server opens are refused (the handle is dropped).
                    let (conn, _refused) = spdy::Connection::new(io, spdy::Role::Client, config);
                    debug!(namespace = ns, pod, protocol = %how, "port-forward connection opened");
                    self.note_protocol(Protocol::Spdy(how));
                    return Ok(conn);
                }
                Ok(Err(e @ UpgradeError::Unsupported { .. })) => {
                    debug!(pod, error = %e, "upgrade refused");
                    refused = Some(e);
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(UpgradeError::Failed(format!(
                        "the API server did not answer the {how} upgrade within {} s",
                        WAIT.as_secs()
                    )))
                }
            }
        }
        Err(refused.unwrap_or_else(|| UpgradeError::Failed("no SPDY upgrade allowed".into())))
    }
}

/// Every few seconds: forgets dead connections, closes those idle for [`IDLE`], drops empty
/// pools. Ends with the transport.
async fn reap(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(IDLE / 6).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut state = inner.lock();
        state.pools.retain(|_, pool| {
            // A pool being used right now is looked at next time.
            let Ok(mut conns) = pool.try_lock() else {
                return true;
            };
            let now = Instant::now();
            conns.retain_mut(|c| {
                if c.conn.is_closed() {
                    return false;
                }
                if c.conn.active_streams() > 0 {
                    c.idle_since = None;
                    return true;
                }
                let since = *c.idle_since.get_or_insert(now);
                if now.duration_since(since) >= IDLE {
                    c.conn.close();
                    return false;
                }
                true
            });
            !conns.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences_parse_and_order() {
        assert_eq!("".parse::<Preference>(), Ok(Preference::Auto));
        assert_eq!(
            "spdy-websocket".parse::<Preference>(),
            Ok(Preference::SpdyWebSocket)
        );
        assert_eq!("websocket".parse::<Preference>(), Ok(Preference::WebSocket));
        let err = "grpc".parse::<Preference>().unwrap_err();
        assert!(
            err.contains("auto, spdy-websocket, spdy or websocket"),
            "{err}"
        );
        assert_eq!(
            Preference::Auto.upgrades(),
            &[Upgrade::WebSocket, Upgrade::Http]
        );
        assert!(Preference::WebSocket.upgrades().is_empty());
        assert!(!Preference::Spdy.allows_websocket_v4());
        assert_eq!(
            Protocol::Spdy(Upgrade::WebSocket).to_string(),
            "SPDY over WebSocket"
        );
    }
}
