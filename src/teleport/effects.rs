//! What the engine does to the machine, behind three small traits, so its decisions can be
//! tested with fakes ([`super::engine`]'s tests) and the real effects stay plain code:
//!
//! - [`Addresses`]: loopback addresses, one per forward ([`Registry`], shared by every czctl).
//! - [`HostsWriter`]: czctl's block in the hosts file ([`HostsEditor`]).
//! - [`Listeners`]: TCP listeners on those addresses ([`Binder`], which serves them).
//!
//! Every method may block (file locks, a round trip to the root helper): the engine never calls
//! them on a thread that is a runtime worker at the time. The engine batches its calls: one
//! allocation (with every new listener bound inside it), one release and one hosts write per
//! reconcile, whatever the number of Services.

use std::io;
use std::net::{Ipv4Addr, TcpListener as StdListener};
use std::sync::Arc;

use loopback::alloc::{AllocError, Registry};
use tokio_util::sync::CancellationToken;

use crate::forward::listener::{Binder, Privileged};
use crate::forward::target::Target;
use crate::hosts::{BlockId, EditError, Entry, HostsEditor};

/// Loopback addresses, one per allocation key (`CONTEXT/NS/NAME[/HOST]`).
pub(crate) trait Addresses: Send + Sync + 'static {
    /// One address per key, in order, for this process: a key it holds already keeps its
    /// address; any other gets the first free candidate that `is_free` accepts (the caller
    /// binds its listeners there). On error nothing is registered.
    fn allocate(
        &self,
        keys: &[String],
        is_free: &mut dyn FnMut(&str, Ipv4Addr) -> bool,
    ) -> Result<Vec<Ipv4Addr>, AllocError>;

    /// Gives back the addresses of `keys` (keys not held are ignored).
    fn release(&self, keys: &[String]) -> Result<(), AllocError>;
}

impl Addresses for Registry {
    fn allocate(
        &self,
        keys: &[String],
        is_free: &mut dyn FnMut(&str, Ipv4Addr) -> bool,
    ) -> Result<Vec<Ipv4Addr>, AllocError> {
        Registry::allocate(self, keys, is_free)
    }

    fn release(&self, keys: &[String]) -> Result<(), AllocError> {
        Registry::release(self, keys)
    }
}

/// czctl's block in the hosts file.
pub(crate) trait HostsWriter: Send + Sync + 'static {
    /// Makes the block hold exactly `entries` (re-reading the file first).
    fn write(&self, block: &BlockId, entries: &[Entry]) -> Result<(), EditError>;

    /// Takes the block out.
    fn remove(&self, block: &BlockId) -> Result<(), EditError>;
}

impl HostsWriter for HostsEditor {
    fn write(&self, block: &BlockId, entries: &[Entry]) -> Result<(), EditError> {
        self.update(block, entries).map(drop)
    }

    fn remove(&self, block: &BlockId) -> Result<(), EditError> {
        HostsEditor::remove(self, block).map(drop)
    }
}

/// TCP listeners on loopback addresses.
pub(crate) trait Listeners: Send + Sync + 'static {
    /// Binds `addr:port`; the bind is also the check that the address is free. A
    /// `PermissionDenied` error means this user may not listen on the port at all.
    fn bind(&self, addr: Ipv4Addr, port: u16) -> io::Result<StdListener>;

    /// Serves `listener` (connections to `target`) until `stop` is cancelled, which closes
    /// it. Called on the runtime (it spawns the accept task).
    fn serve(
        &self,
        listener: StdListener,
        target: Arc<Target>,
        stop: CancellationToken,
    ) -> io::Result<()>;
}

impl Listeners for Binder {
    fn bind(&self, addr: Ipv4Addr, port: u16) -> io::Result<StdListener> {
        Binder::bind(self, addr, port)
    }

    fn serve(
        &self,
        listener: StdListener,
        target: Arc<Target>,
        stop: CancellationToken,
    ) -> io::Result<()> {
        Binder::serve(self, listener, target, stop)
    }
}

/// The root helper as a [`Privileged`] binder, when `hosts` edits through one.
pub(crate) fn privileged_binds(hosts: &Arc<HostsEditor>) -> Option<Privileged> {
    hosts.helper()?;
    let hosts = hosts.clone();
    Some(Arc::new(move |addr, port| match hosts.helper() {
        Some(helper) => helper.bind(addr, port),
        None => Err(io::Error::from(io::ErrorKind::PermissionDenied)),
    }))
}

/// The three effects of one engine.
#[derive(Clone)]
pub(crate) struct Effects {
    /// Loopback addresses.
    pub(crate) addresses: Arc<dyn Addresses>,
    /// The hosts block.
    pub(crate) hosts: Arc<dyn HostsWriter>,
    /// Listeners.
    pub(crate) listeners: Arc<dyn Listeners>,
}
