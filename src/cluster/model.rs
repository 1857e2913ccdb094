//! The model: Services and EndpointSlices as czctl needs them, and what each Service becomes
//! on the laptop. Pure code: no I/O.
//!
//! A [`Model`] holds the latest Services and EndpointSlices of the teleported namespaces (fed
//! by the watchers) and derives a [`ServiceView`] per Service: its ports, whether it can be
//! forwarded and why not, and its backends (pods, readiness, the target port of every service
//! port, resolved per pod by the EndpointSlice controller).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Label naming an EndpointSlice's Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// `namespace/name` of an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// A key from its parts.
    pub fn new(namespace: &str, name: &str) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Port name ("" when the Service has a single unnamed port).
    pub name: String,
    /// The port clients connect to.
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

impl ServicePort {
    /// Pod port-forwarding carries TCP only.
    pub fn is_tcp(&self) -> bool {
        self.protocol == "TCP"
    }
}

/// A pod behind a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Pod name (from the endpoint's targetRef).
    pub pod: String,
    /// The endpoint is ready to serve.
    pub ready: bool,
    /// Hostname within a headless Service (StatefulSet pods).
    pub hostname: Option<String>,
    /// Target port per service port name.
    pub ports: BTreeMap<String, u16>,
}

/// Why a Service is not forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotForwarded {
    /// ExternalName Services are DNS aliases to something outside the cluster.
    ExternalName(String),
    /// No TCP port at all.
    NoTcpPorts,
    /// No endpoint names a pod (selector-less Service with IP-only endpoints, or no endpoints).
    NoPods,
}

impl std::fmt::Display for NotForwarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotForwarded::ExternalName(target) => {
                write!(
                    f,
                    "ExternalName Service (an alias of {target}); resolve it yourself"
                )
            }
            NotForwarded::NoTcpPorts => {
                write!(f, "no TCP ports (port-forwarding carries TCP only)")
            }
            NotForwarded::NoPods => write!(
                f,
                "no endpoint names a pod, so there is nothing to port-forward to"
            ),
        }
    }
}

/// A Service as czctl forwards it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    /// Where the Service lives.
    pub key: ObjectKey,
    /// Every port, TCP or not.
    pub ports: Vec<ServicePort>,
    /// `clusterIP: None`.
    pub headless: bool,
    /// Pods behind the Service.
    pub backends: Vec<Backend>,
    /// Set when nothing can be forwarded, with the reason.
    pub not_forwarded: Option<NotForwarded>,
}

impl ServiceView {
    /// TCP ports, the ones that get listeners.
    pub fn tcp_ports(&self) -> impl Iterator<Item = &ServicePort> {
        self.ports.iter().filter(|p| p.is_tcp())
    }

    /// Ports that are listed but not forwarded (UDP, SCTP).
    pub fn skipped_ports(&self) -> impl Iterator<Item = &ServicePort> {
        self.ports.iter().filter(|p| !p.is_tcp())
    }
}

/// What the model keeps of a Service: its spec as forwarding needs it. The rest of the object
/// (metadata, managed fields, annotations, status) is dropped on arrival, so 10,000 Services
/// cost a few hundred bytes each.
#[derive(Debug)]
struct ServiceFacts {
    ports: Vec<ServicePort>,
    headless: bool,
    /// `Some(target)` for an ExternalName Service.
    external_name: Option<String>,
    has_selector: bool,
}

impl ServiceFacts {
    fn of(svc: Service) -> Self {
        let spec = svc.spec.unwrap_or_default();
        let ports = spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| {
                Some(ServicePort {
                    name: p.name.unwrap_or_default(),
                    port: u16::try_from(p.port).ok()?,
                    protocol: p.protocol.unwrap_or_else(|| "TCP".into()),
                })
            })
            .collect();
        ServiceFacts {
            ports,
            headless: spec.cluster_ip.as_deref() == Some("None"),
            external_name: (spec.type_.as_deref() == Some("ExternalName"))
                .then(|| spec.external_name.unwrap_or_default()),
            has_selector: spec.selector.is_some_and(|s| !s.is_empty()),
        }
    }
}

/// What the model keeps of an EndpointSlice.
#[derive(Debug)]
struct SliceFacts {
    /// The Service it belongs to (its `kubernetes.io/service-name` label).
    service: Option<String>,
    /// Target port per service port name.
    ports: Vec<(String, u16)>,
    /// Endpoints that name a pod.
    endpoints: Vec<EndpointFacts>,
}

#[derive(Debug)]
struct EndpointFacts {
    pod: String,
    ready: bool,
    hostname: Option<String>,
}

impl SliceFacts {
    fn of(slice: EndpointSlice) -> Self {
        let service = service_of(&slice).map(str::to_string);
        let ports = slice
            .ports
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p.name.unwrap_or_default(), u16::try_from(p.port?).ok()?)))
            .collect();
        let endpoints = slice
            .endpoints
            .into_iter()
            .flatten()
            .filter_map(|ep| {
                let target = ep.target_ref.filter(|t| t.kind.as_deref() == Some("Pod"))?;
                let conditions = ep.conditions.unwrap_or_default();
                Some(EndpointFacts {
                    pod: target.name?,
                    ready: conditions.ready.unwrap_or(true)
                        && !conditions.terminating.unwrap_or(false),
                    hostname: ep.hostname,
                })
            })
            .collect();
        SliceFacts {
            service,
            ports,
            endpoints,
        }
    }
}

/// The watched state of the teleported namespaces.
#[derive(Debug, Default)]
pub struct Model {
    services: HashMap<ObjectKey, ServiceFacts>,
    slices: HashMap<ObjectKey, SliceFacts>,
    /// Service → its EndpointSlices, so a view costs O(its slices), not O(all slices).
    slices_of: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
}

/// What changed in the model.
#[derive(Debug, Clone)]
pub enum Change {
    /// A Service was added or modified.
    ServiceApplied(Box<Service>),
    /// A Service was deleted.
    ServiceDeleted(ObjectKey),
    /// An EndpointSlice was added or modified.
    SliceApplied(Box<EndpointSlice>),
    /// An EndpointSlice was deleted.
    SliceDeleted(ObjectKey),
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectKey {
    ObjectKey::new(
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or(""),
    )
}

impl Model {
    /// Applies a change; returns the Service it concerns.
    pub fn apply(&mut self, change: Change) -> Option<ObjectKey> {
        match change {
            Change::ServiceApplied(svc) => {
                let key = key_of(&svc.metadata);
                self.services.insert(key.clone(), ServiceFacts::of(*svc));
                Some(key)
            }
            Change::ServiceDeleted(key) => {
                self.services.remove(&key);
                Some(key)
            }
            Change::SliceApplied(slice) => {
                let key = key_of(&slice.metadata);
                let facts = SliceFacts::of(*slice);
                let new = facts
                    .service
                    .as_deref()
                    .map(|s| ObjectKey::new(&key.namespace, s));
                let old = self.remove_slice(&key);
                if let Some(service) = &new {
                    self.slices_of
                        .entry(service.clone())
                        .or_default()
                        .insert(key.clone());
                }
                self.slices.insert(key, facts);
                new.or(old)
            }
            Change::SliceDeleted(key) => self.remove_slice(&key),
        }
    }

    /// Forgets a slice; returns the Service it belonged to.
    fn remove_slice(&mut self, key: &ObjectKey) -> Option<ObjectKey> {
        let old = self.slices.remove(key)?;
        let service = ObjectKey::new(&key.namespace, old.service.as_deref()?);
        if let Some(set) = self.slices_of.get_mut(&service) {
            set.remove(key);
            if set.is_empty() {
                self.slices_of.remove(&service);
            }
        }
        Some(service)
    }

    /// Keys of every Service in `namespace`.
    pub fn services_in(&self, namespace: &str) -> Vec<ObjectKey> {
        let mut keys: Vec<_> = self
            .services
            .keys()
            .filter(|k| k.namespace == namespace)
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    /// Keys of every Service and EndpointSlice of `namespace`, to find what a relist dropped.
    pub fn keys_in(&self, namespace: &str) -> (Vec<ObjectKey>, Vec<ObjectKey>) {
        let pick = |keys: Vec<&ObjectKey>| {
            keys.into_iter()
                .filter(|k| k.namespace == namespace)
                .cloned()
                .collect()
        };
        (
            pick(self.services.keys().collect()),
            pick(self.slices.keys().collect()),
        )
    }

    /// The view of one Service, or `None` when it does not exist.
    pub fn view(&self, key: &ObjectKey) -> Option<ServiceView> {
        let svc = self.services.get(key)?;
        let backends = self.backends(key);
        let not_forwarded = if let Some(target) = &svc.external_name {
            Some(NotForwarded::ExternalName(target.clone()))
        } else if !svc.ports.iter().any(ServicePort::is_tcp) {
            Some(NotForwarded::NoTcpPorts)
        } else if backends.is_empty() && !svc.has_selector {
            Some(NotForwarded::NoPods)
        } else {
            None
        };
        Some(ServiceView {
            key: key.clone(),
            ports: svc.ports.clone(),
            headless: svc.headless,
            backends,
            not_forwarded,
        })
    }

    /// Pods behind a Service, merged over its EndpointSlices, in a stable order.
    fn backends(&self, key: &ObjectKey) -> Vec<Backend> {
        let mut by_pod: BTreeMap<&str, Backend> = BTreeMap::new();
        let slices = self
            .slices_of
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|slice_key| self.slices.get(slice_key));
        for slice in slices {
            for ep in &slice.endpoints {
                let backend = by_pod.entry(&ep.pod).or_insert_with(|| Backend {
                    pod: ep.pod.clone(),
                    ready: ep.ready,
                    hostname: ep.hostname.clone(),
                    ports: BTreeMap::new(),
                });
                backend.ready &= ep.ready;
                backend
                    .ports
                    .extend(slice.ports.iter().map(|(k, v)| (k.clone(), *v)));
            }
        }
        by_pod.into_values().collect()
    }
}

fn service_of(slice: &EndpointSlice) -> Option<&str> {
    slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    fn echo_model() -> Model {
        let mut m = Model::default();
        m.apply(Change::ServiceApplied(Box::new(svc(json!({
            "metadata": {"name": "echo", "namespace": "demo"},
            "spec": {"selector": {"app": "echo"}, "clusterIP": "10.0.0.1",
                     "ports": [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"},
                               {"name": "stats", "port": 8125, "protocol": "UDP"}]}})))));
        m.apply(Change::SliceApplied(Box::new(slice(json!({
            "metadata": {"name": "echo-abc", "namespace": "demo", "labels": {"kubernetes.io/service-name": "echo"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 9000, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.1.0.1"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "echo-1"}},
                {"addresses": ["10.1.0.2"], "conditions": {"ready": false}, "targetRef": {"kind": "Pod", "name": "echo-2"}},
                {"addresses": ["10.9.9.9"], "conditions": {"ready": true}}
            ]})))));
        m
    }

    #[test]
    fn view_resolves_backends_and_ports() {
        let m = echo_model();
        let view = m.view(&ObjectKey::new("demo", "echo")).unwrap();
        assert_eq!(view.not_forwarded, None);
        assert_eq!(view.tcp_ports().count(), 1);
        assert_eq!(view.skipped_ports().next().unwrap().port, 8125);
        assert_eq!(view.backends.len(), 2, "IP-only endpoints are not pods");
        assert_eq!(view.backends[0].ports["http"], 9000);
        assert!(view.backends[0].ready && !view.backends[1].ready);
    }

    #[test]
    fn slice_deletion_and_service_deletion() {
        let mut m = echo_model();
        let touched = m.apply(Change::SliceDeleted(ObjectKey::new("demo", "echo-abc")));
        assert_eq!(touched, Some(ObjectKey::new("demo", "echo")));
        assert!(m
            .view(&ObjectKey::new("demo", "echo"))
            .unwrap()
            .backends
            .is_empty());
        m.apply(Change::ServiceDeleted(ObjectKey::new("demo", "echo")));
        assert!(m.view(&ObjectKey::new("demo", "echo")).is_none());
    }

    #[test]
    fn reasons_for_not_forwarding() {
        let mut m = Model::default();
        m.apply(Change::ServiceApplied(Box::new(svc(
            json!({"metadata": {"name": "search", "namespace": "demo"},
            "spec": {"type": "ExternalName", "externalName": "search.example.com"}}),
        ))));
        m.apply(Change::ServiceApplied(Box::new(svc(
            json!({"metadata": {"name": "dns", "namespace": "demo"},
            "spec": {"selector": {"a": "b"}, "ports": [{"port": 53, "protocol": "UDP"}]}}),
        ))));
        m.apply(Change::ServiceApplied(Box::new(svc(
            json!({"metadata": {"name": "ext", "namespace": "demo"},
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}}),
        ))));
        let reason = |n| m.view(&ObjectKey::new("demo", n)).unwrap().not_forwarded;
        assert!(
            matches!(reason("search"), Some(NotForwarded::ExternalName(t)) if t == "search.example.com")
        );
        assert_eq!(reason("dns"), Some(NotForwarded::NoTcpPorts));
        assert_eq!(reason("ext"), Some(NotForwarded::NoPods));
        assert_eq!(m.services_in("demo").len(), 3);
    }
}
