//! `backup_once` as root: into the user's state directory, owned by that directory's owner.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::protocol::Reply;
use crate::hosts::block::BlockId;
use crate::hosts::file::HostsFile;

/// Backs the file up into the existing state directory (never creating directories as root in
/// a user's home), giving the copy the directory's owner so czctl can manage it. The directory
/// is opened once and written through that handle (on Linux), so swapping it for a symlink
/// afterwards leads nowhere; a directory owned by root is refused.
pub(super) fn backup(hosts: &HostsFile, state_dir: &Path, id: &BlockId) -> Reply {
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
    let ours = rustix::process::geteuid().as_raw();
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
