//! The Service side of an intercept: what czctl sets (selector on the router, target ports on
//! the router's ports), the JSON patches that set and restore it with `test` operations, and the
//! difference shown when someone else changed the Service meanwhile.

use std::collections::BTreeMap;

use json_patch::jsonptr::Pointer;
use json_patch::{Patch, PatchOperation, ReplaceOperation, TestOperation};
use kube::core::DynamicObject;
use serde_json::Value;

use super::names::ROUTER_LABEL;
use super::record::Shape;

/// The router's HTTP port (the intercepted Service port's new target).
pub const ROUTER_HTTP_PORT: u16 = 8080;
/// The router's readiness port.
pub const ROUTER_HEALTH_PORT: u16 = 8099;
/// The router's pass-through ports start here: Service port `i` → `9000 + i`.
pub const ROUTER_STREAM_BASE: u16 = 9000;

/// Why a Service cannot be intercepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShapeError {
    /// Not a selector-based ClusterIP Service.
    #[error("{0}")]
    Unsupported(String),
    /// The port to intercept is ambiguous or absent.
    #[error("{0}")]
    Port(String),
}

/// The selector and ports of a Service (read as raw JSON), as they are: a Service without a
/// selector or ports has an empty one.
pub fn read(service: &DynamicObject) -> Shape {
    let spec = &service.data["spec"];
    let selector = match &spec["selector"] {
        Value::Object(map) => map
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect(),
        _ => Default::default(),
    };
    let ports = match &spec["ports"] {
        Value::Array(ports) => ports.clone(),
        _ => Vec::new(),
    };
    Shape { selector, ports }
}

/// Reads the selector and ports of a Service (raw JSON) and checks it can be intercepted.
pub fn of_service(service: &DynamicObject) -> Result<Shape, ShapeError> {
    let spec = &service.data["spec"];
    let name = service.metadata.name.as_deref().unwrap_or_default();
    let unsupported = |why: &str| ShapeError::Unsupported(format!("service {name} {why}"));
    if spec["type"] == "ExternalName" {
        return Err(unsupported(
            "is an ExternalName Service: it has no pods to route around",
        ));
    }
    if spec["clusterIP"] == "None" {
        return Err(unsupported("is headless (clusterIP: None): clients reach its pods directly, so a router cannot be put in front of it"));
    }
    let Shape { selector, ports } = read(service);
    if selector.is_empty() {
        return Err(unsupported(
            "has no selector: its endpoints are managed by hand, so czctl cannot re-point it",
        ));
    }
    if ports.is_empty() {
        return Err(unsupported("has no ports"));
    }
    if let Some(udp) = ports
        .iter()
        .find(|p| p["protocol"].as_str().is_some_and(|p| p != "TCP"))
    {
        return Err(unsupported(&format!(
            "has a non-TCP port ({}/{}): the router forwards TCP only",
            udp["port"],
            udp["protocol"].as_str().unwrap_or_default()
        )));
    }
    Ok(Shape { selector, ports })
}

/// The Service port to intercept: `wanted`, or the only port.
pub fn pick_port(shape: &Shape, service: &str, wanted: Option<u16>) -> Result<u16, ShapeError> {
    let numbers: Vec<u16> = shape.ports.iter().filter_map(port_number).collect();
    let list = || {
        shape
            .ports
            .iter()
            .map(|p| match p["name"].as_str() {
                Some(n) => format!("{}({n})", p["port"]),
                None => p["port"].to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wanted {
        Some(port) if numbers.contains(&port) => Ok(port),
        Some(port) => Err(ShapeError::Port(format!(
            "service {service} has no port {port}; its ports are {}",
            list()
        ))),
        None if numbers.len() == 1 => Ok(numbers[0]),
        None => Err(ShapeError::Port(format!(
            "service {service} has several ports ({}); choose one with --port",
            list()
        ))),
    }
}

/// The number of a Service port (raw JSON).
pub fn port_number(port: &Value) -> Option<u16> {
    port["port"].as_u64().and_then(|p| u16::try_from(p).ok())
}

/// The router port each Service port is sent to: the intercepted one to the HTTP router,
/// the others to pass-through ports.
pub fn router_port(index: usize, port: &Value, intercepted: u16) -> u16 {
    if port_number(port) == Some(intercepted) {
        ROUTER_HTTP_PORT
    } else {
        ROUTER_STREAM_BASE + index as u16
    }
}

/// The selector and ports czctl sets: the router's label, and every port's target on the router.
pub fn hijacked(original: &Shape, service: &str, intercepted: u16) -> Shape {
    let ports = original
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut p = p.clone();
            p["targetPort"] = router_port(i, &p, intercepted).into();
            p
        })
        .collect();
    Shape {
        selector: [(ROUTER_LABEL.to_string(), super::names::label_value(service))].into(),
        ports,
    }
}

fn test(path: &'static str, value: Value) -> PatchOperation {
    PatchOperation::Test(TestOperation {
        path: Pointer::from_static(path).to_buf(),
        value,
    })
}

fn replace(path: &'static str, value: Value) -> PatchOperation {
    PatchOperation::Replace(ReplaceOperation {
        path: Pointer::from_static(path).to_buf(),
        value,
    })
}

/// A selector as JSON.
fn selector_json(selector: &BTreeMap<String, String>) -> Value {
    Value::Object(
        selector
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// Tests that the Service still has `shape`.
fn test_shape(shape: &Shape) -> [PatchOperation; 2] {
    [
        test("/spec/selector", selector_json(&shape.selector)),
        test("/spec/ports", Value::Array(shape.ports.clone())),
    ]
}

/// Sets `shape` on the Service.
fn replace_shape(shape: &Shape) -> [PatchOperation; 2] {
    [
        replace("/spec/selector", selector_json(&shape.selector)),
        replace("/spec/ports", Value::Array(shape.ports.clone())),
    ]
}

/// The patch that points the Service at the router, refusing (422) if the Service is not the
/// one czctl read: same uid, selector and ports.
pub fn setup_patch(uid: &str, original: &Shape, target: &Shape) -> Patch {
    let mut ops = vec![test("/metadata/uid", uid.into())];
    ops.extend(test_shape(original));
    ops.extend(replace_shape(target));
    Patch(ops)
}

/// The patch that restores the Service, refusing (422) if it no longer has what czctl set.
pub fn restore_patch(uid: &str, hijacked: &Shape, original: &Shape) -> Patch {
    let mut ops = vec![test("/metadata/uid", uid.into())];
    ops.extend(test_shape(hijacked));
    ops.extend(replace_shape(original));
    Patch(ops)
}

/// The restore of `--force`: checks only that the Service is still the same object.
pub fn forced_restore(uid: &str, original: &Shape) -> Patch {
    let mut ops = vec![test("/metadata/uid", uid.into())];
    ops.extend(replace_shape(original));
    Patch(ops)
}

/// Lines describing how `actual` differs from `expected` (`-` expected, `+` actual).
pub fn difference(expected: &Shape, actual: &Shape) -> Vec<String> {
    let mut lines = Vec::new();
    if expected.selector != actual.selector {
        lines.push(format!(
            "- spec.selector: {}",
            selector_json(&expected.selector)
        ));
        lines.push(format!(
            "+ spec.selector: {}",
            selector_json(&actual.selector)
        ));
    }
    let longest = expected.ports.len().max(actual.ports.len());
    for i in 0..longest {
        let (e, a) = (expected.ports.get(i), actual.ports.get(i));
        if e != a {
            if let Some(e) = e {
                lines.push(format!("- spec.ports[{i}]: {e}"));
            }
            if let Some(a) = a {
                lines.push(format!("+ spec.ports[{i}]: {a}"));
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service() -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "echo", "uid": "u1"},
            "spec": {
                "type": "ClusterIP", "clusterIP": "10.0.0.1",
                "selector": {"app": "echo"},
                "ports": [
                    {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"},
                    {"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP"}
                ]
            }
        }))
        .unwrap()
    }

    #[test]
    fn hijack_points_every_port_at_the_router() {
        let original = of_service(&service()).unwrap();
        let port = pick_port(&original, "echo", Some(8080)).unwrap();
        let target = hijacked(&original, "echo", port);
        assert_eq!(target.selector["czctl.dev/router"], "echo");
        assert_eq!(target.ports[0]["targetPort"], 8080);
        assert_eq!(target.ports[1]["targetPort"], 9001);
        assert_eq!(target.ports[0]["name"], "http");
        let patch = serde_json::to_value(setup_patch("u1", &original, &target)).unwrap();
        assert_eq!(patch[0]["value"], "u1");
        assert_eq!(patch[2]["value"], json!(original.ports));
        let restore = serde_json::to_value(restore_patch("u1", &target, &original)).unwrap();
        assert_eq!(
            restore[0],
            json!({"op": "test", "path": "/metadata/uid", "value": "u1"})
        );
        let forced = serde_json::to_value(forced_restore("u1", &original)).unwrap();
        assert_eq!(forced[0], restore[0]);
        assert_eq!(forced[1], restore[3]);
        assert_eq!(forced.as_array().unwrap().len(), 3);
        assert_eq!(restore[1]["value"], json!(target.selector));
        assert_eq!(restore[4]["value"], json!(original.ports));
    }

    #[test]
    fn port_choice() {
        let shape = of_service(&service()).unwrap();
        let err = pick_port(&shape, "echo", None).unwrap_err().to_string();
        assert!(
            err.contains("8080(http)") && err.contains("--port"),
            "{err}"
        );
        assert!(pick_port(&shape, "echo", Some(1)).is_err());
    }

    #[test]
    fn refuses_what_cannot_be_routed() {
        let mut s = service();
        s.data["spec"]["clusterIP"] = "None".into();
        assert!(of_service(&s).unwrap_err().to_string().contains("headless"));
        let mut s = service();
        s.data["spec"]["selector"] = Value::Null;
        assert!(of_service(&s)
            .unwrap_err()
            .to_string()
            .contains("no selector"));
        let mut s = service();
        s.data["spec"]["ports"][1]["protocol"] = "UDP".into();
        assert!(of_service(&s).unwrap_err().to_string().contains("non-TCP"));
        let mut s = service();
        s.data["spec"]["type"] = "ExternalName".into();
        assert!(of_service(&s).is_err());
    }

    #[test]
    fn difference_names_what_changed() {
        let a = of_service(&service()).unwrap();
        let mut b = a.clone();
        b.selector.insert("tier".into(), "web".into());
        b.ports[1]["port"] = 9999.into();
        let diff = difference(&a, &b);
        assert_eq!(diff.len(), 4, "{diff:?}");
        assert!(diff[1].contains("tier"));
        assert!(diff[3].contains("9999"));
        assert!(difference(&a, &a).is_empty());
    }
}
