//! Publishing a record's routes to the router: nginx.conf in the ConfigMap and the generation
//! on the Deployment's pod template, so the router rolls (new pod ready before the old one
//! goes). Writes never go backwards: a concurrent czctl that published a newer generation wins.

use kube::Client;

use super::manifests::{self, Common};
use super::names;
use super::nginx::{self, RouterConfig};
use super::objects::{self, Kind};
use super::store::{RecordStore, StoreError, Stored};

/// Writes the router's configuration and Deployment for `stored`'s generation.
pub async fn router(
    client: &Client,
    store: &RecordStore,
    namespace: &str,
    stored: &Stored,
) -> Result<(), StoreError> {
    let body = &stored.body;
    let decoy = objects::api(client, namespace, Kind::Service)
        .get(&names::decoy(&body.service))
        .await?;
    let decoy_ip = decoy.data["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ports = body
        .original
        .ports
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i, u16::try_from(p["port"].as_u64()?).ok()?)))
        .collect();
    let conf = nginx::render(&RouterConfig {
        service: format!("{namespace}/{}", body.service),
        decoy_ip,
        intercepted: body.port,
        ports,
        routes: &body.routes,
        generation: body.generation,
    });
    let owner = store.owner_ref(stored);
    let common = Common {
        namespace,
        service: &body.service,
        owner: &owner,
    };
    objects::write_generation(
        &objects::api(client, namespace, Kind::ConfigMap),
        manifests::router_config(&common, &conf, body.generation),
        body.generation,
        false,
    )
    .await?;
    objects::write_generation(
        &objects::api(client, namespace, Kind::Deployment),
        manifests::router(
            &common,
            &body.router_image,
            &body.original,
            body.port,
            body.generation,
        ),
        body.generation,
        true,
    )
    .await?;
    Ok(())
}
