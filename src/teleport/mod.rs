//! `czctl namespace teleport`: every Service of the namespaces gets a loopback address, hosts
//! names and listeners that stream to ready pods, kept live until SIGINT or SIGTERM.
//!
//! - [`plan`]: what should run, from the model (pure).
//! - [`engine`]: makes it run: addresses, listeners, hosts block; teardown.
//! - `effects`: what the engine does to the machine, behind traits (fakes in its tests).
//! - [`report`]: the ready table and change lines on stdout.
//! - `startup`: the checks and preparations before anything is forwarded.
//! - [`command`]: a command run under the teleport (`KIND teleport NAME -- CMD`).
//! - [`launch`]: reuse a live session, start one in the background (default), or run here.
//! - [`leftovers`]: what a crashed teleport left (hosts block, addresses), for `session close`.
//!
//! Order of a run: make sure the hosts file can be edited, directly or through a root helper
//! started once with sudo (nothing changes before that), build the client (always as the
//! invoking user), check the namespaces, clean stale hosts blocks, back up the hosts file,
//! start the watchers, wait for every first list, start everything in one batch, print the
//! table, then follow changes. Teardown removes the block and releases the addresses.

pub mod command;
mod effects;
pub mod engine;
pub mod launch;
pub mod leftovers;
pub mod plan;
pub mod report;
mod startup;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use loopback::alloc::Registry;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cluster::client::{self, ClientOptions};
use crate::cluster::model::ObjectKey;
use crate::cluster::watch::{self, WatchEvent};
use crate::detach::ParentWatch;
use crate::exit::{Code, Fatal};
use crate::forward::listener::Binder;
use crate::forward::spdy::{PortForward, Preference};
use crate::hosts::BlockId;
use crate::session::claim::Want;
use crate::session::control;
use crate::session::record;
use crate::session::runtime::{announce_detached, session_id, Stop};
use effects::Effects;
use engine::Engine;
use plan::Naming;
use report::Report;
use startup::{
    check_namespace, close_hosts, initial_sync, open_hosts, prepare_hosts, raise_file_limit,
};

/// How long a burst of watch events is batched before reconciling.
const BATCH: Duration = Duration::from_millis(20);

/// Everything a teleport needs to know.
#[derive(Debug, Clone)]
pub struct TeleportOptions {
    /// Namespaces; the first one's Services also get their bare names.
    pub namespaces: Vec<String>,
    /// Client configuration.
    pub client: ClientOptions,
    /// Only Services matching this label selector.
    pub labels: Option<String>,
    /// The hosts file to edit.
    pub hosts_file: PathBuf,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// czctl's state directory (hosts backups).
    pub state_dir: PathBuf,
    /// The address registry directory shared by all czctl runs.
    pub registry_dir: PathBuf,
    /// Use this session id (a detached child gets it from its parent).
    pub session: Option<String>,
    /// Running as the background child of `--detach`.
    pub detached: bool,
    /// Run this command once ready; the session ends when it exits.
    pub command: Option<command::CommandSpec>,
    /// How long connecting and the first checks may take before the start gives up.
    pub timeout: Duration,
    /// Called once when ready with the address of every Service (`namespace/name`); what it
    /// returns replaces `command` (a workload export writes its file here, with the loopback
    /// addresses in its Service links).
    pub on_ready: Option<OnReady>,
}

/// A one-shot call when a teleport is ready; see [`TeleportOptions::on_ready`].
#[derive(Clone)]
pub struct OnReady(Arc<std::sync::Mutex<Option<ReadyFn>>>);

/// What [`OnReady`] runs.
pub type ReadyFn = Box<
    dyn FnOnce(&BTreeMap<String, Ipv4Addr>) -> Result<Option<command::CommandSpec>, Fatal> + Send,
>;

impl OnReady {
    /// Wraps `f`.
    pub fn new(f: ReadyFn) -> OnReady {
        OnReady(Arc::new(std::sync::Mutex::new(Some(f))))
    }

    /// Runs it (only the first time).
    pub fn call(
        &self,
        addresses: &BTreeMap<String, Ipv4Addr>,
    ) -> Result<Option<command::CommandSpec>, Fatal> {
        let f = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        f.map_or(Ok(None), |f| f(addresses))
    }
}

impl std::fmt::Debug for OnReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnReady")
    }
}

/// Runs a teleport until SIGINT/SIGTERM or a `session close`.
pub async fn run(options: TeleportOptions) -> Result<i32, Fatal> {
    let started_at = std::time::Instant::now();
    let phase = |name: &str| {
        info!(
            elapsed_ms = started_at.elapsed().as_millis() as u64,
            "{name}"
        )
    };
    let parent = options.detached.then(ParentWatch::start);
    let preference = Preference::from_env().map_err(|e| Fatal::new(Code::Usage, e))?;
    let mut stop = Stop::install()?;
    raise_file_limit();
    let session = options.session.clone().unwrap_or_else(session_id);
    // Until the hosts file is touched, a signal or a cluster that does not answer ends the
    // start at once (kube runs exec credential plugins synchronously: only a task of its own
    // can still act).
    let guard = {
        let (state_dir, id) = (options.state_dir.clone(), session.clone());
        crate::session::guard::arm(
            format!(
                "connecting to the cluster for a teleport of {}",
                options.namespaces.join(", ")
            ),
            options.timeout,
            move || crate::session::claim::release(&state_dir, &id, std::process::id()),
        )?
    };
    let hosts = Arc::new(open_hosts(&options).await?);
    let connected = client::connect(&options.client)
        .await
        .map_err(|e| Fatal::new(Code::Config, e.to_string()))?;
    phase("client ready");
    for ns in &options.namespaces {
        check_namespace(&connected.client, &connected.server, ns).await?;
    }
    phase("namespaces checked");
    drop(guard);
    let block = BlockId::new(session.clone(), std::process::id())
        .map_err(|e| Fatal::new(Code::Usage, e.to_string()))?;
    prepare_hosts(&hosts, &block, &options).await?;
    let mut record = want(&options, &connected.context, &connected.server).record(
        &session,
        std::process::id(),
        &options.state_dir,
    );
    let local = |e: &dyn std::fmt::Display| Fatal::new(Code::Local, e.to_string());
    record.save(&options.state_dir).map_err(|e| local(&e))?;
    phase("session recorded, hosts file checked and backed up");

    let (tx, mut rx) = mpsc::channel(1024);
    for ns in &options.namespaces {
        watch::spawn(&connected.client, ns, options.labels.as_deref(), tx.clone());
    }
    drop(tx);
    let naming = Naming {
        context: connected.context.clone(),
        first_namespace: options.namespaces[0].clone(),
        cluster_domain: options.cluster_domain.clone(),
    };
    let transport = Arc::new(PortForward::new(connected.streams.clone(), preference));
    let effects = Effects {
        addresses: Arc::new(Registry::new(options.registry_dir.clone())),
        hosts: hosts.clone(),
        listeners: Arc::new(Binder::new(
            transport.clone(),
            effects::privileged_binds(&hosts),
        )),
    };
    let mut engine = Engine::new(naming, effects, block, Report::default());
    if let Some(selector) = &options.labels {
        engine.watch_selector(&options.namespaces, selector);
    }
    let control_stop = CancellationToken::new();
    let _stop_control = control_stop.clone().drop_guard();
    if let Err(e) = control::serve(
        &record.socket,
        engine.status_fn(transport),
        stop.close_tx.clone(),
        control_stop,
    ) {
        record.remove(&options.state_dir);
        return Err(local(&format!(
            "cannot open the control socket {}: {e}",
            record.socket.display()
        )));
    }

    let result = async {
        let synced = initial_sync(&mut engine, &mut rx, &options.namespaces, options.labels.as_deref(), &mut stop, options.detached);
        let all = tokio::select! {
            all = synced => all?,
            why = ParentWatch::wait_gone(parent) => return Err(Fatal::new(Code::Failure, format!("stopped before it was ready: {why}"))),
        };
        phase("first lists received");
        engine.reconcile(&all).await.map_err(|e| local(&e))?;
        phase("addresses, listeners and hosts entries in place");
        // The lists' parsing left freed buffers behind (megabytes at 10,000 Services).
        crate::forward::memory::trim();
        print_table(&mut engine, &all, options.command.is_some());
        if options.command.is_none() {
            // With a command, stdout is the command's: change lines stay off it.
            engine.report().go_live();
        }
        record.state = crate::session::record::SessionState::Ready;
        record.save(&options.state_dir).map_err(|e| local(&e))?;
        let addresses = engine.running().count();
        match &options.command {
            Some(command) => eprintln!(
                "czctl: teleport ready (session {session}, {addresses} addresses); running {}; the teleport ends with it",
                command.argv.first().map(|a| a.to_string_lossy()).unwrap_or_default()
            ),
            None if options.detached => {}
            None => eprintln!(
                "czctl: teleport ready (session {session}, {addresses} addresses); stop with Ctrl-C or: czctl session close {session}"
            ),
        }
        let mut command = options.command.clone();
        if let Some(hook) = &options.on_ready {
            let addresses: BTreeMap<String, Ipv4Addr> = engine
                .running()
                .filter(|(key, _, _, _, _)| key.pod_host.is_none())
                .map(|(key, addr, _, _, _)| (key.service.to_string(), addr))
                .collect();
            if let Some(spec) = hook.call(&addresses)? {
                command = Some(spec);
            }
        }
        if options.detached {
            announce_detached(&session);
        }
        let child = command.as_ref().map(command::spawn).transpose()?;
        follow(&mut engine, &mut rx, &mut stop, child).await
    }
    .await;
    let teardown = engine.teardown().await;
    record.remove(&options.state_dir);
    if teardown.is_ok() {
        record::remove_backup(&options.state_dir, &session);
    }
    close_hosts(hosts).await;
    let code = result?;
    teardown.map_err(|e| Fatal::new(Code::Local, format!("teardown: {e}")))?;
    Ok(code)
}

/// What a teleport with these options is, for its record and for finding a session to reuse.
pub fn want(options: &TeleportOptions, context: &str, server: &str) -> Want {
    Want {
        namespaces: options.namespaces.clone(),
        context: context.to_string(),
        server: server.to_string(),
        hosts_file: options.hosts_file.clone(),
        selector: options.labels.clone(),
        cluster_domain: options.cluster_domain.clone(),
        group: crate::session::group::current(),
    }
}

/// Follows watch events until asked to stop, or, with a command, until the command exits
/// (stop requests are then passed on to it); returns the exit code to end with.
async fn follow(
    engine: &mut Engine,
    rx: &mut mpsc::Receiver<WatchEvent>,
    stop: &mut Stop,
    mut child: Option<tokio::process::Child>,
) -> Result<i32, Fatal> {
    loop {
        let mut dirty = BTreeSet::new();
        let exited = async {
            match child.as_mut() {
                Some(c) => c.wait().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            signal = stop.requested() => match &child {
                Some(c) => command::forward(c, signal),
                None => return Ok(0),
            },
            status = exited => {
                let status = status.map_err(|e| Fatal::new(Code::Local, format!("cannot wait for the command: {e}")))?;
                return Ok(command::code_of(status));
            }
            event = rx.recv() => {
                let Some(event) = event else { return Ok(0) };
                handle(engine, event, &mut dirty);
                tokio::time::sleep(BATCH).await;
                while let Ok(event) = rx.try_recv() {
                    handle(engine, event, &mut dirty);
                }
            }
        }
        if let Err(e) = engine.reconcile(&dirty).await {
            warn!(error = %e, "could not apply a change; will retry on the next one");
        }
    }
}

fn handle(engine: &mut Engine, event: WatchEvent, dirty: &mut BTreeSet<ObjectKey>) {
    match event {
        WatchEvent::Change(change) => dirty.extend(engine.apply(change)),
        WatchEvent::Synced {
            namespace,
            kind,
            present,
        } => dirty.extend(engine.synced(&namespace, kind, &present)),
        WatchEvent::Failed {
            namespace,
            kind,
            error,
        } => {
            warn!(%namespace, kind = kind.plural(), %error, "watch failed; listeners stay bound, retrying with backoff");
        }
    }
}

fn print_table(engine: &mut Engine, services: &BTreeSet<ObjectKey>, to_stderr: bool) {
    let mut rows = Vec::new();
    for (key, addr, names, ports, _) in engine.running() {
        let label = key.to_string();
        let ports: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
        rows.push([label, addr.to_string(), ports.join(","), names.join(" ")]);
    }
    let running: BTreeSet<String> = rows.iter().map(|r| r[0].clone()).collect();
    for key in services {
        let note = engine.report().note_of(key).to_string();
        if note.is_empty() {
            continue;
        }
        let label = key.to_string();
        // A forwarded Service's note goes on a line of its own under it.
        let blank = if running.contains(&label) { "" } else { "-" };
        rows.push([label, blank.into(), blank.into(), note]);
    }
    for note in engine.namespace_notes() {
        rows.push([note.service, "-".into(), "-".into(), note.note]);
    }
    rows.sort_by(|a, b| (&a[0], a[1].is_empty(), &a[1]).cmp(&(&b[0], b[1].is_empty(), &b[1])));
    report::table(rows, to_stderr);
}
