//! The hosts-file block: how czctl makes `echo.demo` resolve to its loopback address.
//!
//! # Format
//! czctl owns one marked block per session; the markers carry the session id and the pid of the
//! process that keeps the block up to date:
//! ```text
//! # czctl begin session=tp-3k9x2 pid=4242 -- added by czctl; removed when the session ends
//! 127.12.34.56  echo echo.demo echo.demo.svc echo.demo.svc.cluster.local
//! # czctl end session=tp-3k9x2
//! ```
//! A tab separates the address from the names. Each line holds one address and at most
//! [`NAMES_PER_LINE`] names; an address with more names gets several lines. Names and session
//! ids are validated when [`Entry`] and [`BlockId`] are built, so nothing can inject lines.
//!
//! # Guarantees
//! - One writer at a time: every read-change-write by any czctl process (direct, or the root
//!   helper) holds an exclusive `flock` on the hosts file itself, and writes only what it
//!   computed from the text it read under that lock (`lock` explains the choice).
//! - Every line outside czctl's blocks is kept byte for byte, including edits other programs
//!   make while czctl runs: the file is re-read under the lock and only the block is spliced;
//!   lines other programs append between czctl's read and its write are merged in (checked
//!   again after a rename, never truncated by an in-place rewrite; `inplace` and
//!   [`HostsFile::update`] describe the remaining windows). CRLF lines, a missing final newline
//!   and a final bare `\r` are kept; removing a block restores the file.
//! - Writes are atomic (temporary file, then rename, keeping mode and owner), falling back to an
//!   in-place rewrite with fsync when the file cannot be renamed over (bind mounts in containers
//!   and WSL) and for a file with hard links (so they stay links of one file).
//! - Only regular files are edited: a directory, device, FIFO or socket is refused unopened.
//! - [`HostsFile::backup_once`] keeps a copy of the original per session in the state directory
//!   (`hosts-SESSION.backup`, with the hosts file's permission bits); a session that ends
//!   cleanly removes it, a crashed one leaves it for repairs.
//! - A terminated block whose owner pid is dead is stale; [`HostsFile::remove_stale`] removes it
//!   and says so. A begin marker without its end marker is never touched, only reported, so a
//!   damaged file can never make czctl delete the lines after it.
//!
//! # Layout
//! - [`block`](mod@block): pure text operations (render, parse, splice, stale removal); no I/O.
//! - [`file`](mod@file): reading, writing and backing up the file; no policy.
//! - `lock`: the exclusive lock every edit holds.
//! - `replace`: the staged temporary file renamed into place; `orphans`: the replaced files,
//!   watched a few seconds for late writes; `inplace`: the in-place rewrite that never
//!   truncates bytes it did not read.
//! - [`editor`](mod@editor): [`HostsEditor`], what teleports and `session close` edit through:
//!   the file directly when czctl may write it, else [`elevated`](mod@elevated): a root
//!   [`helper`](mod@helper) (`czctl hosts-helper`) started once through sudo, so only the
//!   hosts-file edits (and binding ports below 1024) run as root; the Kubernetes client never
//!   does. When czctl dies the helper removes the blocks it wrote.
//! - `fdpass`: JSON lines with a descriptor attached, between czctl and the helper.

pub mod block;
pub mod editor;
pub mod elevated;
mod fdpass;
pub mod file;
pub mod helper;
mod inplace;
mod lock;
mod orphans;
mod replace;

pub use block::{
    parse_blocks, remove_stale, render, splice, BlockId, Entry, FoundBlock, InvalidInput,
    NAMES_PER_LINE,
};
pub use editor::{not_regular, EditError, HostsEditor, OpenError};
pub use elevated::{ElevateError, Elevated, HelperError};
pub use file::{HostsError, HostsFile, Outcome, StaleCleanup, WriteMethod};
