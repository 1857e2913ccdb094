//! Adding a route: the record (created with the finalizer, or joined), the decoy, the session's
//! tunnel end and heartbeat, the router configuration; then, once the router is ready, the
//! checked patch that points the Service at it. Any failure after the record was touched
//! makes the caller remove the route again, so nothing is left half-done.

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Patch, PatchParams};
use kube::core::DynamicObject;
use kube::runtime::{reflector, watcher};
use kube::{Api, Client};
use tracing::{debug, info, warn};

use super::close::CloseError;
use super::heartbeat::LEASE_SECONDS;
use super::manifests::{self, Common, AGENT_DATA_PORT};
use super::names;
use super::objects;
use super::publish::{self, cluster_ip};
use super::record::{TlsUpstream, TunnelKind};
use super::routes;
use super::shape;
use super::spec::HeaderMatch;
use super::store::{status_of, RecordStore, StoreError, Stored};
use super::wait::{self, WaitError, Waits};
use crate::exit::{from_kube, Code, Fatal};

/// How long the Service's endpoints may take to follow its patched selector.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);

/// One developer's intercept request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Namespace.
    pub namespace: String,
    /// The Service.
    pub service: String,
    /// The Service as read at the start (raw JSON: see [`objects::user_services`]).
    pub service_object: DynamicObject,
    /// The Service port to intercept.
    pub port: u16,
    /// The header route.
    pub header: HeaderMatch,
    /// The local session id.
    pub session: String,
    /// `user@host`.
    pub owner: String,
    /// How matching requests reach this machine.
    pub tunnel: TunnelPlan,
    /// Router image for a new router.
    pub router_image: String,
}

/// The tunnel's in-cluster side (its Debug form never shows the token).
#[derive(Clone)]
pub enum TunnelPlan {
    /// czctl's agent pod, reached through port-forward.
    Cluster {
        /// The token the laptop presents (stored only in the Secret).
        token: String,
        /// The agent image.
        agent_image: String,
    },
    /// An ngrok endpoint, reached over HTTPS with a secret header.
    Ngrok(TlsUpstream),
}

impl std::fmt::Debug for TunnelPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TunnelPlan::Cluster { agent_image, .. } => f
                .debug_struct("Cluster")
                .field("token", &"<redacted>")
                .field("agent_image", agent_image)
                .finish(),
            TunnelPlan::Ngrok(tls) => f.debug_tuple("Ngrok").field(tls).finish(),
        }
    }
}

impl TunnelPlan {
    /// Which kind of tunnel the route records.
    pub fn kind(&self) -> TunnelKind {
        match self {
            TunnelPlan::Cluster { .. } => TunnelKind::Cluster,
            TunnelPlan::Ngrok(_) => TunnelKind::Ngrok,
        }
    }
}

/// A record-store failure as a user-facing failure: API errors by their status, a record
/// others kept changing or one that is unreadable as conflicts, the rest as failures in the
/// cluster.
pub fn store_error(what: &str, e: StoreError) -> Fatal {
    match e {
        StoreError::Kube(e) => from_kube(what, &e),
        e @ (StoreError::Corrupt { .. } | StoreError::Contended { .. }) => {
            Fatal::new(Code::Conflict, format!("{what}: {e}"))
        }
        e @ (StoreError::Wait(_) | StoreError::Incomplete(_)) => {
            Fatal::new(Code::Failure, format!("{what}: {e}"))
        }
    }
}

/// Adds the route; returns the record once the Service routes through the router. Every wait
/// reports its progress through `waits` and ends at their deadline. On failure (or when the
/// caller drops it half-way) the caller removes the route again with
/// [`super::close::remove_route`], which takes whatever part of it exists.
pub async fn add_route(
    client: &Client,
    store: &RecordStore,
    req: &Request,
    waits: &Waits,
) -> Result<Stored, Fatal> {
    let stored = routes::join_record(client, store, req, waits).await?;
    finish(client, store, req, waits, stored).await
}

/// Creates the parts, waits for them, patches the Service when it is not yet routed.
async fn finish(
    client: &Client,
    store: &RecordStore,
    req: &Request,
    waits: &Waits,
    mut stored: Stored,
) -> Result<Stored, Fatal> {
    let ns = req.namespace.as_str();
    let owner = store
        .owner_ref(&stored)
        .map_err(|e| store_error("reading the session record", e))?;
    let common = Common {
        namespace: ns,
        service: &req.service,
        owner: &owner,
    };
    let kube_fatal = |what: &str| {
        let what = what.to_string();
        move |e: kube::Error| from_kube(&what, &e)
    };
    let decoy = manifests::decoy(&common, &stored.body.original).map_err(|e| {
        Fatal::new(
            Code::Conflict,
            format!("the session record's Service ports cannot make the decoy Service: {e}"),
        )
    })?;
    objects::apply(&Api::<Service>::namespaced(client.clone(), ns), &decoy)
        .await
        .map_err(kube_fatal("creating the decoy Service"))?;
    objects::apply(
        &Api::<Lease>::namespaced(client.clone(), ns),
        &manifests::lease(
            &common,
            &req.session,
            &req.owner,
            LEASE_SECONDS,
            jiff::Timestamp::now(),
        ),
    )
    .await
    .map_err(kube_fatal("creating the heartbeat Lease"))?;
    if let TunnelPlan::Cluster { token, agent_image } = &req.tunnel {
        let upstream = cluster_tunnel(client, &common, req, token, agent_image).await?;
        stored = routes::record_upstream(store, stored, &req.session, &upstream).await?;
    }
    publish::router(client, store, ns, &stored)
        .await
        .map_err(|e| store_error("publishing the router configuration", e))?;
    // The agent and the router start side by side; either failing ends the start at once.
    let tunnel = async {
        let TunnelPlan::Cluster { agent_image, .. } = &req.tunnel else {
            return Ok(());
        };
        let name = names::session_part(&req.service, &req.session);
        wait::rollout(
            waits,
            client,
            ns,
            &name,
            0,
            &format!("the tunnel agent Deployment {ns}/{name}"),
        )
        .await
        .map_err(|e| {
            e.fatal(&format!(
                "The agent's image is {agent_image}; set another with --agent-image."
            ))
        })
    };
    let router_name = names::router(&req.service);
    let router = async {
        wait::rollout(
            waits,
            client,
            ns,
            &router_name,
            stored.body.generation,
            &format!("the router Deployment {ns}/{router_name}"),
        )
        .await
        .map_err(|e| {
            e.fatal(&format!(
                "The router's image is {}; the first intercept of the Service chooses it with --router-image.",
                stored.body.router_image
            ))
        })
    };
    tokio::try_join!(tunnel, router)?;
    if stored.body.hijacked.is_none() {
        stored = hijack(client, store, req, stored).await?;
        wait_routed(waits, client, ns, &req.service).await;
    }
    info!(namespace = ns, service = %req.service, "routing through the router");
    Ok(stored)
}

/// Creates the session's agent: its token Secret, Deployment and Service; returns where the
/// router reaches it.
async fn cluster_tunnel(
    client: &Client,
    common: &Common<'_>,
    req: &Request,
    token: &str,
    agent_image: &str,
) -> Result<String, Fatal> {
    let kube_fatal = |what: &'static str| move |e: kube::Error| from_kube(what, &e);
    let ns = common.namespace;
    objects::apply(
        &Api::<Secret>::namespaced(client.clone(), ns),
        &manifests::tunnel_secret(common, &req.session, token),
    )
    .await
    .map_err(kube_fatal("creating the tunnel Secret"))?;
    objects::apply(
        &Api::<Deployment>::namespaced(client.clone(), ns),
        &manifests::tunnel(common, &req.session, agent_image),
    )
    .await
    .map_err(kube_fatal("creating the tunnel Deployment"))?;
    if let Err(e) = objects::apply(
        &Api::<NetworkPolicy>::namespaced(client.clone(), ns),
        &manifests::tunnel_policy(common, &req.session),
    )
    .await
    {
        warn!(error = %crate::exit::describe(&e), "could not restrict the tunnel agent to the router with a NetworkPolicy; other pods that can reach it could send requests to this machine");
    }
    let svc = objects::apply(
        &Api::<Service>::namespaced(client.clone(), ns),
        &manifests::tunnel_service(common, &req.session),
    )
    .await
    .map_err(kube_fatal("creating the tunnel Service"))?;
    let ip = cluster_ip(&svc).ok_or_else(|| {
        Fatal::new(
            Code::Failure,
            format!(
                "the tunnel Service {ns}/{} has no ClusterIP",
                names::session_part(&req.service, &req.session)
            ),
        )
    })?;
    Ok(format!("{ip}:{AGENT_DATA_PORT}"))
}

/// Points the Service at the router with a checked patch and records what was set and how
/// to undo it.
async fn hijack(
    client: &Client,
    store: &RecordStore,
    req: &Request,
    stored: Stored,
) -> Result<Stored, Fatal> {
    let body = &stored.body;
    let target = shape::hijacked(&body.original, &req.service, body.port);
    let patch = shape::setup_patch(&body.service_uid, &body.original, &target);
    let api = objects::user_services(client, &req.namespace);
    let patched = match api
        .patch(
            &req.service,
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(patched) => patched,
        Err(e) if status_of(&e) == Some(422) => {
            // Either a concurrent czctl patched it first (fine), or someone changed it.
            let fresh = store
                .get(&stored.name)
                .await
                .map_err(|e| store_error("reading the session record", e))?;
            if let Some(fresh) = fresh.filter(|f| f.body.hijacked.is_some()) {
                return Ok(fresh);
            }
            let now = api
                .get(&req.service)
                .await
                .map_err(|e| from_kube("reading the Service", &e))?;
            let now = shape::read(&now);
            let diff = shape::difference(&body.original, &now).join("\n");
            return Err(Fatal::new(Code::Conflict, format!(
                "service {}/{} changed while the intercept started (- when czctl read it, + now):\n{diff}\nTry again.",
                req.namespace, req.service
            )));
        }
        Err(e) => return Err(from_kube("pointing the Service at the router", &e)),
    };
    let readback = shape::read(&patched);
    routes::update_record(store, stored, "recording the restore patch", |body| {
        body.restore_patch = shape::restore_patch(&body.service_uid, &readback, &body.original);
        body.hijacked = Some(readback.clone());
        Ok(())
    })
    .await
}

/// Waits until the Service's EndpointSlices name only the router's pods, so the intercept is in
/// effect when the command says it is ready (the endpoints follow the patched selector a moment
/// later). It watches the slices. Without the right to watch EndpointSlices, or after
/// [`ROUTE_TIMEOUT`] (or the start's timeout), it goes on: the Service is patched and the
/// cluster catches up by itself.
async fn wait_routed(waits: &Waits, client: &Client, ns: &str, service: &str) {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let config =
        watcher::Config::default().labels(&format!("kubernetes.io/service-name={service}"));
    let (slices, writer) = reflector::store();
    let events = reflector(writer, watcher(api, config)).fuse();
    tokio::pin!(events);
    let prefix = format!("{}-", names::router(service));
    let mut progress = waits.start(
        format!("the endpoints of service {ns}/{service} to name only the router's pods"),
        Some(ROUTE_TIMEOUT),
    );
    let mut now = "no endpoints yet".to_string();
    loop {
        tokio::select! {
            Some(event) = events.next() => {
                if let Err(e) = event {
                    debug!(error = %e, "not waiting for the Service's endpoints: cannot watch them");
                    return;
                }
                let pods: Vec<String> = slices
                    .state()
                    .iter()
                    .flat_map(|slice| slice.endpoints.iter().flatten())
                    .filter_map(|e| e.target_ref.as_ref()?.name.clone())
                    .collect();
                if !pods.is_empty() && pods.iter().all(|pod| pod.starts_with(&prefix)) {
                    progress.done();
                    return;
                }
                now = if pods.is_empty() {
                    "no endpoints yet".to_string()
                } else {
                    format!("now {}", pods.join(", "))
                };
            }
            () = tokio::time::sleep_until(progress.next_wake()) => {}
        }
        if let Err(WaitError::TimedOut { last, waited, .. }) = progress.pending(now.clone()) {
            warn!(
                "the endpoints of service {ns}/{service} do not name only the router's pods after {} ({last}); going on: the Service is patched and its endpoints follow",
                wait::show(waited)
            );
            return;
        }
    }
}

/// A `CloseError` as a user-facing failure.
pub fn close_fatal(e: CloseError) -> Fatal {
    match e {
        CloseError::Foreign { .. } => Fatal::new(Code::Conflict, e.to_string()),
        CloseError::Store(e) => store_error("closing the intercept", e),
    }
}
