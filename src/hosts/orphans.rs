//! Files czctl replaced by rename, kept open for a while: a program that opened the hosts file
//! just before czctl's rename and writes just after it writes into the replaced file, and
//! those lines would be lost. czctl looks at what it replaced again at the start of its next
//! edit of the same file (as long as [`KEEP`] has not passed) and appends anything new there
//! to the file in place, before editing.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::lock::read_from;

/// How long a replaced file is watched.
const KEEP: Duration = Duration::from_secs(5);

/// At most this many replaced files are kept open (per process).
const MAX_KEPT: usize = 16;

struct Orphan {
    target: PathBuf,
    file: File,
    seen: u64,
    replaced: Instant,
}

static ORPHANS: Mutex<Vec<Orphan>> = Mutex::new(Vec::new());

/// Keeps `file`, just replaced at `target` and holding `seen` bytes czctl has carried over,
/// open to look at later. Its lock is released now: waiters on it must move on to the new file.
pub(super) fn keep(target: &Path, file: File, seen: u64) {
    let _ = rustix::fs::flock(&file, rustix::fs::FlockOperation::Unlock);
    let mut orphans = ORPHANS.lock().unwrap_or_else(|e| e.into_inner());
    orphans.push(Orphan {
        target: target.to_path_buf(),
        file,
        seen,
        replaced: Instant::now(),
    });
    if orphans.len() > MAX_KEPT {
        orphans.remove(0);
    }
}

/// Appends to `target` (czctl holds its lock) whatever was written to files replaced there
/// after czctl last read them, and forgets those older than [`KEEP`]. Returns how many bytes
/// were carried over.
pub(super) fn carry_over(target: &Path) -> io::Result<usize> {
    let mut orphans = ORPHANS.lock().unwrap_or_else(|e| e.into_inner());
    let mut late = Vec::new();
    for orphan in orphans.iter_mut().filter(|o| o.target == target) {
        let more = read_from(&orphan.file, orphan.seen)?;
        orphan.seen += more.len() as u64;
        late.extend_from_slice(&more);
    }
    orphans.retain(|o| o.target != target || o.replaced.elapsed() < KEEP);
    if !late.is_empty() {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(target)?;
        file.write_all(&late)?;
    }
    Ok(late.len())
}
