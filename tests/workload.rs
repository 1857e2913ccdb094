//! `czctl deployment teleport` end to end: the exported file read back by its real readers,
//! and a command run with the environment while the namespace is teleported.

mod common;

use std::process::Command;

use common::*;

fn czctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_czctl"))
}

/// What the kubelet gives the demo echo container (fixtures/demo/echo.yaml), except POD_NAME,
/// which names whichever live pod was read.
const EXPECTED: &[(&str, &str)] = &[
    ("DATABASE_HOST", "db.demo"),
    ("DATABASE_PORT", "5432"),
    ("GREETING", "hello from the cluster"),
    ("LOG_LEVEL", "info"),
    ("DATABASE_PASSWORD", "s3cr3t-demo-password"),
    (
        "DATABASE_URL",
        "postgres://app:s3cr3t-demo-password@db.demo:5432/app",
    ),
];

fn check(values: &std::collections::BTreeMap<String, String>, reader: &str) {
    for (key, value) in EXPECTED {
        assert_eq!(
            values.get(*key).map(String::as_str),
            Some(*value),
            "{reader}: {key}"
        );
    }
    assert!(
        values["POD_NAME"].starts_with("echo-"),
        "{reader}: {:?}",
        values.get("POD_NAME")
    );
    // The rest are the kubelet's Service links of the demo namespace.
    for key in values.keys() {
        assert!(
            EXPECTED.iter().any(|(k, _)| k == key)
                || key == "POD_NAME"
                || key.contains("_SERVICE_")
                || key.contains("_PORT"),
            "{reader}: unexpected {key}"
        );
    }
    assert!(
        values.contains_key("ECHO_SERVICE_HOST") && values.contains_key("DB_PORT"),
        "{reader}: Service links {values:?}"
    );
}

/// `czctl deployment teleport echo -n demo --env-only -f FILE`, which must succeed.
fn export_echo(kubeconfig: &std::path::Path, file: &std::path::Path) -> std::process::Output {
    let out = czctl()
        .args([
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
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn env_only_writes_a_private_file_its_readers_agree_on() {
    use std::os::unix::fs::PermissionsExt;
    let sim = kubesim(&["demo"], &[]);
    let file = sim.dir.join("echo.env");
    let out = export_echo(&sim.kubeconfig, &file);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("s3cr3t"),
        "no secret in logs"
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // python-dotenv
    let py = Command::new("python3")
        .args(["-c", "import json,sys; from dotenv import dotenv_values; print(json.dumps(dotenv_values(sys.argv[1])))"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "python-dotenv: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    check(
        &serde_json::from_slice(&py.stdout).unwrap(),
        "python-dotenv",
    );

    // dotenvy
    let values = dotenvy::from_path_iter(&file)
        .unwrap()
        .map(|item| item.unwrap())
        .collect();
    check(&values, "dotenvy");

    // bash sourcing --format sh
    let sh = sim.dir.join("echo.sh");
    let out = czctl()
        .args([
            "deployment",
            "teleport",
            "echo",
            "-n",
            "demo",
            "--env-only",
            "--format",
            "sh",
            "-f",
        ])
        .arg(&sh)
        .arg("--kubeconfig")
        .arg(&sim.kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys: Vec<&str> = EXPECTED
        .iter()
        .map(|(k, _)| *k)
        .chain(["POD_NAME", "ECHO_SERVICE_HOST", "DB_PORT"])
        .collect();
    let script = format!(
        ". \"$1\"; for k in {}; do printf '%s=%s\\n' \"$k\" \"$(printenv \"$k\")\"; done",
        keys.join(" ")
    );
    let bash = Command::new("bash")
        .args(["-c", &script, "bash"])
        .arg(&sh)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let values = String::from_utf8_lossy(&bash.stdout)
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    check(&values, "bash");
}

#[test]
fn a_command_runs_with_the_environment_while_the_namespace_is_teleported() {
    let sim = kubesim(&["demo"], &[]);
    let hosts = hosts_file(&sim, "workload");
    let state = sim.dir.join("state-workload");
    let run = |script: &str| {
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "bash", "-c"])
            .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
            .arg(&hosts)
            .arg(env!("CARGO_BIN_EXE_czctl"))
            .args([
                "deployment",
                "teleport",
                "echo",
                "-n",
                "demo",
                "--kubeconfig",
            ])
            .arg(&sim.kubeconfig)
            .args(["--", "sh", "-c", script])
            .env("CZCTL_STATE_DIR", &state)
            // Names a descriptor of czctl's if anything: never passed on to the command.
            .env("CZCTL_HOSTS_HELPER", "9,1")
            .output()
            .unwrap()
    };
    let out = run(
        "curl -sf http://echo.demo:8080/ && test \"$GREETING\" = 'hello from the cluster' \
             && test -z \"${CZCTL_HOSTS_HELPER+set}\"",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        pod_of(stdout.trim()).is_some_and(|p| p.starts_with("echo-")),
        "stdout is the command's: {stdout}"
    );
    let out = run("exit 3");
    assert_eq!(
        out.status.code(),
        Some(3),
        "the command's exit code comes back"
    );
    assert_eq!(
        std::fs::read_to_string(&hosts).unwrap(),
        ORIGINAL_HOSTS,
        "teleport torn down"
    );
}

/// `czctl KIND teleport NAME -n envtest --env-only --format json`: the variables and stderr.
fn envtest_json(
    sim: &KubeSim,
    kind: &str,
    name: &str,
) -> (std::collections::BTreeMap<String, String>, String) {
    let out = czctl()
        .args([kind, "teleport", name, "-n", "envtest", "--env-only"])
        .args(["--format", "json", "--kubeconfig"])
        .arg(&sim.kubeconfig)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

#[test]
fn every_source_resolves_as_the_kubelet_does() {
    let sim = kubesim(&["envtest"], &[]);
    let (vars, stderr) = envtest_json(&sim, "deployment", "app");
    let get = |k: &str| vars.get(k).map(String::as_str);
    assert_eq!(
        get("MODE"),
        Some("overridden-by-env"),
        "env wins over envFrom"
    );
    assert_eq!(get("SHARED"), Some("from-configmap"));
    assert_eq!(get("SECRET_SHARED"), Some("from-secret"), "prefix");
    assert_eq!(get("SECRET_UNICODE"), Some("grüße 🚀"));
    assert_eq!(
        get("QUOTES"),
        Some("it's \"quoted\" $HOME ${X} $(Y) `tick` # hash \\ back = eq")
    );
    assert_eq!(get("MULTILINE"), Some("line one\n  line two\twith tab\n"));
    assert_eq!(
        get("GREETING"),
        Some("hello overridden-by-env $(MODE) $(UNDEFINED)"),
        "$(VAR) rules"
    );
    assert!(get("POD_NAME").is_some_and(|p| p.starts_with("app-")));
    assert_eq!(get("POD_NAMESPACE"), Some("envtest"));
    let pod_ip = sim.kubectl_ok(&[
        "get",
        "pod",
        get("POD_NAME").unwrap(),
        "-n",
        "envtest",
        "-o",
        "jsonpath={.status.podIP}",
    ]);
    assert_eq!(get("POD_IP"), Some(pod_ip.trim()), "the pod's own IP");
    assert_eq!(get("SERVICE_ACCOUNT"), Some("app-sa"));
    assert_eq!(get("TIER"), Some("backend"));
    assert_eq!(get("CPU_LIMIT"), Some("1"), "250m rounds up to 1 core");
    assert_eq!(get("CPU_REQUEST_MILLIS"), Some("100"));
    assert_eq!(get("MEMORY_LIMIT_MI"), Some("64"));
    assert_eq!(get("TOKEN_AGAIN"), Some("t0k3n"));
    assert_eq!(
        get("OPTIONAL_MISSING"),
        None,
        "optional and missing: skipped"
    );
    assert!(
        !vars.contains_key("1st-key"),
        "invalid envFrom keys are skipped"
    );
    assert!(stderr.contains("1st-key"), "…with a warning: {stderr}");
    assert!(
        !stderr.contains("t0k3n") && !stderr.contains("from-secret"),
        "no secret value on stderr"
    );

    // A non-optional missing key fails, naming the object and key.
    let out = czctl()
        .args([
            "deployment",
            "teleport",
            "broken",
            "-n",
            "envtest",
            "--env-only",
            "--kubeconfig",
        ])
        .arg(&sim.kubeconfig)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("missing-key") && stderr.contains("envtest/settings"),
        "{stderr}"
    );

    // The same resolution read from the Pod itself.
    let pod = get("POD_NAME").unwrap().to_string();
    let (from_pod, _) = envtest_json(&sim, "pod", &pod);
    assert_eq!(from_pod, vars);
}

#[test]
fn by_default_it_exports_then_leaves_the_namespace_teleported_in_the_background() {
    let sim = kubesim(&["demo"], &[]);
    let hosts = hosts_file(&sim, "wdetach");
    let state = sim.dir.join("state-wdetach");
    let file = sim.dir.join("detached.env");
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", "-c"])
        .arg(
            "mount --bind \"$0\" /etc/hosts && set -e; \
             id=$(\"$1\" deployment teleport echo -n demo -f \"$2\" --kubeconfig \"$3\"); \
             curl -sf http://echo.demo:8080/ >/dev/null; \"$1\" session close \"$id\"",
        )
        .arg(&hosts)
        .arg(env!("CARGO_BIN_EXE_czctl"))
        .arg(&file)
        .arg(&sim.kubeconfig)
        .env("CZCTL_STATE_DIR", &state)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("s3cr3t"),
        "no secret value in any output: {stderr}"
    );
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("GREETING="));
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), ORIGINAL_HOSTS);
}

#[test]
fn a_tenant_with_only_a_namespaced_role_exports_the_environment() {
    let tenant = kubesim_tenant(&["demo"], "demo");
    let file = tenant.sim.dir.join("tenant.env");
    export_echo(&tenant.kubeconfig, &file);
    let values: std::collections::BTreeMap<String, String> = dotenvy::from_path_iter(&file)
        .unwrap()
        .map(|kv| kv.unwrap())
        .collect();
    check(&values, "dotenvy");
}
