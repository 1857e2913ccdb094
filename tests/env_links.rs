//! Service links in `czctl KIND teleport NAME --env-only -f FILE`: the exported
//! `*_SERVICE_*` / `*_PORT*` variables (and the declared variables that refer to them) are
//! compared with the environment the container really got, read from its process's
//! `/proc/PID/environ` (kubesim runs `--run-image` containers as real processes).
//!
//! kubesim only (`--run-image`): on the real control plane kwok runs no processes.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

/// The image whose containers kubesim runs as `sleep`.
const SLEEP_IMAGE: &str = "example.com/czctl-test/sleep";

/// What the test adds to the demo fixtures: `default/kubernetes` (every real cluster has it,
/// kubesim does not create it), a Service with dashes in its own and its ports' names and a
/// UDP port, and two sleeping workloads, with and without service links, whose variables
/// refer to Service variables.
const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: default}
spec:
  ports:
    - {name: https, port: 443, targetPort: 6443}
---
apiVersion: v1
kind: Service
metadata: {name: my-svc, namespace: demo}
spec:
  selector: {app: nothing}
  ports:
    - {name: web-ui, port: 8081, targetPort: 8081}
    - {name: dns-udp, port: 5353, targetPort: 5353, protocol: UDP}
"#;

fn workload(name: &str, links: bool) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: demo}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      enableServiceLinks: {links}
      terminationGracePeriodSeconds: 0
      containers:
        - name: main
          image: {SLEEP_IMAGE}:1
          args: ["infinity"]
          env:
            - {{name: DB_URL, value: "postgres://$(DB_SERVICE_HOST):$(DB_SERVICE_PORT)/app"}}
            - {{name: ECHO_SERVICE_PORT, value: "declared-wins"}}
            - {{name: METRICS, value: "$(API_PORT_9090_TCP)/metrics"}}
            - {{name: ESCAPED, value: "$$(DB_SERVICE_HOST)"}}
            - {{name: LATER, value: "$(MY_SVC_SERVICE_PORT_WEB_UI)"}}
"#
    )
}

fn sleep_program() -> &'static str {
    ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("a sleep program")
}

/// kubesim with the demo fixtures, the Services above, and the two workloads running.
fn start() -> KubeSim {
    let image = format!("{SLEEP_IMAGE}={}", sleep_program());
    let sim = kubesim(&["demo"], &["--run-image", &image]);
    // The Services first: the kubelet reads them when a container starts.
    apply(&sim, "services.yaml", SERVICES);
    let workloads = workload("linked", true) + "---" + &workload("unlinked", false);
    apply(&sim, "workloads.yaml", &workloads);
    sim
}

fn apply(sim: &KubeSim, file: &str, text: &str) {
    let path = sim.dir.join(file);
    std::fs::write(&path, text).unwrap();
    sim.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
}

fn czctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_czctl"))
}

/// `czctl deployment teleport NAME -n demo --env-only -f FILE`.
fn export(sim: &KubeSim, name: &str, file: &Path) -> Output {
    czctl()
        .args([
            "deployment",
            "teleport",
            name,
            "-n",
            "demo",
            "--env-only",
            "-f",
        ])
        .arg(file)
        .arg("--kubeconfig")
        .arg(&sim.kubeconfig)
        .output()
        .unwrap()
}

/// The exported file, read as the other tests read it (dotenvy).
fn exported(sim: &KubeSim, name: &str) -> BTreeMap<String, String> {
    let file = sim.dir.join(format!("{name}.env"));
    let out = export(sim, name, &file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dotenvy::from_path_iter(&file)
        .unwrap()
        .map(|kv| kv.unwrap())
        .collect()
}

/// The environment of workload `app`'s running container process, without what the container
/// runtime sets itself (`PATH`, `HOSTNAME`, `HOME`).
fn container_env(sim: &KubeSim, app: &str) -> BTreeMap<String, String> {
    let (pod, pid) = eventually(
        &format!("a running container of {app}"),
        Duration::from_secs(60),
        || {
            let (ok, out, _) = sim.kubectl_run(&[
                "get",
                "pods",
                "-n",
                "demo",
                "-l",
                &format!("app={app}"),
                "-o",
                "jsonpath={.items[0].metadata.name} {.items[0].status.containerStatuses[0].containerID} {.items[0].status.containerStatuses[0].state.running.startedAt}",
            ]);
            let fields: Vec<&str> = out.split_whitespace().collect();
            match (ok, fields.as_slice()) {
                (true, [pod, id, _started]) => {
                    let pid: u32 = id.strip_prefix("kubesim://")?.parse().ok()?;
                    Some((pod.to_string(), pid))
                }
                _ => None,
            }
        },
    );
    // As root the containerID is the reaper of the container's PID namespace and the program
    // its child; otherwise the program itself. The program's environment has HOSTNAME=pod.
    let hostname = format!("HOSTNAME={pod}");
    let env = eventually("the program's environment", Duration::from_secs(10), || {
        std::iter::once(pid)
            .chain(children(pid))
            .filter_map(|p| std::fs::read(format!("/proc/{p}/environ")).ok())
            .map(|bytes| parse_environ(&bytes))
            .find(|env| env.contains(&hostname))
    });
    env.into_iter()
        .filter_map(|entry| {
            let (k, v) = entry.split_once('=')?;
            (!["PATH", "HOSTNAME", "HOME"].contains(&k)).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .map(|t| t.path().join("children"))
        .filter_map(|p: PathBuf| std::fs::read_to_string(p).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn parse_environ(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect()
}

fn cluster_ip(sim: &KubeSim, ns: &str, name: &str) -> String {
    let ip = sim.kubectl_ok(&[
        "get",
        "service",
        name,
        "-n",
        ns,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let ip = ip.trim().to_string();
    assert!(!ip.is_empty() && ip != "None", "{ns}/{name}: {ip:?}");
    ip
}

/// A variable the kubelet derives from a Service.
fn is_link(name: &str) -> bool {
    name.contains("_SERVICE_") || name.contains("_PORT")
}

fn links_of(env: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    env.iter()
        .filter(|(k, _)| is_link(k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[test]
fn exported_service_links_are_what_the_container_got() {
    let sim = start();
    let vars = exported(&sim, "linked");
    let container = container_env(&sim, "linked");

    // Every variable, links and declared ones alike, is exactly what the container got.
    assert_eq!(
        links_of(&vars),
        links_of(&container),
        "link variables: exported (left) vs container (right)"
    );
    assert_eq!(vars, container, "all variables");

    // And what the kubelet's rules say, from the Services themselves.
    let get = |k: &str| vars.get(k).map(String::as_str);
    let db = cluster_ip(&sim, "demo", "db");
    let api = cluster_ip(&sim, "demo", "api");
    let my_svc = cluster_ip(&sim, "demo", "my-svc");
    let statsd = cluster_ip(&sim, "demo", "statsd");
    let kubernetes = cluster_ip(&sim, "default", "kubernetes");
    assert_eq!(get("DB_SERVICE_HOST"), Some(db.as_str()));
    assert_eq!(get("DB_SERVICE_PORT"), Some("5432"));
    assert_eq!(get("DB_PORT"), Some(format!("tcp://{db}:5432").as_str()));
    assert_eq!(get("DB_PORT_5432_TCP_ADDR"), Some(db.as_str()));
    assert_eq!(get("DB_PORT_5432_TCP_PROTO"), Some("tcp"));
    assert_eq!(get("DB_PORT_5432_TCP_PORT"), Some("5432"));
    assert_eq!(get("API_SERVICE_PORT"), Some("80"), "the first port");
    assert_eq!(get("API_SERVICE_PORT_HTTP"), Some("80"));
    assert_eq!(get("API_SERVICE_PORT_METRICS"), Some("9090"));
    assert_eq!(
        get("API_PORT_9090_TCP"),
        Some(format!("tcp://{api}:9090").as_str())
    );
    assert_eq!(get("MY_SVC_SERVICE_HOST"), Some(my_svc.as_str()));
    assert_eq!(get("MY_SVC_SERVICE_PORT_WEB_UI"), Some("8081"));
    assert_eq!(get("MY_SVC_SERVICE_PORT_DNS_UDP"), Some("5353"));
    assert_eq!(
        get("MY_SVC_PORT_5353_UDP"),
        Some(format!("udp://{my_svc}:5353").as_str())
    );
    assert_eq!(get("MY_SVC_PORT_5353_UDP_PROTO"), Some("udp"));
    assert_eq!(
        get("STATSD_PORT"),
        Some(format!("udp://{statsd}:8125").as_str()),
        "a UDP first port"
    );
    assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some(kubernetes.as_str()));
    assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
    for prefix in ["CACHE_", "SEARCH_"] {
        assert!(
            !vars.keys().any(|k| k.starts_with(prefix)),
            "headless and ExternalName Services give nothing: {vars:?}"
        );
    }
    // Declared variables: they win over links, and expand them.
    assert_eq!(get("ECHO_SERVICE_PORT"), Some("declared-wins"));
    assert_eq!(
        get("DB_URL"),
        Some(format!("postgres://{db}:5432/app").as_str())
    );
    assert_eq!(
        get("METRICS"),
        Some(format!("tcp://{api}:9090/metrics").as_str())
    );
    assert_eq!(get("ESCAPED"), Some("$(DB_SERVICE_HOST)"));
    assert_eq!(get("LATER"), Some("8081"));
}

#[test]
fn without_service_links_only_default_kubernetes_is_linked() {
    let sim = start();
    let vars = exported(&sim, "unlinked");
    let container = container_env(&sim, "unlinked");
    let kubernetes = cluster_ip(&sim, "default", "kubernetes");

    // The kubelet gives `default/kubernetes`'s variables even with enableServiceLinks: false
    // (kubelet_pods.go getServiceEnvVarMap), and nothing else of the namespace's.
    assert_eq!(vars, container);
    let links: Vec<&str> = links_of(&vars).into_keys().collect();
    assert_eq!(
        links,
        [
            "ECHO_SERVICE_PORT",
            "KUBERNETES_PORT",
            "KUBERNETES_PORT_443_TCP",
            "KUBERNETES_PORT_443_TCP_ADDR",
            "KUBERNETES_PORT_443_TCP_PORT",
            "KUBERNETES_PORT_443_TCP_PROTO",
            "KUBERNETES_SERVICE_HOST",
            "KUBERNETES_SERVICE_PORT",
            "KUBERNETES_SERVICE_PORT_HTTPS",
        ],
        "the declared ECHO_SERVICE_PORT and default/kubernetes's only"
    );
    assert_eq!(
        vars.get("KUBERNETES_PORT_443_TCP").map(String::as_str),
        Some(format!("tcp://{kubernetes}:443").as_str())
    );
    assert_eq!(
        vars.get("DB_URL").map(String::as_str),
        Some("postgres://$(DB_SERVICE_HOST):$(DB_SERVICE_PORT)/app"),
        "no link to expand: the reference stays as written"
    );
}

#[test]
fn warnings_are_printed_only_after_the_file_is_written() {
    let sim = kubesim(&["demo"], &[]);
    // echo's POD_NAME comes from a running pod: a warning says so.
    let file = sim.dir.join("echo.env");
    let out = export(&sim, "echo", &file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warning = stderr
        .find("warning: POD_NAME")
        .expect("the POD_NAME warning");
    let wrote = stderr.find("czctl: wrote ").expect("the wrote line");
    assert!(warning < wrote, "warnings, then what was written: {stderr}");

    let unwritable = sim.dir.join("no-such-dir").join("echo.env");
    let out = export(&sim, "echo", &unwritable);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot write"), "{stderr}");
    assert!(
        !stderr.contains("warning"),
        "no warning when nothing was written: {stderr}"
    );
}
