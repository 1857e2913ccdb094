//! The objects an intercept creates, as typed k8s-openapi objects: the router (Deployment +
//! ConfigMap), the decoy Service, and per session the tunnel's in-cluster end (Deployment,
//! Service, Secret, NetworkPolicy) and the heartbeat Lease. All carry czctl's labels and an
//! ownerReference to the record; czctl writes them with server-side apply ([`super::objects`]).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, Secret, SecretKeySelector, SecurityContext,
    Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, MicroTime, ObjectMeta, OwnerReference,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;

use super::names::{self, ROUTER_LABEL, TUNNEL_LABEL};
use super::record::Shape;
use super::shape::{router_port, ROUTER_HEALTH_PORT, ROUTER_HTTP_PORT};

/// The router image: NGINX running as UID 101 on 8080.
pub const DEFAULT_ROUTER_IMAGE: &str = "nginxinc/nginx-unprivileged:1.27-alpine-slim";
/// The tunnel agent image: `czctl-agent` alone (tunnel/Dockerfile), tagged with czctl's version.
pub const DEFAULT_AGENT_IMAGE: &str =
    concat!("ghcr.io/czctl/czctl-agent:", env!("CARGO_PKG_VERSION"));
/// The agent's control port (the laptop's parked connections arrive here).
pub const AGENT_CONTROL_PORT: u16 = 7000;
/// The agent's data port (the router's requests arrive here).
pub const AGENT_DATA_PORT: u16 = 7001;
/// The Secret key holding the tunnel token.
pub const TOKEN_KEY: &str = "token";
/// The pod-template annotation carrying the router configuration's generation.
pub const GENERATION_ANNOTATION: &str = "czctl.dev/generation";

/// The container security context of everything czctl runs in the cluster: read-only root,
/// no privilege escalation, no capabilities.
fn hardened() -> SecurityContext {
    SecurityContext {
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// Small requests and a memory limit for czctl's containers.
fn small() -> ResourceRequirements {
    let quantities = |pairs: &[(&str, &str)]| -> BTreeMap<String, Quantity> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    };
    ResourceRequirements {
        requests: Some(quantities(&[("cpu", "10m"), ("memory", "16Mi")])),
        limits: Some(quantities(&[("memory", "64Mi")])),
        ..ResourceRequirements::default()
    }
}

fn port(number: u16) -> IntOrString {
    IntOrString::Int(i32::from(number))
}

/// Ports name their protocol although TCP is the default: it is part of the key of the port
/// lists that server-side apply merges.
fn container_port(name: Option<&str>, number: u16) -> ContainerPort {
    ContainerPort {
        name: name.map(str::to_string),
        container_port: i32::from(number),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn one_label(key: &str, value: &str) -> BTreeMap<String, String> {
    [(key.to_string(), value.to_string())].into()
}

fn selector(key: &str, value: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(one_label(key, value)),
        ..LabelSelector::default()
    }
}

/// What every manifest needs.
pub struct Common<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// The intercepted Service.
    pub service: &'a str,
    /// The record's ownerReference.
    pub owner: &'a OwnerReference,
}

impl Common<'_> {
    fn metadata(&self, name: &str, extra: &[(&str, &str)]) -> ObjectMeta {
        let mut labels = names::labels(self.service);
        for (k, v) in extra {
            labels.insert(k.to_string(), v.to_string());
        }
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.to_string()),
            labels: Some(labels),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }

    fn session_metadata(&self, session: &str) -> ObjectMeta {
        self.metadata(
            &names::session_part(self.service, session),
            &[(TUNNEL_LABEL, session)],
        )
    }
}

/// The decoy Service: the original selector and ports (without node ports), for the router's
/// default route. Fails when a stored port is not a Service port.
pub fn decoy(common: &Common<'_>, original: &Shape) -> Result<Service, serde_json::Error> {
    let ports = original
        .ports
        .iter()
        .map(|p| {
            let mut port: ServicePort = serde_json::from_value(p.clone())?;
            port.node_port = None;
            Ok(port)
        })
        .collect::<Result<Vec<_>, serde_json::Error>>()?;
    Ok(Service {
        metadata: common.metadata(&names::decoy(common.service), &[]),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(original.selector.clone()),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// The router's ConfigMap.
pub fn router_config(common: &Common<'_>, nginx_conf: &str, generation: u64) -> ConfigMap {
    let mut metadata = common.metadata(&names::router(common.service), &[]);
    metadata.annotations = Some(one_label(GENERATION_ANNOTATION, &generation.to_string()));
    ConfigMap {
        metadata,
        data: Some(one_label("nginx.conf", nginx_conf)),
        ..ConfigMap::default()
    }
}

/// The router Deployment: non-root NGINX, read-only root filesystem, resource requests,
/// readiness probe; rolled (surge first) when the configuration's generation changes.
pub fn router(
    common: &Common<'_>,
    image: &str,
    original: &Shape,
    intercepted: u16,
    generation: u64,
) -> Deployment {
    let router_value = names::label_value(common.service);
    let mut pod_labels = names::labels(common.service);
    pod_labels.insert(ROUTER_LABEL.into(), router_value.clone());
    let mut ports = vec![
        container_port(Some("http"), ROUTER_HTTP_PORT),
        container_port(Some("health"), ROUTER_HEALTH_PORT),
    ];
    for (i, p) in original.ports.iter().enumerate() {
        let port = router_port(i, p, intercepted);
        if port != ROUTER_HTTP_PORT {
            ports.push(container_port(None, port));
        }
    }
    let config = names::router(common.service);
    let container = Container {
        name: "nginx".into(),
        image: Some(image.into()),
        ports: Some(ports),
        security_context: Some(hardened()),
        resources: Some(small()),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".into()),
                port: port(ROUTER_HEALTH_PORT),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(2),
            ..Probe::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: "/etc/nginx/nginx.conf".into(),
                sub_path: Some("nginx.conf".into()),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    Deployment {
        metadata: common.metadata(&config, &[]),
        spec: DeploymentSpec {
            replicas: Some(1),
            selector: selector(ROUTER_LABEL, &router_value),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(one_label(GENERATION_ANNOTATION, &generation.to_string())),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(101),
                        run_as_group: Some(101),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: config.clone(),
                                ..ConfigMapVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        Volume {
                            name: "tmp".into(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Volume::default()
                        },
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

/// The Secret holding a session's tunnel token (never logged).
pub fn tunnel_secret(common: &Common<'_>, session: &str, token: &str) -> Secret {
    Secret {
        metadata: common.session_metadata(session),
        type_: Some("Opaque".into()),
        data: Some([(TOKEN_KEY.to_string(), ByteString(token.as_bytes().to_vec()))].into()),
        ..Secret::default()
    }
}

/// The tunnel's in-cluster end: `czctl-agent`.
pub fn tunnel(common: &Common<'_>, session: &str, image: &str) -> Deployment {
    let name = names::session_part(common.service, session);
    let mut pod_labels = names::labels(common.service);
    pod_labels.insert(TUNNEL_LABEL.into(), session.into());
    let env_from = |name: &str, source: EnvVarSource| EnvVar {
        name: name.into(),
        value_from: Some(source),
        ..EnvVar::default()
    };
    let container = Container {
        name: "tunnel".into(),
        image: Some(image.into()),
        command: Some(vec!["czctl-agent".into()]),
        args: Some(vec![
            "--control-port".into(),
            AGENT_CONTROL_PORT.to_string(),
            "--data-port".into(),
            AGENT_DATA_PORT.to_string(),
        ]),
        env: Some(vec![
            env_from(
                "POD_IP",
                EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "status.podIP".into(),
                        ..ObjectFieldSelector::default()
                    }),
                    ..EnvVarSource::default()
                },
            ),
            env_from(
                "CZCTL_TUNNEL_TOKEN",
                EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: name.clone(),
                        key: TOKEN_KEY.into(),
                        ..SecretKeySelector::default()
                    }),
                    ..EnvVarSource::default()
                },
            ),
        ]),
        ports: Some(vec![
            container_port(Some("control"), AGENT_CONTROL_PORT),
            container_port(Some("data"), AGENT_DATA_PORT),
        ]),
        security_context: Some(hardened()),
        resources: Some(small()),
        // Probing the data port would hand the probe to the laptop: probe the control port.
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: port(AGENT_CONTROL_PORT),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(2),
            ..Probe::default()
        }),
        ..Container::default()
    };
    Deployment {
        metadata: common.session_metadata(session),
        spec: DeploymentSpec {
            replicas: Some(1),
            selector: selector(TUNNEL_LABEL, session),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

/// The Service the router reaches the tunnel through.
pub fn tunnel_service(common: &Common<'_>, session: &str) -> Service {
    Service {
        metadata: common.session_metadata(session),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(one_label(TUNNEL_LABEL, session)),
            ports: Some(vec![ServicePort {
                name: Some("data".into()),
                port: i32::from(AGENT_DATA_PORT),
                protocol: Some("TCP".into()),
                target_port: Some(port(AGENT_DATA_PORT)),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Only the router may reach the agent's data port: anything else in the cluster that could
/// connect to it would reach the developer's machine. (Port-forward arrives inside the pod and
/// is not subject to NetworkPolicy; the control port needs no other way in.)
pub fn tunnel_policy(common: &Common<'_>, session: &str) -> NetworkPolicy {
    NetworkPolicy {
        metadata: common.session_metadata(session),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(TUNNEL_LABEL, session)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(selector(ROUTER_LABEL, &names::label_value(common.service))),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(vec![NetworkPolicyPort {
                    protocol: Some("TCP".into()),
                    port: Some(port(AGENT_DATA_PORT)),
                    ..NetworkPolicyPort::default()
                }]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// A session's heartbeat.
pub fn lease(
    common: &Common<'_>,
    session: &str,
    holder: &str,
    duration_secs: u32,
    now: jiff::Timestamp,
) -> Lease {
    Lease {
        metadata: common.session_metadata(session),
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(i32::try_from(duration_secs).unwrap_or(i32::MAX)),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "czctl.dev/v1".into(),
            kind: "Session".into(),
            name: "intercept-demo-echo".into(),
            uid: "u1".into(),
            block_owner_deletion: Some(true),
            controller: Some(true),
        }
    }

    /// The typed objects serialize to the manifests czctl wrote before they were typed.
    #[test]
    fn the_agent_keeps_its_image_command_and_args() {
        let owner = owner();
        let common = Common {
            namespace: "demo",
            service: "echo",
            owner: &owner,
        };
        let d = serde_json::to_value(tunnel(&common, "ic-abc", "img:1")).unwrap();
        assert_eq!(d["apiVersion"], "apps/v1");
        assert_eq!(d["kind"], "Deployment");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "img:1");
        assert_eq!(c["command"], json!(["czctl-agent"]));
        assert_eq!(
            c["args"],
            json!(["--control-port", "7000", "--data-port", "7001"])
        );
        assert_eq!(
            c["env"][1]["valueFrom"]["secretKeyRef"],
            json!({"name": "interceptor-echo-ic-abc", "key": "token"})
        );
        assert_eq!(c["readinessProbe"]["tcpSocket"]["port"], 7000);
        assert_eq!(d["metadata"]["ownerReferences"][0]["uid"], "u1");
        assert_eq!(d["metadata"]["labels"]["czctl.dev/tunnel"], "ic-abc", "{d}");
    }

    #[test]
    fn the_decoy_drops_node_ports_and_the_router_routes_every_port() {
        let owner = owner();
        let common = Common {
            namespace: "demo",
            service: "echo",
            owner: &owner,
        };
        let original = Shape {
            selector: [("app".to_string(), "echo".to_string())].into(),
            ports: vec![
                json!({"name": "http", "port": 8080, "protocol": "TCP", "targetPort": "http", "nodePort": 30001}),
                json!({"name": "grpc", "port": 9090, "protocol": "TCP", "targetPort": 9090}),
            ],
        };
        let decoy = serde_json::to_value(decoy(&common, &original).unwrap()).unwrap();
        assert_eq!(decoy["spec"]["ports"][0].get("nodePort"), None);
        assert_eq!(decoy["spec"]["ports"][0]["targetPort"], "http");
        assert_eq!(decoy["spec"]["selector"], json!({"app": "echo"}));
        let r = serde_json::to_value(router(&common, "nginx:1", &original, 8080, 4)).unwrap();
        let ports: Vec<_> = r["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["containerPort"].as_i64().unwrap())
            .collect();
        assert_eq!(ports, [8080, 8099, 9001]);
        assert_eq!(
            r["spec"]["template"]["metadata"]["annotations"][GENERATION_ANNOTATION],
            "4"
        );
        let bad = Shape {
            selector: original.selector.clone(),
            ports: vec![json!({"port": "not a number"})],
        };
        assert!(decoy_fails(&common, &bad));
    }

    fn decoy_fails(common: &Common<'_>, shape: &Shape) -> bool {
        decoy(common, shape).is_err()
    }
}
