//! Names and labels of what an intercept creates. The router's names follow CodeZero's
//! (`interceptor-SVC`, `interceptor-SVC-decoy`, Session `intercept-NS-SVC`) so people who know
//! one find their way in the other.

use std::collections::BTreeMap;

/// The label every object czctl creates carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "czctl");
/// The label naming the intercepted Service.
pub const SERVICE_LABEL: &str = "czctl.dev/service";
/// The label router pods carry (the hijacked Service selects it).
pub const ROUTER_LABEL: &str = "czctl.dev/router";
/// The label tunnel pods carry (the session id).
pub const TUNNEL_LABEL: &str = "czctl.dev/tunnel";
/// The label of ConfigMap-stored records.
pub const RECORD_LABEL: &str = "czctl.dev/session-record";

/// Kubernetes object names are at most 63 characters for Services and labels.
const MAX: usize = 63;

/// The record: `intercept-NS-SVC`.
pub fn record(namespace: &str, service: &str) -> String {
    fit(&format!("intercept-{namespace}-{service}"))
}

/// The router Deployment and its ConfigMap: `interceptor-SVC`.
pub fn router(service: &str) -> String {
    fit(&format!("interceptor-{service}"))
}

/// The decoy Service selecting the original pods: `interceptor-SVC-decoy`.
pub fn decoy(service: &str) -> String {
    fit(&format!("interceptor-{service}-decoy"))
}

/// The tunnel Deployment, Service, Secret and heartbeat Lease of one session:
/// `interceptor-SVC-SESSION`.
pub fn session_part(service: &str, session: &str) -> String {
    fit(&format!("interceptor-{service}-{session}"))
}

/// The labels of everything an intercept of `service` creates.
pub fn labels(service: &str) -> BTreeMap<String, String> {
    [
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (SERVICE_LABEL.to_string(), label_value(service)),
    ]
    .into()
}

/// A label value for `text` (at most 63 characters).
pub fn label_value(text: &str) -> String {
    fit(text)
}

/// Shortens names over 63 characters, keeping them unique with a hash of the whole.
fn fit(name: &str) -> String {
    if name.len() <= MAX {
        return name.to_string();
    }
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let suffix = format!("-{:08x}", hash as u32);
    let head = name[..MAX - suffix.len()].trim_end_matches('-');
    format!("{head}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codezero_compatible_names() {
        assert_eq!(record("demo", "echo"), "intercept-demo-echo");
        assert_eq!(router("echo"), "interceptor-echo");
        assert_eq!(decoy("echo"), "interceptor-echo-decoy");
        assert_eq!(
            session_part("echo", "ic-abc123"),
            "interceptor-echo-ic-abc123"
        );
    }

    #[test]
    fn long_names_fit_and_stay_distinct() {
        let a = "a".repeat(60);
        let b = format!("{}b", "a".repeat(59));
        let (na, nb) = (decoy(&a), decoy(&b));
        assert!(na.len() <= 63 && nb.len() <= 63);
        assert_ne!(na, nb);
        assert!(!na.contains("--"));
    }
}
