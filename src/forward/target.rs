//! What a listener forwards to: the backends of one Service (or one pinned pod), swapped in
//! place when the EndpointSlices change, plus connection statistics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::cluster::model::{Backend, ObjectKey};

/// Counters of one target.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections accepted so far.
    pub total: AtomicU64,
    /// Bytes from clients to pods.
    pub bytes_up: AtomicU64,
    /// Bytes from pods to clients.
    pub bytes_down: AtomicU64,
    /// The last failure, for status output.
    pub last_error: Mutex<Option<String>>,
    /// The pod that served the latest connection.
    pub last_pod: Mutex<Option<String>>,
}

impl Stats {
    /// Records the pod that serves a connection (and clears the last error).
    pub fn set_pod(&self, pod: &str) {
        *self.last_pod.lock().unwrap_or_else(|e| e.into_inner()) = Some(pod.to_string());
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The pod that served the latest connection.
    pub fn last_pod(&self) -> Option<String> {
        self.last_pod
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The latest failure.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records a failure message.
    pub fn set_error(&self, message: String) {
        // Only ever assigned; a poisoned lock still holds a usable value.
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    }
}

/// The backends behind a listener.
#[derive(Debug)]
pub struct Target {
    /// The Service this target belongs to (shared with the engine's key of it).
    pub service: Arc<ObjectKey>,
    /// Only this pod (a per-pod address of a StatefulSet pod).
    pub pinned: Option<String>,
    backends: RwLock<Arc<[Backend]>>,
    ports: RwLock<BTreeMap<u16, String>>,
    next: AtomicUsize,
    /// Connection statistics.
    pub stats: Stats,
}

impl Target {
    /// A target with its current backends.
    pub fn new(
        service: Arc<ObjectKey>,
        pinned: Option<String>,
        ports: BTreeMap<u16, String>,
        backends: Vec<Backend>,
    ) -> Self {
        Target {
            service,
            pinned,
            backends: RwLock::new(backends.into()),
            ports: RwLock::new(ports),
            next: AtomicUsize::new(0),
            stats: Stats::default(),
        }
    }

    /// The backends now.
    pub fn backends(&self) -> Arc<[Backend]> {
        self.backends
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the backends; returns whether they changed.
    pub fn set_backends(&self, backends: Vec<Backend>) -> bool {
        let mut current = self.backends.write().unwrap_or_else(|e| e.into_inner());
        if **current == *backends {
            return false;
        }
        *current = backends.into();
        true
    }

    /// The service port name served on listen port `port`, if it is still served.
    pub fn port_name(&self, port: u16) -> Option<String> {
        self.ports
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&port)
            .cloned()
    }

    /// Replaces the listen port → service port name map.
    pub fn set_ports(&self, ports: BTreeMap<u16, String>) {
        *self.ports.write().unwrap_or_else(|e| e.into_inner()) = ports;
    }

    /// Where the round-robin starts for the next connection.
    pub fn next_start(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}
