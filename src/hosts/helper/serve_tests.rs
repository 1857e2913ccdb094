use super::*;
use crate::hosts::fdpass::Lines;
use crate::hosts::helper::protocol::WireOutcome;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

const ORIGINAL: &str = "127.0.0.1\tlocalhost\n# kept\n";

/// A fresh directory for one test.
pub(in crate::hosts::helper) fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("czctl-helper-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Serves `requests`, then returns the replies and the descriptors that came with them.
fn exchange_with(
    file: &Path,
    state: &Path,
    requests: &[&str],
    is_alive: &dyn Fn(&str, u32) -> bool,
) -> (Vec<Reply>, Lines) {
    let input = requests.join("\n");
    let (ours, theirs) = UnixStream::pair().unwrap();
    serve(file, state, input.as_bytes(), theirs.as_fd(), is_alive);
    drop(theirs);
    let mut lines = Lines::default();
    let mut replies = Vec::new();
    while let Some(line) = lines.read_line(ours.as_fd()).unwrap() {
        replies.push(serde_json::from_str(&line).unwrap());
    }
    (replies, lines)
}

fn exchange(file: &Path, state: &Path, requests: &[&str]) -> Vec<Reply> {
    exchange_with(file, state, requests, &|_, _| true).0
}

#[test]
fn edits_blocks_and_cleans_up_at_eof() {
    let dir = temp("eof");
    let file = dir.join("hosts");
    std::fs::write(&file, ORIGINAL).unwrap();
    // A state directory of a user other than root (as root, the helper refuses root's).
    let state = dir.join("state");
    std::fs::create_dir(&state).unwrap();
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    }
    let replies = exchange(
        &file,
        &state,
        &[
            r#"{"op":"hello"}"#,
            r#"{"op":"backup_once","session":"tp-a","pid":1}"#,
            r#"{"op":"update","session":"tp-a","pid":1,"entries":[{"addr":"127.9.0.1","names":["echo","echo.demo"]}]}"#,
            r#"{"op":"update","session":"tp-b","pid":1,"entries":[{"addr":"127.9.0.2","names":["db"]}]}"#,
            r#"{"op":"remove","session":"tp-b","pid":1}"#,
        ],
    );
    assert!(replies.iter().all(|r| r.ok), "{replies:#?}");
    assert_eq!(replies[0].pid, Some(std::process::id()));
    let backup = state.join("hosts-tp-a.backup");
    assert_eq!(replies[1].backup.as_deref(), Some(backup.as_path()));
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), ORIGINAL);
    assert_eq!(
        std::fs::metadata(&backup).unwrap().uid(),
        std::fs::metadata(&state).unwrap().uid(),
        "the backup belongs to the state directory's owner"
    );
    assert_eq!(replies[2].outcome, Some(WireOutcome::Renamed));
    // tp-a was never removed: the end of input removed it.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), ORIGINAL);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refuses_what_czctl_would_never_write() {
    let dir = temp("refuse");
    let file = dir.join("hosts");
    std::fs::write(&file, ORIGINAL).unwrap();
    let replies = exchange(
        &file,
        &dir,
        &[
            r#"{"op":"update","session":"tp-a","pid":1,"entries":[{"addr":"10.0.0.1","names":["evil"]}]}"#,
            r#"{"op":"update","session":"tp-a","pid":1,"entries":[{"addr":"127.9.0.2","names":["a\nb"]}]}"#,
            r#"{"op":"update","session":"tp-a","pid":1,"entries":[{"addr":"127.0.0.1","names":["github.com"]}]}"#,
            r#"{"op":"update","session":"tp a","pid":1,"entries":[]}"#,
            r#"{"op":"write","text":"x"}"#,
            r#"{"op":"remove","session":"tp-a","pid":1,"file":"/etc/shadow"}"#,
            "not json",
        ],
    );
    assert_eq!(replies.len(), 7);
    assert!(replies.iter().all(|r| !r.ok), "{replies:#?}");
    assert!(replies[0].error.as_deref().unwrap().contains("loopback"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), ORIGINAL);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn remove_stale_reports_blocks() {
    let dir = temp("stale");
    let file = dir.join("hosts");
    let block =
        "# czctl begin session=tp-old pid=7 -- x\n127.3.0.1\told\n# czctl end session=tp-old\n";
    std::fs::write(&file, format!("{ORIGINAL}{block}")).unwrap();
    let (mut replies, _) = exchange_with(&file, &dir, &[r#"{"op":"remove_stale"}"#], &|_, _| false);
    let cleanup = replies.remove(0).into_cleanup();
    assert_eq!(cleanup.removed.len(), 1);
    assert_eq!(cleanup.removed[0].session(), "tp-old");
    assert_eq!(cleanup.removed[0].line_count(), 3);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), ORIGINAL);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn backups_never_go_into_roots_directories() {
    if !rustix::process::geteuid().is_root() {
        return; // Only root's helper has something to refuse.
    }
    let dir = temp("rootstate");
    let file = dir.join("hosts");
    std::fs::write(&file, ORIGINAL).unwrap();
    let replies = exchange(
        &file,
        &dir,
        &[r#"{"op":"backup_once","session":"tp-a","pid":1}"#],
    );
    assert!(!replies[0].ok, "{replies:?}");
    assert!(replies[0]
        .error
        .as_deref()
        .unwrap()
        .contains("belongs to root"));
    assert!(!dir.join("hosts-tp-a.backup").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn binds_only_czctl_addresses_and_hands_the_listener_over() {
    let dir = temp("bind");
    let file = dir.join("hosts");
    std::fs::write(&file, ORIGINAL).unwrap();
    // A port this test may bind whether or not it runs as root (an unprivileged run gets
    // EACCES with an errno, which is what czctl needs to know as well).
    let (replies, mut lines) = exchange_with(
        &file,
        &dir,
        &[
            r#"{"op":"bind","addr":"127.0.0.1","port":80}"#,
            r#"{"op":"bind","addr":"127.9.0.1","port":8080}"#,
            r#"{"op":"bind","addr":"127.9.0.1","port":81}"#,
        ],
        &|_, _| true,
    );
    assert!(!replies[0].ok && replies[0].error.as_deref().unwrap().contains("127.0.0.1"));
    assert!(!replies[1].ok && replies[1].error.as_deref().unwrap().contains("below 1024"));
    if replies[2].ok {
        assert_eq!(replies[2].fd, Some(true));
        let listener = TcpListener::from(lines.take_fd().expect("the listener"));
        assert_eq!(
            listener.local_addr().unwrap(),
            "127.9.0.1:81".parse().unwrap()
        );
    } else {
        assert_eq!(replies[2].errno, Some(libc::EACCES), "{:?}", replies[2]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
