//! The environment a container gets, computed as the kubelet computes it
//! (`makeEnvironmentVariables` in `pkg/kubelet/kubelet_pods.go`), from the pod template, the
//! ConfigMaps and Secrets it names and, for downward-API values, a live pod of the workload.
//! Pure: the caller fetches the objects ([`referenced`] says which) and passes them in.
//!
//! # The kubelet's rules, as implemented here
//! 1. `envFrom` first, in order; a later source overrides an earlier one. A ConfigMap gives
//!    its `data` only (the kubelet never reads `binaryData` for the environment), a Secret its
//!    `data` bytes as they are. `prefix` is prepended to every key. A missing source fails
//!    unless `optional: true`, which skips it.
//! 2. Then `env`, in order; an entry overrides whatever was set before under its name.
//!    - `value` (when not empty) is expanded: `$(NAME)` refers to a variable
//!      defined *before* it (all of `envFrom`, earlier `env` entries, then Service variables
//!      from [`Sources::service_env`]); an unknown name stays literally `$(NAME)`; `$$` is
//!      `$`, so `$$(NAME)` is the literal `$(NAME)`.
//!    - `valueFrom` values are never expanded. `configMapKeyRef` / `secretKeyRef` to a
//!      missing object or key fail, naming them, unless `optional: true`: then the entry is
//!      skipped and an earlier value of the same name (say from `envFrom`) stays.
//!    - `fieldRef`: `metadata.namespace` is the workload's namespace, `spec.serviceAccountName`
//!      the template's (`default` when unset); `metadata.name`, `metadata.uid`,
//!      `metadata.labels['k']`, `metadata.annotations['k']`, `spec.nodeName`,
//!      `status.podIP(s)`, `status.hostIP(s)` come from the live pod ([`Sources::pod`]) and
//!      are [`Unresolved`] without one (or while it has no node or IP yet).
//!    - `resourceFieldRef`: `limits.*` / `requests.*` of `cpu`, `memory`,
//!      `ephemeral-storage` and `hugepages-*`, divided by `divisor` (default 1) and rounded
//!      up: `250m` CPU is `1`, or `250` with divisor `1m`. Requests default to the limits (as
//!      the API server defaults a Pod). An unset limit is the node's allocatable amount for
//!      the kubelet (or, from 1.34, the pod-level limit of `spec.resources`): without a
//!      pod-level limit it is [`Unresolved`], never invented.
//!    - `fileKeyRef` reads a file of a pod volume: always [`Unresolved`].
//! 3. A variable whose `value` refers to an unresolved one is unresolved too.
//!
//! # Order
//! The kubelet hands the runtime its variables in Go map order (random). [`Resolved::vars`]
//! is deterministic instead: in the order names are first defined (`envFrom` sources in
//! order, each one's keys sorted; then `env` in order), an overridden name keeping its first
//! position with its last value; then the Service variables nothing else defined, in the
//! order of [`Sources::service_env`].
//!
//! # Not seen from here
//! LimitRange defaults applied when a pod is admitted; in-place resizes of a running pod;
//! the Service variables themselves: the caller fills [`Sources::service_env`] (see
//! [`crate::env::links`]).
//!
//! Secret values never appear in errors, warnings or `Debug` output: those name objects,
//! keys and variables only.

mod error;
mod expand;
mod fields;
mod quantity;
mod refs;
mod resources;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec, Secret};

pub use error::{ObjectKind, ResolveError};
pub use refs::referenced;

/// Everything [`resolve`] reads besides the pod template.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The workload's namespace (named in errors; the value of `metadata.namespace`).
    pub namespace: String,
    /// ConfigMaps of the namespace by name: at least those [`referenced`] names that exist.
    pub config_maps: BTreeMap<String, ConfigMap>,
    /// Secrets of the namespace by name, likewise.
    pub secrets: BTreeMap<String, Secret>,
    /// A live pod of the workload, for the downward API (`fieldRef`).
    pub pod: Option<Pod>,
    /// The Service variables the kubelet adds (`KUBERNETES_SERVICE_HOST`, `API_PORT`, ...,
    /// from [`crate::env::links::Links::variables`]), in order, each name once (a repeated
    /// name counts the first time only): used for `$(VAR)` expansion after the container's
    /// own variables and appended, in this order, to [`Resolved::vars`] where the container
    /// defines no variable of that name. Empty: none (a `$(...)` naming one stays literal,
    /// with a warning).
    pub service_env: Vec<(String, String)>,
    /// Which `envFrom` keys become variables.
    pub name_rule: NameRule,
}

impl Sources {
    /// Sources with no objects, in `namespace`.
    pub fn new(namespace: impl Into<String>) -> Self {
        Sources {
            namespace: namespace.into(),
            ..Sources::default()
        }
    }
}

/// The names `envFrom` keys (with their prefix) must have to become variables; the others
/// are skipped with a warning worded like the kubelet's `InvalidEnvironmentVariableNames`
/// event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NameRule {
    /// The Kubernetes 1.32 `IsEnvVarName` rule (apimachinery's C_IDENTIFIER-like
    /// `[-._a-zA-Z][-._a-zA-Z0-9]*`, and not `.`, `..` or starting with `..`): names a shell
    /// or a dotenv file can carry. Kubelets up to 1.29 skipped the other keys with that
    /// event; from 1.30 (kubernetes#123385) the kubelet passes every key on, so a key such as
    /// `1st-key` reaches the container there but is skipped here.
    #[default]
    Strict,
    /// The relaxed rule (RelaxedEnvironmentVariableValidation, beta in 1.32, GA in 1.34):
    /// printable ASCII except `=`. ConfigMap and Secret keys always pass, so this skips
    /// nothing, which is what kubelets from 1.30 do.
    Relaxed,
}

impl NameRule {
    /// Whether `name` is a valid variable name under this rule.
    pub fn is_valid(self, name: &str) -> bool {
        match self {
            NameRule::Strict => {
                let punctuation = |b: u8| matches!(b, b'-' | b'.' | b'_');
                let mut bytes = name.bytes();
                bytes
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || punctuation(b))
                    && bytes.all(|b| b.is_ascii_alphanumeric() || punctuation(b))
                    && name != "."
                    && !name.starts_with("..")
            }
            NameRule::Relaxed => {
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| (b' '..=b'~').contains(&b) && b != b'=')
            }
        }
    }
}

/// A variable's value: text when it is UTF-8, bytes otherwise (a Secret may hold anything,
/// NUL included; `Text` may contain NUL too). `Debug` shows the length only.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// Valid UTF-8.
    Text(String),
    /// Not valid UTF-8.
    Bytes(Vec<u8>),
}

impl Value {
    /// `Text` when `bytes` is UTF-8, else `Bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> Value {
        match String::from_utf8(bytes) {
            Ok(text) => Value::Text(text),
            Err(err) => Value::Bytes(err.into_bytes()),
        }
    }

    /// The value's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Value::Text(text) => text.as_bytes(),
            Value::Bytes(bytes) => bytes,
        }
    }

    /// The value as text, when it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(text) => Some(text),
            Value::Bytes(_) => None,
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(text) => write!(f, "Text(<{} bytes>)", text.len()),
            Value::Bytes(bytes) => write!(f, "Bytes(<{} bytes>)", bytes.len()),
        }
    }
}

/// A variable the container gets but whose value cannot be known from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// The variable.
    pub name: String,
    /// Why, in a sentence.
    pub reason: String,
}

/// The outcome of [`resolve`].
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// The variables and values, in the order described in the module documentation.
    pub vars: Vec<(String, Value)>,
    /// Things the user should know: skipped keys, absent optional sources, `$(...)` left as
    /// written, values taken from the live pod.
    pub warnings: Vec<String>,
    /// Variables the container gets whose value is not known here (not in `vars`).
    pub unresolved: Vec<Unresolved>,
}

impl Resolved {
    /// The value of `name`, when resolved.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.vars.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// The container to resolve: the first app container when `name` is `None`, else the app
/// or init container of that name (init containers only when named).
pub fn select_container<'a>(
    spec: &'a PodSpec,
    name: Option<&str>,
) -> Result<&'a Container, ResolveError> {
    let init = spec.init_containers.as_deref().unwrap_or_default();
    match name {
        None => spec.containers.first().ok_or(ResolveError::NoContainers),
        Some(name) => spec
            .containers
            .iter()
            .chain(init)
            .find(|c| c.name == name)
            .ok_or_else(|| ResolveError::NoSuchContainer {
                name: name.to_string(),
                containers: spec.containers.iter().map(|c| c.name.clone()).collect(),
                init_containers: init.iter().map(|c| c.name.clone()).collect(),
            }),
    }
}

/// A variable's state while the environment is built.
enum Slot {
    Known(Vec<u8>),
    Unknown(String),
}

/// The kubelet's `tmpEnv` map, remembering the order names were first defined.
#[derive(Default)]
struct Env {
    order: Vec<String>,
    slots: BTreeMap<String, Slot>,
}

impl Env {
    fn set(&mut self, name: &str, slot: Slot) {
        if self.slots.insert(name.to_string(), slot).is_none() {
            self.order.push(name.to_string());
        }
    }
}

/// Computes the environment of `container` (one of `spec`'s, see [`select_container`]).
pub fn resolve(
    spec: &PodSpec,
    container: &Container,
    sources: &Sources,
) -> Result<Resolved, ResolveError> {
    let namespace = sources.namespace.as_str();
    let mut env = Env::default();
    let mut warnings = Vec::new();
    let mut from_pod = Vec::new();

    // 1. envFrom, in order.
    for from in container.env_from.iter().flatten() {
        refs::env_from(from, sources, &mut env, &mut warnings)?;
    }

    // 2. env, in order.
    let env_list = container.env.as_deref().unwrap_or_default();
    for (index, var) in env_list.iter().enumerate() {
        let value = var.value.as_deref().unwrap_or("");
        let slot = if !value.is_empty() {
            expand::expand_value(
                &var.name,
                value,
                &env,
                &env_list[index + 1..],
                sources,
                &mut warnings,
            )
        } else if let Some(from) = &var.value_from {
            if let Some(field) = &from.field_ref {
                let (slot, live) = fields::field_value(&var.name, field, spec, sources)?;
                if live {
                    from_pod.push(var.name.clone());
                }
                slot
            } else if let Some(field) = &from.resource_field_ref {
                resources::resource_value(&var.name, field, spec, container)?
            } else if let Some(r) = &from.config_map_key_ref {
                match refs::config_map_key(&var.name, r, sources, &mut warnings)? {
                    Some(value) => Slot::Known(value),
                    None => continue,
                }
            } else if let Some(r) = &from.secret_key_ref {
                match refs::secret_key(&var.name, r, sources, &mut warnings)? {
                    Some(value) => Slot::Known(value),
                    None => continue,
                }
            } else if let Some(file) = &from.file_key_ref {
                Slot::Unknown(format!(
                    "it is read from key {:?} of file {:?} in volume {:?} of the pod, which czctl cannot see",
                    file.key, file.path, file.volume_name
                ))
            } else {
                Slot::Known(Vec::new())
            }
        } else {
            Slot::Known(Vec::new())
        };
        env.set(&var.name, slot);
    }

    // 3. The result, in first-definition order, then the remaining Service variables.
    from_pod.retain(|name| matches!(env.slots.get(name), Some(Slot::Known(_))));
    from_pod.dedup();
    if let (Some(pod), false) = (&sources.pod, from_pod.is_empty()) {
        warnings.push(format!(
            "{} taken from the running pod {}/{}: a new pod of the workload gets its own",
            from_pod.join(", "),
            pod.metadata.namespace.as_deref().unwrap_or(namespace),
            pod.metadata.name.as_deref().unwrap_or("?"),
        ));
    }
    let mut resolved = Resolved {
        warnings,
        ..Resolved::default()
    };
    for (name, value) in &sources.service_env {
        // Also skips a repeated name: the first one is in `slots` by now.
        if !env.slots.contains_key(name) {
            env.order.push(name.clone());
            env.slots
                .insert(name.clone(), Slot::Known(value.as_bytes().to_vec()));
        }
    }
    for name in env.order {
        match env.slots.remove(&name) {
            Some(Slot::Known(bytes)) => resolved.vars.push((name, Value::from_bytes(bytes))),
            Some(Slot::Unknown(reason)) => resolved.unresolved.push(Unresolved { name, reason }),
            None => {}
        }
    }
    Ok(resolved)
}
