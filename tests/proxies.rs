//! Reaching the API server through proxies and tunnels made of real programs (tinyproxy,
//! danted, socat; see `common::proxies`), with kubectl as the client: `proxy-url` with
//! `socks5://`, `http://` and `https://` proxies, `HTTPS_PROXY`/`NO_PROXY`, and a local tunnel
//! with `tls-server-name`. Each test reads the proxy's own log to show the connection went
//! through it. kubectl first (what the harness and kubesim do is what a real client sees),
//! then czctl along the same paths: `namespace teleport` over every port-forward transport,
//! `doctor`'s report of the path, and the failures that name the hop.
//!
//! "Split horizon" tests give the proxy a hosts file mapping `kubesim.test` to 127.0.0.1 and the
//! client one mapping it to 127.255.255.254, where nothing listens: a client that connected
//! anywhere but through the proxy would be refused, so its success shows that every connection
//! (API requests and port-forward streams alike) went through the proxy.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::proxies::*;
use common::*;
use kubesim::harness::Server;

/// The environment variables that pick a proxy for Go programs (both spellings).
const PROXY_ENV: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Where a client runs: which hosts file (if any) and which proxy variables.
#[derive(Debug, Clone, Copy, Default)]
struct Client<'a> {
    hosts: Option<&'a Path>,
    env: &'a [(&'a str, &'a str)],
}

/// A kubectl command with `kubeconfig` (and its own cache directory beside it), run as `client`
/// says, with every proxy variable of this process's environment removed first.
fn kubectl(kubeconfig: &Path, client: Client, args: &[&str]) -> std::process::Command {
    let cache = kubeconfig.with_extension("cache");
    let mut all = vec![
        "--kubeconfig",
        kubeconfig.to_str().expect("UTF-8 path"),
        "--cache-dir",
        cache.to_str().expect("UTF-8 path"),
    ];
    all.extend_from_slice(args);
    let mut cmd = command_with_hosts(client.hosts, "kubectl", &all);
    for var in PROXY_ENV {
        cmd.env_remove(var);
    }
    cmd.envs(client.env.iter().copied());
    cmd
}

/// Runs kubectl; its output.
fn kubectl_output(kubeconfig: &Path, client: Client, args: &[&str]) -> Output {
    kubectl(kubeconfig, client, args)
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl")
}

/// `kubectl get pods -n demo -o name`, which must succeed; its stdout.
fn get_pods(kubeconfig: &Path, client: Client) -> String {
    let out = kubectl_output(
        kubeconfig,
        client,
        &["get", "pods", "-n", "demo", "-o", "name"],
    );
    let text = both(&out);
    assert!(out.status.success(), "kubectl get pods failed: {text}");
    assert!(text.contains("pod/echo-"), "{text}");
    text
}

/// The name of one echo pod in demo.
fn echo_pod(sim: &KubeSim) -> String {
    let names = sim.kubectl_ok(&["get", "pods", "-n", "demo", "-l", "app=echo", "-o", "name"]);
    names
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("pod/"))
        .expect("an echo pod")
        .to_string()
}

/// The test's server with the demo fixtures whose certificate also names `kubesim.test`
/// (kubesim with `--tls-san`; the real control plane's certificate has the name already).
fn kubesim_named(extra: &[&str]) -> KubeSim {
    let mut args = Vec::new();
    if Server::from_env() == Server::KubeSim {
        args.extend(["--tls-san", KUBESIM_NAME]);
    }
    args.extend_from_slice(extra);
    kubesim(&["demo"], &args)
}

/// `https://kubesim.test:PORT`: kubesim by the name on its certificate.
fn by_name(sim: &KubeSim) -> String {
    format!("https://{KUBESIM_NAME}:{}", api_port(sim))
}

/// kubesim's kubeconfig as `NAME`, the server by name (`https://kubesim.test:PORT`) through
/// the proxy at `proxy_url`.
fn by_name_via(sim: &KubeSim, name: &str, proxy_url: String) -> PathBuf {
    kubeconfig_variant(
        sim,
        name,
        &ClusterEdit {
            server: Some(by_name(sim)),
            proxy_url: Some(proxy_url),
            ..ClusterEdit::default()
        },
    )
}

/// The proxy's hosts file (`kubesim.test` is 127.0.0.1) and the client's (`kubesim.test` is
/// 127.255.255.254, where nothing listens), in `sim.dir`.
fn split_horizon(sim: &KubeSim) -> (PathBuf, PathBuf) {
    (
        hosts_with(&sim.dir, "hosts-proxy", &[("127.0.0.1", KUBESIM_NAME)]),
        hosts_with(
            &sim.dir,
            "hosts-client",
            &[("127.255.255.254", KUBESIM_NAME)],
        ),
    )
}

/// Checks that `client_hosts` is a dead end without a proxy: kubectl with `server:
/// https://kubesim.test:PORT` and no proxy is refused.
fn assert_direct_path_is_closed(sim: &KubeSim, client_hosts: &Path) {
    let direct = kubeconfig_variant(
        sim,
        "direct-by-name",
        &ClusterEdit {
            server: Some(by_name(sim)),
            ..ClusterEdit::default()
        },
    );
    let client = Client {
        hosts: Some(client_hosts),
        env: &[],
    };
    let out = kubectl_output(&direct, client, &["get", "pods", "-n", "demo"]);
    let text = both(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("127.255.255.254") && text.contains("connection refused"),
        "{text}"
    );
}

// ------------------------------------------------------------------ port-forward

/// A running `kubectl port-forward`, killed when dropped.
struct PortForward {
    child: Child,
    /// The local port kubectl listens on.
    port: u16,
    stderr: mpsc::Receiver<String>,
}

impl PortForward {
    /// `kubectl port-forward -n demo pod/POD 0:8080` with `KUBECTL_PORT_FORWARD_WEBSOCKETS` set
    /// to `websockets`; returns once kubectl prints its local port.
    fn start(kubeconfig: &Path, client: Client, pod: &str, websockets: bool) -> PortForward {
        let target = format!("pod/{pod}");
        let mut child = kubectl(
            kubeconfig,
            client,
            &["port-forward", "-n", "demo", &target, "0:8080"],
        )
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubectl port-forward");
        let stderr = lines_of(child.stderr.take().expect("piped stderr"));
        let stdout = lines_of(child.stdout.take().expect("piped stdout"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = stdout.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                let errors: Vec<String> = stderr.try_iter().collect();
                panic!(
                    "kubectl port-forward (websockets={websockets}) printed no forwarding line; \
                     stderr: {errors:#?}"
                );
            };
            if let Some(port) = line
                .strip_prefix("Forwarding from 127.0.0.1:")
                .and_then(|rest| rest.strip_suffix(" -> 8080"))
            {
                break port.parse().expect("a port number");
            }
        };
        PortForward {
            child,
            port,
            stderr,
        }
    }

    /// `curl http://127.0.0.1:PORT/hello`: the echo pod's JSON answer.
    fn curl(&self) -> String {
        let url = format!("http://127.0.0.1:{}/hello", self.port);
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "15", &url])
            .output()
            .expect("curl is needed (Debian package curl)");
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        let kubectl_stderr: Vec<String> = self.stderr.try_iter().collect();
        assert!(
            out.status.success(),
            "curl {url}: {}; kubectl stderr: {kubectl_stderr:#?}",
            String::from_utf8_lossy(&out.stderr)
        );
        body
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// How many port-forward upgrades of `kind` (`websocket-spdy`: SPDY tunnelled in a WebSocket;
/// `spdy`: the SPDY upgrade) kubesim has served.
fn upgrades(sim: &KubeSim, kind: &str) -> u64 {
    assert_eq!(
        Server::from_env(),
        Server::KubeSim,
        "only kubesim counts upgrades"
    );
    let out = sim.kubectl_ok(&["get", "--raw", "/kubesim/stats/portforwards"]);
    let stats: serde_json::Value = serde_json::from_str(&out).expect("JSON stats");
    stats["portforwards"][kind].as_u64().unwrap_or(0)
}

/// Waits until `through` (a proxy's count of connections, read from its log) passes `before`:
/// danted's children write their log lines on their own time. `what` names the case.
fn saw_more(through: &impl Fn() -> usize, before: usize, what: &str) {
    eventually(
        &format!("{what}: a new connection in the proxy's log"),
        Duration::from_secs(10),
        || (through() > before).then_some(()),
    );
}

/// How kubectl's port-forward asked for WebSockets (`KUBECTL_PORT_FORWARD_WEBSOCKETS=true`, its
/// default) reaches the pod: tunnelled in a WebSocket, or over SPDY after kubectl fell back
/// by itself because its WebSocket dialer cannot use the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WebSocketAsked {
    Served,
    FellBackToSpdy,
}

/// Port-forwards to an echo pod over both transports (WebSocket, then SPDY) as `client` with
/// `kubeconfig`, and checks that curl through each gets that pod's answer over the transport
/// `websocket` says (kubectl falls back from WebSocket to SPDY by itself; kubesim's counts
/// show which one served). `through` counts the proxy's connections: each transport must add
/// at least one (the upgrade request's).
fn port_forward_both_ways(
    sim: &KubeSim,
    kubeconfig: &Path,
    client: Client,
    websocket: WebSocketAsked,
    through: impl Fn() -> usize,
) {
    let pod = echo_pod(sim);
    let websocket_kind = match websocket {
        WebSocketAsked::Served => "websocket-spdy",
        WebSocketAsked::FellBackToSpdy => "spdy",
    };
    for (websockets, kind) in [(true, websocket_kind), (false, "spdy")] {
        let before = through();
        let upgraded = upgrades(sim, kind);
        let forward = PortForward::start(kubeconfig, client, &pod, websockets);
        let body = forward.curl();
        assert_eq!(
            pod_of(&body).as_deref(),
            Some(pod.as_str()),
            "websockets={websockets}: {body}"
        );
        assert_eq!(
            upgrades(sim, kind),
            upgraded + 1,
            "websockets={websockets}: not one {kind} upgrade"
        );
        saw_more(&through, before, &format!("websockets={websockets}"));
    }
}

// ------------------------------------------------------------------ socks5

#[test]
fn kubectl_through_a_socks5_proxy_url() {
    let sim = kubesim(&["demo"], &[]);
    let dante = Dante::start(&sim.dir, None);
    let kubeconfig = kubeconfig_variant(
        &sim,
        "socks5",
        &ClusterEdit {
            proxy_url: Some(dante.url()),
            ..ClusterEdit::default()
        },
    );
    get_pods(&kubeconfig, Client::default());
    let port = api_port(&sim);
    assert!(dante.connects_to(port) >= 1, "{}", dante.log());
}

#[test]
fn kubectl_port_forwards_through_a_socks5_proxy_url() {
    let sim = kubesim_named(&[]);
    let (proxy_hosts, client_hosts) = split_horizon(&sim);
    let dante = Dante::start(&sim.dir, Some(&proxy_hosts));
    let kubeconfig = by_name_via(&sim, "socks5-by-name", dante.url());
    let client = Client {
        hosts: Some(&client_hosts),
        env: &[],
    };
    assert_direct_path_is_closed(&sim, &client_hosts);
    get_pods(&kubeconfig, client);
    let port = api_port(&sim);
    port_forward_both_ways(&sim, &kubeconfig, client, WebSocketAsked::Served, || {
        dante.connects_to(port)
    });
}

#[test]
fn a_socks5_proxy_with_username_auth_wants_the_credentials_in_the_proxy_url() {
    let sim = kubesim(&["demo"], &[]);
    let dante = Dante::start_with(
        &sim.dir,
        &DanteOptions {
            user: Some(("czctl-test", "s3cret")),
            ..DanteOptions::default()
        },
    );
    let port = api_port(&sim);
    let cases = [
        (dante.url(), "no acceptable authentication methods"),
        (
            dante.url_with("czctl-test", "wrong"),
            "username/password authentication failed",
        ),
    ];
    for (i, (url, error)) in cases.iter().enumerate() {
        let kubeconfig = kubeconfig_variant(
            &sim,
            &format!("socks5-refused-{i}"),
            &ClusterEdit {
                proxy_url: Some(url.clone()),
                ..ClusterEdit::default()
            },
        );
        let out = kubectl_output(
            &kubeconfig,
            Client::default(),
            &["get", "pods", "-n", "demo"],
        );
        let text = both(&out);
        assert!(!out.status.success(), "{url}: {text}");
        assert!(text.contains(error), "{url}: {text}");
    }
    assert_eq!(dante.connects_to(port), 0, "{}", dante.log());
    let kubeconfig = kubeconfig_variant(
        &sim,
        "socks5-user",
        &ClusterEdit {
            proxy_url: Some(dante.url_with("czctl-test", "s3cret")),
            ..ClusterEdit::default()
        },
    );
    get_pods(&kubeconfig, Client::default());
    assert!(dante.connects_to(port) >= 1, "{}", dante.log());
    assert!(
        dante.log().contains("username%czctl-test@127.0.0.1."),
        "{}",
        dante.log()
    );
}

// ------------------------------------------------------------------ http CONNECT

#[test]
fn kubectl_through_an_http_proxy_url() {
    let sim = kubesim(&["demo"], &[]);
    let proxy = Tinyproxy::start(&sim.dir);
    let kubeconfig = kubeconfig_variant(
        &sim,
        "http",
        &ClusterEdit {
            proxy_url: Some(proxy.url()),
            ..ClusterEdit::default()
        },
    );
    get_pods(&kubeconfig, Client::default());
    let target = format!("127.0.0.1:{}", api_port(&sim));
    assert!(proxy.connects_to(&target) >= 1, "{}", proxy.log());
}

#[test]
fn kubectl_port_forwards_through_an_http_proxy_url() {
    let sim = kubesim_named(&[]);
    let (proxy_hosts, client_hosts) = split_horizon(&sim);
    let proxy = Tinyproxy::start_with(
        &sim.dir,
        &TinyproxyOptions {
            hosts: Some(&proxy_hosts),
            ..TinyproxyOptions::default()
        },
    );
    let kubeconfig = by_name_via(&sim, "http-by-name", proxy.url());
    let client = Client {
        hosts: Some(&client_hosts),
        env: &[],
    };
    get_pods(&kubeconfig, client);
    let target = format!("{KUBESIM_NAME}:{}", api_port(&sim));
    port_forward_both_ways(&sim, &kubeconfig, client, WebSocketAsked::Served, || {
        proxy.connects_to(&target)
    });
}

#[test]
fn an_http_proxy_with_basic_auth_wants_the_credentials_in_the_proxy_url() {
    let sim = kubesim(&["demo"], &[]);
    let proxy = Tinyproxy::start_with(
        &sim.dir,
        &TinyproxyOptions {
            basic_auth: Some(("dev", "s3cret")),
            ..TinyproxyOptions::default()
        },
    );
    let target = format!("127.0.0.1:{}", api_port(&sim));
    let without = kubeconfig_variant(
        &sim,
        "http-no-auth",
        &ClusterEdit {
            proxy_url: Some(proxy.url()),
            ..ClusterEdit::default()
        },
    );
    let out = kubectl_output(&without, Client::default(), &["get", "pods", "-n", "demo"]);
    let text = both(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("Proxy Authentication Required"), "{text}");
    assert!(proxy.connects_to(&target) >= 1, "{}", proxy.log());
    assert_eq!(proxy.established(), 0, "{}", proxy.log());
    let with = kubeconfig_variant(
        &sim,
        "http-auth",
        &ClusterEdit {
            proxy_url: Some(format!("http://dev:s3cret@127.0.0.1:{}", proxy.port())),
            ..ClusterEdit::default()
        },
    );
    get_pods(&with, Client::default());
    assert!(proxy.established() >= 1, "{}", proxy.log());
}

// ------------------------------------------------------------------ https

#[test]
fn kubectl_through_an_https_proxy_url_verified_with_the_kubeconfig_ca() {
    let scratch = Scratch::new("proxies-https");
    let ca = TestCa::new(&scratch.dir);
    let ca_args = ca.kubesim_args();
    let extra: Vec<&str> = ca_args.iter().map(String::as_str).collect();
    let sim = kubesim_named(&extra);
    let (proxy_hosts, client_hosts) = split_horizon(&sim);
    let proxy = HttpsProxy::start(
        &sim.dir,
        &ca,
        &TinyproxyOptions {
            hosts: Some(&proxy_hosts),
            ..TinyproxyOptions::default()
        },
    );
    let kubeconfig = by_name_via(&sim, "https-by-name", proxy.url());
    let client = Client {
        hosts: Some(&client_hosts),
        env: &[],
    };
    get_pods(&kubeconfig, client);
    assert!(
        proxy.tls_log().contains("accepting connection from"),
        "{}",
        proxy.tls_log()
    );
    let target = format!("{KUBESIM_NAME}:{}", api_port(&sim));
    // kubectl 1.32's WebSocket dialer knows no https:// proxy ("proxy: unknown scheme: https"
    // at -v=4): it falls back to SPDY, which goes through the proxy.
    port_forward_both_ways(
        &sim,
        &kubeconfig,
        client,
        WebSocketAsked::FellBackToSpdy,
        || proxy.connects_to(&target),
    );

    // A proxy whose certificate another CA signed is refused: kubectl verifies the proxy with
    // the kubeconfig's CA.
    let other_ca = TestCa::new(&scratch.dir.join("other"));
    let stranger = HttpsProxy::start(&sim.dir, &other_ca, &TinyproxyOptions::default());
    let kubeconfig = kubeconfig_variant(
        &sim,
        "https-other-ca",
        &ClusterEdit {
            proxy_url: Some(stranger.url()),
            ..ClusterEdit::default()
        },
    );
    let out = kubectl_output(
        &kubeconfig,
        Client::default(),
        &["get", "pods", "-n", "demo"],
    );
    let text = both(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("proxyconnect tcp: tls: failed to verify certificate: x509: certificate signed by unknown authority"),
        "{text}"
    );
    assert_eq!(stranger.inner.established(), 0, "{}", stranger.log());
}

// ------------------------------------------------------------------ HTTPS_PROXY / NO_PROXY

#[test]
fn kubectl_honours_https_proxy_and_no_proxy() {
    let sim = kubesim_named(&[]);
    let hosts = hosts_with(&sim.dir, "hosts", &[("127.0.0.1", KUBESIM_NAME)]);
    let proxy = Tinyproxy::start_with(
        &sim.dir,
        &TinyproxyOptions {
            hosts: Some(&hosts),
            ..TinyproxyOptions::default()
        },
    );
    let kubeconfig = kubeconfig_variant(
        &sim,
        "by-name",
        &ClusterEdit {
            server: Some(by_name(&sim)),
            ..ClusterEdit::default()
        },
    );
    let port = api_port(&sim);
    let target = format!("{KUBESIM_NAME}:{port}");
    let url = proxy.url();
    let via = |no_proxy: Option<&str>| {
        let mut env = vec![("HTTPS_PROXY", url.as_str())];
        if let Some(no_proxy) = no_proxy {
            env.push(("NO_PROXY", no_proxy));
        }
        let before = proxy.connects_to(&target);
        get_pods(
            &kubeconfig,
            Client {
                hosts: Some(&hosts),
                env: &env,
            },
        );
        proxy.connects_to(&target) > before
    };
    assert!(via(None), "HTTPS_PROXY alone: {}", proxy.log());
    // What Go's NO_PROXY matching (golang.org/x/net/http/httpproxy) makes of each entry for
    // https://kubesim.test:PORT: true = still proxied.
    let port_entry = format!("{KUBESIM_NAME}:{port}");
    let cases: &[(&str, bool)] = &[
        (KUBESIM_NAME, false),
        ("*", false),
        ("other.test,kubesim.test", false),
        (&port_entry, false),
        ("kubesim.test:1", true),
        // A leading dot matches subdomains only, not the name itself.
        (".kubesim.test", true),
        ("sub.kubesim.test", true),
        // Addresses and CIDRs match IP literals in the URL, never a name's address.
        ("127.0.0.1", true),
        ("127.0.0.0/8", true),
    ];
    for (no_proxy, proxied) in cases {
        assert_eq!(
            via(Some(no_proxy)),
            *proxied,
            "NO_PROXY={no_proxy}: {}",
            proxy.log()
        );
    }
}

#[test]
fn kubectl_port_forwards_through_https_proxy_from_the_environment() {
    let sim = kubesim_named(&[]);
    let (proxy_hosts, client_hosts) = split_horizon(&sim);
    let proxy = Tinyproxy::start_with(
        &sim.dir,
        &TinyproxyOptions {
            hosts: Some(&proxy_hosts),
            ..TinyproxyOptions::default()
        },
    );
    let kubeconfig = kubeconfig_variant(
        &sim,
        "env-by-name",
        &ClusterEdit {
            server: Some(by_name(&sim)),
            ..ClusterEdit::default()
        },
    );
    let url = proxy.url();
    let env = [("HTTPS_PROXY", url.as_str())];
    let client = Client {
        hosts: Some(&client_hosts),
        env: &env,
    };
    get_pods(&kubeconfig, client);
    let target = format!("{KUBESIM_NAME}:{}", api_port(&sim));
    port_forward_both_ways(&sim, &kubeconfig, client, WebSocketAsked::Served, || {
        proxy.connects_to(&target)
    });
}

// ------------------------------------------------------------------ tunnel + tls-server-name

#[test]
fn kubectl_through_a_tunnel_needs_tls_server_name() {
    let sim = kubesim_named(&[]);
    let tunnel = SocatTunnel::start(&sim.dir, api_port(&sim));
    let hosts = hosts_with(&sim.dir, "hosts-tunnel", &[("127.0.0.1", "tunnel.test")]);
    let client = Client {
        hosts: Some(&hosts),
        env: &[],
    };
    let tunnel_name = format!("https://tunnel.test:{}", tunnel.port());
    // The tunnel's name is not on the certificate.
    let plain = kubeconfig_variant(
        &sim,
        "tunnel-plain",
        &ClusterEdit {
            server: Some(tunnel_name.clone()),
            ..ClusterEdit::default()
        },
    );
    let out = kubectl_output(&plain, client, &["get", "pods", "-n", "demo"]);
    let text = both(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("x509: certificate is valid for")
            && text.contains(KUBESIM_NAME)
            && text.contains("not tunnel.test"),
        "{text}"
    );
    assert!(tunnel.accepted() >= 1, "{}", tunnel.log());
    // tls-server-name makes it verify the certificate for kubesim.test.
    let named = kubeconfig_variant(
        &sim,
        "tunnel-named",
        &ClusterEdit {
            server: Some(tunnel_name),
            tls_server_name: Some(KUBESIM_NAME.into()),
            ..ClusterEdit::default()
        },
    );
    get_pods(&named, client);
    // The usual shape: https://127.0.0.1:TUNNEL with the real API host as tls-server-name.
    let local = kubeconfig_variant(
        &sim,
        "tunnel-local",
        &ClusterEdit {
            server: Some(tunnel.url()),
            tls_server_name: Some(KUBESIM_NAME.into()),
            ..ClusterEdit::default()
        },
    );
    let before = tunnel.accepted();
    get_pods(&local, Client::default());
    port_forward_both_ways(
        &sim,
        &local,
        Client::default(),
        WebSocketAsked::Served,
        || tunnel.accepted(),
    );
    assert!(tunnel.accepted() > before, "{}", tunnel.log());
}

// ------------------------------------------------------------------ the kubeconfig variants

#[test]
fn kubeconfig_variants_are_what_kubectl_reads() {
    let scratch = Scratch::new("proxies-variants");
    let ca = TestCa::new(&scratch.dir);
    let ca_args = ca.kubesim_args();
    let extra: Vec<&str> = ca_args.iter().map(String::as_str).collect();
    let sim = kubesim_named(&extra);
    // The CA as a file, and no CA at all but insecure-skip-tls-verify.
    for (name, edit) in [
        (
            "ca-file",
            ClusterEdit {
                certificate_authority: Some(ca.cert.clone()),
                ..ClusterEdit::default()
            },
        ),
        (
            "insecure",
            ClusterEdit {
                insecure_skip_tls_verify: true,
                ..ClusterEdit::default()
            },
        ),
    ] {
        let kubeconfig = kubeconfig_variant(&sim, name, &edit);
        get_pods(&kubeconfig, Client::default());
        let view = kubectl_output(
            &kubeconfig,
            Client::default(),
            &[
                "config",
                "view",
                "--raw",
                "-o",
                "jsonpath={.clusters[0].cluster}",
            ],
        );
        let cluster: serde_json::Value =
            serde_json::from_slice(&view.stdout).expect("the cluster as JSON");
        assert!(
            cluster.get("certificate-authority-data").is_none(),
            "{name}: {cluster}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kubeconfig).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    // Every field at once, as kubectl reads them back.
    let kubeconfig = kubeconfig_variant(
        &sim,
        "all",
        &ClusterEdit {
            server: Some(by_name(&sim)),
            proxy_url: Some("socks5://127.0.0.1:1".into()),
            tls_server_name: Some("other.test".into()),
            ..ClusterEdit::default()
        },
    );
    let view = kubectl_output(
        &kubeconfig,
        Client::default(),
        &["config", "view", "-o", "jsonpath={.clusters[0].cluster}"],
    );
    let cluster: serde_json::Value =
        serde_json::from_slice(&view.stdout).expect("the cluster as JSON");
    assert_eq!(cluster["server"], by_name(&sim), "{cluster}");
    assert_eq!(cluster["proxy-url"], "socks5://127.0.0.1:1", "{cluster}");
    assert_eq!(cluster["tls-server-name"], "other.test", "{cluster}");
}

// ------------------------------------------------------------------ czctl through the same paths
//
// czctl itself, with the same kubeconfig variants and proxies as kubectl above: `namespace
// teleport` in the foreground in a private mount namespace whose /etc/hosts maps
// `kubesim.test` to a dead end (split horizon), so only connections through the proxy reach
// the API server; a request by name reaches a pod over each port-forward transport
// (`CZCTL_PORTFORWARD`; kubesim's upgrade counts say which served), and the proxy's own log
// shows czctl's connections.

/// kubesim's counter for a `CZCTL_PORTFORWARD` choice.
const TRANSPORTS: [(&str, &str); 3] = [
    ("spdy-websocket", "websocket-spdy"),
    ("spdy", "spdy"),
    ("websocket", "websocket-v4"),
];

/// A czctl command in a private mount namespace with `hosts` over /etc/hosts, every proxy
/// variable of this process removed and `env` set.
fn czctl_cmd(sim: &KubeSim, hosts: &Path, env: &[(&str, &str)]) -> std::process::Command {
    let mut cmd = namespaced_czctl(hosts, &[]);
    for var in PROXY_ENV {
        cmd.env_remove(var);
    }
    cmd.env("CZCTL_STATE_DIR", sim.dir.join("czctl-state"));
    cmd.envs(env.iter().copied());
    cmd
}

/// `czctl namespace teleport --foreground demo --kubeconfig KUBECONFIG`, started as
/// [`czctl_cmd`] says.
fn teleport_demo(sim: &KubeSim, hosts: &Path, env: &[(&str, &str)], kubeconfig: &Path) -> Czctl {
    let mut cmd = czctl_cmd(sim, hosts, env);
    cmd.args([
        "namespace",
        "teleport",
        "--foreground",
        "demo",
        "--kubeconfig",
    ])
    .arg(kubeconfig);
    spawn(cmd)
}

/// A czctl hosts file: the test's original lines plus `entries` (czctl adds its block).
fn czctl_hosts(sim: &KubeSim, name: &str, entries: &[(&str, &str)]) -> PathBuf {
    let path = hosts_with(&sim.dir, name, entries);
    let mut text = std::fs::read_to_string(&path).expect("hosts");
    text.push_str("# managed by the test\n");
    std::fs::write(&path, text).expect("hosts");
    path
}

/// `czctl doctor -n demo` with `kubeconfig` as `hosts`/`env` say; its output and exit status.
fn czctl_doctor(
    sim: &KubeSim,
    kubeconfig: &Path,
    hosts: &Path,
    env: &[(&str, &str)],
) -> (bool, String) {
    let out = czctl_cmd(sim, hosts, env)
        .args(["doctor", "-n", "demo", "--kubeconfig"])
        .arg(kubeconfig)
        .stdin(Stdio::null())
        .output()
        .expect("run czctl doctor");
    (out.status.success(), both(&out))
}

/// czctl's hosts file where `kubesim.test` is the dead end 127.255.255.254.
fn dead_end_hosts(sim: &KubeSim) -> PathBuf {
    czctl_hosts(sim, "czctl-dead-end", &[("127.255.255.254", KUBESIM_NAME)])
}

/// `czctl doctor` passes, and its `api path` line contains `want`.
fn assert_api_path(
    sim: &KubeSim,
    kubeconfig: &Path,
    hosts: &Path,
    env: &[(&str, &str)],
    want: &str,
) {
    let (ok, report) = czctl_doctor(sim, kubeconfig, hosts, env);
    assert!(ok, "{report}");
    assert!(api_path_line(&report).contains(want), "{report}");
}

/// The `api path` line of a doctor report.
fn api_path_line(report: &str) -> String {
    report
        .lines()
        .find(|l| l.starts_with("api path"))
        .unwrap_or_else(|| panic!("no api path line: {report}"))
        .to_string()
}

/// Teleports demo with `kubeconfig` over each transport in turn and checks that
/// `http://echo.demo:8080/` reaches an echo pod over it, and that `through` (the proxy's count
/// of connections) grows with each.
fn czctl_teleports_over_every_transport(
    sim: &KubeSim,
    kubeconfig: &Path,
    hosts: &Path,
    env: &[(&str, &str)],
    through: impl Fn() -> usize,
) {
    for (protocol, kind) in TRANSPORTS {
        let before = through();
        // Only kubesim counts upgrades; on a real server, CZCTL_PORTFORWARD naming one
        // protocol (never falling back) shows which served.
        let counted = Server::from_env() == Server::KubeSim;
        let upgraded = if counted { upgrades(sim, kind) } else { 0 };
        let mut vars = env.to_vec();
        vars.push(("CZCTL_PORTFORWARD", protocol));
        let mut czctl = teleport_demo(sim, hosts, &vars, kubeconfig);
        czctl.wait_ready();
        let (ok, body) = czctl.curl("http://echo.demo:8080/");
        assert!(ok, "{protocol}: {body}");
        assert!(
            pod_of(&body).is_some(),
            "{protocol}: not an echo answer: {body}"
        );
        assert!(
            !counted || upgrades(sim, kind) > upgraded,
            "{protocol}: no {kind} upgrade served the request"
        );
        saw_more(&through, before, protocol);
        czctl.signal(libc::SIGTERM);
        assert!(czctl.wait_exit(LONG).success(), "{protocol}: czctl failed");
    }
}

const LONG: Duration = Duration::from_secs(30);

#[test]
fn czctl_teleports_through_a_socks5_proxy_url() {
    let sim = kubesim_named(&[]);
    let (proxy_hosts, client_hosts) = split_horizon(&sim);
    let dante = Dante::start(&sim.dir, Some(&proxy_hosts));
    let kubeconfig = by_name_via(&sim, "czctl-socks5", dante.url());
    assert_direct_path_is_closed(&sim, &client_hosts);
    let hosts = dead_end_hosts(&sim);
    assert_api_path(
        &sim,
        &kubeconfig,
        &hosts,
        &[],
        &format!(
            "through the SOCKS5 proxy socks5://127.0.0.1:{} (from the kubeconfig's proxy-url); \
             TLS name {KUBESIM_NAME} (from the server URL)",
            dante.port()
        ),
    );
    let port = api_port(&sim);
    czctl_teleports_over_every_transport(&sim, &kubeconfig, &hosts, &[], || {
        dante.connects_to(port)
    });
    // kubectl, with the same kubeconfig from the same dead-end hosts file.
    get_pods(
        &kubeconfig,
        Client {
            hosts: Some(&client_hosts),
            env: &[],
        },
    );
}

#[test]
fn czctl_teleports_through_an_http_proxy_url() {
    let sim = kubesim_named(&[]);
    let (proxy_hosts, client_hosts) = split_horizon(&sim);
    let tinyproxy = Tinyproxy::start_with(
        &sim.dir,
        &TinyproxyOptions {
            hosts: Some(&proxy_hosts),
            ..TinyproxyOptions::default()
        },
    );
    let kubeconfig = by_name_via(&sim, "czctl-http", tinyproxy.url());
    let hosts = dead_end_hosts(&sim);
    assert_api_path(
        &sim,
        &kubeconfig,
        &hosts,
        &[],
        &format!(
            "through the HTTP proxy http://127.0.0.1:{} (from the kubeconfig's proxy-url)",
            tinyproxy.port()
        ),
    );
    let target = format!("{KUBESIM_NAME}:{}", api_port(&sim));
    czctl_teleports_over_every_transport(&sim, &kubeconfig, &hosts, &[], || {
        tinyproxy.connects_to(&target)
    });
    get_pods(
        &kubeconfig,
        Client {
            hosts: Some(&client_hosts),
            env: &[],
        },
    );

    // The mission's CI script, every command through the proxy: a background teleport, the
    // workload's configuration export, a request by name, and the close.
    let before = tinyproxy.connects_to(&target);
    let env_file = sim.dir.join("echo.env");
    let script = format!(
        "set -e; trap '{czctl} session close --all' EXIT; \
         {czctl} namespace teleport demo; \
         {czctl} deployment teleport echo -n demo -f {env}; \
         curl -sS --max-time 10 http://echo.demo:8080/; echo",
        czctl = env!("CARGO_BIN_EXE_czctl"),
        env = env_file.display()
    );
    let out = command_with_hosts(Some(&hosts), "sh", &["-c", &script])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KUBECONFIG", &kubeconfig)
        .env("CZCTL_STATE_DIR", sim.dir.join("czctl-ci-state"))
        .stdin(Stdio::null())
        .output()
        .expect("run the CI script");
    let text = both(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines().any(|l| pod_of(l).is_some()),
        "no echo answer: {text}"
    );
    let exported = std::fs::read_to_string(&env_file).expect("the .env file");
    assert!(exported.contains("ECHO_SERVICE_HOST="), "{exported}");
    assert!(
        tinyproxy.connects_to(&target) > before,
        "{}",
        tinyproxy.log()
    );
}

#[test]
fn czctl_teleports_through_an_https_proxy_url_even_over_websocket() {
    let ca = TestCa::new(&scratch_dir("czctl-https-proxy-ca"));
    let ca_args = ca.kubesim_args();
    let mut extra: Vec<&str> = ca_args.iter().map(String::as_str).collect();
    extra.extend(["--tls-san", KUBESIM_NAME]);
    let sim = kubesim(&["demo"], &extra);
    let (proxy_hosts, _client_hosts) = split_horizon(&sim);
    let proxy = HttpsProxy::start(
        &sim.dir,
        &ca,
        &TinyproxyOptions {
            hosts: Some(&proxy_hosts),
            ..TinyproxyOptions::default()
        },
    );
    let kubeconfig = by_name_via(&sim, "czctl-https", proxy.url());
    let hosts = dead_end_hosts(&sim);
    assert_api_path(
        &sim,
        &kubeconfig,
        &hosts,
        &[],
        "through the HTTPS proxy https://",
    );
    // Unlike kubectl 1.32 (whose WebSocket dialer cannot use an https:// proxy and falls back
    // to SPDY), czctl's WebSocket transports go through it too: one connector for everything.
    let target = format!("{KUBESIM_NAME}:{}", api_port(&sim));
    czctl_teleports_over_every_transport(&sim, &kubeconfig, &hosts, &[], || {
        proxy.connects_to(&target)
    });
}

#[test]
fn czctl_follows_https_proxy_and_no_proxy_from_the_environment() {
    let sim = kubesim_named(&[]);
    let (proxy_hosts, _) = split_horizon(&sim);
    let tinyproxy = Tinyproxy::start_with(
        &sim.dir,
        &TinyproxyOptions {
            hosts: Some(&proxy_hosts),
            ..TinyproxyOptions::default()
        },
    );
    let kubeconfig = kubeconfig_variant(
        &sim,
        "czctl-by-name",
        &ClusterEdit {
            server: Some(by_name(&sim)),
            ..ClusterEdit::default()
        },
    );
    let target = format!("{KUBESIM_NAME}:{}", api_port(&sim));
    let url = tinyproxy.url();
    // The dead end: only the proxy reaches the API server.
    let dead_end = dead_end_hosts(&sim);
    let env = [("HTTPS_PROXY", url.as_str())];
    assert_api_path(
        &sim,
        &kubeconfig,
        &dead_end,
        &env,
        &format!(
            "through the HTTP proxy http://127.0.0.1:{} (from HTTPS_PROXY)",
            tinyproxy.port()
        ),
    );
    czctl_teleports_over_every_transport(&sim, &kubeconfig, &dead_end, &env, || {
        tinyproxy.connects_to(&target)
    });

    // A SOCKS5 proxy from the environment (Go reads socks5:// there too).
    let dante = Dante::start(&sim.dir, Some(&proxy_hosts));
    let socks = dante.url();
    let env = [("https_proxy", socks.as_str())];
    assert_api_path(
        &sim,
        &kubeconfig,
        &dead_end,
        &env,
        &format!(
            "through the SOCKS5 proxy socks5://127.0.0.1:{} (from https_proxy)",
            dante.port()
        ),
    );
    let port = api_port(&sim);
    czctl_teleports_over_every_transport(&sim, &kubeconfig, &dead_end, &env, || {
        dante.connects_to(port)
    });

    // NO_PROXY names the server: czctl goes direct (the hosts file now leads there) and the
    // proxy sees nothing more; kubectl agrees.
    let direct = czctl_hosts(&sim, "czctl-direct", &[("127.0.0.1", KUBESIM_NAME)]);
    let env = [
        ("HTTPS_PROXY", url.as_str()),
        ("NO_PROXY", "other.test,kubesim.test"),
    ];
    let before = tinyproxy.connects_to(&target);
    assert_api_path(
        &sim,
        &kubeconfig,
        &direct,
        &env,
        "direct (NO_PROXY entry \"kubesim.test\" matches, so HTTPS_PROXY is not used)",
    );
    let mut czctl = teleport_demo(&sim, &direct, &env, &kubeconfig);
    czctl.wait_ready();
    let (ok, body) = czctl.curl("http://echo.demo:8080/");
    assert!(ok && pod_of(&body).is_some(), "{body}");
    czctl.signal(libc::SIGTERM);
    assert!(czctl.wait_exit(LONG).success());
    get_pods(
        &kubeconfig,
        Client {
            hosts: Some(&direct),
            env: &env,
        },
    );
    assert_eq!(
        tinyproxy.connects_to(&target),
        before,
        "{}",
        tinyproxy.log()
    );

    // A loopback server never uses HTTPS_PROXY (as kubectl): kubesim's own kubeconfig works
    // with a proxy variable pointing nowhere.
    let env = [("HTTPS_PROXY", "http://127.0.0.1:1")];
    assert_api_path(
        &sim,
        &sim.kubeconfig,
        &direct,
        &env,
        "direct (HTTPS_PROXY is not used for localhost or loopback",
    );
}

#[test]
fn czctl_reaches_a_tunnel_with_tls_server_name_and_names_a_mismatch() {
    let sim = kubesim_named(&[]);
    let tunnel = SocatTunnel::start(&sim.dir, api_port(&sim));
    let hosts = czctl_hosts(&sim, "czctl-hosts", &[("127.0.0.1", "tunnel.test")]);
    let server = format!("https://tunnel.test:{}", tunnel.port());
    // The tunnel's own name is not on the certificate: the failure names the name and the fix.
    let mismatch = kubeconfig_variant(
        &sim,
        "czctl-tunnel-no-name",
        &ClusterEdit {
            server: Some(server.clone()),
            ..ClusterEdit::default()
        },
    );
    let (ok, report) = czctl_doctor(&sim, &mismatch, &hosts, &[]);
    assert!(!ok, "{report}");
    assert!(
        report.contains(
            "the server's certificate is not valid for tunnel.test (the host of the server URL)"
        ) && report.contains("set tls-server-name in the kubeconfig's cluster"),
        "{report}"
    );
    let named = kubeconfig_variant(
        &sim,
        "czctl-tunnel",
        &ClusterEdit {
            server: Some(server),
            tls_server_name: Some(KUBESIM_NAME.into()),
            ..ClusterEdit::default()
        },
    );
    assert_api_path(
        &sim,
        &named,
        &hosts,
        &[],
        &format!("direct (no proxy set); TLS name {KUBESIM_NAME} (tls-server-name)"),
    );
    czctl_teleports_over_every_transport(&sim, &named, &hosts, &[], || tunnel.accepted());
    get_pods(
        &named,
        Client {
            hosts: Some(&hosts),
            env: &[],
        },
    );
}

#[test]
fn czctl_names_the_proxy_hop_that_failed() {
    let sim = kubesim(&["demo"], &[]);
    let tinyproxy = Tinyproxy::start_with(
        &sim.dir,
        &TinyproxyOptions {
            basic_auth: Some(("dev", "s3cret")),
            ..TinyproxyOptions::default()
        },
    );
    let hosts = czctl_hosts(&sim, "czctl-hosts", &[]);
    let variant = |name: &str, url: String| {
        kubeconfig_variant(
            &sim,
            name,
            &ClusterEdit {
                proxy_url: Some(url),
                ..ClusterEdit::default()
            },
        )
    };
    let port = tinyproxy.port();
    // No credentials: the proxy asks for them; a start fails fast with exit code 3 and says
    // where they go.
    let none = variant("czctl-auth-none", format!("http://127.0.0.1:{port}"));
    let out = czctl_cmd(&sim, &hosts, &[])
        .args(["namespace", "teleport", "demo", "--kubeconfig"])
        .arg(&none)
        .stdin(Stdio::null())
        .output()
        .expect("czctl");
    let text = both(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains(&format!(
            "the HTTP proxy http://127.0.0.1:{port} (from the kubeconfig's proxy-url) asks for \
             a user name and password"
        )) && text.contains("http://USER:PASSWORD@HOST:PORT"),
        "{text}"
    );
    // Wrong ones: refused, and the password never appears.
    let wrong = variant(
        "czctl-auth-wrong",
        format!("http://dev:hunter2@127.0.0.1:{port}"),
    );
    let (ok, report) = czctl_doctor(&sim, &wrong, &hosts, &[]);
    assert!(
        !ok && report.contains("refused the user name and password"),
        "{report}"
    );
    assert!(!report.contains("hunter2"), "{report}");
    // Right ones: through.
    let right = variant(
        "czctl-auth-right",
        format!("http://dev:s3cret@127.0.0.1:{port}"),
    );
    let (ok, report) = czctl_doctor(&sim, &right, &hosts, &[]);
    assert!(ok, "{report}");
    assert!(!report.contains("s3cret"), "{report}");
    // Nothing listens at the proxy's address.
    let dead = variant("czctl-dead", "socks5://127.0.0.1:1".into());
    let (ok, report) = czctl_doctor(&sim, &dead, &hosts, &[]);
    assert!(
        !ok && report.contains(
            "cannot connect to the SOCKS5 proxy socks5://127.0.0.1:1 (from the kubeconfig's \
             proxy-url): connection refused"
        ),
        "{report}"
    );
    // The proxy cannot reach the API server.
    let dante = Dante::start(&sim.dir, None);
    let unreachable = kubeconfig_variant(
        &sim,
        "czctl-unreachable",
        &ClusterEdit {
            server: Some("https://127.0.0.1:1".into()),
            proxy_url: Some(dante.url()),
            ..ClusterEdit::default()
        },
    );
    let (ok, report) = czctl_doctor(&sim, &unreachable, &hosts, &[]);
    assert!(
        !ok && report.contains("would not connect to the API server 127.0.0.1:1")
            && report.contains("the proxy cannot reach the API server"),
        "{report}"
    );
    // A scheme kubectl does not support is refused by name.
    let socks4 = variant("czctl-socks4", "socks4://127.0.0.1:1080".into());
    let (ok, report) = czctl_doctor(&sim, &socks4, &hosts, &[]);
    assert!(
        !ok && report.contains("proxy scheme \"socks4\""),
        "{report}"
    );
}

#[test]
fn czctl_warns_on_every_start_when_the_certificate_is_not_checked() {
    let sim = kubesim(&["demo"], &[]);
    let kubeconfig = kubeconfig_variant(
        &sim,
        "czctl-insecure",
        &ClusterEdit {
            insecure_skip_tls_verify: true,
            ..ClusterEdit::default()
        },
    );
    let hosts = czctl_hosts(&sim, "czctl-hosts", &[]);
    let (ok, report) = czctl_doctor(&sim, &kubeconfig, &hosts, &[]);
    assert!(ok, "a warning is not a failure: {report}");
    let line = api_path_line(&report);
    assert!(
        line.contains("warn")
            && line.contains("TLS certificate NOT checked (insecure-skip-tls-verify)"),
        "{report}"
    );
    assert!(
        report.contains("anyone on the network path can read and change the traffic"),
        "no warning on stderr: {report}"
    );
    let mut czctl = teleport_demo(&sim, &hosts, &[], &kubeconfig);
    czctl.wait_stderr("insecure-skip-tls-verify", LONG);
    czctl.wait_ready();
    let (ok, body) = czctl.curl("http://echo.demo:8080/");
    assert!(ok && pod_of(&body).is_some(), "{body}");
    czctl.signal(libc::SIGTERM);
    assert!(czctl.wait_exit(LONG).success());
}
