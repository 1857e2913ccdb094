//! Creating and waiting for the intercept's objects through one dynamic API per kind.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::core::{ApiResource, DynamicObject};
use kube::{Api, Client};
use serde_json::Value;

use super::manifests::GENERATION_ANNOTATION;
use super::store::status_of;

/// The kinds an intercept creates.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// v1 Service.
    Service,
    /// v1 ConfigMap.
    ConfigMap,
    /// v1 Secret.
    Secret,
    /// apps/v1 Deployment.
    Deployment,
    /// coordination.k8s.io/v1 Lease.
    Lease,
    /// networking.k8s.io/v1 NetworkPolicy.
    NetworkPolicy,
}

/// A dynamic API for `kind` in `namespace`.
pub fn api(client: &Client, namespace: &str, kind: Kind) -> Api<DynamicObject> {
    let resource = match kind {
        Kind::Service => ApiResource::erase::<Service>(&()),
        Kind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
        Kind::Secret => ApiResource::erase::<Secret>(&()),
        Kind::Deployment => ApiResource::erase::<Deployment>(&()),
        Kind::Lease => ApiResource::erase::<Lease>(&()),
        Kind::NetworkPolicy => ApiResource::erase::<NetworkPolicy>(&()),
    };
    Api::namespaced_with(client.clone(), namespace, &resource)
}

fn object(manifest: Value) -> DynamicObject {
    serde_json::from_value(manifest).expect("manifests are valid objects")
}

/// Creates `manifest`; when it exists already, returns the existing object.
pub async fn create_or_get(
    api: &Api<DynamicObject>,
    manifest: Value,
) -> Result<DynamicObject, kube::Error> {
    let obj = object(manifest);
    match api.create(&PostParams::default(), &obj).await {
        Err(e) if status_of(&e) == Some(409) => {
            api.get(obj.metadata.name.as_deref().unwrap_or_default())
                .await
        }
        other => other,
    }
}

/// Deletes `name` (already gone is fine).
pub async fn delete(api: &Api<DynamicObject>, name: &str) -> Result<(), kube::Error> {
    match api.delete(name, &DeleteParams::background()).await {
        Err(e) if status_of(&e) != Some(404) => Err(e),
        _ => Ok(()),
    }
}

/// The generation an object's annotation (or its pod template's) carries.
fn generation_of(obj: &DynamicObject, in_template: bool) -> u64 {
    let value = if in_template {
        obj.data["spec"]["template"]["metadata"]["annotations"][GENERATION_ANNOTATION].as_str()
    } else {
        obj.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(GENERATION_ANNOTATION))
            .map(String::as_str)
    };
    value.and_then(|g| g.parse().ok()).unwrap_or(0)
}

/// Writes `manifest` unless the object already carries a generation ≥ `generation`
/// (a concurrent czctl wrote a newer configuration); retries on conflicts.
pub async fn write_generation(
    api: &Api<DynamicObject>,
    manifest: Value,
    generation: u64,
    in_template: bool,
) -> Result<(), kube::Error> {
    let mut obj = object(manifest);
    let name = obj.metadata.name.clone().unwrap_or_default();
    loop {
        let existing = match api.get_opt(&name).await? {
            None => match api.create(&PostParams::default(), &obj).await {
                Err(e) if status_of(&e) == Some(409) => continue,
                other => return other.map(|_| ()),
            },
            Some(existing) => existing,
        };
        if generation_of(&existing, in_template) >= generation {
            return Ok(());
        }
        obj.metadata.resource_version = existing.metadata.resource_version.clone();
        match api.replace(&name, &PostParams::default(), &obj).await {
            Err(e) if status_of(&e) == Some(409) => continue,
            other => return other.map(|_| ()),
        }
    }
}

/// Waits until the Deployment `name` has rolled out a template of generation ≥ `generation`
/// (or any, with 0) and all its replicas are updated and available. On timeout, says why
/// with the pods' waiting reasons.
pub async fn wait_rollout(
    client: &Client,
    namespace: &str,
    name: &str,
    generation: u64,
    timeout: Duration,
) -> Result<(), String> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + timeout;
    loop {
        let done = match deployments.get_opt(name).await {
            Ok(Some(d)) => super::wait::rolled_out(&d, generation),
            Ok(None) => return Err(format!("deployment {namespace}/{name} was deleted")),
            Err(e) => {
                return Err(format!(
                    "cannot read deployment {namespace}/{name}: {}",
                    crate::exit::describe(&e)
                ))
            }
        };
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            let why = pod_problems(client, namespace, name).await;
            return Err(format!(
                "deployment {namespace}/{name} was not ready after {}s{why}",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The waiting reasons of a Deployment's pods, for timeout messages.
async fn pod_problems(client: &Client, namespace: &str, deployment: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Ok(list) = pods.list(&ListParams::default()).await else {
        return String::new();
    };
    let mut lines = Vec::new();
    for pod in list.items.iter().filter(|p| {
        p.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with(&format!("{deployment}-")))
    }) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        for cs in statuses {
            if let Some(w) = cs.state.and_then(|s| s.waiting) {
                lines.push(format!(
                    "\n  pod {name} container {}: {} {}",
                    cs.name,
                    w.reason.unwrap_or_default(),
                    w.message.unwrap_or_default()
                ));
            } else if !cs.ready {
                lines.push(format!("\n  pod {name} container {}: not ready", cs.name));
            }
        }
    }
    lines.concat()
}
