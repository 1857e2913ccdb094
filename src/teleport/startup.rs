//! Starting a teleport: the checks and preparations that happen before anything is
//! forwarded (hosts file access, namespaces, stale blocks, backup, the first lists), each
//! failing with a clear message and nothing changed.

use std::collections::{BTreeSet, HashSet};

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use tokio::sync::mpsc;
use tracing::info;

use super::engine::Engine;
use super::{Stop, TeleportOptions};
use crate::cluster::model::ObjectKey;
use crate::cluster::watch::{Kind, WatchEvent};
use crate::exit::{self, Code, Fatal};
use crate::hosts::{BlockId, Elevated, HostsEditor};

/// Removes stale czctl blocks (saying so) and backs up the hosts file once for the session.
pub(super) fn prepare_hosts(
    hosts: &HostsEditor,
    block: &BlockId,
    options: &TeleportOptions,
) -> Result<(), Fatal> {
    let local =
        |what: &str, e: &dyn std::fmt::Display| Fatal::new(Code::Local, format!("{what}: {e}"));
    let cleanup = hosts
        .remove_stale(&options.state_dir)
        .map_err(|e| local("cannot clean the hosts file", &e))?;
    // Said to the user also when starting in the background (see `say_progress`).
    for stale in &cleanup.removed {
        say_progress(
            options.detached,
            &format!(
                "removed a stale hosts block of session {} (pid {} no longer runs it, {} lines)",
                stale.session(),
                stale.pid(),
                stale.line_count()
            ),
        );
    }
    for broken in &cleanup.unterminated {
        say_progress(
            options.detached,
            &format!(
                "warning: {} has a czctl begin marker without an end marker at line {}; \
                 left alone, please fix it by hand",
                options.hosts_file.display(),
                broken.first_line_number()
            ),
        );
    }
    let backup = hosts
        .backup_once(&options.state_dir, block)
        .map_err(|e| local("cannot back up the hosts file", &e))?;
    info!(session = block.session(), backup = %backup.display(), "hosts file backed up");
    Ok(())
}

/// Waits for the first list of every watcher; returns every Service seen.
pub(super) async fn initial_sync(
    engine: &mut Engine,
    rx: &mut mpsc::Receiver<WatchEvent>,
    namespaces: &[String],
    labels: Option<&str>,
    stop: &mut Stop,
    detached: bool,
) -> Result<BTreeSet<ObjectKey>, Fatal> {
    let mut pending: HashSet<(String, Kind)> = namespaces
        .iter()
        .flat_map(|ns| {
            [
                (ns.clone(), Kind::Services),
                (ns.clone(), Kind::EndpointSlices),
            ]
        })
        .collect();
    let mut progress =
        tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_AFTER, PROGRESS_AFTER);
    while !pending.is_empty() {
        let event = tokio::select! {
            _ = stop.requested() => return Err(Fatal::new(Code::Failure, "stopped before the teleport was ready")),
            _ = progress.tick() => {
                let mut waiting: Vec<String> = pending
                    .iter()
                    .map(|(ns, kind)| format!("{} in {ns}", kind.plural()))
                    .collect();
                waiting.sort();
                say_progress(detached, &format!("waiting for the first list of {} from the API server", waiting.join(", ")));
                continue;
            }
            event = rx.recv() => event,
        };
        match event {
            Some(WatchEvent::Change(change)) => {
                engine.apply(change);
            }
            Some(WatchEvent::Synced {
                namespace,
                kind,
                present,
            }) => {
                engine.synced(&namespace, kind, &present);
                pending.remove(&(namespace, kind));
            }
            Some(WatchEvent::Failed {
                namespace,
                kind,
                error,
            }) => {
                return Err(watch_failure(&namespace, kind, labels, &error));
            }
            None => {
                return Err(Fatal::new(
                    Code::Failure,
                    "the watchers stopped before the first list",
                ))
            }
        }
    }
    Ok(engine.all_services(namespaces).into_iter().collect())
}

/// How long a start waits before saying what it waits for.
pub(crate) const PROGRESS_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// Says what a start is waiting for: on stderr, or, in a background child before it is
/// ready, on stdout, which its parent relays to the user's stderr.
pub(crate) fn say_progress(detached: bool, what: &str) {
    use std::io::Write;
    if detached {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "czctl: {what}");
        let _ = out.flush();
    } else {
        eprintln!("czctl: {what}");
    }
}

pub(super) fn watch_failure(
    namespace: &str,
    kind: Kind,
    labels: Option<&str>,
    error: &kube::runtime::watcher::Error,
) -> Fatal {
    use kube::runtime::watcher::Error as W;
    let selector = match (kind, labels) {
        (Kind::Services, Some(labels)) => format!(" with selector {}", exit::shown(labels)),
        _ => String::new(),
    };
    let namespace = exit::shown(namespace);
    let context = format!(
        "cannot list {} in namespace {namespace}{selector}",
        kind.plural()
    );
    match error {
        W::InitialListFailed(e) | W::WatchStartFailed(e) => {
            match labels {
                // The selector goes into the URL of every list and watch: too long for one.
                Some(labels) if exit::too_long(e) => Fatal::new(
                    Code::Usage,
                    format!(
                    "the selector given with -l is too long ({} characters): {}\nShorten it: a \
                     selector names labels, each key and value at most 63 characters.",
                    labels.chars().count(),
                    match e {
                        kube::Error::Api(_) => "the API server refused the request URL that \
                                                carries it (414 URI Too Long)",
                        _ => "the request URL that carries it would pass the 64 KiB limit of \
                              URLs",
                    }
                ),
                ),
                _ => exit::from_kube(&context, e),
            }
        }
        other => Fatal::new(Code::Config, format!("{context}: {other}")),
    }
}

pub(super) async fn check_namespace(
    client: &kube::Client,
    server: &str,
    namespace: &str,
) -> Result<(), Fatal> {
    let api: Api<Namespace> = Api::all(client.clone());
    match api.get(namespace).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(Fatal::new(
            Code::NotFound,
            format!(
                "namespace {} not found; list them with: kubectl get namespaces",
                exit::shown(namespace)
            ),
        )),
        // Namespace-scoped users (capsule tenants) may not read namespaces: go on.
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(()),
        Err(e) => Err(exit::from_kube(
            &format!(
                "cannot check namespace {} at {server}",
                exit::shown(namespace)
            ),
            &e,
        )),
    }
}

/// How this run edits the hosts file: directly, through the root helper a `--detach` parent
/// handed over, or through a new one started with sudo. Fails before anything changes when
/// none of these works.
pub(super) fn open_hosts(options: &TeleportOptions) -> Result<HostsEditor, Fatal> {
    let inherited = options
        .detached
        .then(|| Elevated::inherited(&options.hosts_file, &options.state_dir))
        .flatten();
    let editor = match inherited {
        Some(helper) => helper.map(HostsEditor::Elevated).map_err(Into::into),
        None => HostsEditor::open(&options.hosts_file, &options.state_dir, None),
    }
    .map_err(|e| Fatal::new(Code::Local, e.to_string()))?;
    if let Some(pid) = editor.helper_pid() {
        eprintln!(
            "czctl: {} is edited by a helper running as root (pid {pid}, started with sudo); \
             everything else runs as you",
            options.hosts_file.display()
        );
    }
    Ok(editor)
}

/// Raises the open-file soft limit to the hard limit: every listener and connection is a file.
pub(super) fn raise_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    let value = |v: Option<u64>| v.unwrap_or(u64::MAX);
    if value(limit.current) < value(limit.maximum) {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        // Best effort: at the soft limit czctl still works, with fewer ports and connections.
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "cannot raise the open-file soft limit");
        }
    }
}
