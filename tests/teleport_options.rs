//! `czctl namespace teleport` options and error paths, end to end: the real binary in a private
//! mount namespace whose /etc/hosts is a temp file (the machine's hosts file is never touched),
//! against kubesim. Traffic goes to loopback addresses only.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const LONG: Duration = Duration::from_secs(30);
/// How long an error path may take to exit, generous for a loaded 2-core machine.
const EXIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `czctl namespace teleport NAMESPACES... --kubeconfig SIM EXTRA...` in a mount namespace with
/// a fresh private hosts file; returns the running czctl, its hosts file and its state dir.
fn teleport(
    sim: &KubeSim,
    name: &str,
    namespaces: &[&str],
    extra: &[&str],
) -> (Czctl, PathBuf, PathBuf) {
    let hosts = hosts_file(sim, name);
    let state = sim.dir.join(format!("state-{name}"));
    let kubeconfig = sim.kubeconfig.to_str().unwrap().to_string();
    let mut args = vec!["namespace", "teleport", "--foreground"];
    args.extend_from_slice(namespaces);
    args.extend_from_slice(&["--kubeconfig", &kubeconfig]);
    args.extend_from_slice(extra);
    let czctl = czctl_in_namespace(&hosts, &state, &args);
    (czctl, hosts, state)
}

/// The files under a state directory, relative to it, sorted.
fn state_files(state: &Path) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, base, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(state, state, &mut out);
    out.sort();
    out
}

/// How a short-lived czctl run ended.
#[derive(Debug)]
struct Exited {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// `czctl ARGS` in a new mount namespace with `hosts` bind-mounted over /etc/hosts, run to
/// completion (killed and reported after `timeout`). `wrapper` goes between the mount and
/// czctl (e.g. setpriv to drop privileges after mounting).
fn run_in_namespace(
    hosts: &Path,
    wrapper: &[&str],
    envs: &[(&str, &Path)],
    args: &[&str],
    timeout: Duration,
) -> Exited {
    let mut cmd = namespaced_czctl(hosts, wrapper);
    cmd.args(args)
        .env_remove("KUBECONFIG")
        .env_remove("XDG_STATE_HOME")
        .env_remove("RUST_LOG");
    for (key, value) in envs {
        cmd.env(key, value);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("start unshare");
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "czctl {args:?} did not exit within {timeout:?}; stderr: {}",
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let exited = Exited {
        code: status.code(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed,
    };
    eprintln!("czctl {args:?} -> {exited:#?}");
    exited
}

/// A fresh directory that needs no kubesim (for runs that must fail before any cluster work).
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "czctl-options-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes a scratch directory when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback TCP port nothing listens on (bound, then released).
fn unused_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

/// Sends `payload` to `addr` and reads the echo back (kubesim/tcp-echo); `None` when the
/// connection is refused, closed early or answers something else.
fn tcp_echo(addr: SocketAddr, payload: &[u8]) -> Option<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream.write_all(payload).ok()?;
    let mut got = vec![0u8; payload.len()];
    stream.read_exact(&mut got).ok()?;
    (got == payload).then_some(())
}

fn json_namespace(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["namespace"].as_str().unwrap_or_default().to_string()
}

// ---------------------------------------------------------------------------------------------
// 1. -l SELECTOR
// ---------------------------------------------------------------------------------------------

#[test]
fn selector_forwards_only_matching_services_and_follows_label_changes() {
    let sim = kubesim(&["demo"], &[]);
    sim.kubectl_ok(&["label", "svc", "echo", "db", "tier=backend", "-n", "demo"]);
    let (mut czctl, hosts, _state) = teleport(&sim, "selector", &["demo"], &["-l", "tier=backend"]);
    let table = czctl.wait_ready();
    let rows: Vec<&String> = table.iter().filter(|l| l.starts_with("demo/")).collect();
    assert!(
        rows.iter().any(|l| l.starts_with("demo/echo ")),
        "{table:#?}"
    );
    assert!(rows.iter().any(|l| l.starts_with("demo/db ")), "{table:#?}");
    assert!(
        rows.iter()
            .all(|l| l.starts_with("demo/echo ") || l.starts_with("demo/db ")),
        "only the labelled Services are in the table: {table:#?}"
    );

    assert!(czctl.resolve("echo.demo").is_some(), "echo.demo resolves");
    assert!(czctl.resolve("db.demo").is_some(), "db.demo resolves");
    for name in ["api.demo", "api", "cache.demo", "legacy.demo"] {
        assert_eq!(czctl.resolve(name), None, "{name} is not labelled");
    }
    let (ok, body) = czctl.curl("http://echo.demo:8080/");
    assert!(ok && pod_of(&body).is_some(), "{body}");

    // A Service that gains the label appears.
    sim.kubectl_ok(&["label", "svc", "api", "tier=backend", "-n", "demo"]);
    czctl.wait_stdout("added service demo/api", LONG);
    eventually("api.demo resolves", LONG, || czctl.resolve("api.demo"));
    let (ok, body) = eventually("api.demo answers", LONG, || {
        let (ok, body) = czctl.curl("http://api.demo/");
        ok.then_some((ok, body))
    });
    assert!(ok && pod_of(&body).is_some(), "{body}");

    // A Service that loses the label goes away (the watch reports it as deleted).
    sim.kubectl_ok(&["label", "svc", "db", "tier-", "-n", "demo"]);
    czctl.wait_stdout("removed service demo/db", LONG);
    eventually("db.demo disappears", LONG, || {
        czctl.resolve("db.demo").is_none().then_some(())
    });
    assert!(czctl.resolve("echo.demo").is_some(), "echo stays");

    czctl.signal(libc::SIGTERM);
    assert!(czctl.wait_exit(LONG).success());
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
}

#[test]

fn an_invalid_selector_is_a_usage_error() {
    let sim = kubesim(&["demo"], &[]);
    let (run, hosts, _) = refused_run(&sim.dir, &sim.kubeconfig, &["demo", "-l", "tier in (("]);
    assert_eq!(run.code, Some(2), "usage error: {run:#?}");
    assert!(
        run.stderr.contains("tier in (("),
        "the message names the selector: {run:#?}"
    );
    assert!(
        !run.stderr.contains("reachable"),
        "the cluster was reached; don't send the user looking for a network problem: {run:#?}"
    );
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
}

// ---------------------------------------------------------------------------------------------
// 2. --context nope
// ---------------------------------------------------------------------------------------------

#[test]
fn an_unknown_context_is_a_config_error_and_changes_nothing() {
    let sim = kubesim(&["demo"], &[]);
    let (run, hosts, state) =
        refused_run(&sim.dir, &sim.kubeconfig, &["demo", "--context", "nope"]);
    assert_eq!(run.code, Some(3), "kubeconfig problem: {run:#?}");
    assert!(
        run.stderr.contains("nope"),
        "stderr names the context: {run:#?}"
    );
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
    assert!(!state.exists(), "no backup before the cluster was reached");
}

// ---------------------------------------------------------------------------------------------
// 3. A kubeconfig whose server is a closed port
// ---------------------------------------------------------------------------------------------

#[test]
fn an_unreachable_cluster_fails_quickly_and_changes_nothing() {
    let sim = kubesim(&["demo"], &[]);
    let port = unused_port();
    let closed = format!("https://127.0.0.1:{port}");
    let text = std::fs::read_to_string(&sim.kubeconfig).unwrap();
    assert!(text.contains(&sim.api), "{} names {}", text, sim.api);
    let kubeconfig = sim.dir.join("kubeconfig-closed");
    std::fs::write(&kubeconfig, text.replace(&sim.api, &closed)).unwrap();
    let (run, hosts, state) = refused_run(&sim.dir, &kubeconfig, &["demo"]);
    assert_eq!(run.code, Some(3), "connection problem: {run:#?}");
    assert!(
        run.elapsed < Duration::from_secs(30),
        "a refused connection fails fast, took {:?}",
        run.elapsed
    );
    let lower = run.stderr.to_lowercase();
    assert!(
        lower.contains("cannot reach") || lower.contains("unreachable"),
        "the message says the cluster is unreachable: {run:#?}"
    );
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
    assert!(!state.exists(), "no backup before the cluster was reached");
}

#[test]

fn logs_to_a_pipe_have_no_colour_codes() {
    let scratch = Scratch(scratch_dir("colour"));
    let hosts = scratch.0.join("hosts");
    std::fs::write(&hosts, ORIGINAL_HOSTS).unwrap();
    // A syntactically fine kubeconfig whose server refuses connections: `-v` logs "client
    // ready" (info) before the namespace check fails.
    let kubeconfig = scratch.0.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{}\n\
             users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
             current-context: x\n",
            unused_port()
        ),
    )
    .unwrap();
    let run = run_in_namespace(
        &hosts,
        &[],
        &[("CZCTL_STATE_DIR", &scratch.0.join("state"))],
        &[
            "-v",
            "namespace",
            "teleport",
            "demo",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
        EXIT,
    );
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stderr.contains("client ready"),
        "an info log line: {run:#?}"
    );
    assert!(
        !run.stderr.contains('\u{1b}'),
        "stderr is a pipe, so no terminal escapes: {:?}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// 4. A hosts file the user may not write
// ---------------------------------------------------------------------------------------------

#[test]
fn a_hosts_file_the_user_cannot_write_is_a_local_error() {
    let has_setpriv = Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_setpriv,
        "missing prerequisite: setpriv (apt-get install util-linux)"
    );
    let sim = kubesim(&["demo"], &[]);
    let hosts = hosts_file(&sim, "readonly");
    std::fs::set_permissions(&hosts, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = std::fs::read(&hosts).unwrap();
    let meta_before = std::fs::metadata(&hosts).unwrap();
    // The unprivileged user's world: a home, a state dir, a registry dir and a readable
    // kubeconfig, all in a directory it may write.
    let home = sim.dir.join("nobody");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut dir = sim.dir.clone();
    // Every parent must be traversable by the user (temp dirs usually are).
    while let Some(parent) = dir.parent() {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert!(
            mode & 0o001 != 0,
            "{} is not traversable by others (mode {mode:o})",
            dir.display()
        );
        dir = parent.to_path_buf();
    }
    let kubeconfig = home.join("kubeconfig");
    std::fs::copy(&sim.kubeconfig, &kubeconfig).unwrap();
    std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o644)).unwrap();
    let state = home.join("state");
    let registry = home.join("registry");

    let run = run_in_namespace(
        &hosts,
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        &[
            ("HOME", &home),
            ("CZCTL_STATE_DIR", &state),
            ("CZCTL_REGISTRY_DIR", &registry),
            // No way to elevate (and never the machine's real sudo): tests/elevation.rs
            // covers sudo.
            ("CZCTL_SUDO", Path::new("/nonexistent/czctl-test-sudo")),
        ],
        &[
            "namespace",
            "teleport",
            "demo",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
        EXIT,
    );
    assert_eq!(run.code, Some(6), "local system problem: {run:#?}");
    assert!(
        run.stderr.contains("sudo") && run.stderr.contains("--hosts-file"),
        "the message says to use sudo or --hosts-file: {run:#?}"
    );
    assert_eq!(
        std::fs::read(&hosts).unwrap(),
        before,
        "hosts file byte-identical"
    );
    let meta_after = std::fs::metadata(&hosts).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta_after.ino(), meta_after.mode(), meta_after.uid()),
        (meta_before.ino(), meta_before.mode(), meta_before.uid())
    );
    assert_eq!(
        state_files(&state),
        ["sessions/lock"],
        "nothing was backed up or recorded, only czctl's session lock was taken: {}",
        state.display()
    );
}

// ---------------------------------------------------------------------------------------------
// 5. --hosts-file PATH
// ---------------------------------------------------------------------------------------------

#[test]
fn hosts_file_option_writes_there_and_leaves_etc_hosts_alone() {
    let sim = kubesim(&["demo"], &[]);
    let alt = sim.dir.join("alt-hosts");
    let alt_original = "# an alternative hosts file\n10.9.8.7\tkept-line\n";
    std::fs::write(&alt, alt_original).unwrap();
    let alt_arg = alt.to_str().unwrap().to_string();
    let (mut czctl, etc_hosts, _state) =
        teleport(&sim, "hostsfile", &["demo"], &["--hosts-file", &alt_arg]);
    czctl.wait_ready();
    let written = std::fs::read_to_string(&alt).unwrap();
    for name in [
        "echo.demo.svc.cluster.local",
        "db.demo",
        "cache-0.cache.demo",
    ] {
        assert!(written.contains(name), "{name} in {written}");
    }
    assert!(written.contains("kept-line"), "{written}");
    // czctl's own /etc/hosts (the bind-mounted temp file) is untouched, inside and outside.
    let inside = czctl.exec(&["cat", "/etc/hosts"]);
    assert_eq!(String::from_utf8_lossy(&inside.stdout), ORIGINAL_HOSTS);
    assert_eq!(std::fs::read_to_string(&etc_hosts).unwrap(), ORIGINAL_HOSTS);
    assert_eq!(
        czctl.resolve("echo.demo"),
        None,
        "the names are not in /etc/hosts"
    );
    // The listeners run all the same: the address from the alternative file answers.
    let addr = written
        .lines()
        .find(|l| l.split_whitespace().any(|n| n == "echo.demo"))
        .and_then(|l| l.split_whitespace().next())
        .expect("a line for echo.demo")
        .to_string();
    let (ok, body) = czctl.curl(&format!("http://{addr}:8080/"));
    assert!(ok && pod_of(&body).is_some(), "{body}");

    czctl.signal(libc::SIGTERM);
    assert!(czctl.wait_exit(LONG).success());
    assert_eq!(std::fs::read_to_string(&alt).unwrap(), alt_original);
    assert_eq!(std::fs::read_to_string(&etc_hosts).unwrap(), ORIGINAL_HOSTS);
}

// ---------------------------------------------------------------------------------------------
// 6. Two namespaces at once
// ---------------------------------------------------------------------------------------------

#[test]
fn two_namespaces_bare_names_belong_to_the_first() {
    let sim = kubesim(&["demo", "other"], &[]);
    let (mut czctl, hosts, _state) = teleport(&sim, "twons", &["demo", "other"], &[]);
    let table = czctl.wait_ready();
    assert!(
        table.iter().any(|l| l.starts_with("demo/echo ")),
        "{table:#?}"
    );
    assert!(
        table.iter().any(|l| l.starts_with("other/echo ")),
        "{table:#?}"
    );
    let demo = czctl.resolve("echo.demo").expect("echo.demo resolves");
    let other = czctl.resolve("echo.other").expect("echo.other resolves");
    assert_ne!(demo, other);
    assert_eq!(czctl.resolve("echo").as_deref(), Some(demo.as_str()));
    assert_eq!(
        czctl.resolve("echo.other.svc.cluster.local").as_deref(),
        Some(other.as_str())
    );
    assert_eq!(
        czctl.resolve("api").as_deref(),
        czctl.resolve("api.demo").as_deref()
    );

    let (ok, body) = czctl.curl("http://echo:8080/");
    assert!(ok, "{body}");
    assert_eq!(json_namespace(&body), "demo", "{body}");
    let (ok, body) = czctl.curl("http://echo.demo:8080/");
    assert!(ok, "{body}");
    assert_eq!(json_namespace(&body), "demo", "{body}");
    let (ok, body) = czctl.curl("http://echo.other:8080/");
    assert!(ok, "{body}");
    assert_eq!(json_namespace(&body), "other", "{body}");

    czctl.signal(libc::SIGTERM);
    assert!(czctl.wait_exit(LONG).success());
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
}

// ---------------------------------------------------------------------------------------------
// 7. --cluster-domain
// ---------------------------------------------------------------------------------------------

#[test]
fn cluster_domain_option_names_the_services() {
    let sim = kubesim(&["demo"], &[]);
    let (mut czctl, _hosts, _state) = teleport(
        &sim,
        "domain",
        &["demo"],
        &["--cluster-domain", "example.internal"],
    );
    czctl.wait_ready();
    let addr = czctl.resolve("echo.demo").expect("echo.demo resolves");
    assert_eq!(
        czctl.resolve("echo.demo.svc.example.internal").as_deref(),
        Some(addr.as_str())
    );
    assert_eq!(czctl.resolve("echo.demo.svc.cluster.local"), None);
    assert!(czctl
        .resolve("cache-0.cache.demo.svc.example.internal")
        .is_some());
    let (ok, body) = czctl.curl("http://echo.demo.svc.example.internal:8080/");
    assert!(ok && pod_of(&body).is_some(), "{body}");
}

#[test]

fn an_invalid_cluster_domain_is_a_usage_error() {
    let scratch = Scratch(scratch_dir("domain"));
    let missing = scratch.0.join("no-kubeconfig");
    let (run, hosts, _) = refused_run(
        &scratch.0,
        &missing,
        &["demo", "--cluster-domain", "cluster_local"],
    );
    assert_eq!(run.code, Some(2), "usage error: {run:#?}");
    assert!(run.stderr.contains("cluster_local"), "{run:#?}");
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
}

// ---------------------------------------------------------------------------------------------
// 8. Usage errors
// ---------------------------------------------------------------------------------------------

/// Runs czctl with `namespaces` and a kubeconfig that does not exist: a usage error must come
/// before the kubeconfig is even read (else the exit code would be 3).
fn usage_run(name: &str, namespaces: &[&str]) -> (Exited, Scratch, PathBuf, PathBuf) {
    let scratch = Scratch(scratch_dir(name));
    let missing = scratch.0.join("no-kubeconfig");
    let (run, hosts, state) = refused_run(&scratch.0, &missing, namespaces);
    (run, scratch, hosts, state)
}

/// `czctl namespace teleport ARGS --kubeconfig KUBECONFIG`, expected to stop before changing
/// anything, with its hosts file, state and registry directories in `dir`; returns the run,
/// the hosts file and the state directory.
fn refused_run(dir: &Path, kubeconfig: &Path, args: &[&str]) -> (Exited, PathBuf, PathBuf) {
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, ORIGINAL_HOSTS).unwrap();
    let state = dir.join("state");
    let mut all = vec!["namespace", "teleport"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--kubeconfig", kubeconfig.to_str().unwrap()]);
    let run = run_in_namespace(
        &hosts,
        &[],
        &[
            ("CZCTL_STATE_DIR", state.as_path()),
            ("CZCTL_REGISTRY_DIR", dir.join("registry").as_path()),
        ],
        &all,
        EXIT,
    );
    (run, hosts, state)
}

#[test]
fn an_invalid_namespace_name_is_a_usage_error() {
    for namespaces in [&["Demo_1"][..], &["demo", "Demo_1"][..]] {
        let (run, scratch, hosts, state) = usage_run("invalid", namespaces);
        assert_eq!(run.code, Some(2), "{namespaces:?}: {run:#?}");
        assert!(
            run.stderr.contains("Demo_1"),
            "the message names it: {run:#?}"
        );
        assert!(run.stdout.is_empty(), "{run:#?}");
        assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
        assert!(!state.exists() && !scratch.0.join("registry").exists());
    }
}

#[test]
fn the_same_namespace_twice_is_a_usage_error() {
    let (run, scratch, hosts, state) = usage_run("twice", &["demo", "other", "demo"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr.contains("demo") && run.stderr.contains("twice"),
        "{run:#?}"
    );
    assert!(run.stdout.is_empty(), "{run:#?}");
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
    assert!(!state.exists() && !scratch.0.join("registry").exists());
}

// ---------------------------------------------------------------------------------------------
// 9. A Service whose pods are all gone
// ---------------------------------------------------------------------------------------------

fn scale_db(sim: &KubeSim, replicas: u32) {
    // `kubectl scale` goes through the scale subresource, which kubesim answers with the
    // Deployment itself (kubectl then fails to decode it); a merge patch does the same job.
    sim.kubectl_ok(&[
        "patch",
        "deployment",
        "db",
        "-n",
        "demo",
        "--type",
        "merge",
        "-p",
        &format!("{{\"spec\":{{\"replicas\":{replicas}}}}}"),
    ]);
}

#[test]
fn a_service_without_pods_closes_connections_at_once_and_recovers() {
    let sim = kubesim(&["demo"], &[]);
    let (mut czctl, _hosts, _state) = teleport(&sim, "nopods", &["demo"], &[]);
    czctl.wait_ready();
    let ip: Ipv4Addr = czctl
        .resolve("db.demo")
        .expect("db.demo resolves")
        .parse()
        .unwrap();
    let db = SocketAddr::from((ip, 5432));
    eventually("db answers before scaling", LONG, || {
        tcp_echo(db, b"ping\n")
    });

    scale_db(&sim, 0);
    czctl.wait_stdout("pods service demo/db ready 0/", LONG);
    // Every ready pod is gone: the connection is accepted (the listener stays) and closed.
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&db, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _ = stream.write_all(b"hello?\n");
    let mut buf = [0u8; 64];
    let read = stream.read(&mut buf);
    let elapsed = started.elapsed();
    match read {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the connection to be closed, got {other:?} after {elapsed:?}"),
    }
    assert!(
        elapsed < Duration::from_secs(5),
        "closed promptly, took {elapsed:?}"
    );
    let seen = czctl.wait_stderr("demo/db", LONG);
    eprintln!("stderr lines naming demo/db: {seen:#?}");

    scale_db(&sim, 1);
    czctl.wait_stdout("pods service demo/db ready 1/", LONG);
    eventually("db answers again without a restart", LONG, || {
        tcp_echo(db, b"back\n")
    });
}

// ---------------------------------------------------------------------------------------------
// 9. Signals and timeouts during start-up
// ---------------------------------------------------------------------------------------------

/// A copy of kubesim's kubeconfig whose user gets its token from an exec credential plugin
/// that never returns.
fn hanging_plugin_kubeconfig(sim: &KubeSim) -> PathBuf {
    let kubeconfig = sim.dir.join("kubeconfig-hanging-plugin");
    std::fs::copy(&sim.kubeconfig, &kubeconfig).unwrap();
    let kc = kubeconfig.to_str().unwrap();
    for args in [
        &[
            "config",
            "set-credentials",
            "hangs",
            "--exec-command=/bin/sleep",
            "--exec-arg=1000",
            "--exec-api-version=client.authentication.k8s.io/v1",
        ][..],
        &["config", "set-context", "--current", "--user=hangs"][..],
    ] {
        let out = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", kc)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    kubeconfig
}

#[test]
fn a_signal_ends_a_start_stuck_in_an_exec_credential_plugin_at_once() {
    let sim = kubesim(&["demo"], &[]);
    let kubeconfig = hanging_plugin_kubeconfig(&sim);
    for (mode, signal, code) in [
        (None, libc::SIGTERM, 143),
        (Some("--foreground"), libc::SIGINT, 130),
    ] {
        let name = format!("plugin-signal-{code}");
        let hosts = hosts_file(&sim, &name);
        let state = sim.dir.join(format!("state-{name}"));
        let mut args = vec![
            "namespace",
            "teleport",
            "demo",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ];
        args.extend(mode);
        let mut czctl = czctl_in_namespace(&hosts, &state, &args);
        std::thread::sleep(Duration::from_secs(1));
        let started = Instant::now();
        czctl.signal(signal);
        let status = czctl.wait_exit(Duration::from_secs(10));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{mode:?}: ended {:?} after the signal",
            started.elapsed()
        );
        assert_eq!(status.code(), Some(code), "{mode:?}");
        assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
        let records: Vec<_> = std::fs::read_dir(state.join("sessions"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .collect();
        assert!(records.is_empty(), "{mode:?}: {records:?}");
    }
}

#[test]
fn a_start_whose_credential_plugin_never_returns_times_out_naming_it() {
    let sim = kubesim(&["demo"], &[]);
    let kubeconfig = hanging_plugin_kubeconfig(&sim);
    let (run, hosts, _state) = refused_run(&sim.dir, &kubeconfig, &["demo", "--timeout", "2s"]);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.elapsed < Duration::from_secs(10),
        "bounded by --timeout: {run:#?}"
    );
    assert!(
        run.stderr.contains("no answer within 2s") && run.stderr.contains("exec credential plugin"),
        "{run:#?}"
    );
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
}
