//! The Session record kept in the cluster, one per intercepted Service: what the Service looked
//! like, what czctl set, the exact restore patch, and the header routes with their owners.
//!
//! It is stored as a `sessions.czctl.dev` custom resource (its `spec`), or, where CRDs cannot
//! be created or read, as the `session.json` key of a labelled ConfigMap (see [`super::store`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::spec::HeaderMatch;

/// The finalizer that keeps the record (and so the router it owns) until the Service no longer
/// points at the router.
pub const FINALIZER: &str = "czctl.dev/restore-service";

/// The parts of a Service an intercept changes, exactly as the API server returned them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shape {
    /// `spec.selector`.
    pub selector: BTreeMap<String, String>,
    /// `spec.ports`, as raw JSON so `test` operations compare every field the server has.
    pub ports: Vec<Value>,
}

/// One developer's route through the router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// The local czctl session id (`ic-xxxxxx`).
    pub session: String,
    /// Requests carrying this header go to the owner.
    pub header: HeaderMatch,
    /// Who: `user@host`.
    pub owner: String,
    /// Tunnel kind: `cluster` or `ngrok`.
    pub tunnel: String,
    /// Where the router sends these requests (`IP:PORT` of the tunnel's in-cluster end).
    pub upstream: String,
    /// The heartbeat Lease's name.
    pub lease: String,
    /// When the route was added (RFC 3339).
    pub started: String,
    /// For tunnels reached over HTTPS by name (ngrok): the host and the secret header value
    /// the router must send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsUpstream>,
}

/// An upstream reached over HTTPS by host name, guarded by a secret header (its Debug form
/// never shows the secret).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsUpstream {
    /// Host name (SNI and Host header).
    pub host: String,
    /// The value of the secret header (letters, digits, `-`, `_`).
    pub secret: String,
}

impl std::fmt::Debug for TlsUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsUpstream")
            .field("host", &self.host)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The record's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordBody {
    /// The intercepted Service's name.
    pub service: String,
    /// Its uid, so a re-created Service is never patched by mistake.
    pub service_uid: String,
    /// The intercepted Service port.
    pub port: u16,
    /// The router's image (the first intercept chose it).
    pub router_image: String,
    /// The Service's selector and ports before the intercept.
    pub original: Shape,
    /// What czctl set, read back from the server; `None` until the Service is patched.
    #[serde(default)]
    pub hijacked: Option<Shape>,
    /// The JSON patch that restores the Service (`test` ops first), once it is patched.
    #[serde(default)]
    pub restore_patch: Vec<Value>,
    /// Bumped on every change of `routes`; the router's configuration carries it.
    pub generation: u64,
    /// The last route is being removed: nobody may add one until the record is gone.
    #[serde(default)]
    pub closing: bool,
    /// The header routes.
    pub routes: Vec<Route>,
}

impl RecordBody {
    /// The route of `session`.
    pub fn route_of(&self, session: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.session == session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let tls = TlsUpstream {
            host: "a.ngrok.app".into(),
            secret: "zq9-secret".into(),
        };
        let shown = format!("{tls:?}");
        assert!(
            shown.contains("a.ngrok.app") && !shown.contains("zq9-secret"),
            "{shown}"
        );
    }

    #[test]
    fn round_trips_with_camel_case_keys() {
        let body = RecordBody {
            service: "echo".into(),
            service_uid: "u1".into(),
            port: 8080,
            router_image: "nginx".into(),
            original: Shape {
                selector: [("app".to_string(), "echo".to_string())].into(),
                ports: vec![serde_json::json!({"port": 8080, "targetPort": "http"})],
            },
            hijacked: None,
            restore_patch: vec![],
            generation: 1,
            closing: false,
            routes: vec![],
        };
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["serviceUid"], "u1");
        assert_eq!(json["restorePatch"], serde_json::json!([]));
        let back: RecordBody = serde_json::from_value(json).unwrap();
        assert_eq!(back, body);
    }
}
