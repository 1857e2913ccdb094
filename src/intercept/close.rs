//! Ending routes: removing one session's route, and when it is the last one, restoring the
//! Service with the record's checked patch, then dropping the finalizer, then deleting the
//! record (which takes the router, decoy and tunnels with it through their ownerReferences).
//!
//! If the Service no longer has what czctl set, closing the last route shows the difference
//! and changes nothing unless forced.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Patch, PatchParams};
use kube::core::DynamicObject;
use kube::{Api, Client};
use tracing::{info, warn};

use super::names;
use super::objects::{self, Conflicts};
use super::publish;
use super::record::{RecordBody, FINALIZER};
use super::shape::{self, difference, forced_restore};
use super::store::{is_conflict, status_of, RecordStore, StoreError};
use super::wait;

/// How long closing one of several routes waits for the router to drop it.
const ROLLOUT_WAIT: Duration = Duration::from_secs(60);

/// What closing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// There was no such route (or record) any more.
    AlreadyGone,
    /// The route was removed; others remain on the router.
    RouteRemoved {
        /// Routes left.
        remaining: usize,
    },
    /// The last route was removed and the Service restored.
    Restored,
}

/// Why closing stopped.
#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    /// The API refused or is unreachable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Someone changed the Service since czctl patched it.
    #[error("service {namespace}/{service} was changed by someone else since czctl routed it; nothing was changed.\n{}\n(- what czctl set, + what it is now)\nRestore the original selector and ports anyway with --force, or undo the change first.", diff.join("\n"))]
    Foreign {
        /// Namespace.
        namespace: String,
        /// Service.
        service: String,
        /// The difference lines.
        diff: Vec<String>,
    },
}

impl From<kube::Error> for CloseError {
    fn from(e: kube::Error) -> Self {
        CloseError::Store(StoreError::Kube(e))
    }
}

/// Removes `session`'s route from the intercept of `service`; restores the Service when it was
/// the last. Idempotent.
pub async fn remove_route(
    client: &Client,
    store: &RecordStore,
    namespace: &str,
    service: &str,
    session: &str,
    force: bool,
) -> Result<Closed, CloseError> {
    let name = names::record(namespace, service);
    let what = format!("the session record {name}");
    let mut conflicts = Conflicts::default();
    loop {
        let Some(mut stored) = store.get(&name).await? else {
            delete_session_parts(client, namespace, service, session).await?;
            return Ok(Closed::AlreadyGone);
        };
        let before = stored.body.routes.len();
        stored.body.routes.retain(|r| r.session != session);
        let removed = stored.body.routes.len() != before;
        if !stored.body.routes.is_empty() {
            if !removed {
                delete_session_parts(client, namespace, service, session).await?;
                return Ok(Closed::AlreadyGone);
            }
            stored.body.generation += 1;
            let written = match store.replace(&stored).await {
                Err(e) if is_conflict(&e) => {
                    conflicts.again(&what).await?;
                    continue;
                }
                other => other?,
            };
            publish::router(client, store, namespace, &written).await?;
            // Until the router without this route is ready, the old one still sends the route's
            // requests to its tunnel: keep the tunnel until then.
            let router = names::router(service);
            let generation = written.body.generation;
            if let Err(e) =
                wait::rollout_within(client, namespace, &router, generation, ROLLOUT_WAIT).await
            {
                warn!(%namespace, %service, error = %e, "the router did not roll out without the closed route in time; its requests may fail until it does");
            }
            delete_session_parts(client, namespace, service, session).await?;
            return Ok(Closed::RouteRemoved {
                remaining: written.body.routes.len(),
            });
        }
        // The last route: check the Service before changing anything.
        check_service(client, namespace, &stored.body, force).await?;
        if !stored.body.closing || removed {
            stored.body.closing = true;
            stored.body.generation += 1;
            match store.replace(&stored).await {
                Err(e) if is_conflict(&e) => {
                    conflicts.again(&what).await?;
                    continue;
                }
                other => {
                    stored = other?;
                }
            }
        }
        restore_service(client, namespace, &stored.body, force).await?;
        loop {
            stored.drop_finalizer(FINALIZER);
            match store.replace(&stored).await {
                Err(e) if is_conflict(&e) => {
                    conflicts.again(&what).await?;
                    match store.get(&name).await? {
                        Some(fresh) => stored = fresh,
                        None => break,
                    }
                }
                Err(StoreError::Kube(e)) if status_of(&e) == Some(404) => break,
                other => {
                    other?;
                    break;
                }
            }
        }
        store.delete(&name).await?;
        delete_session_parts(client, namespace, service, session).await?;
        let router = names::router(service);
        objects::delete(
            &Api::<Deployment>::namespaced(client.clone(), namespace),
            &router,
        )
        .await?;
        objects::delete(
            &Api::<ConfigMap>::namespaced(client.clone(), namespace),
            &router,
        )
        .await?;
        objects::delete(
            &Api::<Service>::namespaced(client.clone(), namespace),
            &names::decoy(service),
        )
        .await?;
        info!(%namespace, %service, "service restored and intercept removed");
        return Ok(Closed::Restored);
    }
}

/// Deletes a session's tunnel Deployment, Service, Secret and Lease (gone already is fine).
pub async fn delete_session_parts(
    client: &Client,
    namespace: &str,
    service: &str,
    session: &str,
) -> Result<(), kube::Error> {
    let name = names::session_part(service, session);
    let c = || client.clone();
    objects::delete(&Api::<Deployment>::namespaced(c(), namespace), &name).await?;
    objects::delete(&Api::<Service>::namespaced(c(), namespace), &name).await?;
    objects::delete(&Api::<Secret>::namespaced(c(), namespace), &name).await?;
    objects::delete(&Api::<Lease>::namespaced(c(), namespace), &name).await?;
    objects::delete(&Api::<NetworkPolicy>::namespaced(c(), namespace), &name).await?;
    Ok(())
}

/// The Service now, as raw JSON; `None` when it is gone or is another object of that name.
async fn current_service(
    client: &Client,
    namespace: &str,
    body: &RecordBody,
) -> Result<Option<DynamicObject>, kube::Error> {
    let api = objects::user_services(client, namespace);
    let Some(svc) = api.get_opt(&body.service).await? else {
        return Ok(None);
    };
    if svc.metadata.uid.as_deref() != Some(body.service_uid.as_str()) {
        return Ok(None);
    }
    Ok(Some(svc))
}

/// Refuses (unless `force`) when the Service differs from what czctl set.
async fn check_service(
    client: &Client,
    namespace: &str,
    body: &RecordBody,
    force: bool,
) -> Result<(), CloseError> {
    let Some(hijacked) = &body.hijacked else {
        return Ok(());
    };
    let Some(svc) = current_service(client, namespace, body).await? else {
        return Ok(());
    };
    let now = shape::read(&svc);
    let diff = difference(hijacked, &now);
    if diff.is_empty() || force {
        return Ok(());
    }
    Err(CloseError::Foreign {
        namespace: namespace.into(),
        service: body.service.clone(),
        diff,
    })
}

async fn restore_service(
    client: &Client,
    namespace: &str,
    body: &RecordBody,
    force: bool,
) -> Result<(), CloseError> {
    if body.hijacked.is_none() {
        return Ok(());
    }
    if current_service(client, namespace, body).await?.is_none() {
        info!(%namespace, service = %body.service, "the Service is gone or was re-created; nothing to restore");
        return Ok(());
    }
    let patch = if force {
        forced_restore(&body.service_uid, &body.original)
    } else {
        body.restore_patch.clone()
    };
    let api = objects::user_services(client, namespace);
    match api
        .patch(
            &body.service,
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if status_of(&e) == Some(422) => {
            // Changed between the check and the patch: show what it is now.
            check_service(client, namespace, body, false).await?;
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}
