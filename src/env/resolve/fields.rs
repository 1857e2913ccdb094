//! `fieldRef` (downward API) values: from the workload's namespace and template, or a live pod.

use k8s_openapi::api::core::v1::{ObjectFieldSelector, PodSpec};

use super::{ResolveError, Slot, Sources};

/// A `fieldRef`; the flag tells whether the value came from the live pod.
pub(super) fn field_value(
    variable: &str,
    field: &ObjectFieldSelector,
    spec: &PodSpec,
    sources: &Sources,
) -> Result<(Slot, bool), ResolveError> {
    let unsupported = |what: String| ResolveError::Unsupported {
        variable: variable.to_string(),
        what,
    };
    match field.api_version.as_deref() {
        None | Some("") | Some("v1") => {}
        Some(other) => {
            return Err(unsupported(format!(
                "fieldRef apiVersion {other:?} is not supported (only v1)"
            )))
        }
    }
    let path = match field.field_path.as_str() {
        // Old v1 clients' spelling, converted by the kubelet.
        "spec.host" => "spec.nodeName",
        other => other,
    };
    let pod = sources.pod.as_ref();
    let no_pod = || {
        Slot::Unknown(format!(
            "{path} is known only once a pod of the workload runs, and none does"
        ))
    };
    let pod_name = || {
        pod.and_then(|p| p.metadata.name.clone())
            .unwrap_or_else(|| "?".to_string())
    };
    if let Some((map, key)) = split_subscript(path) {
        let Some(pod) = pod else {
            return Ok((no_pod(), false));
        };
        let values = match map {
            "metadata.labels" => &pod.metadata.labels,
            "metadata.annotations" => &pod.metadata.annotations,
            _ => {
                return Err(unsupported(format!(
                    "fieldRef {path:?} is not supported (subscripts work on metadata.labels and metadata.annotations only)"
                )))
            }
        };
        let value = values.as_ref().and_then(|m| m.get(key)).cloned();
        return Ok((Slot::Known(value.unwrap_or_default().into_bytes()), true));
    }
    let status = pod.and_then(|p| p.status.as_ref());
    let pod_ips = || -> Vec<String> {
        let listed: Vec<String> = status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| ips.iter().map(|ip| ip.ip.clone()).collect())
            .unwrap_or_default();
        if listed.is_empty() {
            status
                .and_then(|s| s.pod_ip.clone())
                .filter(|ip| !ip.is_empty())
                .into_iter()
                .collect()
        } else {
            listed
        }
    };
    let host_ips = || -> Vec<String> {
        let listed: Vec<String> = status
            .and_then(|s| s.host_ips.as_ref())
            .map(|ips| ips.iter().map(|ip| ip.ip.clone()).collect())
            .unwrap_or_default();
        if listed.is_empty() {
            status
                .and_then(|s| s.host_ip.clone())
                .filter(|ip| !ip.is_empty())
                .into_iter()
                .collect()
        } else {
            listed
        }
    };
    let text = |value: String| Slot::Known(value.into_bytes());
    let from_pod = |value: Option<String>, missing: &str| match value.filter(|v| !v.is_empty()) {
        Some(value) => (text(value), true),
        None => (
            Slot::Unknown(format!("the running pod {} {missing}", pod_name())),
            false,
        ),
    };
    Ok(match path {
        "metadata.namespace" => (
            text(
                pod.and_then(|p| p.metadata.namespace.clone())
                    .unwrap_or_else(|| sources.namespace.clone()),
            ),
            false,
        ),
        "spec.serviceAccountName" => {
            let account = pod
                .and_then(|p| p.spec.as_ref())
                .and_then(|s| s.service_account_name.clone())
                .or_else(|| spec.service_account_name.clone())
                .or_else(|| spec.service_account.clone())
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| "default".to_string());
            (text(account), false)
        }
        "metadata.name" | "metadata.uid" | "spec.nodeName" | "status.podIP" | "status.podIPs"
        | "status.hostIP" | "status.hostIPs"
            if pod.is_none() =>
        {
            (no_pod(), false)
        }
        "metadata.name" => from_pod(pod.and_then(|p| p.metadata.name.clone()), "has no name"),
        "metadata.uid" => from_pod(pod.and_then(|p| p.metadata.uid.clone()), "has no uid"),
        "spec.nodeName" => from_pod(
            pod.and_then(|p| p.spec.as_ref())
                .and_then(|s| s.node_name.clone()),
            "is not scheduled to a node yet",
        ),
        "status.podIP" => from_pod(pod_ips().into_iter().next(), "has no IP yet"),
        "status.podIPs" => from_pod(Some(pod_ips().join(",")), "has no IP yet"),
        "status.hostIP" => from_pod(host_ips().into_iter().next(), "has no host IP yet"),
        "status.hostIPs" => from_pod(Some(host_ips().join(",")), "has no host IP yet"),
        other => {
            return Err(unsupported(format!(
                "fieldRef {other:?} is not supported in environment variables"
            )))
        }
    })
}

/// `metadata.labels['key']` → `("metadata.labels", "key")`, as apimachinery's
/// `SplitMaybeSubscriptedPath`.
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (map, key) = inner.split_once("['")?;
    (!map.is_empty()).then_some((map, key))
}
