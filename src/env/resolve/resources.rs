//! `resourceFieldRef` values: a container's limits and requests, divided by a divisor.

use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceFieldSelector};

use super::quantity::Quantity;
use super::{ResolveError, Slot};

/// A `resourceFieldRef`.
pub(super) fn resource_value(
    variable: &str,
    field: &ResourceFieldSelector,
    spec: &PodSpec,
    container: &Container,
) -> Result<Slot, ResolveError> {
    let unsupported = |what: String| ResolveError::Unsupported {
        variable: variable.to_string(),
        what,
    };
    let target = match field.container_name.as_deref() {
        None | Some("") => container,
        Some(name) => spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
            .ok_or_else(|| {
                unsupported(format!(
                    "resourceFieldRef names container {name:?}, which is not in the pod"
                ))
            })?,
    };
    let parse = |text: &str| {
        Quantity::parse(text).ok_or_else(|| unsupported(format!("invalid quantity {text:?}")))
    };
    let divisor = match &field.divisor {
        Some(d) => parse(&d.0)?,
        None => Quantity::ONE,
    };
    let divisor = if divisor.is_zero() {
        Quantity::ONE
    } else {
        divisor
    };
    let (is_limit, resource) = if let Some(r) = field.resource.strip_prefix("limits.") {
        (true, r)
    } else if let Some(r) = field.resource.strip_prefix("requests.") {
        (false, r)
    } else {
        return Err(unsupported(format!(
            "unsupported container resource {:?}",
            field.resource
        )));
    };
    let hugepages = resource.starts_with("hugepages-");
    if !hugepages && !matches!(resource, "cpu" | "memory" | "ephemeral-storage") {
        return Err(unsupported(format!(
            "unsupported container resource {:?}",
            field.resource
        )));
    }
    let resources = target.resources.as_ref();
    let limits = resources.and_then(|r| r.limits.as_ref());
    let requests = resources.and_then(|r| r.requests.as_ref());
    let limit = match limits.and_then(|l| l.get(resource)) {
        Some(q) => Some(parse(&q.0)?),
        None => None,
    };
    let value = if is_limit {
        match limit.filter(|q| !q.is_zero()) {
            Some(q) => q,
            // hugepages are never defaulted: an unset limit reads as zero.
            None if hugepages => limit.unwrap_or(Quantity::ZERO),
            None => {
                let pod_limit = spec
                    .resources
                    .as_ref()
                    .and_then(|r| r.limits.as_ref())
                    .and_then(|l| l.get(resource))
                    .filter(|_| matches!(resource, "cpu" | "memory"));
                match pod_limit {
                    Some(q) if !parse(&q.0)?.is_zero() => parse(&q.0)?,
                    _ => {
                        return Ok(Slot::Unknown(format!(
                            "container {:?} sets no {}: the kubelet uses the node's allocatable {resource}, which depends on the node the pod lands on",
                            target.name, field.resource
                        )))
                    }
                }
            }
        }
    } else {
        // The API server defaults a pod's missing requests to its limits.
        match requests.and_then(|r| r.get(resource)) {
            Some(q) => parse(&q.0)?,
            None => limit.unwrap_or(Quantity::ZERO),
        }
    };
    Ok(Slot::Known(
        value.ceil_div(&divisor).to_string().into_bytes(),
    ))
}
