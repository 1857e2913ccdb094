//! The registry files: the `lock` file, the line-based `registry` file and process liveness.
//!
//! `registry` holds one line per reserved address, `ADDRESS PID KEY` (the key is the rest of
//! the line, so it may contain spaces but no line breaks); lines starting with `#` are comments.
//! A line that does not parse, or names an address outside czctl's space, is ignored: a
//! corrupt or truncated file costs at most the entries on its bad lines, never a panic.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Name of the lock file, exclusively locked for every change of the registry.
pub(super) const LOCK_FILE: &str = "lock";
/// Name of the registry file.
pub(super) const REGISTRY_FILE: &str = "registry";
/// Name of the temporary file a new registry is written to before it is renamed over the old one.
const TEMP_FILE: &str = "registry.tmp";
const HEADER: &str = "# czctl loopback address registry, one line per address: ADDRESS PID KEY\n";

/// One reserved address as stored in the registry file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) addr: Ipv4Addr,
    pub(super) pid: u32,
    pub(super) key: String,
}

/// The mode of a registry directory czctl creates: only its owner may enter it.
pub(super) const DIR_MODE: u32 = 0o700;
/// The mode of the files czctl creates in it.
const FILE_MODE: u32 = 0o600;

/// Opens (creating it if needed, mode 0600) the lock file of `dir`, never through a link.
pub(super) fn open_lock(dir: &Path) -> io::Result<File> {
    crate::dirs::open_or_create(&dir.join(LOCK_FILE), FILE_MODE)
}

/// Reads the registry of `dir`; a missing file is an empty registry.
pub(super) fn load(dir: &Path) -> io::Result<Vec<Record>> {
    let read = |path: &Path| -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        crate::dirs::open_nofollow(path, OpenOptions::new().read(true))?.read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    let text = match read(&dir.join(REGISTRY_FILE)) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut seen = HashSet::new();
    Ok(text
        .lines()
        .filter_map(parse_line)
        // Two lines for one address can only come from a damaged file: the first one wins.
        .filter(|record| seen.insert(record.addr))
        .collect())
}

/// Replaces the registry of `dir` with `records`, atomically: readers see the old or the new
/// file, never a mix. Must be called with the lock held, since the temporary file is shared.
///
/// The file is not fsync'ed: its entries name running processes, which a power loss ends too.
pub(super) fn save(dir: &Path, records: &[Record]) -> io::Result<()> {
    let mut text = String::with_capacity(HEADER.len() + records.len() * 48);
    text.push_str(HEADER);
    for Record { addr, pid, key } in records {
        text.push_str(&format!("{addr} {pid} {key}\n"));
    }
    let temp = dir.join(TEMP_FILE);
    // A crashed writer may have left it behind; create_new below refuses to reuse anything
    // (even a planted symlink) that could redirect the write.
    match fs::remove_file(&temp) {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = crate::dirs::open_nofollow(
        &temp,
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE),
    )?;
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    file.write_all(text.as_bytes())?;
    drop(file);
    fs::rename(&temp, dir.join(REGISTRY_FILE))
}

fn parse_line(line: &str) -> Option<Record> {
    if line.starts_with('#') {
        return None;
    }
    let mut fields = line.splitn(3, ' ');
    let addr: Ipv4Addr = fields.next()?.parse().ok()?;
    let pid = fields.next()?.parse().ok()?;
    let key = fields.next()?;
    if super::space::index_of(addr).is_none() || super::check_key(key).is_err() {
        return None;
    }
    Some(Record {
        addr,
        pid,
        key: key.to_owned(),
    })
}

/// Whether process `pid` runs. A process we may not signal (EPERM, e.g. a root czctl seen
/// from a user run) runs too. A pid that is not a valid process id (0, or beyond `pid_t`)
/// never runs: passed to kill(2) it would name a process group.
#[cfg(unix)]
pub(super) fn pid_alive(pid: u32) -> bool {
    let pid = i32::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .and_then(rustix::process::Pid::from_raw);
    // Signal 0 sends nothing: kill only checks that the process exists.
    pid.is_some_and(|pid| match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    })
}

/// Without kill(2), every owner counts as running: entries are then only freed by release.
#[cfg(not(unix))]
pub(super) fn pid_alive(pid: u32) -> bool {
    pid != 0
}
