//! The `czctl-agent` binary as the agent pod runs it: configured by its flags and environment,
//! listening where it logs, speaking the protocol, stopping at SIGTERM. (This test also makes
//! `cargo test --workspace` build the binary, which czctl's intercept tests run under kubesim.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const AGENT: &str = env!("CARGO_BIN_EXE_czctl-agent");

fn agent(token: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new(AGENT);
    cmd.args(args)
        .env_clear()
        .env("POD_IP", "127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        cmd.env("CZCTL_TUNNEL_TOKEN", token);
    }
    cmd
}

/// Kills the agent if a test fails before stopping it.
struct Running {
    child: Child,
    log: BufReader<std::process::ChildStderr>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the agent on free ports and reads its log until it names them.
fn start(token: &str) -> (Running, SocketAddr, SocketAddr) {
    let mut child = agent(Some(token), &["--control-port", "0", "--data-port=0"])
        .spawn()
        .expect("start czctl-agent");
    let log = BufReader::new(child.stderr.take().unwrap());
    let mut running = Running { child, log };
    let mut line = String::new();
    loop {
        line.clear();
        let n = running.log.read_line(&mut line).unwrap();
        assert!(n > 0, "czctl-agent ended before listening");
        if line.contains("tunnel agent listening") {
            break;
        }
    }
    let addr = |key: &str| -> SocketAddr {
        let start = line
            .find(key)
            .unwrap_or_else(|| panic!("{key} in {line:?}"))
            + key.len();
        line[start..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (control, data) = (addr("control="), addr("data="));
    (running, control, data)
}

fn exchange(control: SocketAddr, hello: &str) -> (TcpStream, String) {
    let mut conn = TcpStream::connect(control).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(hello.as_bytes()).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut answer = String::new();
    reader.read_line(&mut answer).unwrap();
    (conn, answer)
}

#[test]
fn the_binary_serves_the_protocol_and_stops_at_sigterm() {
    let (mut running, control, data) = start("binary-token");
    assert_eq!(control.ip().to_string(), "127.0.0.1", "binds POD_IP");
    assert_ne!(control.port(), data.port());

    let (_denied, answer) = exchange(control, "CZTUN/1 other-token\n");
    assert_eq!(answer, "DENIED invalid token\n");
    let (mut parked, answer) = exchange(control, "CZTUN/1 binary-token\n");
    assert_eq!(answer, "OK 15000\n");

    // A client on the data port starts the parked connection.
    let _client = TcpStream::connect(data).unwrap();
    let mut signal = [0u8; 1];
    parked.read_exact(&mut signal).unwrap();
    assert_eq!(&signal, b"S");

    let status = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .expect("run kill (procps)");
    assert!(status.success());
    let mut rest = String::new();
    running.log.read_to_string(&mut rest).unwrap();
    let status = running.child.wait().unwrap();
    assert!(status.success(), "{status:?}, log: {rest}");
    assert!(rest.contains("tunnel agent stopped"), "{rest}");
    assert!(
        !rest.contains("binary-token") && !rest.contains("other-token"),
        "tokens never appear in the log: {rest}"
    );
}

#[test]
fn the_binary_refuses_a_missing_token_and_bad_flags() {
    let out = agent(None, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CZCTL_TUNNEL_TOKEN"), "{err}");

    let out = agent(Some("tok"), &["agent", "tunnel"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Usage: czctl-agent"), "{err}");

    let out = agent(None, &["--version"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("czctl-agent {}", env!("CARGO_PKG_VERSION"))
    );
}
