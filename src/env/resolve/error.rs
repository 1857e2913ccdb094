//! Why the environment cannot be computed.

use std::fmt;

use crate::exit::{Code, Fatal};

/// ConfigMap or Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// core/v1 ConfigMap.
    ConfigMap,
    /// core/v1 Secret.
    Secret,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::ConfigMap => "configmap",
            ObjectKind::Secret => "secret",
        })
    }
}

/// Why the environment cannot be computed (the kubelet would not start the container
/// either). Messages name objects, keys and variables, never values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    /// The pod template has no containers.
    #[error("the pod template has no containers")]
    NoContainers,
    /// `-c` names no container of the template.
    #[error("container {name:?} is not in the pod template (containers: {}; init containers: {})", list(.containers), list(.init_containers))]
    NoSuchContainer {
        /// The name asked for.
        name: String,
        /// The app containers.
        containers: Vec<String>,
        /// The init containers.
        init_containers: Vec<String>,
    },
    /// A non-optional ConfigMap or Secret does not exist.
    #[error("{kind} {namespace}/{name} not found (needed by {needed_by}; the kubelet would not start the container)")]
    MissingObject {
        /// ConfigMap or Secret.
        kind: ObjectKind,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// `envFrom` or `variable NAME`.
        needed_by: String,
    },
    /// A non-optional key is not in its ConfigMap or Secret.
    #[error("key {key:?} not found in {kind} {namespace}/{name} (needed by variable {variable}){}", if *.in_binary_data { "; it is in binaryData, which the kubelet never puts in the environment" } else { "" })]
    MissingKey {
        /// ConfigMap or Secret.
        kind: ObjectKind,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The key.
        key: String,
        /// The variable it was to set.
        variable: String,
        /// The key is in the ConfigMap's `binaryData`.
        in_binary_data: bool,
    },
    /// A `fieldRef` or `resourceFieldRef` the kubelet rejects.
    #[error("variable {variable}: {what}")]
    Unsupported {
        /// The variable.
        variable: String,
        /// What is not supported.
        what: String,
    },
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

impl ResolveError {
    /// The exit code this failure ends czctl with.
    pub fn code(&self) -> Code {
        match self {
            ResolveError::NoSuchContainer { .. }
            | ResolveError::MissingObject { .. }
            | ResolveError::MissingKey { .. } => Code::NotFound,
            ResolveError::NoContainers | ResolveError::Unsupported { .. } => Code::Failure,
        }
    }
}

impl From<ResolveError> for Fatal {
    fn from(err: ResolveError) -> Fatal {
        Fatal::new(err.code(), err.to_string())
    }
}
