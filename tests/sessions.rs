//! Sessions for scripts: background starts, reuse, CI jobs, `status`, `session list|close`,
//! end to end.

mod common;

use std::process::{Command, Output, Stdio};

use common::*;

/// Runs `script` under bash as a CI job would (no terminal: its own session, stdin closed)
/// inside a fresh mount namespace whose /etc/hosts is `hosts`, with czctl on PATH.
fn in_namespace(
    hosts: &std::path::Path,
    state: &std::path::Path,
    script: &str,
    args: &[&str],
) -> Output {
    in_namespace_with(hosts, state, script, args, &[])
}

fn in_namespace_with(
    hosts: &std::path::Path,
    state: &std::path::Path,
    script: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Output {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_czctl"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Scratch files the scripts write go next to the state directory, never into the repo.
    let work = state.with_extension("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut cmd = Command::new("setsid");
    cmd.current_dir(&work);
    cmd.args([
        "--wait",
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "bash",
        "-c",
    ])
    .arg(format!("mount --bind \"$0\" /etc/hosts && {script}"))
    .arg(hosts)
    .args(args)
    .env("CZCTL_STATE_DIR", state)
    .env("PATH", path)
    .stdin(Stdio::null());
    for var in CI_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(envs.iter().copied());
    cmd.output().expect("setsid unshare")
}

/// Variables that name a CI job: removed so the tests decide which job they are in.
const CI_VARS: &[&str] = &[
    "CZCTL_SESSION_GROUP",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "BUILDKITE_JOB_ID",
    "CIRCLECI",
    "TF_BUILD",
    "JENKINS_URL",
];

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Session records, sockets and logs left in a state directory.
fn leftovers(state: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(state.join("sessions"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json") || n.ends_with(".sock") || n.ends_with(".log"))
                .collect()
        })
        .unwrap_or_default()
}

/// The pids of the sessions in `session list -o json` output.
fn pids(list: &str) -> Vec<u32> {
    let v: serde_json::Value = serde_json::from_str(list).expect("session list JSON");
    v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pid"].as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn the_four_line_ci_script_works_verbatim() {
    let sim = kubesim(&["demo"], &[]);
    let hosts = hosts_file(&sim, "ci");
    let state = sim.dir.join("state-ci");
    let work = sim.dir.join("ci-job");
    std::fs::create_dir_all(&work).unwrap();
    let script = root().join("tests/ci-script.sh");
    let out = in_namespace_with(
        &hosts,
        &state,
        "cd \"$1\" && exec bash \"$2\"",
        &[work.to_str().unwrap(), script.to_str().unwrap()],
        &[("KUBECONFIG", sim.kubeconfig.to_str().unwrap())],
    );
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    assert!(output.contains("tests passed"), "{output}");
    let listed = std::fs::read_to_string(work.join("sessions.json")).unwrap();
    let running = pids(&listed);
    assert_eq!(
        running.len(),
        1,
        "the deployment teleport reused the namespace teleport: {listed}"
    );
    assert!(
        output.contains("already teleported by session"),
        "the reuse is said: {output}"
    );
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
    assert!(leftovers(&state).is_empty(), "{:?}", leftovers(&state));
    for pid in running {
        // Gone, or a zombie its new parent has not reaped yet.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        assert!(
            stat.is_empty() || state.is_some_and(|s| s.starts_with('Z')),
            "session process {pid} is gone: {stat}"
        );
    }
    let backups: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".backup"))
        .collect();
    assert!(
        backups.is_empty(),
        "a cleanly closed session leaves no backup: {backups:?}"
    );
}

#[test]
fn close_all_in_one_ci_job_leaves_another_jobs_session_running() {
    let sim = kubesim(&["demo"], &[]);
    let hosts = hosts_file(&sim, "jobs");
    let state = sim.dir.join("state-jobs");
    // Two jobs of one runner user share the state directory and /etc/hosts; both teleport
    // demo at the same time, then job 1 closes --all while job 2 is still testing.
    let out = in_namespace_with(
        &hosts,
        &state,
        "set -eu; job() { env GITLAB_CI=true CI_JOB_ID=$1 \"${@:2}\"; }; \
         job 1 czctl namespace teleport demo >id1 & job 2 czctl namespace teleport demo >id2 & wait; \
         test \"$(cat id1)\" != \"$(cat id2)\"; \
         job 1 czctl session close --all; \
         curl -sf http://echo.demo:8080/job2 | grep -q '\"path\":\"/job2\"'; \
         job 2 czctl session list; \
         job 2 czctl session close --all; \
         czctl session list -o json",
        &[],
        &[("KUBECONFIG", sim.kubeconfig.to_str().unwrap())],
    );
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    assert!(
        output.contains("left alone 1 live session(s) of other jobs")
            && output.contains("gitlab:2"),
        "job 1's close says what it left alone: {output}"
    );
    assert!(output.contains("{\"sessions\":[]}"), "{output}");
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
}

#[test]
fn concurrent_starts_in_one_job_share_one_session() {
    let sim = kubesim(&["demo"], &[]);
    let hosts = hosts_file(&sim, "race");
    let state = sim.dir.join("state-race");
    let out = in_namespace_with(
        &hosts,
        &state,
        "set -eu; for i in 1 2 3; do czctl namespace teleport demo >id$i & done; wait; \
         cat id1 id2 id3; czctl session list -o json >list.json; czctl session close --all",
        &[],
        &[
            ("KUBECONFIG", sim.kubeconfig.to_str().unwrap()),
            ("CZCTL_SESSION_GROUP", "race"),
        ],
    );
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    let ids: std::collections::BTreeSet<&str> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("tp-"))
        .map(|l| l.to_string().leak() as &str)
        .collect();
    assert_eq!(ids.len(), 1, "one session for three starts: {output}");
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
}

#[test]
fn unknown_and_already_closed_sessions_differ() {
    let sim = kubesim(&["demo"], &[]);
    let hosts = hosts_file(&sim, "ids");
    let state = sim.dir.join("state-ids");
    let out = in_namespace_with(
        &hosts,
        &state,
        "id=$(czctl namespace teleport demo) || exit 90; czctl session close \"$id\" || exit 91; \
         czctl session close \"$id\" || exit 92; czctl session close tp-nosuch; echo \"code=$?\"",
        &[],
        &[("KUBECONFIG", sim.kubeconfig.to_str().unwrap())],
    );
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    assert!(output.contains("is already closed"), "{output}");
    assert!(output.contains("no session \"tp-nosuch\""), "{output}");
    assert!(output.contains("code=5"), "an unknown id exits 5: {output}");
}

#[test]
fn selectors_matching_nothing_and_services_without_ready_pods_are_reported() {
    let sim = kubesim(&["demo"], &[]);
    let hosts = hosts_file(&sim, "truth");
    let state = sim.dir.join("state-truth");
    sim.kubectl_ok(&["scale", "deployment", "echo", "-n", "demo", "--replicas=0"]);
    let out = in_namespace_with(
        &hosts,
        &state,
        "set -eu; czctl namespace teleport demo -l app=nomatch; czctl status -o json >nomatch.json; \
         czctl session close --all; \
         czctl namespace teleport demo; czctl status -o yaml; czctl session close --all",
        &[],
        &[("KUBECONFIG", sim.kubeconfig.to_str().unwrap())],
    );
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    assert!(
        output.contains("demo/*")
            && output.contains("no Service matches the selector \"app=nomatch\""),
        "{output}"
    );
    let echo_note = output
        .lines()
        .find(|l| l.starts_with("demo/echo") && l.contains("pod"))
        .unwrap_or_else(|| panic!("a note under demo/echo: {output}"));
    assert!(
        echo_note.contains("no pod behind it yet") || echo_note.contains("is ready"),
        "{echo_note}"
    );
    assert!(
        output.contains("service: demo/echo"),
        "status -o yaml notes it: {output}"
    );
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
        "set -e; id=$(\"$1\" namespace teleport demo --kubeconfig \"$2\"); \
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
fn a_failing_teleport_exits_with_its_code_and_leaves_nothing() {
    let sim = kubesim(&["demo"], &[]);
    let hosts = hosts_file(&sim, "fail");
    let state = sim.dir.join("state-fail");
    let out = in_namespace(
        &hosts,
        &state,
        "\"$1\" namespace teleport nope --kubeconfig \"$2\"",
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
    assert!(
        leftovers(&state).is_empty(),
        "no record, socket or log left: {:?}",
        leftovers(&state)
    );
}

#[test]
fn close_all_goes_on_past_a_dead_intercept_which_forget_then_discards() {
    let sim = kubesim(&["demo"], &["--run-image", &agent_run_image()]);
    let hosts = hosts_file(&sim, "dead-ic");
    let state = sim.dir.join("state-dead-ic");
    let own = sim.dir.join("kubeconfig-intercept");
    std::fs::copy(&sim.kubeconfig, &own).unwrap();
    // An intercept whose process is killed and whose kubeconfig is then deleted: its route
    // can no longer be removed from here. A live teleport beside it must still be closed.
    let out = in_namespace_with(
        &hosts,
        &state,
        "set -u; ic=$(czctl service intercept echo -n demo -x x-dev:a -p 1 --kubeconfig \"$1\") || exit 90; \
         pid=$(czctl session list -o json | python3 -c 'import json,sys; print([s[\"pid\"] for s in json.load(sys.stdin)[\"sessions\"] if s[\"kind\"] == \"intercept\"][0])'); \
         kill -KILL $pid; while kill -0 $pid 2>/dev/null; do sleep 0.05; done; rm \"$1\"; \
         czctl namespace teleport demo >/dev/null || exit 91; \
         czctl session close --all; echo \"close=$?\"; \
         czctl session list -o json; \
         czctl session close \"$ic\" --forget; echo \"forget=$?\"; \
         czctl session list -o json",
        &[own.to_str().unwrap()],
        &[("KUBECONFIG", sim.kubeconfig.to_str().unwrap())],
    );
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    let close_code = output
        .lines()
        .find_map(|l| l.strip_prefix("close="))
        .unwrap_or_else(|| panic!("{output}"));
    assert_ne!(close_code, "0", "a session could not be closed: {output}");
    assert!(
        output.contains("closed") && output.contains("--forget"),
        "the teleport was closed and the fix for the intercept named: {output}"
    );
    let lists: Vec<&str> = output
        .lines()
        .filter(|l| l.starts_with("{\"sessions\""))
        .collect();
    assert_eq!(lists.len(), 2, "{output}");
    assert!(
        lists[0].contains("\"kind\":\"intercept\"") && !lists[0].contains("\"kind\":\"teleport\""),
        "only the dead intercept is left after close --all: {}",
        lists[0]
    );
    assert!(output.contains("forget=0"), "{output}");
    assert!(
        output.contains("kubectl -n demo delete") && output.contains("czctl.dev/tunnel="),
        "forget says what stays in the cluster and how to remove it: {output}"
    );
    assert_eq!(lists[1], "{\"sessions\":[]}", "{output}");
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
}
