use super::*;
use std::fs::Permissions;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU64, Ordering};

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("czctl-hosts-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir is writable");
        Self(dir)
    }

    fn file(&self, name: &str, content: &str, mode: u32) -> HostsFile {
        let path = self.0.join(name);
        fs::write(&path, content).expect("temp dir is writable");
        fs::set_permissions(&path, Permissions::from_mode(mode)).expect("we own the file");
        HostsFile::new(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn id(session: &str, pid: u32) -> BlockId {
    BlockId::new(session, pid).expect("test session ids are valid")
}

fn entries() -> Vec<Entry> {
    let names = [
        "echo",
        "echo.demo",
        "echo.demo.svc",
        "echo.demo.svc.cluster.local",
    ];
    vec![Entry::new(Ipv4Addr::new(127, 12, 34, 56), names).expect("valid names")]
}

fn inode(path: &Path) -> u64 {
    fs::metadata(path).expect("file exists").ino()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("file exists").mode() & 0o7777
}

/// Names of the files in `dir`, to check no temporary file is left behind.
fn names_in(dir: &Path) -> Vec<String> {
    let entries = fs::read_dir(dir).expect("dir exists");
    let mut names: Vec<String> = entries
        .map(|e| {
            e.expect("readable")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn update_and_remove_round_trip_keeps_foreign_edits() {
    let dir = TempDir::new("roundtrip");
    let original = "127.0.0.1 localhost\r\n# comment\r\n::1 localhost";
    let hosts = dir.file("hosts", original, 0o644);
    let session = id("tp-3k9x2", 4242);
    assert_eq!(
        hosts.update(&session, &entries()).expect("update"),
        Outcome::Written(WriteMethod::Renamed)
    );
    assert_eq!(
        hosts.update(&session, &entries()).expect("update"),
        Outcome::Unchanged
    );
    let text = hosts.read().expect("read");
    assert_eq!(text, block::splice(original, &session, Some(&entries())));
    // Another program appends a line after our block between two updates.
    fs::write(hosts.path(), format!("{text}\n10.9.9.9 foreign\n")).expect("writable");
    let fewer = [Entry::new(Ipv4Addr::new(127, 0, 0, 8), ["eight"]).expect("valid")];
    hosts.update(&session, &fewer).expect("update");
    assert!(hosts
        .read()
        .expect("read")
        .ends_with("# czctl end session=tp-3k9x2\n10.9.9.9 foreign\n"));
    hosts.remove(&session).expect("remove");
    assert_eq!(
        hosts.read().expect("read"),
        format!("{original}\n10.9.9.9 foreign\n")
    );
    assert_eq!(
        hosts.remove(&session).expect("remove again"),
        Outcome::Unchanged
    );
    assert_eq!(names_in(&dir.0), ["hosts"]);
}

#[test]
fn write_by_rename_keeps_the_mode() {
    let dir = TempDir::new("mode");
    let hosts = dir.file("hosts", "old\n", 0o640);
    let before = inode(hosts.path());
    assert_eq!(hosts.write("new\n").expect("write"), WriteMethod::Renamed);
    assert_eq!(fs::read_to_string(hosts.path()).expect("read"), "new\n");
    assert_ne!(
        inode(hosts.path()),
        before,
        "a new file was renamed into place"
    );
    assert_eq!(mode(hosts.path()), 0o640);
    assert_eq!(names_in(&dir.0), ["hosts"]);
}

#[test]
fn write_by_rename_keeps_the_owner_when_root() {
    let dir = TempDir::new("owner");
    let hosts = dir.file("hosts", "old\n", 0o644);
    if std::os::unix::fs::chown(hosts.path(), Some(4321), Some(4321)).is_err() {
        return; // Not root: giving the file away is impossible, and so is keeping that owner.
    }
    assert_eq!(hosts.write("new\n").expect("write"), WriteMethod::Renamed);
    let meta = fs::metadata(hosts.path()).expect("exists");
    assert_eq!(
        (meta.uid(), meta.gid(), mode(hosts.path())),
        (4321, 4321, 0o644)
    );
}

#[test]
fn write_follows_a_symlink_and_keeps_it() {
    let dir = TempDir::new("symlink");
    let hosts = dir.file("real", "a\n", 0o644);
    let link = dir.0.join("hosts");
    std::os::unix::fs::symlink(hosts.path(), &link).expect("symlink");
    let via_link = HostsFile::new(&link);
    via_link.update(&id("s", 1), &entries()).expect("update");
    assert!(fs::symlink_metadata(&link)
        .expect("exists")
        .file_type()
        .is_symlink());
    assert!(fs::read_to_string(hosts.path())
        .expect("read")
        .contains("czctl begin session=s"));
}

#[test]
fn in_place_fallback_keeps_inode_and_replaces_all_bytes() {
    let dir = TempDir::new("inplace");
    let hosts = dir.file("hosts", "a much longer original line\nsecond\n", 0o600);
    let before = inode(hosts.path());
    write_in_place(hosts.path(), "short\n").expect("in place");
    assert_eq!(fs::read(hosts.path()).expect("read"), b"short\n");
    let longer = "x".repeat(10_000) + "\n";
    write_in_place(hosts.path(), &longer).expect("in place");
    assert_eq!(fs::read_to_string(hosts.path()).expect("read"), longer);
    assert_eq!((inode(hosts.path()), mode(hosts.path())), (before, 0o600));
    let missing = write_in_place(&dir.0.join("missing"), "x").expect_err("no such file");
    assert!(!missing.partial);
    assert_eq!(missing.source.kind(), ErrorKind::NotFound);
}

#[test]
fn rename_failures_of_bind_mounts_fall_back_to_in_place() {
    // EBUSY (rename onto a mount point), EXDEV, EPERM and EACCES fall back; others do not.
    for errno in [16, 18, 1, 13] {
        assert!(
            falls_back(&io::Error::from_raw_os_error(errno)),
            "errno {errno}"
        );
    }
    for errno in [2, 28, 30, 5] {
        assert!(
            !falls_back(&io::Error::from_raw_os_error(errno)),
            "errno {errno}"
        );
    }
}

#[test]
fn commit_notices_a_concurrent_change_and_leaves_no_temp_file() {
    let dir = TempDir::new("race");
    let hosts = dir.file("hosts", "current\n", 0o644);
    let result = hosts
        .commit("new\n", Some("what czctl read earlier\n"))
        .expect("commit");
    assert!(matches!(result, Commit::Changed));
    assert_eq!(fs::read_to_string(hosts.path()).expect("read"), "current\n");
    assert_eq!(names_in(&dir.0), ["hosts"]);
}

#[test]
fn backup_is_taken_once_per_session() {
    let dir = TempDir::new("backup");
    let hosts = dir.file("hosts", "original\r\n", 0o600);
    let state = dir.0.join("state").join("czctl");
    let session = id("tp-1", 1);
    let backup = hosts.backup_once(&state, &session).expect("backup");
    assert_eq!(backup, state.join("hosts-tp-1.backup"));
    assert_eq!(fs::read(&backup).expect("read"), b"original\r\n");
    assert_eq!(mode(&backup), 0o644);
    hosts.update(&session, &entries()).expect("update");
    assert_eq!(hosts.backup_once(&state, &session).expect("backup"), backup);
    assert_eq!(
        fs::read(&backup).expect("read"),
        b"original\r\n",
        "first backup kept"
    );
    let other = hosts.backup_once(&state, &id("tp-2", 2)).expect("backup");
    assert!(fs::read_to_string(other)
        .expect("read")
        .contains("czctl begin session=tp-1"));
    assert_eq!(names_in(&state), ["hosts-tp-1.backup", "hosts-tp-2.backup"]);
}

#[test]
fn stale_blocks_are_removed_and_unterminated_ones_reported() {
    let dir = TempDir::new("stale");
    let damaged = "# czctl begin session=broken pid=3 -- x\n10.0.0.1 keep\n";
    let hosts = dir.file("hosts", &format!("127.0.0.1 localhost\n{damaged}"), 0o644);
    hosts.update(&id("dead", 11), &entries()).expect("update");
    hosts.update(&id("live", 22), &entries()).expect("update");
    let cleanup = hosts.remove_stale(|pid| pid == 22).expect("cleanup");
    assert_eq!(cleanup.outcome, Outcome::Written(WriteMethod::Renamed));
    let removed: Vec<_> = cleanup
        .removed
        .iter()
        .map(|b| (b.session(), b.pid(), b.line_count()))
        .collect();
    assert_eq!(removed, [("dead", 11, 3)]);
    let unterminated: Vec<_> = cleanup.unterminated.iter().map(|b| b.session()).collect();
    assert_eq!(unterminated, ["broken"]);
    let text = hosts.read().expect("read");
    assert!(
        text.starts_with(&format!("127.0.0.1 localhost\n{damaged}")),
        "{text}"
    );
    assert!(
        text.contains("session=live") && !text.contains("session=dead"),
        "{text}"
    );
    assert_eq!(
        hosts.remove_stale(|pid| pid == 22).expect("again").outcome,
        Outcome::Unchanged
    );
}

#[test]
fn unreadable_files_are_refused_with_a_hint_and_left_unchanged() {
    let dir = TempDir::new("errors");
    let missing = HostsFile::new(dir.0.join("missing"));
    let err = missing
        .update(&id("s", 1), &entries())
        .expect_err("missing file");
    assert!(matches!(err, HostsError::Read { .. }), "{err}");
    assert!(err.to_string().contains("--hosts-file PATH"), "{err}");
    assert!(
        !missing.path().exists(),
        "a missing hosts file is not created"
    );

    let latin1 = dir.0.join("latin1");
    fs::write(&latin1, b"127.0.0.1 caf\xe9\n").expect("writable");
    let err = HostsFile::new(&latin1)
        .update(&id("s", 1), &entries())
        .expect_err("not UTF-8");
    assert!(matches!(err, HostsError::NotUtf8 { .. }), "{err}");
    assert_eq!(fs::read(&latin1).expect("read"), b"127.0.0.1 caf\xe9\n");
}

#[test]
fn error_messages_say_what_to_do() {
    let path = PathBuf::from("/etc/hosts");
    let denied = || io::Error::from(ErrorKind::PermissionDenied);
    let read = HostsError::Read {
        path: path.clone(),
        source: denied(),
    }
    .to_string();
    assert!(
        read.contains("/etc/hosts") && read.contains("run with sudo or pass --hosts-file PATH"),
        "{read}"
    );
    let partial = HostsError::InPlace {
        path,
        partial: true,
        source: denied(),
    }
    .to_string();
    assert!(
        partial.contains("in place") && partial.contains("restore it from czctl's backup"),
        "{partial}"
    );
}
