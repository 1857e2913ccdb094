//! Session logs left by starts that were killed: a background start opens `ID.log` and holds an
//! exclusive `flock` on it, which the session it starts (and its root helper) inherit with the
//! log as stderr; the lock is released only when every one of them has exited. So a log whose
//! lock can be taken, and which has no record, belongs to nobody: `session close --all`
//! removes it (a start killed with SIGKILL in its first milliseconds, before its record was
//! written, leaves such a log).

use std::fs::File;
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

use super::record;

/// Marks `log` as held by a live start (and whatever inherits it). Best effort: a log that is
/// not locked is only ever removed when it also has no record.
pub fn hold(log: &File) {
    let _ = flock(log, FlockOperation::NonBlockingLockExclusive);
}

/// Removes the logs under `state_dir` that have no session record and that no process holds;
/// returns the session ids whose logs went.
pub fn sweep_orphans(state_dir: &Path) -> Vec<String> {
    let dir = record::dir(state_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".log")) else {
            continue;
        };
        if dir.join(format!("{id}.json")).exists() {
            continue;
        }
        let path = entry.path();
        // Only a regular file of ours, never through a link.
        let Ok(file) = crate::paths::open_nofollow(&path, std::fs::OpenOptions::new().read(true))
        else {
            continue;
        };
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            continue;
        }
        let free = flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok();
        if free && std::fs::remove_file(&path).is_ok() {
            removed.push(id.to_string());
        }
    }
    removed.sort();
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_logs_without_a_record_or_a_holder_go() {
        let state = std::env::temp_dir().join(format!("czctl-logs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let dir = record::dir(&state);
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str| std::fs::write(dir.join(name), "x").unwrap();
        write("tp-orphan.log");
        write("tp-recorded.log");
        write("tp-recorded.json");
        write("tp-held.log");
        write("notes.txt");
        let held = File::open(dir.join("tp-held.log")).unwrap();
        hold(&held);
        std::os::unix::fs::symlink("/etc/passwd", dir.join("tp-link.log")).unwrap();

        assert_eq!(sweep_orphans(&state), ["tp-orphan"]);
        for kept in ["tp-recorded.log", "tp-held.log", "notes.txt", "tp-link.log"] {
            assert!(dir.join(kept).symlink_metadata().is_ok(), "{kept}");
        }
        drop(held);
        assert_eq!(sweep_orphans(&state), ["tp-held"]);
        let _ = std::fs::remove_dir_all(&state);
    }
}
