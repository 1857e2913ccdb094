//! One intercept session from start to end: checks, the route in the cluster, the tunnel and
//! heartbeat while it runs, the status on the control socket, and the close.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::close::{self, Closed};
use super::manifests::AGENT_CONTROL_PORT;
use super::names::{self, TUNNEL_LABEL};
use super::objects;
use super::record::TlsUpstream;
use super::setup::{self, close_fatal, Request, TunnelPlan};
use super::shape;
use super::spec::HeaderMatch;
use super::store::RecordStore;
use super::wait::{self, Waits};
use crate::cluster::client::{self, ClientOptions};
use crate::detach::ParentWatch;
use crate::exit::{from_kube, Code, Fatal};
use crate::forward::spdy::{PortForward, Preference};
use crate::forward::transport::Transport;
use crate::session::control;
use crate::session::record::{self, InterceptRef, Record};
use crate::session::runtime::{announce_detached, new_id, now_rfc3339, Stop};
use crate::session::status::{Forward, Note, Status};
use crate::tunnel::cluster::{ClusterTunnel, PodResolver};
use crate::tunnel::ngrok::NgrokTunnel;
use crate::tunnel::{Tunnel, TunnelStats};

/// Everything an intercept needs to know.
#[derive(Debug, Clone)]
pub struct InterceptOptions {
    /// Client configuration.
    pub client: ClientOptions,
    /// Namespace (default: the context's).
    pub namespace: Option<String>,
    /// The Service.
    pub service: String,
    /// The header route.
    pub header: HeaderMatch,
    /// Where matching requests go.
    pub local: SocketAddr,
    /// The Service port (default: its only one).
    pub port: Option<u16>,
    /// Router image.
    pub router_image: String,
    /// How matching requests reach this machine.
    pub tunnel: TunnelChoice,
    /// czctl's state directory.
    pub state_dir: PathBuf,
    /// Use this session id (a detached child gets it from its parent).
    pub session: Option<String>,
    /// Running as the background child of `--detach`.
    pub detached: bool,
    /// How long the start may wait for the cluster (`--timeout`).
    pub timeout: Duration,
}

/// The tunnel asked for (its Debug form never shows the authtoken).
#[derive(Clone)]
pub enum TunnelChoice {
    /// Through the cluster to czctl's agent pod running `agent_image`.
    Cluster {
        /// The agent image.
        agent_image: String,
    },
    /// An ngrok endpoint opened with this authtoken (already checked).
    Ngrok {
        /// The authtoken.
        authtoken: String,
    },
}

impl std::fmt::Debug for TunnelChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TunnelChoice::Cluster { agent_image } => f
                .debug_struct("Cluster")
                .field("agent_image", agent_image)
                .finish(),
            TunnelChoice::Ngrok { .. } => f.write_str("Ngrok { authtoken: <redacted> }"),
        }
    }
}

/// Parked tunnel connections kept ready at the agent.
const POOL: usize = 4;
/// How long removing what a failed start created may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs an intercept until SIGINT/SIGTERM or a `session close`.
pub async fn run(opts: InterceptOptions) -> Result<i32, Fatal> {
    // A detached child notices when the command waiting for it is killed during the start.
    let parent = opts.detached.then(ParentWatch::start);
    let preference = Preference::from_env().map_err(|e| Fatal::new(Code::Usage, e))?;
    let mut stop = Stop::install()?;
    let connected = client::connect(&opts.client)
        .await
        .map_err(|e| Fatal::new(Code::Config, e.to_string()))?;
    let client = connected.client.clone();
    let ns = opts
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let what = format!("service {ns}/{}", opts.service);
    let svc = objects::user_services(&client, &ns)
        .get_opt(&opts.service)
        .await
        .map_err(|e| from_kube(&format!("reading {what}"), &e))?
        .ok_or_else(|| {
            Fatal::new(
                Code::NotFound,
                format!("{what} not found; list them with: kubectl get services -n {ns}"),
            )
        })?;
    let usage = |e: shape::ShapeError| Fatal::new(Code::Usage, e.to_string());
    let original = shape::of_service(&svc).map_err(usage)?;
    let port = shape::pick_port(&original, &opts.service, opts.port).map_err(usage)?;
    let store = RecordStore::detect(client.clone(), &ns)
        .await
        .map_err(|e| setup::store_error("choosing where the session record lives", e))?;
    if tokio::net::TcpStream::connect(opts.local).await.is_err() {
        eprintln!(
            "czctl: nothing listens on {} yet; matching requests get 502 until something does",
            opts.local
        );
    }
    let session = opts.session.clone().unwrap_or_else(|| new_id("ic"));
    let port_forward = Arc::new(PortForward::new(connected.streams.clone(), preference));
    let (plan, tunnel) = open_tunnel(&opts, &client, &ns, &session, port_forward.clone()).await?;
    let mut record = Record {
        id: session.clone(),
        kind: crate::session::record::SessionKind::Intercept,
        pid: std::process::id(),
        namespaces: vec![ns.clone()],
        context: connected.context.clone(),
        hosts_file: PathBuf::new(),
        socket: record::socket_path(&opts.state_dir, &session),
        started: now_rfc3339(),
        state: crate::session::record::SessionState::Starting,
        intercept: Some(InterceptRef {
            kubeconfig: opts
                .client
                .kubeconfig
                .clone()
                .or_else(single_kubeconfig_env),
            impersonate: opts.client.impersonate.args(),
            namespace: ns.clone(),
            service: opts.service.clone(),
            backend: store.backend,
            header: opts.header.to_string(),
            local: opts.local.to_string(),
        }),
        group: crate::session::group::current(),
        server: connected.server.clone(),
        ..Record::default()
    };
    let local = |e: &dyn std::fmt::Display| Fatal::new(Code::Local, e.to_string());
    record.save(&opts.state_dir).map_err(|e| local(&e))?;
    // The control socket answers from the start, so `session close` can also interrupt a
    // start that hangs (for example on an image that cannot be pulled).
    let work = CancellationToken::new();
    let _stop_work = work.clone().drop_guard();
    let stats = Arc::new(TunnelStats::default());
    let current = wait::Current::default();
    let status = status_fn(
        &ns,
        &opts,
        port,
        stats.clone(),
        port_forward,
        current.clone(),
    );
    if let Err(e) = control::serve(&record.socket, status, stop.close_tx.clone(), work.clone()) {
        record.remove(&opts.state_dir);
        return Err(local(&format!(
            "cannot open the control socket {}: {e}",
            record.socket.display()
        )));
    }
    let request = Request {
        namespace: ns.clone(),
        service: opts.service.clone(),
        service_object: svc,
        port,
        header: opts.header.clone(),
        session: session.clone(),
        owner: owner(),
        tunnel: plan,
        router_image: opts.router_image.clone(),
    };
    // Progress of a detached start goes to stdout, which the waiting parent shows.
    let waits = Waits::new(opts.timeout, current, opts.detached);
    let added = tokio::select! {
        added = setup::add_route(&client, &store, &request, &waits) => added,
        _ = stop.requested() => Err(Fatal::new(Code::Failure, "the start was interrupted")),
        why = ParentWatch::wait_gone(parent) => Err(Fatal::new(
            Code::Failure,
            format!("the background session gave up its start: {why}"),
        )),
    };
    // A parent that died just as the start finished would never show the session.
    let added = match (added, parent.and_then(|p| p.gone())) {
        (Ok(_), Some(why)) => Err(Fatal::new(
            Code::Failure,
            format!("the background session gave up its start: {why}"),
        )),
        (added, _) => added,
    };
    if let Err(e) = added {
        let gone = parent.is_some_and(|p| p.gone().is_some());
        return Err(abandon(e, &client, &store, &record, &opts, gone).await);
    }

    let mut tunnel_task = tokio::spawn(tunnel.run(opts.local, work.clone(), stats.clone()));
    let lease = names::session_part(&opts.service, &session);
    tokio::spawn(super::heartbeat::renew(
        client.clone(),
        ns.clone(),
        lease,
        work.clone(),
    ));
    record.state = crate::session::record::SessionState::Ready;
    if let Err(e) = record.save(&opts.state_dir) {
        // The record written at the start still lets any run find and close this session.
        warn!(error = %e, "could not mark the session record ready");
    }
    {
        // A closed stdout (a script stopped reading) must not stop the intercept.
        use std::io::Write;
        let _ = writeln!(
            std::io::stdout().lock(),
            "intercepting {what} port {port}: requests with {} go to {} (session {session})",
            opts.header,
            opts.local
        );
    }
    if !opts.detached {
        eprintln!(
            "czctl: other requests go to the original pods; stop with Ctrl-C or: czctl session close {session}"
        );
    }
    if opts.detached {
        announce_detached(&session);
    }
    let ended = tokio::select! {
        _ = stop.requested() => None,
        ended = &mut tunnel_task => Some(ended),
    };
    work.cancel();
    let tunnel_failure = match ended {
        Some(Ok(Err(e))) => Some(e.to_string()),
        Some(Err(e)) => Some(format!("the tunnel task failed: {e}")),
        _ => None,
    };
    let closed = close::remove_route(&client, &store, &ns, &opts.service, &session, false)
        .await
        .map_err(close_fatal)?;
    record.remove(&opts.state_dir);
    eprintln!("czctl: {}", describe_closed(&what, &closed));
    match tunnel_failure {
        Some(e) => Err(Fatal::new(
            Code::Failure,
            format!("the tunnel stopped: {e}"),
        )),
        None => Ok(0),
    }
}

/// Prepares the tunnel: the cluster agent's token (nothing connects until it runs), or an
/// open ngrok endpoint whose host the router will use.
async fn open_tunnel(
    opts: &InterceptOptions,
    client: &Client,
    ns: &str,
    session: &str,
    port_forward: Arc<PortForward>,
) -> Result<(TunnelPlan, Box<dyn Tunnel>), Fatal> {
    let secret = crate::tunnel::token::generate();
    match &opts.tunnel {
        TunnelChoice::Cluster { agent_image } => {
            let tunnel = ClusterTunnel::new(
                port_forward,
                ns.to_string(),
                tunnel_pod_resolver(client.clone(), ns.to_string(), session.to_string()),
                secret.clone(),
            )
            .control_port(AGENT_CONTROL_PORT)
            .pool_size(POOL);
            let plan = TunnelPlan::Cluster {
                token: secret,
                agent_image: agent_image.clone(),
            };
            Ok((plan, Box::new(tunnel)))
        }
        TunnelChoice::Ngrok { authtoken } => {
            let tunnel = NgrokTunnel::open(authtoken, opts.local, &secret)
                .await
                .map_err(|e| Fatal::new(Code::Config, e.to_string()))?;
            let plan = TunnelPlan::Ngrok(TlsUpstream {
                host: tunnel.host().to_string(),
                secret,
            });
            Ok((plan, Box::new(tunnel)))
        }
    }
}

/// What a close did, for people.
pub fn describe_closed(what: &str, closed: &Closed) -> String {
    match closed {
        Closed::AlreadyGone => format!("the intercept of {what} was already closed"),
        Closed::RouteRemoved { remaining } => {
            format!("route removed from {what}; {remaining} other intercept(s) keep the router")
        }
        Closed::Restored => format!("{what} restored to its original selector and ports"),
    }
}

/// The `KUBECONFIG` file when it names exactly one, so a later run from another shell closes
/// the session against the same cluster (a list of files is left to that run's environment).
fn single_kubeconfig_env() -> Option<PathBuf> {
    let value = std::env::var_os("KUBECONFIG")?;
    let path = PathBuf::from(value);
    let text = path.to_string_lossy();
    (!text.is_empty() && !text.contains(':')).then(|| std::path::absolute(&path).unwrap_or(path))
}

/// `user@host` for the record.
fn owner() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    // The host name is uname's node name (what gethostname reads).
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            .collect()
    };
    format!("{}@{}", clean(&user), clean(&host))
}

/// Finds a ready pod of the session's tunnel Deployment.
fn tunnel_pod_resolver(client: Client, namespace: String, session: String) -> PodResolver {
    Arc::new(move || {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let selector = format!("{TUNNEL_LABEL}={session}");
        async move {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot list the tunnel pods: {}", crate::exit::describe(&e))
                })?;
            list.items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .find(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .and_then(|p| p.metadata.name)
                .ok_or_else(|| anyhow::anyhow!("no ready tunnel pod (label {selector})"))
        }
        .boxed()
    })
}

/// Removes everything a failed (or interrupted) start created in the cluster, then the local
/// record; says so in the failure. When the cluster cannot be cleaned, the record stays so
/// `czctl session close` can finish the job.
async fn abandon(
    failure: Fatal,
    client: &Client,
    store: &RecordStore,
    record: &Record,
    opts: &InterceptOptions,
    parent_gone: bool,
) -> Fatal {
    let Some(ic) = &record.intercept else {
        return failure;
    };
    let undo = tokio::time::timeout(
        CLEANUP_TIMEOUT,
        close::remove_route(client, store, &ic.namespace, &ic.service, &record.id, false),
    )
    .await;
    let note = match undo {
        Ok(Ok(_)) => {
            // The log of a failed start stays for the command waiting on it, which shows its
            // tail; with that command gone nobody will.
            record.remove(&opts.state_dir);
            if parent_gone {
                let _ = std::fs::remove_file(record::log_path(&opts.state_dir, &record.id));
            }
            "everything czctl created for it in the cluster was removed again".to_string()
        }
        Ok(Err(e)) => format!(
            "removing what it created in the cluster failed too ({}); finish with: czctl session close {}",
            close_fatal(e),
            record.id
        ),
        Err(_) => format!(
            "removing what it created in the cluster did not finish within {}; finish with: czctl session close {}",
            wait::show(CLEANUP_TIMEOUT),
            record.id
        ),
    };
    Fatal::new(
        failure.code,
        format!(
            "{}
The intercept did not start; {note}.",
            failure.message
        ),
    )
}

fn status_fn(
    namespace: &str,
    opts: &InterceptOptions,
    port: u16,
    stats: Arc<TunnelStats>,
    transport: Arc<dyn Transport>,
    current: wait::Current,
) -> control::StatusFn {
    let service = format!("{namespace}/{}", opts.service);
    let local = opts.local.to_string();
    let header = opts.header.to_string();
    let kind = match opts.tunnel {
        TunnelChoice::Cluster { .. } => "the cluster tunnel",
        TunnelChoice::Ngrok { .. } => "ngrok",
    };
    Arc::new(move || {
        let s = stats.snapshot();
        let mut notes: Vec<Note> = current
            .lines()
            .into_iter()
            .map(|line| Note {
                service: service.clone(),
                note: format!("starting: {line}"),
            })
            .collect();
        notes.push(Note {
            service: service.clone(),
            note: format!(
                "intercept: requests with {header} go to {local} through {kind} ({} parked)",
                s.parked
            ),
        });
        Status {
            forwards: vec![Forward {
                name: service.clone(),
                service: service.clone(),
                pod_host: None,
                address: local.clone(),
                names: vec![],
                ports: vec![port],
                pods: vec![],
                last_pod: None,
                open_connections: s.open,
                total_connections: s.handled,
                bytes_up: s.bytes_up,
                bytes_down: s.bytes_down,
                last_error: s.last_error.clone(),
            }],
            notes,
            // The cluster tunnel's parked port-forwards (none with ngrok).
            protocol: transport.protocol(),
        }
    })
}
