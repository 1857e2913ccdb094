//! Conventions a new user expects of a command-line tool, end to end: output into a pipe whose
//! reader goes away ends czctl quietly; `KUBECONFIG` is read as kubectl reads it; refused
//! credentials and unreachable servers are said plainly, with the right exit code and without
//! debug dumps. Runs against kubesim; needs no root.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{hosts_file, kubesim, KubeSim};

const CZCTL: &str = env!("CARGO_BIN_EXE_czctl");

/// A pipe: (read end, write end), both close-on-exec.
fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe2")
}

/// Waits for `child` to exit; kills it after `timeout`.
fn wait(mut child: std::process::Child, timeout: Duration) -> (Option<i32>, String) {
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for czctl") {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            panic!("czctl did not exit within {timeout:?} after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    (status.code(), stderr)
}

/// The stderr of a run whose reader went away must be empty: no panic, no message.
fn assert_quiet(what: &str, code: Option<i32>, stderr: &str) {
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{what}: {stderr}"
    );
    assert_eq!(stderr, "", "{what}: nothing on stderr");
    assert_eq!(code, Some(0), "{what}: a quiet exit with 0, as ripgrep's");
}

#[test]
fn completion_into_a_pipe_closed_after_one_line_exits_quietly() {
    for shell in ["bash", "zsh", "fish"] {
        let (read, write) = pipe();
        // A small pipe: the script (tens of kilobytes) cannot fit, so czctl is still writing
        // when the reader goes away.
        rustix::pipe::fcntl_setpipe_size(&read, 4096).expect("F_SETPIPE_SZ");
        let child = Command::new(CZCTL)
            .args(["completion", shell])
            .stdin(Stdio::null())
            .stdout(Stdio::from(write))
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .spawn()
            .expect("start czctl");
        let mut reader = BufReader::new(std::fs::File::from(read));
        let mut first = String::new();
        reader.read_line(&mut first).expect("the first line");
        assert!(!first.is_empty(), "{shell}: a first line");
        drop(reader);
        let (code, stderr) = wait(child, Duration::from_secs(30));
        assert_quiet(
            &format!("czctl completion {shell} | head -1"),
            code,
            &stderr,
        );
    }
}

#[test]
fn doctor_json_into_a_closed_pipe_exits_quietly() {
    let dir = scratch("doctor-pipe");
    let (read, write) = pipe();
    drop(read);
    let child = Command::new(CZCTL)
        .args(["doctor", "-o", "json", "--hosts-file"])
        .arg(dir.join("hosts"))
        .arg("--kubeconfig")
        .arg(dir.join("no-kubeconfig"))
        .env("CZCTL_REGISTRY_DIR", dir.join("registry"))
        .env("CZCTL_STATE_DIR", dir.join("state"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .spawn()
        .expect("start czctl");
    let (code, stderr) = wait(child, Duration::from_secs(60));
    assert_quiet("czctl doctor -o json | (exit)", code, &stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("czctl-conventions-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `czctl doctor -n demo -o json` with `KUBECONFIG=kubeconfig` (unset when `None`) and the
/// extra `args`, a private hosts file and registry.
fn doctor(sim: &KubeSim, name: &str, kubeconfig: Option<&str>, args: &[&str]) -> Output {
    let hosts = hosts_file(sim, name);
    let mut cmd = Command::new(CZCTL);
    cmd.args(["doctor", "-n", "demo", "-o", "json", "--hosts-file"])
        .arg(&hosts)
        .args(args)
        .env(
            "CZCTL_REGISTRY_DIR",
            sim.dir.join(format!("registry-{name}")),
        )
        .env("CZCTL_STATE_DIR", sim.dir.join(format!("state-{name}")))
        .env("HOME", sim.dir.join(format!("home-{name}")))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    match kubeconfig {
        Some(value) => cmd.env("KUBECONFIG", value),
        None => cmd.env_remove("KUBECONFIG"),
    };
    cmd.output().expect("run czctl doctor")
}

/// The status of check `name` in a doctor JSON report.
fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name:?} in {report}"))
}

fn report(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}): {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

fn join(paths: &[&Path]) -> String {
    std::env::join_paths(paths)
        .expect("paths without ':'")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn kubeconfig_files_are_merged_as_kubectl_merges_them() {
    let sim = kubesim(&["demo"], &[]);
    let real = sim.kubeconfig.clone();
    let missing = sim.dir.join("no-such-kubeconfig");
    let original = std::fs::read_to_string(&real).expect("kubesim's kubeconfig");
    assert!(original.contains(&sim.api), "{original}");
    // The same names (cluster, user, context) with a server nothing listens on.
    let closed = sim.dir.join("kubeconfig-closed");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let closed_api = format!("https://127.0.0.1:{port}");
    std::fs::write(&closed, original.replace(&sim.api, &closed_api)).unwrap();
    // Only a current-context, naming a context that exists nowhere.
    let elsewhere = sim.dir.join("kubeconfig-elsewhere");
    std::fs::write(
        &elsewhere,
        "apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n",
    )
    .unwrap();

    // A missing file first is skipped, as kubectl skips it.
    let out = doctor(&sim, "missing-first", Some(&join(&[&missing, &real])), &[]);
    let json = report(&out);
    assert_eq!(check(&json, "kubeconfig")["status"], "pass", "{json}");
    assert_eq!(check(&json, "api server")["status"], "pass", "{json}");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));

    // The first file to define a cluster name wins: kubesim's before the closed one ...
    let out = doctor(&sim, "first-wins", Some(&join(&[&real, &closed])), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));
    // ... and the closed one before kubesim's.
    let out = doctor(&sim, "closed-first", Some(&join(&[&closed, &real])), &[]);
    let json = report(&out);
    assert_eq!(out.status.code(), Some(3), "{json}");
    let detail = check(&json, "api path")["detail"].as_str().unwrap_or("");
    assert!(detail.contains(&closed_api), "{detail}");

    // current-context from the first file that sets it.
    let out = doctor(
        &sim,
        "context-later",
        Some(&join(&[&real, &elsewhere])),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));
    let out = doctor(
        &sim,
        "context-first",
        Some(&join(&[&elsewhere, &real])),
        &[],
    );
    let json = report(&out);
    assert_eq!(out.status.code(), Some(3), "{json}");
    let detail = check(&json, "kubeconfig")["detail"].as_str().unwrap_or("");
    assert!(detail.contains("nowhere"), "{detail}");

    // None of the files exists: one error naming them all, exit 3.
    let nothing = sim.dir.join("also-missing");
    let out = doctor(&sim, "none", Some(&join(&[&missing, &nothing])), &[]);
    let json = report(&out);
    assert_eq!(out.status.code(), Some(3), "{json}");
    let detail = check(&json, "kubeconfig")["detail"].as_str().unwrap_or("");
    let shown = format!("{}, {}", missing.display(), nothing.display());
    assert!(detail.contains(&shown), "{detail}");

    // --kubeconfig wins over KUBECONFIG ...
    let real_arg = real.to_string_lossy().into_owned();
    let out = doctor(
        &sim,
        "flag-wins",
        Some(&join(&[&closed])),
        &["--kubeconfig", &real_arg],
    );
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));
    // ... and names one file, which must exist (no fallback to KUBECONFIG).
    let missing_arg = missing.to_string_lossy().into_owned();
    let out = doctor(
        &sim,
        "flag-missing",
        Some(&join(&[&real])),
        &["--kubeconfig", &missing_arg],
    );
    let json = report(&out);
    assert_eq!(out.status.code(), Some(3), "{json}");
    let detail = check(&json, "kubeconfig")["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains(&format!(
            "{} given with --kubeconfig does not exist",
            missing.display()
        )),
        "{detail}"
    );
    assert!(
        !detail.contains(&format!("\"{}", missing.display())),
        "paths are not quoted: {detail}"
    );
}

#[test]
fn refused_credentials_exit_3_with_a_plain_message() {
    let sim = kubesim(&["demo"], &[]);
    let original = std::fs::read_to_string(&sim.kubeconfig).expect("kubesim's kubeconfig");
    let bad = sim.dir.join("kubeconfig-bad-token");
    let mut replaced = false;
    let text_bad: String = original
        .lines()
        .map(|line| match line.split_once("token:") {
            Some((indent, _)) => {
                replaced = true;
                format!("{indent}token: not-a-valid-token\n")
            }
            None => format!("{line}\n"),
        })
        .collect();
    assert!(replaced, "kubesim's kubeconfig has a token: {original}");
    std::fs::write(&bad, text_bad).unwrap();
    let bad_arg = bad.to_string_lossy().into_owned();
    let no_dump = |what: &str, all: &str| {
        for dump in ["Status {", "ApiError", "ListMeta", "Some("] {
            assert!(!all.contains(dump), "{what}: a debug dump ({dump}): {all}");
        }
    };

    // doctor: the api server check says so, and the exit code is 3.
    let out = doctor(&sim, "bad-token", None, &["--kubeconfig", &bad_arg]);
    let json = report(&out);
    assert_eq!(out.status.code(), Some(3), "{json}");
    let api = check(&json, "api server");
    assert_eq!(api["status"], "fail", "{json}");
    let detail = api["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("refused the credentials") && detail.contains("401"),
        "{detail}"
    );
    assert!(detail.contains(sim.api.trim_end_matches('/')), "{detail}");
    assert!(!detail.contains("cannot reach"), "{detail}");
    no_dump(
        "doctor",
        &format!("{}{}", text(&out.stdout), text(&out.stderr)),
    );

    // A teleport: exit 3, the same plain words, nothing left behind.
    let hosts = hosts_file(&sim, "bad-token-teleport");
    let state = sim.dir.join("state-bad-token-teleport");
    let out = Command::new(CZCTL)
        .args(["namespace", "teleport", "demo", "--kubeconfig", &bad_arg])
        .arg("--hosts-file")
        .arg(&hosts)
        .env("CZCTL_STATE_DIR", &state)
        .env("CZCTL_REGISTRY_DIR", sim.dir.join("registry-bad-token"))
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run czctl namespace teleport");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert!(stderr.contains("refused the credentials"), "{stderr}");
    assert!(!stderr.contains("cannot reach"), "{stderr}");
    no_dump("teleport", &stderr);
    assert_eq!(
        std::fs::read_to_string(&hosts).unwrap(),
        common::ORIGINAL_HOSTS
    );
}
