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
//! position with its last value; then the Service variables nothing else defined.
//!
//! # Not seen from here
//! LimitRange defaults applied when a pod is admitted; in-place resizes of a running pod;
//! the Service variables themselves unless the caller fills [`Sources::service_env`].
//!
//! Secret values never appear in errors, warnings or `Debug` output: those name objects,
//! keys and variables only.

mod expand;
mod quantity;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ObjectFieldSelector, Pod, PodSpec, ResourceFieldSelector, Secret,
};

use crate::exit::{Code, Fatal};
use quantity::Quantity;

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
    /// The Service variables the kubelet adds (`KUBERNETES_SERVICE_HOST`, `API_PORT`, ...):
    /// used for `$(VAR)` expansion after the container's own variables and appended to
    /// [`Resolved::vars`] where the container defines no variable of that name. Empty:
    /// none (a `$(...)` naming one stays literal, with a warning).
    pub service_env: BTreeMap<String, String>,
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

/// The ConfigMaps and Secrets `container` reads (through `envFrom` and `valueFrom`), so the
/// caller fetches only those. A missing one belongs in neither map of [`Sources`]; fetch
/// errors other than "not found" (forbidden, unreachable) are the caller's to report.
pub fn referenced(container: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut config_maps = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    for from in container.env_from.iter().flatten() {
        if let Some(r) = &from.config_map_ref {
            config_maps.insert(r.name.clone());
        } else if let Some(r) = &from.secret_ref {
            secrets.insert(r.name.clone());
        }
    }
    for var in container.env.iter().flatten() {
        if var.value.as_deref().is_some_and(|v| !v.is_empty()) {
            continue;
        }
        let Some(from) = &var.value_from else {
            continue;
        };
        if from.field_ref.is_some() || from.resource_field_ref.is_some() {
            continue;
        }
        if let Some(r) = &from.config_map_key_ref {
            config_maps.insert(r.name.clone());
        } else if let Some(r) = &from.secret_key_ref {
            secrets.insert(r.name.clone());
        }
    }
    (config_maps, secrets)
}

/// A variable's state while the environment is built.
enum Slot {
    Known(Vec<u8>),
    Unknown(String),
}

/// A `configMapKeyRef` or `secretKeyRef`.
struct KeyRef<'a> {
    kind: ObjectKind,
    name: &'a str,
    key: &'a str,
    optional: bool,
}

/// What the referenced object holds under the key, when the object exists.
struct KeyLookup {
    value: Option<Vec<u8>>,
    /// The key is only in a ConfigMap's `binaryData` (never exported by the kubelet).
    in_binary_data: bool,
}

/// Resolves a key reference for `variable`: its value, `None` when an optional reference
/// misses (with a warning), or the error the kubelet reports for a required one.
fn key_ref(
    variable: &str,
    namespace: &str,
    wanted: &KeyRef<'_>,
    object: Option<KeyLookup>,
    warnings: &mut Vec<String>,
) -> Result<Option<Vec<u8>>, ResolveError> {
    let kind = match wanted.kind {
        ObjectKind::ConfigMap => "configmap",
        ObjectKind::Secret => "secret",
    };
    let Some(object) = object else {
        if wanted.optional {
            warnings.push(format!(
                "{variable} is not set: optional {kind} {namespace}/{} does not exist",
                wanted.name
            ));
            return Ok(None);
        }
        return Err(ResolveError::MissingObject {
            kind: wanted.kind,
            namespace: namespace.to_string(),
            name: wanted.name.to_string(),
            needed_by: format!("variable {variable}"),
        });
    };
    match object.value {
        Some(value) => Ok(Some(value)),
        None if wanted.optional => {
            warnings.push(format!(
                "{variable} is not set: optional key {:?} is not in {kind} {namespace}/{}",
                wanted.key, wanted.name
            ));
            Ok(None)
        }
        None => Err(ResolveError::MissingKey {
            kind: wanted.kind,
            namespace: namespace.to_string(),
            name: wanted.name.to_string(),
            key: wanted.key.to_string(),
            variable: variable.to_string(),
            in_binary_data: object.in_binary_data,
        }),
    }
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
        let prefix = from.prefix.as_deref().unwrap_or("");
        let (kind, name, entries, binary_keys): (_, _, Vec<(&String, &[u8])>, _) =
            if let Some(r) = &from.config_map_ref {
                match sources.config_maps.get(&r.name) {
                    Some(cm) => (
                        ObjectKind::ConfigMap,
                        &r.name,
                        cm.data
                            .iter()
                            .flatten()
                            .map(|(k, v)| (k, v.as_bytes()))
                            .collect(),
                        cm.binary_data
                            .iter()
                            .flatten()
                            .map(|(k, _)| k.as_str())
                            .collect::<Vec<_>>(),
                    ),
                    None => {
                        missing_source(
                            ObjectKind::ConfigMap,
                            &r.name,
                            r.optional,
                            sources,
                            &mut warnings,
                        )?;
                        continue;
                    }
                }
            } else if let Some(r) = &from.secret_ref {
                match sources.secrets.get(&r.name) {
                    Some(secret) => (
                        ObjectKind::Secret,
                        &r.name,
                        secret
                            .data
                            .iter()
                            .flatten()
                            .map(|(k, v)| (k, v.0.as_slice()))
                            .collect(),
                        Vec::new(),
                    ),
                    None => {
                        missing_source(
                            ObjectKind::Secret,
                            &r.name,
                            r.optional,
                            sources,
                            &mut warnings,
                        )?;
                        continue;
                    }
                }
            } else {
                continue;
            };
        let mut invalid = Vec::new();
        for (key, value) in entries {
            let var = format!("{prefix}{key}");
            if sources.name_rule.is_valid(&var) {
                env.set(&var, Slot::Known(value.to_vec()));
            } else {
                invalid.push(var);
            }
        }
        if !invalid.is_empty() {
            invalid.sort();
            let kind_word = match kind {
                ObjectKind::ConfigMap => "configMap",
                ObjectKind::Secret => "secret",
            };
            warnings.push(format!(
                "Keys [{}] from the EnvFrom {kind_word} {namespace}/{name} were skipped since they are considered invalid environment variable names",
                invalid.join(", ")
            ));
        }
        if !binary_keys.is_empty() {
            warnings.push(format!(
                "binaryData keys [{}] of configmap {namespace}/{name} are not in the environment: the kubelet reads only data for envFrom",
                binary_keys.join(", ")
            ));
        }
    }

    // 2. env, in order.
    let env_list = container.env.as_deref().unwrap_or_default();
    for (index, var) in env_list.iter().enumerate() {
        let value = var.value.as_deref().unwrap_or("");
        let slot = if !value.is_empty() {
            expand_value(
                &var.name,
                value,
                &env,
                &env_list[index + 1..],
                sources,
                &mut warnings,
            )
        } else if let Some(from) = &var.value_from {
            if let Some(field) = &from.field_ref {
                let (slot, live) = field_value(&var.name, field, spec, sources)?;
                if live {
                    from_pod.push(var.name.clone());
                }
                slot
            } else if let Some(field) = &from.resource_field_ref {
                resource_value(&var.name, field, spec, container)?
            } else if let Some(r) = &from.config_map_key_ref {
                let object = sources.config_maps.get(&r.name).map(|cm| KeyLookup {
                    value: cm
                        .data
                        .as_ref()
                        .and_then(|d| d.get(&r.key))
                        .map(|v| v.as_bytes().to_vec()),
                    in_binary_data: cm
                        .binary_data
                        .as_ref()
                        .is_some_and(|d| d.contains_key(&r.key)),
                });
                let wanted = KeyRef {
                    kind: ObjectKind::ConfigMap,
                    name: &r.name,
                    key: &r.key,
                    optional: r.optional == Some(true),
                };
                match key_ref(&var.name, namespace, &wanted, object, &mut warnings)? {
                    Some(value) => Slot::Known(value),
                    None => continue,
                }
            } else if let Some(r) = &from.secret_key_ref {
                let object = sources.secrets.get(&r.name).map(|secret| KeyLookup {
                    value: secret
                        .data
                        .as_ref()
                        .and_then(|d| d.get(&r.key))
                        .map(|v| v.0.clone()),
                    in_binary_data: false,
                });
                let wanted = KeyRef {
                    kind: ObjectKind::Secret,
                    name: &r.name,
                    key: &r.key,
                    optional: r.optional == Some(true),
                };
                match key_ref(&var.name, namespace, &wanted, object, &mut warnings)? {
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

/// A missing `envFrom` source: skipped when optional, else the kubelet's failure.
fn missing_source(
    kind: ObjectKind,
    name: &str,
    optional: Option<bool>,
    sources: &Sources,
    warnings: &mut Vec<String>,
) -> Result<(), ResolveError> {
    if optional == Some(true) {
        warnings.push(format!(
            "optional {kind} {}/{name} does not exist: its envFrom adds nothing",
            sources.namespace
        ));
        Ok(())
    } else {
        Err(ResolveError::MissingObject {
            kind,
            namespace: sources.namespace.clone(),
            name: name.to_string(),
            needed_by: "envFrom".to_string(),
        })
    }
}

/// Expands an `env[].value` against the variables defined so far, then the Service ones.
fn expand_value(
    variable: &str,
    value: &str,
    env: &Env,
    later: &[k8s_openapi::api::core::v1::EnvVar],
    sources: &Sources,
    warnings: &mut Vec<String>,
) -> Slot {
    let mut unknown = Vec::new();
    let mut undefined = Vec::new();
    let out = expand::expand(value, |name, out| {
        let known = match env.slots.get(name) {
            Some(Slot::Known(bytes)) => Some(bytes.as_slice()),
            Some(Slot::Unknown(_)) => {
                unknown.push(name.to_string());
                None
            }
            None => match sources.service_env.get(name) {
                Some(text) => Some(text.as_bytes()),
                None => {
                    if !undefined.iter().any(|n| n == name) {
                        undefined.push(name.to_string());
                    }
                    None
                }
            },
        };
        match known {
            Some(bytes) => out.extend_from_slice(bytes),
            None => {
                out.extend_from_slice(b"$(");
                out.extend_from_slice(name.as_bytes());
                out.push(b')');
            }
        }
    });
    for name in undefined {
        let hint = if later.iter().any(|v| v.name == name) {
            format!("; {name} is defined later in env, and only earlier entries count")
        } else if looks_like_service_variable(&name) && sources.service_env.is_empty() {
            format!(
                "; if {name} is a Service variable the kubelet adds, the container sees it expanded"
            )
        } else {
            String::new()
        };
        warnings.push(format!(
            "{variable}: $({name}) is not defined before it, so it stays the literal text $({name}), as the kubelet leaves it{hint}"
        ));
    }
    if let Some(first) = unknown.first() {
        Slot::Unknown(format!(
            "its value refers to $({first}), which is unresolved"
        ))
    } else {
        Slot::Known(out)
    }
}

/// Whether `name` has the shape of a variable the kubelet derives from a Service.
fn looks_like_service_variable(name: &str) -> bool {
    name.contains("_SERVICE_") || name.contains("_PORT")
}

/// A `fieldRef`; the flag tells whether the value came from the live pod.
fn field_value(
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

/// A `resourceFieldRef`.
fn resource_value(
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
