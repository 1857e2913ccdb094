//! czctl writes only its own files (issue #13, item 1): the exported environment never
//! replaces a file czctl did not write (unless --overwrite says so) and never a directory,
//! device, FIFO or socket; the state and registry directories are private, never followed
//! through a planted symbolic link, and empty variables never put them in the current
//! directory. czctl runs as a real process, as root and (setpriv) as nobody; the machine's
//! own /etc/passwd, /dev/null and registry are never written.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// czctl's mark, the first line of the files it writes (env, sh, yaml).
const MARK: &str = "# written by czctl";
const NOBODY: u32 = 65534;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn assert_refused(out: &Output, path: &Path, words: &[&str]) {
    let text = stderr(out);
    assert_eq!(code(out), Some(6), "exit code 6 (local): {text}");
    assert!(
        text.contains(&path.display().to_string()),
        "names the file: {text}"
    );
    for word in words {
        assert!(text.contains(word), "says {word:?}: {text}");
    }
}

// ------------------------------------------------------------------------ 1. the env file

#[test]
fn an_export_replaces_only_czctls_own_file_and_never_a_special_one() {
    let sim = kubesim(&["demo"], &[]);
    let dir = scratch_dir("files-export");

    // A scratch copy of /etc/passwd: a file of root's that czctl did not write.
    let passwd = dir.join("passwd");
    fs::copy("/etc/passwd", &passwd).unwrap();
    fs::set_permissions(&passwd, fs::Permissions::from_mode(0o644)).unwrap();
    let original = fs::read(&passwd).unwrap();
    let out = export_env_only(&sim.kubeconfig, &passwd, &[], &[]);
    assert_refused(&out, &passwd, &["czctl did not write it", "--overwrite"]);
    assert_eq!(fs::read(&passwd).unwrap(), original, "left as it was");
    assert_eq!(mode(&passwd), 0o644);
    assert!(!stderr(&out).contains("s3cr3t"), "no secret in the error");

    // A new file: created 0600 with the mark; exporting again replaces czctl's own file.
    let env = dir.join("echo.env");
    for _ in 0..2 {
        let out = export_env_only(&sim.kubeconfig, &env, &[], &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(mode(&env), 0o600);
        let text = fs::read_to_string(&env).unwrap();
        assert!(text.starts_with(MARK), "{text}");
        assert!(text.contains("GREETING='hello from the cluster'"), "{text}");
    }
    // A JSON file carries no mark: a new one is written, an existing one takes --overwrite.
    let json = dir.join("echo.json");
    let out = export_env_only(&sim.kubeconfig, &json, &["--format", "json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = export_env_only(&sim.kubeconfig, &json, &["--format", "json"], &[]);
    assert_refused(&out, &json, &["JSON", "--overwrite"]);
    let out = export_env_only(
        &sim.kubeconfig,
        &json,
        &["--format", "json", "--overwrite"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let values: serde_json::Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    assert_eq!(values["GREETING"], "hello from the cluster");

    // --overwrite replaces the copy of /etc/passwd: mode 0600, still root's.
    let out = export_env_only(&sim.kubeconfig, &passwd, &["--overwrite"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&passwd), 0o600);
    assert_eq!(fs::metadata(&passwd).unwrap().uid(), 0);
    assert!(fs::read_to_string(&passwd).unwrap().starts_with(MARK));

    // Never a directory, a FIFO, a device, or a link to one, even with --overwrite.
    let fifo = dir.join("fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    // A scratch twin of /dev/null (character device 1:3): the real one is never at risk.
    let null = dir.join("null");
    let status = Command::new("mknod")
        .arg(&null)
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(status.success());
    let subdir = dir.join("subdir");
    fs::create_dir(&subdir).unwrap();
    let link_to_null = dir.join("null-link");
    std::os::unix::fs::symlink(&null, &link_to_null).unwrap();
    let link_to_dir = dir.join("dir-link");
    std::os::unix::fs::symlink(&subdir, &link_to_dir).unwrap();
    for (path, what) in [
        (&fifo, "a FIFO"),
        (&null, "a character device"),
        (&subdir, "a directory"),
        (&link_to_null, "a symbolic link to a character device"),
        (&link_to_dir, "a symbolic link to a directory"),
    ] {
        for extra in [&[][..], &["--overwrite"][..]] {
            let out = export_env_only(&sim.kubeconfig, path, extra, &[]);
            assert_refused(&out, path, &[what, "even with --overwrite"]);
        }
    }
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(fs::symlink_metadata(&null)
        .unwrap()
        .file_type()
        .is_char_device());
    assert_eq!(fs::read_dir(&subdir).unwrap().count(), 0);
    assert!(fs::symlink_metadata(&link_to_null).unwrap().is_symlink());
    let leftovers: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // A link to a regular file is not followed: refused, and with --overwrite the link itself
    // is replaced while its target stays as it was.
    let target = dir.join("target.env");
    fs::write(&target, "TARGET=1\n").unwrap();
    let link = dir.join("link.env");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = export_env_only(&sim.kubeconfig, &link, &[], &[]);
    assert_refused(&out, &link, &["symbolic link", "--overwrite"]);
    let out = export_env_only(&sim.kubeconfig, &link, &["--overwrite"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs::symlink_metadata(&link).unwrap().is_file());
    assert_eq!(fs::read_to_string(&target).unwrap(), "TARGET=1\n");
    let _ = fs::remove_dir_all(&dir);
}

// --------------------------------------------------- 2. another user's file keeps its owner

#[test]
fn another_users_file_is_replaced_only_with_overwrite_and_keeps_its_owner() {
    let sim = kubesim(&["demo"], &[]);
    let dir = scratch_dir("files-owner");
    let theirs = dir.join("theirs.env");
    fs::write(&theirs, "THEIRS=1\n").unwrap();
    fs::set_permissions(&theirs, fs::Permissions::from_mode(0o644)).unwrap();
    chown_all(&theirs, NOBODY);

    let out = export_env_only(&sim.kubeconfig, &theirs, &[], &[]);
    assert_refused(
        &out,
        &theirs,
        &[
            "uid 65534",
            "not to you",
            "--overwrite",
            "keeping its owner",
            "mode 0600 instead of 0644",
        ],
    );
    assert_eq!(fs::read_to_string(&theirs).unwrap(), "THEIRS=1\n");
    assert_eq!(fs::metadata(&theirs).unwrap().uid(), NOBODY);
    assert_eq!(mode(&theirs), 0o644);

    // Even with czctl's mark: the owner decides.
    let marked = dir.join("marked.env");
    fs::write(&marked, format!("{MARK} (planted)\nX=1\n")).unwrap();
    chown_all(&marked, NOBODY);
    let out = export_env_only(&sim.kubeconfig, &marked, &[], &[]);
    assert_refused(&out, &marked, &["uid 65534"]);
    // ...unless that user is the one who ran sudo: their file is the invoker's.
    let sudo = [("SUDO_UID", "65534"), ("SUDO_GID", "65534")];
    let out = export_env_only(&sim.kubeconfig, &marked, &[], &sudo);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::metadata(&marked).unwrap().uid(), NOBODY, "owner kept");
    assert_eq!(mode(&marked), 0o600);
    // A new file under sudo belongs to the invoking user, who can read it without sudo.
    let fresh = dir.join("fresh.env");
    let out = export_env_only(&sim.kubeconfig, &fresh, &[], &sudo);
    assert!(out.status.success(), "{}", stderr(&out));
    let meta = fs::metadata(&fresh).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY));

    let out = export_env_only(&sim.kubeconfig, &theirs, &["--overwrite"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let meta = fs::metadata(&theirs).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (NOBODY, NOBODY),
        "owner and group kept"
    );
    assert_eq!(mode(&theirs), 0o600);
    assert!(fs::read_to_string(&theirs).unwrap().starts_with(MARK));
    let _ = fs::remove_dir_all(&dir);
}

// ------------------------------------------------- 3. private state and registry directories

/// `czctl session close ID` (as nobody when `nobody`) in `dir`, with `envs`; it releases the
/// stale session's addresses, so it creates the registry's files.
fn close(nobody: bool, dir: &Path, id: &str, envs: &[(&str, &Path)]) -> Output {
    let mut cmd = if nobody {
        let mut cmd = as_nobody();
        cmd.arg(czctl_bin());
        cmd
    } else {
        Command::new(czctl_bin())
    };
    cmd.args(["session", "close", id])
        .current_dir(dir)
        .env_remove("CZCTL_STATE_DIR")
        .env_remove("CZCTL_REGISTRY_DIR")
        .env_remove("XDG_STATE_HOME")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .env("HOME", dir.join("home"));
    for (key, value) in envs {
        cmd.env(key, value);
    }
    cmd.output().expect("run czctl")
}

/// A world-writable temp dir with `czctl-loopback` (the old default) and `NAME` planted as
/// links to a world-writable victim directory; returns (tmp, victim).
fn planted_tmp(dir: &Path, names: &[String]) -> (std::path::PathBuf, std::path::PathBuf) {
    let tmp = dir.join("tmp");
    let victim = dir.join("victim");
    fs::create_dir(&tmp).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).unwrap();
    fs::create_dir(&victim).unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o777)).unwrap();
    for name in names {
        std::os::unix::fs::symlink(&victim, tmp.join(name)).unwrap();
    }
    (tmp, victim)
}

#[test]
fn a_users_registry_is_never_a_link_planted_in_tmpdir() {
    let dir = scratch_dir("files-planted-user");
    let hosts = dir.join("hosts");
    fs::write(&hosts, ORIGINAL_HOSTS).unwrap();
    let state = dir.join("state");
    stale_session(&state, &hosts, "tp-planted");
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
    chown_all(&state, NOBODY);
    let (tmp, victim) = planted_tmp(
        &dir,
        &["czctl-loopback".into(), format!("czctl-loopback-{NOBODY}")],
    );

    let out = close(
        true,
        &dir,
        "tp-planted",
        &[("CZCTL_STATE_DIR", &state), ("TMPDIR", &tmp)],
    );
    let registry = tmp.join(format!("czctl-loopback-{NOBODY}"));
    assert_refused(&out, &registry, &["symbolic link", "CZCTL_REGISTRY_DIR"]);
    let planted: Vec<_> = fs::read_dir(&victim).unwrap().collect();
    assert!(
        planted.is_empty(),
        "files created through the link: {planted:?}"
    );

    // Without the planted link the user's own registry is made private.
    fs::remove_file(&registry).unwrap();
    let out = close(
        true,
        &dir,
        "tp-planted",
        &[("CZCTL_STATE_DIR", &state), ("TMPDIR", &tmp)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&registry), 0o700);
    assert_eq!(fs::metadata(&registry).unwrap().uid(), NOBODY);
    assert_eq!(mode(&registry.join("lock")), 0o600);
    assert_eq!(fs::read_dir(&victim).unwrap().count(), 0);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn root_never_creates_registry_files_where_a_link_in_tmpdir_points() {
    let dir = scratch_dir("files-planted-root");
    let hosts = dir.join("hosts");
    fs::write(&hosts, ORIGINAL_HOSTS).unwrap();
    let state = dir.join("state");
    stale_session(&state, &hosts, "tp-planted");
    let (tmp, victim) = planted_tmp(&dir, &["czctl-loopback".into(), "czctl-loopback-0".into()]);
    let out = close(
        false,
        &dir,
        "tp-planted",
        &[("CZCTL_STATE_DIR", &state), ("TMPDIR", &tmp)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let planted: Vec<_> = fs::read_dir(&victim).unwrap().collect();
    assert!(
        planted.is_empty(),
        "root wrote through the link: {planted:?}"
    );
    // Root's registry is a directory of root's that only root may write.
    let run = Path::new("/run/czctl-loopback");
    let meta = fs::symlink_metadata(run).unwrap();
    assert!(meta.is_dir() && meta.uid() == 0, "{meta:?}");
    assert_eq!(meta.mode() & 0o022, 0, "not writable by others");
    assert_eq!(mode(&run.join("lock")) & 0o022, 0);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_shared_or_linked_registry_directory_is_refused_with_its_fix() {
    let dir = scratch_dir("files-shared-registry");
    let hosts = dir.join("hosts");
    fs::write(&hosts, ORIGINAL_HOSTS).unwrap();
    let state = dir.join("state");
    // The old layout: a directory everyone may write.
    let shared = dir.join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let elsewhere = dir.join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let link = dir.join("link");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    for (registry, why) in [(&shared, "mode 0777"), (&link, "symbolic link")] {
        stale_session(&state, &hosts, "tp-shared");
        let out = close(
            false,
            &dir,
            "tp-shared",
            &[
                ("CZCTL_STATE_DIR", &state),
                ("CZCTL_REGISTRY_DIR", registry),
            ],
        );
        assert_refused(&out, registry, &[why, "remove it"]);
    }
    assert_eq!(fs::read_dir(&shared).unwrap().count(), 0);
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn empty_variables_never_put_state_or_the_registry_in_the_current_directory() {
    let dir = scratch_dir("files-empty-vars");
    let hosts = dir.join("hosts");
    fs::write(&hosts, ORIGINAL_HOSTS).unwrap();
    // A record in the current directory (where an empty CZCTL_STATE_DIR used to point) and one
    // in the default place under HOME.
    stale_session(&dir, &hosts, "tp-cwd");
    let home_state = dir.join("home/.local/state/czctl");
    stale_session(&home_state, &hosts, "tp-home");
    let empty = Path::new("");
    let envs = [
        ("CZCTL_STATE_DIR", empty),
        ("XDG_STATE_HOME", empty),
        ("CZCTL_REGISTRY_DIR", empty),
        ("XDG_RUNTIME_DIR", empty),
        ("TMPDIR", empty),
    ];
    let out = close(false, &dir, "tp-cwd", &envs);
    assert_eq!(code(&out), Some(5), "no such session: {}", stderr(&out));
    assert!(dir.join("sessions/tp-cwd.json").exists(), "left alone");
    let out = close(false, &dir, "tp-home", &envs);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!home_state.join("sessions/tp-home.json").exists());
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["home", "hosts", "sessions"], "nothing new here");
    let _ = fs::remove_dir_all(&dir);
}
