//! Fetching what a container's environment refers to: its ConfigMaps and Secrets (only those
//! named), and a live pod of the workload for the downward API.

use k8s_openapi::api::core::v1::{ConfigMap, Container, Secret};
use kube::{Api, Client};

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
