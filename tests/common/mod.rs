//! End-to-end test support: kubesim, and czctl run in a private mount namespace whose
//! /etc/hosts is a temp file (the machine's own hosts file is never touched).

#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

pub use kubesim::harness::KubeSim;

pub mod proxies;

/// The original content of every test's hosts file.
pub const ORIGINAL_HOSTS: &str =
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n# managed by the test\n";

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// kubesim with the given fixture directories (relative to fixtures/).
pub fn kubesim(fixtures: &[&str], extra: &[&str]) -> KubeSim {
    let exe = std::env::current_exe().expect("test exe");
    let binary = kubesim::harness::binary_near(&exe);
    assert!(
        binary.exists(),
        "build kubesim first: {} is missing (cargo test --workspace builds it)",
        binary.display()
    );
    let dirs: Vec<PathBuf> = fixtures
        .iter()
        .map(|f| root().join("fixtures").join(f))
        .collect();
    let refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    KubeSim::start(&binary, &refs, extra)
}

/// The repository of czctl's tunnel agent image (`DEFAULT_AGENT_IMAGE` without its tag).
pub const AGENT_REPOSITORY: &str = "ghcr.io/czctl/czctl-agent";

/// The `czctl-agent` binary of this build, beside czctl's in the target directory. `cargo test
/// --workspace` builds it (the cztunnel package's own test runs it); a test run of czctl alone
/// does not, so a missing binary, or one older than a source file of the cztunnel crate, fails
/// here naming the command that builds it.
pub fn agent_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_czctl")).with_file_name("czctl-agent");
    let build = "build it with `cargo build -p cztunnel --bin czctl-agent` (`cargo test --workspace` builds it)";
    let modified = |path: &Path| {
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; the intercept tests run the tunnel agent binary: {build}",
                    path.display()
                )
            })
    };
    let built = modified(&bin);
    let mut dirs = vec![root().join("tunnel/src")];
    dirs.push(root().join("tunnel/Cargo.toml"));
    while let Some(path) = dirs.pop() {
        if path.is_dir() {
            let entries =
                std::fs::read_dir(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            dirs.extend(entries.filter_map(Result::ok).map(|e| e.path()));
        } else {
            assert!(
                modified(&path) <= built,
                "{} is older than {}: {build}",
                bin.display(),
                path.display()
            );
        }
    }
    bin
}

/// `--run-image` for kubesim: the agent image runs this build's `czctl-agent`.
pub fn agent_run_image() -> String {
    format!("{AGENT_REPOSITORY}={}", agent_bin().display())
}

/// A private hosts file for one test.
pub fn hosts_file(sim: &KubeSim, name: &str) -> PathBuf {
    let path = sim.dir.join(format!("hosts-{name}"));
    std::fs::write(&path, ORIGINAL_HOSTS).unwrap();
    path
}

/// A running `czctl` in its own mount namespace.
pub struct Czctl {
    child: Child,
    /// stdout lines.
    pub stdout: Receiver<String>,
    /// stderr lines.
    pub stderr: Receiver<String>,
}

/// `unshare` that bind-mounts `hosts` over /etc/hosts in a new mount namespace and then
/// execs `wrapper...` followed by the czctl binary; append czctl's arguments.
pub fn namespaced_czctl(hosts: &Path, wrapper: &[&str]) -> Command {
    let czctl = env!("CARGO_BIN_EXE_czctl");
    let hosts = [(hosts, "/etc/hosts")];
    match wrapper.split_first() {
        None => command_with_files(&hosts, czctl, &[]),
        Some((program, rest)) => {
            let mut args = rest.to_vec();
            args.push(czctl);
            command_with_files(&hosts, program, &args)
        }
    }
}

/// `program` with `args`, in a private mount namespace where each `(file, target)` of `files`
/// is bind-mounted over `target` (e.g. `/etc/hosts`); without files, as it is. The namespace
/// is made by `unshare --mount`, whose shell execs the program: the child's pid is the
/// program's.
pub fn command_with_files(files: &[(&Path, &str)], program: &str, args: &[&str]) -> Command {
    if files.is_empty() {
        let mut cmd = Command::new(program);
        cmd.args(args);
        return cmd;
    }
    let mut script = String::new();
    for (i, (_, target)) in files.iter().enumerate() {
        assert!(
            !target.contains('\''),
            "a bind-mount target with a quote: {target}"
        );
        let _ = write!(script, "mount --bind \"${}\" '{target}' && ", i + 1);
    }
    let _ = write!(script, "shift {} && exec \"$@\"", files.len());
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ]);
    for (file, _) in files {
        cmd.arg(file);
    }
    cmd.arg(program).args(args);
    cmd
}

/// Starts `czctl ARGS` with `hosts` bind-mounted over /etc/hosts in a new mount namespace.
pub fn czctl_in_namespace(hosts: &Path, state: &Path, args: &[&str]) -> Czctl {
    let mut cmd = namespaced_czctl(hosts, &[]);
    cmd.args(args).env("CZCTL_STATE_DIR", state);
    spawn(cmd)
}

/// Starts `cmd` (which must end up exec'ing czctl, so its pid is czctl's) with stdin closed and
/// stdout and stderr read line by line.
pub fn spawn(mut cmd: Command) -> Czctl {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start czctl");
    let stdout = lines(child.stdout.take().unwrap(), false);
    let stderr = lines(child.stderr.take().unwrap(), true);
    Czctl {
        child,
        stdout,
        stderr,
    }
}

fn lines(pipe: impl std::io::Read + Send + 'static, echo: bool) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if echo {
                eprintln!("[czctl] {line}");
            }
            let _ = tx.send(line);
        }
    });
    rx
}

impl Czctl {
    /// Waits for a stdout line containing `needle`; returns every line seen until then.
    pub fn wait_stdout(&mut self, needle: &str, timeout: Duration) -> Vec<String> {
        wait_line(&self.stdout, needle, timeout).unwrap_or_else(|seen| {
            panic!(
                "czctl never printed {needle:?} on stdout; saw: {seen:#?}; exit: {:?}",
                self.child.try_wait()
            )
        })
    }

    /// Waits for a stderr line containing `needle`.
    pub fn wait_stderr(&mut self, needle: &str, timeout: Duration) -> Vec<String> {
        wait_line(&self.stderr, needle, timeout).unwrap_or_else(|seen| {
            panic!(
                "czctl never printed {needle:?} on stderr; saw: {seen:#?}; exit: {:?}",
                self.child.try_wait()
            )
        })
    }

    /// Waits until the ready line.
    ///
    /// czctl prints its table on stdout before the ready line on stderr, so once that line is
    /// seen the table is in the stdout pipe. A marker line written into the same pipe now (through
    /// czctl's own descriptor, `/proc/PID/fd/1`) comes after it: the table is every line before
    /// the marker.
    pub fn wait_ready(&mut self) -> Vec<String> {
        self.wait_stderr("teleport ready", Duration::from_secs(60));
        const MARKER: &str = "\u{1}end-of-table";
        {
            use std::io::Write;
            let fd = format!("/proc/{}/fd/1", self.child.id());
            let mut pipe = std::fs::OpenOptions::new()
                .write(true)
                .open(&fd)
                .unwrap_or_else(|e| panic!("cannot open czctl's stdout {fd}: {e}"));
            writeln!(pipe, "{MARKER}").expect("write the end-of-table marker");
        }
        let mut table =
            wait_line(&self.stdout, MARKER, Duration::from_secs(30)).unwrap_or_else(|seen| {
                panic!("the end-of-table marker never came back; saw {seen:#?}")
            });
        table.pop();
        table
    }

    /// Runs a command inside czctl's mount namespace (so it sees the private /etc/hosts).
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.child.id().to_string(), "-m", "--"])
            .args(args)
            .output()
            .expect("nsenter")
    }

    /// `getent hosts NAME` inside the namespace: the address, if resolvable.
    pub fn resolve(&self, name: &str) -> Option<String> {
        let out = self.exec(&["getent", "hosts", name]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace().next().map(str::to_string)
    }

    /// `curl` inside the namespace; returns (exit ok, body).
    pub fn curl(&self, url: &str) -> (bool, String) {
        let out = self.exec(&["curl", "-sS", "--max-time", "10", url]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// Sends a signal.
    pub fn signal(&self, signal: i32) {
        // Our child, not reaped before `wait_exit`: its pid names nothing else.
        use rustix::process::{kill_process, Pid, Signal};
        let pid = Pid::from_raw(self.child.id() as i32).expect("a pid");
        let signal = Signal::from_named_raw(signal).expect("a signal");
        let _ = kill_process(pid, signal);
    }

    /// Waits for the exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "czctl did not exit in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Czctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_line(
    rx: &Receiver<String>,
    needle: &str,
    timeout: Duration,
) -> Result<Vec<String>, Vec<String>> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return Ok(seen);
                }
            }
            Err(_) => break,
        }
    }
    Err(seen)
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pod name in an echo answer.
pub fn pod_of(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["pod"].as_str().map(str::to_string)
}

/// A right a restricted test user lacks: `verb` on `resource` (`pods/portforward`, `services`,
/// `customresourcedefinitions`, …), in `namespace` or everywhere.
#[derive(Debug, Clone, Copy)]
pub struct Deny {
    pub verb: &'static str,
    pub resource: &'static str,
    pub namespace: Option<&'static str>,
}

/// A cluster plus a kubeconfig for a user who has every right czctl uses except some.
pub struct Restricted {
    pub sim: KubeSim,
    /// The restricted user's kubeconfig.
    pub kubeconfig: PathBuf,
}

/// The resources czctl reads or writes, by API group: what a restricted user is granted (minus
/// the denied rights) on the real control plane.
const GRANTED: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "pods",
            "pods/portforward",
            "pods/log",
            "services",
            "endpoints",
            "configmaps",
            "secrets",
            "namespaces",
            "serviceaccounts",
            "events",
        ],
    ),
    ("discovery.k8s.io", &["endpointslices"]),
    (
        "apps",
        &["deployments", "statefulsets", "replicasets", "daemonsets"],
    ),
    ("batch", &["jobs", "cronjobs"]),
    ("coordination.k8s.io", &["leases"]),
    ("apiextensions.k8s.io", &["customresourcedefinitions"]),
    ("czctl.dev", &["sessions"]),
];
const VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// Starts the cluster with `fixtures` and a user `dev` lacking the `deny` rights: a
/// ServiceAccount bound to a ClusterRole of every right czctl uses minus the denied ones (real
/// RBAC on both servers), reached with a token from `kubectl create token`.
pub fn kubesim_restricted(fixtures: &[&str], deny: &[Deny]) -> Restricted {
    let sim = kubesim(fixtures, &[]);
    let mut rules = String::new();
    for (group, resources) in GRANTED {
        for resource in *resources {
            let verbs: Vec<&str> = VERBS
                .iter()
                .copied()
                .filter(|v| {
                    !deny
                        .iter()
                        .any(|d| d.resource == *resource && (d.verb == *v || d.verb == "*"))
                })
                .collect();
            if !verbs.is_empty() {
                rules += &format!(
                    "- apiGroups: [\"{group}\"]\n  resources: [\"{resource}\"]\n  verbs: [{}]\n",
                    verbs.join(", ")
                );
            }
        }
    }
    let manifest = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: dev, namespace: default}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: czctl-test-dev}}\n\
         rules:\n{rules}---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: czctl-test-dev}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: czctl-test-dev}}\n\
         subjects: [{{kind: ServiceAccount, name: dev, namespace: default}}]\n"
    );
    let file = sim.dir.join("restricted.yaml");
    std::fs::write(&file, manifest).expect("write the restricted user's manifest");
    sim.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
    let kubeconfig = token_kubeconfig(&sim, "default", "dev");
    Restricted { sim, kubeconfig }
}

/// A kubeconfig for ServiceAccount `ns/name` with a token from `kubectl create token`.
pub fn token_kubeconfig(sim: &KubeSim, ns: &str, name: &str) -> PathBuf {
    let token = sim.kubectl_ok(&["create", "token", name, "-n", ns, "--duration", "2h"]);
    let ca = sim.kubectl_ok(&[
        "config",
        "view",
        "--raw",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.certificate-authority-data}",
    ]);
    let path = sim.dir.join(format!("kubeconfig-{ns}-{name}"));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: {}, certificate-authority-data: {}}}\n\
         users:\n- name: {name}\n  user: {{token: {}}}\ncontexts:\n- name: {name}\n  context: {{cluster: c, user: {name}, namespace: {ns}}}\n\
         current-context: {name}\n",
        sim.api,
        ca.trim(),
        token.trim()
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Starts the cluster with `fixtures` and a tenant `tenant` whose only rights are a Role in
/// `namespace` (no cluster-scoped reads at all, as tenants behind capsule-proxy have): what
/// teleport and export need there. Returns the tenant's kubeconfig beside the cluster.
pub fn kubesim_tenant(fixtures: &[&str], namespace: &str) -> Restricted {
    let sim = kubesim(fixtures, &[]);
    let manifest = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: tenant, namespace: {namespace}}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: tenant, namespace: {namespace}}}\n\
         rules:\n\
         - apiGroups: [\"\"]\n  resources: [pods, services, endpoints, configmaps, secrets]\n  verbs: [get, list, watch]\n\
         - apiGroups: [\"\"]\n  resources: [pods/portforward]\n  verbs: [create, get]\n\
         - apiGroups: [discovery.k8s.io]\n  resources: [endpointslices]\n  verbs: [get, list, watch]\n\
         - apiGroups: [apps]\n  resources: [deployments, statefulsets, replicasets, daemonsets]\n  verbs: [get, list, watch]\n\
         ---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: tenant, namespace: {namespace}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: tenant}}\n\
         subjects: [{{kind: ServiceAccount, name: tenant, namespace: {namespace}}}]\n"
    );
    let file = sim.dir.join("tenant.yaml");
    std::fs::write(&file, manifest).expect("write the tenant's manifest");
    sim.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
    let kubeconfig = token_kubeconfig(&sim, namespace, "tenant");
    Restricted { sim, kubeconfig }
}

/// A scratch directory for a test that needs no cluster: `state` is its czctl state directory.
/// Removed when dropped.
pub struct Scratch {
    /// The directory.
    pub dir: PathBuf,
    /// The state directory inside it (`CZCTL_STATE_DIR`).
    pub state: PathBuf,
}

impl Scratch {
    /// A fresh scratch directory named after the test.
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("czctl-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("state").join("sessions")).unwrap();
        Scratch {
            state: dir.join("state"),
            dir,
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes `record` as the session record file `sessions/FILE_ID.json` of `state`, as a czctl
/// that crashed would have left it.
pub fn write_record(state: &Path, file_id: &str, record: &serde_json::Value) -> PathBuf {
    let dir = state.join("sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{file_id}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(record).unwrap()).unwrap();
    path
}

/// A teleport session record (in the format czctl writes) for session `id` with `pid`.
pub fn teleport_record(state: &Path, id: &str, pid: u32, hosts: &Path) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "kind": "teleport",
        "pid": pid,
        "namespaces": ["demo"],
        "context": "kubesim",
        "hosts_file": hosts,
        "socket": state.join("sessions").join(format!("{id}.sock")),
        "started": "2026-11-23T09:00:00Z",
        "state": "ready",
    })
}

/// What czctl records as the identity of process `pid` (its start time, boot id, PID
/// namespace and executable), read from /proc.
pub fn proc_identity(pid: u32) -> serde_json::Value {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start: u64 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    serde_json::json!({
        "start_time": start,
        "boot_id": boot.trim(),
        "pid_namespace": ns,
        "exe": exe,
    })
}

/// Runs the czctl binary with `args` and `CZCTL_STATE_DIR=state` in a session (and process
/// group) of its own, so that nothing it signals by mistake can reach the tests.
pub fn czctl_run(state: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("setsid");
    cmd.arg("--wait")
        .arg(env!("CARGO_BIN_EXE_czctl"))
        .args(args)
        .env("CZCTL_STATE_DIR", state)
        .env("CZCTL_REGISTRY_DIR", state.join("registry"));
    // Outside any CI job, `close --all` closes every session.
    for var in [
        "CZCTL_SESSION_GROUP",
        "GITHUB_ACTIONS",
        "GITLAB_CI",
        "BUILDKITE_JOB_ID",
        "CIRCLECI",
        "TF_BUILD",
        "JENKINS_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null()).output().expect("run czctl")
}

/// stdout and stderr of `out`, for assertions and messages.
pub fn both(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether process `pid` runs (and is not a zombie).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_string())
        })
        .is_some_and(|state| !state.starts_with('Z'))
}

// ------------------------------------------------------------------ files czctl may write

/// A pid no process has (above Linux's largest pid_max, 2^22).
pub const DEAD_PID: u32 = 0x7fff_fff0;

/// A fresh scratch directory under /tmp, mode 0755 (traversable by other users).
pub fn scratch_dir(name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("czctl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The czctl binary: this build's, or `CZCTL_TEST_BIN` (to run the file tests against another
/// build, e.g. to see them fail on an older czctl).
pub fn czctl_bin() -> PathBuf {
    std::env::var_os("CZCTL_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_czctl")))
}

/// `czctl deployment teleport echo -n demo --env-only -f FILE --kubeconfig K EXTRA...`, run as
/// this (root) user without sudo's variables unless `envs` sets them.
pub fn export_env_only(
    kubeconfig: &Path,
    file: &Path,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> Output {
    let mut cmd = Command::new(czctl_bin());
    cmd.args([
        "deployment",
        "teleport",
        "echo",
        "-n",
        "demo",
        "--env-only",
        "-f",
    ])
    .arg(file)
    .arg("--kubeconfig")
    .arg(kubeconfig)
    .args(extra)
    .env_remove("SUDO_UID")
    .env_remove("SUDO_GID")
    .env_remove("SUDO_USER");
    for (key, value) in envs {
        cmd.env(key, value);
    }
    cmd.output().expect("run czctl")
}

/// Writes the record of a stale teleport session `id` (its pid runs nothing) into `state`, for
/// a hosts file without its block: `czctl session close ID` then only releases its addresses
/// in the registry (so it creates the registry's files) and removes the record.
pub fn stale_session(state: &Path, hosts: &Path, id: &str) {
    use czctl::session::record::{self, Record};
    let record = Record {
        id: id.into(),
        kind: czctl::session::record::SessionKind::Teleport,
        pid: DEAD_PID,
        namespaces: vec!["demo".into()],
        context: "kubesim".into(),
        hosts_file: hosts.to_path_buf(),
        socket: record::socket_path(state, id),
        started: "2026-01-01T00:00:00Z".into(),
        state: czctl::session::record::SessionState::Ready,
        ..Record::default()
    };
    record.save(state).expect("write a stale session record");
}

/// Gives `path` and everything under it to `uid`:`uid`.
pub fn chown_all(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_all(&entry.unwrap().path(), uid);
        }
    }
}

/// `setpriv` that runs what follows as nobody (uid and gid 65534, no groups); panics when
/// setpriv (util-linux) is missing, so a test that needs it cannot pass without it.
pub fn as_nobody() -> Command {
    let found = Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "setpriv (util-linux) is needed to run czctl as another user"
    );
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    cmd
}
