//! Adding a route: the record (created with the finalizer, or joined), the decoy, the session's
//! tunnel end and heartbeat, the router configuration; then, once the router is ready, the
//! checked patch that points the Service at it. Any failure after the record was touched
//! removes the route again, so nothing is left half-done.

use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::Value;
use tracing::{debug, info, warn};

use super::close::{self, CloseError};
use super::heartbeat::{micro_now, LEASE_SECONDS};
use super::manifests::{self, Common, AGENT_DATA_PORT};
use super::names;
use super::objects::{self, Kind};
use super::publish;
use super::record::TlsUpstream;
use super::routes;
use super::shape;
use super::spec::HeaderMatch;
use super::store::{status_of, RecordStore, StoreError, Stored};
use crate::exit::{from_kube, Code, Fatal};

/// How long the router and the tunnel may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the Service's endpoints may take to follow its patched selector.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);

/// One developer's intercept request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Namespace.
    pub namespace: String,
    /// The Service.
    pub service: String,
    /// Its raw JSON as read at the start.
    pub service_json: Value,
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
    /// `cluster` or `ngrok`.
    pub fn kind(&self) -> &'static str {
        match self {
            TunnelPlan::Cluster { .. } => "cluster",
            TunnelPlan::Ngrok(_) => "ngrok",
        }
    }
}

pub fn store_error(what: &str, e: StoreError) -> Fatal {
    match e {
        StoreError::Kube(e) => from_kube(what, &e),
        other => Fatal::new(Code::Conflict, format!("{what}: {other}")),
    }
}

/// Adds the route; returns the record once the Service routes through the router.
pub async fn add_route(
    client: &Client,
    store: &RecordStore,
    req: &Request,
) -> Result<Stored, Fatal> {
    let stored = routes::join_record(client, store, req).await?;
    match finish(client, store, req, stored).await {
        Ok(stored) => Ok(stored),
        Err(fatal) => {
            let undo = close::remove_route(
                client,
                store,
                &req.namespace,
                &req.service,
                &req.session,
                false,
            )
            .await;
            let note = match undo {
                Ok(_) => "everything czctl created for it was removed again".to_string(),
                Err(e) => format!(
                    "removing what it created failed too ({e}); run: czctl session close {}",
                    req.session
                ),
            };
            Err(Fatal::new(
                fatal.code,
                format!("{}\nThe intercept did not start; {note}.", fatal.message),
            ))
        }
    }
}

/// Creates the parts, waits for them, patches the Service when it is not yet routed.
async fn finish(
    client: &Client,
    store: &RecordStore,
    req: &Request,
    mut stored: Stored,
) -> Result<Stored, Fatal> {
    let ns = req.namespace.as_str();
    let owner = store.owner_ref(&stored);
    let common = Common {
        namespace: ns,
        service: &req.service,
        owner: &owner,
    };
    let kube_fatal = |what: &str| {
        let what = what.to_string();
        move |e: kube::Error| from_kube(&what, &e)
    };
    let services = objects::api(client, ns, Kind::Service);
    objects::create_or_get(&services, manifests::decoy(&common, &stored.body.original))
        .await
        .map_err(kube_fatal("creating the decoy Service"))?;
    objects::create_or_get(
        &objects::api(client, ns, Kind::Lease),
        manifests::lease(
            &common,
            &req.session,
            &req.owner,
            LEASE_SECONDS,
            &micro_now(),
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
    if let TunnelPlan::Cluster { agent_image, .. } = &req.tunnel {
        let tunnel_name = names::session_part(&req.service, &req.session);
        objects::wait_rollout(client, ns, &tunnel_name, 0, READY_TIMEOUT)
            .await
            .map_err(|e| {
                Fatal::new(
                    Code::Failure,
                    format!("the tunnel's in-cluster end did not start: {e}\nIts image is {agent_image}; set another with --agent-image."),
                )
            })?;
    }
    objects::wait_rollout(
        client,
        ns,
        &names::router(&req.service),
        stored.body.generation,
        READY_TIMEOUT,
    )
    .await
    .map_err(|e| {
        Fatal::new(
            Code::Failure,
            format!("the router did not become ready: {e}"),
        )
    })?;
    if stored.body.hijacked.is_none() {
        stored = hijack(client, store, req, stored).await?;
        wait_routed(client, ns, &req.service).await;
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
    objects::create_or_get(
        &objects::api(client, ns, Kind::Secret),
        manifests::tunnel_secret(common, &req.session, token),
    )
    .await
    .map_err(kube_fatal("creating the tunnel Secret"))?;
    objects::create_or_get(
        &objects::api(client, ns, Kind::Deployment),
        manifests::tunnel(common, &req.session, agent_image),
    )
    .await
    .map_err(kube_fatal("creating the tunnel Deployment"))?;
    if let Err(e) = objects::create_or_get(
        &objects::api(client, ns, Kind::NetworkPolicy),
        manifests::tunnel_policy(common, &req.session),
    )
    .await
    {
        warn!(error = %e, "could not restrict the tunnel agent to the router with a NetworkPolicy; other pods that can reach it could send requests to this machine");
    }
    let services = objects::api(client, ns, Kind::Service);
    let svc = objects::create_or_get(&services, manifests::tunnel_service(common, &req.session))
        .await
        .map_err(kube_fatal("creating the tunnel Service"))?;
    let ip = svc.data["spec"]["clusterIP"].as_str().unwrap_or_default();
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
    let ops = shape::setup_patch(&body.service_uid, &body.original, &target);
    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(ops)).expect("setup patches are valid JSON patches");
    let api = objects::api(client, &req.namespace, Kind::Service);
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
            let now = shape::read(&serde_json::to_value(&now).unwrap_or_default());
            let diff = shape::difference(&body.original, &now).join("\n");
            return Err(Fatal::new(Code::Conflict, format!(
                "service {}/{} changed while the intercept started (- when czctl read it, + now):\n{diff}\nTry again.",
                req.namespace, req.service
            )));
        }
        Err(e) => return Err(from_kube("pointing the Service at the router", &e)),
    };
    let readback = shape::read(&serde_json::to_value(&patched).unwrap_or_default());
    routes::update_record(store, stored, "recording the restore patch", |body| {
        body.restore_patch = shape::restore_patch(&body.service_uid, &readback, &body.original);
        body.hijacked = Some(readback.clone());
        Ok(())
    })
    .await
}

/// Waits until the Service's EndpointSlices name only the router's pods, so the intercept is in
/// effect when the command says it is ready (the endpoints follow the patched selector a moment
/// later). Without the right to list EndpointSlices, or after [`ROUTE_TIMEOUT`], it goes on: the
/// Service is patched and the cluster catches up by itself.
async fn wait_routed(client: &Client, ns: &str, service: &str) {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let params = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let prefix = format!("{}-", names::router(service));
    let deadline = tokio::time::Instant::now() + ROUTE_TIMEOUT;
    loop {
        match api.list(&params).await {
            Ok(list) => {
                let pods: Vec<&str> = list
                    .items
                    .iter()
                    .flat_map(|slice| slice.endpoints.iter().flatten())
                    .filter_map(|e| e.target_ref.as_ref()?.name.as_deref())
                    .collect();
                if !pods.is_empty() && pods.iter().all(|pod| pod.starts_with(&prefix)) {
                    return;
                }
            }
            Err(e) => {
                debug!(error = %e, "not waiting for the Service's endpoints: cannot list them");
                return;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            warn!(
                service,
                "the Service's endpoints do not name only the router after {} s; going on",
                ROUTE_TIMEOUT.as_secs()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `CloseError` as a user-facing failure.
pub fn close_fatal(e: CloseError) -> Fatal {
    match e {
        CloseError::Foreign { .. } => Fatal::new(Code::Conflict, e.to_string()),
        CloseError::Store(e) => store_error("closing the intercept", e),
    }
}
