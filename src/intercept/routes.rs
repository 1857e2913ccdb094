//! The record side of adding a route: joining (or creating) the Session record with our
//! route after checking it clashes with no live route and no stale one is in the way, and the
//! optimistic-concurrency loop every later record write goes through.

use kube::Client;

use super::heartbeat::{self, micro_now};
use super::names;
use super::objects::Conflicts;
use super::record::{RecordBody, Route};
use super::setup::{store_error, Request, TunnelPlan};
use super::shape;
use super::store::{is_conflict, RecordStore, Stored};
use super::wait::Waits;
use crate::exit::{Code, Fatal};

/// Creates the record with our route, or adds our route to the existing one.
pub async fn join_record(
    client: &Client,
    store: &RecordStore,
    req: &Request,
    waits: &Waits,
) -> Result<Stored, Fatal> {
    let name = names::record(&req.namespace, &req.service);
    let svc_name = format!("service {}/{}", req.namespace, req.service);
    let route = Route {
        session: req.session.clone(),
        header: req.header.clone(),
        owner: req.owner.clone(),
        tunnel: req.tunnel.kind(),
        upstream: match &req.tunnel {
            TunnelPlan::Ngrok(tls) => Some(format!("{}:443", tls.host)),
            TunnelPlan::Cluster { .. } => None,
        },
        lease: names::session_part(&req.service, &req.session),
        started: micro_now(),
        tls: match &req.tunnel {
            TunnelPlan::Ngrok(tls) => Some(tls.clone()),
            TunnelPlan::Cluster { .. } => None,
        },
    };
    let mut conflicts = Conflicts::default();
    let mut closing = None;
    loop {
        let existing = store
            .get(&name)
            .await
            .map_err(|e| store_error("reading the session record", e))?;
        let Some(mut stored) = existing else {
            let original = shape::of_service(&req.service_object)
                .map_err(|e| Fatal::new(Code::Usage, e.to_string()))?;
            let service_uid = req.service_object.metadata.uid.clone().ok_or_else(|| {
                Fatal::new(
                    Code::Failure,
                    format!("{svc_name} as the API server returned it has no uid"),
                )
            })?;
            let body = RecordBody {
                service: req.service.clone(),
                service_uid,
                port: req.port,
                router_image: req.router_image.clone(),
                original,
                hijacked: None,
                restore_patch: json_patch::Patch::default(),
                generation: 1,
                closing: false,
                routes: vec![route.clone()],
            };
            match store.create(&name, &req.service, &body).await {
                Ok(stored) => return Ok(stored),
                Err(e) if is_conflict(&e) => {
                    conflicts
                        .again(&format!("the session record of {svc_name}"))
                        .await
                        .map_err(|e| store_error("creating the session record", e))?;
                    continue;
                }
                Err(e) => return Err(store_error("creating the session record", e)),
            }
        };
        if stored.closing() {
            // The last route of an earlier intercept is being closed: watch until it is done.
            let progress = closing.get_or_insert_with(|| {
                waits.start(
                    format!("the earlier intercept of {svc_name} to finish closing"),
                    None,
                )
            });
            let why = "its last route is being removed";
            let open = store.wait_open(&name);
            tokio::pin!(open);
            loop {
                if progress.pending(why.into()).is_err() {
                    return Err(still_closing(req, &svc_name));
                }
                tokio::select! {
                    opened = &mut open => {
                        opened.map_err(|e| store_error("waiting for the earlier intercept", e))?;
                        break;
                    }
                    () = tokio::time::sleep_until(progress.next_wake()) => {}
                }
            }
            continue;
        }
        if stored.body.port != req.port {
            return Err(Fatal::new(Code::Conflict, format!(
                "{svc_name} is intercepted on port {} already; one router serves one port: use --port {}",
                stored.body.port, stored.body.port
            )));
        }
        check_routes(client, &req.namespace, &stored.body, req).await?;
        stored.body.routes.push(route.clone());
        stored.body.generation += 1;
        match store.replace(&stored).await {
            Ok(stored) => return Ok(stored),
            Err(e) if is_conflict(&e) => conflicts
                .again(&format!("the session record of {svc_name}"))
                .await
                .map_err(|e| store_error("updating the session record", e))?,
            Err(e) => return Err(store_error("updating the session record", e)),
        }
    }
}

/// An earlier intercept's close did not finish within the start's time.
fn still_closing(req: &Request, svc_name: &str) -> Fatal {
    Fatal::new(
        Code::Conflict,
        format!(
            "{svc_name}: an earlier intercept is still being closed (its close may have been refused because the Service was changed).\n\
             Finish it with: czctl service intercept {} -n {} --close (add --force to restore the Service anyway)",
            req.service, req.namespace
        ),
    )
}

/// Refuses a route whose header value someone already routes, and offers the cleanup of
/// routes whose heartbeat expired.
async fn check_routes(
    client: &Client,
    namespace: &str,
    body: &RecordBody,
    req: &Request,
) -> Result<(), Fatal> {
    let mut stale = Vec::new();
    for route in &body.routes {
        if heartbeat::expired(client, namespace, &route.lease).await == Some(true) {
            stale.push(route);
        } else if route.header.overlaps(&req.header) {
            return Err(Fatal::new(Code::Conflict, format!(
                "requests with {} to service {namespace}/{} already go to {} (session {}); choose another value with -x {}:VALUE",
                req.header, req.service, route.owner, route.session, req.header.name
            )));
        }
    }
    if let Some(route) = stale.first() {
        return Err(Fatal::new(Code::Conflict, format!(
            "service {namespace}/{} has a stale intercept: session {} of {} ({}) stopped renewing its heartbeat.\n\
             Clean it up with: czctl service intercept {} -n {namespace} --close\n(or on that machine: czctl session close {})",
            req.service, route.session, route.owner, route.header, req.service, route.session
        )));
    }
    Ok(())
}

/// Records where the router sends `session`'s requests (a new generation).
pub async fn record_upstream(
    store: &RecordStore,
    stored: Stored,
    session: &str,
    upstream: &str,
) -> Result<Stored, Fatal> {
    update_record(store, stored, "updating the session record", |body| {
        let route = body
            .routes
            .iter_mut()
            .find(|r| r.session == session)
            .ok_or_else(|| {
                Fatal::new(
                    Code::Conflict,
                    "our route was removed from the session record while the intercept started",
                )
            })?;
        route.upstream = Some(upstream.to_string());
        body.generation += 1;
        Ok(())
    })
    .await
}

/// Applies `change` to the record and writes it, reading it again and re-applying the change
/// when someone else wrote it meanwhile (with backoff, a bounded number of times).
pub async fn update_record(
    store: &RecordStore,
    mut stored: Stored,
    what: &str,
    mut change: impl FnMut(&mut RecordBody) -> Result<(), Fatal>,
) -> Result<Stored, Fatal> {
    let mut conflicts = Conflicts::default();
    loop {
        change(&mut stored.body)?;
        match store.replace(&stored).await {
            Ok(written) => return Ok(written),
            Err(e) if is_conflict(&e) => {
                conflicts
                    .again(&format!("the session record {}", stored.name))
                    .await
                    .map_err(|e| store_error(what, e))?;
                stored = store
                    .get(&stored.name)
                    .await
                    .map_err(|e| store_error("reading the session record", e))?
                    .ok_or_else(|| {
                        Fatal::new(
                            Code::Conflict,
                            "the session record was deleted while the intercept started",
                        )
                    })?;
            }
            Err(e) => return Err(store_error(what, e)),
        }
    }
}
