//! Fetching what a container's environment refers to: its ConfigMaps and Secrets (only those
//! named), a live pod of the workload for the downward API, and the Services its links come
//! from.

use k8s_openapi::api::core::v1::{ConfigMap, Container, Secret, Service};
use kube::api::ListParams;
use kube::{Api, Client};

use super::links::{LinkService, Links, MASTER_NAMESPACE, MASTER_SERVICE};
use super::resolve::{referenced, Sources};
use crate::cluster::workload::Workload;
use crate::exit::{self, Fatal};

/// The sources of `container`: referenced ConfigMaps and Secrets that exist (a missing one is
/// left out; resolution decides whether that is an error, honouring `optional`).
pub async fn fetch(
    client: &Client,
    namespace: &str,
    workload: &Workload,
    container: &Container,
) -> Result<Sources, Fatal> {
    let (config_maps, secrets) = referenced(container);
    let mut sources = Sources::new(namespace);
    sources.pod = workload.live_pod.clone();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for name in config_maps {
        if let Some(cm) = get_optional(&cms, &name, "configmap", namespace).await? {
            sources.config_maps.insert(name, cm);
        }
    }
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for name in secrets {
        if let Some(secret) = get_optional(&secret_api, &name, "secret", namespace).await? {
            sources.secrets.insert(name, secret);
        }
    }
    Ok(sources)
}

async fn get_optional<K>(
    api: &Api<K>,
    name: &str,
    kind: &str,
    namespace: &str,
) -> Result<Option<K>, Fatal>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(found) => Ok(found),
        Err(e) => Err(exit::from_kube(
            &format!("cannot read {kind} {namespace}/{name}"),
            &e,
        )),
    }
}

/// The Services whose variables a container of `namespace` gets ([`Links::select`]): the
/// namespace's (listed only when `enable_service_links`) and `default/kubernetes`.
///
/// A Service list or read the user is not allowed (403) is not fatal: those variables are
/// left out, and the returned warnings say which. Other failures are.
pub async fn fetch_links(
    client: &Client,
    namespace: &str,
    enable_service_links: bool,
) -> Result<(Links, Vec<String>), Fatal> {
    let mut found = Vec::new();
    let mut warnings = Vec::new();
    let forbidden = |e: &kube::Error| matches!(e, kube::Error::Api(status) if status.code == 403);
    if enable_service_links {
        let api: Api<Service> = Api::namespaced(client.clone(), namespace);
        match api.list(&ListParams::default()).await {
            Ok(list) => found.extend(list.items.iter().filter_map(LinkService::from_service)),
            Err(e) if forbidden(&e) => warnings.push(format!(
                "the Service variables of namespace {namespace} (NAME_SERVICE_HOST, NAME_PORT, ...) are not exported: you may not list its services"
            )),
            Err(e) => {
                return Err(exit::from_kube(
                    &format!("cannot list the services of namespace {namespace}"),
                    &e,
                ))
            }
        }
    }
    let has_master = found
        .iter()
        .any(|s| s.namespace == MASTER_NAMESPACE && s.name == MASTER_SERVICE);
    // The namespace's own `kubernetes` replaces default's (links enabled): no need to read it.
    let shadowed = enable_service_links && found.iter().any(|s| s.name == MASTER_SERVICE);
    if !has_master && !shadowed {
        let api: Api<Service> = Api::namespaced(client.clone(), MASTER_NAMESPACE);
        match api.get_opt(MASTER_SERVICE).await {
            Ok(service) => found.extend(service.as_ref().and_then(LinkService::from_service)),
            Err(e) if forbidden(&e) => warnings.push(format!(
                "KUBERNETES_SERVICE_HOST, KUBERNETES_PORT and the other variables of Service {MASTER_NAMESPACE}/{MASTER_SERVICE} are not exported: you may not read it"
            )),
            Err(e) => {
                return Err(exit::from_kube(
                    &format!("cannot read service {MASTER_NAMESPACE}/{MASTER_SERVICE}"),
                    &e,
                ))
            }
        }
    }
    Ok((
        Links::select(namespace, enable_service_links, found),
        warnings,
    ))
}
