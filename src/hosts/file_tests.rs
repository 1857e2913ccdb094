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
    assert_eq!(
        hosts.write("new\n").expect("write"),
        Outcome::Written(WriteMethod::Renamed)
    );
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
    assert_eq!(
        hosts.write("new\n").expect("write"),
        Outcome::Written(WriteMethod::Renamed)
    );
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

/// Rewrites `path` in place to `text` (what the bind-mount fallback does).
fn rewrite_to(path: &Path, text: &str) -> Result<usize, inplace::Failure<HostsError>> {
    let read = fs::File::open(path).expect("readable");
    let base = fs::read(path).expect("readable");
    inplace::rewrite(&read, path, base, &mut |_| Ok(text.as_bytes().to_vec()))
}

#[test]
fn in_place_fallback_keeps_inode_and_replaces_all_bytes() {
    let dir = TempDir::new("inplace");
    let hosts = dir.file("hosts", "a much longer original line\nsecond\n", 0o600);
    let before = inode(hosts.path());
    rewrite_to(hosts.path(), "short\n").expect("in place");
    assert_eq!(fs::read(hosts.path()).expect("read"), b"short\n");
    let longer = "x".repeat(10_000) + "\n";
    rewrite_to(hosts.path(), &longer).expect("in place");
    assert_eq!(fs::read_to_string(hosts.path()).expect("read"), longer);
    rewrite_to(hosts.path(), "").expect("in place");
    assert_eq!(fs::read(hosts.path()).expect("read"), b"");
    assert_eq!((inode(hosts.path()), mode(hosts.path())), (before, 0o600));
    let missing = dir.0.join("missing");
    let read = fs::File::open(hosts.path()).expect("readable");
    let err = inplace::rewrite(&read, &missing, Vec::new(), &mut |_| {
        Ok::<_, HostsError>(b"x".to_vec())
    })
    .expect_err("no such file");
    assert!(
        matches!(&err, inplace::Failure::Io { partial: false, source } if source.kind() == ErrorKind::NotFound),
        "{err:?}"
    );
}

#[test]
fn a_hard_linked_file_is_rewritten_in_place_and_stays_linked() {
    let dir = TempDir::new("hardlink");
    let hosts = dir.file("hosts", "127.0.0.1 localhost\n", 0o644);
    let other = dir.0.join("hosts.link");
    fs::hard_link(hosts.path(), &other).expect("hard link");
    let before = inode(hosts.path());
    let session = id("tp-link", 7);
    assert_eq!(
        hosts.update(&session, &entries()).expect("update"),
        Outcome::Written(WriteMethod::InPlace)
    );
    let meta = fs::metadata(hosts.path()).expect("exists");
    assert_eq!((meta.ino(), meta.nlink()), (before, 2));
    assert!(fs::read_to_string(&other)
        .expect("read")
        .contains("czctl begin session=tp-link"));
    hosts.remove(&session).expect("remove");
    assert_eq!(
        fs::read_to_string(&other).expect("read"),
        "127.0.0.1 localhost\n"
    );
    assert_eq!(fs::metadata(hosts.path()).expect("exists").nlink(), 2);
    assert_eq!(names_in(&dir.0), ["hosts", "hosts.link"]);
}

#[test]
fn devices_fifos_and_directories_are_refused_unopened() {
    let dir = TempDir::new("special");
    let fifo = dir.0.join("fifo");
    use rustix::fs::{mknodat, FileType, Mode, CWD};
    mknodat(CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o644), 0).expect("mkfifo");
    for (path, kind) in [
        (fifo.as_path(), "a FIFO (named pipe)"),
        (dir.0.as_path(), "a directory"),
        (Path::new("/dev/null"), "a character device"),
    ] {
        let hosts = HostsFile::new(path);
        // Opening the FIFO would block without a writer: this returns at once instead.
        let err = hosts.update(&id("s", 1), &entries()).expect_err("refused");
        assert!(
            matches!(&err, HostsError::NotRegular { kind: k, .. } if *k == kind),
            "{}: {err}",
            path.display()
        );
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = hosts.backup_once(&dir.0.join("state"), &id("s", 1));
        assert!(matches!(err, Err(HostsError::NotRegular { .. })), "{err:?}");
    }
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::metadata(&fifo).expect("kept").file_type().is_fifo());
    assert!(fs::metadata("/dev/null")
        .expect("kept")
        .file_type()
        .is_char_device());
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

/// A foreign line appended to the file the first time the change is computed, i.e. after
/// czctl's read and before its write.
fn update_with_append_in_between(
    hosts: &HostsFile,
    session: &BlockId,
    entries: &[Entry],
    line: &str,
) -> Outcome {
    let appended = std::sync::atomic::AtomicBool::new(false);
    let (outcome, ()) = hosts
        .edit(|text| {
            if !appended.swap(true, Ordering::SeqCst) {
                let mut file = fs::OpenOptions::new()
                    .append(true)
                    .open(hosts.path())
                    .expect("writable");
                std::io::Write::write_all(&mut file, line.as_bytes()).expect("append");
            }
            (block::splice(text, session, Some(entries)), ())
        })
        .expect("edit");
    outcome
}

#[test]
fn lines_appended_between_read_and_write_are_kept_by_rename_and_in_place() {
    for linked in [false, true] {
        let dir = TempDir::new(if linked { "append-link" } else { "append" });
        let hosts = dir.file("hosts", "127.0.0.1 localhost\n", 0o644);
        if linked {
            fs::hard_link(hosts.path(), dir.0.join("link")).expect("hard link");
        }
        let session = id("tp-append", 3);
        let method = if linked {
            WriteMethod::InPlace
        } else {
            WriteMethod::Renamed
        };
        let outcome =
            update_with_append_in_between(&hosts, &session, &entries(), "10.0.0.1 first\n");
        assert_eq!(outcome, Outcome::Written(method));
        let text = hosts.read().expect("read");
        // Kept (before or after the new block, depending on when it was noticed).
        assert_eq!(text.matches("10.0.0.1 first\n").count(), 1, "{text}");
        assert_eq!(block::parse_blocks(&text).len(), 1, "{text}");
        // The same while the block is rewritten where it stands.
        let fewer = [Entry::new(Ipv4Addr::new(127, 0, 0, 8), ["eight"]).expect("valid")];
        let outcome = update_with_append_in_between(&hosts, &session, &fewer, "10.0.0.2 second\n");
        assert_eq!(outcome, Outcome::Written(method));
        hosts.remove(&session).expect("remove");
        assert_eq!(
            hosts.read().expect("read"),
            "127.0.0.1 localhost\n10.0.0.1 first\n10.0.0.2 second\n"
        );
        let mut expected = vec!["hosts".to_string()];
        if linked {
            expected.push("link".into());
        }
        assert_eq!(names_in(&dir.0), expected, "no temporary file is left");
    }
}

#[test]
fn concurrent_editors_never_lose_each_others_blocks() {
    for linked in [false, true] {
        let dir = TempDir::new(if linked { "threads-link" } else { "threads" });
        let hosts = dir.file("hosts", "127.0.0.1 localhost\n", 0o644);
        if linked {
            fs::hard_link(hosts.path(), dir.0.join("link")).expect("hard link");
        }
        let barrier = std::sync::Barrier::new(6);
        std::thread::scope(|scope| {
            for t in 0..6u32 {
                let (hosts, barrier) = (hosts.clone(), &barrier);
                scope.spawn(move || {
                    let session = id(&format!("tp-{t}"), t + 1);
                    barrier.wait();
                    for round in 0..25 {
                        hosts.update(&session, &entries()).expect("update");
                        // Our block is there until we remove it: nobody wrote over it.
                        let text = hosts.read().expect("read");
                        let ours = block::parse_blocks(&text)
                            .into_iter()
                            .filter(|b| b.session() == session.session())
                            .count();
                        assert_eq!(ours, 1, "thread {t} round {round}: {text}");
                        hosts.remove(&session).expect("remove");
                    }
                });
            }
        });
        assert_eq!(hosts.read().expect("read"), "127.0.0.1 localhost\n");
    }
}

#[test]
fn an_edit_waits_for_the_lock_and_gives_up_after_a_while() {
    let dir = TempDir::new("lock");
    let hosts = dir.file("hosts", "127.0.0.1 localhost\n", 0o644);
    let holder = fs::File::open(hosts.path()).expect("readable");
    assert!(super::super::lock::try_lock(&holder).expect("flock"));
    let err = Locked::acquire(hosts.path(), std::time::Duration::from_millis(100))
        .expect_err("held by someone else");
    assert!(matches!(err, LockFailure::Timeout(_)), "{err:?}");
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(holder);
        });
        hosts
            .update(&id("s", 1), &entries())
            .expect("update once released");
    });
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    let message = HostsError::Locked {
        path: hosts.path().to_path_buf(),
        waited: LOCK_WAIT,
    }
    .to_string();
    assert!(
        message.contains("lslocks") && message.contains("10s"),
        "{message}"
    );
}

#[test]
fn a_final_bare_carriage_return_is_kept() {
    let dir = TempDir::new("cr");
    let original = "127.0.0.1 localhost\r";
    let hosts = dir.file("hosts", original, 0o644);
    let session = id("tp-cr", 1);
    hosts.update(&session, &entries()).expect("update");
    assert!(hosts
        .read()
        .expect("read")
        .starts_with("127.0.0.1 localhost\r\n# czctl begin"));
    hosts.remove(&session).expect("remove");
    assert_eq!(hosts.read().expect("read"), original);
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
    assert_eq!(mode(&backup), 0o600, "the hosts file's mode");
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
    let cleanup = hosts.remove_stale(|_, pid| pid == 22).expect("cleanup");
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
        hosts
            .remove_stale(|_, pid| pid == 22)
            .expect("again")
            .outcome,
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
