//! The Session record kept in the cluster, one per intercepted Service: what the Service looked
//! like, what czctl set, the exact restore patch, and the header routes with their owners.
//!
//! It is stored as a `sessions.czctl.dev` custom resource (its `spec`), or, where CRDs cannot
//! be created or read, as the `session.json` key of a labelled ConfigMap (see [`super::store`]).

use std::collections::BTreeMap;
use std::fmt;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::spec::HeaderMatch;

/// The finalizer that keeps the record (and so the router it owns) until the Service no longer
/// points at the router.
pub const FINALIZER: &str = "czctl.dev/restore-service";

/// The parts of a Service an intercept changes, exactly as the API server returned them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Shape {
    /// `spec.selector`.
    pub selector: BTreeMap<String, String>,
    /// `spec.ports`, as raw JSON so `test` operations compare every field the server has.
    #[schemars(schema_with = "objects_kept_whole")]
    pub ports: Vec<Value>,
}

/// How a route's requests reach the developer's machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TunnelKind {
    /// czctl's agent pod in the cluster, reached through port-forward.
    Cluster,
    /// An ngrok endpoint, reached over HTTPS with a secret header.
    Ngrok,
}

impl fmt::Display for TunnelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TunnelKind::Cluster => "cluster",
            TunnelKind::Ngrok => "ngrok",
        })
    }
}

/// One developer's route through the router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// The local czctl session id (`ic-xxxxxx`).
    pub session: String,
    /// Requests carrying this header go to the owner.
    pub header: HeaderMatch,
    /// Who: `user@host`.
    pub owner: String,
    /// How the requests reach the owner's machine.
    pub tunnel: TunnelKind,
    /// Where the router sends these requests (`IP:PORT` of the tunnel's in-cluster end);
    /// `None` until the agent's Service has an address. Stored as `""` when unknown, as
    /// earlier versions wrote and still expect it.
    #[serde(default, with = "empty_is_none")]
    #[schemars(with = "String")]
    pub upstream: Option<String>,
    /// The heartbeat Lease's name.
    pub lease: String,
    /// When the route was added (RFC 3339).
    pub started: String,
    /// For tunnels reached over HTTPS by name (ngrok): the host and the secret header value
    /// the router must send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsUpstream>,
}

impl Route {
    /// Where the router sends this route's requests: the HTTPS host for tunnels reached by
    /// name, else the agent's `IP:PORT`; `None` while the agent has no address yet.
    pub fn destination(&self) -> Option<String> {
        match &self.tls {
            Some(tls) => Some(format!("{}:443", tls.host)),
            None => self.upstream.clone(),
        }
    }
}

/// `Option<String>` stored as a string that is empty for `None`.
mod empty_is_none {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(value.as_deref().unwrap_or_default())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        Ok(text.filter(|t| !t.is_empty()))
    }
}

/// The schema of a list of JSON objects kept as the server returned them (Service ports, JSON
/// patch operations): the structural schema must not prune a field czctl does not know.
fn objects_kept_whole(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
    })
}

/// An upstream reached over HTTPS by host name, guarded by a secret header (its Debug form
/// never shows the secret).
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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

/// The record's body: the `spec` of a `sessions.czctl.dev/v1` Session, whose
/// CustomResourceDefinition (with a structural schema) is derived from it.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "czctl.dev",
    version = "v1",
    kind = "Session",
    plural = "sessions",
    singular = "session",
    shortname = "czsession",
    namespaced,
    label("app.kubernetes.io/managed-by", "czctl"),
    doc = "An intercept of a Service by czctl: the original selector and ports, the restore patch and the header routes.",
    printcolumn(name = "Service", type_ = "string", json_path = ".spec.service"),
    printcolumn(name = "Port", type_ = "integer", json_path = ".spec.port"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
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
    #[schemars(schema_with = "objects_kept_whole")]
    pub restore_patch: json_patch::Patch,
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
    fn routes_stored_by_earlier_versions_still_parse() {
        let stored = serde_json::json!({
            "session": "ic-abc", "header": {"name": "x-dev", "value": "alice"},
            "owner": "alice@laptop", "tunnel": "cluster", "upstream": "",
            "lease": "interceptor-echo-ic-abc", "started": "2026-11-23T09:00:00Z",
        });
        let route: Route = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(route.tunnel, TunnelKind::Cluster);
        assert_eq!(route.upstream, None);
        assert_eq!(route.destination(), None);
        // Written back the way earlier versions read it.
        assert_eq!(serde_json::to_value(&route).unwrap(), stored);
        let mut ngrok = stored;
        ngrok["tunnel"] = "ngrok".into();
        ngrok["upstream"] = "a.ngrok.app:443".into();
        let route: Route = serde_json::from_value(ngrok).unwrap();
        assert_eq!(route.tunnel, TunnelKind::Ngrok);
        assert_eq!(route.upstream.as_deref(), Some("a.ngrok.app:443"));
        let mut unknown = serde_json::to_value(&route).unwrap();
        unknown["tunnel"] = "carrier-pigeon".into();
        assert!(serde_json::from_value::<Route>(unknown).is_err());
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
            restore_patch: json_patch::Patch::default(),
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
