//! The teleport engine: applies watch events to the model, turns the plan into running
//! listeners, addresses and hosts entries, and reports every change.
//!
//! All effects go through here, in one task: allocation (one registry lock per batch), binding
//! (the bind is the "is this address free" check), hosts-file updates (one write per batch,
//! re-reading the file first), and teardown.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, TcpListener as StdListener};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use loopback::alloc::Registry;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::plan::{self, Desired, Naming};
use super::report::Report;
use crate::cluster::model::{Change, Model, ObjectKey, ServiceView};
use crate::cluster::watch::Kind;
use crate::forward::listener;
use crate::forward::target::Target;
use crate::forward::transport::Transport;
use crate::hosts::{BlockId, Entry, HostsEditor};
use crate::session::control::StatusFn;
use crate::session::status::{Forward, Note, PodState, Status};

/// One running address.
struct Running {
    addr: Ipv4Addr,
    target: Arc<Target>,
    names: Vec<String>,
    /// Listen port → its stop token.
    listeners: BTreeMap<u16, CancellationToken>,
}

/// Why the engine could not do what it must.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Addresses could not be allocated.
    #[error("cannot allocate loopback addresses: {0}")]
    Alloc(#[from] loopback::alloc::AllocError),
    /// The hosts file could not be updated.
    #[error("{0}")]
    Hosts(#[from] crate::hosts::EditError),
}

/// What the control socket reads: a copy of the forwarding table, refreshed after every
/// reconcile, with live counters through the shared targets.
#[derive(Default)]
struct Published {
    forwards: Vec<Shown>,
    notes: Vec<Note>,
}

/// One forward as published: its key, address, names and ports, and its live target.
struct Shown {
    key: String,
    addr: Ipv4Addr,
    names: Vec<String>,
    ports: Vec<u16>,
    target: Arc<Target>,
}

impl Published {
    fn status(&self) -> Status {
        let forwards = self
            .forwards
            .iter()
            .map(
                |Shown {
                     key,
                     addr,
                     names,
                     ports,
                     target,
                 }| {
                    let pod_host = target
                        .pinned
                        .as_ref()
                        .and_then(|_| key.rsplit('/').next().map(str::to_string));
                    Forward {
                        name: match &pod_host {
                            Some(host) => format!("{}/{host}", target.service),
                            None => target.service.to_string(),
                        },
                        service: target.service.to_string(),
                        pod_host,
                        address: addr.to_string(),
                        names: names.clone(),
                        ports: ports.clone(),
                        pods: target
                            .backends()
                            .iter()
                            .map(|b| PodState {
                                name: b.pod.clone(),
                                ready: b.ready,
                            })
                            .collect(),
                        last_pod: target.stats.last_pod(),
                        open_connections: target.stats.open.load(Ordering::Relaxed),
                        total_connections: target.stats.total.load(Ordering::Relaxed),
                        bytes_up: target.stats.bytes_up.load(Ordering::Relaxed),
                        bytes_down: target.stats.bytes_down.load(Ordering::Relaxed),
                        last_error: target.stats.last_error(),
                    }
                },
            )
            .collect();
        Status {
            forwards,
            notes: self.notes.clone(),
            protocol: None,
        }
    }
}

/// The running teleport.
pub struct Engine {
    published: Arc<RwLock<Published>>,
    naming: Naming,
    model: Model,
    registry: Registry,
    transport: Arc<dyn Transport>,
    hosts: HostsEditor,
    block: BlockId,
    running: BTreeMap<String, Running>,
    report: Report,
    /// The namespaces and the Service selector, when one was given: a namespace where it
    /// matches nothing is reported.
    selected: Option<(Vec<String>, String)>,
}

impl Engine {
    /// An engine with nothing running yet.
    pub fn new(
        naming: Naming,
        registry: Registry,
        transport: Arc<dyn Transport>,
        hosts: HostsEditor,
        block: BlockId,
        report: Report,
    ) -> Self {
        Engine {
            published: Arc::default(),
            naming,
            model: Model::default(),
            registry,
            transport,
            hosts,
            block,
            running: BTreeMap::new(),
            report,
            selected: None,
        }
    }

    /// Reports namespaces of `namespaces` where `selector` matches no Service.
    pub fn watch_selector(&mut self, namespaces: &[String], selector: &str) {
        self.selected = Some((namespaces.to_vec(), selector.to_string()));
    }

    /// Notes about whole namespaces (`NS/*`): a selector that matches nothing there.
    pub fn namespace_notes(&self) -> Vec<Note> {
        let Some((namespaces, selector)) = &self.selected else {
            return Vec::new();
        };
        namespaces
            .iter()
            .filter(|ns| self.model.services_in(ns).is_empty())
            .map(|ns| Note {
                service: format!("{ns}/*"),
                note: format!(
                    "no Service matches the selector {}",
                    crate::exit::shown(selector)
                ),
            })
            .collect()
    }

    /// Applies a model change; returns the Service it concerns.
    pub fn apply(&mut self, change: Change) -> Option<ObjectKey> {
        self.model.apply(change)
    }

    /// After a (re)list: forgets what the list no longer has; returns the Services touched.
    pub fn synced(
        &mut self,
        namespace: &str,
        kind: Kind,
        present: &HashSet<ObjectKey>,
    ) -> Vec<ObjectKey> {
        let (services, slices) = self.model.keys_in(namespace);
        let stale: Vec<Change> = match kind {
            Kind::Services => services
                .into_iter()
                .filter(|k| !present.contains(k))
                .map(Change::ServiceDeleted)
                .collect(),
            Kind::EndpointSlices => slices
                .into_iter()
                .filter(|k| !present.contains(k))
                .map(Change::SliceDeleted)
                .collect(),
        };
        stale
            .into_iter()
            .filter_map(|c| self.model.apply(c))
            .collect()
    }

    /// Every Service of the given namespaces (for the first reconcile).
    pub fn all_services(&self, namespaces: &[String]) -> Vec<ObjectKey> {
        namespaces
            .iter()
            .flat_map(|ns| self.model.services_in(ns))
            .collect()
    }

    /// Brings the running state of `services` in line with the model, then writes the hosts
    /// file once if any name or address changed.
    pub fn reconcile(&mut self, services: &BTreeSet<ObjectKey>) -> Result<(), EngineError> {
        let mut wanted: BTreeMap<String, Desired> = BTreeMap::new();
        let mut views: Vec<ServiceView> = Vec::new();
        for key in services {
            if let Some(view) = self.model.view(key) {
                wanted.extend(plan::desired(&self.naming, &view));
                views.push(view);
            }
        }
        let mut hosts_dirty = false;
        // Stop what is no longer wanted.
        let gone: Vec<String> = self
            .running
            .iter()
            .filter(|(k, r)| services.contains(&r.target.service) && !wanted.contains_key(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &gone {
            if let Some(running) = self.running.remove(key) {
                for token in running.listeners.values() {
                    token.cancel();
                }
                self.report
                    .removed(key, &running.target.service, running.addr);
                hosts_dirty = true;
            }
        }
        if !gone.is_empty() {
            self.registry.release(&gone)?;
        }
        // Update what runs and is still wanted; collect what is new.
        let mut new: Vec<(String, Desired)> = Vec::new();
        for (key, desired) in wanted {
            match self.running.get_mut(&key) {
                Some(running) => {
                    hosts_dirty |= update(
                        running,
                        &desired,
                        &self.transport,
                        &self.hosts,
                        &mut self.report,
                        &key,
                    );
                }
                None => new.push((key, desired)),
            }
        }
        if !new.is_empty() {
            hosts_dirty = true;
            self.start(new)?;
        }
        for view in &views {
            let withheld = plan::withheld_note(&self.naming, view);
            self.report.service(view, &withheld);
        }
        if hosts_dirty {
            self.write_hosts()?;
        }
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        let forwards = self
            .running
            .iter()
            .map(|(k, r)| Shown {
                key: k.clone(),
                addr: r.addr,
                names: r.names.clone(),
                ports: r.listeners.keys().copied().collect(),
                target: r.target.clone(),
            })
            .collect();
        let mut notes: Vec<Note> = self
            .report
            .notes()
            .map(|(k, n)| Note {
                service: k.to_string(),
                note: n.to_string(),
            })
            .collect();
        notes.extend(self.namespace_notes());
        notes.sort_by(|a, b| a.service.cmp(&b.service));
        *self.published.write().unwrap_or_else(|e| e.into_inner()) = Published { forwards, notes };
    }

    /// A function the control socket calls for the current status.
    pub fn status_fn(&self) -> StatusFn {
        let published = self.published.clone();
        let transport = self.transport.clone();
        Arc::new(move || {
            let mut status = published.read().unwrap_or_else(|e| e.into_inner()).status();
            status.protocol = transport.protocol();
            status
        })
    }

    /// Allocates addresses for new forwards (one registry lock for all), binding their
    /// listeners as the freeness check, and starts serving them.
    fn start(&mut self, new: Vec<(String, Desired)>) -> Result<(), EngineError> {
        let keys: Vec<String> = new.iter().map(|(k, _)| k.clone()).collect();
        let ports: HashMap<&str, Vec<u16>> = new
            .iter()
            .map(|(k, d)| (k.as_str(), d.ports.keys().copied().collect()))
            .collect();
        let mut bound: HashMap<String, Vec<(u16, StdListener)>> = HashMap::new();
        let mut denied: Vec<(String, u16)> = Vec::new();
        let hosts = &self.hosts;
        let addrs = self.registry.allocate(&keys, |key, addr| {
            let mut listeners = Vec::new();
            let mut refused = Vec::new();
            for &port in ports.get(key).map(Vec::as_slice).unwrap_or(&[]) {
                match hosts.listen(addr, port) {
                    Ok(l) => listeners.push((port, l)),
                    // Not this address's fault: this user may not bind the port anywhere.
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                        refused.push(port)
                    }
                    Err(_) => return false,
                }
            }
            denied.extend(refused.into_iter().map(|port| (key.to_string(), port)));
            bound.insert(key.to_string(), listeners);
            true
        })?;
        let service_of: HashMap<&str, &ObjectKey> =
            new.iter().map(|(k, d)| (k.as_str(), &d.service)).collect();
        for (key, port) in &denied {
            warn!(
                "port {port} of {key} is not forwarded: this user may not listen on ports \
                 below 1024 (net.ipv4.ip_unprivileged_port_start); run czctl with sudo or \
                 lower that limit"
            );
            if let Some(service) = service_of.get(key.as_str()) {
                self.report.denied(service, *port);
            }
        }
        for ((key, desired), addr) in new.into_iter().zip(addrs) {
            let target = Arc::new(Target::new(
                desired.service.clone(),
                desired.pinned.clone(),
                desired.ports.clone(),
                desired.backends.clone(),
            ));
            let mut listeners = BTreeMap::new();
            for (port, l) in bound.remove(&key).unwrap_or_default() {
                let stop = CancellationToken::new();
                match listener::serve(l, target.clone(), self.transport.clone(), stop.clone()) {
                    Ok(()) => {
                        listeners.insert(port, stop);
                    }
                    Err(e) => warn!(%addr, port, error = %e, "cannot serve listener"),
                }
            }
            self.report.added(&key, &desired, addr);
            self.running.insert(
                key,
                Running {
                    addr,
                    target,
                    names: desired.names,
                    listeners,
                },
            );
        }
        Ok(())
    }

    fn write_hosts(&mut self) -> Result<(), EngineError> {
        let entries: Vec<Entry> = self
            .running
            .values()
            .filter_map(|r| match Entry::new(r.addr, r.names.iter()) {
                Ok(entry) => Some(entry),
                Err(e) => {
                    warn!(addr = %r.addr, error = %e, "name not written to the hosts file");
                    None
                }
            })
            .collect();
        self.hosts.update(&self.block, &entries)?;
        Ok(())
    }

    /// The running forwards, for the ready table and status.
    pub fn running(
        &self,
    ) -> impl Iterator<Item = (&str, Ipv4Addr, &[String], Vec<u16>, &Arc<Target>)> {
        self.running.iter().map(|(k, r)| {
            (
                k.as_str(),
                r.addr,
                r.names.as_slice(),
                r.listeners.keys().copied().collect(),
                &r.target,
            )
        })
    }

    /// The reporter.
    pub fn report(&mut self) -> &mut Report {
        &mut self.report
    }

    /// The model, for reporting services that are not forwarded.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Stops every listener, removes the hosts block and releases the addresses.
    pub fn teardown(&mut self) -> Result<(), EngineError> {
        let keys: Vec<String> = self.running.keys().cloned().collect();
        for running in self.running.values() {
            for token in running.listeners.values() {
                token.cancel();
            }
        }
        self.running.clear();
        self.publish();
        let hosts = self.hosts.remove(&self.block);
        let released = self.registry.release(&keys);
        hosts?;
        released?;
        Ok(())
    }
}

/// Applies a changed plan to a running address; returns whether names changed.
fn update(
    running: &mut Running,
    desired: &Desired,
    transport: &Arc<dyn Transport>,
    hosts: &HostsEditor,
    report: &mut Report,
    key: &str,
) -> bool {
    if running.target.set_backends(desired.backends.clone()) {
        report.backends(key, &desired.service, &desired.backends);
    }
    running.target.set_ports(desired.ports.clone());
    for (port, token) in &running.listeners {
        if !desired.ports.contains_key(port) {
            token.cancel();
        }
    }
    running
        .listeners
        .retain(|port, _| desired.ports.contains_key(port));
    for &port in desired.ports.keys() {
        if running.listeners.contains_key(&port) {
            continue;
        }
        let stop = CancellationToken::new();
        let served = hosts.listen(running.addr, port).and_then(|l| {
            listener::serve(l, running.target.clone(), transport.clone(), stop.clone())
        });
        match served {
            Ok(()) => {
                running.listeners.insert(port, stop);
            }
            Err(e) => {
                warn!(addr = %running.addr, port, error = %e, "cannot listen on a new service port")
            }
        }
    }
    let names_changed = running.names != desired.names;
    running.names = desired.names.clone();
    names_changed
}
