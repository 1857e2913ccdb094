//! The data path end to end: full-duplex bulk streams, half-close both ways, a stream the
//! server resets beside a live one, a dropped shared connection, and refused port-forwards,
//! through the real binary, kubesim's demo namespace and its tcp-echo and HTTP pods. Every
//! test runs over the default transport (SPDY) and, where the difference matters, over
//! WebSocket v4 (`CZCTL_PORTFORWARD=websocket`).
//!
//! The test process connects to the teleported address directly (the address is on this
//! machine's loopback; only the hosts file is private to czctl's mount namespace).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(60);

/// Teleports the demo namespace with `CZCTL_PORTFORWARD=transport`.
fn teleport(sim: &KubeSim, name: &str, transport: &str) -> Czctl {
    teleport_as(sim, &sim.kubeconfig, name, transport)
}

/// [`teleport`] with another user's kubeconfig.
fn teleport_as(sim: &KubeSim, kubeconfig: &Path, name: &str, transport: &str) -> Czctl {
    let hosts = hosts_file(sim, name);
    let state = state_dir(sim, name);
    let kubeconfig = kubeconfig.to_str().unwrap().to_string();
    let mut cmd = namespaced_czctl(&hosts, &[]);
    cmd.args(["namespace", "teleport", "--foreground", "demo"])
        .args(["--kubeconfig", &kubeconfig])
        .env("CZCTL_STATE_DIR", &state)
        .env("CZCTL_PORTFORWARD", transport);
    let mut czctl = spawn(cmd);
    czctl.wait_ready();
    czctl
}

fn state_dir(sim: &KubeSim, name: &str) -> std::path::PathBuf {
    sim.dir.join(format!("state-{name}"))
}

/// `czctl status -o json` of the session, as text.
fn status_json(sim: &KubeSim, name: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_czctl"))
        .args(["status", "-o", "json"])
        .env("CZCTL_STATE_DIR", state_dir(sim, name))
        .output()
        .expect("czctl status");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// A connection to `name:port` as czctl serves it.
fn connect(czctl: &Czctl, name: &str, port: u16) -> TcpStream {
    let addr = czctl
        .resolve(name)
        .unwrap_or_else(|| panic!("{name} does not resolve"));
    let stream = TcpStream::connect((addr.as_str(), port)).expect("connect");
    stream.set_read_timeout(Some(LONG)).unwrap();
    stream.set_write_timeout(Some(LONG)).unwrap();
    stream
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ (i >> 11) as u8)
        .collect()
}

/// Writes `data` while reading the echo at the same time; half-closes after writing and
/// expects the whole echo, then (where the cluster passes a half-close on to the pod) EOF.
fn duplex_echo(sim: &KubeSim, stream: TcpStream, data: &[u8]) -> Vec<u8> {
    let mut writer = stream.try_clone().unwrap();
    let data_owned = data.to_vec();
    let sending = std::thread::spawn(move || {
        for chunk in data_owned.chunks(64 * 1024) {
            writer.write_all(chunk).expect("write while reading");
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut reader = stream;
    let mut back = vec![0u8; data.len()];
    reader
        .read_exact(&mut back)
        .expect("read the whole echo (a stall shows as a timeout)");
    if sim.half_close_reaches_pods() {
        let mut rest = Vec::new();
        reader
            .read_to_end(&mut rest)
            .expect("EOF after the echo (a stall shows as a timeout)");
        assert!(rest.is_empty(), "{} bytes after the echo", rest.len());
    }
    sending.join().unwrap();
    back
}

fn full_duplex_64_mib(transport: &str, protocol: &str) {
    let sim = kubesim(&["demo"], &[]);
    let name = format!("duplex-{transport}");
    let czctl = teleport(&sim, &name, transport);
    let data = pattern(64 << 20);
    let back = duplex_echo(&sim, connect(&czctl, "db.demo", 5432), &data);
    assert_eq!(back.len(), data.len());
    assert!(back == data, "the echo differs from what was sent");
    let status = status_json(&sim, &name);
    assert!(
        status.contains(&format!(r#""protocol":"{protocol}""#)),
        "{status}"
    );
}

#[test]
fn full_duplex_64_mib_echo_over_spdy_in_a_websocket() {
    full_duplex_64_mib("auto", "SPDY over WebSocket");
}

#[test]
fn full_duplex_64_mib_echo_over_the_spdy_upgrade() {
    full_duplex_64_mib("spdy", "SPDY");
}

#[test]
fn full_duplex_64_mib_echo_over_websocket_v4() {
    full_duplex_64_mib("websocket", "WebSocket v4");
}

#[test]
fn half_close_reaches_the_pod_and_its_answer_comes_back() {
    let sim = kubesim(&["demo"], &[]);
    let czctl = teleport(&sim, "halfclose", "auto");
    // tcp-echo answers what it got, then closes when it sees our EOF.
    let mut db = connect(&czctl, "db.demo", 5432);
    db.write_all(b"last words").unwrap();
    db.shutdown(Shutdown::Write).unwrap();
    let mut echoed = String::new();
    db.read_to_string(&mut echoed).unwrap();
    assert_eq!(echoed, "last words");
    // An HTTP/1.0 request whose client closes its side right after sending.
    let mut web = connect(&czctl, "echo.demo", 8080);
    web.write_all(b"GET /after-eof HTTP/1.0\r\nHost: echo\r\n\r\n")
        .unwrap();
    web.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    web.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.") && answer.contains(" 200 "),
        "{answer}"
    );
    assert!(answer.contains("/after-eof"), "{answer}");
    // The pod's EOF reaches a client that has not closed its side: an HTTP/1.0 server closes
    // after answering, and the client reads to EOF with its write side still open.
    let mut web = connect(&czctl, "echo.demo", 8080);
    web.write_all(b"GET /server-closes HTTP/1.0\r\nHost: echo\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    web.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("/server-closes"), "{answer}");
}

#[test]
fn a_stream_the_server_resets_leaves_its_neighbour_working() {
    let sim = kubesim(&["demo"], &[]);
    // A second Service on the db pod whose target port has no listener: each connection to it
    // is a stream the server fails and resets, on the same pod (and so the same shared
    // connection) as the db Service.
    let manifest = sim.dir.join("db-wrong.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Service\nmetadata: {name: db-wrong, namespace: demo}\nspec:\n  \
         selector: {app: db}\n  ports: [{port: 5433, targetPort: 5999}]\n",
    )
    .unwrap();
    sim.kubectl_ok(&["apply", "-f", manifest.to_str().unwrap()]);
    eventually("db-wrong has a ready endpoint", LONG, || {
        let (_, out, _) = sim.kubectl_run(&[
            "get",
            "endpointslices",
            "-n",
            "demo",
            "-l",
            "kubernetes.io/service-name=db-wrong",
            "-o",
            "jsonpath={.items[*].endpoints[*].addresses[*]}",
        ]);
        (!out.trim().is_empty()).then_some(())
    });
    let czctl = teleport(&sim, "reset", "auto");
    let mut live = connect(&czctl, "db.demo", 5432);
    live.write_all(b"before").unwrap();
    let mut got = [0u8; 6];
    live.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"before");
    for _ in 0..3 {
        let mut doomed = connect(&czctl, "db-wrong.demo", 5433);
        let _ = doomed.write_all(b"hello?");
        let mut rest = Vec::new();
        // Closed (EOF or reset) without a byte of answer.
        let answer = doomed.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{answer:?} {rest:?}");
    }
    live.write_all(b"after!").unwrap();
    live.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"after!");
    // The cluster's own reason for the port (kubesim, like a container runtime: "connection
    // refused"; kwok: "forward not found for port 5999").
    let text = status_json(&sim, "reset");
    assert!(text.contains("5999"), "{text}");
    assert!(
        text.contains(r#""protocol":"SPDY over WebSocket""#),
        "{text}"
    );
}

#[test]
fn after_the_shared_connection_drops_new_connections_work_at_once() {
    let sim = kubesim(&["demo"], &[]);
    let czctl = teleport(&sim, "dropped", "auto");
    let mut first = connect(&czctl, "db.demo", 5432);
    first.write_all(b"one").unwrap();
    let mut got = [0u8; 3];
    first.read_exact(&mut got).unwrap();
    sim.fault("faults/close-portforwards");
    // The connection that was open ends with the shared connection...
    let mut rest = Vec::new();
    let _ = first.read_to_end(&mut rest);
    // ...and the very next client connection works, on a new shared connection.
    for round in 0..3 {
        let mut next = connect(&czctl, "db.demo", 5432);
        next.write_all(b"two").unwrap();
        next.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(&got, b"two");
    }
}

#[test]
fn forbidden_port_forwarding_closes_connections_and_says_why() {
    let restricted = kubesim_restricted(
        &["demo"],
        &[Deny {
            verb: "create",
            resource: "pods/portforward",
            namespace: Some("demo"),
        }],
    );
    let sim = &restricted.sim;
    let czctl = teleport_as(sim, &restricted.kubeconfig, "forbidden", "auto");
    let mut db = connect(&czctl, "db.demo", 5432);
    let _ = db.write_all(b"x");
    let mut rest = Vec::new();
    let _ = db.read_to_end(&mut rest);
    assert!(rest.is_empty());
    let text = status_json(sim, "forbidden");
    assert!(text.contains("forbidden"), "{text}");
}

#[test]
fn a_server_without_spdy_gets_websocket_v4_and_status_says_so() {
    let sim = kubesim(&["demo"], &[]);
    sim.fault("faults/refuse-spdy");
    let czctl = teleport(&sim, "nospdy", "auto");
    for round in 0..3 {
        let mut db = connect(&czctl, "db.demo", 5432);
        db.write_all(b"v4").unwrap();
        let mut got = [0u8; 2];
        db.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(&got, b"v4");
    }
    let status = status_json(&sim, "nospdy");
    assert!(status.contains(r#""protocol":"WebSocket v4""#), "{status}");
    // Both SPDY upgrades were tried once, then czctl stopped asking.
    let stats = sim.kubectl_ok(&["get", "--raw", "/kubesim/stats/portforwards"]);
    assert!(stats.contains(r#""websocket-v4":3"#), "{stats}");
}
