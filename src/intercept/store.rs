//! Where the Session record lives: a `sessions.czctl.dev` custom resource ([`Session`], whose
//! CustomResourceDefinition is derived from [`RecordBody`]) when the CRD exists or can be
//! created, else (tenants behind capsule-proxy and others who may not read or create CRDs) a
//! ConfigMap labelled `czctl.dev/session-record` holding the same body as JSON. Both carry the
//! [`FINALIZER`] and own everything the intercept creates.
//!
//! Records are written with replace (optimistic concurrency on the resourceVersion), not
//! server-side apply: two czctl runs that both read generation 3 must not both write 4.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::{await_condition, conditions, Condition};
use kube::{Api, Client, CustomResourceExt, Resource};
use tracing::{debug, info};

use super::names::{self, RECORD_LABEL};
use super::objects::Conflicts;
use super::record::{RecordBody, Session, FINALIZER};

/// The CRD's name.
pub const CRD_NAME: &str = "sessions.czctl.dev";
/// The ConfigMap key holding the body.
const CONFIGMAP_KEY: &str = "session.json";
/// How long a CRD czctl created (or found new) may take to be established.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(10);

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

    /// Its last route is being removed (or it is being deleted): no route may join it.
    pub fn closing(&self) -> bool {
        self.deleting() || self.body.closing
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
    /// Other writers kept changing the record (or an object czctl writes) between czctl's
    /// read and its write, more often than czctl retries.
    #[error(
        "{what} kept changing under czctl ({tries} writes refused with 409 Conflict); try again"
    )]
    Contended {
        /// What was written.
        what: String,
        /// How many writes were refused.
        tries: usize,
    },
    /// Watching for something the record needs failed or took too long.
    #[error("{0}")]
    Wait(String),
    /// The API server's answer lacks something it always sets (a uid, a ClusterIP).
    #[error("{0}")]
    Incomplete(String),
}

/// The API of the objects holding records.
#[derive(Clone)]
enum Objects {
    Crd(Api<Session>),
    Configmap(Api<ConfigMap>),
}

/// The record store of one namespace.
#[derive(Clone)]
pub struct RecordStore {
    objects: Objects,
    /// Which kind of object holds records here.
    pub backend: Backend,
}

/// HTTP status of an API error, if it is one.
pub fn status_of(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Whether `e` is a 409 Conflict (a write lost an optimistic-concurrency race).
pub(crate) fn is_conflict(e: &StoreError) -> bool {
    matches!(e, StoreError::Kube(e) if status_of(e) == Some(409))
}

impl RecordStore {
    /// A store using `backend` in `namespace`.
    pub fn new(client: Client, namespace: &str, backend: Backend) -> Self {
        let objects = match backend {
            Backend::Crd => Objects::Crd(Api::namespaced(client, namespace)),
            Backend::Configmap => Objects::Configmap(Api::namespaced(client, namespace)),
        };
        RecordStore { objects, backend }
    }

    /// Chooses the backend: the CRD when it exists or can be created (then waits until it is
    /// established), else ConfigMaps.
    pub async fn detect(client: Client, namespace: &str) -> Result<Self, StoreError> {
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let backend = match crds.get_opt(CRD_NAME).await {
            Ok(Some(crd)) => {
                upgrade(&crds, crd.clone()).await;
                if !conditions::is_crd_established().matches_object(Some(&crd)) {
                    wait_established(&crds).await?;
                }
                Backend::Crd
            }
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
        let corrupt = |e: kube::Error| match e {
            kube::Error::SerdeError(why) => StoreError::Corrupt {
                name: name.to_string(),
                why: why.to_string(),
            },
            e => e.into(),
        };
        match &self.objects {
            Objects::Crd(api) => Ok(api.get_opt(name).await.map_err(corrupt)?.map(from_session)),
            Objects::Configmap(api) => match api.get_opt(name).await? {
                Some(cm) => Ok(Some(from_configmap(cm)?)),
                None => Ok(None),
            },
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
        let meta = ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels),
            finalizers: Some(vec![FINALIZER.to_string()]),
            ..ObjectMeta::default()
        };
        let params = PostParams::default();
        match &self.objects {
            Objects::Crd(api) => Ok(from_session(
                api.create(&params, &to_session(meta, body)).await?,
            )),
            Objects::Configmap(api) => {
                from_configmap(api.create(&params, &to_configmap(meta, body)?).await?)
            }
        }
    }

    /// Writes `stored` back; fails with 409 when someone else wrote it since it was read.
    pub async fn replace(&self, stored: &Stored) -> Result<Stored, StoreError> {
        let params = PostParams::default();
        let meta = stored.meta.clone();
        match &self.objects {
            Objects::Crd(api) => Ok(from_session(
                api.replace(&stored.name, &params, &to_session(meta, &stored.body))
                    .await?,
            )),
            Objects::Configmap(api) => from_configmap(
                api.replace(&stored.name, &params, &to_configmap(meta, &stored.body)?)
                    .await?,
            ),
        }
    }

    /// Deletes the record (already gone is fine).
    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        let params = DeleteParams::background();
        let result = match &self.objects {
            Objects::Crd(api) => api.delete(name, &params).await.map(drop),
            Objects::Configmap(api) => api.delete(name, &params).await.map(drop),
        };
        match result {
            Err(e) if status_of(&e) != Some(404) => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Waits (watching, not polling) until the record `name` is gone or no longer closing.
    pub async fn wait_open(&self, name: &str) -> Result<(), StoreError> {
        let watched = match &self.objects {
            Objects::Crd(api) => await_condition(api.clone(), name, |s: Option<&Session>| {
                s.is_none_or(|s| !from_session(s.clone()).closing())
            })
            .await
            .map(drop),
            Objects::Configmap(api) => {
                await_condition(api.clone(), name, |cm: Option<&ConfigMap>| {
                    // An unreadable record is open: the next read reports what is wrong.
                    cm.is_none_or(|cm| from_configmap(cm.clone()).is_ok_and(|s| !s.closing()))
                })
                .await
                .map(drop)
            }
        };
        watched.map_err(|e| StoreError::Wait(format!("watching the session record {name}: {e}")))
    }

    /// The ownerReference objects owned by the record carry.
    pub fn owner_ref(&self, stored: &Stored) -> Result<OwnerReference, StoreError> {
        let (api_version, kind) = match self.backend {
            Backend::Crd => (Session::api_version(&()), Session::kind(&())),
            Backend::Configmap => (ConfigMap::api_version(&()), ConfigMap::kind(&())),
        };
        let uid = stored.meta.uid.clone().ok_or_else(|| {
            StoreError::Incomplete(format!(
                "the session record {} as the API server returned it has no uid",
                stored.name
            ))
        })?;
        Ok(OwnerReference {
            api_version: api_version.into_owned(),
            kind: kind.into_owned(),
            name: stored.name.clone(),
            uid,
            block_owner_deletion: Some(true),
            controller: Some(true),
        })
    }
}

fn to_session(metadata: ObjectMeta, body: &RecordBody) -> Session {
    Session {
        metadata,
        spec: body.clone(),
    }
}

fn from_session(session: Session) -> Stored {
    Stored {
        name: session.metadata.name.clone().unwrap_or_default(),
        meta: session.metadata,
        body: session.spec,
    }
}

fn to_configmap(metadata: ObjectMeta, body: &RecordBody) -> Result<ConfigMap, StoreError> {
    let text = serde_json::to_string(body).map_err(|e| StoreError::Corrupt {
        name: metadata.name.clone().unwrap_or_default(),
        why: format!("cannot encode it: {e}"),
    })?;
    Ok(ConfigMap {
        metadata,
        data: Some([(CONFIGMAP_KEY.to_string(), text)].into()),
        ..ConfigMap::default()
    })
}

fn from_configmap(cm: ConfigMap) -> Result<Stored, StoreError> {
    let name = cm.metadata.name.clone().unwrap_or_default();
    let corrupt = |why: String| StoreError::Corrupt {
        name: name.clone(),
        why,
    };
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIGMAP_KEY))
        .ok_or_else(|| corrupt(format!("no {CONFIGMAP_KEY} key")))?;
    let body = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    Ok(Stored {
        name: name.clone(),
        meta: cm.metadata,
        body,
    })
}

/// Replaces a CRD whose schema is not czctl's (the hand-written one earlier versions created
/// kept `spec` as unknown fields) with the derived one; a replace that lost a race with the
/// API server's own status updates is tried again (bounded). Without the right to, the CRD
/// stays as it is: records fit either schema.
async fn upgrade(crds: &Api<CustomResourceDefinition>, mut found: CustomResourceDefinition) {
    let ours = crd_definition();
    let schemas = |crd: &CustomResourceDefinition| -> Vec<_> {
        crd.spec.versions.iter().map(|v| v.schema.clone()).collect()
    };
    let mut conflicts = Conflicts::default();
    while schemas(&found) != schemas(&ours) {
        let mut replacement = ours.clone();
        replacement.metadata.resource_version = found.metadata.resource_version.clone();
        let failed = match crds
            .replace(CRD_NAME, &PostParams::default(), &replacement)
            .await
        {
            Ok(_) => {
                info!("updated the CustomResourceDefinition {CRD_NAME} to czctl's schema");
                return;
            }
            Err(e) if status_of(&e) == Some(409) => match conflicts.again(CRD_NAME).await {
                Ok(()) => None,
                Err(e) => Some(e.to_string()),
            },
            Err(e) => Some(crate::exit::describe(&e)),
        };
        let fresh = match failed {
            None => crds.get_opt(CRD_NAME).await,
            Some(why) => {
                info!("kept the CustomResourceDefinition {CRD_NAME} as it is: {why}");
                return;
            }
        };
        found = match fresh {
            Ok(Some(fresh)) => fresh,
            _ => return,
        };
    }
}

/// Waits (watching) until the CRD is established, at most [`ESTABLISH_TIMEOUT`].
async fn wait_established(crds: &Api<CustomResourceDefinition>) -> Result<(), StoreError> {
    let established = await_condition(crds.clone(), CRD_NAME, conditions::is_crd_established());
    match tokio::time::timeout(ESTABLISH_TIMEOUT, established).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(StoreError::Wait(format!(
            "watching the CustomResourceDefinition {CRD_NAME} until it is established: {e}"
        ))),
        Err(_) => Err(StoreError::Wait(format!(
            "the CustomResourceDefinition {CRD_NAME} was not established within {}s",
            ESTABLISH_TIMEOUT.as_secs()
        ))),
    }
}

/// The `sessions.czctl.dev` CustomResourceDefinition, derived from [`RecordBody`]: a
/// structural schema, so the API server validates records and prunes unknown fields (the
/// Service ports and the restore patch keep every field they have).
pub fn crd_definition() -> CustomResourceDefinition {
    let mut crd = Session::crd();
    // The API server would default it; the hand-written definition this replaces named it.
    crd.spec.names.list_kind = Some("SessionList".into());
    crd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crd_keeps_its_names_and_has_a_structural_schema() {
        let crd = serde_json::to_value(crd_definition()).unwrap();
        assert_eq!(crd["metadata"]["name"], CRD_NAME);
        assert_eq!(
            crd["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "czctl"
        );
        let spec = &crd["spec"];
        assert_eq!(spec["group"], "czctl.dev");
        assert_eq!(spec["scope"], "Namespaced");
        assert_eq!(spec["names"]["kind"], "Session");
        assert_eq!(spec["names"]["listKind"], "SessionList");
        assert_eq!(spec["names"]["plural"], "sessions");
        assert_eq!(
            spec["names"]["shortNames"],
            serde_json::json!(["czsession"])
        );
        let version = &spec["versions"][0];
        assert_eq!(version["name"], "v1");
        assert_eq!(version["storage"], true);
        let body = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(body["type"], "object");
        assert!(body.get("x-kubernetes-preserve-unknown-fields").is_none());
        let ports = &body["properties"]["original"]["properties"]["ports"]["items"];
        assert_eq!(
            ports["x-kubernetes-preserve-unknown-fields"], true,
            "{ports}"
        );
        let tunnel = &body["properties"]["routes"]["items"]["properties"]["tunnel"];
        assert_eq!(
            tunnel["enum"],
            serde_json::json!(["cluster", "ngrok"]),
            "{tunnel}"
        );
        let columns: Vec<_> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(columns, ["Service", "Port", "Age"]);
    }
}
