//! Process identity: `session list|close` act only on the process a record was written for.
//! The records here are written into a scratch state directory the way a crashed czctl leaves
//! them; the real czctl binary then lists and closes them.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use common::*;

/// A `sleep` standing in for an unrelated process that got a dead session's pid; killed when
/// dropped.
struct Bystander(Child);

impl Bystander {
    fn start() -> Bystander {
        Bystander(Command::new("sleep").arg("1000").spawn().unwrap())
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Whether it is still running, not signalled by anyone.
    fn untouched(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none() && running(self.pid())
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A pid that runs nothing (a child that exited and was reaped).
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn hosts_with_block(dir: &Path, session: &str, pid: u32) -> std::path::PathBuf {
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        format!(
            "{ORIGINAL_HOSTS}# czctl begin session={session} pid={pid} -- added by czctl; removed when the session ends\n\
             127.1.2.3\techo echo.demo\n# czctl end session={session}\n"
        ),
    )
    .unwrap();
    hosts
}

fn listed(out: &std::process::Output) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("session list JSON: {e}: {}", both(out)));
    v["sessions"].as_array().unwrap().clone()
}

#[test]
fn a_reused_pid_is_never_signalled_and_its_record_is_stale() {
    let scratch = Scratch::new("reused");
    let mut bystander = Bystander::start();
    let pid = bystander.pid();
    let hosts = hosts_with_block(&scratch.dir, "tp-reused", pid);
    // The session's process was czctl and started before the pid was reused.
    let mut identity = proc_identity(pid);
    identity["start_time"] = (identity["start_time"].as_u64().unwrap() - 1).into();
    identity["exe"] = env!("CARGO_BIN_EXE_czctl").into();
    let mut record = teleport_record(&scratch.state, "tp-reused", pid, &hosts);
    record["identity"] = identity;
    write_record(&scratch.state, "tp-reused", &record);

    let list = czctl_run(&scratch.state, &["session", "list", "-o", "json"]);
    assert!(list.status.success(), "{}", both(&list));
    let sessions = listed(&list);
    assert_eq!(sessions.len(), 1, "{}", both(&list));
    assert_eq!(sessions[0]["stale"], true, "{}", both(&list));
    assert!(
        sessions[0]["process"]
            .as_str()
            .is_some_and(|p| p.contains("another process")),
        "{}",
        both(&list)
    );

    let close = czctl_run(
        &scratch.state,
        &[
            "session",
            "close",
            "--all",
            "--hosts-file",
            hosts.to_str().unwrap(),
        ],
    );
    assert!(close.status.success(), "{}", both(&close));
    assert!(both(&close).contains("was stale"), "{}", both(&close));
    assert!(
        bystander.untouched(),
        "pid {pid} was signalled: {}",
        both(&close)
    );
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
    let list = czctl_run(&scratch.state, &["session", "list", "-o", "json"]);
    assert!(listed(&list).is_empty(), "{}", both(&list));
}

#[test]
fn a_record_without_identity_is_never_signalled() {
    let scratch = Scratch::new("old");
    let mut bystander = Bystander::start();
    let pid = bystander.pid();
    let hosts = scratch.dir.join("hosts");
    std::fs::write(&hosts, ORIGINAL_HOSTS).unwrap();
    // Written by an older czctl: no identity.
    let file = write_record(
        &scratch.state,
        "tp-old",
        &teleport_record(&scratch.state, "tp-old", pid, &hosts),
    );

    let list = czctl_run(&scratch.state, &["session", "list", "-o", "json"]);
    let sessions = listed(&list);
    assert_eq!(sessions[0]["stale"], false, "{}", both(&list));
    assert!(
        sessions[0]["process"]
            .as_str()
            .is_some_and(|p| p.contains("no process identity")),
        "{}",
        both(&list)
    );
    for args in [
        &["session", "close", "tp-old"][..],
        &[
            "session",
            "close",
            "--all",
            "--hosts-file",
            hosts.to_str().unwrap(),
        ][..],
    ] {
        let close = czctl_run(&scratch.state, args);
        let said = both(&close);
        assert!(!close.status.success(), "{said}");
        assert!(
            said.contains("does not signal a process it cannot verify")
                && said.contains(&format!("rm {}", file.display())),
            "says why and how to remove it: {said}"
        );
        assert!(bystander.untouched(), "pid {pid} was signalled: {said}");
    }
    assert!(file.exists(), "the record stays until someone decides");
    // Once the pid is gone, the record is stale and cleaned like any other.
    drop(bystander);
    let close = czctl_run(
        &scratch.state,
        &[
            "session",
            "close",
            "--all",
            "--hosts-file",
            hosts.to_str().unwrap(),
        ],
    );
    assert!(close.status.success(), "{}", both(&close));
    assert!(both(&close).contains("was stale"), "{}", both(&close));
    assert!(!file.exists());
}

#[test]
fn pid_zero_and_one_are_invalid_records() {
    let scratch = Scratch::new("pid0");
    let hosts = scratch.dir.join("hosts");
    std::fs::write(&hosts, ORIGINAL_HOSTS).unwrap();
    let zero = write_record(
        &scratch.state,
        "tp-zero",
        &teleport_record(&scratch.state, "tp-zero", 0, &hosts),
    );
    let mut init = teleport_record(&scratch.state, "tp-init", 1, &hosts);
    init["identity"] = proc_identity(std::process::id());
    let one = write_record(&scratch.state, "tp-init", &init);

    let list = czctl_run(&scratch.state, &["session", "list", "-o", "json"]);
    assert!(list.status.success(), "{}", both(&list));
    assert!(
        listed(&list).is_empty(),
        "no session is shown: {}",
        both(&list)
    );
    let stderr = String::from_utf8_lossy(&list.stderr);
    for file in [&zero, &one] {
        assert!(
            stderr.contains(&file.display().to_string()),
            "the file is named: {stderr}"
        );
    }
    assert!(
        stderr.contains("pid 0 names no session process"),
        "{stderr}"
    );

    // kill(0, SIGTERM) would end czctl's own process group (its own session here).
    let close = czctl_run(
        &scratch.state,
        &[
            "session",
            "close",
            "--all",
            "--hosts-file",
            hosts.to_str().unwrap(),
        ],
    );
    let said = both(&close);
    assert!(close.status.code().is_some(), "czctl was killed: {said}");
    assert!(!close.status.success(), "{said}");
    assert!(
        said.contains(&format!("rm {}", zero.display()))
            && said.contains(&format!("rm {}", one.display())),
        "close --all says how to remove them: {said}"
    );
    let close = czctl_run(&scratch.state, &["session", "close", "tp-zero"]);
    assert!(
        close.status.code().is_some(),
        "czctl was killed: {}",
        both(&close)
    );
    assert!(
        both(&close).contains("invalid session record"),
        "{}",
        both(&close)
    );
    assert!(zero.exists() && one.exists(), "never acted upon");
}

#[test]
fn a_socket_path_outside_the_sessions_directory_is_never_removed() {
    let scratch = Scratch::new("socket");
    let hosts = scratch.dir.join("hosts");
    std::fs::write(&hosts, ORIGINAL_HOSTS).unwrap();
    let victim = scratch.dir.join("precious.txt");
    std::fs::write(&victim, "keep me").unwrap();
    let other = scratch.state.join("sessions").join("tp-other.sock");
    std::fs::write(&other, "another session's socket").unwrap();
    let pid = dead_pid();
    let mut outside = teleport_record(&scratch.state, "tp-outside", pid, &hosts);
    outside["socket"] = victim.to_str().unwrap().into();
    let outside = write_record(&scratch.state, "tp-outside", &outside);
    let mut misnamed = teleport_record(&scratch.state, "tp-misnamed", pid, &hosts);
    misnamed["socket"] = other.to_str().unwrap().into();
    let misnamed = write_record(&scratch.state, "tp-misnamed", &misnamed);
    let mut climbing = teleport_record(&scratch.state, "tp-climbing", pid, &hosts);
    climbing["socket"] = scratch
        .state
        .join("sessions/../sessions/tp-climbing.sock")
        .to_str()
        .unwrap()
        .into();
    let climbing = write_record(&scratch.state, "tp-climbing", &climbing);
    // An id that is not its file's name (or not an id at all) would name other files.
    let mut escaping = teleport_record(&scratch.state, "../../precious", pid, &hosts);
    escaping["socket"] = scratch
        .state
        .join("sessions")
        .join("tp-esc.sock")
        .to_str()
        .unwrap()
        .into();
    let escaping = write_record(&scratch.state, "tp-esc", &escaping);

    let list = czctl_run(&scratch.state, &["session", "list"]);
    let stderr = String::from_utf8_lossy(&list.stderr);
    for file in [&outside, &misnamed, &climbing, &escaping] {
        assert!(
            stderr.contains(&file.display().to_string()),
            "{} is named: {stderr}",
            file.display()
        );
    }
    assert!(stderr.contains("control socket"), "{stderr}");
    let close = czctl_run(
        &scratch.state,
        &[
            "session",
            "close",
            "--all",
            "--hosts-file",
            hosts.to_str().unwrap(),
        ],
    );
    let said = both(&close);
    assert!(!close.status.success(), "{said}");
    assert!(
        said.contains(&format!("rm {}", outside.display())),
        "{said}"
    );
    let close = czctl_run(&scratch.state, &["session", "close", "tp-outside"]);
    assert!(
        both(&close).contains("invalid session record"),
        "{}",
        both(&close)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert!(other.exists(), "another session's socket stays");
    for file in [&outside, &misnamed, &climbing, &escaping] {
        assert!(file.exists(), "never acted upon: {}", file.display());
    }
    // The advice works: the record files are czctl's own.
    for file in [&outside, &misnamed, &climbing, &escaping] {
        std::fs::remove_file(file).unwrap();
    }
    let close = czctl_run(
        &scratch.state,
        &[
            "session",
            "close",
            "--all",
            "--hosts-file",
            hosts.to_str().unwrap(),
        ],
    );
    assert!(close.status.success(), "{}", both(&close));
}

/// `czctl ARGS` in a mount namespace whose /etc/hosts is `hosts` (as the other tests run it).
fn czctl_with_hosts(hosts: &Path, state: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = namespaced_czctl(hosts, &["setsid", "--wait"]);
    cmd.args(args)
        .env("CZCTL_STATE_DIR", state)
        .env("CZCTL_REGISTRY_DIR", state.join("registry"))
        .env_remove("CZCTL_SESSION_GROUP");
    cmd.output().expect("run czctl")
}

#[test]
fn a_session_in_another_pid_namespace_is_left_running_by_close_all() {
    let sim = kubesim(&["demo"], &[]);
    let hosts = hosts_file(&sim, "pidns");
    let state = sim.dir.join("state-pidns");
    // A teleport in a PID namespace of its own (czctl is its pid 1), sharing the state
    // directory and the hosts file. --kill-child ends it with the test.
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--kill-child",
        "--mount-proc",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
    ])
    .arg(&hosts)
    .arg(env!("CARGO_BIN_EXE_czctl"))
    .args([
        "namespace",
        "teleport",
        "demo",
        "--foreground",
        "--kubeconfig",
    ])
    .arg(&sim.kubeconfig)
    .env("CZCTL_STATE_DIR", &state)
    .env("CZCTL_REGISTRY_DIR", state.join("registry"))
    .env_remove("CZCTL_SESSION_GROUP");
    let mut inside = spawn(cmd);
    inside.wait_ready();
    let block = || std::fs::read_to_string(&hosts).unwrap();
    assert!(block().contains("# czctl begin"), "{}", block());

    let list = czctl_with_hosts(&hosts, &state, &["session", "list", "-o", "json"]);
    let sessions = listed(&list);
    assert_eq!(sessions.len(), 1, "{}", both(&list));
    assert_eq!(
        sessions[0]["state"],
        "unknown (other pid namespace)",
        "{}",
        both(&list)
    );
    assert_eq!(sessions[0]["stale"], false);
    let id = sessions[0]["id"].as_str().unwrap().to_string();

    let close = czctl_with_hosts(&hosts, &state, &["session", "close", "--all"]);
    let said = both(&close);
    assert!(close.status.success(), "{said}");
    assert!(
        said.contains(&format!("left alone session {id}")) && said.contains("PID namespace"),
        "{said}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        block().contains(&format!("session={id}")),
        "its hosts block stays: {said}"
    );
    let (ok, body) = inside.curl("http://echo.demo:8080/still");
    assert!(ok, "the teleport still forwards: {body}");

    // By id, it is asked through its control socket, which works across PID namespaces.
    let close = czctl_with_hosts(&hosts, &state, &["session", "close", &id]);
    assert!(close.status.success(), "{}", both(&close));
    assert!(
        both(&close).contains(&format!("session {id} closed")),
        "{}",
        both(&close)
    );
    inside.wait_exit(Duration::from_secs(20));
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
}

#[test]
fn a_teleport_removes_a_hosts_block_whose_pid_now_runs_something_else() {
    let sim = kubesim(&["demo"], &[]);
    let scratch = Scratch::new("block-reused");
    let mut bystander = Bystander::start();
    // A block left by a crashed session whose pid now belongs to an unrelated `sleep`: no
    // record names it, and the process is not czctl.
    let hosts = hosts_with_block(&scratch.dir, "tp-gone", bystander.pid());
    let state = scratch.state.clone();
    let kubeconfig = sim.kubeconfig.to_str().unwrap();
    let out = czctl_with_hosts(
        &hosts,
        &state,
        &["namespace", "teleport", "demo", "--kubeconfig", kubeconfig],
    );
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        both(&out).contains("removed a stale hosts block of session tp-gone"),
        "{}",
        both(&out)
    );
    assert!(bystander.untouched(), "the sleep was not signalled");
    let close = czctl_with_hosts(&hosts, &state, &["session", "close", "--all"]);
    assert!(close.status.success(), "{}", both(&close));
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
}
