//! The teleport engine: applies watch events to the model, decides what must change for the
//! plan to run (addresses, listeners, hosts entries), has it done through its
//! effects (`teleport::effects`), and reports every change.
//!
//! The decisions are the engine's own; the effects are traits, real in a teleport and fake in
//! the tests below. Effects that block (the registry's and the hosts file's locks, round trips
//! to the root helper) run off the runtime's workers (see `blocking`), batched: per reconcile
//! one allocation (every new listener is bound inside it: the bind is the "is this address
//! free" check), one release, one batch of listeners for new ports, one hosts-file write
//! (re-reading the file first).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, TcpListener as StdListener};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use loopback::alloc::AllocError;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::effects::{Addresses, Effects, Listeners};
use super::plan::{self, Desired, ForwardKey, Naming};
use super::report::Report;
use crate::cluster::model::{Change, Model, ObjectKey, ServiceView};
use crate::cluster::watch::Kind;
use crate::forward::target::Target;
use crate::forward::transport::Transport;
use crate::hosts::{BlockId, Entry};
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
    /// The runtime shut down before a blocking effect could run.
    #[error("the runtime stopped before {0}")]
    Interrupted(&'static str),
}

/// What the control socket reads: a copy of the forwarding table, refreshed after every
/// reconcile, with live counters through the shared targets.
#[derive(Default)]
struct Published {
    forwards: Vec<Shown>,
    notes: Vec<Note>,
}

/// One forward as published: its pod host (per-pod addresses), address, names and ports,
/// and its live target.
struct Shown {
    pod_host: Option<String>,
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
                     pod_host,
                     addr,
                     names,
                     ports,
                     target,
                 }| {
                    let pod_host = pod_host.clone();
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
    effects: Effects,
    block: BlockId,
    running: BTreeMap<ForwardKey, Running>,
    report: Report,
    /// The namespaces and the Service selector, when one was given: a namespace where it
    /// matches nothing is reported.
    selected: Option<(Vec<String>, String)>,
    /// Services whose last reconcile failed (an allocation or release): tried again with the
    /// next one, whatever it is about.
    retry: BTreeSet<ObjectKey>,
    /// The last hosts write failed: the next reconcile writes even if no name changed.
    hosts_stale: bool,
    /// Allocation keys of stopped forwards whose release failed: released with the next ones.
    unreleased: Vec<String>,
}

/// What a new batch of forwards got from one allocation, by position in the batch.
struct Allocated {
    addrs: Vec<Ipv4Addr>,
    /// The listeners bound at each address, by port.
    bound: Vec<Vec<(u16, StdListener)>>,
    /// The ports this user may not listen on, per forward.
    denied: Vec<Vec<u16>>,
}

impl Engine {
    /// An engine with nothing running yet; `block` is the hosts block it keeps.
    pub(crate) fn new(naming: Naming, effects: Effects, block: BlockId, report: Report) -> Self {
        Engine {
            published: Arc::default(),
            naming,
            model: Model::default(),
            effects,
            block,
            running: BTreeMap::new(),
            report,
            selected: None,
            retry: BTreeSet::new(),
            hosts_stale: false,
            unreleased: Vec::new(),
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

    /// Brings the running state of `services` in line with the model: stops and releases
    /// what is no longer wanted, updates what runs (backends, ports, names), starts what is
    /// new, then writes the hosts file once if any name or address changed. After an error
    /// the next reconcile also takes the Services this one could not finish, and writes the
    /// hosts file if this one could not.
    pub async fn reconcile(&mut self, services: &BTreeSet<ObjectKey>) -> Result<(), EngineError> {
        let retry = std::mem::take(&mut self.retry);
        let combined: BTreeSet<ObjectKey>;
        let services = if retry.is_empty() {
            services
        } else {
            combined = services.union(&retry).cloned().collect();
            &combined
        };
        let result = self.reconcile_now(services).await;
        if let Err(EngineError::Alloc(_) | EngineError::Interrupted(_)) = &result {
            self.retry = services.clone();
        }
        self.publish();
        result
    }

    async fn reconcile_now(&mut self, services: &BTreeSet<ObjectKey>) -> Result<(), EngineError> {
        let mut wanted: BTreeMap<ForwardKey, Desired> = BTreeMap::new();
        let mut views: Vec<ServiceView> = Vec::new();
        for key in services {
            if let Some(view) = self.model.view(key) {
                wanted.extend(plan::desired(&self.naming, &view));
                views.push(view);
            }
        }
        let mut hosts_dirty = false;
        // Stop what is no longer wanted.
        let gone: Vec<ForwardKey> = self
            .running
            .keys()
            .filter(|k| services.contains(&*k.service) && !wanted.contains_key(*k))
            .cloned()
            .collect();
        // Keys a failed release kept go with this one.
        let mut released = std::mem::take(&mut self.unreleased);
        for key in gone {
            if let Some(running) = self.running.remove(&key) {
                for token in running.listeners.values() {
                    token.cancel();
                }
                self.report.removed(&key, running.addr);
                released.push(self.naming.alloc_key(&key));
                hosts_dirty = true;
            }
        }
        if !released.is_empty() {
            let addresses = self.effects.addresses.clone();
            let (released, result) = blocking("releasing addresses", move || {
                let result = addresses.release(&released);
                (released, result)
            })
            .await?;
            if let Err(e) = result {
                self.unreleased = released;
                self.hosts_stale |= hosts_dirty;
                return Err(e.into());
            }
        }
        // Update what runs and is still wanted; collect what is new.
        let mut new: Vec<(ForwardKey, Desired)> = Vec::new();
        let mut more_ports: Vec<(ForwardKey, u16)> = Vec::new();
        for (key, desired) in wanted {
            match self.running.get_mut(&key) {
                Some(running) => {
                    hosts_dirty |= update(running, &desired, &mut self.report, &key);
                    more_ports.extend(
                        desired
                            .ports
                            .keys()
                            .filter(|port| !running.listeners.contains_key(port))
                            .map(|&port| (key.clone(), port)),
                    );
                }
                None => new.push((key, desired)),
            }
        }
        if !more_ports.is_empty() {
            self.listen_more(more_ports).await;
        }
        if !new.is_empty() {
            if let Err(e) = self.start(new).await {
                self.hosts_stale |= hosts_dirty;
                return Err(e);
            }
            hosts_dirty = true;
        }
        for view in &views {
            let withheld = plan::withheld_note(&self.naming, view);
            self.report.service(view, &withheld);
        }
        if hosts_dirty || self.hosts_stale {
            self.write_hosts().await?;
        }
        Ok(())
    }

    fn publish(&self) {
        let forwards = self
            .running
            .iter()
            .map(|(k, r)| Shown {
                pod_host: k.pod_host.clone(),
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

    /// A function the control socket calls for the current status; `transport` names the
    /// port-forward protocol in use.
    pub fn status_fn(&self, transport: Arc<dyn Transport>) -> StatusFn {
        let published = self.published.clone();
        Arc::new(move || {
            let mut status = published.read().unwrap_or_else(|e| e.into_inner()).status();
            status.protocol = transport.protocol();
            status
        })
    }

    /// Allocates addresses for new forwards (one registry lock for all), binding their
    /// listeners as the freeness check, and starts serving them.
    async fn start(&mut self, new: Vec<(ForwardKey, Desired)>) -> Result<(), EngineError> {
        // `new` comes in key order, which is the order of the allocation keys.
        let keys: Vec<String> = new.iter().map(|(k, _)| self.naming.alloc_key(k)).collect();
        let ports: Vec<Vec<u16>> = new
            .iter()
            .map(|(_, d)| d.ports.keys().copied().collect())
            .collect();
        let Effects {
            addresses,
            listeners,
            ..
        } = self.effects.clone();
        let Allocated {
            addrs,
            mut bound,
            denied,
        } = blocking("allocating addresses", move || {
            allocate_and_bind(&*addresses, &*listeners, &keys, &ports)
        })
        .await??;
        for ((key, _), ports) in new.iter().zip(&denied) {
            for port in ports {
                warn!(
                    "port {port} of {key} is not forwarded: this user may not listen on ports \
                     below 1024 (net.ipv4.ip_unprivileged_port_start); run czctl with sudo or \
                     lower that limit"
                );
                self.report.denied(&key.service, *port);
            }
        }
        for (i, ((key, desired), addr)) in new.into_iter().zip(addrs).enumerate() {
            let target = Arc::new(Target::new(
                desired.service.clone(),
                desired.pinned.clone(),
                desired.ports.clone(),
                desired.backends.clone(),
            ));
            let mut listeners = BTreeMap::new();
            for (port, l) in std::mem::take(&mut bound[i]) {
                let stop = CancellationToken::new();
                match self
                    .effects
                    .listeners
                    .serve(l, target.clone(), stop.clone())
                {
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

    /// Binds and serves the new ports of running forwards (one blocking batch); a port that
    /// cannot be bound is left out, said in the log.
    async fn listen_more(&mut self, wanted: Vec<(ForwardKey, u16)>) {
        let at: Vec<(Ipv4Addr, u16)> = wanted
            .iter()
            .filter_map(|(key, port)| Some((self.running.get(key)?.addr, *port)))
            .collect();
        let listeners = self.effects.listeners.clone();
        let bound = blocking("binding listeners", move || {
            at.into_iter()
                .map(|(addr, port)| listeners.bind(addr, port))
                .collect::<Vec<io::Result<StdListener>>>()
        })
        .await;
        let bound = match bound {
            Ok(bound) => bound,
            Err(e) => {
                warn!(error = %e, "cannot listen on new service ports");
                return;
            }
        };
        for ((key, port), listener) in wanted.into_iter().zip(bound) {
            let Some(running) = self.running.get_mut(&key) else {
                continue;
            };
            let stop = CancellationToken::new();
            let served = listener.and_then(|l| {
                self.effects
                    .listeners
                    .serve(l, running.target.clone(), stop.clone())
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
    }

    async fn write_hosts(&mut self) -> Result<(), EngineError> {
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
        let hosts = self.effects.hosts.clone();
        let block = self.block.clone();
        self.hosts_stale = true;
        blocking("writing the hosts file", move || {
            hosts.write(&block, &entries)
        })
        .await??;
        self.hosts_stale = false;
        Ok(())
    }

    /// The running forwards, for the ready table and status.
    pub fn running(
        &self,
    ) -> impl Iterator<Item = (&ForwardKey, Ipv4Addr, &[String], Vec<u16>, &Arc<Target>)> {
        self.running.iter().map(|(k, r)| {
            (
                k,
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

    /// Stops every listener, removes the hosts block and releases the addresses (both tried,
    /// on one blocking thread, even when the first fails).
    pub async fn teardown(&mut self) -> Result<(), EngineError> {
        let mut keys = std::mem::take(&mut self.unreleased);
        keys.extend(self.running.keys().map(|k| self.naming.alloc_key(k)));
        for running in self.running.values() {
            for token in running.listeners.values() {
                token.cancel();
            }
        }
        self.running.clear();
        self.publish();
        let Effects {
            addresses, hosts, ..
        } = self.effects.clone();
        let block = self.block.clone();
        let (hosts, released) = blocking("removing the hosts block", move || {
            (hosts.remove(&block), addresses.release(&keys))
        })
        .await?;
        hosts?;
        released?;
        Ok(())
    }
}

/// Runs a blocking effect without holding up the runtime. On a multi-threaded runtime (czctl's)
/// it runs right here with `block_in_place`, which first hands this worker's other tasks to
/// another thread: the start-up batch (the registry and the hosts file of 10,000 Services, a
/// few MB of buffers) is then allocated in this thread's malloc arena, not in a fresh arena of
/// a blocking-pool thread, which measured 2.4 MiB more resident memory at 10,000 Services. A
/// current-thread runtime has no other worker to hand over to: there it goes to
/// `spawn_blocking`. Either way the engine's own task waits, and nothing else does. A panic is
/// passed on; `what` names the effect when the runtime shut down before it ran.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    effect: impl FnOnce() -> T + Send + 'static,
) -> Result<T, EngineError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        return Ok(tokio::task::block_in_place(effect));
    }
    match tokio::task::spawn_blocking(effect).await {
        Ok(out) => Ok(out),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(EngineError::Interrupted(what)),
    }
}

/// One allocation for `keys` under the registry's lock, binding `ports[i]` at each candidate
/// address of `keys[i]` as its freeness check: a candidate where any port is in use is
/// refused (its listeners closed) and the next is tried; a port this user may not listen on
/// at all is left out and said in [`Allocated::denied`].
fn allocate_and_bind(
    addresses: &dyn Addresses,
    listeners: &dyn Listeners,
    keys: &[String],
    ports: &[Vec<u16>],
) -> Result<Allocated, AllocError> {
    let index: HashMap<&str, usize> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    let mut bound: Vec<Vec<(u16, StdListener)>> = keys.iter().map(|_| Vec::new()).collect();
    let mut denied: Vec<Vec<u16>> = keys.iter().map(|_| Vec::new()).collect();
    let addrs = addresses.allocate(keys, &mut |key, addr| {
        let Some(&i) = index.get(key) else {
            return true;
        };
        let mut here = Vec::with_capacity(ports[i].len());
        let mut refused = Vec::new();
        for &port in &ports[i] {
            match listeners.bind(addr, port) {
                Ok(l) => here.push((port, l)),
                // Not this address's fault: this user may not bind the port anywhere.
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => refused.push(port),
                Err(_) => return false,
            }
        }
        denied[i] = refused;
        bound[i] = here;
        true
    })?;
    Ok(Allocated {
        addrs,
        bound,
        denied,
    })
}

/// Applies a changed plan to a running address: backends, ports (listeners of ports no longer
/// wanted are closed; the caller binds the new ones), names. Returns whether names changed.
fn update(running: &mut Running, desired: &Desired, report: &mut Report, key: &ForwardKey) -> bool {
    if running.target.set_backends(desired.backends.clone()) {
        report.backends(key, &desired.backends);
    }
    running.target.set_ports(desired.ports.clone());
    running.listeners.retain(|port, token| {
        let keep = desired.ports.contains_key(port);
        if !keep {
            token.cancel();
        }
        keep
    });
    let names_changed = running.names != desired.names;
    running.names = desired.names.clone();
    names_changed
}

#[cfg(test)]
mod tests;
