//! `czctl namespace teleport` end to end: kubesim's demo namespace, the real binary in a
//! private mount namespace, the real glibc resolver (getent) and curl.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use kubesim::harness::Server;

const LONG: Duration = Duration::from_secs(30);

fn teleport(sim: &KubeSim, name: &str, namespaces: &[&str]) -> (Czctl, std::path::PathBuf) {
    let hosts = hosts_file(sim, name);
    let state = sim.dir.join(format!("state-{name}"));
    let kubeconfig = sim.kubeconfig.to_str().unwrap().to_string();
    let mut args = vec!["namespace", "teleport", "--foreground"];
    args.extend_from_slice(namespaces);
    args.extend_from_slice(&["--kubeconfig", &kubeconfig]);
    let czctl = czctl_in_namespace(&hosts, &state, &args);
    (czctl, hosts)
}

#[test]
fn names_resolve_and_requests_reach_both_replicas() {
    let sim = kubesim(&["demo"], &[]);
    let (mut czctl, hosts) = teleport(&sim, "basic", &["demo"]);
    let table = czctl.wait_ready();
    assert!(
        table.iter().any(|l| l.starts_with("demo/echo ")),
        "{table:#?}"
    );
    assert!(
        table
            .iter()
            .any(|l| l.contains("demo/search") && l.contains("ExternalName")),
        "{table:#?}"
    );
    assert!(
        table
            .iter()
            .any(|l| l.contains("8125/UDP") && l.contains("not forwarded")),
        "{table:#?}"
    );

    let addr = czctl.resolve("echo.demo").expect("echo.demo resolves");
    assert!(addr.starts_with("127.") && addr != "127.0.0.1", "{addr}");
    for name in ["echo", "echo.demo.svc", "echo.demo.svc.cluster.local"] {
        assert_eq!(
            czctl.resolve(name).as_deref(),
            Some(addr.as_str()),
            "{name}"
        );
    }
    assert!(
        czctl.resolve("cache-0.cache.demo").is_some(),
        "StatefulSet pod names resolve"
    );
    // Both replicas get traffic. On the real control plane the second pod's endpoint can turn
    // ready a moment after the teleport is (the EndpointSlice controller lags the pods'
    // readiness), so requests go on until both have answered, within a bound.
    let mut pods = HashSet::new();
    eventually("both echo replicas to answer", LONG, || {
        let (ok, body) = czctl.curl("http://echo.demo:8080/");
        assert!(ok, "{body}");
        pods.insert(pod_of(&body).expect("a pod name"));
        (pods.len() == 2).then_some(())
    });
    // The machine's view is untouched: the hosts file outside the namespace is our temp file.
    assert!(std::fs::read_to_string(&hosts)
        .unwrap()
        .contains("echo.demo.svc.cluster.local"));

    czctl.signal(libc::SIGTERM);
    assert!(czctl.wait_exit(LONG).success());
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
}

#[test]
fn a_deleted_pod_is_replaced_for_the_next_request() {
    let sim = kubesim(&["demo"], &[]);
    let (mut czctl, _hosts) = teleport(&sim, "redeploy", &["demo"]);
    czctl.wait_ready();
    let (ok, body) = czctl.curl("http://echo.demo:8080/");
    assert!(ok, "{body}");
    let first = pod_of(&body).unwrap();
    sim.kubectl_ok(&["delete", "pod", &first, "-n", "demo", "--wait=false"]);
    // Every request after the deletion succeeds, on another pod.
    for _ in 0..5 {
        let (ok, body) = czctl.curl("http://echo.demo:8080/");
        assert!(ok, "{body}");
        assert_ne!(pod_of(&body).unwrap(), first);
    }
}

#[test]
fn services_added_and_deleted_are_followed() {
    let sim = kubesim(&["demo"], &[]);
    let (mut czctl, _hosts) = teleport(&sim, "live", &["demo"]);
    czctl.wait_ready();
    let manifest = sim.dir.join("late.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Service\nmetadata: {name: late, namespace: demo}\nspec:\n  selector: {app: echo}\n  ports: [{name: web, port: 7070, targetPort: http}]\n",
    )
    .unwrap();
    sim.kubectl_ok(&["apply", "-f", manifest.to_str().unwrap()]);
    czctl.wait_stdout("added service demo/late", LONG);
    let addr = eventually("late.demo resolves", LONG, || czctl.resolve("late.demo"));
    let (ok, body) = czctl.curl("http://late.demo:7070/x");
    assert!(ok && pod_of(&body).is_some(), "{addr}: {body}");
    sim.kubectl_ok(&["delete", "svc", "late", "-n", "demo"]);
    czctl.wait_stdout("removed service demo/late", LONG);
    eventually("late.demo disappears", LONG, || {
        czctl.resolve("late.demo").is_none().then_some(())
    });
}

#[test]
fn foreign_lines_survive_and_sigterm_restores_the_file() {
    let sim = kubesim(&["demo"], &[]);
    let (mut czctl, hosts) = teleport(&sim, "foreign", &["demo"]);
    czctl.wait_ready();
    let foreign = "10.1.2.3\tadded-by-someone-else\n";
    let mut text = std::fs::read_to_string(&hosts).unwrap();
    text.push_str(foreign);
    std::fs::write(&hosts, &text).unwrap();
    // A change forces a rewrite of our block while the foreign line is there.
    sim.kubectl_ok(&["delete", "svc", "db", "-n", "demo"]);
    czctl.wait_stdout("removed service demo/db", LONG);
    assert!(std::fs::read_to_string(&hosts).unwrap().contains(foreign));
    czctl.signal(libc::SIGTERM);
    assert!(czctl.wait_exit(LONG).success());
    assert_eq!(
        std::fs::read_to_string(&hosts).unwrap(),
        format!("{ORIGINAL_HOSTS}{foreign}")
    );
}

#[test]
fn after_sigkill_the_next_run_restores_the_hosts_file() {
    let sim = kubesim(&["demo"], &[]);
    let (mut czctl, hosts) = teleport(&sim, "crash", &["demo"]);
    czctl.wait_ready();
    czctl.signal(libc::SIGKILL);
    czctl.wait_exit(LONG);
    assert_ne!(
        std::fs::read_to_string(&hosts).unwrap(),
        ORIGINAL_HOSTS,
        "the crash left a block"
    );
    let state = sim.dir.join("state-crash2");
    let kubeconfig = sim.kubeconfig.to_str().unwrap().to_string();
    let mut next = czctl_in_namespace(
        &hosts,
        &state,
        &[
            "namespace",
            "teleport",
            "--foreground",
            "demo",
            "--kubeconfig",
            &kubeconfig,
        ],
    );
    next.wait_stderr("removed a stale hosts block", LONG);
    next.wait_ready();
    next.signal(libc::SIGTERM);
    assert!(next.wait_exit(LONG).success());
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
}

#[test]
fn concurrent_teleports_of_two_namespaces_get_disjoint_addresses() {
    let sim = kubesim(&["demo", "other"], &[]);
    let (mut a, _ha) = teleport(&sim, "ns-a", &["demo"]);
    let (mut b, _hb) = teleport(&sim, "ns-b", &["other"]);
    a.wait_ready();
    b.wait_ready();
    let addr_a = a.resolve("echo.demo").unwrap();
    let addr_b = b.resolve("echo.other").unwrap();
    assert_ne!(addr_a, addr_b);
    let (ok, body) = b.curl("http://echo:8080/");
    assert!(ok && pod_of(&body).unwrap().starts_with("echo-"), "{body}");
    let ns: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        ns["namespace"], "other",
        "the bare name belongs to the first namespace given"
    );
}

#[test]
fn an_api_outage_keeps_listeners_and_forwarding_resumes() {
    let sim = kubesim(&["demo"], &[]);
    let (mut czctl, _hosts) = teleport(&sim, "outage", &["demo"]);
    czctl.wait_ready();
    sim.api_outage();
    // During the outage the listener is still bound (connect succeeds even if the forward fails).
    let addr = czctl.resolve("db.demo").unwrap();
    let out = czctl.exec(&[
        "bash",
        "-c",
        &format!("exec 3<>/dev/tcp/{addr}/5432 && echo bound"),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("bound"),
        "{out:?}"
    );
    if sim.server == Server::KubeSim {
        // kubesim refuses connections (the real control plane is frozen instead, where a
        // request waits): the outage breaks forwarding, and the error says why, not "no ready pod".
        let (ok, body) = czctl.curl("http://echo.demo:8080/");
        assert!(!ok, "a request went through during the outage: {body}");
        let status = status_json(&sim, "outage");
        assert!(
            status.contains("cannot reach the API server") && !status.contains("no ready pod"),
            "{status}"
        );
    }
    let (ok, body) = eventually("forwarding after the outage", LONG, || {
        let (ok, body) = czctl.curl("http://echo.demo:8080/");
        ok.then_some((ok, body))
    });
    assert!(ok && pod_of(&body).is_some());
    // The watches came back too: a Service created after the outage gets its name and answers.
    let manifest = sim.dir.join("after-outage.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Service\nmetadata: {name: after-outage, namespace: demo}\nspec:\n  selector: {app: echo}\n  ports: [{name: web, port: 7071, targetPort: http}]\n",
    )
    .unwrap();
    sim.kubectl_ok(&["apply", "-f", manifest.to_str().unwrap()]);
    eventually("after-outage.demo resolving", LONG, || {
        czctl.resolve("after-outage.demo")
    });
    // Its EndpointSlice may arrive a moment after the Service.
    eventually("after-outage.demo answering", LONG, || {
        let (ok, body) = czctl.curl("http://after-outage.demo:7071/");
        (ok && pod_of(&body).is_some()).then_some(())
    });
}

/// `czctl status -o json` of the session whose state directory is `state-NAME`.
fn status_json(sim: &KubeSim, name: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_czctl"))
        .args(["status", "-o", "json"])
        .env("CZCTL_STATE_DIR", sim.dir.join(format!("state-{name}")))
        .output()
        .expect("czctl status");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn a_missing_namespace_fails_cleanly() {
    let sim = kubesim(&["demo"], &[]);
    let (mut czctl, hosts) = teleport(&sim, "missing", &["nope"]);
    let status = czctl.wait_exit(LONG);
    assert_eq!(status.code(), Some(5), "not found");
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
    let err: Vec<String> = czctl.stderr.try_iter().collect();
    assert!(
        err.iter()
            .any(|l| l.contains("namespace \"nope\" not found")),
        "{err:#?}"
    );
}

#[test]
fn a_tenant_with_only_a_namespaced_role_teleports_its_namespace() {
    let tenant = kubesim_tenant(&["demo"], "demo");
    let sim = &tenant.sim;
    let hosts = hosts_file(sim, "tenant");
    let state = sim.dir.join("state-tenant");
    let kubeconfig = tenant.kubeconfig.to_str().unwrap().to_string();
    let mut czctl = czctl_in_namespace(
        &hosts,
        &state,
        &[
            "namespace",
            "teleport",
            "--foreground",
            "demo",
            "--kubeconfig",
            &kubeconfig,
        ],
    );
    czctl.wait_ready();
    let (ok, body) = czctl.curl("http://echo.demo:8080/tenant");
    assert!(ok && pod_of(&body).is_some(), "{body}");
    czctl.signal(libc::SIGTERM);
    assert!(czctl.wait_exit(LONG).success());
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
}

#[test]
fn a_tenant_is_refused_another_namespace_with_exit_4_naming_the_right() {
    let tenant = kubesim_tenant(&["demo", "other"], "demo");
    let sim = &tenant.sim;
    let hosts = hosts_file(sim, "tenant-other");
    let out = namespaced_czctl(&hosts, &[])
        .args(["namespace", "teleport", "other", "--kubeconfig"])
        .arg(&tenant.kubeconfig)
        .env("CZCTL_STATE_DIR", sim.dir.join("state-tenant-other"))
        .output()
        .expect("run czctl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("other"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
}
