//! Starting a teleport: the checks and preparations that happen before anything is
//! forwarded (hosts file access, namespaces, stale blocks, backup, the first lists), each
//! failing with a clear message and nothing changed. What blocks (sudo, the hosts file's lock,
//! the root helper's round trips) runs on a blocking thread.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

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

/// Runs `f` on a blocking thread (a panic there is passed on).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Fatal> {
    match tokio::task::spawn_blocking(f).await {
        Ok(out) => Ok(out),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Fatal::new(Code::Failure, "stopped while starting")),
    }
}

/// Removes stale czctl blocks (saying so) and backs up the hosts file once for the session.
pub(super) async fn prepare_hosts(
    hosts: &Arc<HostsEditor>,
    block: &BlockId,
    options: &TeleportOptions,
) -> Result<(), Fatal> {
    let (hosts, block) = (hosts.clone(), block.clone());
    let (state_dir, hosts_file) = (options.state_dir.clone(), options.hosts_file.clone());
    let detached = options.detached;
    blocking(move || prepare_blocking(&hosts, &block, &state_dir, &hosts_file, detached)).await?
}

fn prepare_blocking(
    hosts: &HostsEditor,
    block: &BlockId,
    state_dir: &std::path::Path,
    hosts_file: &std::path::Path,
    detached: bool,
) -> Result<(), Fatal> {
    let local =
        |what: &str, e: &dyn std::fmt::Display| Fatal::new(Code::Local, format!("{what}: {e}"));
    let cleanup = hosts
        .remove_stale(state_dir)
        .map_err(|e| local("cannot clean the hosts file", &e))?;
    // Said to the user also when starting in the background (see `say_progress`).
    for stale in &cleanup.removed {
        say_progress(
            detached,
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
            detached,
            &format!(
                "warning: {} has a czctl begin marker without an end marker at line {}; \
                 left alone, please fix it by hand",
                hosts_file.display(),
                broken.first_line_number()
            ),
        );
    }
    let backup = hosts
        .backup_once(state_dir, block)
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
/// handed over, or through a new one started with sudo (which may ask for a password on the
/// terminal: on a blocking thread). Fails before anything changes when none of these works.
pub(super) async fn open_hosts(options: &TeleportOptions) -> Result<HostsEditor, Fatal> {
    let (hosts_file, state_dir): (PathBuf, PathBuf) =
        (options.hosts_file.clone(), options.state_dir.clone());
    let detached = options.detached;
    blocking(move || {
        let inherited = detached
            .then(|| Elevated::inherited(&hosts_file, &state_dir))
            .flatten();
        let editor = match inherited {
            Some(helper) => helper.map(HostsEditor::Elevated).map_err(Into::into),
            None => HostsEditor::open(&hosts_file, &state_dir, None),
        }
        .map_err(|e| Fatal::new(Code::Local, e.to_string()))?;
        if let Some(pid) = editor.helper_pid() {
            eprintln!(
                "czctl: {} is edited by a helper running as root (pid {pid}, started with \
                 sudo); everything else runs as you",
                hosts_file.display()
            );
        }
        Ok(editor)
    })
    .await?
}

/// Ends the root helper, if one edits the hosts file, and waits for it on a blocking thread.
pub(super) async fn close_hosts(hosts: Arc<HostsEditor>) {
    if hosts.helper().is_some() {
        let _ = blocking(move || hosts.close()).await;
    }
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
