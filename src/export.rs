//! `czctl KIND teleport NAME`: export a workload's configuration (resolved as the kubelet
//! resolves it) to a 0600 file, then teleport its namespace, optionally running a command with
//! that environment while the teleport is active.
//!
//! Two steps, so the teleport can start in between and the Service variables
//! (`DB_SERVICE_HOST`, ... see [`crate::env::links`]) can carry the loopback addresses it
//! gave the Services:
//! 1. [`prepare`] reads everything from the cluster and resolves the environment once: every
//!    error happens here, and nothing is written or printed;
//! 2. [`Prepared::write`] resolves it again with the teleport's addresses (none: the
//!    ClusterIPs, as with `--env-only`), writes it, then prints the warnings and what it
//!    wrote.
//!
//! [`Relink`] recomputes the environment with other addresses later (a command started once
//! the teleport is ready); [`relink`] puts that into an environment list.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, PodSpec};

use crate::cluster::client::{self, ClientOptions};
use crate::cluster::workload::{self, WorkloadKind};
use crate::env::format::{self, Format};
use crate::env::links::Links;
use crate::env::resolve::{self, Resolved, Sources};
use crate::env::sources;
use crate::exit::{Code, Fatal};
use crate::teleport::command::CommandSpec;

/// What to export and where.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Workload kind.
    pub kind: WorkloadKind,
    /// Workload name.
    pub name: String,
    /// Namespace (default: the context's, else `default`).
    pub namespace: Option<String>,
    /// Client configuration.
    pub client: ClientOptions,
    /// Container name (default: the first app container).
    pub container: Option<String>,
    /// Output file; stdout when absent and no command is given. Written only if it is missing
    /// or czctl's own (see [`crate::env::format::file`]).
    pub file: Option<PathBuf>,
    /// Replace an existing file that is not czctl's own (`--overwrite`): a regular file this
    /// user may write (keeping its owner and group, mode 0600), or a symbolic link (replaced,
    /// not followed). Never a directory, device, FIFO or socket.
    pub overwrite: bool,
    /// Output format.
    pub format: Format,
    /// Command to run with the environment.
    pub command: Vec<OsString>,
}

/// What the export produced, for the teleport that may follow.
pub struct Exported {
    /// The workload's namespace.
    pub namespace: String,
    /// The command to run, with the environment, if one was given.
    pub command: Option<CommandSpec>,
    /// Recomputes the environment with other Service addresses (see [`relink`]).
    pub relink: Relink,
}

/// A workload's environment, read from the cluster and checked by [`prepare`]; written by
/// [`Prepared::write`].
#[derive(Debug, Clone)]
pub struct Prepared {
    namespace: String,
    relink: Relink,
    /// Warnings found while reading (Services that may not be read), printed after writing.
    notes: Vec<String>,
}

/// Everything the environment is a pure function of, but the Service addresses: the pod
/// template, the container, its ConfigMaps, Secrets and live pod, and the Services its links
/// come from. Cheap to keep; [`Relink::env`] recomputes with the kubelet's rules. `Debug`
/// shows no values (the sources hold Secrets).
#[derive(Clone)]
pub struct Relink {
    spec: PodSpec,
    container: Container,
    sources: Sources,
    links: Links,
}

impl std::fmt::Debug for Relink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relink")
            .field("namespace", &self.sources.namespace)
            .field("container", &self.container.name)
            .field("links", &self.links)
            .finish_non_exhaustive()
    }
}

impl Relink {
    /// The workload's Service links (which Services, and their ClusterIPs).
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// The environment as the kubelet resolves it, with `addresses` in place of ClusterIPs
    /// (keys as [`Links::variables`] takes them: a Service name of the workload's namespace,
    /// or `NAMESPACE/NAME`); `$(VAR)` references in declared variables get the same
    /// addresses.
    pub fn resolve(&self, addresses: &BTreeMap<String, Ipv4Addr>) -> Result<Resolved, Fatal> {
        let mut sources = self.sources.clone();
        sources.service_env = self.links.variables(addresses);
        Ok(resolve::resolve(&self.spec, &self.container, &sources)?)
    }

    /// [`Relink::resolve`]'s variables as a command's environment.
    pub fn env(
        &self,
        addresses: &BTreeMap<String, Ipv4Addr>,
    ) -> Result<Vec<(String, Vec<u8>)>, Fatal> {
        Ok(vars_of(&self.resolve(addresses)?))
    }
}

/// Replaces `env` (a [`CommandSpec::env`] from [`Exported::command`]) with the environment
/// recomputed for `addresses`: call it once the teleport is ready, with the address each
/// Service of the namespace got, before starting the command. On error `env` is left as it
/// was (it cannot fail for an `env` that [`Prepared::write`] produced: only the addresses
/// change, and they never make resolution fail).
pub fn relink(
    env: &mut Vec<(String, Vec<u8>)>,
    relink: &Relink,
    addresses: &BTreeMap<String, Ipv4Addr>,
) -> Result<(), Fatal> {
    *env = relink.env(addresses)?;
    Ok(())
}

fn vars_of(resolved: &Resolved) -> Vec<(String, Vec<u8>)> {
    resolved
        .vars
        .iter()
        .map(|(name, value)| (name.clone(), value.as_bytes().to_vec()))
        .collect()
}

/// Connects, reads the workload, its container's sources and the Services of its links, and
/// resolves and renders the environment once (with ClusterIPs) so that every error is
/// reported here. Writes and prints nothing.
pub async fn prepare(options: &ExportOptions) -> Result<Prepared, Fatal> {
    let connected = client::connect(&options.client)
        .await
        .map_err(|e| Fatal::new(Code::Config, e.to_string()))?;
    let namespace = options
        .namespace
        .clone()
        .unwrap_or_else(|| connected.client.default_namespace().to_string());
    let workload =
        workload::fetch(&connected.client, options.kind, &namespace, &options.name).await?;
    let container =
        resolve::select_container(&workload.spec, options.container.as_deref())?.clone();
    let sources = sources::fetch(&connected.client, &namespace, &workload, &container).await?;
    // The API server defaults `enableServiceLinks` to true.
    let enabled = workload.spec.enable_service_links != Some(false);
    let (links, notes) = sources::fetch_links(&connected.client, &namespace, enabled).await?;
    let prepared = Prepared {
        namespace,
        relink: Relink {
            spec: workload.spec,
            container,
            sources,
            links,
        },
        notes,
    };
    let resolved = prepared.relink.resolve(&BTreeMap::new())?;
    if let Some(path) = &options.file {
        // A file czctl may not write is refused now, before any teleport starts.
        format::check_file(path, options.format, options.overwrite)?;
    }
    if options.file.is_some() || options.command.is_empty() {
        // A value the format cannot carry fails now; addresses never add one.
        format::render(options.format, &vars_of(&resolved))?;
    }
    Ok(prepared)
}

impl Prepared {
    /// The workload's namespace (the one to teleport).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// What recomputes the environment with other addresses.
    pub fn relink(&self) -> &Relink {
        &self.relink
    }

    /// Resolves the environment with `addresses` (a Service name of the namespace → the
    /// loopback address the teleport gave it; empty: the ClusterIPs), writes it to the file or
    /// stdout (not when a command is given without a file), then prints the warnings and, for
    /// a file, what was written. Nothing is printed when writing fails.
    pub fn write(
        self,
        options: &ExportOptions,
        addresses: &BTreeMap<String, Ipv4Addr>,
    ) -> Result<Exported, Fatal> {
        let resolved = self.relink.resolve(addresses)?;
        let vars = vars_of(&resolved);
        let wrote = match &options.file {
            Some(path) => {
                let text = format::render(options.format, &vars)?;
                let about = format!(
                    "{} {}/{}",
                    options.kind.resource(),
                    self.namespace,
                    options.name
                );
                let mark = format::mark_line(options.format, &about);
                let written = format::write_file(
                    path,
                    options.format,
                    mark.as_deref(),
                    &text,
                    options.overwrite,
                )?;
                let replaced = match written {
                    format::Written::Created => String::new(),
                    format::Written::Replaced => ", replacing czctl's earlier file".into(),
                    format::Written::Overwrote(what) => format!(", replacing {what}"),
                };
                Some(format!(
                    "czctl: wrote {} variables of {about} ({} format) to {} (mode 0600{replaced})",
                    vars.len(),
                    options.format.name(),
                    path.display()
                ))
            }
            None if options.command.is_empty() => {
                use std::io::Write;
                let text = format::render(options.format, &vars)?;
                let mut stdout = std::io::stdout().lock();
                // A reader that went away (`| head`) ends czctl quietly, as for every output.
                crate::output::quiet_on_broken_pipe(
                    stdout.write_all(&text).and_then(|()| stdout.flush()),
                )
                .map_err(|e| Fatal::new(Code::Local, format!("cannot write stdout: {e}")))?;
                None
            }
            None => None,
        };
        for line in messages(&self.notes, &resolved) {
            eprintln!("{line}");
        }
        if let Some(line) = wrote {
            eprintln!("{line}");
        }
        let command = (!options.command.is_empty()).then(|| CommandSpec {
            argv: options.command.clone(),
            env: vars,
        });
        Ok(Exported {
            namespace: self.namespace,
            command,
            relink: self.relink,
        })
    }
}

/// The warning lines, in the order they are printed.
fn messages(notes: &[String], resolved: &Resolved) -> Vec<String> {
    let warnings = notes.iter().chain(&resolved.warnings);
    warnings
        .map(|w| format!("czctl: warning: {w}"))
        .chain(resolved.unresolved.iter().map(|missing| {
            format!(
                "czctl: warning: {} is not exported: {}",
                missing.name, missing.reason
            )
        }))
        .collect()
}

/// Resolves and writes the configuration with the Services' ClusterIPs: [`prepare`] then
/// [`Prepared::write`] with no addresses.
pub async fn export(options: &ExportOptions) -> Result<Exported, Fatal> {
    prepare(options).await?.write(options, &BTreeMap::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::links::LinkService;
    use serde_json::json;

    fn prepared(enable_service_links: Option<bool>) -> Prepared {
        let container: Container = serde_json::from_value(json!({
            "name": "app",
            "env": [
                {"name": "DB_URL", "value": "postgres://$(DB_SERVICE_HOST):$(DB_SERVICE_PORT)/app"},
                {"name": "API_SERVICE_PORT", "value": "override"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ],
        }))
        .unwrap();
        let spec = PodSpec {
            containers: vec![container.clone()],
            enable_service_links,
            ..PodSpec::default()
        };
        let service = |ns: &str, name: &str, ip: &str, port: i32| {
            LinkService::from_service(
                &serde_json::from_value(json!({
                    "metadata": {"namespace": ns, "name": name},
                    "spec": {"clusterIP": ip, "ports": [{"port": port}]},
                }))
                .unwrap(),
            )
            .unwrap()
        };
        let links = Links::select(
            "demo",
            enable_service_links != Some(false),
            [
                service("default", "kubernetes", "10.96.0.1", 443),
                service("demo", "db", "10.96.0.20", 5432),
                service("demo", "api", "10.96.0.21", 80),
            ],
        );
        Prepared {
            namespace: "demo".into(),
            relink: Relink {
                spec,
                container,
                sources: Sources::new("demo"),
                links,
            },
            notes: vec!["a note".into()],
        }
    }

    fn get<'a>(env: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn declared_variables_expand_with_the_address_the_link_gets() {
        let spec = prepared(None).relink;
        let env = spec.env(&BTreeMap::new()).unwrap();
        assert_eq!(get(&env, "DB_SERVICE_HOST"), Some("10.96.0.20"));
        assert_eq!(get(&env, "DB_URL"), Some("postgres://10.96.0.20:5432/app"));
        assert_eq!(
            get(&env, "API_SERVICE_PORT"),
            Some("override"),
            "declared wins"
        );
        assert_eq!(get(&env, "API_SERVICE_HOST"), Some("10.96.0.21"));
        assert_eq!(get(&env, "KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get(&env, "POD"), None, "unresolved without a live pod");
        // Declared first (in order), then the links nothing declared.
        assert_eq!(env[0].0, "DB_URL");
        assert_eq!(env[1].0, "API_SERVICE_PORT");
        assert_eq!(env[2].0, "API_SERVICE_HOST", "links sorted by Service name");
        assert_eq!(
            env.iter().filter(|(n, _)| n == "API_SERVICE_PORT").count(),
            1
        );

        let teleported = BTreeMap::from([("db".to_string(), Ipv4Addr::new(127, 3, 0, 4))]);
        let mut env2 = env.clone();
        relink(&mut env2, &spec, &teleported).unwrap();
        assert_eq!(get(&env2, "DB_SERVICE_HOST"), Some("127.3.0.4"));
        assert_eq!(get(&env2, "DB_PORT"), Some("tcp://127.3.0.4:5432"));
        assert_eq!(get(&env2, "DB_URL"), Some("postgres://127.3.0.4:5432/app"));
        assert_eq!(get(&env2, "API_SERVICE_HOST"), Some("10.96.0.21"));
        assert_eq!(get(&env2, "KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        let names = |e: &[(String, Vec<u8>)]| e.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(&env), names(&env2), "same variables, same order");
    }

    #[test]
    fn without_service_links_only_default_kubernetes_remains() {
        let env = prepared(Some(false)).relink.env(&BTreeMap::new()).unwrap();
        assert_eq!(get(&env, "DB_SERVICE_HOST"), None);
        assert_eq!(
            get(&env, "DB_URL"),
            Some("postgres://$(DB_SERVICE_HOST):$(DB_SERVICE_PORT)/app"),
            "stays literal, as the kubelet leaves it"
        );
        assert_eq!(get(&env, "KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
    }

    #[test]
    fn write_uses_the_addresses_and_prints_nothing_on_failure() {
        let dir = std::env::temp_dir().join(format!("czctl-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let options = |file: PathBuf| ExportOptions {
            kind: WorkloadKind::Deployment,
            name: "app".into(),
            namespace: Some("demo".into()),
            client: ClientOptions::default(),
            container: None,
            file: Some(file),
            format: Format::Json,
            command: vec!["true".into()],
            overwrite: false,
        };
        let teleported = BTreeMap::from([("db".to_string(), Ipv4Addr::new(127, 3, 0, 4))]);
        let bad = options(dir.join("missing-dir").join("x.json"));
        assert!(prepared(None).write(&bad, &teleported).is_err());

        let file = dir.join("app.json");
        let exported = prepared(None)
            .write(&options(file.clone()), &teleported)
            .unwrap();
        let written: BTreeMap<String, String> =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(written["DB_URL"], "postgres://127.3.0.4:5432/app");
        assert_eq!(written["DB_SERVICE_HOST"], "127.3.0.4");
        let command = exported.command.unwrap();
        assert_eq!(get(&command.env, "DB_SERVICE_HOST"), Some("127.3.0.4"));
        assert_eq!(exported.namespace, "demo");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn notes_come_before_resolution_warnings() {
        let p = prepared(None);
        let resolved = p.relink.resolve(&BTreeMap::new()).unwrap();
        let lines = messages(&p.notes, &resolved);
        assert_eq!(lines[0], "czctl: warning: a note");
        assert!(
            lines
                .last()
                .unwrap()
                .starts_with("czctl: warning: POD is not exported"),
            "{lines:?}"
        );
    }
}
