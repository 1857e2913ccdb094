//! The objects an intercept creates, as JSON manifests: the router (Deployment + ConfigMap),
//! the decoy Service, and per session the tunnel's in-cluster end (Deployment, Service, Secret)
//! and the heartbeat Lease. All carry czctl's labels and an ownerReference to the record.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{json, Value};

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
fn hardened() -> Value {
    json!({
        "readOnlyRootFilesystem": true,
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
    })
}

/// Small requests and a memory limit for czctl's containers.
fn small() -> Value {
    json!({"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}})
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
    fn metadata(&self, name: &str, extra: &[(&str, &str)]) -> Value {
        let mut labels = names::labels(self.service);
        for (k, v) in extra {
            labels.insert(k.to_string(), v.to_string());
        }
        json!({
            "name": name,
            "namespace": self.namespace,
            "labels": labels,
            "ownerReferences": [self.owner],
        })
    }
}

/// The decoy Service: the original selector and ports, for the router's default route.
pub fn decoy(common: &Common<'_>, original: &Shape) -> Value {
    let ports: Vec<Value> = original
        .ports
        .iter()
        .map(|p| {
            let mut p = p.clone();
            if let Some(obj) = p.as_object_mut() {
                obj.remove("nodePort");
            }
            p
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": common.metadata(&names::decoy(common.service), &[]),
        "spec": {"type": "ClusterIP", "selector": original.selector, "ports": ports},
    })
}

/// The router's ConfigMap.
pub fn router_config(common: &Common<'_>, nginx_conf: &str, generation: u64) -> Value {
    let mut metadata = common.metadata(&names::router(common.service), &[]);
    metadata["annotations"] = json!({GENERATION_ANNOTATION: generation.to_string()});
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {"nginx.conf": nginx_conf},
    })
}

/// The router Deployment: non-root NGINX, read-only root filesystem, resource requests,
/// readiness probe; rolled (surge first) when the configuration's generation changes.
pub fn router(
    common: &Common<'_>,
    image: &str,
    original: &Shape,
    intercepted: u16,
    generation: u64,
) -> Value {
    let router_value = names::label_value(common.service);
    let pod_labels: BTreeMap<String, String> = {
        let mut l = names::labels(common.service);
        l.insert(ROUTER_LABEL.into(), router_value.clone());
        l
    };
    let mut ports = vec![
        json!({"name": "http", "containerPort": ROUTER_HTTP_PORT}),
        json!({"name": "health", "containerPort": ROUTER_HEALTH_PORT}),
    ];
    for (i, p) in original.ports.iter().enumerate() {
        let port = router_port(i, p, intercepted);
        if port != ROUTER_HTTP_PORT {
            ports.push(json!({"containerPort": port}));
        }
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": common.metadata(&names::router(common.service), &[]),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {ROUTER_LABEL: router_value}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {GENERATION_ANNOTATION: generation.to_string()},
                },
                "spec": {
                    "automountServiceAccountToken": false,
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 101, "runAsGroup": 101},
                    "containers": [{
                        "name": "nginx",
                        "image": image,
                        "ports": ports,
                        "securityContext": hardened(),
                        "resources": small(),
                        "readinessProbe": {
                            "httpGet": {"path": "/healthz", "port": ROUTER_HEALTH_PORT},
                            "periodSeconds": 2,
                        },
                        "volumeMounts": [
                            {"name": "config", "mountPath": "/etc/nginx/nginx.conf", "subPath": "nginx.conf", "readOnly": true},
                            {"name": "tmp", "mountPath": "/tmp"},
                        ],
                    }],
                    "volumes": [
                        {"name": "config", "configMap": {"name": names::router(common.service)}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    })
}

/// The Secret holding a session's tunnel token (never logged).
pub fn tunnel_secret(common: &Common<'_>, session: &str, token: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": common.metadata(&names::session_part(common.service, session), &[(TUNNEL_LABEL, session)]),
        "type": "Opaque",
        "stringData": {TOKEN_KEY: token},
    })
}

/// The tunnel's in-cluster end: `czctl-agent`.
pub fn tunnel(common: &Common<'_>, session: &str, image: &str) -> Value {
    let name = names::session_part(common.service, session);
    let mut pod_labels = names::labels(common.service);
    pod_labels.insert(TUNNEL_LABEL.into(), session.into());
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": common.metadata(&name, &[(TUNNEL_LABEL, session)]),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {TUNNEL_LABEL: session}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "automountServiceAccountToken": false,
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 65532},
                    "containers": [{
                        "name": "tunnel",
                        "image": image,
                        "command": ["czctl-agent"],
                        "args": ["--control-port", AGENT_CONTROL_PORT.to_string(),
                                 "--data-port", AGENT_DATA_PORT.to_string()],
                        "env": [
                            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                            {"name": "CZCTL_TUNNEL_TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": TOKEN_KEY}}},
                        ],
                        "ports": [
                            {"name": "control", "containerPort": AGENT_CONTROL_PORT},
                            {"name": "data", "containerPort": AGENT_DATA_PORT},
                        ],
                        "securityContext": hardened(),
                        "resources": small(),
                        // Probing the data port would hand the probe to the laptop: probe the control port.
                        "readinessProbe": {"tcpSocket": {"port": AGENT_CONTROL_PORT}, "periodSeconds": 2},
                    }],
                },
            },
        },
    })
}

/// The Service the router reaches the tunnel through.
pub fn tunnel_service(common: &Common<'_>, session: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": common.metadata(&names::session_part(common.service, session), &[(TUNNEL_LABEL, session)]),
        "spec": {
            "type": "ClusterIP",
            "selector": {TUNNEL_LABEL: session},
            "ports": [{"name": "data", "port": AGENT_DATA_PORT, "targetPort": AGENT_DATA_PORT}],
        },
    })
}

/// Only the router may reach the agent's data port: anything else in the cluster that could
/// connect to it would reach the developer's machine. (Port-forward arrives inside the pod and
/// is not subject to NetworkPolicy; the control port needs no other way in.)
pub fn tunnel_policy(common: &Common<'_>, session: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": common.metadata(&names::session_part(common.service, session), &[(TUNNEL_LABEL, session)]),
        "spec": {
            "podSelector": {"matchLabels": {TUNNEL_LABEL: session}},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": {ROUTER_LABEL: names::label_value(common.service)}}}],
                "ports": [{"protocol": "TCP", "port": AGENT_DATA_PORT}],
            }],
        },
    })
}

/// A session's heartbeat.
pub fn lease(
    common: &Common<'_>,
    session: &str,
    holder: &str,
    duration_secs: u32,
    now: &str,
) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": common.metadata(&names::session_part(common.service, session), &[(TUNNEL_LABEL, session)]),
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration_secs,
            "acquireTime": now,
            "renewTime": now,
        },
    })
}
