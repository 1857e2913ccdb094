//! Proxies and tunnels between a client and kubesim, as real programs on loopback: Debian's
//! `tinyproxy` (HTTP CONNECT), `danted` (SOCKS5), an HTTPS proxy (socat's TLS listener in front
//! of a tinyproxy) and a socat TCP tunnel (the stand-in for an SSH or SSM port-forward), plus a
//! test CA made with openssl, private hosts files and kubeconfig variants that use them.
//!
//! Each program listens on 127.0.0.1 at a port that was free a moment before; `start` returns
//! once a listening socket on that port belongs to the program (should someone else take the
//! port meanwhile, the program exits and is started again on another; it never passes for
//! another program's listener). Each writes its own
//! log in its own directory, which `log()` reads so a test can assert that the connection went
//! through it. Each runs in a process group of its own, killed (that group only) when dropped.
//!
//! A program started with a hosts file runs in a private mount namespace whose /etc/hosts is
//! that file (the machine's own is never touched), so it resolves test-only names such as
//! `kubesim.test`: Go (kubectl) never sends requests for `localhost` or a loopback IP through
//! `HTTPS_PROXY`, so those tests need the API server by a name, resolved by the proxy.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{command_with_files, KubeSim};

/// How long a proxy program may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(20);

/// The hosts-file name the tests give kubesim (`--tls-san kubesim.test`).
pub const KUBESIM_NAME: &str = "kubesim.test";

/// `program` (a path or a name on PATH) with `args`, in a private mount namespace whose
/// /etc/hosts is `hosts` when given (`unshare --mount`, then a bind mount), else as it is.
pub fn command_with_hosts(hosts: Option<&Path>, program: &str, args: &[&str]) -> Command {
    match hosts {
        Some(hosts) => command_with_files(&[(hosts, "/etc/hosts")], program, args),
        None => command_with_files(&[], program, args),
    }
}

/// Writes a hosts file `dir/NAME` with localhost and `entries` (address, names).
pub fn hosts_with(dir: &Path, name: &str, entries: &[(&str, &str)]) -> PathBuf {
    let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n");
    for (address, names) in entries {
        let _ = writeln!(text, "{address}\t{names}");
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// The port of kubesim's API (from its `https://127.0.0.1:PORT` URL).
pub fn api_port(sim: &KubeSim) -> u16 {
    sim.api
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in kubesim's API URL {}", sim.api))
}

/// Changes to a kubeconfig's (first) cluster for [`kubeconfig_variant`]; `None` and `false`
/// keep a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ClusterEdit {
    /// The cluster's `server` (e.g. `https://kubesim.test:PORT`).
    pub server: Option<String>,
    /// The cluster's `proxy-url` (`socks5://…`, `http://…`, `https://…`).
    pub proxy_url: Option<String>,
    /// The cluster's `tls-server-name`.
    pub tls_server_name: Option<String>,
    /// `certificate-authority: FILE` in place of `certificate-authority-data`.
    pub certificate_authority: Option<PathBuf>,
    /// `insecure-skip-tls-verify: true`, without any CA (kubectl refuses both together).
    pub insecure_skip_tls_verify: bool,
}

/// A copy of `sim`'s kubeconfig, `sim.dir/kubeconfig-NAME` (mode 0600), with the cluster
/// changed as `edit` says.
pub fn kubeconfig_variant(sim: &KubeSim, name: &str, edit: &ClusterEdit) -> PathBuf {
    let path = sim.dir.join(format!("kubeconfig-{name}"));
    edit_kubeconfig(&sim.kubeconfig, &path, edit);
    path
}

/// Writes `to` (mode 0600): the kubeconfig `from` with its first cluster changed as `edit`
/// says (for kubeconfigs other than kubesim's own, e.g. a restricted user's).
pub fn edit_kubeconfig(from: &Path, to: &Path, edit: &ClusterEdit) {
    use serde_json::Value;
    let text = std::fs::read_to_string(from)
        .unwrap_or_else(|e| panic!("read the kubeconfig {}: {e}", from.display()));
    let mut config: Value = serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("the kubeconfig {} is not YAML: {e}", from.display()));
    let cluster = config["clusters"][0]["cluster"]
        .as_object_mut()
        .unwrap_or_else(|| panic!("no cluster in {}", from.display()));
    for (key, value) in [
        ("server", &edit.server),
        ("proxy-url", &edit.proxy_url),
        ("tls-server-name", &edit.tls_server_name),
    ] {
        if let Some(value) = value {
            cluster.insert(key.into(), Value::String(value.clone()));
        }
    }
    if let Some(ca) = &edit.certificate_authority {
        cluster.remove("certificate-authority-data");
        cluster.insert(
            "certificate-authority".into(),
            Value::String(ca.display().to_string()),
        );
    }
    if edit.insecure_skip_tls_verify {
        cluster.remove("certificate-authority-data");
        cluster.remove("certificate-authority");
        cluster.insert("insecure-skip-tls-verify".into(), Value::Bool(true));
    }
    let yaml = serde_saphyr::to_string(&config).expect("serialize the kubeconfig");
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // It holds a bearer token: never readable by others, not even for a moment.
    let _ = std::fs::remove_file(to);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .and_then(|mut file| file.write_all(yaml.as_bytes()))
        .unwrap_or_else(|e| panic!("write the kubeconfig {}: {e}", to.display()));
}

/// A port on 127.0.0.1 that nothing listened on a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port on 127.0.0.1")
        .port()
}

/// Runs `start` on a free port; should the program exit before listening (another process
/// took the port meanwhile), again on another, three times at most.
fn on_a_free_port(mut start: impl FnMut(u16) -> Result<Daemon, String>) -> Daemon {
    let mut failures = Vec::new();
    for _ in 0..3 {
        match start(free_port()) {
            Ok(daemon) => return daemon,
            Err(failure) => failures.push(failure),
        }
    }
    panic!("{}", failures.join("\n\n"))
}

/// A fresh directory `parent/NAME-PORT` (mode 0755: tinyproxy writes its log as nobody).
fn own_dir(parent: &Path, name: &str, port: u16) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = parent.join(format!("{name}-{port}"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Whether the effective user is root (the test programs then drop to nobody).
fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Fails with `package` named when `program` is not installed.
fn require(program: &str, package: &str) {
    let found = if program.contains('/') {
        Path::new(program).exists()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
    };
    assert!(
        found,
        "{program} is needed for this test: install the Debian package {package} (see README.md, Quick start)"
    );
}

/// One running program: its own process group, its log file, its stdout+stderr file.
#[derive(Debug)]
struct Daemon {
    name: &'static str,
    child: Child,
    port: u16,
    log: PathBuf,
    output: PathBuf,
}

impl Daemon {
    /// Spawns `cmd` (stdout and stderr to `dir/output`) in a new process group and waits until
    /// it listens on 127.0.0.1:`port`; an error (with its log and output) if it exits first.
    fn spawn(
        name: &'static str,
        mut cmd: Command,
        dir: &Path,
        port: u16,
        log: PathBuf,
    ) -> Result<Daemon, String> {
        use std::os::unix::process::CommandExt;
        let output = dir.join("output");
        let out = std::fs::File::create(&output).expect("create the output file");
        let err = out.try_clone().expect("clone the output file");
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let mut daemon = Daemon {
            name,
            child,
            port,
            log,
            output,
        };
        daemon.wait_listening(&format!("{cmd:?}"))?;
        Ok(daemon)
    }

    /// Polls until a socket listening on 127.0.0.1:PORT is one of the program's own; an error
    /// if the program exits first, a panic if it does not listen in time.
    fn wait_listening(&mut self, what: &str) -> Result<(), String> {
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before listening on 127.0.0.1:{}: {what}\n{}",
                    self.name,
                    self.port,
                    self.report()
                ));
            }
            if listening_inodes(self.port)
                .into_iter()
                .any(|inode| holds_socket(self.child.id(), inode))
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "{} does not listen on 127.0.0.1:{} after {LISTEN_TIMEOUT:?} (or another \
                 program took the port): {what}\n{}",
                self.name,
                self.port,
                self.report()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The program's log file and output, for failure messages.
    fn report(&self) -> String {
        format!(
            "{} log {}:\n{}\n{} stdout/stderr:\n{}",
            self.name,
            self.log.display(),
            std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("({e})")),
            self.name,
            std::fs::read_to_string(&self.output).unwrap_or_else(|e| format!("({e})")),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log)
            .unwrap_or_else(|e| panic!("read {}'s log {}: {e}", self.name, self.log.display()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The group is the one made for the child at spawn; while the child is not reaped its
        // pid (the group's id) cannot be reused, so this reaches our processes only (danted's
        // workers and socat's per-connection children with it).
        if let Ok(None) = self.child.try_wait() {
            if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
        }
        let _ = self.child.wait();
    }
}

/// The inodes of sockets listening on 127.0.0.1:`port` (from /proc/net/tcp).
fn listening_inodes(port: u16) -> Vec<u64> {
    let want = format!("0100007F:{port:04X}");
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, state 0A = LISTEN, inode.
            (fields.get(1) == Some(&want.as_str()) && fields.get(3) == Some(&"0A"))
                .then(|| fields.get(9)?.parse().ok())
                .flatten()
        })
        .collect()
}

/// Whether process `pid` has socket `inode` open.
fn holds_socket(pid: u32, inode: u64) -> bool {
    let target = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(Result::ok)
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .any(|link| link.as_os_str() == target.as_str())
        })
        .unwrap_or(false)
}

// ------------------------------------------------------------------ tinyproxy

/// Options for [`Tinyproxy::start_with`].
#[derive(Debug, Clone, Default)]
pub struct TinyproxyOptions<'a> {
    /// Run with this file as /etc/hosts (in a private mount namespace).
    pub hosts: Option<&'a Path>,
    /// Require HTTP basic auth with this user and password (others get 407).
    pub basic_auth: Option<(&'a str, &'a str)>,
}

/// Debian's tinyproxy, an HTTP proxy (CONNECT to any port) on 127.0.0.1, logging every
/// connection (`CONNECT host:port` lines) to its own file.
#[derive(Debug)]
pub struct Tinyproxy {
    daemon: Daemon,
}

impl Tinyproxy {
    /// Starts tinyproxy under `parent` (its directory is `parent/tinyproxy-PORT`).
    pub fn start(parent: &Path) -> Tinyproxy {
        Tinyproxy::start_with(parent, &TinyproxyOptions::default())
    }

    /// Starts tinyproxy under `parent` with `options`.
    pub fn start_with(parent: &Path, options: &TinyproxyOptions) -> Tinyproxy {
        require("tinyproxy", "tinyproxy");
        let daemon = on_a_free_port(|port| Tinyproxy::spawn(parent, options, port));
        Tinyproxy { daemon }
    }

    fn spawn(parent: &Path, options: &TinyproxyOptions, port: u16) -> Result<Daemon, String> {
        let dir = own_dir(parent, "tinyproxy", port);
        let log = dir.join("tinyproxy.log");
        std::fs::write(&log, "").expect("create tinyproxy's log");
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 100\nAllow 127.0.0.1\n\
             LogFile \"{}\"\nLogLevel Connect\nDisableViaHeader Yes\n",
            log.display()
        );
        // No ConnectPort lines: CONNECT is allowed to every port (kubesim's is random).
        if is_root() {
            // tinyproxy refuses to run as root; it drops to nobody after reading its config.
            conf.push_str("User nobody\nGroup nogroup\n");
            std::os::unix::fs::chown(&log, Some(65534), Some(65534)).expect("chown the log");
        }
        if let Some((user, password)) = options.basic_auth {
            let _ = writeln!(conf, "BasicAuth {user} {password}");
        }
        let conf_path = dir.join("tinyproxy.conf");
        std::fs::write(&conf_path, conf).expect("write tinyproxy.conf");
        let cmd = command_with_hosts(
            options.hosts,
            "tinyproxy",
            &["-d", "-c", conf_path.to_str().expect("UTF-8 path")],
        );
        Daemon::spawn("tinyproxy", cmd, &dir, port, log)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.daemon.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// Its log so far (`CONNECT   … Request (file descriptor N): CONNECT host:port HTTP/1.1`).
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// How many CONNECT requests to `host_port` (`127.0.0.1:6443`, `kubesim.test:6443`) its log
    /// shows so far, refused ones (407) included.
    pub fn connects_to(&self, host_port: &str) -> usize {
        let needle = format!(": CONNECT {host_port} ");
        self.log().matches(&needle).count()
    }

    /// How many connections onward (to any host) it has opened so far.
    pub fn established(&self) -> usize {
        self.log().matches("Established connection to host").count()
    }
}

// ------------------------------------------------------------------ dante

/// Options for [`Dante::start_with`].
#[derive(Debug, Clone, Default)]
pub struct DanteOptions<'a> {
    /// Run with this file as /etc/hosts (in a private mount namespace): danted resolves the
    /// names SOCKS5 clients send.
    pub hosts: Option<&'a Path>,
    /// Require SOCKS5 username/password authentication (RFC 1929) with this user and password.
    /// danted checks them against the system's accounts, so it runs in a private mount
    /// namespace whose /etc/passwd and /etc/shadow are copies with this user added (the
    /// machine's accounts are never touched).
    pub user: Option<(&'a str, &'a str)>,
}

/// Debian's dante-server (`danted`), a SOCKS5 proxy on 127.0.0.1, logging every connection to
/// its own file.
#[derive(Debug)]
pub struct Dante {
    daemon: Daemon,
}

/// Where Debian installs danted.
const DANTED: &str = "/usr/sbin/danted";

impl Dante {
    /// Starts danted without authentication under `parent` (its directory is
    /// `parent/danted-PORT`), with `hosts` as its /etc/hosts when given.
    pub fn start(parent: &Path, hosts: Option<&Path>) -> Dante {
        Dante::start_with(
            parent,
            &DanteOptions {
                hosts,
                ..DanteOptions::default()
            },
        )
    }

    /// Starts danted under `parent` with `options`.
    pub fn start_with(parent: &Path, options: &DanteOptions) -> Dante {
        require(DANTED, "dante-server");
        let daemon = on_a_free_port(|port| Dante::spawn(parent, options, port));
        Dante { daemon }
    }

    fn spawn(parent: &Path, options: &DanteOptions, port: u16) -> Result<Daemon, String> {
        let dir = own_dir(parent, "danted", port);
        let log = dir.join("danted.log");
        // Checking passwords needs root (to read the shadow file).
        let user = if is_root() {
            "user.privileged: root\nuser.unprivileged: nobody\n"
        } else {
            ""
        };
        let method = if options.user.is_some() {
            "username"
        } else {
            "none"
        };
        let conf = format!(
            "logoutput: {log}\n\
             internal: 127.0.0.1 port = {port}\n\
             external: 127.0.0.1\n\
             clientmethod: none\n\
             socksmethod: {method}\n\
             {user}\
             client pass {{\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  log: connect disconnect error\n}}\n\
             socks pass {{\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  log: connect disconnect error\n}}\n",
            log = log.display()
        );
        let conf_path = dir.join("danted.conf");
        std::fs::write(&conf_path, conf).expect("write danted.conf");
        let pid_file = dir.join("danted.pid");
        let mut files: Vec<(PathBuf, &str)> = Vec::new();
        if let Some(hosts) = options.hosts {
            files.push((hosts.to_path_buf(), "/etc/hosts"));
        }
        if let Some((name, password)) = options.user {
            let (passwd, shadow) = accounts_with(&dir, name, password);
            files.push((passwd, "/etc/passwd"));
            files.push((shadow, "/etc/shadow"));
        }
        let files: Vec<(&Path, &str)> = files.iter().map(|(f, t)| (f.as_path(), *t)).collect();
        // Without -D danted stays in the foreground; -N 1: one main process (plus its workers).
        let mut cmd = command_with_files(
            &files,
            DANTED,
            &[
                "-f",
                conf_path.to_str().expect("UTF-8 path"),
                "-p",
                pid_file.to_str().expect("UTF-8 path"),
                "-N",
                "1",
            ],
        );
        // Its lock files go to TMPDIR.
        cmd.env("TMPDIR", &dir);
        Daemon::spawn("danted", cmd, &dir, port, log)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.daemon.port
    }

    /// `socks5://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("socks5://127.0.0.1:{}", self.port())
    }

    /// `socks5://USER:PASSWORD@127.0.0.1:PORT` (both as given: plain names, no escaping).
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("socks5://{user}:{password}@127.0.0.1:{}", self.port())
    }

    /// Its log so far (`pass(1): tcp/connect [: CLIENT PROXY -> LOCAL TARGET` per connection,
    /// addresses as `127.0.0.1.PORT`).
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// How many connections to `127.0.0.1:port` it has opened for clients so far.
    pub fn connects_to(&self, port: u16) -> usize {
        let target = format!(" 127.0.0.1.{port}");
        self.log()
            .lines()
            .filter(|l| l.contains("tcp/connect [:") && l.ends_with(&target))
            .count()
    }
}

/// Copies of /etc/passwd and /etc/shadow (`dir/passwd`, `dir/shadow`, mode 0600) with a user
/// `name` (uid and gid of nobody) whose password is `password` (SHA-512 crypt by openssl).
fn accounts_with(dir: &Path, name: &str, password: &str) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    assert!(
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "a plain user name: {name:?}"
    );
    let out = Command::new("openssl")
        .args(["passwd", "-6", "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(format!("{password}\n").as_bytes())?;
            child.wait_with_output()
        })
        .expect("openssl is needed (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl passwd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let without = |file: &str| {
        std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("read {file}: {e}"))
            .lines()
            .filter(|l| !l.starts_with(&format!("{name}:")))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    let passwd = dir.join("passwd");
    let shadow = dir.join("shadow");
    std::fs::write(
        &passwd,
        without("/etc/passwd") + &format!("{name}:x:65534:65534::/nonexistent:/usr/sbin/nologin\n"),
    )
    .expect("write passwd");
    std::fs::write(
        &shadow,
        without("/etc/shadow") + &format!("{name}:{hash}:20000:0:99999:7:::\n"),
    )
    .expect("write shadow");
    for file in [&passwd, &shadow] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    (passwd, shadow)
}

// ------------------------------------------------------------------ a test CA

/// A CA made with openssl for one test, whose key signs the certificates of kubesim
/// (`--ca-cert`/`--ca-key`) and of an HTTPS proxy, so one kubeconfig CA verifies both.
#[derive(Debug)]
pub struct TestCa {
    /// The CA certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PKCS#8 PEM, unencrypted).
    pub key: PathBuf,
    dir: PathBuf,
}

/// Runs openssl with `args` and panics with its stderr unless it succeeds.
fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is needed (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    /// Makes a CA (`CN=czctl-test-ca`, ECDSA P-256, 2 days) in `parent/ca`.
    pub fn new(parent: &Path) -> TestCa {
        let dir = parent.join("ca");
        std::fs::create_dir_all(&dir).expect("create the CA directory");
        let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=czctl-test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            "-keyout",
            key.to_str().expect("UTF-8 path"),
            "-out",
            cert.to_str().expect("UTF-8 path"),
        ]);
        TestCa { cert, key, dir }
    }

    /// kubesim's options to sign its certificate with this CA.
    pub fn kubesim_args(&self) -> [String; 4] {
        [
            "--ca-cert".into(),
            self.cert.display().to_string(),
            "--ca-key".into(),
            self.key.display().to_string(),
        ]
    }

    /// A server certificate and key (`NAME.crt`, `NAME.key`) for `sans` (openssl
    /// subjectAltName entries: `IP:127.0.0.1`, `DNS:proxy.test`), signed by this CA.
    pub fn sign(&self, name: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        let key = self.dir.join(format!("{name}.key"));
        let csr = self.dir.join(format!("{name}.csr"));
        let cert = self.dir.join(format!("{name}.crt"));
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n",
                sans.join(",")
            ),
        )
        .expect("write the extensions file");
        let path = |p: &Path| p.to_str().expect("UTF-8 path").to_string();
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &path(&key),
            "-out",
            &path(&csr),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &path(&csr),
            "-CA",
            &path(&self.cert),
            "-CAkey",
            &path(&self.key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &path(&ext),
            "-out",
            &path(&cert),
        ]);
        (cert, key)
    }
}

// ------------------------------------------------------------------ socat

/// Starts `socat -d -d -lf LOG LISTEN TARGET` listening on `port`.
fn socat(
    name: &'static str,
    dir: &Path,
    port: u16,
    listen: &str,
    target: &str,
) -> Result<Daemon, String> {
    require("socat", "socat");
    let log = dir.join("socat.log");
    let cmd = command_with_hosts(
        None,
        "socat",
        &[
            "-d",
            "-d",
            "-lf",
            log.to_str().expect("UTF-8 path"),
            listen,
            target,
        ],
    );
    Daemon::spawn(name, cmd, dir, port, log)
}

/// An HTTPS proxy made of real programs: socat's TLS listener on 127.0.0.1 (a certificate for
/// `IP:127.0.0.1` and `DNS:localhost` signed by a [`TestCa`]) in front of a [`Tinyproxy`].
/// kubectl verifies an `https://` proxy with the kubeconfig's CA, so kubesim must be started
/// with the same CA.
#[derive(Debug)]
pub struct HttpsProxy {
    // Dropped first: the TLS listener, then the proxy behind it.
    tls: Daemon,
    /// The tinyproxy behind the TLS listener (its log shows the CONNECTs).
    pub inner: Tinyproxy,
}

impl HttpsProxy {
    /// Starts a tinyproxy (with `options`) and the TLS listener in front of it, under `parent`.
    pub fn start(parent: &Path, ca: &TestCa, options: &TinyproxyOptions) -> HttpsProxy {
        let inner = Tinyproxy::start_with(parent, options);
        let tls = on_a_free_port(|port| {
            let dir = own_dir(parent, "https-proxy", port);
            let (cert, key) = ca.sign(
                &format!("https-proxy-{port}"),
                &["IP:127.0.0.1", "DNS:localhost"],
            );
            let listen = format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                cert.display(),
                key.display()
            );
            let target = format!("TCP:127.0.0.1:{}", inner.port());
            socat("socat (HTTPS proxy)", &dir, port, &listen, &target)
        });
        HttpsProxy { tls, inner }
    }

    /// Its TLS port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.tls.port
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port())
    }

    /// The log of the tinyproxy behind it (the CONNECT requests).
    pub fn log(&self) -> String {
        self.inner.log()
    }

    /// socat's log (TLS connections accepted).
    pub fn tls_log(&self) -> String {
        self.tls.log()
    }

    /// How many CONNECT requests to `host_port` went through it so far.
    pub fn connects_to(&self, host_port: &str) -> usize {
        self.inner.connects_to(host_port)
    }
}

/// A local TCP tunnel, `socat TCP-LISTEN:PORT,bind=127.0.0.1,fork TCP:127.0.0.1:TARGET`: what an
/// SSH or SSM port-forward to a private API endpoint looks like to the client.
#[derive(Debug)]
pub struct SocatTunnel {
    daemon: Daemon,
}

impl SocatTunnel {
    /// Starts a tunnel to 127.0.0.1:`target` under `parent`.
    pub fn start(parent: &Path, target: u16) -> SocatTunnel {
        let daemon = on_a_free_port(|port| {
            let dir = own_dir(parent, "tunnel", port);
            let listen = format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork");
            let to = format!("TCP:127.0.0.1:{target}");
            socat("socat (tunnel)", &dir, port, &listen, &to)
        });
        SocatTunnel { daemon }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.daemon.port
    }

    /// `https://127.0.0.1:PORT` (the API server through the tunnel).
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port())
    }

    /// socat's log (`accepting connection from …` per connection).
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// How many connections it has accepted so far.
    pub fn accepted(&self) -> usize {
        self.log().matches("accepting connection from").count()
    }
}
