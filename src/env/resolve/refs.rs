//! ConfigMap and Secret sources: `envFrom`, `configMapKeyRef` and `secretKeyRef`.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{
    ConfigMapKeySelector, Container, EnvFromSource, SecretKeySelector,
};

use super::{Env, ObjectKind, ResolveError, Slot, Sources};

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

/// Adds one `envFrom` source to `env`: its keys, prefixed, in sorted order.
pub(super) fn env_from(
    from: &EnvFromSource,
    sources: &Sources,
    env: &mut Env,
    warnings: &mut Vec<String>,
) -> Result<(), ResolveError> {
    let namespace = sources.namespace.as_str();
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
                        warnings,
                    )?;
                    return Ok(());
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
                    missing_source(ObjectKind::Secret, &r.name, r.optional, sources, warnings)?;
                    return Ok(());
                }
            }
        } else {
            return Ok(());
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
    Ok(())
}

/// A `configMapKeyRef` for `variable`: its value, or `None` when an optional one misses.
pub(super) fn config_map_key(
    variable: &str,
    r: &ConfigMapKeySelector,
    sources: &Sources,
    warnings: &mut Vec<String>,
) -> Result<Option<Vec<u8>>, ResolveError> {
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
    key_ref(variable, &sources.namespace, &wanted, object, warnings)
}

/// A `secretKeyRef` for `variable`: its value, or `None` when an optional one misses.
pub(super) fn secret_key(
    variable: &str,
    r: &SecretKeySelector,
    sources: &Sources,
    warnings: &mut Vec<String>,
) -> Result<Option<Vec<u8>>, ResolveError> {
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
    key_ref(variable, &sources.namespace, &wanted, object, warnings)
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

/// A missing `envFrom` source: skipped when optional, else the kubelet's failure.
pub(super) fn missing_source(
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
