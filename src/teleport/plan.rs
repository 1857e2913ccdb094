//! What should be forwarded: from the model's Service views to the set of addresses, names,
//! ports and backends the laptop should have. Pure code: the engine diffs this against what
//! it runs.

use std::collections::BTreeMap;

use crate::cluster::model::{Backend, ObjectKey, ServiceView};

/// One loopback address worth of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The Service it belongs to.
    pub service: ObjectKey,
    /// Only this pod (per-pod names of headless Services).
    pub pinned: Option<String>,
    /// Host names pointing at the address.
    pub names: Vec<String>,
    /// Listen port → service port name.
    pub ports: BTreeMap<u16, String>,
    /// Pods behind it.
    pub backends: Vec<Backend>,
}

/// Naming rules of one teleport.
#[derive(Debug, Clone)]
pub struct Naming {
    /// kubeconfig context (part of every allocation key, so addresses are stable per cluster).
    pub context: String,
    /// The first namespace given: its Services also get their bare names.
    pub first_namespace: String,
    /// `cluster.local` unless told otherwise.
    pub cluster_domain: String,
}

impl Naming {
    /// The allocation key of a Service, or of one of its pods.
    pub fn key(&self, service: &ObjectKey, pod_host: Option<&str>) -> String {
        match pod_host {
            Some(host) => format!(
                "{}/{}/{}/{host}",
                self.context, service.namespace, service.name
            ),
            None => format!("{}/{}/{}", self.context, service.namespace, service.name),
        }
    }

    /// `svc.ns`, `svc.ns.svc`, `svc.ns.svc.DOMAIN`, plus `svc` in the first namespace; with a
    /// pod host, the same under `host.svc`.
    pub fn names(&self, service: &ObjectKey, pod_host: Option<&str>) -> Vec<String> {
        let base = match pod_host {
            Some(host) => format!("{host}.{}", service.name),
            None => service.name.clone(),
        };
        let ns = &service.namespace;
        let mut names = Vec::with_capacity(4);
        if *ns == self.first_namespace {
            names.push(base.clone());
        }
        names.push(format!("{base}.{ns}"));
        names.push(format!("{base}.{ns}.svc"));
        names.push(format!("{base}.{ns}.svc.{}", self.cluster_domain));
        names
    }
}

/// Everything one Service should become, keyed by allocation key.
pub fn desired(naming: &Naming, view: &ServiceView) -> BTreeMap<String, Desired> {
    let mut out = BTreeMap::new();
    if view.not_forwarded.is_some() {
        return out;
    }
    let ports: BTreeMap<u16, String> = view.tcp_ports().map(|p| (p.port, p.name.clone())).collect();
    out.insert(
        naming.key(&view.key, None),
        Desired {
            service: view.key.clone(),
            pinned: None,
            names: naming.names(&view.key, None),
            ports: ports.clone(),
            backends: view.backends.clone(),
        },
    );
    if view.headless {
        for backend in &view.backends {
            let Some(host) = backend.hostname.as_deref() else {
                continue;
            };
            out.insert(
                naming.key(&view.key, Some(host)),
                Desired {
                    service: view.key.clone(),
                    pinned: Some(backend.pod.clone()),
                    names: naming.names(&view.key, Some(host)),
                    ports: ports.clone(),
                    backends: vec![backend.clone()],
                },
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::model::ServicePort;

    fn naming() -> Naming {
        Naming {
            context: "kind".into(),
            first_namespace: "demo".into(),
            cluster_domain: "cluster.local".into(),
        }
    }

    fn view(ns: &str, headless: bool) -> ServiceView {
        ServiceView {
            key: ObjectKey::new(ns, "cache"),
            ports: vec![
                ServicePort {
                    name: "redis".into(),
                    port: 6379,
                    protocol: "TCP".into(),
                },
                ServicePort {
                    name: "dns".into(),
                    port: 53,
                    protocol: "UDP".into(),
                },
            ],
            headless,
            backends: vec![Backend {
                pod: "cache-0".into(),
                ready: true,
                hostname: Some("cache-0".into()),
                ports: BTreeMap::from([("redis".to_string(), 6379)]),
            }],
            not_forwarded: None,
        }
    }

    #[test]
    fn names_in_first_and_other_namespaces() {
        let n = naming();
        assert_eq!(
            n.names(&ObjectKey::new("demo", "echo"), None),
            [
                "echo",
                "echo.demo",
                "echo.demo.svc",
                "echo.demo.svc.cluster.local"
            ]
        );
        assert_eq!(
            n.names(&ObjectKey::new("other", "echo"), None)[0],
            "echo.other"
        );
        assert_eq!(
            n.names(&ObjectKey::new("demo", "cache"), Some("cache-0"))[1],
            "cache-0.cache.demo"
        );
    }

    #[test]
    fn headless_services_get_per_pod_addresses() {
        let plan = desired(&naming(), &view("demo", true));
        assert_eq!(plan.len(), 2);
        let pod = &plan["kind/demo/cache/cache-0"];
        assert_eq!(pod.pinned.as_deref(), Some("cache-0"));
        assert_eq!(
            pod.ports.keys().copied().collect::<Vec<_>>(),
            [6379],
            "UDP gets no listener"
        );
        assert_eq!(desired(&naming(), &view("demo", false)).len(), 1);
    }
}
