//! Privilege separation end to end: czctl runs as `nobody` and only the hosts-file helper runs
//! as root, started through a real sudo. Every run gets a private mount namespace in which a
//! temp hosts file is bind-mounted over /etc/hosts and a temp sudoers file over /etc/sudoers;
//! the machine's own files are never touched. czctl runs without a controlling terminal, so
//! sudo can never prompt the person running the tests.
//!
//! Needs root (mount namespaces, setpriv), util-linux, procps, curl, getent and sudo. Without
//! them each test fails with one line naming what is missing (never passes without checking
//! anything), and what to install is printed once per run.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(60);
const NOBODY: u32 = 65534;
const HELPER_LINE: &str = "is edited by a helper running as root (pid ";

/// What a test needs from this machine.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Root, util-linux (unshare, setpriv, nsenter), procps (ps), curl and getent.
    Base,
    /// All of [`Need::Base`] and sudo.
    Sudo,
}

/// A missing prerequisite: fails the test with one line (no panic, no backtrace); the whole
/// explanation is printed once per test binary.
struct Missing(String);

impl std::fmt::Debug for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Prerequisites this machine lacks: (what, how to get it).
type Lacking = Vec<(String, String)>;

/// The prerequisites this machine lacks, for [`Need::Base`] and for sudo. Checked once per
/// test binary.
fn lacking() -> &'static (Lacking, Lacking) {
    static LACKING: std::sync::OnceLock<(Lacking, Lacking)> = std::sync::OnceLock::new();
    LACKING.get_or_init(|| {
        let runs = |tool: &str, arg: &str| {
            Command::new(tool)
                .arg(arg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let mut base = Vec::new();
        if !rustix::process::geteuid().is_root() {
            base.push((
                "root".to_string(),
                "these tests create mount namespaces and switch to nobody: run them as root \
                 (CI does), e.g. sudo -E env PATH=\"$PATH\" tests/run.sh"
                    .to_string(),
            ));
        }
        for (tool, arg, package) in [
            ("unshare", "--version", "util-linux"),
            ("setpriv", "--version", "util-linux"),
            ("nsenter", "--version", "util-linux"),
            ("ps", "--version", "procps"),
            ("curl", "--version", "curl"),
            ("getent", "--version", "libc-bin"),
        ] {
            if !runs(tool, arg) {
                base.push((
                    tool.to_string(),
                    format!("install {package} (apt-get install {package})"),
                ));
            }
        }
        let mut sudo = Vec::new();
        if !runs("sudo", "-V") {
            sudo.push((
                "sudo".to_string(),
                "install sudo (apt-get install sudo); the tests grant it only inside their own \
                 mount namespaces, the machine's /etc/sudoers is never used or changed"
                    .to_string(),
            ));
        }
        let all: Vec<&(String, String)> = base.iter().chain(&sudo).collect();
        if !all.is_empty() {
            // Once, past the test harness's output capture: what is missing and how to get it.
            let mut text = String::from(
                "\ntests/elevation.rs: this machine lacks what the privilege-separation tests \
                 need; those tests fail (they never pass without checking anything):\n",
            );
            for (what, how) in &all {
                text.push_str(&format!("  - {what}: {how}\n"));
            }
            text.push_str(
                "  (README.md, Quick start, lists every prerequisite of tests/run.sh)\n\n",
            );
            use std::io::Write;
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
        (base, sudo)
    })
}

/// Whether this machine has what a test needs; the error names what is missing in one line.
fn preconditions(need: Need) -> Result<(), Missing> {
    let (base, sudo) = lacking();
    let mut missing: Vec<&str> = base.iter().map(|(what, _)| what.as_str()).collect();
    if need == Need::Sudo {
        missing.extend(sudo.iter().map(|(what, _)| what.as_str()));
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Missing(format!(
        "missing prerequisite{}: {} (how to get {} is printed once above the test results)",
        if missing.len() == 1 { "" } else { "s" },
        missing.join(", "),
        if missing.len() == 1 { "it" } else { "them" },
    )))
}

/// The czctl binary as the kernel names it (what czctl passes to sudo, so what sudoers names).
fn czctl_exe() -> PathBuf {
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_czctl")).unwrap();
    let mut dir = exe.parent();
    while let Some(d) = dir {
        let mode = std::fs::metadata(d).unwrap().permissions().mode();
        assert!(
            mode & 0o001 != 0,
            "nobody must be able to run {}, but {} is not traversable by others (mode {mode:o})",
            exe.display(),
            d.display()
        );
        dir = d.parent();
    }
    exe
}

/// One test's private world: a hosts file, maybe a sudoers file, and nobody's home with a
/// readable kubeconfig, a state directory and an address registry.
struct World {
    dir: PathBuf,
    hosts: PathBuf,
    sudoers: Option<PathBuf>,
    home: PathBuf,
    state: PathBuf,
    kubeconfig: PathBuf,
}

/// What sudoers grants nobody.
enum Grant {
    /// `nobody ALL=(root) NOPASSWD: CZCTL hosts-helper *`.
    Helper,
    /// Nothing: sudo would ask for a password it cannot get.
    Nothing,
}

impl World {
    fn new(name: &str, sim: Option<&KubeSim>, sudoers: Option<Grant>) -> World {
        let dir =
            std::env::temp_dir().join(format!("czctl-elevation-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let hosts = dir.join("hosts");
        std::fs::write(&hosts, ORIGINAL_HOSTS).unwrap();
        std::fs::set_permissions(&hosts, std::fs::Permissions::from_mode(0o644)).unwrap();
        let sudoers = sudoers.map(|grant| {
            let path = dir.join("sudoers");
            let escaped: String = czctl_exe()
                .display()
                .to_string()
                .chars()
                .flat_map(|c| {
                    let escape = matches!(c, ',' | ':' | '=' | '\\' | ' ' | '(' | ')');
                    escape.then_some('\\').into_iter().chain([c])
                })
                .collect();
            let mut text = String::from(
                "# Written by czctl's elevation test; bind-mounted over /etc/sudoers in a private\n\
                 # mount namespace only. No @includedir: nothing else applies.\n\
                 Defaults !requiretty\n\
                 Defaults !fqdn\n\
                 Defaults !lecture\n\
                 Defaults !syslog\n\
                 Defaults use_pty\n\
                 Defaults env_reset\n\
                 Defaults secure_path=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\n\
                 root ALL=(ALL:ALL) ALL\n",
            );
            if let Grant::Helper = grant {
                text.push_str(&format!(
                    "nobody ALL=(root) NOPASSWD: {escaped} hosts-helper *\n"
                ));
            }
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
            let check = Command::new("visudo")
                .args(["-c", "-f"])
                .arg(&path)
                .output();
            if let Ok(out) = check {
                assert!(
                    out.status.success(),
                    "the test's sudoers file is invalid: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            path
        });
        let home = dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        let kubeconfig = home.join("kubeconfig");
        if let Some(sim) = sim {
            std::fs::copy(&sim.kubeconfig, &kubeconfig).unwrap();
            std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        World {
            state: home.join("state"),
            dir,
            hosts,
            sudoers,
            home,
            kubeconfig,
        }
    }

    /// `czctl ARGS` as nobody in a new mount namespace with the world's files mounted over
    /// /etc/hosts and /etc/sudoers, in a new session (no controlling terminal).
    fn command(&self, envs: &[(&str, &str)], args: &[&str]) -> Command {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"]);
        match &self.sudoers {
            Some(sudoers) => cmd
                .arg(
                    "mount --bind \"$0\" /etc/hosts && mount --bind \"$1\" /etc/sudoers && shift \
                     && exec \"$@\"",
                )
                .arg(&self.hosts)
                .arg(sudoers),
            None => cmd
                .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
                .arg(&self.hosts),
        };
        cmd.args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg(czctl_exe())
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("XDG_STATE_HOME")
        .env_remove("RUST_LOG")
        .env_remove("CZCTL_SUDO")
        .env("HOME", &self.home)
        .env("CZCTL_STATE_DIR", &self.state)
        .env("CZCTL_REGISTRY_DIR", self.home.join("registry"));
        for (key, value) in envs {
            cmd.env(key, value);
        }
        // Without a controlling terminal sudo cannot prompt anyone.
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe work is allowed: one setsid system call (rustix issues it
        // directly, without locks or allocation).
        unsafe {
            cmd.pre_exec(|| {
                let _ = rustix::process::setsid();
                Ok(())
            });
        }
        cmd
    }

    fn teleport(&self) -> Czctl {
        let kubeconfig = self.kubeconfig.to_str().unwrap();
        spawn(self.command(
            &[],
            &[
                "namespace",
                "teleport",
                "--foreground",
                "demo",
                "--kubeconfig",
                kubeconfig,
            ],
        ))
    }

    fn hosts_text(&self) -> String {
        std::fs::read_to_string(&self.hosts).unwrap()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a one-shot czctl to its end: (exit code, stdout, stderr).
fn run_once(cmd: Command) -> (Option<i32>, String, String) {
    let mut czctl = spawn(cmd);
    let status = czctl.wait_exit(LONG);
    let drain = |rx: &std::sync::mpsc::Receiver<String>| {
        let mut text = String::new();
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    };
    let stdout = drain(&czctl.stdout);
    let stderr = drain(&czctl.stderr);
    (status.code(), stdout, stderr)
}

/// The user a process runs as, by `ps`.
fn user_of(pid: u32) -> String {
    let out = Command::new("ps")
        .args(["-o", "user=", "-p", &pid.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether a process is gone (or a zombie nobody has reaped yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Waits for the teleport to say its hosts file goes through the helper; returns its pid.
fn helper_pid(czctl: &mut Czctl) -> u32 {
    let lines = czctl.wait_stderr(HELPER_LINE, LONG);
    let line = lines.last().unwrap();
    let rest = &line[line.find(HELPER_LINE).unwrap() + HELPER_LINE.len()..];
    rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap()]
        .parse()
        .unwrap()
}

#[test]
fn teleport_as_nobody_edits_hosts_through_a_root_helper_only() -> Result<(), Missing> {
    preconditions(Need::Sudo)?;
    let sim = kubesim(&["demo"], &[]);
    let world = World::new("teleport", Some(&sim), Some(Grant::Helper));
    let mut czctl = world.teleport();
    let helper = helper_pid(&mut czctl);
    czctl.wait_ready();

    assert_eq!(user_of(helper), "root", "the helper runs as root");
    assert_eq!(user_of(czctl.pid()), "nobody", "czctl itself does not");
    let addr = czctl.resolve("echo.demo").expect("echo.demo resolves");
    assert!(addr.starts_with("127.") && addr != "127.0.0.1", "{addr}");
    let (ok, body) = czctl.curl("http://echo.demo:8080/");
    assert!(ok && pod_of(&body).is_some(), "{body}");
    // Port 80 is below 1024: the helper bound it and handed the listener to czctl.
    let (ok, body) = czctl.curl("http://api.demo/metrics");
    assert!(ok && pod_of(&body).is_some(), "{body}");
    assert!(world.hosts_text().contains("echo.demo.svc.cluster.local"));
    // The backup, written by root, belongs to nobody like the rest of the state directory.
    let backup = std::fs::read_dir(&world.state)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".backup"))
        .expect("a hosts backup in the state directory");
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), ORIGINAL_HOSTS);
    assert_eq!(std::fs::metadata(&backup).unwrap().uid(), NOBODY);

    czctl.signal(libc::SIGTERM);
    assert!(czctl.wait_exit(LONG).success());
    assert_eq!(world.hosts_text(), ORIGINAL_HOSTS, "restored byte for byte");
    eventually("the helper exits", Duration::from_secs(10), || {
        gone(helper).then_some(())
    });
    Ok(())
}

#[test]
fn sigkill_of_czctl_lets_the_helper_restore_the_hosts_file() -> Result<(), Missing> {
    preconditions(Need::Sudo)?;
    let sim = kubesim(&["demo"], &[]);
    let world = World::new("sigkill", Some(&sim), Some(Grant::Helper));
    let mut czctl = world.teleport();
    let helper = helper_pid(&mut czctl);
    czctl.wait_ready();
    assert_ne!(
        world.hosts_text(),
        ORIGINAL_HOSTS,
        "the teleport added its block"
    );

    czctl.signal(libc::SIGKILL);
    czctl.wait_exit(LONG);
    eventually(
        "the helper restores the hosts file",
        Duration::from_secs(5),
        || (world.hosts_text() == ORIGINAL_HOSTS).then_some(()),
    );
    eventually("the helper exits", Duration::from_secs(10), || {
        gone(helper).then_some(())
    });
    Ok(())
}

#[test]
fn ctrl_c_to_the_whole_process_group_still_lets_czctl_clean_up() -> Result<(), Missing> {
    preconditions(Need::Sudo)?;
    let sim = kubesim(&["demo"], &[]);
    let world = World::new("ctrl-c", Some(&sim), Some(Grant::Helper));
    let mut czctl = world.teleport();
    let helper = helper_pid(&mut czctl);
    czctl.wait_ready();
    // What a terminal's Ctrl-C does: SIGINT to czctl, sudo and the helper at once. The helper
    // ignores it and does czctl's teardown edit.
    // czctl was started in its own session, so it leads its process group.
    let group = rustix::process::Pid::from_raw(czctl.pid() as i32).expect("a pid");
    rustix::process::kill_process_group(group, rustix::process::Signal::INT)
        .expect("SIGINT to czctl's process group");
    assert!(czctl.wait_exit(LONG).success());
    assert_eq!(world.hosts_text(), ORIGINAL_HOSTS, "restored byte for byte");
    eventually("the helper exits", Duration::from_secs(10), || {
        gone(helper).then_some(())
    });
    Ok(())
}

#[test]
fn session_close_as_nobody_elevates_to_remove_a_dead_sessions_block() -> Result<(), Missing> {
    preconditions(Need::Sudo)?;
    let sim = kubesim(&["demo"], &[]);
    let world = World::new("close", Some(&sim), Some(Grant::Helper));
    let mut czctl = world.teleport();
    let helper = helper_pid(&mut czctl);
    czctl.wait_ready();
    // Kill the helper first so nothing cleans up: the block and the record stay behind.
    let helper_pid = rustix::process::Pid::from_raw(helper as i32).expect("a pid");
    rustix::process::kill_process(helper_pid, rustix::process::Signal::KILL)
        .expect("SIGKILL to the helper");
    eventually("the helper dies", Duration::from_secs(10), || {
        gone(helper).then_some(())
    });
    czctl.signal(libc::SIGKILL);
    czctl.wait_exit(LONG);
    assert!(world.hosts_text().contains("# czctl begin session="));

    let (code, stdout, stderr) = run_once(world.command(&[], &["session", "close", "--all"]));
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("was stale"), "stdout: {stdout}");
    assert_eq!(world.hosts_text(), ORIGINAL_HOSTS);
    Ok(())
}

#[test]
fn detach_hands_the_helper_to_the_background_session() -> Result<(), Missing> {
    preconditions(Need::Sudo)?;
    let sim = kubesim(&["demo"], &[]);
    let world = World::new("detach", Some(&sim), Some(Grant::Helper));
    let kubeconfig = world.kubeconfig.to_str().unwrap();
    let (code, stdout, stderr) = run_once(world.command(
        &[],
        &[
            "namespace",
            "teleport",
            "demo",
            "--kubeconfig",
            kubeconfig,
            "--detach",
        ],
    ));
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    let session = stdout.trim().to_string();
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(world.state.join("sessions").join(format!("{session}.json"))).unwrap(),
    )
    .unwrap();
    let pid = record["pid"].as_u64().unwrap() as u32;
    assert_eq!(user_of(pid), "nobody");
    // The background session (no terminal) edits through the helper the foreground started.
    let log = std::fs::read_to_string(world.state.join("sessions").join(format!("{session}.log")))
        .unwrap();
    let helper: u32 = log
        .split(HELPER_LINE)
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no helper line in the session log: {log}"));
    assert_eq!(user_of(helper), "root");
    let resolved = Command::new("nsenter")
        .args([
            "-t",
            &pid.to_string(),
            "-m",
            "--",
            "getent",
            "hosts",
            "api.demo",
        ])
        .output()
        .unwrap();
    assert!(resolved.status.success(), "{resolved:?}");
    let curl = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "--"])
        .args(["curl", "-sS", "--max-time", "10", "http://api.demo/metrics"])
        .output()
        .unwrap();
    assert!(
        pod_of(&String::from_utf8_lossy(&curl.stdout)).is_some(),
        "{curl:?}"
    );

    let (code, stdout, stderr) = run_once(world.command(&[], &["session", "close", "--all"]));
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains(&format!("session {session} closed")),
        "{stdout}"
    );
    assert_eq!(world.hosts_text(), ORIGINAL_HOSTS, "restored byte for byte");
    eventually("the helper exits", Duration::from_secs(10), || {
        gone(helper).then_some(())
    });
    Ok(())
}

#[test]
fn a_normal_user_with_its_own_hosts_file_needs_no_root() -> Result<(), Missing> {
    preconditions(Need::Base)?;
    let sim = kubesim(&["demo"], &[]);
    let world = World::new("own-file", Some(&sim), None);
    let own = world.home.join("hosts");
    std::fs::write(&own, ORIGINAL_HOSTS).unwrap();
    std::os::unix::fs::chown(&own, Some(NOBODY), Some(NOBODY)).unwrap();
    let kubeconfig = world.kubeconfig.to_str().unwrap();
    let mut czctl = spawn(world.command(
        // Never elevated: a sudo that does not exist would fail the run.
        &[("CZCTL_SUDO", "/nonexistent/czctl-test-sudo")],
        &[
            "namespace",
            "teleport",
            "demo",
            "--kubeconfig",
            kubeconfig,
            "--hosts-file",
            own.to_str().unwrap(),
            "--foreground",
        ],
    ));
    // Port 80 of demo/api needs root: left out with a warning, everything else runs.
    czctl.wait_stderr("port 80 ", LONG);
    let table = czctl.wait_ready();
    // ... and the table says so under the Service, with the fix.
    assert!(
        table.iter().any(|l| l.starts_with("demo/api ")
            && l.contains("port 80 not forwarded")
            && l.contains("ip_unprivileged_port_start=80")),
        "{table:#?}"
    );
    let text = std::fs::read_to_string(&own).unwrap();
    let echo = text
        .lines()
        .find(|l| l.contains("echo.demo.svc.cluster.local"))
        .and_then(|l| l.split('\t').next())
        .unwrap_or_else(|| panic!("no echo line in {text}"))
        .to_string();
    let (ok, body) = czctl.curl(&format!("http://{echo}:8080/"));
    assert!(ok && pod_of(&body).is_some(), "{body}");
    assert_eq!(world.hosts_text(), ORIGINAL_HOSTS, "/etc/hosts untouched");
    czctl.signal(libc::SIGTERM);
    assert!(czctl.wait_exit(LONG).success());
    assert_eq!(std::fs::read_to_string(&own).unwrap(), ORIGINAL_HOSTS);
    Ok(())
}

#[test]
fn without_a_way_to_elevate_nothing_changes_and_the_message_says_what_to_do() -> Result<(), Missing>
{
    preconditions(Need::Base)?;
    let world = World::new("nosudo", None, None);
    // The kubeconfig does not exist: the hosts file is checked before the cluster is contacted.
    let kubeconfig = world.kubeconfig.to_str().unwrap();
    let teleport = ["namespace", "teleport", "demo", "--kubeconfig", kubeconfig];
    let cases = [
        (
            "/nonexistent/czctl-test-sudo",
            ["is not installed", "Install sudo", "run czctl as root"],
        ),
        // A "sudo" that does not make the helper root.
        ("env", ["not root", "sudo -v", "run czctl itself with sudo"]),
    ];
    for (sudo, says) in cases {
        let (code, stdout, stderr) = run_once(world.command(&[("CZCTL_SUDO", sudo)], &teleport));
        assert_eq!(code, Some(6), "CZCTL_SUDO={sudo}: {stdout}\n{stderr}");
        for needle in says.into_iter().chain(["/etc/hosts", "--hosts-file PATH"]) {
            assert!(
                stderr.contains(needle),
                "CZCTL_SUDO={sudo}: no {needle:?} in {stderr}"
            );
        }
        assert_eq!(world.hosts_text(), ORIGINAL_HOSTS);
        assert!(
            !world.state.exists(),
            "nothing was created in the state directory"
        );
    }
    Ok(())
}

#[test]
fn sudo_refusing_stops_before_changing_anything() -> Result<(), Missing> {
    preconditions(Need::Sudo)?;
    let world = World::new("refused", None, Some(Grant::Nothing));
    let kubeconfig = world.kubeconfig.to_str().unwrap();
    let (code, stdout, stderr) = run_once(world.command(
        &[],
        &["namespace", "teleport", "demo", "--kubeconfig", kubeconfig],
    ));
    assert_eq!(code, Some(6), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("did not start czctl's hosts-file helper") && stderr.contains("sudo -v"),
        "{stderr}"
    );
    assert_eq!(world.hosts_text(), ORIGINAL_HOSTS);
    assert!(!world.state.exists());
    Ok(())
}

#[test]
fn helper_is_hidden_from_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_czctl"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hosts-helper"));
}
