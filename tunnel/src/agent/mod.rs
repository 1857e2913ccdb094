//! The in-cluster end of the tunnel, run by the `czctl-agent` binary in the agent pod.
//!
//! It listens on a control port (laptops park connections there, through port-forward) and a
//! data port (the router's connections, handed to parked connections). It binds `$POD_IP`
//! when set (pods of the simulated cluster share one network namespace), else `0.0.0.0`, and
//! accepts only laptops presenting `$CZCTL_TUNNEL_TOKEN`. See the [crate] docs for the
//! protocol.

mod data;
mod pool;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::message::{self, tokens_match, valid_token, Denial, Hello, VERSION};
use pool::Pool;

/// The environment variable holding the session token.
pub const TOKEN_ENV: &str = "CZCTL_TUNNEL_TOKEN";
/// The environment variable naming the address to bind.
pub const POD_IP_ENV: &str = "POD_IP";
/// Where laptops park connections.
pub const DEFAULT_CONTROL_PORT: u16 = 7000;
/// Where the router connects.
pub const DEFAULT_DATA_PORT: u16 = 7001;
/// How long a laptop has to send its hello (and the agent to answer it).
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the laptop has to answer a start signal.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an agent cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `$CZCTL_TUNNEL_TOKEN` is missing or empty.
    #[error("{TOKEN_ENV} is not set or empty: the tunnel agent needs the session token")]
    MissingToken,
    /// The token is not usable on the wire (the message never contains it).
    #[error("{TOKEN_ENV} is not a usable token (it must be 1 to 256 printable ASCII characters without spaces)")]
    UnusableToken,
    /// `$POD_IP` is not an IP address.
    #[error("{POD_IP_ENV}={0:?} is not an IP address")]
    PodIp(String),
    /// A port could not be bound.
    #[error("binding the {port} port {addr}: {source}")]
    Bind {
        /// `control` or `data`.
        port: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What the agent's command line sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Port where the laptop parks connections (reached through port-forward); 0: any.
    pub control_port: u16,
    /// Port where the router's connections arrive; 0: any.
    pub data_port: u16,
    /// How long a client waits for a parked laptop connection before it is closed.
    pub park_timeout: Duration,
    /// Time between keepalives on parked connections (at least 1 ms).
    pub keepalive: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            control_port: DEFAULT_CONTROL_PORT,
            data_port: DEFAULT_DATA_PORT,
            park_timeout: Duration::from_secs(5),
            keepalive: Duration::from_secs(15),
        }
    }
}

/// How an agent behaves.
#[derive(Clone)]
pub struct AgentConfig {
    /// The token laptops must present.
    pub token: String,
    /// Time between keepalives on parked connections.
    pub keepalive: Duration,
    /// How long a client waits for a parked connection.
    pub park_timeout: Duration,
    /// How long the laptop has to answer a start signal.
    pub start_timeout: Duration,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("token", &"<redacted>")
            .field("keepalive", &self.keepalive)
            .field("park_timeout", &self.park_timeout)
            .field("start_timeout", &self.start_timeout)
            .finish()
    }
}

impl AgentConfig {
    /// The configuration `options` describe, with `token`.
    pub fn new(options: &Options, token: String) -> Self {
        AgentConfig {
            token,
            keepalive: options.keepalive.max(Duration::from_millis(1)),
            park_timeout: options.park_timeout,
            start_timeout: START_TIMEOUT,
        }
    }
}

/// The token from the environment's value, refused when missing or unusable.
pub fn token_from(value: Option<String>) -> Result<String, SetupError> {
    let token = value.unwrap_or_default();
    if token.is_empty() {
        return Err(SetupError::MissingToken);
    }
    if !valid_token(&token) {
        return Err(SetupError::UnusableToken);
    }
    Ok(token)
}

/// The address to bind from `$POD_IP`'s value: that IP, or all IPv4 addresses when unset.
pub fn bind_ip_from(value: Option<String>) -> Result<IpAddr, SetupError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        Some(ip) => ip.parse().map_err(|_| SetupError::PodIp(ip.to_string())),
    }
}

/// Runs the agent until `stop` is cancelled. Reads `$CZCTL_TUNNEL_TOKEN` and `$POD_IP`, and
/// logs the bound addresses once it listens.
pub async fn run(options: &Options, stop: CancellationToken) -> Result<(), SetupError> {
    let token = token_from(std::env::var(TOKEN_ENV).ok())?;
    let ip = bind_ip_from(std::env::var(POD_IP_ENV).ok())?;
    let agent = Agent::bind(
        ip,
        options.control_port,
        options.data_port,
        AgentConfig::new(options, token),
    )
    .await?;
    info!(control = %agent.control_addr(), data = %agent.data_addr(), "tunnel agent listening");
    agent.serve(stop).await;
    info!("tunnel agent stopped");
    Ok(())
}

/// A bound agent.
pub struct Agent {
    control: TcpListener,
    data: TcpListener,
    config: AgentConfig,
}

impl Agent {
    /// Binds the control and data ports on `ip` (port 0: any free port).
    pub async fn bind(
        ip: IpAddr,
        control_port: u16,
        data_port: u16,
        config: AgentConfig,
    ) -> Result<Agent, SetupError> {
        if !valid_token(&config.token) {
            return Err(SetupError::UnusableToken);
        }
        let bind = |port: &'static str, number: u16| async move {
            let addr = SocketAddr::new(ip, number);
            TcpListener::bind(addr)
                .await
                .map_err(|source| SetupError::Bind { port, addr, source })
        };
        let control = bind("control", control_port).await?;
        let data = bind("data", data_port).await?;
        Ok(Agent {
            control,
            data,
            config,
        })
    }

    /// The bound control address.
    pub fn control_addr(&self) -> SocketAddr {
        self.control.local_addr().expect("a bound listener")
    }

    /// The bound data address.
    pub fn data_addr(&self) -> SocketAddr {
        self.data.local_addr().expect("a bound listener")
    }

    /// Serves on a task of its own; see [`Running`].
    pub fn spawn(self) -> Running {
        let (control, data) = (self.control_addr(), self.data_addr());
        let stop = CancellationToken::new();
        let task = tokio::spawn(self.serve(stop.clone()));
        Running {
            control,
            data,
            stop,
            task,
        }
    }

    /// Serves until `stop` is cancelled (or this future is dropped); every connection the
    /// agent holds is closed then.
    pub async fn serve(self, stop: CancellationToken) {
        let stop = stop.child_token();
        let _closes_everything = stop.clone().drop_guard();
        let shared = Arc::new(Shared {
            pool: Pool::default(),
            config: self.config,
            stop: stop.clone(),
        });
        loop {
            tokio::select! {
                accepted = self.control.accept() => match accepted {
                    Ok((conn, peer)) => {
                        tokio::spawn(control(shared.clone(), conn, peer));
                    }
                    Err(e) => accept_failed("control", e).await,
                },
                accepted = self.data.accept() => match accepted {
                    Ok((conn, peer)) => {
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            let config = &shared.config;
                            tokio::select! {
                                _ = data::serve(conn, peer, &shared.pool, config.park_timeout, config.start_timeout) => {}
                                _ = shared.stop.cancelled() => {}
                            }
                        });
                    }
                    Err(e) => accept_failed("data", e).await,
                },
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// An agent serving on a task of its own ([`Agent::spawn`]), for embedding and tests.
pub struct Running {
    /// The bound control address.
    pub control: SocketAddr,
    /// The bound data address.
    pub data: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the agent and waits until every connection it held is closed.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// What every connection task of one agent shares.
struct Shared {
    pool: Pool,
    config: AgentConfig,
    stop: CancellationToken,
}

async fn accept_failed(port: &str, e: std::io::Error) {
    warn!(port, error = %e, "accepting a connection failed");
    // Out of file descriptors and the like: don't spin.
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Checks a hello line against the agent's token.
fn check(line: Option<&str>, token: &str) -> Result<(), Denial> {
    let hello = line
        .and_then(|line| Hello::parse(line).ok())
        .ok_or(Denial::Malformed)?;
    if hello.version != VERSION {
        return Err(Denial::Version(hello.version));
    }
    if !tokens_match(&hello.token, token) {
        return Err(Denial::Token);
    }
    Ok(())
}

/// A laptop connection on the control port: check its hello, then park it.
async fn control(shared: Arc<Shared>, conn: TcpStream, peer: SocketAddr) {
    let _ = conn.set_nodelay(true);
    let mut conn = BufReader::new(conn);
    let line = tokio::select! {
        line = tokio::time::timeout(HELLO_TIMEOUT, message::read_line(&mut conn)) => line,
        _ = shared.stop.cancelled() => return,
    };
    let line = match line {
        Err(_) => {
            debug!(%peer, "no hello in time; closing");
            return;
        }
        Ok(Err(e)) => {
            // A readiness probe connects and closes without a byte.
            debug!(%peer, error = %e, "reading the hello failed");
            return;
        }
        Ok(Ok(line)) => line,
    };
    if let Err(denial) = check(line.as_deref(), &shared.config.token) {
        warn!(%peer, reason = %denial, "tunnel connection denied");
        let answer = denial.answer().line();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            message::write_line(&mut conn, &answer).await?;
            conn.shutdown().await
        })
        .await;
        return;
    }
    shared
        .pool
        .park(conn, shared.config.keepalive, HELLO_TIMEOUT, &shared.stop)
        .await;
}

#[cfg(test)]
mod tests;
