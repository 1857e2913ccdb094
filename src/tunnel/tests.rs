//! Both ends together over loopback TCP: czctl's [`ClusterTunnel`] and the [`cztunnel`] agent,
//! with a test transport that dials the agent's control port directly where the real one goes
//! through the pod port-forward API. (The agent alone is tested in its crate.)

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use cztunnel::agent::{Agent, AgentConfig, Running};
use cztunnel::{read_line, Answer, Hello, Signal};

use super::cluster::{ClusterTunnel, PodResolver};
use super::{Tunnel, TunnelError, TunnelStats};
use crate::forward::transport::{Opened, Transport, TransportError};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const NAMESPACE: &str = "dev";
/// Generous bound for anything that should happen "soon" on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

/// Pod names → addresses; `open` dials `address:port` over plain TCP.
#[derive(Default)]
struct TcpTransport {
    pods: Mutex<HashMap<String, IpAddr>>,
    forbidden: AtomicBool,
    opens: AtomicU64,
}

impl TcpTransport {
    fn set_pod(&self, name: &str, ip: Option<IpAddr>) {
        let mut pods = self.pods.lock().unwrap();
        match ip {
            Some(ip) => pods.insert(name.to_string(), ip),
            None => pods.remove(name),
        };
    }
}

impl Transport for TcpTransport {
    fn open(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> BoxFuture<'static, Result<Opened, TransportError>> {
        self.opens.fetch_add(1, Ordering::Relaxed);
        let forbidden = self.forbidden.load(Ordering::Relaxed);
        let ip = self.pods.lock().unwrap().get(pod).copied();
        let (namespace, pod) = (namespace.to_string(), pod.to_string());
        async move {
            if forbidden {
                return Err(TransportError::Refused {
                    code: 403,
                    message: format!("cannot create pods/portforward in {namespace}"),
                });
            }
            let Some(ip) = ip else {
                return Err(TransportError::Refused {
                    code: 404,
                    message: format!("pods \"{pod}\" not found"),
                });
            };
            let stream = TcpStream::connect((ip, port))
                .await
                .map_err(|e| TransportError::Other(e.to_string()))?;
            Ok(Opened {
                stream: Box::new(stream),
                failure: futures_util::future::ready(None).boxed(),
            })
        }
        .boxed()
    }
}

/// A resolver answering whatever pod name the test sets.
fn resolver(current: Arc<Mutex<String>>) -> PodResolver {
    Arc::new(move || {
        let pod = current.lock().unwrap().clone();
        async move { Ok(pod) }.boxed()
    })
}

fn config(token: &str) -> AgentConfig {
    AgentConfig {
        token: token.to_string(),
        keepalive: Duration::from_secs(15),
        park_timeout: Duration::from_secs(5),
        start_timeout: Duration::from_secs(10),
    }
}

/// Binds and spawns an agent on loopback.
async fn start_agent(config: AgentConfig, control_port: u16, data_port: u16) -> Running {
    Agent::bind(LOOPBACK, control_port, data_port, config)
        .await
        .expect("binding the agent")
        .spawn()
}

struct RunningTunnel {
    stats: Arc<TunnelStats>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), TunnelError>>,
}

impl RunningTunnel {
    fn start(tunnel: ClusterTunnel, local: SocketAddr) -> RunningTunnel {
        let stats = Arc::new(TunnelStats::default());
        let stop = CancellationToken::new();
        let boxed: Box<dyn Tunnel> = Box::new(tunnel);
        assert_eq!(boxed.kind(), "cluster");
        let task = tokio::spawn(boxed.run(local, stop.clone(), stats.clone()));
        RunningTunnel { stats, stop, task }
    }

    async fn wait_parked(&self, n: u64) {
        wait_until("parked connections", || {
            self.stats.parked.load(Ordering::Relaxed) == n
        })
        .await;
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the tunnel stops")
            .unwrap()
            .expect("the tunnel ends without error");
    }
}

/// An agent, a transport that knows it as pod `agent-0`, and a tunnel with `pool` connections
/// to `local`.
async fn setup(local: SocketAddr, pool: usize) -> (Running, RunningTunnel) {
    let agent = start_agent(config("good-token"), 0, 0).await;
    let tunnel = RunningTunnel::start(tunnel_to(&agent, "good-token").pool_size(pool), local);
    tunnel.wait_parked(pool as u64).await;
    (agent, tunnel)
}

/// A tunnel presenting `token` to `agent`, known to the transport as pod `agent-0`.
fn tunnel_to(agent: &Running, token: &str) -> ClusterTunnel {
    let transport = Arc::new(TcpTransport::default());
    transport.set_pod("agent-0", Some(LOOPBACK));
    ClusterTunnel::new(
        transport,
        NAMESPACE,
        resolver(Arc::new(Mutex::new("agent-0".into()))),
        token,
    )
    .control_port(agent.control.port())
}

/// A raw control connection that parks with `token` and then never answers anything.
async fn park_silently(agent: &Running, token: &str) -> BufReader<TcpStream> {
    let mut silent = BufReader::new(TcpStream::connect(agent.control).await.unwrap());
    silent
        .write_all(Hello::new(token).line().as_bytes())
        .await
        .unwrap();
    silent
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A local HTTP/1.0-style server: answers every request with the path it saw, then closes.
async fn http_server() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut conn = BufReader::new(conn);
                let mut request_line = String::new();
                if conn.read_line(&mut request_line).await.is_err() {
                    return;
                }
                loop {
                    let mut header = String::new();
                    match conn.read_line(&mut header).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) if header == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                let path = request_line.split(' ').nth(1).unwrap_or("?").to_string();
                let body = format!("laptop saw {path}");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (addr, served)
}

/// A local server that answers every byte XOR 0x5a until the client half-closes.
async fn xor_server() -> SocketAddr {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            buf[..n].iter_mut().for_each(|b| *b ^= 0x5a);
                            if conn.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = conn.shutdown().await;
            });
        }
    });
    addr
}

/// A loopback port where nothing listens.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    listener.local_addr().unwrap()
}

/// Sends a GET for `path` to `data` and returns everything that came back.
async fn get(data: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut conn = TcpStream::connect(data).await?;
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: svc\r\nX-Dev: me\r\n\r\n").as_bytes())
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, conn.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::other("no answer in time"))??;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// Sends a GET to `data` and expects the connection to close without a byte of answer (closed
/// or reset: the agent does not read a request it cannot deliver, so its close may be a reset).
async fn get_is_closed(data: SocketAddr) {
    match get(data, "/").await {
        Ok(answer) => assert_eq!(answer, "", "nothing may come back"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

#[tokio::test]
async fn a_request_reaches_the_local_server_and_its_answer_comes_back() {
    let (local, served) = http_server().await;
    let (agent, tunnel) = setup(local, 4).await;
    let answer = get(agent.data, "/hello").await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("laptop saw /hello"), "{answer}");
    assert_eq!(served.load(Ordering::Relaxed), 1);
    // The used connection is replaced, and the counters saw the exchange.
    tunnel.wait_parked(4).await;
    wait_until("the relay to finish", || {
        tunnel.stats.open.load(Ordering::Relaxed) == 0
    })
    .await;
    let stats = tunnel.stats.snapshot();
    assert_eq!(stats.handled, 1);
    assert!(stats.bytes_down > 0 && stats.bytes_up as usize == answer.len());
    assert_eq!(stats.errors, 0, "{:?}", stats.last_error);
    tunnel.stop().await;
    agent.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_connections_all_succeed() {
    let (local, served) = http_server().await;
    let (agent, tunnel) = setup(local, 4).await;
    let clients = (0..50).map(|i| {
        let data = agent.data;
        tokio::spawn(async move { (i, get(data, &format!("/client/{i}")).await) })
    });
    for client in futures_util::future::join_all(clients).await {
        let (i, answer) = client.unwrap();
        let answer = answer.unwrap();
        assert!(
            answer.ends_with(&format!("laptop saw /client/{i}")),
            "client {i}: {answer:?}"
        );
    }
    assert_eq!(served.load(Ordering::Relaxed), 50);
    assert_eq!(tunnel.stats.handled.load(Ordering::Relaxed), 50);
    tunnel.wait_parked(4).await;
    tunnel.stop().await;
    agent.stop().await;
}

#[tokio::test]
async fn large_payloads_arrive_exactly_both_ways() {
    const SIZE: usize = 8 * 1024 * 1024;
    let local = xor_server().await;
    let (agent, tunnel) = setup(local, 2).await;
    let payload: Vec<u8> = (0..SIZE as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let conn = TcpStream::connect(agent.data).await.unwrap();
    let (mut rx, mut tx) = conn.into_split();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        tx.write_all(&sent).await.unwrap();
        // The half-close travels as an end frame; the server then ends its answer.
        tx.shutdown().await.unwrap();
    });
    let mut answer = Vec::with_capacity(SIZE);
    tokio::time::timeout(Duration::from_secs(120), rx.read_to_end(&mut answer))
        .await
        .expect("the whole answer in time")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(answer.len(), SIZE);
    let mismatch = answer
        .iter()
        .zip(&payload)
        .position(|(got, sent)| *got != sent ^ 0x5a);
    assert_eq!(mismatch, None, "first differing byte");
    wait_until("the relay to finish", || {
        tunnel.stats.open.load(Ordering::Relaxed) == 0
    })
    .await;
    let stats = tunnel.stats.snapshot();
    assert_eq!(stats.bytes_down, SIZE as u64);
    assert_eq!(stats.bytes_up, SIZE as u64);
    tunnel.stop().await;
    agent.stop().await;
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_no_traffic_flows() {
    let (local, served) = http_server().await;
    let agent = start_agent(
        AgentConfig {
            park_timeout: Duration::from_millis(300),
            ..config("right-token")
        },
        0,
        0,
    )
    .await;
    let transport = Arc::new(TcpTransport::default());
    transport.set_pod("agent-0", Some(LOOPBACK));
    let tunnel = ClusterTunnel::new(
        transport.clone(),
        NAMESPACE,
        resolver(Arc::new(Mutex::new("agent-0".into()))),
        "wrong-token",
    )
    .control_port(agent.control.port())
    .deny_grace(Duration::from_millis(500));
    let tunnel = RunningTunnel::start(tunnel, local);
    get_is_closed(agent.data).await;
    let ended = tokio::time::timeout(PATIENCE, tunnel.task)
        .await
        .expect("the tunnel gives up")
        .unwrap();
    match ended {
        Err(TunnelError::Denied(reason)) => assert_eq!(reason, "invalid token"),
        other => panic!("expected a denial, got {other:?}"),
    }
    assert!(transport.opens.load(Ordering::Relaxed) >= 1);
    assert_eq!(tunnel.stats.parked.load(Ordering::Relaxed), 0);
    assert_eq!(tunnel.stats.handled.load(Ordering::Relaxed), 0);
    assert_eq!(served.load(Ordering::Relaxed), 0);
    let last = tunnel.stats.last_error().unwrap();
    assert!(last.contains("invalid token"), "{last}");
    assert!(!last.contains("right-token") && !last.contains("wrong-token"));
    agent.stop().await;
}

#[tokio::test]
async fn the_pool_reconnects_after_the_agent_restarts_as_another_pod() {
    let (local, _) = http_server().await;
    let agent = start_agent(config("tok"), 0, 0).await;
    let (control_port, data_port) = (agent.control.port(), agent.data.port());
    let transport = Arc::new(TcpTransport::default());
    transport.set_pod("agent-a", Some(LOOPBACK));
    let current = Arc::new(Mutex::new("agent-a".to_string()));
    let tunnel = ClusterTunnel::new(
        transport.clone(),
        NAMESPACE,
        resolver(current.clone()),
        "tok",
    )
    .control_port(control_port)
    .pool_size(3);
    let tunnel = RunningTunnel::start(tunnel, local);
    tunnel.wait_parked(3).await;
    assert!(get(agent.data, "/before")
        .await
        .unwrap()
        .ends_with("laptop saw /before"));

    // The agent pod goes away: every parked connection drops, opens fail.
    agent.stop().await;
    transport.set_pod("agent-a", None);
    tunnel.wait_parked(0).await;
    wait_until("failed reconnects", || {
        tunnel
            .stats
            .last_error()
            .is_some_and(|e| e.contains("not found"))
    })
    .await;

    // A new pod with another name serves on the same ports; the resolver now names it.
    *current.lock().unwrap() = "agent-b".to_string();
    transport.set_pod("agent-b", Some(LOOPBACK));
    let agent = start_agent(config("tok"), control_port, data_port).await;
    tunnel.wait_parked(3).await;
    let answer = get(agent.data, "/after").await.unwrap();
    assert!(answer.ends_with("laptop saw /after"), "{answer}");
    tunnel.stop().await;
    agent.stop().await;
}

#[tokio::test]
async fn a_refusing_local_target_closes_the_tunnel_connection() {
    let local = closed_port().await;
    let (agent, tunnel) = setup(local, 2).await;
    get_is_closed(agent.data).await;
    let stats = tunnel.stats.snapshot();
    assert_eq!(stats.handled, 1);
    assert_eq!(stats.errors, 1);
    let last = stats.last_error.unwrap();
    assert!(last.contains(&local.to_string()), "{last}");
    // The pool is whole again, and the next connection is refused the same way.
    tunnel.wait_parked(2).await;
    get_is_closed(agent.data).await;
    tunnel.stop().await;
    agent.stop().await;
}

#[tokio::test]
async fn a_dead_parked_connection_is_skipped() {
    let (local, _) = http_server().await;
    let agent = start_agent(
        AgentConfig {
            start_timeout: Duration::from_millis(300),
            ..config("tok")
        },
        0,
        0,
    )
    .await;
    // First in line: a connection that parks and then never answers. The agent puts a
    // connection in line before it answers OK, so once the OK is read it is first.
    let mut silent = park_silently(&agent, "tok").await;
    let line = read_line(&mut silent).await.unwrap().unwrap();
    assert_eq!(
        Answer::parse(&line),
        Ok(Answer::Accepted {
            keepalive: Duration::from_secs(15)
        })
    );
    let tunnel = tunnel_to(&agent, "tok").pool_size(1);
    let tunnel = RunningTunnel::start(tunnel, local);
    tunnel.wait_parked(1).await;
    let answer = get(agent.data, "/skip").await.unwrap();
    assert!(answer.ends_with("laptop saw /skip"), "{answer}");
    // The silent one got the start signal first.
    let first = tokio::time::timeout(PATIENCE, Signal::read(&mut silent)).await;
    assert_eq!(first.unwrap().unwrap(), Ok(Signal::Start));
    tunnel.stop().await;
    agent.stop().await;
}

#[tokio::test]
async fn parked_connections_that_answer_keepalives_stay_usable() {
    let (local, _) = http_server().await;
    let agent = start_agent(
        AgentConfig {
            keepalive: Duration::from_millis(100),
            ..config("tok")
        },
        0,
        0,
    )
    .await;
    // The laptop end answers pings, so its connections stay usable across many intervals (a
    // silent connection is dropped after two: the crate's own tests show that). The wait is
    // the time under test, not a synchronisation.
    let tunnel = tunnel_to(&agent, "tok").pool_size(2);
    let tunnel = RunningTunnel::start(tunnel, local);
    tunnel.wait_parked(2).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let answer = get(agent.data, "/still-here").await.unwrap();
    assert!(answer.ends_with("laptop saw /still-here"), "{answer}");
    tunnel.stop().await;
    agent.stop().await;
}

#[tokio::test]
async fn a_forbidden_port_forward_ends_the_tunnel() {
    let transport = Arc::new(TcpTransport::default());
    transport.forbidden.store(true, Ordering::Relaxed);
    let tunnel = ClusterTunnel::new(
        transport,
        NAMESPACE,
        resolver(Arc::new(Mutex::new("agent-0".into()))),
        "tok",
    );
    let stats = Arc::new(TunnelStats::default());
    let ended = tokio::time::timeout(
        PATIENCE,
        tunnel.run(closed_port().await, CancellationToken::new(), stats),
    )
    .await
    .unwrap();
    assert!(
        matches!(ended, Err(TunnelError::Forbidden(ref m)) if m.contains("pods/portforward")),
        "{ended:?}"
    );
}

#[tokio::test]
async fn an_unusable_token_is_a_configuration_error() {
    let tunnel = ClusterTunnel::new(
        Arc::new(TcpTransport::default()),
        NAMESPACE,
        resolver(Arc::new(Mutex::new("agent-0".into()))),
        "two words",
    );
    let ended = tunnel
        .run(
            closed_port().await,
            CancellationToken::new(),
            Arc::default(),
        )
        .await;
    assert!(matches!(ended, Err(TunnelError::Config(_))), "{ended:?}");
}
