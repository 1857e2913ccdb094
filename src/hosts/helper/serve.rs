//! The helper's request loop: answers each request and cleans up when czctl goes away.

use std::collections::BTreeMap;
use std::io::{self, BufRead};
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use super::backup::backup;
use super::checks::czctl_address;
use super::protocol::{Reply, Request, WireEntry};
use crate::hosts::block::{BlockId, Entry};
use crate::hosts::fdpass::send_line;
use crate::hosts::file::HostsFile;

/// Answers requests from `input` on `output` until `input` ends (or `output` breaks), then
/// removes every block written and not removed since.
pub(crate) fn serve(
    file: &Path,
    state_dir: &Path,
    input: impl BufRead,
    output: BorrowedFd<'_>,
    is_alive: &dyn Fn(&str, u32) -> bool,
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
    is_alive: &dyn Fn(&str, u32) -> bool,
) -> Reply {
    let block = |session: String, pid: u32| BlockId::new(session, pid);
    match request {
        Request::Hello => Reply {
            uid: Some(rustix::process::geteuid().as_raw()),
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

#[cfg(test)]
#[path = "serve_tests.rs"]
pub(super) mod tests;
