//! What should be forwarded: from the model's Service views to the set of addresses, names,
//! ports and backends the laptop should have. Pure code: the engine diffs this against what
//! it runs.
//!
//! Bare names (a Service of the first namespace by its name alone, `svc` or `host.svc`) are
//! chosen by whoever may create Services there, and a bare name in the hosts file wins over
//! DNS for the whole machine. Names this machine or its network already use are never added
//! bare ([`reserved`]): `localhost` and `*.localhost`, `localhost.localdomain`, the Debian
//! `ip6-*` names, `broadcasthost`, `wpad` and `isatap` (proxy and tunnel auto-discovery),
//! `local` and `*.local` (mDNS), and this machine's own host name. Their qualified names
//! (`svc.NS`, ...) are kept.
//!
//! A namespace named like a generic top-level domain would make `svc.NS` a public name: a
//! Service `bank` in namespace `com` would claim `bank.com` on the laptop. No name ending in one
//! of [`PUBLIC_TLDS`] is added ([`public`]); `svc.NS.svc` and longer still are. Country codes and
//! the newer TLDs are left alone: `dev`, `prod` or `eu` are common namespace names, and taking
//! `api.dev` from their users would break more than it protects. [`withheld`] says which names
//! were left out, for the notes.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cluster::model::{Backend, ObjectKey, ServiceView};

/// What one loopback address forwards: a Service, or one pod of a headless Service.
///
/// Ordered as its text `NS/NAME[/HOST]` is (byte by byte), which is the order of the
/// allocation keys it replaces: so the registry sees new keys, and `status` lists forwards, in
/// the order they always had (`demo-2/x` before `demo/x`, `web-a` before `web/web-0`).
/// Kubernetes names never hold a `/`, so two different keys never have the same text.
///
/// The Service's key is shared (with the [`Desired`] and the running target) rather than
/// copied: at 10,000 Services a copy per forward costs most of a MiB.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ForwardKey {
    /// The Service.
    pub service: Arc<ObjectKey>,
    /// The pod's hostname within a headless Service (`HOST.SVC.NS` names it), for a per-pod
    /// address; `None` for the Service's own address.
    pub pod_host: Option<String>,
}

impl ForwardKey {
    /// The Service's own address.
    pub fn service(service: Arc<ObjectKey>) -> ForwardKey {
        ForwardKey {
            service,
            pod_host: None,
        }
    }

    /// The bytes of `NS/NAME[/HOST]`, without building the string.
    fn text(&self) -> impl Iterator<Item = u8> + '_ {
        let host = self
            .pod_host
            .iter()
            .flat_map(|h| std::iter::once(b'/').chain(h.bytes()));
        self.service
            .namespace
            .bytes()
            .chain(std::iter::once(b'/'))
            .chain(self.service.name.bytes())
            .chain(host)
    }
}

impl Ord for ForwardKey {
    /// The order of the texts, segment by segment with slice comparisons (the engine's maps of
    /// 10,000 forwards compare keys a million times at start-up); byte by byte only in the
    /// case a segment's separator ties with a byte of the other (a `/` inside a name).
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (&self.service, &other.service);
        let slash = Some(b'/');
        let after_name = |k: &ForwardKey| k.pod_host.as_ref().map(|_| b'/');
        let quick = segment(&a.namespace, slash, &b.namespace, slash)
            .or_else(|| segment(&a.name, after_name(self), &b.name, after_name(other)));
        match quick {
            Some(Ordering::Equal) => self.text().cmp(other.text()),
            Some(order) => order,
            None => self.pod_host.cmp(&other.pod_host),
        }
    }
}

/// Orders the texts `a` then `a_next` and `b` then `b_next` (`*_next`: the byte after the
/// segment, `None` at the end of the text) when the segments differ; `None` when they are
/// equal, `Some(Equal)` when the first difference is a separator against an equal byte.
fn segment(a: &str, a_next: Option<u8>, b: &str, b_next: Option<u8>) -> Option<Ordering> {
    if a == b {
        return None;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let x = a.get(common).copied().or(a_next);
    let y = b.get(common).copied().or(b_next);
    Some(x.cmp(&y))
}

impl PartialOrd for ForwardKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for ForwardKey {
    /// `NS/NAME`, or `NS/NAME/HOST` for a per-pod address.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.pod_host {
            Some(host) => write!(f, "{}/{host}", self.service),
            None => write!(f, "{}", self.service),
        }
    }
}

/// One loopback address worth of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The Service it belongs to.
    pub service: Arc<ObjectKey>,
    /// Only this pod (per-pod names of headless Services).
    pub pinned: Option<String>,
    /// Host names pointing at the address.
    pub names: Vec<String>,
    /// Listen port → service port name.
    pub ports: BTreeMap<u16, String>,
    /// Pods behind it.
    pub backends: Vec<Backend>,
}

/// Naming rules of one teleport.
#[derive(Debug, Clone)]
pub struct Naming {
    /// kubeconfig context (part of every allocation key, so addresses are stable per cluster).
    pub context: String,
    /// The first namespace given: its Services also get their bare names.
    pub first_namespace: String,
    /// `cluster.local` unless told otherwise.
    pub cluster_domain: String,
}

impl Naming {
    /// The registry's allocation key of a forward: `CONTEXT/NS/NAME[/HOST]` (see
    /// [`loopback::alloc`]; the context keeps addresses stable per cluster).
    pub fn alloc_key(&self, key: &ForwardKey) -> String {
        format!("{}/{key}", self.context)
    }

    /// `svc.ns`, `svc.ns.svc`, `svc.ns.svc.DOMAIN`, plus `svc` in the first namespace unless
    /// it is [`reserved`]; with a pod host, the same under `host.svc`.
    pub fn names(&self, service: &ObjectKey, pod_host: Option<&str>) -> Vec<String> {
        let base = base_name(service, pod_host);
        let ns = &service.namespace;
        let mut names = Vec::with_capacity(4);
        if *ns == self.first_namespace && !reserved(&base) && !public(&base) {
            names.push(base.clone());
        }
        let qualified = format!("{base}.{ns}");
        if !public(&qualified) {
            names.push(qualified);
        }
        names.push(format!("{base}.{ns}.svc"));
        names.push(format!("{base}.{ns}.svc.{}", self.cluster_domain));
        names
    }
}

/// `svc`, or `host.svc` for a pod of a headless Service.
fn base_name(service: &ObjectKey, pod_host: Option<&str>) -> String {
    match pod_host {
        Some(host) => format!("{host}.{}", service.name),
        None => service.name.clone(),
    }
}

/// Single names every machine or network already means something by (`/etc/hosts` defaults
/// of Debian and macOS, proxy and tunnel auto-discovery).
const RESERVED: [&str; 14] = [
    "localhost",
    "localhost.localdomain",
    "localdomain",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
    "wpad",
    "isatap",
];

/// Whether `name` must not be added as a bare name: one of [`RESERVED`], under `localhost`
/// (RFC 6761), `local` (mDNS) or `localdomain`, or this machine's host name (whole or its
/// first label). Compared ignoring case, as resolvers do.
pub fn reserved(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    RESERVED.contains(&name.as_str())
        || [".localhost", ".local", ".localdomain"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
        || machine_names().contains(&name)
}

/// Generic top-level domains whose names no Service may take (see the module documentation).
const PUBLIC_TLDS: [&str; 11] = [
    "com", "net", "org", "edu", "gov", "mil", "int", "arpa", "info", "biz", "io",
];

/// Whether `name` (of more than one label) ends in one of [`PUBLIC_TLDS`]. Ignores case.
pub fn public(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    match name.rsplit_once('.') {
        Some((_, tld)) => PUBLIC_TLDS.contains(&tld),
        None => false,
    }
}

/// This machine's host name and its first label, lower-cased (read once).
fn machine_names() -> &'static [String] {
    static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        // The host name is uname's node name (what gethostname reads).
        let uname = rustix::system::uname();
        let host = uname.nodename().to_string_lossy().to_ascii_lowercase();
        let mut names = Vec::new();
        if !host.is_empty() {
            if let Some((first, _)) = host.split_once('.') {
                names.push(first.to_string());
            }
            names.push(host);
        }
        names
    })
}

/// The names of a Service (and of its pods) that [`Naming::names`] leaves out: bare names that
/// are [`reserved`] or [`public`], and `svc.NS` names that are [`public`].
pub fn withheld(naming: &Naming, view: &ServiceView) -> Vec<String> {
    if view.not_forwarded.is_some() {
        return Vec::new();
    }
    let first = view.key.namespace == naming.first_namespace;
    let pods = view
        .backends
        .iter()
        .filter(|_| view.headless)
        .filter_map(|b| b.hostname.as_deref());
    let mut out = Vec::new();
    for base in std::iter::once(None)
        .chain(pods.map(Some))
        .map(|host| base_name(&view.key, host))
    {
        if first && (reserved(&base) || public(&base)) {
            out.push(base.clone());
        }
        let qualified = format!("{base}.{}", view.key.namespace);
        if public(&qualified) {
            out.push(qualified);
        }
    }
    out
}

/// The note for [`withheld`] names ("" when there are none).
pub fn withheld_note(naming: &Naming, view: &ServiceView) -> String {
    let names = withheld(naming, view);
    let Some(first) = names.first() else {
        return String::new();
    };
    let ns = &view.key.namespace;
    let (domains, local): (Vec<&String>, Vec<&String>) = names.iter().partition(|n| public(n));
    let mut said = Vec::new();
    if !local.is_empty() {
        let list: Vec<&str> = local.iter().map(|n| n.as_str()).collect();
        said.push(format!(
            "bare name {} not added to the hosts file: this machine already uses it (reserved)",
            list.join(",")
        ));
    }
    if !domains.is_empty() {
        let list: Vec<&str> = domains.iter().map(|n| n.as_str()).collect();
        said.push(format!(
            "{} not added to the hosts file: a public domain name (it ends in a generic top-level domain)",
            list.join(",")
        ));
    }
    // The shortest name that was added: `svc.NS` for a bare name, else `svc.NS.svc`.
    let instead = if first.ends_with(&format!(".{ns}")) {
        format!("{first}.svc")
    } else if public(&format!("{first}.{ns}")) {
        format!("{first}.{ns}.svc")
    } else {
        format!("{first}.{ns}")
    };
    format!("{}; use {instead} instead", said.join("; "))
}

/// Everything one Service should become, by forward.
pub fn desired(naming: &Naming, view: &ServiceView) -> BTreeMap<ForwardKey, Desired> {
    let mut out = BTreeMap::new();
    if view.not_forwarded.is_some() {
        return out;
    }
    let ports: BTreeMap<u16, String> = view.tcp_ports().map(|p| (p.port, p.name.clone())).collect();
    let service = Arc::new(view.key.clone());
    out.insert(
        ForwardKey::service(service.clone()),
        Desired {
            service: service.clone(),
            pinned: None,
            names: naming.names(&view.key, None),
            ports: ports.clone(),
            backends: view.backends.clone(),
        },
    );
    if view.headless {
        for backend in &view.backends {
            let Some(host) = backend.hostname.as_deref() else {
                continue;
            };
            out.insert(
                ForwardKey {
                    service: service.clone(),
                    pod_host: Some(host.to_string()),
                },
                Desired {
                    service: service.clone(),
                    pinned: Some(backend.pod.clone()),
                    names: naming.names(&view.key, Some(host)),
                    ports: ports.clone(),
                    backends: vec![backend.clone()],
                },
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::model::ServicePort;

    fn naming() -> Naming {
        Naming {
            context: "kind".into(),
            first_namespace: "demo".into(),
            cluster_domain: "cluster.local".into(),
        }
    }

    fn fk(ns: &str, name: &str, host: Option<&str>) -> ForwardKey {
        ForwardKey {
            service: Arc::new(ObjectKey::new(ns, name)),
            pod_host: host.map(str::to_string),
        }
    }

    #[test]
    fn forward_keys_order_and_allocate_as_their_text() {
        let n = naming();
        assert_eq!(n.alloc_key(&fk("demo", "web", None)), "kind/demo/web");
        assert_eq!(
            n.alloc_key(&fk("demo", "cache", Some("cache-0"))),
            "kind/demo/cache/cache-0"
        );
        // The order of the allocation keys they replace: byte by byte, `-` before `/`.
        let mut keys = [
            fk("demo", "web", Some("web-0")),
            fk("demo", "web", None),
            fk("demo-2", "web", None),
            fk("demo", "web-a", None),
        ];
        keys.sort();
        let texts: Vec<String> = keys.iter().map(ToString::to_string).collect();
        let mut sorted = texts.clone();
        sorted.sort();
        assert_eq!(texts, sorted);
        assert_eq!(
            texts,
            ["demo-2/web", "demo/web", "demo/web-a", "demo/web/web-0"]
        );
        // Every pair, odd keys included (a `/` inside a name takes the byte-by-byte path).
        let parts = [
            "", "a", "a-", "a-b", "a.b", "a/b", "ab", "b", "web", "web-0",
        ];
        let mut all = Vec::new();
        for ns in ["demo", "demo-2", "a", "a/b"] {
            for name in parts {
                all.push(fk(ns, name, None));
                for host in parts {
                    all.push(fk(ns, name, Some(host)));
                }
            }
        }
        for x in &all {
            for y in &all {
                assert_eq!(
                    x.cmp(y),
                    x.to_string().cmp(&y.to_string()),
                    "{x} against {y}"
                );
            }
        }
    }

    fn view(ns: &str, headless: bool) -> ServiceView {
        ServiceView {
            key: ObjectKey::new(ns, "cache"),
            ports: vec![
                ServicePort {
                    name: "redis".into(),
                    port: 6379,
                    protocol: "TCP".into(),
                },
                ServicePort {
                    name: "dns".into(),
                    port: 53,
                    protocol: "UDP".into(),
                },
            ],
            headless,
            backends: vec![Backend {
                pod: "cache-0".into(),
                ready: true,
                hostname: Some("cache-0".into()),
                ports: BTreeMap::from([("redis".to_string(), 6379)]),
            }],
            not_forwarded: None,
        }
    }

    #[test]
    fn names_in_first_and_other_namespaces() {
        let n = naming();
        assert_eq!(
            n.names(&ObjectKey::new("demo", "echo"), None),
            [
                "echo",
                "echo.demo",
                "echo.demo.svc",
                "echo.demo.svc.cluster.local"
            ]
        );
        assert_eq!(
            n.names(&ObjectKey::new("other", "echo"), None)[0],
            "echo.other"
        );
        assert_eq!(
            n.names(&ObjectKey::new("demo", "cache"), Some("cache-0"))[1],
            "cache-0.cache.demo"
        );
    }

    #[test]
    fn reserved_bare_names_are_left_out_and_said() {
        let n = naming();
        for name in [
            "localhost",
            "wpad",
            "isatap",
            "broadcasthost",
            "ip6-localhost",
            "ip6-loopback",
            "local",
            "localdomain",
        ] {
            let names = n.names(&ObjectKey::new("demo", name), None);
            assert_eq!(
                names,
                [
                    format!("{name}.demo"),
                    format!("{name}.demo.svc"),
                    format!("{name}.demo.svc.cluster.local")
                ],
                "{name}"
            );
        }
        // Per-pod bare names: `localhost.localdomain`, `x.localhost`, `x.local`.
        for (host, svc) in [
            ("localhost", "localdomain"),
            ("x", "localhost"),
            ("x", "local"),
        ] {
            let names = n.names(&ObjectKey::new("demo", svc), Some(host));
            assert_eq!(names[0], format!("{host}.{svc}.demo"), "{names:?}");
        }
        // Case does not matter to resolvers.
        assert!(reserved("WPAD") && reserved("LocalHost.") && !reserved("web"));
        // This machine's own name.
        let own = machine_names();
        assert!(!own.is_empty(), "gethostname gave a name");
        for name in own {
            assert!(reserved(name), "{name}");
        }
        // Other namespaces never had bare names; ordinary names keep theirs.
        assert_eq!(
            n.names(&ObjectKey::new("other", "wpad"), None)[0],
            "wpad.other"
        );
        assert_eq!(n.names(&ObjectKey::new("demo", "web"), None)[0], "web");

        let mut wpad = view("demo", true);
        wpad.key = ObjectKey::new("demo", "wpad");
        wpad.backends[0].hostname = Some("x".into());
        assert_eq!(withheld(&n, &wpad), ["wpad"]);
        let note = withheld_note(&n, &wpad);
        assert!(
            note.contains("bare name wpad not added") && note.contains("wpad.demo"),
            "{note}"
        );
        let mut local = view("demo", true);
        local.key = ObjectKey::new("demo", "localdomain");
        local.backends[0].hostname = Some("localhost".into());
        assert_eq!(
            withheld(&n, &local),
            ["localdomain", "localhost.localdomain"]
        );
        assert!(withheld(&n, &view("demo", true)).is_empty());
        assert!(withheld_note(&n, &view("other", false)).is_empty());
        let plan = desired(&n, &wpad);
        assert_eq!(plan[&fk("demo", "wpad", None)].names[0], "wpad.demo");
        // `x.wpad` is no name anyone else uses: kept.
        assert_eq!(plan[&fk("demo", "wpad", Some("x"))].names[0], "x.wpad");
    }

    #[test]
    fn names_that_would_be_public_domains_are_left_out_and_said() {
        let mut n = naming();
        n.first_namespace = "com".into();
        assert_eq!(
            n.names(&ObjectKey::new("com", "bank"), None),
            ["bank", "bank.com.svc", "bank.com.svc.cluster.local"]
        );
        assert!(public("bank.COM.") && public("x.io") && !public("api.dev") && !public("com"));
        let mut bank = view("com", false);
        bank.key = ObjectKey::new("com", "bank");
        assert_eq!(withheld(&n, &bank), ["bank.com"]);
        let note = withheld_note(&n, &bank);
        assert!(
            note.contains("bank.com not added") && note.contains("use bank.com.svc instead"),
            "{note}"
        );
        // A headless Service named after a TLD: its pods' bare names would be public.
        let mut org = view("demo", true);
        org.key = ObjectKey::new("demo", "org");
        org.backends[0].hostname = Some("www".into());
        let plan = desired(&naming(), &org);
        assert_eq!(
            plan[&fk("demo", "org", Some("www"))].names[0],
            "www.org.demo"
        );
        assert_eq!(withheld(&naming(), &org), ["www.org"]);
        assert!(
            withheld_note(&naming(), &org).contains("use www.org.demo instead"),
            "{}",
            withheld_note(&naming(), &org)
        );
        // Namespaces named like newer or country TLDs keep their names.
        assert_eq!(
            naming().names(&ObjectKey::new("dev", "api"), None)[0],
            "api.dev"
        );
    }

    #[test]
    fn headless_services_get_per_pod_addresses() {
        let plan = desired(&naming(), &view("demo", true));
        assert_eq!(plan.len(), 2);
        let pod = &plan[&fk("demo", "cache", Some("cache-0"))];
        assert_eq!(pod.pinned.as_deref(), Some("cache-0"));
        assert_eq!(
            pod.ports.keys().copied().collect::<Vec<_>>(),
            [6379],
            "UDP gets no listener"
        );
        assert_eq!(desired(&naming(), &view("demo", false)).len(), 1);
    }
}
