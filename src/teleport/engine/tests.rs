//! The engine's decisions, with fake effects that record what they were asked to do; and one
//! connection through a listener the engine started, over the in-memory transport.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, TcpListener as StdListener};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use loopback::alloc::AllocError;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Engine, EngineError};
use crate::cluster::model::{Change, ObjectKey};
use crate::forward::listener::Binder;
use crate::forward::target::Target;
use crate::forward::transport::Transport;
use crate::hosts::{BlockId, EditError, Entry, HelperError};
use crate::teleport::effects::{Addresses, Effects, HostsWriter, Listeners};
use crate::teleport::plan::{ForwardKey, Naming};
use crate::teleport::report::Report;

/// Hands out 127.1.0.1, .2, ... like the registry: a held key keeps its address, a candidate
/// `is_free` refuses is skipped, and nothing is kept on error.
#[derive(Default)]
struct FakeAddresses(Mutex<AddressState>);

#[derive(Default)]
struct AddressState {
    held: BTreeMap<String, Ipv4Addr>,
    next: u8,
    /// The keys of every allocate call.
    allocations: Vec<Vec<String>>,
    /// The keys of every release call.
    releases: Vec<Vec<String>>,
    /// Fail the next allocation.
    fail: bool,
    /// Fail the next release.
    fail_release: bool,
}

impl Addresses for FakeAddresses {
    fn allocate(
        &self,
        keys: &[String],
        is_free: &mut dyn FnMut(&str, Ipv4Addr) -> bool,
    ) -> Result<Vec<Ipv4Addr>, AllocError> {
        let mut state = self.0.lock().unwrap();
        state.allocations.push(keys.to_vec());
        if std::mem::take(&mut state.fail) {
            return Err(AllocError::Exhausted);
        }
        let mut held = state.held.clone();
        let mut next = state.next;
        let mut out = Vec::new();
        for key in keys {
            if let Some(&addr) = held.get(key) {
                out.push(addr);
                continue;
            }
            let taken: HashSet<Ipv4Addr> = held.values().copied().collect();
            let addr = loop {
                next += 1;
                let candidate = Ipv4Addr::new(127, 1, 0, next);
                if !taken.contains(&candidate) && is_free(key, candidate) {
                    break candidate;
                }
            };
            held.insert(key.clone(), addr);
            out.push(addr);
        }
        state.held = held;
        state.next = next;
        Ok(out)
    }

    fn release(&self, keys: &[String]) -> Result<(), AllocError> {
        let mut state = self.0.lock().unwrap();
        state.releases.push(keys.to_vec());
        if std::mem::take(&mut state.fail_release) {
            return Err(AllocError::Exhausted);
        }
        for key in keys {
            state.held.remove(key);
        }
        Ok(())
    }
}

/// Records every block written; can fail, or hold a write until the test lets it go.
#[derive(Default)]
struct FakeHosts(Mutex<HostsState>);

#[derive(Default)]
struct HostsState {
    /// Every block written, as address → names.
    writes: Vec<BTreeMap<Ipv4Addr, Vec<String>>>,
    removed: usize,
    fail: bool,
    /// A write says it started here, then waits for the go.
    gate: Option<(
        tokio::sync::oneshot::Sender<()>,
        std::sync::mpsc::Receiver<()>,
    )>,
}

impl HostsWriter for FakeHosts {
    fn write(&self, block: &BlockId, entries: &[Entry]) -> Result<(), EditError> {
        assert_eq!(block.session(), "tp-test");
        let gate = self.0.lock().unwrap().gate.take();
        if let Some((entered, go)) = gate {
            entered.send(()).unwrap();
            go.recv_timeout(PATIENCE)
                .expect("the runtime stood still while the hosts file was written");
        }
        let mut state = self.0.lock().unwrap();
        if state.fail {
            return Err(EditError::Helper(HelperError::Refused {
                message: "the hosts file is read-only".into(),
            }));
        }
        state.writes.push(
            entries
                .iter()
                .map(|e| (e.addr(), e.names().to_vec()))
                .collect(),
        );
        Ok(())
    }

    fn remove(&self, _block: &BlockId) -> Result<(), EditError> {
        self.0.lock().unwrap().removed += 1;
        Ok(())
    }
}

/// Binds real listeners on 127.0.0.1 (any port) for the addresses and ports asked, except
/// those marked in use or denied; records what it bound and served.
#[derive(Default)]
struct FakeListeners(Mutex<ListenerState>);

#[derive(Default)]
struct ListenerState {
    /// Every bind asked, in order.
    binds: Vec<(Ipv4Addr, u16)>,
    in_use: HashSet<(Ipv4Addr, u16)>,
    denied: HashSet<u16>,
    /// The real local port → what it stands for.
    stands_for: HashMap<u16, (Ipv4Addr, u16)>,
    /// What is served, with its stop token.
    served: Vec<((Ipv4Addr, u16), CancellationToken)>,
}

impl ListenerState {
    /// The addresses and ports served and not stopped.
    fn open(&self) -> BTreeSet<(Ipv4Addr, u16)> {
        self.served
            .iter()
            .filter(|(_, stop)| !stop.is_cancelled())
            .map(|(at, _)| *at)
            .collect()
    }
}

impl Listeners for FakeListeners {
    fn bind(&self, addr: Ipv4Addr, port: u16) -> io::Result<StdListener> {
        let mut state = self.0.lock().unwrap();
        state.binds.push((addr, port));
        if state.denied.contains(&port) {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        if state.in_use.contains(&(addr, port)) {
            return Err(io::ErrorKind::AddrInUse.into());
        }
        let listener = StdListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        state
            .stands_for
            .insert(listener.local_addr()?.port(), (addr, port));
        Ok(listener)
    }

    fn serve(
        &self,
        listener: StdListener,
        _target: Arc<Target>,
        stop: CancellationToken,
    ) -> io::Result<()> {
        let mut state = self.0.lock().unwrap();
        let at = state.stands_for[&listener.local_addr()?.port()];
        state.served.push((at, stop));
        Ok(())
    }
}

const PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

struct Fixture {
    engine: Engine,
    addresses: Arc<FakeAddresses>,
    hosts: Arc<FakeHosts>,
    listeners: Arc<FakeListeners>,
}

fn naming() -> Naming {
    Naming {
        context: "kind".into(),
        first_namespace: "demo".into(),
        cluster_domain: "cluster.local".into(),
    }
}

fn fixture() -> Fixture {
    let addresses = Arc::new(FakeAddresses::default());
    let hosts = Arc::new(FakeHosts::default());
    let listeners = Arc::new(FakeListeners::default());
    let effects = Effects {
        addresses: addresses.clone(),
        hosts: hosts.clone(),
        listeners: listeners.clone(),
    };
    let block = BlockId::new("tp-test", std::process::id()).unwrap();
    Fixture {
        engine: Engine::new(naming(), effects, block, Report::default()),
        addresses,
        hosts,
        listeners,
    }
}

/// A Service `demo/NAME` with TCP `ports` (named `p<port>`); headless when asked.
fn service(name: &str, ports: &[u16], headless: bool) -> Change {
    let ports: Vec<_> = ports
        .iter()
        .map(|p| json!({"name": format!("p{p}"), "port": p, "protocol": "TCP"}))
        .collect();
    let mut spec = json!({"selector": {"app": name}, "ports": ports});
    if headless {
        spec["clusterIP"] = json!("None");
    }
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"namespace": "demo", "name": name},
        "spec": spec,
    }))
    .unwrap();
    Change::ServiceApplied(Box::new(svc))
}

/// The EndpointSlice of `demo/NAME`: ready `pods` (hostname = pod name when `hostnames`),
/// serving every port in `ports` on the same number.
fn slice(name: &str, ports: &[u16], pods: &[&str], hostnames: bool) -> Change {
    let ports: Vec<_> = ports
        .iter()
        .map(|p| json!({"name": format!("p{p}"), "port": p, "protocol": "TCP"}))
        .collect();
    let endpoints: Vec<_> = pods
        .iter()
        .map(|pod| {
            let mut ep = json!({
                "addresses": ["10.0.0.1"],
                "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "name": pod, "namespace": "demo"},
            });
            if hostnames {
                ep["hostname"] = json!(pod);
            }
            ep
        })
        .collect();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {
            "namespace": "demo",
            "name": format!("{name}-abc"),
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }))
    .unwrap();
    Change::SliceApplied(Box::new(slice))
}

fn svc_key(name: &str) -> ObjectKey {
    ObjectKey::new("demo", name)
}

fn keys(names: &[&str]) -> BTreeSet<ObjectKey> {
    names.iter().map(|n| svc_key(n)).collect()
}

fn names_of(name: &str) -> Vec<String> {
    naming().names(&svc_key(name), None)
}

#[tokio::test]
async fn a_new_service_gets_an_address_listeners_and_a_hosts_entry() {
    let mut f = fixture();
    f.engine.apply(service("web", &[8080, 9090], false));
    f.engine
        .apply(slice("web", &[8080, 9090], &["web-1"], false));
    f.engine.reconcile(&keys(&["web"])).await.unwrap();

    let web = Ipv4Addr::new(127, 1, 0, 1);
    assert_eq!(
        f.addresses.0.lock().unwrap().allocations,
        [["kind/demo/web"]]
    );
    let listeners = f.listeners.0.lock().unwrap();
    assert_eq!(listeners.binds, [(web, 8080), (web, 9090)]);
    assert_eq!(listeners.open(), BTreeSet::from([(web, 8080), (web, 9090)]));
    drop(listeners);
    assert_eq!(
        f.hosts.0.lock().unwrap().writes,
        [BTreeMap::from([(web, names_of("web"))])]
    );
    let running: Vec<_> = f
        .engine
        .running()
        .map(|(k, a, ..)| (k.clone(), a))
        .collect();
    assert_eq!(
        running,
        [(ForwardKey::service(Arc::new(svc_key("web"))), web)]
    );
}

#[tokio::test]
async fn many_services_cost_one_allocation_and_one_hosts_write() {
    let mut f = fixture();
    let names: Vec<String> = (0..100).map(|i| format!("svc-{i:03}")).collect();
    for name in &names {
        f.engine.apply(service(name, &[8080], false));
        f.engine.apply(slice(name, &[8080], &["pod"], false));
    }
    let all: BTreeSet<ObjectKey> = names.iter().map(|n| svc_key(n)).collect();
    f.engine.reconcile(&all).await.unwrap();
    let addresses = f.addresses.0.lock().unwrap();
    assert_eq!(addresses.allocations.len(), 1);
    // In key order, as the registry always got them.
    let expected: Vec<String> = names.iter().map(|n| format!("kind/demo/{n}")).collect();
    assert_eq!(addresses.allocations[0], expected);
    let hosts = f.hosts.0.lock().unwrap();
    assert_eq!(hosts.writes.len(), 1);
    assert_eq!(hosts.writes[0].len(), 100);
    assert_eq!(f.listeners.0.lock().unwrap().open().len(), 100);
}

#[tokio::test]
async fn a_deleted_service_is_released_its_listeners_closed_and_its_names_removed() {
    let mut f = fixture();
    for name in ["web", "api"] {
        f.engine.apply(service(name, &[8080], false));
        f.engine.apply(slice(name, &[8080], &["pod"], false));
    }
    f.engine.reconcile(&keys(&["web", "api"])).await.unwrap();
    let api = Ipv4Addr::new(127, 1, 0, 1);
    let web = Ipv4Addr::new(127, 1, 0, 2);

    f.engine.apply(Change::ServiceDeleted(svc_key("web")));
    f.engine.reconcile(&keys(&["web"])).await.unwrap();
    assert_eq!(f.addresses.0.lock().unwrap().releases, [["kind/demo/web"]]);
    assert_eq!(
        f.listeners.0.lock().unwrap().open(),
        BTreeSet::from([(api, 8080)])
    );
    let hosts = f.hosts.0.lock().unwrap();
    assert_eq!(hosts.writes.len(), 2);
    assert_eq!(hosts.writes[1], BTreeMap::from([(api, names_of("api"))]));
    assert!(!hosts.writes[1].contains_key(&web));
}

#[tokio::test]
async fn a_failed_release_is_an_error_and_the_next_reconcile_finishes_it() {
    let mut f = fixture();
    for name in ["web", "api", "db"] {
        f.engine.apply(service(name, &[8080], false));
        f.engine.apply(slice(name, &[8080], &["pod"], false));
    }
    f.engine
        .reconcile(&keys(&["web", "api", "db"]))
        .await
        .unwrap();
    f.addresses.0.lock().unwrap().fail_release = true;
    f.engine.apply(Change::ServiceDeleted(svc_key("web")));
    let error = f.engine.reconcile(&keys(&["web"])).await.unwrap_err();
    assert!(matches!(error, EngineError::Alloc(_)), "{error}");
    // Stopped all the same.
    assert_eq!(f.engine.running().count(), 2);
    assert_eq!(f.listeners.0.lock().unwrap().open().len(), 2);
    assert_eq!((f.engine.status_fn(no_transport()))().forwards.len(), 2);
    // The next reconcile, whatever it is about, releases it and takes its names out.
    let writes = f.hosts.0.lock().unwrap().writes.len();
    f.engine.reconcile(&BTreeSet::new()).await.unwrap();
    {
        let hosts = f.hosts.0.lock().unwrap();
        assert_eq!(hosts.writes.len(), writes + 1);
        assert_eq!(hosts.writes[writes].len(), 2);
    }

    f.engine.apply(Change::ServiceDeleted(svc_key("api")));
    f.engine.reconcile(&keys(&["api"])).await.unwrap();
    let state = f.addresses.0.lock().unwrap();
    assert_eq!(
        state.releases,
        [
            vec!["kind/demo/web"],
            vec!["kind/demo/web"],
            vec!["kind/demo/api"]
        ]
    );
    assert_eq!(
        state.held.keys().collect::<Vec<_>>(),
        ["kind/demo/db"],
        "only db keeps its address"
    );
}

#[tokio::test]
async fn a_port_change_swaps_the_listener_and_keeps_address_and_names() {
    let mut f = fixture();
    f.engine.apply(service("web", &[8080], false));
    f.engine.apply(slice("web", &[8080], &["pod"], false));
    f.engine.reconcile(&keys(&["web"])).await.unwrap();
    let web = Ipv4Addr::new(127, 1, 0, 1);

    f.engine.apply(service("web", &[8081], false));
    f.engine.apply(slice("web", &[8081], &["pod"], false));
    f.engine.reconcile(&keys(&["web"])).await.unwrap();
    assert_eq!(f.addresses.0.lock().unwrap().allocations.len(), 1);
    assert!(f.addresses.0.lock().unwrap().releases.is_empty());
    let listeners = f.listeners.0.lock().unwrap();
    assert_eq!(listeners.binds, [(web, 8080), (web, 8081)]);
    assert_eq!(listeners.open(), BTreeSet::from([(web, 8081)]));
    drop(listeners);
    // Same names at the same address: the hosts file is not written again.
    assert_eq!(f.hosts.0.lock().unwrap().writes.len(), 1);
    let (_, _, _, ports, target) = f.engine.running().next().unwrap();
    assert_eq!(ports, [8081]);
    assert_eq!(target.port_name(8081).as_deref(), Some("p8081"));
    assert_eq!(target.port_name(8080), None);
}

#[tokio::test]
async fn statefulset_pods_get_addresses_of_their_own_pinned_to_their_pod() {
    let mut f = fixture();
    f.engine.apply(service("db", &[5432], true));
    f.engine
        .apply(slice("db", &[5432], &["db-0", "db-1"], true));
    f.engine.reconcile(&keys(&["db"])).await.unwrap();
    assert_eq!(
        f.addresses.0.lock().unwrap().allocations,
        [["kind/demo/db", "kind/demo/db/db-0", "kind/demo/db/db-1"]]
    );
    let running: Vec<_> = f
        .engine
        .running()
        .map(|(key, addr, names, _, target)| {
            let pods: Vec<String> = target.backends().iter().map(|b| b.pod.clone()).collect();
            (
                key.to_string(),
                addr,
                names[0].clone(),
                target.pinned.clone(),
                pods,
            )
        })
        .collect();
    assert_eq!(
        running,
        [
            (
                "demo/db".to_string(),
                Ipv4Addr::new(127, 1, 0, 1),
                "db".to_string(),
                None,
                vec!["db-0".to_string(), "db-1".to_string()]
            ),
            (
                "demo/db/db-0".to_string(),
                Ipv4Addr::new(127, 1, 0, 2),
                "db-0.db".to_string(),
                Some("db-0".to_string()),
                vec!["db-0".to_string()]
            ),
            (
                "demo/db/db-1".to_string(),
                Ipv4Addr::new(127, 1, 0, 3),
                "db-1.db".to_string(),
                Some("db-1".to_string()),
                vec!["db-1".to_string()]
            ),
        ]
    );
    // Status names the pod of a per-pod address.
    let status = (f.engine.status_fn(no_transport()))();
    let shown: Vec<_> = status
        .forwards
        .iter()
        .map(|f| (f.name.as_str(), f.pod_host.as_deref()))
        .collect();
    assert_eq!(
        shown,
        [
            ("demo/db", None),
            ("demo/db/db-0", Some("db-0")),
            ("demo/db/db-1", Some("db-1"))
        ]
    );

    // db-1 goes away: its address is released, the Service's own address stays.
    f.engine.apply(slice("db", &[5432], &["db-0"], true));
    f.engine.reconcile(&keys(&["db"])).await.unwrap();
    assert_eq!(
        f.addresses.0.lock().unwrap().releases,
        [["kind/demo/db/db-1"]]
    );
    assert_eq!(f.engine.running().count(), 2);
}

#[tokio::test]
async fn an_address_in_use_is_refused_and_the_next_candidate_taken() {
    let mut f = fixture();
    let first = Ipv4Addr::new(127, 1, 0, 1);
    f.listeners.0.lock().unwrap().in_use.insert((first, 9090));
    f.engine.apply(service("web", &[8080, 9090], false));
    f.engine.apply(slice("web", &[8080, 9090], &["pod"], false));
    f.engine.reconcile(&keys(&["web"])).await.unwrap();
    let second = Ipv4Addr::new(127, 1, 0, 2);
    let listeners = f.listeners.0.lock().unwrap();
    assert_eq!(
        listeners.binds,
        [(first, 8080), (first, 9090), (second, 8080), (second, 9090)]
    );
    assert_eq!(
        listeners.open(),
        BTreeSet::from([(second, 8080), (second, 9090)])
    );
    drop(listeners);
    assert_eq!(f.engine.running().next().unwrap().1, second);
}

#[tokio::test]
async fn a_port_this_user_may_not_listen_on_is_left_out_and_noted() {
    let mut f = fixture();
    f.listeners.0.lock().unwrap().denied.insert(80);
    f.engine.apply(service("web", &[80, 8080], false));
    f.engine.apply(slice("web", &[80, 8080], &["pod"], false));
    f.engine.reconcile(&keys(&["web"])).await.unwrap();
    let web = Ipv4Addr::new(127, 1, 0, 1);
    assert_eq!(
        f.listeners.0.lock().unwrap().open(),
        BTreeSet::from([(web, 8080)])
    );
    let note = f.engine.report().note_of(&svc_key("web")).to_string();
    assert!(
        note.contains("port 80 not forwarded: only root may listen below 1024"),
        "{note}"
    );
}

#[tokio::test]
async fn a_failed_allocation_leaves_nothing_behind_and_the_next_reconcile_retries_it() {
    let mut f = fixture();
    f.addresses.0.lock().unwrap().fail = true;
    f.engine.apply(service("web", &[8080], false));
    f.engine.apply(slice("web", &[8080], &["pod"], false));
    let error = f.engine.reconcile(&keys(&["web"])).await.unwrap_err();
    assert!(
        matches!(error, EngineError::Alloc(AllocError::Exhausted)),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .starts_with("cannot allocate loopback addresses"),
        "{error}"
    );
    assert_eq!(f.engine.running().count(), 0);
    assert!(f.listeners.0.lock().unwrap().open().is_empty());
    assert!(f.hosts.0.lock().unwrap().writes.is_empty());

    // The next reconcile, about another Service, takes this one again.
    f.engine.apply(service("api", &[8080], false));
    f.engine.apply(slice("api", &[8080], &["pod"], false));
    f.engine.reconcile(&keys(&["api"])).await.unwrap();
    assert_eq!(
        f.addresses.0.lock().unwrap().allocations[1],
        ["kind/demo/api", "kind/demo/web"]
    );
    assert_eq!(f.engine.running().count(), 2);
    let writes = &f.hosts.0.lock().unwrap().writes;
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].len(), 2);
}

#[tokio::test]
async fn a_failed_hosts_write_is_an_error_and_the_next_reconcile_writes_again() {
    let mut f = fixture();
    f.hosts.0.lock().unwrap().fail = true;
    f.engine.apply(service("web", &[8080], false));
    f.engine.apply(slice("web", &[8080], &["pod"], false));
    let error = f.engine.reconcile(&keys(&["web"])).await.unwrap_err();
    assert!(matches!(error, EngineError::Hosts(_)), "{error}");
    assert!(
        error.to_string().contains("the hosts file is read-only"),
        "{error}"
    );
    // The forward runs; only its names are missing until the next write.
    assert_eq!(f.engine.running().count(), 1);

    // The next change is only a new pod, no new name: the names are written all the same.
    f.hosts.0.lock().unwrap().fail = false;
    f.engine
        .apply(slice("web", &[8080], &["pod", "pod-2"], false));
    f.engine.reconcile(&keys(&["web"])).await.unwrap();
    let web = Ipv4Addr::new(127, 1, 0, 1);
    assert_eq!(
        f.hosts.0.lock().unwrap().writes,
        [BTreeMap::from([(web, names_of("web"))])]
    );
    // Written once: the one after is quiet again.
    f.engine.apply(slice("web", &[8080], &["pod"], false));
    f.engine.reconcile(&keys(&["web"])).await.unwrap();
    assert_eq!(f.hosts.0.lock().unwrap().writes.len(), 1);
}

#[tokio::test]
async fn teardown_closes_every_listener_removes_the_block_and_releases_every_address() {
    let mut f = fixture();
    f.engine.apply(service("db", &[5432], true));
    f.engine.apply(slice("db", &[5432], &["db-0"], true));
    f.engine.reconcile(&keys(&["db"])).await.unwrap();
    f.engine.teardown().await.unwrap();
    assert!(f.listeners.0.lock().unwrap().open().is_empty());
    assert_eq!(f.hosts.0.lock().unwrap().removed, 1);
    assert_eq!(
        f.addresses.0.lock().unwrap().releases,
        [["kind/demo/db", "kind/demo/db/db-0"]]
    );
    assert_eq!(f.engine.running().count(), 0);
}

/// On a runtime with one thread, a hosts write that waits for the runtime to go on can only
/// finish when it runs on a thread of its own.
#[tokio::test(flavor = "current_thread")]
async fn blocking_effects_leave_the_runtime_free() {
    let mut f = fixture();
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel();
    f.hosts.0.lock().unwrap().gate = Some((entered_tx, go_rx));
    f.engine.apply(service("web", &[8080], false));
    f.engine.apply(slice("web", &[8080], &["pod"], false));
    let wanted = keys(&["web"]);
    let (reconciled, ()) = tokio::join!(f.engine.reconcile(&wanted), async {
        entered_rx.await.unwrap();
        go_tx.send(()).unwrap();
    });
    reconciled.unwrap();
    assert_eq!(f.hosts.0.lock().unwrap().writes.len(), 1);
}

/// The same on czctl's kind of runtime with one worker: the task that lets the write go can
/// only run if the worker was handed on before the write blocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn blocking_effects_leave_a_multi_threaded_runtime_free() {
    let mut f = fixture();
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel();
    f.hosts.0.lock().unwrap().gate = Some((entered_tx, go_rx));
    let release = tokio::spawn(async move {
        entered_rx.await.unwrap();
        go_tx.send(()).unwrap();
    });
    f.engine.apply(service("web", &[8080], false));
    f.engine.apply(slice("web", &[8080], &["pod"], false));
    // On the worker (the test's own body runs on a thread of its own).
    let hosts = f.hosts.clone();
    let mut engine = f.engine;
    tokio::spawn(async move { engine.reconcile(&keys(&["web"])).await.unwrap() })
        .await
        .unwrap();
    release.await.unwrap();
    assert_eq!(hosts.0.lock().unwrap().writes.len(), 1);
}

fn no_transport() -> Arc<dyn Transport> {
    Arc::new(crate::forward::tests::support::MemTransport::new([]))
}

#[tokio::test]
async fn a_connection_to_a_started_forward_fails_over_and_replays_its_first_bytes() {
    use crate::forward::tests::support::{read_all_then_echo, refuse_after_reading, MemTransport};
    use tokio::io::AsyncWriteExt;

    let (refused_tx, mut refused) = tokio::sync::mpsc::unbounded_channel();
    let transport = MemTransport::new([
        ("web-a", refuse_after_reading(None, refused_tx)),
        ("web-b", read_all_then_echo()),
    ]);
    let mut f = fixture();
    // Real listeners on 127.1.0.N:8080; an address taken on this machine is refused by the
    // bind and the next one tried, as in a teleport.
    let base = (std::process::id() % 200) as u8;
    f.addresses.0.lock().unwrap().next = base;
    f.engine = Engine::new(
        naming(),
        Effects {
            addresses: f.addresses.clone(),
            hosts: f.hosts.clone(),
            listeners: Arc::new(Binder::new(Arc::new(transport.clone()), None)),
        },
        BlockId::new("tp-test", std::process::id()).unwrap(),
        Report::default(),
    );
    f.engine.apply(service("web", &[8080], false));
    f.engine
        .apply(slice("web", &[8080], &["web-a", "web-b"], false));
    f.engine.reconcile(&keys(&["web"])).await.unwrap();

    let (_, addr, _, ports, _) = f.engine.running().next().unwrap();
    assert_eq!(ports, [8080]);
    assert!(addr > Ipv4Addr::new(127, 1, 0, base), "{addr}");
    let mut client = tokio::net::TcpStream::connect((addr, 8080)).await.unwrap();
    client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    client.shutdown().await.unwrap();
    let answer = crate::forward::tests::support::read_to_end(&mut client).await;
    assert_eq!(
        answer, b"GET / HTTP/1.0\r\n\r\n",
        "web-b echoed the replayed bytes"
    );
    assert_eq!(refused.recv().await.unwrap(), b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(transport.opened(), ["web-a", "web-b"]);
    let (_, _, _, _, target) = f.engine.running().next().unwrap();
    assert_eq!(target.stats.last_pod().as_deref(), Some("web-b"));
}
