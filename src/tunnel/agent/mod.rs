//! The in-cluster end of the cluster tunnel: `czctl agent tunnel`.
//!
//! It listens on a control port (laptops park connections there, through port-forward) and a
//! data port (the router's connections, handed to parked connections). It binds `$POD_IP`
//! when set (pods of the simulated cluster share one network namespace), else `0.0.0.0`, and
//! accepts only laptops presenting `$CZCTL_TUNNEL_TOKEN`. See [`crate::tunnel`] for the
//! protocol.

mod data;
mod pool;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::protocol::{self, Hello, VERSION};
use pool::Pool;

/// The environment variable holding the session token.
pub const TOKEN_ENV: &str = "CZCTL_TUNNEL_TOKEN";
/// The environment variable naming the address to bind.
pub const POD_IP_ENV: &str = "POD_IP";
/// Where laptops park connections.
pub const DEFAULT_CONTROL_PORT: u16 = 7000;
/// Where the router connects.
pub const DEFAULT_DATA_PORT: u16 = 7001;
/// How long a laptop has to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the laptop has to answer a start signal.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// `czctl agent tunnel`: the in-cluster end of an intercept tunnel (run by the agent pod).
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Port where the laptop parks connections (reached through port-forward).
    #[arg(long, default_value_t = DEFAULT_CONTROL_PORT)]
    pub control_port: u16,
    /// Port where the router's connections arrive.
    #[arg(long, default_value_t = DEFAULT_DATA_PORT)]
    pub data_port: u16,
    /// Seconds a connection waits for a parked laptop connection before it is closed.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub park_timeout: u64,
    /// Seconds between keepalives on parked connections.
    #[arg(long, default_value_t = 15, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub keepalive: u64,
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
    /// The configuration `args` describe, with `token`.
    pub fn new(args: &AgentArgs, token: String) -> Self {
        AgentConfig {
            token,
            keepalive: Duration::from_secs(args.keepalive.max(1)),
            park_timeout: Duration::from_secs(args.park_timeout),
            start_timeout: START_TIMEOUT,
        }
    }
}

/// The token from the environment's value, refused when missing or unusable (the message
/// never contains it).
pub fn token_from(value: Option<String>) -> anyhow::Result<String> {
    let token = value.unwrap_or_default();
    if token.is_empty() {
        anyhow::bail!("{TOKEN_ENV} is not set or empty: the tunnel agent needs the session token");
    }
    if !protocol::valid_token(&token) {
        anyhow::bail!(
            "{TOKEN_ENV} is not a usable token (it must be 1 to 256 printable ASCII characters without spaces)"
        );
    }
    Ok(token)
}

/// The address to bind from `$POD_IP`'s value: that IP, or all IPv4 addresses when unset.
pub fn bind_ip_from(value: Option<String>) -> anyhow::Result<IpAddr> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        Some(ip) => ip
            .parse()
            .with_context(|| format!("{POD_IP_ENV}={ip:?} is not an IP address")),
    }
}

/// Runs the agent until SIGTERM or SIGINT. Reads `$CZCTL_TUNNEL_TOKEN` and `$POD_IP`.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let token = token_from(std::env::var(TOKEN_ENV).ok())?;
    let ip = bind_ip_from(std::env::var(POD_IP_ENV).ok())?;
    let agent = Agent::bind(
        ip,
        args.control_port,
        args.data_port,
        AgentConfig::new(&args, token),
    )
    .await?;
    info!(control = %agent.control_addr(), data = %agent.data_addr(), "tunnel agent listening");
    let stop = CancellationToken::new();
    let signals = stop.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("tunnel agent stopping");
        signals.cancel();
    });
    agent.serve(stop).await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
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
    ) -> anyhow::Result<Agent> {
        if !protocol::valid_token(&config.token) {
            anyhow::bail!("the tunnel agent needs a usable token");
        }
        let control = TcpListener::bind(SocketAddr::new(ip, control_port))
            .await
            .with_context(|| format!("binding the control port {ip}:{control_port}"))?;
        let data = TcpListener::bind(SocketAddr::new(ip, data_port))
            .await
            .with_context(|| format!("binding the data port {ip}:{data_port}"))?;
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

/// A laptop connection on the control port: check its hello, then park it.
async fn control(shared: Arc<Shared>, conn: TcpStream, peer: SocketAddr) {
    let _ = conn.set_nodelay(true);
    let mut conn = BufReader::new(conn);
    let line = tokio::select! {
        line = tokio::time::timeout(HELLO_TIMEOUT, protocol::read_line(&mut conn)) => line,
        _ = shared.stop.cancelled() => return,
    };
    let denial = match line {
        Err(_) => {
            debug!(%peer, "no hello in time; closing");
            return;
        }
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "reading the hello failed");
            return;
        }
        Ok(Ok(None)) => "malformed hello".to_string(),
        Ok(Ok(Some(line))) => match protocol::parse_hello(&line) {
            Hello::Malformed => "malformed hello".to_string(),
            Hello::Offer { version, .. } if version != VERSION => {
                format!("unsupported protocol version {version}; this agent speaks {VERSION}")
            }
            Hello::Offer { token, .. } => {
                if protocol::constant_time_eq(token.as_bytes(), shared.config.token.as_bytes()) {
                    String::new()
                } else {
                    "invalid token".to_string()
                }
            }
        },
    };
    if !denial.is_empty() {
        warn!(%peer, reason = %denial, "tunnel connection denied");
        let answer = protocol::deny_line(&denial);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            conn.write_all(answer.as_bytes()).await?;
            conn.shutdown().await
        })
        .await;
        return;
    }
    let answer = protocol::accept_line(shared.config.keepalive);
    let accepted = async {
        conn.write_all(answer.as_bytes()).await?;
        conn.flush().await
    };
    if !matches!(
        tokio::time::timeout(HELLO_TIMEOUT, accepted).await,
        Ok(Ok(()))
    ) {
        debug!(%peer, "the accept answer could not be sent");
        return;
    }
    debug!(%peer, "tunnel connection parked");
    shared
        .pool
        .park(conn, shared.config.keepalive, &shared.stop)
        .await;
}
