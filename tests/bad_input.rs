//! Bad input to the czctl binary: a table of refused runs, each with its exit code (see
//! src/exit.rs) and a fragment of its message, against one kubesim. Every run is the real binary
//! in a private mount namespace whose /etc/hosts is a temp file, with a scratch
//! CZCTL_STATE_DIR and CZCTL_REGISTRY_DIR, and must
//! - exit with the expected code and say the expected fragment on stderr (and never the
//!   forbidden ones: another file's content, a network problem that is not one);
//! - write nothing on stdout;
//! - keep its stderr short: no argument is echoed back whole (a 100 kB name is cut to ~80
//!   characters with "…");
//! - leave the hosts file as it was and no session behind (no *.json, *.sock or *.log under
//!   the state directory's sessions/).
//!
//! Then a teleport whose first namespace has Services named like names this machine already
//! uses (`wpad`, `localhost`): their bare names stay out of the hosts file, their qualified
//! names are added.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// How long one refused run may take (a loaded 2-core machine).
const EXIT: Duration = Duration::from_secs(60);

/// No refused run says more than this on stderr.
const MAX_STDERR: usize = 1500;

/// What the kubeconfig argument of a case is.
#[derive(Clone, Copy)]
enum Kubeconfig {
    /// kubesim's.
    Sim,
    /// This path, as it is.
    Path(&'static str),
    /// A file in the case's scratch directory with this content.
    File(&'static str),
    /// The case's scratch directory itself.
    Directory,
    /// A path in the scratch directory that does not exist.
    Missing,
    /// None at all (and no KUBECONFIG, HOME without one).
    None,
}

/// One bad input.
struct Case {
    /// What it is, for failure reports.
    name: &'static str,
    /// czctl's arguments; `{huge}` is replaced by 100 000 characters of `a`.
    args: Vec<String>,
    kubeconfig: Kubeconfig,
    /// The exit code.
    code: i32,
    /// Fragments stderr must contain.
    says: Vec<&'static str>,
    /// Fragments stderr must not contain.
    never: Vec<&'static str>,
}

fn case(name: &'static str, args: &[&str], code: i32, says: &[&'static str]) -> Case {
    Case {
        name,
        args: args.iter().map(|a| a.to_string()).collect(),
        kubeconfig: Kubeconfig::Sim,
        code,
        says: says.to_vec(),
        never: Vec::new(),
    }
}

impl Case {
    fn kubeconfig(mut self, kubeconfig: Kubeconfig) -> Self {
        self.kubeconfig = kubeconfig;
        self
    }

    fn never(mut self, never: &[&'static str]) -> Self {
        self.never = never.to_vec();
        self
    }
}

const HUGE: usize = 100_000;

/// A 64 KiB selector: too long for the URL of a list request.
fn long_selector() -> String {
    let values: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
    format!("app in ({})", values.join(","))
}

fn cases() -> Vec<Case> {
    use Kubeconfig::*;
    let not_ns = "is not a namespace name";
    let reach = "reach";
    vec![
        // Namespaces.
        case(
            "uppercase namespace",
            &["namespace", "teleport", "Demo_1"],
            2,
            &[not_ns, "Demo_1"],
        ),
        case(
            "empty namespace",
            &["namespace", "teleport", ""],
            2,
            &[not_ns],
        ),
        case(
            "namespace with dots",
            &["namespace", "teleport", "a.b"],
            2,
            &[not_ns, "\"a.b\""],
        ),
        case(
            "namespace with a newline",
            &["namespace", "teleport", "demo\nx"],
            2,
            &[not_ns, "demo\\nx"],
        ),
        case(
            "namespace of 64 characters",
            &["namespace", "teleport", &"a".repeat(64)],
            2,
            &[not_ns],
        ),
        case(
            "100 kB namespace",
            &["namespace", "teleport", "{huge}"],
            2,
            &[not_ns, "…"],
        ),
        case(
            "namespace given twice",
            &["namespace", "teleport", "demo", "other", "demo"],
            2,
            &["given twice"],
        ),
        case(
            "namespace that does not exist",
            &["namespace", "teleport", "nope"],
            5,
            &["\"nope\" not found"],
        ),
        case("no namespace", &["namespace", "teleport"], 2, &["required"]),
        case(
            "intercept in a bad namespace",
            &["service", "intercept", "echo", "-n", "Demo_1"],
            2,
            &[not_ns],
        ),
        case(
            "doctor of a bad namespace",
            &["doctor", "-n", "Bad_NS"],
            2,
            &[not_ns],
        ),
        // Selectors.
        case(
            "unparsable selector",
            &["namespace", "teleport", "demo", "-l", "tier in (("],
            2,
            &["tier in (("],
        )
        .never(&[reach]),
        case(
            "selector with an empty term",
            &["namespace", "teleport", "demo", "-l", "a=b,,"],
            2,
            &["400"],
        )
        .never(&[reach]),
        case(
            "selector value over 63",
            &[
                "namespace",
                "teleport",
                "demo",
                "-l",
                &format!("app={}", "v".repeat(64)),
            ],
            2,
            &["must be no more than 63 characters"],
        )
        .never(&[reach]),
        case(
            "100 kB selector",
            &["namespace", "teleport", "demo", "-l", "app={huge}"],
            2,
            &["selector given with -l is too long", "100004 characters"],
        )
        .never(&[reach, "cluster-info"]),
        case(
            "64 KiB selector of many values",
            &["namespace", "teleport", "demo", "-l", &long_selector()],
            2,
            &["selector given with -l is too long"],
        )
        .never(&[reach, "cluster-info"]),
        // Cluster domains.
        case(
            "cluster domain with '_'",
            &[
                "namespace",
                "teleport",
                "demo",
                "--cluster-domain",
                "bad_domain",
            ],
            2,
            &["--cluster-domain", "is not a DNS domain"],
        ),
        case(
            "empty cluster domain",
            &["namespace", "teleport", "demo", "--cluster-domain", ""],
            2,
            &["is not a DNS domain"],
        ),
        case(
            "cluster domain starting with '-'",
            &["namespace", "teleport", "demo", "--cluster-domain=-x.local"],
            2,
            &["is not a DNS domain"],
        ),
        case(
            "cluster domain with an empty label",
            &[
                "namespace",
                "teleport",
                "demo",
                "--cluster-domain",
                "cluster..local",
            ],
            2,
            &["is not a DNS domain"],
        ),
        // Durations.
        case(
            "timeout 0",
            &["namespace", "teleport", "demo", "--timeout", "0"],
            2,
            &["longer than zero"],
        ),
        case(
            "timeout 0s",
            &["namespace", "teleport", "demo", "--timeout", "0s"],
            2,
            &["longer than zero"],
        ),
        case(
            "timeout that is no duration",
            &["namespace", "teleport", "demo", "--timeout", "soon"],
            2,
            &["is not a duration"],
        ),
        case(
            "intercept timeout 0",
            &[
                "service",
                "intercept",
                "echo",
                "-n",
                "demo",
                "--timeout",
                "0",
            ],
            2,
            &["longer than zero"],
        ),
        // Intercept: ports, headers, URLs.
        case(
            "local port 0",
            &["service", "intercept", "echo", "-n", "demo", "-p", "0"],
            2,
            &["local port 0 cannot be used"],
        ),
        case(
            "local port 70000",
            &["service", "intercept", "echo", "-n", "demo", "-p", "70000"],
            2,
            &["70000"],
        ),
        case(
            "local URL on port 0",
            &[
                "service",
                "intercept",
                "echo",
                "-n",
                "demo",
                "--local-url",
                "http://127.0.0.1:0",
            ],
            2,
            &["port 0"],
        ),
        case(
            "https local URL",
            &[
                "service",
                "intercept",
                "echo",
                "-n",
                "demo",
                "--local-url",
                "https://127.0.0.1:3000",
            ],
            2,
            &["only http://"],
        ),
        case(
            "header without ':'",
            &["service", "intercept", "echo", "-n", "demo", "-x", "x-dev"],
            2,
            &["has no ':'"],
        ),
        case(
            "header name with '_'",
            &[
                "service",
                "intercept",
                "echo",
                "-n",
                "demo",
                "-x",
                "x_dev:alice",
            ],
            2,
            &["header name \"x_dev\""],
        ),
        case(
            "header value with a space",
            &[
                "service",
                "intercept",
                "echo",
                "-n",
                "demo",
                "-x",
                "x-dev:a b",
            ],
            2,
            &["header value \"a b\""],
        ),
        case(
            "header value injecting nginx.conf",
            &[
                "service",
                "intercept",
                "echo",
                "-n",
                "demo",
                "-x",
                "x-dev:a\";include /etc/passwd;#",
            ],
            2,
            &["header value"],
        )
        .never(&["root:"]),
        case(
            "100 kB header",
            &[
                "service",
                "intercept",
                "echo",
                "-n",
                "demo",
                "-x",
                "x-dev:{huge}",
            ],
            2,
            &["header value", "(100000 characters)"],
        ),
        case(
            "100 kB Service name",
            &[
                "service",
                "intercept",
                "{huge}",
                "-n",
                "demo",
                "--foreground",
            ],
            2,
            &["too long"],
        )
        .never(&[reach]),
        // Kubeconfigs and contexts.
        case(
            "unknown context",
            &["namespace", "teleport", "demo", "--context", "nope"],
            3,
            &["(context \"nope\")", "no such context"],
        ),
        case(
            "100 kB context",
            &["namespace", "teleport", "demo", "--context", "{huge}"],
            3,
            &["no such context", "(100000 characters)"],
        ),
        case(
            "missing kubeconfig",
            &["namespace", "teleport", "demo"],
            3,
            &["does not exist"],
        )
        .kubeconfig(Missing),
        case(
            "kubeconfig that is a directory",
            &["namespace", "teleport", "demo"],
            3,
            &["is a directory, not a kubeconfig file"],
        )
        .kubeconfig(Directory),
        case(
            "/etc/passwd as kubeconfig",
            &["namespace", "teleport", "demo"],
            3,
            &["/etc/passwd: it is not a kubeconfig", "line 1 column 1"],
        )
        .kubeconfig(Path("/etc/passwd"))
        .never(&["root:", "/bin/"]),
        case(
            "kubeconfig with a secret scalar",
            &["namespace", "teleport", "demo"],
            3,
            &["it is not a kubeconfig"],
        )
        .kubeconfig(File("clusters: hunter2-secret-password\n"))
        .never(&["hunter2"]),
        case(
            "empty kubeconfig",
            &["namespace", "teleport", "demo"],
            3,
            &["current context"],
        )
        .kubeconfig(File("")),
        case(
            "no kubeconfig at all",
            &["namespace", "teleport", "demo"],
            3,
            &["no kubeconfig found"],
        )
        .kubeconfig(None),
        // The hosts file.
        case(
            "hosts file that is a directory",
            &["namespace", "teleport", "demo", "--hosts-file", "{scratch}"],
            6,
            &["it is a directory"],
        ),
        case(
            "hosts file that does not exist",
            &[
                "namespace",
                "teleport",
                "demo",
                "--hosts-file",
                "{scratch}/none/hosts",
            ],
            6,
            &["does not exist"],
        ),
        case(
            "close sweeping a directory as the hosts file",
            &["session", "close", "--all", "--hosts-file", "{scratch}"],
            6,
            &["it is a directory"],
        ),
        case(
            "close sweeping a device as the hosts file",
            &["session", "close", "--all", "--hosts-file", "/dev/null"],
            6,
            &["it is a character device"],
        ),
        // Arguments.
        case(
            "unknown option",
            &["namespace", "teleport", "demo", "--bogus"],
            2,
            &["--bogus"],
        ),
        case(
            "unknown session",
            &["session", "close", "nope"],
            5,
            &["no session \"nope\""],
        ),
    ]
}

/// How a run ended.
#[derive(Debug)]
struct Exited {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `czctl ARGS` in a private mount namespace with `hosts` over /etc/hosts.
fn run(hosts: &Path, envs: &[(&str, &Path)], args: &[String]) -> Exited {
    let mut cmd = namespaced_czctl(hosts, &[]);
    cmd.args(args)
        .env_remove("KUBECONFIG")
        .env_remove("XDG_STATE_HOME")
        .env_remove("RUST_LOG")
        .env_remove("CZCTL_SESSION")
        .env_remove("SUDO_USER")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("GITLAB_CI")
        .env_remove("GITHUB_ACTIONS");
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
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > EXIT {
            let _ = child.kill();
            let _ = child.wait();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Exited {
        code: status.code(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Session files left under `state`/sessions: records, sockets, logs.
fn session_files(state: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path
                .extension()
                .is_some_and(|e| e == "json" || e == "sock" || e == "log")
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&state.join("sessions"), &mut out);
    out
}

/// The start of `text`, for failure reports.
fn head(text: &str) -> String {
    text.chars().take(600).collect()
}

/// Runs one case in `dir`; the problems found, if any.
fn check(sim: &KubeSim, case: &Case, dir: &Path) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, ORIGINAL_HOSTS).unwrap();
    let state = dir.join("state");
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let scratch = dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let huge = "a".repeat(HUGE);
    let mut args: Vec<String> = case
        .args
        .iter()
        .map(|a| {
            a.replace("{huge}", &huge)
                .replace("{scratch}", scratch.to_str().unwrap())
        })
        .collect();
    let kubeconfig = match case.kubeconfig {
        Kubeconfig::Sim => Some(sim.kubeconfig.clone()),
        Kubeconfig::Path(path) => Some(PathBuf::from(path)),
        Kubeconfig::File(text) => {
            let path = dir.join("kubeconfig");
            std::fs::write(&path, text).unwrap();
            Some(path)
        }
        Kubeconfig::Directory => Some(scratch.clone()),
        Kubeconfig::Missing => Some(dir.join("missing-kubeconfig")),
        Kubeconfig::None => None,
    };
    if let Some(path) = &kubeconfig {
        args.push("--kubeconfig".into());
        args.push(path.display().to_string());
    }
    let run = run(
        &hosts,
        &[
            ("CZCTL_STATE_DIR", state.as_path()),
            ("CZCTL_REGISTRY_DIR", dir.join("registry").as_path()),
            ("HOME", home.as_path()),
        ],
        &args,
    );
    let mut problems = Vec::new();
    if run.code != Some(case.code) {
        problems.push(format!("exit code {:?}, not {}", run.code, case.code));
    }
    for fragment in &case.says {
        if !run.stderr.contains(fragment) {
            problems.push(format!("stderr does not say {fragment:?}"));
        }
    }
    for fragment in &case.never {
        if run.stderr.contains(fragment) {
            problems.push(format!("stderr says {fragment:?}"));
        }
    }
    if !run.stdout.is_empty() {
        problems.push(format!("stdout is not empty: {:?}", head(&run.stdout)));
    }
    if run.stderr.len() > MAX_STDERR {
        problems.push(format!(
            "stderr has {} bytes (an argument echoed whole?)",
            run.stderr.len()
        ));
    }
    if run.stderr.trim().is_empty() {
        problems.push("nothing on stderr".into());
    }
    match std::fs::read_to_string(&hosts) {
        Ok(text) if text == ORIGINAL_HOSTS => {}
        other => problems.push(format!("the hosts file changed: {other:?}")),
    }
    let left = session_files(&state);
    if !left.is_empty() {
        problems.push(format!("session files left: {left:?}"));
    }
    if !problems.is_empty() {
        problems.push(format!("stderr: {:?}", head(&run.stderr)));
    }
    problems
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let sim = kubesim(&["demo"], &[]);
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut failed = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let dir = sim.dir.join(format!("case-{i}"));
        let problems = check(&sim, case, &dir);
        eprintln!(
            "case {i} {:?}: {}",
            case.name,
            if problems.is_empty() { "ok" } else { "FAILED" }
        );
        if !problems.is_empty() {
            failed.push(format!(
                "{} ({}):\n  {}",
                case.name,
                i,
                problems.join("\n  ")
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} bad inputs were not refused as they should be:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

/// The checks above catch what they should: a run that succeeds, writes on stdout or echoes a
/// huge argument fails them.
#[test]
fn the_checks_can_fail() {
    let sim = kubesim(&["demo"], &[]);
    let ok = case("a version", &["--version"], 2, &["nothing"]);
    let problems = check(&sim, &ok, &sim.dir.join("version"));
    assert!(
        problems.iter().any(|p| p.starts_with("exit code Some(0)")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("stdout is not empty")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("does not say \"nothing\"")),
        "{problems:?}"
    );
}

/// A Service of the first namespace named like a name this machine already uses gets no bare
/// name in the hosts file; its qualified names are there.
#[test]
fn reserved_bare_names_stay_out_of_the_hosts_file() {
    let sim = kubesim(&["demo"], &[]);
    let yaml: String = ["wpad", "localhost", "isatap"]
        .iter()
        .map(|name| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: demo}}\n\
                 spec: {{selector: {{app: echo}}, ports: [{{name: http, port: 8080}}]}}\n---\n"
            )
        })
        .collect();
    let file = sim.dir.join("reserved.yaml");
    std::fs::write(&file, yaml).unwrap();
    sim.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
    let hosts = hosts_file(&sim, "reserved");
    let state = sim.dir.join("state-reserved");
    let kubeconfig = sim.kubeconfig.to_str().unwrap().to_string();
    let mut czctl = czctl_in_namespace(
        &hosts,
        &state,
        &[
            "namespace",
            "teleport",
            "demo",
            "--foreground",
            "--kubeconfig",
            &kubeconfig,
        ],
    );
    czctl.wait_ready();
    let text = std::fs::read_to_string(&hosts).unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.split_whitespace().skip(1))
        .collect();
    for name in ["wpad", "isatap"] {
        assert!(!names.contains(&name), "bare {name} added:\n{text}");
        let qualified = format!("{name}.demo");
        assert!(
            names.contains(&qualified.as_str()),
            "{qualified} missing:\n{text}"
        );
    }
    // `localhost` keeps only the lines the file had; czctl's block adds `localhost.demo`.
    assert_eq!(
        names.iter().filter(|n| **n == "localhost").count(),
        2,
        "{text}"
    );
    assert!(names.contains(&"localhost.demo"), "{text}");
    // Ordinary Services keep their bare names.
    assert!(names.contains(&"echo"), "{text}");
    czctl.signal(libc::SIGINT);
    czctl.wait_exit(Duration::from_secs(30));
}
