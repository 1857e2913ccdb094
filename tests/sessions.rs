//! Sessions for scripts: `--detach`, `status`, `session list|close`, end to end.

mod common;

use std::process::{Command, Output};

use common::*;

/// Runs `script` under bash inside a fresh mount namespace whose /etc/hosts is `hosts`.
fn in_namespace(
    hosts: &std::path::Path,
    state: &std::path::Path,
    script: &str,
    args: &[&str],
) -> Output {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", "-c"])
        .arg(format!("mount --bind \"$0\" /etc/hosts && {script}"))
        .arg(hosts)
        .args(args)
        .env("CZCTL_STATE_DIR", state)
        .output()
        .expect("unshare")
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_ci_script_teleports_checks_and_cleans_up() {
    let sim = kubesim(&["demo"], &[]);
    let hosts = hosts_file(&sim, "ci");
    let state = sim.dir.join("state-ci");
    let script = root().join("tests/ci-script.sh");
    let out = in_namespace(
        &hosts,
        &state,
        "exec bash \"$1\" \"$2\" \"$3\"",
        &[
            script.to_str().unwrap(),
            env!("CARGO_BIN_EXE_czctl"),
            sim.kubeconfig.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("hosts file restored"));
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
}

#[test]
fn close_all_cleans_up_after_a_killed_detached_session() {
    let sim = kubesim(&["demo"], &[]);
    let hosts = hosts_file(&sim, "killed");
    let state = sim.dir.join("state-killed");
    let czctl = env!("CARGO_BIN_EXE_czctl");
    let kubeconfig = sim.kubeconfig.to_str().unwrap();
    let out = in_namespace(
        &hosts,
        &state,
        "set -e; id=$(\"$1\" namespace teleport demo --kubeconfig \"$2\" --detach); \
         pid=$(\"$1\" session list -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"sessions\"][0][\"pid\"])'); \
         kill -KILL $pid; while kill -0 $pid 2>/dev/null; do sleep 0.05; done; \
         \"$1\" session list; \"$1\" session close --all; \"$1\" session list -o json",
        &[czctl, kubeconfig],
    );
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    assert!(
        output.contains("stale"),
        "the killed session is listed as stale: {output}"
    );
    assert!(output.contains("was stale"), "{output}");
    assert!(output.contains("{\"sessions\":[]}"), "{output}");
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
}

#[test]
fn a_failing_detached_teleport_exits_with_its_code_and_leaves_nothing() {
    let sim = kubesim(&["demo"], &[]);
    let hosts = hosts_file(&sim, "fail");
    let state = sim.dir.join("state-fail");
    let out = in_namespace(
        &hosts,
        &state,
        "\"$1\" namespace teleport nope --kubeconfig \"$2\" --detach",
        &[
            env!("CARGO_BIN_EXE_czctl"),
            sim.kubeconfig.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        text(&out).contains("namespace \"nope\" not found"),
        "{}",
        text(&out)
    );
    assert!(out.stdout.is_empty(), "no session id on failure");
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
    let records = std::fs::read_dir(state.join("sessions"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(records, 0, "no record, socket or log left");
}
