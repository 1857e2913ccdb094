//! The Service variables ("service links") the kubelet gives every container, computed as
//! the kubelet computes them, with the addresses a teleport gave the Services in place of
//! their ClusterIPs when asked.
//!
//! # The kubelet's rules
//! `getServiceEnvVarMap` in `pkg/kubelet/kubelet_pods.go` picks the Services, and
//! `FromServices` in `pkg/kubelet/envvars/envvars.go` names their variables:
//!
//! - Only Services whose `spec.clusterIP` is set count: not `None` (headless) and not empty
//!   (`ExternalName`). See [`LinkService::from_service`].
//! - The Service `kubernetes` of namespace `default` always counts, `enableServiceLinks: false`
//!   or not. The other Services of the pod's own namespace count only when
//!   `enableServiceLinks` is not `false` (it defaults to `true`); then a Service named
//!   `kubernetes` of the pod's namespace replaces `default/kubernetes`. Services of other
//!   namespaces never count. See [`Links::select`].
//! - A Service's name in a variable is upper-cased with `-` as `_` (`my-db` → `MY_DB`), and
//!   so is a port's name. For Service `S` with ClusterIP `IP` and ports `p0, p1, ...`:
//!   - `S_SERVICE_HOST=IP`, `S_SERVICE_PORT=<p0's port>`;
//!   - `S_SERVICE_PORT_<NAME>=<port>` for every named port;
//!   - `S_PORT=<proto>://IP:<p0's port>` (Docker's special case of the first port);
//!   - for every port: `S_PORT_<port>_<PROTO>=<proto>://IP:<port>`, then the same name with
//!     `_PROTO=<proto>`, `_PORT=<port>` and `_ADDR=IP`;
//!
//!   where `PROTO` is the port's protocol (`TCP` when unset) and `proto` the same in lower
//!   case; an IPv6 ClusterIP is written `[IP]` in `proto://[IP]:port` (Go's
//!   `net.JoinHostPort`), bare elsewhere.
//! - The kubelet puts the variables in a map; [`crate::env::resolve`] then uses them for
//!   `$(VAR)` expansion after the container's own variables, and gives the container those the
//!   container does not define itself (a declared `env`/`envFrom` variable of the same name
//!   wins).
//!
//! # Order and collisions
//! The kubelet's order is Go map order (random). [`Links::variables`] is deterministic: the
//! Services sorted by name, each one's variables in the order above. Two Services can give
//! one name (Service `a` with port 80 and Service `a-port-80-tcp` both give
//! `A_PORT_80_TCP_PORT`); the kubelet then keeps either at random, this keeps the value of
//! the Service later by name, at the place the name first appeared.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::Service;

/// The namespace of the Service every pod gets variables for.
pub const MASTER_NAMESPACE: &str = "default";
/// The name of the Service every pod gets variables for.
pub const MASTER_SERVICE: &str = "kubernetes";

/// What the kubelet reads of a Service for its variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkService {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `spec.clusterIP` (never empty or `None` here).
    pub cluster_ip: String,
    /// `spec.ports`, in order.
    pub ports: Vec<LinkPort>,
}

/// One port of a [`LinkService`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPort {
    /// Its name (empty: unnamed; only the first port may be).
    pub name: String,
    /// `port`, the Service's port (not the target port).
    pub port: i32,
    /// `protocol` as written, `TCP` when unset: `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

impl LinkService {
    /// The Service as the kubelet reads it; `None` when it has no ClusterIP (headless
    /// `None`, or an `ExternalName` Service's empty one): the kubelet gives it no variables.
    pub fn from_service(service: &Service) -> Option<LinkService> {
        let spec = service.spec.as_ref()?;
        let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
        if cluster_ip.is_empty() || cluster_ip == "None" {
            return None;
        }
        Some(LinkService {
            namespace: service.metadata.namespace.clone().unwrap_or_default(),
            name: service.metadata.name.clone().unwrap_or_default(),
            cluster_ip: cluster_ip.to_string(),
            ports: spec
                .ports
                .iter()
                .flatten()
                .map(|p| LinkPort {
                    name: p.name.clone().unwrap_or_default(),
                    port: p.port,
                    protocol: p
                        .protocol
                        .clone()
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| "TCP".to_string()),
                })
                .collect(),
        })
    }
}

/// The Services whose variables a container of one namespace gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    namespace: String,
    /// One per name, sorted by name.
    services: Vec<LinkService>,
}

impl Links {
    /// The Services a pod of `namespace` gets variables for, picked from `services` (any
    /// namespaces; those without a ClusterIP already left out by
    /// [`LinkService::from_service`]) as the kubelet's `getServiceEnvVarMap` picks them.
    pub fn select(
        namespace: &str,
        enable_service_links: bool,
        services: impl IntoIterator<Item = LinkService>,
    ) -> Links {
        let mut own = BTreeMap::new();
        let mut master = None;
        for service in services {
            if service.namespace == MASTER_NAMESPACE && service.name == MASTER_SERVICE {
                master = Some(service);
            } else if service.namespace == namespace && enable_service_links {
                own.insert(service.name.clone(), service);
            }
        }
        // The pod's own `kubernetes` Service (links enabled) wins over default's, whatever
        // order the kubelet's cache lists them in.
        if let Some(master) = master {
            own.entry(master.name.clone()).or_insert(master);
        }
        Links {
            namespace: namespace.to_string(),
            services: own.into_values().collect(),
        }
    }

    /// The namespace of the pod.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Services, sorted by name.
    pub fn services(&self) -> &[LinkService] {
        &self.services
    }

    /// The variables, in the order described in the module documentation, each name once.
    ///
    /// `addresses` replace ClusterIPs: a key `NAME` is the Service `NAME` of the pod's
    /// namespace ([`Links::namespace`]), a key `NS/NAME` the Service `NAME` of namespace `NS`
    /// (so `default/kubernetes` can be given one when the pod is elsewhere); the other
    /// Services keep their ClusterIP. An empty map gives what the kubelet gives.
    pub fn variables(&self, addresses: &BTreeMap<String, Ipv4Addr>) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut push = |name: String, value: String| match index.get(&name) {
            Some(&at) => out[at].1 = value,
            None => {
                index.insert(name.clone(), out.len());
                out.push((name, value));
            }
        };
        for service in &self.services {
            let ip = self.address_of(service, addresses);
            service_variables(service, &ip, &mut push);
        }
        out
    }

    /// The names [`Links::variables`] gives (whatever the addresses).
    pub fn names(&self) -> BTreeSet<String> {
        self.variables(&BTreeMap::new())
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    fn address_of(&self, service: &LinkService, addresses: &BTreeMap<String, Ipv4Addr>) -> String {
        let qualified = format!("{}/{}", service.namespace, service.name);
        addresses
            .get(&qualified)
            .or_else(|| {
                (service.namespace == self.namespace)
                    .then(|| addresses.get(&service.name))
                    .flatten()
            })
            .map_or_else(|| service.cluster_ip.clone(), Ipv4Addr::to_string)
    }
}

/// `FromServices` for one Service whose address is `ip`.
fn service_variables(service: &LinkService, ip: &str, push: &mut impl FnMut(String, String)) {
    let prefix = env_name(&service.name);
    push(format!("{prefix}_SERVICE_HOST"), ip.to_string());
    // The API server refuses a Service with a ClusterIP and no ports; the kubelet would fail
    // on one (it reads the first port unconditionally). Here it just gets no port variables.
    let Some(first) = service.ports.first() else {
        return;
    };
    push(format!("{prefix}_SERVICE_PORT"), first.port.to_string());
    for port in service.ports.iter().filter(|p| !p.name.is_empty()) {
        push(
            format!("{prefix}_SERVICE_PORT_{}", env_name(&port.name)),
            port.port.to_string(),
        );
    }
    let host = match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{ip}]"),
        _ => ip.to_string(),
    };
    for (i, port) in service.ports.iter().enumerate() {
        let proto = port.protocol.to_lowercase();
        let url = format!("{proto}://{host}:{}", port.port);
        if i == 0 {
            push(format!("{prefix}_PORT"), url.clone());
        }
        let port_prefix = format!(
            "{prefix}_PORT_{}_{}",
            port.port,
            port.protocol.to_uppercase()
        );
        push(port_prefix.clone(), url);
        push(format!("{port_prefix}_PROTO"), proto.clone());
        push(format!("{port_prefix}_PORT"), port.port.to_string());
        push(format!("{port_prefix}_ADDR"), ip.to_string());
    }
}

/// `my-svc` → `MY_SVC`, as the kubelet's `makeEnvVariableName` does (dots and leading digits
/// are left alone: Service and port names cannot have them).
pub fn env_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(ns: &str, name: &str, spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": spec,
        }))
        .unwrap()
    }

    fn link(ns: &str, name: &str, spec: serde_json::Value) -> LinkService {
        LinkService::from_service(&service(ns, name, spec)).expect("has a ClusterIP")
    }

    fn names(vars: &[(String, String)]) -> Vec<&str> {
        vars.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn get<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
        vars.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn one_port_service_gives_the_kubelets_seven_variables_in_order() {
        let links = Links::select(
            "demo",
            true,
            [link(
                "demo",
                "db",
                json!({"clusterIP": "10.96.0.20", "ports": [{"port": 5432}]}),
            )],
        );
        let vars = links.variables(&BTreeMap::new());
        assert_eq!(
            vars,
            [
                ("DB_SERVICE_HOST", "10.96.0.20"),
                ("DB_SERVICE_PORT", "5432"),
                ("DB_PORT", "tcp://10.96.0.20:5432"),
                ("DB_PORT_5432_TCP", "tcp://10.96.0.20:5432"),
                ("DB_PORT_5432_TCP_PROTO", "tcp"),
                ("DB_PORT_5432_TCP_PORT", "5432"),
                ("DB_PORT_5432_TCP_ADDR", "10.96.0.20"),
            ]
            .map(|(n, v)| (n.to_string(), v.to_string()))
        );
    }

    #[test]
    fn multiple_ports_named_with_dashes_and_udp() {
        let links = Links::select(
            "demo",
            true,
            [link(
                "demo",
                "my-api",
                json!({"clusterIP": "10.96.0.7", "ports": [
                    {"name": "http-alt", "port": 8080, "protocol": "TCP"},
                    {"name": "dns-udp", "port": 53, "protocol": "UDP"},
                    {"name": "sig", "port": 9999, "protocol": "SCTP"},
                ]}),
            )],
        );
        let vars = links.variables(&BTreeMap::new());
        assert_eq!(
            names(&vars),
            [
                "MY_API_SERVICE_HOST",
                "MY_API_SERVICE_PORT",
                "MY_API_SERVICE_PORT_HTTP_ALT",
                "MY_API_SERVICE_PORT_DNS_UDP",
                "MY_API_SERVICE_PORT_SIG",
                "MY_API_PORT",
                "MY_API_PORT_8080_TCP",
                "MY_API_PORT_8080_TCP_PROTO",
                "MY_API_PORT_8080_TCP_PORT",
                "MY_API_PORT_8080_TCP_ADDR",
                "MY_API_PORT_53_UDP",
                "MY_API_PORT_53_UDP_PROTO",
                "MY_API_PORT_53_UDP_PORT",
                "MY_API_PORT_53_UDP_ADDR",
                "MY_API_PORT_9999_SCTP",
                "MY_API_PORT_9999_SCTP_PROTO",
                "MY_API_PORT_9999_SCTP_PORT",
                "MY_API_PORT_9999_SCTP_ADDR",
            ]
        );
        assert_eq!(
            get(&vars, "MY_API_SERVICE_PORT"),
            Some("8080"),
            "first port"
        );
        assert_eq!(get(&vars, "MY_API_SERVICE_PORT_DNS_UDP"), Some("53"));
        assert_eq!(get(&vars, "MY_API_PORT"), Some("tcp://10.96.0.7:8080"));
        assert_eq!(get(&vars, "MY_API_PORT_53_UDP"), Some("udp://10.96.0.7:53"));
        assert_eq!(get(&vars, "MY_API_PORT_53_UDP_PROTO"), Some("udp"));
        assert_eq!(get(&vars, "MY_API_PORT_9999_SCTP_PROTO"), Some("sctp"));
    }

    #[test]
    fn a_udp_first_port_makes_the_docker_port_udp() {
        let links = Links::select(
            "demo",
            true,
            [link(
                "demo",
                "statsd",
                json!({"clusterIP": "10.96.0.9", "ports": [{"name": "statsd", "port": 8125, "protocol": "UDP"}]}),
            )],
        );
        let vars = links.variables(&BTreeMap::new());
        assert_eq!(get(&vars, "STATSD_PORT"), Some("udp://10.96.0.9:8125"));
        assert_eq!(get(&vars, "STATSD_SERVICE_PORT_STATSD"), Some("8125"));
        assert_eq!(get(&vars, "STATSD_PORT_8125_TCP"), None);
    }

    #[test]
    fn services_without_a_cluster_ip_give_nothing() {
        assert_eq!(
            LinkService::from_service(&service(
                "demo",
                "cache",
                json!({"clusterIP": "None", "ports": [{"port": 6379}]})
            )),
            None,
            "headless"
        );
        assert_eq!(
            LinkService::from_service(&service(
                "demo",
                "search",
                json!({"type": "ExternalName", "externalName": "search.example.com"})
            )),
            None,
            "ExternalName"
        );
        assert_eq!(
            LinkService::from_service(&service("demo", "pending", json!({"clusterIP": ""}))),
            None
        );
        assert_eq!(
            LinkService::from_service(
                &serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap()
            ),
            None,
            "no spec"
        );
    }

    #[test]
    fn selection_follows_enable_service_links_and_keeps_default_kubernetes() {
        let all = || {
            vec![
                link(
                    "default",
                    "kubernetes",
                    json!({"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]}),
                ),
                link(
                    "default",
                    "other",
                    json!({"clusterIP": "10.96.0.2", "ports": [{"port": 80}]}),
                ),
                link(
                    "demo",
                    "web",
                    json!({"clusterIP": "10.96.0.3", "ports": [{"port": 80}]}),
                ),
                link(
                    "elsewhere",
                    "web2",
                    json!({"clusterIP": "10.96.0.4", "ports": [{"port": 80}]}),
                ),
            ]
        };
        let names = |links: &Links| {
            links
                .services()
                .iter()
                .map(|s| format!("{}/{}", s.namespace, s.name))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&Links::select("demo", true, all())),
            ["default/kubernetes", "demo/web"],
            "the namespace's Services and default/kubernetes, nothing of other namespaces"
        );
        assert_eq!(
            names(&Links::select("demo", false, all())),
            ["default/kubernetes"],
            "enableServiceLinks: false keeps default/kubernetes only"
        );
        assert_eq!(
            names(&Links::select("default", true, all())),
            ["default/kubernetes", "default/other"]
        );
        assert_eq!(
            names(&Links::select("default", false, all())),
            ["default/kubernetes"]
        );
        let vars = Links::select("demo", false, all()).variables(&BTreeMap::new());
        assert_eq!(get(&vars, "KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get(&vars, "KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get(&vars, "KUBERNETES_PORT"), Some("tcp://10.96.0.1:443"));
        assert_eq!(get(&vars, "WEB_SERVICE_HOST"), None);
    }

    #[test]
    fn the_namespaces_own_kubernetes_service_wins_when_links_are_enabled() {
        let own = link(
            "demo",
            "kubernetes",
            json!({"clusterIP": "10.96.5.5", "ports": [{"port": 8080}]}),
        );
        let master = link(
            "default",
            "kubernetes",
            json!({"clusterIP": "10.96.0.1", "ports": [{"port": 443}]}),
        );
        for order in [
            vec![own.clone(), master.clone()],
            vec![master.clone(), own.clone()],
        ] {
            let links = Links::select("demo", true, order.clone());
            assert_eq!(links.services(), std::slice::from_ref(&own));
            let links = Links::select("demo", false, order);
            assert_eq!(links.services(), std::slice::from_ref(&master));
        }
    }

    #[test]
    fn addresses_replace_cluster_ips_of_the_namespaces_services_only() {
        let services = vec![
            link(
                "default",
                "kubernetes",
                json!({"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]}),
            ),
            link(
                "demo",
                "db",
                json!({"clusterIP": "10.96.0.20", "ports": [{"port": 5432}]}),
            ),
            link(
                "demo",
                "api",
                json!({"clusterIP": "10.96.0.21", "ports": [{"port": 80}]}),
            ),
        ];
        let links = Links::select("demo", true, services.clone());
        let addresses = BTreeMap::from([
            ("db".to_string(), Ipv4Addr::new(127, 7, 0, 2)),
            // A Service `kubernetes` of the namespace, not default's.
            ("kubernetes".to_string(), Ipv4Addr::new(127, 7, 0, 9)),
        ]);
        let vars = links.variables(&addresses);
        assert_eq!(get(&vars, "DB_SERVICE_HOST"), Some("127.7.0.2"));
        assert_eq!(get(&vars, "DB_PORT"), Some("tcp://127.7.0.2:5432"));
        assert_eq!(get(&vars, "DB_PORT_5432_TCP"), Some("tcp://127.7.0.2:5432"));
        assert_eq!(get(&vars, "DB_PORT_5432_TCP_ADDR"), Some("127.7.0.2"));
        assert_eq!(get(&vars, "DB_SERVICE_PORT"), Some("5432"), "ports stay");
        assert_eq!(
            get(&vars, "API_SERVICE_HOST"),
            Some("10.96.0.21"),
            "no address: ClusterIP"
        );
        assert_eq!(
            get(&vars, "KUBERNETES_SERVICE_HOST"),
            Some("10.96.0.1"),
            "default/kubernetes keeps its ClusterIP"
        );
        let with_master = BTreeMap::from([(
            "default/kubernetes".to_string(),
            Ipv4Addr::new(127, 7, 0, 10),
        )]);
        let vars = links.variables(&with_master);
        assert_eq!(get(&vars, "KUBERNETES_SERVICE_HOST"), Some("127.7.0.10"));
        assert_eq!(get(&vars, "DB_SERVICE_HOST"), Some("10.96.0.20"));
        // In namespace default, the bare name is the Service of the namespace.
        let links = Links::select("default", true, services);
        let vars = links.variables(&BTreeMap::from([(
            "kubernetes".to_string(),
            Ipv4Addr::new(127, 7, 0, 11),
        )]));
        assert_eq!(get(&vars, "KUBERNETES_SERVICE_HOST"), Some("127.7.0.11"));
    }

    #[test]
    fn ipv6_cluster_ips_are_bracketed_in_urls_only() {
        let links = Links::select(
            "demo",
            true,
            [link(
                "demo",
                "v6",
                json!({"clusterIP": "fd00::a", "ports": [{"port": 80}]}),
            )],
        );
        let vars = links.variables(&BTreeMap::new());
        assert_eq!(get(&vars, "V6_SERVICE_HOST"), Some("fd00::a"));
        assert_eq!(get(&vars, "V6_PORT"), Some("tcp://[fd00::a]:80"));
        assert_eq!(get(&vars, "V6_PORT_80_TCP_ADDR"), Some("fd00::a"));
    }

    #[test]
    fn colliding_names_appear_once_with_the_later_services_value() {
        let links = Links::select(
            "demo",
            true,
            [
                link(
                    "demo",
                    "a",
                    json!({"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}),
                ),
                link(
                    "demo",
                    "a-port-80-tcp",
                    json!({"clusterIP": "10.0.0.2", "ports": [{"port": 81}]}),
                ),
            ],
        );
        let vars = links.variables(&BTreeMap::new());
        let count = vars
            .iter()
            .filter(|(n, _)| n == "A_PORT_80_TCP_PORT")
            .count();
        assert_eq!(count, 1);
        // `a-port-80-tcp`'s Docker `_PORT` variable.
        assert_eq!(get(&vars, "A_PORT_80_TCP_PORT"), Some("tcp://10.0.0.2:81"));
        assert_eq!(links.names().len(), vars.len());
    }

    #[test]
    fn a_service_without_ports_gives_its_host_only() {
        let links = Links::select(
            "demo",
            true,
            [link("demo", "bare", json!({"clusterIP": "10.0.0.3"}))],
        );
        assert_eq!(
            links.variables(&BTreeMap::new()),
            [("BARE_SERVICE_HOST".to_string(), "10.0.0.3".to_string())]
        );
    }
}
