//! Publishing a record's routes to the router: nginx.conf in the ConfigMap and the generation
//! on the Deployment's pod template, so the router rolls (new pod ready before the old one
//! goes). Writes never go backwards: a concurrent czctl that published a newer generation wins.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::{Api, Client};

use super::manifests::{self, Common, GENERATION_ANNOTATION};
use super::names;
use super::nginx::{self, RouterConfig};
use super::objects;
use super::shape;
use super::store::{RecordStore, StoreError, Stored};

/// Writes the router's configuration and Deployment for `stored`'s generation.
pub async fn router(
    client: &Client,
    store: &RecordStore,
    namespace: &str,
    stored: &Stored,
) -> Result<(), StoreError> {
    let body = &stored.body;
    let decoy_name = names::decoy(&body.service);
    let decoy = Api::<Service>::namespaced(client.clone(), namespace)
        .get(&decoy_name)
        .await?;
    let decoy_ip = cluster_ip(&decoy).ok_or_else(|| {
        StoreError::Incomplete(format!(
            "the decoy Service {namespace}/{decoy_name} has no ClusterIP"
        ))
    })?;
    let ports = body
        .original
        .ports
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i, shape::port_number(p)?)))
        .collect();
    let conf = nginx::render(&RouterConfig {
        service: format!("{namespace}/{}", body.service),
        decoy_ip,
        intercepted: body.port,
        ports,
        routes: &body.routes,
        generation: body.generation,
    });
    let owner = store.owner_ref(stored)?;
    let common = Common {
        namespace,
        service: &body.service,
        owner: &owner,
    };
    objects::write_generation(
        &Api::<ConfigMap>::namespaced(client.clone(), namespace),
        manifests::router_config(&common, &conf, body.generation),
        body.generation,
        |cm| generation_in(cm.metadata.annotations.as_ref()),
    )
    .await?;
    objects::write_generation(
        &Api::<Deployment>::namespaced(client.clone(), namespace),
        manifests::router(
            &common,
            &body.router_image,
            &body.original,
            body.port,
            body.generation,
        ),
        body.generation,
        template_generation,
    )
    .await?;
    Ok(())
}

/// A Service's ClusterIP, once allocated.
pub(crate) fn cluster_ip(service: &Service) -> Option<String> {
    service
        .spec
        .as_ref()?
        .cluster_ip
        .clone()
        .filter(|ip| !ip.is_empty() && ip != "None")
}

/// The generation an annotation map carries (0 without one).
pub fn generation_in(annotations: Option<&std::collections::BTreeMap<String, String>>) -> u64 {
    annotations
        .and_then(|a| a.get(GENERATION_ANNOTATION))
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}

/// The generation a Deployment's pod template carries (0 without one).
pub(crate) fn template_generation(d: &Deployment) -> u64 {
    generation_in(
        d.spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref()),
    )
}
