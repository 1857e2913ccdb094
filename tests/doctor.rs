//! End-to-end tests of `czctl doctor` against kubesim. Every run gets a private hosts file and
//! address registry; the machine's own are never read or touched.

mod common;

use std::path::Path;
use std::process::Output;

use common::{hosts_file, kubesim, kubesim_restricted, Deny, ORIGINAL_HOSTS};

/// Runs `czctl doctor ARGS` with a private registry in `dir`.
fn doctor(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_czctl"))
        .arg("doctor")
        .args(args)
        .env("CZCTL_REGISTRY_DIR", dir.join("registry"))
        .env("CZCTL_STATE_DIR", dir.join("state"))
        .env_remove("KUBECONFIG")
        .output()
        .expect("run czctl doctor")
}

/// `czctl doctor -n demo` against the demo run as a user lacking the `deny` rights.
fn doctor_with_rbac(name: &str, deny: &[Deny]) -> Output {
    let restricted = kubesim_restricted(&["demo"], deny);
    let sim = &restricted.sim;
    let hosts = hosts_file(sim, name);
    let kubeconfig = restricted.kubeconfig.to_string_lossy().into_owned();
    let hosts_arg = hosts.to_string_lossy().into_owned();
    let args = [
        "--kubeconfig",
        &kubeconfig,
        "--namespace",
        "demo",
        "--hosts-file",
        &hosts_arg,
    ];
    doctor(&sim.dir, &args)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn all_checks_pass_with_default_rights() {
    let sim = kubesim(&["demo"], &[]);
    let hosts = hosts_file(&sim, "doctor-ok");
    let kubeconfig = sim.kubeconfig.to_string_lossy().into_owned();
    let hosts_arg = hosts.to_string_lossy().into_owned();
    let args = [
        "--kubeconfig",
        &kubeconfig,
        "-n",
        "demo",
        "--hosts-file",
        &hosts_arg,
        "-o",
        "json",
    ];
    let out = doctor(&sim.dir, &args);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(report["ok"], true, "{stdout}");
    let checks = report["checks"].as_array().expect("checks array");
    for check in checks {
        let status = check["status"].as_str().unwrap_or("");
        assert!(status == "pass" || status == "warn", "{check}");
    }
    let by_name = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name:?} in {stdout}"))
    };
    assert_eq!(by_name("kubeconfig")["status"], "pass");
    let api = by_name("api server");
    assert_eq!(api["status"], "pass");
    assert!(
        api["detail"].as_str().unwrap_or("").contains(&sim.api),
        "{api}"
    );
    let portforward = by_name("rights: create pods/portforward");
    assert_eq!(portforward["status"], "pass");
    assert_eq!(portforward["detail"], "allowed in namespace demo");
    assert_eq!(by_name("rights: watch endpointslices")["status"], "pass");
    assert_eq!(by_name("hosts file")["status"], "pass");
    assert_eq!(by_name("loopback addresses")["status"], "pass");
    // The doctor only looks.
    assert_eq!(
        std::fs::read_to_string(&hosts).expect("hosts"),
        ORIGINAL_HOSTS
    );
}

#[test]
fn a_missing_right_fails_with_exit_4_and_the_fix() {
    let out = doctor_with_rbac(
        "rbac",
        &[Deny {
            verb: "create",
            resource: "pods/portforward",
            namespace: Some("demo"),
        }],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(4),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("rights: create pods/portforward"))
        .unwrap_or_else(|| panic!("no pods/portforward line in {stdout}"));
    assert!(line.contains("fail") && line.contains("demo"), "{line}");
    assert!(
        stdout.contains(
            "fix: ask your cluster admin for: kubectl create role czctl-pods-portforward \
             --verb=create --resource=pods/portforward -n demo"
        ),
        "{stdout}"
    );
    // The other rights are not denied.
    let listed = stdout
        .lines()
        .find(|l| l.starts_with("rights: list services"))
        .unwrap_or("");
    assert!(listed.contains("pass"), "{stdout}");
    assert!(
        stderr.contains("rights: create pods/portforward"),
        "{stderr}"
    );
}

#[test]
fn a_missing_intercept_right_is_a_warning_with_the_fix() {
    let out = doctor_with_rbac(
        "ic",
        &[Deny {
            verb: "patch",
            resource: "services",
            namespace: Some("demo"),
        }],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let line = stdout
        .lines()
        .find(|l| l.starts_with("rights: patch services"))
        .unwrap_or_else(|| panic!("no patch services line in {stdout}"));
    assert!(
        line.contains("warn") && line.contains("service intercept"),
        "{line}"
    );
    assert!(
        stdout.contains("--verb=patch --resource=services -n demo"),
        "{stdout}"
    );
}

#[test]
fn a_missing_kubeconfig_fails_with_exit_3_and_names_it() {
    let dir = std::env::temp_dir().join(format!("czctl-doctor-nokc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let hosts = dir.join("hosts");
    // A block left by a process that is gone: reported, not removed.
    let stale = format!(
        "{ORIGINAL_HOSTS}# czctl begin session=tp-gone22 pid={} -- added by czctl\n\
         127.1.2.3\techo.demo\n# czctl end session=tp-gone22\n",
        0x7fff_fff0_u32
    );
    std::fs::write(&hosts, &stale).expect("write hosts");
    let missing = dir.join("no-such-dir").join("kubeconfig");
    let out = doctor(
        &dir,
        &[
            "--kubeconfig",
            &missing.to_string_lossy(),
            "--hosts-file",
            &hosts.to_string_lossy(),
        ],
    );
    let hosts_after = std::fs::read_to_string(&hosts).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(3),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let path = missing.display().to_string();
    assert!(stderr.contains(&path), "{stderr}");
    let kubeconfig_line = stdout
        .lines()
        .find(|l| l.starts_with("kubeconfig"))
        .unwrap_or("");
    assert!(
        kubeconfig_line.contains("fail") && kubeconfig_line.contains(&path),
        "{stdout}"
    );
    assert!(stdout.contains("skipped: no client"), "{stdout}");
    let stale_line = stdout
        .lines()
        .find(|l| l.starts_with("stale hosts blocks"))
        .unwrap_or("");
    assert!(
        stale_line.contains("warn") && stale_line.contains("tp-gone22"),
        "{stdout}"
    );
    assert!(stdout.contains("czctl session close --all"), "{stdout}");
    assert_eq!(hosts_after, stale);
}

/// `--as` (kubectl's impersonation) is what the API server judges: as the demo namespace's
/// `default` ServiceAccount, which no role names, every right czctl needs is denied, and the
/// server's own message names the impersonated user. `--as-group` alone is a usage error, as in
/// kubectl; the kubeconfig's own `as:` works the same way.
#[test]
fn as_impersonates_and_the_rights_checked_are_the_impersonated_users() {
    let sim = kubesim(&["demo"], &[]);
    let hosts = hosts_file(&sim, "impersonate");
    let kubeconfig = sim.kubeconfig.to_string_lossy().into_owned();
    let hosts_arg = hosts.to_string_lossy().into_owned();
    let base = [
        "--kubeconfig",
        &kubeconfig,
        "--namespace",
        "demo",
        "--hosts-file",
        &hosts_arg,
    ];
    let sa = "system:serviceaccount:demo:default";
    let run = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        doctor(&sim.dir, &args)
    };
    let admin = run(&[]);
    let text = String::from_utf8_lossy(&admin.stdout).into_owned();
    assert!(admin.status.success(), "{text}");

    let out = run(&["--as", sa]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("rights: list services"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("fail") && line.contains("denied in namespace demo"),
        "{text}"
    );

    let out = run(&["--as-group", "system:masters"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--as <USER>"));

    // The kubeconfig's `as:` (kube-rs sends it as kubectl does).
    let text = std::fs::read_to_string(&sim.kubeconfig).expect("kubeconfig");
    let marker = "users:\n- name: ";
    let at = text.find(marker).expect("a users list") + marker.len();
    let end = at + text[at..].find('\n').expect("user name line");
    let user_line_end = text[end + 1..]
        .find("user:\n")
        .map(|i| end + 1 + i + "user:\n".len())
        .expect("the user's entry");
    let indent = text[user_line_end..]
        .chars()
        .take_while(|c| *c == ' ')
        .count();
    let with_as = format!(
        "{}{}as: {sa}\n{}",
        &text[..user_line_end],
        " ".repeat(indent),
        &text[user_line_end..]
    );
    let file = sim.dir.join("kubeconfig-as");
    std::fs::write(&file, with_as).expect("write");
    let file_arg = file.to_string_lossy().into_owned();
    let out = doctor(
        &sim.dir,
        &[
            "--kubeconfig",
            &file_arg,
            "--namespace",
            "demo",
            "--hosts-file",
            &hosts_arg,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("denied in namespace demo"), "{text}");
}
