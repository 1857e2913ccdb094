//! Listing, inspecting and closing sessions from any czctl run: live ones through their
//! control socket, stale ones (their process is gone) by undoing what they left behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use loopback::Registry;

use super::control::{self, Request, Response};
use super::record::{self, Record};
use super::status::Status;
use crate::exit::{Code, Fatal};
use crate::hosts::{parse_blocks, BlockId, HostsEditor};
use crate::teleport::is_alive;

/// Where sessions and their leftovers live.
#[derive(Debug, Clone)]
pub struct Places {
    /// czctl's state directory.
    pub state_dir: PathBuf,
    /// The address registry directory.
    pub registry_dir: PathBuf,
    /// The hosts file to sweep for stale blocks without a record.
    pub hosts_file: PathBuf,
}

/// A session as `session list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    /// The record.
    #[serde(flatten)]
    pub record: Record,
    /// Its process is gone: it left things behind that `session close` cleans.
    pub stale: bool,
}

pub(super) fn records(places: &Places) -> Result<Vec<Record>, Fatal> {
    record::list(&places.state_dir).map_err(|e| Fatal::new(Code::Local, e.to_string()))
}

/// Every session, live or stale.
pub fn list(places: &Places) -> Result<Vec<Listed>, Fatal> {
    Ok(records(places)?
        .into_iter()
        .map(|record| Listed {
            stale: !is_alive(record.pid),
            record,
        })
        .collect())
}

/// The status of one session, or of every live one.
pub async fn status(places: &Places, id: Option<&str>) -> Result<Vec<(Record, Status)>, Fatal> {
    let mut out = Vec::new();
    let all = records(places)?;
    if let Some(id) = id {
        if !all.iter().any(|r| r.id == id) {
            return Err(Fatal::new(
                Code::NotFound,
                format!("no session {id:?}; list them with: czctl session list"),
            ));
        }
    }
    for record in all.into_iter().filter(|r| id.is_none_or(|id| r.id == id)) {
        if !is_alive(record.pid) {
            if id.is_some() {
                return Err(Fatal::new(
                    Code::NotFound,
                    format!("session {} is stale (pid {} is gone); clean it with: czctl session close {}", record.id, record.pid, record.id),
                ));
            }
            continue;
        }
        match control::request(&record.socket, Request::Status).await {
            Ok(Response::Status(status)) => out.push((record, status)),
            Ok(other) => {
                return Err(Fatal::new(
                    Code::Failure,
                    format!("session {} answered {other:?}", record.id),
                ))
            }
            Err(e) => return Err(Fatal::new(Code::Local, e.to_string())),
        }
    }
    Ok(out)
}

/// Which sessions `session close` closes.
#[derive(Debug, Clone, PartialEq)]
pub enum Which {
    /// One session by id.
    One(String),
    /// Every session of this group (CI job), and every stale one; every session outside a
    /// job.
    All {
        /// The current group.
        group: Option<String>,
    },
}

/// What `session close` did: a line per thing done, and a line per failure (each with its fix).
#[derive(Debug, Default)]
pub struct Closing {
    /// What was done or left alone, for stdout.
    pub said: Vec<String>,
    /// What could not be done, with the exit code of the first.
    pub failed: Vec<Fatal>,
}

/// Closes sessions, trying every one and reporting each failure; closing a session that is
/// already closed succeeds and says so; an unknown id is an error (exit 5). With `forget`,
/// the session's process is stopped and its local traces removed without touching the
/// cluster, saying what stays there.
pub async fn close(places: &Places, which: &Which, force: bool, forget: bool) -> Closing {
    let mut out = Closing::default();
    let mut editors = Editors::default();
    let all = match records(places) {
        Ok(all) => all,
        Err(e) => {
            out.failed.push(e);
            return out;
        }
    };
    let chosen: Vec<Record> = match which {
        Which::One(id) => {
            let found: Vec<Record> = all.into_iter().filter(|r| &r.id == id).collect();
            if found.is_empty() {
                if record::was_closed(&places.state_dir, id) {
                    out.said.push(format!("session {id} is already closed"));
                } else {
                    out.failed.push(Fatal::new(
                        Code::NotFound,
                        format!(
                            "no session {id:?} on this machine; list them with: czctl session list"
                        ),
                    ));
                }
                return out;
            }
            found
        }
        Which::All { group } => {
            let (mine, others): (Vec<Record>, Vec<Record>) = all
                .into_iter()
                .partition(|r| group.is_none() || &r.group == group || !is_alive(r.pid));
            if !others.is_empty() {
                let ids: Vec<String> = others
                    .iter()
                    .map(|r| format!("{} ({})", r.id, r.group.as_deref().unwrap_or("no CI job")))
                    .collect();
                out.said.push(format!(
                    "left alone {} live session(s) of other jobs: {}; this job is {}",
                    others.len(),
                    ids.join(", "),
                    group.as_deref().unwrap_or("none")
                ));
            }
            mine
        }
    };
    for record in chosen {
        match close_one(places, &record, force, forget, &mut editors).await {
            Ok(lines) => out.said.extend(lines),
            Err(e) => out.failed.push(e),
        }
    }
    let has_stale = |text: &str| {
        parse_blocks(text)
            .iter()
            .any(|b| b.terminated() && !is_alive(b.pid()))
    };
    if matches!(which, Which::All { .. }) && needs_edit(&places.hosts_file, has_stale) {
        let cleanup = editors
            .get(&places.hosts_file, &places.state_dir)
            .and_then(|e| {
                e.remove_stale()
                    .map_err(|e| Fatal::new(Code::Local, e.to_string()))
            });
        match cleanup {
            Ok(cleanup) => {
                for block in cleanup.removed {
                    out.said.push(format!(
                        "removed a stale hosts block of session {} (pid {})",
                        block.session(),
                        block.pid()
                    ));
                }
            }
            Err(e) => out.failed.push(e),
        }
    }
    if matches!(which, Which::All { .. }) && out.said.is_empty() && out.failed.is_empty() {
        out.said.push("no sessions to close".into());
    }
    out
}

/// Closes one session: stops its process, then undoes what it left (or, with `forget`, only
/// its local traces).
async fn close_one(
    places: &Places,
    record: &Record,
    force: bool,
    forget: bool,
    editors: &mut Editors,
) -> Result<Vec<String>, Fatal> {
    let mut said = Vec::new();
    if is_alive(record.pid) {
        said.push(close_live(record).await);
    }
    if is_alive(record.pid) {
        return Err(Fatal::new(
            Code::Local,
            format!(
                "session {} (pid {}) did not stop; stop it yourself (kill {}) and close it again",
                record.id, record.pid, record.pid
            ),
        ));
    }
    // A session that ended by itself keeps only the log of a failed start; this is its end.
    record::remove_log(&places.state_dir, &record.id);
    if !Record::path(&places.state_dir, &record.id).exists() {
        return Ok(said);
    }
    if let Some(ic) = &record.intercept {
        if forget {
            record.remove(&places.state_dir);
            said.push(format!(
                "session {}: forgotten on this machine; left in namespace {} of context {}:                  its route on service {} (header {}), tunnel agent and heartbeat Lease. Once the                  heartbeat expires, `czctl service intercept {} -n {} --close` removes them from                  any machine; or by hand: kubectl -n {} delete deployment,service,secret,lease,networkpolicy -l {}={}",
                record.id,
                ic.namespace,
                record.context,
                ic.service,
                ic.header,
                ic.service,
                ic.namespace,
                ic.namespace,
                crate::intercept::names::TUNNEL_LABEL,
                record.id
            ));
            return Ok(said);
        }
        let cleaned = super::intercepts::clean_stale(places, record, force)
            .await
            .map_err(|e| {
                Fatal::new(
                    e.code,
                    format!(
                        "session {}: {}\nIf its cluster or kubeconfig is gone, discard it on this machine: czctl session close {} --forget",
                        record.id, e.message, record.id
                    ),
                )
            })?;
        said.push(cleaned);
        return Ok(said);
    }
    clean_stale(places, record, editors)?;
    said.push(format!(
        "session {} was stale (pid {} gone): removed its hosts entries and addresses",
        record.id, record.pid
    ));
    Ok(said)
}

/// The hosts editors one `session close` uses, one per file, opened (and so elevated) only
/// when there is something to remove.
#[derive(Default)]
struct Editors(HashMap<PathBuf, HostsEditor>);

impl Editors {
    fn get(&mut self, file: &Path, state_dir: &Path) -> Result<&HostsEditor, Fatal> {
        if !self.0.contains_key(file) {
            let editor = HostsEditor::open(file, state_dir, None)
                .map_err(|e| Fatal::new(Code::Local, e.to_string()))?;
            self.0.insert(file.to_path_buf(), editor);
        }
        Ok(&self.0[file])
    }
}

/// Whether `file` may need an edit: `wanted` says so about its text, and a file czctl cannot
/// read is tried anyway (the edit then reports why it fails).
fn needs_edit(file: &Path, wanted: impl Fn(&str) -> bool) -> bool {
    match std::fs::read(file) {
        Ok(bytes) => wanted(&String::from_utf8_lossy(&bytes)),
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// Asks a live session to close and waits for its process to end (SIGTERM, then SIGKILL, as
/// fallbacks); the session cleans up after itself.
pub async fn close_live(record: &Record) -> String {
    let asked = matches!(
        control::request(&record.socket, Request::Close).await,
        Ok(Response::Closing)
    );
    if !asked {
        signal(record.pid, libc::SIGTERM);
    }
    if wait_gone(record.pid, Duration::from_secs(10)).await {
        return format!("session {} closed", record.id);
    }
    signal(record.pid, libc::SIGKILL);
    wait_gone(record.pid, Duration::from_secs(5)).await;
    format!("session {} did not stop in time and was killed", record.id)
}

fn signal(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) with a positive pid only signals that process.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

async fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !is_alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    !is_alive(pid)
}

/// Undoes what a dead session left: its hosts block, its addresses, its record.
fn clean_stale(places: &Places, record: &Record, editors: &mut Editors) -> Result<(), Fatal> {
    let local = |e: &dyn std::fmt::Display| {
        Fatal::new(Code::Local, format!("cleaning session {}: {e}", record.id))
    };
    let block = BlockId::new(record.id.clone(), record.pid).map_err(|e| local(&e))?;
    let has_block = |text: &str| {
        parse_blocks(text)
            .iter()
            .any(|b| b.session() == block.session())
    };
    if needs_edit(&record.hosts_file, has_block) {
        editors
            .get(&record.hosts_file, &places.state_dir)?
            .remove(&block)
            .map_err(|e| local(&e))?;
    }
    Registry::new(places.registry_dir.clone())
        .release_all_of(record.pid)
        .map_err(|e| local(&e))?;
    record.remove(&places.state_dir);
    record::remove_backup(&places.state_dir, &record.id);
    Ok(())
}
