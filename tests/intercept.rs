//! `czctl service intercept` end to end against kubesim: the router is real NGINX, the tunnel
//! agent is this build's `czctl-agent` binary run as a pod, traffic enters through the
//! Service's ClusterIP as it would from another pod, and the developer's server is a local
//! echo server.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn start_sim(extra: &[&str]) -> KubeSim {
    let image = agent_run_image();
    let mut args = vec!["--run-image", image.as_str()];
    args.extend_from_slice(extra);
    kubesim(&["demo"], &args)
}

fn czctl(sim: &KubeSim, state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_czctl"))
        .args(args)
        .env("KUBECONFIG", &sim.kubeconfig)
        .env("CZCTL_STATE_DIR", state)
        .stdin(Stdio::null())
        .output()
        .expect("run czctl")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The developer's server: kubesim's echo image run locally, answering with `name`.
struct LocalServer {
    child: Child,
    port: u16,
}

impl LocalServer {
    fn start(name: &str) -> LocalServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(kubesim::harness::binary_near(&exe))
            .args(["backend", "--image", "kubesim/echo", "--ip", "127.0.0.1"])
            .args([
                "--port",
                &port.to_string(),
                "--pod",
                name,
                "--namespace",
                "laptop",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the local echo server");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "listening");
        LocalServer { child, port }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cluster_ip(sim: &KubeSim, service: &str) -> String {
    let path = "jsonpath={.spec.clusterIP}";
    sim.kubectl_ok(&["get", "svc", service, "-n", "demo", "-o", path])
}

/// A request to the echo Service's ClusterIP, as another pod would send it; the answering
/// pod's name.
fn who_answers(ip: &str, header: Option<&str>) -> String {
    who_answers_at(&format!("{ip}:8080"), header)
}

/// The pod (or local server) that answers a request to `addr`, with an optional header.
fn who_answers_at(addr: &str, header: Option<&str>) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10"]);
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(format!("http://{addr}/")).output().expect("curl");
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    pod_of(&body).unwrap_or_else(|| {
        format!(
            "no pod in {body:?} ({})",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The Service as it matters for restore: everything but the server's bookkeeping.
fn service_state(sim: &KubeSim) -> Value {
    let mut svc: Value =
        serde_json::from_str(&sim.kubectl_ok(&["get", "svc", "echo", "-n", "demo", "-o", "json"]))
            .unwrap();
    for field in ["resourceVersion", "managedFields", "generation"] {
        if let Some(meta) = svc["metadata"].as_object_mut() {
            meta.remove(field);
        }
    }
    svc
}

/// Everything czctl created in the namespace, by label, plus any Session records.
fn residue(sim: &KubeSim) -> String {
    let labelled = sim.kubectl_ok(&[
        "get",
        "deployments,services,configmaps,secrets,leases,networkpolicies",
        "-n",
        "demo",
        "-l",
        "app.kubernetes.io/managed-by=czctl",
        "-o",
        "name",
    ]);
    let sessions = sim
        .kubectl()
        .args(["get", "sessions.czctl.dev", "-n", "demo", "-o", "name"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    format!("{labelled}{sessions}").trim().to_string()
}

/// Waits until nothing czctl created is left (garbage collection may take a moment).
fn wait_clean(sim: &KubeSim) {
    eventually(
        "czctl's objects to be gone",
        Duration::from_secs(20),
        || residue(sim).is_empty().then_some(()),
    );
}

fn state_dir(sim: &KubeSim, name: &str) -> PathBuf {
    sim.dir.join(format!("state-{name}"))
}

/// `service intercept echo -n demo -x HEADER -p PORT`.
fn intercept_args(header: &str, port: u16) -> Vec<String> {
    [
        "service",
        "intercept",
        "echo",
        "-n",
        "demo",
        "-x",
        header,
        "-p",
        &port.to_string(),
    ]
    .map(str::to_string)
    .to_vec()
}

fn intercept_detached(sim: &KubeSim, state: &Path, header: &str, port: u16) -> String {
    let mut args = intercept_args(header, port);
    args.push("--detach".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = czctl(sim, state, &args);
    assert!(out.status.success(), "intercept failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One test's world: kubesim with the demo, a state directory, the echo Service as it was and
/// its ClusterIP, and alice's local server.
struct World {
    sim: KubeSim,
    state: PathBuf,
    before: Value,
    ip: String,
    alice: LocalServer,
}

fn world(name: &str, extra: &[&str]) -> World {
    let sim = start_sim(extra);
    World {
        state: state_dir(&sim, name),
        before: service_state(&sim),
        ip: cluster_ip(&sim, "echo"),
        alice: LocalServer::start("alice-laptop"),
        sim,
    }
}

#[test]
fn header_requests_reach_the_laptop_and_close_restores_the_service() {
    let World {
        sim,
        state,
        before,
        ip,
        alice,
    } = world("basic", &[]);
    let session = intercept_detached(&sim, &state, "x-dev:alice", alice.port);
    assert!(session.starts_with("ic-"), "{session}");

    for _ in 0..4 {
        assert_eq!(who_answers(&ip, Some("x-dev: alice")), "alice-laptop");
        assert_eq!(who_answers(&ip, Some("X-Dev: ALICE")), "alice-laptop");
        let other = who_answers(&ip, None);
        assert!(other.starts_with("echo-"), "{other}");
        let other = who_answers(&ip, Some("x-dev: bob"));
        assert!(other.starts_with("echo-"), "{other}");
    }
    let listed = czctl(&sim, &state, &["session", "list"]);
    assert!(text(&listed).contains(&session), "{}", text(&listed));
    let status = czctl(&sim, &state, &["status", &session, "-o", "json"]);
    assert!(status.status.success(), "{}", text(&status));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(status.to_string().contains("x-dev: alice"), "{status}");

    let closed = czctl(&sim, &state, &["session", "close", "--all"]);
    assert!(closed.status.success(), "{}", text(&closed));
    assert_eq!(service_state(&sim), before);
    wait_clean(&sim);
    let other = who_answers(&ip, Some("x-dev: alice"));
    assert!(other.starts_with("echo-"), "{other}");
}

/// Through a SOCKS5 proxy (`proxy-url`, real danted): the whole intercept (its setup, the
/// tunnel's port-forwards to the agent, the routed requests) and a later close from another
/// process go through the proxy, whose log shows them.
#[test]
fn an_intercept_and_its_close_go_through_a_socks5_proxy_url() {
    use common::proxies::{api_port, kubeconfig_variant, ClusterEdit, Dante};
    let World {
        sim,
        state,
        before,
        ip,
        alice,
    } = world("socks5", &[]);
    let dante = Dante::start(&sim.dir, None);
    let kubeconfig = kubeconfig_variant(
        &sim,
        "intercept-socks5",
        &ClusterEdit {
            proxy_url: Some(dante.url()),
            ..ClusterEdit::default()
        },
    );
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_czctl"))
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("CZCTL_STATE_DIR", &state)
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .stdin(Stdio::null())
            .output()
            .expect("run czctl")
    };
    let port = api_port(&sim);
    let mut args = intercept_args("x-dev:alice", alice.port);
    args.push("--detach".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args);
    assert!(out.status.success(), "intercept failed: {}", text(&out));
    let through_setup = dante.connects_to(port);
    assert!(through_setup >= 1, "{}", dante.log());
    for _ in 0..3 {
        assert_eq!(who_answers(&ip, Some("x-dev: alice")), "alice-laptop");
    }
    let closed = run(&["session", "close", "--all"]);
    assert!(closed.status.success(), "{}", text(&closed));
    // danted's children write their log lines on their own time: wait for the close's.
    eventually(
        "the proxy's log of the close's connections",
        Duration::from_secs(20),
        || (dante.connects_to(port) > through_setup).then_some(()),
    );
    assert_eq!(service_state(&sim), before);
    wait_clean(&sim);
}

#[test]
fn two_developers_each_get_their_own_requests() {
    let sim = start_sim(&[]);
    let ip = cluster_ip(&sim, "echo");
    let before = service_state(&sim);
    let (alice, bob) = (
        LocalServer::start("alice-laptop"),
        LocalServer::start("bob-laptop"),
    );
    let (sa, sb) = (state_dir(&sim, "alice"), state_dir(&sim, "bob"));
    let a = intercept_detached(&sim, &sa, "x-dev:alice", alice.port);
    let b = intercept_detached(&sim, &sb, "x-dev:bob", bob.port);
    for _ in 0..3 {
        assert_eq!(who_answers(&ip, Some("x-dev: alice")), "alice-laptop");
        assert_eq!(who_answers(&ip, Some("x-dev: bob")), "bob-laptop");
        assert!(who_answers(&ip, None).starts_with("echo-"));
    }
    // The same value a second time is refused, naming who has it.
    let clash = czctl(
        &sim,
        &sb,
        &[
            "service",
            "intercept",
            "echo",
            "-n",
            "demo",
            "-x",
            "x-dev:alice",
            "-p",
            "1",
            "--detach",
        ],
    );
    assert_eq!(clash.status.code(), Some(7), "{}", text(&clash));
    assert!(text(&clash).contains(&a), "{}", text(&clash));

    let out = czctl(&sim, &sa, &["session", "close", &a]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(who_answers(&ip, Some("x-dev: alice")).starts_with("echo-"));
    assert_eq!(who_answers(&ip, Some("x-dev: bob")), "bob-laptop");
    assert_ne!(
        service_state(&sim),
        before,
        "bob's intercept still routes the Service"
    );

    let out = czctl(&sim, &sb, &["session", "close", &b]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(service_state(&sim), before);
}

#[test]
fn hostile_headers_are_refused_before_any_change() {
    let sim = start_sim(&[]);
    let state = state_dir(&sim, "hostile");
    let before = service_state(&sim);
    for spec in [
        "default",
        "x-dev:default\";",
        "include:/etc/passwd x",
        "x-dev:\"quoted\"",
        "x-dev:{a}",
        "x-dev:a;b",
        "x-dev:a\nb",
        "x-dev:$host",
        "x_dev:alice",
        "x-dev:a b",
        "x-dev:}",
    ] {
        let out = czctl(
            &sim,
            &state,
            &[
                "service",
                "intercept",
                "echo",
                "-n",
                "demo",
                "-x",
                spec,
                "-p",
                "1",
            ],
        );
        assert_eq!(out.status.code(), Some(2), "{spec:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("header"),
            "{spec:?}: {}",
            text(&out)
        );
    }
    // ngrok without a token: refused before anything is created, exit 3.
    let out = Command::new(env!("CARGO_BIN_EXE_czctl"))
        .args([
            "service",
            "intercept",
            "echo",
            "-n",
            "demo",
            "--tunnel",
            "ngrok",
            "-p",
            "1",
        ])
        .env("KUBECONFIG", &sim.kubeconfig)
        .env("CZCTL_STATE_DIR", &state)
        .env_remove("NGROK_AUTHTOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("NGROK_AUTHTOKEN"), "{}", text(&out));
    assert_eq!(service_state(&sim), before);
    assert_eq!(residue(&sim), "");
}

#[test]
fn generated_router_config_passes_nginx_t() {
    use czctl::intercept::nginx::{render, RouterConfig};
    use czctl::intercept::record::{Route, TunnelKind};
    use czctl::intercept::spec::parse_header;
    let routes: Vec<Route> = [
        "x-dev:alice",
        "x-dev:default",
        "x-user:include",
        "X-C6O-INTERCEPT:yes",
    ]
    .iter()
    .enumerate()
    .map(|(i, spec)| Route {
        session: format!("ic-{i}abcde"),
        header: parse_header(Some(spec)).unwrap(),
        owner: "dev@laptop".into(),
        tunnel: TunnelKind::Cluster,
        upstream: Some(format!("127.0.0.{}:7001", i + 2)),
        lease: "l".into(),
        started: "now".into(),
        tls: None,
    })
    .collect();
    // An ngrok route: reached over HTTPS by name, with the secret header.
    let mut routes = routes;
    routes.push(Route {
        session: "ic-ngrok1".into(),
        header: parse_header(Some("x-dev:carol")).unwrap(),
        owner: "carol@laptop".into(),
        tunnel: TunnelKind::Ngrok,
        upstream: Some("localhost:443".into()),
        lease: "l".into(),
        started: "now".into(),
        tls: Some(czctl::intercept::record::TlsUpstream {
            host: "localhost".into(),
            secret: czctl::tunnel::token::generate(),
        }),
    });
    for routes in [&routes[..], &[]] {
        let conf = render(&RouterConfig {
            service: "demo/echo".into(),
            decoy_ip: "127.0.0.9".into(),
            intercepted: 8080,
            ports: vec![(0, 8080), (1, 9090)],
            routes,
            generation: 1,
        });
        let dir = std::env::temp_dir().join(format!(
            "czctl-nginx-t-{}-{}",
            std::process::id(),
            routes.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("nginx.conf");
        std::fs::write(&file, &conf).unwrap();
        let mut globals = String::new();
        let stream = Path::new("/usr/lib/nginx/modules/ngx_stream_module.so");
        if stream.exists() {
            globals.push_str(&format!("load_module {};", stream.display()));
        }
        let out = Command::new("nginx")
            .args(["-t", "-e", "/dev/stderr", "-p"])
            .arg(&dir)
            .arg("-c")
            .arg(&file)
            .args(if globals.is_empty() {
                vec![]
            } else {
                vec!["-g".to_string(), globals]
            })
            .output()
            .expect("nginx is installed (.ci/run installs nginx-light and libnginx-mod-stream)");
        assert!(
            out.status.success(),
            "nginx -t refused:\n{conf}\n{}",
            text(&out)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A WebSocket upgrade to the echo Service's ClusterIP; returns the echoed text.
fn websocket_echo(ip: &str, header: Option<&str>, message: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(format!("{ip}:8080")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let extra = header.map(|h| format!("{h}\r\n")).unwrap_or_default();
    write!(
        stream,
        "GET /ws HTTP/1.1\r\nHost: echo.demo\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // One masked text frame.
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | message.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(message.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).unwrap();
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).unwrap();
    assert_eq!(header[0], 0x81, "a text frame comes back");
    let mut payload = vec![0u8; usize::from(header[1] & 0x7f)];
    stream.read_exact(&mut payload).unwrap();
    String::from_utf8(payload).unwrap()
}

fn tunnel_connections(sim: &KubeSim, state: &Path, session: &str) -> u64 {
    let out = czctl(sim, state, &["status", session, "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    status["sessions"][0]["forwards"][0]["total_connections"]
        .as_u64()
        .unwrap_or_else(|| panic!("no connection count in {status}"))
}

#[test]
fn websocket_upgrades_pass_through_the_route() {
    let World {
        sim,
        state,
        ip,
        alice,
        ..
    } = world("ws", &[]);
    let session = intercept_detached(&sim, &state, "x-dev:alice", alice.port);
    let before = tunnel_connections(&sim, &state, &session);
    assert_eq!(
        websocket_echo(&ip, Some("x-dev: alice"), "hello alice"),
        "hello alice"
    );
    let after = tunnel_connections(&sim, &state, &session);
    assert_eq!(after, before + 1, "the upgrade went through the tunnel");
    assert_eq!(websocket_echo(&ip, None, "hello pods"), "hello pods");
    assert_eq!(
        tunnel_connections(&sim, &state, &session),
        after,
        "other upgrades reach the pods"
    );
    let out = czctl(&sim, &state, &["session", "close", "--all"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// Starts an intercept in the foreground and waits until it routes.
fn intercept_foreground(sim: &KubeSim, state: &Path, header: &str, port: u16) -> Czctl {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_czctl"));
    cmd.args(intercept_args(header, port))
        .arg("--foreground")
        .env("KUBECONFIG", &sim.kubeconfig)
        .env("CZCTL_STATE_DIR", state);
    let mut czctl = spawn(cmd);
    czctl.wait_stdout("intercepting service demo/echo", Duration::from_secs(90));
    czctl
}

#[test]
fn after_kill_9_close_all_restores_the_service_and_leaves_nothing() {
    let World {
        sim,
        state,
        before,
        ip,
        alice,
    } = world("kill", &[]);
    let mut running = intercept_foreground(&sim, &state, "x-dev:alice", alice.port);
    assert_eq!(who_answers(&ip, Some("x-dev: alice")), "alice-laptop");
    running.signal(libc::SIGKILL);
    running.wait_exit(Duration::from_secs(10));

    let listed = czctl(&sim, &state, &["session", "list"]);
    assert!(text(&listed).contains("stale"), "{}", text(&listed));
    // Closed from another shell: no KUBECONFIG there; the session remembers its kubeconfig.
    let out = Command::new(env!("CARGO_BIN_EXE_czctl"))
        .args(["session", "close", "--all"])
        .env_remove("KUBECONFIG")
        .env("HOME", &sim.dir)
        .env("CZCTL_STATE_DIR", &state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("restored"), "{}", text(&out));
    assert_eq!(service_state(&sim), before);
    wait_clean(&sim);
    let again = czctl(&sim, &state, &["session", "list"]);
    assert!(!text(&again).contains("ic-"), "{}", text(&again));
}

#[test]
fn a_foreign_change_makes_close_refuse_until_forced() {
    let World {
        sim,
        state,
        before,
        alice,
        ..
    } = world("foreign", &[]);
    intercept_detached(&sim, &state, "x-dev:alice", alice.port);
    sim.kubectl_ok(&[
        "patch",
        "svc",
        "echo",
        "-n",
        "demo",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"selector":{"team":"someone-else"}}}"#,
    ]);
    let changed = service_state(&sim);

    let out = czctl(&sim, &state, &["session", "close", "--all"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(
        text(&out).contains("someone-else") && text(&out).contains("--force"),
        "{}",
        text(&out)
    );
    assert_eq!(
        service_state(&sim),
        changed,
        "a refused close changes nothing"
    );
    assert_ne!(residue(&sim), "");

    let out = czctl(&sim, &state, &["session", "close", "--all", "--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(service_state(&sim)["spec"], before["spec"]);
    wait_clean(&sim);
}

#[test]
fn a_stale_intercept_is_named_with_its_cleanup() {
    let World {
        sim,
        state,
        before,
        alice,
        ..
    } = world("stale", &[]);
    let mut running = intercept_foreground(&sim, &state, "x-dev:alice", alice.port);
    running.signal(libc::SIGKILL);
    running.wait_exit(Duration::from_secs(10));
    // Age the heartbeat as 30 s without renewal would.
    let lease = sim.kubectl_ok(&[
        "get",
        "leases",
        "-n",
        "demo",
        "-l",
        "app.kubernetes.io/managed-by=czctl",
        "-o",
        "name",
    ]);
    sim.kubectl_ok(&[
        "patch",
        lease.trim(),
        "-n",
        "demo",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"renewTime":"2020-01-01T00:00:00.000000Z"}}"#,
    ]);
    let bob = LocalServer::start("bob-laptop");
    let other_state = state_dir(&sim, "stale-bob");
    let out = czctl(
        &sim,
        &other_state,
        &[
            "service",
            "intercept",
            "echo",
            "-n",
            "demo",
            "-x",
            "x-dev:bob",
            "-p",
            &bob.port.to_string(),
            "--detach",
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(
        text(&out).contains("czctl service intercept echo -n demo --close"),
        "{}",
        text(&out)
    );

    let out = czctl(
        &sim,
        &other_state,
        &["service", "intercept", "echo", "-n", "demo", "--close"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("heartbeat had expired"),
        "{}",
        text(&out)
    );
    assert_eq!(service_state(&sim), before);
}

#[test]
fn without_crd_rights_the_record_is_a_configmap() {
    let rbac =
        std::env::temp_dir().join(format!("czctl-intercept-rbac-{}.yaml", std::process::id()));
    std::fs::write(
        &rbac,
        "user: tenant\ndeny:\n  - verbs: [\"*\"]\n    resources: [customresourcedefinitions]\n",
    )
    .unwrap();
    let World {
        sim,
        state,
        before,
        ip,
        alice,
    } = world("cm", &["--rbac", rbac.to_str().unwrap()]);
    intercept_detached(&sim, &state, "x-dev:alice", alice.port);
    assert_eq!(who_answers(&ip, Some("x-dev: alice")), "alice-laptop");
    let records = sim.kubectl_ok(&[
        "get",
        "configmaps",
        "-n",
        "demo",
        "-l",
        "czctl.dev/session-record=true",
        "-o",
        "name",
    ]);
    assert_eq!(records.trim(), "configmap/intercept-demo-echo");
    let out = czctl(&sim, &state, &["session", "close", "--all"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(service_state(&sim), before);
    let _ = std::fs::remove_file(&rbac);
}

#[test]
fn the_tunnel_recovers_from_dropped_port_forwards_and_a_replaced_agent() {
    let World {
        sim,
        state,
        ip,
        alice,
        ..
    } = world("recover", &[]);
    let session = intercept_detached(&sim, &state, "x-dev:alice", alice.port);
    assert_eq!(who_answers(&ip, Some("x-dev: alice")), "alice-laptop");

    sim.fault("faults/close-portforwards");
    eventually(
        "the route to work after port-forwards dropped",
        Duration::from_secs(30),
        || (who_answers(&ip, Some("x-dev: alice")) == "alice-laptop").then_some(()),
    );

    let selector = format!("czctl.dev/tunnel={session}");
    let old = sim.kubectl_ok(&["get", "pods", "-n", "demo", "-l", &selector, "-o", "name"]);
    sim.kubectl_ok(&["delete", "pods", "-n", "demo", "-l", &selector]);
    eventually("a new agent pod", Duration::from_secs(30), || {
        let now = sim.kubectl_ok(&["get", "pods", "-n", "demo", "-l", &selector, "-o", "name"]);
        (!now.trim().is_empty() && now != old).then_some(())
    });
    eventually(
        "the route to work through the new agent",
        Duration::from_secs(30),
        || (who_answers(&ip, Some("x-dev: alice")) == "alice-laptop").then_some(()),
    );
    assert!(who_answers(&ip, None).starts_with("echo-"));
    let out = czctl(&sim, &state, &["session", "close", "--all"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn closing_a_start_that_hangs_leaves_nothing_behind() {
    let sleeper = sleeper_run_image("hang");
    let World {
        sim,
        state,
        before,
        alice,
        ..
    } = world("hang", &["--run-image", &sleeper]);
    // An agent that runs but never gets ready: the start waits for it, saying so.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_czctl"));
    cmd.args(intercept_args("x-dev:alice", alice.port))
        .arg("--foreground")
        .args(["--agent-image", SLEEPER_IMAGE])
        .env("KUBECONFIG", &sim.kubeconfig)
        .env("CZCTL_STATE_DIR", &state);
    let mut running = spawn(cmd);
    eventually(
        "the tunnel Deployment to exist",
        Duration::from_secs(30),
        || (!tunnel_deployments(&sim).is_empty()).then_some(()),
    );
    let listed = czctl(&sim, &state, &["session", "list"]);
    assert!(text(&listed).contains("starting"), "{}", text(&listed));
    // After 2 s the wait says what it waits for, on stderr and in the session's status.
    let seen = running.wait_stderr(
        "czctl: waiting for the tunnel agent Deployment demo/interceptor-echo-ic-",
        Duration::from_secs(30),
    );
    let line = seen.last().unwrap();
    assert!(
        line.contains("0/1 pods ready") && line.contains("running, not ready"),
        "{line}"
    );
    let status = czctl(&sim, &state, &["status", "-o", "json"]);
    assert!(status.status.success(), "{}", text(&status));
    assert!(
        text(&status).contains("starting: waiting for the tunnel agent Deployment"),
        "{}",
        text(&status)
    );
    let out = czctl(&sim, &state, &["session", "close", "--all"]);
    assert!(out.status.success(), "{}", text(&out));
    let status = running.wait_exit(Duration::from_secs(30));
    assert!(
        !status.success(),
        "an interrupted start is a failure: {status:?}"
    );
    assert_eq!(service_state(&sim), before);
    wait_clean(&sim);
}

/// Whether process `pid` exists and has not exited (a zombie waits only to be reaped).
fn alive(pid: i32) -> bool {
    // Signal 0 only asks whether the process exists.
    let exists = rustix::process::Pid::from_raw(pid)
        .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok());
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(") ")
        .next()
        .and_then(|rest| rest.chars().next());
    exists && state != Some('Z')
}

/// The image of an agent that runs but never gets ready (it never listens).
const SLEEPER_IMAGE: &str = "example.com/sleeper:1";

/// `--run-image` for [`SLEEPER_IMAGE`]: a script that sleeps.
fn sleeper_run_image(name: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::temp_dir().join(format!(
        "czctl-test-sleeper-{}-{name}.sh",
        std::process::id()
    ));
    std::fs::write(&path, "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("example.com/sleeper={}", path.display())
}

/// The tunnel Deployments in the demo namespace, by name.
fn tunnel_deployments(sim: &KubeSim) -> String {
    sim.kubectl_ok(&[
        "get",
        "deployments",
        "-n",
        "demo",
        "-l",
        "czctl.dev/tunnel",
        "-o",
        "name",
    ])
    .trim()
    .to_string()
}

/// Runs `czctl service intercept echo -n demo -x x-dev:alice -p PORT EXTRA...`; returns its
/// output and how long it took.
fn intercept_run(sim: &KubeSim, state: &Path, port: u16, extra: &[&str]) -> (Output, Duration) {
    let mut args = intercept_args("x-dev:alice", port);
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let out = czctl(sim, state, &args);
    (out, started.elapsed())
}

/// A start failed and left nothing: no object of czctl's in the namespace, the Service as it
/// was, no session listed and no session file left.
fn assert_nothing_left(sim: &KubeSim, state: &Path, before: &Value, out: &Output) {
    assert_eq!(residue(sim), "", "left in the cluster after: {}", text(out));
    assert_eq!(&service_state(sim), before);
    let listed = czctl(sim, state, &["session", "list"]);
    assert!(listed.status.success(), "{}", text(&listed));
    assert!(!text(&listed).contains("ic-"), "{}", text(&listed));
    let files: Vec<String> = std::fs::read_dir(state.join("sessions"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("ic-"))
                .collect()
        })
        .unwrap_or_default();
    let logs: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(state.join("sessions").join(f)).unwrap_or_default())
        .collect();
    assert!(files.is_empty(), "session files left: {files:?}: {logs:#?}");
}

/// A pull error fails the start at once (the kubelet's reason and the pod named), not after
/// the timeout.
fn assert_pull_failure(out: &Output, took: Duration, what: &str, pod_prefix: &str) {
    let said = text(out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        took < Duration::from_secs(40),
        "a pull error fails at once, not after the 3 min timeout: {took:?}\n{said}"
    );
    assert!(
        said.contains("ErrImagePull") || said.contains("ImagePullBackOff"),
        "{said}"
    );
    assert!(said.contains(what), "{said}");
    assert!(said.contains(&format!("pod {pod_prefix}")), "{said}");
    assert!(said.contains("nosuch.example/x:1"), "{said}");
    assert!(said.contains("was removed again"), "{said}");
}

#[test]
fn an_unpullable_agent_image_fails_at_once_and_leaves_nothing() {
    let World {
        sim,
        state,
        before,
        alice,
        ..
    } = world("pull-agent", &[]);
    let (out, took) = intercept_run(
        &sim,
        &state,
        alice.port,
        &["--foreground", "--agent-image", "nosuch.example/x:1"],
    );
    assert_pull_failure(
        &out,
        took,
        "the tunnel agent Deployment demo/interceptor-echo-ic-",
        "interceptor-echo-ic-",
    );
    assert!(text(&out).contains("--agent-image"), "{}", text(&out));
    assert_nothing_left(&sim, &state, &before, &out);
}

#[test]
fn an_unpullable_router_image_fails_at_once_in_the_background_and_leaves_nothing() {
    let World {
        sim,
        state,
        before,
        alice,
        ..
    } = world("pull-router", &[]);
    let (out, took) = intercept_run(
        &sim,
        &state,
        alice.port,
        &["--detach", "--router-image", "nosuch.example/x:1"],
    );
    assert_pull_failure(
        &out,
        took,
        "the router Deployment demo/interceptor-echo",
        "interceptor-echo-",
    );
    assert!(text(&out).contains("--router-image"), "{}", text(&out));
    assert_nothing_left(&sim, &state, &before, &out);
}

#[test]
fn a_start_that_cannot_finish_times_out_naming_what_it_waited_for() {
    let sleeper = sleeper_run_image("timeout");
    let World {
        sim,
        state,
        before,
        alice,
        ..
    } = world("timeout", &["--run-image", &sleeper]);
    let (out, took) = intercept_run(
        &sim,
        &state,
        alice.port,
        &[
            "--foreground",
            "--agent-image",
            SLEEPER_IMAGE,
            "--timeout",
            "2s",
        ],
    );
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(took < Duration::from_secs(40), "{took:?}\n{said}");
    // The router may not be ready within 2 s either; the agent never is.
    assert!(
        said.contains("gave up waiting for the tunnel agent Deployment demo/interceptor-echo-ic-")
            || said.contains("gave up waiting for the router Deployment demo/interceptor-echo"),
        "{said}"
    );
    assert!(said.contains("(--timeout 2s)"), "{said}");
    assert!(said.contains("pods ready"), "{said}");
    assert!(said.contains("was removed again"), "{said}");
    assert_nothing_left(&sim, &state, &before, &out);
}

#[test]
fn a_killed_waiting_command_leaves_nothing_once_its_background_session_notices() {
    let sleeper = sleeper_run_image("orphan");
    let World {
        sim,
        state,
        before,
        alice,
        ..
    } = world("orphan", &["--run-image", &sleeper]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_czctl"));
    cmd.args(intercept_args("x-dev:alice", alice.port))
        .args(["--detach", "--agent-image", SLEEPER_IMAGE])
        .env("KUBECONFIG", &sim.kubeconfig)
        .env("CZCTL_STATE_DIR", &state);
    let mut waiting = spawn(cmd);
    // The background session's progress reaches the waiting command.
    waiting.wait_stderr(
        "czctl: waiting for the tunnel agent Deployment demo/interceptor-echo-ic-",
        Duration::from_secs(30),
    );
    let listed = czctl(&sim, &state, &["session", "list", "-o", "json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let child = listed["sessions"][0]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no background session in {listed}"));
    assert_ne!(child, u64::from(waiting.pid()));
    assert!(!tunnel_deployments(&sim).is_empty());

    waiting.signal(libc::SIGKILL);
    waiting.wait_exit(Duration::from_secs(10));
    eventually(
        "the background session to notice and end",
        Duration::from_secs(30),
        || (!alive(child as i32)).then_some(()),
    );
    let out = czctl(&sim, &state, &["session", "list"]);
    assert_nothing_left(&sim, &state, &before, &out);
}

#[test]
fn a_multi_port_service_routes_one_port_and_passes_the_others_through() {
    let World {
        sim, state, alice, ..
    } = world("ports", &[]);
    let ip = cluster_ip(&sim, "api");
    let before = sim.kubectl_ok(&["get", "svc", "api", "-n", "demo", "-o", "jsonpath={.spec}"]);
    let port = alice.port.to_string();
    let base = [
        "service",
        "intercept",
        "api",
        "-n",
        "demo",
        "-x",
        "x-dev:alice",
        "-p",
        &port,
    ];
    let ambiguous = czctl(&sim, &state, &base);
    assert_eq!(ambiguous.status.code(), Some(2), "{}", text(&ambiguous));
    assert!(
        text(&ambiguous).contains("80(http), 9090(metrics)"),
        "{}",
        text(&ambiguous)
    );

    let out = czctl(
        &sim,
        &state,
        &[&base[..], &["--port", "80", "--detach"]].concat(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let ask = |port: u16, header: Option<&str>| who_answers_at(&format!("{ip}:{port}"), header);
    assert_eq!(ask(80, Some("x-dev: alice")), "alice-laptop");
    assert!(ask(80, None).starts_with("api-"));
    // The other port passes through the router's TCP stream to the original pods.
    assert!(ask(9090, Some("x-dev: alice")).starts_with("api-"));
    assert!(ask(9090, None).starts_with("api-"));

    let out = czctl(&sim, &state, &["session", "close", "--all"]);
    assert!(out.status.success(), "{}", text(&out));
    let after = sim.kubectl_ok(&["get", "svc", "api", "-n", "demo", "-o", "jsonpath={.spec}"]);
    assert_eq!(after, before);
}
