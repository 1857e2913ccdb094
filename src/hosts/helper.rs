//! `czctl hosts-helper`: the only part of czctl that runs as root when czctl itself does not.
//!
//! An unprivileged czctl that may not write the hosts file starts this helper once through
//! `sudo` (see [`elevated`](super::elevated)) and sends it one JSON request per line on stdin;
//! the helper answers one JSON line per request on stdout:
//!
//! ```text
//! {"op":"hello"}                                          → {"ok":true,"uid":0,"pid":4711}
//! {"op":"remove_stale"}                                   → {"ok":true,"outcome":"unchanged","removed":[],"unterminated":[]}
//! {"op":"backup_once","session":"tp-x","pid":42}          → {"ok":true,"backup":"/home/u/.local/state/czctl/hosts-tp-x.backup"}
//! {"op":"update","session":"tp-x","pid":42,"entries":[{"addr":"127.1.0.1","names":["echo"]}]}
//!                                                         → {"ok":true,"outcome":"renamed"}
//! {"op":"remove","session":"tp-x","pid":42}               → {"ok":true,"outcome":"in_place"}
//! {"op":"bind","addr":"127.1.0.1","port":80}              → {"ok":true,"fd":true} + the listener
//! anything refused                                        → {"ok":false,"error":"...","errno":13}
//! ```
//!
//! stdin and stdout are one Unix socket, so `bind` can hand the listening socket it made over
//! with SCM_RIGHTS: on Linux an unprivileged czctl may not bind ports below 1024 itself.
//!
//! # What a compromised parent can do with it
//! Only what czctl itself does: edit czctl's own marked blocks in the one file named by
//! `--file` when the helper started, and bind TCP ports below 1024 on czctl's own loopback
//! addresses. Session ids and names are validated by [`BlockId`] and [`Entry`] (nothing can
//! inject lines), addresses must be in czctl's loopback range (127.1.0.0–127.191.255.255, see
//! [`loopback::ranges`], so never 127.0.0.1 or a resolver's 127.0.0.53), and the file
//! must be a regular file readable by everyone (a hosts file), so the helper never edits or
//! copies a secret such as `/etc/shadow`. Backups go into the existing `--state-dir` and get
//! the owner of that directory.
//!
//! # Lifetime
//! The helper lives until its stdin closes: when czctl exits, crashes or is killed, the pipe
//! closes and the helper removes every block it wrote and was not asked to remove, then exits.
//! It ignores SIGINT, SIGHUP, SIGQUIT and SIGTERM so a Ctrl-C or a `pkill czctl` aimed at
//! czctl cannot kill it before czctl's own teardown has asked it to remove the block.

use std::collections::BTreeMap;
use std::io::{self, BufRead};
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::block::{BlockId, Entry, FoundBlock};

/// `eprintln!` that never panics: the helper's stderr may be a closed terminal or pipe, and a
/// failed message must not stop the cleanup.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
use super::fdpass::send_line;
use super::file::{HostsFile, Outcome, StaleCleanup, WriteMethod};

/// One request from czctl to the helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Request {
    /// Who are you? Answers the helper's uid and pid.
    Hello,
    /// [`HostsFile::remove_stale`] with the helper's own liveness check.
    RemoveStale,
    /// [`HostsFile::backup_once`] into the helper's `--state-dir`.
    BackupOnce {
        /// Session id.
        session: String,
        /// Owner pid.
        pid: u32,
    },
    /// [`HostsFile::update`].
    Update {
        /// Session id.
        session: String,
        /// Owner pid.
        pid: u32,
        /// The block's entries.
        entries: Vec<WireEntry>,
    },
    /// [`HostsFile::remove`].
    Remove {
        /// Session id.
        session: String,
        /// Owner pid.
        pid: u32,
    },
    /// Binds a TCP listener on a port below 1024 and hands it over.
    Bind {
        /// One of czctl's loopback addresses.
        addr: Ipv4Addr,
        /// The port (1-1023).
        port: u16,
    },
}

/// An [`Entry`] on the wire; validated again by the helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireEntry {
    /// The address.
    pub addr: Ipv4Addr,
    /// The names.
    pub names: Vec<String>,
}

impl From<&Entry> for WireEntry {
    fn from(entry: &Entry) -> Self {
        WireEntry {
            addr: entry.addr(),
            names: entry.names().to_vec(),
        }
    }
}

/// An [`Outcome`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WireOutcome {
    /// [`Outcome::Unchanged`].
    Unchanged,
    /// [`Outcome::Written`] with [`WriteMethod::Renamed`].
    Renamed,
    /// [`Outcome::Written`] with [`WriteMethod::InPlace`].
    InPlace,
}

impl From<Outcome> for WireOutcome {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Unchanged => WireOutcome::Unchanged,
            Outcome::Written(WriteMethod::Renamed) => WireOutcome::Renamed,
            Outcome::Written(WriteMethod::InPlace) => WireOutcome::InPlace,
        }
    }
}

impl From<WireOutcome> for Outcome {
    fn from(outcome: WireOutcome) -> Self {
        match outcome {
            WireOutcome::Unchanged => Outcome::Unchanged,
            WireOutcome::Renamed => Outcome::Written(WriteMethod::Renamed),
            WireOutcome::InPlace => Outcome::Written(WriteMethod::InPlace),
        }
    }
}

/// A [`FoundBlock`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireBlock {
    session: String,
    pid: u32,
    /// Zero-based index of the begin marker line.
    start: usize,
    /// Lines spanned, markers included.
    lines: usize,
    terminated: bool,
}

impl From<&FoundBlock> for WireBlock {
    fn from(block: &FoundBlock) -> Self {
        WireBlock {
            session: block.session().to_string(),
            pid: block.pid(),
            start: block.lines().start,
            lines: block.line_count(),
            terminated: block.terminated(),
        }
    }
}

impl From<WireBlock> for FoundBlock {
    fn from(b: WireBlock) -> Self {
        FoundBlock::from_parts(
            b.session,
            b.pid,
            b.start..b.start.saturating_add(b.lines),
            b.terminated,
        )
    }
}

/// The helper's answer to one request; fields not relevant to the request are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Reply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The OS error number behind `error`, when there is one (EADDRINUSE, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    /// `bind`: a listening socket comes with this line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<bool>,
    /// `hello`: the helper's effective uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// `hello`: the helper's pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Edits: whether and how the file was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<WireOutcome>,
    /// `backup_once`: the backup's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<PathBuf>,
    /// `remove_stale`: the blocks removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Vec<WireBlock>>,
    /// `remove_stale`: unterminated blocks, left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unterminated: Option<Vec<WireBlock>>,
}

impl Reply {
    fn done() -> Self {
        Reply {
            ok: true,
            ..Reply::default()
        }
    }

    fn failed(error: impl std::fmt::Display) -> Self {
        Reply {
            ok: false,
            error: Some(error.to_string()),
            ..Reply::default()
        }
    }

    fn os_error(what: String, err: &io::Error) -> Self {
        Reply {
            errno: err.raw_os_error(),
            ..Reply::failed(format!("{what}: {err}"))
        }
    }

    fn edited(outcome: Outcome) -> Self {
        Reply {
            outcome: Some(outcome.into()),
            ..Reply::done()
        }
    }

    /// The [`StaleCleanup`] a `remove_stale` reply carries.
    pub(crate) fn into_cleanup(self) -> StaleCleanup {
        StaleCleanup {
            removed: self
                .removed
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            unterminated: self
                .unterminated
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            outcome: self.outcome.map_or(Outcome::Unchanged, Into::into),
        }
    }
}

/// Runs the helper on this process's stdin and stdout (the `hosts-helper` subcommand).
/// The argument that selects the helper: `czctl hosts-helper --file PATH --state-dir DIR`.
/// It is parsed before and outside the public command line, so it appears in no help text,
/// completion script or man page.
pub const ARG: &str = "hosts-helper";

/// Parses the helper's arguments (after [`ARG`]): exactly `--file PATH --state-dir DIR`.
pub fn parse_args(
    args: &[std::ffi::OsString],
) -> Result<(std::path::PathBuf, std::path::PathBuf), crate::exit::Fatal> {
    let usage = || {
        crate::exit::Fatal::new(
            crate::exit::Code::Usage,
            "usage: czctl hosts-helper --file PATH --state-dir DIR (started by czctl itself through sudo)",
        )
    };
    match args {
        [f, file, d, dir] if f == "--file" && d == "--state-dir" => Ok((file.into(), dir.into())),
        _ => Err(usage()),
    }
}

/// Runs the helper until its client goes away.
pub fn run(file: &Path, state_dir: &Path) -> Result<(), crate::exit::Fatal> {
    ignore_stop_signals();
    let file =
        check_file(file).map_err(|e| crate::exit::Fatal::new(crate::exit::Code::Local, e))?;
    let stdin = io::stdin().lock();
    let stdout = io::stdout();
    serve(
        &file,
        state_dir,
        stdin,
        stdout.as_fd(),
        &crate::teleport::is_alive,
    );
    Ok(())
}

/// The hosts file the helper may edit, symlinks resolved once and for all: an existing
/// regular file readable by everyone (as a hosts file is and a secret is not), in a directory
/// only root (or the helper's own user) may change, so nobody can swap it for another file
/// while the helper runs.
fn check_file(file: &Path) -> Result<PathBuf, String> {
    let refuse = |why: String| format!("hosts-helper refuses {}: {why}", file.display());
    let target = std::fs::canonicalize(file).map_err(|e| refuse(e.to_string()))?;
    let meta = std::fs::metadata(&target).map_err(|e| refuse(e.to_string()))?;
    if !meta.is_file() {
        return Err(refuse("it is not a regular file".into()));
    }
    if meta.mode() & 0o004 == 0 {
        return Err(refuse(
            "it is not readable by everyone, so it is not a hosts file".into(),
        ));
    }
    let dir = target.parent().unwrap_or(Path::new("/"));
    let dir_meta = std::fs::metadata(dir).map_err(|e| refuse(e.to_string()))?;
    // SAFETY: geteuid has no preconditions.
    let ours = unsafe { libc::geteuid() };
    let owner_ok = dir_meta.uid() == 0 || dir_meta.uid() == ours;
    let sticky = dir_meta.mode() & 0o1000 != 0 && (meta.uid() == 0 || meta.uid() == ours);
    if !owner_ok || (dir_meta.mode() & 0o022 != 0 && !sticky) {
        return Err(refuse(format!(
            "other users may replace files in {}",
            dir.display()
        )));
    }
    Ok(target)
}

/// Answers requests from `input` on `output` until `input` ends (or `output` breaks), then
/// removes every block written and not removed since.
pub(crate) fn serve(
    file: &Path,
    state_dir: &Path,
    input: impl BufRead,
    output: BorrowedFd<'_>,
    is_alive: &dyn Fn(u32) -> bool,
) {
    let hosts = HostsFile::new(file);
    let mut written: BTreeMap<String, BlockId> = BTreeMap::new();
    for line in input.lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let request = serde_json::from_str::<Request>(&line);
        let sent = match request {
            Ok(Request::Bind { addr, port }) => bind(addr, port, output),
            Ok(request) => reply(
                output,
                &handle(&hosts, state_dir, request, &mut written, is_alive),
            ),
            Err(e) => reply(output, &Reply::failed(format!("bad request: {e}"))),
        };
        if sent.is_err() {
            break;
        }
    }
    for id in written.values() {
        match hosts.remove(id) {
            Ok(_) => say!(
                "czctl hosts-helper: czctl went away without removing session {}'s block; removed it from {}",
                id.session(),
                file.display()
            ),
            Err(e) => say!(
                "czctl hosts-helper: cannot remove session {}'s block: {e}",
                id.session()
            ),
        }
    }
}

fn reply(output: BorrowedFd<'_>, reply: &Reply) -> io::Result<()> {
    let mut text = serde_json::to_string(reply).expect("a reply serializes");
    text.push('\n');
    send_line(output, text.as_bytes(), None)
}

/// Whether `addr` is one czctl hands out (127.B.x.y with B in [`loopback::ranges::CZCTL_BLOCKS`]).
fn czctl_address(addr: Ipv4Addr) -> bool {
    let [a, b, ..] = addr.octets();
    a == 127 && loopback::ranges::CZCTL_BLOCKS.contains(&b)
}

/// Binds `addr:port` and sends the listener with the reply.
fn bind(addr: Ipv4Addr, port: u16, output: BorrowedFd<'_>) -> io::Result<()> {
    if !czctl_address(addr) {
        return reply(
            output,
            &Reply::failed(format!(
                "refusing to bind {addr}: not one of czctl's loopback addresses"
            )),
        );
    }
    if port == 0 || port >= 1024 {
        return reply(
            output,
            &Reply::failed(format!(
                "refusing to bind port {port}: only ports below 1024 need root"
            )),
        );
    }
    let listener = match TcpListener::bind((addr, port)) {
        Ok(listener) => listener,
        Err(e) => {
            return reply(
                output,
                &Reply::os_error(format!("cannot bind {addr}:{port}"), &e),
            )
        }
    };
    let ok = Reply {
        fd: Some(true),
        ..Reply::done()
    };
    let mut text = serde_json::to_string(&ok).expect("a reply serializes");
    text.push('\n');
    match send_line(output, text.as_bytes(), Some(listener.as_fd())) {
        Ok(()) => Ok(()),
        // Nothing was sent (stdout is not a socket, for example when sudo relays it through a
        // pipe for I/O logging): say so instead.
        Err(e) => reply(
            output,
            &Reply::os_error(format!("cannot hand over the listener for {addr}:{port} (is sudo logging the helper's output?)"), &e),
        ),
    }
}

fn handle(
    hosts: &HostsFile,
    state_dir: &Path,
    request: Request,
    written: &mut BTreeMap<String, BlockId>,
    is_alive: &dyn Fn(u32) -> bool,
) -> Reply {
    let block = |session: String, pid: u32| BlockId::new(session, pid);
    match request {
        Request::Hello => Reply {
            // SAFETY: geteuid has no preconditions.
            uid: Some(unsafe { libc::geteuid() }),
            pid: Some(std::process::id()),
            ..Reply::done()
        },
        Request::RemoveStale => match hosts.remove_stale(is_alive) {
            Ok(cleanup) => Reply {
                outcome: Some(cleanup.outcome.into()),
                removed: Some(cleanup.removed.iter().map(Into::into).collect()),
                unterminated: Some(cleanup.unterminated.iter().map(Into::into).collect()),
                ..Reply::done()
            },
            Err(e) => Reply::failed(e),
        },
        Request::BackupOnce { session, pid } => match block(session, pid) {
            Ok(id) => backup(hosts, state_dir, &id),
            Err(e) => Reply::failed(e),
        },
        Request::Update {
            session,
            pid,
            entries,
        } => {
            let id = match block(session, pid) {
                Ok(id) => id,
                Err(e) => return Reply::failed(e),
            };
            let mut valid = Vec::with_capacity(entries.len());
            for WireEntry { addr, names } in entries {
                if !czctl_address(addr) {
                    return Reply::failed(format!(
                        "refusing address {addr}: czctl only maps names to its own loopback \
                         addresses (127.1.0.0-127.191.255.255)"
                    ));
                }
                match Entry::new(addr, names) {
                    Ok(entry) => valid.push(entry),
                    Err(e) => return Reply::failed(e),
                }
            }
            // From the first attempt on, the block may be in the file: clean it up at EOF.
            written.insert(id.session().to_string(), id.clone());
            match hosts.update(&id, &valid) {
                Ok(outcome) => Reply::edited(outcome),
                Err(e) => Reply::failed(e),
            }
        }
        Request::Bind { .. } => Reply::failed("bind is answered by serve"),
        Request::Remove { session, pid } => {
            let id = match block(session, pid) {
                Ok(id) => id,
                Err(e) => return Reply::failed(e),
            };
            match hosts.remove(&id) {
                Ok(outcome) => {
                    written.remove(id.session());
                    Reply::edited(outcome)
                }
                Err(e) => Reply::failed(e),
            }
        }
    }
}

/// Backs the file up into the existing state directory (never creating directories as root in
/// a user's home), giving the copy the directory's owner so czctl can manage it. The directory
/// is opened once and written through that handle (on Linux), so swapping it for a symlink
/// afterwards leads nowhere; a directory owned by root is refused.
fn backup(hosts: &HostsFile, state_dir: &Path, id: &BlockId) -> Reply {
    use std::os::unix::fs::OpenOptionsExt;
    let cannot = |e: &dyn std::fmt::Display| {
        Reply::failed(format!(
            "cannot use czctl's state directory {}: {e}",
            state_dir.display()
        ))
    };
    let handle = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(state_dir)
    {
        Ok(handle) => handle,
        Err(e) => return cannot(&e),
    };
    let dir = match handle.metadata() {
        Ok(meta) => meta,
        Err(e) => return cannot(&e),
    };
    // SAFETY: geteuid has no preconditions.
    let ours = unsafe { libc::geteuid() };
    if ours == 0 && dir.uid() == 0 {
        return cannot(&"it belongs to root, not to the user czctl runs as");
    }
    let through = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    let base = if through.is_dir() {
        through.as_path()
    } else {
        state_dir
    };
    let written = match hosts.backup_once(base, id) {
        Ok(path) => path,
        Err(e) => return Reply::failed(e),
    };
    if let Ok(meta) = std::fs::symlink_metadata(&written) {
        if meta.uid() == ours && (meta.uid(), meta.gid()) != (dir.uid(), dir.gid()) {
            if let Err(e) = std::os::unix::fs::lchown(&written, Some(dir.uid()), Some(dir.gid())) {
                say!(
                    "czctl hosts-helper: cannot give {} to uid {}: {e}",
                    written.display(),
                    dir.uid()
                );
            }
        }
    }
    let name = written.file_name().map(PathBuf::from).unwrap_or_default();
    Reply {
        backup: Some(state_dir.join(name)),
        ..Reply::done()
    }
}

/// The helper must outlive a Ctrl-C or SIGTERM meant for czctl: it ends when its stdin closes.
fn ignore_stop_signals() {
    for signal in [libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGTERM] {
        // SAFETY: setting a signal to SIG_IGN has no preconditions.
        unsafe {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::fdpass::Lines;
    use std::os::unix::net::UnixStream;

    const ORIGINAL: &str = "127.0.0.1\tlocalhost\n# kept\n";

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("czctl-helper-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Serves `requests`, then returns the replies and the descriptors that came with them.
    fn exchange_with(
        file: &Path,
        state: &Path,
        requests: &[&str],
        is_alive: &dyn Fn(u32) -> bool,
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
        exchange_with(file, state, requests, &|_| true).0
    }

    #[test]
    fn edits_blocks_and_cleans_up_at_eof() {
        let dir = temp("eof");
        let file = dir.join("hosts");
        std::fs::write(&file, ORIGINAL).unwrap();
        // A state directory of a user other than root (as root, the helper refuses root's).
        let state = dir.join("state");
        std::fs::create_dir(&state).unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
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
        let (mut replies, _) =
            exchange_with(&file, &dir, &[r#"{"op":"remove_stale"}"#], &|_| false);
        let cleanup = replies.remove(0).into_cleanup();
        assert_eq!(cleanup.removed.len(), 1);
        assert_eq!(cleanup.removed[0].session(), "tp-old");
        assert_eq!(cleanup.removed[0].line_count(), 3);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), ORIGINAL);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn backups_never_go_into_roots_directories() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
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
    fn only_world_readable_regular_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp("check");
        let file = dir.join("secret");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(check_file(&file)
            .unwrap_err()
            .contains("not readable by everyone"));
        assert!(check_file(&dir).unwrap_err().contains("not a regular file"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            check_file(&file).unwrap(),
            std::fs::canonicalize(&file).unwrap()
        );
        // A file others could swap: refused.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_file(&file).unwrap_err().contains("may replace files"));
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
            &|_| true,
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
}
