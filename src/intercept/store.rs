//! Where the Session record lives: a `sessions.czctl.dev` custom resource when the CRD exists
//! or can be created, else (tenants behind capsule-proxy and others who may not read or create
//! CRDs) a ConfigMap labelled `czctl.dev/session-record` holding the same body as JSON. Both
//! carry the [`FINALIZER`] and own everything the intercept creates.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};
use serde_json::{json, Value};
use tracing::{debug, info};

use super::names::{self, RECORD_LABEL};
use super::record::{RecordBody, FINALIZER};

/// The CRD's name.
pub const CRD_NAME: &str = "sessions.czctl.dev";
/// The ConfigMap key holding the body.
const CONFIGMAP_KEY: &str = "session.json";

/// The kind of object the record is stored in (local session records name it too).
pub use crate::session::record::Backend;

/// A record as read from the cluster: the object's metadata (written back as read, so a
/// replace is checked against its resourceVersion) and the body.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Object name.
    pub name: String,
    /// The object's metadata.
    pub meta: ObjectMeta,
    /// The body.
    pub body: RecordBody,
}

impl Stored {
    /// It has a deletion timestamp.
    pub fn deleting(&self) -> bool {
        self.meta.deletion_timestamp.is_some()
    }

    /// Removes `finalizer` from the metadata (written with the next replace).
    pub fn drop_finalizer(&mut self, finalizer: &str) {
        if let Some(list) = self.meta.finalizers.as_mut() {
            list.retain(|f| f != finalizer);
        }
    }
}

/// Why the record could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The API answered with an error.
    #[error("{}", crate::exit::describe(.0))]
    Kube(#[from] kube::Error),
    /// The stored object does not hold a readable record.
    #[error("the session record {name} is unreadable: {why}")]
    Corrupt {
        /// Object name.
        name: String,
        /// What is wrong.
        why: String,
    },
}

/// The record store of one namespace.
#[derive(Clone)]
pub struct RecordStore {
    api: Api<DynamicObject>,
    resource: ApiResource,
    /// Which kind of object holds records here.
    pub backend: Backend,
}

fn crd_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("czctl.dev", "v1", "Session"),
        "sessions",
    )
}

/// HTTP status of an API error, if it is one.
pub fn status_of(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

impl RecordStore {
    /// A store using `backend` in `namespace`.
    pub fn new(client: Client, namespace: &str, backend: Backend) -> Self {
        let resource = match backend {
            Backend::Crd => crd_resource(),
            Backend::Configmap => ApiResource::erase::<ConfigMap>(&()),
        };
        RecordStore {
            api: Api::namespaced_with(client, namespace, &resource),
            resource,
            backend,
        }
    }

    /// Chooses the backend: the CRD when it exists or can be created (then waits until it is
    /// established), else ConfigMaps.
    pub async fn detect(client: Client, namespace: &str) -> Result<Self, StoreError> {
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let backend = match crds.get_opt(CRD_NAME).await {
            Ok(Some(_)) => Backend::Crd,
            Ok(None) => match crds.create(&PostParams::default(), &crd_definition()).await {
                Ok(_) => {
                    info!("created the CustomResourceDefinition {CRD_NAME}");
                    wait_established(&crds).await?;
                    Backend::Crd
                }
                Err(e) if status_of(&e) == Some(409) => {
                    wait_established(&crds).await?;
                    Backend::Crd
                }
                Err(e) if status_of(&e) == Some(403) => {
                    info!("may not create CRDs; session records are kept in ConfigMaps");
                    Backend::Configmap
                }
                Err(e) => return Err(e.into()),
            },
            Err(e) if matches!(status_of(&e), Some(403 | 401)) => {
                info!("may not read CRDs; session records are kept in ConfigMaps");
                Backend::Configmap
            }
            Err(e) => return Err(e.into()),
        };
        debug!(?backend, "session record store");
        Ok(Self::new(client, namespace, backend))
    }

    /// Finds the record `name` in either kind of store without creating anything (for closing:
    /// a close never creates the CRD). A store that may not be read counts as empty.
    pub async fn find(
        client: Client,
        namespace: &str,
        name: &str,
    ) -> Result<Option<(Self, Stored)>, StoreError> {
        for backend in [Backend::Crd, Backend::Configmap] {
            let store = Self::new(client.clone(), namespace, backend);
            match store.get(name).await {
                Ok(Some(stored)) => return Ok(Some((store, stored))),
                Ok(None) => {}
                Err(StoreError::Kube(e)) if status_of(&e) == Some(403) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The record `name`, if it exists.
    pub async fn get(&self, name: &str) -> Result<Option<Stored>, StoreError> {
        match self.api.get_opt(name).await? {
            Some(obj) => Ok(Some(self.decode(obj)?)),
            None => Ok(None),
        }
    }

    /// Creates the record `name` for `service`, with the finalizer.
    pub async fn create(
        &self,
        name: &str,
        service: &str,
        body: &RecordBody,
    ) -> Result<Stored, StoreError> {
        let mut labels = names::labels(service);
        if self.backend == Backend::Configmap {
            labels.insert(RECORD_LABEL.into(), "true".into());
        }
        let obj = self.encode(
            json!({"name": name, "labels": labels, "finalizers": [FINALIZER]}),
            body,
        );
        let created = self.api.create(&PostParams::default(), &obj).await?;
        self.decode(created)
    }

    /// Writes `stored` back; fails with 409 when someone else wrote it since it was read.
    pub async fn replace(&self, stored: &Stored) -> Result<Stored, StoreError> {
        let meta = serde_json::to_value(&stored.meta).unwrap_or_default();
        let obj = self.encode(meta, &stored.body);
        let written = self
            .api
            .replace(&stored.name, &PostParams::default(), &obj)
            .await?;
        self.decode(written)
    }

    /// Deletes the record (already gone is fine).
    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        match self.api.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The ownerReference objects owned by the record carry.
    pub fn owner_ref(&self, stored: &Stored) -> OwnerReference {
        OwnerReference {
            api_version: self.resource.api_version.clone(),
            kind: self.resource.kind.clone(),
            name: stored.name.clone(),
            uid: stored.meta.uid.clone().unwrap_or_default(),
            block_owner_deletion: Some(true),
            controller: Some(true),
        }
    }

    fn encode(&self, metadata: Value, body: &RecordBody) -> DynamicObject {
        let mut obj = json!({
            "apiVersion": self.resource.api_version,
            "kind": self.resource.kind,
            "metadata": metadata,
        });
        match self.backend {
            Backend::Crd => obj["spec"] = json!(body),
            Backend::Configmap => {
                obj["data"] =
                    json!({ CONFIGMAP_KEY: serde_json::to_string(body).unwrap_or_default() })
            }
        }
        serde_json::from_value(obj).expect("a record object is a valid DynamicObject")
    }

    fn decode(&self, obj: DynamicObject) -> Result<Stored, StoreError> {
        let name = obj.metadata.name.clone().unwrap_or_default();
        let corrupt = |why: String| StoreError::Corrupt {
            name: name.clone(),
            why,
        };
        let body = match self.backend {
            Backend::Crd => serde_json::from_value(obj.data["spec"].clone()),
            Backend::Configmap => {
                let text = obj.data["data"][CONFIGMAP_KEY]
                    .as_str()
                    .ok_or_else(|| corrupt(format!("no {CONFIGMAP_KEY} key")))?;
                serde_json::from_str(text)
            }
        }
        .map_err(|e| corrupt(e.to_string()))?;
        Ok(Stored {
            name,
            meta: obj.metadata,
            body,
        })
    }
}

async fn wait_established(crds: &Api<CustomResourceDefinition>) -> Result<(), StoreError> {
    for _ in 0..100 {
        let crd = crds.get(CRD_NAME).await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(StoreError::Corrupt {
        name: CRD_NAME.into(),
        why: "the CRD was not established within 10 s".into(),
    })
}

/// The `sessions.czctl.dev` CustomResourceDefinition.
pub fn crd_definition() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {names::MANAGED_BY.0: names::MANAGED_BY.1}},
        "spec": {
            "group": "czctl.dev",
            "scope": "Namespaced",
            "names": {"plural": "sessions", "singular": "session", "kind": "Session",
                      "listKind": "SessionList", "shortNames": ["czsession"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "An intercept of a Service by czctl: the original selector and ports, the restore patch and the header routes.",
                    "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
                }},
                "additionalPrinterColumns": [
                    {"name": "Service", "type": "string", "jsonPath": ".spec.service"},
                    {"name": "Port", "type": "integer", "jsonPath": ".spec.port"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                ]
            }]
        }
    }))
    .expect("the CRD definition is valid")
}
